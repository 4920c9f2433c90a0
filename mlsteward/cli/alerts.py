"""Alert commands: ``monitor`` and ``watch`` runs of the standing rules, the open incidents
(``alerts list``) and the Prefect automations that deliver notifications (``alerts sync``)."""

from __future__ import annotations

from typing import Any

import typer

from mlsteward.cli.access import acting_as
from mlsteward.cli.output import JsonOpt, ModelName, run
from mlsteward.cli.runtime import use_local_platform
from mlsteward.identity.roles import Permission

commands = typer.Typer()
alerts_app = typer.Typer(help="Standing alert rules and their notifications.", no_args_is_help=True)
commands.add_typer(alerts_app, name="alerts")


@commands.command()
def monitor(model: ModelName, as_json: bool = JsonOpt) -> None:
    """Check MODEL's standing alert rules once (serving, run success, quality since the
    promotion); breaches become alerts."""
    use_local_platform()
    from flows.monitor import monitor_flow

    run(
        as_json,
        lambda: monitor_flow(model=model, requested_by=acting_as(Permission.DRIFT, model).identity),
        _monitor_human,
    )


@commands.command()
def watch(
    model: ModelName,
    version: str | None = typer.Option(None, help="The champion to watch (default: current)."),
    as_json: bool = JsonOpt,
) -> None:
    """Watch MODEL's champion for alerts.watch.window_minutes after its promotion; roll back
    on a breach of a rule marked rollback: true."""
    use_local_platform()
    from flows.monitor import watch_flow

    run(
        as_json,
        lambda: watch_flow(
            model=model,
            version=version,
            requested_by=acting_as(Permission.ROLLBACK, model).identity,
        ),
        _watch_human,
    )


@alerts_app.command("list")
def alerts_list(
    model: str | None = typer.Option(None, help="Only this model's incidents."),
    as_json: bool = JsonOpt,
) -> None:
    """The incidents open now: rule, subject, since when, breaches counted and not sent."""

    def action() -> dict[str, Any]:
        from mlsteward.alerts.state import AlertState

        acting_as(Permission.READ, model)
        with AlertState() as state:
            return {"firing": state.firing(model)}

    def human(p: dict[str, Any]) -> str:
        if not p["firing"]:
            return "no open incidents"
        return "\n".join(
            f"{i['model']} {i['rule']} {i['subject'] or '-'}: since {i['fired_at']}, "
            f"{i['breaches']} breach(es), {i['suppressed']} not sent"
            for i in p["firing"]
        )

    run(as_json, action, human)


@alerts_app.command("sync")
def alerts_sync(
    model: str | None = typer.Option(None, help="Only this model (default: every model)."),
    as_json: bool = JsonOpt,
) -> None:
    """Make each model's notification blocks and automation in Prefect what its config says
    (make up and make deploy run this)."""
    use_local_platform()

    def action() -> dict[str, Any]:
        from mlsteward.alerts.automations import sync_automations
        from mlsteward.config.models import get_model_config, model_names

        acting_as(Permission.MANAGE)
        names = [model] if model else model_names()
        return {"models": [sync_automations(get_model_config(n)).to_dict() for n in names]}

    def human(p: dict[str, Any]) -> str:
        return "\n".join(
            f"{m['model']}: " + (", ".join(m["blocks"]) if m["blocks"] else "no channels")
            for m in p["models"]
        )

    run(as_json, action, human)


def _alert_lines(alerts: list[dict[str, Any]]) -> list[str]:
    lines = []
    for a in alerts:
        state = "no verdict" if a["breached"] is None else "BREACHED" if a["breached"] else "ok"
        told = (
            f" [{a['transition']}]" if a["transition"] in ("fired", "reminded", "resolved") else ""
        )
        subject = f" {a['subject']}" if a["subject"] else ""
        lines.append(f"  {a['rule']}{subject}: {state}{told}: {a['summary']}")
    return lines


def _monitor_human(p: dict[str, Any]) -> str:
    if p["champion"] is None:
        return f"{p['model']} has no champion: nothing to monitor"
    head = f"{p['model']} v{p['champion']['version']}: {len(p['alerts'])} rule(s) checked"
    return "\n".join([head, *_alert_lines(p["alerts"])])


def _watch_human(p: dict[str, Any]) -> str:
    head = f"{p['model']} v{p['version']}: watched, {len(p['checks'])} check(s)"
    if p["rolled_back_to"]:
        head += f"; ROLLED BACK to v{p['rolled_back_to']}"
    last = p["checks"][-1]["alerts"] if p["checks"] else []
    return "\n".join([head, *_alert_lines(last)])
