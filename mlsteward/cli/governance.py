"""Governance commands: ``promote``, ``approve``, ``reject`` and ``rollback`` change who serves,
as the caller (``MLSTEWARD_TOKEN``'s principal, or the local operator in single-user mode),
through ``mlsteward.governance.decisions``, the same functions the REST API calls; ``approvals``,
``status``, ``report`` and ``audit`` only read."""

from __future__ import annotations

from typing import Any

import typer

from mlsteward.cli.access import acting_as
from mlsteward.cli.output import JsonOpt, ModelName, fmt_headline, model_name, run
from mlsteward.cli.remote import governance_api
from mlsteward.cli.runtime import use_local_platform
from mlsteward.identity.roles import Permission

commands = typer.Typer()

NO_TYPED_APPROVER = (
    "--approver is gone: a typed name is not an identity. This command acts as its caller: "
    "MLSTEWARD_TOKEN's principal (a token from `mlsteward tokens create NAME`), or the local "
    "operator in single-user mode; see `mlsteward whoami`"
)

ApproverOpt = typer.Option(
    None, "--approver", hidden=True, help="Removed: the caller's identity is used."
)


def governance_human(p: dict) -> str:
    """A governance decision: what happened to the version, why, and the champion now."""
    lines = [f"{p['model']} v{p['version']}: {p['decision'].upper()}"]
    lines += [f"  - {r}" for r in p.get("reasons") or []]
    if p.get("approvals") and p.get("decision") == "promoted":
        lines.append(f"  approved by {', '.join(p['approvals'])}")
    promo = p.get("promotion")
    if promo:
        prev = promo["previous_champion"] or "none"
        lines.append(
            f"  champion is now v{promo['version']} (previous: {prev}; artifact sha256 "
            f"{promo['artifact_sha256'][:12]} verified; audit #{promo['audit_seq']})"
        )
    return "\n".join(lines)


def _refuse_typed_approver(approver: str | None) -> None:
    from mlsteward.errors import MlstewardError

    if approver is not None:
        raise MlstewardError(NO_TYPED_APPROVER)


