"""Alert channels, registered by name, and sending one alert through every configured one.

A channel is a class that registers itself (``@register_channel("email")``) and reads its own
environment variables in :meth:`AlertChannel.from_env`: None when none of them is set (the channel
is not configured, and silent), :class:`AlertConfigError` when they are set but unusable. A new
channel is one module that registers itself, and one import in ``crm_pipelines/alerts/__init__.py``.

:func:`send_alert` never raises: a channel that is misconfigured or fails is logged as a warning
(its message redacted) and the other channels still send.
"""

from __future__ import annotations

import abc
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from typing import ClassVar

from crm_pipelines.alerts.model import Alert
from crm_pipelines.alerts.redact import redact
from crm_pipelines.registry import Registry

__all__ = [
    "CHANNELS",
    "AlertChannel",
    "AlertConfigError",
    "AlertLog",
    "configured_channels",
    "is_loopback",
    "register_channel",
    "send_alert",
]

AlertLog = logging.Logger | logging.LoggerAdapter[logging.Logger]
# Seconds a channel waits for its server before it gives up.
TIMEOUT_SECONDS = 10.0

_LOG = logging.getLogger("crm_pipelines.alerts")


class AlertConfigError(ValueError):
    """A channel's variables are set but unusable (missing a value, an insecure transport)."""


class AlertChannel(abc.ABC):
    """One way out for alerts (e-mail, a webhook)."""

    # The name it registers under; also the variables' family in messages.
    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_env(cls, environ: Mapping[str, str]) -> AlertChannel | None:
        """The channel configured by ``environ``, or None when none of its variables is set.

        Raises:
            AlertConfigError: Its variables are set but incomplete or insecure.
        """

    @abc.abstractmethod
    def send(self, alert: Alert) -> None:
        """Deliver the alert; raises on failure (the caller logs it)."""

    def secrets(self) -> tuple[str, ...]:
        """Values its failure messages must not show (a password, a webhook URL)."""
        return ()


# Every alert channel, by name, in registration order.
CHANNELS: Registry[type[AlertChannel]] = Registry("alert channel")


def register_channel(name: str) -> Callable[[type[AlertChannel]], type[AlertChannel]]:
    """Class decorator: register an :class:`AlertChannel` subclass as ``name``."""

    def decorate(channel: type[AlertChannel]) -> type[AlertChannel]:
        channel.name = name
        return CHANNELS.register(name)(channel)

    return decorate


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def configured_channels(
    environ: Mapping[str, str] | None = None, *, log: AlertLog | None = None
) -> list[AlertChannel]:
    """The channels whose variables are set and usable; a misconfigured one is logged and left out."""
    environment = os.environ if environ is None else environ
    logger = log if log is not None else _LOG
    channels: list[AlertChannel] = []
    for name, channel_class in CHANNELS.items():
        try:
            channel = channel_class.from_env(environment)
        except AlertConfigError as error:
            logger.warning(f"alert channel {name} is not usable: {redact(str(error), environ=environment)}")
            continue
        if channel is not None:
            channels.append(channel)
    return channels


def send_alert(
    alert: Alert, *, log: AlertLog | None = None, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Send ``alert`` through every configured channel.

    With none configured, nothing is sent (logged at debug). A channel that fails is logged as a
    warning, without secrets, and does not stop the others; nothing is raised.

    Args:
        alert: What to send.
        log: The sensor's logger (``context.log``); None logs to ``crm_pipelines.alerts``.
        environ: The variables to read (default ``os.environ``).

    Returns:
        The names of the channels that delivered it.
    """
    environment = os.environ if environ is None else environ
    logger = log if log is not None else _LOG
    channels = configured_channels(environment, log=logger)
    if not channels:
        logger.debug(f"no alert channel configured; not sent: {alert.subject}")
        return []
    delivered: list[str] = []
    for channel in channels:
        try:
            channel.send(alert)
        except Exception as error:
            reason = redact(
                f"{type(error).__name__}: {error}", environ=environment, secrets=channel.secrets()
            )
            logger.warning(f"alert channel {channel.name} failed to send {alert.subject!r}: {reason}")
            continue
        delivered.append(channel.name)
        logger.info(f"alert sent through {channel.name}: {alert.subject}")
    return delivered
