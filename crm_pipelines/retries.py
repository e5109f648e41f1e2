"""Dagster retry policies of the steps that talk to other systems: extracts, landings and syncs.

A step that reads a CRM, the ERP or the SFTP server, or writes back to one, fails for reasons that
pass: a deploy on the vendor's side, a connection reset, a lock. The HTTP layer already retries one
request (:mod:`crm_pipelines.connectors.limits`); these policies retry the whole step, with
exponential backoff and jitter, which is safe because every step is idempotent (a re-run changes
nothing: snapshots are rewritten whole, loads are one transaction, syncs skip what is unchanged).

A failure that cannot pass (a declaration error, the delete guard) is raised as
``dg.Failure(allow_retries=False)``. Runs that die (a killed process) are retried by the instance's
``run_retries`` (``deploy/dagster.yaml``).

Environment: ``CRM_PIPELINES_STEP_RETRIES`` (default 2), ``CRM_PIPELINES_STEP_RETRY_DELAY_SECONDS``
(default 30: the first wait, doubled after each attempt, give or take half of it).
"""

from __future__ import annotations

import os

import dagster as dg

__all__ = ["STEP_RETRIES", "STEP_RETRY_DELAY_SECONDS", "step_retry_policy"]

STEP_RETRIES = "CRM_PIPELINES_STEP_RETRIES"
STEP_RETRY_DELAY_SECONDS = "CRM_PIPELINES_STEP_RETRY_DELAY_SECONDS"


def step_retry_policy() -> dg.RetryPolicy | None:
    """The retry policy of an extract, landing or sync step, or None when retries are off (0)."""
    retries = int(os.environ.get(STEP_RETRIES, "2"))
    if retries <= 0:
        return None
    return dg.RetryPolicy(
        max_retries=retries,
        delay=float(os.environ.get(STEP_RETRY_DELAY_SECONDS, "30")),
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )
