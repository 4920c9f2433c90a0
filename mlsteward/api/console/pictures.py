"""Pictures as images of this origin: ``<img src="/ui/pictures/...svg">``.

Pages link the pictures instead of inlining them, so a page answers before matplotlib has
drawn anything, and an SVG loaded as an image can carry its own styles under the console's CSP
(no inline style in the page). A version's pictures are drawn from its stored validation
report, so they are cached by the report's URI: a re-validation writes a new report and so new
pictures.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
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
from mlsteward.identity import Permission, authorize

if TYPE_CHECKING:
    from mlsteward.report.charts import Picture

router = APIRouter()
CACHE_ENTRIES = 256
SVG_HEADERS = {
    "Cache-Control": "private, max-age=300",
    "X-Content-Type-Options": "nosniff",
    # An SVG opened on its own is a document: it may style itself, never run a script.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}

_cache: OrderedDict[tuple[str, ...], list[Picture]] = OrderedDict()
_lock = threading.Lock()


def _cached(key: tuple[str, ...], draw: Any) -> list[Picture]:
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    drawn = draw()
    with _lock:
        _cache[key] = drawn
        while len(_cache) > CACHE_ENTRIES:
            _cache.popitem(last=False)
    return drawn


def version_set(model: str, version: str, detail: dict[str, Any]) -> list[Picture]:
    """The version's pictures (drawn once per stored validation report)."""
    cfg = known_model(model)
    validation = detail.get("validation")
    if not validation:
        return []
    # Imported here: matplotlib costs ~0.5 s, paid by the first picture, not the API's start.
    from mlsteward.report.charts import version_pictures

    uri = str(validation.get("created_at") or "")
    return _cached(("v", model, version, uri), lambda: version_pictures(validation, cfg))


def picture_links(model: str, version: str, detail: dict[str, Any]) -> list[dict[str, str]]:
    """What a page needs to show a version's pictures: URL, title and text alternative."""
    return [
        {
            "url": f"/ui/pictures/{model}/v{version}/{p.key}.svg",
            "title": p.title,
            "alt": p.alt,
        }
        for p in version_set(model, version, detail)
    ]


def _drift_picture(model: str) -> Picture | None:
    from mlsteward.report.charts import drift_history_picture  # matplotlib: see version_set

    cfg = known_model(model)
    with audit_store() as store:
        checks = drift_history(store, model)
    key = ("d", model, str(checks[-1].seq if checks else 0))
    found = _cached(key, lambda: [p for p in [drift_history_picture(checks, cfg)] if p])
    return found[0] if found else None


def drift_link(model: str) -> dict[str, str]:
    """The drift history picture's link; drawn when the browser asks for it."""
    return {
        "url": f"/ui/pictures/{model}/drift.svg",
        "title": "Drift per column over time, with the threshold",
        "alt": f"Chart of {model}'s drift score per column at each drift check, with the "
        "threshold above which a column counts as drifted; the table below lists the same checks",
    }


def _svg(svg: str) -> Response:
    return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)


def _version_picture(model: str, version: str, key: str) -> str:
    with audit_store() as store:
        detail = views.version_detail(model, version, store)
    for picture in version_set(model, version, detail):
        if picture.key == key:
            return picture.svg
    raise NotFoundError(f"{model} v{version} has no picture {key[:40]!r}")


@router.get("/pictures/{model}/v{version}/{key}.svg")
async def version_picture(
    request: Request, who: Viewer, model: str, version: str, key: str
) -> Response:
    cfg = await run_in_threadpool(known_model, model)
    authorize(who, Permission.READ, cfg)
    svg = await run_in_threadpool(_version_picture, cfg.name, check_version(version), key)
    return _svg(svg)


@router.get("/pictures/{model}/drift.svg")
async def drift_picture(request: Request, who: Viewer, model: str) -> Response:
    cfg = await run_in_threadpool(known_model, model)
    authorize(who, Permission.READ, cfg)
    picture = await run_in_threadpool(_drift_picture, cfg.name)
    if picture is None:
        raise NotFoundError(f"{cfg.name} has no drift check yet")
    return _svg(picture.svg)
