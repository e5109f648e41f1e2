"""Zendesk Support through the one engine, against its simulator: every declared object read in full
and then incrementally, deleted tickets seen as deleted, public replies read out of the ticket events
export, and tickets written by external id (never twice), refused with Zendesk's reason, updated by id."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from crm_pipelines.connectors.auth import ConnectionSettings
from crm_pipelines.connectors.collect import DELETED, ExtractStats, output_schema
from crm_pipelines.connectors.engine import extract_object
from crm_pipelines.connectors.limits import clear_buckets
from crm_pipelines.connectors.spec import SystemSpec, load_system
from crm_pipelines.connectors.writes import update_records, upsert_records
from crm_pipelines_sandbox.simulators.records import (
    count_records,
    delete_records,
    fetch_records,
    touch_records,
)
from crm_pipelines_sandbox.simulators.zendesk import SANDBOX, ZendeskSimulator
from crm_pipelines_sandbox.systems import build_store, sample_seeds

AS_OF = date(2026, 11, 25)
EDIT = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


@dataclass
class Zendesk:
    system: SystemSpec
    store: Path
    sim: ZendeskSimulator
    connection: ConnectionSettings

    def read(self, object_name: str, **kwargs: Any) -> tuple[list[dict[str, Any]], ExtractStats]:
        stats = ExtractStats()
        batches = list(
            extract_object(
                system=self.system, object_name=object_name, connection=self.connection, stats=stats, **kwargs
            )
        )
        table = pa.Table.from_batches(
            batches, schema=output_schema(system=self.system, object_name=object_name)
        )
        return table.to_pylist(), stats


@pytest.fixture
def zendesk(tmp_path: Path) -> Iterator[Zendesk]:
    clear_buckets()
    store = tmp_path / "zendesk.sqlite"
    build_store(store, SANDBOX, sample_seeds(accounts=24, as_of=AS_OF))
    started = SANDBOX.start(store)
    assert isinstance(started.simulator, ZendeskSimulator)
    try:
        yield Zendesk(load_system(name="zendesk"), store, started.simulator, SANDBOX.connection(started))
    finally:
        started.simulator.stop()
        clear_buckets()


def test_every_declared_object_reads_in_full_then_only_what_changed(zendesk: Zendesk) -> None:
    # Two public replies on one ticket, so the comment object has something to read.
    ticket = sorted(r["id"] for r in fetch_records(zendesk.store, "tickets") if r["status"] != "closed")[0]
    reply = [{"id": ticket, "comment": {"body": "First answer", "public": True}}]
    assert [
        r.status
        for r in update_records(
            system=zendesk.system, object_name="tickets", connection=zendesk.connection, records=reply
        )
    ] == ["updated"]
    store_objects = {"organizations": "organizations", "users": "users", "tickets": "tickets"}
    watermarks: dict[str, datetime] = {}
    for object_name in zendesk.system.objects:
        rows, stats = zendesk.read(object_name, page_size=4, include_deleted=False)
        assert rows, object_name
        assert not any(r[DELETED] for r in rows), object_name
        assert stats.max_cursor is not None
        watermarks[object_name] = stats.max_cursor
        if object_name in store_objects:
            live = {str(r["id"]) for r in fetch_records(zendesk.store, store_objects[object_name])}
            assert {r["id"] for r in rows} == live, object_name
    comments, _ = zendesk.read("ticket_comments")
    assert [(c["ticket_id"], c["body"], c["public"]) for c in comments] == [
        (str(ticket), "First answer", "true")
    ]

    # Changes after the first read: an edited organization, user and ticket, a deleted ticket, a reply.
    # Stamps are whole seconds: the window of the changes starts on a second after the first reply's.
    time.sleep(1.1)
    since = datetime.now(UTC).replace(microsecond=0)
    later = datetime.now(UTC)
    org = fetch_records(zendesk.store, "organizations")[0]["id"]
    user = fetch_records(zendesk.store, "users")[0]["id"]
    tickets = sorted(r["id"] for r in fetch_records(zendesk.store, "tickets"))
    touch_records(zendesk.store, "organizations", [org], later, {"notes": "key account"})
    touch_records(zendesk.store, "users", [user], later, {"phone": "+49 40 1234567"})
    touch_records(zendesk.store, "tickets", [tickets[1]], later, {"priority": "urgent"})
    delete_records(zendesk.store, "tickets", [tickets[2]], later)
    update_records(
        system=zendesk.system,
        object_name="tickets",
        connection=zendesk.connection,
        records=[{"id": ticket, "comment": {"body": "Second answer", "public": True}}],
    )
    orgs, _ = zendesk.read("organizations", since=since, include_deleted=True)
    assert [(r["id"], r["notes"]) for r in orgs] == [(str(org), "key account")]
    users, _ = zendesk.read("users", since=since, include_deleted=True)
    assert [(r["id"], r["phone"]) for r in users] == [(str(user), "+49 40 1234567")]
    changed, _ = zendesk.read("tickets", since=since, include_deleted=True)
    by_id = {r["id"]: r for r in changed}
    assert by_id[str(tickets[1])]["priority"] == "urgent"
    assert not by_id[str(tickets[1])][DELETED]
    assert by_id[str(tickets[2])][DELETED]
    assert by_id[str(tickets[2])]["status"] == "deleted"
    assert str(ticket) in by_id  # the reply changed its ticket too
    replies, _ = zendesk.read("ticket_comments", since=since, include_deleted=True)
    assert [r["body"] for r in replies] == ["Second answer"]
    metrics, _ = zendesk.read("ticket_metrics", since=since)
    assert {r["ticket_id"] for r in metrics} >= {str(tickets[1]), str(ticket)}
    # A full read afterwards leaves the deleted ticket out.
    full, _ = zendesk.read("tickets", include_deleted=False)
    assert str(tickets[2]) not in {r["id"] for r in full}


def test_tickets_are_created_once_by_external_id_and_refused_with_zendesks_reason(zendesk: Zendesk) -> None:
    org = fetch_records(zendesk.store, "organizations")[0]["id"]
    case = {
        "external_id": "sugarcrm:9d3c7c2e-case-0001",
        "subject": "Cannot log in",
        "comment": {"body": "The portal says my password expired.", "public": True},
        "requester": {"name": "Lena Neumann", "email": "lena.neumann@nordwind-logistik.de"},
        "organization_id": org,
        "priority": "high",
        "type": "incident",
        "status": "open",
    }
    invalid = {
        "external_id": "sugarcrm:9d3c7c2e-case-0002",
        "comment": {"body": "Made up status."},
        "status": "waiting",
    }
    before = count_records(zendesk.store, "tickets")
    for run in range(2):
        results = upsert_records(
            system=zendesk.system,
            object_name="tickets",
            connection=zendesk.connection,
            external_id_field="external_id",
            records=[case, invalid],
        )
        assert [r.status for r in results] == (
            ["created", "rejected"] if run == 0 else ["updated", "rejected"]
        )
        assert results[0].record_id
        assert results[1].error_code == "RecordInvalid"
        assert results[1].reason == "Record validation errors; Status: waiting is not valid"
    assert count_records(zendesk.store, "tickets") == before + 1  # created once, run twice
    (ticket,) = [
        t for t in fetch_records(zendesk.store, "tickets") if t["external_id"] == case["external_id"]
    ]
    (requester,) = fetch_records(zendesk.store, "users", [ticket["requester_id"]])
    assert (requester["email"], ticket["organization_id"], ticket["status"]) == (
        "lena.neumann@nordwind-logistik.de",
        org,
        "open",
    )

    # An update by id lands (status and a public reply); an unknown id is refused, never created.
    results = update_records(
        system=zendesk.system,
        object_name="tickets",
        connection=zendesk.connection,
        records=[
            {"id": ticket["id"], "status": "solved", "comment": {"body": "Password reset.", "public": True}},
            {"id": 987654321, "status": "open"},
        ],
    )
    assert [(r.status, r.error_code) for r in results] == [("updated", None), ("rejected", "RecordNotFound")]
    rows, _ = zendesk.read("tickets", since=datetime.now(UTC) - timedelta(minutes=1), include_deleted=True)
    assert {r["id"]: r["status"] for r in rows}[str(ticket["id"])] == "solved"
    comments, _ = zendesk.read("ticket_comments")
    assert [c["body"] for c in comments if c["ticket_id"] == str(ticket["id"])] == [
        "The portal says my password expired.",
        "The portal says my password expired.",
        "Password reset.",
    ]
    assert count_records(zendesk.store, "tickets") == before + 1
