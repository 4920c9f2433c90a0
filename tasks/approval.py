"""Human approval of a promotion: the typed form Prefect shows on a paused flow run.

The flow pauses with ``pause_flow_run(wait_for_input=ApprovalInput.with_initial_data(...))``;
Prefect renders the fields below as a form next to the validation summary, and
``mlsteward approve`` sends the same fields through ``resume_flow_run``.
"""

from __future__ import annotations

from typing import Literal

from prefect.input import RunInput
from pydantic import Field


class ApprovalInput(RunInput):
    """A person's decision on promoting a validated challenger to champion."""

    decision: Literal["approve", "reject"] = Field(
        description="approve: make this version the champion; reject: keep the current one."
    )
    approver: str = Field(min_length=1, description="Who decides (name or user id).")
    reason: str = Field(min_length=1, description="Why; recorded in the audit trail.")


MAX_REPORT_CHARS = 20_000


def approval_form(report_markdown: str, model: str, version: str) -> type[ApprovalInput]:
    """The form with the validation report (every gate and its numbers) as its description,
    rendered as markdown above the fields in the Prefect UI."""
    # nested under the form's own heading
    report_markdown = "\n".join(
        f"##{line}" if line.startswith("#") else line for line in report_markdown.splitlines()
    )
    if len(report_markdown) > MAX_REPORT_CHARS:
        report_markdown = (
            report_markdown[:MAX_REPORT_CHARS] + "\n\n… (cut; the full report is on the version)"
        )
    description = (
        f"## Promote {model} v{version} to champion?\n\n{report_markdown}\n\n"
        f"Or from a shell: `mlsteward approve <flow-run-id> --approver NAME --reason TEXT "
        f"[--reject]`"
    )
    return ApprovalInput.with_initial_data(description=description)
