"""Data commands: the built-in datasets (``generate``), the contract-checked way in (``ingest``),
the online store (``materialize``) and outcomes that arrive later (``labels``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from mlsteward.cli.access import acting_as
from mlsteward.cli.dvc import DvcDirOpt, tracking_lines
from mlsteward.cli.output import JsonOpt, ModelName, model_name, run
from mlsteward.cli.runtime import use_local_platform
from mlsteward.errors import MlstewardError
from mlsteward.identity.roles import Permission

commands = typer.Typer()


@commands.command()
def generate(
    model: str = typer.Argument(
        "heart_disease",
        help="A model with a built-in dataset: heart_disease, diabetes or readmission.",
        callback=model_name,
    ),
    rows: int = typer.Option(50_000, help="Number of rows (visits or discharges)."),
    seed: int = typer.Option(0, help="Generator seed (same seed, same data)."),
    out: Path | None = typer.Option(None, help="Output path (default: the config's source)."),
    start: str | None = typer.Option(
        None, help="A later batch of new patients from this date (e.g. 2025-07-01), not a cohort."
    ),
    days: int = typer.Option(30, help="Length of a batch's time window (with --start)."),
    id_offset: int | None = typer.Option(
        None, "--id-offset", help="Batch patient ids start above this (with --start)."
    ),
    shift: list[str] = typer.Option(
        [], "--shift", help="Covariate shift COLUMN=SDs, e.g. bmi=1.5 (repeatable)."
    ),
    prevalence: float | None = typer.Option(
        None, help="Label shift of a binary label: the target positive rate."
    ),
    outcome_scale: float | None = typer.Option(
        None,
        "--outcome-scale",
        help="Label shift of a count outcome (readmission): its mean times this, 0.5 to 2.",
    ),
    concept: float = typer.Option(0.0, help="Concept shift strength, 0 (none) to 1."),
    append_to_source: bool = typer.Option(
        False,
        "--append-to-source",
        help="Also append the rows to the model's source file, as new visits arriving upstream.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Write a model's built-in synthetic dataset (or a later, optionally shifted, batch)."""
    from mlsteward.data.builtin import builtin
    from mlsteward.data.synthetic import BATCH_ID_OFFSET, append_dataset, write_dataset

    def action() -> dict:
        try:
            data = builtin(model)
        except ValueError as exc:
            raise MlstewardError(str(exc)) from exc
        label_shift = _label_shift(data.regression, model, prevalence, outcome_scale)
        try:
            how = data.shift(parse_shifts(shift), label_shift, concept)
        except ValueError as exc:
            raise MlstewardError(f"invalid shift: {exc}") from exc
        if start is None:
            if append_to_source:
                raise MlstewardError("--append-to-source needs a batch (--start DATE)")
            df = data.generate_cohort(n_rows=rows, seed=seed, shift=how)
        else:
            offset = BATCH_ID_OFFSET if id_offset is None else id_offset
            df = data.generate_batch(
                rows, seed, start=start, days=days, shift=how, id_offset=offset
            )
        path = write_dataset(df, out or _source(model))
        appended = None
        source = _source(model) if append_to_source else path
        if source != path:
            try:
                appended = str(append_dataset(df, source))
            except ValueError as exc:
                raise MlstewardError(str(exc)) from exc
        ts = df[data.dataset.timestamp]
        return {
            "model": model,
            "path": str(path),
            "rows": len(df),
            **data.summary(df),
            "time_range": [ts.min().isoformat(), ts.max().isoformat()],
            "shift": {
                "covariate": how.covariate,
                "prevalence": prevalence,
                "outcome_scale": outcome_scale,
                "concept": concept,
            },
            "appended_to": appended,
        }

    run(as_json, action, _generate_human)


def _source(model: str) -> Path:
    """The model's source file; read only when it is needed, so ``--out`` alone works before
    the model's config does."""
    from mlsteward.config.models import get_model_config

    return get_model_config(model).source.resolved_path()


def _label_shift(
    regression: bool, model: str, prevalence: float | None, outcome_scale: float | None
) -> float | None:
    """The label-shift option that fits the model's label; the other one is refused by name."""
    if regression and prevalence is not None:
        raise MlstewardError(
            f"--prevalence is a positive rate; {model}'s outcome is a count: use --outcome-scale"
        )
    if not regression and outcome_scale is not None:
        raise MlstewardError(
            f"--outcome-scale scales a count outcome; {model}'s label is binary: use --prevalence"
        )
    return outcome_scale if regression else prevalence


