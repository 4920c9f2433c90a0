"""The view layer's unit: tables of styled cells, which both renderers draw.

Every number and date is formatted once, into a :class:`Cell`, before either renderer sees it,
so the HTML and the markdown card cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Cell:
    """One table cell: text plus a style (``num``, ``ok``, ``bad``, ``warn``, ``muted``,
    ``code``, ``key``; several separated by spaces)."""

    text: str
    style: str = ""


@dataclass
class Table:
    """A table as both renderers draw it: a header, rows of cells, a style per row (``hl``,
    ``fail``, ``small``), and an optional title and note."""

    header: list[str]
    rows: list[list[Cell]]
    row_styles: list[str] = field(default_factory=list)
    title: str = ""
    note: str = ""
    kind: str = ""  # "kv" for two-column key/value tables

    def row_style(self, i: int) -> str:
        return self.row_styles[i] if i < len(self.row_styles) else ""


def status_cell(passed: Any) -> Cell:
    """A check's result: pass, FAIL, or only reported (None: the check does not gate)."""
    if passed is None:
        return Cell("reported", "muted")
    return Cell("pass", "ok") if passed else Cell("FAIL", "bad")
