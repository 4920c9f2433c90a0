"""The card as one self-contained HTML page (``templates/model_card.html.j2``).

Inline CSS, no scripts, nothing fetched when it is opened, so the page can be mailed, archived
or attached to a ticket as is. Every piece of text from a user, a tag or the audit trail is
escaped by the template's autoescaping. The pictures (:mod:`mlsteward.report.view_pictures`)
are inline SVG, whose text matplotlib and :func:`mlsteward.report.charts.svg.clean` escape;
they are the one markup the template passes through unescaped.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from mlsteward.report.actions import EVENT_LABELS
from mlsteward.report.format import fmt_num, fmt_ts, short
from mlsteward.report.model import ModelCard
from mlsteward.report.view import (
    audit_table,
    section_view,
    summary_table,
    timeline_items,
    versions_table,
)
from mlsteward.report.view_drift import drift_table
from mlsteward.report.view_metrics import metrics_table
from mlsteward.report.view_pictures import drift_pictures, metrics_pictures, section_pictures
from mlsteward.report.view_rollouts import rollouts_table

TEMPLATE = "model_card.html.j2"
TEMPLATE_DIR = Path(__file__).parent / "templates"


def _environment() -> jinja2.Environment:
    return template_environment(TEMPLATE_DIR)


def template_environment(directory: Path) -> jinja2.Environment:
    """Templates in ``directory`` with the card's settings and filters: every value escaped,
    an undefined name an error, numbers and times written as the card writes them (the
    console renders its pages with the same)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(directory)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ts"] = fmt_ts
    env.filters["num"] = fmt_num
    env.filters["short"] = short
    return env


def render_html(card: ModelCard) -> str:
    """One self-contained HTML page: inline CSS, no scripts, no external resources."""
    env = _environment()
    return env.get_template(TEMPLATE).render(
        card=card,
        summary=summary_table(card),
        versions=versions_table(card),
        metrics=metrics_table(card),
        metric_pictures=metrics_pictures(card),
        sections=[section_view(s) for s in card.sections],
        section_pictures={s.version: section_pictures(card, s) for s in card.sections},
        drift_pictures=drift_pictures(card),
        timeline=timeline_items(card),
        drift=drift_table(card),
        rollouts=rollouts_table(card),
        audit=audit_table(card.audit),
        event_labels=EVENT_LABELS,
    )
