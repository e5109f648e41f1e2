"""The lead funnel, the cases and the mirrored pipeline, as analysts query them from the marts.

A warehouse (on each backend) whose core holds a few leads, cases, opportunities and the crosswalk;
each mart is built the way the nightly asset builds it, and read back from where analysts read it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from crm_pipelines.warehouse.connection import Warehouse, open_warehouse
from crm_pipelines.warehouse.marts import MARTS, MissingCoreTable, build_mart

MART = {m.name: m for m in MARTS}


class Core:
    """Statements run in one load each; marts built as the asset builds them; reads from the backend."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse

    def execute(self, sql: str) -> None:
        with self.warehouse.transaction() as con:
            con.execute(sql)

    def build(self, mart: str) -> int:
        with self.warehouse.transaction() as con:
            return build_mart(con, MART[mart])

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with self.warehouse.read() as reader:
            return [tuple(row) for row in reader.execute(sql).fetchall()]


@pytest.fixture
def con(warehouse_url: str) -> Core:
    con = Core(open_warehouse(warehouse_url))
    con.execute(
        "CREATE TABLE core.xref_identity (record_id VARCHAR, entity VARCHAR, source VARCHAR, "
        "source_id VARCHAR, golden_id VARCHAR)"
    )
    con.execute(
        "INSERT INTO core.xref_identity VALUES "
        "('hubspot:1', 'contact', 'hubspot', '1', 'GC-ANNA'), "
        "('salesforce:003A', 'contact', 'salesforce', '003A', 'GC-ANNA'), "
        "('sugarcrm:acc-1', 'account', 'sugarcrm', 'acc-1', 'GA-ACME'), "
        "('sugarcrm:con-1', 'contact', 'sugarcrm', 'con-1', 'GC-ANNA'), "
        "('dynamics:acc-9', 'account', 'dynamics', 'acc-9', 'GA-ACME')"
    )
    con.execute("CREATE TABLE core.golden_account (golden_id VARCHAR)")
    con.execute("CREATE TABLE core.golden_contact (golden_id VARCHAR)")
    return con


def test_the_lead_funnel_ranks_stages_links_the_person_and_times_conversion(
    con: Core,
) -> None:
    con.execute(
        "CREATE TABLE core.lead (record_id VARCHAR, source VARCHAR, source_id VARCHAR, "
        "contact_record_id VARCHAR, lifecycle_stage VARCHAR, status VARCHAR, lead_source VARCHAR, "
        "country VARCHAR, is_converted BOOLEAN, created_at TIMESTAMPTZ, converted_at TIMESTAMPTZ, "
        "updated_at TIMESTAMPTZ, is_deleted BOOLEAN)"
    )
    con.execute(
        "INSERT INTO core.lead VALUES "
        "('hubspot:1', 'hubspot', '1', 'hubspot:1', 'mql', 'working', 'web', 'DE', false, "
        " '2026-11-01 09:00+00', NULL, '2026-11-02 09:00+00', NULL), "
        "('salesforce:00QA', 'salesforce', '00QA', 'salesforce:003A', 'sql', 'converted', 'event', 'DE', true,"
        " '2026-11-01 00:00+00', '2026-11-04 12:00+00', '2026-11-04 12:00+00', false), "
        "('dynamics:L1', 'dynamics', 'L1', NULL, 'lead', 'new', NULL, 'FR', NULL, "
        " '2026-11-03 00:00+00', '2026-11-02 00:00+00', '2026-11-03 00:00+00', true)"
    )
    assert con.build("fact_lead_funnel") == 3
    rows = {
        r[0]: r[1:]
        for r in con.query(
            "SELECT lead_id, contact_id, stage_rank, is_converted, days_to_convert, is_deleted "
            "FROM marts.fact_lead_funnel"
        )
    }
    assert rows["hubspot:1"] == ("GC-ANNA", 2, False, None, False)
    assert rows["salesforce:00QA"] == ("GC-ANNA", 3, True, Decimal("3.50"), False)
    # A conversion stamped before the capture is no duration; unknown conversion is false.
    assert rows["dynamics:L1"] == (None, 1, False, None, True)


