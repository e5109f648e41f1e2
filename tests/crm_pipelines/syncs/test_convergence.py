"""Two-way sync converges: Salesforce, HubSpot, Dynamics 365 and the ERP, edited by users for 10 nights.

Real parts: the sandbox's simulators and ERP database, the Dagster assets of the nightly job (the
extracts, raw loads, staging, identity resolution and the golden syncs of the three CRMs), a DuckDB
warehouse. Users edit through each system's public API (Salesforce REST sobjects, HubSpot CRM v3
objects, the Dataverse Web API) and the ERP through its database, including conflicting edits of
one field in two systems. After every night, a fresh read of each CRM must agree with the golden
records, nothing may move that nobody edited, and each conflict is logged once. A night with no
edits makes no write request.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import random
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import duckdb
import httpx
import phonenumbers
import pyarrow as pa
import pytest

from crm_pipelines.connectors.auth import ConnectionSettings
from crm_pipelines.connectors.engine import extract_object, output_schema
from crm_pipelines.connectors.spec import load_system
from crm_pipelines.mapping.build import mapping_connection
from crm_pipelines.mapping.spec import load_mappings
from crm_pipelines.sql import fetch_arrow, quote_ident
from crm_pipelines.syncs.run import resolve_target
from crm_pipelines.syncs.spec import SyncField, load_syncs
from crm_pipelines.syncs.targets.crm import reverse_mapping
from crm_pipelines.syncs.transforms import NoTargetValue, canonical_type, current_sql, write_value
from crm_pipelines_sandbox.nights import SandboxNights, sandbox_nights
from crm_pipelines_sandbox.run import Sandbox

SYSTEMS = ("salesforce", "hubspot", "dynamics")
ENTITIES = ("account", "contact")
# Ten nights: seven of edits, each followed by nights that must bring no loop back, and a quiet night
# after every run of edits (what a loop, a re-logged conflict or an unsettled write would show in).
CYCLES = 10
QUIET = {4, 7, 10}  # nights nobody edits anything
TODAY = dt.datetime.now(dt.UTC).date()
YESTERDAY = TODAY - dt.timedelta(days=1)
# Canonical industries every CRM here spells (mappings.yaml's value maps).
INDUSTRIES = ("Technology", "Manufacturing", "Retail", "Finance", "Energy", "Consulting", "Chemicals")

GOLDEN_SYNCS = {f"golden_{entity}s__{system}" for entity in ENTITIES for system in SYSTEMS}
Record = tuple[str, str]  # (system, source id)
Values = dict[str, str | None]  # target field -> canonical text


@dataclass(frozen=True)
class Edit:
    """One user edit: which record, which canonical column, what it now holds (canonical)."""

    system: str
    entity: str
    source_id: str
    column: str
    value: str
    owner: bool  # made in the system that owns the column


@dataclass
class Estate:
    nights: SandboxNights
    http: httpx.Client
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def box(self) -> Sandbox:
        return self.nights.box

    @property
    def env(self) -> dict[str, str]:
        return self.nights.env

    # -- the nightly run --------------------------------------------------------------------

    def night(self, partition: dt.date) -> str:
        return self.nights.night(partition)

    def warehouse(self) -> duckdb.DuckDBPyConnection:
        return self.nights.warehouse()

    # -- what the systems hold now ----------------------------------------------------------

    def read(self, system: str, entity: str) -> dict[str, Values]:
        """A fresh full read of the system's records, each mapped field in the canonical form."""
        sync = load_syncs().get(f"golden_{entity}s__{system}")
        target = resolve_target(sync)
        spec = load_system(name=system)
        fields = reverse_mapping(sync, spec.get_object(target.object_name))
        connection = ConnectionSettings(**spec.connection_fields(self.env))
        table = pa.Table.from_batches(
            list(
                extract_object(
                    system=spec, object_name=target.object_name, connection=connection, include_deleted=False
                )
            ),
            schema=output_schema(system=spec, object_name=target.object_name),
        )
        value_maps = load_mappings().value_maps
        columns = ", ".join(
            f"{current_sql(name, f, value_maps)} AS {quote_ident(name)}" for name, f in fields.items()
        )
        with mapping_connection() as con:
            con.register("t", table)
            rows = con.execute(
                f"SELECT CAST({quote_ident(target.primary_key)} AS VARCHAR) AS __id, {columns} FROM t"
            ).fetchall()
        names = list(fields)
        return {str(r[0]): dict(zip(names, r[1:], strict=True)) for r in rows}

    def golden(self, entity: str) -> tuple[dict[Record, str], dict[str, Values]]:
        """The crosswalk (record -> golden id) and each golden record's columns as canonical text."""
        with self.warehouse() as con:
            links = con.execute(
                "SELECT source, source_id, golden_id FROM core.xref_identity WHERE entity = ? "
                "AND source IN ('salesforce', 'hubspot', 'dynamics', 'erp')",
                [entity],
            ).fetchall()
            table = fetch_arrow(con, f"SELECT * FROM core.golden_{entity}")
        golden = {str(r.pop("golden_id")): {k: _text(v) for k, v in r.items()} for r in table.to_pylist()}
        return {(str(s), str(i)): str(g) for s, i, g in links}, golden

    # -- users ---------------------------------------------------------------------------------

    def _token(self, system: str) -> str:
        if system not in self.tokens:
            if system == "salesforce":
                answer = self.http.post(
                    f"{self.env['SALESFORCE_BASE_URL']}/services/oauth2/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self.env["SALESFORCE_CLIENT_ID"],
                        "client_secret": self.env["SALESFORCE_CLIENT_SECRET"],
                    },
                )
            else:
                answer = self.http.post(
                    self.env["DYNAMICS_TOKEN_URL"],
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self.env["DYNAMICS_CLIENT_ID"],
                        "client_secret": self.env["DYNAMICS_CLIENT_SECRET"],
                        "scope": f"{self.env['DYNAMICS_BASE_URL']}/.default",
                    },
                )
            answer.raise_for_status()
            self.tokens[system] = str(answer.json()["access_token"])
            if system == "salesforce":
                self.tokens["salesforce_instance"] = str(answer.json()["instance_url"])
        return self.tokens[system]

    def edit(self, system: str, entity: str, source_id: str, values: dict[str, Any]) -> None:
        """Change a record the way a user's tool does: the vendor's public update call."""
        if system == "salesforce":
            token = self._token(system)
            sobject = "Account" if entity == "account" else "Contact"
            response = self.http.patch(
                f"{self.tokens['salesforce_instance']}/services/data/v62.0/sobjects/{sobject}/{source_id}",
                json=values,
                headers={"Authorization": f"Bearer {token}"},
            )
        elif system == "hubspot":
            kind = "companies" if entity == "account" else "contacts"
            response = self.http.patch(
                f"{self.env['HUBSPOT_BASE_URL']}/crm/v3/objects/{kind}/{source_id}",
                json={"properties": values},
                headers={"Authorization": f"Bearer {self.env['HUBSPOT_ACCESS_TOKEN']}"},
            )
        elif system == "dynamics":
            token = self._token(system)
            table = "accounts" if entity == "account" else "contacts"
            response = self.http.patch(
                f"{self.env['DYNAMICS_BASE_URL']}/api/data/v9.2/{table}({source_id})",
                json=values,
                # If-Match: * makes PATCH an update only (without it Dataverse creates a missing row).
                headers={"Authorization": f"Bearer {token}", "If-Match": "*"},
            )
        else:
            assert self.box.layout is not None
            with sqlite3.connect(self.box.layout.erp_db) as conn:
                sets = ", ".join(f"{quote_ident(k)} = ?" for k in values)
                stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
                conn.execute(
                    f"UPDATE customers SET {sets}, updated_at = ? WHERE customer_id = ?",
                    [*values.values(), stamp, int(source_id)],
                )
            return
        assert response.status_code in (200, 204), response.text


