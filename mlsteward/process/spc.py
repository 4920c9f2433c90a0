"""Statistical process control: XmR charts for times, p-charts for failure rates, the run rules
that tell a special cause from common-cause noise, and capability against a target.

Every chart is judged the same way: its points are standardised (distance from the centre line
in sigma units) and :func:`detect` reads the run rules off that one sequence, so the rules are
written once and a p-chart with varying subgroup sizes is judged as its standardised chart.

Control limits come from a baseline (a chart's first points): a process that shifts, judged
against its own shifted mean and spread, has limits that moved with it and hides the shift.
The rules then run on every point, the baseline's included.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mlsteward.errors import MlstewardError

D2 = 1.128
"""Mean range of two normal observations in sigma units: sigma = mean moving range / d2."""
E2 = 2.66
"""3 / d2: an individuals chart's limits are the centre plus or minus E2 mean moving ranges."""
D4 = 3.267
"""Upper limit of a moving range (two observations) in mean moving ranges."""

RULE_SETS: dict[str, tuple[str, ...]] = {
    "nelson": tuple(f"nelson_{i}" for i in range(1, 9)),
    "western_electric": ("we_1", "we_2", "we_3", "we_4"),
}

RULE_TEXT: dict[str, str] = {
    "nelson_1": "one point beyond 3 sigma",
    "nelson_2": "nine points in a row on the same side of the centre line",
    "nelson_3": "six points in a row steadily increasing or decreasing",
    "nelson_4": "fourteen points in a row alternating up and down",
    "nelson_5": "two of three points in a row beyond 2 sigma on the same side",
    "nelson_6": "four of five points in a row beyond 1 sigma on the same side",
    "nelson_7": "fifteen points in a row within 1 sigma of the centre line",
    "nelson_8": "eight points in a row beyond 1 sigma, on both sides of the centre line",
    "we_1": "one point beyond 3 sigma",
    "we_2": "two of three points in a row beyond 2 sigma on the same side",
    "we_3": "four of five points in a row beyond 1 sigma on the same side",
    "we_4": "eight points in a row on the same side of the centre line",
    "mr_1": "one moving range above its upper control limit",
}


class ChartInputError(MlstewardError):
    """A chart or capability was asked of data that cannot be one (the message names the point
    or subgroup and the rule it breaks)."""


@dataclass(frozen=True)
class Signal:
    """A special cause: the rule that fired and the points (0-based indices into the chart's
    points) of its pattern. ``description`` numbers points from 1, as a chart's reader counts
    them."""

    rule: str
    points: tuple[int, ...]
    description: str
    chart: str = "x"

    @property
    def last(self) -> int:
        """The newest point of the pattern: how recent a special cause is."""
        return self.points[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "text": RULE_TEXT.get(self.rule, self.rule),
            "points": list(self.points),
            "last": self.last,
            "description": self.description,
            "chart": self.chart,
        }


# --- the run rules -----------------------------------------------------------------------------

_Hit = tuple[str, int, int]
"""What a rule found in one window: a kind (side or direction) and its first and last offset."""


@dataclass(frozen=True)
class _Rule:
    length: int
    find: Callable[[Sequence[float]], Iterator[_Hit]]
    say: Callable[[str, Sequence[float]], str]
    """The pattern in words, given the kind and the z of the merged span."""


_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]


def _count(n: int) -> str:
    return _WORDS[n] if n < len(_WORDS) else str(n)


def _side(kind: str) -> int:
    return 1 if kind == "above" else -1


def _beyond_limits(what: str = "") -> _Rule:
    """Rule 1; ``what`` names the points when they are not the chart's values."""

    def find(w: Sequence[float]) -> Iterator[_Hit]:
        if w[0] > 3:
            yield "above", 0, 0
        elif w[0] < -3:
            yield "below", 0, 0

    def say(kind: str, z: Sequence[float]) -> str:
        where = "above the upper" if kind == "above" else "below the lower"
        if len(z) == 1:
            return f"{what} {where} control limit".lstrip()
        many = f"{what}s " if what else ""
        return f"{_count(len(z))} {many}in a row {where} control limit"

    return _Rule(1, find, say)


def _k_of_m(k: int, m: int, sigmas: int) -> _Rule:
    def find(w: Sequence[float]) -> Iterator[_Hit]:
        for kind in ("above", "below"):
            hits = [j for j, v in enumerate(w) if _side(kind) * v > sigmas]
            if len(hits) >= k:
                yield kind, hits[0], hits[-1]

    def say(kind: str, z: Sequence[float]) -> str:
        q = sum(1 for v in z if _side(kind) * v > sigmas)
        many = f"{_count(q)} in a row" if q == len(z) else f"{_count(q)} of {_count(len(z))}"
        return f"{many} beyond {sigmas} sigma {kind} the centre line"

    return _Rule(m, find, say)


