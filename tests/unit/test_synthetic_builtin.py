"""The built-in datasets (diabetes, readmission, and heart_disease through the registry):
determinism, the planted effects, the config's ranges, and every controlled shift.

The YAMLs are read with ``yaml.safe_load``: these tests pin the data against the files as
written, whatever the config classes make of them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.linear_model import LogisticRegression, PoissonRegressor

from mlsteward.data import synthetic_diabetes as dia
from mlsteward.data import synthetic_readmission as rea
from mlsteward.data.builtin import BUILTINS, builtin, describe_summary
from mlsteward.data.synthetic import BATCH_ID_OFFSET, generate_cohort
from mlsteward.data.synthetic import Shift as HeartShift
from tests.conftest import REPO_ROOT

MODELS = ("heart_disease", "diabetes", "readmission")
NEW = ("diabetes", "readmission")
N = 4_000


def config(model: str) -> dict[str, Any]:
    return yaml.safe_load((REPO_ROOT / "config" / "models" / f"{model}.yaml").read_text())


def data_columns(model: str) -> list[dict[str, Any]]:
    """The features, then the sensitive columns that are not features, with their rules."""
    cfg = config(model)
    features = cfg["features"]
    names = {f["name"] for f in features}
    extra = [
        {"name": s["column"], **{k: v for k, v in s.items() if k != "column"}}
        for s in cfg["sensitive_attributes"]
        if isinstance(s, dict) and s["column"] not in names
    ]
    return [*features, *extra]


@pytest.fixture(scope="module")
def cohorts() -> dict[str, pd.DataFrame]:
    return {m: builtin(m).generate_cohort(N, seed=7) for m in MODELS}


def digest(df: pd.DataFrame) -> str:
    """SHA-256 of a frame's names, dtypes and values (strings joined), independent of pandas'
    own hashing."""
    h = hashlib.sha256()
    for col in df.columns:
        v = df[col].to_numpy()
        h.update(col.encode())
        if v.dtype == object:
            h.update(b"object" + "\x1f".join(map(str, v)).encode())
        else:
            h.update(str(v.dtype).encode() + np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


# -- determinism ---------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_same_seed_same_frame_other_seed_another(model: str) -> None:
    data = builtin(model)
    a = data.generate_cohort(1_500, seed=11)
    pd.testing.assert_frame_equal(a, data.generate_cohort(1_500, seed=11))
    b = data.generate_cohort(1_500, seed=12)
    assert not a.drop(columns="patient_id").equals(b.drop(columns="patient_id"))


@pytest.mark.parametrize(
    ("model", "shift"),
    [
        ("diabetes", {"covariate": {"bmi": 0.5}, "prevalence": 0.3, "concept": 0.5}),
        ("readmission", {"covariate": {"age": -0.5}, "outcome_scale": 1.4, "concept": 0.5}),
    ],
)
def test_shifted_generation_is_deterministic(model: str, shift: dict) -> None:
    data = builtin(model)
    how = data.dataset.shift_type(**shift)
    pd.testing.assert_frame_equal(
        data.generate_cohort(1_000, seed=3, shift=how),
        data.generate_cohort(1_000, seed=3, shift=how),
    )


def test_heart_disease_frames_are_the_ones_it_always_gave() -> None:
    # digests of the generator before the built-in datasets shared its steps
    assert digest(generate_cohort(2_000, seed=3)) == (
        "4836680a7b215c6d7a00d040e01c34dab962aacd4a3bcb28c5ec090cb70a34da"
    )
    shifted = HeartShift(
        covariate={"bmi": 1.0},
        prevalence=0.3,
        concept=0.5,
        label_distortion={"column": "sex", "value": "F", "flip_positive_rate": 0.5},
    )
    assert digest(generate_cohort(2_000, seed=3, shift=shifted)) == (
        "446eb9ca2cd78c5a85f612604db6fd8bf7dde17f6a0cb1259b603f696e8706ab"
    )
    via_registry = builtin("heart_disease").generate_cohort(2_000, seed=3)
    pd.testing.assert_frame_equal(via_registry, generate_cohort(2_000, seed=3))


# -- shape and contract --------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_columns_and_dtypes_follow_the_yaml(model: str, cohorts: dict) -> None:
    df, cfg = cohorts[model], config(model)
    columns = data_columns(model)
    expected = [
        cfg["source"]["entity"],
        cfg["source"]["timestamp"],
        *(c["name"] for c in columns),
        cfg["label"],
    ]
    assert list(df.columns) == expected
    assert df["patient_id"].dtype == np.int64
    assert str(df["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert df[cfg["label"]].dtype == np.int64
    want = {"int": np.dtype("int64"), "float": np.dtype("float64"), "bool": np.dtype("bool")}
    for c in columns:
        if c["dtype"] == "category":
            assert df[c["name"]].map(type).eq(str).all(), c["name"]
        else:
            assert df[c["name"]].dtype == want[c["dtype"]], c["name"]


@pytest.mark.parametrize("model", MODELS)
def test_every_value_inside_the_yaml_ranges_and_categories(model: str, cohorts: dict) -> None:
    df = cohorts[model]
    assert not df.isna().any().any()
    for c in data_columns(model):
        col = df[c["name"]]
        if "categories" in c:
            assert set(col.unique()) == set(c["categories"]), c["name"]  # every level occurs
        if "min" in c:
            assert col.min() >= c["min"], c["name"]
        if "max" in c:
            assert col.max() <= c["max"], c["name"]


@pytest.mark.parametrize(("model", "module"), [("diabetes", dia), ("readmission", rea)])
def test_module_tables_mirror_the_yaml(model: str, module: Any) -> None:
    columns = {c["name"]: c for c in data_columns(model)}
    assert tuple(f["name"] for f in config(model)["features"]) == module.FEATURES
    for name, (lo, hi) in module.NUMERIC_RANGES.items():
        assert (columns[name]["min"], columns[name]["max"]) == (lo, hi), name
    for name, levels in module.CATEGORIES.items():
        assert tuple(columns[name]["categories"]) == levels, name


@pytest.mark.parametrize("model", NEW)
def test_the_sensitive_column_is_measured_but_not_a_feature(model: str) -> None:
    cfg = config(model)
    features = {f["name"] for f in cfg["features"]}
    entries = [s for s in cfg["sensitive_attributes"] if isinstance(s, dict)]
    outside = [s["column"] for s in entries if s["column"] not in features]
    assert outside == [{"diabetes": "ethnicity", "readmission": "race"}[model]]
    assert "sex" in cfg["sensitive_attributes"] and "sex" in features


@pytest.mark.parametrize("model", NEW)
def test_entities_and_times(model: str, cohorts: dict) -> None:
    df = cohorts[model]
    assert not df.duplicated(["patient_id", "event_timestamp"]).any()
    assert df["event_timestamp"].is_monotonic_increasing
    assert df.index.equals(pd.RangeIndex(N))
    visits = df.groupby("patient_id").size()
    assert 1.7 <= visits.mean() <= 2.3
    start = pd.Timestamp("2024-01-01", tz="UTC")
    assert df["event_timestamp"].between(start, start + pd.DateOffset(months=18)).all()
    steps = df.sort_values(["patient_id", "event_timestamp"]).groupby("patient_id")["age"].diff()
    assert (steps.dropna() >= 0).all()


# -- the planted effects -------------------------------------------------------------------------
def design(df: pd.DataFrame, module: Any, centers: dict, extra: str) -> pd.DataFrame:
    """Numeric columns measured from the ground truth's centres, one-hot categories without
    their reference (first) level: the ground truth's own terms, so fitted coefficients
    compare with the planted ones."""
    x = df[[*module.FEATURES, extra]].copy()
    for col, c in centers.items():
        x[col] = x[col] - c
    for col, levels in module.CATEGORIES.items():
        x[col] = pd.Categorical(x[col], categories=levels)
    return pd.get_dummies(x, drop_first=True, dtype=float)


def test_diabetes_logistic_fit_recovers_the_planted_risk() -> None:
    df = dia.DIABETES.generate_cohort(30_000, seed=1)
    x = design(df, dia, dict(dia.RISK.centers), dia.ETHNICITY)
    fit = LogisticRegression(C=1e6, max_iter=5_000).fit(x, df[dia.LABEL])
    coef = dict(zip(x.columns, fit.coef_[0], strict=True))
    planted = dict(dia.RISK.coefficients)
    for term, name in [
        ("hba1c", "hba1c"),
        ("fasting_glucose", "fasting_glucose"),
        ("family_history", "family_history"),
        ("bmi", "bmi"),
        ("age", "age"),
        ("sex=M", "sex_M"),
        ("physical_activity_hours", "physical_activity_hours"),
    ]:
        assert np.sign(coef[name]) == np.sign(planted[term]), term
        assert coef[name] == pytest.approx(planted[term], rel=0.4), term
    # ethnicity moves the features (and so the raw rate), never the risk itself
    rates = df.groupby(dia.ETHNICITY)[dia.LABEL].mean()
    assert rates.max() - rates.min() > 0.03
    for level in dia.CATEGORIES[dia.ETHNICITY][1:]:
        assert abs(coef[f"{dia.ETHNICITY}_{level}"]) < 0.25, level


def test_readmission_poisson_fit_recovers_the_planted_mean() -> None:
    df = rea.READMISSION.generate_cohort(30_000, seed=1)
    x = design(df, rea, dict(rea.MEAN.centers), rea.RACE)
    fit = PoissonRegressor(alpha=0.0, max_iter=3_000).fit(x, df[rea.LABEL])
    coef = dict(zip(x.columns, fit.coef_, strict=True))
    for term, beta in rea.MEAN.coefficients.items():
        name = term.replace("=", "_")
        # a rare level (5% of admissions) carries a standard error of ~0.03 on its own
        assert coef[name] == pytest.approx(beta, abs=max(0.3 * abs(beta), 0.07)), term
    for level in rea.CATEGORIES[rea.RACE][1:]:
        assert abs(coef[f"{rea.RACE}_{level}"]) < 0.06, level


def test_length_of_stay_is_a_skewed_non_negative_count(cohorts: dict) -> None:
    y = cohorts["readmission"][rea.LABEL]
    assert y.dtype == np.int64 and y.min() >= 0 and y.max() <= rea.MAX_STAY_DAYS
    assert 3.8 <= y.mean() <= 5.0
    assert y.median() < y.mean()
    assert y.skew() > 2
    assert 0.05 < (y == 0).mean() < 0.2 and (y == 1).mean() > 0.05
    assert y.quantile(0.95) > 2.5 * y.median()  # the long right tail


def test_diabetes_prevalence_and_learnable_signal(cohorts: dict) -> None:
    df = cohorts["diabetes"]
    assert 0.12 <= df[dia.LABEL].mean() <= 0.22
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(df[dia.LABEL], dia.RISK.evaluate(df)) > 0.8


# -- shifts --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "column", "k"),
    [
        ("diabetes", "hba1c", 1.0),
        ("diabetes", "waist_cm", -0.5),
        ("readmission", "comorbidity_index", 1.0),
        ("readmission", "num_medications", -0.8),
    ],
)
def test_covariate_shift_moves_only_that_column(
    model: str, column: str, k: float, cohorts: dict
) -> None:
    data = builtin(model)
    base = cohorts[model]
    shifted = data.generate_cohort(N, seed=7, shift=data.shift({column: k}, None, 0.0))
    moved = (shifted[column].mean() - base[column].mean()) / base[column].std()
    assert moved == pytest.approx(k, abs=0.15)
    assert shifted[column].dtype == base[column].dtype
    rules = {c["name"]: c for c in data_columns(model)}[column]
    assert shifted[column].between(rules["min"], rules["max"]).all()
    others = [c for c in data.dataset.columns if c != column]
    pd.testing.assert_frame_equal(shifted[others], base[others])


@pytest.mark.parametrize("model", NEW)
def test_concept_shift_changes_the_labels_not_the_features(model: str, cohorts: dict) -> None:
    data = builtin(model)
    base = cohorts[model]
    after = data.generate_cohort(N, seed=7, shift=data.shift({}, None, 1.0))
    columns = list(data.dataset.columns)
    pd.testing.assert_frame_equal(after[columns], base[columns])
    assert (after[data.label] != base[data.label]).mean() > 0.1


def test_concept_shift_breaks_the_ground_truth() -> None:
    from sklearn.metrics import roc_auc_score

    after = dia.DIABETES.generate_cohort(N, seed=2, shift=dia.Shift(concept=1.0))
    assert roc_auc_score(after[dia.LABEL], dia.RISK.evaluate(after)) < 0.7
    assert 0.12 <= after[dia.LABEL].mean() <= 0.24  # not visible in the rate alone
    stays = rea.READMISSION.generate_cohort(N, seed=2, shift=rea.Shift(concept=1.0))
    y, mu = stays[rea.LABEL], np.exp(rea.MEAN.evaluate(stays))
    assert np.corrcoef(y, mu)[0, 1] < 0.1  # the old mean no longer follows the stays
    assert 3.8 <= y.mean() <= 5.2


@pytest.mark.parametrize("target", [0.08, 0.4])
def test_diabetes_prevalence_shift_hits_the_rate(target: float) -> None:
    df = dia.DIABETES.generate_cohort(3_000, seed=4, shift=dia.Shift(prevalence=target))
    assert len(df) == 3_000
    assert df[dia.LABEL].mean() == pytest.approx(target, abs=0.001)
    assert not df.duplicated(["patient_id", "event_timestamp"]).any()


@pytest.mark.parametrize("scale", [0.6, 1.5])
def test_readmission_outcome_scale_is_a_label_shift(scale: float) -> None:
    base = rea.READMISSION.generate_cohort(3_000, seed=4)
    df = rea.READMISSION.generate_cohort(3_000, seed=4, shift=rea.Shift(outcome_scale=scale))
    assert len(df) == 3_000 and df[rea.LABEL].min() >= 0
    assert df[rea.LABEL].mean() / base[rea.LABEL].mean() == pytest.approx(scale, rel=0.06)
    # P(x | y) is kept: longer stays bring the comorbidity that goes with them
    moved = df["comorbidity_index"].mean() - base["comorbidity_index"].mean()
    assert np.sign(moved) == np.sign(scale - 1) and abs(moved) > 0.1
    assert not df.duplicated(["patient_id", "event_timestamp"]).any()


def test_label_distortion_by_a_column_that_is_no_feature(cohorts: dict) -> None:
    base = cohorts["diabetes"]
    d = {"column": "ethnicity", "value": "black", "flip_positive_rate": 1.0}
    biased = dia.DIABETES.generate_cohort(N, seed=7, shift=dia.Shift(label_distortion=d))
    group = base["ethnicity"] == "black"
    assert biased.loc[group, dia.LABEL].sum() == 0 < base.loc[group, dia.LABEL].sum()
    pd.testing.assert_series_equal(biased.loc[~group, dia.LABEL], base.loc[~group, dia.LABEL])

    stays = cohorts["readmission"]
    d = {"column": "race", "value": "hispanic", "scale": 0.5, "noise_sd": 0.0}
    shorter = rea.READMISSION.generate_cohort(N, seed=7, shift=rea.Shift(label_distortion=d))
    group = stays["race"] == "hispanic"
    expected = np.rint(0.5 * stays.loc[group, rea.LABEL]).astype(np.int64)
    pd.testing.assert_series_equal(shorter.loc[group, rea.LABEL], expected)
    pd.testing.assert_series_equal(shorter.loc[~group, rea.LABEL], stays.loc[~group, rea.LABEL])
    noisy = rea.Shift(label_distortion={**d, "scale": 1.0, "noise_sd": 3.0})
    blurred = rea.READMISSION.generate_cohort(N, seed=7, shift=noisy)
    assert blurred[rea.LABEL].min() >= 0
    assert (blurred.loc[group, rea.LABEL] != stays.loc[group, rea.LABEL]).mean() > 0.5


@pytest.mark.parametrize(
    ("shift", "kwargs", "message"),
    [
        (dia.Shift, {"covariate": {"ethnicity": 1.0}}, "not a numeric feature"),
        (dia.Shift, {"outcome_scale": 1.2}, "label is binary: use prevalence"),
        (rea.Shift, {"prevalence": 0.3}, "with outcome_scale"),
        (rea.Shift, {"outcome_scale": 3.0}, "between 0.5 and 2"),
        (rea.Shift, {"covariate": {"insurance": 1.0}}, "not a numeric feature"),
        (rea.Shift, {"label_distortion": {"column": "race", "value": "x"}}, "keys"),
        (
            rea.Shift,
            {"label_distortion": {"column": "race", "value": "x", "scale": 1, "noise_sd": 0}},
            "not a category of 'race'",
        ),
        (
            rea.Shift,
            {"label_distortion": {"column": "zip", "value": "1", "scale": 1, "noise_sd": 0}},
            "not a feature or sensitive column",
        ),
        (
            rea.Shift,
            {"label_distortion": {"column": "sex", "value": "F", "scale": 0, "noise_sd": 0}},
            "scale must be a positive",
        ),
        (
            dia.Shift,
            {"label_distortion": {"column": "ethnicity", "value": "x", "flip_positive_rate": 1}},
            "not a category of 'ethnicity'",
        ),
    ],
)
def test_a_shift_that_does_not_fit_the_dataset_is_refused(
    shift: type, kwargs: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        shift(**kwargs)


def test_a_shift_of_another_dataset_is_refused() -> None:
    with pytest.raises(ValueError, match=r"use mlsteward\.data\.synthetic_readmission\.Shift"):
        rea.READMISSION.generate_cohort(100, shift=dia.Shift())


# -- batches -------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", NEW)
def test_batch_is_new_entities_after_the_start(model: str, cohorts: dict) -> None:
    data = builtin(model)
    batch = data.generate_batch(1_000, seed=9, start="2025-07-01", days=30)
    cohort = cohorts[model]
    assert list(batch.columns) == list(cohort.columns)
    assert batch.dtypes.equals(cohort.dtypes)
    lo = pd.Timestamp("2025-07-01", tz="UTC")
    assert batch["event_timestamp"].between(lo, lo + pd.Timedelta(days=30), "left").all()
    assert batch["event_timestamp"].min() > cohort["event_timestamp"].max()
    assert batch["patient_id"].min() > BATCH_ID_OFFSET
    assert set(batch["patient_id"]).isdisjoint(cohort["patient_id"])


# -- the registry --------------------------------------------------------------------------------
def test_registry_knows_the_three_and_names_them_when_refusing() -> None:
    assert tuple(BUILTINS) == MODELS
    for model in MODELS:
        assert builtin(model).task == config(model)["task"]
        assert builtin(model).label == config(model)["label"]
    with pytest.raises(ValueError, match="heart_disease, diabetes, readmission"):
        builtin("churn")


def test_summary_is_the_rate_or_the_outcome_in_days(cohorts: dict) -> None:
    binary = builtin("diabetes").summary(cohorts["diabetes"])
    assert list(binary) == ["positive_rate"]
    assert binary["positive_rate"] == pytest.approx(cohorts["diabetes"][dia.LABEL].mean(), abs=1e-4)
    assert describe_summary(binary).startswith("positive rate ")
    count = builtin("readmission").summary(cohorts["readmission"])["outcome"]
    y = cohorts["readmission"][rea.LABEL]
    assert count["median"] == y.median() and count["p95"] == y.quantile(0.95)
    assert count["mean"] == pytest.approx(y.mean(), abs=0.001)
    text = describe_summary({"outcome": count})
    assert text.startswith("length_of_stay_days mean ") and "median" in text and "p95" in text
