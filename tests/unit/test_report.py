"""The model card: its renderers on a hand-built card, its collection on a real MLflow registry
(a temp SQLite store) and the real audit trail."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from mlsteward.audit import Action, AuditError, AuditStore, audit_store
from mlsteward.audit.sqlite_store import sqlite_path
from mlsteward.config import settings
from mlsteward.config.models import get_model_config
from mlsteward.errors import IntegrityError
from mlsteward.governance import mlflow_adapter, registry
from mlsteward.governance import promotion as governance
from mlsteward.governance.gates import ValidationReport
from mlsteward.report import collect
from mlsteward.report.actions import DRIFT_ACTIONS, RETRAIN_ACTIONS, TIMELINE_ACTIONS
from mlsteward.report.collect import collect_model_card, lineage_from_tags, metrics_from_tags
from mlsteward.report.format import fmt_delta, fmt_num, fmt_ts
from mlsteward.report.history import drift_history
from mlsteward.report.model import (
    MAX_DRIFT_ROWS,
    AuditEvent,
    AuditStatus,
    ModelCard,
    VersionSection,
)
from mlsteward.report.render_html import render_html
from mlsteward.report.render_markdown import render_markdown
from mlsteward.report.view import history_table, timeline_items
from mlsteward.report.write import write_card, write_report
from mlsteward.signing import keys
from tests.conftest import REPO_ROOT

EVIL = '<script>alert("owned")</script>'
EVIL_TAG = "<img src=x onerror=alert(1)>"
SHA = "ab" * 32


def lineage_tags(version: int, dirty: bool = False) -> dict[str, str]:
    return {
        "lineage.model": "heart_disease",
        "lineage.data_digest": f"{version:02d}" * 32,
        "lineage.data_path": f"/srv/mlsteward/snapshots/heart_disease/{version:02d}.parquet",
        "lineage.data_source": "data/heart_disease.csv",
        "lineage.feature_service": "heart_disease",
        "lineage.features": '["age", "sex", "chol", "thalach", "oldpeak"]',
        "lineage.training_rows": str(12000 + 1000 * version),
        "lineage.time_range_start": "2024-01-01T00:00:00+00:00",
        "lineage.time_range_end": f"2024-{version + 3:02d}-30T23:59:59+00:00",
        "lineage.split_sizes": '{"test": 1950, "train": 9100, "validation": 1950}',
        "lineage.best_params": '{"learning_rate": 0.0831, "max_depth": 4, "subsample": 0.85}',
        "lineage.seed": "42",
        "lineage.max_evals": "30",
        "lineage.git_commit": f"{version}f3c2a9d" + "0" * 32,
        "lineage.git_dirty": "true" if dirty else "false",
        "lineage.lock_sha256": "cd" * 32,
        "lineage.config_sha256": "ef" * 32,
        "lineage.lib.xgboost": "3.2.0",
        "lineage.lib.mlflow": "3.17.2",
        "lineage.lib.python": "3.11.9",
        "model_artifact_sha256": f"{version}" * 64,
    }


def metrics(auc: float, f1: float) -> dict[str, float]:
    return {
        "roc_auc": auc,
        "pr_auc": auc - 0.05,
        "log_loss": 0.4123 - auc / 10,
        "brier": 0.1487,
        "accuracy": 0.8012,
        "precision": 0.7733,
        "recall": 0.7411,
        "f1": f1,
    }


def fairness_details(ratio: float) -> dict:
    return {
        "min_group_size": 30,
        "attributes": {
            "sex": {
                "attribute": "sex",
                "metrics": {
                    "demographic_parity_difference": 0.1312,
                    "demographic_parity_ratio": ratio,
                    "equal_opportunity_difference": 0.0612,
                    "equalized_odds_difference": 0.0744,
                },
                "groups": [
                    {
                        "group": "female",
                        "size": 612,
                        "positives": 201,
                        "selection_rate": 0.2451,
                        "tpr": 0.7012,
                        "fpr": 0.0833,
                        "roc_auc": 0.8712,
                        "gated": True,
                    },
                    {
                        "group": "male",
                        "size": 1311,
                        "positives": 602,
                        "selection_rate": 0.3763,
                        "tpr": 0.7624,
                        "fpr": 0.1577,
                        "roc_auc": 0.8634,
                        "gated": True,
                    },
                    {
                        "group": EVIL_TAG,
                        "size": 12,
                        "positives": 0,
                        "selection_rate": 0.0833,
                        "tpr": None,
                        "fpr": 0.0833,
                        "roc_auc": None,
                        "gated": False,
                    },
                ],
                "small_groups": [EVIL_TAG],
                "note": "",
                "limits": {
                    "demographic_parity_difference": {"min": None, "max": None},
                    "demographic_parity_ratio": {"min": 0.8, "max": None},
                    "equal_opportunity_difference": {"min": None, "max": 0.1},
                    "equalized_odds_difference": {"min": None, "max": 0.1},
                },
                "checks": {
                    "demographic_parity_difference": None,
                    "demographic_parity_ratio": ratio >= 0.8,
                    "equal_opportunity_difference": True,
                    "equalized_odds_difference": True,
                },
            }
        },
    }


def validation(
    version: str, *, failed: bool, auc: float, champion: str = "2", champion_auc: float = 0.8612
) -> dict:
    thresholds = {
        "name": "metric_thresholds",
        "passed": not failed,
        "violations": [],
        "details": {
            "checks": {
                "roc_auc": {"value": auc, "min": 0.75, "max": None, "passed": not failed},
                "recall": {"value": 0.7411, "min": 0.6, "max": None, "passed": True},
            },
            "metrics": metrics(auc, 0.7568),
        },
        "note": "",
    }
    fairness = {
        "name": "fairness",
        "passed": not failed,
        "violations": [],
        "details": fairness_details(0.6514 if failed else 0.8613),
        "note": "",
    }
    comparison = {
        "name": "champion_comparison",
        "passed": not failed,
        "violations": [],
        "details": {
            "champion_version": champion,
            "primary": {
                "metric": "roc_auc",
                "direction": "higher is better",
                "challenger": auc,
                "champion": champion_auc,
                "delta_mode": "absolute",
                "min_delta": 0.0,
                "improvement": auc - champion_auc,
                "passed": not failed,
            },
            "metrics": {
                "roc_auc": {
                    "challenger": auc,
                    "champion": champion_auc,
                    "delta": auc - champion_auc,
                }
            },
            "fairness": {
                "sex": {
                    "demographic_parity_ratio": {
                        "challenger": 0.6514 if failed else 0.8613,
                        "champion": 0.8402,
                        "delta": -0.1888,
                        "worsening": 0.1888 if failed else -0.0211,
                        "passed": not failed,
                    }
                }
            },
            "fairness_tolerance": 0.02,
        },
        "note": "",
    }
    if failed:
        thresholds["violations"] = [
            {
                "gate": "metric_thresholds",
                "rule": "roc_auc >= 0.75",
                "metric": "roc_auc",
                "value": 0.7412,
                "limit": 0.75,
                "message": "roc_auc 0.7412 is below the floor 0.75",
                "attribute": None,
                "groups": None,
            }
        ]
        fairness["violations"] = [
            {
                "gate": "fairness",
                "rule": "sex: demographic_parity_ratio >= 0.8",
                "metric": "demographic_parity_ratio",
                "value": 0.6514,
                "limit": 0.8,
                "message": "sex: demographic_parity_ratio 0.6514 < 0.8 (selection rate female "
                "0.2451 vs male 0.3763)",
                "attribute": "sex",
                "groups": {"female": {"size": 612}, "male": {"size": 1311}},
            }
        ]
        comparison["violations"] = [
            {
                "gate": "champion_comparison",
                "rule": "roc_auc > champion",
                "metric": "roc_auc",
                "value": 0.7412,
                "limit": 0.8612,
                "message": "roc_auc 0.7412 vs champion v2 0.8612 (higher is better): "
                "improvement -0.12, needs strictly better",
                "attribute": None,
                "groups": None,
            }
        ]
    return {
        "model": "heart_disease",
        "version": version,
        "passed": not failed,
        "created_at": "2025-03-14T09:26:53+00:00",
        "gates": [thresholds, fairness, comparison],
    }


def event(seq: int, action: str, version: str | None, actor: str, reason: str, **details):
    return AuditEvent(
        seq=seq,
        ts=f"2025-03-{seq:02d}T10:{seq:02d}:00.000000Z",
        action=action,
        version=version,
        actor=actor,
        reason=reason,
        details=details,
    )


DRIFT_DIR = "/srv/mlsteward/drift/heart_disease"
SUPPRESSED = "cooldown: last drift-triggered retrain at 2025-03-19T10:19:00+00:00, next allowed"
TRIGGERED_REASON = "2 of 5 features drifted (share 0.40 >= 0.30): chol, thalach"


def drift_event(
    seq: int,
    columns: list[str],
    *,
    retrain: bool,
    reasons: list[str] = (),
    share: float = 0.0,
    prediction: bool | None = False,
    version: str = "2",
    report_path: str | None = None,
) -> AuditEvent:
    """A drift record as ``tasks.monitoring.record_drift`` writes it."""
    return event(
        seq,
        "drift_detected" if columns else "drift_checked",
        version,
        "drift-bot",
        "; ".join(reasons) or f"{len(columns)} drifted column(s), no retrain",
        drifted_columns=list(columns),
        dataset_drift_share=share,
        prediction_drift=prediction,
        decision={"retrain": retrain, "reasons": list(reasons)},
        report=report_path or f"{DRIFT_DIR}/drift-{seq:02d}.html",
        rows={"reference": 1950, "current": 4210},
        sampling={},
        columns={c: 0.01 for c in columns},
    )


def claim_event(seq: int, allowed: bool, reason: str, report_path: str | None) -> AuditEvent:
    """A retrain claim as ``mlsteward.monitoring.retrain.claim_retrain`` writes it (no version)."""
    details = {} if report_path is None else {"report": report_path}
    return event(
        seq,
        "retrain_triggered" if allowed else "retrain_suppressed",
        None,
        "drift-bot",
        reason,
        **details,
        drift_reasons=[reason],
        cooldown_hours=24.0,
        last_trigger=None,
        running=[],
    )


def sample_drift_events() -> list[AuditEvent]:
    """No drift; drift with a triggered retrain; drift on a hostile column, retrain suppressed."""
    return [
        drift_event(17, [], retrain=False, share=0.0),
        drift_event(
            18,
            ["chol", "thalach"],
            retrain=True,
            reasons=[TRIGGERED_REASON],
            share=0.4,
            prediction=True,
        ),
        claim_event(19, True, TRIGGERED_REASON, f"{DRIFT_DIR}/drift-18.html"),
        drift_event(
            20,
            [EVIL_TAG, "oldpeak"],
            retrain=True,
            reasons=[f"key feature(s) drifted: {EVIL_TAG}"],
            share=0.4,
            prediction=None,
        ),
        claim_event(21, False, f"{SUPPRESSED} {EVIL}", f"{DRIFT_DIR}/drift-20.html"),
    ]


def sample_card() -> ModelCard:
    """Champion v2 (restored by a rollback from v3), challenger v4 waiting for approval, v5
    rejected by three gates, v1 and v3 former champions."""
    events = [
        event(1, "version_registered", "1", "ci", "trained on data version 010101010101"),
        event(2, "validation_passed", "1", "ci", "all gates passed"),
        event(3, "promoted", "1", "ci", "auto policy: all gates passed", to="1", **{"from": None}),
        event(4, "version_registered", "2", "ci", "trained on data version 020202020202"),
        event(5, "validation_passed", "2", "ci", "all gates passed"),
        event(6, "approval_requested", "2", "ci", "policy manual", timeout_seconds=86400),
        event(7, "approval_granted", "2", "alice", "reviewed the fairness tables"),
        event(
            8,
            "promoted",
            "2",
            "alice",
            "reviewed the fairness tables",
            to="2",
            approval={"approver": "alice", "channel": "cli"},
            **{"from": "1"},
        ),
        event(9, "validation_passed", "3", "ci", "all gates passed"),
        event(10, "approval_granted", "3", "bob", "looks good"),
        event(11, "promoted", "3", "bob", "looks good", to="3", **{"from": "2"}),
        event(
            12,
            "rollback",
            "2",
            "carol",
            f"AUC dropped in production {EVIL}",
            to="2",
            **{"from": "3"},
        ),
        event(
            13,
            "integrity_failed",
            "1",
            "carol",
            "rollback refused: model artifact SHA-256 does not match",
            expected_sha256="1" * 64,
        ),
        event(14, "validation_passed", "4", "ci", "all gates passed"),
        event(15, "approval_requested", "4", "ci", "policy manual", timeout_seconds=86400),
        event(16, "validation_failed", "5", "ci", "roc_auc 0.7412 is below the floor 0.75"),
    ]

    def section(v: str, roles: list[str], lifecycle: str, status: str, **kw) -> VersionSection:
        return VersionSection(
            version=v,
            roles=roles,
            lifecycle=lifecycle,
            validation_status=status,
            run_id=f"{v}a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7",
            created_at=f"2025-03-{int(v) * 3:02d}T08:00:00+00:00",
            lineage=lineage_from_tags(lineage_tags(int(v), dirty=v == "5")),
            history=[e for e in events if e.version == v],
            **kw,
        )

    champion_metrics = metrics(0.8612, 0.7402)
    challenger_metrics = metrics(0.8731, 0.7568)
    sections = [
        section(
            "2",
            ["champion"],
            "champion",
            "passed",
            promoted_at="2025-03-12T10:12:00+00:00",
            promoted_by="carol",
            metrics=champion_metrics,
            validation=validation("2", failed=False, auc=0.8612, champion="1", champion_auc=0.8421),
        ),
        section(
            "4",
            ["challenger"],
            "challenger",
            "passed",
            metrics=challenger_metrics,
            validation=validation("4", failed=False, auc=0.8731),
        ),
        section(
            "5",
            ["latest"],
            "rejected",
            "failed",
            metrics=metrics(0.7412, 0.6021),
            validation=validation("5", failed=True, auc=0.7412),
        ),
        section(
            "3",
            ["former champion"],
            "retired",
            "passed",
            metrics=metrics(0.8655, 0.7431),
            retired_at="2025-03-12T10:12:00+00:00",
            validation_uri="runs:/3a2b/validation/validation-v3.json",
            validation_error="OSError: artifact store unreachable",
        ),
        section("1", ["former champion"], "retired", "passed", metrics=metrics(0.8421, 0.7210)),
    ]
    history = [
        {
            "seq": e.seq,
            "ts": e.ts,
            "action": e.action,
            "from": e.details.get("from"),
            "to": e.details.get("to"),
            "actor": e.actor,
            "reason": e.reason,
        }
        for e in events
        if e.action in ("promoted", "rollback")
    ]
    return ModelCard(
        model="heart_disease",
        description=f"Predicts heart disease from clinical measurements. {EVIL}",
        owner=f"risk-analytics {EVIL_TAG}",
        generated_at="2025-03-20T12:00:00+00:00",
        champion={
            "name": "heart_disease",
            "version": "2",
            "lifecycle": "champion",
            "validation_status": "passed",
            "aliases": ["champion"],
            "run_id": "2a2b",
            "artifact_sha256": "2" * 64,
            "created_at_ms": 0,
            "metrics": champion_metrics,
            "promoted_at": "2025-03-12T10:12:00+00:00",
            "validated_against_champion": "1",
        },
        challenger={
            "name": "heart_disease",
            "version": "4",
            "lifecycle": "challenger",
            "validation_status": "passed",
            "aliases": ["challenger"],
            "run_id": "4a2b",
            "artifact_sha256": "4" * 64,
            "created_at_ms": 0,
            "metrics": challenger_metrics,
            "promoted_at": None,
            "validated_against_champion": "2",
        },
        primary_metric="roc_auc",
        previous_champion="1",
        versions=[
            {
                "version": str(v),
                "lifecycle": lc,
                "validation_status": st,
                "created_at": f"2025-03-{v * 3:02d}T08:00:00+00:00",
                "metrics": metrics(auc, 0.7),
                "artifact_sha256": f"{v}" * 64,
            }
            for v, lc, st, auc in [
                (1, "retired", "passed", 0.8421),
                (2, "champion", "passed", 0.8612),
                (3, "retired", "passed", 0.8655),
                (4, "challenger", "passed", 0.8731),
                (5, "rejected", "failed", 0.7412),
            ]
        ],
        sections=sections,
        champion_history=history,
        timeline=[e for e in events if e.action in TIMELINE_ACTIONS],
        drift=drift_history(sample_drift_events()),
        audit=AuditStatus(ok=True, records=128, head_hash="9f" * 32),
        warnings=[
            "v3: validation report runs:/3a2b/validation/validation-v3.json could not be read"
        ],
    )


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return sample_card()


@pytest.fixture(scope="module")
def html(card: ModelCard) -> str:
    return render_html(card)


@pytest.fixture(scope="module")
def md(card: ModelCard) -> str:
    return render_markdown(card)


class _Tags(HTMLParser):
    """Every start tag with its attributes, to inspect the HTML structurally."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    return p


