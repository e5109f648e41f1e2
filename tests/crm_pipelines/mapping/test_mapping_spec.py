from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from crm_pipelines.canonical import ENTITIES
from crm_pipelines.lake import partition_dir
from crm_pipelines.mapping.build import mapping_connection, plan_mapping
from crm_pipelines.mapping.spec import Mappings, load_mappings


def test_packaged_mappings_validate_and_cover_every_entity() -> None:
    mappings = load_mappings()
    assert set(mappings.entities) == {
        "account",
        "contact",
        "opportunity",
        "sales_order",
        "invoice",
        "payment",
        "lead",
        "support_case",
    }
    assert mappings.entity_of("finance_sftp/invoices") == "invoice"
    assert mappings.entity_of("sugarcrm/cases") == "support_case"


@pytest.mark.parametrize(
    ("entities", "message"),
    [
        pytest.param({"unicorn": []}, "unknown entity", id="unknown-entity"),
        pytest.param(
            {
                "account": [
                    {"source": "x", "inputs": {"a": "x/a"}, "id": "Id", "columns": {"colour": {"from": "c"}}}
                ]
            },
            "unknown columns",
            id="unknown-column",
        ),
        pytest.param(
            {"account": [{"source": "x", "inputs": {"a": "x/a"}, "id": "Id; DROP TABLE t", "columns": {}}]},
            "not a valid column name",
            id="injection-in-identifier",
        ),
        pytest.param(
            {
                "account": [
                    {
                        "source": "x",
                        "inputs": {"a": "x/a"},
                        "id": "Id",
                        "columns": {"phone": {"from": "Phone", "transform": "phone"}},
                    }
                ]
            },
            "country_from",
            id="phone-needs-country",
        ),
    ],
)
def test_bad_mappings_are_refused_with_a_clear_error(entities: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Mappings.model_validate({"entities": entities})


def test_mapping_sql_converts_normalises_and_keeps_the_raw_row(tmp_path: Path) -> None:
    folder = partition_dir(tmp_path, "raw", "salesforce", "accounts", "2026-11-25")
    folder.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "Id": ["001A", "001B"],
                "Name": [" Acme  GmbH ", "Bad Revenue Ltd"],
                "Website": ["https://www.acme.de", None],
                "Phone": ["030 1234567", "+44 20 7946 0018"],
                "BillingStreet": ["Hauptstr. 1", None],
                "BillingCity": ["Berlin", "London"],
                "BillingPostalCode": ["10115", "sw1a 1aa"],
                "BillingCountry": ["Deutschland", "UK"],
                "Industry": ["Manufacturing", None],
                "AnnualRevenue": ["1500000.5", "lots"],
                "SystemModstamp": ["2026-11-20T08:00:00.000+0000", "not a date"],
            }
        ),
        folder / "part-0000.parquet",
    )
    mapping = next(m for m in load_mappings().entities["account"] if m.source == "salesforce")
    planned = plan_mapping(
        entity="account", mapping=mapping, value_maps={}, lake_dir=tmp_path, partition="2026-11-25"
    )
    assert planned.sql is not None
    con = mapping_connection()
    rows = con.sql(planned.sql + " ORDER BY record_id").to_arrow_table().to_pylist()
    acme, bad = rows
    assert acme["record_id"] == "salesforce:001A"
    assert acme["name"] == "Acme GmbH"
    assert acme["phone"] == "+49301234567"
    assert (acme["phone_digits"], acme["phone_quality"]) == ("0301234567", "e164")
    assert acme["country"] == "DE"
    assert acme["domain"] == "acme.de"
    assert str(acme["annual_revenue"]) == "1500000.50"
    assert acme["updated_at"].isoformat() == "2026-11-20T08:00:00+00:00"
    assert '"Name":" Acme  GmbH "' in acme["_raw"]
    # Values that cannot be converted become NULL for the quality rules to catch.
    assert bad["annual_revenue"] is None
    assert bad["updated_at"] is None
    assert bad["postal_code"] == "SW1A 1AA"


