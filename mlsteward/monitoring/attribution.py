"""Feature-attribution drift: which features the champion leans on in production, against what
it leaned on when it was validated.

Input drift says the inputs moved; this says the model's *reasons* moved. Per feature it
compares the mean ``|SHAP|`` over explained rows, its rank, and its share of the total
``|SHAP|``, between the prediction log and the champion's reference rows, and breaches when a
share moves by more than ``alerts.rules.attribution_drift.max_share_change``.

Like with like, and why:

* **Both sides are cut to the same top-k per row.** The log keeps only each row's ``k``
  largest contributions (``shap_{rank}_feature`` / ``shap_{rank}_value``, written by batch
  scoring and by the service). Full SHAP on the reference against truncated SHAP in the log
  would read every small contributor as having vanished in production and every large one as
  having grown (its share of a smaller total), with nothing changed. So the reference's full
  per-row vectors are cut to their own top ``k`` by the same rule (largest ``|value|`` first,
  ties in column order), and a feature's share means "its part of what the top-k
  explanations say" on both sides.
* **Rows with fewer than k contributions are left out** (a request may ask for fewer): cutting
  them further is impossible, and mixing them in would give their top features more weight.
  Rows with more are cut to their first ``k`` ranks, which are their ``k`` largest. They are
  counted, so a window explained mostly at a smaller ``k`` says so instead of passing quietly.
* **Only the reference's version's rows count.** During a canary the challenger's rows explain
  another model; its reasons are not the champion's drift.
* **The same units.** A log-link regression model's contributions are restated in the
  target's units by ``contributions.in_target_units`` on both sides (the log holds them so);
  a classifier's are log-odds on both sides.
* **The reference is the SHAP sample stored with the champion's validation report** (exact
  TreeSHAP per row on a seeded sample of its holdout, ``governance.evaluation``), so the
  reference is the evaluation a person saw at promotion; a report without one falls back to
  ``pred_contribs`` on a seeded sample of the recorded holdout.

The log is read with ``pyarrow.dataset`` batch by batch, only the explanation columns, the
version and the window's days: memory is one batch, not the window.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from mlsteward.alerts.observation import Observation
from mlsteward.config.models import ModelConfig
from mlsteward.errors import MlstewardError
from mlsteward.features.encoding import encode
from mlsteward.governance import registry
from mlsteward.governance.evaluation_format import from_report
from mlsteward.governance.registry import VerifiedModel
from mlsteward.governance.validation import load_holdout
from mlsteward.monitoring import prediction_log
from mlsteward.monitoring.columns import VERSION_COLUMN
from mlsteward.monitoring.contributions import in_target_units

RULE = "attribution_drift"
HOLDOUT_ROWS = 2_000
"""Rows of the recorded holdout explained when the stored report has no SHAP sample (exact
TreeSHAP on the demo model: about a second)."""
SEED = 0
_RUNS_URI = re.compile(r"^runs:/([^/]+)/(.+)$")


def feature_column(rank: int) -> str:
    """The log's column of the rank-th (1-based) largest contribution's feature."""
    return f"shap_{rank}_feature"


def value_column(rank: int) -> str:
    """The log's column of the rank-th (1-based) largest contribution's value."""
    return f"shap_{rank}_value"


def default_top_k(cfg: ModelConfig) -> int:
    """The smaller of what batch scoring and the service keep per row by default, so the rows
    of both writers can be cut to it (a row cannot be cut to more than it holds)."""
    online = cfg.serving.top_k or cfg.scoring.top_k or 3  # the service's default, as it reads it
    batch = cfg.scoring.top_k or online  # 0: batch rows carry no explanations to cut
    return min(batch, online, len(cfg.features))


# -- the per-feature table ----------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureAttribution:
    """One feature on one side: mean ``|SHAP|`` per explained row (0 in a row where it is not
    among the top k), its share of the total, and its rank (1 = largest mean)."""

    feature: str
    mean_abs: float
    share: float
    rank: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "mean_abs": self.mean_abs,
            "share": self.share,
            "rank": self.rank,
        }


def attribution_table(
    sums: Mapping[str, float], rows: int, features: Sequence[str]
) -> tuple[FeatureAttribution, ...]:
    """Sums of ``|SHAP|`` per feature over ``rows`` rows as the table both sides are read in:
    every feature of ``features`` (and any other summed) ranked by mean, ties in that order."""
    names = list(dict.fromkeys([*features, *sums]))
    total = float(sum(sums.values()))
    means = {f: float(sums.get(f, 0.0)) / rows if rows else 0.0 for f in names}
    order = sorted(names, key=lambda f: -means[f])  # sorted is stable: ties keep feature order
    return tuple(
        FeatureAttribution(
            feature=f,
            mean_abs=means[f],
            share=float(sums.get(f, 0.0)) / total if total > 0 else 0.0,
            rank=rank,
        )
        for rank, f in enumerate(order, start=1)
    )


def top_k_sums(contributions: np.ndarray, features: Sequence[str], top_k: int) -> dict[str, float]:
    """Per feature, the sum of ``|SHAP|`` over rows where it is among the row's ``top_k``
    largest (the rule the log's writers keep them by: largest ``|value|`` first, ties in
    column order)."""
    values = np.abs(np.nan_to_num(np.asarray(contributions, dtype=np.float64)))
    if values.ndim != 2 or values.shape[1] != len(features):
        raise ValueError(
            f"contributions of shape {values.shape} do not match {len(features)} feature names"
        )
    k = max(0, min(int(top_k), len(features)))
    if k == 0 or len(values) == 0:
        return dict.fromkeys(features, 0.0)
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    kept = np.zeros_like(values)
    np.put_along_axis(kept, order, np.take_along_axis(values, order, axis=1), axis=1)
    return dict(zip(features, map(float, kept.sum(axis=0)), strict=True))


# -- the reference ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributionReference:
    """What a version's explanations say on its reference rows, cut to ``top_k`` per row.

    ``source`` says where the rows came from: the SHAP sample of the validation report, or the
    recorded holdout explained again.
    """

    model: str
    version: str
    top_k: int
    rows: int
    source: str
    features: tuple[FeatureAttribution, ...]

    def by_feature(self) -> dict[str, FeatureAttribution]:
        return {f.feature: f for f in self.features}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "top_k": self.top_k,
            "rows": self.rows,
            "source": self.source,
            "features": [f.to_dict() for f in self.features],
        }


def reference_from_contributions(
    model: str,
    version: str,
    features: Sequence[str],
    contributions: np.ndarray,
    *,
    top_k: int,
    source: str,
) -> AttributionReference:
    """The reference from full per-row contributions (in the units the log holds them in)."""
    if top_k < 1:
        raise MlstewardError(
            f"{model} v{version}: attribution drift needs top_k >= 1 (got {top_k}); the "
            "prediction log holds no explanations to compare"
        )
    rows = len(contributions)
    k = min(int(top_k), len(features))
    sums = top_k_sums(contributions, features, k)
    return AttributionReference(
        model=model,
        version=version,
        top_k=k,
        rows=rows,
        source=source,
        features=attribution_table(sums, rows, features),
    )


def reference_from_evaluation(
    cfg: ModelConfig,
    champion: VerifiedModel,
    evaluation: Mapping[str, Any],
    *,
    top_k: int | None = None,
) -> AttributionReference | None:
    """The reference from the SHAP sample a validation report stores (``evaluation["shap"]``:
    full contributions per row on the margin scale), restated in the log's units; None when
    the evaluation has no sample (explained nowhere) or one of other features than the
    champion's (a report of another version)."""
    shap = evaluation.get("shap")
    if not isinstance(shap, Mapping) or not shap.get("contributions"):
        return None
    features = list(shap.get("features") or [])
    if features != list(champion.info.encoding.columns):
        return None
    raw = np.array(
        [[np.nan if v is None else v for v in row] for row in shap["contributions"]],
        dtype=np.float64,
    )
    base = shap.get("base_value")
    base_value = float(base) if isinstance(base, (int, float)) else 0.0
    values, _ = in_target_units(raw, np.full(len(raw), base_value), champion.objective)
    return reference_from_contributions(
        cfg.name,
        str(champion.info.version),
        features,
        values,
        top_k=default_top_k(cfg) if top_k is None else top_k,
        source=f"SHAP sample of the validation report ({len(raw)} holdout rows)",
    )