# -- formatting ------------------------------------------------------------------------------


def test_number_and_time_formatting() -> None:
    assert fmt_num(0.87312) == "0.8731"
    assert fmt_num(12345) == "12,345"
    assert fmt_num(None) == "n/a"
    assert fmt_num(float("nan")) == "n/a"
    assert fmt_num(True) == "yes"
    assert fmt_num(0.0) == "0"
    assert fmt_delta(0.0119) == "+0.0119"
    assert fmt_delta(-0.12) == "\u22120.1200"
    assert fmt_ts("2025-01-31T14:05:09.123456Z") == "2025-01-31 14:05:09 UTC"
    assert fmt_ts("2025-01-31T15:05:09+01:00") == "2025-01-31 14:05:09 UTC"
    assert fmt_ts(None) == "n/a"


def test_lineage_and_metrics_are_parsed_from_tags() -> None:
    tags = lineage_tags(3, dirty=True) | {"test_roc_auc": "0.8655", "test_bad": "x"}
    lin = lineage_from_tags(tags)
    assert lin["features"] == ["age", "sex", "chol", "thalach", "oldpeak"]
    assert lin["training_rows"] == 15000
    assert lin["params"]["max_depth"] == 4
    assert lin["time_range"][0] == "2024-01-01T00:00:00+00:00"
    assert lin["libraries"] == {"mlflow": "3.17.2", "python": "3.11.9", "xgboost": "3.2.0"}
    assert lin["artifact_sha256"] == "3" * 64
    assert lin["git_dirty"] == "true"
    assert metrics_from_tags(tags) == {"roc_auc": 0.8655}
    assert lineage_from_tags({})["data_digest"] is None


