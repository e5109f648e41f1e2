from pathlib import Path

import pytest

from crm_pipelines.warehouse.connection import open_warehouse
from crm_pipelines.warehouse.watermarks import (
    PendingWatermark,
    advance_watermark,
    read_pending,
    read_watermark,
    write_pending,
)


def test_watermark_moves_only_forward_and_only_with_the_commit(warehouse_url: str) -> None:
    warehouse = open_warehouse(warehouse_url)
    pending = PendingWatermark("erp", "invoices", since=None, reached="2026-11-25T10:00:00+00:00")

    def failing_load() -> None:
        with warehouse.transaction() as con:
            advance_watermark(con, pending=pending, partition="2026-11-25", run_id="r1")
            raise RuntimeError("the load failed before commit")

    with pytest.raises(RuntimeError, match="before commit"):
        failing_load()
    with warehouse.connect() as con:
        assert read_watermark(con, source="erp", dataset="invoices") is None
    with warehouse.transaction() as con:
        assert advance_watermark(con, pending=pending, partition="2026-11-25", run_id="r2")
        older = PendingWatermark("erp", "invoices", since=None, reached="2026-11-24T00:00:00+00:00")
        assert not advance_watermark(con, pending=older, partition="2026-11-24", run_id="r3")
        assert read_watermark(con, source="erp", dataset="invoices") == "2026-11-25T10:00:00+00:00"
    with warehouse.read() as reader:  # what operators see, with the commit that used it
        assert reader.execute("SELECT source, dataset, partition, run_id FROM ops.watermark").fetchall() == [
            ("erp", "invoices", "2026-11-25", "r2")
        ]


def test_integer_cursors_compare_as_numbers(warehouse_url: str) -> None:
    warehouse = open_warehouse(warehouse_url)
    with warehouse.transaction() as con:
        advance_watermark(
            con, pending=PendingWatermark("erp", "t", None, "9", kind="integer"), partition="p", run_id="r"
        )
        assert advance_watermark(
            con, pending=PendingWatermark("erp", "t", None, "10", kind="integer"), partition="p", run_id="r"
        )
        assert read_watermark(con, source="erp", dataset="t") == "10"


def test_pending_watermark_round_trips_through_the_lake(tmp_path: Path) -> None:
    pending = PendingWatermark("salesforce", "contacts", since="a", reached="b")
    write_pending(tmp_path, pending)
    assert read_pending(tmp_path) == pending
    assert read_pending(tmp_path / "nowhere") is None
