"""SData declarations (Infor CRM) through the engine, beyond the shared conformance suite: what the
requests ask for and how the XSD schema is read for drift."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from crm_pipelines.connectors.auth import ConnectionSettings
from crm_pipelines.connectors.engine import SchemaDrift, extract_keys, extract_object
from crm_pipelines.connectors.spec import load_system
from crm_pipelines_sandbox.simulators.base import Request, Response
from crm_pipelines_sandbox.simulators.infor_crm import SANDBOX, InforCrmSimulator
from crm_pipelines_sandbox.simulators.records import add_field, keys_of
from crm_pipelines_sandbox.systems import build_store, sample_seeds

INFOR = load_system(name="infor_crm")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "infor_crm.sqlite"
    build_store(path, SANDBOX, sample_seeds(accounts=12, as_of=date(2026, 11, 25)))
    return path


def _connection(sim: InforCrmSimulator) -> ConnectionSettings:
    return ConnectionSettings(base_url=sim.base_url, username="u", password="p")


def test_drift_from_the_xsd_names_only_a_property_added_in_the_crm(store: Path) -> None:
    with InforCrmSimulator(store, username="u", password="p") as sim:
        clean = SchemaDrift("infor_crm", "accounts")
        list(extract_object(system=INFOR, object_name="accounts", connection=_connection(sim), drift=clean))
        # Address is read through Address.City and the like, Id is the $key: neither is drift.
        assert clean.source_fields >= {"Address", "Id", "AccountName"}
        assert not clean.has_drift, clean.describe()

        add_field(store, "accounts", "CustomerTier", default="Gold")
        drift = SchemaDrift("infor_crm", "accounts")
        list(extract_object(system=INFOR, object_name="accounts", connection=_connection(sim), drift=drift))
        assert drift.not_selected == {"CustomerTier"}
        assert not drift.undeclared


def test_the_keys_read_asks_for_no_payload_in_key_order(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, list[str]]] = []
    original = InforCrmSimulator.list_resources

    def spy(self: InforCrmSimulator, request: Request, resource: str) -> Response:
        sent.append(dict(request.query))
        return original(self, request, resource)

    monkeypatch.setattr(InforCrmSimulator, "list_resources", spy)  # before the routes are bound
    with InforCrmSimulator(store, username="u", password="p") as sim:
        batches = extract_keys(system=INFOR, object_name="contacts", connection=_connection(sim), page_size=5)
        keys = [key for batch in batches for key in batch.column(0).to_pylist()]
    assert keys == sorted(keys_of(store, "contacts"))
    assert len(sent) >= 5
    for query in sent:
        assert query["precedence"] == ["0"]
        assert query["orderBy"] == ["Id"]
        assert "select" not in query
        assert "where" not in query


def test_reads_select_declared_properties_and_references_without_protocol_names(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[dict[str, list[str]]] = []
    original = InforCrmSimulator.list_resources

    def spy(self: InforCrmSimulator, request: Request, resource: str) -> Response:
        sent.append(dict(request.query))
        return original(self, request, resource)

    monkeypatch.setattr(InforCrmSimulator, "list_resources", spy)
    with InforCrmSimulator(store, username="u", password="p") as sim:
        rows = [
            row
            for batch in extract_object(system=INFOR, object_name="contacts", connection=_connection(sim))
            for row in batch.to_pylist()
        ]
    assert sent[0]["select"] == [
        "FirstName,LastName,Email,WorkPhone,Title,Address/Address1,Address/City,Address/PostalCode,"
        "Address/Country,Birthday,Account,CreateDate,CreateUser,ModifyDate,ModifyUser"
    ]
    assert all(row["account_id"] and row["account_id"].startswith("A") for row in rows)
