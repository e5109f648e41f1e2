"""Streaming CSV reader: header checks, line numbers, quarantine, batching."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from crm_pipelines.canonical import QUARANTINE
from crm_pipelines.files.csv_reader import (
    CsvChunk,
    DriftReport,
    FileRejected,
    detect_dialect,
    normalize_header,
    output_schema,
    read_csv_batches,
)

INVOICE_COLUMNS = [
    "invoice_number",
    "customer_code",
    "invoice_date",
    "due_date",
    "currency",
    "amount_net",
    "amount_tax",
    "amount_gross",
    "status",
]
HEADER = ",".join(INVOICE_COLUMNS)


def invoice_line(i: int) -> str:
    return f"BIL-{i:07d},C{i % 500:05d},2026-11-25,2026-12-25,EUR,100.00,19.00,119.00,open"


def read_all(path: Path, columns: list[str] = INVOICE_COLUMNS, **kwargs: object) -> list[CsvChunk]:
    return list(
        read_csv_batches(
            path,
            columns=columns,
            source_file=path.name,
            source="billing_sftp",
            dataset="invoices",
            **kwargs,  # type: ignore[arg-type]
        )
    )


def rows_of(chunks: list[CsvChunk]) -> pa.Table:
    return pa.Table.from_batches([c.rows for c in chunks])


def quarantine_of(chunks: list[CsvChunk]) -> list[dict[str, str]]:
    return [q for c in chunks for q in c.quarantine]


def test_header_is_normalised_and_columns_come_in_declared_order(tmp_path: Path) -> None:
    path = tmp_path / "invoices_2026-11-25.csv"
    # BOM, padding, capitals, dashes and spaces; an extra column; columns in another order.
    path.write_bytes(
        "\ufeff Status ,Invoice-Number,customer code,Extra,invoice_date,due_date,currency,"
        "amount_net,amount_tax,Amount Gross\r\n"
        "open,BIL-1,C1,x,2026-11-25,2026-12-25,EUR,100.00,19.00,119.00\r\n".encode()
    )
    chunks = read_all(path, columns=["Invoice Number", *INVOICE_COLUMNS[1:]])
    table = rows_of(chunks)
    assert table.schema == output_schema(INVOICE_COLUMNS)
    assert table.column_names == [*INVOICE_COLUMNS, "_source_file", "_source_line"]
    assert table.to_pylist() == [
        {
            "invoice_number": "BIL-1",
            "customer_code": "C1",
            "invoice_date": "2026-11-25",
            "due_date": "2026-12-25",
            "currency": "EUR",
            "amount_net": "100.00",
            "amount_tax": "19.00",
            "amount_gross": "119.00",
            "status": "open",
            "_source_file": "invoices_2026-11-25.csv",
            "_source_line": 2,
        }
    ]
    assert quarantine_of(chunks) == []
    assert normalize_header("\ufeff  Due -  Date ") == "due_date"


def test_wrong_field_count_is_quarantined_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "invoices.csv"
    lines = [HEADER] + [invoice_line(i) for i in range(1, 30)]
    lines[16] = "BIL-X,C1,2026-11-25,2026-12-25,EUR,100.00,19.00,119.00"  # line 17: one field short
    lines[20] = invoice_line(20) + ",surplus"  # line 21: one field too many
    path.write_text("\n".join(lines) + "\n")

    chunks = read_all(path)
    table = rows_of(chunks)
    assert table.num_rows == 27
    assert "BIL-X" not in table.column("invoice_number").to_pylist()
    # Every good row keeps its own line number: line n holds invoice n - 1.
    for number, line in zip(
        table.column("invoice_number").to_pylist(), table.column("_source_line").to_pylist(), strict=True
    ):
        assert number == f"BIL-{line - 1:07d}"

    quarantine = quarantine_of(chunks)
    assert quarantine == [
        {
            "source": "billing_sftp",
            "entity": "invoices",
            "record_id": "invoices.csv:17",
            "record": "BIL-X,C1,2026-11-25,2026-12-25,EUR,100.00,19.00,119.00",
            "rule": "field_count",
            "reason": "line 17: expected 9 fields, found 8",
        },
        {
            "source": "billing_sftp",
            "entity": "invoices",
            "record_id": "invoices.csv:21",
            "record": invoice_line(20) + ",surplus",
            "rule": "field_count",
            "reason": "line 21: expected 9 fields, found 10",
        },
    ]
    # The entries fit the quarantine table as they are.
    assert pa.Table.from_pylist(quarantine, schema=QUARANTINE).num_rows == 2


def test_quoted_fields_with_commas_and_line_breaks_keep_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_bytes(
        b"code,name,note\r\n"  # 1
        b'C1,"Acme, Inc.",plain\r\n'  # 2
        b'C2,"Two\r\nline name","and ""quotes"""\r\n'  # 3-4
        b"\r\n"  # 5: blank line, skipped
        b'C3,broken,"three\nline\nnote",extra\r\n'  # 6-8: four fields, quarantined
        b'C4,"lone\rreturn",x\r\n'  # 9-10: a lone CR inside a value is a line break too
        b"C5,last,row"  # 11: no final newline
    )
    chunks = read_all(path, columns=["code", "name", "note"])
    rows = rows_of(chunks).to_pylist()
    assert [(r["code"], r["name"], r["note"], r["_source_line"]) for r in rows] == [
        ("C1", "Acme, Inc.", "plain", 2),
        ("C2", "Two\r\nline name", 'and "quotes"', 3),
        ("C4", "lone\rreturn", "x", 9),
        ("C5", "last", "row", 11),
    ]
    [bad] = quarantine_of(chunks)
    assert bad["record_id"] == "customers.csv:6"
    assert bad["record"] == 'C3,broken,"three\nline\nnote",extra'
    assert bad["reason"] == "line 6: expected 3 fields, found 4"


