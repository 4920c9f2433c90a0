"""How the card writes numbers, times, digests and tag values: once, for both renderers."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

MISSING = "n/a"
MINUS = "\u2212"  # typographic minus: lines up with "+" in number columns


def fmt_num(x: Any, digits: int = 4) -> str:
    """Metrics and rates with fixed decimals, counts with thousands separators, None as n/a."""
    if x is None:
        return MISSING
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(f):
        return MISSING if math.isnan(f) else ("∞" if f > 0 else MINUS + "∞")
    if f == 0:
        return "0"
    if abs(f) >= 10_000:
        return f"{f:,.0f}"
    if abs(f) < 10 ** -(digits - 1):
        return f"{f:.2e}"
    return f"{f:.{digits}f}"


def fmt_delta(x: Any, digits: int = 4) -> str:
    """A signed difference (typographic minus), so gains and losses line up in a column."""
    if x is None:
        return MISSING
    f = float(x)
    if not math.isfinite(f):
        return fmt_num(f)
    if f == 0:
        return f"{0:.{digits}f}"
    return f"{f:+.{digits}f}".replace("-", MINUS)


def fmt_ts(value: str | None) -> str:
    """``2025-01-31T14:05:09.123456Z`` → ``2025-01-31 14:05:09 UTC``."""
    if not value:
        return MISSING
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if t.tzinfo is not None:
        t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def short(digest: str | None, n: int = 12) -> str:
    """A digest cut to its first ``n`` characters (with an ellipsis), or n/a."""
    if not digest:
        return MISSING
    return digest if len(digest) <= n + 1 or digest == "unknown" else digest[:n] + "…"


def fmt_value(value: Any) -> str:
    """A tag value (text, number, list or mapping) as one line; empty values as n/a."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_value(v) for v in value) or MISSING
    if isinstance(value, dict):
        return ", ".join(f"{k}={_scalar(v)}" for k, v in value.items()) or MISSING
    return _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return fmt_num(value) if isinstance(value, (int, bool)) else str(value)
