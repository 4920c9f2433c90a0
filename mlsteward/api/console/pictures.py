"""Pictures as images of this origin: ``<img src="/ui/pictures/...svg">``.

Pages link the pictures instead of inlining them, so a page answers before matplotlib has
drawn anything, and an SVG loaded as an image carries its own styles under the console's CSP
(no inline style in the page). The chart functions remember what they drew
(``mlsteward.report.charts.cache``), so a picture is drawn once per stored report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from mlsteward.api import views
from mlsteward.api.auth import check_version, known_model
from mlsteward.api.console.evidence import drift_history
from mlsteward.api.console.session import Viewer
from mlsteward.audit import audit_store
from mlsteward.errors import NotFoundError
from mlsteward.governance import promotion, registry
from mlsteward.identity import Permission, authorize

if TYPE_CHECKING:
    from mlsteward.report.charts import Picture

router = APIRouter()
SVG_HEADERS = {
    "Cache-Control": "private, max-age=300",
    "X-Content-Type-Options": "nosniff",
    # An SVG opened on its own is a document: it may style itself, never run a script.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


def version_set(model: str, detail: dict[str, Any]) -> list[Picture]:
    """A validated version's pictures, from its stored validation report."""
    # Imported here: matplotlib costs ~0.5 s, paid by the first picture, not the API's start.
    from mlsteward.report.charts import version_pictures

    validation = detail.get("validation")
    return version_pictures(validation, known_model(model)) if validation else []


def picture_links(model: str, version: str, detail: dict[str, Any]) -> list[dict[str, str]]:
    """What a page needs to show a version's pictures: URL, title and text alternative."""
    return [
        {"url": f"/ui/pictures/{model}/v{version}/{p.key}.svg", "title": p.title, "alt": p.alt}
        for p in version_set(model, detail)
    ]


def missing_note(detail: dict[str, Any]) -> str | None:
    """Why a version's curve and SHAP pictures are absent, or None."""
    from mlsteward.report.charts import evaluation_note  # matplotlib: see version_set

    return evaluation_note(detail.get("validation"))


def model_links(model: str, primary: str, has_drift: bool) -> list[dict[str, str]]:
    """The model page's pictures: the primary metric by version, and drift over time."""
    links = [
        {
            "url": f"/ui/pictures/{model}/metric.svg",
            "title": f"{primary} of every version",
            "alt": f"Chart of {primary} on each version's holdout, oldest to newest, with the "
            "champion and challenger marked; the versions table lists the same numbers",
        }
    ]
    if has_drift:
        links.append(
            {
                "url": f"/ui/pictures/{model}/drift.svg",
                "title": "Drift per column over time, with the thresholds",
                "alt": f"Chart of {model}'s drift score per column at each drift check, with "
                "the threshold above which a column counts as drifted; the drift table lists "
                "the same checks",
            }
        )
    return links


def _svg(svg: str) -> Response:
    return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)


def _version_picture(model: str, version: str, key: str) -> str:
    with audit_store() as store:
        detail = views.version_detail(model, version, store)
    for picture in version_set(model, detail):
        if picture.key == key:
            return picture.svg
    raise NotFoundError(f"{model} v{version} has no picture {key[:40]!r}")


def _model_picture(model: str, which: str) -> str:
    from mlsteward.report import charts  # matplotlib: see version_set

    cfg = known_model(model)
    picture: Picture | None = None
    if which == "drift":
        with audit_store() as store:
            checks = drift_history(store, model)
        picture = charts.drift_history_picture(checks, cfg, subject=model)
    elif which == "metric":
        state = promotion.status(model)
        versions = [views.version_item(v) for v in registry.list_versions(model)]
        champion = (state.get("champion") or {}).get("version")
        challenger = (state.get("challenger") or {}).get("version")
        picture = charts.metric_history_picture(
            versions, cfg.promotion.primary_metric, champion, challenger, subject=model
        )
    if picture is None:
        raise NotFoundError(f"{model}: nothing recorded yet to draw {which!r}")
    return picture.svg


@router.get("/pictures/{model}/v{version}/{key}.svg")
async def version_picture(
    request: Request, who: Viewer, model: str, version: str, key: str
) -> Response:
    cfg = await run_in_threadpool(known_model, model)
    authorize(who, Permission.READ, cfg)
    svg = await run_in_threadpool(_version_picture, cfg.name, check_version(version), key)
    return _svg(svg)


@router.get("/pictures/{model}/{which}.svg")
async def model_picture(request: Request, who: Viewer, model: str, which: str) -> Response:
    if which not in ("drift", "metric"):
        raise NotFoundError(f"no picture {which[:40]!r} (drift or metric)")
    cfg = await run_in_threadpool(known_model, model)
    authorize(who, Permission.READ, cfg)
    return _svg(await run_in_threadpool(_model_picture, cfg.name, which))