def test_undecodable_bytes_quarantine_the_row(tmp_path: Path) -> None:
    path = tmp_path / "payments.csv"
    path.write_bytes(
        b"payment_reference,invoice_number,payment_date,amount,currency,method\n"
        b"P-1,BIL-1,2026-11-25,10.00,EUR,card\n"
        b"P-2,BIL-\xff2,2026-11-25,10.00,EUR,card\n"
        b"P-3,BIL-3,2026-11-25,10.00,EUR,cheque,\xfe\n"
        b"P-4,BIL-4,2026-11-25,10.00,EUR,card\n"
    )
    columns = ["payment_reference", "invoice_number", "payment_date", "amount", "currency", "method"]
    chunks = read_all(path, columns=columns)
    table = rows_of(chunks)
    assert table.column("payment_reference").to_pylist() == ["P-1", "P-4"]
    assert table.column("_source_line").to_pylist() == [2, 5]
    quarantine = {q["record_id"]: q for q in quarantine_of(chunks)}
    assert quarantine["payments.csv:3"]["rule"] == "encoding"
    assert quarantine["payments.csv:3"]["record"].startswith("P-2,BIL-\ufffd2,")
    assert quarantine["payments.csv:3"]["reason"].startswith("line 3: ")
    assert quarantine["payments.csv:4"]["rule"] == "field_count"


def test_other_encodings_and_delimiters(tmp_path: Path) -> None:
    path = tmp_path / "kunden.csv"
    path.write_bytes("Kundennummer;Firma\nK1;Müller GmbH\nK2;Société Générale\n".encode("cp1252"))
    chunks = read_all(path, columns=["kundennummer", "firma"], delimiter=";", encoding="cp1252")
    assert rows_of(chunks).column("firma").to_pylist() == ["Müller GmbH", "Société Générale"]


def test_missing_column_rejects_the_file(tmp_path: Path) -> None:
    path = tmp_path / "invoices_2026-11-25.csv"
    path.write_text("invoice_number,customer_code,status\nBIL-1,C1,open\n")
    with pytest.raises(FileRejected) as err:
        read_all(path)
    message = str(err.value)
    assert "invoices_2026-11-25.csv" in message
    assert "invoice_date" in message
    assert "amount_gross" in message
    assert err.value.reason == message