# -- HTML ------------------------------------------------------------------------------------


def test_html_has_every_section(html: str, card: ModelCard) -> None:
    ids = {attrs.get("id") for _, attrs in parse(html).tags}
    assert {"summary", "metrics", "drift", "timeline", "audit", "v2", "v4", "v5", "v3", "v1"} <= ids
    for heading in (
        "Holdout metrics: champion vs challenger",
        "Drift and retraining",
        "Timeline: promotions, rollbacks, approvals",
        "Audit chain",
        "Lineage",
        "History",
        "Validation",
        "Groups of sex",
        "Fairness vs champion",
    ):
        assert heading in html, heading
    # sections appear in the order champion, challenger, latest, former champions
    order = [html.index(f'id="v{v}"') for v in ("2", "4", "5", "3", "1")]
    assert order == sorted(order)


def test_html_header_badges_and_summary(html: str) -> None:
    assert '<span class="badge ok"><small>Champion</small>v2</span>' in html
    assert '<span class="badge info"><small>Challenger</small>v4</span>' in html
    assert "<small>Audit chain</small>intact" in html
    assert "intact (128 records)" in html
    assert "1 rollback(s)" in html and "3 promotion(s)" in html


def test_html_metrics_are_formatted(html: str) -> None:
    assert "0.8612" in html and "0.8731" in html
    # challenger - champion on roc_auc, better -> green
    assert '<td class="num ok">+0.0119</td>' in html
    # log_loss is lower-is-better: the challenger's lower value is an improvement
    assert '<td class="num ok">\u22120.0012</td>' in html
    assert "roc_auc (primary)" in html
    assert "13,000" in html  # training rows of v1 with a thousands separator
    assert not re.search(r"\d\.\d{5,}", html), "a number was rendered with too many digits"