@commands.command()
def promote(
    model: ModelName,
    version: str,
    reason: str | None = typer.Option(
        None, help="Why (recorded in the audit trail; needed when it counts as an approval)."
    ),
    override: bool = typer.Option(
        False,
        "--override",
        help="Promote a version a person rejected or that was rolled back from (admin; needs "
        "--reason).",
    ),
    revalidate: bool = typer.Option(False, help="Re-run the gates even if the report is current."),
    approver: str | None = ApproverOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Promote VERSION to champion as the caller, following the model's policy.

    The gates run again if the report is stale. Under the manual policy the caller's approval
    counts once (unless they trained the version); the version is promoted when
    approvals.required approvals are in, else it waits in the queue (exit 0)."""
    use_local_platform()

    def action() -> Any:
        from mlsteward.governance import decisions
        from mlsteward.identity import cli_principal

        _refuse_typed_approver(approver)
        client = governance_api()
        if client is not None:
            with client:
                if revalidate:
                    gates = client.validate(model, version)
                    if gates["decision"] == "rejected":
                        return gates
                return client.promote(model, version, reason=reason, override=override)
        principal = cli_principal()
        if revalidate:
            judged = decisions.validate(principal, model, version)
            if judged.decision == "rejected":
                return judged
        return decisions.promote(principal, model, version, reason=reason, override=override)

    decided = run(as_json, action, governance_human)
    if decided.get("decision") == "rejected":  # the gates or a person refused it
        raise typer.Exit(1)


@commands.command()
def approve(
    model: str = typer.Argument(
        ..., show_default=False, help="The model (or a paused flow run's id, the older form)."
    ),
    version: str | None = typer.Argument(None, show_default=False, help="VERSION to approve."),
    reason: str = typer.Option(..., help="Why (recorded in the audit trail)."),
    reject: bool = typer.Option(False, "--reject", help="Reject instead of approving."),
    print_token: bool = typer.Option(
        False,
        "--print-token",
        help="Only print an approval token for this decision, to paste into the Prefect form.",
    ),
    approver: str | None = ApproverOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Approve (or --reject) VERSION of MODEL as the caller (four eyes: not its trainer).

    A promotion run paused for this version gets the answer, with an approval token minted
    for the caller; otherwise the approval is recorded and the version promoted once enough
    approvers agree. ``mlsteward approve FLOW_RUN_ID --reason TEXT`` answers that run.
    """
    use_local_platform()

    def action() -> Any:
        from mlsteward.config.names import check_model_name
        from mlsteward.errors import MlstewardError
        from mlsteward.governance import decisions
        from mlsteward.identity import cli_principal

        _refuse_typed_approver(approver)
        decision = "reject" if reject else "approve"
        client = governance_api()
        if client is not None:
            if version is None:
                raise MlstewardError(
                    "with MLSTEWARD_API_URL set, approve MODEL VERSION (the API answers a "
                    "paused run of that version itself)"
                )
            name = check_model_name(model)
            with client:
                if print_token:
                    answer = client.call(
                        "POST",
                        f"/models/{name}/versions/{version}/approval-token",
                        json={"decision": decision, "reason": reason},
                    )
                    return {**answer, "token": answer["approval_token"]}
                if reject:
                    return client.reject(name, version, reason=reason)
                return client.approve(name, version, reason=reason)
        principal = cli_principal()
        if version is None:
            if not _is_run_id(model):
                raise MlstewardError(
                    "approve needs MODEL VERSION (or a paused flow run's id, a UUID)"
                )
            return decisions.answer_flow_run(principal, model, approve=not reject, reason=reason)
        name = check_model_name(model)
        if print_token:
            token = decisions.approval_token(
                principal, name, version, decision=decision, reason=reason
            )
            return {"model": name, "version": version, "decision": decision, "token": token}
        if reject:
            return decisions.reject(principal, name, version, reason=reason)
        return decisions.approve(principal, name, version, reason=reason)

    def human(p: dict) -> str:
        if "token" in p:
            return (
                f"approval token ({p['decision']} {p['model']} v{p['version']}; one use, "
                f"expires in an hour):\n{p['token']}"
            )
        return governance_human(p)

    decided = run(as_json, action, human)
    if decided.get("decision") == "rejected" and not reject:  # the gates refused it
        raise typer.Exit(1)


def _is_run_id(text: str) -> bool:
    from uuid import UUID

    try:
        UUID(text)
    except ValueError:
        return False
    return True


@commands.command("reject")
def reject_version(
    model: ModelName,
    version: str,
    reason: str = typer.Option(..., help="Why (required; recorded in the audit trail)."),
    as_json: bool = JsonOpt,
) -> None:
    """Reject VERSION as the caller: it loses the challenger alias, and only an admin's
    override makes it champion later. A promotion run paused for it gets the rejection."""
    use_local_platform()

    def action() -> Any:
        from mlsteward.governance import decisions
        from mlsteward.identity import cli_principal

        client = governance_api()
        if client is not None:
            with client:
                return client.reject(model, version, reason=reason)
        return decisions.reject(cli_principal(), model, version, reason=reason)

    run(as_json, action, governance_human)


@commands.command()
def approvals(
    model: str | None = typer.Argument(None, help="Only this model.", callback=model_name),
    as_json: bool = JsonOpt,
) -> None:
    """Versions waiting for approval: who asked, who approved so far, how many are needed."""

    def action() -> dict:
        from mlsteward.governance.decisions import pending_approvals
        from mlsteward.identity import Permission, authorize, cli_principal

        client = governance_api()
        if client is not None:
            with client:
                return {"pending": client.pending_approvals(model)}
        authorize(cli_principal(), Permission.READ)
        return {"pending": pending_approvals(model)}

    def human(p: dict) -> str:
        return (
            "\n".join(
                f"{r['model']} v{r['version']}: {len(r['approvals'])} of "
                f"{r['approvals_required']} approval(s) "
                f"({', '.join(r['approvals']) or 'none yet'}); requested {r['requested_at'][:19]} "
                f"by {r['requested_by']}"
                + (f"; flow run {r['flow_run_id']}" if r["flow_run_id"] else "")
                for r in p["pending"]
            )
            or "no versions wait for approval"
        )

    run(as_json, action, human)


@commands.command()
def rollback(
    model: ModelName,
    reason: str = typer.Option(..., help="Why (required; recorded in the audit trail)."),
    to: str | None = typer.Option(None, "--to", help="An earlier champion version."),
    override: bool = typer.Option(
        False,
        "--override",
        help="Roll back to a version a person rejected or that was rolled back from (admin).",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Restore the previous (or a named earlier) champion as the caller; the current one is
    retired."""

    def action() -> Any:
        from mlsteward.governance import decisions
        from mlsteward.identity import cli_principal

        client = governance_api()
        if client is not None:
            with client:
                return client.rollback(model, reason=reason, to=to, override=override)
        return decisions.rollback(cli_principal(), model, reason=reason, to=to, override=override)

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
    """Champion (as the governance record says) and challenger of MODEL, with their numbers,
    whether MLflow's alias agrees, and the latest decisions."""
    from mlsteward.config.models import get_model_config
    from mlsteward.governance.promotion import status as governance_status

    def action() -> dict:
        client = governance_api()
        if client is not None:
            with client:
                return client.status(model)
        acting_as(Permission.READ, model)
        get_model_config(model)  # unknown models fail with the list of known ones
        return governance_status(model)

    run(as_json, action, _status_human)


def _status_human(p: dict) -> str:
    def line(role: str) -> str:
        v = p[role]
        if v is None:
            return f"{role:<11} none"
        return (
            f"{role:<11} v{v['version']}  {fmt_headline(v['metrics'])}  "
            f"lifecycle {v['lifecycle']}  validation {v['validation_status']}"
        )

    lines = [f"{p['model']}", line("champion"), line("challenger")]
    check = p.get("champion_check") or {}
    if check.get("problem"):
        lines.append(f"{'WARNING':<11} {check['problem']}")
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
