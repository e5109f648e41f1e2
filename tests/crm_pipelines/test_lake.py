"""The lake in a local folder and in an S3 bucket (a real SeaweedFS server on loopback), the same cases."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from crm_pipelines import lake
from crm_pipelines.deploy_local import S3Endpoint, running_redis
from crm_pipelines.lake import LakePath
from crm_pipelines.warehouse.connection import open_warehouse
from crm_pipelines.warehouse.locks import LOCK_URL, WriterLockTimeout

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])


@pytest.fixture(params=["folder", "bucket"])
def root(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LakePath:
    """A lake root per test: a local folder, or a fresh prefix of the S3 server's bucket."""
    if request.param == "folder":
        return lake.lake_root(str(tmp_path / "lake"))
    endpoint: S3Endpoint = request.getfixturevalue("s3")
    for name, value in endpoint.environment().items():
        monkeypatch.setenv(name, value)
    return lake.lake_root(f"s3://{endpoint.bucket}/{tmp_path.name}")


def leftovers() -> list[str]:
    """Temporary files a write left on the local disk (a bucket's writes stage there)."""
    return [p.name for p in lake.staging_area().glob("*.inprogress")]


def test_a_url_is_a_bucket_and_anything_else_a_folder() -> None:
    assert lake.is_remote("s3://bucket/lake")
    assert not lake.is_remote("data/lake")
    assert not lake.is_remote("file:///srv/lake")
    assert isinstance(lake.lake_root("file:///srv/lake"), Path)
    assert lake.lake_root("file:///srv/lake") == Path("/srv/lake")


def test_a_sink_appears_whole_and_duckdb_reads_it(root: LakePath) -> None:
    folder = lake.partition_dir(root, "raw", "crm", "contacts", "2026-11-25")
    before = leftovers()
    with lake.ParquetSink(folder / "part-0.parquet", SCHEMA) as sink:
        sink.write(pa.table({"id": [1, 2], "name": ["Ada", "Grace"]}, schema=SCHEMA))
        assert not lake.has_parquet(folder)  # nothing visible until the sink closes
        sink.write(pa.table({"id": [3], "name": ["München"]}, schema=SCHEMA))
    assert lake.has_parquet(folder)
    assert [f.name for f in lake.files_in(folder)] == ["part-0.parquet"]
    con = lake.connect()
    try:
        rows = con.execute(
            f"SELECT id, name FROM {lake.scan_parquet(lake.parquet_glob(folder))} ORDER BY id"
        ).fetchall()
    finally:
        con.close()
    assert rows == [(1, "Ada"), (2, "Grace"), (3, "München")]
    assert lake.read_table(folder / "part-0.parquet").num_rows == 3
    assert lake.read_schema(folder / "part-0.parquet").names == ["id", "name"]
    assert leftovers() == before


def test_readers_read_the_lake_and_keep_their_views_to_themselves(root: LakePath) -> None:
    folder = lake.partition_dir(root, "raw", "crm", "contacts", "2026-11-25")
    lake.write_table(
        folder / "part-0.parquet", pa.table({"id": [1, 2], "name": ["Ada", "Grace"]}, schema=SCHEMA)
    )
    count = f"SELECT count(*) FROM {lake.scan_parquet(lake.parquet_glob(folder))}"
    with lake.reader() as first:
        first.register("mine", pa.table({"id": [7]}))
        with lake.reader() as second:
            assert second.execute(count).fetchall() == [(2,)]
            with pytest.raises(duckdb.CatalogException):
                second.execute("SELECT * FROM mine")
        assert first.execute("SELECT id FROM mine").fetchall() == [(7,)]
    with lake.reader() as later, pytest.raises(duckdb.CatalogException):
        later.execute("SELECT * FROM mine")
    # Each thread has its own database: readers in threads at once all answer.
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: _count(count), range(8))) == [2] * 8


