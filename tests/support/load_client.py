"""Many concurrent keep-alive clients against the prediction service, from a process of their
own: ``python -m tests.support.load_client --url URL --concurrency 64 --seconds 6``.

Plain asyncio and hand-written HTTP/1.1, like ``benchmarks/serving.py``'s client: httpx's
connection pool spends more CPU per request than the service does, so with it the client, not
the service, would be what saturates. Connection ``k`` posts single-entity predictions, on
``/v2`` (the Open Inference Protocol) when ``k % 4 == 3``, else on ``/v1`` with explanations
when ``k`` is even; the token comes from ``MLSTEWARD_TOKEN`` (never a command line). Prints
one line ``RESULT {json}``: answers by status, latency percentiles of the answered (200) and
of the refused requests, and the refusals that broke their promise (no ``Retry-After``, or not
the protocol's error shape).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlparse

MODEL = "heart_disease"


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


async def run(url: str, concurrency: int, seconds: float, ids: list[int]) -> dict[str, Any]:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    token = os.environ.get("MLSTEWARD_TOKEN", "")
    statuses: dict[int, int] = {}
    accepted: list[float] = []
    refused: list[float] = []
    wrong: list[str] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    def request(k: int, n: int) -> tuple[bytes, bool]:
        entity = ids[n % len(ids)]
        v2 = k % 4 == 3
        if v2:
            path = f"/v2/models/{MODEL}/infer"
            body = json.dumps({"inputs": [{"name": "patient_id", "datatype": "INT64",
                                           "shape": [1], "data": [entity]}]}).encode()  # fmt: skip
        else:
            path = f"/v1/models/{MODEL}/predict"
            body = json.dumps({"entity_ids": [entity], "explain": k % 2 == 0}).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        return head + body, v2

    def check_refusal(status: int, headers: dict[str, str], data: bytes, v2: bool) -> None:
        if len(wrong) >= 5:
            return
        try:
            body = json.loads(data)
        except ValueError:
            wrong.append(f"{status}: not JSON: {data[:200]!r}")
            return
        if "retry-after" not in headers:
            wrong.append(f"{status} without Retry-After: {body}")
        elif v2 and not isinstance(body.get("error"), str):
            wrong.append(f"/v2 {status} not in the protocol's shape: {body}")
        elif not v2 and not body.get("detail", [{}])[0].get("msg"):
            wrong.append(f"/v1 {status} not in the service's shape: {body}")

    async def connection(k: int) -> None:
        n = k
        reader = writer = None
        while time.perf_counter() < deadline:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                payload, v2 = request(k, n)
                n += concurrency
                started = time.perf_counter()
                writer.write(payload)
                await writer.drain()
                status = int((await reader.readline()).split(b" ")[1])
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                data = await reader.readexactly(int(headers.get("content-length", "0")))
                took = (time.perf_counter() - started) * 1000
            except (OSError, asyncio.IncompleteReadError, IndexError, ValueError) as exc:
                errors.append(repr(exc))
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                accepted.append(took)
            else:
                refused.append(took)
                if status in (429, 503):
                    check_refusal(status, headers, data, v2)
            if headers.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "seconds": round(elapsed, 3),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "accepted_per_second": round(len(accepted) / elapsed, 1),
        "accepted_p50_ms": _percentile(accepted, 0.5),
        "accepted_p99_ms": _percentile(accepted, 0.99),
        "refused_p50_ms": _percentile(refused, 0.5),
        "refused_p99_ms": _percentile(refused, 0.99),
        "errors": errors[:5],
        "error_count": len(errors),
        "wrong": wrong,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--ids", required=True, help="comma list of entity ids to cycle")
    args = parser.parse_args(argv)
    ids = [int(i) for i in args.ids.split(",")]
    result = asyncio.run(run(args.url, args.concurrency, args.seconds, ids))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
