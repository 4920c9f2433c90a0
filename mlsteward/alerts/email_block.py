"""Alert mail as a Prefect notification block, sent through prefect-email's SMTP credentials.

Why a block of our own: Prefect's automations send notifications through *notification
blocks* (a ``notify`` method), and prefect-email ships credentials and a task, not such a
block. This one wraps ``EmailServerCredentials`` so an automation's ``send-notification``
action can mail an alert. The Prefect server imports it at start through the
``prefect.collections`` entry point of this distribution, which is how it knows the block type.
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

from prefect.blocks.abstract import NotificationBlock
from prefect_email import EmailServerCredentials
from pydantic import Field

SUBJECT = "mlsteward alert"


class AlertEmail(NotificationBlock):
    """Mail to fixed recipients through an SMTP server."""

    _block_type_name = "mlsteward alert email"
    _block_type_slug = "mlsteward-alert-email"
    _description = "Alert mail through an SMTP server (prefect-email credentials)."

    credentials: EmailServerCredentials = Field(description="The SMTP server and its login.")
    email_to: list[str] = Field(description="Recipients.")
    email_from: str = Field(default="mlsteward@localhost", description="Sender address.")

    async def notify(self, body: str, subject: str | None = None) -> None:
        message = EmailMessage()
        message["Subject"] = subject or SUBJECT
        message["From"] = self.credentials.username or self.email_from
        message["To"] = ", ".join(self.email_to)
        message.set_content(body)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        try:
            with self.credentials.get_server() as server:
                server.send_message(message)
        except Exception:
            if self._raise_on_failure:
                raise
            self.logger.exception("alert mail to %s failed", message["To"])
