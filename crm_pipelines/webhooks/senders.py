"""Who may send webhooks, how each proves it, and how its payload splits into events.

A sender is a class registered under its URL name (``POST /webhooks/<name>``); a new one is a new
class with :func:`register`, not a branch in the receiver. Each verifies the vendor's documented
signature over the raw body with a timestamp tolerance against replays, then names the events in
the payload by the vendor's own event id, so a redelivery is recognised:

- ``hubspot``: HubSpot webhooks, signature v3 (``X-HubSpot-Signature-v3``: base64 HMAC-SHA256 of
  method + URI + body + ``X-HubSpot-Request-Timestamp`` with the app's client secret; older than
  5 minutes is refused). The body is an array of events, each with ``eventId``.
- ``zendesk``: Zendesk webhooks (``X-Zendesk-Webhook-Signature``: base64 HMAC-SHA256 of
  ``X-Zendesk-Webhook-Signature-Timestamp`` + body with the webhook's signing secret). Event
  webhooks carry ``id``; trigger webhooks the invocation id header.
- ``generic``: any system that can send the Standard Webhooks scheme (``webhook-id``,
  ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>``,
  secret ``whsec_<base64>``), e.g. an ERP's or a CRM's outbound messages through a small relay.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import unquote

__all__ = [
    "SENDERS",
    "Event",
    "Rejected",
    "Request",
    "Sender",
    "parse_json",
    "register",
    "sender_for",
    "sign_hubspot_v3",
    "sign_standard",
    "sign_zendesk",
]

TOLERANCE_SECONDS = 300  # a signed request older (or newer) than this is a replay


class Rejected(Exception):
    """The request is refused: ``status`` (4xx) and a reason that names no secret."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Request:
    """What a sender sees of one delivery: the raw body and the headers (lower-case names)."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    received_at: datetime


@dataclass(frozen=True)
class Event:
    """One event of a delivery, named by the sender's own id."""

    sender: str
    event_id: str
    event_type: str
    object_id: str | None
    payload: dict[str, Any]


class Sender:
    """A webhook sender: verify a delivery, then split it into events."""

    name: ClassVar[str]
    secret_variable: ClassVar[str]  # the environment variable holding the signing secret

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError(f"{self.secret_variable} is empty")
        self.secret = secret

    def verify(self, request: Request) -> None:
        raise NotImplementedError

    def events(self, request: Request, payload: Any) -> list[Event]:
        raise NotImplementedError


SENDERS: dict[str, type[Sender]] = {}


def register(cls: type[Sender]) -> type[Sender]:
    SENDERS[cls.name] = cls
    return cls


def sender_for(name: str, environ: Mapping[str, str] | None = None) -> Sender | None:
    """The configured sender ``name``; None when unknown or its secret is not set (refused)."""
    cls = SENDERS.get(name)
    if cls is None:
        return None
    secret = (environ if environ is not None else os.environ).get(cls.secret_variable, "")
    return cls(secret) if secret else None


def _header(request: Request, name: str) -> str:
    value = request.headers.get(name.lower())
    if not value:
        raise Rejected(401, f"missing {name} header")
    return value


def _fresh(request: Request, sent_at: datetime) -> None:
    if abs((request.received_at - sent_at).total_seconds()) > TOLERANCE_SECONDS:
        raise Rejected(401, "timestamp outside the tolerance (a replay or a wrong clock)")


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.strip().encode("ascii", "replace"))


def _hmac_base64(key: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(key, message, hashlib.sha256).digest()).decode()


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# HubSpot decodes these percent-escapes in the URI before signing (its v3 validation guide).
_HUBSPOT_DECODED = ("%3A", "%2F", "%3F", "%40", "%21", "%24", "%27", "%28", "%29", "%2A", "%2C", "%3B")


