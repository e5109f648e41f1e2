"""Example 3, SugarCRM cases <-> Zendesk Support tickets, end to end on the sandbox, without loops.

Real parts: the sandbox's SugarCRM (REST v11) and Zendesk Support simulators, the nightly job's
assets (extracts, raw loads, staging, identity resolution, core, the declared syncs
``sugarcrm_cases_to_zendesk`` and ``zendesk_tickets_to_sugarcrm``) and a DuckDB warehouse. An agent
works tickets through Zendesk's public API; the next night the SugarCRM cases show the status, the
resolution and the public replies, and a night after that nothing moves in either system.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pyarrow as pa
import pytest

from crm_pipelines.connectors.auth import ConnectionSettings
from crm_pipelines.connectors.engine import extract_object, output_schema
from crm_pipelines.connectors.spec import load_system
from crm_pipelines.webhooks.store import EventStore
from crm_pipelines_sandbox.nights import SandboxNights, sandbox_nights
from sensors.webhook_events import WEBHOOK_OBJECTS_TAG, WEBHOOK_ROUTE_TAG, webhook_events_sensor

SYNCS = ("sugarcrm_cases_to_zendesk", "zendesk_tickets_to_sugarcrm")
TODAY = dt.datetime.now(dt.UTC).date()
YESTERDAY = TODAY - dt.timedelta(days=1)


@dataclass
class Estate:
    nights: SandboxNights
    http: httpx.Client

    @property
    def env(self) -> dict[str, str]:
        return self.nights.env

    def night(self, day: dt.date) -> None:
        self.nights.night(day)

    def read(self, system: str, object_name: str) -> list[dict[str, Any]]:
        """A fresh full read of a system's object through the engine (the vendor's public API)."""
        spec = load_system(name=system)
        connection = ConnectionSettings(**spec.connection_fields(self.env))
        table = pa.Table.from_batches(
            list(
                extract_object(
                    system=spec, object_name=object_name, connection=connection, include_deleted=False
                )
            ),
            schema=output_schema(system=spec, object_name=object_name),
        )
        # What the system holds, without the extract's own stamp.
        return [{k: v for k, v in row.items() if k != "_extracted_at"} for row in table.to_pylist()]

    def cases(self) -> dict[str, dict[str, Any]]:
        return {str(r["id"]): r for r in self.read("sugarcrm", "Cases")}

    def tickets(self) -> dict[str, list[dict[str, Any]]]:
        """Zendesk tickets by the external id they carry (a CRM case's record id)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for ticket in self.read("zendesk", "tickets"):
            out.setdefault(str(ticket["external_id"]), []).append(ticket)
        return out

    def agent(self, ticket_id: str, ticket: dict[str, Any]) -> None:
        """A service agent updates a ticket (Zendesk's PUT /api/v2/tickets/{id})."""
        answer = self.http.put(
            f"{self.env['ZENDESK_BASE_URL']}/api/v2/tickets/{ticket_id}.json",
            json={"ticket": ticket},
            auth=(f"{self.env['ZENDESK_EMAIL']}/token", self.env["ZENDESK_API_TOKEN"]),
        )
        assert answer.status_code == 200, answer.text

    def new_case(self, subject: str, contact: dict[str, Any]) -> str:
        """A support rep logs a case in SugarCRM (the Integrate API, as a web-to-case form does)."""
        token = self.http.post(
            f"{self.env['SUGARCRM_BASE_URL']}/rest/v11_24/oauth2/token",
            json={
                "grant_type": "password",
                "username": self.env["SUGARCRM_USERNAME"],
                "password": self.env["SUGARCRM_PASSWORD"],
                "client_id": "sugar",
                "client_secret": "",
                "platform": "crm_pipelines_test",
            },
        ).json()["access_token"]
        answer = self.http.patch(
            f"{self.env['SUGARCRM_BASE_URL']}/rest/v11_24/integrate/Cases/sync_key/web-{subject[:12]}",
            json={
                "name": subject,
                "description": f"{subject}: reported through the web form.",
                "status": "New",
                "priority": "P1",
                "type": "Product",
                "source": "Web",
                "account_id": contact["account_id"],
                "primary_contact_id": contact["id"],
            },
            headers={"OAuth-Token": token},
        )
        assert answer.status_code in (200, 201), answer.text
        return str(answer.json()["record"])

    def open_cases(self) -> dict[str, str]:
        """SugarCRM case id -> its requester e-mail, for the open cases the warehouse holds."""
        with self.nights.warehouse() as con:
            rows = con.execute(
                "SELECT c.source_id, g.email FROM core.support_case AS c "
                "LEFT JOIN core.xref_identity AS x ON x.record_id = c.contact_record_id "
                "AND x.entity = 'contact' LEFT JOIN core.golden_contact AS g USING (golden_id) "
                "WHERE c.source = 'sugarcrm' AND NOT coalesce(c.is_deleted, false) "
                "AND c.status NOT IN ('solved', 'closed')"
            ).fetchall()
        return {str(i): e for i, e in rows}

    def sync_states(self) -> list[tuple[Any, ...]]:
        with self.nights.warehouse() as con:
            return con.execute(
                'SELECT sync, source_key, target_id, "values", status FROM ops.sync_state '
                "WHERE sync IN (?, ?) ORDER BY ALL",
                list(SYNCS),
            ).fetchall()


# The two systems' objects, their raw loads, the parties and cases, identity and the two syncs.
_STEPS = (
    ["raw", "sugarcrm"],
    ["raw", "zendesk"],
    ["staging", "account"],
    ["staging", "contact"],
    ["staging", "support_case"],
    ["identity", "resolution"],
    ["core", "identity"],
    ["core", "support_case"],
)


def _selected(key: dg.AssetKey) -> bool:
    return (
        key.path[0] in {"sugarcrm", "zendesk"}
        or key.path in _STEPS
        or (key.path[0] == "reverse_sync" and key.path[1] in SYNCS)
    )


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    root = tmp_path_factory.mktemp("flow_sugarcrm_zendesk")
    with (
        sandbox_nights(
            root, select=_selected, contacts=600, seed=3, as_of=YESTERDAY, webhooks=True
        ) as nights,
        httpx.Client(timeout=30) as http,
    ):
        yield Estate(nights, http)


def test_cases_open_tickets_once_and_ticket_work_flows_back_without_bouncing(estate: Estate) -> None:
    seeded_tickets = sum(1 for external_id in estate.tickets() if external_id.startswith("sugarcrm:"))
    assert seeded_tickets == 0

    # Three customers report problems through Sugar's web-to-case form.
    people = [c for c in estate.read("sugarcrm", "Contacts") if c.get("account_id") and c.get("email1")]
    subjects = ("Scanner offline", "Invoice portal login fails", "Label printer jams")
    new_cases = [estate.new_case(subject, person) for subject, person in zip(subjects, people, strict=False)]
    assert len(new_cases) == 3

    # Sugar's Web Logic Hooks announce the new cases: the sensor asks for the case-to-ticket run now.
    store = EventStore(Path(estate.env["CRM_WEBHOOK_STORE"]))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not set(new_cases) <= {e.object_id for e in store.since(0)}:
        time.sleep(0.1)
    with dg.instance_for_test() as instance:
        created = webhook_events_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(created, dg.SensorResult)
    [request] = [
        r for r in created.run_requests or [] if r.tags[WEBHOOK_ROUTE_TAG] == "sugarcrm_case_created"
    ]
    assert set(request.tags[WEBHOOK_OBJECTS_TAG].split(",")) == set(new_cases)
    assert dg.AssetKey(["reverse_sync", "sugarcrm_cases_to_zendesk"]) in (request.asset_selection or [])

    # Night 1: every open SugarCRM case opens one ticket for its requester, and the case learns it.
    estate.night(YESTERDAY)
    open_cases = estate.open_cases()
    assert set(new_cases) <= set(open_cases)
    tickets = estate.tickets()
    cases = estate.cases()
    for case_id, email in open_cases.items():
        [ticket] = tickets[f"sugarcrm:{case_id}"]
        assert ticket["subject"] == cases[case_id]["name"]
        if email:
            assert ticket["requester_id"] is not None
        assert cases[case_id]["zendesk_ticket_id_c"] == str(ticket["id"])

    # An agent solves one ticket with a public reply and asks a question on another.
    solved_case, waiting_case = new_cases[:2]
    solved_ticket = str(tickets[f"sugarcrm:{solved_case}"][0]["id"])
    waiting_ticket = str(tickets[f"sugarcrm:{waiting_case}"][0]["id"])
    estate.agent(
        solved_ticket,
        {
            "status": "solved",
            "comment": {"body": "Replaced the power supply; the unit runs again.", "public": True},
        },
    )
    estate.agent(
        waiting_ticket,
        {
            "status": "pending",
            "comment": {"body": "Which firmware version does the unit show?", "public": True},
        },
    )
    estate.agent(waiting_ticket, {"comment": {"body": "Internal: check the RMA list.", "public": False}})

    # Zendesk's signed webhooks reach the receiver, and the sensor asks for the cases' run at once.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = {e.object_id for e in store.since(0, limit=10_000)}
        if {solved_ticket, waiting_ticket} <= seen:
            break
        time.sleep(0.1)
    with dg.instance_for_test() as instance:
        result = webhook_events_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    routed = {r.tags[WEBHOOK_ROUTE_TAG]: r for r in result.run_requests or []}
    objects = routed["zendesk_ticket_changed"].tags[WEBHOOK_OBJECTS_TAG].split(",")
    assert {solved_ticket, waiting_ticket} <= set(objects)
    assert dg.AssetKey(["reverse_sync", "zendesk_tickets_to_sugarcrm"]) in (
        routed["zendesk_ticket_changed"].asset_selection or []
    )

    # Night 2: status, resolution and public replies reach the cases; no ticket is opened twice.
    estate.night(TODAY)
    cases = estate.cases()
    assert cases[solved_case]["status"] == "Closed"
    assert cases[solved_case]["resolution"] == "Replaced the power supply; the unit runs again."
    assert "Replaced the power supply" in (cases[solved_case]["work_log"] or "")
    assert cases[waiting_case]["status"] == "Pending Input"
    assert "Which firmware version" in (cases[waiting_case]["work_log"] or "")
    assert "Internal" not in (cases[waiting_case]["work_log"] or "")
    tickets = estate.tickets()
    assert all(len(tickets[f"sugarcrm:{case_id}"]) == 1 for case_id in open_cases)

    # Night 3, nobody worked: nothing moves in either system (the status written into Sugar reads
    # back equal and is no edit; the create never updates a ticket).
    states, before_cases, before_tickets = estate.sync_states(), cases, tickets
    estate.night(TODAY)
    assert estate.sync_states() == states
    assert estate.cases() == before_cases
    assert estate.tickets() == before_tickets