def reference_from_rows(
    cfg: ModelConfig,
    champion: VerifiedModel,
    rows: pd.DataFrame,
    *,
    top_k: int | None = None,
    max_rows: int = HOLDOUT_ROWS,
) -> AttributionReference:
    """The reference from raw feature rows (the recorded holdout): exact TreeSHAP from
    XGBoost's ``pred_contribs`` on a seeded sample of at most ``max_rows``, in the log's
    units."""
    import xgboost as xgb  # already loaded: the champion is an XGBoost model

    if len(rows) > max_rows:
        rows = rows.sample(n=max_rows, random_state=SEED)
    enc = champion.info.encoding
    matrix = xgb.DMatrix(
        encode(rows, enc).to_numpy(dtype=np.float32),
        feature_names=list(enc.columns),
        feature_types=enc.feature_types,
        enable_categorical=True,
    )
    raw = np.asarray(
        champion.model.get_booster().predict(matrix, pred_contribs=True), dtype=np.float64
    ).reshape(len(rows), len(enc.columns) + 1)
    values, _ = in_target_units(raw[:, :-1], raw[:, -1], champion.objective)
    return reference_from_contributions(
        cfg.name,
        str(champion.info.version),
        list(enc.columns),
        values,
        top_k=default_top_k(cfg) if top_k is None else top_k,
        source=f"holdout explained with pred_contribs ({len(rows)} rows)",
    )


