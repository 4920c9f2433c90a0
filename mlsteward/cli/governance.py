"""Governance commands: ``promote``, ``approve`` and ``rollback`` change who serves (through
flows, so each decision is a Prefect run); ``status``, ``report`` and ``audit`` only read."""

from __future__ import annotations

from typing import Any

import typer

from mlsteward.cli.output import JsonOpt, ModelName, emit, fail, model_name, run
from mlsteward.cli.runtime import use_local_platform

commands = typer.Typer()


def governance_human(p: dict) -> str:
    """A governance decision: what happened to the version, why, and the champion now."""
    lines = [f"{p['model']} v{p['version']}: {p['decision'].upper()}"]
    lines += [f"  - {r}" for r in p.get("reasons", [])]
    promo = p.get("promotion")
    if promo:
        prev = promo["previous_champion"] or "none"
        lines.append(
            f"  champion is now v{promo['version']} (previous: {prev}; artifact sha256 "
            f"{promo['artifact_sha256'][:12]} verified; audit #{promo['audit_seq']})"
        )
    return "\n".join(lines)


@commands.command()
def promote(
    model: ModelName,
    version: str,
    approver: str | None = typer.Option(
        None, help="Under the manual policy: approve now as NAME instead of pausing for a form."
    ),
    reason: str | None = typer.Option(None, help="Why (recorded in the audit trail)."),
    revalidate: bool = typer.Option(False, help="Re-run the gates even if the report is current."),
    as_json: bool = JsonOpt,
) -> None:
    """Promote VERSION to champion: runs the gates if needed and follows the model's policy."""
    use_local_platform()
    from flows.governance import promotion_flow
    from mlsteward.audit import default_actor
    from mlsteward.governance.specs import PromotionSpec

    def action() -> Any:
        # Refused before a flow run starts; the run checks the same again (deployments too)
        PromotionSpec.check_request(version, approver, reason)
        return promotion_flow(
            model=model,
            version=version,
            approver=approver,
            reason=reason,
            revalidate=revalidate,
            requested_by=approver or default_actor(),
        )

    decided = run(as_json, action, governance_human)
    if decided.get("decision") == "rejected":  # the gates or the approver refused it
        raise typer.Exit(1)


@commands.command()
def approve(
    flow_run_id: str,
    approver: str = typer.Option(..., help="Who decides."),
    reason: str = typer.Option(..., help="Why (recorded in the audit trail)."),
    reject: bool = typer.Option(False, "--reject", help="Reject instead of approving."),
    as_json: bool = JsonOpt,
) -> None:
    """Answer a promotion waiting for approval (a paused flow run), as in the Prefect UI form."""
    use_local_platform()
    from mlsteward.governance.approvals import answer_approval

    def action() -> dict:
        return answer_approval(flow_run_id, approve=not reject, approver=approver, reason=reason)

    run(
        as_json,
        action,
        lambda p: f"{p['decision']} sent to flow run {p['flow_run_id']} ({p['flow_run_name']})",
    )


@commands.command()
def rollback(
    model: ModelName,
    reason: str = typer.Option(..., help="Why (required; recorded in the audit trail)."),
    to: str | None = typer.Option(None, "--to", help="An earlier champion version."),
    as_json: bool = JsonOpt,
) -> None:
    """Restore the previous (or a named earlier) champion; the current one is retired."""
    use_local_platform()
    from flows.governance import rollback_flow
    from mlsteward.audit import default_actor
    from mlsteward.governance.specs import RollbackSpec

    def action() -> Any:
        # Refused before a flow run starts; the run checks the same again (deployments too)
        RollbackSpec.check_request(reason)
        return rollback_flow(
            model=model, reason=reason, to_version=to, requested_by=default_actor()
        )

    run(
        as_json,
        action,
        lambda p: (
            f"{p['model']}: champion v{p['previous_champion']} -> v{p['version']} "
            f"(artifact sha256 {p['artifact_sha256'][:12]} verified; audit #{p['audit_seq']})"
        ),
    )


