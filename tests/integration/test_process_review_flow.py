"""The process review as the weekly deployment runs it, on a planted history that ends now:
lead times jump after a date and a gate fails more often. The flow finds both, tells the
lead-time shift as one alert, writes the report and its Prefect artifact, and audits the
review; the command line prints the same report, and refuses a bad date with one message."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from typer.testing import CliRunner

from flows.process import process_review_flow
from mlsteward.audit import Action, audit_store
from mlsteward.cli.app import app
from mlsteward.config.settings import audit_url
from tests.support.process_history import write_synthetic_history

MODEL = "heart_disease"  # a model with a config: its alerts and targets apply
WEEKS = 28  # 20 weeks of baseline (a p-chart's point is a week), then the change


def _plant() -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    monday = (now - timedelta(weeks=WEEKS, days=now.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    truth = write_synthetic_history(
        audit_url(),
        models=[MODEL],
        start=monday,
        weeks=WEEKS,
        versions_per_week=5,
        shift_at=monday + timedelta(weeks=20),
        lead_time_hours=(10.0, 40.0),
        gate_failure_rate=(0.1, 0.6),
        seed=5,
        drift_every_weeks=0,
        rollback_every=0,
    )
    return truth.start, now


def test_the_review_alerts_on_the_shift_writes_the_report_and_audits_itself(
    tmp_path: Path,
) -> None:
    since, now = _plant()
    out = process_review_flow(model=MODEL, since=since, until=now + timedelta(minutes=1))

    scope = out["report"]["scopes"][MODEL]
    lead = next(c for c in scope["charts"] if c["key"] == "lead_time_to_decision")
    assert lead["chart"]["center"] < 15 < 35 < max(lead["chart"]["values"])  # the planted jump
    assert lead["special_causes"] and lead["special_causes"][-1]["current"]
    assert lead["capability"]["cpk"] < 1  # 40 h against the 24 h target
    gates = next(c for c in scope["charts"] if c["key"] == "gate_failures")
    assert gates["chart"]["baseline"] == 20 and gates["special_causes"], "60% against 10%"

    fired = [a for a in out["alerts"] if a["transition"] == "fired"]
    assert "lead_time_to_decision" in {a["subject"] for a in fired}
    html = Path(out["files"]["html"])
    assert html.is_file() and "Lead time: data version to decision" in html.read_text()
    assert json.loads(Path(out["files"]["json"]).read_text())["format"] == "mlsteward-process/1"

    with audit_store() as audit:
        [review] = audit.query(action=Action.PROCESS_REVIEWED)
        alerts = audit.query(model=MODEL, action=Action.ALERT_FIRED)
    assert review.details["files"]["html"] == str(html)
    current = review.details["scopes"][MODEL]["current"]
    assert "lead_time_to_decision" in {c["chart"] for c in current}
    assert {a.details["subject"] for a in alerts} == {a["subject"] for a in fired}
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["process-review"]))
        )
    assert any(str(html) in str(a.data) and "## heart_disease" in str(a.data) for a in artifacts)

    # a second review of the same history: the incident is open, nothing is fired again
    again = process_review_flow(model=MODEL, since=since, until=now + timedelta(minutes=1))
    assert not [a for a in again["alerts"] if a["transition"] == "fired"]


def test_the_command_line_report_and_its_refusals(tmp_path: Path) -> None:
    since, _ = _plant()
    runner = CliRunner()
    result = runner.invoke(
        app,
        ["process", "report", "--model", MODEL, "--since", since.date().isoformat(),
         "--out", str(tmp_path), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert set(doc["scopes"]) == {MODEL}
    assert Path(doc["files"]["html"]).parent == tmp_path

    text = runner.invoke(app, ["process", "report", "--out", str(tmp_path)])
    assert text.exit_code == 0, text.output
    assert "special cause (CURRENT) Lead time: data version to decision" in text.output
    assert "all:" in text.output

    bad = runner.invoke(app, ["process", "report", "--since", "last tuesday"])
    assert bad.exit_code == 1
    assert "--since 'last tuesday' is not an ISO-8601 date" in bad.output
    assert "Traceback" not in bad.output
    unknown = runner.invoke(app, ["process", "report", "--model", "no_such_model"])
    assert unknown.exit_code == 1 and "no_such_model" in unknown.output
