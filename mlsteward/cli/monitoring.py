"""Monitoring commands: batch ``score`` with the champion, and ``drift`` checks that may retrain."""

from __future__ import annotations

from pathlib import Path

import typer

from mlsteward.cli.access import acting_as
from mlsteward.cli.governance import governance_human
from mlsteward.cli.output import (
    REGRESSION_HEADLINE,
    JsonOpt,
    ModelName,
    fmt_number,
    is_regression_metrics,
    run,
)
from mlsteward.cli.runtime import use_local_platform
from mlsteward.identity.roles import Permission

commands = typer.Typer()


@commands.command()
def score(
    model: ModelName,
    source: Path | None = typer.Option(
        None, help="CSV/parquet in the model's source format; default: the online store."
    ),
    entities: Path | None = typer.Option(
        None,
        help="CSV/parquet of entity id + event time: offline-store features as of each time.",
    ),
    start: str | None = typer.Option(
        None,
        help="ISO time (UTC if naive): score the current snapshot's rows from START "
        "(inclusive) with offline-store features as of their times.",
    ),
    end: str | None = typer.Option(
        None, help="ISO time (UTC if naive): ... before END (exclusive); each bound is optional."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Score with the verified champion (+ top-k SHAP); write a scored parquet and log it.

    One input: --source, --entities, or --start/--end; none scores the online store."""
    use_local_platform()
    from flows.scoring import scoring_flow

    run(
        as_json,
        lambda: scoring_flow(
            model=model,
            source=str(source) if source else None,
            entities=str(entities) if entities else None,
            start=start,
            end=end,
            requested_by=acting_as(Permission.SCORE, model).identity,
        ),
        _score_human,
    )


def _score_human(p: dict) -> str:
    if "mean_prediction" in p:  # a regression model's numbers, in the label's units
        numbers = (
            f"mean prediction {fmt_number(p['mean_prediction'])}, median "
            f"{fmt_number(p['median_prediction'])}, p95 {fmt_number(p['p95_prediction'])}"
        )
    else:
        numbers = f"mean probability {p['mean_probability']}, positive rate {p['positive_rate']}"
    return (
        f"scored {p['rows']} rows from {p['source']} with {p['model']} v{p['version']} "
        f"({numbers})\n"
        f"  scored file:    {p['scored_path']}\n  prediction log: {p['prediction_log_path']}"
    )


def _quality_headline(perf: dict) -> tuple[str, ...]:
    """Three of the model's own metrics: errors and R² for regression, ranking for a
    classifier."""
    if is_regression_metrics(perf["reference"]):
        return REGRESSION_HEADLINE
    return ("roc_auc", "pr_auc", "brier")


@commands.command()
def drift(
    model: ModelName,
    current: Path | None = typer.Option(
        None, help="A file in the model's source format (label optional) instead of the log."
    ),
    window: float | None = typer.Option(
        None, "--window", help="Prediction-log window in days (default: drift.window_days)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Compare recent data with the champion's reference (Evidently); retrain if the policy
    says so, within the cooldown."""
    use_local_platform()
    from flows.drift import drift_flow

    run(
        as_json,
        lambda: drift_flow(
            model=model,
            current=str(current) if current else None,
            window_days=window,
            requested_by=acting_as(Permission.DRIFT, model).identity,
        ),
        drift_human,
    )


def drift_human(p: dict) -> str:
    """What a person reading a drift run wants first: what moved, the decision, what followed."""
    lines = [
        f"drifted columns: {', '.join(p['drifted_columns']) or 'none'} "
        f"(share {p['dataset_drift_share']:.2f})",
        f"decision: {'RETRAIN' if p['decision']['retrain'] else 'no retrain'}",
    ]
    lines += [f"  - {r}" for r in p["decision"]["reasons"]]
    lines += [f"note: {n}" for n in p.get("notes") or []]
    perf = p.get("performance")
    if perf:
        rows = perf["current"].get("rows")
        labelled = "?" if rows is None else int(rows)  # metrics carry the count as a float
        lines.append(
            f"quality on {labelled} labelled rows: "
            + ", ".join(
                f"{m} {fmt_number(perf['reference'].get(m))} -> "
                f"{fmt_number(perf['current'].get(m))}"
                for m in _quality_headline(perf)
            )
        )
    if p.get("retrain"):
        lines += _retrain_lines(p["retrain"])
    told = [
        a for a in p.get("alerts") or [] if a["transition"] in ("fired", "reminded", "resolved")
    ]
    lines += [f"alert {a['transition']}: {a['rule']} {a['subject']}: {a['summary']}" for a in told]
    lines.append(f"report: {p['report_path']}")
    return "\n".join(lines)


def _retrain_lines(r: dict) -> list[str]:
    state = f"triggered ({r.get('mode')})" if r["triggered"] else "suppressed"
    lines = [f"retrain: {state}: {r['reason']}"]
    if r.get("training"):
        lines.append("retraining run: " + governance_human(r["training"]))
    elif r.get("mode") == "deployment":
        lines.append(
            "retraining run: started by the train deployment's trigger "
            f"(event {r.get('event_id')}); see the Prefect UI"
        )
    return lines
