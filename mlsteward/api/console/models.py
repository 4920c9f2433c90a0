"""The Models, Model and Version pages: what serves, what waits, and a version's evidence.

Each page reads what the API's read routes read (``mlsteward.api.views``), on one audit store,
so the console and ``GET /api/v1/...`` can never disagree about a model.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from mlsteward.api import views
from mlsteward.api.alerts import alerts_view
from mlsteward.api.approvals import pending_approvals
from mlsteward.api.auth import check_version, known_model
from mlsteward.api.console.evidence import decision_history, drift_history, version_evidence
from mlsteward.api.console.pictures import missing_note, model_links, picture_links
from mlsteward.api.console.render import page
from mlsteward.api.console.session import Viewer
from mlsteward.api.dashboard import summaries
from mlsteward.audit import audit_store
from mlsteward.config.settings import drift_reports_dir
from mlsteward.errors import MlstewardError, NotFoundError
from mlsteward.governance import registry, signatures
from mlsteward.identity import Permission, Principal, authorize

router = APIRouter()


def _models() -> dict[str, Any]:
    models, pending = summaries()
    return {"models": models, "pending_count": len(pending)}


@router.get("/models", response_class=HTMLResponse)
async def models_page(request: Request, who: Viewer) -> HTMLResponse:
    """Every model at a glance: champion, challenger, policy, drift, rollout, approvals."""
    authorize(who, Permission.READ)
    data = await run_in_threadpool(_models)
    return page(request, "models.html.j2", section="Models", **data)


def _model(name: str) -> dict[str, Any]:
    cfg = known_model(name)
    # one registry read and one queue read serve the whole page; the queue takes this
    # model's versions from that read instead of reading them again
    infos = registry.list_versions(cfg.name)
    queue = pending_approvals(known={(cfg.name, v.version): v for v in infos})
    pending = [p for p in queue if p["model"] == cfg.name]
    with audit_store() as store:
        detail = views.model_detail(cfg, store, pending, infos)
        history = decision_history(store, cfg.name)
        drift = drift_history(store, cfg.name)
    versions = [views.version_item(v) for v in infos]
    versions.sort(key=lambda v: int(v["version"]), reverse=True)
    metric_names = sorted({k for v in versions for k in v["metrics"]})
    primary = cfg.promotion.primary_metric
    if primary in metric_names:
        metric_names.remove(primary)
        metric_names.insert(0, primary)
    return {
        "cfg": cfg,
        "detail": detail,
        "versions": versions,
        "metric_names": metric_names[:6],
        "primary": primary,
        "history": history,
        "drift": drift,
        "pictures": model_links(cfg.name, primary, bool(drift)),
        "pending_count": len(queue),
        "alerts": alerts_view(cfg.name, 10),
    }


@router.get("/models/{model}", response_class=HTMLResponse)
async def model_page(request: Request, who: Viewer, model: str) -> HTMLResponse:
    """One model: its versions with metrics, decisions, drift history and latest report."""
    cfg = await run_in_threadpool(known_model, model)
    authorize(who, Permission.READ, cfg)
    data = await run_in_threadpool(_model, cfg.name)
    return page(request, "model.html.j2", section="Models", **data)


def _version(name: str, number: str, who: Principal) -> dict[str, Any]:
    cfg = known_model(name)
    with audit_store() as store:
        detail = views.version_detail(cfg.name, number, store)
    pending = pending_approvals()
    waiting = next((p for p in pending if p["model"] == cfg.name and p["version"] == number), None)
    item = None
    if waiting is not None:
        item = {
            **waiting,
            "may_approve": who.may(Permission.APPROVE, cfg),
            "may_reject": who.may(Permission.REJECT, cfg),
            "own": waiting.get("submitter") == who.identity,
            "approved_already": who.identity in (waiting.get("approvals") or []),
        }
    return {
        "cfg": cfg,
        "v": detail,
        "evidence": version_evidence(cfg, detail),
        "pictures": picture_links(cfg.name, number, detail),
        "pictures_missing": missing_note(detail),
        "waiting": waiting,
        "item": item,
        "pending_count": len(pending),
    }


@router.get("/models/{model}/versions/{version}", response_class=HTMLResponse)
async def version_page(request: Request, who: Viewer, model: str, version: str) -> HTMLResponse:
    """One version's evidence: lineage, signature, gates, fairness by group, pictures and
    its audit history; the approval form when it waits and the viewer may decide."""
    cfg = await run_in_threadpool(known_model, model)
    authorize(who, Permission.READ, cfg)
    data = await run_in_threadpool(_version, cfg.name, check_version(version), who)
    return page(request, "version.html.j2", section="Models", **data)


REPORT_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; font-src data:; sandbox allow-scripts"
)
"""Evidently's page carries its charts' scripts inline: they may run, in a sandbox with an
opaque origin (no cookie, no API), and may fetch nothing."""


def _latest_report(name: str) -> str:
    with audit_store() as store:
        checks = drift_history(store, name)
    report = next((c.report for c in reversed(checks) if c.report), None)
    if report is None:
        raise NotFoundError(f"{name} has no drift report yet (run: mlsteward drift {name})")
    root = drift_reports_dir(name).resolve()
    path = Path(report).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFoundError(f"{name}: the latest drift report is no longer at {report}")
    return path.read_text(encoding="utf-8", errors="replace")


@router.get("/models/{model}/drift-report", response_class=HTMLResponse)
async def drift_report(request: Request, who: Viewer, model: str) -> Response:
    """The newest drift run's Evidently report, as Evidently wrote it."""
    cfg = await run_in_threadpool(known_model, model)
    authorize(who, Permission.READ, cfg)
    html = await run_in_threadpool(_latest_report, cfg.name)
    headers = {"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff"}
    return HTMLResponse(html, headers=headers)


def _signature(name: str, number: str) -> dict[str, Any]:
    """Download the artifact and check digest and signature, as every load does."""
    info = registry.get_version(name, number)
    checked_at = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        with tempfile.TemporaryDirectory(prefix="mlsteward-console-") as d:
            _, digest = registry.check_artifact(info, Path(d))
    except MlstewardError as exc:
        return {"ok": False, "problem": str(exc), "checked_at": checked_at}
    key_id = info.tags.get(signatures.KEY_ID_TAG)
    return {"ok": True, "sha256": digest, "key_id": key_id, "checked_at": checked_at}


@router.get("/models/{model}/versions/{version}/signature", response_class=HTMLResponse)
async def signature(request: Request, who: Viewer, model: str, version: str) -> HTMLResponse:
    """Whether the stored artifact is still the one governance signed (checked now)."""
    cfg = await run_in_threadpool(known_model, model)
    authorize(who, Permission.READ, cfg)
    sig = await run_in_threadpool(_signature, cfg.name, check_version(version))
    return page(request, "signature.html.j2", section="Models", sig=sig, pending_count=0)
