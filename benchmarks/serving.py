"""What does the prediction service cost per request, next to a bare endpoint on the same model?

In a temporary ``MLSTEWARD_HOME`` a small cohort (``--rows``) is ingested, the demo model
trained with ``--max-evals`` trials (the first version is promoted to champion) and its features
materialized into the Feast SQLite online store. Then three servers are measured in turn, each
a separate process on the same loopback, uvicorn with the same settings (asyncio loop,
httptools):

* **bare** -- this script's ``--bare-app`` mode: one FastAPI route taking ``{"entity_ids":
  [...], "explain": bool}`` (a pydantic model) that does one Feast ``get_online_features`` of
  the model's feature service (what a hand-written endpoint calls), encodes the row by the
  champion's recorded encoding (plain Python into a float32 matrix, no pandas),
  ``inplace_predict`` on the SHA-verified champion booster (``nthread=1``) and, when asked, one
  ``pred_contribs`` call per request (no batching); the answer (probability, label, top-k
  contributions) is ``orjson`` JSON. No logging, no metrics, no validation beyond pydantic's.
  The targets are stated against this endpoint.
* **bare-r** -- the same endpoint reading features with ``features.online.OnlineReader``, the
  lookup our service uses (the online store's own read, a third of ``get_online_features``'
  cost for one id). Our service's lookup is cheaper than the bare endpoint's, so against
  ``bare`` part of what our bookkeeping costs is paid for by the lookup; against ``bare-r``
  the lookup is the same and the ratio is our bookkeeping alone. Measured in the one-client
  rounds only, where that difference shows.
* **ours** -- ``python -m mlsteward.serving``: the same model and ``bare-r``'s lookup, plus
  request validation, canary routing, micro-batching of concurrent requests (one Feast lookup,
  one ``inplace_predict`` and one ``pred_contribs`` per batch), Prometheus metrics and the
  prediction log (rows queued on the request path, written by a child process), with
  authentication on, as it is by default: every request carries a viewer's bearer token.
* **open** -- the same service with ``MLSTEWARD_SERVING_AUTH=off``: what authentication costs
  is ``ours`` against ``open``, measured in the one-client rounds (a lone request is where a
  per-request cost shows most), verdict on the median of the per-round p50 ratios against a
  target of 1.05. With ``--auth-only`` a second such service, **open-b**, is measured in the
  same rounds: ``open-b`` against ``open`` is the same code in two processes, the ratio that
  noise and process placement alone give.

Every server gets the same requests, the ``Authorization`` header included (the bare servers
and ``open`` ignore it), so they read the same bytes.

Load comes from a second process: ``wrk`` (one thread, closed loop: each connection sends its
next request when the previous one is answered; the body is built by a generated Lua script
cycling through real entity ids, so every lookup hits), or, without ``wrk``, this script's
``--load-client`` mode (asyncio, raw keep-alive HTTP/1.1). The servers stay up for the whole
run and each scenario is measured on each back to back (who goes first rotates), so a
change in the machine's background load hits both sides of a row alike; while one is measured
the others are idle (ours still polls the registry every ``serving.poll_seconds``, a few ms of
CPU). Once started, each server first gets ``--settle`` seconds of load: our service's first
seconds of traffic carry its start-up costs (full garbage collections of a heap that holds
Feast, MLflow and pandas, about 0.2 s each, and first-call paths), which put a ~170 ms p99 on
whatever scenario comes first; the figures are for a server that has been up a while. Each
measurement is a warm-up run, then one measured run of ``--duration`` seconds. The one-client
scenario without explanations, whose p99 is a fraction of a millisecond and moves by half of that
between back-to-back runs of the same server on a shared 2-core machine, is measured in
``--rounds`` back-to-back rounds; its verdicts (against ``bare``, and against ``bare-r``) are the
medians of the per-round ratios, with every round's ratio printed beside them.
Server CPU per request comes from ``/proc/<pid>/stat`` around the measured run.

After the runs, our ``/metrics`` gives the mean micro-batch size per scenario and the
prediction-log rows written; then the server gets SIGTERM and the prediction log is read back
to check that every answered request (warm-ups included) was logged.

The script exits 1 if the servers' answers differ for the sample ids or the prediction
log does not hold exactly the rows the server scored; the figures themselves are not judged.

On a 2-core machine the load generator and the server share the cores, and other jobs may
too: treat differences under ~10% as noise and rerun.

Run: ``.venv/bin/python benchmarks/serving.py [--duration 10] [--rows 5000] [--quick]``;
``--auth-only`` measures only ``ours`` against ``open`` in the one-client rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import BaseModel

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

MODEL = "heart_disease"
PREDICT_PATH = f"/v1/models/{MODEL}/predict"
SCENARIOS = [  # (label, concurrency, explain)
    ("c=1, no explain", 1, False),
    ("c=1, explain", 1, True),
    ("c=32, explain", 32, True),
    ("c=32, no explain", 32, False),
]
LATENCY_RATIO_TARGET = 1.15
AUTH_RATIO_TARGET = 1.05
RPS_TARGET = 1_000
P99_TARGET_MS = 100.0


def set_environment(root: Path) -> None:
    """Isolate every store under a temp dir; must run before prefect/mlflow are imported."""
    os.environ["MLSTEWARD_HOME"] = str(root / "mlsteward_home")
    os.environ["PREFECT_HOME"] = str(root / "prefect_home")
    os.environ["MLSTEWARD_PROJECT_ROOT"] = str(PROJECT_ROOT)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ["FEAST_USAGE"] = "False"
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    for var in (
        "MLFLOW_TRACKING_URI",
        "MLSTEWARD_CONFIG_DIR",
        "MLSTEWARD_ARTIFACT_ROOT",
        "MLSTEWARD_AUDIT_URL",
        "MLSTEWARD_SNAPSHOT_ROOT",
        "MLSTEWARD_SERVING_FAULTS",
        "MLSTEWARD_SERVING_MODELS",
        "MLSTEWARD_SERVING_AUTH",
        "MLSTEWARD_SERVING_METRICS_AUTH",
        "MLSTEWARD_IDENTITY_URL",
        "MLSTEWARD_TOKEN",
    ):
        os.environ.pop(var, None)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def quiet_library_chatter() -> None:
    import logging
    import warnings

    for category in (UserWarning, DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in ("mlflow", "feast", "alembic", "prefect"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --------------------------------------------------------------------------------------------
# Setup: a promoted champion and a materialized online store
# --------------------------------------------------------------------------------------------


def build_champion(root: Path, rows: int, max_evals: int) -> tuple[str, list[int]]:
    """Ingest, train, promote, materialize; returns the champion version and entity ids."""
    from prefect.testing.utilities import prefect_test_harness

    quiet_library_chatter()
    from flows.ingestion import ingestion_flow, materialize_flow
    from flows.training import training_flow
    from mlsteward.config.models import get_model_config
    from mlsteward.data.synthetic import generate_cohort, write_dataset

    cohort = generate_cohort(n_rows=rows, seed=0)
    source = write_dataset(cohort, root / "cohort.parquet")
    entity = get_model_config(MODEL).source.entity
    ids = sorted({int(i) for i in cohort[entity].tolist()})
    with prefect_test_harness(server_startup_timeout=120):
        ingestion_flow(model=MODEL, source=str(source))
        trained = training_flow(model=MODEL, max_evals=max_evals)
        if trained.governance.decision != "promoted":
            raise SystemExit(f"the trained version was not promoted: {trained.governance}")
        materialize_flow(model=MODEL)
    return str(trained.version), ids


def viewer_token() -> str:
    """A token of a viewer (who may predict) in the temporary home, for every request."""
    from mlsteward.identity import identity_store, local_principal

    operator = local_principal()
    with identity_store() as store:
        store.add_principal("bench", roles=["viewer"], by=operator)
        _, token = store.create_token("user:bench", by=operator, description="benchmark")
    return token


def champion_shape() -> str:
    """Trees and depth of the champion: what a ``pred_contribs`` row costs depends on them."""
    from mlsteward.governance import promotion as governance

    booster = governance.load_version(MODEL, "champion", actor="benchmark").model.get_booster()
    depth = json.loads(booster.save_config())["learner"]["gradient_booster"]["tree_train_param"]
    return f"{booster.num_boosted_rounds()} trees, max_depth {depth.get('max_depth', '?')}"


# --------------------------------------------------------------------------------------------
# The bare endpoint (``--bare-app``): run in its own process
# --------------------------------------------------------------------------------------------


class BareRequest(BaseModel):
    """The bare endpoint's body (module level: FastAPI resolves the annotation by name)."""

    entity_ids: list[int]
    explain: bool = False