def _stored_report(champion: VerifiedModel) -> tuple[dict[str, Any] | None, str]:
    """The stored validation report, or why there is none (a lost artifact is not fatal: the
    holdout can stand in)."""
    uri = champion.info.tags.get("validation_report")
    match = _RUNS_URI.match(uri or "")
    if match is None:
        return None, "no validation report recorded"
    try:
        with tempfile.TemporaryDirectory(prefix="mlsteward-attribution-") as d:
            local = registry.download_run_file(match.group(1), match.group(2), Path(d))
            found: dict[str, Any] = json.loads(local.read_text())
    except Exception as exc:  # MLflow raises its own and OS errors; the holdout stands in
        return None, f"validation report {uri} unreadable ({type(exc).__name__}: {exc})"
    return found, ""


def attribution_reference(
    cfg: ModelConfig, champion: VerifiedModel, *, top_k: int | None = None
) -> AttributionReference:
    """The champion's reference: the SHAP sample of its stored validation report, else its
    recorded holdout explained again (see the module docstring).

    Args:
        cfg: The model's config.
        champion: The verified champion (its report and holdout are read from its run).
        top_k: Contributions per row both sides are cut to; default :func:`default_top_k`.

    Raises:
        MlstewardError: ``top_k`` is below 1 (nothing to compare), or the version has neither
            a SHAP sample nor a readable holdout.
    """
    report, why = _stored_report(champion)
    evaluation = from_report(report) if report is not None else None
    if evaluation is not None:
        found = reference_from_evaluation(cfg, champion, evaluation, top_k=top_k)
        if found is not None:
            return found
        why = "its validation report holds no SHAP sample of its features"
    try:
        holdout = load_holdout(champion.info)
    except Exception as exc:  # MLflow raises its own and OS errors
        raise MlstewardError(
            f"{cfg.name} v{champion.info.version}: attribution drift has no reference: {why}, "
            f"and its recorded holdout cannot be read ({type(exc).__name__}: {exc})"
        ) from exc
    return reference_from_rows(cfg, champion, holdout, top_k=top_k)


