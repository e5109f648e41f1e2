"""Retry policies: steps that talk to other systems retry with backoff; a guard's stop does not."""

from __future__ import annotations

import dagster as dg
import pytest

from assets.crm_apis import build_crm_api_assets
from assets.erp_database import build_erp_database_assets
from assets.reverse_sync import build_reverse_sync_assets
from assets.sftp_files import build_sftp_assets, build_sftp_file_version_assets
from crm_pipelines.retries import STEP_RETRIES, step_retry_policy


def test_every_extract_landing_and_sync_step_retries_with_backoff_and_jitter() -> None:
    steps = [
        *build_crm_api_assets(),
        *build_erp_database_assets(),
        *(a for a in build_reverse_sync_assets() if a.key.path[0] != "ops"),  # not the reconciliation
        *(a for a in build_sftp_assets() if "files_archived" not in a.key.to_user_string()),
        *(a for a in build_sftp_file_version_assets() if a.key.path[0] not in ("raw", "ops")),
    ]
    assert len(steps) > 20
    for step in steps:
        policy = step.op.retry_policy
        assert policy is not None, step.key
        assert policy.max_retries == 2
        assert policy.backoff == dg.Backoff.EXPONENTIAL
        assert policy.jitter == dg.Jitter.PLUS_MINUS


def test_retries_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STEP_RETRIES, "0")
    assert step_retry_policy() is None


def test_a_passing_failure_is_retried_and_a_final_one_is_not() -> None:
    attempts = {"flaky": 0, "guarded": 0}

    @dg.asset(retry_policy=step_retry_policy())
    def flaky() -> None:
        attempts["flaky"] += 1
        if attempts["flaky"] < 3:
            raise ConnectionResetError("the CRM reset the connection")

    @dg.asset(retry_policy=step_retry_policy())
    def guarded() -> None:
        attempts["guarded"] += 1
        raise dg.Failure("would delete 40% of the records", allow_retries=False)

    assert dg.materialize([flaky]).success
    assert attempts["flaky"] == 3
    assert not dg.materialize([guarded], raise_on_error=False).success
    assert attempts["guarded"] == 1
