import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crm_pipelines.warehouse.connection import open_warehouse
from crm_pipelines.warehouse.load import merge_by_key, replace_partition


def _write(folder: Path, **columns: list[Any]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), folder / "part.parquet")
    return str(folder / "*.parquet")


def test_replacing_a_partition_twice_changes_nothing(tmp_path: Path, warehouse_url: str) -> None:
    glob = _write(tmp_path / "a", id=["1", "2"], v=[1, 2])
    warehouse = open_warehouse(warehouse_url)
    for _ in range(2):
        with warehouse.transaction() as con:
            replace_partition(con, schema="raw", table="t", parquet_glob=glob, partition="2026-11-25")
    with warehouse.read() as con:
        assert con.execute("SELECT id, v, _partition FROM raw.t ORDER BY id").fetchall() == [
            ("1", 1, "2026-11-25"),
            ("2", 2, "2026-11-25"),
        ]


def test_a_new_source_column_is_added_not_an_error(tmp_path: Path, warehouse_url: str) -> None:
    warehouse = open_warehouse(warehouse_url)
    with warehouse.transaction() as con:
        replace_partition(
            con, schema="raw", table="t", parquet_glob=_write(tmp_path / "a", id=["1"]), partition="d1"
        )
        replace_partition(
            con,
            schema="raw",
            table="t",
            parquet_glob=_write(tmp_path / "b", id=["2"], extra=["x"]),
            partition="d2",
        )
        assert con.execute("SELECT id, extra FROM raw.t ORDER BY id").fetchall() == [("1", None), ("2", "x")]
    with warehouse.read() as reader:
        assert reader.execute("SELECT id, extra FROM raw.t ORDER BY id").fetchall() == [
            ("1", None),
            ("2", "x"),
        ]


def test_merge_never_rolls_back_to_an_older_version(tmp_path: Path, warehouse_url: str) -> None:
    at = lambda h: dt.datetime(2026, 11, 25, h, tzinfo=dt.UTC)  # noqa: E731
    newer = _write(tmp_path / "new", record_id=["1", "2"], v=[1, 2], updated_at=[at(5), at(5)])
    older = _write(tmp_path / "old", record_id=["1", "3"], v=[9, 3], updated_at=[at(1), at(1)])
    warehouse = open_warehouse(warehouse_url)
    for glob in (newer, older, newer):
        with warehouse.transaction() as con:
            merge_by_key(
                con,
                schema="core",
                table="t",
                parquet_glob=glob,
                key="record_id",
                partition="p",
                version_column="updated_at",
            )
    with warehouse.read() as con:
        assert con.execute("SELECT record_id, v FROM core.t ORDER BY 1").fetchall() == [
            ("1", 1),
            ("2", 2),
            ("3", 3),
        ]


def test_a_failed_load_leaves_nothing_behind(tmp_path: Path, warehouse_url: str) -> None:
    warehouse = open_warehouse(warehouse_url)
    glob = _write(tmp_path / "a", id=["1"])

    def failing_load() -> None:
        with warehouse.transaction() as con:
            replace_partition(con, schema="raw", table="t", parquet_glob=glob, partition="d1")
            raise RuntimeError("the load failed half way")

    with pytest.raises(RuntimeError, match="half way"):
        failing_load()
    with warehouse.read() as con:
        assert con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 't'"
        ).fetchone() == (0,)


def test_writers_take_turns(tmp_path: Path, warehouse_url: str) -> None:
    warehouse = open_warehouse(warehouse_url)
    order: list[str] = []

    def writer(name: str) -> None:
        with warehouse.transaction() as con:
            order.append(f"{name} start")
            con.execute("CREATE TABLE IF NOT EXISTS ops.t (x INT)")
            time.sleep(0.2)
            order.append(f"{name} end")

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # No interleaving: each writer finished before the other started.
    assert order[0].split()[0] == order[1].split()[0]
    assert order[2].split()[0] == order[3].split()[0]