# -- the production side ------------------------------------------------------------------------


@dataclass
class _Scan:
    rows: int = 0
    explained: int = 0
    compared: int = 0
    sums: dict[str, float] = field(default_factory=dict)


def _scan_log(
    model: str, version: str, top_k: int, since: pd.Timestamp, until: pd.Timestamp
) -> _Scan:
    """The version's rows in [since, until): how many, how many explained, and the sums of
    ``|SHAP|`` per feature over the rows explained with at least ``top_k`` contributions, cut
    to their first ``top_k`` ranks. One batch in memory at a time."""
    scan = _Scan()
    files = prediction_log.batch_files(model, since, until)
    if not files:
        return scan
    dataset = prediction_log.open_dataset(files)
    names = set(dataset.schema.names)
    if VERSION_COLUMN not in names:
        return scan
    flt = prediction_log.window_filter(since, until)
    mine = ds.field(VERSION_COLUMN) == pa.scalar(version, pa.string())
    flt = mine if flt is None else flt & mine
    ranks = [r for r in range(1, top_k + 1) if feature_column(r) in names]
    complete = len(ranks) == top_k and value_column(top_k) in names
    columns = [c for r in ranks for c in (feature_column(r), value_column(r)) if c in names]
    scanner = dataset.scanner(columns=columns or [VERSION_COLUMN], filter=flt)
    for batch in scanner.to_batches():
        scan.rows += batch.num_rows
        if not ranks or batch.num_rows == 0:
            continue
        first = batch.column(feature_column(1))
        scan.explained += batch.num_rows - first.null_count
        if not complete:
            continue
        keep = pc.is_valid(batch.column(feature_column(top_k)))
        kept = batch.filter(keep)
        if kept.num_rows == 0:
            continue
        scan.compared += kept.num_rows
        features = pa.concat_arrays(
            [kept.column(feature_column(r)).cast(pa.string()) for r in range(1, top_k + 1)]
        )
        values = pa.concat_arrays(
            [pc.abs(kept.column(value_column(r)).cast(pa.float64())) for r in range(1, top_k + 1)]
        )
        summed = pa.table({"f": features, "v": values}).group_by("f").aggregate([("v", "sum")])
        for f, v in zip(
            summed.column("f").to_pylist(), summed.column("v_sum").to_pylist(), strict=True
        ):
            if f is not None:
                scan.sums[f] = scan.sums.get(f, 0.0) + float(v or 0.0)
    return scan


# -- the check ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureShift:
    """One feature's attribution in the reference and in production, and the move of its
    share (production minus reference); ``drifted`` None when the window could not judge."""

    feature: str
    reference: FeatureAttribution
    current: FeatureAttribution
    change: float
    drifted: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "reference_mean_abs": self.reference.mean_abs,
            "reference_share": self.reference.share,
            "reference_rank": self.reference.rank,
            "current_mean_abs": self.current.mean_abs,
            "current_share": self.current.share,
            "current_rank": self.current.rank,
            "change": self.change,
            "drifted": self.drifted,
        }


