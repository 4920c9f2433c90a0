"""``mlsteward audit reconcile``: the registry's champion alias against the governance record."""

from __future__ import annotations

import typer

from mlsteward.cli.access import acting_as
from mlsteward.cli.audit import audit_app
from mlsteward.cli.output import JsonOpt, emit, fail
from mlsteward.identity.roles import Permission

commands = typer.Typer()


@audit_app.command("reconcile")
def audit_reconcile(
    model: list[str] = typer.Argument(None, help="Models to check (default: every config)."),
    repair: bool = typer.Option(
        False,
        "--repair",
        help="Finish or undo an interrupted promotion and put the alias back where the record "
        "says (audited; needs permission 'rollback').",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Compare each model's MLflow @champion with the governance record; exit 1 if any
    disagree (with --repair: if any could not be put right)."""
    from mlsteward.config.models import model_names
    from mlsteward.errors import MlstewardError
    from mlsteward.governance.reconcile import reconcile

    try:
        names = list(model or []) or model_names()
        principals = [
            acting_as(Permission.ROLLBACK if repair else Permission.READ, name) for name in names
        ]
        actor = principals[0].actor if principals else "reconcile"
        found = reconcile(names, repair=repair, actor=actor)
    except MlstewardError as exc:
        fail(as_json, str(exc))
    payload = {"repair": repair, "models": [r.to_dict() for r in found]}
    if all(r.ok for r in found):
        emit(as_json, payload, lambda p: "\n".join(m["message"] for m in p["models"]))
        return
    fail(as_json, "; ".join(r.message for r in found if not r.ok), payload)
