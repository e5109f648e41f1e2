"""`crm-pipelines doctor` against the sandbox's real servers."""

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from crm_pipelines import lake, settings
from crm_pipelines.cli import main
from crm_pipelines.deploy_local import S3Endpoint
from crm_pipelines.doctor import check_lake, crm_connection_variables, run_checks
from crm_pipelines_sandbox import run as sandbox
from crm_pipelines_sandbox.run import Sandbox


@pytest.fixture(scope="module")
def sandbox_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("doctor")
    box = Sandbox(root / "sandbox", contacts=200, seed=3, as_of=dt.date(2026, 11, 25))
    try:
        env = box.start()
        env[settings.WAREHOUSE_URL] = f"duckdb:///{root}/warehouse.duckdb"
        env[settings.LAKE_DIR] = str(root / "lake")
        yield env
    finally:
        box.stop()


def test_every_sandbox_system_is_reachable_and_authenticated(
    sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in sandbox_env.items():
        monkeypatch.setenv(name, value)
    rows = {row.system: row for row in run_checks()}
    assert set(rows) >= {"salesforce", "hubspot", "erp database", "sftp", "warehouse", "lake"}
    for row in rows.values():
        assert row.ok, row


def test_a_wrong_credential_is_named_with_a_fix_and_never_printed(
    sandbox_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in sandbox_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(sandbox.HUBSPOT_ACCESS_TOKEN, "pat-wrong-token-123")
    monkeypatch.delenv(settings.SFTP_KNOWN_HOSTS)
    rows = {row.system: row for row in run_checks()}
    assert rows["hubspot"].reachable
    assert not rows["hubspot"].authenticated
    assert rows["hubspot"].fix
    assert not rows["sftp"].configured
    assert "SFTP_KNOWN_HOSTS" in rows["sftp"].fix
    assert main(["doctor"]) == 1
    output = capsys.readouterr().out
    assert "hubspot" in output
    assert "pat-wrong-token-123" not in output
    assert sandbox_env[sandbox.SALESFORCE_CLIENT_SECRET] not in output


def test_nothing_configured_says_which_variables_to_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (*sandbox.CONNECTION_VARIABLES, *crm_connection_variables()):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(settings.WAREHOUSE_URL, f"duckdb:///{tmp_path}/w.duckdb")
    rows = {row.system: row for row in run_checks()}
    assert not rows["salesforce"].configured
    assert "SALESFORCE_CLIENT_SECRET" in rows["salesforce"].fix
    assert rows["warehouse"].ok


def test_a_lake_in_a_bucket_is_probed_and_a_wrong_secret_named_never_printed(
    s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in s3.environment().items():
        monkeypatch.setenv(name, value)
    assert check_lake().ok
    assert lake.files_under(lake.lake_root(s3.lake_url), "*") == []  # the probe is removed
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-4242")
    row = check_lake()
    assert (row.reachable, row.authenticated) == (True, False), row
    assert "AWS_SECRET_ACCESS_KEY" in row.fix
    assert "wrong-secret-4242" not in row.detail
    assert s3.secret_key not in row.detail
