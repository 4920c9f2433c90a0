"""Pages from Jinja2 templates, with headers that keep every request on this server.

The Content-Security-Policy is the promise that nothing a page loads or sends leaves the
machine: scripts, styles, pictures and requests only from this origin (the vendored htmx and
the console's own stylesheet), no inline script, no frames of other sites, forms only back
here. A browser enforces it even if a template ever slipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse

from mlsteward.report.render_html import template_environment

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"

CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-src 'self'",
        "frame-ancestors 'self'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_env: jinja2.Environment | None = None


def environment() -> jinja2.Environment:
    """One environment per process: templates compile once."""
    global _env
    if _env is None:
        _env = template_environment(TEMPLATES)
    return _env


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A whole page, or only its ``content`` block when htmx asks for a fragment."""
    who = getattr(request.state, "principal", None)
    for name, default in (("flash", None), ("flash_kind", None), ("section", "")):
        context.setdefault(name, default)
    context.setdefault("pending_count", 0)
    fragment = request.headers.get("hx-request") == "true" and "hx-target" in request.headers
    html = (
        environment()
        .get_template(template)
        .render(
            request=request,
            who=who,
            csrf=getattr(request.state, "csrf", ""),
            fragment=fragment,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def done_flash(request: Request) -> dict[str, Any]:
    """What a decision's redirect (``?done=...``) said, as the page's status line."""
    done = request.query_params.get("done")
    return {"flash": done[:300] if done else None, "flash_kind": "ok"}