@register
class HubSpot(Sender):
    name = "hubspot"
    secret_variable = "HUBSPOT_WEBHOOK_SECRET"

    def verify(self, request: Request) -> None:
        signature = _header(request, "X-HubSpot-Signature-v3")
        stamp = _header(request, "X-HubSpot-Request-Timestamp")
        try:
            sent_at = datetime.fromtimestamp(int(stamp) / 1000, tz=UTC)
        except (ValueError, OverflowError, OSError):
            raise Rejected(401, "X-HubSpot-Request-Timestamp is not milliseconds since the epoch") from None
        _fresh(request, sent_at)
        uri = request.url
        for escape in _HUBSPOT_DECODED:
            uri = uri.replace(escape, unquote(escape)).replace(escape.lower(), unquote(escape))
        if not _same(sign_hubspot_v3(self.secret, request.method, uri, request.body, stamp), signature):
            raise Rejected(401, "signature does not match")

    def events(self, request: Request, payload: Any) -> list[Event]:
        if not isinstance(payload, list) or not all(isinstance(e, dict) for e in payload):
            raise Rejected(400, "a HubSpot delivery is a JSON array of event objects")
        events = []
        for item in payload:
            if item.get("eventId") is None or not item.get("subscriptionType"):
                raise Rejected(400, "a HubSpot event needs eventId and subscriptionType")
            events.append(
                Event(
                    self.name,
                    str(item["eventId"]),
                    str(item["subscriptionType"]),
                    _text(item.get("objectId")),
                    item,
                )
            )
        return events


@register
class Zendesk(Sender):
    name = "zendesk"
    secret_variable = "ZENDESK_WEBHOOK_SECRET"

    def verify(self, request: Request) -> None:
        signature = _header(request, "X-Zendesk-Webhook-Signature")
        stamp = _header(request, "X-Zendesk-Webhook-Signature-Timestamp")
        try:
            sent_at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            raise Rejected(401, "X-Zendesk-Webhook-Signature-Timestamp is not an ISO 8601 time") from None
        if sent_at.tzinfo is None:
            raise Rejected(401, "X-Zendesk-Webhook-Signature-Timestamp has no time zone")
        _fresh(request, sent_at)
        if not _same(sign_zendesk(self.secret, stamp, request.body), signature):
            raise Rejected(401, "signature does not match")

    def events(self, request: Request, payload: Any) -> list[Event]:
        if not isinstance(payload, dict):
            raise Rejected(400, "a Zendesk delivery is a JSON object")
        event_id = payload.get("id") or request.headers.get("x-zendesk-webhook-invocation-id")
        if not event_id:
            raise Rejected(400, "a Zendesk event needs an id (or the invocation id header)")
        detail = payload.get("detail")
        detail = detail if isinstance(detail, dict) else {}
        return [
            Event(
                self.name,
                str(event_id),
                str(payload.get("type") or "trigger"),
                _text(detail.get("id") or payload.get("ticket_id")),
                payload,
            )
        ]


@register
class Generic(Sender):
    """Standard Webhooks (standardwebhooks.com): ``whsec_``-prefixed base64 secret."""

    name = "generic"
    secret_variable = "GENERIC_WEBHOOK_SECRET"

    def verify(self, request: Request) -> None:
        event_id = _header(request, "webhook-id")
        stamp = _header(request, "webhook-timestamp")
        signatures = _header(request, "webhook-signature")
        try:
            sent_at = datetime.fromtimestamp(int(stamp), tz=UTC)
        except (ValueError, OverflowError, OSError):
            raise Rejected(401, "webhook-timestamp is not seconds since the epoch") from None
        _fresh(request, sent_at)
        try:
            expected = sign_standard(self.secret, event_id, stamp, request.body)
        except (ValueError, binascii.Error):
            raise Rejected(500, "the configured secret is not whsec_<base64>") from None
        if not any(_same(expected, given) for given in signatures.split()):
            raise Rejected(401, "signature does not match")

    def events(self, request: Request, payload: Any) -> list[Event]:
        if not isinstance(payload, dict) or not payload.get("type"):
            raise Rejected(400, "a Standard Webhooks event is a JSON object with a type")
        data = payload.get("data")
        data = data if isinstance(data, dict) else {}
        return [
            Event(
                self.name,
                request.headers["webhook-id"],
                str(payload["type"]),
                _text(data.get("id")),
                payload,
            )
        ]


def sign_standard(secret: str, event_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``webhook-signature`` value of a Standard Webhooks delivery (``v1,<base64>``)."""
    key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    return "v1," + _hmac_base64(key, f"{event_id}.{timestamp}.".encode() + body)


def sign_hubspot_v3(secret: str, method: str, url: str, body: bytes, timestamp_ms: int | str) -> str:
    """The ``X-HubSpot-Signature-v3`` value HubSpot sends."""
    return _hmac_base64(secret.encode(), method.encode() + url.encode() + body + str(timestamp_ms).encode())


def sign_zendesk(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Zendesk-Webhook-Signature`` value Zendesk sends."""
    return _hmac_base64(secret.encode(), timestamp.encode() + body)


def parse_json(body: bytes) -> Any:
    """The body as JSON, or a 400."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise Rejected(400, "body is not JSON") from None