def _text(value: object) -> str | None:
    return None if value is None else str(value)


# What the golden syncs of the three CRMs need: their accounts and contacts, the ERP's customers,
# staging, identity and the syncs (opportunities and the raw loads are not).
_OBJECTS = {"accounts", "contacts", "companies", "customers"}
_STEPS = (["staging", "account"], ["staging", "contact"], ["identity", "resolution"], ["core", "identity"])


def _selected(key: dg.AssetKey) -> bool:
    return (
        (key.path[0] in {*SYSTEMS, "erp"} and key.path[1] in _OBJECTS)
        or key.path in _STEPS
        or (key.path[0] == "reverse_sync" and key.path[1] in GOLDEN_SYNCS)
    )


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    root = tmp_path_factory.mktemp("convergence")
    with (
        sandbox_nights(root, select=_selected, contacts=400, seed=7, as_of=YESTERDAY) as nights,
        httpx.Client(timeout=30) as http,
    ):
        yield Estate(nights, http)


def _phone(rng: random.Random) -> tuple[str, str]:
    """A valid Berlin number as a user types it, and its E.164 form."""
    while True:
        typed = f"+49 30 {rng.randrange(2_000_000, 99_999_999)}"
        number = phonenumbers.parse(typed)
        if phonenumbers.is_valid_number(number):
            return typed, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@functools.cache
