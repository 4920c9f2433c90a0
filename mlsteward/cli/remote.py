"""The governance API as the command line's back end, when one is configured.

With ``MLSTEWARD_API_URL`` and ``MLSTEWARD_TOKEN`` set, the governance commands (``promote``,
``approve``, ``reject``, ``approvals``, ``rollback``, ``status``, ``audit``) send their request
to that service instead of opening the registry and the audit trail here: the same decisions,
the same authorization, made where the data lives. Without them the commands call the same
core functions in this process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlsteward.api.client import GovernanceClient


def governance_api() -> GovernanceClient | None:
    """A client of the configured governance API, or None to decide in this process."""
    from mlsteward.api.client import GovernanceClient

    return GovernanceClient.from_env()
