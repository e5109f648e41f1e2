"""Persistent golden ids: tonight's clusters take over last night's ids, and every change is recorded.

Identity resolution clusters the records again each night. The golden ids must not follow the
clusters blindly, or every merge and split would rename records that analysts, marts and the syncs
(``ops.sync_state.source_key``) key on. Given the previous assignment (``core.xref_identity`` before
tonight's load) and every id ever recorded (``core.golden_id_history``), in DuckDB SQL:

1. each previous id has one *home* tonight: the cluster holding its *anchor*, the record the id was
   made from; when that record is gone, the cluster holding most of the id's members (ties: the
   cluster with the smallest record_id);
2. a cluster that is home to previous ids keeps one of them, the one most of its members carried
   (ties: the first seen, then the smallest id), so an id survives growth; the other ids homed there
   are **merged** into it;
3. a cluster home to no previous id gets a new id: a **split** from the id most of its members
   carried (whose anchor went elsewhere), or **created** when none carried one; unless none of its
   members carried an id and it holds the anchor of an id no record carries any more and that was
   never merged into another (its records were deleted, or left the source): that id **returned**
   with its record, as a record deleted by mistake and restored keeps its golden id and its history;
4. a new id is the entity's prefix plus the first 16 hex digits of md5(smallest record_id), as on the
   first night; when that id is taken (kept tonight or ever recorded) it is md5(record_id || '#' || n)
   for the smallest free n, so an id never comes back with another meaning.

Unmatched records are clusters of one. Re-running a night with its own output as the previous
assignment keeps every id and records nothing. An id kept from before the history existed is recorded
once as created, with the smallest record_id it had as anchor (how such ids were made).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from crm_pipelines.sql import fetch_arrow
from crm_pipelines.warehouse.connection import table_exists

__all__ = [
    "EVENTS",
    "HISTORY_DDL",
    "KNOWN_IDS",
    "PREVIOUS_XREF",
    "PREVIOUS_XREF_INPUT",
    "GoldenIdStats",
    "PreviousIds",
    "assign_golden_ids",
    "previous_ids",
    "register_previous",
]

#: Record -> golden id of the previous run, per entity.
PREVIOUS_XREF = pa.schema([("entity", pa.string()), ("record_id", pa.string()), ("golden_id", pa.string())])
#: Every golden id ever recorded: the record it was made from, the partition it first appeared in
#: and whether it was ever merged into another (such an id never comes back on its own).
KNOWN_IDS = pa.schema(
    [
        ("entity", pa.string()),
        ("golden_id", pa.string()),
        ("anchor_record_id", pa.string()),
        ("first_seen", pa.string()),
        ("merged", pa.bool_()),
    ]
)
#: One run's changes of golden ids (``golden_id_history.parquet``).
EVENTS = pa.schema(
    [
        ("entity", pa.string()),
        ("golden_id", pa.string()),
        ("event", pa.string()),
        ("related_id", pa.string()),
        ("anchor_record_id", pa.string()),
    ]
)

HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS core.golden_id_history (
    entity VARCHAR,            -- account | contact
    golden_id VARCHAR,         -- the id the event is about
    event VARCHAR,             -- created | split | merged | returned
    related_id VARCHAR,        -- split: the id it split from; merged: the id it was merged into
    anchor_record_id VARCHAR,  -- created, split, returned: the record the id was made from (it stays with that record)
    partition VARCHAR,         -- the night whose identity run recorded it
    run_id VARCHAR,
    recorded_at TIMESTAMPTZ
)
"""

PREVIOUS_XREF_INPUT = "identity_previous_xref_input"
_KNOWN_INPUT = "identity_known_ids_input"
# Candidates tried per round after the first, which tries only the plain md5 (almost always free):
# a taken id is rare (an id merged away, then its record split off again).
_ATTEMPTS_PER_ROUND = 4


@dataclass(frozen=True)
class PreviousIds:
    """What earlier runs assigned: ``xref`` (schema ``PREVIOUS_XREF``) and ``known`` (``KNOWN_IDS``)."""

    xref: pa.Table
    known: pa.Table

    @classmethod
    def empty(cls) -> PreviousIds:
        """The first night: no ids yet."""
        return cls(xref=PREVIOUS_XREF.empty_table(), known=KNOWN_IDS.empty_table())


