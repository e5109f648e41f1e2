"""Opening the warehouse file for one connection without building a new DuckDB database each time.

``duckdb.connect(path)`` builds a database: about 13 ms of CPU for DuckDB's own catalog of built-in
functions before the file is read, 22-25 ms in all on a 100,000-contact warehouse. A night opens the
warehouse about 500 times (each extract's watermark, each volume check, each sync's batches), so
that was a tenth of a changed night. Attaching the file to an in-memory database this thread keeps
costs about 7 ms: the file's own catalog only.

Each connection still holds the file alone, as before: the file is attached for the connection and
detached when it ends, so DuckDB's lock on it is released for the other steps and processes, and a
detach checkpoints like a close. The connection is a cursor whose default database is the file, and
so is every cursor made from it; the host database keeps no table of its own.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from crm_pipelines.lake import lake_filesystems, register_lake
from crm_pipelines.sql import quote_literal

ALIAS = "warehouse"
_PLACEHOLDER = "memory"  # the host's in-memory database, the default while no file is attached
_KEPT = 2  # hosts per thread (one per warehouse file; tests use several)


class _Host:
    def __init__(self, path: Path) -> None:
        # A file database spills to ``<file>.tmp``; the host would spill to ``.tmp`` in the working
        # directory, so it is told where.
        self.con = register_lake(duckdb.connect(config={"temp_directory": f"{path}.tmp"}))
        self.filesystems = [id(fs) for fs in lake_filesystems()]


_HOSTS = threading.local()
_INHERITED: list[_Host] = []  # a forked child never uses, closes or frees its parent's databases


def _hosts() -> OrderedDict[Path, _Host]:
    """This thread's hosts, by warehouse file, the last used last."""
    hosts: OrderedDict[Path, _Host] | None = getattr(_HOSTS, "by_path", None)
    if hosts is None or getattr(_HOSTS, "pid", None) != os.getpid():
        if hosts:
            _INHERITED.extend(hosts.values())
        hosts = _HOSTS.by_path = OrderedDict()
        _HOSTS.pid = os.getpid()
    return hosts


def _host(path: Path) -> _Host:
    hosts = _hosts()
    host = hosts.pop(path, None)
    if host is not None and host.filesystems != [id(fs) for fs in lake_filesystems()]:
        host.con.close()  # a new lake filesystem registers with a new database
        host = None
    if host is None:
        host = _Host(path)
    hosts[path] = host
    while len(hosts) > _KEPT:
        _, old = hosts.popitem(last=False)
        old.con.close()
    return host


@contextmanager
def attached(path: Path, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the DuckDB file at ``path``, which is attached only while it is open.

    The caller holds the warehouse lock: one connection to the file at a time in this process.
    """
    host = _host(path)
    con = host.con
    mode = " (READ_ONLY)" if read_only else ""
    con.execute(f"ATTACH {quote_literal(str(path))} AS {ALIAS}{mode}")
    cursor: duckdb.DuckDBPyConnection | None = None
    placeholder = True
    try:
        # With the placeholder gone, the file is the default database of every new cursor.
        con.execute(f"USE {ALIAS}")
        con.execute(f"DETACH {_PLACEHOLDER}")
        placeholder = False
        cursor = con.cursor()
        yield cursor
    finally:
        if cursor is not None:
            cursor.close()
        try:
            if not placeholder:
                con.execute(f"ATTACH ':memory:' AS {_PLACEHOLDER}")
            con.execute(f"USE {_PLACEHOLDER}")
            con.execute(f"DETACH {ALIAS}")
        except duckdb.Error:
            # Something still holds the file (a cursor the caller kept): closing the whole database
            # releases it for certain, and the next connection builds a new one.
            _hosts().pop(path, None)
            con.close()
