"""The webhook receiver on a real uvicorn server: signatures, replays, bad bodies, duplicates, restarts."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from crm_pipelines.webhooks.senders import sign_hubspot_v3, sign_standard, sign_zendesk
from crm_pipelines.webhooks.store import EventStore

HUBSPOT_SECRET = "hubspot-client-secret"
ZENDESK_SECRET = "zendesk-signing-secret"
_CLIENTS = threading.local()


def http() -> httpx.Client:
    """One client per thread: keep-alive connections are never shared between threads (a shared pool
    under 32 threads gave "Bad file descriptor" on CI), and building one per request costs more than it."""
    client: httpx.Client | None = getattr(_CLIENTS, "client", None)
    if client is None:
        client = _CLIENTS.client = httpx.Client(timeout=30, trust_env=False)
    return client


def _forget_client() -> None:
    """Drop this thread's keep-alive connections: the next server may reuse the same port."""
    client: httpx.Client | None = getattr(_CLIENTS, "client", None)
    if client is not None:
        client.close()
        _CLIENTS.client = None


GENERIC_SECRET = "whsec_" + base64.b64encode(b"generic-signing-key-32-bytes-long").decode()


@dataclass
class Server:
    url: str
    store_path: Path
    process: subprocess.Popen[bytes]

    def events(self) -> list[tuple[str, str, str]]:
        return [(e.sender, e.event_id, e.event_type) for e in EventStore(self.store_path).since(0)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(store_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HUBSPOT_WEBHOOK_SECRET": HUBSPOT_SECRET,
        "ZENDESK_WEBHOOK_SECRET": ZENDESK_SECRET,
        "GENERIC_WEBHOOK_SECRET": GENERIC_SECRET,
    }
    command = Path(sys.executable).parent / "crm-pipelines"
    process = subprocess.Popen(
        [str(command), "webhooks", "--port", str(port), "--store", str(store_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(store_path.with_suffix(".log"), "wb"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if http().get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the receiver did not start")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port = _free_port()
    store_path = tmp_path / "events.sqlite3"
    process = _start(store_path, port)
    running = Server(f"http://127.0.0.1:{port}", store_path, process)
    yield running
    _stop(running.process)
    _forget_client()


def hubspot_delivery(
    server: Server, events: list[dict[str, object]], *, age: timedelta = timedelta(0)
) -> httpx.Response:
    body = json.dumps(events).encode()
    url = f"{server.url}/webhooks/hubspot"
    stamp = int((datetime.now(UTC) - age).timestamp() * 1000)
    headers = {
        "Content-Type": "application/json",
        "X-HubSpot-Request-Timestamp": str(stamp),
        "X-HubSpot-Signature-v3": sign_hubspot_v3(HUBSPOT_SECRET, "POST", url, body, stamp),
    }
    return http().post(url, content=body, headers=headers)


def deal_won(event_id: int, deal: int = 42) -> dict[str, object]:
    return {
        "eventId": event_id,
        "subscriptionType": "deal.propertyChange",
        "propertyName": "dealstage",
        "propertyValue": "closedwon",
        "objectId": deal,
        "occurredAt": 1764979200000,
    }


def test_a_signed_hubspot_delivery_is_stored_and_a_redelivery_is_not(server: Server) -> None:
    first = hubspot_delivery(server, [deal_won(1), deal_won(2, deal=43)])
    assert first.status_code == 200
    assert first.json() == {"stored": 2, "duplicates": 0}
    again = hubspot_delivery(server, [deal_won(2, deal=43), deal_won(3)])
    assert again.status_code == 200
    assert again.json() == {"stored": 1, "duplicates": 1}
    assert server.events() == [
        ("hubspot", "1", "deal.propertyChange"),
        ("hubspot", "2", "deal.propertyChange"),
        ("hubspot", "3", "deal.propertyChange"),
    ]
    assert [e.object_id for e in EventStore(server.store_path).since(0)] == ["42", "43", "42"]


def test_bad_signatures_replays_and_bad_bodies_are_refused_and_stored_nowhere(server: Server) -> None:
    url = f"{server.url}/webhooks/hubspot"
    body = json.dumps([deal_won(9)]).encode()
    stamp = int(datetime.now(UTC).timestamp() * 1000)
    good = sign_hubspot_v3(HUBSPOT_SECRET, "POST", url, body, stamp)
    cases = {
        "unsigned": ({"X-HubSpot-Request-Timestamp": str(stamp)}, body, 401),
        "wrong secret": (
            {
                "X-HubSpot-Request-Timestamp": str(stamp),
                "X-HubSpot-Signature-v3": sign_hubspot_v3("other", "POST", url, body, stamp),
            },
            body,
            401,
        ),
        "body changed after signing": (
            {"X-HubSpot-Request-Timestamp": str(stamp), "X-HubSpot-Signature-v3": good},
            json.dumps([deal_won(10)]).encode(),
            401,
        ),
        "timestamp not a number": (
            {"X-HubSpot-Request-Timestamp": "soon", "X-HubSpot-Signature-v3": good},
            body,
            401,
        ),
    }
    for name, (headers, content, status) in cases.items():
        assert http().post(url, content=content, headers=headers).status_code == status, name
    # A replay: correctly signed, but ten minutes old.
    assert hubspot_delivery(server, [deal_won(11)], age=timedelta(minutes=10)).status_code == 401
    # Malformed JSON and a well-signed body that is not HubSpot's shape.
    for content in (b"[{not json", b'{"eventId": 1}', b"[1, 2]", b'[{"subscriptionType": "x"}]'):
        headers = {
            "X-HubSpot-Request-Timestamp": str(stamp),
            "X-HubSpot-Signature-v3": sign_hubspot_v3(HUBSPOT_SECRET, "POST", url, content, stamp),
        }
        assert http().post(url, content=content, headers=headers).status_code == 400, content
    # 10 MB: refused by its declared length, and when streamed without one.
    big = b"[" + b" " * (10 * 1024 * 1024) + b"]"
    assert http().post(url, content=big).status_code == 413
    assert (
        http().post(url, content=iter([big[i : i + 65536] for i in range(0, len(big), 65536)])).status_code
        == 413
    )
    # Unknown senders and routes.
    assert http().post(f"{server.url}/webhooks/nobody", content=b"{}").status_code == 404
    assert http().post(f"{server.url}/elsewhere", content=b"{}").status_code == 404
    assert http().get(url).status_code == 405
    assert server.events() == []
    # A correct event still gets through.
    assert hubspot_delivery(server, [deal_won(12)]).json() == {"stored": 1, "duplicates": 0}
    assert server.events() == [("hubspot", "12", "deal.propertyChange")]


def test_unknown_event_types_are_stored_for_the_sensor_to_skip(server: Server) -> None:
    event = {"eventId": 77, "subscriptionType": "contact.someday_new_type", "objectId": 5}
    assert hubspot_delivery(server, [event]).json() == {"stored": 1, "duplicates": 0}
    assert server.events() == [("hubspot", "77", "contact.someday_new_type")]


def test_a_thousand_concurrent_duplicate_deliveries_store_one_event(server: Server) -> None:
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda _: hubspot_delivery(server, [deal_won(500)]), range(1000)))
    assert {a.status_code for a in answers} == {200}
    assert sum(a.json()["stored"] for a in answers) == 1
    assert sum(a.json()["duplicates"] for a in answers) == 999
    assert server.events() == [("hubspot", "500", "deal.propertyChange")]


def test_zendesk_and_standard_webhooks_senders(server: Server) -> None:
    body = json.dumps(
        {
            "id": "01JZ-evt-1",
            "type": "zen:event-type:ticket.status_changed",
            "detail": {"id": "3187", "status": "SOLVED"},
        }
    ).encode()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    zendesk = {
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        "X-Zendesk-Webhook-Signature": sign_zendesk(ZENDESK_SECRET, stamp, body),
    }
    assert http().post(f"{server.url}/webhooks/zendesk", content=body, headers=zendesk).json()["stored"] == 1
    wrong = {**zendesk, "X-Zendesk-Webhook-Signature": sign_zendesk("nope", stamp, body)}
    assert http().post(f"{server.url}/webhooks/zendesk", content=body, headers=wrong).status_code == 401

    body = json.dumps({"type": "invoice.paid", "data": {"id": "INV-1001"}}).encode()
    now = int(time.time())
    standard = {
        "webhook-id": "msg_2Kx",
        "webhook-timestamp": str(now),
        "webhook-signature": "v1,bm90LXRoaXMtb25l " + sign_standard(GENERIC_SECRET, "msg_2Kx", now, body),
    }
    assert http().post(f"{server.url}/webhooks/generic", content=body, headers=standard).json()["stored"] == 1
    replayed = {**standard, "webhook-timestamp": str(now - 3600)}
    assert http().post(f"{server.url}/webhooks/generic", content=body, headers=replayed).status_code == 401
    assert server.events() == [
        ("zendesk", "01JZ-evt-1", "zen:event-type:ticket.status_changed"),
        ("generic", "msg_2Kx", "invoice.paid"),
    ]
    assert [e.object_id for e in EventStore(server.store_path).since(0)] == ["3187", "INV-1001"]


def test_acknowledged_events_survive_a_restart_of_the_receiver(server: Server) -> None:
    assert hubspot_delivery(server, [deal_won(1), deal_won(2)]).status_code == 200
    server.process.kill()  # no clean shutdown
    server.process.wait()
    _forget_client()
    port = int(server.url.rsplit(":", 1)[1])
    server.process = _start(server.store_path, port)
    assert hubspot_delivery(server, [deal_won(2), deal_won(3)]).json() == {"stored": 1, "duplicates": 1}
    assert [e[1] for e in server.events()] == ["1", "2", "3"]