def test_html_failed_gates_and_violations_are_highlighted(html: str) -> None:
    v5 = html[html.index('id="v5"') : html.index('id="v3"')]
    assert "Rejected: failed 3 of 3 gate(s)" in v5
    assert '<div class="violations">' in v5
    assert "roc_auc 0.7412 is below the floor 0.75" in v5
    assert '<span class="rule">sex: demographic_parity_ratio &gt;= 0.8</span>' in v5
    assert v5.count('<tr class="fail">') >= 4
    assert '<span class="pill bad">FAIL</span>' in v5
    v4 = html[html.index('id="v4"') : html.index('id="v5"')]
    assert "Passed all 3 gate(s)" in v4 and '<div class="violations">' not in v4


def test_html_fairness_group_table(html: str) -> None:
    v2 = html[html.index('id="v2"') : html.index('id="v4"')]
    for col in ("group", "n", "selection rate", "TPR", "FPR", "ROC-AUC"):
        assert f">{col}</th>" in v2
    assert "0.2451" in v2 and "1,311" in v2
    assert '<tr class="small">' in v2
    assert "no: small group" in v2
    assert "groups of at least 30 rows enter the fairness metrics" in v2


def test_html_lineage_history_timeline_and_audit(html: str) -> None:
    v5 = html[html.index('id="v5"') : html.index('id="v3"')]
    assert "05" * 32 in v5  # full data digest
    assert "/srv/mlsteward/snapshots/heart_disease/05.parquet" in v5
    assert "(uncommitted changes)" in v5
    assert "learning_rate=0.0831, max_depth=4, subsample=0.85" in v5
    assert "cd" * 32 in v5 and "5" * 64 in v5
    assert "xgboost=3.2.0" in v5
    v3 = html[html.index('id="v3"') : html.index('id="v1"')]
    assert "Validation report could not be read" in v3
    timeline = html[html.index('id="timeline"') : html.index('id="audit"')]
    assert "Rolled back: v3 → v2" in timeline and "by carol" in timeline
    assert "Promoted: v1 → v2" in timeline and "approved by alice (cli)" in timeline
    assert "Integrity check failed: v1" in timeline
    assert '<li class="bad">' in timeline and '<li class="warn">' in timeline
    assert "validation" not in timeline.lower()  # validation decisions live in the versions
    audit = html[html.index('id="audit"') :]
    assert "9f" * 32 in audit and "Hash chain intact: 128 records verified." in audit


def test_html_escapes_user_text(html: str) -> None:
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()
    assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert not any(tag in ("script", "img") for tag, _ in parse(html).tags)


def test_html_is_self_contained(html: str) -> None:
    tags = parse(html).tags
    for tag, attrs in tags:
        for name in ("src", "href", "srcset", "action", "data"):
            value = attrs.get(name)
            assert value is None or value.startswith("#"), (tag, name, value)
    assert not any(tag in ("script", "link", "iframe", "object", "embed") for tag, _ in tags)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", html, re.I)
    assert "@import" not in html and "url(" not in html
    assert html.lstrip().startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    # every in-page link points at an element of the page
    ids = {attrs["id"] for _, attrs in tags if "id" in attrs}
    links = [attrs["href"][1:] for tag, attrs in tags if tag == "a"]
    assert links and set(links) <= ids


def test_html_without_champion_or_audit_check() -> None:
    card = sample_card()
    card.champion = card.challenger = None
    card.sections = []
    card.timeline = []
    card.audit = AuditStatus(ok=False, records=7, first_bad_seq=8, problem="record #8 altered")
    out = render_html(card)
    assert "No champion or challenger yet." in out
    assert "No promotions, rollbacks or approvals yet." in out
    assert "Hash chain BROKEN" in out and "record #8 altered" in out and "#8" in out
    assert '<span class="badge bad"><small>Audit chain</small>BROKEN</span>' in out
    assert '<span class="badge none"><small>Champion</small>none</span>' in out


# -- markdown --------------------------------------------------------------------------------


def _md_tables(md: str) -> list[list[str]]:
    tables, current = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def _cells(line: str) -> int:
    return len(re.split(r"(?<!\\)\|", line.strip())) - 2


def test_markdown_has_every_section(md: str) -> None:
    for heading in (
        "# Model card: heart_disease",
        "## Summary",
        "### Registered versions",
        "## Metrics: champion vs challenger",
        "## Version 2 (champion)",
        "## Version 4 (challenger)",
        "## Version 5 (latest)",
        "## Version 3 (former champion)",
        "## Version 1 (former champion)",
        "### Lineage",
        "### History",
        "#### Groups of sex",
        "## Drift and retraining",
        "## Timeline",
        "## Audit chain",
    ):
        assert f"\n{heading}\n" in f"\n{md}", heading
    assert "champion **v2** · challenger **v4**" in md
    assert "**Rejected: failed 3 of 3 gate(s)" in md
    assert "- **roc_auc &gt;= 0.75**: roc_auc 0.7412 is below the floor 0.75" in md
    assert "| **Rolled back: v3 → v2** |" not in md  # a rollback is a warning, not a failure
    assert "| Rolled back: v3 → v2 | carol |" in md
    assert "| **Integrity check failed: v1** |" in md
    assert "`" + "9f" * 32 + "`" in md


def test_markdown_tables_are_well_formed(md: str) -> None:
    tables = _md_tables(md)
    assert len(tables) > 20
    for t in tables:
        assert len(t) >= 2, t
        width = _cells(t[0])
        assert re.fullmatch(r"\|( ?-{3,}:? \|)+", t[1].replace("---:", "---:")), t[1]
        assert all(_cells(row) == width for row in t), t


def test_markdown_numbers_and_escaping(md: str) -> None:
    assert "| roc_auc (primary) | 0.8612 | 0.8731 | +0.0119 |" in md
    assert "| female | 612 | 201 | 0.2451 | 0.7012 | 0.0833 | 0.8712 | yes |" in md
    assert "&lt;img src=x onerror=alert(1)&gt; †" in md  # small group, marked
    assert "† small group: reported, not gated." in md
    assert "<script" not in md and "<img" not in md
    assert "&lt;script&gt;" in md