@commands.command()
def status(model: ModelName, as_json: bool = JsonOpt) -> None:
    """Champion and challenger of MODEL, with their numbers and the latest decisions."""
    from mlsteward.config.models import get_model_config
    from mlsteward.governance.promotion import status as governance_status

    def action() -> dict:
        get_model_config(model)  # unknown models fail with the list of known ones
        return governance_status(model)

    run(as_json, action, _status_human)


def _status_human(p: dict) -> str:
    def line(role: str) -> str:
        v = p[role]
        if v is None:
            return f"{role:<11} none"
        m = v["metrics"]
        return (
            f"{role:<11} v{v['version']}  roc_auc {m.get('roc_auc', float('nan')):.4f}  "
            f"lifecycle {v['lifecycle']}  validation {v['validation_status']}"
        )

    lines = [f"{p['model']}", line("champion"), line("challenger")]
    if p["previous_champion"]:
        lines.append(f"{'rollback to':<11} v{p['previous_champion']}")
    if p.get("canary"):
        c = p["canary"]
        lines.append(
            f"{'canary':<11} v{c['challenger_version']} on {c['fraction']:.0%} of traffic "
            f"(step {c['step']}, rollout {c['rollout_id']})"
        )
    lines.append("recent decisions:")
    lines += [
        f"  #{r['seq']:<5} {r['ts'][:19]}  {r['action']:<20} v{r['version'] or '-':<4} "
        f"{r['actor']}: {r['reason'][:80]}"
        for r in p["recent_decisions"]
    ] or ["  none"]
    return "\n".join(lines)


@commands.command()
def report(model: ModelName, as_json: bool = JsonOpt) -> None:
    """Write the governance report (model card) as self-contained HTML and markdown."""
    from mlsteward.report import write_report

    def human(p: dict) -> str:
        lines = [f"model card written: {p['html']}", f"                    {p['markdown']}"]
        lines += [f"  warning: {w}" for w in p.get("warnings", [])]
        return "\n".join(lines)

    run(as_json, lambda: write_report(model), human)


audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
commands.add_typer(audit_app, name="audit")


@audit_app.command("log")
def audit_log(
    model: str | None = typer.Option(None, help="Only this model.", callback=model_name),
    action_name: str | None = typer.Option(None, "--action", help="Only this action."),
    since: str | None = typer.Option(None, help="ISO time or date, e.g. 2026-11-01."),
    limit: int = typer.Option(200, help="The most recent N matching records."),
    as_json: bool = JsonOpt,
) -> None:
    """Show audit records, oldest first."""
    from mlsteward.audit import audit_store

    def action() -> dict:
        with audit_store() as store:
            records = store.query(model=model, action=action_name, since=since, limit=limit)
        return {"records": [r.to_dict() for r in records]}

    def human(p: dict) -> str:
        return (
            "\n".join(
                f"#{r['seq']:<6} {r['ts'][:19]}  {r['action']:<20} {r['model'] or '-':<16} "
                f"v{r['version'] or '-':<4} {r['actor']}: {r['reason'][:100]}"
                for r in p["records"]
            )
            or "no audit records match"
        )

    run(as_json, action, human)


@audit_app.command("verify")
def audit_verify(
    expect_head: str | None = typer.Option(
        None, help="A head hash stored elsewhere earlier; catches a rewritten chain."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Check the hash chain; report the first broken link. Exit 1 if the trail was altered."""
    from mlsteward.audit import audit_store

    with audit_store() as store:
        result = store.verify(expect_head=expect_head)
    if result.ok:
        emit(
            as_json,
            result.to_dict(),
            lambda p: f"audit trail intact: {p['records']} records, head {p['head_hash']}",
        )
        return
    fail(as_json, f"audit trail broken: {result.problem}", result.to_dict())
