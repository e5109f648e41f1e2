"""The Zendesk Support simulator, driven over HTTP the way a client of Zendesk's REST API drives it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from crm_pipelines.webhooks.senders import Rejected
from crm_pipelines.webhooks.senders import Request as WebhookRequest
from crm_pipelines.webhooks.senders import Zendesk as ZendeskSender
from crm_pipelines_sandbox.simulators import RateLimit
from crm_pipelines_sandbox.simulators.records import delete_records, fetch_records, touch_records
from crm_pipelines_sandbox.simulators.zendesk import SANDBOX, ZendeskSimulator
from crm_pipelines_sandbox.systems import build_store, sample_seeds

AS_OF = datetime.now(UTC).date() - timedelta(days=1)
SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3RzX29ubHk="


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "zendesk.sqlite"
    build_store(path, SANDBOX, sample_seeds(as_of=AS_OF))
    return path


class Receiver:
    """A webhook endpoint that verifies each delivery the way the product's receiver does; it can
    answer 503 to the first deliveries to make the simulator retry."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.sender = ZendeskSender(SECRET)
        self.accepted: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    if receiver.fail_first > 0:
                        receiver.fail_first -= 1
                        self.send_response(503)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                request = WebhookRequest(
                    method="POST",
                    url=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    received_at=datetime.now(UTC),
                )
                try:
                    receiver.sender.verify(request)
                    (event,) = receiver.sender.events(request, json.loads(body))
                    with receiver.lock:
                        receiver.accepted.append(event.payload | {"_event_type": event.event_type})
                    status = 200
                except Rejected as exc:
                    receiver.refused.append(exc.reason)
                    status = exc.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/zendesk"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    try:
        yield running
    finally:
        running.stop()


def simulator(store: Path, **kwargs: Any) -> ZendeskSimulator:
    options: dict[str, Any] = {"email": "agent@example.com", "api_token": "tok3n", "export_lag_seconds": 0.0}
    options.update(kwargs)
    return ZendeskSimulator(store, **options)


def client(
    sim: ZendeskSimulator, *, user: str = "agent@example.com/token", token: str = "tok3n"
) -> httpx.Client:
    return httpx.Client(base_url=sim.base_url, auth=(user, token), timeout=10)


