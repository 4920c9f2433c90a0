"""What a scoring or drift run does, worked out once at its start.

The flows' parameters and the model config's defaults become one typed spec each
(``ScoringSpec``, ``DriftSpec``) before anything is loaded, so a contradictory request is
refused with one clear message and the tasks read settings that are never resolved again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.errors import MlstewardError


@dataclass(frozen=True)
class ScoringWindow:
    """A half-open event-time frame ``[start, end)`` in UTC; a missing bound is unbounded.

    Half-open so consecutive windows (July, then August) never score a row twice.
    """

    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    @classmethod
    def parse(cls, start: str | None, end: str | None) -> ScoringWindow:
        """Bounds from ISO-8601 text; naive times are UTC, like every time in mlsteward.

        Raises:
            MlstewardError: a bound does not parse, or ``start`` is not before ``end``.
        """
        bounds = {name: _utc(name, text) for name, text in (("start", start), ("end", end))}
        window = cls(**bounds)
        if window.start is not None and window.end is not None and window.start >= window.end:
            raise MlstewardError(
                f"scoring window {window.label} is empty: start must be before end"
            )
        return window

    @property
    def label(self) -> str:
        """``start..end`` in ISO-8601 UTC, a missing bound left empty: the audit trail's name."""
        start = self.start.isoformat() if self.start is not None else ""
        end = self.end.isoformat() if self.end is not None else ""
        return f"{start}..{end}"

    def contains(self, times: pd.Series) -> pd.Series:
        inside = pd.Series(True, index=times.index)
        if self.start is not None:
            inside &= times >= self.start
        if self.end is not None:
            inside &= times < self.end
        return inside.fillna(False).astype(bool)


def _utc(name: str, text: str | None) -> pd.Timestamp | None:
    """ISO-8601 only: pandas would also read words such as "now", which make a window that
    moves between runs and cannot be named in the audit trail."""
    if text is None or not str(text).strip():
        return None
    try:
        stamp = pd.Timestamp(datetime.fromisoformat(str(text).strip()))
    except ValueError as exc:
        raise MlstewardError(
            f"scoring window {name} {text!r} is not an ISO-8601 timestamp"
        ) from exc
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


@dataclass(frozen=True)
class ScoringSpec:
    """One scoring run: the model, who runs it, and its one input (a file, an entity list, a
    time frame of the current snapshot, or none: the online store)."""

    cfg: ModelConfig
    actor: str
    source: str | None = None
    entities: str | None = None
    window: ScoringWindow | None = None

    @classmethod
    def resolve(
        cls,
        model: str,
        *,
        actor: str,
        source: str | None = None,
        entities: str | None = None,
        start: str | None = None,
        end: str | None = None,
    ) -> ScoringSpec:
        """The one input asked for, checked before the config (or anything else) is loaded.

        Raises:
            MlstewardError: more than one input was given, or the window does not parse.
        """
        given = [
            name
            for name, value in (
                ("source", source), ("entities", entities), ("start/end", start or end)
            )
            if value
        ]  # fmt: skip
        if len(given) > 1:
            raise MlstewardError(
                f"score one input at a time: got {' and '.join(given)}; give --source PATH, "
                "--entities PATH or --start/--end (none: the online store)"
            )
        window = ScoringWindow.parse(start, end) if start or end else None
        cfg = get_model_config(model)
        return cls(cfg=cfg, actor=actor, source=source, entities=entities, window=window)


@dataclass(frozen=True)
class DriftSpec:
    """One drift run: the model, who runs it, and the current window to compare (a file in
    the source format, or the last ``window_days`` of the prediction log)."""

    cfg: ModelConfig
    actor: str
    current: str | None
    window_days: float

    @classmethod
    def resolve(
        cls, model: str, *, actor: str, current: str | None = None, window_days: float | None = None
    ) -> DriftSpec:
        """``window_days`` defaults to the model's ``drift.window_days``."""
        cfg = get_model_config(model)
        days = window_days or cfg.drift.window_days
        return cls(cfg=cfg, actor=actor, current=current, window_days=days)
