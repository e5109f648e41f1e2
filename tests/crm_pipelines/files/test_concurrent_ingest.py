"""The per-file SFTP job and the nightly landing the same file at the same moment: rows land once.

Two processes started together (forked, each with its own Dagster instance, SFTP session and
warehouse connections), against one real sshd, one lake and one warehouse file, as the arrival
sensor's run and the nightly schedule's run would on a single host. Whatever their interleaving, the
raw table holds the file's rows once, the ledger one entry, and the file is moved to processed/ once.

The second test runs the two landing functions themselves at once, so that both download the file
and find it not yet landed. Before a version's landing took its lock (``_landing`` in
crm_pipelines/files/landing.py), both then wrote its Parquet file through the same temporary file:
one run failed with FileNotFoundError (a retried step in production) and the file could mix bytes of
both writers.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import duckdb
import pytest

from assets.sftp_files import build_sftp_assets, build_sftp_file_version_assets, file_version_keys
from assets.warehouse import build_raw_load_assets
from crm_pipelines.files.landing import land_drop_day, land_file_version
from crm_pipelines.jobs import SFTP_SHA256_TAG
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.sources import load_sources
from resources.lake import LakeResource, WarehouseResource
from resources.sftp import SFTPResource

if TYPE_CHECKING:
    from conftest import DropServer

FORK = multiprocessing.get_context("fork")
DAY = "2026-11-25"
NAME = f"invoices_{DAY}.csv"
HEADER = (
    "invoice_number,customer_code,invoice_date,due_date,currency,amount_net,amount_tax,amount_gross,status\n"
)
ROWS = 200_000  # enough that the two landings overlap rather than follow each other


def _nightly(resources: dict[str, object], start: Barrier, done: Queue[tuple[str, str]]) -> None:
    raw = [a for a in build_raw_load_assets() if a.key == dg.AssetKey(["raw", "finance_sftp"])]
    drop = [a for a in build_sftp_assets() if a.key.path[0] in ("finance_sftp", "ops")]
    start.wait(30)
    result = dg.materialize(
        [*drop, *raw],
        partition_key=DAY,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    done.put(("nightly", _failures(result)))


def _file_version(
    resources: dict[str, object], sha256: str, start: Barrier, done: Queue[tuple[str, str]]
) -> None:
    keys = file_version_keys("finance_sftp", "invoices")
    assets = [a for a in build_sftp_file_version_assets() if a.key in keys]
    instance = dg.DagsterInstance.ephemeral()
    partition = f"{NAME}@{sha256[:12]}"  # what the arrival sensor requests for this version
    instance.add_dynamic_partitions("sftp_files__finance_sftp__invoices", [partition])
    start.wait(30)
    result = dg.materialize(
        assets,
        partition_key=partition,
        resources=resources,
        instance=instance,
        tags={SFTP_SHA256_TAG: sha256},
        raise_on_error=False,
    )
    done.put(("file_version", _failures(result)))


def _failures(result: dg.ExecuteInProcessResult) -> str:
    """'ok' when every step succeeded at its first attempt, else what failed (or was retried) and why."""
    failed = [
        f"{event.step_key}: {event.event_specific_data.error.message.strip()}"  # type: ignore[union-attr]
        for event in result.all_events
        if event.event_type in (dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_UP_FOR_RETRY)
    ]
    return "; ".join(failed) if failed or not result.success else "ok"


@pytest.mark.parametrize("drop_server", ["openssh"], indirect=True)
def test_the_file_job_and_the_nightly_at_once_land_the_rows_once_and_move_the_file_once(
    drop_server: DropServer, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    resources: dict[str, object] = {
        "sftp": SFTPResource(**drop_server.resource_settings(), stable_seconds=0.2),
        "lake": LakeResource(root=str(tmp_path / "lake")),
        "warehouse": WarehouseResource(url=f"duckdb:///{warehouse}"),
    }
    body = "".join(f"BIL-{n},C-{n % 97},{DAY},2026-12-25,EUR,100.00,19.00,119.00,open\n" for n in range(ROWS))
    invoices = drop_server.local / NAME
    invoices.write_text(HEADER + body)
    sha256 = hashlib.sha256(invoices.read_bytes()).hexdigest()

    start = FORK.Barrier(2)
    done: Queue[tuple[str, str]] = FORK.Queue()
    runs = [
        FORK.Process(target=_nightly, args=(resources, start, done), daemon=True),
        FORK.Process(target=_file_version, args=(resources, sha256, start, done), daemon=True),
    ]
    for run in runs:
        run.start()
    try:
        outcomes = dict(done.get(timeout=120) for _ in runs)
    finally:
        for run in runs:
            run.join(30)
            run.kill()
    assert outcomes == {"nightly": "ok", "file_version": "ok"}

    with duckdb.connect(str(warehouse), read_only=True) as con:
        assert con.execute(
            "SELECT count(*), count(DISTINCT invoice_number) FROM raw.finance_sftp__invoices"
        ).fetchall() == [(ROWS, ROWS)]
        assert con.execute("SELECT path, sha256, rows_landed FROM ops.file_ingest").fetchall() == [
            (f"{drop_server.remote}/{NAME}", sha256, ROWS)
        ]
    lake = tmp_path / "lake" / "raw" / "finance_sftp" / "invoices" / f"dt={DAY}"
    version = f"invoices_{DAY}-{sha256[:12]}"
    assert sorted(p.name for p in lake.iterdir() if not p.name.startswith(".")) == [
        f"{version}.json",
        f"{version}.parquet",
    ]
    assert sorted(p.name for p in drop_server.local.iterdir() if p.is_file()) == []
    processed = drop_server.local / "processed"
    assert sorted(p.name for p in processed.iterdir()) == [NAME]  # moved once: no invoices_....1.csv
    assert (processed / NAME).read_text() == HEADER + body


# ------------------------------------------------ the two landing functions themselves, at once


def _land(
    path: str, sftp: SFTPResource, lake: Path, sha256: str, start: Barrier, done: Queue[tuple[str, str]]
) -> None:
    """One of the two landing paths, reporting 'ok' or the error it raised."""
    declared = load_sources()["finance_sftp"].datasets["invoices"]
    entity = load_mappings().entity_of("finance_sftp/invoices") or "invoices"
    log = logging.getLogger(path)
    start.wait(30)
    try:
        if path == "nightly":
            with sftp.session() as session:
                day = land_drop_day(
                    session,
                    declared=declared,
                    source="finance_sftp",
                    dataset="invoices",
                    entity=entity,
                    remote_folder=sftp.finance_dir,
                    lake_dir=lake,
                    partition=DAY,
                    stable_seconds=0.05,
                    download_retries=1,
                    log=log,
                )
            assert [m["sha256"] for m in day.manifests] == [sha256]
        else:
            manifest = land_file_version(
                sftp.session,
                declared=declared,
                source="finance_sftp",
                dataset="invoices",
                entity=entity,
                remote_folder=sftp.finance_dir,
                name=NAME,
                checksum=sha256[:12],
                day=DAY,
                lake_dir=lake,
                download_retries=1,
                log=log,
            )
            assert manifest["sha256"] == sha256
    except Exception as exc:
        done.put((path, f"{type(exc).__name__}: {exc}"))
        return
    done.put((path, "ok"))


@pytest.mark.parametrize("drop_server", ["openssh"], indirect=True)
def test_the_two_landing_paths_at_once_land_one_version_once(drop_server: DropServer, tmp_path: Path) -> None:
    sftp = SFTPResource(**drop_server.resource_settings(), stable_seconds=0.05)
    lake = tmp_path / "lake"
    lake.mkdir()
    invoices = drop_server.local / NAME
    invoices.write_text(
        HEADER + "".join(f"BIL-{n},C-1,{DAY},2026-12-25,EUR,1.00,0.19,1.19,open\n" for n in range(ROWS))
    )
    sha256 = hashlib.sha256(invoices.read_bytes()).hexdigest()
    start = FORK.Barrier(2)
    done: Queue[tuple[str, str]] = FORK.Queue()
    paths = [
        FORK.Process(target=_land, args=(p, sftp, lake, sha256, start, done), daemon=True)
        for p in ("nightly", "file_version")
    ]
    for process in paths:
        process.start()
    try:
        outcomes = dict(done.get(timeout=120) for _ in paths)
    finally:
        for process in paths:
            process.join(30)
            process.kill()
    assert outcomes == {"nightly": "ok", "file_version": "ok"}
    folder = lake / "raw" / "finance_sftp" / "invoices" / f"dt={DAY}"
    version = f"invoices_{DAY}-{sha256[:12]}"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        f"{version}.json",
        f"{version}.parquet",
    ]
    assert [p.name for p in folder.iterdir() if p.name.endswith(".inprogress")] == []
    with duckdb.connect() as con:
        rows = con.execute(
            f"SELECT count(*), count(DISTINCT invoice_number) FROM read_parquet('{folder / version}.parquet')"
        ).fetchall()
    assert rows == [(ROWS, ROWS)]