@dataclass(frozen=True)
class GoldenIdStats:
    """How tonight's golden ids relate to the previous ones (clusters of one included)."""

    kept: int
    created: int
    merged: int
    split: int
    returned: int = 0


def previous_ids(con: duckdb.DuckDBPyConnection) -> PreviousIds:
    """Read the golden ids the warehouse holds (``core.xref_identity``, ``core.golden_id_history``).

    Args:
        con: Warehouse connection (read-only is enough), before tonight's identity load.

    Returns:
        The previous assignment and every id ever recorded; empty tables where nothing is loaded yet.
    """
    xref = PREVIOUS_XREF.empty_table()
    known = KNOWN_IDS.empty_table()
    if table_exists(con, "core", "xref_identity"):
        xref = fetch_arrow(con, "SELECT entity, record_id, golden_id FROM core.xref_identity").cast(
            PREVIOUS_XREF
        )
    if table_exists(con, "core", "golden_id_history"):
        known = fetch_arrow(
            con,
            """
            SELECT entity, golden_id,
                   any_value(anchor_record_id) FILTER (WHERE event IN ('created', 'split')) AS anchor_record_id,
                   min(partition) AS first_seen,
                   bool_or(event = 'merged') AS merged
            FROM core.golden_id_history
            GROUP BY entity, golden_id
            """,
        ).cast(KNOWN_IDS)
    return PreviousIds(xref=xref, known=known)


def register_previous(cur: duckdb.DuckDBPyConnection, previous: PreviousIds | None) -> None:
    """Make the previous ids readable on ``cur`` for :func:`assign_golden_ids`."""
    previous = previous or PreviousIds.empty()
    cur.register(PREVIOUS_XREF_INPUT, previous.xref.select(PREVIOUS_XREF.names).cast(PREVIOUS_XREF))
    cur.register(_KNOWN_INPUT, previous.known.select(KNOWN_IDS.names).cast(KNOWN_IDS))


