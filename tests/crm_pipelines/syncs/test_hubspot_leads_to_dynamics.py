"""HubSpot leads become Dynamics 365 contacts, once: the real sandbox and the nightly job's assets.

A marketer adds two leads in HubSpot through its public API: a person no other system knows, at a
company Dynamics holds, and a person Dynamics already holds as a contact. Night 1 (extracts, staging,
identity resolution, core.lead, the hubspot_leads_to_dynamics sync) creates the first in Dynamics,
linked to the company's Dynamics account, and leaves the second alone. Re-running the sync after
losing its state (a crash between the write and the state's commit) updates what it made instead of
creating it again. Night 2's extract brings the new contact back and identity resolution puts it in the
lead's golden record: nothing is created again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import duckdb
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crm_pipelines.connectors.auth import ConnectionSettings
from crm_pipelines.connectors.engine import extract_object, output_schema
from crm_pipelines.connectors.spec import load_system
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.warehouse.reconcile import reconcile_partition
from crm_pipelines_sandbox.nights import SandboxNights, sandbox_nights
from crm_pipelines_sandbox.run import Sandbox

SYNC = "hubspot_leads_to_dynamics"
TODAY = dt.datetime.now(dt.UTC).date()
YESTERDAY = TODAY - dt.timedelta(days=1)
NEW_LEAD = {
    "firstname": "Wilhelmina",
    "lastname": "Quast",
    "email": "wilhelmina.quast@quast-leads.example",
    "phone": "+49 30 90182736",
    "jobtitle": "Head of Procurement",
    "lifecyclestage": "marketingqualifiedlead",
    "hs_lead_status": "IN_PROGRESS",
}


@dataclass
class Estate:
    nights: SandboxNights
    http: httpx.Client

    @property
    def box(self) -> Sandbox:
        return self.nights.box

    @property
    def env(self) -> dict[str, str]:
        return self.nights.env

    def night(self, partition: dt.date, selection: list[dg.AssetKey] | None = None) -> str:
        return self.nights.night(partition, selection)

    def warehouse(self, *, read_only: bool = True) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(self.nights.root / "warehouse.duckdb"), read_only=read_only)

    def hubspot_lead(self, properties: dict[str, str]) -> str:
        """A contact made through HubSpot's batch upsert by e-mail (what a form or an import does)."""
        answer = self.http.post(
            f"{self.env['HUBSPOT_BASE_URL']}/crm/v3/objects/contacts/batch/upsert",
            json={"inputs": [{"idProperty": "email", "id": properties["email"], "properties": properties}]},
            headers={"Authorization": f"Bearer {self.env['HUBSPOT_ACCESS_TOKEN']}"},
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["results"][0]["id"])

    def dynamics_contacts(self) -> list[dict[str, object]]:
        """A fresh full read of Dynamics 365's contacts through the Web API."""
        spec = load_system(name="dynamics")
        connection = ConnectionSettings(**spec.connection_fields(self.env))
        batches = list(
            extract_object(system=spec, object_name="contacts", connection=connection, include_deleted=False)
        )
        table = pa.Table.from_batches(batches, schema=output_schema(system=spec, object_name="contacts"))
        rows: list[dict[str, object]] = table.to_pylist()
        return rows

    def golden_of(self, source: str, source_id: str) -> str:
        with self.warehouse() as con:
            row = con.execute(
                "SELECT golden_id FROM core.xref_identity WHERE source = ? AND source_id = ? AND entity = ?",
                [source, source_id, "contact" if source != "erp" else "account"],
            ).fetchone()
        assert row is not None, (source, source_id)
        return str(row[0])

    def created_by_run(self, run_id: str) -> tuple[int, int]:
        with self.warehouse() as con:
            row = con.execute(
                "SELECT created, updated FROM ops.sync_runs WHERE sync = ? AND run_id = ?", [SYNC, run_id]
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


# What the flow needs: both CRMs' accounts, contacts and leads, staging, identity, core.lead, the sync.
_STEPS = (
    ["raw", "hubspot"],
    ["raw", "dynamics"],
    ["staging", "account"],
    ["staging", "contact"],
    ["staging", "lead"],
    ["identity", "resolution"],
    ["core", "identity"],
    ["core", "lead"],
    ["reverse_sync", SYNC],
)


def _selected(key: dg.AssetKey) -> bool:
    return (
        key.path[0] in ("hubspot", "dynamics")
        and key.path[1] in ("companies", "accounts", "contacts", "leads")
    ) or key.path in _STEPS


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    root = tmp_path_factory.mktemp("leads")
    with (
        sandbox_nights(root, select=_selected, contacts=200, seed=11, as_of=YESTERDAY) as nights,
        httpx.Client(timeout=30) as http,
    ):
        assert dg.AssetKey(["reverse_sync", SYNC]) in nights.selection
        yield Estate(nights, http)


def _company_in_both(box: Sandbox) -> tuple[str, str]:
    """A live company HubSpot and Dynamics both hold (the generator's truth): its HubSpot company id."""
    assert box.layout is not None
    truth = pq.read_table(box.layout.truth).to_pylist()
    live = {(str(r["dataset"]), str(r["source_id"])): str(r["entity_id"]) for r in truth if not r["deleted"]}
    in_dynamics = {entity for (dataset, _), entity in live.items() if dataset == "dynamics.accounts"}
    return min(
        (entity, source_id)
        for (dataset, source_id), entity in live.items()
        if dataset == "hubspot.companies" and entity in in_dynamics
    )


def _dynamics_only_person(estate: Estate) -> dict[str, object]:
    """A live Dynamics contact with an e-mail and names whose person HubSpot does not hold."""
    assert estate.box.layout is not None
    truth = pq.read_table(estate.box.layout.truth).to_pylist()
    in_hubspot = {r["entity_id"] for r in truth if r["dataset"] == "hubspot.contacts"}
    person = {str(r["source_id"]): r["entity_id"] for r in truth if r["dataset"] == "dynamics.contacts"}
    return min(
        (
            c
            for c in estate.dynamics_contacts()
            if c["emailaddress1"]
            and c["firstname"]
            and c["lastname"]
            and person.get(str(c["contactid"])) not in in_hubspot
        ),
        key=lambda c: str(c["contactid"]),
    )


def test_hubspot_leads_become_dynamics_contacts_once(estate: Estate) -> None:
    entity, company_id = _company_in_both(estate.box)
    new_lead = estate.hubspot_lead({**NEW_LEAD, "associatedcompanyid": company_id})
    known = _dynamics_only_person(estate)
    known_lead = estate.hubspot_lead(
        {
            "firstname": str(known["firstname"]),
            "lastname": str(known["lastname"]),
            "email": str(known["emailaddress1"]).lower(),
            "lifecyclestage": "lead",
            "hs_lead_status": "NEW",
        }
    )

    # Night 1: the new lead is created in Dynamics, the known one is matched, not created.
    first = estate.night(YESTERDAY)
    contacts = estate.dynamics_contacts()
    made = {str(c["new_hubspotcontactid"]): c for c in contacts if c["new_hubspotcontactid"]}
    created, _ = estate.created_by_run(first)
    assert created == len(made) > 0
    assert new_lead in made
    assert known_lead not in made
    assert sum(1 for c in contacts if str(c["emailaddress1"] or "").lower() == NEW_LEAD["email"]) == 1
    assert sum(1 for c in contacts if c["emailaddress1"] == known["emailaddress1"]) == 1
    assert estate.golden_of("hubspot", known_lead) == estate.golden_of("dynamics", str(known["contactid"]))
    record = made[new_lead]
    assert (record["firstname"], record["lastname"], record["jobtitle"]) == (
        "Wilhelmina",
        "Quast",
        "Head of Procurement",
    )
    assert (record["emailaddress1"], record["telephone1"]) == (NEW_LEAD["email"], "+493090182736")
    # Linked to the Dynamics account of the lead's company (one golden account with the HubSpot company).
    with estate.warehouse() as con:
        accounts = con.execute(
            "SELECT d.source_id FROM core.xref_identity AS h JOIN core.xref_identity AS d USING (golden_id) "
            "WHERE h.entity = 'account' AND h.source = 'hubspot' AND h.source_id = ? "
            "AND d.entity = 'account' AND d.source = 'dynamics'",
            [company_id],
        ).fetchall()
    assert record["account_id"] in {str(a) for (a,) in accounts}, entity

    # The read path: HubSpot's leads are the contacts in (or through) a lead stage, and the
    # reconciliation counts exactly those; Dynamics' own leads arrive beside them.
    with estate.warehouse() as con:
        leads = dict(con.execute("SELECT source, count(*) FROM core.lead GROUP BY source").fetchall())
        stage = con.execute(
            "SELECT lifecycle_stage, status FROM core.lead WHERE record_id = ?", [f"hubspot:{new_lead}"]
        ).fetchone()
        reconciled = {
            (r.source, r.entity): r
            for r in reconcile_partition(con, partition=YESTERDAY.isoformat(), mappings=load_mappings())
        }
    hubspot_leads = reconciled[("hubspot", "lead")]
    assert hubspot_leads.adds_up, hubspot_leads.detail
    assert 0 < hubspot_leads.extracted < reconciled[("hubspot", "contact")].extracted
    assert hubspot_leads.loaded == leads["hubspot"]
    assert reconciled[("dynamics", "lead")].adds_up
    assert leads.get("dynamics", 0) > 0
    assert stage == ("mql", "working")

    # A crash after the writes, before their state was committed: the re-run updates, never creates.
    with estate.warehouse(read_only=False) as con:
        con.execute("DELETE FROM ops.sync_state WHERE sync = ?", [SYNC])
    again = estate.night(YESTERDAY, [dg.AssetKey(["reverse_sync", SYNC])])
    assert estate.created_by_run(again) == (0, len(made))
    after = estate.dynamics_contacts()
    assert sorted(str(c["contactid"]) for c in after) == sorted(str(c["contactid"]) for c in contacts)

    # Night 2: the extract brings the new contact back and identity puts it in the lead's golden record.
    second = estate.night(TODAY)
    assert estate.created_by_run(second) == (0, 0)
    assert len(estate.dynamics_contacts()) == len(contacts)
    assert estate.golden_of("hubspot", new_lead) == estate.golden_of("dynamics", str(record["contactid"]))
