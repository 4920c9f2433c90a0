"""``GET /process``: the delivery process measured and judged (``read`` permission), the
same report ``mlsteward process report --json`` prints. A report is kept for a minute and
shared with the console's Process page: a year of history takes seconds to read, and a page and
the API then agree."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from mlsteward.api.auth import allowed_anywhere, known_model
from mlsteward.api.console.process import kept_report, period_filters
from mlsteward.api.errors import BadInput, responses
from mlsteward.errors import MlstewardError
from mlsteward.identity import Permission, Principal, authorize

router = APIRouter(tags=["process"])


@router.get("/process", responses=responses(401, 403, 404, 422))
def get_process(
    who: Annotated[Principal, Depends(allowed_anywhere(Permission.READ))],
    model: Annotated[str | None, Query(description="One model (default: every model).")] = None,
    since: Annotated[
        str | None, Query(description="ISO date or time; default 90 days ago.")
    ] = None,
    until: Annotated[str | None, Query(description="ISO date or time; default now.")] = None,
) -> dict[str, Any]:
    """Lead and cycle times, first-pass yield and the rejection Pareto, retrains by cause,
    drift to recovery, rollback and change failure rates, failed runs per flow; each time and
    rate as a control chart (limits from its baseline, special causes by the run rules) with
    Cpk against the model's targets."""
    if model is not None:
        authorize(who, Permission.READ, known_model(model))
    f = period_filters(model, since, until)
    try:  # the console's kept report: a minute old at most, and one build for both
        report, _ = kept_report(f)
    except MlstewardError as exc:  # a period the calendar cannot hold
        raise BadInput("until", str(exc)) from None
    return report.to_dict()