def bare_app(top_k: int, lookup: str = "feast") -> Any:
    """The bare endpoint; ``lookup`` "feast" reads features with ``get_online_features`` (what
    a hand-written endpoint calls), "reader" with the service's ``OnlineReader``."""
    import math

    import numpy as np
    import orjson
    import xgboost as xgb
    from fastapi import FastAPI
    from fastapi.responses import Response

    from mlsteward.config.models import get_model_config
    from mlsteward.features.online import OnlineReader
    from mlsteward.features.store import get_store
    from mlsteward.governance import promotion as governance
    from mlsteward.governance import registry

    cfg = get_model_config(MODEL)
    info = registry.version_by_alias(MODEL, "champion")
    if info is None:
        raise SystemExit(f"{MODEL} has no champion")
    enc = info.encoding
    verified = governance.load_version(MODEL, "champion", actor="benchmark")
    booster = verified.model.get_booster()
    booster.set_param({"nthread": 1})
    threshold = float(verified.info.decision_threshold)
    negative, positive = (int(v) for v in cfg.label_values)
    columns = list(enc.columns)
    feature_types = enc.feature_types
    codes = {c: {v: i for i, v in enumerate(cats)} for c, cats in enc.categories.items()}
    # per column: None for numbers/bools (float() of a bool is 0/1), else the category codes
    converters = [codes.get(c) if enc.dtypes[c] == "category" else None for c in columns]
    store = get_store()
    service = store.get_feature_service(cfg.feature_service_name)
    entity = cfg.source.entity
    reader = OnlineReader(store, cfg.feature_service_name, entity) if lookup == "reader" else None
    nan = math.nan

    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(PREDICT_PATH)
    async def predict(req: BareRequest) -> Response:
        n = len(req.entity_ids)
        if lookup == "feast":
            data = store.get_online_features(
                features=service, entity_rows=[{entity: i} for i in req.entity_ids]
            ).to_dict()
        else:
            assert reader is not None
            rows = reader.read(req.entity_ids)
            data = {c: [row[c] if row else None for row in rows] for c in columns}
        x = np.empty((n, len(columns)), dtype=np.float32)
        for j, (col, conv) in enumerate(zip(columns, converters, strict=True)):
            values = data[col]
            for i in range(n):
                v = values[i]
                if v is None:
                    x[i, j] = nan
                elif conv is None:
                    x[i, j] = float(v)
                else:
                    x[i, j] = conv.get(str(v), nan)
        proba = np.asarray(booster.inplace_predict(x), dtype=np.float64).reshape(-1).tolist()
        out: list[dict[str, Any]] = [
            {"entity_id": e, "probability": p, "label": positive if p >= threshold else negative}
            for e, p in zip(req.entity_ids, proba, strict=True)
        ]
        if req.explain:
            dm = xgb.DMatrix(
                x,
                feature_names=columns,
                feature_types=feature_types,
                enable_categorical=True,
                nthread=1,
            )
            raw = booster.predict(dm, pred_contribs=True)
            for item, row in zip(out, raw, strict=True):
                top = np.argsort(-np.abs(row[:-1]), kind="stable")[:top_k]
                item["explanation"] = {
                    "base_value": float(row[-1]),
                    "contributions": [{"feature": columns[k], "value": float(row[k])} for k in top],
                }
        return Response(orjson.dumps({"predictions": out}), media_type="application/json")

    return app


