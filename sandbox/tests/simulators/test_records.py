"""The generic record store: what users do in a CRM (create, edit, delete, add a field) is what it keeps."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crm_pipelines_sandbox.simulators.records import (
    FieldDef,
    ObjectDef,
    Stamped,
    add_field,
    count_records,
    create_store,
    current_seq,
    delete_records,
    fetch_records,
    insert_records,
    insert_rows,
    open_store,
    read_info,
    store_info,
    touch_records,
)

ACCOUNTS = ObjectDef(
    name="Accounts",
    key="id",
    fields=(
        FieldDef("id"),
        FieldDef("Account_Name", required=True),
        FieldDef("Annual_Revenue", "number"),
        FieldDef("Created_Time", "datetime"),
        FieldDef("Modified_Time", "datetime"),
        FieldDef("Deleted", "boolean"),
    ),
    created_field="Created_Time",
    modified_field="Modified_Time",
    deleted_flag="Deleted",
)
T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
T1 = datetime(2026, 11, 25, 14, 0, 5, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "zoho.sqlite"
    conn = create_store(path, system="zoho", objects=[ACCOUNTS], timestamp_format="iso_offset")
    with closing(conn), conn:
        insert_rows(
            conn,
            store_info(conn),
            "Accounts",
            [
                Stamped({"id": "1", "Account_Name": "Alpha", "Annual_Revenue": 12.5}, T0, T0),
                Stamped({"id": "2", "Account_Name": "Beta"}, T0, T1),
                Stamped({"id": "3", "Account_Name": "Gone"}, T0, T0, deleted=T1),
            ],
        )
    return path


def test_rows_carry_the_systems_own_timestamps_and_a_canonical_one(store: Path) -> None:
    rows = {r["id"]: r for r in fetch_records(store, "Accounts", with_meta=True)}
    assert sorted(rows) == ["1", "2"]  # the deleted one is hidden
    assert rows["2"]["Created_Time"] == "2026-11-20T09:30:00+00:00"
    assert rows["2"]["Modified_Time"] == "2026-11-25T14:00:05+00:00"
    assert rows["2"]["_modified"] == "2026-11-25T14:00:05.000000+00:00"
    assert rows["1"]["Annual_Revenue"] == 12.5
    gone = fetch_records(store, "Accounts", ["3"], include_deleted=True, with_meta=True)[0]
    assert gone["Deleted"] == 1
    assert gone["_deleted_at"] == "2026-11-25T14:00:05.000000+00:00"


def test_edits_and_deletes_move_the_stamps_and_the_change_sequence(store: Path) -> None:
    with closing(open_store(store, readonly=True)) as conn:
        before = current_seq(conn)
    at = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    assert touch_records(store, "Accounts", ["1"], at, {"Account_Name": "Alpha GmbH"}) == 1
    assert delete_records(store, "Accounts", ["2"], at) == 1
    assert insert_records(store, "Accounts", [{"id": "4", "Account_Name": "Delta"}], at=at) == 1
    row = fetch_records(store, "Accounts", ["1"], with_meta=True)[0]
    assert row["Account_Name"] == "Alpha GmbH"
    assert row["Modified_Time"] == "2026-11-26T08:00:00+00:00"
    assert row["_seq"] > before
    assert count_records(store, "Accounts") == 2  # 1 and 4
    assert count_records(store, "Accounts", include_deleted=True) == 4
    with closing(open_store(store, readonly=True)) as conn:
        assert current_seq(conn) == before + 3


def test_fields_added_later_are_part_of_the_schema(store: Path) -> None:
    add_field(store, "Accounts", "Customer_Tier", default="Gold")
    info = read_info(store)
    assert info.objects["Accounts"].field_names[-1] == "Customer_Tier"
    assert {r["Customer_Tier"] for r in fetch_records(store, "Accounts")} == {"Gold"}
    with pytest.raises(ValueError, match="already has"):
        add_field(store, "Accounts", "Customer_Tier")


def test_unknown_objects_and_fields_are_refused(store: Path) -> None:
    with pytest.raises(KeyError, match="no object 'Leads'"):
        count_records(store, "Leads")
    with pytest.raises(KeyError, match="unknown field"):
        insert_records(store, "Accounts", [{"id": "9", "Nope": 1}])
    with pytest.raises(ValueError, match="invalid"):
        ObjectDef(name="x", key="id", fields=(FieldDef("id"), FieldDef("_secret")))
