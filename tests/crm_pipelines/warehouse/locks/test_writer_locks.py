"""The warehouse's writer lock on each backend: a lock file, a PostgreSQL advisory lock, a Redis lease.

Every test contends from separate processes (forked), as writers on two hosts would: the second
waits while the first holds and proceeds when it lets go; a holder killed with SIGKILL does not leave
the lock taken; a wait past ``lock_timeout`` fails with a message naming the warehouse and the wait.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import time
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import psycopg
import pytest

from crm_pipelines.warehouse.connection import Warehouse, open_warehouse
from crm_pipelines.warehouse.locks import LOCK_URL, LockServerError, WriterLockTimeout, open_lock
from crm_pipelines.warehouse.locks.postgresql import APPLICATION_NAME
from crm_pipelines_sandbox.postgres_server import PostgresServer

FORK = multiprocessing.get_context("fork")
NAME = "/srv/crm/warehouse.duckdb"  # the warehouse's identity: the DuckDB file's absolute path
LEASE_SECONDS = 2.0  # a Redis lease kept short, so a killed holder's lock runs out quickly


@pytest.fixture(params=["file", "postgresql", "redis"])
def lock_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A writer-lock URL of each backend: a lock file under ``tmp_path``, the PostgreSQL server, or Redis."""
    if request.param == "file":
        return (tmp_path / "warehouse.duckdb.lock").as_uri()
    if request.param == "postgresql":
        pg: PostgresServer = request.getfixturevalue("warehouse_server")
        return f"postgresql://{pg.user}:{pg.password}@{pg.host}:{pg.port}/{pg.database}"
    return str(request.getfixturevalue("redis_server").url(f"?lease_seconds={LEASE_SECONDS:g}"))


def password_of(url: str) -> str:
    """The password a lock URL carries ('' for a lock file)."""
    if "@" not in url:
        return ""
    return url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]


def _hold(url: str, name: str, seconds: float, events: Queue[tuple[str, float]]) -> None:
    """A writer: takes the lock, says when, keeps it ``seconds``, says when it lets go."""
    with open_lock(url, name, 60):
        events.put(("acquired", time.time()))
        time.sleep(seconds)
        events.put(("releasing", time.time()))


def start_holder(url: str, seconds: float) -> tuple[BaseProcess, Queue[tuple[str, float]]]:
    """A process holding the lock of ``NAME``, once it has it."""
    events: Queue[tuple[str, float]] = FORK.Queue()
    process = FORK.Process(target=_hold, args=(url, NAME, seconds, events), daemon=True)
    process.start()
    assert events.get(timeout=30)[0] == "acquired"
    return process, events


def _try_once(url: str, name: str) -> None:
    """Exit 0 when the lock was free, 3 when it was taken."""
    try:
        with open_lock(url, name, 0):
            pass
    except WriterLockTimeout:
        os._exit(3)


def free_elsewhere(url: str, name: str = NAME) -> bool:
    """Whether another process finds the lock free right now."""
    process = FORK.Process(target=_try_once, args=(url, name), daemon=True)
    process.start()
    process.join(30)
    assert process.exitcode in (0, 3)
    return process.exitcode == 0


def test_a_second_process_waits_while_the_first_holds_then_proceeds(lock_url: str) -> None:
    first, first_events = start_holder(lock_url, 1.5)
    second_events: Queue[tuple[str, float]] = FORK.Queue()
    asked = time.time()
    second = FORK.Process(target=_hold, args=(lock_url, NAME, 0.0, second_events), daemon=True)
    second.start()
    kind, first_lets_go = first_events.get(timeout=30)
    assert kind == "releasing"
    kind, second_has_it = second_events.get(timeout=30)
    assert kind == "acquired"
    assert second_has_it >= first_lets_go  # it waited its turn ...
    assert second_has_it - asked >= 1.0
    assert second_has_it - first_lets_go < 1.0  # ... and went on as soon as the lock was free
    for process in (first, second):
        process.join(30)
        assert process.exitcode == 0
    assert free_elsewhere(lock_url)


def test_the_holder_may_enter_again_and_only_its_outer_exit_lets_go(lock_url: str) -> None:
    lock = open_lock(lock_url, NAME, 5)
    with lock:
        with lock:
            assert not free_elsewhere(lock_url)
        assert not free_elsewhere(lock_url)
    assert free_elsewhere(lock_url)


@pytest.mark.parametrize("lock_url", ["postgresql", "redis"], indirect=True)
def test_each_warehouse_has_its_own_lock(lock_url: str) -> None:
    holder, _ = start_holder(lock_url, 60)
    try:
        assert not free_elsewhere(lock_url, NAME)
        assert free_elsewhere(lock_url, "/srv/other/warehouse.duckdb")
    finally:
        holder.kill()
        holder.join(30)


def test_a_killed_holder_does_not_leave_the_lock_taken(lock_url: str) -> None:
    holder, _ = start_holder(lock_url, 600)
    try:
        # Longer than a Redis lease: the holder renews it while it lives.
        time.sleep(LEASE_SECONDS * 1.5)
        assert not free_elsewhere(lock_url)
    finally:
        holder.kill()  # SIGKILL: no finally, no release
        holder.join(30)
    assert holder.exitcode == -signal.SIGKILL
    started = time.monotonic()
    with open_lock(lock_url, NAME, 30):
        waited = time.monotonic() - started
    # The OS frees the file, the server ends the session at once; a Redis lease runs out.
    assert waited < (LEASE_SECONDS + 1.0 if lock_url.startswith("redis") else 1.0)