def _spelling(system: str, entity: str, column: str, canonical: str) -> Any:
    """What a user of ``system`` types for a canonical value (the mapping's spelling)."""
    sync = load_syncs().get(f"golden_{entity}s__{system}")
    fields = reverse_mapping(sync, load_system(name=system).get_object(resolve_target(sync).object_name))
    for f in fields.values():
        if f.source_column == column:
            value = write_value(canonical, f, load_mappings().value_maps)
            return int(value) if system == "dynamics" and f.value_map else value
    raise AssertionError(f"{system} maps no {entity}.{column}")


@functools.cache
def _field(system: str, entity: str, column: str) -> str:
    sync = load_syncs().get(f"golden_{entity}s__{system}")
    fields = reverse_mapping(sync, load_system(name=system).get_object(resolve_target(sync).object_name))
    return next(name for name, f in fields.items() if f.source_column == column)


Seen = dict[tuple[str, str, str], str | None]  # (system, source id, target field) -> canonical


def _pick(
    rng: random.Random,
    links: dict[Record, str],
    *,
    having: tuple[str, ...],
    single: str = "salesforce",
    holding: tuple[Seen, str, str] | None = None,
) -> dict[str, list[str]]:
    """A golden record linked to every system in ``having``, once to ``single``: system -> ids.

    ``holding`` (what the systems hold, entity, column): ``single``'s record has a value there, so
    that it is the owner's value the golden record carries.
    """
    by_golden: dict[str, dict[str, list[str]]] = {}
    for (system, source_id), golden_id in links.items():
        by_golden.setdefault(golden_id, {}).setdefault(system, []).append(source_id)

    def holds(systems: dict[str, list[str]]) -> bool:
        if holding is None:
            return True
        seen, entity, column = holding
        return seen.get((single, systems[single][0], _field(single, entity, column))) is not None

    candidates = sorted(
        g
        for g, systems in by_golden.items()
        if all(s in systems for s in having) and len(systems.get(single, [])) == 1 and holds(systems)
    )
    assert candidates, f"no golden record in {having}"
    return by_golden[rng.choice(candidates)]


