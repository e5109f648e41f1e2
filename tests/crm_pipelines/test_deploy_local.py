"""``crm-pipelines deploy-local``: a run launched through its webserver runs its steps on the Celery workers.

The command runs as a user starts it, in a subprocess, with the sandbox's systems in its environment;
the run is launched and followed through the webserver's GraphQL API, as the UI does.
"""

import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pyarrow.parquet as pq
import pytest
import s3fs
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from crm_pipelines import settings
from crm_pipelines.deploy_local import free_port
from crm_pipelines_sandbox.run import Sandbox

DAY = dt.date(2026, 11, 25)
# Independent extracts of three systems: a subset of the nightly, as the whole night takes minutes here.
SELECTION = ("hubspot/contacts", "hubspot/companies", "salesforce/accounts", "erp/customers")

EVENTS = """
query Events($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message stepKey }
        ... on EngineEvent { metadataEntries { label ... on TextMetadataEntry { text } } }
      }
    }
  }
}
"""


@pytest.fixture
def sandbox_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    box = Sandbox(tmp_path / "sandbox", contacts=200, seed=5, as_of=DAY)
    try:
        env = box.start()
        env[settings.WAREHOUSE_URL] = f"duckdb:///{tmp_path}/warehouse.duckdb"
        env[settings.WRITE_BACK] = "off"
        yield env
    finally:
        box.stop()


