"""``python -m mlsteward.api --host 127.0.0.1 --port 8788``: the governance API on uvicorn
(``mlsteward api`` runs the same)."""

from __future__ import annotations

import argparse
import sys

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8788


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlsteward.api",
        description="The governance REST API (routes under /api/v1, docs at /docs).",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)"
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.log_level)
    return 0


def serve(host: str, port: int, log_level: str = "info") -> None:
    """Run the API until interrupted (SIGTERM lets requests in flight finish)."""
    import uvicorn  # start-up time: only the serving process needs the server

    from mlsteward.api.app import create_app

    app = create_app()
    _freeze_heap()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=30,
    )


def _freeze_heap() -> None:
    """Import what the first requests would (MLflow's stores, SQLAlchemy), then freeze the heap.

    Those imports leave ~400,000 long-lived objects that every full collection walks again:
    a 215 ms pause every few requests, measured as the p95 of every page and route (Models
    page p95 565 ms against a p50 of 302). Frozen, they are never scanned. Only in the API's
    own process: frozen objects are never freed.
    """
    import gc

    import mlflow.store.model_registry.sqlalchemy_store
    import mlflow.store.tracking.sqlalchemy_store
    import mlflow.tracking  # noqa: F401

    import mlsteward.governance.registry  # noqa: F401

    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
