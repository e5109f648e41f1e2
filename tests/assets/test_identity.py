"""Identity asset: tonight's golden ids continue the warehouse's, and the run says how many changed."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from assets.identity import apply_match_decisions, identity_resolution
from assets.warehouse import build_core_load_assets
from crm_pipelines import canonical
from crm_pipelines.lake import partition_dir
from resources.lake import LakeResource, WarehouseResource


def stage_accounts(lake: Path, day: str, vat_by_id: dict[str, str]) -> None:
    folder = partition_dir(lake, "staging", "canonical", "account", day)
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = [
        {
            "record_id": f"erp:{source_id}",
            "source": "erp",
            "source_id": source_id,
            "name": f"Company {source_id}",
            "vat_number": vat,
            "updated_at": datetime(2026, 11, 1, tzinfo=UTC),
        }
        for source_id, vat in vat_by_id.items()
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=canonical.ACCOUNT), folder / "part-0.parquet")


def run_night(tmp_path: Path, day: str) -> dict[str, Any]:
    """Identity resolution and its load for one night; returns the resolution's metadata."""
    (core_identity,) = [a for a in build_core_load_assets() if a.key.to_user_string() == "core/identity"]
    result = dg.materialize(
        [identity_resolution, core_identity],
        partition_key=day,
        resources={
            "lake": LakeResource(root=str(tmp_path / "lake")),
            "warehouse": WarehouseResource(url=f"duckdb:///{tmp_path}/w.duckdb"),
        },
    )
    (event,) = [
        e
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(["identity", "resolution"])
    ]
    assert event.materialization is not None
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_a_merge_keeps_the_warehouse_id_and_is_counted(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    stage_accounts(lake, "2026-11-24", {"1": "DE1", "2": "DE1", "3": "DE2"})
    first = run_night(tmp_path, "2026-11-24")
    assert (first["golden_account_ids_created"], first["golden_account_ids_kept"]) == (2, 0)
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        (before,) = (
            con.execute("SELECT golden_id FROM core.xref_identity WHERE record_id = 'erp:1'").fetchone() or ()
        )

    stage_accounts(lake, "2026-11-25", {"1": "DE1", "2": "DE1", "3": "DE1"})
    second = run_night(tmp_path, "2026-11-25")
    assert {k: second[f"golden_account_ids_{k}"] for k in ("kept", "created", "merged", "split")} == {
        "kept": 1,
        "created": 0,
        "merged": 1,
        "split": 0,
    }
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        assert con.execute("SELECT DISTINCT golden_id FROM core.xref_identity").fetchall() == [(before,)]
        assert con.execute(
            "SELECT DISTINCT golden_id FROM core.golden_id_current WHERE entity = 'account'"
        ).fetchall() == [(before,)]


def test_the_decisions_job_records_what_the_ui_sends(tmp_path: Path) -> None:
    warehouse = WarehouseResource(url=f"duckdb:///{tmp_path}/warehouse.duckdb")
    result = apply_match_decisions.execute_in_process(
        run_config={
            "ops": {
                "record_match_decisions": {
                    "config": {
                        "decided_by": "ana",
                        "decisions": [
                            {
                                "record_id_a": "salesforce:3",
                                "record_id_b": "hubspot:4",
                                "decision": "cannot_link",
                            }
                        ],
                    }
                }
            }
        },
        resources={"warehouse": warehouse},
    )
    assert result.success
    with warehouse.get().connect(read_only=True) as con:
        assert con.execute(
            "SELECT record_id_a, record_id_b, decision FROM ops.match_decisions"
        ).fetchall() == [("hubspot:4", "salesforce:3", "cannot_link")]
    refused = apply_match_decisions.execute_in_process(
        run_config={
            "ops": {
                "record_match_decisions": {
                    "config": {
                        "decided_by": "ana",
                        "decisions": [{"record_id_a": "a", "record_id_b": "b", "decision": "maybe"}],
                    }
                }
            }
        },
        resources={"warehouse": warehouse},
        raise_on_error=False,
    )
    assert not refused.success
