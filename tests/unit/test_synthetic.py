"""The synthetic cohort: shape, contract, realism, learnable signal and every controlled shift."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.data.synthetic import (
    BATCH_ID_OFFSET,
    Shift,
    generate_batch,
    generate_cohort,
    write_dataset,
)
from mlsteward.data.synthetic_cohort import CATEGORIES, COLUMNS, FEATURES, NUMERIC_RANGES
from mlsteward.data.synthetic_risk import RISK_COEFFICIENTS, risk_logit

N = 10_000
START = pd.Timestamp("2024-01-01", tz="UTC")
SEX_F_HALF = {"column": "sex", "value": "F", "flip_positive_rate": 0.5}


@pytest.fixture
def cfg() -> ModelConfig:
    return get_model_config("heart_disease")


@pytest.fixture(scope="module")
def cohort() -> pd.DataFrame:
    return generate_cohort(N, seed=7)


def one_hot(df: pd.DataFrame) -> pd.DataFrame:
    return pd.get_dummies(df[list(FEATURES)], dtype=float)


def fit_logreg(df: pd.DataFrame) -> tuple[object, list[str]]:
    x = one_hot(df)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x, df["heart_disease"])
    return model, list(x.columns)


def auc_of(model: object, columns: list[str], df: pd.DataFrame) -> float:
    x = one_hot(df).reindex(columns=columns, fill_value=0.0)
    return roc_auc_score(df["heart_disease"], model.predict_proba(x)[:, 1])


# -- determinism and shape -----------------------------------------------------------------------
def test_same_seed_gives_identical_frame_and_other_seed_does_not() -> None:
    a = generate_cohort(3_000, seed=11)
    pd.testing.assert_frame_equal(a, generate_cohort(3_000, seed=11))
    b = generate_cohort(3_000, seed=12)
    assert not a.drop(columns="patient_id").equals(b.drop(columns="patient_id"))


def test_shifted_generation_is_deterministic_too() -> None:
    shift = Shift(covariate={"bmi": 0.5}, prevalence=0.3, concept=0.5, label_distortion=SEX_F_HALF)
    pd.testing.assert_frame_equal(
        generate_cohort(2_000, seed=3, shift=shift), generate_cohort(2_000, seed=3, shift=shift)
    )


def test_columns_and_dtypes_match_the_config(cohort: pd.DataFrame, cfg: ModelConfig) -> None:
    expected = [cfg.source.entity, cfg.source.timestamp, *cfg.feature_names, cfg.label]
    assert list(cohort.columns) == expected == list(COLUMNS)
    assert cohort[cfg.source.entity].dtype == np.int64
    assert str(cohort[cfg.source.timestamp].dtype) == "datetime64[us, UTC]"
    assert cohort[cfg.label].dtype == np.int64
    want = {"int": np.dtype("int64"), "float": np.dtype("float64"), "bool": np.dtype("bool")}
    for spec in cfg.features:
        col = cohort[spec.name]
        if spec.dtype == "category":
            assert col.dtype == object, spec.name
            assert col.map(type).eq(str).all(), spec.name
        else:
            assert col.dtype == want[spec.dtype], spec.name


def test_module_constants_mirror_the_config(cfg: ModelConfig) -> None:
    assert tuple(cfg.feature_names) == FEATURES
    for spec in cfg.features:
        if spec.dtype == "category":
            assert tuple(spec.categories) == CATEGORIES[spec.name]
        elif spec.dtype in ("int", "float"):
            assert NUMERIC_RANGES[spec.name] == (spec.min, spec.max)


def test_values_inside_config_ranges_and_categories_without_nulls(
    cohort: pd.DataFrame, cfg: ModelConfig
) -> None:
    assert len(cohort) == N
    assert not cohort.isna().any().any()
    for spec in cfg.features:
        col = cohort[spec.name]
        if spec.categories is not None:
            assert set(col.unique()) == set(spec.categories), spec.name  # every level occurs
        if spec.min is not None:
            assert col.min() >= spec.min, spec.name
        if spec.max is not None:
            assert col.max() <= spec.max, spec.name
    assert set(cohort[cfg.label].unique()) == set(cfg.label_values)
    # rounded to instrument precision: blood pressure whole mmHg, BMI one decimal
    assert (cohort["resting_bp"] % 1 == 0).all()
    assert np.allclose(cohort["bmi"] * 10, np.round(cohort["bmi"] * 10))


def test_keys_unique_sorted_and_patients_have_several_visits(cohort: pd.DataFrame) -> None:
    assert not cohort.duplicated(["patient_id", "event_timestamp"]).any()
    resorted = cohort.sort_values(["event_timestamp", "patient_id"], kind="stable")
    assert resorted.index.equals(cohort.index)
    assert cohort.index.equals(pd.RangeIndex(N))
    visits = cohort.groupby("patient_id").size()
    assert 2.5 <= visits.mean() <= 3.5
    assert visits.min() >= 1 and (visits >= 3).mean() > 0.4
    assert cohort["patient_id"].min() >= 1


def test_timestamps_whole_seconds_spread_over_the_window(cohort: pd.DataFrame) -> None:
    ts = cohort["event_timestamp"]
    assert (ts.dt.microsecond == 0).all()
    assert ts.min() >= START
    assert ts.max() < START + pd.DateOffset(months=18)
    months = ts.dt.strftime("%Y-%m")
    assert months.nunique() == 18
    assert months.value_counts().min() > N / 18 / 2  # roughly uniform, no empty stretch


def test_age_never_decreases_across_a_patients_visits(cohort: pd.DataFrame) -> None:
    by_patient = cohort.sort_values(["patient_id", "event_timestamp"])
    steps = by_patient.groupby("patient_id")["age"].diff().dropna()
    assert (steps >= 0).all()
    assert (steps > 0).any()  # birthdays do happen within 18 months
    assert (steps <= 2).all()
    # stable traits stay stable
    assert (by_patient.groupby("patient_id")[["sex", "smoking", "diabetes"]].nunique() == 1).all(
        axis=None
    )


def test_prevalence_in_range(cohort: pd.DataFrame) -> None:
    assert 0.30 <= cohort["heart_disease"].mean() <= 0.45


def test_realistic_correlations(cohort: pd.DataFrame) -> None:
    c = cohort
    assert c["resting_bp"].corr(c["age"]) > 0.3
    assert c["resting_bp"].corr(c["bmi"]) > 0.1
    assert c["max_heart_rate"].corr(c["age"]) < -0.5
    assert 0 < (220 - c["age"] - c["max_heart_rate"]).median() < 30
    assert c["fasting_glucose"].corr(c["bmi"]) > 0.1
    assert (
        c.loc[c["diabetes"], "fasting_glucose"].mean()
        > c.loc[~c["diabetes"], "fasting_glucose"].mean() + 30
    )
    by_bmi = c.groupby(pd.cut(c["bmi"], [0, 25, 30, 100]), observed=True)["diabetes"].mean()
    assert by_bmi.is_monotonic_increasing and by_bmi.iloc[-1] > 2 * by_bmi.iloc[0]
    by_age = c.groupby(pd.cut(c["age"], [0, 45, 65, 200]), observed=True)["diabetes"].mean()
    assert by_age.is_monotonic_increasing
    angina = c.groupby("chest_pain_type")["exercise_angina"].mean()
    assert angina["asymptomatic"] > angina.drop("asymptomatic").max() + 0.15
    smoker_share = c.groupby("sex")["smoking"].apply(lambda s: (s == "current").mean())
    assert smoker_share["M"] > smoker_share["F"]
    assert (c["st_depression"] == 0).mean() > 0.2
    assert c.groupby("heart_disease")["st_depression"].mean().diff().iloc[-1] > 0


def test_label_follows_the_documented_risk_function(cohort: pd.DataFrame) -> None:
    # noise-free ground truth ranks patients well, and every documented term has a coefficient
    assert roc_auc_score(cohort["heart_disease"], risk_logit(cohort)) > 0.8
    documented = {t.partition("=")[0] for t in RISK_COEFFICIENTS}
    assert documented == set(FEATURES)


def test_signal_is_learnable_by_a_plain_model(cohort: pd.DataFrame) -> None:
    cut = int(len(cohort) * 0.7)  # time-ordered: train on the past, test on the future
    model, columns = fit_logreg(cohort.iloc[:cut])
    assert auc_of(model, columns, cohort.iloc[cut:]) >= 0.75


# -- shifts --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("column", "k"), [("bmi", 1.0), ("resting_bp", -0.5), ("age", 2.0)])
def test_covariate_shift_moves_only_that_column_by_k_std(
    cohort: pd.DataFrame, cfg: ModelConfig, column: str, k: float
) -> None:
    shifted = generate_cohort(N, seed=7, shift=Shift(covariate={column: k}))
    moved = (shifted[column].mean() - cohort[column].mean()) / cohort[column].std()
    assert moved == pytest.approx(k, abs=0.1)
    spec = cfg.feature(column)
    assert shifted[column].between(spec.min, spec.max).all()
    assert shifted[column].dtype == cohort[column].dtype
    others = [c for c in FEATURES if c != column]
    pd.testing.assert_frame_equal(shifted[others], cohort[others])


def test_covariate_shift_keeps_age_consistent_per_patient() -> None:
    df = generate_cohort(3_000, seed=2, shift=Shift(covariate={"age": 1.5}))
    steps = df.sort_values(["patient_id", "event_timestamp"]).groupby("patient_id")["age"].diff()
    assert (steps.dropna() >= 0).all()


def test_covariate_shift_is_a_pure_covariate_shift(cohort: pd.DataFrame) -> None:
    # older patients with the same risk function: more disease, nothing else changed
    older = generate_cohort(N, seed=7, shift=Shift(covariate={"age": 1.0}))
    assert older["heart_disease"].mean() > cohort["heart_disease"].mean() + 0.03


@pytest.mark.parametrize("target", [0.15, 0.7])
def test_prevalence_shift_hits_the_target_rate(target: float) -> None:
    df = generate_cohort(5_000, seed=4, shift=Shift(prevalence=target))
    assert len(df) == 5_000
    assert df["heart_disease"].mean() == pytest.approx(target, abs=0.005)
    assert not df.duplicated(["patient_id", "event_timestamp"]).any()
    assert df["event_timestamp"].is_monotonic_increasing


def test_prevalence_shift_is_label_shift(cohort: pd.DataFrame) -> None:
    # resampling keeps P(x | y): a sicker mix brings more of the symptoms that go with disease
    sick = generate_cohort(N, seed=7, shift=Shift(prevalence=0.8))
    base_share = (cohort["chest_pain_type"] == "asymptomatic").mean()
    assert (sick["chest_pain_type"] == "asymptomatic").mean() > base_share + 0.1


def test_concept_shift_breaks_a_model_trained_before_it() -> None:
    model, columns = fit_logreg(generate_cohort(N, seed=1))
    before = generate_cohort(N, seed=2)
    after = generate_cohort(N, seed=2, shift=Shift(concept=1.0))
    # same patients and measurements, only the label mechanism changed
    pd.testing.assert_frame_equal(before[list(FEATURES)], after[list(FEATURES)])
    assert (before["heart_disease"] != after["heart_disease"]).mean() > 0.1
    auc_before, auc_after = auc_of(model, columns, before), auc_of(model, columns, after)
    assert auc_before >= 0.75
    assert auc_after < auc_before - 0.2
    assert 0.25 <= after["heart_disease"].mean() <= 0.5  # not detectable from the rate alone
    half = auc_of(model, columns, generate_cohort(N, seed=2, shift=Shift(concept=0.5)))
    assert auc_after < half < auc_before


def test_label_distortion_lowers_only_the_named_group(cohort: pd.DataFrame) -> None:
    biased = generate_cohort(N, seed=7, shift=Shift(label_distortion=SEX_F_HALF))
    women, men = cohort["sex"] == "F", cohort["sex"] == "M"
    rate_before = cohort.loc[women, "heart_disease"].mean()
    assert biased.loc[women, "heart_disease"].mean() == pytest.approx(rate_before / 2, rel=0.15)
    pd.testing.assert_series_equal(
        biased.loc[men, "heart_disease"], cohort.loc[men, "heart_disease"]
    )
    # only positives are flipped, never negatives
    assert (biased["heart_disease"] <= cohort["heart_disease"]).all()
    pd.testing.assert_frame_equal(biased[list(FEATURES)], cohort[list(FEATURES)])


def test_label_distortion_on_a_bool_column() -> None:
    shift = Shift(label_distortion={"column": "diabetes", "value": True, "flip_positive_rate": 1})
    df = generate_cohort(3_000, seed=5, shift=shift)
    assert df.loc[df["diabetes"], "heart_disease"].sum() == 0
    assert df.loc[~df["diabetes"], "heart_disease"].sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"covariate": {"nope": 1.0}}, "not a numeric feature"),
        ({"covariate": {"sex": 1.0}}, "not a numeric feature"),
        ({"covariate": {"bmi": float("nan")}}, "finite"),
        ({"prevalence": 0.0}, "strictly between"),
        ({"prevalence": 1.0}, "strictly between"),
        ({"concept": 1.5}, "concept"),
        ({"label_distortion": {"column": "sex", "value": "F"}}, "keys"),
        ({"label_distortion": {**SEX_F_HALF, "column": "zip"}}, "not a feature"),
        ({"label_distortion": {**SEX_F_HALF, "value": "X"}}, "not a category"),
        ({"label_distortion": {**SEX_F_HALF, "flip_positive_rate": 2}}, "between 0 and 1"),
    ],
)
def test_invalid_shift_is_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Shift(**kwargs)


def test_invalid_generation_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="n_rows"):
        generate_cohort(0)
    with pytest.raises(ValueError, match="months"):
        generate_cohort(10, months=0)
    with pytest.raises(ValueError, match="days"):
        generate_batch(10, days=0)


# -- batches, time zones, tiny sizes -------------------------------------------------------------
def test_batch_is_a_later_window_of_new_patients(cohort: pd.DataFrame) -> None:
    batch = generate_batch(2_000, seed=9, start="2025-07-01", days=30)
    assert list(batch.columns) == list(cohort.columns)
    assert batch.dtypes.equals(cohort.dtypes)
    assert len(batch) == 2_000
    lo = pd.Timestamp("2025-07-01", tz="UTC")
    assert batch["event_timestamp"].min() >= lo
    assert batch["event_timestamp"].max() < lo + pd.Timedelta(days=30)
    assert batch["event_timestamp"].min() > cohort["event_timestamp"].max()
    assert batch["patient_id"].min() > BATCH_ID_OFFSET
    assert set(batch["patient_id"]).isdisjoint(cohort["patient_id"])


def test_batch_with_shift_drifts(cohort: pd.DataFrame) -> None:
    batch = generate_batch(5_000, seed=9, shift=Shift(covariate={"cholesterol": 1.0}))
    assert (
        batch["cholesterol"].mean()
        > cohort["cholesterol"].mean() + 0.8 * cohort["cholesterol"].std()
    )


def test_start_with_timezone_is_converted_to_utc() -> None:
    df = generate_batch(500, seed=1, start="2024-03-01T00:00:00+02:00", days=1)
    lo = pd.Timestamp("2024-02-29T22:00:00", tz="UTC")
    assert str(df["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert df["event_timestamp"].between(lo, lo + pd.Timedelta(days=1), inclusive="left").all()


def test_id_offset_and_single_row() -> None:
    one = generate_cohort(1, seed=0, id_offset=500)
    assert len(one) == 1 and one["patient_id"].iloc[0] == 501


# -- writing -------------------------------------------------------------------------------------
def test_write_parquet_round_trips(tmp_path, cohort: pd.DataFrame) -> None:
    small = cohort.head(500)
    path = write_dataset(small, tmp_path / "deep" / "dir" / "cohort.parquet")
    assert path.exists() and path.is_absolute()
    pd.testing.assert_frame_equal(pd.read_parquet(path), small)
    assert [p.name for p in path.parent.iterdir()] == ["cohort.parquet"]  # no temp file left


def test_write_csv_uses_iso_timestamps_with_timezone(tmp_path, cohort: pd.DataFrame) -> None:
    small = cohort.head(500)
    path = write_dataset(small, str(tmp_path / "out" / "cohort.csv"))
    raw = pd.read_csv(path, dtype=str)
    assert raw["event_timestamp"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00").all()
    parsed = pd.to_datetime(raw["event_timestamp"], utc=True).astype("datetime64[us, UTC]")
    pd.testing.assert_series_equal(parsed, small["event_timestamp"])
    back = pd.read_csv(path)
    pd.testing.assert_series_equal(back["bmi"], small["bmi"])
    assert list(back.columns) == list(small.columns)


def test_write_rejects_unknown_suffix(tmp_path, cohort: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="suffix"):
        write_dataset(cohort.head(5), tmp_path / "cohort.xlsx")
    assert not list(tmp_path.iterdir())


def test_same_second_visits_of_one_patient_are_moved_apart() -> None:
    # real windows make clashes rare, so the de-duplication is exercised directly
    from mlsteward.data.synthetic_cohort import _unique_times

    pidx = np.array([0, 0, 0, 1, 1, 2])
    t = np.array([5, 5, 9, 5, 5, 9])
    out = _unique_times(pidx, t, span=10)
    keys = set(zip(pidx.tolist(), out.tolist(), strict=True))
    assert len(keys) == len(pidx)
    assert ((out >= 0) & (out < 10)).all()
    assert (t == [5, 5, 9, 5, 5, 9]).all()  # input left alone
    with pytest.raises(ValueError, match="fewer seconds"):
        _unique_times(np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64), span=2)
