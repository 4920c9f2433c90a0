"""DVC: ``export-dvc`` tracks a model's data snapshots and signed artifacts with DVC, so a git
commit pins their bytes and ``dvc checkout`` / ``dvc pull`` bring them back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mlsteward.cli.access import acting_as
from mlsteward.cli.output import JsonOpt, ModelName, run
from mlsteward.identity.roles import Permission

commands = typer.Typer()

DvcDirOpt = typer.Option(
    None,
    "--dvc-dir",
    help="Folder for the .dvc files, one subfolder per model (default: dvc/ at the root of the "
    "DVC repository).",
)


@commands.command("export-dvc")
def export_dvc(
    model: ModelName,
    versions: list[str] = typer.Option(
        [],
        "--versions",
        help="Which registered versions: all (default), champion or version numbers; "
        "repeatable or comma-separated (--versions 1,3).",
    ),
    snapshots: bool = typer.Option(
        True, "--snapshots/--no-snapshots", help="Track the data snapshots they were trained on."
    ),
    models: bool = typer.Option(
        True,
        "--models/--no-models",
        help="Track their signed model artifacts (a local artifact store only).",
    ),
    dvc_dir: Path | None = DvcDirOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Track MODEL's data snapshots and signed model artifacts with DVC.

    Writes a .dvc file per file (DVC's md5 beside our sha256 and what it is) and puts the data
    in DVC's cache, so `dvc checkout` restores it. The home must be in a git repository with
    DVC initialised. Every file is verified first; running it again changes nothing."""
    from mlsteward.governance.dvc_export import export_to_dvc

    def action() -> Any:
        acting_as(Permission.READ, model)
        return export_to_dvc(
            model,
            versions=versions,
            snapshots=snapshots,
            models=models,
            dvc_dir=dvc_dir,
        )

    run(as_json, action, export_human)


def _short(path: str, root: str) -> str:
    p = Path(path)
    return str(p.relative_to(root)) if p.is_relative_to(root) else path


def tracking_lines(p: dict) -> list[str]:
    """One line per tracked file, then the ``git add`` that records the change."""
    root = p["repo"]
    lines = []
    for f in p["files"]:
        what = (
            f"snapshot {f['sha256'][:12]}"
            if f["kind"] == "data_snapshot"
            else f"model v{f['meta']['version']}"
        )
        lines.append(
            f"  {f['status']:<9} {what:<21} md5 {f['md5'][:12]}  sha256 {f['sha256'][:12]}  "
            f"{_short(f['dvc_file'], root)}"
        )
    if p["git_add"]:
        lines.append("record them in git:")
        lines.append("  git add " + " ".join(_short(g, root) for g in p["git_add"]))
    return lines


def export_human(p: dict) -> str:
    changed = sum(f["status"] != "unchanged" for f in p["files"])
    versions = ", ".join(f"v{v}" for v in p["versions"])
    lines = [
        f"{p['model']} ({versions}): {len(p['files'])} file(s) tracked by DVC in {p['repo']}, "
        f"{changed} changed",
        *tracking_lines(p),
    ]
    lines += [f"  skipped v{s['version']}: {s['reason']}" for s in p["skipped"]]
    return "\n".join(lines)