def test_a_reader_reads_through_the_bucket_settings_opened_last(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint: S3Endpoint = request.getfixturevalue("s3")
    url = f"s3://{endpoint.bucket}/{tmp_path.name}"
    # The lake was opened with other settings first (an endpoint that is gone), and read through them.
    for name in endpoint.environment():
        monkeypatch.setenv(name, "http://127.0.0.1:9" if "ENDPOINT" in name else "stale")
    lake.lake_root(url)
    with lake.reader() as con:
        assert con.execute("SELECT 1").fetchall() == [(1,)]
    for name, value in endpoint.environment().items():
        monkeypatch.setenv(name, value)
    root = lake.lake_root(url)
    folder = lake.partition_dir(root, "raw", "crm", "contacts", "2026-11-25")
    lake.write_table(
        folder / "part-0.parquet", pa.table({"id": [1, 2], "name": ["Ada", "Grace"]}, schema=SCHEMA)
    )
    assert _count(f"SELECT count(*) FROM {lake.scan_parquet(lake.parquet_glob(folder))}") == 2


def _count(sql: str) -> int:
    with lake.reader() as con:
        row = con.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_a_failed_write_leaves_nothing(root: LakePath) -> None:
    folder = root / "raw" / "crm" / "contacts" / "dt=2026-11-25"
    before = leftovers()

    def extract() -> None:
        with lake.ParquetSink(folder / "a.parquet", SCHEMA) as sink:
            sink.write(pa.table({"id": [1], "name": ["Ada"]}, schema=SCHEMA))
            raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"):
        extract()
    assert not lake.has_parquet(folder)
    assert lake.files_under(root) == []
    assert leftovers() == before


def test_replace_move_list_and_remove(root: LakePath) -> None:
    day = root / "raw" / "drop" / "invoices" / "dt=2026-11-25"
    lake.write_table(day / ".v1.parquet.staged", pa.table({"id": [1], "name": ["a"]}, schema=SCHEMA))
    lake.move(day / ".v1.parquet.staged", day / "v1.parquet")
    lake.write_text(day / "v1.json", '{"rows": 1}')
    lake.write_table(day / "v1.parquet", pa.table({"id": [1, 2], "name": ["a", "b"]}, schema=SCHEMA))
    assert [f.name for f in lake.files_in(day)] == ["v1.parquet"]
    assert [f.name for f in lake.files_in(day, "*.json")] == ["v1.json"]
    assert (day / "v1.json").read_text() == '{"rows": 1}'
    assert lake.read_table(day / "v1.parquet").num_rows == 2
    lake.write_text(root / "raw" / "drop" / "invoices" / "dt=2026-11-26" / "v2.json", "{}")
    assert [c.name for c in lake.children(day.parent)] == ["dt=2026-11-25", "dt=2026-11-26"]
    assert [parts for _, parts in lake.files_under(root)] == [
        ("raw", "drop", "invoices", "dt=2026-11-25", "v1.parquet")
    ]
    lake.reset_dir(day)
    assert lake.files_in(day, "*") == []
    lake.remove_tree(root / "raw")
    assert lake.files_under(root, "*") == []  # (a bucket may keep the emptied prefixes as folders)
    assert lake.children(root / "nothing") == []


def test_the_warehouse_loads_from_the_lake(root: LakePath, tmp_path: Path) -> None:
    folder = lake.partition_dir(root, "raw", "crm", "contacts", "2026-11-25")
    lake.write_table(folder / "a.parquet", pa.table({"id": [1, 2], "name": ["a", "b"]}, schema=SCHEMA))
    warehouse = open_warehouse(f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    with warehouse.transaction() as con:
        con.execute(
            f"CREATE TABLE raw.contacts AS SELECT * FROM {lake.scan_parquet(lake.parquet_glob(folder))}"
        )
    with warehouse.read() as reader:
        assert reader.execute("SELECT count(*) FROM raw.contacts", []).fetchall() == [(2,)]


HOLD = """
import sys, time
from crm_pipelines import lake
with lake.lake_lock(lake.lake_root(sys.argv[1]) / ".day.lock"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock(root: LakePath, seconds: float) -> subprocess.Popen[str]:
    """Another process (another host, as far as a bucket's lock can tell) holding the lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_lock_in_the_lake_keeps_a_second_process_waiting(
    root: LakePath, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without CRM_PIPELINES_LOCK_URL: a lock file on this host, for a folder and a bucket alike."""
    monkeypatch.delenv(LOCK_URL, raising=False)
    holder = hold_lock(root, 3)
    started = time.monotonic()
    with lake.lake_lock(root / ".day.lock", timeout=30):
        waited = time.monotonic() - started
    holder.wait(10)
    assert waited > 1.5


def test_a_bucket_lock_is_shared_through_the_lock_server(
    s3: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With CRM_PIPELINES_LOCK_URL, hosts that share the bucket take turns on the server's lock."""
    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    root = lake.lake_root(f"s3://{s3.bucket}/{tmp_path.name}")
    with running_redis(tmp_path / "redis") as url:
        monkeypatch.setenv(LOCK_URL, f"{url}?lease_seconds=2")
        holder = hold_lock(root, 30)
        try:
            with (
                pytest.raises(WriterLockTimeout, match="lake lock"),
                lake.lake_lock(root / ".day.lock", timeout=1),
            ):
                pass
        finally:
            holder.kill()
            holder.wait(10)
        with lake.lake_lock(root / ".day.lock", timeout=60):  # the killed holder's lease ran out
            pass


def test_what_a_killed_writer_left_is_replaced_by_the_next_write_of_that_file(root: LakePath) -> None:
    target = lake.partition_dir(root, "raw", "crm", "contacts", "2026-11-25") / "part-0.parquet"
    orphan = lake.local_copy(target)
    orphan.write_bytes(b"PAR1 half a file")  # a writer SIGKILLed before its publish
    assert not lake.has_parquet(target.parent)  # invisible to readers
    lake.write_table(target, pa.table({"id": [7], "name": ["Ada"]}, schema=SCHEMA))
    assert not orphan.exists()
    assert lake.read_table(target).to_pylist() == [{"id": 7, "name": "Ada"}]