def test_unparsable_phone_keeps_its_digits_and_a_flag(tmp_path: Path) -> None:
    """A phone that cannot be made E.164 leaves phone null, keeps its digits and is flagged; the row flows."""
    for dataset, table in {
        "contacts": pa.table(
            {
                "Id": ["003A", "003B", "003C", "003D"],
                "AccountId": ["001A", None, None, None],
                "FirstName": ["Ada", "Bob", "Cy", "Di"],
                "LastName": ["Lovelace", "Smith", "Young", "Ross"],
                "Email": ["ada@acme.de", None, None, None],
                # national format, no country anywhere; a digit too many; E.164; none
                "Phone": ["030 1234567", "+49 30 12345678901234", "+44 20 7946 0018", None],
                "Title": [None] * 4,
                "MailingCountry": [None] * 4,
                "MailingStreet": [None] * 4,
                "MailingCity": [None] * 4,
                "MailingPostalCode": [None] * 4,
                "Birthdate": [None] * 4,
                "SystemModstamp": ["2026-11-20T08:00:00.000+0000"] * 4,
            }
        ),
        "accounts": pa.table(
            {"Id": ["001A"], "BillingCountry": [None]},
            schema=pa.schema([("Id", pa.string()), ("BillingCountry", pa.string())]),
        ),
    }.items():
        folder = partition_dir(tmp_path, "raw", "salesforce", dataset, "2026-11-25")
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "part-0000.parquet")
    mapping = next(m for m in load_mappings().entities["contact"] if m.source == "salesforce")
    planned = plan_mapping(
        entity="contact", mapping=mapping, value_maps={}, lake_dir=tmp_path, partition="2026-11-25"
    )
    assert planned.sql is not None
    result = mapping_connection().sql(planned.sql + " ORDER BY record_id").to_arrow_table()
    assert result.column_names[:-2] == ENTITIES["contact"].names
    national, too_long, ok, none = result.to_pylist()
    assert (national["phone"], national["phone_digits"], national["phone_quality"]) == (
        None,
        "0301234567",
        "unparsable",
    )
    assert national["last_name"] == "Lovelace"
    assert national["email"] == "ada@acme.de"
    assert (too_long["phone"], too_long["phone_digits"], too_long["phone_quality"]) == (
        None,
        "493012345678901234",
        "unparsable",
    )
    assert (ok["phone"], ok["phone_digits"], ok["phone_quality"]) == ("+442079460018", "442079460018", "e164")
    assert (none["phone"], none["phone_digits"], none["phone_quality"]) == (None, None, None)


def test_phone_digits_and_quality_are_derived_not_declared() -> None:
    with pytest.raises(ValidationError, match="derived from 'phone'"):
        Mappings.model_validate(
            {
                "entities": {
                    "contact": [
                        {
                            "source": "x",
                            "inputs": {"a": "x/a"},
                            "id": "Id",
                            "columns": {"phone_digits": {"from": "Phone"}},
                        }
                    ]
                }
            }
        )


def test_missing_input_is_reported_not_crashed(tmp_path: Path) -> None:
    mapping = load_mappings().entities["invoice"][1]
    planned = plan_mapping(
        entity="invoice", mapping=mapping, value_maps={}, lake_dir=tmp_path, partition="2026-11-25"
    )
    assert planned.sql is None
    assert "finance_sftp/invoices" in planned.missing_inputs


@pytest.mark.parametrize(
    ("raw", "as_timestamp", "as_date"),
    [
        pytest.param(
            "2026-11-20T08:00:00.000+0000", "2026-11-20T08:00:00+00:00", "2026-11-20", id="salesforce"
        ),
        pytest.param("2026-11-20T09:00:00+01:00", "2026-11-20T08:00:00+00:00", "2026-11-20", id="iso-offset"),
        pytest.param("2026-11-20 08:00:00", "2026-11-20T08:00:00+00:00", "2026-11-20", id="sql"),
        pytest.param("/Date(1795680000000)/", "2026-11-26T08:00:00+00:00", "2026-11-26", id="sdata"),
        pytest.param(
            "/Date(1795680000000+0100)/", "2026-11-26T08:00:00+00:00", "2026-11-26", id="sdata-offset"
        ),
        pytest.param("2026-11-20", "2026-11-20T00:00:00+00:00", "2026-11-20", id="date"),
        pytest.param("31/13/2025", None, None, id="garbage"),
    ],
)
def test_timestamps_and_dates_in_every_systems_format(
    raw: str, as_timestamp: str | None, as_date: str | None
) -> None:
    from crm_pipelines.mapping.build import column_sql
    from crm_pipelines.mapping.spec import ColumnMapping

    con = mapping_connection()
    con.execute("CREATE TABLE t AS SELECT ? AS v", [raw])
    ts = column_sql(ColumnMapping.model_validate({"from": "v", "transform": "timestamp"}), {})
    day = column_sql(ColumnMapping.model_validate({"from": "v", "transform": "date"}), {})
    row = con.execute(f"SELECT {ts}, {day} FROM t").fetchone()
    assert row is not None
    assert (row[0].isoformat() if row[0] else None) == as_timestamp
    assert (row[1].isoformat() if row[1] else None) == as_date


