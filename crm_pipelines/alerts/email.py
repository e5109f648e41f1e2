"""The e-mail channel: a plain-text message over SMTP (``smtplib``), secure by default.

Configured by ``ALERT_SMTP_HOST``, ``ALERT_EMAIL_FROM`` and ``ALERT_EMAIL_TO`` (comma-separated);
``ALERT_SMTP_USERNAME`` and ``ALERT_SMTP_PASSWORD`` log in. ``ALERT_SMTP_TLS`` is ``starttls``
(default, port 587), ``ssl`` (implicit TLS, port 465) or ``none``, which only a loopback host may use
(a local relay). The server's certificate is verified with Python's default SSL context.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal, cast

from crm_pipelines import settings
from crm_pipelines.alerts.channels import (
    TIMEOUT_SECONDS,
    AlertChannel,
    AlertConfigError,
    is_loopback,
    register_channel,
)
from crm_pipelines.alerts.model import Alert

__all__ = ["EmailChannel", "build_message"]

TlsMode = Literal["starttls", "ssl", "none"]
TLS_MODES: tuple[TlsMode, ...] = ("starttls", "ssl", "none")
# Any of these set means the channel is meant to be on (and is then checked for completeness).
VARIABLES = (
    settings.ALERT_SMTP_HOST,
    settings.ALERT_EMAIL_FROM,
    settings.ALERT_EMAIL_TO,
)


def build_message(alert: Alert, *, sender: str, recipients: tuple[str, ...]) -> EmailMessage:
    """The alert as a plain-text e-mail: its subject, its body."""
    message = EmailMessage()
    message["Subject"] = alert.subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(alert.body)
    return message


@register_channel("email")
@dataclass(frozen=True)
class EmailChannel(AlertChannel):
    """Sends alerts by e-mail.

    Attributes:
        host: The SMTP server.
        port: Its port.
        tls: ``starttls``, ``ssl`` or ``none`` (loopback only).
        sender: The From address.
        recipients: The To addresses.
        username: Logs in when set.
        password: The login's password.
    """

    host: str
    port: int
    tls: TlsMode
    sender: str
    recipients: tuple[str, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.tls not in TLS_MODES:
            raise AlertConfigError(f"{settings.ALERT_SMTP_TLS} must be one of {', '.join(TLS_MODES)}")
        if self.tls == "none" and not is_loopback(self.host):
            raise AlertConfigError(
                f"{settings.ALERT_SMTP_TLS}=none sends in clear text: only allowed to a loopback host, "
                f"not {self.host!r} (use starttls or ssl)"
            )
        if not self.recipients:
            raise AlertConfigError(f"{settings.ALERT_EMAIL_TO} names no recipient")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> EmailChannel | None:
        if not any(environ.get(name, "").strip() for name in VARIABLES):
            return None
        missing = [name for name in VARIABLES if not environ.get(name, "").strip()]
        if missing:
            raise AlertConfigError(
                f"set {', '.join(missing)} as well (or unset the other alert e-mail variables)"
            )
        tls = environ.get(settings.ALERT_SMTP_TLS, "").strip().lower() or settings.DEFAULT_ALERT_SMTP_TLS
        if tls not in TLS_MODES:
            raise AlertConfigError(
                f"{settings.ALERT_SMTP_TLS} must be one of {', '.join(TLS_MODES)}, got {tls!r}"
            )
        default_port = (
            settings.DEFAULT_ALERT_SMTP_SSL_PORT if tls == "ssl" else settings.DEFAULT_ALERT_SMTP_PORT
        )
        port_text = environ.get(settings.ALERT_SMTP_PORT, "").strip()
        try:
            port = int(port_text) if port_text else default_port
        except ValueError:
            raise AlertConfigError(
                f"{settings.ALERT_SMTP_PORT} must be a port number, got {port_text!r}"
            ) from None
        recipients = tuple(
            address.strip() for address in environ[settings.ALERT_EMAIL_TO].split(",") if address.strip()
        )
        return cls(
            host=environ[settings.ALERT_SMTP_HOST].strip(),
            port=port,
            tls=cast(TlsMode, tls),
            sender=environ[settings.ALERT_EMAIL_FROM].strip(),
            recipients=recipients,
            username=environ.get(settings.ALERT_SMTP_USERNAME, "").strip() or None,
            password=environ.get(settings.ALERT_SMTP_PASSWORD) or None,
        )

    def send(self, alert: Alert) -> None:
        message = build_message(alert, sender=self.sender, recipients=self.recipients)
        context = ssl.create_default_context()  # verifies the certificate and the host name
        smtp: smtplib.SMTP
        if self.tls == "ssl":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=TIMEOUT_SECONDS, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=TIMEOUT_SECONDS)
        with smtp:
            if self.tls == "starttls":
                smtp.starttls(context=context)  # raises when the server offers no STARTTLS
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(message)

    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()
