"""Control totals on a hand-built warehouse: one billing file and the ERP's payments, source to facts.

The file ``invoices_2026-11-25.csv`` (version ``abc123def456``) holds six data lines: BIL-1, BIL-2
twice (a corrected line: the second is kept), BIL-3 (a quality rule quarantines it), and two lines
the reader quarantined: one readable (an encoding error in the name), one with a field too many
(its amounts cannot be read). The ERP delivers three payments: one applied to BIL-1, one negative
(quarantined), one the ERP deleted. The invoice mart is built the way the nightly asset builds it.
"""

from __future__ import annotations

import json
from decimal import Decimal

import dagster as dg
import pytest

from assets.reconciliation import reconciliation
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.sources import load_sources
from crm_pipelines.warehouse.connection import Warehouse, open_warehouse
from crm_pipelines.warehouse.control_totals import (
    ControlTotals,
    compute_control_totals,
    record_control_totals,
)
from crm_pipelines.warehouse.marts import MARTS, build_mart
from resources.lake import WarehouseResource

DAY = "2026-11-25"
FILE = "invoices_2026-11-25.csv"
VERSION = f"{FILE}@abc123def456"
SFTP = ("finance_sftp", "invoice", VERSION)
ERP = ("erp", "payment", "")


def _quality_record(number: str, net: str, tax: str, gross: str) -> str:
    return json.dumps(
        {
            "invoice_number": number,
            "customer_code": "C1",
            "amount_net": net,
            "amount_tax": tax,
            "amount_gross": gross,
            "_source_file": FILE,
            "_source_line": 5,
        }
    )


@pytest.fixture
def warehouse(warehouse_url: str) -> Warehouse:
    wh = open_warehouse(warehouse_url)
    with wh.connect() as con:
        con.execute(
            "INSERT INTO ops.file_ingest VALUES ('finance_sftp', 'invoices', '/outbound/finance/' || ?, "
            "'abc123def456' || repeat('0', 52), 900, ?, 6, 4, 2, 'run-0', now(), [])",
            [FILE, DAY],
        )
        con.execute(
            """
            CREATE TABLE raw.finance_sftp__invoices AS SELECT * FROM (VALUES
                ('BIL-1', 'C1', '100.00', '20.00', '120.00', 2),
                ('BIL-2', 'C1', ' 55.00', '11.00', '66.00', 3),
                ('BIL-3', 'C1', '10.00', '2.00', '12.00', 4),
                ('BIL-2', 'C1', '50.00', '10.00', '60.00', 7)
            ) AS t(invoice_number, customer_code, amount_net, amount_tax, amount_gross, _source_line),
            (SELECT ? AS _source_file, ? AS _partition)
            """,
            [FILE, DAY],
        )
        quarantine = [
            ("extract", f"{FILE}:5", "BIL-4,C1,2026-11-25,2026-12-25,EUR,5.00,1.00,6.00,open", "encoding"),
            ("extract", f"{FILE}:6", "BIL-5,C1,2026-11-25,2026-12-25,EUR,7,000.00,0.00,7,000.00,open", "field_count"),
            ("quality", "finance_sftp:BIL-3", _quality_record("BIL-3", "10.00", "2.00", "12.00"), "invoice_date_required"),
            ("quality", "finance_sftp:BIL-3", _quality_record("BIL-3", "10.00", "2.00", "12.00"), "invoice_due_date_required"),
        ]  # fmt: skip
        for stage, record_id, record, rule in quarantine:
            con.execute(
                "INSERT INTO ops.quarantine VALUES (?, ?, 'finance_sftp', 'invoice', ?, ?, ?, 'reason', 'run-0')",
                [DAY, stage, record_id, record, rule],
            )
        invoice_columns = (
            "record_id VARCHAR, source VARCHAR, source_id VARCHAR, invoice_number VARCHAR, "
            "account_record_id VARCHAR, order_number VARCHAR, invoice_date DATE, due_date DATE, currency VARCHAR, "
            "amount_net DECIMAL(18, 2), amount_tax DECIMAL(18, 2), amount_gross DECIMAL(18, 2), status VARCHAR, "
            "updated_at TIMESTAMPTZ, _partition VARCHAR"
        )
        con.execute(f"CREATE TABLE staging.invoice ({invoice_columns})")
        con.execute(
            "INSERT INTO staging.invoice VALUES "
            "('finance_sftp:BIL-1', 'finance_sftp', 'BIL-1', 'BIL-1', 'erp:1', NULL, '2026-11-25', '2026-12-25', "
            " 'EUR', 100.00, 20.00, 120.00, 'open', '2026-11-26 01:00+00', ?), "
            "('finance_sftp:BIL-2', 'finance_sftp', 'BIL-2', 'BIL-2', 'erp:1', NULL, '2026-11-25', '2026-12-25', "
            " 'EUR', 50.00, 10.00, 60.00, 'open', '2026-11-26 01:00+00', ?)",
            [DAY, DAY],
        )
        con.execute(f"CREATE TABLE core.invoice ({invoice_columns}, is_deleted BOOLEAN DEFAULT false)")
        con.execute("INSERT INTO core.invoice SELECT *, false FROM staging.invoice")

        con.execute(
            """
            CREATE TABLE raw.erp__payments AS SELECT * FROM (VALUES
                (1, 7, '120.00', false), (2, 8, '-5', false), (3, 9, '30.00', true)
            ) AS t(payment_id, invoice_id, amount, _deleted), (SELECT ? AS _partition)
            """,
            [DAY],
        )
        con.execute(
            "INSERT INTO ops.quarantine VALUES (?, 'quality', 'erp', 'payment', 'erp:2', ?, "
            "'payment_amount_non_negative', 'amount -5.00 must be >= 0', 'run-0')",
            [DAY, json.dumps({"payment_id": 2, "invoice_id": 8, "amount": "-5", "invoice_number": "INV-8"})],
        )
        payment_columns = (
            "record_id VARCHAR, source VARCHAR, source_id VARCHAR, invoice_number VARCHAR, payment_date DATE, "
            "amount DECIMAL(18, 2), currency VARCHAR, method VARCHAR, updated_at TIMESTAMPTZ, _partition VARCHAR"
        )
        con.execute(f"CREATE TABLE staging.payment ({payment_columns})")
        con.execute(
            "INSERT INTO staging.payment VALUES ('erp:1', 'erp', '1', 'BIL-1', '2026-11-25', 120.00, 'EUR', "
            "'card', '2026-11-25 10:00+00', ?)",
            [DAY],
        )
        con.execute(
            "CREATE TABLE staging.deleted (record_id VARCHAR, source VARCHAR, source_id VARCHAR, entity VARCHAR, "
            "_partition VARCHAR)"
        )
        con.execute("INSERT INTO staging.deleted VALUES ('erp:3', 'erp', '3', 'payment', ?)", [DAY])
        con.execute(f"CREATE TABLE core.payment ({payment_columns}, is_deleted BOOLEAN DEFAULT false)")
        con.execute("INSERT INTO core.payment SELECT *, false FROM staging.payment")
        # Paid on an earlier night, deleted in the ERP since.
        con.execute(
            "INSERT INTO core.payment VALUES ('erp:3', 'erp', '3', 'BIL-2', '2026-11-20', 30.00, 'EUR', 'card', "
            "'2026-11-20 10:00+00', '2026-11-24', true)"
        )

        con.execute(
            "CREATE TABLE core.xref_identity (record_id VARCHAR, entity VARCHAR, source VARCHAR, "
            "source_id VARCHAR, golden_id VARCHAR)"
        )
        con.execute("INSERT INTO core.xref_identity VALUES ('erp:1', 'account', 'erp', '1', 'GA-1')")
        con.execute("CREATE TABLE core.golden_account (golden_id VARCHAR)")
        con.execute("CREATE TABLE core.golden_contact (golden_id VARCHAR)")
        build_mart(con, next(m for m in MARTS if m.name == "fact_invoice"))
    return wh


