"""``POST /models/{model}/runs``: start the model's train, drift or score deployment run on
the Prefect server, for the caller (``train``, ``drift`` or ``score`` permission)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from mlsteward.api import launch
from mlsteward.api.auth import Caller, path_model
from mlsteward.api.errors import responses
from mlsteward.api.schemas import RunBody, StartedRunOut, TrainRun
from mlsteward.config.models import ModelConfig
from mlsteward.identity import Permission, authorize

router = APIRouter(tags=["runs"])

PERMISSION = {"train": Permission.TRAIN, "drift": Permission.DRIFT, "score": Permission.SCORE}


@router.post(
    "/models/{model}/runs",
    status_code=202,
    response_model=StartedRunOut,
    responses=responses(401, 403, 404, 422, 503),
)
async def start_run(
    who: Caller,
    cfg: Annotated[ModelConfig, Depends(path_model)],
    body: RunBody,
) -> dict[str, Any]:
    """Start a deployment run: ``train`` (max_evals, seed, promote, reason, git_ref),
    ``drift`` (current, window_days) or ``score`` (source, entities, start, end). Answers at
    once with the run's id and its page in the Prefect UI; the run does the work, acting for
    the caller."""
    authorize(who, PERMISSION[body.action], cfg)
    parameters = body.model_dump(exclude={"action", "reason"})
    reason = body.reason if isinstance(body, TrainRun) else None
    return await launch.start_run(
        body.action, cfg.name, parameters, who, reason=reason or f"api: {who.identity}"
    )
