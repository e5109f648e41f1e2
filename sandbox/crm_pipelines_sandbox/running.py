"""One CRM simulator running on a small seeded store, read through the connector engine.

The connector tests read one kind of record (leads, cases, ...) of a sandbox CRM the way the nightly
sync reads it: a full read, then the changes and deletes since, or the live keys. :func:`running_crm`
builds the store, starts the simulator with fresh credentials and empty rate-limit buckets, and stops
it afterwards; :class:`RunningCrm` makes those reads.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from crm_pipelines.connectors.auth import clear_token_cache
from crm_pipelines.connectors.collect import ExtractStats, output_schema
from crm_pipelines.connectors.drift import SchemaDrift
from crm_pipelines.connectors.engine import extract_keys, extract_object
from crm_pipelines.connectors.extract import ApiExtract, extract_api_object
from crm_pipelines.connectors.limits import clear_buckets
from crm_pipelines.connectors.spec import SystemSpec, load_system
from crm_pipelines_sandbox.simulators.records import fetch_records, read_info
from crm_pipelines_sandbox.systems import SandboxCrm, Started, build_store, sample_seeds, sandbox_crm
from resources.crm_api import CrmApiResource

__all__ = ["RunningCrm", "running_crm"]


@dataclass
class RunningCrm:
    """A started simulator, its store, and the declared object of one kind of record."""

    crm: SandboxCrm
    system: SystemSpec
    store: Path
    started: Started
    kind: str  # "lead", "case", ...: the object is the CRM's own name for it

    @property
    def object_name(self) -> str:
        return self.crm.kinds[self.kind]

    @property
    def key(self) -> str:
        return self.system.get_object(self.object_name).primary_key

    def extract(self, drift: SchemaDrift | None = None, **kwargs: Any) -> tuple[pa.Table, ExtractStats]:
        """A read of the object through the engine (``extract_object``'s options), and its stats."""
        stats = ExtractStats()
        batches = list(
            extract_object(
                system=self.system,
                object_name=self.object_name,
                connection=self.crm.connection(self.started),
                stats=stats,
                drift=drift,
                **kwargs,
            )
        )
        schema = output_schema(system=self.system, object_name=self.object_name)
        return pa.Table.from_batches(batches, schema=schema), stats

    def changes_after(self, stats: ExtractStats) -> pa.Table:
        """What the next nightly read returns: the delta link's changes, else the window since the watermark."""
        if self.system.get_object(self.object_name).incremental.delta is not None:
            return self.extract(delta_link=stats.delta_link)[0]
        assert stats.max_cursor is not None
        return self.extract(since=stats.max_cursor, until=None, include_deleted=True)[0]

    def keys(self, page_size: int = 7) -> set[str]:
        """Every live key the engine's key read returns (``deletes: key_compare``)."""
        found: set[str] = set()
        for batch in extract_keys(
            system=self.system,
            object_name=self.object_name,
            connection=self.crm.connection(self.started),
            page_size=page_size,
        ):
            found |= {str(k) for k in batch.column(0).to_pylist()}
        return found

    def land(
        self,
        *,
        lake: Path,
        dataset: str,
        day: dt.date,
        committed: str | None,
        base_url: str | None = None,
        page_size: int | None = None,
    ) -> ApiExtract:
        """Night ``day``'s extract of the object into ``lake``, as the nightly asset makes it;
        ``base_url`` points the connection elsewhere (a proxy in front of the simulator)."""
        settings = self.system.connection_fields(self.started.env)
        api = CrmApiResource(
            system=self.crm.system,
            **{**settings, "base_url": base_url or settings["base_url"]},
            page_size=page_size,
        )
        return extract_api_object(
            api,
            object_name=self.object_name,
            lake_dir=lake,
            dataset=dataset,
            partition=day.isoformat(),
            until=dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC),
            committed=committed,
        )

    def live_keys(self) -> list[str]:
        """The keys of the live records the store holds, sorted (what the CRM itself lists)."""
        info = read_info(self.store).objects[self.object_name]
        return sorted(str(r[info.key]) for r in fetch_records(self.store, self.object_name))


@contextmanager
def running_crm(
    system: str, kind: str, folder: Path, *, as_of: dt.date, accounts: int = 24
) -> Iterator[RunningCrm]:
    """Build a store of ``accounts`` seeded accounts under ``folder``, start ``system``'s simulator on it."""
    clear_token_cache()
    clear_buckets()
    crm = sandbox_crm(system)
    store = folder / f"{system}.sqlite"
    build_store(store, crm, sample_seeds(accounts=accounts, as_of=as_of))
    started = crm.start(store)
    try:
        yield RunningCrm(crm, load_system(name=system), store, started, kind)
    finally:
        started.simulator.stop()
        clear_token_cache()
        clear_buckets()