def _same_side(m: int) -> _Rule:
    def find(w: Sequence[float]) -> Iterator[_Hit]:
        # a point on the centre line is on neither side: it ends a run
        if all(v > 0 for v in w):
            yield "above", 0, m - 1
        elif all(v < 0 for v in w):
            yield "below", 0, m - 1

    return _Rule(m, find, lambda kind, z: f"{_count(len(z))} in a row {kind} the centre line")


def _trend(m: int) -> _Rule:
    def find(w: Sequence[float]) -> Iterator[_Hit]:
        steps = np.diff(w)
        if (steps > 0).all():
            yield "increasing", 0, m - 1
        elif (steps < 0).all():
            yield "decreasing", 0, m - 1

    return _Rule(m, find, lambda kind, z: f"{_count(len(z))} in a row steadily {kind}")


def _alternating(m: int) -> _Rule:
    def find(w: Sequence[float]) -> Iterator[_Hit]:
        steps = np.sign(np.diff(w))
        if (steps != 0).all() and (steps[1:] != steps[:-1]).all():
            yield "", 0, m - 1

    return _Rule(m, find, lambda kind, z: f"{_count(len(z))} in a row alternating up and down")


def _hugging(m: int) -> _Rule:
    def find(w: Sequence[float]) -> Iterator[_Hit]:
        if all(abs(v) <= 1 for v in w):
            yield "", 0, m - 1

    return _Rule(
        m, find, lambda kind, z: f"{_count(len(z))} in a row within 1 sigma of the centre line"
    )


def _avoiding(m: int) -> _Rule:
    """Nelson's rule 8 as he wrote it: none within 1 sigma *and* points on both sides (a
    mixture of two processes). All on one side beyond 1 sigma is rule 6's business."""

    def find(w: Sequence[float]) -> Iterator[_Hit]:
        if all(abs(v) > 1 for v in w) and any(v > 0 for v in w) and any(v < 0 for v in w):
            yield "", 0, m - 1

    return _Rule(
        m,
        find,
        lambda kind, z: (
            f"{_count(len(z))} in a row beyond 1 sigma, on both sides of the centre line"
        ),
    )


_RULES: dict[str, _Rule] = {
    "nelson_1": _beyond_limits(),
    "nelson_2": _same_side(9),
    "nelson_3": _trend(6),
    "nelson_4": _alternating(14),
    "nelson_5": _k_of_m(2, 3, 2),
    "nelson_6": _k_of_m(4, 5, 1),
    "nelson_7": _hugging(15),
    "nelson_8": _avoiding(8),
    "we_1": _beyond_limits(),
    "we_2": _k_of_m(2, 3, 2),
    "we_3": _k_of_m(4, 5, 1),
    "we_4": _same_side(8),
    "mr_1": _beyond_limits("moving range"),
}


def _rule_set(rules: str) -> tuple[str, ...]:
    if rules not in RULE_SETS:
        raise ChartInputError(
            f"unknown run rules {rules!r}: valid rule sets are {', '.join(sorted(RULE_SETS))}"
        )
    return RULE_SETS[rules]


def _span(first: int, last: int) -> str:
    return f"point {first + 1}" if first == last else f"points {first + 1}-{last + 1}"


def _find(z: Sequence[float | None], rule_ids: Sequence[str], chart: str = "x") -> list[Signal]:
    """Every window of each rule's length without a gap is tested; a rule's windows of the same
    kind that overlap are one signal (one long run is one special cause, not a dozen). Single
    point rules also join neighbours: consecutive points beyond a limit are one excursion."""
    for i, v in enumerate(z):
        if v is not None and math.isnan(v):
            raise ChartInputError(f"point {i + 1} is NaN: leave a missing point out as None")
    signals = []
    for rule_id in rule_ids:
        rule = _RULES[rule_id]
        hits: list[tuple[str, int, int]] = []
        for start in range(len(z) - rule.length + 1):
            window = z[start : start + rule.length]
            if any(v is None for v in window):
                continue  # a missing point breaks every run through it
            found = rule.find([float(v) for v in window if v is not None])
            hits.extend((kind, start + a, start + b) for kind, a, b in found)
        reach = 1 if rule.length == 1 else 0
        merged: list[tuple[str, int, int]] = []
        for kind, first, last in sorted(hits):
            if merged and merged[-1][0] == kind and first <= merged[-1][2] + reach:
                merged[-1] = (kind, merged[-1][1], max(last, merged[-1][2]))
            else:
                merged.append((kind, first, last))
        for kind, first, last in merged:
            span = [float(v) for v in z[first : last + 1] if v is not None]
            signals.append(
                Signal(
                    rule=rule_id,
                    points=tuple(range(first, last + 1)),
                    description=f"{_span(first, last)}: {rule.say(kind, span)}",
                    chart=chart,
                )
            )
    order = {rule_id: i for i, rule_id in enumerate(rule_ids)}
    return sorted(signals, key=lambda s: (s.points[0], order[s.rule], s.points[-1]))


