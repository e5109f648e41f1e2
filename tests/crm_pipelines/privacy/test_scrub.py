"""Which rows are a person's: the condition erasure and suppression keep or drop rows by."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from crm_pipelines.privacy.scrub import RowMatch


def test_rows_with_empty_cells_are_not_the_persons_and_are_kept() -> None:
    match = RowMatch(
        identifiers=frozenset({"hubspot:7", "c-123", "ann@example.org"}),
        emails=frozenset({"ann@example.org"}),
        source_ids={"hubspot": frozenset({"7"})},
        key="k",
    )
    rows = pa.table(
        {
            "record_id": ["hubspot:7", "hubspot:8", "hubspot:9", None],
            "email": ["ann@example.org", None, "bob@example.org", None],
            "id": ["7", "8", None, None],
        }
    )
    con = duckdb.connect()
    con.register("rows", rows)
    owned = match.owned(["record_id", "email", "id"], key=("hubspot", "id"))
    sql = f"SELECT record_id FROM rows WHERE NOT ({owned}) ORDER BY record_id NULLS LAST"
    kept = con.execute(sql, match.bind(sql)).fetchall()
    # Only Ann's row goes; the rows with an empty e-mail, id or record id are someone else's.
    assert kept == [("hubspot:8",), ("hubspot:9",), (None,)]