def _user_edits(estate: Estate, cycle: int, seen: Seen) -> list[Edit]:
    """A night's worth of edits, some in the owner, some elsewhere, two of them on one field."""
    rng = random.Random(cycle)
    accounts, _ = estate.golden("account")
    contacts, _ = estate.golden("contact")
    edits: list[Edit] = []

    def make(
        system: str, entity: str, source_id: str, column: str, canonical: str, typed: Any, owner: bool
    ) -> None:
        estate.edit(system, entity, source_id, {_field(system, entity, column): typed})
        edits.append(Edit(system, entity, source_id, column, canonical, owner))

    # An address corrected in the ERP (the owner) reaches every CRM.
    ids = _pick(rng, accounts, having=("erp", "salesforce"), single="erp")
    street = f"Konvergenzweg {cycle}{rng.randrange(10, 99)}"
    estate.edit("erp", "account", ids["erp"][0], {"street": street})
    edits.append(Edit("erp", "account", ids["erp"][0], "street", street, True))
    # A phone changed in Salesforce (the owner) ...
    ids = _pick(rng, accounts, having=("salesforce", "hubspot"))
    typed, e164 = _phone(rng)
    make("salesforce", "account", ids["salesforce"][0], "phone", e164, typed, True)
    # ... and one changed in HubSpot, which does not own it: put back.
    ids = _pick(rng, accounts, having=("salesforce", "hubspot"), holding=(seen, "account", "phone"))
    typed, e164 = _phone(rng)
    make("hubspot", "account", ids["hubspot"][0], "phone", e164, typed, False)
    # The same field edited in two systems the same night: the owner's edit wins everywhere.
    ids = _pick(rng, accounts, having=("salesforce", "hubspot"))
    held = {
        seen.get((s, i, _field(s, "account", "industry"))) for s in ("salesforce", "hubspot") for i in ids[s]
    }
    ours, theirs = rng.sample([i for i in INDUSTRIES if i not in held], 2)  # both real changes
    make("salesforce", "account", ids["salesforce"][0], "industry", ours, ours, True)
    make(
        "hubspot",
        "account",
        ids["hubspot"][0],
        "industry",
        theirs,
        _spelling("hubspot", "account", "industry", theirs),
        False,
    )
    # Contacts: a title set by sales (the owner) and one typed over in Dynamics.
    ids = _pick(rng, contacts, having=("salesforce", "hubspot"))
    title = f"Head of Convergence {cycle}"
    make("salesforce", "contact", ids["salesforce"][0], "title", title, title, True)
    if any(system == "dynamics" for system, _ in contacts):
        ids = _pick(rng, contacts, having=("salesforce", "dynamics"), holding=(seen, "contact", "title"))
        title = f"Typed in Dynamics {cycle}"
        make("dynamics", "contact", ids["dynamics"][0], "title", title, title, False)
    return edits


def _agreement(estate: Estate) -> tuple[dict[tuple[str, str, str], str | None], list[str]]:
    """Every CRM record's mapped values, and where a record disagrees with its golden record."""
    value_maps = load_mappings().value_maps
    seen: dict[tuple[str, str, str], str | None] = {}
    problems: list[str] = []
    for entity in ENTITIES:
        links, golden = estate.golden(entity)
        for system in SYSTEMS:
            sync = load_syncs().get(f"golden_{entity}s__{system}")
            target = resolve_target(sync)
            fields = reverse_mapping(sync, load_system(name=system).get_object(target.object_name))
            for source_id, values in estate.read(system, entity).items():
                for name, value in values.items():
                    seen[(system, source_id, name)] = value
                golden_id = links.get((system, source_id))
                if golden_id is None:
                    continue  # quarantined, or not matched: nothing is synced into it
                record = golden[golden_id]
                for name, f in fields.items():
                    expected = _canonical(record.get(f.source_column), f)
                    if expected is None or values[name] == expected:
                        continue
                    if name not in target.fields:
                        # The owner's field: the golden record took the owner's value, unless the
                        # owner holds this record twice (one survives) or holds no value.
                        copies = [i for (s, i), g in links.items() if s == system and g == golden_id]
                        # A national number the mapping reads with the account's country (its query)
                        # is read here with the record's own: unreadable, not different.
                        unreadable = values[name] is not None and str(values[name]).startswith("?")
                        if len(copies) > 1 or values[name] is None or unreadable:
                            continue
                    else:
                        try:
                            write_value(expected, f, value_maps)
                        except NoTargetValue:
                            continue  # the target has no spelling for it: left as it is, and logged
                    problems.append(
                        f"{system} {entity} {source_id} {name}: {values[name]!r}, golden {expected!r}"
                    )
    return seen, problems


