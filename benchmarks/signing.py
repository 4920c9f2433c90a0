"""What do signed models cost? Signing at registration and verifying at every load, against
the plain SHA-256 check of the same files in the same run.

In a temporary ``MLSTEWARD_HOME`` (the local profile, MLflow on SQLite), an XGBoost model of the
demo model's largest size (``--rounds`` trees of depth ``--depth``: the demo config allows 400
rounds) is fitted on the built-in cohort and registered as training registers it, which signs
it. Then, ``--repeats`` times each, alternating the two sides of every comparison:

- registration: signing the downloaded model directory (key, every file hashed, ECDSA) and
  uploading the signature, against hashing ``model.ubj`` alone (what registration did before);
- a load's check: ``registry.check_artifact`` (one download of the model directory, the SHA-256
  of ``model.ubj``, the signature's download and verification, the logged-model check) against
  the check before signing (the same download and SHA-256, nothing else);
- the verification alone on a local directory, against the SHA-256 of ``model.ubj``;
- ``registry.load_verified`` in full (with XGBoost's load), for scale.

Medians in milliseconds; the added cost per load is the difference of the medians (the target
is at most +50 ms). A check that fails to verify stops the script with its refusal.

Run: ``.venv/bin/python benchmarks/signing.py [--repeats 30] [--rounds 400] [--depth 6]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))


def _time_into(fn: Callable[[], object], times: list[float]) -> None:
    t0 = time.perf_counter()
    fn()
    times.append((time.perf_counter() - t0) * 1000)


def _pairs(
    repeats: int, ours: Callable[[], object], baseline: Callable[[], object]
) -> tuple[float, float]:
    """Medians (ms) of ``ours`` and ``baseline``, run alternately after one warm-up each."""
    ours(), baseline()
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeats):
        _time_into(ours, a)
        _time_into(baseline, b)
    return statistics.median(a), statistics.median(b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mlsteward-bench-signing-") as tmp:
        os.environ["MLSTEWARD_HOME"] = str(Path(tmp) / "home")
        os.environ["MLSTEWARD_PROJECT_ROOT"] = str(PROJECT_ROOT)
        for var in ("MLSTEWARD_PROFILE", "MLFLOW_TRACKING_URI", "MLSTEWARD_AUDIT_URL"):
            os.environ.pop(var, None)
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        import mlflow
        import xgboost as xgb

        from mlsteward.data.synthetic import generate_cohort
        from mlsteward.governance import mlflow_adapter, registry, signatures
        from mlsteward.integrity import sha256_file

        frame = generate_cohort(n_rows=args.rows, seed=0)
        x = frame.select_dtypes("number").drop(columns=["patient_id", "heart_disease"])
        x = x.astype("float32")
        model = xgb.XGBClassifier(
            n_estimators=args.rounds, max_depth=args.depth, tree_method="hist", n_jobs=2
        ).fit(x, frame["heart_disease"])
        run_id = mlflow_adapter.start_run("heart_disease", "bench-signing", {})
        registered = mlflow_adapter.log_and_register(
            run_id, model, x.head(2), "heart_disease", ["xgboost"], {"lifecycle": "candidate"}
        )
        mlflow_adapter.end_run(run_id)
        info = registry.get_version("heart_disease", registered.version)

        work = Path(tmp) / "work"
        work.mkdir()
        model_dir = work / "model"
        model_dir.mkdir()
        mlflow.artifacts.download_artifacts(artifact_uri=info.source, dst_path=str(model_dir))
        files = sorted(p for p in model_dir.iterdir() if p.name not in signatures.IGNORED)
        size = sum(p.stat().st_size for p in files)
        model_file = model_dir / mlflow_adapter.MODEL_FILE
        model_size = model_file.stat().st_size
        signature = work / "model.sig"

        def sign_and_upload() -> None:
            signatures.sign_model_dir(model_dir, signature)
            mlflow_adapter.client().log_artifact(
                run_id, str(signature), f"bench/{signatures.SIGNATURE_DIR}"
            )

        sign_ms, sha_reg_ms = _pairs(args.repeats, sign_and_upload, lambda: sha256_file(model_file))
        sign_only_ms, _ = _pairs(
            args.repeats,
            lambda: signatures.sign_model_dir(model_dir, signature),
            lambda: sha256_file(model_file),
        )

        def check_signed() -> None:
            with tempfile.TemporaryDirectory(dir=work) as d:
                registry.check_artifact(info, Path(d))

        def check_sha_only() -> None:
            with tempfile.TemporaryDirectory(dir=work) as d:
                local = Path(
                    mlflow.artifacts.download_artifacts(artifact_uri=info.source, dst_path=d)
                )
                if sha256_file(local / mlflow_adapter.MODEL_FILE) != info.artifact_sha256:
                    raise SystemExit("the baseline's SHA-256 differs")

        check_ms, check_sha_ms = _pairs(args.repeats, check_signed, check_sha_only)
        verify_ms, sha_ms = _pairs(
            args.repeats,
            lambda: signatures.verify_model_dir(model_dir, signature),
            lambda: sha256_file(model_file),
        )
        load_ms = statistics.median(_timings(args.repeats, lambda: registry.load_verified(info)))

    print(
        f"model directory: {len(files)} files, {size / 1024:.0f} KiB "
        f"(model.ubj {model_size / 1024:.0f} KiB: {args.rounds} trees of depth "
        f"{args.depth}); medians of {args.repeats} runs each, alternating"
    )
    print("registration (once per version):")
    print(f"  sign + upload signature   {sign_ms:8.1f} ms   (sign alone {sign_only_ms:.1f} ms)")
    print(f"  SHA-256 of model.ubj      {sha_reg_ms:8.1f} ms")
    print(f"  added by signing          {sign_ms - sha_reg_ms:+8.1f} ms")
    print("per model load:")
    print(f"  check_artifact, signed    {check_ms:8.1f} ms   (download, SHA-256, signature)")
    print(f"  download + SHA-256 only   {check_sha_ms:8.1f} ms   (the check before signing)")
    print(f"  added per load            {check_ms - check_sha_ms:+8.1f} ms   (target <= +50 ms)")
    print(f"  verify_model_dir, local   {verify_ms:8.1f} ms   vs SHA-256 {sha_ms:.1f} ms")
    print(f"  load_verified in full     {load_ms:8.1f} ms   (with XGBoost's load)")
    return 0


def _timings(repeats: int, fn: Callable[[], object]) -> list[float]:
    fn()
    out: list[float] = []
    for _ in range(repeats):
        _time_into(fn, out)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
