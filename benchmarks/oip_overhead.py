"""What does the Open Inference Protocol cost next to ``/v1``, request for request?

In a temporary ``MLSTEWARD_HOME`` a small cohort (``--rows``) is ingested, the demo model trained
(the first version is the champion) and its features materialized into the Feast SQLite online
store, as ``benchmarks/serving.py`` does. One prediction service (``python -m
mlsteward.serving``, authentication on, a viewer's bearer token on every request) then gets,
from one client, pairs of requests for the same rows: ``POST /v1/models/heart_disease/predict``
and ``POST /v2/models/heart_disease/infer``, one after the other on one keep-alive connection,
which of the two goes first alternating from pair to pair, so the machine's background load
and the server's state (its heap, its caches, a registry poll) fall on both sides alike.

The ``/v2`` bodies are what tritonclient's HTTP client sends (built by
``InferenceServerClient.generate_request_body`` from ``InferInput`` tensors; no requested
outputs, so all are answered), in three scenarios:

* **entity id** -- ``{"entity_ids": [id]}`` against the ``patient_id`` tensor in tritonclient's
  default binary layout (JSON header, then 8 bytes);
* **entity id, explain** -- the same with ``explain`` (``/v1``'s body field, ``/v2``'s request
  parameter): exact SHAP, the top-k contributions answered as three tensors;
* **feature values** -- one instance of the 14 features against 14 tensors as JSON
  (``set_data_from_numpy(..., binary_data=False)``), so that both sides parse and check the
  same values from JSON.

The client is a separate process (raw HTTP/1.1 over one socket, requests prebuilt, only the
status line, headers and ``Content-Length`` body read back), so its own work is small and the
same for both sides. Each scenario runs ``--pairs`` pairs after ``--warmup`` pairs, in
``--rounds`` rounds (scenarios in rotating order); the verdict is the median over rounds of
the per-round p50 ratio v2/v1 against the 1.10x target, with p99 beside it. Before the runs,
the two routes' answers for a sample of ids are compared (probabilities, labels, top-k
features and values); the script exits 1 if they differ or any request is not answered 200.

Run: ``.venv/bin/python benchmarks/oip_overhead.py [--pairs 2000] [--rounds 3] [--rows 5000]``
(``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks import serving as bench  # noqa: E402  (after the project root is importable)

MODEL = bench.MODEL
V1_PATH = f"/v1/models/{MODEL}/predict"
V2_PATH = f"/v2/models/{MODEL}/infer"
RATIO_TARGET = 1.10
SCENARIOS = ("entity id", "entity id, explain", "feature values")


# --------------------------------------------------------------------------------------------
# Request bodies: /v1's JSON and what tritonclient sends
# --------------------------------------------------------------------------------------------


def v2_entity_body(entity_id: int, explain: bool) -> tuple[bytes, int | None]:
    import numpy as np
    import tritonclient.http as triton

    tensor = triton.InferInput("patient_id", [1], "INT64")
    tensor.set_data_from_numpy(np.array([entity_id], dtype=np.int64))
    parameters = {"explain": True} if explain else None
    return triton.InferenceServerClient.generate_request_body([tensor], parameters=parameters)


def v2_feature_body(row: dict[str, Any], declared: dict[str, str]) -> tuple[bytes, int | None]:
    import numpy as np
    import tritonclient.http as triton
    from tritonclient.utils import triton_to_np_dtype

    tensors = []
    for name, value in row.items():
        datatype = declared[name]
        if datatype == "BYTES":
            array = np.array([str(value).encode()], dtype=np.object_)
        else:
            array = np.array([value], dtype=triton_to_np_dtype(datatype))
        tensor = triton.InferInput(name, [1], datatype)
        tensors.append(tensor.set_data_from_numpy(array, binary_data=False))
    return triton.InferenceServerClient.generate_request_body(tensors)


def http_request(path: str, body: bytes, token: str, header_length: int | None = None) -> bytes:
    extra = f"Inference-Header-Content-Length: {header_length}\r\n" if header_length else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def build_pairs(
    scenario: str, ids: list[int], rows: dict[int, dict[str, Any]], declared: dict[str, str],
    token: str,
) -> list[tuple[bytes, bytes]]:  # fmt: skip
    """(/v1 request, /v2 request) for each id, the same row on both sides."""
    pairs = []
    for entity_id in ids:
        if scenario == "feature values":
            v1 = {"instances": [rows[entity_id]]}
            body, length = v2_feature_body(rows[entity_id], declared)
        else:
            explain = scenario.endswith("explain")
            v1 = {"entity_ids": [entity_id], "explain": explain}
            body, length = v2_entity_body(entity_id, explain)
        pairs.append((
            http_request(V1_PATH, json.dumps(v1).encode(), token),
            http_request(V2_PATH, body, token, length),
        ))  # fmt: skip
    return pairs


# --------------------------------------------------------------------------------------------
# The client (``--load-client``): its own process, one connection
# --------------------------------------------------------------------------------------------


def _read_response(sock: socket.socket, buffer: bytearray) -> int:
    """One response off the socket: its status (the body is read and dropped)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        rest += chunk
    buffer[:] = rest[length:]
    return status