def detect(z: Sequence[float | None], rules: str = "nelson") -> list[Signal]:
    """The special causes in a standardised chart: ``z`` is each point's distance from the
    centre line in sigma units (None: no point, which breaks every run through it).

    A point exactly on the centre line is on neither side, so it ends a same-side run; "beyond
    k sigma" is strictly beyond and "within 1 sigma" includes 1 sigma. Signals come oldest
    first.
    """
    return _find(z, _rule_set(rules))


# --- XmR ---------------------------------------------------------------------------------------


def _baseline_size(n: int, baseline: int | None, min_points: int) -> int:
    if min_points < 2:
        raise ChartInputError(f"min_points must be at least 2 (got {min_points})")
    if baseline is not None and baseline < 0:
        raise ChartInputError(f"baseline must not be negative (got {baseline})")
    return n if baseline is None else min(baseline, n)


def _too_few(count: int, what: tuple[str, str], baseline: int | None, min_points: int) -> str:
    """``what`` is the singular and the plural of what is counted."""
    where = "" if baseline is None else " in the baseline"
    return f"{count} {what[count != 1]}{where}; control limits need at least {min_points}"


@dataclass(frozen=True)
class XmRChart:
    """An individuals and moving range chart; the limits are None when there is no baseline
    to draw them from (``reason`` says why)."""

    values: tuple[float, ...]
    moving_ranges: tuple[float | None, ...]
    baseline: int
    center: float | None
    mr_bar: float | None
    sigma: float | None
    ucl: float | None
    lcl: float | None
    mr_ucl: float | None
    signals: tuple[Signal, ...]
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": list(self.values),
            "moving_ranges": list(self.moving_ranges),
            "baseline": self.baseline,
            "center": self.center,
            "mr_bar": self.mr_bar,
            "sigma": self.sigma,
            "ucl": self.ucl,
            "lcl": self.lcl,
            "mr_ucl": self.mr_ucl,
            "signals": [s.to_dict() for s in self.signals],
            "reason": self.reason,
        }


def _finite(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=float).reshape(-1)
    for i, v in enumerate(x):
        if not math.isfinite(v):
            raise ChartInputError(f"{what} {i + 1} is {v}: every value must be a finite number")
    return x