def run_bare_app(port: int, top_k: int, lookup: str) -> int:
    import uvicorn

    quiet_library_chatter()
    uvicorn.run(
        bare_app(top_k, lookup),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="asyncio",
        http="httptools",
    )
    return 0


# --------------------------------------------------------------------------------------------
# Load generators
# --------------------------------------------------------------------------------------------

WRK_LUA = """
local ids = {%(ids)s}
local n = #ids
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  i = i + 1
  return wrk.format(nil, "%(path)s", nil,
    '{"entity_ids":[' .. ids[(i %% n) + 1] .. '],"explain":%(explain)s}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%%d,"duration_s":%%.6f,"errors":%%d,"non2xx":%%d,' ..
    '"p50_ms":%%.4f,"p99_ms":%%.4f,"mean_ms":%%.4f,"max_ms":%%.4f}\\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout,
    e.status, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency.mean / 1e3, latency.max / 1e3))
end
"""


def run_wrk(
    port: int, conc: int, explain: bool, seconds: float, ids: list[int], tmp: Path
) -> dict[str, Any]:
    script = tmp / f"wrk-{conc}-{int(explain)}.lua"
    token = os.environ["MLSTEWARD_TOKEN"]
    script.write_text(
        WRK_LUA
        % {
            "ids": ",".join(map(str, ids)),
            "path": PREDICT_PATH,
            "explain": "true" if explain else "false",
            "token": token,
        }
    )
    cmd = [
        "wrk", "-t1", f"-c{conc}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "--latency", "-s", str(script), f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^RESULT (\{.*\})$", out.stdout, re.M)
    if match is None:
        raise RuntimeError(f"wrk gave no result:\n{out.stdout}\n{out.stderr}")
    return json.loads(match.group(1))