def test_duplicated_required_column_rejects_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("code,Code,name\nA,B,C\n")
    with pytest.raises(FileRejected, match="code"):
        read_all(path, columns=["code", "name"])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"\xef\xbb\xbf", "empty"),
        (HEADER.encode(), "no data rows"),
        (HEADER.encode() + b"\n", "no data rows"),
        (HEADER.encode() + b"\r\n\r\n\n", "no data rows"),
    ],
)
def test_file_without_data_rows_is_rejected(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "invoices_empty.csv"
    path.write_bytes(content)
    with pytest.raises(FileRejected, match=expected) as err:
        read_all(path)
    assert "invoices_empty.csv" in str(err.value)


def test_a_file_of_only_bad_rows_yields_their_quarantine(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "\n" + "only,three,fields\n" * 5)
    chunks = read_all(path)
    assert rows_of(chunks).num_rows == 0
    assert [q["record_id"] for q in quarantine_of(chunks)] == [f"bad.csv:{n}" for n in range(2, 7)]


def test_large_file_streams_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "invoices_big.csv"
    bad_lines = {50_000, 150_001}
    with path.open("w") as fh:
        fh.write(HEADER + "\n")
        for line in range(2, 200_002):
            if line in bad_lines:
                fh.write("BIL-BAD,short\n")
            else:
                fh.write(invoice_line(line - 1) + "\n")

    chunks = read_all(path, batch_rows=50_000)
    sizes = [c.rows.num_rows for c in chunks]
    assert len(chunks) >= 4
    assert all(size <= 50_000 for size in sizes)
    assert sum(sizes) == 200_000 - len(bad_lines)
    assert sorted(q["record_id"] for q in quarantine_of(chunks)) == [
        "invoices_big.csv:150001",
        "invoices_big.csv:50000",
    ]
    table = rows_of(chunks)
    lines = table.column("_source_line").to_pylist()
    assert lines == [n for n in range(2, 200_002) if n not in bad_lines]
    assert table.column("invoice_number")[-1].as_py() == invoice_line(200_000).split(",")[0]


def test_an_unclosed_quote_quarantines_its_line_and_every_line_after_it_is_accounted_for(
    tmp_path: Path,
) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(
        "code,name\n"
        'C1,"27"" monitor"\n'  # 2: escaped quotes, balanced
        'C2,"never closed\n'  # 3: would swallow the rest of the file
        "C3,three\n"
        "\n"  # 5: blank
        "C4,four,extra\n"  # 6: a field too many, on its own line
        "C5,five\n"
    )
    chunks = read_all(path, columns=["code", "name"])
    rows = rows_of(chunks)
    assert list(
        zip(rows.column("code").to_pylist(), rows.column("_source_line").to_pylist(), strict=True)
    ) == [
        ("C1", 2),
        ("C3", 4),
        ("C5", 7),
    ]
    assert [(q["record_id"], q["rule"], q["record"]) for q in quarantine_of(chunks)] == [
        ("customers.csv:3", "unclosed_quote", 'C2,"never closed'),
        ("customers.csv:6", "field_count", "C4,four,extra"),
    ]

    # A stray quote inside an unquoted field on a one-line row is data, not a broken file.
    path.write_text('code,name\nC1,27" monitor\nC2,plain\n')
    chunks = read_all(path, columns=["code", "name"])
    assert rows_of(chunks).column("name").to_pylist() == ['27" monitor', "plain"]
    assert quarantine_of(chunks) == []


def test_binary_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "invoices_2026-11-25.csv"
    path.write_bytes(b"\x00\x01" * (700 * 1024))
    with pytest.raises(FileRejected, match=r"invoices_2026-11-25\.csv: no header row"):
        read_all(path)


@pytest.mark.parametrize(
    ("raw", "encoding", "delimiter"),
    [
        pytest.param("\ufeffKunde;Firma\nK-1;Müller\n".encode(), "utf-8", ";", id="utf8-bom-semicolon"),
        pytest.param("kunde\tfirma\nK-1\tMüller\n".encode(), "utf-8", "\t", id="utf8-tab"),
        pytest.param("kunde|firma\nK-1|Müller €\n".encode("cp1252"), "cp1252", "|", id="cp1252-pipe"),
        pytest.param(b'"a;b",c\n"1;2",3\n', "utf-8", ",", id="delimiter-inside-quotes-ignored"),
        # UTF-8 damaged in one place stays UTF-8 (the damaged row is quarantined, the rest reads right)...
        pytest.param(
            "kunde;firma\nK-1;Müller München\nK-2;Köln\n".encode() + b"K-3;Bad \xff byte\n",
            "utf-8",
            ";",
            id="utf8-one-bad-byte",
        ),
        # ...while text with no well-formed multi-byte character is cp1252.
        pytest.param(
            "kunde;firma\nK-1;Müller München\nK-2;Köln\n".encode("cp1252"), "cp1252", ";", id="cp1252-umlauts"
        ),
    ],
)
def test_encoding_and_delimiter_are_detected(
    tmp_path: Path, raw: bytes, encoding: str, delimiter: str
) -> None:
    path = tmp_path / "drop.csv"
    path.write_bytes(raw)
    dialect = detect_dialect(path)
    assert (dialect.encoding, dialect.delimiter) == (encoding, delimiter)
    if delimiter != ",":
        rows = [
            r
            for chunk in read_csv_batches(
                path,
                columns=["Kunde", "Firma"],
                source_file="drop.csv",
                source="s",
                dataset="d",
                encoding=dialect.encoding,
                delimiter=dialect.delimiter,
            )
            for r in chunk.rows.to_pylist()
        ]
        # Header names normalised ("Kunde" -> "kunde"), text decoded without replacement characters.
        assert rows[0]["kunde"] == "K-1"
        assert rows[0]["firma"].startswith("Müller")


def test_a_utf8_file_with_one_bad_byte_keeps_its_text_and_quarantines_that_row(tmp_path: Path) -> None:
    path = tmp_path / "drop.csv"
    path.write_bytes("kunde;firma\nK-1;München\n".encode() + b"K-2;Bad \xff byte\n" + "K-3;Köln\n".encode())
    dialect = detect_dialect(path)
    chunks = read_all(
        path, columns=["kunde", "firma"], encoding=dialect.encoding, delimiter=dialect.delimiter
    )
    rows = [(r["kunde"], r["firma"]) for c in chunks for r in c.rows.to_pylist()]
    assert rows == [("K-1", "München"), ("K-3", "Köln")]  # never "MÃ¼nchen"
    assert [(q["rule"], q["record"]) for c in chunks for q in c.quarantine] == [
        ("encoding", "K-2;Bad \ufffd byte")
    ]


def test_undeclared_columns_are_reported_as_drift_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "invoices_2026-11-25.csv"
    path.write_text(f"{HEADER},PO Number,\n{invoice_line(1)},PO-7,\n")
    drift = DriftReport()
    chunks = read_all(path, drift=drift)
    assert drift.new_columns == ["po_number", "(unnamed column 11)"]
    assert rows_of(chunks).column_names == [*INVOICE_COLUMNS, "_source_file", "_source_line"]
    # A renamed column is missing (the file is rejected) and new: the report shows both.
    path.write_text(HEADER.replace("amount_gross", "gross") + "\n" + invoice_line(1) + "\n")
    drift = DriftReport()
    with pytest.raises(FileRejected, match="missing required column"):
        read_all(path, drift=drift)
    assert drift.new_columns == ["gross"]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_row_of_delimiters_and_a_repeated_header_are_quarantined_by_line(
    tmp_path: Path, newline: str
) -> None:
    path = tmp_path / "invoices_2026-11-25.csv"
    lines = [
        HEADER,  # 1
        invoice_line(1),  # 2
        ",,,,,,,,",  # 3: every value lost
        "",  # 4: a blank line, skipped
        HEADER,  # 5: a second file's header
        invoice_line(2),  # 6
        '"a quoted value spanning',  # 7
        ',,,,,,,,",C1,2026-11-25,2026-12-25,EUR,1.00,0.19,1.19,open',  # 8: inside the quotes, not a row
        invoice_line(3),  # 9
    ]
    path.write_bytes(newline.join([*lines, ""]).encode())
    chunks = read_all(path, batch_rows=2)
    assert rows_of(chunks).column("invoice_number").to_pylist() == [
        "BIL-0000001",
        "BIL-0000002",
        "a quoted value spanning\n,,,,,,,,".replace("\n", newline),
        "BIL-0000003",
    ]
    assert [(q["record_id"], q["rule"]) for q in quarantine_of(chunks)] == [
        (f"{path.name}:3", "empty_row"),
        (f"{path.name}:5", "repeated_header"),
    ]


def test_a_file_with_two_hundred_thousand_columns_is_rejected_before_it_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "invoices_2026-11-25.csv"
    wide = ",".join(["invoice_number", *(f"c{i}" for i in range(200_000))])
    path.write_text(wide + "\n" + ",".join(["BIL-1"] + [""] * 200_000) + "\n")
    with pytest.raises(FileRejected, match="the header has 200,001 columns; more than 4,096"):
        read_all(path, columns=["invoice_number"])
