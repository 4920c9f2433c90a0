"""The control chart maths: limits against the textbook formulas written out by hand, each run
rule on a sequence that shows its pattern and on one just short of it, a planted shift caught
after it and nothing before, false alarms on stable series at the rate the rules are known for,
capability on hand-computed numbers, and bad input refused with a message that names it."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from mlsteward.errors import MlstewardError
from mlsteward.process.spc import (
    RULE_SETS,
    RULE_TEXT,
    Signal,
    capability,
    detect,
    p_chart,
    xmr,
)


def fired(z: list[float | None], rules: str) -> set[str]:
    return {s.rule for s in detect(z, rules)}


# --- limits by hand ----------------------------------------------------------------------------

VALUES = [12.0, 15.0, 11.0, 14.0, 13.0, 16.0, 12.0, 15.0, 14.0, 13.0]


def test_xmr_limits_are_the_textbook_formulas() -> None:
    mean = sum(VALUES) / len(VALUES)  # 135 / 10
    mrs = [abs(b - a) for a, b in itertools.pairwise(VALUES)]  # 3 4 3 1 3 4 3 1 1
    mr_bar = sum(mrs) / len(mrs)  # 23 / 9
    chart = xmr(VALUES)
    assert (mean, mr_bar) == (13.5, pytest.approx(23 / 9))
    assert chart.center == pytest.approx(mean)
    assert chart.mr_bar == pytest.approx(mr_bar)
    assert chart.sigma == pytest.approx(mr_bar / 1.128)
    assert chart.ucl == pytest.approx(mean + 2.66 * mr_bar)
    assert chart.lcl == pytest.approx(mean - 2.66 * mr_bar)
    assert chart.mr_ucl == pytest.approx(3.267 * mr_bar)
    assert chart.moving_ranges == (None, *mrs)
    assert chart.baseline == 10 and chart.reason is None and chart.signals == ()
    json.dumps(chart.to_dict())


def test_xmr_limits_come_from_the_baseline_only() -> None:
    shifted = [*VALUES[:8], 40.0, 41.0]
    chart = xmr(shifted, baseline=8)
    base = VALUES[:8]
    mr_bar = sum(abs(b - a) for a, b in itertools.pairwise(base)) / 7
    assert chart.baseline == 8
    assert chart.center == pytest.approx(sum(base) / 8)
    assert chart.ucl == pytest.approx(sum(base) / 8 + 2.66 * mr_bar)
    # the two shifted points are judged against the old limits, and flagged
    assert {p for s in chart.signals if s.rule == "nelson_1" for p in s.points} == {8, 9}
    assert xmr(shifted, baseline=50).baseline == 10  # a longer baseline than the chart: all


def test_xmr_lower_limit_is_clipped_at_the_lower_bound() -> None:
    hours = [0.5, 3.0, 0.2, 4.0, 0.4, 2.5, 0.1, 3.5]
    mean = sum(hours) / 8
    mr_bar = sum(abs(b - a) for a, b in itertools.pairwise(hours)) / 7
    assert mean - 2.66 * mr_bar < 0
    assert xmr(hours, lower_bound=0.0).lcl == 0.0
    assert xmr(hours).lcl == pytest.approx(mean - 2.66 * mr_bar)


def test_p_chart_limits_with_varying_subgroup_sizes() -> None:
    defects = [2, 1, 3, 0, 2, 4, 1, 2]
    sizes = [20, 10, 30, 15, 25, 40, 10, 20]
    p_bar = sum(defects) / sum(sizes)  # 15 / 170
    chart = p_chart(defects, sizes)
    assert chart.center == pytest.approx(15 / 170)
    assert chart.proportions == tuple(d / n for d, n in zip(defects, sizes, strict=True))
    for i, n in enumerate(sizes):
        spread = math.sqrt(p_bar * (1 - p_bar) / n)
        assert chart.ucl[i] == pytest.approx(p_bar + 3 * spread)
        assert chart.lcl[i] == pytest.approx(max(0.0, p_bar - 3 * spread))
    assert chart.lcl[1] == 0.0  # n = 10: p-bar - 3 sigma is below 0
    assert chart.ucl[5] < chart.ucl[1]  # a bigger subgroup has tighter limits
    assert chart.reason is None and chart.signals == ()
    json.dumps(chart.to_dict())


def test_p_chart_empty_subgroup_is_no_point_and_breaks_runs() -> None:
    sizes = [20] * 8 + [10] * 10
    defects = [1] * 8 + [5, 5, 5, 5, 0, 5, 5, 5, 5, 5]  # 50% against p-bar 5%
    sizes[12] = 0
    chart = p_chart(defects, sizes, baseline=8)
    assert chart.proportions[12] is None and chart.ucl[12] is None and chart.lcl[12] is None
    assert chart.center == pytest.approx(8 / 160)
    runs = [s.points for s in chart.signals if s.rule == "nelson_1"]
    assert runs == [(8, 9, 10, 11), (13, 14, 15, 16, 17)]


# --- each rule, and just short of it ----------------------------------------------------------

STEPS = [-1.0, -0.6, -0.2, 0.2, 0.6, 1.0]
WITHIN = [0.5, 0.6, -0.5, -0.6] * 4  # no long alternation, trend or same-side run
OUTSIDE = [1.5, 1.6, -1.5, -1.6] * 2


@pytest.mark.parametrize(
    ("z", "nelson", "western_electric"),
    [
        ([0, 0, 3.1, 0], {"nelson_1"}, {"we_1"}),
        ([0, 0, -3.1, 0], {"nelson_1"}, {"we_1"}),
        ([0, 0, 3.0, 0], set(), set()),  # on the limit is not beyond it
        ([0.5] * 9, {"nelson_2"}, {"we_4"}),
        ([-0.5] * 8, set(), {"we_4"}),
        ([0.5] * 7, set(), set()),
        ([0.5] * 4 + [0.0] + [0.5] * 4, set(), set()),  # a point on the centre line ends a run
        (STEPS, {"nelson_3"}, set()),
        (STEPS[::-1], {"nelson_3"}, set()),
        (STEPS[1:], set(), set()),
        ([*STEPS[:3], -0.2, *STEPS[4:]], set(), set()),  # a flat step is no trend
        ([0.5, -0.5] * 7, {"nelson_4"}, set()),
        ([0.5, -0.5] * 6 + [0.5], set(), set()),
        ([0.5, -0.5] * 3 + [0.6] + [-0.5, 0.5] * 3, set(), set()),  # two ups in a row
        ([0, 2.5, 0, 2.5, 0], {"nelson_5"}, {"we_2"}),
        ([0, -2.5, -2.5, 0], {"nelson_5"}, {"we_2"}),
        ([0, 2.5, 0, 0, 2.5, 0], set(), set()),
        ([2.5, 0, -2.5], set(), set()),  # opposite sides
        ([1.5, 1.5, 0, 1.5, 1.5], {"nelson_6"}, {"we_3"}),
        ([1.5, 1.5, 0, 0, 1.5, 1.5], set(), set()),
        ([1.5, -1.5, 1.5, -1.5, 1.5], set(), set()),
        (WITHIN[:15], {"nelson_7"}, set()),
        (WITHIN[:14], set(), set()),
        (OUTSIDE, {"nelson_8"}, set()),
        (OUTSIDE[:7], set(), set()),
    ],
)
def test_each_rule_fires_on_its_pattern_and_not_short_of_it(
    z: list[float], nelson: set[str], western_electric: set[str]
) -> None:
    assert fired(list(z), "nelson") == nelson
    assert fired(list(z), "western_electric") == western_electric


def test_eight_beyond_one_sigma_on_one_side_is_not_rule_8() -> None:
    # Nelson's rule 8 is a mixture: both sides. One side is rule 6's (and rule 2's) pattern.
    assert "nelson_8" not in fired([1.5] * 8, "nelson")
    assert "nelson_6" in fired([1.5] * 8, "nelson")


def test_a_long_run_is_one_signal_numbered_from_one() -> None:
    z = [0.0] * 20 + [0.5] * 12
    (run,) = [s for s in detect(z) if s.rule == "nelson_2"]
    assert run.points == tuple(range(20, 32)) and run.last == 31
    assert run.description == "points 21-32: twelve in a row above the centre line"
    assert run.to_dict()["text"] == RULE_TEXT["nelson_2"]
    (short,) = [s for s in detect(z[:29]) if s.rule == "nelson_2"]
    assert short.description == "points 21-29: nine in a row above the centre line"


def test_separate_excursions_are_separate_signals_and_gaps_break_runs() -> None:
    beyond = [s.points for s in detect([3.5, 3.5, 0, 3.5, -3.5]) if s.rule == "nelson_1"]
    assert beyond == [(0, 1), (3,), (4,)]  # neighbours on one side join; the other side not
    assert fired([0.5] * 5 + [None] + [0.5] * 5, "nelson") == set()
    assert fired([0.5] * 9 + [None], "nelson") == {"nelson_2"}


def test_rule_sets_and_texts_cover_every_rule() -> None:
    assert RULE_SETS["nelson"] == tuple(f"nelson_{i}" for i in range(1, 9))
    assert RULE_SETS["western_electric"] == ("we_1", "we_2", "we_3", "we_4")
    for rules in RULE_SETS.values():
        assert all(RULE_TEXT[r] for r in rules)
    assert Signal("we_1", (3,), "point 4: above the upper control limit").chart == "x"


# --- flat baselines ----------------------------------------------------------------------------


def test_flat_baseline_judges_only_points_off_its_value() -> None:
    chart = xmr([0.0] * 8 + [0.0, 3.0, 0.0], baseline=8)
    assert chart.mr_bar == 0 and chart.ucl == chart.lcl == 0.0
    assert chart.reason is not None and "does not vary" in chart.reason
    assert [(s.rule, s.chart, s.points) for s in chart.signals] == [
        ("nelson_1", "x", (9,)),
        ("mr_1", "mr", (9, 10)),
    ]
    assert xmr([2.0] * 12).signals == ()  # nine in a row on the line is no run: no side


def test_p_chart_without_failures_in_the_baseline_flags_any_failure() -> None:
    chart = p_chart([0] * 10 + [1, 0], [5] * 12, baseline=10)
    assert chart.center == 0.0 and chart.ucl[0] == 0.0
    assert chart.reason is not None and "p-bar is 0 in the baseline (no failures)" in chart.reason
    assert [(s.rule, s.points) for s in chart.signals] == [("nelson_1", (10,))]


def test_too_few_points_draws_no_limits() -> None:
    chart = xmr(VALUES[:5])
    assert chart.center is None and chart.ucl is None and chart.signals == ()
    assert chart.reason == "5 points; control limits need at least 8"
    assert xmr(VALUES, baseline=4).reason == (
        "4 points in the baseline; control limits need at least 8"
    )
    p = p_chart([1, 0, 1], [10, 0, 10], min_points=3)
    assert (
        p.center is None and p.reason is not None and p.reason.startswith("2 subgroups with items;")
    )


# --- planted shifts and stable series -----------------------------------------------------------


def normal(seed: int, mean: float, n: int) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, 1.0, n))


def test_a_stable_series_is_not_flagged() -> None:
    # Seed 5 is one of the unflagged ones: with 30 points the Nelson set and the moving range
    # rule flag about half of stable series somewhere (the rates test measures the rule sets).
    chart = xmr(normal(5, 10.0, 30))
    assert chart.reason is None and chart.signals == ()


def test_a_three_sigma_shift_is_flagged_after_it_and_not_before() -> None:
    rng = np.random.default_rng(5)  # the stable series above, its first 20 points
    values = list(rng.normal(10.0, 1.0, 20)) + list(rng.normal(13.0, 1.0, 10))
    chart = xmr(values, baseline=20)
    assert chart.signals
    assert all(s.points[0] >= 20 for s in chart.signals), [s.description for s in chart.signals]
    assert min(s.last for s in chart.signals if s.rule == "nelson_1") <= 22


def test_a_rising_failure_rate_is_flagged_by_the_p_chart() -> None:
    rng = np.random.default_rng(2)
    defects = list(rng.binomial(20, 0.05, 20)) + list(rng.binomial(20, 0.25, 8))
    chart = p_chart(defects, [20] * 28, baseline=20)
    assert chart.center is not None and chart.center < 0.1
    assert chart.signals and all(s.points[0] >= 20 for s in chart.signals)
    assert {"nelson_1"} <= {s.rule for s in chart.signals}


def test_western_electric_false_alarms_on_stable_series_at_their_known_rate() -> None:
    """The four Western Electric rules together have an in-control average run length of
    91.75 points (Champ & Woodall 1987, Technometrics 29(4)): a false alarm about every 92
    points. Over 30 points that is 1 - (1 - 1/91.75)**30 = 0.28, a little less in fact since
    the first points cannot complete a run. With 200 series the share's standard error is
    sqrt(0.28 * 0.72 / 200) = 0.032, so a share above 0.28 + 3 * 0.032 = 0.38 means the rules
    fire more often than they should; below 0.12 that they have stopped firing."""
    seeds = range(200)
    known = [bool(detect(normal(s, 0.0, 30), "western_electric")) for s in seeds]
    assert 0.12 < np.mean(known) < 0.38
    # limits estimated from the same 30 points: no more alarms than with known limits
    charted = [
        any(sig.chart == "x" for sig in xmr(normal(s, 0.0, 30), rules="western_electric").signals)
        for s in seeds
    ]
    assert 0.05 < np.mean(charted) < 0.38


# --- capability ----------------------------------------------------------------------------------


def test_capability_against_an_upper_target() -> None:
    values = [20.0, 22.0, 19.0, 23.0, 21.0]
    mean = 21.0  # 105 / 5
    sigma_within = (2 + 3 + 4 + 2) / 4 / 1.128
    sigma_overall = math.sqrt((1 + 1 + 4 + 4 + 0) / 4)
    cap = capability(values, usl=24.0)
    assert cap.n == 5 and cap.mean == pytest.approx(mean)
    assert cap.sigma_within == pytest.approx(sigma_within)
    assert cap.sigma_overall == pytest.approx(sigma_overall)
    assert cap.cpk == pytest.approx((24 - mean) / (3 * sigma_within))
    assert cap.ppk == pytest.approx((24 - mean) / (3 * sigma_overall))
    assert cap.within_spec == 1.0 and cap.reason is None
    both = capability(values, usl=24.0, lsl=20.0)
    assert both.cpk == pytest.approx((mean - 20) / (3 * sigma_within))  # the nearer limit
    assert both.within_spec == pytest.approx(4 / 5)
    json.dumps(both.to_dict())


def test_capability_says_why_it_has_no_index() -> None:
    one = capability([3.0], usl=24.0)
    assert one.reason == "1 value; capability needs at least 2" and one.cpk is None
    assert one.mean == 3.0
    free = capability([1.0, 2.0, 3.0])
    assert free.reason == "no specification limit" and free.cpk is None and free.mean == 2.0
    flat = capability([30.0] * 4, usl=24.0)
    assert flat.cpk is None and flat.within_spec == 0.0
    assert flat.reason is not None and "do not vary" in flat.reason


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: detect([0.0], "shewhart"), "valid rule sets are nelson, western_electric"),
        (lambda: xmr(VALUES, rules="nelsen"), "unknown run rules 'nelsen'"),
        (lambda: detect([0.0, math.nan]), "point 2 is NaN"),
        (lambda: xmr([1.0, math.inf]), "value 2 is inf"),
        (lambda: xmr(VALUES, baseline=-1), "baseline must not be negative"),
        (lambda: xmr(VALUES, min_points=1), "min_points must be at least 2"),
        (lambda: p_chart([1, 2], [10]), "2 defect counts but 1 subgroup sizes"),
        (lambda: p_chart([1, 6], [10, 5]), r"subgroup 2: defects \(6\) exceed the subgroup size"),
        (lambda: p_chart([1, -1], [10, 5]), "subgroup 2: defects must not be negative"),
        (lambda: p_chart([1, 1], [10, -5]), "subgroup 2: size must not be negative"),
        (lambda: p_chart([1.5, 1], [10, 5]), "subgroup 1: defects must be a whole number"),
        (lambda: capability([1.0, 2.0], usl=5.0, lsl=6.0), r"lsl \(6\) must be below usl"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, message: str) -> None:
    with pytest.raises(MlstewardError, match=message):
        call()
