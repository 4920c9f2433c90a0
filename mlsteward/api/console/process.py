"""The Process page: how the delivery of models behaves over a period, as control charts.

The same report as ``GET /api/v1/process`` and ``mlsteward process report``, laid out by
``mlsteward.process.view``: per scope (each model, and all of them) the headline figures, the
verdict, the special causes, the charts with their limits and capability, the rejection Pareto
and the flow runs.

The page links its pictures (``<img src="/ui/process/pictures/SCOPE/KEY.svg?...">``, the CSP
allows no inline SVG style), so one view is the page and a dozen picture requests. Each would
otherwise build the report again: read the period's audit trail and Prefect's runs, then draw
every chart of its scope (control charts are not remembered by ``report.charts.cache``), and
with the default period ending "now" a picture could show other numbers than the page around
it. So the last few reports are kept per filters for ``KEEP_SECONDS``, with their drawn
pictures: the page and its pictures show one report, built once, each scope drawn once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from mlsteward.api.approvals import pending_approvals
from mlsteward.api.auth import check_model_name, known_model
from mlsteward.api.console.pictures import SVG_HEADERS
from mlsteward.api.console.render import page
from mlsteward.api.console.session import Viewer
from mlsteward.api.errors import BadInput
from mlsteward.api.views import configured_models
from mlsteward.config import settings
from mlsteward.errors import MlstewardError, NotFoundError
from mlsteward.identity import Permission, Principal, authorize
from mlsteward.process.build import DEFAULT_DAYS, build_report, parse_when
from mlsteward.process.review import ProcessReport
from mlsteward.process.view import ScopeView, report_view, scope_view

router = APIRouter()

KEEP_SECONDS = 60.0
"""How long a built report serves the page's pictures (and a reload) before it is built again."""
KEEP_REPORTS = 8
"""Reports kept at once (the least recently used go first): a few people's filters."""

ASPECT = {"xmr": (580, 390), "p": (580, 300), "pareto": (580, 320)}
"""Width and height each kind of picture is drawn at (``report.charts.control``: 5.8 in wide,
3.9 in high with the moving-range panel, 3.0 without, 3.2 for the Pareto), so the page keeps
their room before they load."""


@dataclass(frozen=True)
class Filters:
    """The form's values as given (what the links carry) and the period they mean."""

    model: str | None
    since: str | None
    until: str | None
    start: datetime | None
    end: datetime | None

    def query(self) -> str:
        """The filters as a query string, for the pictures' links."""
        given = {"model": self.model, "since": self.since, "until": self.until}
        text = urlencode({k: v for k, v in given.items() if v})
        return f"?{text}" if text else ""


def _when(text: str | None, field_name: str) -> datetime | None:
    try:
        return parse_when(text, field_name)
    except MlstewardError as exc:
        raise BadInput(field_name, str(exc).removeprefix(f"{field_name} ")) from None


def filters(request: Request) -> Filters:
    """The query's model, since and until, each refused with 422 naming it when it is not
    one (an unknown model is a 404 naming the known ones, where the report is built)."""
    q = request.query_params
    model = (q.get("model") or "").strip() or None
    since = (q.get("since") or "").strip()[:40] or None
    until = (q.get("until") or "").strip()[:40] or None
    if model is not None:
        check_model_name(model)
    return period_filters(model, since, until)


def period_filters(model: str | None, since: str | None, until: str | None) -> Filters:
    """The filters with their period read, each bound refused with 422 naming it when it is
    not a time, and ``since`` when it is not before ``until`` (the page and the API alike)."""
    start, end = _when(since, "since"), _when(until, "until")
    if start is not None and end is not None and start >= end:
        raise BadInput("since", f"{since!r} is not before until {until!r}")
    return Filters(model, since, until, start, end)


def _authorized(who: Principal, f: Filters) -> None:
    """Read on the model asked for, or read anywhere for every model (as the API asks)."""
    if f.model is None:
        authorize(who, Permission.READ)
    else:
        authorize(who, Permission.READ, known_model(f.model))


