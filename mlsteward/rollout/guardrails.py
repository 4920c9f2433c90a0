"""Canary guardrails: may the challenger take more traffic, or must it be rolled back?

Pure decision maths for the rollout flow. The inputs are two Prometheus scrapes of the
prediction service (at the start and at the end of a rollout step) and the prediction log of
that step; the output is a :class:`StepVerdict` holding one :class:`Check` per guardrail with
the numbers behind it. Nothing here talks HTTP, Prefect or MLflow, so every rule can be tested
with real exposition text and hand-made frames.

A check that lacks data (no rows yet, too few labels) is *not evaluable*: it counts as passed,
because absence of evidence must not roll a model back, but it is reported as such so that a
rollout that never gathered evidence is visible.

Counter windows
---------------
Counters are cumulative since the service started, so a step's window is ``end - start``. If a
series went down, or its ``_created`` timestamp changed, the service restarted in between: as
Prometheus ``increase()`` does, the end value is then taken as the whole window and a note says
so (the traffic before the restart is lost, which undercounts rather than inventing rows).

Quality test
------------
Labels arrive late and sparsely (an outcome is known days after the prediction, for some rows
only), so an AUC over a step would rest on a handful of rows and has no simple sampling
distribution to test against. What a classification model's log does have are counts: per
arm, how many labelled rows and how many of them were misclassified. The misclassification
rates are compared with a two-proportion z-test (unpooled standard error, since the rates are
not assumed equal).

The test is one-sided with a margin: H0 ``p_chal - p_champ <= quality_margin`` against H1
``p_chal - p_champ > quality_margin``. We roll back only on *evidence of harm* beyond what we
agreed to tolerate; a challenger that is merely not proven better keeps going, and noise in
either direction inside the margin never triggers a rollback.

For a regression model the evidence is a number per labelled row, its absolute error
``|label - prediction|``, and the question is the same: is the challenger's mean absolute error
worse than the champion's by more than we tolerate? H0 ``MAE_chal - MAE_champ <= margin``
against H1 ``MAE_chal - MAE_champ > margin``, with the margin in the label's units
(``mae_margin_mode: absolute``) or a share ``r`` of the champion's MAE (``relative``, the
default). The relative hypothesis is tested as it is stated, ``MAE_chal - (1 + r) MAE_champ >
0``, so the champion's MAE being itself an estimate widens the standard error (by ``(1 + r)`` on
its part) instead of being taken as a known constant.

The test is a one-sided Welch t-test on the two arms' absolute errors. Why Welch, and not
Mann-Whitney: the margin is on the *mean* absolute error, the metric the model was validated
on; Mann-Whitney tests whether one arm's errors tend to be larger (``P(X > Y)``), which says
nothing in the label's units and cannot carry a margin in them, and it flags a challenger whose
errors are spread differently around the same mean. Absolute errors are skewed (many small,
a few large), but the test is about their means, and with ``min_labelled_rows`` (200 by
default) per arm the sample means are close to normal; Welch's unequal variances matter because
a worse model usually has a wider spread of errors too. The p-value comes from Student's t with
the Welch-Satterthwaite degrees of freedom (``student_t_sf``: the regularised incomplete beta
function, so this module needs no statistics library).

The rollout looks at the accumulating labels once per step. Testing each look at ``alpha``
would inflate the false-rollback rate over the rollout well beyond ``alpha`` (every look is
another chance for noise to cross the line). The budget is therefore split with Bonferroni:
each look tests at ``alpha / looks`` with ``looks`` the number of planned steps. By the union
bound that is exactly valid whatever the correlation between looks; it is conservative because
the looks share data. An alpha-spending function (O'Brien-Fleming boundaries) would spend less
early and be less conservative, but with a handful of looks and a few hundred labelled rows per
arm the simple split costs little power and was not needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from mlsteward.config.sections.serving import GuardrailConfig
from mlsteward.governance.gates import plain

# Sample names as prometheus_client writes them (the parser strips ``_total`` from counter
# family names, so samples are matched, not families).
REQUESTS = "mlsteward_requests_total"
LATENCY = "mlsteward_request_seconds"
PREDICTIONS = "mlsteward_predictions_total"
ARM_ERRORS = "mlsteward_arm_errors_total"
_COUNTERS = frozenset({REQUESTS, PREDICTIONS, ARM_ERRORS})
_CREATED = {
    "mlsteward_requests_created": "requests",
    "mlsteward_predictions_created": "predictions",
    "mlsteward_arm_errors_created": "errors",
    f"{LATENCY}_created": "latency",
}

CHAMPION = "champion"
CHALLENGER = "challenger"

# Fewer probabilities than this per arm make decile bins too coarse for PSI to mean anything.
MIN_PSI_ROWS = 50
PSI_BINS = 10
# Proportion floor: an empty bin would otherwise make PSI infinite.
PSI_EPSILON = 1e-4


# --------------------------------------------------------------------------------------------
# Parsing scrapes
# --------------------------------------------------------------------------------------------


@dataclass
class ArmSeries:
    """Cumulative values of one (model, version, arm) in one scrape."""

    requests: dict[str, float] = field(default_factory=dict)  # HTTP status -> count
    predictions: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative
    latency_count: float = 0.0
    latency_sum: float = 0.0
    # ``_created`` timestamps: a change between scrapes means the service restarted.
    created: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricsSnapshot:
    """One scrape, reduced to our metric families, keyed by (model, version, arm)."""

    arms: dict[tuple[str, str, str], ArmSeries]

    def get(self, model: str, version: str, arm: str) -> ArmSeries:
        """The series of one arm; an empty one if it never served (nothing observed yet)."""
        return self.arms.get((model, str(version), arm), ArmSeries())


def parse_metrics(text: str, model: str | None = None) -> MetricsSnapshot:
    """Read Prometheus exposition text, keeping our families (for ``model`` if given).

    Other families (gauges, SHAP histograms, process metrics) are skipped, so the service may
    add metrics without breaking the rollout.
    """
    arms: dict[tuple[str, str, str], ArmSeries] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            ours = name in _COUNTERS or name in _CREATED or name.startswith(LATENCY + "_")
            if not ours or not {"model", "version", "arm"} <= labels.keys():
                continue
            if model is not None and labels["model"] != model:
                continue
            series = arms.setdefault(
                (labels["model"], labels["version"], labels["arm"]), ArmSeries()
            )
            value = float(sample.value)
            if name == REQUESTS:
                status = labels.get("status", "")
                series.requests[status] = series.requests.get(status, 0.0) + value
            elif name == PREDICTIONS:
                series.predictions += value
            elif name == ARM_ERRORS:
                series.errors += value
            elif name == f"{LATENCY}_bucket" and "le" in labels:
                series.buckets[float(labels["le"])] = value
            elif name == f"{LATENCY}_count":
                series.latency_count = value
            elif name == f"{LATENCY}_sum":
                series.latency_sum = value
            elif name in _CREATED:
                key = _CREATED[name] + (f":{labels['status']}" if "status" in labels else "")
                series.created[key] = value
    return MetricsSnapshot(arms)


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmWindow:
    """What one arm did between two scrapes."""

    model: str
    version: str
    arm: str
    requests: int
    requests_by_status: dict[str, int]
    predictions: int
    errors: int
    latency_buckets: tuple[tuple[float, int], ...]  # (upper bound, cumulative count), sorted
    latency_count: int
    latency_sum: float
    notes: tuple[str, ...] = ()

    @property
    def error_rate(self) -> float:
        """Failed rows over attempted rows; 0 when the arm scored nothing."""
        attempted = self.predictions + self.errors
        return self.errors / attempted if attempted else 0.0

    @property
    def observations(self) -> int:
        """Latency observations in the window (the +Inf bucket, as ``histogram_quantile``)."""
        return self.latency_buckets[-1][1] if self.latency_buckets else 0

    def quantile(self, q: float) -> float | None:
        """Latency quantile in seconds, the way Prometheus ``histogram_quantile`` computes it.

        Interpolating linearly inside the bucket assumes observations spread evenly there;
        a rank in the +Inf bucket has no upper bound, so the highest finite bound is returned.
        """
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        buckets = self.latency_buckets
        if len(buckets) < 2 or not math.isinf(buckets[-1][0]) or self.observations == 0:
            return None
        rank = q * self.observations
        # The first bucket reaching the rank; the +Inf bucket holds every observation.
        i = next(k for k, (_, cumulative) in enumerate(buckets) if cumulative >= rank)
        bound, cumulative = buckets[i]
        if math.isinf(bound):
            return buckets[-2][0]
        if i == 0 and bound <= 0:
            return bound
        lower, below = (buckets[i - 1][0], buckets[i - 1][1]) if i > 0 else (0.0, 0)
        in_bucket = cumulative - below
        if in_bucket == 0:
            return bound
        return lower + (bound - lower) * (rank - below) / in_bucket


def _increase(start: float, end: float) -> tuple[float, bool]:
    """Counter increase with reset semantics; the flag says whether a reset was seen."""
    return (end, True) if end < start else (end - start, False)


def arm_window(
    start: MetricsSnapshot, end: MetricsSnapshot, model: str, arm: str, version: str
) -> ArmWindow:
    """Difference of two scrapes for one arm, tolerating a service restart in between."""
    s, e = start.get(model, version, arm), end.get(model, version, arm)
    restarted: set[str] = set()

    def recreated(key: str) -> bool:
        return key in s.created and key in e.created and s.created[key] != e.created[key]

    by_status: dict[str, int] = {}
    for status, value in e.requests.items():
        delta, reset = _increase(s.requests.get(status, 0.0), value)
        if reset or recreated(f"requests:{status}"):
            delta = value
            restarted.add(REQUESTS)
        by_status[status] = round(delta)

    def counter(name: str, key: str, s_value: float, e_value: float) -> int:
        delta, reset = _increase(s_value, e_value)
        if reset or recreated(key):
            restarted.add(name)
            delta = e_value
        return round(delta)

    predictions = counter(PREDICTIONS, "predictions", s.predictions, e.predictions)
    errors = counter(ARM_ERRORS, "errors", s.errors, e.errors)

    bounds = sorted(e.buckets)
    hist_reset = (
        e.latency_count < s.latency_count
        or any(e.buckets[b] < s.buckets.get(b, 0.0) for b in bounds)
        or recreated("latency")
    )
    if hist_reset:
        restarted.add(LATENCY)
    base = {} if hist_reset else s.buckets
    cumulative, running = [], 0
    for b in bounds:
        # Monotone by construction, as histogram_quantile enforces on scraped data.
        running = max(running, round(e.buckets[b] - base.get(b, 0.0)))
        cumulative.append((b, running))
    count = round(e.latency_count - (0.0 if hist_reset else s.latency_count))
    latency_sum = e.latency_sum - (0.0 if hist_reset else s.latency_sum)

    notes = tuple(
        f"{arm} {name} went down between scrapes (service restart?): "
        "the end scrape is taken as the whole window"
        for name in sorted(restarted)
    )
    return ArmWindow(
        model=model,
        version=str(version),
        arm=arm,
        requests=sum(by_status.values()),
        requests_by_status=by_status,
        predictions=predictions,
        errors=errors,
        latency_buckets=tuple(cumulative),
        latency_count=count,
        latency_sum=latency_sum,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


@dataclass
class Check:
    """One guardrail's outcome; not evaluable counts as passed but is reported."""

    name: str
    passed: bool
    evaluable: bool
    observed: Mapping[str, float | int | None]
    limit: Mapping[str, float | int | str | None]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return plain(
            {
                "name": self.name,
                "passed": bool(self.passed),
                "evaluable": bool(self.evaluable),
                "observed": self.observed,
                "limit": self.limit,
                "message": self.message,
            }
        )


