"""Warehouse connections attach the file to a database the thread keeps, and let go of it after."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from crm_pipelines.warehouse.connection import Warehouse


def _open_elsewhere(path: Path, sql: str) -> str:
    """Run ``sql`` on the file from another process, read-write: it fails while anyone holds the file."""
    code = f"import duckdb, sys; print(duckdb.connect(sys.argv[1]).execute({sql!r}).fetchall())"
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_connection_and_its_cursors_work_in_the_file_and_let_go_of_it(tmp_path: Path) -> None:
    warehouse = Warehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    with warehouse.transaction() as con:
        con.execute("CREATE TABLE core.thing (id INTEGER)")
        con.execute("INSERT INTO core.thing VALUES (1)")
        cursor = con.cursor()  # identity and sync planning work on cursors of the connection
        cursor.execute("CREATE TABLE made_by_cursor AS SELECT 2 AS id")
        cursor.close()

    # Another process opens the file for writing: nothing here holds it, and what was written is there.
    assert _open_elsewhere(warehouse.path, "SELECT count(*) FROM core.thing") == "[(1,)]"
    assert _open_elsewhere(warehouse.path, "SELECT id FROM main.made_by_cursor") == "[(2,)]"
    assert not Path(f"{warehouse.path}.wal").exists()  # the detach checkpointed, as a close does

    # What the other process wrote is read by the next connection.
    _open_elsewhere(warehouse.path, "INSERT INTO core.thing VALUES (3) RETURNING id")
    with warehouse.read() as reader:
        assert reader.execute("SELECT id FROM core.thing ORDER BY id").fetchall() == [(1,), (3,)]


def test_a_read_connection_cannot_write(tmp_path: Path) -> None:
    warehouse = Warehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    with warehouse.transaction() as con:
        con.execute("CREATE TABLE core.thing (id INTEGER)")
    with warehouse.connect(read_only=True) as con, pytest.raises(duckdb.Error, match="read-only"):
        con.execute("INSERT INTO core.thing VALUES (1)")
    # The failed write left the file free and the next write works.
    with warehouse.transaction() as con:
        con.execute("INSERT INTO core.thing VALUES (1)")
    assert _open_elsewhere(warehouse.path, "SELECT count(*) FROM core.thing") == "[(1,)]"


def test_a_cursor_left_open_does_not_keep_the_file(tmp_path: Path) -> None:
    warehouse = Warehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    with warehouse.transaction() as con:
        con.execute("CREATE TABLE core.thing (id INTEGER)")
    with warehouse.connect() as con:
        kept = con.cursor()
        kept.execute("BEGIN TRANSACTION")
        kept.execute("INSERT INTO core.thing VALUES (9)")  # never committed
    assert _open_elsewhere(warehouse.path, "SELECT count(*) FROM core.thing") == "[(0,)]"
    with warehouse.transaction() as con:  # the thread's next connection works
        con.execute("INSERT INTO core.thing VALUES (1)")
    with warehouse.read() as reader:
        assert reader.execute("SELECT id FROM core.thing").fetchall() == [(1,)]


def test_a_failed_load_rolls_back_and_the_next_one_starts_clean(tmp_path: Path) -> None:
    warehouse = Warehouse(f"duckdb:///{tmp_path / 'wh.duckdb'}")
    with warehouse.transaction() as con:
        con.execute("CREATE TABLE core.thing (id INTEGER PRIMARY KEY)")
    with warehouse.transaction() as con:
        con.execute("CREATE TEMP TABLE scratch AS SELECT 1 AS id")
    with pytest.raises(duckdb.ConstraintException), warehouse.transaction() as con:
        con.execute("INSERT INTO core.thing VALUES (1), (1)")
    with warehouse.transaction() as con:
        # The temporary table went with its connection; the failed insert left nothing.
        assert con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'scratch'"
        ).fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM core.thing").fetchone() == (0,)


def test_two_warehouses_in_turn_and_threads_at_once(tmp_path: Path) -> None:
    first = Warehouse(f"duckdb:///{tmp_path / 'a.duckdb'}")
    second = Warehouse(f"duckdb:///{tmp_path / 'b.duckdb'}")
    for warehouse, name in ((first, "a"), (second, "b"), (first, "a2")):
        with warehouse.transaction() as con:
            con.execute(f"CREATE TABLE core.{name} AS SELECT 1 AS id")
    with first.read() as reader:
        names = reader.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'core' ORDER BY 1"
        ).fetchall()
    assert names == [("a",), ("a2",)]

    errors: list[BaseException] = []

    def load(n: int) -> None:
        try:
            for i in range(5):
                with first.transaction() as con:
                    con.execute(f"INSERT INTO core.a SELECT {n * 10 + i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with first.read() as reader:
        assert reader.execute("SELECT count(*) FROM core.a").fetchone() == (16,)


def _write_in_child(url: str) -> None:
    with Warehouse(url).transaction() as con:
        con.execute("INSERT INTO core.thing VALUES (2)")


def test_a_forked_child_writes_without_its_parents_database(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    with Warehouse(url).transaction() as con:  # the parent's thread now keeps a database
        con.execute("CREATE TABLE core.thing (id INTEGER)")
        con.execute("INSERT INTO core.thing VALUES (1)")
    for other in ("b", "c"):  # and keeps as many as it keeps: the child's first one would push one out
        with Warehouse(f"duckdb:///{tmp_path / other}.duckdb").transaction() as con:
            con.execute("SELECT 1").fetchall()
    child = multiprocessing.get_context("fork").Process(target=_write_in_child, args=(url,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    with Warehouse(url).read() as reader:
        assert reader.execute("SELECT id FROM core.thing ORDER BY id").fetchall() == [(1,), (2,)]


def test_a_file_whose_path_has_quotes_and_spaces(tmp_path: Path) -> None:
    path = tmp_path / "o'neil's warehouse" / 'wh "x".duckdb'
    warehouse = Warehouse(f"duckdb:///{path}")
    with warehouse.transaction() as con:
        con.execute("CREATE TABLE core.thing AS SELECT 1 AS id")
    with warehouse.read() as reader:
        assert reader.execute("SELECT id FROM core.thing").fetchall() == [(1,)]
    assert _open_elsewhere(warehouse.path, "SELECT count(*) FROM core.thing") == "[(1,)]"
