"""The standing rules' verdicts: serving error rate and p99 from two real Prometheus scrapes,
and what a drift run's result means for feature drift, PSI, the output and quality."""

from __future__ import annotations

from mlsteward.alerts.state import AlertState
from mlsteward.config.models import get_model_config
from mlsteward.monitoring.drift_alerts import drift_observations
from mlsteward.monitoring.drift_result import ColumnDriftResult, DriftResult
from mlsteward.rollout.slo import judge_scrape
from mlsteward.serving.metrics import ServingMetrics

MODEL = "heart_disease"


def _serve(metrics: ServingMetrics, version: str, rows: int, failed: int, seconds: float) -> None:
    for _ in range(rows):
        metrics.child(metrics.predictions, MODEL, version, "champion").inc()
        metrics.child(metrics.latency, MODEL, version, "champion").observe(seconds)
    metrics.child(metrics.arm_errors, MODEL, version, "champion").inc(failed)


def _by_rule(observations: list) -> dict:
    return {o.rule: o for o in observations}


def test_serving_rules_judge_the_window_between_two_scrapes() -> None:
    cfg = get_model_config(MODEL)
    metrics = ServingMetrics()
    with AlertState() as state:
        _serve(metrics, "1", 500, 0, 0.002)
        first = _by_rule(judge_scrape(cfg, "1", metrics.exposition().decode(), state=state))
        assert first["error_rate"].breached is None and first["latency_p99"].breached is None

        _serve(metrics, "1", 500, 2, 0.002)  # healthy: v1's p99 becomes its own baseline
        ok = _by_rule(judge_scrape(cfg, "1", metrics.exposition().decode(), state=state))
        assert ok["error_rate"].breached is False and ok["error_rate"].value < 0.01
        assert ok["latency_p99"].breached is False

        # v2 takes over: its baseline is v1's last p99; it is 10x slower and fails 20%
        _serve(metrics, "2", 400, 100, 0.02)
        bad = _by_rule(judge_scrape(cfg, "2", metrics.exposition().decode(), state=state))
        assert bad["error_rate"].breached is True and bad["error_rate"].rollback is True
        assert abs(bad["error_rate"].value - 0.2) < 1e-9
        assert bad["latency_p99"].breached is True
        assert bad["latency_p99"].details["baseline"] < 0.0025 < 0.015 < bad["latency_p99"].value

        _serve(metrics, "2", 50, 0, 0.02)  # too few rows since the last check: no verdict
        few = _by_rule(judge_scrape(cfg, "2", metrics.exposition().decode(), state=state))
        assert few["error_rate"].breached is None and few["latency_p99"].breached is None


def test_error_rate_between_rollback_and_alert_levels_rolls_back_without_alerting() -> None:
    cfg = get_model_config(MODEL)
    metrics = ServingMetrics()
    with AlertState() as state:
        judge_scrape(cfg, "1", metrics.exposition().decode(), state=state)
        _serve(metrics, "1", 930, 70, 0.002)  # 7%: under the 10% alert, over the 5% rollback
        [err, _] = judge_scrape(cfg, "1", metrics.exposition().decode(), state=state)
        assert err.breached is False and err.rollback is True


def _column(name: str, drifted: bool, score: float, psi: float | None = None) -> ColumnDriftResult:
    return ColumnDriftResult(name, "wasserstein", score, 0.1, drifted, "numeric", psi=psi)


def test_a_drift_result_becomes_one_verdict_per_feature_and_output_and_quality() -> None:
    cfg = get_model_config(MODEL)
    result = DriftResult(
        columns={
            "bmi": _column("bmi", True, 0.31, psi=0.45),
            "age": _column("age", False, 0.02, psi=0.01),
        },
        drifted_columns=["bmi"],
        dataset_drift_share=0.5,
        prediction_drift=ColumnDriftResult(
            "prediction_proba", "wasserstein", 0.2, 0.1, True, "numeric"
        ),
        performance={
            "reference": {"roc_auc": 0.86, "rows": 800},
            "current": {"roc_auc": 0.70, "rows": 600},
        },
        rows={"reference": 800, "current": 5_000, "current_labelled": 600},
    )
    obs = drift_observations(cfg, result, "3")
    by = {(o.rule, o.subject): o for o in obs}
    assert by[("feature_drift", "bmi")].breached and not by[("feature_drift", "age")].breached
    assert by[("feature_psi", "bmi")].breached and by[("feature_psi", "bmi")].value == 0.45
    assert by[("feature_psi", "age")].breached is False
    assert by[("prediction_shift", "prediction_proba")].breached
    quality = by[("quality_drop", "roc_auc")]
    assert quality.breached and abs(quality.value - (0.16 / 0.86)) < 1e-9
    assert all(o.version == "3" for o in obs)

    few = DriftResult(
        columns={"bmi": _column("bmi", False, 0.01, psi=0.5)},
        drifted_columns=[],
        dataset_drift_share=0.0,
        performance=result.performance,
        rows={"reference": 800, "current": 300, "current_labelled": 50},
    )
    by = {o.rule: o for o in drift_observations(cfg, few, "3")}
    assert by["feature_psi"].breached is None  # 300 rows: PSI is noise
    assert by["quality_drop"].breached is None  # 50 outcomes: chance
