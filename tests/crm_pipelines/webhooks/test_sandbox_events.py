"""Webhooks on the sandbox: a HubSpot change reaches the receiver, the sensor asks for its run, and a
lost webhook is only late.

Real parts: the sandbox's HubSpot simulator sending signed v3 webhooks, the product's receiver
process (``crm-pipelines webhooks``, started by the sandbox), its event store, the Dagster sensor,
the nightly job's assets and the ERP database they create orders in.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from crm_pipelines.definitions import defs
from crm_pipelines.webhooks.store import EventStore
from crm_pipelines_sandbox.nights import SandboxNights, sandbox_nights
from crm_pipelines_sandbox.run import Sandbox
from crm_pipelines_sandbox.simulators.hubspot import HubSpotSimulator
from sensors.webhook_events import WEBHOOK_OBJECTS_TAG, WEBHOOK_ROUTE_TAG, webhook_events_sensor

TODAY = dt.datetime.now(dt.UTC).date()
YESTERDAY = TODAY - dt.timedelta(days=1)
ORDERS = dg.AssetKey(["reverse_sync", "orders_to_erp"])


@dataclass
class Estate:
    nights: SandboxNights
    http: httpx.Client

    @property
    def env(self) -> dict[str, str]:
        return self.nights.env

    @property
    def box(self) -> Sandbox:
        return self.nights.box

    @property
    def hubspot(self) -> HubSpotSimulator:
        simulator = self.box.simulators["hubspot"]
        assert isinstance(simulator, HubSpotSimulator)
        return simulator

    def night(self, day: dt.date) -> None:
        self.nights.night(day)

    def close_deal(self, deal_id: str) -> None:
        """A sales rep marks the deal closed-won in HubSpot (the public update call)."""
        answer = self.http.patch(
            f"{self.env['HUBSPOT_BASE_URL']}/crm/v3/objects/deals/{deal_id}",
            json={"properties": {"dealstage": "closedwon"}},
            headers={"Authorization": f"Bearer {self.env['HUBSPOT_ACCESS_TOKEN']}"},
        )
        assert answer.status_code == 200, answer.text

    def stored(self) -> list[Any]:
        return list(EventStore(Path(self.env["CRM_WEBHOOK_STORE"])).since(0, limit=10_000))

    def open_deals_of_erp_customers(self) -> list[str]:
        """HubSpot deals still open whose customer the ERP knows (an order can be made for them)."""
        with self.nights.warehouse() as con:
            rows = con.execute(
                "SELECT o.source_id FROM core.opportunity AS o "
                "JOIN core.xref_identity AS a ON a.record_id = o.account_record_id AND a.entity = 'account' "
                "WHERE o.source = 'hubspot' AND NOT coalesce(o.is_closed, false) "
                "AND NOT coalesce(o.is_deleted, false) AND o.amount > 0 AND o.currency IS NOT NULL "
                "AND EXISTS (SELECT 1 FROM core.xref_identity AS e WHERE e.golden_id = a.golden_id "
                "AND e.entity = 'account' AND e.source = 'erp') ORDER BY o.source_id"
            ).fetchall()
        return [str(r[0]) for r in rows]

    def erp_orders_for(self, deal_id: str) -> int:
        assert self.box.layout is not None
        with sqlite3.connect(self.box.layout.erp_db) as conn:
            return int(
                conn.execute(
                    "SELECT count(*) FROM sales_orders WHERE crm_opportunity_ref = ?", [f"hubspot:{deal_id}"]
                ).fetchone()[0]
            )


# Order to cash from HubSpot and the ERP: what orders_to_erp needs, the other CRMs left out.
_OTHERS = {"salesforce", "dynamics", "zoho", "pipedrive", "sugarcrm", "creatio", "infor_crm", "sage_crm"}
_OTHERS |= {"sap_b1", "zendesk", "finance_sftp"}


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    root = tmp_path_factory.mktemp("sandbox_webhooks")
    upstream: set[dg.AssetKey] = set()

    def selected(key: dg.AssetKey) -> bool:
        if not upstream:
            graph = defs().resolve_asset_graph()
            upstream.update(dg.AssetSelection.assets(ORDERS).upstream().resolve(graph))
        return key in upstream and key.path[0] not in _OTHERS and key.path[-1] not in _OTHERS

    with (
        sandbox_nights(root, select=selected, contacts=300, seed=5, as_of=YESTERDAY, webhooks=True) as nights,
        httpx.Client(timeout=30) as http,
    ):
        yield Estate(nights, http)


def test_a_closed_won_deal_reaches_the_receiver_and_the_sensor_asks_for_its_order_run(estate: Estate) -> None:
    answer = estate.http.get(
        f"{estate.env['HUBSPOT_BASE_URL']}/crm/v3/objects/deals",
        params={"limit": "50", "properties": "dealstage"},
        headers={"Authorization": f"Bearer {estate.env['HUBSPOT_ACCESS_TOKEN']}"},
    )
    deal_id = next(d["id"] for d in answer.json()["results"] if d["properties"]["dealstage"] != "closedwon")
    started = time.monotonic()
    estate.close_deal(deal_id)
    # Delivered, verified (v3 signature) and stored by the receiver process.
    while time.monotonic() - started < 30:
        events = [e for e in estate.stored() if e.object_id == deal_id]
        if events:
            break
        time.sleep(0.1)
    assert [(e.sender, e.event_type, e.payload["propertyValue"]) for e in events] == [
        ("hubspot", "deal.propertyChange", "closedwon")
    ]
    # The sensor turns it into a run of the order-to-cash assets for that deal.
    with dg.instance_for_test() as instance:
        result = webhook_events_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    requests = [r for r in result.run_requests or [] if deal_id in r.tags[WEBHOOK_OBJECTS_TAG].split(",")]
    assert [r.tags[WEBHOOK_ROUTE_TAG] for r in requests] == ["hubspot_deal_closed_won"]
    assert ORDERS in (requests[0].asset_selection or [])
    assert time.monotonic() - started < 60
    # A property set to the value it already has is no change: HubSpot sends nothing for it.
    before = len(estate.stored())
    estate.close_deal(deal_id)
    assert estate.hubspot.webhooks is not None
    assert estate.hubspot.webhooks.flush()
    assert len(estate.stored()) == before


def test_a_webhook_that_never_arrives_is_only_late_the_nightly_run_makes_the_order(estate: Estate) -> None:
    estate.night(YESTERDAY)  # the first night: orders_to_erp records what exists (baseline)
    deal_id = estate.open_deals_of_erp_customers()[0]
    outbox = estate.hubspot.webhooks
    assert outbox is not None
    assert estate.box.receiver is not None
    # The receiver is down while the deal closes: HubSpot's retries run out and the event is lost.
    estate.box.receiver.stop()
    failed = outbox.failed
    estate.close_deal(deal_id)
    assert outbox.flush(timeout=30)
    assert outbox.failed == failed + 1
    assert estate.erp_orders_for(deal_id) == 0
    # The next night extracts the change all the same: the order is made, once.
    estate.night(TODAY)
    assert estate.erp_orders_for(deal_id) == 1
    estate.night(TODAY)
    assert estate.erp_orders_for(deal_id) == 1
