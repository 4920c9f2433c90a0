"""Production-check tasks over the prediction log: attribution drift against the champion's
reference, and bias drift on the labelled window. Each returns the core's result; turning its
``observations`` into alerts is ``alerts.engine.observe``'s, which the monitor calls once for
every rule it checked."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from mlsteward.config.models import ModelConfig
from mlsteward.governance.registry import VerifiedModel
from mlsteward.monitoring.attribution import (
    AttributionReference,
    AttributionResult,
    attribution_reference,
    check_attribution,
)
from mlsteward.monitoring.bias import BiasResult, check_bias
from tasks.common import artifact_key, run_logger


# Reads the champion's run (its validation report, else its holdout) from MLflow: I/O only.
@task(name="attribution-reference", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def attribution_reference_task(
    cfg: ModelConfig, champion: VerifiedModel, top_k: int | None = None
) -> AttributionReference:
    reference = attribution_reference(cfg, champion, top_k=top_k)
    run_logger().info(
        "attribution reference of v%s: %s, top %d per row",
        reference.version,
        reference.source,
        reference.top_k,
    )
    return reference


@task(name="check-attribution", cache_policy=NO_CACHE)
def check_attribution_task(cfg: ModelConfig, reference: AttributionReference) -> AttributionResult:
    result = check_attribution(cfg, reference)
    run_logger().info(
        "attribution of v%s: %d of %d logged row(s) compared; drifted: %s",
        result.version,
        result.compared_rows,
        result.rows,
        ", ".join(result.drifted) or ("none" if result.judged else "no verdict"),
    )
    rows = "\n".join(
        f"| {f.feature} | {f.reference.share:.3f} ({f.reference.rank}) | "
        f"{f.current.share:.3f} ({f.current.rank}) | {f.change:+.3f} | "
        f"{'**drifted**' if f.drifted else 'ok' if f.drifted is False else '-'} |"
        for f in result.features
    )
    create_markdown_artifact(
        key=artifact_key(cfg.name, "attribution"),
        markdown=(
            f"# Attribution drift of {cfg.name} v{result.version}\n\n"
            f"Share of |SHAP| per feature, each row cut to its top {result.top_k}; limit "
            f"{result.max_share_change:g}. Reference: {result.reference.source}. Production: "
            f"{result.compared_rows} row(s) since {result.since:%Y-%m-%d %H:%M} UTC.\n\n"
            + "".join(f"Note: {n}.\n\n" for n in result.notes)
            + "| feature | reference share (rank) | production share (rank) | change | verdict |\n"
            "|---|---|---|---|---|\n" + rows
        ),
        description=f"Attribution drift of {cfg.name}: {len(result.drifted)} feature(s)",
    )
    return result


@task(name="check-bias", cache_policy=NO_CACHE)
def check_bias_task(cfg: ModelConfig, version: str | None = None) -> BiasResult:
    result = check_bias(cfg, version=version)
    run_logger().info(
        "bias on %d labelled of %d logged prediction(s): breached %s",
        result.labelled_rows,
        result.rows,
        ", ".join(result.breached) or "none",
    )
    lines = [
        f"# Bias drift of {cfg.name}" + (f" v{version}" if version else ""),
        "",
        f"{result.labelled_rows} labelled of {result.rows} logged prediction(s) since "
        f"{result.since:%Y-%m-%d} UTC; breached: {', '.join(result.breached) or 'none'}.",
    ]
    keys = ("size", "mae", "rmse", "mean_residual") if cfg.is_regression else (
        "size", "positives", "selection_rate", "tpr", "fpr"
    )  # fmt: skip
    for name, attribute in result.attributes.items():
        table = attribute.to_dict()
        checks = ", ".join(f"{m} {_VERDICT[ok]}" for m, ok in attribute.checks.items())
        lines += ["", f"## {name}", "", f"{checks or 'No gated metric'}. {table['note']}".rstrip()]
        if table["groups"]:
            lines += ["", "| group | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
            lines += [
                f"| {g['group']} | " + " | ".join(_cell(g.get(k)) for k in keys) + " |"
                for g in table["groups"]
            ]
    create_markdown_artifact(
        key=artifact_key(cfg.name, "bias"),
        markdown="\n".join(lines),
        description=f"Bias drift of {cfg.name}: {len(result.breached)} breached metric(s)",
    )
    return result


_VERDICT = {True: "within its limit", False: "**breached**", None: "no verdict"}


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
