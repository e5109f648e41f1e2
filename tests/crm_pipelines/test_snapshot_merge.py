"""merge_snapshot (crm_pipelines/incremental.py): an increment overlaid on the last snapshot, by key."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from crm_pipelines.incremental import merge_snapshot


def test_a_deletion_of_a_record_the_snapshot_never_held_leaves_no_row(tmp_path: Path) -> None:
    previous, increment, output = (
        tmp_path / "previous.parquet",
        tmp_path / "increment.parquet",
        tmp_path / "out.parquet",
    )
    pq.write_table(
        pa.table({"id": ["1", "2", "5"], "name": ["a", "b", "e"], "_deleted": [False, False, True]}), previous
    )
    pq.write_table(
        pa.table(
            {
                "id": ["2", "3", "4", "5"],
                "name": ["b", "c", "d", "e"],
                # 2 deleted now; 3 created and deleted between the runs; 4 new; 5 deleted again.
                "_deleted": [True, True, False, True],
            }
        ),
        increment,
    )
    rows, deleted = merge_snapshot(previous=previous, increment=increment, output=output, primary_key=["id"])
    merged = {r["id"]: r["_deleted"] for r in pq.read_table(output).to_pylist()}
    assert merged == {"1": False, "2": True, "4": False, "5": True}
    assert (rows, deleted) == (4, 2)
