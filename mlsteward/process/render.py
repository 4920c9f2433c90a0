"""The process report as a self-contained HTML page, as markdown for a Prefect artifact, and
as JSON.

The HTML page has inline CSS, no scripts and inline SVG charts, so it can be mailed or archived
as is. The markdown keeps the figures and the special causes as tables and shows pictures only
of charts with a special cause (Prefect stores an artifact in its database: every chart of
every model as a data URL would make each weekly review megabytes).
"""

from __future__ import annotations

import json
from pathlib import Path

from mlsteward.process.review import ProcessReport
from mlsteward.process.view import report_view
from mlsteward.report.render_html import template_environment

TEMPLATE_DIR = Path(__file__).parent / "templates"


def _rules(report: ProcessReport) -> str:
    names = sorted({r.config.rules for r in report.scopes.values()})
    return ", ".join(n.replace("_", " ").title() for n in names) or "nelson"


def render_html(report: ProcessReport) -> str:
    env = template_environment(TEMPLATE_DIR)
    return env.get_template("process_report.html.j2").render(
        scopes=report_view(report),
        since=f"{report.since:%Y-%m-%d %H:%M}",
        until=f"{report.until:%Y-%m-%d %H:%M}",
        generated=f"{report.generated_at:%Y-%m-%d %H:%M} UTC",
        rules=_rules(report),
        notes=report.notes,
    )


def render_json(report: ProcessReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=False)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: ProcessReport, *, link: str | None = None) -> str:
    """Each scope's headline figures and special causes, with the pictures of the charts
    that show one."""
    lines = [
        f"# Process review {report.since:%Y-%m-%d} to {report.until:%Y-%m-%d}",
        "",
        f"Run rules: {_rules(report)}. Generated {report.generated_at:%Y-%m-%d %H:%M} UTC."
        + (f" Full report: {link}" if link else ""),
        "",
    ]
    lines += [f"> {n}" for n in report.notes]
    for view in report_view(report):
        lines += [f"## {view.title}", "", "| measure | value | detail |", "|---|---|---|"]
        lines += [f"| {s.label} | {s.value} | {_cell(s.sub)} |" for s in view.stats]
        lines.append("")
        if not view.causes:
            verdict = (
                "In statistical control: no special cause in the period."
                if view.judged
                else "Too few points to judge: no chart has the points its limits need yet."
            )
            lines += [verdict, ""]
            continue
        lines += [
            "| chart | rule | what the points show | last point | now |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {_cell(c['title'])} | {c['rule']} | {_cell(c['description'])} | "
            f"{c['at'][:16].replace('T', ' ')} | {'current' if c['current'] else 'earlier'} |"
            for c in view.causes
        ]
        lines.append("")
        for cv in view.charts:
            if cv.tone in ("bad", "warn") and cv.picture is not None:
                lines += [cv.picture.markdown(), ""]
    return "\n".join(lines)


def write_report(
    report: ProcessReport, out_dir: Path, stem: str = "process-report"
) -> dict[str, str]:
    """``<stem>.html`` and ``<stem>.json`` in ``out_dir``, each written whole then renamed
    into place, so a reader never sees half a report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for ext, text in (("html", render_html(report)), ("json", render_json(report))):
        path = out_dir / f"{stem}.{ext}"
        tmp = path.with_suffix(f".{ext}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        paths[ext] = str(path)
    return paths
