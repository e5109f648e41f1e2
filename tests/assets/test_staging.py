"""Staging assets: bad rows are quarantined with reasons, a broken feed stops its load."""

from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from assets.staging import build_staging_assets
from assets.warehouse import build_core_load_assets
from crm_pipelines.lake import partition_dir
from resources.lake import LakeResource, WarehouseResource

DAY = "2026-11-25"


def write_raw(lake: Path, source: str, dataset: str, rows: list[dict[str, Any]]) -> None:
    folder = partition_dir(lake, "raw", source, dataset, DAY)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0000.parquet")


def erp_payments(lake: Path, *, bad: int, good: int) -> None:
    rows = [
        {
            "payment_id": i,
            "invoice_id": 1,
            "payment_date": "2026-11-20",
            "amount": "100.00",
            "currency": "EUR",
            "method": "bank_transfer",
            "updated_at": "2026-11-20 10:00:00",
        }
        for i in range(good)
    ] + [
        {
            "payment_id": 1000 + i,
            "invoice_id": 1,
            "payment_date": "2026-11-20",
            "amount": "-5.00",
            "currency": "EUR",
            "method": "bank_transfer",
            "updated_at": "2026-11-20 10:00:00",
        }
        for i in range(bad)
    ]
    write_raw(lake, "erp", "payments", rows)
    write_raw(lake, "erp", "invoices", [{"invoice_id": 1, "invoice_number": "INV-1"}])


def materialize(tmp_path: Path) -> dg.ExecuteInProcessResult:
    wanted = {"staging/payment", "core/payment"}
    selected = [
        a for a in [*build_staging_assets(), *build_core_load_assets()] if a.key.to_user_string() in wanted
    ]
    return dg.materialize(
        selected,
        partition_key=DAY,
        resources={
            "lake": LakeResource(root=str(tmp_path / "lake")),
            "warehouse": WarehouseResource(url=f"duckdb:///{tmp_path}/w.duckdb"),
        },
        raise_on_error=False,
    )


def test_bad_rows_are_quarantined_and_the_rest_loads(tmp_path: Path) -> None:
    erp_payments(tmp_path / "lake", bad=1, good=60)
    result = materialize(tmp_path)
    assert result.success
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM core.payment").fetchone() == (60,)
        quarantined = con.execute("SELECT record_id, rule, reason FROM ops.quarantine").fetchall()
    assert quarantined == [("erp:1000", "payment_amount_non_negative", "amount -5.00 must be >= 0")]


def test_a_broken_feed_fails_the_blocking_check_and_is_not_loaded(tmp_path: Path) -> None:
    erp_payments(tmp_path / "lake", bad=30, good=30)
    result = materialize(tmp_path)
    assert not result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "quality_suite"
    assert not check.passed
    assert "payment_amount_non_negative" in (check.description or "")
    # The load never ran: nothing of the broken feed reached the warehouse.
    assert not (tmp_path / "w.duckdb").exists()