def test_cases_carry_golden_account_and_person_and_hours_to_resolve(con: Core) -> None:
    con.execute(
        "CREATE TABLE core.support_case (record_id VARCHAR, source VARCHAR, source_id VARCHAR, "
        "case_number VARCHAR, account_record_id VARCHAR, contact_record_id VARCHAR, "
        "related_record_id VARCHAR, status VARCHAR, priority VARCHAR, case_type VARCHAR, origin VARCHAR, "
        "created_at TIMESTAMPTZ, resolved_at TIMESTAMPTZ, updated_at TIMESTAMPTZ, is_deleted BOOLEAN)"
    )
    con.execute(
        "INSERT INTO core.support_case VALUES "
        "('sugarcrm:case-1', 'sugarcrm', 'case-1', '17', 'sugarcrm:acc-1', 'sugarcrm:con-1', 'zendesk:88', "
        " 'solved', 'high', 'product', 'web', '2026-11-01 08:00+00', '2026-11-02 10:30+00', "
        " '2026-11-02 10:30+00', NULL), "
        "('zendesk:88', 'zendesk', '88', '88', NULL, NULL, 'sugarcrm:case-1', 'open', 'normal', NULL, "
        " 'api', '2026-11-01 08:05+00', NULL, '2026-11-01 08:05+00', false)"
    )
    assert con.build("fact_case") == 2
    rows = {
        r[0]: r[1:]
        for r in con.query(
            "SELECT case_id, account_id, contact_id, related_case_id, is_resolved, hours_to_resolve "
            "FROM marts.fact_case"
        )
    }
    assert rows["sugarcrm:case-1"] == ("GA-ACME", "GC-ANNA", "zendesk:88", True, Decimal("26.50"))
    assert rows["zendesk:88"] == (None, None, "sugarcrm:case-1", False, None)


def test_a_mirrored_deal_takes_its_opportunitys_account_and_is_marked(con: Core) -> None:
    con.execute(
        "CREATE TABLE core.opportunity (record_id VARCHAR, source VARCHAR, source_id VARCHAR, "
        "account_record_id VARCHAR, name VARCHAR, stage VARCHAR, amount DECIMAL(18, 2), currency VARCHAR, "
        "close_date DATE, is_closed BOOLEAN, is_won BOOLEAN, mirrors_record_id VARCHAR, "
        "updated_at TIMESTAMPTZ, is_deleted BOOLEAN)"
    )
    con.execute(
        "INSERT INTO core.opportunity VALUES "
        "('dynamics:opp-1', 'dynamics', 'opp-1', 'dynamics:acc-9', 'Rollout', 'proposal', 5000, 'EUR', "
        " NULL, false, false, NULL, '2026-11-01 00:00+00', false), "
        "('hubspot:555', 'hubspot', '555', NULL, 'Rollout', 'proposal', 5000, 'EUR', NULL, false, false, "
        " 'dynamics:opp-1', '2026-11-01 00:00+00', false)"
    )
    con.build("fact_opportunity")
    rows = con.query(
        "SELECT opportunity_id, account_id, mirrors_opportunity_id FROM marts.fact_opportunity ORDER BY 1"
    )
    assert rows == [("dynamics:opp-1", "GA-ACME", None), ("hubspot:555", "GA-ACME", "dynamics:opp-1")]
    # Pipeline counted once: the mirror is left out of the sum.
    [(total,)] = con.query(
        "SELECT sum(amount) FROM marts.fact_opportunity WHERE mirrors_opportunity_id IS NULL"
    )
    assert total == Decimal("5000.00")


def test_a_mart_refuses_to_build_before_its_core_table(con: Core) -> None:
    with pytest.raises(MissingCoreTable, match=r"core\.support_case"):
        con.build("fact_case")
    assert con.query("SELECT count(*) FROM information_schema.tables WHERE table_name = 'fact_case'") == [
        (0,)
    ]