def test_markdown_escapes_pipes_in_cells() -> None:
    card = sample_card()
    card.owner = "team a | team b"
    md = render_markdown(card)
    assert "team a \\| team b" in md
    for t in _md_tables(md):
        assert all(_cells(row) == _cells(t[0]) for row in t)


# -- writing ---------------------------------------------------------------------------------


def test_write_card_writes_both_files(tmp_path: Path, card: ModelCard) -> None:
    out = write_card(card, tmp_path / "out")
    assert Path(out["html"]) == tmp_path / "out" / "heart_disease-model-card.html"
    assert Path(out["markdown"]).read_text(encoding="utf-8") == render_markdown(card)
    assert Path(out["html"]).read_text(encoding="utf-8") == render_html(card)
    assert out["champion"] == "2" and out["challenger"] == "4"
    assert out["versions"] == ["2", "4", "5", "3", "1"] and out["audit_ok"] is True


def test_write_card_defaults_to_home_reports(mlsteward_home: Path, card: ModelCard) -> None:
    out = write_card(card)
    assert Path(out["html"]).parent == mlsteward_home.resolve() / "reports"
    assert Path(out["html"]).exists() and Path(out["markdown"]).exists()


# -- collecting (a real MLflow registry on a temp SQLite store, the real audit store) --------

MODEL = "heart_disease"


@dataclass(frozen=True)
class RegistryState:
    """What the module's registry and audit trail hold once :func:`built_registry` built them."""

    tracking_uri: str
    audit_url: str
    run_ids: dict[str, str]
    created_at_ms: dict[str, int]
    reports: dict[str, dict]
    records: int
    head_hash: str
    signing_key: str  # the governance key its versions and promotions were signed with


def _tiny_model() -> tuple[xgb.XGBClassifier, pd.DataFrame]:
    """Two stumps on 40 rows: a real XGBoost artifact to register, hash and verify."""
    rng = np.random.default_rng(7)
    x = pd.DataFrame(
        {
            "age": rng.integers(20, 80, 40).astype("float32"),
            "chol": rng.normal(200, 30, 40).astype("float32"),
        }
    )
    y = (x["age"] > 50).astype("int64")
    return xgb.XGBClassifier(n_estimators=2, max_depth=1, n_jobs=1).fit(x, y), x.head(2)


def _register(
    store: AuditStore, version: int, model: xgb.XGBClassifier, example: pd.DataFrame
) -> mlflow_adapter.RegisteredVersion:
    """A training run with the lineage and ``test_*`` tags the card reads, its model logged and
    registered, and the ``version_registered`` record the training flow writes."""
    run_id = mlflow_adapter.start_run(MODEL, f"train-v{version}", {})
    tags = {k: v for k, v in lineage_tags(version).items() if k != "model_artifact_sha256"}
    tags |= {f"test_{k}": v for k, v in metrics(0.86, 0.74).items()}
    tags["lifecycle"] = "candidate"
    registered = mlflow_adapter.log_and_register(run_id, model, example, MODEL, ["xgboost"], tags)
    mlflow_adapter.end_run(run_id)
    assert registered.version == str(version)
    store.append(
        Action.VERSION_REGISTERED,
        model=MODEL,
        version=registered.version,
        actor="ci",
        reason=f"trained on data version {f'{version:02d}' * 6}",
        details={"run_id": run_id, "artifact_sha256": registered.artifact_sha256},
    )
    return registered


def _validate(store: AuditStore, version: str, report: dict, champion: str | None) -> dict:
    """Governance stores the report as a JSON artifact of the run and tags the version."""
    stored = ValidationReport.from_dict(report)
    governance.record_validation(
        get_model_config(MODEL), version, stored, actor="ci", champion_version=champion, store=store
    )
    return stored.to_dict()


def _artifact_dir(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def _build_registry(store: AuditStore) -> tuple[dict[str, str], dict[str, dict]]:
    """Champion v2 (restored by a rollback from v3; a rollback to v1 refused by the integrity
    check), challenger v4 waiting for approval, v5 rejected by its gates, v6 a new candidate;
    the stored validation reports of v1 and v3 lost from the artifact store."""
    cfg = get_model_config(MODEL)
    model, example = _tiny_model()
    versions = {v: _register(store, v, model, example) for v in (1, 2, 3)}
    reports = {"1": _validate(store, "1", validation("1", failed=False, auc=0.8421), None)}
    governance.promote(cfg, "1", actor="ci", reason="auto policy: all gates passed", store=store)

    reports["2"] = _validate(store, "2", validation("2", failed=False, auc=0.8612), "1")
    store.append(
        Action.APPROVAL_REQUESTED,
        model=MODEL,
        version="2",
        actor="ci",
        reason="policy manual",
        details={"timeout_seconds": 86400},
    )
    store.append(
        Action.APPROVAL_GRANTED,
        model=MODEL,
        version="2",
        actor="alice",
        reason="reviewed the fairness tables",
    )
    governance.promote(
        cfg,
        "2",
        actor="alice",
        reason="reviewed the fairness tables",
        approval={"approver": "alice", "channel": "cli"},
        store=store,
    )
    reports["3"] = _validate(store, "3", validation("3", failed=False, auc=0.8655), "2")
    store.append(
        Action.APPROVAL_GRANTED, model=MODEL, version="3", actor="bob", reason="looks good"
    )
    governance.promote(cfg, "3", actor="bob", reason="looks good", store=store)
    governance.rollback(cfg, reason=f"AUC dropped in production {EVIL}", actor="carol", store=store)

    # v1's stored model changes on disk: rolling back to it is refused (and audited)
    logged = mlflow_adapter.client().get_logged_model(
        versions[1].artifact_uri.removeprefix("models:/")
    )
    with (_artifact_dir(logged.artifact_location) / mlflow_adapter.MODEL_FILE).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(IntegrityError):
        governance.rollback(cfg, reason="back to v1", actor="carol", to_version="1", store=store)

    versions[4] = _register(store, 4, model, example)
    reports["4"] = _validate(store, "4", validation("4", failed=False, auc=0.8731), "2")
    store.append(
        Action.APPROVAL_REQUESTED,
        model=MODEL,
        version="4",
        actor="ci",
        reason="policy manual",
        details={"timeout_seconds": 86400},
    )
    versions[5] = _register(store, 5, model, example)
    reports["5"] = _validate(store, "5", validation("5", failed=True, auc=0.7412), "2")
    versions[6] = _register(store, 6, model, example)
    store.append(Action.INGESTION_ACCEPTED, model=MODEL, actor="ci", reason="rows ok")

    for v in ("1", "3"):  # the artifact store lost these two reports
        run = mlflow_adapter.client().get_run(versions[int(v)].run_id)
        (_artifact_dir(run.info.artifact_uri) / "validation" / f"validation-v{v}.json").unlink()
    return {str(v): r.run_id for v, r in versions.items()}, reports


@pytest.fixture(scope="module")
def built_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryState]:
    """Built once for the module (the SQLite store's schema alone takes seconds), in a home of
    its own; tests read it through :func:`registry_state`, or change a copy (:func:`audit_copy`)."""
    home = tmp_path_factory.mktemp("registry_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLSTEWARD_HOME", str(home))
        mp.setenv("MLSTEWARD_PROJECT_ROOT", str(REPO_ROOT))
        for name in (
            "MLFLOW_TRACKING_URI",
            "MLSTEWARD_AUDIT_URL",
            "MLSTEWARD_PROFILE",
            "MLSTEWARD_CONFIG_DIR",
        ):
            mp.delenv(name, raising=False)
        store = audit_store()
        try:
            run_ids, reports = _build_registry(store)
            check = store.verify()
        finally:
            store.close()
        assert check.ok and check.head_hash
        created = {v.version: v.created_at_ms for v in registry.list_versions(MODEL)}
        yield RegistryState(
            tracking_uri=settings.mlflow_tracking_uri(),
            audit_url=settings.audit_url(),
            run_ids=run_ids,
            created_at_ms=created,
            reports=reports,
            records=check.records,
            head_hash=check.head_hash,
            signing_key=str(keys.private_key_path()),
        )


