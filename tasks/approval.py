"""Human approval of a promotion: the typed form Prefect shows on a paused flow run.

The flow pauses with ``pause_flow_run(wait_for_input=ApprovalInput.with_initial_data(...))``;
Prefect renders the fields below as a form next to the validation summary, and
``mlsteward approve`` (or the API) sends the same fields through ``resume_flow_run``. Only the
approval token counts: it names who decided, on which version, and what; the form is an open
page where anyone can type any name.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID

from prefect import get_client
from prefect.exceptions import Pause
from prefect.input import RunInput
from prefect.input.run_input import keyset_from_paused_state
from pydantic import Field


class ApprovalInput(RunInput):
    """A person's decision on promoting a validated challenger to champion."""

    decision: Literal["approve", "reject"] = Field(
        description="approve: make this version the champion; reject: keep the current one."
    )
    approval_token: str = Field(
        default="",
        description="Required for the answer to count: a one-use token from `mlsteward approve "
        "MODEL VERSION --reason TEXT --print-token` or POST "
        "/api/v1/models/{m}/versions/{v}/approve, minted for you, this version and this "
        "decision. The decision and the approver are the token's.",
    )
    reason: str = Field(min_length=1, description="Why; recorded in the audit trail.")
    approver: str | None = Field(
        default=None,
        description="Your name, for the record only: a typed name is not an identity; the "
        "token says who you are.",
    )


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
        "An answer counts only with an approval token minted for you: "
        f"`mlsteward approve {model} {version} --reason TEXT --print-token` prints one to paste "
        f"below. Or answer from a shell, which resumes this run itself: "
        f"`mlsteward approve {model} {version} --reason TEXT [--reject]` (as MLSTEWARD_TOKEN's "
        "principal)."
    )
    return ApprovalInput.with_initial_data(description=description)


@dataclass
class ApprovalRounds:
    """One approval request as a series of pauses: an answer that does not settle it (refused,
    or one approval of several) pauses the run again, each time with a new key (Prefect
    treats a pause key it has seen as already resumed), until the approval timeout."""

    timeout: float
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0

    def next(self) -> tuple[int, float] | None:
        """(attempt number, seconds left), or None once the time is up."""
        remaining = self.timeout - (time.monotonic() - self.started)
        if remaining <= 0:
            return None
        self.attempts += 1
        return self.attempts, remaining


def await_applied_pause(
    paused: Pause,
    flow_run_id: str,
    form: type[ApprovalInput],
    pause_key: str,
    timeout: float,
    poll_interval: float,
) -> ApprovalInput | None:
    """Wait for the decision on a pause the server applied although the client saw it refused.

    A busy server can apply the pause and still fail the response (503 while its database is
    locked); the client sends the same transition again and the server rejects the repeat with
    the run's current, paused state, which Prefect raises as ``Pause``. The run is paused with
    our key, so this does what ``pause_flow_run`` would have done next: publish the form and
    poll until resumed. None when the timeout passes, as with ``FlowPauseTimeout``.
    """
    state = paused.state
    if state is None or not state.is_paused() or state.state_details.pause_key != pause_key:
        raise paused
    keyset = keyset_from_paused_state(state)
    form.save(keyset)
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(UUID(flow_run_id))
            if run.state is not None and run.state.is_running():
                return form.load(keyset)
            if time.monotonic() >= deadline:
                return None
            time.sleep(poll_interval)
