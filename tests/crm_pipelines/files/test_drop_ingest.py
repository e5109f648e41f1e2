"""A file drop end to end, in-process: server -> lake -> raw tables and ledger -> processed/error folders.

Runs the finance drop's extract assets, its raw load and the after-commit mover with
``dg.materialize`` against a real sshd and the paramiko sandbox server, and checks what a user
checks: rows and quarantine in the warehouse, ``ops.file_ingest``, and where files ended up.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import duckdb
import pytest

from assets.sftp_files import build_sftp_assets
from assets.warehouse import build_raw_load_assets
from resources.lake import LakeResource, WarehouseResource
from resources.sftp import SFTPResource

if TYPE_CHECKING:
    from conftest import DropServer

DAY = "2026-11-25"
INVOICE_HEADER = (
    "invoice_number,customer_code,invoice_date,due_date,currency,amount_net,amount_tax,amount_gross,status"
)


def invoice_lines(*numbers: str) -> str:
    return "".join(f"{n},C-1,{DAY},2026-12-25,EUR,100.00,19.00,119.00,open\n" for n in numbers)


class Drop:
    """The finance_sftp assets wired to one server, a lake and a warehouse under ``tmp_path``."""

    def __init__(self, server: DropServer, tmp_path: Path) -> None:
        self.server = server
        self.warehouse_path = tmp_path / "warehouse.duckdb"
        self.resources = {
            "sftp": SFTPResource(**server.resource_settings(), stable_seconds=0.2),  # type: ignore[arg-type]
            "lake": LakeResource(root=str(tmp_path / "lake")),
            "warehouse": WarehouseResource(url=f"duckdb:///{self.warehouse_path}"),
        }
        raw = [a for a in build_raw_load_assets() if a.key == dg.AssetKey(["raw", "finance_sftp"])]
        sftp_assets = [a for a in build_sftp_assets() if a.key.path[0] in ("finance_sftp", "ops")]
        self.extracts = [a for a in sftp_assets if a.key.path[0] == "finance_sftp"]
        self.mover = [a for a in sftp_assets if a.key.path[0] == "ops"]
        self.raw = raw

    def run(self, *, move: bool = True) -> dg.ExecuteInProcessResult:
        """One ingest (a fresh instance each time: a restart loses everything but the warehouse)."""
        result = dg.materialize(
            [*self.extracts, *self.raw, *(self.mover if move else [])],
            partition_key=DAY,
            resources=self.resources,
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert result.success
        return result

    def sql(self, query: str) -> list[tuple[object, ...]]:
        with duckdb.connect(str(self.warehouse_path), read_only=True) as con:
            return con.execute(query).fetchall()

    def names(self, sub: str = "") -> list[str]:
        folder = self.server.local / sub
        return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.exists() else []


def test_each_file_version_is_ingested_once_then_moved(drop_server: DropServer, tmp_path: Path) -> None:
    drop = Drop(drop_server, tmp_path)
    folder = drop_server.local
    invoices = folder / f"invoices_{DAY}.csv"
    # Line 4 has a field too many: quarantined with its line number, the rest loads.
    invoices.write_text(
        INVOICE_HEADER
        + "\n"
        + invoice_lines("BIL-1", "BIL-2")
        + "BIL-X,extra,field,,,,,,,\n"
        + invoice_lines("BIL-3")
    )
    # The payments file lacks a required column: rejected whole.
    (folder / f"payments_{DAY}.csv").write_text("payment_reference,amount\nP-1,10\n")

    drop.run()
    assert drop.sql("SELECT invoice_number, _source_line FROM raw.finance_sftp__invoices ORDER BY 2") == [
        ("BIL-1", 2),
        ("BIL-2", 3),
        ("BIL-3", 5),
    ]
    quarantine = {
        str(record_id): (rule, str(reason))
        for record_id, rule, reason in drop.sql(
            "SELECT record_id, rule, reason FROM ops.quarantine WHERE source = 'finance_sftp'"
        )
    }
    assert set(quarantine) == {f"invoices_{DAY}.csv:4", f"payments_{DAY}.csv:0"}
    rule, reason = quarantine[f"invoices_{DAY}.csv:4"]
    assert rule == "field_count" and "line 4" in reason
    rule, reason = quarantine[f"payments_{DAY}.csv:0"]
    assert rule == "file_rejected" and "missing required column" in reason
    ledger = drop.sql(
        "SELECT path, data_lines, rows_landed, rows_quarantined FROM ops.file_ingest ORDER BY path"
    )
    assert [(Path(str(p)).name, d, r, q) for p, d, r, q in ledger] == [
        (f"invoices_{DAY}.csv", 4, 3, 1),  # the counts add up
        (f"payments_{DAY}.csv", 1, 0, 1),  # rejected whole: one quarantine entry for the file
    ]
    # After the commit: the good file is processed, the rejected one is in error/ with the reason.
    assert drop.names() == []
    assert drop.names("processed") == [f"invoices_{DAY}.csv"]
    assert drop.names("error") == [f"payments_{DAY}.csv", f"payments_{DAY}.csv.error.txt"]
    assert "missing required column" in (folder / "error" / f"payments_{DAY}.csv.error.txt").read_text()

    # A restart with nothing new: nothing ingested twice.
    drop.run()
    assert drop.sql("SELECT count(*) FROM ops.file_ingest") == [(2,)]
    assert drop.sql("SELECT count(*) FROM raw.finance_sftp__invoices") == [(3,)]

    # A corrected file under the same name: a new version, ingested and archived next to the first.
    invoices.write_text(INVOICE_HEADER + "\n" + invoice_lines("BIL-1", "BIL-2", "BIL-3", "BIL-4"))
    drop.run()
    assert drop.sql("SELECT count(*) FROM ops.file_ingest WHERE path LIKE '%invoices%'") == [(2,)]
    assert drop.sql("SELECT count(*) FROM raw.finance_sftp__invoices") == [(4,)]
    assert drop.names("processed") == [f"invoices_{DAY}.1.csv", f"invoices_{DAY}.csv"]


# One server is enough here: the difference between the servers is covered above.
@pytest.mark.parametrize("drop_server", ["openssh"], indirect=True)
def test_a_crash_between_commit_and_move_does_not_ingest_twice(
    drop_server: DropServer, tmp_path: Path
) -> None:
    drop = Drop(drop_server, tmp_path)
    (drop_server.local / f"invoices_{DAY}.csv").write_text(INVOICE_HEADER + "\n" + invoice_lines("BIL-1"))
    drop.run(move=False)  # committed, but the process died before moving the file
    assert drop.names() == [f"invoices_{DAY}.csv"]
    drop.run()  # the next run sees the same content again
    assert drop.sql("SELECT count(*) FROM ops.file_ingest") == [(1,)]
    assert drop.sql("SELECT count(*) FROM raw.finance_sftp__invoices") == [(1,)]
    assert drop.names("processed") == [f"invoices_{DAY}.csv"]
