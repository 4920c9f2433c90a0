"""Process commands: the delivery process measured (``process report``) and reviewed with its
alerts and audit record (``process review``, what the weekly deployment runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mlsteward.cli.access import acting_as
from mlsteward.cli.output import JsonOpt, run
from mlsteward.cli.runtime import use_local_platform
from mlsteward.identity.roles import Permission

commands = typer.Typer()
process_app = typer.Typer(
    help="The delivery process measured and under statistical control.", no_args_is_help=True
)
commands.add_typer(process_app, name="process")

ModelOpt = typer.Option(None, "--model", help="One model (default: every model and all together).")
SinceOpt = typer.Option(None, "--since", help="Start, ISO date or time (default: 90 days ago).")
UntilOpt = typer.Option(None, "--until", help="End, ISO date or time (default: now).")


@process_app.command("report")
def report(
    model: str | None = ModelOpt,
    since: str | None = SinceOpt,
    until: str | None = UntilOpt,
    out: Path | None = typer.Option(
        None, "--out", help="Folder for the HTML and JSON (default: <home>/reports/process)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Lead and cycle times, first-pass yield, rejection Pareto, retrains, drift recovery,
    rollbacks and failed runs, as control charts with special causes and Cpk. Writes a
    self-contained HTML page and a JSON file; --json prints the JSON."""
    use_local_platform()

    def action() -> dict[str, Any]:
        from mlsteward.process.build import build_report, parse_when
        from mlsteward.process.render import write_report
        from mlsteward.report.write import reports_dir

        acting_as(Permission.READ, model)
        result = build_report(
            model, since=parse_when(since, "--since"), until=parse_when(until, "--until")
        )
        stem = f"process-report-{model or 'all'}"
        files = write_report(result, out or reports_dir() / "process", stem)
        return {"files": files, **result.to_dict()}

    run(as_json, action, _human)


@process_app.command("review")
def review(
    model: str | None = ModelOpt,
    since: str | None = SinceOpt,
    until: str | None = UntilOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Run the process review now (as the weekly process-review deployment does): the report,
    a Prefect artifact, current special causes as alerts, and an audit record."""
    use_local_platform()

    def action() -> dict[str, Any]:
        from flows.process import process_review_flow
        from mlsteward.process.build import parse_when

        who = acting_as(Permission.DRIFT, model).identity
        return process_review_flow(
            model=model,
            since=parse_when(since, "--since"),
            until=parse_when(until, "--until"),
            requested_by=who,
        )

    run(as_json, action, _review_human)


def _scope_lines(doc: dict[str, Any]) -> list[str]:
    from mlsteward.process.view import hours_text  # the report's own wording of a duration

    lines = [f"period {doc['since'][:16]} .. {doc['until'][:16]} (UTC)"]
    for name, scope in doc["scopes"].items():
        m = scope["metrics"]
        fpy, cfr = m["first_pass_yield"], m["change_failure_rate"]
        lead = sorted(p["value"] for p in m["lead_time_to_decision"])
        median = lead[len(lead) // 2] if lead else None
        lines.append(
            f"{name}: {m['versions_validated']} version(s) validated, first-pass yield "
            + ("-" if fpy is None else f"{fpy:.0%}")
            + f", {m['promotions']} promotion(s), change failure rate "
            + ("-" if cfr is None else f"{cfr:.0%}")
            + ", lead time to decision "
            + ("-" if median is None else f"~{hours_text(median)}")
            + f", {m['retrain_count']} retrain(s)"
        )
        for c in scope["special_causes"]:
            when = "CURRENT" if c["current"] else "earlier"
            lines.append(f"  special cause ({when}) {c['title']}: {c['rule']}: {c['description']}")
    lines += [f"note: {n}" for n in doc.get("notes", [])]
    return lines


def _human(p: dict[str, Any]) -> str:
    files = p["files"]
    return "\n".join([*_scope_lines(p), f"report: {files['html']}", f"json:   {files['json']}"])


def _review_human(p: dict[str, Any]) -> str:
    lines = _scope_lines(p["report"])
    lines += [
        f"alert {a['transition']}: {a['summary']}"
        for a in p["alerts"]
        if a["transition"] in ("fired", "reminded", "resolved")
    ]
    lines.append(f"report: {p['files']['html']}")
    return "\n".join(lines)
