"""``mlsteward evidence``: an evidence pack of one registered version for auditors, and its
offline check.

    mlsteward evidence MODEL VERSION [--framework soc2] [--out DIR] [--json]
    mlsteward evidence verify PACK [--public-key governance.pub] [--json]

``evidence MODEL VERSION`` is short for ``evidence pack MODEL VERSION``. Packing acts as the
command line's principal (``Permission.READ`` on the model) and is recorded in the audit trail;
``verify`` reads nothing but the pack, so it runs anywhere mlsteward is installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from mlsteward.cli.access import acting_as
from mlsteward.cli.output import JsonOpt, ModelName, fail, run
from mlsteward.cli.runtime import use_local_platform
from mlsteward.identity.roles import Permission

DEFAULT_FRAMEWORK = "eu-ai-act"


class PackByDefault(TyperGroup):
    """``evidence MODEL VERSION`` runs ``evidence pack MODEL VERSION``: a first word that is no
    subcommand (nor a request for help) starts the default one."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's own click Context
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["pack", *args]
        return super().parse_args(ctx, args)


commands = typer.Typer()
evidence_app = typer.Typer(
    cls=PackByDefault,
    help="Evidence packs for auditors: `evidence MODEL VERSION` writes one, "
    "`evidence verify PACK` checks one offline.",
    no_args_is_help=True,
)
commands.add_typer(evidence_app, name="evidence")


@evidence_app.command("pack")
def pack(
    model: ModelName,
    version: str = typer.Argument(
        ..., help="The registered version, e.g. 3, or champion (as the governance record says)."
    ),
    framework: str = typer.Option(
        DEFAULT_FRAMEWORK,
        "--framework",
        help="Map the evidence to this framework's controls: eu-ai-act, nist-ai-rmf, "
        "iso-42001, soc2, gdpr or hipaa.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder to write the pack and its zip into (default <home>/evidence)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Write the evidence pack of MODEL VERSION: a folder and a zip beside it, with an index
    mapping each piece to the framework's controls and listing the controls with no evidence."""
    use_local_platform()  # the platform's MLflow, as its governance account, when one runs

    def action() -> dict[str, Any]:
        from mlsteward.evidence.pack import build_pack

        principal = acting_as(Permission.READ, model)
        return build_pack(
            model,
            version,
            principal=principal,
            framework=framework,
            out_dir=out,
            extra={"process_metrics": _process_report(model)},
        ).to_dict()

    run(as_json, action, _packed)


def _process_report(model: str) -> Any:
    """The model's delivery process over the last 90 days (the process room and the evidence
    room sit side by side, so the command line joins them)."""

    def write(root: Path) -> list[str]:
        from mlsteward.process.build import build_report
        from mlsteward.process.render import write_report

        files = write_report(build_report(model), root / "process", "process-report")
        return [Path(p).relative_to(root).as_posix() for p in files.values()]

    return write


def _packed(p: dict[str, Any]) -> str:
    lines = [
        f"evidence pack of {p['model']} v{p['version']} ({p['framework']}): {p['path']}",
        f"  zip      {p['zip_path']} ({p['zip_bytes']:,} bytes)",
        f"  files    {p['files']} ({p['size_bytes']:,} bytes), digest {p['digest']}",
        f"  evidence {', '.join(p['evidence'])}",
        f"  absent   {', '.join(p['absent']) or 'none'}",
        f"  gaps     {p['gaps']} control(s) without evidence (see INDEX.md)",
        f"  audit    records {p['audit']['slice'][0]}..{p['audit']['slice'][1]} up to checkpoint "
        f"{p['audit']['checkpoint_seq']}; packing recorded as #{p['audit_seq']}",
        f"  verify   mlsteward evidence verify {p['zip_path']}",
    ]
    lines += [f"  warning: {w}" for w in p.get("warnings", [])]
    return "\n".join(lines)


@evidence_app.command("verify")
def verify(
    path: Path = typer.Argument(..., help="The pack's folder or its zip."),
    public_key: Path | None = typer.Option(
        None,
        "--public-key",
        help="The governance public key you hold (PEM): the pack must be "
        "signed by it, not only by the key it carries.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Check a pack offline from the pack alone: every file against its manifest, the audit
    slice's hash chain, the signed checkpoint, the model artifact's signature. Exit 1 naming
    the file or record at fault."""
    from mlsteward.errors import MlstewardError
    from mlsteward.evidence.verify_pack import verify_pack

    try:
        result = verify_pack(path, public_key=public_key)
    except MlstewardError as exc:
        fail(as_json, str(exc))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        typer.echo("\n".join(result.lines()))
        verdict = "intact" if result.ok else "NOT intact"
        failed = sum(1 for c in result.checks if not c.ok)
        typer.echo(
            f"pack {verdict}: {result.model} v{result.version} ({result.framework}), "
            f"{len(result.checks) - failed} of {len(result.checks)} checks passed"
        )
    if not result.ok:
        raise typer.Exit(1)
