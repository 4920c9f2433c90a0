"""Notifications as Prefect automations with notification blocks, made from a model's config.

``make up`` and ``make deploy`` call :func:`sync_automations` for every model: each channel in
``alerts.channels`` becomes a notification block (webhook, Slack, Microsoft Teams, mail through
prefect-email, or a block someone saved already), and one automation per model sends every
``mlsteward.alert.fired``, ``.reminded`` and ``.resolved`` event of that model, from
``alerts.min_severity`` up, to each of them. Running it again replaces the model's automation
and blocks with what the config says now, so a channel removed from the config stops
receiving.

Secrets (webhook URLs, the SMTP password) are read from the environment variables the config
names and stored only in Prefect's blocks, never in the config, argv or logs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.blocks.notifications import (
    CustomWebhookNotificationBlock,
    MicrosoftTeamsWebhook,
    SlackWebhook,
)
from prefect.client.orchestration import get_client
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from pydantic import SecretStr

from mlsteward.alerts.email_block import AlertEmail
from mlsteward.alerts.events import EVENTS, model_resource
from mlsteward.alerts.observation import SEVERITY_ORDER
from mlsteward.config.models import ModelConfig
from mlsteward.config.sections.alerts import (
    BlockChannel,
    EmailChannel,
    SlackChannel,
    TeamsChannel,
    WebhookChannel,
)
from mlsteward.errors import ConfigError

SUBJECT = (
    "[{{ event.payload.severity }}] {{ event.payload.model }}: {{ event.payload.rule }} "
    "{{ event.event.rsplit('.', 1)[-1] }}"
)
BODY = """{{ event.payload.summary }}

model: {{ event.payload.model }} version {{ event.payload.version }}
rule: {{ event.payload.rule }} {{ event.payload.subject }} ({{ event.payload.severity }})
value: {{ event.payload.value }} limit: {{ event.payload.limit }}
breaches: {{ event.payload.breaches }} (not sent: {{ event.payload.suppressed }})
incident: {{ event.payload.incident }} since {{ event.payload.fired_at }}
{{ event.payload.link }}"""


@dataclass(frozen=True)
class SyncedAutomation:
    """What :func:`sync_automations` left in Prefect for one model."""

    model: str
    automation_id: UUID | None
    blocks: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "automation_id": str(self.automation_id) if self.automation_id else None,
            "blocks": self.blocks,
        }


def automation_name(model: str) -> str:
    return f"mlsteward-alerts-{model}"


def _secret(cfg: ModelConfig, variable: str | None, what: str) -> str | None:
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(f"{cfg.name}: alerts.channels {what} reads ${variable}, which is not set")
    return value


def _block(cfg: ModelConfig, channel: Any, index: int) -> tuple[str, UUID]:
    """Save the channel's notification block; its ``slug/name`` and document id."""
    name = f"mlsteward-{cfg.name.replace('_', '-')}-{index}"
    block: NotificationBlock
    if isinstance(channel, BlockChannel):
        loaded = Block.load(channel.block)
        if not isinstance(loaded, NotificationBlock):
            raise ConfigError(f"{cfg.name}: alerts.channels block {channel.block!r} cannot notify")
        return channel.block, _document_id(loaded, channel.block)
    if isinstance(channel, WebhookChannel):
        block = CustomWebhookNotificationBlock(
            name=name,
            url=_secret(cfg, channel.url_env, "webhook url_env") or "",
            json_data={"subject": "{{subject}}", "body": "{{body}}", "name": "{{name}}"},
            allow_private_urls=channel.allow_private_urls,
            headers=None,
            cookies=None,
        )
    elif isinstance(channel, SlackChannel):
        block = SlackWebhook(url=SecretStr(_secret(cfg, channel.url_env, "slack url_env") or ""))
    elif isinstance(channel, TeamsChannel):
        url = _secret(cfg, channel.url_env, "teams url_env") or ""
        block = MicrosoftTeamsWebhook(url=SecretStr(url))
    elif isinstance(channel, EmailChannel):
        from prefect_email import EmailServerCredentials

        block = AlertEmail(
            credentials=EmailServerCredentials(
                username=_secret(cfg, channel.username_env, "email username_env"),
                password=SecretStr(_secret(cfg, channel.password_env, "email password_env") or ""),
                smtp_server=channel.smtp_server,
                smtp_type=channel.smtp_type,
                smtp_port=channel.smtp_port,
            ),
            email_to=channel.to,
            email_from=channel.sender,
        )
    else:  # pragma: no cover - the config's union is closed
        raise ConfigError(f"{cfg.name}: unknown alert channel {channel!r}")
    document_id = block.save(name, overwrite=True)
    if not isinstance(document_id, UUID):  # pragma: no cover - sync outside an event loop
        raise ConfigError(f"{cfg.name}: saving the {name!r} block returned {document_id!r}")
    return f"{block.get_block_type_slug()}/{name}", document_id


def _document_id(block: Block, ref: str) -> UUID:
    found = block._block_document_id
    if found is None:  # pragma: no cover - a loaded block always has one
        raise ConfigError(f"block {ref!r} has no document id")
    return found


def sync_automations(cfg: ModelConfig) -> SyncedAutomation:
    """Replace the model's alert automation (and its blocks) with what the config says.

    No channels: the model's automation is removed (alerts stay events and audit records).
    """
    name = automation_name(cfg.name)
    with get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(name):
            client.delete_automation(old.id)
    if not cfg.alerts.channels:
        return SyncedAutomation(cfg.name, None, [])
    blocks = [_block(cfg, channel, n) for n, channel in enumerate(cfg.alerts.channels)]
    floor = SEVERITY_ORDER[cfg.alerts.min_severity]
    severities = [s for s, rank in SEVERITY_ORDER.items() if rank >= floor]
    automation = AutomationCore(
        name=name,
        description=f"Alerts of {cfg.name} to its channels (from config/models/{cfg.name}.yaml)",
        trigger=EventTrigger(
            expect=set(EVENTS),
            match={
                "prefect.resource.id": model_resource(cfg.name),
                "mlsteward.severity": severities,
            },
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            SendNotification(block_document_id=document_id, subject=SUBJECT, body=BODY)
            for _, document_id in blocks
        ],
    )
    with get_client(sync_client=True) as client:
        automation_id = client.create_automation(automation)
    return SyncedAutomation(cfg.name, automation_id, [ref for ref, _ in blocks])
