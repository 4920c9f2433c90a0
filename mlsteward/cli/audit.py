"""``mlsteward audit``: read the audit trail, check it against its newest signed checkpoint and
write one (``log``, ``verify``, ``checkpoint``)."""

from __future__ import annotations

import typer

from mlsteward.cli.access import acting_as
from mlsteward.cli.output import JsonOpt, emit, fail, model_name, run
from mlsteward.cli.remote import governance_api
from mlsteward.config.profiles import masked
from mlsteward.config.settings import audit_anchor_url
from mlsteward.identity.roles import Permission

commands = typer.Typer()
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
        client = governance_api()
        if client is not None:
            query = {"model": model, "action": action_name, "since": since, "limit": limit}
            with client:
                return client.call("GET", "/audit", params=query)
        acting_as(Permission.READ)
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
    no_checkpoint: bool = typer.Option(
        False,
        "--no-checkpoint",
        help="Check the hash chain only, not against the newest signed checkpoint.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Check the hash chain against the newest signed checkpoint; report the first broken
    link. Exit 1 if the trail was altered."""
    from mlsteward.audit import audit_store
    from mlsteward.audit.checkpoints import verify_with_checkpoint
    from mlsteward.errors import MlstewardError

    try:
        client = governance_api()
        if client is not None:
            params: dict[str, str] = {"expect_head": expect_head} if expect_head else {}
            if no_checkpoint:
                params["checkpoint"] = "false"
            with client:
                found = client.call("GET", "/audit/verify", params=params or None)
        else:
            acting_as(Permission.READ)
            with audit_store() as store:
                if no_checkpoint:
                    found = store.verify(expect_head=expect_head).to_dict()
                else:
                    found = verify_with_checkpoint(store, expect_head=expect_head).to_dict()
    except MlstewardError as exc:
        fail(as_json, str(exc))
    if found["ok"]:
        emit(as_json, found, _intact)
        return
    fail(as_json, f"audit trail broken: {found['problem']}", found)


def _intact(p: dict) -> str:
    lines = [f"audit trail intact: {p['records']} records, head {p['head_hash']}"]
    cp = p.get("checkpoint")
    if cp:
        after = p["records"] - cp["seq"]
        lines.append(
            f"checked against checkpoint {cp['seq']} of {cp['ts']} (key {cp['key_id']}) in "
            f"{p.get('anchor')}; {after} record(s) since"
        )
    if p.get("warning"):
        lines.append(f"warning: {p['warning']}")
    return "\n".join(lines)


@audit_app.command("checkpoint")
def audit_checkpoint(
    reason: str = typer.Option("checkpoint on request", help="Why (audited)."),
    as_json: bool = JsonOpt,
) -> None:
    """Sign the audit trail's head now and keep it in the anchor outside the store."""
    from mlsteward.audit import audit_store
    from mlsteward.audit.checkpoints import write_checkpoint

    def action() -> dict:
        principal = acting_as(Permission.PROMOTE)
        with audit_store() as store:
            checkpoint = write_checkpoint(store, actor=principal.actor, reason=reason)
        return {**checkpoint.to_dict(), "anchor": masked(audit_anchor_url())}

    def human(p: dict) -> str:
        return (
            f"checkpoint {p['seq']} of {p['ts']}: head {p['head_hash']}, signed by key "
            f"{p['key_id']}, kept in {p['anchor']}"
        )

    run(as_json, action, human)