def run_client(port: int, pairs_file: Path, warmup: int) -> dict[str, Any]:
    """Send each pair back to back (who goes first alternates); latencies of the measured
    pairs, per side, in seconds."""
    pairs: list[tuple[bytes, bytes]] = pickle.loads(pairs_file.read_bytes())
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buffer = bytearray()
    latency: dict[str, list[float]] = {"v1": [], "v2": []}
    failed = 0
    clock = time.perf_counter
    for n, (v1, v2) in enumerate(pairs):
        order = (("v1", v1), ("v2", v2)) if n % 2 == 0 else (("v2", v2), ("v1", v1))
        for side, request in order:
            started = clock()
            sock.sendall(request)
            status = _read_response(sock, buffer)
            elapsed = clock() - started
            failed += status != 200
            if n >= warmup:
                latency[side].append(elapsed)
    sock.close()
    return {"latency": latency, "failed": failed}


def measure(port: int, pairs: list[tuple[bytes, bytes]], warmup: int, tmp: Path) -> dict[str, Any]:
    pairs_file = tmp / "pairs.pickle"
    pairs_file.write_bytes(pickle.dumps(pairs))
    cmd = [sys.executable, __file__, "--load-client", "--port", str(port), "--pairs-file",
           str(pairs_file), "--warmup", str(warmup)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    match = re.search(r"^RESULT (\{.*\})$", out.stdout, re.M)
    if match is None:
        raise RuntimeError(f"the client gave no result:\n{out.stdout}\n{out.stderr}")
    return json.loads(match.group(1))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------------------------
# Same answers
# --------------------------------------------------------------------------------------------


def same_answers(url: str, token: str, ids: list[int]) -> bool:
    """/v1's and /v2's answers for the same ids (explained), through tritonclient for /v2."""
    import httpx
    import numpy as np
    import tritonclient.http as triton

    headers = {"Authorization": f"Bearer {token}"}
    v1 = httpx.post(f"{url}{V1_PATH}", json={"entity_ids": ids, "explain": True},
                    headers=headers, timeout=30).json()["predictions"]  # fmt: skip
    with triton.InferenceServerClient(url.removeprefix("http://")) as client:
        tensor = triton.InferInput("patient_id", [len(ids)], "INT64")
        tensor.set_data_from_numpy(np.array(ids, dtype=np.int64))
        v2 = client.infer(MODEL, [tensor], headers=dict(headers), parameters={"explain": True})
    explained = [p["explanation"]["contributions"] for p in v1]
    return (
        v2.as_numpy("probability").tolist() == [p["probability"] for p in v1]
        and v2.as_numpy("label").tolist() == [p["label"] for p in v1]
        and v2.as_numpy("contributions").tolist() == [[c["value"] for c in e] for e in explained]
        and v2.as_numpy("contribution_features").tolist()
        == [[c["feature"] for c in e] for e in explained]
    )


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2_000, help="measured pairs per run")
    parser.add_argument("--warmup", type=int, default=200, help="pairs before measuring")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every scenario")
    parser.add_argument("--rows", type=int, default=5_000, help="cohort rows (entities)")
    parser.add_argument("--max-evals", type=int, default=3, help="Hyperopt trials")
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 pairs, 1 round")
    parser.add_argument("--load-client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--pairs-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.load_client:
        result = run_client(args.port, Path(args.pairs_file), args.warmup)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    if args.quick:
        args.pairs, args.warmup, args.rounds = 300, 50, 1
        args.rows, args.max_evals = min(args.rows, 3_000), 1

    with tempfile.TemporaryDirectory(prefix="mlsteward-bench-oip-") as tmp_name:
        tmp = Path(tmp_name)
        bench.set_environment(tmp)
        started = time.perf_counter()
        print(f"setup: {args.rows:,} rows, {args.max_evals} trial(s) ...", flush=True)
        version, all_ids = bench.build_champion(tmp, args.rows, args.max_evals)
        shape = bench.champion_shape()
        token = bench.viewer_token()

        from mlsteward.config.models import get_model_config
        from mlsteward.features.online import online_features

        cfg = get_model_config(MODEL)
        count = args.pairs + args.warmup
        ids = (all_ids * (count // len(all_ids) + 1))[:count]
        frame = online_features(cfg, sorted(set(ids)))
        records = json.loads(frame.to_json(orient="records"))
        rows = {rec[cfg.source.entity]: {k: rec[k] for k in cfg.feature_names} for rec in records}
        print(f"setup done in {time.perf_counter() - started:.0f} s: champion v{version} "
              f"({shape})", flush=True)  # fmt: skip

        port = bench.free_port()
        cmd = [sys.executable, "-m", "mlsteward.serving", "--host", "127.0.0.1", "--port",
               str(port), "--model", MODEL, "--log-level", "warning"]  # fmt: skip
        proc = bench.start_server(cmd, port, "/readyz", tmp / "service.log",
                                  {"MLSTEWARD_SERVING_AUTH": "on"})  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            import httpx

            meta = httpx.get(f"{url}/v2/models/{MODEL}",
                             headers={"Authorization": f"Bearer {token}"}).json()  # fmt: skip
            declared = {t["name"]: t["datatype"] for t in meta["inputs"]}
            same = same_answers(url, token, all_ids[:20])
            pairs = {s: build_pairs(s, ids, rows, declared, token) for s in SCENARIOS}
            measure(port, pairs[SCENARIOS[0]][: args.warmup * 5], args.warmup, tmp)  # settle
            load_before = os.getloadavg()[0]
            results: dict[str, list[dict[str, Any]]] = {s: [] for s in SCENARIOS}
            failed = 0
            for n in range(args.rounds):
                order = SCENARIOS[n % 3 :] + SCENARIOS[: n % 3]
                for scenario in order:
                    r = measure(port, pairs[scenario], args.warmup, tmp)
                    failed += r["failed"]
                    results[scenario].append(r["latency"])
                    v1, v2 = r["latency"]["v1"], r["latency"]["v2"]
                    print(f"  round {n + 1} {scenario:<19} v1 p50 "
                          f"{percentile(v1, 0.5) * 1e3:.3f} ms  v2 p50 "
                          f"{percentile(v2, 0.5) * 1e3:.3f} ms", flush=True)  # fmt: skip
        finally:
            rc = bench.stop_server(proc)

    print()
    print(f"{MODEL} v{version} ({shape}); {os.cpu_count()} cores (load average "
          f"{load_before:.1f} before the runs, {os.getloadavg()[0]:.1f} after); one client, "
          f"{args.pairs} interleaved pairs per run after {args.warmup} warm-up pairs, "
          f"{args.rounds} round(s)")  # fmt: skip
    head = (f"{'scenario':<20} {'v1 p50':>9} {'v2 p50':>9} {'v1 p99':>9} {'v2 p99':>9}   "
            "v2/v1 p50 (rounds)          v2/v1 p99 (rounds)")  # fmt: skip
    print(head)
    print("-" * len(head))
    verdicts = []
    for scenario in SCENARIOS:
        runs = results[scenario]
        stats = {q: [(percentile(r["v1"], q), percentile(r["v2"], q)) for r in runs]
                 for q in (0.5, 0.99)}  # fmt: skip
        ratios = {q: sorted(b / a for a, b in stats[q]) for q in stats}
        medians = {q: statistics.median(ratios[q]) for q in ratios}
        cells = {q: [statistics.median(side) * 1e3 for side in zip(*stats[q], strict=True)]
                 for q in stats}  # fmt: skip
        each = {q: " ".join(f"{x:.3f}" for x in ratios[q]) for q in ratios}
        p50, p99 = cells[0.5], cells[0.99]
        ratio50, ratio99 = (
            f"{medians[0.5]:.3f}x ({each[0.5]})",
            f"{medians[0.99]:.3f}x ({each[0.99]})",
        )
        print(f"{scenario:<20} {p50[0]:7.3f}ms {p50[1]:7.3f}ms {p99[0]:7.3f}ms {p99[1]:7.3f}ms   "
              f"{ratio50:<26}  {ratio99}")  # fmt: skip
        verdicts.append(medians[0.5] <= RATIO_TARGET)
    print()
    print(f"v2 within {RATIO_TARGET}x of v1 at p50 (median of rounds) in every scenario: "
          f"{'met' if all(verdicts) else 'NOT met'}")  # fmt: skip
    print(
        f"same answers on both routes for 20 ids (probability, label, top-k SHAP): "
        f"{'yes' if same else 'NO'}; requests not answered 200: {failed}; service exit {rc}"
    )
    return 0 if same and failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