def export_all(api: httpx.Client, path: str, key: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Follow an export's pages to end_of_stream; (items, requests)."""
    items: list[dict[str, Any]] = []
    answer = api.get(path, params=params)
    requests = 1
    while True:
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items += body[key]
        if body["end_of_stream"]:
            return items, requests
        answer = api.get(body["after_url"] if "after_url" in body else body["next_page"])
        requests += 1


def test_an_api_token_authenticates_as_email_slash_token_and_nothing_else(store: Path) -> None:
    with simulator(store) as sim:
        with client(sim) as api:
            me = api.get("/api/v2/users/me.json")
            assert me.status_code == 200
            assert me.json()["user"]["email"] == "agent@example.com"
            assert int(me.headers["X-Rate-Limit"]) == 700
            assert 0 < int(me.headers["X-Rate-Limit-Remaining"]) < 700
        for user, token in (("agent@example.com", "tok3n"), ("agent@example.com/token", "wrong")):
            with client(sim, user=user, token=token) as api:
                refused = api.get("/api/v2/users/me")
                assert refused.status_code == 401
                assert refused.json() == {"error": "Couldn't authenticate you"}


def test_the_cursor_ticket_export_pages_to_end_of_stream_and_shows_deleted_tickets(store: Path) -> None:
    live = {r["id"] for r in fetch_records(store, "tickets")}
    assert len(live) >= 4
    gone = sorted(live)[0]
    delete_records(store, "tickets", [gone], datetime.now(UTC) - timedelta(minutes=5))
    with simulator(store) as sim, client(sim) as api:
        items, requests = export_all(
            api, "/api/v2/incremental/tickets/cursor.json", "tickets", start_time=0, per_page=3
        )
        assert requests >= 2
        ids = [t["id"] for t in items]
        assert len(ids) == len(set(ids)) == len(live)
        by_id = {t["id"]: t for t in items}
        assert by_id[gone]["status"] == "deleted"
        assert {t["status"] for t in items} <= {
            "new",
            "open",
            "pending",
            "hold",
            "solved",
            "closed",
            "deleted",
        }
        assert [t["updated_at"] for t in items] == sorted(t["updated_at"] for t in items)
        without, _ = export_all(
            api, "/api/v2/incremental/tickets/cursor.json", "tickets", start_time=0, exclude_deleted="true"
        )
        assert {t["id"] for t in without} == live - {gone}

        # start_time is inclusive and in Unix seconds; a later change moves a ticket to the end.
        edited = sorted(live - {gone})[0]
        moment = datetime.now(UTC) - timedelta(minutes=1)
        touch_records(store, "tickets", [edited], moment, {"status": "pending"})
        since = int(moment.timestamp())
        changed, _ = export_all(api, "/api/v2/incremental/tickets/cursor.json", "tickets", start_time=since)
        assert [t["id"] for t in changed] == [edited]
        assert changed[0]["status"] == "pending"

        assert api.get("/api/v2/incremental/tickets/cursor.json").status_code == 400  # no start_time
        future = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
        assert (
            api.get("/api/v2/incremental/tickets/cursor.json", params={"start_time": future}).status_code
            == 400
        )
        assert (
            api.get(
                "/api/v2/incremental/tickets/cursor.json", params={"start_time": 0, "per_page": 1001}
            ).status_code
            == 400
        )


def test_the_exports_hold_back_the_last_minute(store: Path) -> None:
    edited = sorted(r["id"] for r in fetch_records(store, "users"))[0]
    touch_records(store, "users", [edited], datetime.now(UTC))
    with simulator(store, export_lag_seconds=60.0) as sim, client(sim) as api:
        items, _ = export_all(api, "/api/v2/incremental/users/cursor.json", "users", start_time=0)
        assert edited not in {u["id"] for u in items}
    with simulator(store) as sim, client(sim) as api:
        items, _ = export_all(api, "/api/v2/incremental/users/cursor.json", "users", start_time=0)
        assert edited in {u["id"] for u in items}


def test_the_time_based_organization_export_pages_by_end_time_and_shows_deletions(store: Path) -> None:
    orgs = fetch_records(store, "organizations")
    gone = orgs[0]["id"]
    delete_records(store, "organizations", [gone], datetime.now(UTC) - timedelta(minutes=2))
    with simulator(store, time_export_page=5) as sim, client(sim) as api:
        items, requests = export_all(
            api, "/api/v2/incremental/organizations.json", "organizations", start_time=0
        )
        assert requests >= 3
        ids = [o["id"] for o in items]
        assert len(ids) == len(set(ids)), "a time-based page repeated an organization"
        assert set(ids) == {o["id"] for o in fetch_records(store, "organizations", include_deleted=True)}
        deleted = {o["id"] for o in items if o["deleted_at"] is not None}
        assert gone in deleted
        first = api.get("/api/v2/incremental/organizations.json", params={"start_time": 0}).json()
        assert {"organizations", "next_page", "count", "end_time", "end_of_stream"} <= set(first)


def test_lists_use_cursor_pagination_of_at_most_100(store: Path) -> None:
    with simulator(store) as sim, client(sim) as api:
        seen: list[int] = []
        answer = api.get("/api/v2/users", params={"page[size]": 10})
        while True:
            body = answer.json()
            seen += [u["id"] for u in body["users"]]
            if not body["meta"]["has_more"]:
                break
            assert body["links"]["next"]
            answer = api.get(
                "/api/v2/users", params={"page[size]": 10, "page[after]": body["meta"]["after_cursor"]}
            )
        assert sorted(seen) == sorted(r["id"] for r in fetch_records(store, "users"))
        too_big = api.get("/api/v2/tickets", params={"page[size]": 101})
        assert too_big.status_code == 400
        assert too_big.json()["error"] == "InvalidPaginationParameter"
        assert api.get("/api/v2/tickets/999999999").json() == {
            "error": "RecordNotFound",
            "description": "Not found",
        }


def test_a_ticket_created_with_its_requester_and_organization_then_replied_to_and_solved(store: Path) -> None:
    org = fetch_records(store, "organizations")[0]
    with simulator(store) as sim, client(sim) as api:
        created = api.post(
            "/api/v2/tickets",
            json={
                "ticket": {
                    "external_id": "sugarcrm:case-1",
                    "subject": "Printer on fire",
                    "comment": {"body": "It is really on fire."},
                    "requester": {"name": "New Person", "email": "new.person@example.org"},
                    "organization_id": org["id"],
                    "priority": "urgent",
                    "type": "incident",
                }
            },
        )
        assert created.status_code == 201, created.text
        ticket = created.json()["ticket"]
        assert (ticket["status"], ticket["description"], ticket["organization_id"]) == (
            "new",
            "It is really on fire.",
            org["id"],
        )
        requester = api.get(f"/api/v2/users/{ticket['requester_id']}").json()["user"]
        assert (requester["email"], requester["role"], requester["organization_id"]) == (
            "new.person@example.org",
            "end-user",
            org["id"],
        )
        found = api.get("/api/v2/tickets", params={"external_id": "sugarcrm:case-1"}).json()["tickets"]
        assert [t["id"] for t in found] == [ticket["id"]]

        reply = api.put(
            f"/api/v2/tickets/{ticket['id']}",
            json={"ticket": {"status": "solved", "comment": {"body": "Extinguished.", "public": True}}},
        )
        assert reply.status_code == 200
        comments = api.get(f"/api/v2/tickets/{ticket['id']}/comments").json()["comments"]
        assert [(c["body"], c["public"]) for c in comments] == [
            ("It is really on fire.", True),
            ("Extinguished.", True),
        ]
        metric = api.get(f"/api/v2/tickets/{ticket['id']}/metrics").json()["ticket_metric"]
        assert metric["solved_at"] is not None

        events, _ = export_all(
            api,
            "/api/v2/incremental/ticket_events.json",
            "ticket_events",
            start_time=0,
            include="comment_events",
        )
        bodies = [c["body"] for e in events if e["ticket_id"] == ticket["id"] for c in e["child_events"]]
        assert bodies == ["It is really on fire.", "Extinguished."]

        closed = api.put(f"/api/v2/tickets/{ticket['id']}", json={"ticket": {"status": "closed"}})
        assert closed.status_code == 200
        refused = api.put(f"/api/v2/tickets/{ticket['id']}", json={"ticket": {"subject": "again"}})
        assert refused.status_code == 422
        assert refused.json()["details"]["status"][0]["error"] == "ClosedPreventsUpdate"


def test_invalid_tickets_are_refused_with_record_invalid(store: Path) -> None:
    with simulator(store) as sim, client(sim) as api:
        bad = api.post("/api/v2/tickets", json={"ticket": {"subject": "x", "priority": "critical"}})
        assert bad.status_code == 422
        body = bad.json()
        assert body["error"] == "RecordInvalid"
        assert body["description"] == "Record validation errors"
        assert set(body["details"]) == {"priority", "description"}
        assert body["details"]["priority"][0]["error"] == "InvalidValue"
        assert api.post("/api/v2/tickets", json={"subject": "not wrapped"}).status_code == 400
        missing = api.put("/api/v2/tickets/999999999", json={"ticket": {"status": "open"}})
        assert missing.status_code == 404
        assert missing.json()["error"] == "RecordNotFound"
        orphan = api.post(
            "/api/v2/tickets", json={"ticket": {"comment": {"body": "hi"}, "organization_id": 999999999}}
        )
        assert orphan.json()["details"]["organization_id"][0]["description"] == "Organization: is invalid"


def test_rate_limits_answer_429_with_retry_after(store: Path) -> None:
    with simulator(store, rate_limit=RateLimit(3, 60.0)) as sim, client(sim) as api:
        statuses = [api.get("/api/v2/users/me").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        limited = api.get("/api/v2/users/me")
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.headers["X-Rate-Limit-Remaining"] == "0"
    with simulator(store, export_rate_limit=RateLimit(2, 60.0)) as sim, client(sim) as api:
        path = "/api/v2/incremental/users/cursor.json"
        codes = [api.get(path, params={"start_time": 0}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert api.get("/api/v2/users/me").status_code == 200  # only the exports' own budget is spent


def test_webhooks_are_signed_so_the_receiver_verifies_them_and_retried_on_5xx(store: Path) -> None:
    receiver = Receiver(fail_first=2)
    try:
        with simulator(store, webhook_url=receiver.url, webhook_secret=SECRET) as sim, client(sim) as api:
            assert sim.webhooks is not None
            sim.webhooks.backoff_seconds = 0.05
            created = api.post(
                "/api/v2/tickets", json={"ticket": {"comment": {"body": "Help"}, "priority": "low"}}
            )
            ticket_id = created.json()["ticket"]["id"]
            api.put(
                f"/api/v2/tickets/{ticket_id}",
                json={"ticket": {"status": "pending", "comment": {"body": "Need more info", "public": True}}},
            )
            assert sim.webhooks.wait_idle(10)
            types = [e["type"] for e in receiver.accepted]
            assert types == [
                "zen:event-type:ticket.created",
                "zen:event-type:ticket.comment_added",
                "zen:event-type:ticket.status_changed",
            ]
            assert not receiver.refused
            assert sim.webhooks.deliveries[0].attempts == 3  # two 503s, then delivered
            changed = receiver.accepted[2]
            assert changed["detail"]["id"] == str(ticket_id)
            assert changed["detail"]["status"] == "PENDING"
            assert changed["event"] == {"previous": "NEW", "current": "PENDING"}

            # A resend carries the same event id; a new send for the ticket a new one.
            sim.resend(receiver.accepted[0])
            again = sim.send_event(
                "ticket.status_changed", ticket_id, {"previous": "NEW", "current": "PENDING"}
            )
            assert sim.webhooks.wait_idle(10)
            assert receiver.accepted[3]["id"] == receiver.accepted[0]["id"]
            assert receiver.accepted[4]["id"] == again["id"] != changed["id"]
    finally:
        receiver.stop()


def test_a_webhook_signed_with_another_secret_is_refused(store: Path, receiver: Receiver) -> None:
    with simulator(store, webhook_url=receiver.url, webhook_secret="another") as sim, client(sim) as api:
        assert sim.webhooks is not None
        created = api.post("/api/v2/tickets", json={"ticket": {"comment": {"body": "Help"}}})
        assert created.status_code == 201  # the API call never waits for, or fails with, the webhook
        assert sim.webhooks.wait_idle(10)
        assert receiver.refused == ["signature does not match"]
        assert not receiver.accepted
        assert sim.webhooks.deliveries[0].attempts == 1  # a 401 is not retried


def test_an_unreachable_webhook_never_fails_the_api_call(store: Path) -> None:
    with simulator(store, webhook_url="http://127.0.0.1:9/webhooks", webhook_secret=SECRET) as sim:
        assert sim.webhooks is not None
        sim.webhooks.backoff_seconds = 0.01
        with client(sim) as api:
            created = api.post("/api/v2/tickets", json={"ticket": {"comment": {"body": "Help"}}})
            assert created.status_code == 201
        assert sim.webhooks.wait_idle(10)
        delivery = sim.webhooks.deliveries[0]
        assert (delivery.delivered, delivery.attempts, delivery.status) == (
            False,
            sim.webhooks.max_attempts,
            None,
        )


def test_seed_cases_become_tickets_with_zendesk_values(store: Path) -> None:
    tickets = fetch_records(store, "tickets", include_deleted=True)
    seeds = sample_seeds(as_of=AS_OF).cases
    assert len(tickets) == len(seeds)
    assert {t["status"] for t in tickets} <= {"new", "open", "pending", "hold", "solved", "closed"}
    assert "hold" in {t["status"] for t in tickets}  # on_hold is written the Zendesk way
    assert all(t["requester_id"] is not None for t in tickets)
    with simulator(store) as sim, client(sim) as api:
        metrics = api.get("/api/v2/ticket_metrics").json()["ticket_metrics"]
        solved = {m["ticket_id"] for m in metrics if m["solved_at"]}
        assert solved == {
            t["id"] for t in fetch_records(store, "tickets") if t["status"] in ("solved", "closed")
        }
