"""``python -m mlsteward.serving --host 127.0.0.1 --port 8800``: the prediction service.

Runs on uvicorn's asyncio loop: under overload uvloop starved connections (p99 1-2 s in
measurements) where asyncio held about 230 ms. SIGTERM stops accepting, lets in-flight
requests finish, then writes every queued prediction to the log before the process exits; after
a SIGKILL the next start writes them from the log's write-ahead file (``mlsteward.serving.wal``)
before it answers anyone.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlsteward.serving",
        description="Online predictions from the models' verified champions (and canaries).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8800, help="port (default: %(default)s)")
    parser.add_argument("--model", action="append", help="serve only this model (repeatable)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level")
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="one log line per request (off: /metrics counts requests, and the line costs "
        "more than the rest of a request's bookkeeping)",
    )
    args = parser.parse_args(argv)

    import uvicorn

    from mlsteward.errors import MlstewardError
    from mlsteward.serving.app import create_app
    from mlsteward.serving.settings import ServingSettings

    try:
        settings = ServingSettings.from_env()
        if args.model:
            settings = settings.model_copy(update={"models": args.model})
        app = create_app(settings=settings, freeze_gc=True)
    except MlstewardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        loop="asyncio",
        http="httptools",
        timeout_graceful_shutdown=30,
        access_log=args.access_log,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
