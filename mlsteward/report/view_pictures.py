"""The card's pictures (:mod:`mlsteward.report.charts`), by where they appear.

Only the HTML card shows them: a version section gets every picture its stored validation
report can give, the metrics section the primary metric by version, the drift section each
column's drift score over the checks. A picture that cannot be drawn becomes a note, never a
failed report. Former champions get no pictures (their sections are the record of what they
were; the champion, the challenger and the newest version are the ones compared today), which
also keeps the file small on a model with a long history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mlsteward.report.charts import (
    Picture,
    drift_history_picture,
    evaluation_note,
    metric_history_picture,
    version_pictures,
)
from mlsteward.report.model import ModelCard, VersionSection

DRAWN_ROLES = frozenset({"champion", "challenger", "latest"})
FORMER_NOTE = "Pictures are drawn for the champion, the challenger and the newest version."


@dataclass
class PictureBlock:
    """Pictures to lay out side by side, and what the reader should know about the rest."""

    pictures: list[Picture] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _guarded(block: PictureBlock, make: Callable[[], list[Picture]]) -> PictureBlock:
    try:
        block.pictures += make()
    except Exception as exc:  # a picture that cannot be drawn must not stop the report
        block.notes.append(f"Pictures could not be drawn: {type(exc).__name__}: {exc}")
    return block


def section_pictures(card: ModelCard, s: VersionSection) -> PictureBlock:
    """A version's pictures from its stored validation report."""
    if not DRAWN_ROLES & set(s.roles):
        return PictureBlock(notes=[FORMER_NOTE] if s.validation else [])
    if s.validation is None:
        return PictureBlock()
    note = evaluation_note(s.validation)
    block = PictureBlock(notes=[note] if note else [])
    return _guarded(block, lambda: version_pictures(s.validation or {}, card.config))


def metrics_pictures(card: ModelCard) -> PictureBlock:
    """The primary metric of every version, as recorded at training."""

    def make() -> list[Picture]:
        p = metric_history_picture(
            card.versions,
            card.primary_metric,
            champion=card.champion_version,
            challenger=card.challenger_version,
            subject=card.model,
        )
        return [p] if p is not None else []

    return _guarded(PictureBlock(), make)


def drift_pictures(card: ModelCard) -> PictureBlock:
    """Every drift check's per-column scores against their thresholds."""

    def make() -> list[Picture]:
        p = drift_history_picture(card.drift, card.config, subject=card.model)
        return [p] if p is not None else []

    block = _guarded(PictureBlock(), make)
    if card.drift and not block.pictures and not block.notes:
        block.notes.append(
            "No drift picture: these drift checks were recorded without per-column scores."
        )
    return block
