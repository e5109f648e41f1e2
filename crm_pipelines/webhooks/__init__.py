"""Webhook intake: a receiver that verifies each sender's signature and stores events durably.

- :mod:`.senders`: the registered senders (HubSpot v3, Zendesk, Standard Webhooks), their
  signatures and how a delivery splits into events;
- :mod:`.store`: the durable store (each event once, in arrival order);
- :mod:`.receiver`: the ASGI application and ``serve`` (``crm-pipelines webhooks``).
"""

from crm_pipelines.webhooks.receiver import Receiver, default_store_path, serve
from crm_pipelines.webhooks.senders import SENDERS, Event, Rejected, Request, Sender, register, sender_for
from crm_pipelines.webhooks.store import EventStore, StoredEvent

__all__ = [
    "SENDERS",
    "Event",
    "EventStore",
    "Receiver",
    "Rejected",
    "Request",
    "Sender",
    "StoredEvent",
    "default_store_path",
    "register",
    "sender_for",
    "serve",
]