def xmr(
    values: Sequence[float],
    *,
    baseline: int | None = None,
    rules: str = "nelson",
    min_points: int = 8,
    lower_bound: float | None = None,
) -> XmRChart:
    """An XmR chart of ``values`` in order, with limits from the first ``baseline`` of them (None:
    all) and the run rules on every point.

    Sigma is the mean moving range over d2, not the standard deviation: the moving range sees
    only point-to-point noise, so a shift or trend inside the baseline hardly widens the
    limits that should catch it. The points are standardised by the drawn limits (3 sigma =
    E2 mean moving ranges), so a point drawn beyond a limit line is exactly one that rule 1
    flags. ``lower_bound`` is where values cannot go (0 hours): the lower limit is drawn no
    lower, the zones stay symmetric.

    A flat baseline (every moving range 0) has no spread to measure zones in; its limits
    collapse onto its value, and only rule 1 judges: any point off that value is a change
    the baseline never showed (and so is any moving range above 0).
    """
    rule_ids = _rule_set(rules)
    x = _finite(values, "value")
    base = _baseline_size(len(x), baseline, min_points)
    mrs = np.abs(np.diff(x))
    moving_ranges: tuple[float | None, ...] = (None, *(float(r) for r in mrs)) if len(x) else ()
    empty = XmRChart(
        values=tuple(float(v) for v in x),
        moving_ranges=moving_ranges,
        baseline=base,
        center=None,
        mr_bar=None,
        sigma=None,
        ucl=None,
        lcl=None,
        mr_ucl=None,
        signals=(),
        reason=None,
    )
    if base < min_points:
        return replace(empty, reason=_too_few(base, ("point", "points"), baseline, min_points))
    center = float(x[:base].mean())
    mr_bar = float(mrs[: base - 1].mean())
    ucl, lcl, mr_ucl = center + E2 * mr_bar, center - E2 * mr_bar, D4 * mr_bar
    if lower_bound is not None:
        lcl = max(lcl, lower_bound)
    reason = None
    if mr_bar > 0:
        z: list[float | None] = list((x - center) / (E2 * mr_bar / 3))
    else:
        reason = (
            f"the baseline does not vary (its {base} points are all {center:g}): the limits "
            "collapse onto it and only a point off it is flagged; zone rules need a sigma"
        )
        z = [math.copysign(math.inf, v - center) if v != center else 0.0 for v in x]
        rule_ids = rule_ids[:1]
    mr_z: list[float | None] = [None]
    mr_z += [math.inf if r > mr_ucl else 0.0 for r in mrs]
    signals = _find(z, rule_ids) + _find(mr_z, ("mr_1",), chart="mr")
    return replace(
        empty,
        center=center,
        mr_bar=mr_bar,
        sigma=mr_bar / D2,
        ucl=ucl,
        lcl=lcl,
        mr_ucl=mr_ucl,
        signals=tuple(sorted(signals, key=lambda s: (s.points[0], s.chart == "mr"))),
        reason=reason,
    )


# --- p-chart -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PChart:
    """A proportion chart of defects (failed gates, failed runs) of subgroup sizes, with limits
    per subgroup (a smaller subgroup's proportion swings more)."""

    defects: tuple[int, ...]
    sizes: tuple[int, ...]
    proportions: tuple[float | None, ...]
    baseline: int
    center: float | None
    ucl: tuple[float | None, ...]
    lcl: tuple[float | None, ...]
    signals: tuple[Signal, ...]
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "defects": list(self.defects),
            "sizes": list(self.sizes),
            "proportions": list(self.proportions),
            "baseline": self.baseline,
            "center": self.center,
            "ucl": list(self.ucl),
            "lcl": list(self.lcl),
            "signals": [s.to_dict() for s in self.signals],
            "reason": self.reason,
        }


def _counts(defects: Sequence[int], sizes: Sequence[int]) -> tuple[list[int], list[int]]:
    if len(defects) != len(sizes):
        raise ChartInputError(
            f"p-chart: {len(defects)} defect counts but {len(sizes)} subgroup sizes; "
            "each subgroup needs both"
        )
    for i, (d, n) in enumerate(zip(defects, sizes, strict=True)):
        where = f"p-chart subgroup {i + 1}"
        for name, v in (("defects", d), ("size", n)):
            if isinstance(v, bool) or int(v) != v:
                raise ChartInputError(f"{where}: {name} must be a whole number (got {v!r})")
            if v < 0:
                raise ChartInputError(f"{where}: {name} must not be negative (got {v})")
        if d > n:
            raise ChartInputError(f"{where}: defects ({d}) exceed the subgroup size ({n})")
    return [int(d) for d in defects], [int(n) for n in sizes]