def totals(warehouse: Warehouse) -> ControlTotals:
    with warehouse.connect() as con:
        return compute_control_totals(con, partition=DAY, mappings=load_mappings(), sources=load_sources())


def test_every_layer_adds_up_to_the_source_per_file(warehouse: Warehouse) -> None:
    result = totals(warehouse)
    assert result.mismatches() == []
    gross = {layer: values["amount_gross"] for layer, values in result.totals[SFTP].items()}
    # 120 + 66 + 12 + 60 landed, 6 read back from the quarantined line, the line with a field too many
    # counted without its amount.
    assert gross["source"] == Decimal("264.00")
    assert gross["raw"] == Decimal("258.00")
    assert gross["quarantine_extract"] == Decimal("6.00")
    assert gross["quarantine_quality"] == Decimal("12.00")
    assert gross["merged"] == Decimal("66.00")  # BIL-2's first line, corrected by its second
    assert gross["staging"] == gross["core"] == gross["marts"] == Decimal("180.00")
    counts = {layer: values["count"] for layer, values in result.totals[SFTP].items()}
    assert counts["source"] == 6  # the ledger's data lines
    assert (counts["raw"], counts["quarantine_extract"], counts["quarantine_quality"], counts["merged"]) == (
        4,
        2,
        1,  # one row, however many rules it broke
        1,
    )
    assert counts["staging"] == counts["core"] == counts["marts"] == 2
    [unreadable] = result.unreadable
    assert (unreadable.file, unreadable.record_id, unreadable.rule) == (VERSION, f"{FILE}:6", "field_count")