@pytest.fixture
def registry_state(built_registry: RegistryState, monkeypatch: pytest.MonkeyPatch) -> RegistryState:
    """The module's registry and audit trail, read from this test's own MLSTEWARD_HOME."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", built_registry.tracking_uri)
    monkeypatch.setenv("MLSTEWARD_AUDIT_URL", built_registry.audit_url)
    monkeypatch.setenv("MLSTEWARD_SIGNING_KEY", built_registry.signing_key)
    return built_registry


@pytest.fixture
def audit_copy(
    registry_state: RegistryState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A copy of the module's audit trail (SQLite's backup API) that a test may change."""
    copy = tmp_path / "audit-copy" / "audit.db"
    copy.parent.mkdir()
    with (
        closing(sqlite3.connect(sqlite_path(registry_state.audit_url))) as src,
        closing(sqlite3.connect(copy)) as dst,
    ):
        src.backup(dst)
    monkeypatch.setenv("MLSTEWARD_AUDIT_URL", f"sqlite:///{copy}")
    return copy


@pytest.fixture
def opened_stores(monkeypatch: pytest.MonkeyPatch) -> list[AuditStore]:
    """The real audit stores collection opens, kept to check that each was closed."""
    opened: list[AuditStore] = []

    def keep(url: str | None = None) -> AuditStore:
        store = audit_store(url)
        opened.append(store)
        return store

    monkeypatch.setattr(collect, "audit_store", keep)
    return opened


def assert_closed(stores: list[AuditStore]) -> None:
    assert stores
    for store in stores:
        with pytest.raises(AuditError, match="closed"):
            store.query(model=MODEL)


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def test_collect_model_card_reads_registry_and_audit(
    registry_state: RegistryState, opened_stores: list[AuditStore]
) -> None:
    card = collect_model_card(MODEL)
    assert card.owner == "cardiology-ml" and card.description.startswith("Probability")
    assert card.champion_version == "2" and card.challenger_version == "4"
    assert card.previous_champion == "1"
    # champion, challenger, newest version, then former champions newest first
    assert [(s.version, s.roles) for s in card.sections] == [
        ("2", ["champion"]),
        ("4", ["challenger"]),
        ("6", ["latest"]),
        ("3", ["former champion"]),
        ("1", ["former champion"]),
    ]
    assert [s.lifecycle for s in card.sections] == [
        "champion",
        "challenger",
        "candidate",
        "retired",
        "retired",
    ]
    v2 = card.sections[0]
    # the report stored on v2's run, read back through its runs:/ URI
    assert v2.validation_uri == f"runs:/{registry_state.run_ids['2']}/validation/validation-v2.json"
    assert v2.validation == registry_state.reports["2"] and v2.validation["version"] == "2"
    assert v2.lineage["training_rows"] == 14000 and v2.metrics["roc_auc"] == 0.86
    assert v2.promoted_by == "carol" and v2.retired_at is None
    assert [e.action for e in v2.history] == [
        "version_registered",
        "validation_passed",
        "approval_requested",
        "approval_granted",
        "promoted",
        "rollback",
    ]
    assert card.sections[1].history[-1].action == "approval_requested"  # no alias_changed
    v6 = card.sections[2]
    assert v6.validation is None and v6.validation_error is None and v6.validation_uri is None
    # v1's and v3's stored reports are gone from the artifact store: noted, not fatal
    v3, v1 = card.sections[3:]
    for v in (v1, v3):
        assert v.validation is None and v.validation_status == "passed"
        assert f"validation-v{v.version}.json" in (v.validation_error or "")
    assert any(w.startswith("v3: validation report runs:/") for w in card.warnings)
    assert any(w.startswith("v1: validation report runs:/") for w in card.warnings)
    assert [(h["action"], h["from"], h["to"]) for h in card.champion_history] == [
        ("promoted", None, "1"),
        ("promoted", "1", "2"),
        ("promoted", "2", "3"),
        ("rollback", "3", "2"),
    ]
    assert {e.action for e in card.timeline} <= set(TIMELINE_ACTIONS)
    assert "ingestion_accepted" not in {e.action for e in card.timeline}
    assert len(card.timeline) == 9
    refused = card.timeline[-2]
    assert refused.action == "integrity_failed" and refused.version == "1"
    assert refused.reason.startswith("rollback refused: ")
    assert card.audit == AuditStatus(
        ok=True, records=registry_state.records, head_hash=registry_state.head_hash
    )
    assert [v["version"] for v in card.versions] == ["1", "2", "3", "4", "5", "6"]
    assert card.versions[0]["created_at"] == iso_ms(registry_state.created_at_ms["1"])
    assert [v["lifecycle"] for v in card.versions][3:] == ["challenger", "rejected", "candidate"]
    assert_closed(opened_stores)


