"""A file drop end to end, in-process: server -> lake -> raw tables and ledger -> processed/error folders.

Runs the finance drop's extract assets, its raw load and the after-commit mover with
``dg.materialize`` against a real sshd and the paramiko sandbox server, and checks what a user
checks: rows and quarantine in the warehouse, ``ops.file_ingest``, and where files ended up.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import duckdb
import pytest

from assets.sftp_files import build_sftp_assets, build_sftp_file_version_assets, file_version_keys
from assets.warehouse import build_raw_load_assets
from crm_pipelines.sources import load_sources
from resources.lake import LakeResource, WarehouseResource
from resources.sftp import SFTPResource
from sensors.sftp_arrival import build_sftp_arrival_sensor

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
            "sftp": SFTPResource(**server.resource_settings(), stable_seconds=0.2),
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
    # The payments file (XML) lacks a required field in every record: rejected whole.
    (folder / f"payments_{DAY}.xml").write_text(
        "<Payments><Payment><payment_reference>P-1</payment_reference><amount>10</amount></Payment></Payments>"
    )

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
    assert set(quarantine) == {f"invoices_{DAY}.csv:4", f"payments_{DAY}.xml:0"}
    rule, reason = quarantine[f"invoices_{DAY}.csv:4"]
    assert rule == "field_count"
    assert "line 4" in reason
    rule, reason = quarantine[f"payments_{DAY}.xml:0"]
    assert rule == "file_rejected"
    assert "invoice_number, payment_date, currency, method are in none" in reason
    ledger = drop.sql(
        "SELECT path, data_lines, rows_landed, rows_quarantined FROM ops.file_ingest ORDER BY path"
    )
    assert [(Path(str(p)).name, d, r, q) for p, d, r, q in ledger] == [
        (f"invoices_{DAY}.csv", 4, 3, 1),  # the counts add up
        (f"payments_{DAY}.xml", 1, 0, 1),  # rejected whole: one quarantine entry for the file
    ]
    # After the commit: the good file is processed, the rejected one is in error/ with the reason.
    assert drop.names() == []
    assert drop.names("processed") == [f"invoices_{DAY}.csv"]
    assert drop.names("error") == [f"payments_{DAY}.xml", f"payments_{DAY}.xml.error.txt"]
    assert "are in none of the 1 record" in (folder / "error" / f"payments_{DAY}.xml.error.txt").read_text()

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


@pytest.mark.parametrize("drop_server", ["openssh"], indirect=True)
def test_a_file_whose_name_carries_no_calendar_date_is_rejected_and_its_neighbours_load(
    drop_server: DropServer, tmp_path: Path
) -> None:
    drop = Drop(drop_server, tmp_path)
    folder = drop_server.local
    (folder / f"invoices_{DAY}.csv").write_text(INVOICE_HEADER + "\n" + invoice_lines("BIL-1"))
    impossible = folder / "invoices_2025-13-45.csv"
    impossible.write_text(INVOICE_HEADER + "\n" + invoice_lines("BIL-9"))
    full_width = folder / "invoices_\uff12\uff10\uff12\uff16-11-25.csv"  # a date in full-width digits
    full_width.write_text(INVOICE_HEADER + "\n" + invoice_lines("BIL-8"))
    for old in (impossible, full_width):
        os.utime(old, (time.time() - 60, time.time() - 60))

    drop.run()
    assert drop.sql("SELECT invoice_number FROM raw.finance_sftp__invoices") == [("BIL-1",)]
    assert drop.names("processed") == [f"invoices_{DAY}.csv"]
    assert drop.names("error") == sorted(
        [impossible.name, f"{impossible.name}.error.txt", full_width.name, f"{full_width.name}.error.txt"]
    )
    reason = (folder / "error" / f"{impossible.name}.error.txt").read_text()
    assert "'2025-13-45' in the name is not a calendar date" in reason
    assert drop.names() == []


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


@pytest.mark.parametrize("drop_server", ["openssh"], indirect=True)
def test_the_sensor_launches_one_partition_per_file_version(drop_server: DropServer, tmp_path: Path) -> None:
    drop = Drop(drop_server, tmp_path)
    declared = load_sources()["finance_sftp"].datasets["invoices"]
    sensor = build_sftp_arrival_sensor(source="finance_sftp", dataset="invoices", declared=declared)
    instance = dg.DagsterInstance.ephemeral()
    version_assets = [
        a for a in build_sftp_file_version_assets() if a.key in file_version_keys("finance_sftp", "invoices")
    ]
    cursor: str | None = None

    def arrive() -> list[dg.RunRequest]:
        """Sensor ticks until the file counts as complete (stable rule: two looks 0.2 s apart)."""
        nonlocal cursor
        for _ in range(5):
            result = sensor(
                dg.build_sensor_context(
                    cursor=cursor, resources={"sftp": drop.resources["sftp"]}, instance=instance
                )
            )
            assert isinstance(result, dg.SensorResult)
            cursor = result.cursor
            for request in result.dynamic_partitions_requests or []:
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            if result.run_requests:
                return list(result.run_requests)
            time.sleep(0.25)
        raise AssertionError("the sensor never launched")

    def run(request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        result = dg.materialize(
            version_assets,
            partition_key=request.partition_key,
            resources=drop.resources,
            instance=instance,
            tags=request.tags,
        )
        assert result.success
        return result

    invoices = drop_server.local / f"invoices_{DAY}.csv"
    # A column nobody declared (schema drift) and one broken line.
    invoices.write_text(
        INVOICE_HEADER
        + ",po_number\n"
        + "".join(line.rstrip("\n") + ",PO-1\n" for line in invoice_lines("BIL-1", "BIL-2").splitlines(True))
        + "BIL-X,broken\n"
    )
    (request,) = arrive()
    first_key = request.partition_key
    assert first_key == f"invoices_{DAY}.csv@{hashlib.sha256(invoices.read_bytes()).hexdigest()[:12]}"
    assert first_key in instance.get_dynamic_partitions("sftp_files__finance_sftp__invoices")
    result = run(request)
    extract = result.asset_materializations_for_node(version_assets[0].op.name)[0]
    assert extract.metadata["new_file_columns"].value == {f"invoices_{DAY}.csv": ["po_number"]}
    assert drop.sql("SELECT invoice_number FROM raw.finance_sftp__invoices ORDER BY 1") == [
        ("BIL-1",),
        ("BIL-2",),
    ]
    assert drop.sql("SELECT partition, rows_landed, rows_quarantined, new_columns FROM ops.file_ingest") == [
        (DAY, 2, 1, ["po_number"])
    ]
    assert drop.sql("SELECT reason FROM ops.quarantine WHERE rule = 'field_count'") == [
        ("line 4: expected 10 fields, found 2",)
    ]
    assert drop.names() == []
    assert drop.names("processed") == [f"invoices_{DAY}.csv"]

    # The nightly sweep of that day finds nothing new: the version was ingested once.
    drop.run()
    assert drop.sql("SELECT count(*) FROM ops.file_ingest") == [(1,)]
    assert drop.sql("SELECT count(*) FROM raw.finance_sftp__invoices") == [(2,)]

    # A corrected file under the same name: its own partition, and its rows replace the day's.
    invoices.write_text(INVOICE_HEADER + "\n" + invoice_lines("BIL-1", "BIL-2", "BIL-3"))
    (request,) = arrive()
    assert request.partition_key != first_key
    assert str(request.partition_key).startswith(f"invoices_{DAY}.csv@")
    run(request)
    assert drop.sql("SELECT count(*) FROM raw.finance_sftp__invoices") == [(3,)]
    assert drop.sql("SELECT count(*) FROM ops.file_ingest") == [(2,)]
    assert drop.names("processed") == [f"invoices_{DAY}.1.csv", f"invoices_{DAY}.csv"]
    # Running a partition again (a retry) changes nothing.
    run(request)
    assert drop.sql("SELECT count(*) FROM ops.file_ingest") == [(2,)]