def _write_and_hold(url: str, ready: Queue[tuple[str, float]]) -> None:
    with open_warehouse(url).transaction():
        ready.put(("acquired", time.time()))
        time.sleep(600)


def test_a_wait_past_the_timeout_names_the_warehouse_and_the_wait(
    lock_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "warehouse.duckdb"
    if lock_url.startswith("file:"):
        # The embedded default: a lock file beside the DuckDB file.
        monkeypatch.delenv(LOCK_URL, raising=False)
    else:
        monkeypatch.setenv(LOCK_URL, lock_url)
    ready: Queue[tuple[str, float]] = FORK.Queue()
    writer = FORK.Process(target=_write_and_hold, args=(f"duckdb:///{path}", ready), daemon=True)
    writer.start()
    try:
        assert ready.get(timeout=30)[0] == "acquired"
        started = time.monotonic()
        with (
            pytest.raises(WriterLockTimeout) as caught,
            Warehouse(f"duckdb:///{path}", lock_timeout=1).connect(),
        ):
            pass
        assert 0.9 <= time.monotonic() - started < 5.0  # redis-py stops one poll (0.1 s) early
    finally:
        writer.kill()
        writer.join(30)
    message = str(caught.value)
    where = {
        "file": f"lock file {path}.lock",
        "postgresql": "PostgreSQL advisory lock ",
        "redis": "Redis lock crm_pipelines:warehouse_lock:",
    }[lock_url.split(":", 1)[0]]
    assert message.startswith(
        f"DuckDB {path}: gave up after waiting 1 s (lock_timeout 1 s) for the warehouse's writer lock ({where}"
    )
    assert message.endswith("another process is writing it. The step can run again once that write ends.")
    if password_of(lock_url):
        assert password_of(lock_url) not in message


@pytest.mark.parametrize("lock_url", ["postgresql", "redis"], indirect=True)
def test_a_lock_server_that_refuses_the_login_is_named_without_the_password(lock_url: str) -> None:
    wrong = "not-the-password-31337"
    refused = lock_url.replace(f":{password_of(lock_url)}@", f":{wrong}@")
    with pytest.raises(LockServerError) as caught, open_lock(refused, NAME, 5):
        pass
    message = str(caught.value)
    assert message.startswith(f"{NAME}: could not reach the warehouse's writer lock (")
    assert "127.0.0.1:" in message
    assert wrong not in message
    assert password_of(lock_url) not in message


def test_an_unknown_scheme_is_named() -> None:
    with pytest.raises(
        ValueError, match=r"CRM_PIPELINES_LOCK_URL: no writer lock for 'zookeeper' URLs \(known: "
    ):
        open_lock("zookeeper://zk:2181/locks", NAME, 1)


# ---------------------------------------------------- two warehouses on one PostgreSQL lock


def _write_turns(url: str, who: str, start: Barrier, out: Queue[tuple[str, int, float, float]]) -> None:
    warehouse = open_warehouse(url)
    start.wait(30)
    for turn in range(3):
        with warehouse.transaction() as con:
            began = time.time()
            con.execute("CREATE TABLE IF NOT EXISTS raw.turns (who VARCHAR, turn INTEGER)")
            con.execute("INSERT INTO raw.turns VALUES (?, ?)", [who, turn])
            time.sleep(0.3)
            ended = time.time()
        out.put((who, turn, began, ended))


def test_two_warehouses_on_one_postgresql_lock_take_turns(
    warehouse_url: str, warehouse_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock_server = warehouse_server
    monkeypatch.setenv(
        LOCK_URL,
        f"postgresql://{lock_server.user}:{lock_server.password}@{lock_server.host}:{lock_server.port}/"
        f"{lock_server.database}",
    )
    start = FORK.Barrier(2)
    out: Queue[tuple[str, int, float, float]] = FORK.Queue()
    writers = [
        FORK.Process(target=_write_turns, args=(warehouse_url, who, start, out), daemon=True)
        for who in ("a", "b")
    ]
    for writer in writers:
        writer.start()
    # While they write, the lock they take turns on is the server's advisory lock.
    seen: list[Any] = []
    with psycopg.connect(lock_server.conninfo(), autocommit=True) as pg:
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:
            seen = pg.execute(
                "SELECT l.objid FROM pg_locks AS l JOIN pg_stat_activity AS a USING (pid) "
                "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s",
                [APPLICATION_NAME],
            ).fetchall()
            time.sleep(0.05)
    turns = sorted((out.get(timeout=60) for _ in range(6)), key=lambda t: t[2])
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    assert seen
    # The six transactions ran one after another: none began before the previous one ended.
    for previous, following in itertools.pairwise(turns):
        assert following[2] >= previous[3], (previous, following)
    assert {(who, turn) for who, turn, _, _ in turns} == {(w, t) for w in "ab" for t in range(3)}
    with open_warehouse(warehouse_url).read() as reader:
        rows = reader.execute("SELECT who, count(*) FROM raw.turns GROUP BY who ORDER BY who").fetchall()
    assert [tuple(row) for row in rows] == [("a", 3), ("b", 3)]
    assert list(tmp_path.glob("*.lock")) == []  # no lock file: the server's lock was the only one
