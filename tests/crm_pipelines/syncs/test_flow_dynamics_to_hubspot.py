"""Example 2, closed loop: Dynamics 365 opportunity stage and revenue reach the matching HubSpot deal.

Real parts: the sandbox's Dynamics 365 (Dataverse Web API) and HubSpot (CRM v3) simulators, the
nightly job's assets (extracts, staging, identity resolution, core, the declared sync
``dynamics_opportunities_to_hubspot``) and a DuckDB warehouse. A sales user moves an opportunity
in Dynamics through the Web API; the next night the HubSpot deal that mirrors it shows the new
stage (through the two systems' value maps) and amount, and nothing else moves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import dagster as dg
import httpx
import pytest

from crm_pipelines_sandbox.nights import SandboxNights, sandbox_nights

SYNC = "dynamics_opportunities_to_hubspot"
TODAY = dt.datetime.now(dt.UTC).date()
YESTERDAY = TODAY - dt.timedelta(days=1)
# HubSpot's dealstage for each canonical stage (the first spelling in mappings.yaml's hubspot_dealstage).
HUBSPOT_STAGE = {
    "prospecting": "appointmentscheduled",
    "qualification": "qualifiedtobuy",
    "proposal": "presentationscheduled",
    "negotiation": "contractsent",
    "closed_won": "closedwon",
    "closed_lost": "closedlost",
}


@dataclass
class Estate:
    nights: SandboxNights
    http: httpx.Client

    @property
    def env(self) -> dict[str, str]:
        return self.nights.env

    def night(self, day: dt.date) -> None:
        self.nights.night(day)

    def model(self) -> dict[str, tuple[str, Decimal | None, set[str]]]:
        """Dynamics opportunity id -> (canonical stage, amount, the customer's HubSpot company ids)."""
        with self.nights.warehouse() as con:
            rows = con.execute(
                "SELECT o.source_id, o.stage, o.amount, list(h.source_id) FROM core.opportunity AS o "
                "JOIN core.xref_identity AS a ON a.record_id = o.account_record_id AND a.entity = 'account' "
                "JOIN core.xref_identity AS h ON h.golden_id = a.golden_id AND h.entity = 'account' "
                "AND h.source = 'hubspot' "
                "WHERE o.source = 'dynamics' AND NOT coalesce(o.is_deleted, false) GROUP BY ALL"
            ).fetchall()
        return {str(i): (str(s), a, {str(c) for c in companies}) for i, s, a, companies in rows}

    def hubspot_deals(self) -> list[dict[str, Any]]:
        """Every live HubSpot deal with the properties the sync writes, through the public list API."""
        deals: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params = {
                "limit": "100",
                "properties": "dealname,dealstage,amount,dynamics_opportunity_id",
                "associations": "companies",
            }
            if after:
                params["after"] = after
            answer = self.http.get(
                f"{self.env['HUBSPOT_BASE_URL']}/crm/v3/objects/deals",
                params=params,
                headers={"Authorization": f"Bearer {self.env['HUBSPOT_ACCESS_TOKEN']}"},
            )
            answer.raise_for_status()
            body = answer.json()
            deals += body["results"]
            after = (body.get("paging") or {}).get("next", {}).get("after")
            if not after:
                return deals

    def mirrors(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for deal in self.hubspot_deals():
            key = deal["properties"].get("dynamics_opportunity_id")
            if key:
                companies = (deal.get("associations") or {}).get("companies", {}).get("results", [])
                company = {"company": companies[0]["id"] if companies else None}
                out.setdefault(str(key), []).append({**deal["properties"], **company})
        return out

    def dynamics(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        token = self.http.post(
            self.env["DYNAMICS_TOKEN_URL"],
            data={
                "grant_type": "client_credentials",
                "client_id": self.env["DYNAMICS_CLIENT_ID"],
                "client_secret": self.env["DYNAMICS_CLIENT_SECRET"],
                "scope": f"{self.env['DYNAMICS_BASE_URL']}/.default",
            },
        ).json()["access_token"]
        return self.http.request(
            method,
            f"{self.env['DYNAMICS_BASE_URL']}/api/data/v9.2/{path}",
            headers={"Authorization": f"Bearer {token}", "If-Match": "*"},
            **kwargs,
        )


# The sync and what it reads: the accounts of both CRMs (identity), their opportunities.
_WANTED = {"accounts", "companies", "contacts", "opportunities", "deals", "currencies"}
_STEPS = (
    ["staging", "account"],
    ["staging", "contact"],
    ["staging", "opportunity"],
    ["identity", "resolution"],
    ["core", "identity"],
    ["core", "opportunity"],
    ["reverse_sync", SYNC],
)


def _selected(key: dg.AssetKey) -> bool:
    return (key.path[0] in {"hubspot", "dynamics"} and key.path[1] in _WANTED) or key.path in _STEPS


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    root = tmp_path_factory.mktemp("flow_dynamics_hubspot")
    with (
        sandbox_nights(root, select=_selected, contacts=400, seed=3, as_of=YESTERDAY) as nights,
        httpx.Client(timeout=30) as http,
    ):
        yield Estate(nights, http)


def test_each_dynamics_opportunity_reaches_one_hubspot_deal_and_a_stage_change_follows(
    estate: Estate,
) -> None:
    estate.night(YESTERDAY)
    model = estate.model()
    assert len(model) >= 3, "the sandbox should hold Dynamics opportunities of customers HubSpot knows"
    mirrors = estate.mirrors()
    # Exactly one deal per opportunity, with the stage through the value maps and the amount.
    assert set(mirrors) == set(model)
    for opportunity_id, (stage, amount, companies) in model.items():
        [deal] = mirrors[opportunity_id]
        assert deal["dealstage"] == HUBSPOT_STAGE[stage]
        assert (Decimal(deal["amount"]) if deal["amount"] else None) == amount
        # Associated with the customer's company in HubSpot (batch upsert takes no associations).
        assert deal["company"] in companies

    # A second night with nothing changed writes nothing: still one deal each, same values.
    estate.night(YESTERDAY)
    assert estate.mirrors() == mirrors

    # Sales moves one opportunity in Dynamics: proposal stage, new revenue.
    opportunity_id = sorted(model)[0]
    moved = estate.dynamics(
        "PATCH",
        f"opportunities({opportunity_id})",
        json={"stepname": "3-Propose", "estimatedvalue": 98765.4},
    )
    assert moved.status_code in (200, 204), moved.text
    estate.night(TODAY)
    after = estate.mirrors()
    [deal] = after[opportunity_id]
    assert deal["dealstage"] == "presentationscheduled"
    assert Decimal(deal["amount"]) == Decimal("98765.40")
    # Nothing else moved, and no deal was doubled.
    assert {k: v for k, v in after.items() if k != opportunity_id} == {
        k: v for k, v in mirrors.items() if k != opportunity_id
    }
    # The HubSpot deals read back into the warehouse as mirrors, on the customer's company: pipeline
    # is counted once.
    with estate.nights.warehouse() as con:
        mirrored = con.execute(
            "SELECT count(*) FROM core.opportunity WHERE source = 'hubspot' AND mirrors_record_id IS NOT NULL "
            "AND account_record_id IS NOT NULL"
        ).fetchall()[0][0]
    assert mirrored == len(model)