def test_collect_reports_an_edited_audit_record(
    audit_copy: Path, opened_stores: list[AuditStore]
) -> None:
    """An audit record changed in the file, outside the store: the chain check names it."""
    with closing(sqlite3.connect(audit_copy)) as db:
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("UPDATE audit SET reason = 'approved by nobody' WHERE seq = 5")
        db.commit()
    card = collect_model_card(MODEL)
    assert card.audit.ok is False and card.audit.first_bad_seq == 5
    assert "record 5 was edited" in (card.audit.problem or "")
    assert_closed(opened_stores)
    md = render_markdown(card)
    assert "audit chain **BROKEN: record 5 was edited" in md
    assert "| **First bad record** | **#5** |" in md


def test_collect_survives_a_failed_chain_check(
    audit_copy: Path, opened_stores: list[AuditStore]
) -> None:
    """A chain check that cannot run at all (here a record of another model rewritten with a
    binary value, which cannot even be hashed) leaves the card written, saying so."""
    store = audit_store()
    try:
        other = store.append(Action.INGESTION_ACCEPTED, model="other_model", actor="ci")
    finally:
        store.close()
    with closing(sqlite3.connect(audit_copy)) as db:
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("UPDATE audit SET reason = ? WHERE seq = ?", (b"\x00\xff", other.seq))
        db.commit()
    card = collect_model_card(MODEL)
    assert card.audit.ok is None and "TypeError" in (card.audit.problem or "")
    assert any(w.startswith("audit chain could not be verified") for w in card.warnings)
    assert card.champion_version == "2" and len(card.timeline) == 9  # the rest still read
    assert_closed(opened_stores)
    assert "not verified: TypeError: Object of type bytes" in render_markdown(card)


def test_write_report_writes_into_home(registry_state: RegistryState, mlsteward_home: Path) -> None:
    out = write_report(MODEL)
    html_path = Path(out["html"])
    assert html_path == mlsteward_home.resolve() / "reports" / "heart_disease-model-card.html"
    assert out["champion"] == "2" and out["challenger"] == "4"
    assert out["versions"] == ["2", "4", "6", "3", "1"] and out["audit_ok"] is True
    text = html_path.read_text(encoding="utf-8")
    assert "cardiology-ml" in text and 'id="v6"' in text
    assert (
        Path(out["markdown"]).read_text(encoding="utf-8").startswith("# Model card: heart_disease")
    )


# -- drift history ---------------------------------------------------------------------------


def html_drift_rows(html: str) -> list[str]:
    """The body rows of the HTML drift table, in page order."""
    section = html[html.index('id="drift"') : html.index('id="timeline"')]
    return [r for r in re.findall(r"<tr[^>]*>(.*?)</tr>", section, re.S) if "<td" in r]


def md_drift_rows(md: str) -> list[str]:
    section = md[md.index("## Drift and retraining") : md.index("## Timeline")]
    return [line for line in section.splitlines() if line.startswith("| ")][2:]


def row_with(rows: list[str], needle: str) -> str:
    found = [r for r in rows if needle in r]
    assert len(found) == 1, (needle, rows)
    return found[0]


def test_drift_history_pairs_each_check_with_its_retrain_claim(card: ModelCard) -> None:
    assert [c.seq for c in card.drift] == [20, 18, 17]  # newest first, claims not rows
    suppressed, triggered, quiet = card.drift
    assert triggered.outcome is not None and triggered.outcome.seq == 19
    assert triggered.outcome_label == "triggered"
    assert triggered.drifted_columns == ["chol", "thalach"] and triggered.retrain is True
    assert suppressed.outcome is not None and suppressed.outcome_label == "suppressed"
    assert suppressed.outcome.reason.startswith(SUPPRESSED)
    assert quiet.outcome is None and quiet.drifted_columns == [] and quiet.retrain is False
    assert triggered.rows == {"reference": 1950, "current": 4210}


def test_drift_claims_of_interleaved_runs_are_matched_by_report() -> None:
    events = [
        drift_event(1, ["chol"], retrain=True, reasons=["a"], report_path="/r/a.html"),
        drift_event(2, ["age"], retrain=True, reasons=["b"], report_path="/r/b.html"),
        claim_event(3, True, "a", "/r/a.html"),  # check 1's claim, after check 2
        claim_event(4, False, "a retrain is already running", "/r/b.html"),
        drift_event(5, [], retrain=False),
        drift_event(6, ["sex"], retrain=True, reasons=["c"]),
        drift_event(7, [], retrain=False),
        claim_event(8, True, "c", None),  # no report named: the latest check that asked
        claim_event(9, False, "orphan", None),  # nothing left waiting: dropped
        drift_event(10, ["age"], retrain=True, reasons=["d"], report_path="/r/d.html"),
        claim_event(11, True, "d", None),
        claim_event(12, False, "again", "/r/d.html"),  # a check keeps its first claim
    ]
    by_seq = {c.seq: c for c in drift_history(events)}
    assert by_seq[1].outcome_label == "triggered" and by_seq[1].outcome.seq == 3
    assert by_seq[2].outcome_label == "suppressed" and by_seq[2].outcome.seq == 4
    assert by_seq[6].outcome is not None and by_seq[6].outcome.seq == 8
    assert by_seq[5].outcome is None and by_seq[7].outcome is None
    assert all(c.outcome is None or c.outcome.seq != 9 for c in by_seq.values())
    assert by_seq[10].outcome is not None and by_seq[10].outcome.seq == 11


def test_html_drift_row_with_triggered_retrain(html: str) -> None:
    rows = html_drift_rows(html)
    assert len(rows) == 3
    row = row_with(rows, "drift-18.html")
    assert "2025-03-18 10:18:00 UTC" in row
    assert '<td class="key">v2</td>' in row
    assert "<td>chol, thalach</td>" in row
    assert '<td class="num">0.4000</td>' in row
    assert '<span class="pill warn">drifted</span>' in row  # prediction drift
    assert f"retrain: {TRIGGERED_REASON.replace('>', '&gt;')}" in row
    assert '<span class="pill info">triggered</span>' in row
    assert f'<td class="code">{DRIFT_DIR}/drift-18.html</td>' in row
    # newest first
    assert [rows.index(row_with(rows, f"drift-{n}.html")) for n in (20, 18, 17)] == [0, 1, 2]


def test_html_drift_row_with_suppressed_retrain(html: str) -> None:
    row = row_with(html_drift_rows(html), "drift-20.html")
    assert f'<span class="pill warn">suppressed: {SUPPRESSED}' in row
    assert "triggered</span>" not in row
    assert '<td class="muted">n/a</td>' in row  # prediction drift not measured


def test_html_drift_row_without_drift(html: str) -> None:
    row = row_with(html_drift_rows(html), "drift-17.html")
    assert '<td class="muted">none</td>' in row
    assert '<td class="muted">no retrain</td>' in row
    assert '<td class="muted">—</td>' in row  # no retrain claim
    assert '<td class="num">0</td>' in row


