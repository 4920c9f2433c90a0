"""``mlsteward keys``: the governance signing key (``init`` for local use, ``show``)."""

from __future__ import annotations

import typer

from mlsteward.cli.access import acting_as
from mlsteward.cli.output import JsonOpt, run
from mlsteward.identity.roles import Permission

commands = typer.Typer()
keys_app = typer.Typer(help="The governance signing key.", no_args_is_help=True)
commands.add_typer(keys_app, name="keys")


@keys_app.command("init")
def keys_init(
    force: bool = typer.Option(
        False, "--force", help="Replace an existing key (old signatures stop verifying)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Create the governance key pair for local use (P-256; the private key is mode 0600)."""
    from mlsteward.audit import Action, audit_store
    from mlsteward.signing import keys

    def action() -> dict:
        principal = acting_as(Permission.MANAGE)
        made = keys.init_keys(force=force)
        if made.created:
            with audit_store() as store:
                store.append(
                    Action.SIGNING_KEY_CREATED,
                    actor=principal.actor,
                    reason=f"governance signing key {made.key_id} created",
                    details={"key_id": made.key_id, "public_key": str(made.public)},
                )
        return {
            "created": made.created,
            "key_id": made.key_id,
            "private_key": str(made.private),
            "public_key": str(made.public),
        }

    def human(p: dict) -> str:
        verb = "created" if p["created"] else "already exists (--force replaces it)"
        return (
            f"governance key {p['key_id']} {verb}\n"
            f"  private: {p['private_key']}\n  public:  {p['public_key']}"
        )

    run(as_json, action, human)


@keys_app.command("show")
def keys_show(as_json: bool = JsonOpt) -> None:
    """The governance public key and its id (what verifiers need)."""
    from mlsteward.signing import keys

    def action() -> dict:
        public = keys.load_public_key()
        return {
            "key_id": keys.key_id(public),
            "public_key_path": str(keys.public_key_path()),
            "public_key_pem": keys.public_pem(public).decode("ascii"),
        }

    run(as_json, action, lambda p: f"governance key {p['key_id']}\n{p['public_key_pem']}")