def test_a_quarantined_payment_and_a_deleted_one_are_accounted_by_their_amounts(warehouse: Warehouse) -> None:
    payments = {layer: values["amount"] for layer, values in totals(warehouse).totals[ERP].items()}
    assert payments["source"] == Decimal("145.00")  # 120 - 5 + 30
    assert payments["quarantine_quality"] == Decimal("-5.00")
    assert payments["deleted"] == Decimal("30.00")
    assert payments["staging"] == payments["core"] == payments["marts"] == Decimal("120.00")
    # The quarantine row's amount is what accounts for it: without it the payment is missing.
    with warehouse.connect() as con:
        con.execute("DELETE FROM ops.quarantine WHERE record_id = 'erp:2'")
    missing = [m for m in totals(warehouse).mismatches() if m.measure == "amount" and m.layer == "staging"]
    assert [(m.source, m.file, m.difference) for m in missing] == [("erp", "", Decimal("5.00"))]


def test_a_tampered_fact_row_fails_naming_source_day_file_and_difference(warehouse: Warehouse) -> None:
    with warehouse.connect() as con:
        con.execute(
            "UPDATE marts.fact_invoice SET amount_gross = amount_gross + 100 WHERE invoice_number = 'BIL-2'"
        )
    result = totals(warehouse)
    [mismatch] = result.mismatches()
    assert (mismatch.source, mismatch.partition, mismatch.file, mismatch.layer, mismatch.measure) == (
        "finance_sftp",
        DAY,
        VERSION,
        "marts",
        "amount_gross",
    )
    assert mismatch.difference == Decimal("100.00")
    message = mismatch.describe()
    for part in ("finance_sftp", DAY, VERSION, "amount_gross", "+100.00"):
        assert part in message, message
    with warehouse.transaction() as con:
        assert record_control_totals(con, run_id="run-1", totals=result) > 0
    with warehouse.read() as con:
        assert con.execute(
            "SELECT source, file, layer, measure, difference FROM ops.control_totals WHERE difference <> 0"
        ).fetchall() == [("finance_sftp", VERSION, "marts", "amount_gross", Decimal("100.00"))]


def test_a_row_lost_between_staging_and_core_is_named(warehouse: Warehouse) -> None:
    with warehouse.connect() as con:
        con.execute("DELETE FROM core.invoice WHERE invoice_number = 'BIL-1'")
    lost = {
        (m.layer, m.measure): m.difference
        for m in totals(warehouse).mismatches()
        if m.source == "finance_sftp"
    }
    assert lost[("core", "count")] == -1
    assert lost[("core", "amount_gross")] == Decimal("-120.00")


def test_a_later_nights_version_in_core_is_superseded_not_missing(warehouse: Warehouse) -> None:
    with warehouse.connect() as con:
        con.execute(
            "UPDATE core.invoice SET _partition = '2026-11-26', amount_gross = 999 WHERE invoice_number = 'BIL-1'"
        )
        build_mart(con, next(m for m in MARTS if m.name == "fact_invoice"))
    result = totals(warehouse)
    assert result.mismatches() == []
    assert result.totals[SFTP]["superseded"]["amount_gross"] == Decimal("120.00")


def test_amount_paid_in_the_mart_is_checked_against_the_payments(warehouse: Warehouse) -> None:
    with warehouse.connect() as con:
        con.execute(
            "UPDATE marts.fact_invoice SET amount_paid = amount_paid + 1 WHERE invoice_number = 'BIL-1'"
        )
    [mismatch] = totals(warehouse).mismatches()
    assert (mismatch.source, mismatch.entity, mismatch.difference) == ("all", "payment", Decimal("1.00"))
    assert "amount_paid" in mismatch.describe()


def test_the_reconciliation_asset_blocks_the_run_on_a_mismatch(warehouse: Warehouse) -> None:
    resources = {"warehouse": WarehouseResource(url=warehouse.url)}
    good = dg.materialize([reconciliation], resources=resources, partition_key=DAY)
    evaluations = {e.check_name: e for e in good.get_asset_check_evaluations()}
    assert evaluations["control_totals_match"].passed
    [materialization] = good.asset_materializations_for_node("ops__reconciliation")
    # Numbers the UI plots per entity and source, and the tables.
    assert materialization.metadata["invoice/finance_sftp/amount_gross"] == dg.MetadataValue.float(264.0)
    assert materialization.metadata["payment/erp/amount"] == dg.MetadataValue.float(145.0)
    assert "control_totals" in materialization.metadata

    with warehouse.connect() as con:
        con.execute(
            "UPDATE marts.fact_invoice SET amount_net = amount_net - 0.01 WHERE invoice_number = 'BIL-1'"
        )
    bad = dg.materialize([reconciliation], resources=resources, partition_key=DAY, raise_on_error=False)
    assert not bad.success
    [failed] = [e for e in bad.get_asset_check_evaluations() if not e.passed]
    assert failed.check_name == "control_totals_match"
    assert f"finance_sftp invoice {DAY} file {VERSION}: marts amount_net is off by -0.01" in str(
        failed.description
    )
    with warehouse.read() as con:
        # Written before the check failed the run, for whoever looks into it.
        assert con.execute(
            "SELECT count(*) FROM ops.control_totals WHERE run_id = ? AND difference <> 0", [bad.run_id]
        ).fetchone() == (1,)
