"""The one incremental core: read since the watermark, merge onto the last snapshot, mark deletes.

Every source kind that keeps a table in the lake (the CRM APIs, the ERP database, and the sources to
come) lands ``raw/<source>/<dataset>/dt=D/`` as the whole object **as of D**, with a ``_deleted``
flag, because staging, identity and reconciliation read that folder as a snapshot. How it gets there:

1. :meth:`SnapshotBuild.base` finds what to build on: the night's own last complete run when the
   night is run again (moved aside to ``rerun/raw/...`` while the new one is written in its place),
   else :func:`latest_snapshot_before`, the newest *complete* earlier snapshot. Complete means
   Parquet plus its ``_watermark.json``, which is written last, so a folder a crashed run left behind
   is never a base.
2. :func:`plan_read` decides the read: **full** (no base, no cursor, or nothing sensible to read
   incrementally), **incremental** (every change since the earlier of what the base reached and the
   committed watermark, minus the declared lookback) or **delta** (follow the change-tracking link
   the base ended with).
3. :class:`SnapshotBuild` writes a full read straight into the raw folder, or an incremental read
   into ``increment/<source>/<dataset>/dt=D/`` and merges it onto the base (newest row per key wins;
   keys missing from a keys-only read of the source stay, flagged deleted), then
   :meth:`SnapshotBuild.finish` writes the marker with the cursor reached and removes the increment
   and the kept earlier run.

The raw load advances ``ops.watermark`` from that marker in the transaction that commits the rows
(:mod:`crm_pipelines.warehouse.watermarks`), so a run that fails before then leaves the watermark where
it was and the next run reads the same window again. File drops are incremental by file version (the
ledger ``ops.file_ingest``, keyed on path and sha256), not by a cursor, so they do not use this.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

from crm_pipelines.lake import (
    DELETED,
    EXTRACTED_AT,
    LakePath,
    children,
    connect,
    has_parquet,
    local_copy,
    move,
    move_tree,
    parquet_glob,
    partition_dir,
    publish,
    reader,
    remove_tree,
    reset_dir,
    scan_parquet,
    stream_to_parquet,
)
from crm_pipelines.sql import quote_ident, quote_literal
from crm_pipelines.warehouse.watermarks import PendingWatermark, read_pending, write_pending

__all__ = [
    "SNAPSHOT_FILE",
    "CursorKind",
    "EmptyKeysRead",
    "ReadPlan",
    "Snapshot",
    "SnapshotBuild",
    "latest_snapshot_before",
    "live_rows",
    "merge_snapshot",
    "parse_watermark",
    "plan_read",
    "rerun_root",
]

SNAPSHOT_FILE = "part-0000.parquet"
_PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")

# How a dataset's cursor is stored in ops.watermark: an ISO-8601 UTC instant, an integer sequence
# (a rowversion), or an opaque change-tracking link (Dynamics 365 delta links).
CursorKind = Literal["timestamp", "integer", "delta_link"]


@dataclass(frozen=True)
class Snapshot:
    """A complete snapshot in the lake: its partition, folder and the marker written last."""

    partition: str
    folder: LakePath
    pending: PendingWatermark


def latest_snapshot_before(
    *, lake_dir: LakePath, source: str, dataset: str, partition: str
) -> Snapshot | None:
    """The newest complete raw snapshot of a dataset strictly before ``partition``.

    Complete means Parquet plus ``_watermark.json``: the marker is written after the Parquet is in
    place, so a folder without it is a run that died midway and is not trusted as a base.

    Args:
        lake_dir: Root of the lake.
        source: Source system, e.g. ``salesforce``.
        dataset: Dataset, e.g. ``contacts``.
        partition: The partition being built (``YYYY-MM-DD``).

    Returns:
        The snapshot, or None when there is no complete earlier one.
    """
    root = partition_dir(lake_dir, "raw", source, dataset, partition).parent
    for folder in reversed(children(root)):
        match = _PARTITION.match(folder.name)
        if not match or match.group(1) >= partition or not has_parquet(folder):
            continue
        pending = read_pending(folder)
        if pending is not None:
            return Snapshot(match.group(1), folder, pending)
    return None


def rerun_root(lake_dir: LakePath) -> LakePath:
    """Where a night's last run is kept while the night is extracted again (the lake's layout below it)."""
    return lake_dir / "rerun"


def parse_watermark(value: str, kind: CursorKind) -> dt.datetime | int | str:
    """A stored cursor as a value that orders: an aware UTC datetime, an integer, or the link itself."""
    if kind == "integer":
        return int(value)
    if kind == "delta_link":
        return value
    moment = dt.datetime.fromisoformat(value)
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


@dataclass(frozen=True)
class ReadPlan:
    """What an extract reads: everything, the changes since a cursor, or a change-tracking link.

    Attributes:
        mode: ``full``, ``incremental`` or ``delta``.
        base: The snapshot an incremental or delta read is merged onto.
        start: Where the changes start, before the lookback (the earlier of the base's reached cursor
            and the committed watermark), as stored.
        since: The inclusive lower bound to read from: ``start`` minus the lookback.
        delta_link: The link a delta read follows.
    """

    mode: Literal["full", "incremental", "delta"]
    base: Snapshot | None = None
    start: str | None = None
    since: dt.datetime | int | None = None
    delta_link: str | None = None

    @property
    def incremental(self) -> bool:
        """True when the read is merged onto a base snapshot (incremental or delta)."""
        return self.mode != "full"


FULL = ReadPlan("full")


def plan_read(
    *,
    base: Snapshot | None,
    committed: str | None,
    kind: CursorKind | None,
    lookback_seconds: int = 0,
    until: dt.datetime | None = None,
) -> ReadPlan:
    """Decide how to read a dataset for one partition.

    Args:
        base: The latest complete earlier snapshot (:func:`latest_snapshot_before`).
        committed: The committed watermark from ``ops.watermark`` (None before the first load).
        kind: The declared cursor kind; None when the dataset is always read in full.
        lookback_seconds: How far before the start to read again (late commits, clock skew).
        until: The partition's cutoff, for timestamp cursors: a window starting at or after it
            has nothing sensible to read incrementally, so the read is full.

    Returns:
        The plan.
    """
    if kind is None or base is None:
        return FULL
    if kind == "delta_link":
        # The base holds everything up to its own link: follow that one, not the newest committed
        # one (an older partition run again builds on its own last run).
        link = base.pending.reached if base.pending.kind == "delta_link" else None
        return ReadPlan("delta", base=base, delta_link=link) if link else FULL
    # The increment must cover every change since the base was taken: start from what the base
    # reached, or from the committed watermark when that is earlier (an older partition run again,
    # or a base whose load never committed). A base of another cursor kind is not comparable.
    starts = [c for c in (base.pending.reached if base.pending.kind == kind else None, committed) if c]
    if not starts:
        return FULL
    start = min(starts, key=lambda c: parse_watermark(c, kind))
    since: dt.datetime | int
    if kind == "integer":
        since = int(start) - lookback_seconds
    else:
        moment = parse_watermark(start, kind)
        assert isinstance(moment, dt.datetime)
        since = moment - dt.timedelta(seconds=lookback_seconds)
        if until is not None and since >= until:
            return FULL
    return ReadPlan("incremental", base=base, start=start, since=since)


class EmptyKeysRead(Exception):
    """A keys-only read found nothing while the base snapshot has live records.

    Far likelier a wrong declaration or a missing permission than an emptied system, so nothing is
    marked deleted and the extract stops.
    """


class SnapshotBuild:
    """One partition's snapshot being built in the lake: ``raw`` (the result) and ``increment`` folders.

    Args:
        lake_dir: Root of the lake.
        source: Source system.
        dataset: Dataset.
        partition: Partition key ``D``.
    """

    def __init__(self, *, lake_dir: LakePath, source: str, dataset: str, partition: str) -> None:
        self.lake_dir = lake_dir
        self.source = source
        self.dataset = dataset
        self.partition = partition
        self.raw = partition_dir(lake_dir, "raw", source, dataset, partition)
        self.increment = partition_dir(lake_dir, "increment", source, dataset, partition)
        self.kept = partition_dir(rerun_root(lake_dir), "raw", source, dataset, partition)

    def base(self) -> Snapshot | None:
        """The snapshot this run builds on: the night's own last complete run, else an earlier night's.

        A night run again reads only what changed since its last run, not the whole day since the
        night before: that run's snapshot is moved aside (:func:`rerun_root`), since this run writes
        in its place, and :meth:`finish` removes it. A run that dies in between leaves it there, still
        the base of the next attempt; a complete snapshot in the night's folder is always the newer.
        """
        if has_parquet(self.raw) and read_pending(self.raw) is not None:
            move_tree(self.raw, self.kept)
        if has_parquet(self.kept):
            pending = read_pending(self.kept)
            if pending is not None:
                return Snapshot(self.partition, self.kept, pending)
        return latest_snapshot_before(
            lake_dir=self.lake_dir, source=self.source, dataset=self.dataset, partition=self.partition
        )

    @property
    def snapshot_file(self) -> LakePath:
        return self.raw / SNAPSHOT_FILE

    @property
    def increment_file(self) -> LakePath:
        return self.increment / SNAPSHOT_FILE

    @property
    def keys_dir(self) -> LakePath:
        return self.increment / "keys"

    def write_full(self, batches: Iterable[pa.RecordBatch], *, empty_schema: pa.Schema) -> int:
        """Stream a full read into the raw folder (emptied first); returns the rows written."""
        remove_tree(self.increment)  # a stale increment of an earlier run must not be read
        return stream_to_parquet(reset_dir(self.raw) / SNAPSHOT_FILE, batches, empty_schema=empty_schema)

    def write_increment(self, batches: Iterable[pa.RecordBatch], *, empty_schema: pa.Schema) -> int:
        """Stream the changes into the increment folder (emptied first); returns the rows written."""
        return stream_to_parquet(
            reset_dir(self.increment) / SNAPSHOT_FILE, batches, empty_schema=empty_schema
        )

    def write_live_keys(
        self, batches: Iterable[pa.RecordBatch], *, schema: pa.Schema, base: Snapshot, what: str
    ) -> int:
        """Stream a keys-only read of the source (``deletes: key_compare``); returns the keys read.

        Raises:
            EmptyKeysRead: No key came back while ``base`` has live records.
        """
        count = stream_to_parquet(reset_dir(self.keys_dir) / SNAPSHOT_FILE, batches, empty_schema=schema)
        if count == 0:
            live = live_rows(base.folder)
            if live > 0:
                raise EmptyKeysRead(
                    f"{what}: the keys read for delete detection returned no records while the last "
                    f"snapshot has {live} live ones; refusing to mark them all deleted."
                )
        return count

    def adopt_increment(self) -> None:
        """The increment is the whole object (an expired delta link read everything): it is the snapshot."""
        reset_dir(self.raw)
        move(self.increment_file, self.snapshot_file)

    def merge(
        self, *, base: Snapshot, primary_key: Sequence[str], columns: Sequence[str] | None = None
    ) -> tuple[int, int]:
        """Write the snapshot as ``base`` overlaid with the increment; keys read apply when present.

        Returns:
            (rows in the snapshot, rows flagged deleted).
        """
        reset_dir(self.raw)
        return merge_snapshot(
            previous=base.folder,
            increment=self.increment_file,
            output=self.snapshot_file,
            primary_key=primary_key,
            columns=columns,
            live_keys=self.keys_dir if self.keys_dir.is_dir() else None,
        )

    def finish(
        self, *, since: str | None, reached: str | None, kind: CursorKind = "timestamp"
    ) -> PendingWatermark:
        """Write the marker that makes the snapshot complete: what was read and the cursor reached.

        Written last: its presence is what :func:`latest_snapshot_before` trusts.
        """
        pending = PendingWatermark(
            source=self.source, dataset=self.dataset, since=since, reached=reached, kind=kind
        )
        write_pending(self.raw, pending)
        # What the snapshot was built from goes: the night's earlier run, if this one built on it,
        # and the increment, a second copy of the changed records (personal data among them).
        remove_tree(self.kept)
        remove_tree(self.increment)
        return pending


def _scan(path: LakePath) -> str:
    return scan_parquet(parquet_glob(path) if path.is_dir() else path)


def merge_snapshot(
    *,
    previous: LakePath,
    increment: LakePath,
    output: LakePath,
    primary_key: Sequence[str],
    columns: Sequence[str] | None = None,
    live_keys: LakePath | None = None,
) -> tuple[int, int]:
    """Write ``output`` = the ``previous`` snapshot overlaid with ``increment`` (newest row per key).

    One DuckDB ``COPY`` over Parquet: an anti-join against the (small) increment streams the (big)
    previous snapshot through, so memory stays flat with the snapshot's size.

    Args:
        previous: The earlier snapshot (a folder of Parquet files, or one file).
        increment: The changes (a folder or a file). A key repeats within it only across passes
            (live, then deleted): the row extracted last is the newer state. A deletion of a key
            the earlier snapshot does not hold (created and deleted in between, or gone before a
            full read) leaves no row: a full read would not have it either.
        output: Parquet file to write (appears atomically).
        primary_key: Columns identifying a record.
        columns: Output columns in order; a column the earlier snapshot lacks (a newly declared
            field) comes out null, and ``_deleted`` false where it was missing. None: every column
            of either side.
        live_keys: A keys-only read of the source (``deletes: key_compare``): a record whose key is
            not there has been deleted and stays in the snapshot with ``_deleted`` true.

    Returns:
        (rows in the snapshot, rows flagged deleted).
    """
    keys = [quote_ident(c) for c in primary_key]
    deleted = quote_ident(DELETED)
    same_key = " AND ".join(f"i.{k} = p.{k}" for k in keys)
    newest_first = f"{quote_ident(EXTRACTED_AT)} DESC" if _has_column(increment, EXTRACTED_AT) else "1"
    if live_keys is not None:
        flag = f"(coalesce(m.{deleted}, false) OR k._present IS NULL) AS {deleted}"
        keys_join = (
            f"LEFT JOIN (SELECT DISTINCT {', '.join(keys)}, true AS _present FROM {_scan(live_keys)}) AS k "
            f"USING ({', '.join(keys)})"
        )
    else:
        flag = f"coalesce(m.{deleted}, false) AS {deleted}"
        keys_join = ""
    if columns is None:
        select = f"m.* EXCLUDE ({deleted}), {flag}"
    else:
        select = ", ".join(flag if c == DELETED else f"m.{quote_ident(c)}" for c in columns)
    tmp = local_copy(output)
    sql = f"""
        COPY (
            WITH increment AS (
                SELECT * FROM {_scan(increment)}
                QUALIFY row_number() OVER (PARTITION BY {", ".join(keys)} ORDER BY {newest_first}) = 1
            )
            SELECT {select} FROM (
                SELECT * FROM {_scan(previous)} AS p
                WHERE NOT EXISTS (SELECT 1 FROM increment AS i WHERE {same_key})
                UNION ALL BY NAME
                SELECT * FROM increment AS i
                WHERE NOT coalesce(i.{deleted}, false)
                   OR EXISTS (SELECT 1 FROM {_scan(previous)} AS p WHERE {same_key})
            ) AS m
            {keys_join}
        ) TO {quote_literal(str(tmp))} (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)
    """
    con = connect()
    try:
        con.execute("SET preserve_insertion_order = false")  # lets the COPY stream in parallel
        con.execute(sql)
        publish(tmp, output)
        row = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE {deleted}) FROM {_scan(output)}"
        ).fetchone()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        con.close()
    assert row is not None
    return int(row[0]), int(row[1])


def _has_column(path: LakePath, column: str) -> bool:
    with reader() as con:
        names = [d[0] for d in con.execute(f"SELECT * FROM {_scan(path)} LIMIT 0").description]
    return column in names


def live_rows(folder: LakePath) -> int:
    """Rows of a snapshot not flagged deleted."""
    with reader() as con:
        row = con.execute(
            f"SELECT count(*) FILTER (WHERE NOT coalesce({quote_ident(DELETED)}, false)) FROM {_scan(folder)}"
        ).fetchone()
    return int(row[0]) if row else 0
