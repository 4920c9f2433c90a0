"""What a drift run means for the standing alert rules: feature drift, PSI, a shift of the
model's output and a drop of its quality once outcomes arrive.

Retraining (``retrain.decide``) and alerting are separate answers to the same measurement: a
retrain fixes drift the policy can fix, an alert tells a person it happened; a drifted key
feature may retrain silently in the cooldown, but the on-call still hears of it once.
"""

from __future__ import annotations

import dataclasses
import math

from mlsteward.alerts.observation import Observation
from mlsteward.config.models import ModelConfig
from mlsteward.monitoring.drift_methods import is_p_value
from mlsteward.monitoring.drift_result import ColumnDriftResult, DriftResult
from mlsteward.monitoring.quality import quality_check


def drift_observations(
    cfg: ModelConfig, result: DriftResult, version: str | None
) -> list[Observation]:
    """One observation per feature for drift and for PSI, one for the output, one for quality."""
    rules = cfg.alerts.rules
    out: list[Observation] = []
    current_rows = result.rows.get("current", 0)
    for name, col in result.columns.items():
        out.append(_feature_drift(cfg, col, version, current_rows))
        psi = col.psi
        if psi is not None:
            enough = current_rows >= rules.feature_psi.min_rows
            out.append(
                Observation(
                    rule="feature_psi",
                    breached=(psi > rules.feature_psi.max) if enough else None,
                    subject=name,
                    summary=f"{name}: PSI {psi:.3f} against the reference "
                    f"(limit {rules.feature_psi.max:g}, {current_rows:,} rows)",
                    value=float(psi),
                    limit=rules.feature_psi.max,
                    version=version,
                )
            )
    if result.prediction_drift is not None:
        col = result.prediction_drift
        out.append(
            Observation(
                rule="prediction_shift",
                breached=col.drifted,
                subject=col.column,
                summary=f"the model's output {col.column} "
                + ("shifted" if col.drifted else "is stable")
                + f": {col.method} {col.score:.4g} (threshold {col.threshold:g})",
                value=col.score,
                limit=col.threshold,
                version=version,
                details={"method": col.method},
            )
        )
    quality = _quality(cfg, result, version)
    if quality is not None:
        out.append(quality)
    return out


def _feature_drift(
    cfg: ModelConfig, col: ColumnDriftResult, version: str | None, rows: int
) -> Observation:
    """The test's own verdict; with ``max_score`` set, a distance above it also breaches."""
    rule = cfg.alerts.rules.feature_drift
    breached = col.drifted
    limit = col.threshold
    # a p-value test drifts when its score is *below* the threshold: never held to a distance
    if rule.max_score is not None and not is_p_value(col.method):
        breached, limit = col.score > rule.max_score, rule.max_score
    verdict = "drifted" if breached else "no drift"
    return Observation(
        rule="feature_drift",
        breached=breached,
        subject=col.column,
        summary=f"{col.column}: {verdict} ({col.method} {col.score:.4g}, threshold {limit:g}, "
        f"{rows:,} current rows)",
        value=col.score,
        limit=limit,
        version=version,
        details={"method": col.method, "kind": col.kind},
    )


def _quality(cfg: ModelConfig, result: DriftResult, version: str | None) -> Observation | None:
    """The primary metric on labelled recent rows against the reference, with the rule's own
    limit (seed: 5% worse)."""
    rule = cfg.alerts.rules.quality_drop
    watch = cfg
    if rule.metric is not None:
        drift = cfg.drift.model_copy(update={"performance_metric": rule.metric})
        watch = cfg.model_copy(update={"drift": drift})
    check = quality_check(result.performance, watch)
    labelled = result.rows.get("current_labelled", 0)
    if check is None:
        return None
    check = dataclasses.replace(check, mode=rule.mode, limit=rule.max_drop)
    amount = check.amount
    judged = labelled >= rule.min_labelled_rows and amount is not None and not math.isnan(amount)
    return Observation(
        rule="quality_drop",
        breached=check.worse if judged else None,
        subject=check.metric,
        summary=check.reason()
        if check.worse
        else f"{check.metric} {check.reference:.4f} at the reference, {check.current:.4f} on "
        f"{labelled:,} labelled recent rows (alert at {rule.max_drop:g} worse, {rule.mode})",
        value=amount,
        limit=rule.max_drop,
        version=version,
        details=check.to_dict(),
    )