def check_error_rate(challenger: ArmWindow, cfg: GuardrailConfig) -> Check:
    """Breach when the challenger fails to score more than ``max_error_rate`` of its rows."""
    attempted = challenger.predictions + challenger.errors
    rate = challenger.error_rate
    observed = {"error_rate": rate, "errors": challenger.errors, "rows": attempted}
    limit = {"max_error_rate": cfg.max_error_rate}
    if attempted == 0:
        msg = "challenger scored no rows in this step: error rate not evaluable yet"
        return Check("error_rate", True, False, observed, limit, msg)
    passed = rate <= cfg.max_error_rate
    msg = (
        f"challenger error rate {rate:.3f} ({challenger.errors} of {attempted} rows) "
        f"{'<=' if passed else '>'} max {cfg.max_error_rate:g}"
    )
    return Check("error_rate", passed, True, observed, limit, msg)


def check_latency(challenger: ArmWindow, champion: ArmWindow, cfg: GuardrailConfig) -> Check:
    """Breach when the challenger's p99 is both relatively and absolutely worse.

    Both conditions are needed: at ~1 ms latencies a ratio alone trips on timer noise, and a
    fixed slack alone would let a slow model through on a slow day. Comparing with the
    champion in the same window cancels load that both arms share.
    """
    chal, champ = challenger.quantile(0.99), champion.quantile(0.99)
    ratio = chal / champ if chal is not None and champ else None
    diff_ms = (chal - champ) * 1000 if chal is not None and champ is not None else None
    observed = {
        "challenger_p99_s": chal,
        "champion_p99_s": champ,
        "ratio": ratio,
        "difference_ms": diff_ms,
        "challenger_observations": challenger.observations,
        "champion_observations": champion.observations,
    }
    limit = {"max_p99_latency_ratio": cfg.max_p99_latency_ratio, "slack_ms": cfg.latency_slack_ms}
    if chal is None or champ is None:
        missing = " and ".join(
            arm for arm, p in ((CHALLENGER, chal), (CHAMPION, champ)) if p is None
        )
        msg = f"no latency observations for {missing} in this step: p99 not evaluable yet"
        return Check("latency_p99", True, False, observed, limit, msg)
    assert diff_ms is not None
    too_slow = chal > cfg.max_p99_latency_ratio * champ
    beyond_slack = diff_ms > cfg.latency_slack_ms
    passed = not (too_slow and beyond_slack)
    ratio_text = f"{ratio:.2f}" if ratio is not None else "inf"
    msg = (
        f"challenger p99 {chal * 1000:.1f} ms vs champion {champ * 1000:.1f} ms: ratio "
        f"{ratio_text} {'>' if too_slow else '<='} max {cfg.max_p99_latency_ratio:g}, "
        f"difference {diff_ms:+.1f} ms {'>' if beyond_slack else '<='} slack "
        f"{cfg.latency_slack_ms:g} ms"
    )
    return Check("latency_p99", passed, True, observed, limit, msg)


