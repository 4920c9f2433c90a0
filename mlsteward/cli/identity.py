"""Identity commands: ``users`` (principals and their roles), ``tokens`` (bearer tokens, shown
once, stored hashed) and ``whoami``. Managing either needs the ``manage`` permission; in
single-user mode the local operator is an admin."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from mlsteward.cli.output import JsonOpt, run

if TYPE_CHECKING:
    from mlsteward.identity import Principal

commands = typer.Typer()
users_app = typer.Typer(help="Users and service accounts, and their roles.", no_args_is_help=True)
tokens_app = typer.Typer(help="Bearer tokens (shown once, stored hashed).", no_args_is_help=True)
commands.add_typer(users_app, name="users")
commands.add_typer(tokens_app, name="tokens")


def _manager() -> Principal:
    """The caller, when it may manage principals (commands import their work lazily)."""
    from mlsteward.identity import Permission, authorize, cli_principal

    principal = cli_principal()
    authorize(principal, Permission.MANAGE)
    return principal


@commands.command()
def whoami(as_json: bool = JsonOpt) -> None:
    """Who this command line acts as: MLSTEWARD_TOKEN's principal, or the local operator."""
    from mlsteward.identity import cli_principal

    def human(p: dict) -> str:
        note = "" if p["authenticated"] else " (local, unauthenticated: single-user mode)"
        return (
            f"{p['identity']}{note}\n  roles: {', '.join(p['roles'])}\n"
            f"  teams: {', '.join(p['teams']) or '-'}\n"
            f"  permissions: {', '.join(p['permissions'])}"
        )

    run(as_json, lambda: cli_principal().to_dict(), human)


@users_app.command("add")
def users_add(
    name: str = typer.Argument(..., help="The user's (or service account's) name."),
    role: list[str] = typer.Option(..., "--role", help="viewer, trainer, approver, admin or ci."),
    team: list[str] = typer.Option([], "--team", help="A team whose models this one may change."),
    service: bool = typer.Option(False, "--service", help="A service account, not a person."),
    replace: bool = typer.Option(False, "--replace", help="Change an existing one's roles."),
    as_json: bool = JsonOpt,
) -> None:
    """Add a user (or with --service, a service account) with one or more roles."""
    from mlsteward.identity import identity_store

    def action() -> dict:
        by = _manager()
        with identity_store() as store:
            p = store.add_principal(
                name,
                roles=role,
                kind="service" if service else "user",
                teams=team,
                by=by,
                replace=replace,
            )
        return p.to_dict()

    run(
        as_json,
        action,
        lambda p: (
            f"{p['identity']}: roles {', '.join(p['roles'])}"
            + (f", teams {', '.join(p['teams'])}" if p["teams"] else "")
            + f"\n  next: mlsteward tokens create {p['identity']}"
        ),
    )


@users_app.command("list")
def users_list(as_json: bool = JsonOpt) -> None:
    """Every principal with its roles and teams."""
    from mlsteward.identity import identity_store

    def action() -> dict:
        _manager()
        with identity_store() as store:
            return {"principals": store.list_principals()}

    def human(p: dict) -> str:
        return (
            "\n".join(
                f"{u['identity']:<28} {','.join(u['roles']):<24} {','.join(u['teams']) or '-'}"
                for u in p["principals"]
            )
            or "no principals yet: mlsteward users add NAME --role ROLE"
        )

    run(as_json, action, human)


@tokens_app.command("create")
def tokens_create(
    principal: str = typer.Argument(..., help="user:NAME or service:NAME (a bare NAME is a user)."),
    days: float = typer.Option(90, "--days", help="Days until it expires (at most 366)."),
    description: str = typer.Option("", "--description", help="What it is for."),
    as_json: bool = JsonOpt,
) -> None:
    """Create a token for a principal. It is printed once and stored only as a hash."""
    from mlsteward.identity import identity_store
    from mlsteward.identity.store import parse_identity

    def action() -> dict:
        by = _manager()
        kind, name = parse_identity(principal)
        with identity_store() as store:
            info, token = store.create_token(
                f"{kind}:{name}", by=by, expires_in_days=days, description=description
            )
        return {**info.to_dict(), "token": token}

    run(
        as_json,
        action,
        lambda p: (
            f"token {p['token_id']} for {p['identity']}, expires {p['expires_at']}:\n\n"
            f"  {p['token']}\n\n"
            "It is shown only now; store it in a secret manager. Use it as\n"
            "  MLSTEWARD_TOKEN=<token> mlsteward ...   or   Authorization: Bearer <token>"
        ),
    )


@tokens_app.command("list")
def tokens_list(
    principal: str | None = typer.Option(None, "--principal", help="Only this principal's."),
    as_json: bool = JsonOpt,
) -> None:
    """Tokens with their state (active, expired, revoked); never the tokens themselves."""
    from mlsteward.identity import identity_store
    from mlsteward.identity.store import parse_identity

    def action() -> dict:
        _manager()
        identity = ":".join(parse_identity(principal)) if principal else None
        with identity_store() as store:
            return {"tokens": [t.to_dict() for t in store.list_tokens(identity)]}

    def human(p: dict) -> str:
        return (
            "\n".join(
                f"{t['token_id']}  {t['identity']:<24} {t['state']:<8} expires {t['expires_at']}  "
                f"{t['description']}"
                for t in p["tokens"]
            )
            or "no tokens"
        )

    run(as_json, action, human)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: str = typer.Argument(..., help="The token's id (see `mlsteward tokens list`)."),
    as_json: bool = JsonOpt,
) -> None:
    """Revoke a token: refused everywhere within seconds (services cache a check for 5 s)."""
    from mlsteward.identity import identity_store

    def action() -> dict:
        by = _manager()
        with identity_store() as store:
            return store.revoke_token(token_id, by=by).to_dict()

    run(as_json, action, lambda p: f"token {p['token_id']} of {p['identity']}: {p['state']}")