def p_chart(
    defects: Sequence[int],
    sizes: Sequence[int],
    *,
    baseline: int | None = None,
    rules: str = "nelson",
    min_points: int = 8,
) -> PChart:
    """A p-chart with limits from the first ``baseline`` subgroups (None: all); an empty
    subgroup (size 0) is no point and breaks runs. ``min_points`` counts baseline subgroups
    that have items.

    The centre is pooled (all defects over all items of the baseline), not a mean of
    proportions, so a week with two versions weighs less than one with twenty. Each point is
    judged by its z against its own sigma. A baseline with no failures (or only failures) has
    sigma 0: limits collapse onto p-bar and only rule 1 judges, so any proportion off it is
    flagged; a longer baseline is the cure. With few items a subgroup (small n * p-bar) the
    distribution is skewed and zero-failure subgroups sit just below the centre, so a run
    below it comes sooner than the rules' normal false-alarm rates say.
    """
    rule_ids = _rule_set(rules)
    d, n = _counts(defects, sizes)
    base = _baseline_size(len(d), baseline, min_points)
    proportions = tuple(di / ni if ni else None for di, ni in zip(d, n, strict=True))
    nothing: tuple[float | None, ...] = (None,) * len(d)
    chart = PChart(
        defects=tuple(d),
        sizes=tuple(n),
        proportions=proportions,
        baseline=base,
        center=None,
        ucl=nothing,
        lcl=nothing,
        signals=(),
        reason=None,
    )
    with_items = sum(1 for ni in n[:base] if ni)
    if with_items < min_points:
        return replace(
            chart,
            reason=_too_few(
                with_items,
                ("subgroup with items", "subgroups with items"),
                baseline,
                min_points,
            ),
        )
    p_bar = sum(d[:base]) / sum(n[:base])
    spread = [math.sqrt(p_bar * (1 - p_bar) / ni) if ni else None for ni in n]
    ucl = tuple(None if s is None else min(1.0, p_bar + 3 * s) for s in spread)
    lcl = tuple(None if s is None else max(0.0, p_bar - 3 * s) for s in spread)
    reason = None
    z: list[float | None]
    if 0 < p_bar < 1:
        z = [
            None if p is None or s is None else (p - p_bar) / s
            for p, s in zip(proportions, spread, strict=True)
        ]
    else:
        reason = (
            f"p-bar is {p_bar:g} in the baseline ({'no' if p_bar == 0 else 'only'} failures): "
            "the limits collapse onto it and only a proportion off it is flagged; zone rules "
            "need a sigma"
        )
        z = [
            None if p is None else 0.0 if p == p_bar else math.copysign(math.inf, p - p_bar)
            for p in proportions
        ]
        rule_ids = rule_ids[:1]
    return replace(
        chart, center=p_bar, ucl=ucl, lcl=lcl, signals=tuple(_find(z, rule_ids)), reason=reason
    )


# --- capability --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capability:
    """How well values meet their specification limits. Cpk uses short-term (within) sigma:
    what the process could do if it stayed put; Ppk the overall sigma: what it did, drifts
    included. A Ppk well below Cpk says the process moves about."""

    n: int
    mean: float | None
    sigma_within: float | None
    sigma_overall: float | None
    usl: float | None
    lsl: float | None
    cpk: float | None
    ppk: float | None
    within_spec: float | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean": self.mean,
            "sigma_within": self.sigma_within,
            "sigma_overall": self.sigma_overall,
            "usl": self.usl,
            "lsl": self.lsl,
            "cpk": self.cpk,
            "ppk": self.ppk,
            "within_spec": self.within_spec,
            "reason": self.reason,
        }


def _index(mean: float, sigma: float, usl: float | None, lsl: float | None) -> float:
    sides = []
    if usl is not None:
        sides.append((usl - mean) / (3 * sigma))
    if lsl is not None:
        sides.append((mean - lsl) / (3 * sigma))
    return min(sides)


def capability(
    values: Sequence[float], *, usl: float | None = None, lsl: float | None = None
) -> Capability:
    """Cpk and Ppk of ``values`` (in order: the within sigma reads their moving ranges) against
    an upper and/or lower specification limit (a target like "lead time at most 24 h" is a USL
    alone). Values that never vary have no index (sigma 0); ``within_spec`` still says whether
    they meet the target.
    """
    x = _finite(values, "value")
    for name, limit in (("usl", usl), ("lsl", lsl)):
        if limit is not None and not math.isfinite(limit):
            raise ChartInputError(f"capability: {name} must be a finite number (got {limit})")
    if usl is not None and lsl is not None and lsl >= usl:
        raise ChartInputError(f"capability: lsl ({lsl:g}) must be below usl ({usl:g})")
    n = len(x)
    result = Capability(n, None, None, None, usl, lsl, None, None, None, None)
    if n < 2:
        plural = "value" if n == 1 else "values"
        return replace(
            result,
            mean=float(x[0]) if n else None,
            reason=f"{n} {plural}; capability needs at least 2",
        )
    mean = float(x.mean())
    within = float(np.abs(np.diff(x)).mean()) / D2
    overall = float(x.std(ddof=1))
    result = replace(result, mean=mean, sigma_within=within, sigma_overall=overall)
    if usl is None and lsl is None:
        return replace(result, reason="no specification limit")
    inside = np.ones(n, dtype=bool)
    if usl is not None:
        inside &= x <= usl
    if lsl is not None:
        inside &= x >= lsl
    result = replace(result, within_spec=float(inside.mean()))
    if within == 0:  # every value equal: overall sigma is 0 too
        return replace(result, reason=f"the values do not vary (all {mean:g}): no sigma")
    return replace(result, cpk=_index(mean, within, usl, lsl), ppk=_index(mean, overall, usl, lsl))