def _finite(values: Iterable[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def population_stability_index(actual: np.ndarray, expected: np.ndarray) -> float:
    """PSI of ``actual`` against ``expected``, bins at the deciles of ``expected``.

    Decile bins give the reference ~10% per bin, so every bin carries weight; repeated
    quantiles (many identical probabilities) are merged so no bin is empty by construction.
    """
    actual, expected = _finite(actual), _finite(expected)
    inner = np.unique(np.quantile(expected, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
    n_bins = len(inner) + 1
    a = np.bincount(np.searchsorted(inner, actual, side="left"), minlength=n_bins) / len(actual)
    e = np.bincount(np.searchsorted(inner, expected, side="left"), minlength=n_bins) / len(expected)
    a, e = np.clip(a, PSI_EPSILON, None), np.clip(e, PSI_EPSILON, None)
    return float(np.sum((a - e) * np.log(a / e)))


def check_prediction_shift(
    challenger_proba: np.ndarray | Iterable[float],
    champion_proba: np.ndarray | Iterable[float],
    cfg: GuardrailConfig,
    what: str = "probabilities",
) -> Check:
    """Breach when the challenger's predictions (``what``: probabilities, or a regression
    model's predicted values) are distributed unlike the champion's.

    Routing hashes entity ids into arms at random, so both arms see the same population in
    the same window: a shift is the model's doing, not the traffic's.
    """
    chal, champ = _finite(challenger_proba), _finite(champion_proba)
    observed: dict[str, float | int | None] = {
        "psi": None,
        "challenger_rows": len(chal),
        "champion_rows": len(champ),
    }
    limit = {"max_prediction_psi": cfg.max_prediction_psi, "min_rows": MIN_PSI_ROWS}
    if len(chal) < MIN_PSI_ROWS or len(champ) < MIN_PSI_ROWS:
        msg = (
            f"prediction shift not evaluable yet: {len(chal)} challenger and {len(champ)} "
            f"champion {what}, {MIN_PSI_ROWS} per arm needed"
        )
        return Check("prediction_shift", True, False, observed, limit, msg)
    psi = population_stability_index(chal, champ)
    observed["psi"] = psi
    passed = psi <= cfg.max_prediction_psi
    msg = (
        f"PSI of challenger vs champion {what} {psi:.3f} ({len(chal)} vs {len(champ)} "
        f"rows) {'<=' if passed else '>'} max {cfg.max_prediction_psi:g}"
    )
    return Check("prediction_shift", passed, True, observed, limit, msg)


def check_quality(
    challenger_errors: int,
    challenger_n: int,
    champion_errors: int,
    champion_n: int,
    cfg: GuardrailConfig,
    looks: int,
) -> Check:
    """One-sided two-proportion z-test for harm beyond the margin (see "Quality test" above)."""
    if looks < 1:
        raise ValueError(f"looks must be at least 1, got {looks}")
    for errors, n in ((challenger_errors, challenger_n), (champion_errors, champion_n)):
        if not 0 <= errors <= n:
            raise ValueError(f"misclassified rows {errors} must be within 0..{n} labelled")
    per_look_alpha = cfg.alpha / looks
    limit = {
        "quality_margin": cfg.quality_margin,
        "alpha": cfg.alpha,
        "looks": looks,
        "per_look_alpha": per_look_alpha,
        "min_labelled_rows": cfg.min_labelled_rows,
    }
    p1 = challenger_errors / challenger_n if challenger_n else None
    p2 = champion_errors / champion_n if champion_n else None
    observed: dict[str, float | int | None] = {
        "challenger_error_rate": p1,
        "champion_error_rate": p2,
        "challenger_errors": challenger_errors,
        "challenger_labelled": challenger_n,
        "champion_errors": champion_errors,
        "champion_labelled": champion_n,
        "difference": p1 - p2 if p1 is not None and p2 is not None else None,
        "z": None,
        "p_value": None,
    }
    if min(challenger_n, champion_n) < cfg.min_labelled_rows:
        msg = (
            f"quality not evaluable yet: {challenger_n} challenger and {champion_n} champion "
            f"labelled rows, {cfg.min_labelled_rows} per arm needed"
        )
        return Check("quality", True, False, observed, limit, msg)
    assert p1 is not None and p2 is not None

    def variance(p: float, n: int) -> float:
        # Half a count of continuity keeps the variance positive at rates of exactly 0 or 1.
        p = min(max(p, 0.5 / n), 1 - 0.5 / n)
        return p * (1 - p) / n

    se = math.sqrt(variance(p1, challenger_n) + variance(p2, champion_n))
    z = (p1 - p2 - cfg.quality_margin) / se
    p_value = 0.5 * math.erfc(z / math.sqrt(2))  # normal survival function
    observed.update(z=z, p_value=p_value)
    passed = p_value >= per_look_alpha
    msg = (
        f"challenger misclassification {p1:.3f} ({challenger_errors}/{challenger_n}) vs "
        f"champion {p2:.3f} ({champion_errors}/{champion_n}): harm beyond margin "
        f"{cfg.quality_margin:g} has p = {p_value:.4f} "
        f"{'>=' if passed else '<'} {per_look_alpha:.4g} "
        f"(alpha {cfg.alpha:g} over {looks} look{'s' if looks > 1 else ''})"
    )
    return Check("quality", passed, True, observed, limit, msg)


def student_t_sf(t: float, df: float) -> float:
    """``P(T > t)`` for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` by its continued fraction
    (evaluated where it converges fast; the symmetry ``1 - I_{1-x}(b, a)`` elsewhere)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )  # fmt: skip
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Lentz's evaluation of the incomplete beta function's continued fraction."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def check_regression_quality(
    challenger_errors: np.ndarray | Iterable[float],
    champion_errors: np.ndarray | Iterable[float],
    cfg: GuardrailConfig,
    looks: int,
) -> Check:
    """One-sided Welch t-test on absolute errors for harm beyond the MAE margin (see
    "Quality test" above)."""
    if looks < 1:
        raise ValueError(f"looks must be at least 1, got {looks}")
    chal, champ = _finite(challenger_errors), _finite(champion_errors)
    if (chal < 0).any() or (champ < 0).any():
        raise ValueError("absolute errors cannot be negative")
    n1, n2 = len(chal), len(champ)
    per_look_alpha = cfg.alpha / looks
    relative = cfg.mae_margin_mode == "relative"
    # One row's error has no spread to estimate: the test needs two per arm whatever is set.
    needed = max(cfg.min_labelled_rows, 2)
    limit = {
        "mae_margin": cfg.mae_margin,
        "mae_margin_mode": cfg.mae_margin_mode,
        "alpha": cfg.alpha,
        "looks": looks,
        "per_look_alpha": per_look_alpha,
        "min_labelled_rows": cfg.min_labelled_rows,
    }
    m1 = float(chal.mean()) if n1 else None
    m2 = float(champ.mean()) if n2 else None
    observed: dict[str, float | int | None] = {
        "challenger_mae": m1,
        "champion_mae": m2,
        "challenger_labelled": n1,
        "champion_labelled": n2,
        "difference": m1 - m2 if m1 is not None and m2 is not None else None,
        "margin": None,
        "t": None,
        "df": None,
        "p_value": None,
    }
    if min(n1, n2) < needed:
        msg = (
            f"quality not evaluable yet: {n1} challenger and {n2} champion labelled rows, "
            f"{needed} per arm needed"
        )
        return Check("quality", True, False, observed, limit, msg)
    assert m1 is not None and m2 is not None
    # H0: m1 <= scale * m2 + shift; a relative margin scales the champion's MAE.
    scale, shift = (1.0 + cfg.mae_margin, 0.0) if relative else (1.0, cfg.mae_margin)
    margin = (scale - 1.0) * m2 + shift
    v1 = float(chal.var(ddof=1)) / n1
    v2 = scale * scale * float(champ.var(ddof=1)) / n2
    excess = m1 - scale * m2 - shift
    if v1 + v2 > 0:
        t = excess / math.sqrt(v1 + v2)
        df = (v1 + v2) ** 2 / (v1 * v1 / (n1 - 1) + v2 * v2 / (n2 - 1))
        p_value = student_t_sf(t, df)
    else:  # every error the same in both arms: no noise, the difference is what it is
        t = math.inf if excess > 0 else -math.inf
        df = float(n1 + n2 - 2)
        p_value = 0.0 if excess > 0 else 1.0
    observed.update(margin=margin, t=t, df=df, p_value=p_value)
    passed = p_value >= per_look_alpha
    how = f"{cfg.mae_margin:.0%} of the champion's MAE" if relative else "absolute"
    msg = (
        f"challenger MAE {m1:.4g} ({n1} labelled) vs champion {m2:.4g} ({n2}): harm beyond "
        f"margin {margin:.4g} ({how}) has p = {p_value:.4f} "
        f"{'>=' if passed else '<'} {per_look_alpha:.4g} "
        f"(one-sided Welch t = {t:.2f}, df {df:.0f}; alpha {cfg.alpha:g} over {looks} "
        f"look{'s' if looks > 1 else ''})"
    )
    return Check("quality", passed, True, observed, limit, msg)


def absolute_errors(frame: pd.DataFrame, arm: str) -> np.ndarray:
    """``|label - prediction|`` of one arm's labelled rows (a regression model's log)."""
    if frame.empty or not {"arm", "prediction", "label"} <= set(frame.columns):
        return np.empty(0)
    rows = frame[frame["arm"] == arm]
    label = pd.to_numeric(rows["label"], errors="coerce").to_numpy(dtype=float)
    prediction = pd.to_numeric(rows["prediction"], errors="coerce").to_numpy(dtype=float)
    return _finite(np.abs(label - prediction))


def quality_counts(frame: pd.DataFrame, arm: str) -> tuple[int, int]:
    """(misclassified, labelled) rows of one arm; rows without a label or prediction skip."""
    if frame.empty or not {"arm", "prediction", "label"} <= set(frame.columns):
        return 0, 0
    rows = frame[frame["arm"] == arm]
    label = pd.to_numeric(rows["label"], errors="coerce").astype(float)
    prediction = pd.to_numeric(rows["prediction"], errors="coerce").astype(float)
    known = label.notna() & prediction.notna()
    wrong = (label[known].round() != prediction[known].round()).sum()
    return int(wrong), int(known.sum())


# --------------------------------------------------------------------------------------------
# Verdict
# --------------------------------------------------------------------------------------------


@dataclass
class StepVerdict:
    """All guardrails of one rollout step; the challenger goes on only if every one passed."""

    checks: list[Check]
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def breaches(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "breaches": [c.name for c in self.breaches],
            "checks": [c.to_dict() for c in self.checks],
            "notes": [str(n) for n in self.notes],
        }

    def summary(self) -> str:
        """One line per check (and per note), for logs and the audit trail."""
        lines = []
        for c in self.checks:
            status = "PASS" if c.passed else "BREACH"
            if not c.evaluable:
                status = "N/A"
            lines.append(f"[{status}] {c.name}: {c.message}")
        lines.extend(f"[NOTE] {n}" for n in self.notes)
        return "\n".join(lines)


def _predictions(frame: pd.DataFrame, arm: str, column: str) -> np.ndarray:
    if frame.empty or not {"arm", column} <= set(frame.columns):
        return np.empty(0)
    values = pd.to_numeric(frame.loc[frame["arm"] == arm, column], errors="coerce")
    return values.to_numpy(dtype=float)


def judge_step(
    start_text: str,
    end_text: str,
    model: str,
    champion_version: str,
    challenger_version: str,
    log_frame: pd.DataFrame,
    cfg: GuardrailConfig,
    looks: int,
    *,
    regression: bool = False,
) -> StepVerdict:
    """All four guardrails for one step: scrapes for errors and latency, the log for the rest.

    ``log_frame`` holds the step's prediction-log rows: ``arm``, the prediction the shift is
    measured on (``prediction_proba``; for a ``regression`` model the predicted value
    ``prediction``), and for quality ``prediction`` and ``label`` (misclassified rows; a
    regression model's absolute errors). Without labels quality is simply not evaluable.
    """
    start, end = parse_metrics(start_text, model), parse_metrics(end_text, model)
    chal = arm_window(start, end, model, CHALLENGER, challenger_version)
    champ = arm_window(start, end, model, CHAMPION, champion_version)
    if regression:
        shift = check_prediction_shift(
            _predictions(log_frame, CHALLENGER, "prediction"),
            _predictions(log_frame, CHAMPION, "prediction"),
            cfg,
            what="predicted values",
        )
        quality = check_regression_quality(
            absolute_errors(log_frame, CHALLENGER), absolute_errors(log_frame, CHAMPION), cfg,
            looks,
        )  # fmt: skip
    else:
        shift = check_prediction_shift(
            _predictions(log_frame, CHALLENGER, "prediction_proba"),
            _predictions(log_frame, CHAMPION, "prediction_proba"),
            cfg,
        )
        chal_wrong, chal_n = quality_counts(log_frame, CHALLENGER)
        champ_wrong, champ_n = quality_counts(log_frame, CHAMPION)
        quality = check_quality(chal_wrong, chal_n, champ_wrong, champ_n, cfg, looks)
    checks = [check_error_rate(chal, cfg), check_latency(chal, champ, cfg), shift, quality]
    return StepVerdict(checks, notes=[*chal.notes, *champ.notes])


__all__ = [
    "ARM_ERRORS",
    "CHALLENGER",
    "CHAMPION",
    "LATENCY",
    "MIN_PSI_ROWS",
    "PREDICTIONS",
    "REQUESTS",
    "ArmSeries",
    "ArmWindow",
    "Check",
    "MetricsSnapshot",
    "StepVerdict",
    "absolute_errors",
    "arm_window",
    "check_error_rate",
    "check_latency",
    "check_prediction_shift",
    "check_quality",
    "check_regression_quality",
    "judge_step",
    "parse_metrics",
    "population_stability_index",
    "quality_counts",
    "student_t_sf",
]