def test_drift_history_escapes_hostile_text(html: str, md: str) -> None:
    rows = html_drift_rows(html)
    row = row_with(rows, "drift-20.html")
    assert "<td>&lt;img src=x onerror=alert(1)&gt;, oldpeak</td>" in row
    assert "key feature(s) drifted: &lt;img src=x onerror=alert(1)&gt;" in row
    assert "&lt;script&gt;alert(&#34;owned&#34;)&lt;/script&gt;" in row  # suppression reason
    assert not any("<img" in r or "<script" in r for r in rows)
    md_row = row_with(md_drift_rows(md), "drift-20.html")
    assert "&lt;img src=x onerror=alert(1)&gt;, oldpeak" in md_row
    assert f"suppressed: {SUPPRESSED} &lt;script&gt;" in md_row
    assert "<img" not in md_row and "<script" not in md_row


def test_drift_markdown_escapes_pipes_in_column_names() -> None:
    card = sample_card()
    card.drift = drift_history(
        [drift_event(1, ["a|b", "c"], retrain=True, reasons=["key feature(s) drifted: a|b"])]
    )
    (row,) = md_drift_rows(render_markdown(card))
    assert "a\\|b, c" in row and "retrain: key feature(s) drifted: a\\|b" in row
    assert _cells(row) == 8


def test_markdown_drift_rows(md: str) -> None:
    rows = md_drift_rows(md)
    assert len(rows) == 3
    triggered = row_with(rows, "drift-18.html")
    assert "| v2 | chol, thalach | 0.4000 | drifted |" in triggered
    assert "| triggered |" in triggered and f"`{DRIFT_DIR}/drift-18.html`" in triggered
    assert "| none | 0 | no | no retrain | — |" in row_with(rows, "drift-17.html")


def test_drift_history_empty_message() -> None:
    card = sample_card()
    assert "No drift checks have run yet." not in render_html(card)
    card.drift = []
    out = render_html(card)
    section = out[out.index('id="drift"') : out.index('id="timeline"')]
    assert "No drift checks have run yet." in section and "<table" not in section
    md = render_markdown(card)
    assert "## Drift and retraining\n\nNo drift checks have run yet." in md


def test_drift_history_is_capped(tmp_path: Path) -> None:
    card = sample_card()
    total = MAX_DRIFT_ROWS + 10
    card.drift = drift_history(
        [
            AuditEvent(
                seq=i,
                ts=f"2025-04-01T{i // 60:02d}:{i % 60:02d}:00Z",
                action="drift_checked",
                version="2",
                actor="drift-bot",
                reason="0 drifted column(s), no retrain",
                details={"report": f"/r/check-{i:03d}.html", "decision": {"retrain": False}},
            )
            for i in range(1, total + 1)
        ]
    )
    rows = html_drift_rows(render_html(card))
    assert len(rows) == MAX_DRIFT_ROWS
    assert f"/r/check-{total:03d}.html" in rows[0]  # the newest is kept
    assert f"/r/check-{11:03d}.html" in rows[-1]
    assert not any("/r/check-010.html" in r for r in rows)  # the oldest are left out
    note = f"Showing the latest {MAX_DRIFT_ROWS} of {total} checks; 10 older check(s)"
    assert note in render_html(card) and note in render_markdown(card)
    assert len(md_drift_rows(render_markdown(card))) == MAX_DRIFT_ROWS
    out = write_card(card, tmp_path)
    assert out["drift_checks"] == total and len(out["drift_history"]) == MAX_DRIFT_ROWS
    assert out["drift_history"][0]["report"] == f"/r/check-{total:03d}.html"


def test_drift_history_in_json_result(tmp_path: Path, card: ModelCard) -> None:
    out = json.loads(json.dumps(write_card(card, tmp_path)))
    assert out["drift_checks"] == 3
    newest, triggered, quiet = out["drift_history"]
    assert newest["drifted_columns"] == [EVIL_TAG, "oldpeak"]
    assert newest["retrain_outcome"]["outcome"] == "suppressed"
    assert newest["retrain_outcome"]["reason"].startswith(SUPPRESSED)
    assert triggered["retrain"] is True and triggered["reasons"] == [TRIGGERED_REASON]
    assert triggered["retrain_outcome"]["outcome"] == "triggered"
    assert triggered["dataset_drift_share"] == 0.4 and triggered["prediction_drift"] is True
    assert quiet["retrain_outcome"] is None and quiet["drifted_columns"] == []


def test_drift_record_without_details_still_renders() -> None:
    card = sample_card()
    card.drift = drift_history(
        [AuditEvent(1, "2025-04-01T00:00:00Z", "drift_detected", "2", "ci", "3 drifted column(s)")]
    )
    (row,) = html_drift_rows(render_html(card))
    assert row.count('<td class="muted">n/a</td>') == 2  # drifted columns, prediction drift
    assert '<td class="num">n/a</td>' in row
    assert '<td class="muted">3 drifted column(s)</td>' in row  # the record's reason
    assert '<td class="code">n/a</td>' in row


def test_drift_events_render_as_labelled_audit_events() -> None:
    detected, claim = sample_drift_events()[1:3]
    table = history_table([detected, claim])
    assert [r[1].text for r in table.rows] == ["Drift detected", "Retrain triggered"]
    assert [r[1].style for r in table.rows] == ["warn", "info"]
    assert table.rows[0][3].text == TRIGGERED_REASON
    card = sample_card()
    card.timeline = [detected, claim]
    items = timeline_items(card)
    assert items[0].title == "Drift detected (champion v2)"
    assert items[0].extra == "drifted: chol, thalach, share 0.4000"
    assert items[1].title == "Retrain triggered" and items[1].extra == ""
    assert not any("{" in it.title + it.extra for it in items)  # no raw details


def test_collect_reads_drift_history(audit_copy: Path, tmp_path: Path) -> None:
    store = audit_store()
    try:
        seqs = [
            store.append(
                e.action,
                model=MODEL,
                version=e.version,
                actor=e.actor,
                reason=e.reason,
                details=e.details,
            ).seq
            for e in sample_drift_events()
        ]
    finally:
        store.close()
    card = collect_model_card(MODEL)
    assert [c.seq for c in card.drift] == [seqs[3], seqs[1], seqs[0]]
    assert [c.outcome_label for c in card.drift] == ["suppressed", "triggered", None]
    drift_actions = set(DRIFT_ACTIONS + RETRAIN_ACTIONS)
    assert not drift_actions & {e.action for e in card.timeline}
    assert not drift_actions & {e.action for s in card.sections for e in s.history}
    out = write_card(card, tmp_path)
    assert out["drift_checks"] == 3 and out["drift_history"][1]["version"] == "2"
