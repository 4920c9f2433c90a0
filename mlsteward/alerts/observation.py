"""One rule's verdict from one check: what every monitor hands to :func:`engine.observe`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class Observation:
    """A rule checked once.

    ``subject`` splits one rule into separate incidents (a feature, a group, an arm): skew in
    ``bmi`` and skew in ``age`` are two incidents, each notified and resolved on its own.
    ``value`` and ``limit`` are the numbers a person reads first; ``details`` carries the rest
    (per-feature tables, the worst entities), stored in the audit record and the event.
    ``breached`` None means the check could not judge (too few rows): nothing moves.
    """

    rule: str
    breached: bool | None
    summary: str
    value: float | None = None
    limit: float | None = None
    subject: str = ""
    version: str | None = None
    severity: str | None = None
    rollback: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def numbers(self) -> dict[str, Any]:
        return {"value": self.value, "limit": self.limit}