@dataclass
class _Kept:
    """One built report and the scopes drawn from it; ``lock`` keeps two requests from
    building or drawing the same thing at once."""

    report: ProcessReport | None = None
    built: float = 0.0
    drawn: dict[str, ScopeView] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def stale(self, now: float) -> bool:
        return self.report is not None and now - self.built >= KEEP_SECONDS


_kept: OrderedDict[tuple[str | None, ...], _Kept] = OrderedDict()
_kept_lock = threading.Lock()


def _key(f: Filters) -> tuple[str | None, ...]:
    """The filters as given, and where the records are (tests point one process at many
    homes; a server keeps one)."""
    return (settings.audit_url(), str(settings.home()), f.model, f.since, f.until)


def kept_report(f: Filters) -> tuple[ProcessReport, _Kept]:
    """The report for ``f``: the one built less than ``KEEP_SECONDS`` ago, or a new one."""
    key = _key(f)
    with _kept_lock:
        kept = _kept.get(key)
        if kept is None or kept.stale(time.monotonic()):
            kept = _kept[key] = _Kept()
        _kept.move_to_end(key)
        while len(_kept) > KEEP_REPORTS:
            _kept.popitem(last=False)
    with kept.lock:
        if kept.report is None:  # a build that failed is tried again by the next request
            kept.report = build_report(f.model, since=f.start, until=f.end)
            kept.built = time.monotonic()
        return kept.report, kept


def forget() -> None:
    """Drop every kept report (tests that change the records under a running console)."""
    with _kept_lock:
        _kept.clear()


def _page(f: Filters) -> dict[str, Any]:
    report, _ = kept_report(f)
    query = f.query()
    scopes = []
    for view in report_view(report, pictures=False):
        charts = [
            {
                "view": cv,
                "url": f"/ui/process/pictures/{view.name}/{cv.chart.key}.svg{query}",
                "size": ASPECT.get(cv.chart.kind, ASPECT["xmr"]),
            }
            for cv in view.charts
        ]
        pareto = (
            {"url": f"/ui/process/pictures/{view.name}/rejections.svg{query}",
             "size": ASPECT["pareto"]}
            if view.rejections and any(r["count"] for r in view.rejections)
            else None
        )  # fmt: skip
        current = [c for c in view.causes if c["current"]]
        judged = [cv for cv in view.charts if cv.tone != "none"]
        scopes.append(
            {"view": view, "charts": charts, "judged": judged, "pareto": pareto, "current": current}
        )
    return {
        "f": f,
        "report": report,
        "scopes": scopes,
        "rules": sorted({r.config.rules.replace("_", " ") for r in report.scopes.values()}),
        "default_days": DEFAULT_DAYS,
        "models": configured_models(),
        "pending_count": len(pending_approvals()),
    }


@router.get("/process", response_class=HTMLResponse)
async def process_page(request: Request, who: Viewer) -> HTMLResponse:
    """Every scope of the report; the filters are a plain GET form, so a view is a link."""
    f = filters(request)
    await run_in_threadpool(_authorized, who, f)
    data = await run_in_threadpool(_page, f)
    return page(request, "process.html.j2", section="Process", **data)


def _picture(f: Filters, scope: str, key: str) -> str:
    report, kept = kept_report(f)
    review = report.scopes.get(scope)
    if review is None:
        raise NotFoundError(f"the process report has no scope {scope[:64]!r}")
    with kept.lock:
        view = kept.drawn.get(scope)
        if view is None:
            view = kept.drawn[scope] = scope_view(scope, review, pictures=True)
    pictures = [cv.picture for cv in view.charts] + [view.pareto]
    for picture in pictures:
        if picture is not None and picture.key == key:
            return picture.svg
    raise NotFoundError(f"{scope[:64]}: no process chart {key[:64]!r} in this period")


@router.get("/process/pictures/{scope}/{key}.svg")
async def process_picture(request: Request, who: Viewer, scope: str, key: str) -> Response:
    """One chart of the report the page with the same filters shows."""
    f = filters(request)
    await run_in_threadpool(_authorized, who, f)
    svg = await run_in_threadpool(_picture, f, scope, key)
    return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)
