"""The ``mlsteward`` command line: the face on top of the flows.

Every command prints a human summary, or with ``--json`` one JSON document for CI, and exits
non-zero on failure (:mod:`mlsteward.cli.output`). The commands live in one module per stage
of the loop; this root app only wires them, in the loop's order. Flows (and with them Prefect)
are imported inside the commands that run one: ``--help``, config checks and the commands
that only read stay fast, and nothing heavy runs at import.
"""

from __future__ import annotations

import typer

from mlsteward.cli import (
    alerts,
    api,
    audit,
    data,
    dvc,
    evidence,
    governance,
    identity,
    keys,
    monitoring,
    platform,
    process,
    reconcile,
    serving,
    training,
)
from mlsteward.cli.runtime import prepare_process

app = typer.Typer(
    name="mlsteward",
    help="Governed, closed-loop ML pipelines on Prefect, Feast, MLflow and XGBoost.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _setup() -> None:
    """Process-wide settings for a CLI run, applied before any command (never at import)."""
    prepare_process()


for group in (
    data,
    dvc,
    training,
    governance,
    audit,
    evidence,
    reconcile,
    monitoring,
    alerts,
    process,
    serving,
    platform,
    identity,
    keys,
    api,
):
    app.add_typer(group.commands)


def main() -> None:  # pragma: no cover - console entry point
    app()
