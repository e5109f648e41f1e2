"""Nights of the nightly job on a running sandbox, for the end-to-end tests of the flows.

:class:`SandboxNights` starts a :class:`~crm_pipelines_sandbox.run.Sandbox`, points the pipelines at
it (lake, warehouse and rate-limit folders of its own, the sandbox's variables, writing back on,
set for the process and restored afterwards) and runs the ``nightly_sync`` job's assets a test selects, night by night,
on an ephemeral Dagster instance. A failed step fails the night with the steps' messages.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb

from crm_pipelines import settings
from crm_pipelines.connectors.auth import clear_token_cache
from crm_pipelines.connectors.limits import clear_buckets
from crm_pipelines_sandbox.run import Sandbox

__all__ = ["SandboxNights", "sandbox_nights"]


@dataclass
class SandboxNights:
    """A running sandbox and the nightly job's selected assets."""

    box: Sandbox
    root: Path
    env: dict[str, str]
    instance: dg.DagsterInstance
    job: dg.JobDefinition
    selection: list[dg.AssetKey]

    def night(self, day: dt.date, selection: list[dg.AssetKey] | None = None) -> str:
        """Run the night of ``day`` (the selection, or another); returns the run id."""
        result = self.job.execute_in_process(
            partition_key=day.isoformat(),
            instance=self.instance,
            asset_selection=selection or self.selection,
            raise_on_error=False,
        )
        failures = [e.message for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
        if not result.success:
            raise AssertionError(f"the night of {day} failed: {failures}")
        return result.run_id

    def warehouse(self) -> duckdb.DuckDBPyConnection:
        """The warehouse, read-only (no night may be running)."""
        return duckdb.connect(str(self.root / "warehouse.duckdb"), read_only=True)


@contextmanager
def sandbox_nights(
    root: Path,
    *,
    select: Callable[[dg.AssetKey], bool],
    contacts: int,
    seed: int,
    as_of: dt.date,
    webhooks: bool = False,
) -> Iterator[SandboxNights]:
    """Start a sandbox under ``root`` and yield its nights of the assets ``select`` keeps."""
    from crm_pipelines.definitions import defs

    saved = dict(os.environ)
    clear_token_cache()
    clear_buckets()
    box = Sandbox(root / "sandbox", contacts=contacts, seed=seed, as_of=as_of, webhooks=webhooks)
    try:
        env = box.start()
        env.update(
            {
                settings.LAKE_DIR: str(root / "lake"),
                settings.WAREHOUSE_URL: f"duckdb:///{root}/warehouse.duckdb",
                settings.RATE_LIMIT_DIR: str(root / "rate-limits"),
            }
        )
        os.environ.update(env)
        job = defs().resolve_job_def("nightly_sync")
        selection = [key for key in job.asset_layer.executable_asset_keys if select(key)]
        yield SandboxNights(box, root, env, dg.DagsterInstance.ephemeral(), job, selection)
    finally:
        box.stop()
        os.environ.clear()
        os.environ.update(saved)
        clear_token_cache()
        clear_buckets()
