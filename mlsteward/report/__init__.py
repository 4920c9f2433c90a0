"""The governance report (model card): what a model is, which version serves and why.

``mlsteward report MODEL`` writes two files under ``<MLSTEWARD_HOME>/reports/``: one
self-contained HTML page and the same content as markdown. Collecting and rendering are
separate, so the renderers can be tested on a hand-built card without MLflow or a database:

- ``model``: the card as plain data (:class:`ModelCard` and its parts); ``actions``: the audit
  actions it reads and how it names them.
- ``collect``: the registry and the audit trail read into a card; ``history``: drift checks
  and canary rollouts assembled from their audit records.
- ``format``, ``table``, ``view``, ``view_metrics``, ``view_validation``, ``view_drift``,
  ``view_rollouts``: the view layer both renderers use, so each number is formatted once and
  the two outputs cannot drift apart; ``view_metrics`` knows which way each metric is better
  (errors lower, R² higher, the calibration ratio closer to 1).
- ``charts``: the pictures (matplotlib, self-contained SVG) of a validation report, of drift
  records and of the versions' metrics, which the card, the Prefect artifacts and the console
  share; ``view_pictures``: which of them the HTML card shows where.
- ``render_html`` (with ``templates/model_card.html.j2``), ``render_markdown``: layout only
  (the markdown card names the pictures' place instead of embedding them).
- ``write``: collect, render and write both files.
"""

from mlsteward.report.collect import collect_model_card, lineage_from_tags, metrics_from_tags
from mlsteward.report.history import drift_history, rollout_history
from mlsteward.report.model import (
    MAX_DRIFT_ROWS,
    MAX_ROLLOUT_ROWS,
    MAX_TIMELINE,
    AuditEvent,
    AuditStatus,
    DriftCheck,
    ModelCard,
    RolloutRun,
    VersionSection,
)
from mlsteward.report.render_html import render_html
from mlsteward.report.render_markdown import render_markdown
from mlsteward.report.write import reports_dir, write_card, write_report

__all__ = [
    "MAX_DRIFT_ROWS",
    "MAX_ROLLOUT_ROWS",
    "MAX_TIMELINE",
    "AuditEvent",
    "AuditStatus",
    "DriftCheck",
    "ModelCard",
    "RolloutRun",
    "VersionSection",
    "collect_model_card",
    "drift_history",
    "lineage_from_tags",
    "metrics_from_tags",
    "render_html",
    "render_markdown",
    "reports_dir",
    "rollout_history",
    "write_card",
    "write_report",
]