@dataclass(frozen=True)
class AttributionResult:
    """Attribution drift of one version over one window of the prediction log.

    ``rows`` are the version's logged rows in the window, ``explained_rows`` those with any
    explanation, ``compared_rows`` those with at least ``top_k`` contributions (the ones
    compared); fewer than ``min_rows`` compared rows give no verdict.
    """

    model: str
    version: str
    top_k: int
    since: datetime
    until: datetime
    rows: int
    explained_rows: int
    compared_rows: int
    min_rows: int
    max_share_change: float
    reference: AttributionReference
    features: tuple[FeatureShift, ...]
    notes: tuple[str, ...] = ()

    @property
    def judged(self) -> bool:
        return self.compared_rows >= self.min_rows

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "top_k": self.top_k,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "rows": self.rows,
            "explained_rows": self.explained_rows,
            "compared_rows": self.compared_rows,
            "min_rows": self.min_rows,
            "max_share_change": self.max_share_change,
            "judged": self.judged,
            "drifted": self.drifted,
            "reference": self.reference.to_dict(),
            "features": [f.to_dict() for f in self.features],
            "notes": list(self.notes),
        }

    def observations(self, cfg: ModelConfig, version: str | None) -> list[Observation]:
        """One verdict per feature (subject = the feature), for ``alerts.engine.observe``."""
        out = []
        for f in self.features:
            if f.drifted is None:
                summary = (
                    f"{f.feature}: no verdict, {self.compared_rows} row(s) explained with "
                    f"{self.top_k} contributions in the window (need {self.min_rows})"
                )
            else:
                summary = (
                    f"{f.feature}: {f.current.share:.2f} of |SHAP| in production against "
                    f"{f.reference.share:.2f} in the reference ({f.change:+.2f}, limit "
                    f"{self.max_share_change:g}); rank {f.current.rank}, was {f.reference.rank}"
                )
            out.append(
                Observation(
                    rule=RULE,
                    breached=f.drifted,
                    summary=summary,
                    value=abs(f.change),
                    limit=self.max_share_change,
                    subject=f.feature,
                    version=version,
                    details={
                        **f.to_dict(),
                        "rows": self.compared_rows,
                        "top_k": self.top_k,
                        "since": self.since.isoformat(),
                        "reference_version": self.reference.version,
                        "reference_rows": self.reference.rows,
                        "reference_source": self.reference.source,
                    },
                )
            )
        return out


def check_attribution(
    cfg: ModelConfig, reference: AttributionReference, *, now: datetime | None = None
) -> AttributionResult:
    """Attribution drift of ``reference``'s version over the last
    ``alerts.rules.attribution_drift.window_hours`` of the prediction log.

    Raises:
        MlstewardError: the reference is another model's.
    """
    if reference.model != cfg.name:
        raise MlstewardError(
            f"attribution reference of {reference.model!r} cannot judge {cfg.name!r}'s log"
        )
    rule = cfg.alerts.rules.attribution_drift
    until = prediction_log.utc_ts(now or datetime.now(UTC))
    since = until - timedelta(hours=rule.window_hours)
    scan = _scan_log(cfg.name, reference.version, reference.top_k, since, until)
    judged = scan.compared >= rule.min_rows
    names = [f.feature for f in reference.features]
    current = {f.feature: f for f in attribution_table(scan.sums, scan.compared, names)}
    ref = reference.by_feature()
    shifts = []
    for name in current:
        before = ref.get(name, FeatureAttribution(name, 0.0, 0.0, len(ref) + 1))
        change = current[name].share - before.share
        shifts.append(
            FeatureShift(
                feature=name,
                reference=before,
                current=current[name],
                change=change,
                drifted=(abs(change) > rule.max_share_change) if judged else None,
            )
        )
    shifts.sort(key=lambda s: (-abs(s.change), s.reference.rank))
    notes = []
    if scan.explained > scan.compared:
        notes.append(
            f"{scan.explained - scan.compared} explained row(s) hold fewer than {reference.top_k} "
            "contributions and are left out"
        )
    if scan.rows > scan.explained:
        notes.append(f"{scan.rows - scan.explained} row(s) were logged without explanations")
    if not judged:
        notes.append(
            f"{scan.compared} row(s) to compare, fewer than min_rows {rule.min_rows}: no verdict"
        )
    return AttributionResult(
        model=cfg.name,
        version=reference.version,
        top_k=reference.top_k,
        since=since.to_pydatetime(),
        until=until.to_pydatetime(),
        rows=scan.rows,
        explained_rows=scan.explained,
        compared_rows=scan.compared,
        min_rows=rule.min_rows,
        max_share_change=rule.max_share_change,
        reference=reference,
        features=tuple(shifts),
        notes=tuple(notes),
    )
