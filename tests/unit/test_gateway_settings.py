"""Gateway settings from the environment, and the delivery log's once-only claims."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

from mlsteward.gateway.client import TriggerError, describe, hook_url, parse_params
from mlsteward.gateway.deliveries import SQLiteDeliveryLog, delivery_log
from mlsteward.gateway.settings import GatewayConfigError, GatewaySettings
from tests.conftest import REPO_ROOT

ENV = (
    "MLSTEWARD_WEBHOOK_SECRET",
    "MLSTEWARD_WEBHOOK_SECRET_BLOCK",
    "MLSTEWARD_WEBHOOK_BRANCHES",
    "MLSTEWARD_WEBHOOK_DATA_ROOTS",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    return monkeypatch


def test_settings_come_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("MLSTEWARD_WEBHOOK_SECRET", "abc")
    clean_env.setenv("MLSTEWARD_WEBHOOK_BRANCHES", "main, refs/heads/release ,")
    clean_env.setenv("MLSTEWARD_WEBHOOK_MAX_BYTES", "2048")
    # Prefect's settings context wins over the environment (a test harness may hold one).
    with temporary_settings(
        updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}, restore_defaults={PREFECT_UI_URL}
    ):
        s = GatewaySettings.from_env()
    assert s.secret.get_secret_value() == "abc" and "abc" not in repr(s)
    assert s.branches == ["main", "release"] and s.max_bytes == 2048
    assert s.max_age_seconds == 300
    assert s.api_url == "http://127.0.0.1:4200/api" and s.ui_url == "http://127.0.0.1:4200"


def test_no_secret_no_gateway(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(GatewayConfigError, match="MLSTEWARD_WEBHOOK_SECRET"):
        GatewaySettings.from_env()
    clean_env.setenv("MLSTEWARD_WEBHOOK_MAX_BYTES", "lots")
    clean_env.setenv("MLSTEWARD_WEBHOOK_SECRET", "abc")
    with pytest.raises(GatewayConfigError, match="max_bytes"):
        GatewaySettings.from_env()


def test_the_entrypoint_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV}
    done = subprocess.run(
        [sys.executable, "-m", "mlsteward.gateway", "--port", "1"],
        cwd=REPO_ROOT,
        env={**env, "PREFECT_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no webhook secret" in done.stderr and "MLSTEWARD_WEBHOOK_SECRET" in done.stderr


def test_hook_urls() -> None:
    assert hook_url("https://ci.example.org") == "https://ci.example.org/hooks/ci"
    assert hook_url("http://h:8787/") == "http://h:8787/hooks/ci"
    assert hook_url("https://h/gw/hooks/ci") == "https://h/gw/hooks/ci"
    with pytest.raises(TriggerError):
        hook_url("h:8787")


def test_a_delivery_is_claimed_once_across_threads(tmp_path: Path) -> None:
    logs = [SQLiteDeliveryLog(tmp_path / "d.db") for _ in range(4)]  # as separate processes
    results: list[bool] = []
    barrier = threading.Barrier(16)

    def claim(i: int) -> None:
        barrier.wait()
        results.append(logs[i % 4].claim("delivery-1", "digest-1", "trigger"))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 15 + [True]
    log = logs[0]
    assert not log.claim("delivery-2", "digest-1", "trigger")  # same body, new id
    log.release("delivery-1")
    assert log.claim("delivery-1", "digest-1", "trigger")  # released: may be retried
    for each in logs:
        each.close()


def test_the_delivery_log_sits_beside_the_sqlite_audit_file(tmp_path: Path) -> None:
    log = delivery_log(f"sqlite:///{tmp_path / 'audit' / 'audit.db'}")
    try:
        assert isinstance(log, SQLiteDeliveryLog)
        assert log.path == tmp_path / "audit" / "webhook_deliveries.db"
    finally:
        log.close()


def test_command_line_parameters_and_the_summary() -> None:
    assert parse_params(["max_evals=2", "reason=ci: acme@abc", "promote=false", "x=[1]"]) == {
        "max_evals": 2,
        "reason": "ci: acme@abc",
        "promote": False,
        "x": [1],
    }
    with pytest.raises(TriggerError, match="KEY=VALUE"):
        parse_params(["oops"])
    text = describe(
        {
            "delivery": "d-1",
            "message": "train heart_disease",
            "runs": [
                {
                    "deployment": "train-model/train-heart-disease",
                    "flow_run_name": "brave-owl",
                    "url": "http://ui/runs/flow-run/1",
                }
            ],
        }
    )
    assert text.splitlines() == [
        "delivery d-1: train heart_disease",
        "  train-model/train-heart-disease  brave-owl  http://ui/runs/flow-run/1",
    ]
