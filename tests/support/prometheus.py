"""The Prometheus rules, example configuration and Grafana dashboard under ``deploy/`` as tests
read them: their files, the expressions in them and the metric names those expressions use."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO_ROOT

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "mlsteward-rules.yml"
RULES_TESTS = PROMETHEUS_DIR / "mlsteward-rules.test.yml"
EXAMPLE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "mlsteward-serving.json"
SCRAPE_JOB = "mlsteward-serving"

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "offset", "bool", "inf", "nan"}
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric and recording-rule names a PromQL expression selects (label names, functions,
    keywords and numbers left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    return {n for n in _NAME.findall(text) if n.lower() not in _KEYWORDS}


def rules() -> list[dict[str, Any]]:
    """Every rule of the rules file, recording and alerting, in file order."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules() if "alert" in r}


def exposed_names() -> set[str]:
    """The sample names the prediction service exposes on ``/metrics``, as prometheus_client
    writes its families (counters with ``_total``, histograms as buckets, count and sum), and
    Prometheus' own ``up``."""
    from mlsteward.serving.metrics import ServingMetrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    names = {"up"}
    for family in ServingMetrics().registry.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel but the rows, those inside collapsed rows included."""
    found = []
    for panel in dash["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def panel_exprs(dash: dict[str, Any]) -> dict[str, list[str]]:
    """Each panel's title and the PromQL of its queries."""
    return {p["title"]: [t["expr"] for t in p.get("targets", [])] for p in panels(dash)}


def for_model(expr: str, model: str) -> str:
    """A dashboard expression as Grafana sends it with one model chosen."""
    return expr.replace("$model", re.escape(model))


def example_authorization() -> dict[str, Any]:
    """The example configuration's commented ``authorization:`` block, uncommented."""
    lines = EXAMPLE_CONFIG.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# authorization:")
    column = lines[start].index("#")
    block = []
    for line in lines[start:]:
        if not line.strip().startswith("#") or line.index("#") != column:
            break
        block.append(line[column + 2 :])
    authorization: dict[str, Any] = yaml.safe_load("\n".join(block))["authorization"]
    return authorization


def scrape_config(target: str, credentials_file: Path, interval: str = "1s") -> dict[str, Any]:
    """The example configuration pointed at ``target`` with its authorization block on, the
    rules file by its absolute path and every interval ``interval``."""
    config: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config["rule_files"]]
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    job["authorization"] = {**example_authorization(), "credentials_file": str(credentials_file)}
    return config
