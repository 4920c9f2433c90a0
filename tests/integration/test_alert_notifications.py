"""Alerts reach people through Prefect automations: a real Prefect server (the test harness
runs its triggers and actions), a real local HTTP receiver standing in for a webhook and a real
SMTP server (aiosmtpd) for mail. One incident is one notification, then one resolve."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from prefect.client.orchestration import get_client

from mlsteward.alerts.automations import automation_name, sync_automations
from mlsteward.alerts.engine import observe
from mlsteward.alerts.observation import Observation
from mlsteward.alerts.state import Transition
from mlsteward.audit import Action, audit_store
from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.config.sections.alerts import AlertsConfig
from mlsteward.errors import ConfigError
from tests.support.webhook import webhook_receiver


class _Mailbox:
    def __init__(self) -> None:
        self.mails: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.mails.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list, _Mailbox, int]]:
    mailbox = _Mailbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        smtp_port = probe.getsockname()[1]
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        with webhook_receiver() as hook:
            monkeypatch.setenv("ALERT_HOOK_URL", hook.url)
            yield hook.posts, mailbox, smtp_port
    finally:
        smtp.stop()


def _config(smtp_port: int) -> ModelConfig:
    base = get_model_config("heart_disease")
    alerts = AlertsConfig.model_validate(
        {
            "channels": [
                {"type": "webhook", "url_env": "ALERT_HOOK_URL", "allow_private_urls": True},
                {
                    "type": "email",
                    "to": ["oncall@example.org"],
                    "smtp_server": "127.0.0.1",
                    "smtp_port": smtp_port,
                    "smtp_type": "INSECURE",
                },
            ],
            "quiet_period_minutes": 60,
        }
    )
    return base.model_copy(update={"alerts": alerts})


def _wait(predicate: Any, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_one_incident_is_one_notification_and_one_resolve(
    receivers: tuple[list, _Mailbox, int],
) -> None:
    posts, mailbox, smtp_port = receivers
    cfg = _config(smtp_port)
    synced = sync_automations(cfg)
    assert synced.automation_id is not None and len(synced.blocks) == 2
    assert synced.blocks[1].startswith("mlsteward-alert-email/")
    time.sleep(2)  # the server's trigger service loads new automations

    breach = Observation(
        rule="error_rate",
        breached=True,
        summary="error rate 12.0% over the last 15 minutes (limit 10%)",
        value=0.12,
        limit=0.10,
        version="4",
    )
    outcomes = [observe(cfg, [breach], actor="service:monitor")[0] for _ in range(100)]
    assert [o.transition for o in outcomes].count(Transition.FIRED) == 1
    assert outcomes[0].event_id is not None

    assert _wait(lambda: len(posts) >= 1 and len(mailbox.mails) >= 1)
    time.sleep(1.5)  # nothing else arrives for the 99 suppressed breaches
    assert len(posts) == 1 and len(mailbox.mails) == 1
    assert "error_rate" in posts[0]["subject"] and "[critical]" in posts[0]["subject"]
    assert "12.0%" in posts[0]["body"] and "/ui/models/heart_disease" in posts[0]["body"]
    assert "breaches: 1" in posts[0]["body"]
    rcpt, mail = mailbox.mails[0]
    assert rcpt == ["oncall@example.org"] and "error_rate" in mail["Subject"]

    clear = Observation(rule="error_rate", breached=False, summary="error rate 0.2%", version="4")
    assert observe(cfg, [clear], actor="service:monitor")[0].transition is Transition.RESOLVED
    assert _wait(lambda: len(posts) >= 2 and len(mailbox.mails) >= 2)
    assert "resolved" in posts[1]["subject"] and "not sent: 99" in posts[1]["body"]
    assert len(audit_store().query(action=Action.ALERT_FIRED)) == 1
    assert len(audit_store().query(action=Action.ALERT_RESOLVED)) == 1

    # the config without channels removes the model's automation
    assert sync_automations(get_model_config("heart_disease")).automation_id is None
    with get_client(sync_client=True) as client:
        assert client.read_automations_by_name(automation_name("heart_disease")) == []


def test_a_channel_whose_secret_is_missing_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ALERT_HOOK_URL", raising=False)
    with pytest.raises(ConfigError, match=r"ALERT_HOOK_URL, which is not set"):
        sync_automations(_config(25))