def _generate_human(p: dict) -> str:
    from mlsteward.data.builtin import describe_summary

    text = (
        f"wrote {p['rows']} rows to {p['path']} "
        f"({describe_summary(p)}, "
        f"{p['time_range'][0]} .. {p['time_range'][1]})"
    )
    if p["shift"]["covariate"]:
        moved = ", ".join(f"{c} {k:+g} SD" for c, k in p["shift"]["covariate"].items())
        text += f"\n  covariate shift: {moved}"
    if p["appended_to"]:
        text += f"\n  appended to the source {p['appended_to']}"
    return text


def parse_shifts(items: list[str]) -> dict[str, float]:
    """``--shift COLUMN=SDS`` options as a mapping; a malformed one is refused by name."""
    shifts: dict[str, float] = {}
    for item in items:
        col, sep, amount = item.partition("=")
        try:
            shifts[col.strip()] = float(amount)
        except ValueError:
            sep = ""
        if not sep or not col.strip():
            raise MlstewardError(f"--shift {item!r}: expected COLUMN=SDS, e.g. bmi=1.5")
    return shifts


@commands.command()
def ingest(
    model: ModelName,
    source: Path | None = typer.Option(None, help="Source file (default: the config's)."),
    dvc: bool = typer.Option(
        False,
        "--dvc",
        help="Also track the snapshot with DVC (the home must be in a git repository with DVC "
        "initialised; see export-dvc).",
    ),
    dvc_dir: Path | None = DvcDirOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Check a source against the data contract and make it the model's feature data."""
    use_local_platform()
    from flows.ingestion import ingestion_flow

    def action() -> Any:
        requested_by = acting_as(Permission.INGEST, model).identity
        root = _dvc_root() if dvc else None  # refused before anything is ingested
        result = ingestion_flow(
            model=model, source=str(source) if source else None, requested_by=requested_by
        )
        if root is None:
            return result
        from mlsteward.data.dvc_tracking import track_snapshot

        tracked = track_snapshot(model, result.data_version, root, dvc_dir)
        return {**result.model_dump(), "dvc": tracked.model_dump()}

    run(as_json, action, _ingest_human)


def _dvc_root() -> Path:
    """The DVC repository holding the home (dvc is optional: loaded only for ``--dvc``)."""
    from mlsteward.config.settings import home
    from mlsteward.data.dvc_tracking import dvc_repo_root

    return dvc_repo_root(home())


def _ingest_human(p: dict) -> str:
    c = p["contract"]
    lines = [
        f"ingested {p['rows']} rows for {p['model']}: data version "
        f"{p['data_version'][:12]} ({p['time_range'][0]} .. {p['time_range'][1]})",
        f"  snapshot: {p['snapshot_path']}",
    ]
    if c["bad_rows"]:
        lines.append(
            f"  quarantined {c['bad_rows']} rows ({c['bad_share']:.2%}) in {p['quarantine_path']}"
        )
        lines += [f"    {v['rule']} on {v['column']}: {v['rows']}" for v in c["violations"]]
    if p.get("dvc"):
        lines.append(f"tracked by DVC in {p['dvc']['repo']}:")
        lines += tracking_lines(p["dvc"])
    return "\n".join(lines)


@commands.command()
def materialize(model: ModelName, as_json: bool = JsonOpt) -> None:
    """Load the latest feature values into the online store (for low-latency serving)."""
    use_local_platform()
    from flows.ingestion import materialize_flow

    def action() -> Any:
        acting_as(Permission.INGEST, model)
        return materialize_flow(model=model)

    run(
        as_json,
        action,
        lambda p: f"materialized {p['model']} into the online store up to {p['end']}",
    )


@commands.command()
def labels(model: ModelName, path: Path, as_json: bool = JsonOpt) -> None:
    """Attach outcomes that arrived later (entity, event time, label) to the prediction log."""
    from mlsteward.audit import audit_store
    from mlsteward.config.models import get_model_config
    from mlsteward.monitoring.outcomes import ingest_labels

    def action() -> dict:
        actor = acting_as(Permission.OUTCOMES, model).actor
        cfg = get_model_config(model)
        with audit_store() as store:
            return ingest_labels(cfg, path, actor=actor, audit=store)

    run(
        as_json,
        action,
        lambda p: (
            f"{p['matched']} of {p['rows']} outcomes matched logged predictions of {p['model']}"
            f" ({p['unmatched']} not (yet) matched, kept for later predictions)"
        ),
    )