async def _client(
    port: int, conc: int, explain: bool, seconds: float, max_requests: int, ids: list[int]
) -> dict[str, Any]:
    import time as _t

    latencies: list[float] = []
    counters = {"sent": 0, "errors": 0, "non2xx": 0}
    token = os.environ["MLSTEWARD_TOKEN"]
    started = _t.perf_counter()
    deadline = started + seconds

    async def one_connection(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        k = offset
        try:
            while _t.perf_counter() < deadline and counters["sent"] < max_requests:
                counters["sent"] += 1
                body = (
                    f'{{"entity_ids":[{ids[k % len(ids)]}],'
                    f'"explain":{"true" if explain else "false"}}}'
                ).encode()
                k += conc
                head = (
                    f"POST {PREDICT_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                t0 = _t.perf_counter()
                writer.write(head + body)
                await writer.drain()
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                await reader.readexactly(length)
                latencies.append(_t.perf_counter() - t0)
                if not status_line.split(b" ")[1].startswith(b"2"):
                    counters["non2xx"] += 1
        except (OSError, asyncio.IncompleteReadError, IndexError):
            counters["errors"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one_connection(c) for c in range(conc)))
    elapsed = _t.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3

    return {
        "requests": len(latencies),
        "duration_s": elapsed,
        "errors": counters["errors"],
        "non2xx": counters["non2xx"],
        "p50_ms": pct(0.50) if latencies else float("nan"),
        "p99_ms": pct(0.99) if latencies else float("nan"),
        "mean_ms": sum(latencies) / len(latencies) * 1e3 if latencies else float("nan"),
        "max_ms": latencies[-1] * 1e3 if latencies else float("nan"),
    }


def run_python_client(
    port: int, conc: int, explain: bool, seconds: float, ids: list[int], tmp: Path
) -> dict[str, Any]:
    ids_file = tmp / "ids.json"
    ids_file.write_text(json.dumps(ids))
    cmd = [
        sys.executable, __file__, "--load-client", "--port", str(port), "--concurrency",
        str(conc), "--duration", str(seconds), "--ids-file", str(ids_file),
    ] + (["--explain"] if explain else [])  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^RESULT (\{.*\})$", out.stdout, re.M)
    if match is None:
        raise RuntimeError(f"load client gave no result:\n{out.stdout}\n{out.stderr}")
    return json.loads(match.group(1))


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def post_json(port: int, body: dict[str, Any]) -> tuple[int, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{PREDICT_PATH}",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {os.environ['MLSTEWARD_TOKEN']}",
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start_server(
    cmd: list[str], port: int, probe: str, log_path: Path, env: dict[str, str]
) -> subprocess.Popen:
    log = log_path.open("wb")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env={**os.environ, **env}
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            if http_get(port, probe, timeout=2)[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit(f"server not ready in 180 s:\n{log_path.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def scrape(port: int) -> dict[str, float]:
    """Every sample of ``/metrics`` for our model, summed over the other labels."""
    status, body = http_get(port, "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    out: dict[str, float] = {}
    for line in body.decode().splitlines():
        m = METRIC_LINE.match(line)
        if m is None or line.startswith("#"):
            continue
        name, labels, value = m.groups()
        if labels and f'model="{MODEL}"' not in labels:
            continue
        if name == "mlsteward_requests_total":
            status_label = re.search(r'status="(\d+)"', labels or "")
            name = f"{name}[{status_label.group(1) if status_label else ''}]"
        elif labels and 'le="' in labels:
            continue
        out[name] = out.get(name, 0.0) + float(value)
    return out


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


class Server:
    """One server process under test: bare or ours."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        port: int,
        probe: str,
        ours: bool,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name, self.cmd, self.port, self.probe, self.ours = name, cmd, port, probe, ours
        self.env = env or {}
        self.proc: subprocess.Popen | None = None
        self.results: dict[str, dict[str, Any]] = {}
        self.sample: list[dict[str, Any]] = []

    def start(self, tmp: Path, ids: list[int]) -> None:
        self.proc = start_server(
            self.cmd, self.port, self.probe, tmp / f"{self.name}.log", self.env
        )
        status, answer = post_json(self.port, {"entity_ids": ids[:3], "explain": True})
        if status != 200:
            raise SystemExit(f"{self.name}: a predict request answered {status}: {answer}")
        self.sample = answer["predictions"]

    def run(self, label: str, conc: int, explain: bool, load: Any, args: Any, ids: list[int],
            tmp: Path) -> None:  # fmt: skip
        assert self.proc is not None
        load(self.port, conc, explain, args.warmup, ids, tmp)  # warm-up (logged by ours too)
        before = scrape(self.port) if self.ours else {}
        cpu0 = cpu_seconds(self.proc.pid)
        r = load(self.port, conc, explain, args.duration, ids, tmp)
        r["cpu_s"] = cpu_seconds(self.proc.pid) - cpu0
        if self.ours:
            after = scrape(self.port)
            d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
            n = d.get("mlsteward_micro_batch_rows_count", 0.0)
            r["batch"] = d.get("mlsteward_micro_batch_rows_sum", 0.0) / n if n else float("nan")
        self.results[label] = r
        print(
            f"  {label:<17} {self.name:<5} {r['requests'] / r['duration_s']:8.0f} req/s  "
            f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms",
            flush=True,
        )

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        return stop_server(self.proc)


def answered(results_and_warmups: list[dict[str, Any]]) -> int:
    return sum(r["requests"] - r["non2xx"] for r in results_and_warmups)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per run")
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds of load on each server once started"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="back-to-back rounds of the c=1 no-explain pair"
    )
    parser.add_argument("--rows", type=int, default=5_000, help="cohort rows (entities)")
    parser.add_argument("--max-evals", type=int, default=3, help="Hyperopt trials")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s runs, 1 trial")
    parser.add_argument("--python-client", action="store_true", help="do not use wrk")
    parser.add_argument(
        "--auth-only",
        action="store_true",
        help="only the cost of authentication: ours against open, c=1 rounds",
    )
    # internal modes
    parser.add_argument("--bare-app", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load-client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--top-k", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--lookup", default="feast", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--explain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ids-file", help=argparse.SUPPRESS)
    parser.add_argument("--max-requests", type=int, default=10_000_000, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.bare_app:
        return run_bare_app(args.port, args.top_k, args.lookup)
    if args.load_client:
        ids = json.loads(Path(args.ids_file).read_text())
        result = asyncio.run(
            _client(
                args.port, args.concurrency, args.explain, args.duration, args.max_requests, ids
            )
        )
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    if args.quick:
        args.duration, args.warmup, args.settle, args.rounds = 2.0, 1.0, 3.0, 1
        args.rows, args.max_evals = min(args.rows, 3_000), 1

    wrk = None if args.python_client else shutil.which("wrk")
    load = run_wrk if wrk else run_python_client
    tool = f"wrk ({wrk}), 1 thread" if wrk else "python asyncio client (subprocess)"
    if wrk:
        # wrk gets whole seconds
        args.duration, args.warmup = max(1.0, round(args.duration)), max(1.0, round(args.warmup))
        args.settle = max(1.0, round(args.settle))

    with tempfile.TemporaryDirectory(prefix="mlsteward-bench-serving-") as tmp_name:
        tmp = Path(tmp_name)
        set_environment(tmp)
        started = time.perf_counter()
        print(f"setup: {args.rows:,} rows, {args.max_evals} trial(s) ...", flush=True)
        version, all_ids = build_champion(tmp, args.rows, args.max_evals)
        ids = all_ids[:: max(1, len(all_ids) // 2_000)][:2_000]
        print(f"setup done in {time.perf_counter() - started:.0f} s: champion v{version}, "
              f"{len(ids)} entity ids cycled", flush=True)  # fmt: skip

        from mlsteward.config.models import get_model_config

        cfg = get_model_config(MODEL)
        top_k = cfg.serving.top_k or cfg.scoring.top_k or 3

        shape = champion_shape()
        os.environ["MLSTEWARD_TOKEN"] = viewer_token()  # every load sends it
        load_before = os.getloadavg()[0]
        bare_port, reader_port, ours_port, open_port = (free_port() for _ in range(4))

        def bare_cmd(port: int, lookup: str) -> list[str]:
            return [sys.executable, __file__, "--bare-app", "--port", str(port), "--top-k",
                    str(top_k), "--lookup", lookup]  # fmt: skip

        def ours_cmd(port: int) -> list[str]:
            return [sys.executable, "-m", "mlsteward.serving", "--host", "127.0.0.1", "--port",
                    str(port), "--model", MODEL, "--log-level", "warning"]  # fmt: skip

        bare = Server("bare", bare_cmd(bare_port, "feast"), bare_port, "/healthz", ours=False)
        reader = Server("bare-r", bare_cmd(reader_port, "reader"), reader_port, "/healthz",
                        ours=False)  # fmt: skip
        ours = Server("ours", ours_cmd(ours_port), ours_port, "/readyz", ours=True,
                      env={"MLSTEWARD_SERVING_AUTH": "on"})  # fmt: skip
        open_ = Server("open", ours_cmd(open_port), open_port, "/readyz", ours=True,
                       env={"MLSTEWARD_SERVING_AUTH": "off"})  # fmt: skip
        control_port = free_port()
        control = Server("open-b", ours_cmd(control_port), control_port, "/readyz", ours=True,
                         env={"MLSTEWARD_SERVING_AUTH": "off"})  # fmt: skip
        servers = [ours, open_, control] if args.auth_only else [bare, reader, ours, open_]
        ours_kind = (ours, open_, control) if args.auth_only else (ours, open_)
        label, conc, explain = SCENARIOS[0]
        try:
            for server in servers:
                server.start(tmp, ids)
            for server in servers:  # past start-up: first full GCs, lazy imports
                load(server.port, 1, False, args.settle, ids, tmp)
            if args.auth_only:
                orders = [(ours, open_, control), (open_, control, ours), (control, ours, open_)]
                for n in range(args.rounds):  # rotate who goes first
                    for server in orders[n % 3]:
                        server.run(f"{label} #{n + 1}", conc, explain, load, args, ids, tmp)
            else:
                for n, (label, conc, explain) in enumerate(SCENARIOS):
                    pair = (bare, ours) if n % 2 == 0 else (ours, bare)  # alternate who is first
                    if n == 0:
                        pair = (bare, reader, ours, open_)
                    for server in pair:
                        server.run(label, conc, explain, load, args, ids, tmp)
                label, conc, explain = SCENARIOS[0]
                orders = [(ours, open_, bare, reader), (reader, open_, ours, bare),
                          (bare, reader, open_, ours)]  # fmt: skip
                for n in range(1, args.rounds):  # more rounds of the noise-sensitive c=1 tail
                    for server in orders[n % 3]:
                        server.run(f"{label} #{n + 1}", conc, explain, load, args, ids, tmp)
            final = {s.name: scrape(s.port) for s in ours_kind}
        finally:
            for server in servers:
                if server not in ours_kind:
                    server.stop()
            rcs = [s.stop() for s in ours_kind]

        from mlsteward.monitoring import prediction_log

        logged = prediction_log.read(MODEL, columns=["request_id"])
        log_rows, log_requests = len(logged), logged["request_id"].nunique()

    same = [
        abs(b["probability"] - o["probability"]) < 1e-6
        and [c["feature"] for c in b["explanation"]["contributions"]]
        == [c["feature"] for c in o["explanation"]["contributions"]]
        for other in servers
        if other is not ours
        for b, o in zip(other.sample, ours.sample, strict=True)
    ]
    # ---------------------------------------------------------------------------- the table
    print()
    print(f"{MODEL} v{version} ({shape}); {os.cpu_count()} cores (load average "
          f"{load_before:.1f} before the runs, {os.getloadavg()[0]:.1f} after); load: {tool}; "
          f"{args.duration:g} s per run after {args.warmup:g} s warm-up; "
          "one entity per request")  # fmt: skip
    if not args.auth_only:
        print_table(bare, reader, ours, open_)
    rounds = [k for k in ours.results if k.startswith(SCENARIOS[0][0])]
    if not args.auth_only:
        for base, what in ((bare, "bare (get_online_features)"), (reader, "bare-r (OnlineReader)")):
            judged = verdicts(ours, base, rounds, LATENCY_RATIO_TARGET, ("p50", "p99"))
            print(f"c=1 no explain, ours <= {LATENCY_RATIO_TARGET}x {what}, median of "
                  f"{len(rounds)} rounds: {judged}")  # fmt: skip
        r3 = ours.results[SCENARIOS[2][0]]
        rps3 = r3["requests"] / r3["duration_s"]
        ok3 = rps3 >= RPS_TARGET and r3["p99_ms"] <= P99_TARGET_MS
        print(f"target c=32 explain, ours >= {RPS_TARGET:,} req/s with p99 <= {P99_TARGET_MS:g} "
              f"ms: {rps3:,.0f} req/s, p99 {r3['p99_ms']:.1f} ms -> "
              f"{'met' if ok3 else 'NOT met'}")  # fmt: skip
    print()
    print(
        "authentication, c=1 no explain (ours: a bearer token on every request; open: "
        "MLSTEWARD_SERVING_AUTH=off):"
    )
    cpu_ratios = []
    for k in rounds:
        a, o = ours.results[k], open_.results[k]
        a_cpu, o_cpu = (r["cpu_s"] / r["requests"] * 1e3 for r in (a, o))
        cpu_ratios.append(a_cpu / o_cpu)
        print(f"  {k:<20} p50 {a['p50_ms']:.3f} / {o['p50_ms']:.3f} ms = "
              f"{a['p50_ms'] / o['p50_ms']:.3f}x   p99 {a['p99_ms']:.3f} / {o['p99_ms']:.3f} ms "
              f"= {a['p99_ms'] / o['p99_ms']:.3f}x   server cpu {a_cpu:.3f} / {o_cpu:.3f} "
              f"ms/req = {a_cpu / o_cpu:.3f}x")  # fmt: skip
    print(f"ours with auth <= {AUTH_RATIO_TARGET}x open on p50, median of {len(rounds)} rounds: "
          f"{verdicts(ours, open_, rounds, AUTH_RATIO_TARGET)}; server cpu per request "
          f"{statistics.median(cpu_ratios):.3f}x")  # fmt: skip
    if args.auth_only:
        print(f"control, open-b against open (the same service twice), median of {len(rounds)} "
              f"rounds: {verdicts(control, open_, rounds, AUTH_RATIO_TARGET, ())}")  # fmt: skip

    both = list(final.values())
    batches = sum(f.get("mlsteward_micro_batch_rows_count", 0.0) for f in both)
    rows = sum(f.get("mlsteward_micro_batch_rows_sum", 0.0) for f in both)
    served_200 = int(sum(f.get("mlsteward_requests_total[200]", 0) for f in both))
    scored = int(sum(f.get("mlsteward_predictions_total", 0) for f in both))
    written = int(sum(f.get("mlsteward_prediction_log_rows_total", 0) for f in both))
    refused = int(sum(f.get("mlsteward_requests_total[401]", 0) for f in both))
    client_ok = answered([r for s in ours_kind for r in s.results.values()])
    print()
    print(f"{', '.join(s.name for s in ours_kind)} /metrics before SIGTERM: "
          f"{served_200:,} requests answered 200, "
          f"{refused:,} refused 401, {int(batches):,} micro-batches, mean "
          f"{rows / batches if batches else 0.0:.2f} rows; prediction-log rows written so far "
          f"{written:,}")  # fmt: skip
    print(f"after SIGTERM (exit {rcs}): prediction log holds {log_rows:,} rows "
          f"({log_requests:,} request ids); servers scored {scored:,} rows for {served_200:,} "
          "requests answered 200; "
          f"client counted {client_ok:,} answered in measured runs (warm-ups excluded; "
          "requests in flight when a run's clock stops are answered and logged, "
          "not counted)")  # fmt: skip
    print(f"same answers (probability, top-{top_k} features) from all {len(servers)} servers "
          f"for {len(ours.sample)} sample ids: {'yes' if all(same) else 'NO'}")  # fmt: skip
    ok_log = log_rows == scored and log_requests == served_200 and all(same) and refused == 0
    print(f"every answered request logged, none refused: {'yes' if ok_log else 'NO'}")
    return 0 if ok_log and all(rc in (0, -signal.SIGTERM) for rc in rcs) else 1


def verdicts(
    ours: Server, base: Server, rounds: list[str], target: float, judged: tuple[str, ...] = ("p50",)
) -> str:
    """Median over rounds of ours/base on p50 and p99, each round's ratio, and the verdict on
    the ``judged`` ones."""
    out = []
    for q in ("p50", "p99"):
        ratios = sorted(ours.results[k][f"{q}_ms"] / base.results[k][f"{q}_ms"] for k in rounds)
        median = statistics.median(ratios)
        each = " ".join(f"{x:.3f}" for x in ratios)
        met = "met" if median <= target else "NOT met"
        out.append(f"{q} {median:.3f}x (rounds: {each})" + (f" {met}" if q in judged else ""))
    return "; ".join(out)


def print_table(bare: Server, reader: Server, ours: Server, open_: Server) -> None:
    head = (f"{'scenario':<18} {'server':<6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
            f"{'errors':>6} {'cpu ms/req':>10} {'batch':>6}   "
            "ratio ours/bare (p50, p99, req/s)")  # fmt: skip
    print(head)
    print("-" * len(head))
    for label in ours.results:
        for server in (bare, reader, ours, open_):
            r = server.results.get(label)
            if r is None:
                continue
            rps = r["requests"] / r["duration_s"]
            cpu = r["cpu_s"] / r["requests"] * 1e3 if r["requests"] else float("nan")
            batch = f"{r['batch']:6.1f}" if "batch" in r else f"{'':>6}"
            line = (f"{label:<18} {server.name:<6} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                    f"{rps:8.0f} {r['errors'] + r['non2xx']:>6} {cpu:10.2f} {batch}")  # fmt: skip
            if server is ours:
                b = bare.results[label]
                b_rps = b["requests"] / b["duration_s"]
                line += (f"   {r['p50_ms'] / b['p50_ms']:.2f}x  {r['p99_ms'] / b['p99_ms']:.2f}x"
                         f"  {rps / b_rps:.2f}x")  # fmt: skip
            print(line)
    print()


if __name__ == "__main__":
    raise SystemExit(main())
