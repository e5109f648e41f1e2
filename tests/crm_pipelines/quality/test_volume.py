"""The volume verdict and the data freshness, over real Parquet partitions and a DuckDB warehouse file."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from crm_pipelines.lake import partition_dir
from crm_pipelines.quality.freshness import data_freshness, source_freshness
from crm_pipelines.quality.monitoring import VolumePolicy
from crm_pipelines.quality.volume import lake_live_rows, record_volume, volume_verdict
from crm_pipelines.warehouse.connection import Warehouse
from crm_pipelines.warehouse.watermarks import PendingWatermark, write_pending

POLICY = VolumePolicy(nights=3, min_nights=2, warn_below="-50%", block_below="-80%")  # type: ignore[arg-type]


def _night(lake: Path, partition: str, table: pa.Table) -> Path:
    folder = partition_dir(lake, "raw", "erp", "customers", partition)
    assert isinstance(folder, Path)  # a local lake's folder
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    return folder


def test_live_rows_leave_out_the_soft_deleted_and_work_without_the_flag(tmp_path: Path) -> None:
    _night(tmp_path, "2026-11-01", pa.table({"id": [1, 2, 3], "_deleted": [False, True, None]}))
    _night(tmp_path, "2026-11-02", pa.table({"id": [1, 2, 3, 4]}))  # a table without delete detection
    assert lake_live_rows(tmp_path, source="erp", dataset="customers", partition="2026-11-01") == 2
    assert lake_live_rows(tmp_path, source="erp", dataset="customers", partition="2026-11-02") == 4
    assert lake_live_rows(tmp_path, source="erp", dataset="customers", partition="2026-11-03") is None


def test_the_verdict_uses_the_trailing_median_of_earlier_nights_only(tmp_path: Path) -> None:
    warehouse = Warehouse(f"duckdb:///{tmp_path}/warehouse.duckdb")
    with warehouse.transaction() as con:
        for day, rows in (("01", 100), ("02", 1000), ("03", 90), ("04", 110), ("06", 5)):
            record_volume(
                con, source="erp", dataset="customers", partition=f"2026-11-{day}", rows=rows, run_id="r"
            )
        # Running a night again replaces its count.
        record_volume(con, source="erp", dataset="customers", partition="2026-11-04", rows=100, run_id="r2")

    def judge(partition: str, rows: int) -> tuple[str, float | None]:
        with warehouse.connect(read_only=True) as con:
            verdict = volume_verdict(
                con, source="erp", dataset="customers", partition=partition, rows=rows, policy=POLICY
            )
        return verdict.level, verdict.median

    # Nights 2, 3, 4 (1000, 90, 100): the median 100 shrugs off the one big night; night 6 is later.
    assert judge("2026-11-05", 60) == ("ok", 100.0)
    assert judge("2026-11-05", 50) == ("warn", 100.0)
    assert judge("2026-11-05", 21) == ("warn", 100.0)
    assert judge("2026-11-05", 20) == ("block", 100.0)
    assert judge("2026-11-02", 1) == ("no_verdict", None)  # one night before it: too little history


def test_freshness_reads_the_cursor_the_extract_reached(tmp_path: Path) -> None:
    until = datetime(2026, 11, 26, tzinfo=UTC)
    folder = _night(tmp_path, "2026-11-25", pa.table({"id": [1]}))

    def judge() -> str:
        return data_freshness(
            tmp_path,
            source="erp",
            dataset="customers",
            partition="2026-11-25",
            until=until,
            allowed=timedelta(days=2),
        ).level

    assert judge() == "no_verdict"  # a full read without a cursor
    # A database cursor without a zone is UTC.
    write_pending(folder, PendingWatermark("erp", "customers", None, "2026-11-23T23:00:00"))
    assert judge() == "stale"
    write_pending(folder, PendingWatermark("erp", "customers", None, "2026-11-24T01:00:00+00:00"))
    assert judge() == "fresh"
    write_pending(folder, PendingWatermark("erp", "customers", None, "4711", kind="integer"))
    assert judge() == "no_verdict"


def test_a_source_is_fresh_while_any_of_its_datasets_changes(tmp_path: Path) -> None:
    until = datetime(2026, 11, 26, tzinfo=UTC)
    for dataset, reached in (
        ("currencies", "2020-01-06T09:00:00+00:00"),
        ("customers", "2026-11-25T17:00:00Z"),
    ):
        folder = partition_dir(tmp_path, "raw", "erp", dataset, "2026-11-25")
        folder.mkdir(parents=True)
        write_pending(folder, PendingWatermark("erp", dataset, None, reached))

    def judge(datasets: list[str]) -> tuple[str, str | None]:
        verdict = source_freshness(
            tmp_path,
            source="erp",
            datasets=datasets,
            partition="2026-11-25",
            until=until,
            allowed=timedelta(days=7),
        )
        return verdict.level, verdict.dataset

    assert judge(["currencies", "customers", "not_extracted"]) == ("fresh", "customers")
    assert judge(["currencies"]) == ("stale", "currencies")
    # Contacts read through a delta link: their changes carry no time, so the old currencies prove nothing.
    folder = partition_dir(tmp_path, "raw", "erp", "contacts", "2026-11-25")
    folder.mkdir(parents=True)
    write_pending(
        folder, PendingWatermark("erp", "contacts", None, "https://x/delta?token=1", kind="delta_link")
    )
    assert judge(["currencies", "contacts"]) == ("no_verdict", "currencies")
