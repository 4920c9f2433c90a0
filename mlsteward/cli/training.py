"""Training commands: ``train`` a new version (gates and promotion follow), ``reproduce`` one."""

from __future__ import annotations

import json

import typer

from mlsteward.cli.access import acting_as
from mlsteward.cli.governance import governance_human
from mlsteward.cli.output import JsonOpt, ModelName, fmt_metrics, run
from mlsteward.cli.runtime import use_local_platform
from mlsteward.identity.roles import Permission

commands = typer.Typer()


@commands.command()
def train(
    model: ModelName,
    max_evals: int | None = typer.Option(None, "--max-evals", help="Hyperopt trials."),
    seed: int | None = typer.Option(None, help="Seed for Hyperopt and XGBoost."),
    promote: bool = typer.Option(
        True, help="--no-promote: stop after the gates (a passing version stays challenger)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Tune, train, evaluate and register a new version of MODEL; gates, then promotion."""
    use_local_platform()
    from flows.training import training_flow

    run(
        as_json,
        lambda: training_flow(
            model=model,
            max_evals=max_evals,
            seed=seed,
            promote=promote,
            requested_by=acting_as(Permission.TRAIN, model).identity,
        ),
        _train_human,
    )


def _train_human(p: dict) -> str:
    """The registered version, its search, its test metrics (its task's) and the gates'
    decision; a regression model has no decision threshold, so none is printed."""
    trials = f"  trials: {p['trials']}"
    if p.get("threshold") is not None:
        trials += f"   decision threshold: {p['threshold']:.3f}"
    return "\n".join(
        [
            f"registered {p['model']} version {p['version']}  ({p['model_uri']})",
            trials,
            f"  best params: {json.dumps(p['best_params'], sort_keys=True)}",
            "  test metrics:",
            fmt_metrics(p["test_metrics"]),
            f"  data version: {p['lineage']['data_digest'][:12]}  "
            f"artifact sha256: {p['artifact_sha256'][:12]}",
            governance_human(p["governance"]),
        ]
    )


@commands.command()
def reproduce(
    model: ModelName,
    version: str | None = typer.Argument(None, help="Version to rebuild (default: champion)."),
    full: bool = typer.Option(
        False, "--full", help="Re-run the whole Hyperopt search with the recorded seed."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Refuse if commit, uv.lock or library versions differ."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Rebuild a registered version from its recorded snapshot, params and seed; print
    `identical` or the first step that diverged. Exits 1 unless identical."""
    use_local_platform()
    from flows.reproduce import reproduce_flow

    rebuilt = run(
        as_json,
        lambda: reproduce_flow(
            model=model,
            version=version,
            full=full,
            strict=strict,
            requested_by=acting_as(Permission.TRAIN, model).identity,
        ),
        _reproduce_human,
    )
    if rebuilt.get("result") != "identical":
        raise typer.Exit(1)


def _reproduce_human(p: dict) -> str:
    lines = [f"{p['model']} v{p['version']} ({p['mode']}): {p['summary'].upper()}"]
    if p["result"] == "refused":
        lines.append("  --strict: the environment differs from the one that trained:")
    for env in p["environment"]:
        lines.append(f"  env  {env['what']}: recorded {env['recorded']}, now {env['current']}")
    for step in p["steps"]:
        mark = {"same": "ok  ", "differs": "DIFF"}.get(step["status"], "--  ")
        took = "" if step["status"] == "not_run" else f"  ({step['seconds']:.1f} s)"
        lines.append(f"  {mark} {step['name']:<16} {step['detail']}{took}")
    for name, delta in p["metric_deltas"].items():
        lines.append(f"       {name}: {delta:+.3g}")
    if p["config_changes"]:
        keys = ", ".join(c["key"] for c in p["config_changes"])
        lines.append(f"  info: config changed since training (recorded config used): {keys}")
    original = p.get("original_training_seconds")
    lines.append(
        f"  took {p['seconds']:.1f} s"
        + (f" (original training run {original:.1f} s)" if original else "")
        + f"; report {p['report_path']}"
    )
    return "\n".join(lines)