@pytest.fixture
def postgres_dir() -> Iterator[Path]:
    """Not under tmp_path: PostgreSQL refuses root, runs as nobody, and tmp_path's parents are root's only."""
    if shutil.which("initdb") is None or shutil.which("redis-server") is None:
        pytest.skip("needs PostgreSQL's initdb and redis-server (scripts/install-system-packages.sh)")
    folder = Path(tempfile.mkdtemp(prefix="crm-deploy-local-pg-"))
    folder.chmod(0o755)
    try:
        yield folder / "cluster"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_run_launched_in_the_ui_runs_its_steps_on_the_celery_workers(
    sandbox_env: dict[str, str], postgres_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {**os.environ, **sandbox_env, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("DAGSTER_PG_URL", None)
    env.pop("DAGSTER_HOME", None)
    env.pop(settings.LAKE_DIR, None)  # deploy-local starts an S3 server and puts the lake there
    output = tmp_path / "deploy-local.out"
    command = [str(Path(sys.executable).with_name("crm-pipelines")), "deploy-local"]
    command += ["--dir", str(tmp_path / "deploy"), "--port", str(port), "--postgres-dir", str(postgres_dir)]
    with output.open("wb") as out:
        deploy = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        _wait_for(lambda: "Ctrl-C" in output.read_text(), deploy, output, timeout=240)
        printed = output.read_text()
        assert f"Dagster UI: http://127.0.0.1:{port}" in printed
        assert (postgres_dir / "password").read_text().strip() not in printed

        client = DagsterGraphQLClient("127.0.0.1", port_number=port)
        run_id = client.submit_job_execution(
            "nightly_sync",
            tags={"dagster/partition": DAY.isoformat()},
            asset_selection=[key.split("/") for key in SELECTION],
        )
        _wait_for(lambda: _finished(client, run_id), deploy, output, timeout=240)
        assert client.get_run_status(run_id).value == "SUCCESS"
        workers_by_step = _workers_by_step(port, run_id)
        rows_in_bucket = _rows_in_the_lakes_bucket(printed, tmp_path / "deploy")
    finally:
        deploy.send_signal(signal.SIGINT)  # Ctrl-C
        deploy.wait(timeout=90)
    assert deploy.returncode == 0, output.read_text()

    # Every step, the extracts and their volume checks, on a worker; the steps spread over both.
    extracts = {key.replace("/", "__") for key in SELECTION}
    assert set(workers_by_step) == extracts | {f"{step}__volume" for step in extracts}
    assert {worker.split("@")[0] for worker in workers_by_step.values()} == {"worker-1", "worker-2"}
    # What the extracts wrote is in the lake's bucket (each volume check read it back, on a worker),
    # and nothing of the lake is on the local disk.
    assert rows_in_bucket.keys() == set(SELECTION)
    assert all(rows > 0 for rows in rows_in_bucket.values()), rows_in_bucket
    assert not list(tmp_path.rglob("part-0000.parquet"))
    # Ctrl-C stopped every process it had started.
    pids = [int(p) for p in re.findall(r"pid (\d+)", output.read_text())]
    assert len(pids) == 5  # code server, two workers, daemon, webserver
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # Nor is any server left: Redis, PostgreSQL, the S3 server.
    deploy_dir = str(tmp_path / "deploy")
    assert [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline"])
        if deploy_dir in " ".join(p.info["cmdline"] or [])
    ] == []


def _rows_in_the_lakes_bucket(printed: str, deploy_dir: Path) -> dict[str, int]:
    """Rows of each selected extract's night, read from the S3 server deploy-local started."""
    endpoint = re.search(r"lake\s+s3://lake/lake on (http://127\.0\.0\.1:\d+)", printed)
    assert endpoint is not None, printed
    keys = json.loads((deploy_dir / "s3" / "s3.json").read_text())["identities"][0]["credentials"][0]
    assert keys["secretKey"] not in printed
    bucket = s3fs.S3FileSystem(
        key=keys["accessKey"],
        secret=keys["secretKey"],
        endpoint_url=endpoint.group(1),
        skip_instance_cache=True,
    )
    rows = {}
    for key in SELECTION:
        with bucket.open(f"lake/lake/raw/{key}/dt={DAY.isoformat()}/part-0000.parquet", "rb") as f:
            rows[key] = pq.read_metadata(f).num_rows
    return rows


def _finished(client: DagsterGraphQLClient, run_id: str) -> bool:
    try:
        return client.get_run_status(run_id).value in ("SUCCESS", "FAILURE", "CANCELED")
    except DagsterGraphQLClientError:
        return False


def _workers_by_step(port: int, run_id: str) -> dict[str, str]:
    """The Celery worker each step ran on, from the run's events ("Executing steps ... in celery worker")."""
    response = httpx.post(
        f"http://127.0.0.1:{port}/graphql", json={"query": EVENTS, "variables": {"runId": run_id}}, timeout=30
    )
    response.raise_for_status()
    events = response.json()["data"]["logsForRun"]["events"]
    taken: dict[str, str] = {}
    for event in events:
        if event["__typename"] != "EngineEvent" or "in celery worker" not in event.get("message", ""):
            continue
        worker = next(e["text"] for e in event["metadataEntries"] if e["label"] == "Celery worker")
        taken[event["stepKey"]] = worker
    return taken


def _wait_for(done: Any, process: subprocess.Popen[bytes], output: Path, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert process.poll() is None, f"deploy-local exited ({process.returncode}):\n{output.read_text()}"
        assert time.monotonic() < deadline, f"not within {timeout} s:\n{output.read_text()}"
        time.sleep(1)


def test_the_s3_server_starts_on_other_ports_when_one_it_picked_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crm_pipelines import deploy_local

    # Another process takes the master port between the pick and weed's bind.
    taken = socket.create_server(("127.0.0.1", 0))
    picks = iter([taken.getsockname()[1]])
    monkeypatch.setattr(deploy_local, "free_port", lambda: next(picks, None) or free_port())
    try:
        with deploy_local.running_s3(tmp_path / "s3") as endpoint:
            fs = s3fs.S3FileSystem(
                key=endpoint.access_key, secret=endpoint.secret_key, endpoint_url=endpoint.url
            )
            fs.pipe_file(f"{endpoint.bucket}/hello.txt", b"hello")
            assert fs.cat_file(f"{endpoint.bucket}/hello.txt") == b"hello"
    finally:
        taken.close()
    log = (tmp_path / "s3" / "s3.log").read_text(encoding="utf-8")
    assert "address already in use" in log
