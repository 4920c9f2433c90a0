"""``GET /models/{model}/alerts``: the model's open incidents and its latest alert records
(``read`` permission), what an on-call person opens from a notification's link."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from mlsteward.alerts.state import AlertState
from mlsteward.api.auth import allowed, path_model
from mlsteward.api.errors import responses
from mlsteward.audit import Action, audit_store
from mlsteward.config.models import ModelConfig
from mlsteward.identity import Permission, Principal

router = APIRouter(tags=["alerts"])
_ACTIONS = (Action.ALERT_FIRED, Action.ALERT_REMINDED, Action.ALERT_RESOLVED)


def alerts_view(model: str, recent: int) -> dict[str, Any]:
    """Open incidents, then the newest alert records, newest first."""
    with AlertState() as state:
        firing = state.firing(model)
    with audit_store() as store:
        records = [r for a in _ACTIONS for r in store.query(model=model, action=a, limit=recent)]
    records.sort(key=lambda r: r.seq, reverse=True)
    return {
        "model": model,
        "firing": firing,
        "recent": [
            {
                "seq": r.seq,
                "ts": r.ts,
                "kind": r.action.removeprefix("alert_"),
                "version": r.version,
                "summary": r.reason,
                **{k: r.details.get(k) for k in ("rule", "subject", "severity", "value", "limit")},
            }
            for r in records[:recent]
        ],
    }


@router.get("/models/{model}/alerts", responses=responses(401, 403, 404))
def get_alerts(
    who: Annotated[Principal, Depends(allowed(Permission.READ))],
    cfg: Annotated[ModelConfig, Depends(path_model)],
    recent: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """The model's open incidents (rule, subject, since when, breaches counted and not sent)
    and its newest alert records (fired, reminded, resolved)."""
    return alerts_view(cfg.name, recent)
