"""What the command line prints about a version's quality: its task's metrics, and a decision
threshold only for a classifier."""

from __future__ import annotations

import numpy as np

from flows.results import TrainingResult
from mlsteward.cli.governance import _status_human
from mlsteward.cli.output import fmt_headline, fmt_metrics, is_regression_metrics
from mlsteward.cli.training import _train_human
from mlsteward.config.sections.training import TuningConfig
from mlsteward.governance.policy import GovernanceOutcome
from mlsteward.governance.promotion import PromotionResult
from mlsteward.training.metrics import evaluate, evaluate_regression

LINEAGE = {"data_digest": "ab" * 32, "data_path": "/snapshots/x.parquet"}


def regression_metrics() -> dict[str, float]:
    """What training reports for a count model: errors, R², deviance, calibration, means."""
    rng = np.random.default_rng(0)
    y = rng.poisson(4, 200).astype("float64")
    prediction = np.clip(y + rng.normal(0.3, 1.0, 200), 0.1, None)
    return evaluate_regression(y, prediction, TuningConfig(objective="count:poisson"))


def classification_metrics() -> dict[str, float]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    proba = np.clip(y * 0.6 + rng.uniform(0, 0.4, 200), 0, 1)
    return evaluate(y, proba, 0.5)


def result(metrics: dict[str, float], threshold: float | None) -> dict:
    """The training flow's document, as ``mlsteward train`` prints it."""
    return TrainingResult(
        model="length_of_stay",
        version="3",
        model_uri="models:/m-1",
        run_id="r1",
        artifact_sha256="cd" * 32,
        test_metrics=metrics,
        best_params={"max_depth": 3},
        trials=20,
        threshold=threshold,
        lineage=LINEAGE,
        governance=GovernanceOutcome(
            model="length_of_stay",
            version="3",
            validation_passed=True,
            decision="promoted",
            promotion=PromotionResult(
                model="length_of_stay",
                action="promoted",
                version="3",
                previous_champion="2",
                artifact_sha256="cd" * 32,
                audit_seq=41,
            ),
        ),
    ).model_dump()


def test_train_prints_a_regression_models_metrics_and_no_threshold() -> None:
    m = regression_metrics()
    text = _train_human(result(m, None))
    assert "threshold" not in text
    assert "  trials: 20\n" in text
    for name in ("rmse", "mae", "r2", "median_absolute_error", "mean_poisson_deviance"):
        assert f"    {name:<21} {m[name]:.4f}" in text
    assert "roc_auc" not in text and "log_loss" not in text
    assert (
        f"calibration_ratio     {m['calibration_ratio']:.4f}  (mean prediction "
        f"{m['mean_prediction']:.4f} / mean outcome {m['mean_outcome']:.4f}; closer to 1 is "
        "better)"
    ) in text
    assert "length_of_stay v3: PROMOTED" in text


def test_train_prints_a_classifiers_metrics_and_threshold_as_before() -> None:
    m = classification_metrics()
    text = _train_human(result(m, 0.4123))
    assert "  trials: 20   decision threshold: 0.412\n" in text
    assert f"    roc_auc    {m['roc_auc']:.4f}\n" in text
    assert "rmse" not in text
    lines = fmt_metrics(m).splitlines()
    assert [line.split()[0] for line in lines] == [
        "roc_auc",
        "pr_auc",
        "log_loss",
        "brier",
        "accuracy",
        "precision",
        "recall",
        "f1",
    ]


def version(v: str, metrics: dict[str, float], lifecycle: str) -> dict:
    return {
        "name": "length_of_stay",
        "version": v,
        "lifecycle": lifecycle,
        "validation_status": "passed",
        "aliases": [lifecycle],
        "run_id": f"r{v}",
        "artifact_sha256": v * 64,
        "created_at_ms": 0,
        "metrics": metrics,
        "promoted_at": None,
        "validated_against_champion": None,
    }


def status(champion: dict, challenger: dict | None) -> dict:
    """``governance.status``'s document, as ``mlsteward status`` prints it."""
    return {
        "model": "length_of_stay",
        "champion": champion,
        "champion_check": {"problem": None},
        "challenger": challenger,
        "previous_champion": None,
        "canary": None,
        "versions": [],
        "recent_decisions": [],
    }


def test_status_prints_rmse_mae_and_r2_for_a_regression_model() -> None:
    m = regression_metrics()
    text = _status_human(status(version("2", m, "champion"), version("3", m, "challenger")))
    champion = next(line for line in text.splitlines() if line.startswith("champion"))
    assert champion == (
        f"champion    v2  rmse {m['rmse']:.4f}  mae {m['mae']:.4f}  r2 {m['r2']:.4f}  "
        "lifecycle champion  validation passed"
    )
    assert "roc_auc" not in text and "challenger  v3  rmse" in text


def test_status_prints_roc_auc_for_a_classifier() -> None:
    m = classification_metrics()
    text = _status_human(status(version("2", m, "champion"), None))
    assert f"champion    v2  roc_auc {m['roc_auc']:.4f}  lifecycle champion" in text
    assert "challenger  none" in text


def test_the_task_is_told_by_the_metrics_alone() -> None:
    assert is_regression_metrics(regression_metrics())
    assert not is_regression_metrics(classification_metrics())
    assert not is_regression_metrics({})  # nothing recorded: read as before, a classifier
    assert fmt_headline({}) == "roc_auc nan"
    assert fmt_headline({"rmse": 2.0, "r2": 0.5}) == "rmse 2.0000  mae nan  r2 0.5000"