# Each system's contact fields for the mailing address and birth date, as the API names them
# (None: the system has no such field, or the sandbox does not model it).
_PEOPLE_FIELDS: dict[str, tuple[str | None, str | None, str | None, str, str | None]] = {
    "salesforce": ("MailingStreet", "MailingCity", "MailingPostalCode", "MailingCountry", "Birthdate"),
    "hubspot": ("address", "city", "zip", "country", "date_of_birth"),
    "dynamics": ("address1_line1", "address1_city", "address1_postalcode", "address1_country", "birthdate"),
    "zoho": ("Mailing_Street", "Mailing_City", "Mailing_Zip", "Mailing_Country", "Date_of_Birth"),
    "sugarcrm": (
        "primary_address_street",
        "primary_address_city",
        "primary_address_postalcode",
        "primary_address_country",
        "birthdate",
    ),
    "infor_crm": ("Address1", "City", "PostalCode", "Country", "Birthday"),
    "sage_crm": ("addr_address1", "addr_city", "addr_postcode", "addr_country", None),
    "creatio": ("Address", None, "Zip", "country", "BirthDate"),
    "sap_b1": ("Address", None, None, "Country", "DateOfBirth"),
    "pipedrive": (None, None, None, "country", None),
    "zendesk": (None, None, None, "country", None),  # a user field; users have no address or birth date
}


def test_every_crm_with_contacts_is_listed() -> None:
    assert {m.source for m in load_mappings().entities["contact"]} == set(_PEOPLE_FIELDS)


@pytest.mark.parametrize("system", sorted(_PEOPLE_FIELDS))
@pytest.mark.parametrize(
    ("birth", "postal"), [("1980-03-12", " sw1a  1aa "), ("12.03.1980", "SW1A 1AA")], ids=["iso", "typed"]
)
def test_each_system_maps_mailing_address_and_birth_date(
    tmp_path: Path, system: str, birth: str, postal: str
) -> None:
    from crm_pipelines.connectors.spec import load_system

    mapping = next(m for m in load_mappings().entities["contact"] if m.source == system)
    declared = sorted({f.name for obj in load_system(name=system).objects.values() for f in obj.fields})
    street, city, postcode, country, birth_field = _PEOPLE_FIELDS[system]
    fields = {street, city, postcode, country, birth_field} - {None}
    assert fields <= set(declared)
    given = {street: " 10  Downing Street ", city: "London", postcode: postal, country: "United Kingdom"}
    values = {k: v for k, v in given.items() if k is not None}
    if birth_field is not None:
        values[birth_field] = birth
    for alias, dataset in mapping.inputs.items():
        source_dir, name = dataset.split("/")
        folder = partition_dir(tmp_path, "raw", source_dir, name, "2026-11-25")
        folder.mkdir(parents=True)
        row = {
            name: values.get(name, "x") if alias == next(iter(mapping.inputs)) else None for name in declared
        }
        row[mapping.id] = "1"
        pq.write_table(pa.Table.from_pylist([row]), folder / "part-0000.parquet")
    planned = plan_mapping(
        entity="contact", mapping=mapping, value_maps={}, lake_dir=tmp_path, partition="2026-11-25"
    )
    assert planned.sql is not None
    (staged,) = mapping_connection().sql(planned.sql).to_arrow_table().to_pylist()
    expected = (
        "10 Downing Street" if street else None,
        "London" if city else None,
        "SW1A 1AA" if postcode else None,
        "GB",
        "1980-03-12" if birth_field else None,
    )
    assert (
        staged["street"],
        staged["city"],
        staged["postal_code"],
        staged["country"],
        staged["birth_date"],
    ) == expected
