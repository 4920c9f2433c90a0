"""``python -m mlsteward.gateway --host 127.0.0.1 --port 8787``: the CI webhook gateway.

Settings come from the environment (see ``mlsteward.gateway.settings``); without a secret the
gateway refuses to start, because an unauthenticated endpoint that starts training runs is
worse than none.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlsteward.gateway",
        description="Signed CI webhooks that start mlsteward deployments on a Prefect server.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=8787, help="port (default: %(default)s)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level")
    args = parser.parse_args(argv)

    import uvicorn

    from mlsteward.errors import MlstewardError
    from mlsteward.gateway.app import create_app

    try:
        app = create_app()
    except MlstewardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
