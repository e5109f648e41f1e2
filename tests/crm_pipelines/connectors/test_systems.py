"""Every system declared after Salesforce and HubSpot, through the one engine, against its simulator.

The same cases for each system, as a user of the sync would check them: a full read equals what the
CRM holds; an incremental read returns what changed, including a record stamped exactly at the
watermark; deletes arrive as soft deletes; a token or session expiring mid-run costs nothing; a fifth
of the requests failing changes nothing; a write-back batch reports every record, rejected ones with
the system's reason. Each case builds its own store from the same seed sample.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from crm_pipelines.connectors.auth import ConnectionSettings, clear_token_cache
from crm_pipelines.connectors.engine import (
    DELETED,
    ExtractStats,
    PageInfo,
    check_connection,
    extract_keys,
    extract_object,
    output_schema,
    parse_cursor,
)
from crm_pipelines.connectors.limits import clear_buckets
from crm_pipelines.connectors.paths import resolve_path
from crm_pipelines.connectors.spec import (
    ApiKeyAuth,
    BasicAuth,
    BearerTokenAuth,
    SystemSpec,
    available_systems,
    load_system,
)
from crm_pipelines.connectors.writes import update_records, upsert_records
from crm_pipelines_sandbox.simulators.base import DROP_CONNECTION, SLOW_RESPONSE, Faults
from crm_pipelines_sandbox.simulators.records import (
    count_records,
    delete_records,
    fetch_records,
    insert_records,
    read_info,
    touch_records,
)
from crm_pipelines_sandbox.systems import Kind, SandboxCrm, Started, build_store, sample_seeds, sandbox_crm

AS_OF = date(2026, 11, 25)
EDIT = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
UNTIL = datetime(2026, 11, 27, tzinfo=UTC)
NEW_SYSTEMS = [s for s in available_systems() if s not in ("salesforce", "hubspot")]
KINDS = ("account", "contact", "deal")


@dataclass
class Running:
    crm: SandboxCrm
    system: SystemSpec
    store: Path
    started: Started
    connection: ConnectionSettings

    @property
    def sim(self):  # type: ignore[no-untyped-def]
        return self.started.simulator

    def object_of(self, kind: str) -> str:
        return self.crm.kinds[kind]

    def key_of(self, kind: str) -> str:
        return self.system.get_object(self.object_of(kind)).primary_key

    def extract(self, kind: str, **kwargs: object) -> tuple[pa.Table, ExtractStats]:
        stats = ExtractStats()
        object_name = self.object_of(kind)
        batches = list(
            extract_object(
                system=self.system,
                object_name=object_name,
                connection=self.connection,
                stats=stats,
                **kwargs,  # type: ignore[arg-type]
            )
        )
        table = pa.Table.from_batches(
            batches, schema=output_schema(system=self.system, object_name=object_name)
        )
        return table, stats

    def live_keys(self, kind: str) -> set[str]:
        info = read_info(self.store).objects[self.object_of(kind)]
        return {str(r[info.key]) for r in fetch_records(self.store, self.object_of(kind))}

    def keys(self, table: pa.Table, kind: str, *, deleted: bool | None = None) -> set[str]:
        rows = table.to_pylist()
        return {str(r[self.key_of(kind)]) for r in rows if deleted is None or bool(r[DELETED]) == deleted}


@pytest.fixture(params=NEW_SYSTEMS)
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Running]:
    name = str(request.param)
    clear_token_cache()
    clear_buckets()
    crm = sandbox_crm(name)
    store = tmp_path / f"{name}.sqlite"
    build_store(store, crm, sample_seeds(accounts=24, as_of=AS_OF))
    started = crm.start(store)
    try:
        yield Running(crm, load_system(name=name), store, started, crm.connection(started))
    finally:
        started.simulator.stop()
        clear_token_cache()
        clear_buckets()


def _fast(system: SystemSpec) -> SystemSpec:
    """The declared retry policy with short waits: the faults test should not sit out real backoffs."""
    retries = system.retries.model_copy(
        update={"max_attempts": 10, "backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.05}
    )
    return system.model_copy(update={"retries": retries})


def test_the_declaration_names_every_sandbox_object(running: Running) -> None:
    for kind in KINDS:
        if kind in running.crm.kinds:
            assert running.object_of(kind) in running.system.objects
    assert check_connection(system=running.system, connection=running.connection).ok


def test_a_full_read_returns_exactly_the_live_records(running: Running) -> None:
    for kind in running.crm.kinds:
        # A full read is the snapshot as of now: deleted records are not in it (the extract asset
        # reads deletes only incrementally, from a base snapshot).
        table, stats = running.extract(kind, page_size=7, include_deleted=False)
        keys = [str(k) for k in table.column(running.key_of(kind)).to_pylist()]
        assert len(keys) == len(set(keys)), f"{kind}: a record came twice"
        assert set(keys) == running.live_keys(kind), kind
        assert not any(table.column(DELETED).to_pylist())
        assert stats.max_cursor is not None
        assert stats.max_cursor < UNTIL
        # Values arrive as the CRM holds them: the declared top-level text fields equal the store.
        obj = running.system.get_object(running.object_of(kind))
        info = read_info(running.store).objects[running.object_of(kind)]
        text_fields = [
            f
            for f in obj.fields
            if f.source_path in info.field_names
            and dict((d.name, d.type) for d in info.fields)[f.source_path] == "string"
        ]
        stored = {str(r[info.key]): r for r in fetch_records(running.store, running.object_of(kind))}
        compared = 0
        for row in table.to_pylist():
            record = stored[str(row[obj.primary_key])]
            for spec in text_fields:
                if record[spec.source_path] is not None:
                    assert row[spec.name] == record[spec.source_path], (kind, spec.name)
                    compared += 1
        assert compared > 0 or not text_fields


def test_an_incremental_read_returns_the_changes_and_the_record_on_the_watermark(running: Running) -> None:
    kind: Kind = "contact"
    full, stats = running.extract(kind, include_deleted=False)
    watermark = stats.max_cursor
    assert watermark is not None
    live = sorted(running.live_keys(kind))
    edited = live[:2]
    touch_records(running.store, running.object_of(kind), edited, EDIT)
    # A record committed late, stamped exactly at the watermark a previous read reached.
    info = read_info(running.store).objects[running.object_of(kind)]
    late = dict(fetch_records(running.store, running.object_of(kind), [live[-1]])[0])
    late_key = running.crm.new_key(kind, random.Random(99))
    late[info.key] = late_key
    for stamp_field in (info.created_field, info.modified_field):
        if stamp_field:
            late.pop(stamp_field)
    insert_records(running.store, running.object_of(kind), [late], at=watermark)

    delta = running.system.get_object(running.object_of(kind)).incremental.delta
    if delta is not None:
        changes, _ = running.extract(kind, delta_link=stats.delta_link)
    else:
        changes, _ = running.extract(kind, since=watermark, until=UNTIL, include_deleted=True)
    keys = running.keys(changes, kind)
    assert set(edited) <= keys
    assert str(late_key) in keys
    assert changes.num_rows < full.num_rows  # only the window, not the whole object


def test_deletes_arrive_as_soft_deletes(running: Running) -> None:
    kind = "account"
    _, stats = running.extract(kind, include_deleted=False)
    gone = sorted(running.live_keys(kind))[:2]
    delete_records(running.store, running.object_of(kind), gone, EDIT)
    obj = running.system.get_object(running.object_of(kind))
    if obj.deletes.mode == "key_compare":
        keys = set()
        for batch in extract_keys(
            system=running.system, object_name=running.object_of(kind), connection=running.connection
        ):
            keys |= {str(k) for k in batch.column(0).to_pylist()}
        assert keys == running.live_keys(kind)
        assert not set(gone) & keys
        return
    if obj.incremental.delta is not None:
        changes, _ = running.extract(kind, delta_link=stats.delta_link)
    else:
        assert stats.max_cursor is not None
        since = stats.max_cursor - timedelta(seconds=obj.incremental.lookback_seconds)
        changes, _ = running.extract(kind, since=since, until=UNTIL, include_deleted=True)
    assert set(gone) <= running.keys(changes, kind, deleted=True)
    assert not set(gone) & running.keys(changes, kind, deleted=False)


def test_a_kept_delta_link_survives_the_api_moving(running: Running) -> None:
    kind = "account"
    if running.system.get_object(running.object_of(kind)).incremental.delta is None:
        pytest.skip(f"{running.system.title} reads by a cursor window, not a delta link")
    _, stats = running.extract(kind)
    assert stats.delta_link is not None
    assert not stats.delta_link.startswith(("http://", "https://"))  # kept without the host
    # The same organisation answers at another address (a new port here) the next night.
    running.started.simulator.stop()
    clear_token_cache()
    running.started = running.crm.start(running.store)
    running.connection = running.crm.connection(running.started)
    edited = sorted(running.live_keys(kind))[:2]
    touch_records(running.store, running.object_of(kind), edited, EDIT)
    changes, _ = running.extract(kind, delta_link=stats.delta_link)
    assert set(edited) <= running.keys(changes, kind)


def test_a_credential_expiring_mid_run_costs_nothing(running: Running) -> None:
    if isinstance(running.system.auth, BearerTokenAuth | ApiKeyAuth | BasicAuth):
        pytest.skip(f"{running.system.title} uses a static credential: nothing expires mid-run")
    kind = "contact"
    clean, _ = running.extract(kind, page_size=5)

    def expire_after_first_page(page: PageInfo) -> None:
        if page.page_number == 1:
            running.sim.expire_tokens()

    again, _ = running.extract(kind, page_size=5, on_page=expire_after_first_page)
    assert running.keys(again, kind) == running.keys(clean, kind)
    refused = [r for r in running.sim.request_log if r.status == 401]
    assert refused, "the expiry did not happen"


def test_with_faults_on_a_fifth_of_requests_the_result_is_the_same(running: Running) -> None:
    kind = "contact"
    system = _fast(running.system)
    connection = ConnectionSettings(
        **running.system.connection_fields(running.started.env), timeout_seconds=0.5
    )

    def read() -> list[tuple[object, ...]]:
        table = pa.Table.from_batches(
            list(
                extract_object(
                    system=system, object_name=running.object_of(kind), connection=connection, page_size=5
                )
            ),
            schema=output_schema(system=system, object_name=running.object_of(kind)),
        )
        rows = table.drop_columns(["_extracted_at"]).to_pylist()
        return sorted(tuple(r.values()) for r in rows)

    clean = read()
    running.sim.faults = Faults(
        error_rate=0.2, statuses=(429, 500, 503, DROP_CONNECTION, SLOW_RESPONSE), slow_seconds=0.8, seed=11
    )
    running.sim.request_log.clear()
    assert read() == clean
    assert len([r for r in running.sim.request_log if r.status != 200]) >= 2  # the faults did happen


def test_a_write_back_batch_reports_every_record(running: Running) -> None:
    case = running.crm.write_case(running.store)
    before = count_records(running.store, case.object_name)
    batch = [*case.accepted, *case.rejected]
    results = upsert_records(
        system=running.system,
        object_name=case.object_name,
        connection=running.connection,
        external_id_field=case.external_id_field,
        records=batch,
    )
    assert len(results) == len(batch)
    accepted, rejected = results[: len(case.accepted)], results[len(case.accepted) :]
    assert all(r.status == "created" and r.record_id for r in accepted), accepted
    assert all(
        r.status == "rejected" and r.error_code == case.rejected_code and r.reason for r in rejected
    ), rejected
    assert count_records(running.store, case.object_name) == before + len(case.accepted)

    # Sent again, the same records update what the first batch created; a record the CRM refuses
    # once with a retryable error (a lock) is sent again and lands.
    upsert = running.system.get_object(case.object_name).upsert
    assert upsert is not None
    # The external id may sit in a nested object (Pipedrive custom_fields.<key>).
    flaky = str(resolve_path(case.accepted[0], case.external_id_field))
    if upsert.retryable_errors:
        running.sim.record_faults[flaky] = [upsert.retryable_errors[0]]
    again = upsert_records(
        system=_fast(running.system),
        object_name=case.object_name,
        connection=running.connection,
        external_id_field=case.external_id_field,
        records=case.accepted,
    )
    assert [r.status for r in again] == ["updated"] * len(case.accepted)
    if upsert.retryable_errors:
        assert again[0].attempts == 2
    assert count_records(running.store, case.object_name) == before + len(case.accepted)


def test_an_update_by_id_changes_the_record_and_shows_in_the_next_read(running: Running) -> None:
    case = running.crm.update_case(running.store)
    obj = running.system.get_object(case.object_name)
    assert obj.update is not None
    before = count_records(running.store, case.object_name)
    started = datetime.now(UTC) - timedelta(seconds=1)
    results = update_records(
        system=running.system,
        object_name=case.object_name,
        connection=running.connection,
        records=[*case.changed, case.unknown],
    )
    assert [r.status for r in results[:-1]] == ["updated"] * len(case.changed), results
    unknown = results[-1]
    assert unknown.status == "rejected", unknown
    assert unknown.error_code == case.unknown_code, unknown
    assert unknown.reason
    assert count_records(running.store, case.object_name) == before  # an update never creates

    # The change is what the next incremental read of the object sees.
    kind = next(k for k, o in running.crm.kinds.items() if o == case.object_name)
    changes, _ = running.extract(kind, since=started, until=None, include_deleted=True)
    seen = {str(r[obj.primary_key]): r[case.field] for r in changes.to_pylist()}
    assert {k: seen.get(k) for k in case.expected} == case.expected


# --- helpers -----------------------------------------------------------------------------------


def test_cursor_parsing_covers_every_declared_format() -> None:
    moment = datetime(2026, 11, 25, 10, 15, 30, tzinfo=UTC)
    for raw in (
        "2026-11-25T10:15:30Z",
        "2026-11-25T10:15:30+00:00",
        "2026-11-25T11:15:30+01:00",
        "2026-11-25 10:15:30",
        "/Date(1795601730000)/",
        "1795601730000",
    ):
        assert parse_cursor(value=raw, fmt="iso8601_seconds") == moment, raw
    assert parse_cursor(value="2026-11-25", fmt="date", time_of_day="10:15:30") == moment
    # A compact date is a day, not a count of milliseconds since 1970.
    assert parse_cursor(value="20261125", fmt="date") == datetime(2026, 11, 25, tzinfo=UTC)