def _canonical(value: str | None, f: SyncField) -> str | None:
    return None if value is None else _cast(value, canonical_type(f))


@functools.cache
def _cast(value: str, duckdb_type: str) -> str | None:
    """A golden value as the sync compares it (canonical_sql), computed once per value and type."""
    row = _CASTS.execute(f"SELECT CAST(TRY_CAST(? AS {duckdb_type}) AS VARCHAR)", [value]).fetchone()
    return None if row is None or row[0] is None else str(row[0])


_CASTS = duckdb.connect()


@pytest.mark.timeout(900)
def test_ten_nights_of_edits_converge_without_loops(estate: Estate) -> None:
    estate.night(YESTERDAY)
    values, problems = _agreement(estate)
    assert not problems, problems[:10]
    with estate.warehouse() as con:
        rejected = con.execute(
            "SELECT count(*) FROM ops.sync_errors WHERE error_code <> 'NO_TARGET_VALUE'"
        ).fetchall()
    assert rejected == [(0,)]
    all_edits: list[Edit] = []
    for cycle in range(1, CYCLES + 1):
        accounts, _ = estate.golden("account")
        contacts, _ = estate.golden("contact")
        edits = [] if cycle in QUIET else _user_edits(estate, cycle, values)
        all_edits += edits
        run_id = estate.night(TODAY)
        after, problems = _agreement(estate)
        assert not problems, (cycle, problems[:10])
        # The night's edits won where they should.
        for edit in edits:
            links = accounts if edit.entity == "account" else contacts
            golden_id = links[(edit.system, edit.source_id)]
            cluster = {r for r, g in links.items() if g == golden_id and r[0] in SYSTEMS}
            for system, source_id in cluster:
                name = _field(system, edit.entity, edit.column)
                if edit.owner:
                    assert after[(system, source_id, name)] == edit.value, (cycle, edit, system)
        # Nothing moved that nobody touched: a change is an edit's or its propagation's.
        touched: set[tuple[str, str, str]] = set()
        for edit in edits:
            links = accounts if edit.entity == "account" else contacts
            golden_id = links[(edit.system, edit.source_id)]
            for (system, source_id), g in links.items():
                if g == golden_id and system in SYSTEMS:
                    touched.add((system, source_id, _field(system, edit.entity, edit.column)))
        moved = {k for k in after if k in values and after[k] != values[k]} - touched
        assert not moved, (cycle, sorted(moved)[:10])
        with estate.warehouse() as con:
            (requests,) = con.execute(
                "SELECT coalesce(sum(requests), 0) FROM ops.sync_runs WHERE run_id = ?", [run_id]
            ).fetchone() or (None,)
        if cycle in QUIET:
            assert requests == 0, (cycle, requests)
        else:
            assert requests > 0
        values = after

    with estate.warehouse() as con:
        logged = con.execute(
            "SELECT target_system, target_id, field, target_value, count(*) FROM ops.sync_conflicts "
            "GROUP BY ALL"
        ).fetchall()
        rejected = con.execute(
            "SELECT count(*) FROM ops.sync_errors WHERE error_code <> 'NO_TARGET_VALUE'"
        ).fetchall()
    assert rejected == [(0,)]
    # Logged once: a conflict is logged no more often than somebody made that edit.
    made = collections.Counter(
        (e.system, e.source_id, _field(e.system, e.entity, e.column), e.value)
        for e in all_edits
        if not e.owner
    )
    twice = [(s, i, f, v, n) for s, i, f, v, n in logged if n > made[(s, i, f, v)]]
    assert not twice, twice
    conflicts = {(s, i, f, v) for s, i, f, v, _ in logged}
    for edit in all_edits:
        if not edit.owner and edit.system in SYSTEMS:
            name = _field(edit.system, edit.entity, edit.column)
            assert (edit.system, edit.source_id, name, edit.value) in conflicts, edit
