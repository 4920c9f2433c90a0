"""``mlsteward api``: run the governance REST API (``mlsteward.api``)."""

from __future__ import annotations

import typer

from mlsteward.cli.runtime import use_local_platform

commands = typer.Typer()


@commands.command()
def api(
    host: str = typer.Option("127.0.0.1", help="interface to bind (loopback by default)"),
    port: int = typer.Option(8788, help="port"),
) -> None:
    """Run the governance REST API: routes under /api/v1, OpenAPI docs at /docs. Every route
    but /api/v1/health needs a bearer token (mlsteward tokens create)."""
    use_local_platform()  # the runs it starts go to the platform's server when one runs
    from mlsteward.api.__main__ import serve

    serve(host, port)
