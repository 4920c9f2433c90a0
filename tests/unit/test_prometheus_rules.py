"""The Prometheus rules and the Grafana dashboard under ``deploy/``: promtool (the real binary)
checks the rules and the example configuration and runs the rules' unit tests; every name an
expression selects is one the service exposes or a rule records; the thresholds are the
standing alert rules' defaults."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlsteward.config.sections.alerts import ErrorRateRule, LatencyRule
from tests.support.prometheus import (
    EXAMPLE_CONFIG,
    RULES,
    RULES_TESTS,
    SCRAPE_JOB,
    alerts,
    dashboard,
    exposed_names,
    metric_names,
    panel_exprs,
    panels,
    recorded_names,
    rules,
)

PROMTOOL = shutil.which("promtool") or "promtool"


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_checks_the_rules_and_the_example_configuration() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(rules())} rules found" in checked.stdout + checked.stderr

    config = promtool("check", "config", str(EXAMPLE_CONFIG))
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS: 1 rule files found" in config.stdout + config.stderr


def test_the_rules_pass_their_unit_tests() -> None:
    done = promtool("test", "rules", RULES_TESTS.name, cwd=RULES_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    """Each alert appears in the unit tests at least once with an alert expected and once with
    none."""
    tests = yaml.safe_load(RULES_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    for name in alerts():
        mine = [case["exp_alerts"] for case in cases if case["alertname"] == name]
        assert any(mine), f"{name}: no test where it fires"
        assert [] in mine, f"{name}: no test where it stays quiet"


def test_rules_select_only_what_the_service_exposes_or_a_rule_records() -> None:
    known = exposed_names() | recorded_names()
    assert {"mlsteward_requests_total", "mlsteward_request_seconds_bucket"} <= known
    for rule in rules():
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule.get('record') or rule['alert']} selects unknown {unknown}"
    # a rule records what it reads before anything reads it (or reads the previous evaluation)
    assert len(recorded_names()) == sum("record" in r for r in rules()), "a name recorded twice"


def test_alerts_say_how_loud_and_name_the_model_and_the_arm() -> None:
    for name, alert in alerts().items():
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        summary, description = alert["annotations"]["summary"], alert["annotations"]["description"]
        assert "arm" in summary and "arm" in description, name
        label = "instance" if name == "MlstewardServingDown" else "model"
        where = f"{{{{ $labels.{label} }}}}"
        assert where in summary and where in description, name
    assert f'job="{SCRAPE_JOB}"' in alerts()["MlstewardServingDown"]["expr"]
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == [SCRAPE_JOB]


def above(expr: str, selector: str) -> float:
    """The number ``selector > N`` compares with in ``expr``."""
    found = re.search(rf"{re.escape(selector)} > ([0-9.]+)(?![0-9.])", expr)
    assert found, f"no {selector} > N in {expr}"
    return float(found.group(1))


@pytest.mark.parametrize("kind", ["Request", "Arm"])
def test_error_rate_thresholds_are_the_standing_rules_defaults(kind: str) -> None:
    rule, found = ErrorRateRule(), alerts()
    critical = found[f"Mlsteward{kind}ErrorRateCritical"]
    high = found[f"Mlsteward{kind}ErrorRateHigh"]
    slow = found[f"Mlsteward{kind}ErrorRateSlowBurn"]
    assert above(critical["expr"], "ratio_rate5m") == rule.max
    assert critical["labels"]["severity"] == rule.severity
    assert above(high["expr"], "ratio_rate5m") == rule.rollback_above
    assert above(slow["expr"], "ratio_rate1h") == rule.rollback_above
    assert f"rate5m * 300 >= {rule.min_requests}" in critical["expr"]
    assert f"rate5m * 300 >= {rule.min_requests}" in high["expr"]
    assert f"rate1h * 3600 >= {rule.min_requests}" in slow["expr"]
    assert f"{rule.max:.0%}" in critical["annotations"]["description"]
    assert f"{rule.rollback_above:.0%}" in high["annotations"]["description"]


def test_latency_threshold_is_the_standing_rules_default() -> None:
    rule, alert = LatencyRule(), alerts()["MlstewardLatencyP99High"]
    baseline = "model_arm:mlsteward_request_seconds:p99_5m_baseline_1d"
    assert f"> {rule.max_ratio:g} * {baseline}" in alert["expr"]
    assert f"> {baseline} + {rule.slack_ms / 1000:g}" in alert["expr"]
    assert f"rate5m * 300 >= {rule.min_requests}" in alert["expr"]
    assert alert["labels"]["severity"] == rule.severity


def test_metric_names_reads_selectors_not_labels_functions_or_keywords() -> None:
    expr = (
        'sum by (model, le) (rate(a_total{model=~"$model", x="y z"}[5m] offset 1h))'
        " / on (model) group_left b:rec:rate5m > 2 * c unless d == bool 1e3"
    )
    assert metric_names(expr) == {"a_total", "b:rec:rate5m", "c", "d"}


def test_dashboard_panels_read_existing_metrics_and_rules() -> None:
    dash = dashboard()
    assert dash["schemaVersion"] == 39
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["type"] == "query" and model["datasource"]["uid"] == "${datasource}"
    assert model["query"]["query"].startswith("label_values(mlsteward_model_loaded, model)")

    known = exposed_names() | recorded_names()
    exprs = panel_exprs(dash)
    assert exprs and all(exprs.values()), "a panel without a query"
    for title, queries in exprs.items():
        for expr in queries:
            names = metric_names(expr)
            assert names, f"{title}: {expr} selects nothing"
            assert names <= known, f"{title}: {expr} selects unknown {names - known}"
    for panel in panels(dash):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
        model_scoped = any(n.startswith(("model", "mlsteward")) for e in exprs[panel["title"]]
                           for n in metric_names(e))  # fmt: skip
        if model_scoped:
            assert all('model=~"$model"' in e for e in exprs[panel["title"]]), panel["title"]

    shown = set().union(*(metric_names(e) for queries in exprs.values() for e in queries))
    wanted = {
        "model_arm:mlsteward_request_seconds:p50_5m",
        "model_arm:mlsteward_request_seconds:p95_5m",
        "model_arm:mlsteward_request_seconds:p99_5m",
        "model_version_arm:mlsteward_requests:rate5m",
        "model_version_arm:mlsteward_predictions:rate5m",
        "model:mlsteward_requests_non2xx:ratio_rate5m",
        "model_version_arm:mlsteward_arm_errors:ratio_rate5m",
        "mlsteward_canary_fraction",
        "mlsteward_model_loaded",
        "mlsteward_prediction_log_queue_depth",
    }
    assert wanted <= shown, wanted - shown


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel's query as a recording rule would be (``$model`` as Grafana
    sends it)."""
    exprs = [e for queries in panel_exprs(dashboard()).values() for e in queries]
    group = {
        "name": "dashboard",
        "rules": [
            {"record": f"dashboard:query_{n}", "expr": e.replace("$model", ".*")}
            for n, e in enumerate(exprs)
        ],
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [group]}))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
