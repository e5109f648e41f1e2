"""XML drops: records by element path, streamed; bad records quarantined by line; hostile XML refused."""

from pathlib import Path

import pytest

from crm_pipelines.files.csv_reader import DriftReport, FileRejected
from crm_pipelines.files.xml_reader import read_xml_batches

COLUMNS = ["invoice_number", "customer_code", "amount_gross"]


def read(path: Path, **kwargs: object) -> tuple[list[dict[str, object]], list[dict[str, str]]]:
    chunks = list(
        read_xml_batches(
            path,
            columns=COLUMNS,
            source_file=path.name,
            source="finance_sftp",
            dataset="invoice",
            record_path=str(kwargs.pop("record_path", "Invoices/Invoice")),
            **kwargs,  # type: ignore[arg-type]
        )
    )
    return [r for c in chunks for r in c.rows.to_pylist()], [q for c in chunks for q in c.quarantine]


def test_records_land_with_their_line_and_bad_ones_are_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "invoices_2026-11-25.xml"
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'  # 1
        '<Invoices xmlns="urn:billing:v2" exported="2026-11-25">\n'  # 2
        '  <Invoice invoice-number="BIL-1">\n'  # 3: an attribute is a field too
        "    <Customer><Code>C-1</Code><Name>Acme &amp; Co</Name></Customer>\n"
        "    <AmountGross> 119.00 </AmountGross>\n"
        "  </Invoice>\n"
        "  <Summary><Invoice><Note>not at the record path</Note></Invoice></Summary>\n"  # 7
        '  <Invoice invoice-number="BIL-2"><Customer><Code>C-2</Code></Customer></Invoice>\n'  # 8: no amount
        '  <Invoice invoice-number="BIL-3"><Customer><Code>C-3</Code></Customer>\n'  # 9
        "    <AmountGross>1</AmountGross><AmountGross>2</AmountGross></Invoice>\n"
        '  <Invoice invoice-number="BIL-4"><Customer><Code>C-4</Code></Customer>'  # 11
        "<AmountGross>7</AmountGross></Invoice>\n"
        "</Invoices>\n",
        encoding="utf-8",
    )
    drift = DriftReport()
    rows, quarantine = read(path, batch_rows=1, drift=drift)
    assert [
        (r["invoice_number"], r["customer_code"], r["amount_gross"], r["_source_line"]) for r in rows
    ] == [
        ("BIL-1", "C-1", "119.00", 3),
        ("BIL-4", "C-4", "7", 11),
    ]
    assert [(q["record_id"], q["rule"], q["reason"]) for q in quarantine] == [
        (f"{path.name}:8", "missing_field", "line 8: missing field(s) amount_gross"),
        (f"{path.name}:9", "repeated_field", "line 9: field(s) amount_gross occur more than once"),
    ]
    assert "BIL-2" in quarantine[0]["record"]
    assert drift.new_columns == ["customer_name"]


def test_a_large_document_streams_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "invoices.xml"
    with path.open("w") as out:
        out.write("<Invoices>\n")
        for i in range(30_000):
            out.write(
                f"<Invoice><invoice_number>BIL-{i}</invoice_number><customer_code>C</customer_code>"
                f"<amount_gross>{i}</amount_gross></Invoice>\n"
            )
        out.write("</Invoices>\n")
    chunks = list(
        read_xml_batches(
            path,
            columns=COLUMNS,
            source_file=path.name,
            source="s",
            dataset="d",
            record_path="Invoices/Invoice",
            batch_rows=10_000,
        )
    )
    assert [c.rows.num_rows for c in chunks][:2] == [10_000, 10_000]
    assert sum(c.rows.num_rows for c in chunks) == 30_000
    assert chunks[-1].rows.to_pylist()[-1]["_source_line"] == 30_001


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE Invoices [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<Invoices><Invoice><invoice_number>&lol3;</invoice_number></Invoice></Invoices>
"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE Invoices [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<Invoices><Invoice><invoice_number>&secret;</invoice_number></Invoice></Invoices>
"""


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (BILLION_LAUGHS, "refused as hostile XML: EntitiesForbidden"),
        (EXTERNAL_ENTITY, "refused as hostile XML: EntitiesForbidden"),
        ("<Invoices><Invoice><invoice_number>BIL-1</invoice_number></Invoice>", "not well-formed XML"),
        ("<Payments><Payment/></Payments>", r"root element is <Payments>.*changed layout"),
        ("<Invoices><Bill/></Invoices>", "no <Invoice> records at Invoices/Invoice"),
        (
            "<Invoices><Invoice><number>1</number></Invoice></Invoices>",
            "invoice_number, customer_code, amount_gross are in none of the 1 record",
        ),
    ],
    ids=["billion-laughs", "external-entity", "truncated", "other-root", "no-records", "columns-missing"],
)
def test_unusable_or_hostile_documents_are_rejected_whole(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "invoices.xml"
    path.write_text(content)
    with pytest.raises(FileRejected, match=reason):
        read(path)


def test_a_record_nested_ten_thousand_levels_deep_is_quarantined_and_its_neighbours_land(
    tmp_path: Path,
) -> None:
    path = tmp_path / "invoices_2026-11-25.xml"
    deep = "<X>" * 10_000 + "boom" + "</X>" * 10_000
    path.write_text(
        "<Invoices>\n"  # 1
        '  <Invoice invoice-number="BIL-1"><Customer><Code>C-1</Code></Customer><AmountGross>1</AmountGross></Invoice>\n'
        f'  <Invoice invoice-number="BIL-2"><Customer><Code>C-2</Code></Customer>{deep}</Invoice>\n'  # 3
        '  <Invoice invoice-number="BIL-3"><Customer><Code>C-3</Code></Customer><AmountGross>3</AmountGross></Invoice>\n'
        "</Invoices>\n",
        encoding="utf-8",
    )
    rows, quarantine = read(path)
    assert [(r["invoice_number"], r["_source_line"]) for r in rows] == [("BIL-1", 2), ("BIL-3", 4)]
    assert [(q["record_id"], q["rule"]) for q in quarantine] == [(f"{path.name}:3", "nesting_depth")]
    assert "more than 64 levels deep" in quarantine[0]["reason"]
