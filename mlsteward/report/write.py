"""Writing the model card: ``<MLSTEWARD_HOME>/reports/<model>-model-card.{html,md}``.

``mlsteward report MODEL`` calls :func:`write_report`: collect once, render both files, return
their paths and the facts a caller prints (or ``--json`` returns).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlsteward.config.names import check_model_name
from mlsteward.config.settings import home
from mlsteward.report.collect import collect_model_card
from mlsteward.report.model import MAX_DRIFT_ROWS, MAX_ROLLOUT_ROWS, ModelCard
from mlsteward.report.render_html import render_html
from mlsteward.report.render_markdown import render_markdown


def reports_dir() -> Path:
    """``<MLSTEWARD_HOME>/reports``, created if missing."""
    path = home() / "reports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_card(card: ModelCard, out_dir: Path | None = None) -> dict[str, Any]:
    """Render a collected card to ``<out_dir>/<model>-model-card.{html,md}``."""
    out = Path(out_dir) if out_dir is not None else reports_dir()
    out.mkdir(parents=True, exist_ok=True)
    html_path = out / f"{card.model}-model-card.html"
    md_path = out / f"{card.model}-model-card.md"
    html_path.write_text(render_html(card), encoding="utf-8")
    md_path.write_text(render_markdown(card), encoding="utf-8")
    return {
        "model": card.model,
        "html": str(html_path),
        "markdown": str(md_path),
        "champion": card.champion_version,
        "challenger": card.challenger_version,
        "versions": [s.version for s in card.sections],
        "audit_ok": card.audit.ok,
        "drift_checks": len(card.drift),
        "drift_history": [c.to_dict() for c in card.drift[:MAX_DRIFT_ROWS]],
        "rollouts": [r.to_dict() for r in card.rollouts[:MAX_ROLLOUT_ROWS]],
        "warnings": list(card.warnings),
    }


def write_report(model: str, out_dir: Path | None = None) -> dict[str, Any]:
    """Collect and write the model card; default location ``<MLSTEWARD_HOME>/reports/``.

    Returns:
        ``{"model", "html", "markdown", "champion", "challenger", "versions", "audit_ok",
        "drift_checks", "drift_history", "rollouts", "warnings"}`` with the two paths as
        strings; ``drift_checks`` counts every drift check, ``drift_history`` holds the newest
        :data:`MAX_DRIFT_ROWS` of them (:meth:`DriftCheck.to_dict`), ``rollouts`` the newest
        :data:`MAX_ROLLOUT_ROWS` canary rollouts (:meth:`RolloutRun.to_dict`).
    """
    return write_card(collect_model_card(check_model_name(model)), out_dir)