def assign_golden_ids(
    cur: duckdb.DuckDBPyConnection,
    *,
    entity: str,
    prefix: str,
    src: str,
    linked: str,
    table: Callable[[str], str],
) -> GoldenIdStats:
    """Give every cluster of tonight its golden id (see the module docstring for the rules).

    Args:
        cur: Cursor on which :func:`register_previous` ran.
        entity: 'account' or 'contact'.
        prefix: Prefix of the entity's ids ('A-', 'C-').
        src: Table of tonight's records (``rid``, ``record_id``).
        linked: Table of the records that matched another (``rid``, ``cluster``); the others are
            clusters of one whose cluster is their ``rid``.
        table: Quoted name of a temporary table of this entity for a purpose.

    Returns:
        Ids kept, created, merged and split. Leaves ``table('ids')`` (``cluster``, ``golden_id``, one
        row per cluster) and ``table('id_events')`` (schema ``EVENTS``).
    """
    members, clusters, prev, anchors, carried, homes, pending, returned, taken, fresh = (
        table(f"ids_{purpose}")
        for purpose in (
            "members",
            "clusters",
            "prev",
            "anchors",
            "carried",
            "homes",
            "pending",
            "returned",
            "taken",
            "fresh",
        )
    )
    ids, events = table("ids"), table("id_events")

    def run(sql: str, params: dict[str, object] | None = None) -> None:
        cur.execute(sql, params)

    run(
        f"""
        CREATE OR REPLACE TEMP TABLE {members} AS
        SELECT s.record_id, coalesce(k.cluster, s.rid) AS cluster
        FROM {src} AS s LEFT JOIN {linked} AS k USING (rid)
        """
    )
    run(
        f"""
        CREATE OR REPLACE TEMP TABLE {clusters} AS
        SELECT cluster, min(record_id) AS first_record FROM {members} GROUP BY cluster
        """
    )
    run(
        f"""
        CREATE OR REPLACE TEMP TABLE {prev} AS
        SELECT record_id, golden_id FROM {PREVIOUS_XREF_INPUT} WHERE entity = $entity AND golden_id IS NOT NULL
        """,
        {"entity": entity},
    )
    # The anchor of each previous id; an id older than the history was made from its smallest record_id.
    run(
        f"""
        CREATE OR REPLACE TEMP TABLE {anchors} AS
        SELECT p.golden_id,
               coalesce(any_value(k.anchor_record_id), min(p.record_id)) AS anchor_record_id,
               any_value(k.first_seen) AS first_seen,
               bool_or(k.golden_id IS NOT NULL) AS recorded
        FROM {prev} AS p
        LEFT JOIN (SELECT * FROM {_KNOWN_INPUT} WHERE entity = $entity) AS k USING (golden_id)
        GROUP BY p.golden_id
        """,
        {"entity": entity},
    )
    # Per cluster and previous id: how many members carried it, and whether its anchor is among them.
    run(
        f"""
        CREATE OR REPLACE TEMP TABLE {carried} AS
        SELECT m.cluster, p.golden_id, count(*) AS n, bool_or(m.record_id = a.anchor_record_id) AS has_anchor
        FROM {members} AS m
        JOIN {prev} AS p USING (record_id)
        JOIN {anchors} AS a USING (golden_id)
        GROUP BY m.cluster, p.golden_id
        """
    )
    # Each previous id's home cluster, ranked among the ids homed in the same cluster (place 1 keeps).
    run(
        f"""
        CREATE OR REPLACE TEMP TABLE {homes} AS
        WITH home AS (
            SELECT c.cluster, c.golden_id, c.n
            FROM {carried} AS c JOIN {clusters} AS cl USING (cluster)
            QUALIFY row_number() OVER (
                PARTITION BY c.golden_id ORDER BY c.has_anchor DESC, c.n DESC, cl.first_record
            ) = 1
        )
        SELECT h.cluster, h.golden_id, a.anchor_record_id, a.recorded,
               row_number() OVER (
                   PARTITION BY h.cluster ORDER BY h.n DESC, a.first_seen NULLS LAST, h.golden_id
               ) AS place
        FROM home AS h JOIN {anchors} AS a USING (golden_id)
        """
    )
    run(f"CREATE OR REPLACE TEMP TABLE {ids} AS SELECT cluster, golden_id FROM {homes} WHERE place = 1")
    run(
        f"""
        CREATE OR REPLACE TEMP TABLE {events} AS
        SELECT $entity AS entity, l.golden_id, 'merged' AS event, w.golden_id AS related_id,
               CAST(NULL AS VARCHAR) AS anchor_record_id
        FROM {homes} AS l JOIN {homes} AS w ON w.cluster = l.cluster AND w.place = 1
        WHERE l.place > 1
        UNION ALL
        SELECT $entity, golden_id, 'created', NULL, anchor_record_id
        FROM {homes} WHERE place = 1 AND NOT recorded
        """,
        {"entity": entity},
    )
    # Clusters without a previous id, and the id most of their members carried, if any (a split).
    run(
        f"""
        CREATE OR REPLACE TEMP TABLE {pending} AS
        SELECT cl.cluster, cl.first_record, s.golden_id AS split_from
        FROM {clusters} AS cl
        LEFT JOIN (
            SELECT cluster, golden_id FROM {carried}
            QUALIFY row_number() OVER (PARTITION BY cluster ORDER BY n DESC, golden_id) = 1
        ) AS s USING (cluster)
        WHERE cl.cluster NOT IN (SELECT cluster FROM {ids})
        """
    )
    # A cluster none of whose members carried an id, holding the anchor of an id that no record
    # carries now and that was never merged: that id comes back (the newest such id of the anchor).
    run(
        f"""
        CREATE OR REPLACE TEMP TABLE {returned} AS
        SELECT p.cluster, k.golden_id, k.anchor_record_id
        FROM {pending} AS p
        JOIN {members} AS m USING (cluster)
        JOIN (
            SELECT golden_id, anchor_record_id, first_seen FROM {_KNOWN_INPUT}
            WHERE entity = $entity AND NOT coalesce(merged, false) AND anchor_record_id IS NOT NULL
              AND golden_id NOT IN (SELECT golden_id FROM {prev})
        ) AS k ON k.anchor_record_id = m.record_id
        WHERE p.split_from IS NULL
        QUALIFY row_number() OVER (PARTITION BY p.cluster ORDER BY k.first_seen DESC NULLS LAST, k.golden_id DESC) = 1
        """,
        {"entity": entity},
    )
    run(f"INSERT INTO {ids} SELECT cluster, golden_id FROM {returned}")
    run(
        f"""
        INSERT INTO {events}
        SELECT $entity, golden_id, 'returned', NULL, anchor_record_id FROM {returned}
        """,
        {"entity": entity},
    )
    run(f"DELETE FROM {pending} WHERE cluster IN (SELECT cluster FROM {returned})")
    run(
        f"""
        CREATE OR REPLACE TEMP TABLE {taken} AS
        SELECT golden_id FROM {anchors}
        UNION SELECT golden_id FROM {_KNOWN_INPUT} WHERE entity = $entity
        """,
        {"entity": entity},
    )
    run(f"CREATE OR REPLACE TEMP TABLE {fresh} (cluster BIGINT, golden_id VARCHAR)")
    first_attempt, attempts = 0, 1
    while _count(cur, f"SELECT count(*) FROM {pending} WHERE cluster NOT IN (SELECT cluster FROM {fresh})"):
        # Per open cluster the first free candidate; two clusters never share one (the smaller wins).
        run(
            f"""
            INSERT INTO {fresh}
            WITH candidates AS (
                SELECT p.cluster, p.first_record, a.attempt,
                       $prefix || left(md5(CASE WHEN a.attempt = 0 THEN p.first_record
                                                ELSE p.first_record || '#' || a.attempt END), 16) AS golden_id
                FROM {pending} AS p, range($first, $first + $attempts) AS a(attempt)
                WHERE p.cluster NOT IN (SELECT cluster FROM {fresh})
            ),
            free AS (
                SELECT * FROM candidates
                WHERE golden_id NOT IN (SELECT golden_id FROM {taken})
                QUALIFY row_number() OVER (PARTITION BY golden_id ORDER BY first_record) = 1
            )
            SELECT cluster, golden_id FROM free
            QUALIFY row_number() OVER (PARTITION BY cluster ORDER BY attempt) = 1
            """,
            {"prefix": prefix, "first": first_attempt, "attempts": attempts},
        )
        run(
            f"INSERT INTO {taken} SELECT golden_id FROM {fresh} WHERE golden_id NOT IN (SELECT golden_id FROM {taken})"
        )
        first_attempt += attempts
        attempts = _ATTEMPTS_PER_ROUND
    run(f"INSERT INTO {ids} SELECT cluster, golden_id FROM {fresh}")
    run(
        f"""
        INSERT INTO {events}
        SELECT $entity, f.golden_id, CASE WHEN p.split_from IS NULL THEN 'created' ELSE 'split' END,
               p.split_from, p.first_record
        FROM {fresh} AS f JOIN {pending} AS p USING (cluster)
        """,
        {"entity": entity},
    )
    kept, merged = _row(
        cur, f"SELECT count(*) FILTER (WHERE place = 1), count(*) FILTER (WHERE place > 1) FROM {homes}"
    )
    created, split = _row(
        cur,
        f"SELECT count(*) FILTER (WHERE split_from IS NULL), count(*) FILTER (WHERE split_from IS NOT NULL) FROM {pending}",
    )
    came_back = _count(cur, f"SELECT count(*) FROM {returned}")
    for name in (members, clusters, prev, anchors, carried, homes, pending, returned, taken, fresh):
        run(f"DROP TABLE {name}")
    return GoldenIdStats(kept=kept, created=created, merged=merged, split=split, returned=came_back)


def _row(cur: duckdb.DuckDBPyConnection, sql: str) -> tuple[int, int]:
    row = cur.execute(sql).fetchone()
    if row is None:
        raise RuntimeError(f"query returned no row: {sql}")
    return int(row[0]), int(row[1])


def _count(cur: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = cur.execute(sql).fetchone()
    return int(row[0]) if row else 0
