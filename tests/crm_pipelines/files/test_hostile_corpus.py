"""A generated corpus of hostile and careless file drops, landed one by one through ``land_file``.

Every file is built in ``tmp_path`` by a small generator from a known-good base (the finance drop's
invoices CSV with :data:`N` good rows, its payments XML with :data:`N` good records, the same
invoices as JSON Lines or a JSON document, a bank's fixed-width export), changed the way an attacker or a careless partner
changes it: encodings and BOMs, line endings, binary files under a ``.csv`` name, NUL bytes, wide,
narrow and over-long rows, header drift, quoting accidents, spreadsheet formula injection, odd
numbers and dates, spoofing Unicode, duplicates, archives (nested, traversing, linked, truncated,
bombs), XML entity attacks (XXE, billion laughs), malformed XML and JSON, and values that do not
survive the trip to Arrow (lone surrogates, numbers longer than Python converts).

How a case is judged: landing never raises; the file ends in exactly one outcome, the one the case
declares (``loaded``: every row landed; ``partly_quarantined``: some lines quarantined, the rest
landed; ``rejected``: nothing landed, a non-empty reason, which becomes the ``.error.txt``); and no
line goes missing: landed plus quarantined equals the data lines the generator wrote (blank lines and
the extra physical lines of a quoted multi-line value excepted, as each case says). Every quarantine
row carries a rule and a reason, and nothing landed or quarantined ever holds the content of a local
file the document tried to reference (XXE). Each file lands in bounded time, and good files landed
before and after each hostile CSV into the same day's folders land in full.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import random
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
import pytest

from crm_pipelines.files.landing import Manifest, land_file, version_name
from crm_pipelines.sources import Dataset, load_sources

Outcome = Literal["loaded", "partly_quarantined", "rejected"]

N = 5  # good rows in the base files
DAY = "2026-11-25"
# The shipped finance drop, as declared: the corpus tests what partners' files meet.
FINANCE = load_sources()["finance_sftp"].datasets
COLUMNS = list(FINANCE["invoices"].columns)
PAYMENT_COLUMNS = list(FINANCE["payments"].columns)

DROPS: dict[str, Dataset] = {
    "invoices": FINANCE["invoices"],
    "payments": FINANCE["payments"],
    "invoices_jsonl": Dataset(pattern="invoices_{date}.jsonl", format="jsonl", columns=COLUMNS),
    "invoices_json": Dataset(
        pattern="invoices_{date}.json", format="json", records_path="data.invoices", columns=COLUMNS
    ),
}
FW_LAYOUT = {
    "header_lines": 2,
    "header_names": True,
    "fields": [
        {"name": "payment_reference", "start": 1, "width": 12, "header": "REFERENCE"},
        {"name": "amount", "start": 13, "width": 10},
        {"name": "currency", "start": 23, "width": 3, "header": "CUR"},
    ],
}
DROPS["bank_fixed"] = Dataset(pattern="bank_{date}.txt", format="fixed_width", layout=FW_LAYOUT)  # type: ignore[arg-type]
FILE_NAMES = {
    "bank_fixed": f"bank_{DAY}.txt",
    "invoices": f"invoices_{DAY}.csv",
    "payments": f"payments_{DAY}.xml",
    "invoices_jsonl": f"invoices_{DAY}.jsonl",
    "invoices_json": f"invoices_{DAY}.json",
}


def _passwd_marker() -> str:
    """The first line of the local /etc/passwd (what an XXE would leak), or its usual start."""
    try:
        first = Path("/etc/passwd").read_text().splitlines()[0]
    except (OSError, IndexError):
        return "root:x:0:0"
    return first or "root:x:0:0"


PASSWD = _passwd_marker()


# --- the good bases -----------------------------------------------------------------------------


def invoice(i: int) -> list[str]:
    """One good invoice row."""
    return [
        f"BIL-{i:07d}",
        f"C{i % 500:05d}",
        "2026-11-25",
        "2026-12-25",
        "EUR",
        "100.00",
        "19.00",
        "119.00",
        "open",
    ]


def rows(n: int = N, start: int = 1) -> list[list[str]]:
    return [invoice(i) for i in range(start, start + n)]


def csv_text(
    body: Sequence[Sequence[str] | str],
    *,
    header: Sequence[str] = COLUMNS,
    sep: str = ",",
    eol: str = "\n",
    final_eol: bool = True,
) -> str:
    """A CSV document: the header, then each row (a list of fields, or a line given verbatim)."""
    lines = [sep.join(header)] + [r if isinstance(r, str) else sep.join(r) for r in body]
    return eol.join(lines) + (eol if final_eol else "")


def good_csv(n: int = N, **kwargs: Any) -> bytes:
    return csv_text(rows(n), **kwargs).encode()


def with_row(i: int, position: int, value: str) -> list[str]:
    """Invoice ``i`` with field ``position`` replaced by ``value``."""
    out = invoice(i)
    out[position] = value
    return out


def payment(i: int, **override: str) -> str:
    fields = {
        "PaymentReference": f"PAY-{i:06d}",
        "InvoiceNumber": f"BIL-{i:07d}",
        "PaymentDate": "2026-11-25",
        "Amount": "119.00",
        "Currency": "EUR",
        "Method": "sepa",
    }
    fields.update(override)
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items() if v != "<omit>")
    return f"  <Payment>{inner}</Payment>\n"


def payments_xml(
    body: str | None = None,
    *,
    prolog: str = '<?xml version="1.0" encoding="UTF-8"?>\n',
    root: str = "Payments",
) -> str:
    records = body if body is not None else "".join(payment(i) for i in range(1, N + 1))
    return f"{prolog}<{root}>\n{records}</{root}>\n"


def jsonl(records: Sequence[dict[str, Any] | str]) -> bytes:
    return (
        "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records) + "\n"
    ).encode()


def invoice_obj(i: int) -> dict[str, Any]:
    return dict(zip(COLUMNS, invoice(i), strict=True))


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zipped(members: Sequence[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def symlink_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix: the mode bits in external_attr are honoured by unzip
    info.external_attr = (0o120777 << 16) & 0xFFFF0000
    return info


def noise(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def zeros_gz(mib: int) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as fh:
        block = b"0" * (1024 * 1024)
        for _ in range(mib):
            fh.write(block)
    return out.getvalue()


# --- the corpus ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile file and what must become of it.

    Attributes:
        kind: The class of hostility (several files may share one).
        variant: What this file does within its kind (the test id is ``kind-variant``).
        content: Builds the file's bytes.
        outcome: ``loaded``, ``partly_quarantined`` or ``rejected``.
        lines: Data lines the file holds, counted by hand for the case: landed + quarantined must equal
            it (ignored when rejected).
        quarantined: Exact quarantined lines; None: at least one (``partly_quarantined``) or none.
        reason: Regex the rejection reason must match.
        drop: Key of :data:`DROPS`.
        limits: Overrides of the drop's declaration (tighter bomb limits).
        check: Extra assertions on the landed rows (column -> values).
    """

    kind: str
    variant: str
    content: Callable[[], bytes]
    outcome: Outcome
    lines: int = N
    quarantined: int | None = None
    reason: str = ""
    drop: str = "invoices"
    limits: dict[str, Any] = field(default_factory=dict)
    check: Callable[[dict[str, list[Any]]], None] | None = None
    marks: tuple[pytest.MarkDecorator, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.variant}"


def loaded(kind: str, variant: str, content: Callable[[], bytes], lines: int = N, **kw: Any) -> Case:
    return Case(kind, variant, content, "loaded", lines=lines, quarantined=0, **kw)


def partly(
    kind: str, variant: str, content: Callable[[], bytes], lines: int, quarantined: int | None, **kw: Any
) -> Case:
    return Case(kind, variant, content, "partly_quarantined", lines=lines, quarantined=quarantined, **kw)


def rejected(kind: str, variant: str, content: Callable[[], bytes], reason: str = "", **kw: Any) -> Case:
    return Case(kind, variant, content, "rejected", lines=0, reason=reason, **kw)


def values_are(column: str, expected: list[str]) -> Callable[[dict[str, list[Any]]], None]:
    def check(landed: dict[str, list[Any]]) -> None:
        assert landed[column] == expected

    return check


FORMULAS = ["=CMD|' /C calc'!A0", "+1+1", "-2+3", "@SUM(1+1)*cmd|' /C calc'!A0", '=HYPERLINK("http://x")']
SPOOFED = [
    "BIL-\u202e0000001",  # right-to-left override
    "BIL-\u200b0000002",  # zero-width space
    "BIL-\ufeff0000003",  # a BOM inside a value
    "BIL-\u0412\u0406\u041b",  # Cyrillic look-alikes of "BIL"
    "BIL-\U0001f4b80000005",  # emoji
]
NUMBERS = ["1e308", "-0", "NaN", "-Infinity", "99999999999999999999999999999999999999.99"]
DATES = ["2026-02-30", "0000-00-00", "31/12/2026", "9999-99-99", "2026-11-25T25:61:61Z"]
XINCLUDE = '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" parse="text"/>'
BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE Payments [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n' for i in range(1, 10)
    )
    + "]>\n<Payments><Payment><PaymentReference>&lol9;</PaymentReference></Payment></Payments>\n"
)


def csv_cases() -> list[Case]:
    header = ",".join(COLUMNS)
    return [
        loaded("baseline", "good", good_csv),
        # Encodings a partner's export tool picks.
        loaded("bom", "utf8", lambda: b"\xef\xbb\xbf" + good_csv()),
        loaded("utf16", "le-bom", lambda: csv_text(rows()).encode("utf-16")),
        loaded("utf16", "be-bom", lambda: b"\xfe\xff" + csv_text(rows()).encode("utf-16-be")),
        loaded("utf16", "le-no-bom", lambda: csv_text(rows()).encode("utf-16-le")),
        loaded("utf16", "be-no-bom", lambda: csv_text(rows()).encode("utf-16-be")),
        loaded("utf32", "bom", lambda: csv_text(rows()).encode("utf-32")),
        loaded(
            "legacy_encoding",
            "cp1252",
            lambda: csv_text([with_row(1, 8, "offen \u2013 \u20ac"), *rows(N - 1, 2)]).encode("cp1252"),
            check=lambda landed: (
                landed["status"][0] == "offen \u2013 \u20ac" or pytest.fail(str(landed["status"]))
            ),
        ),
        loaded(
            "legacy_encoding",
            "latin1",
            lambda: csv_text([with_row(1, 1, "Müller"), *rows(N - 1, 2)]).encode("latin-1"),
            check=lambda landed: landed["customer_code"][0] == "Müller" or pytest.fail("mojibake"),
        ),
        # Line endings.
        loaded("line_endings", "crlf", lambda: good_csv(eol="\r\n")),
        loaded("line_endings", "cr-only", lambda: good_csv(eol="\r")),
        loaded(
            "line_endings",
            "mixed",
            lambda: (
                header
                + "\r\n"
                + "\n".join(",".join(r) for r in rows(2))
                + "\r"
                + csv_text(rows(3, 3), header=[])[1:]
            ).encode(),
        ),
        loaded("no_trailing_newline", "lf", lambda: good_csv(final_eol=False)),
        loaded("trailing_blank_lines", "lf", lambda: good_csv() + b"\n\n\n"),
        loaded("trailing_blank_lines", "whitespace", lambda: good_csv() + b"   \n\t\n"),
        # Nothing to load.
        rejected("header_only", "plain", lambda: (header + "\n").encode(), "no data rows"),
        rejected("header_only", "bom", lambda: ("\ufeff" + header).encode(), "no data rows"),
        rejected("empty", "zero-bytes", lambda: b"", "empty"),
        rejected("empty", "bom-only", lambda: b"\xef\xbb\xbf", "empty"),
        rejected("whitespace_only", "100k-newlines", lambda: b"\n" * 100_000, "empty"),
        rejected("whitespace_only", "spaces-and-newlines", lambda: b"  \n\n\t \r\n"),
        # Not text at all.
        rejected("binary", "random", lambda: noise(64 * 1024, 1)),
        rejected("binary", "png", lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + noise(4096, 2)),
        rejected(
            "binary",
            "pdf",
            lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\n" + noise(4096, 3),
        ),
        rejected("binary", "elf", lambda: b"\x7fELF\x02\x01\x01\x00" + noise(4096, 4)),
        rejected(
            "binary",
            "xlsx",
            lambda: zipped([("xl/workbook.xml", b"<workbook/>"), ("[Content_Types].xml", b"<x/>")]),
        ),
        rejected("binary", "bzip2", lambda: bz2.compress(good_csv())),
        rejected("binary", "xz", lambda: lzma.compress(good_csv())),
        rejected("nul_only", "4k", lambda: b"\x00" * 4096),
        partly(
            "nul_in_field",
            "one-row",
            lambda: csv_text([*rows(2), with_row(3, 0, "BIL-\x000000003"), *rows(2, 4)]).encode(),
            lines=N,
            quarantined=1,
        ),
        partly(
            "nul_block",
            "3mb-mid-file",
            lambda: good_csv(2) + b"\x00" * 3_000_000 + b"\n" + csv_text(rows(3, 3), header=[])[1:].encode(),
            N + 1,
            1,
        ),
        partly(
            "nul_padding",
            "crashed-writer",
            lambda: good_csv() + b"\x00" * 8192,
            lines=N + 1,
            quarantined=1,
        ),
        # Size and shape.
        partly(
            "long_line",
            "5mb-field",
            lambda: csv_text([*rows(2), with_row(3, 8, "x" * (5 * 1024 * 1024)), *rows(2, 4)]).encode(),
            N,
            1,
        ),
        partly(
            "long_line",
            "5mb-field-mid-big-file",
            lambda: csv_text(
                [*rows(20_000), with_row(0, 8, "x" * (5 * 1024 * 1024)), *rows(20_000, 20_001)]
            ).encode(),
            40_001,
            1,
        ),
        partly(
            "long_line",
            "20mb-no-line-break",
            lambda: (
                good_csv(3) + b"y" * (20 * 1024 * 1024) + b"\n" + csv_text(rows(2, 4), header=[])[1:].encode()
            ),
            N + 1,
            1,
        ),
        partly(
            "unclosed_quote",
            "big-file",
            lambda: csv_text([*rows(2), with_row(3, 8, '"never closed'), *rows(30_000, 4)]).encode(),
            30_003,
            1,
        ),
        partly(
            "unclosed_quote",
            "big-file-with-later-problems",
            lambda: csv_text(
                [
                    *rows(20_000),
                    with_row(0, 8, '"never'),
                    *rows(20_000, 20_001),
                    invoice(1)[:3],
                    ",,,,,,,,",
                    COLUMNS,
                    "",
                ]
            ).encode(),
            40_004,
            4,
        ),
        rejected(
            "many_columns",
            "5000",
            lambda: csv_text(rows(), header=COLUMNS + [f"x{i}" for i in range(4991)]).encode(),
            "columns",
        ),
        loaded(
            "wide_file",
            "4000-columns",
            lambda: csv_text(
                [r + [""] * 3991 for r in rows()], header=COLUMNS + [f"extra_{i}" for i in range(3991)]
            ).encode(),
        ),
        partly(
            "fewer_columns",
            "two-short-rows",
            lambda: csv_text([*rows(3), invoice(4)[:8], invoice(5)[:1]]).encode(),
            N,
            2,
        ),
        partly(
            "more_columns",
            "two-long-rows",
            lambda: csv_text([*rows(3), [*invoice(4), "x"], [*invoice(5), "", ""]]).encode(),
            N,
            2,
        ),
        partly("fewer_columns", "all-short", lambda: csv_text([r[:4] for r in rows()]).encode(), N, N),
        # Header drift.
        rejected(
            "duplicated_header",
            "declared-twice",
            lambda: csv_text([[*r, "X"] for r in rows()], header=[*COLUMNS, "amount_net"]).encode(),
            "more than once",
        ),
        loaded(
            "duplicated_header",
            "undeclared-twice",
            lambda: csv_text([[*r, "a", "b"] for r in rows()], header=[*COLUMNS, "note", "note"]).encode(),
        ),
        loaded(
            "header_spelling",
            "case-spaces-dashes",
            lambda: csv_text(
                rows(),
                header=[
                    " Invoice Number ",
                    "CUSTOMER-CODE",
                    "invoiceDate",
                    "Due_Date",
                    "currency ",
                    "Amount Net",
                    "amount-tax",
                    "AmountGross",
                    "STATUS",
                ],
            ).encode(),
        ),
        loaded(
            "header_order",
            "reversed",
            lambda: csv_text([r[::-1] for r in rows()], header=COLUMNS[::-1]).encode(),
            check=values_are("invoice_number", [f"BIL-{i:07d}" for i in range(1, N + 1)]),
        ),
        rejected(
            "missing_column",
            "status",
            lambda: csv_text([r[:8] for r in rows()], header=COLUMNS[:8]).encode(),
            "missing required column",
        ),
        rejected(
            "missing_column",
            "renamed",
            lambda: csv_text(rows(), header=["inv_no", *COLUMNS[1:]]).encode(),
            "missing required column",
        ),
        rejected(
            "missing_column",
            "empty-header-name",
            lambda: csv_text(rows(), header=["", *COLUMNS[1:]]).encode(),
            "missing required column",
        ),
        loaded(
            "schema_drift",
            "extra-column",
            lambda: csv_text([[*r, "note"] for r in rows()], header=[*COLUMNS, "comment"]).encode(),
        ),
        # Quoting.
        loaded(
            "embedded_newline",
            "quoted",
            lambda: csv_text([*rows(2), with_row(3, 8, '"open\nsee note\r\nmore"'), *rows(2, 4)]).encode(),
            check=lambda landed: (
                landed["status"][2] == "open\nsee note\r\nmore" or pytest.fail(repr(landed["status"][2]))
            ),
        ),
        loaded(
            "embedded_delimiter",
            "quoted",
            lambda: csv_text([*rows(2), with_row(3, 1, '"C,0003"'), *rows(2, 4)]).encode(),
            check=lambda landed: landed["customer_code"][2] == "C,0003" or pytest.fail("split"),
        ),
        loaded(
            "escaped_quote",
            "doubled",
            lambda: csv_text([*rows(2), with_row(3, 8, '"27"" monitor"'), *rows(2, 4)]).encode(),
            check=lambda landed: landed["status"][2] == '27" monitor' or pytest.fail("quote"),
        ),
        partly(
            "unclosed_quote",
            "mid-file",
            lambda: csv_text([*rows(2), with_row(3, 8, '"never closed'), *rows(2, 4)]).encode(),
            N,
            1,
        ),
        partly(
            "unclosed_quote",
            "before-quoted-field",
            lambda: csv_text(
                [*rows(2), with_row(3, 8, '"never closed'), *rows(1, 4), with_row(5, 8, '"closed"')]
            ).encode(),
            N,
            None,  # at least the broken line; every line still accounted
        ),
        loaded(
            "stray_quote",
            "in-unquoted-field",
            lambda: csv_text([*rows(2), with_row(3, 8, '27" monitor'), *rows(2, 4)]).encode(),
        ),
        # Delimiters.
        loaded("delimiter", "semicolon", lambda: good_csv(sep=";")),
        loaded("delimiter", "tab", lambda: good_csv(sep="\t")),
        loaded("delimiter", "pipe", lambda: good_csv(sep="|")),
        loaded(
            "decimal_comma",
            "semicolon-file",
            lambda: csv_text([with_row(i, 5, "100,00") for i in range(1, N + 1)], sep=";").encode(),
        ),
        loaded(
            "decimal_comma",
            "quoted",
            lambda: csv_text([with_row(i, 5, '"100,00"') for i in range(1, N + 1)]).encode(),
        ),
        partly(
            "decimal_comma",
            "unquoted",
            lambda: csv_text([*rows(3), with_row(4, 5, "100,00"), with_row(5, 6, "19,00")]).encode(),
            N,
            2,
        ),
        # Values a spreadsheet or a cast would trip over: kept as written, never evaluated.
        loaded(
            "formula_injection",
            "excel",
            lambda: csv_text(
                [with_row(i, 8, '"' + f.replace('"', '""') + '"') for i, f in enumerate(FORMULAS, 1)]
            ).encode(),
            check=values_are("status", FORMULAS),
        ),
        loaded(
            "numbers",
            "huge-nan-inf",
            lambda: csv_text([with_row(i, 7, v) for i, v in enumerate(NUMBERS, 1)]).encode(),
            check=values_are("amount_gross", NUMBERS),
        ),
        loaded(
            "dates",
            "impossible",
            lambda: csv_text([with_row(i, 2, v) for i, v in enumerate(DATES, 1)]).encode(),
            check=values_are("invoice_date", DATES),
        ),
        loaded(
            "unicode_spoofing",
            "rtl-zero-width-homoglyph-emoji",
            lambda: csv_text([with_row(i, 0, v) for i, v in enumerate(SPOOFED, 1)]).encode(),
            check=values_are("invoice_number", SPOOFED),
        ),
        loaded(
            "control_characters",
            "bell-escape",
            lambda: csv_text([*rows(2), with_row(3, 8, "open\x07\x1b[31m"), *rows(2, 4)]).encode(),
        ),
        rejected("excel_sep_hint", "sep-line", lambda: b"sep=,\n" + good_csv(), "missing required column"),
        rejected(
            "html_error_page",
            "proxy-login",
            lambda: b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>\n",
            "missing required column",
        ),
        loaded(
            "trailing_delimiter",
            "header-and-rows",
            lambda: csv_text([[*r, ""] for r in rows()], header=[*COLUMNS, ""]).encode(),
        ),
        partly(
            "trailing_delimiter",
            "rows-only",
            lambda: csv_text([*rows(3), [*invoice(4), ""], [*invoice(5), ""]]).encode(),
            N,
            2,
        ),
        partly("dos_eof_marker", "ctrl-z", lambda: good_csv() + b"\x1a", N + 1, 1),
        partly(
            "invalid_utf8",
            "overlong-and-stray-continuation",
            lambda: (
                good_csv(3)
                + "BIL-4,Müller München Köln,".encode()
                + b"\xc0\xaf,2026-12-25,EUR,1,1,1,open\n"
                + csv_text(rows(1, 5), header=[])[1:].encode()
            ),
            N,
            1,
        ),
        loaded(
            "quoted_header",
            "every-name",
            lambda: csv_text(rows(), header=[f'"{c}"' for c in COLUMNS]).encode(),
        ),
        loaded(
            "unicode_line_separators",
            "u2028-nel-ff-vt",
            lambda: csv_text(
                [
                    with_row(i, 8, v)
                    for i, v in enumerate(["a\u2028b", "a\u0085b", "a\x0cb", "a\x0bb", "a\u2029b"], 1)
                ]
            ).encode(),
            check=values_are("status", ["a\u2028b", "a\u0085b", "a\x0cb", "a\x0bb", "a\u2029b"]),
        ),
        loaded(
            "long_header_name",
            "100k-chars",
            lambda: csv_text([[*r, "x"] for r in rows()], header=[*COLUMNS, "n" * 100_000]).encode(),
        ),
        # Repetition.
        loaded(
            "duplicates", "10000-identical", lambda: csv_text([invoice(1)] * 10_000).encode(), lines=10_000
        ),
        partly(
            "repeated_header",
            "mid-file",
            lambda: csv_text([*rows(2), header, *rows(3, 3)]).encode(),
            N + 1,
            1,
        ),
        partly(
            "repeated_header",
            "concatenated-with-bom",
            lambda: good_csv(2) + b"\xef\xbb\xbf" + good_csv(3),
            N + 1,
            1,
        ),
        partly(
            "delimiter_only",
            "two-rows",
            lambda: csv_text([*rows(2), ",,,,,,,,", *rows(2, 3), ",,,,,,,,", *rows(1, 5)]).encode(),
            N + 2,
            2,
        ),
        # Archives.
        loaded("gzip", "good", lambda: gz(good_csv())),
        rejected("gzip", "garbage", lambda: b"\x1f\x8b\x08\x00" + noise(4096, 5), "corrupt gzip"),
        rejected("gzip", "truncated", lambda: gz(good_csv(200))[:-40], "corrupt gzip"),
        rejected("gzip", "nested-gzip", lambda: gz(gz(good_csv())), "compressed"),
        rejected("gzip", "empty-member", lambda: gz(b""), "empty"),
        rejected(
            "gzip_bomb",
            "64mib-zeros",
            lambda: zeros_gz(40),
            "compression bomb",
            limits={"max_unpacked_mb": 8},
        ),
        partly("gzip", "concatenated-members", lambda: gz(good_csv(2)) + gz(good_csv(3)), N + 1, 1),
        loaded("gzip", "trailing-zero-padding", lambda: gz(good_csv()) + b"\x00" * 512),
        rejected("gzip", "trailing-garbage", lambda: gz(good_csv()) + b"garbage!", "corrupt gzip"),
        loaded("zip", "good", lambda: zipped([("invoices.csv", good_csv())])),
        rejected(
            "zip",
            "two-members",
            lambda: zipped([("a.csv", good_csv()), ("b.csv", good_csv())]),
            "exactly one file",
        ),
        rejected(
            "zip", "traversal", lambda: zipped([("../../etc/passwd", good_csv())]), "refusing zip member"
        ),
        rejected(
            "zip", "absolute-path", lambda: zipped([("/etc/passwd", good_csv())]), "refusing zip member"
        ),
        rejected(
            "zip",
            "backslash-path",
            lambda: zipped([("..\\..\\windows\\x.csv", good_csv())]),
            "refusing zip member",
        ),
        rejected(
            "zip", "symlink", lambda: zipped([(symlink_member("invoices.csv"), b"/etc/passwd")]), "link"
        ),
        rejected("zip", "empty-archive", lambda: zipped([]), "exactly one file"),
        rejected(
            "zip",
            "zip-in-zip",
            lambda: zipped([("inner.zip", zipped([("invoices.csv", good_csv())]))]),
            "compressed",
        ),
        rejected("zip", "truncated", lambda: zipped([("invoices.csv", good_csv(500))])[:-60]),
        rejected(
            "zip_bomb",
            "40mib-zeros",
            lambda: zipped([("invoices.csv", b"0" * (40 * 1024 * 1024))]),
            "compression bomb",
            limits={"max_unpacked_mb": 8},
        ),
    ]


def xml_cases() -> list[Case]:
    def xml(build: Callable[[], str], encoding: str = "utf-8") -> Callable[[], bytes]:
        return lambda: build().encode(encoding)

    xxe = '<?xml version="1.0"?>\n<!DOCTYPE Payments [<!ENTITY secret SYSTEM "file:///etc/passwd">]>\n'
    param_xxe = (
        '<?xml version="1.0"?>\n<!DOCTYPE Payments [<!ENTITY % ext SYSTEM "file:///etc/passwd"> %ext;]>\n'
    )
    deep = "<Extra>" * 200 + "x" + "</Extra>" * 200
    kw: dict[str, Any] = {"drop": "payments"}
    return [
        loaded("xml_baseline", "good", xml(payments_xml), **kw),
        loaded("xml_bom", "utf8", lambda: b"\xef\xbb\xbf" + payments_xml().encode(), **kw),
        loaded(
            "xml_utf16",
            "le-bom",
            xml(lambda: payments_xml(prolog='<?xml version="1.0" encoding="UTF-16"?>\n'), "utf-16"),
            **kw,
        ),
        loaded(
            "xml_utf16", "no-declaration-no-bom", lambda: payments_xml(prolog="").encode("utf-16-le"), **kw
        ),
        rejected(
            "xml_xxe",
            "file-entity",
            xml(lambda: payments_xml(payment(1, Method="&secret;"), prolog=xxe)),
            "hostile",
            **kw,
        ),
        rejected("xml_xxe", "parameter-entity", xml(lambda: payments_xml(prolog=param_xxe)), "hostile", **kw),
        Case(
            "xml_xxe",
            "external-dtd",
            xml(
                lambda: payments_xml(
                    prolog='<?xml version="1.0"?>\n<!DOCTYPE Payments SYSTEM "file:///etc/passwd">\n'
                )
            ),
            "loaded",  # the DTD is never fetched: the records land as written
            quarantined=0,
            **kw,
        ),
        rejected("xml_entity_bomb", "billion-laughs", xml(lambda: BILLION_LAUGHS), "hostile", **kw),
        rejected(
            "xml_entity_bomb",
            "quadratic-blowup",
            xml(
                lambda: (
                    '<?xml version="1.0"?>\n<!DOCTYPE Payments [<!ENTITY a "'
                    + "a" * 50_000
                    + '">]>\n'
                    + payments_xml(payment(1, Method="&a;" * 2000), prolog="")
                )
            ),
            "hostile",
            **kw,
        ),
        partly(
            "xml_deep_nesting",
            "inside-record",
            xml(
                lambda: payments_xml(
                    "".join(payment(i) for i in range(1, N + 1)) + payment(N + 1, Method="sepa" + deep)
                )
            ),
            N + 1,
            1,
            **kw,
        ),
        rejected(
            "xml_deep_nesting",
            "outside-records",
            xml(lambda: payments_xml("<Batch>" * 5000 + "</Batch>" * 5000)),
            "no <Payment> records",
            **kw,
        ),
        rejected(
            "xml_wrong_root", "invoices", xml(lambda: payments_xml(root="Invoices")), "root element", **kw
        ),
        partly(
            "xml_missing_field",
            "one-record",
            xml(lambda: payments_xml("".join(payment(i) for i in range(1, N)) + payment(N, Amount="<omit>"))),
            N,
            1,
            **kw,
        ),
        rejected(
            "xml_missing_field",
            "every-record",
            xml(lambda: payments_xml("".join(payment(i, Method="<omit>") for i in range(1, N + 1)))),
            "none of the",
            **kw,
        ),
        partly(
            "xml_repeated_field",
            "amount-twice",
            xml(
                lambda: payments_xml(
                    "".join(payment(i) for i in range(1, N)) + payment(N, Amount="1</Amount><Amount>1000")
                )
            ),
            N,
            1,
            **kw,
        ),
        rejected(
            "xml_malformed",
            "mismatched-tags",
            xml(lambda: payments_xml(payment(1) + "  <Payment><Amount>1</Method></Payment>\n")),
            "not well-formed",
            **kw,
        ),
        rejected(
            "xml_malformed", "truncated", lambda: payments_xml().encode()[:-40], "not well-formed", **kw
        ),
        rejected(
            "xml_malformed",
            "junk-after-root",
            lambda: payments_xml().encode() + b"<Payments/>\n",
            "not well-formed",
            **kw,
        ),
        rejected(
            "xml_malformed",
            "nul-byte",
            lambda: payments_xml().replace("sepa", "se\x00pa", 1).encode(),
            "not well-formed",
            **kw,
        ),
        rejected("xml_malformed", "csv-renamed", good_csv, "not well-formed", **kw),
        rejected("xml_malformed", "empty", lambda: b"", "not well-formed", **kw),
        rejected(
            "xml_malformed",
            "bad-char-reference",
            xml(lambda: payments_xml(payment(1, Method="&#xD800;"))),
            "not well-formed",
            **kw,
        ),
        loaded(
            "xml_declared_encoding",
            "latin1-declared-utf8-written",
            xml(
                lambda: payments_xml(
                    "".join(payment(i, Method="Überweisung") for i in range(1, N + 1)),
                    prolog='<?xml version="1.0" encoding="ISO-8859-1"?>\n',
                )
            ),
            **kw,
        ),
        rejected(
            "xml_declared_encoding",
            "utf8-declared-latin1-written",
            xml(
                lambda: payments_xml("".join(payment(i, Method="Überweisung") for i in range(1, N + 1))),
                "latin-1",
            ),
            "not well-formed",
            **kw,
        ),
        loaded(
            "xml_huge_attribute",
            "2mib",
            xml(
                lambda: payments_xml(
                    payment(1).replace("<Payment>", f'<Payment note="{"x" * (2 * 1024 * 1024)}">')
                    + "".join(payment(i) for i in range(2, N + 1))
                )
            ),
            **kw,
        ),
        loaded(
            "xml_cdata",
            "markup-in-value",
            xml(
                lambda: payments_xml(
                    "".join(payment(i, Method="<![CDATA[<b>sepa</b> & co]]>") for i in range(1, N + 1))
                )
            ),
            check=values_are("method", ["<b>sepa</b> & co"] * N),
            **kw,
        ),
        loaded(
            "xml_processing_instruction",
            "pi-and-comments",
            xml(
                lambda: payments_xml(
                    "".join(f"<?php system('id'); ?><!-- {i} -->\n" + payment(i) for i in range(1, N + 1))
                )
            ),
            **kw,
        ),
        loaded(
            "xml_namespaces",
            "default-and-prefixed",
            xml(
                lambda: payments_xml(root='Payments xmlns="urn:x" xmlns:p="urn:p"').replace(
                    '</Payments xmlns="urn:x" xmlns:p="urn:p">', "</Payments>"
                )
            ),
            **kw,
        ),
        loaded(
            "xml_xinclude",
            "file-href",
            xml(
                lambda: payments_xml(
                    "".join(payment(i).replace("<Method>", XINCLUDE + "<Method>") for i in range(1, N + 1))
                )
            ),
            **kw,
        ),
        rejected(
            "xml_undefined_entity",
            "nbsp",
            xml(lambda: payments_xml(payment(1, Method="a&nbsp;b"))),
            "not well-formed",
            **kw,
        ),
        rejected("xml_no_records", "empty-root", xml(lambda: payments_xml("")), "no <Payment> records", **kw),
        partly(
            "xml_empty_record",
            "self-closing",
            xml(lambda: payments_xml("".join(payment(i) for i in range(1, N + 1)) + "  <Payment/>\n")),
            N + 1,
            1,
            **kw,
        ),
        loaded(
            "xml_attributes",
            "fields-as-attributes",
            xml(
                lambda: payments_xml(
                    "".join(
                        f'  <Payment PaymentReference="P{i}" InvoiceNumber="BIL-{i}" PaymentDate="2026-11-25" Amount="1" Currency="EUR" Method="sepa"/>\n'
                        for i in range(1, N + 1)
                    )
                )
            ),
            **kw,
        ),
        loaded(
            "xml_volume",
            "10000-records",
            xml(lambda: payments_xml("".join(payment(i) for i in range(1, 10_001)))),
            lines=10_000,
            **kw,
        ),
        loaded(
            "xml_formula_injection",
            "excel",
            xml(
                lambda: payments_xml(
                    "".join(payment(i, Method="=CMD|' /C calc'!A0") for i in range(1, N + 1))
                )
            ),
            **kw,
        ),
        rejected("xml_gzip", "truncated", lambda: gz(payments_xml().encode())[:-20], "corrupt gzip", **kw),
        loaded("xml_gzip", "good", lambda: gz(payments_xml().encode()), **kw),
    ]


def json_cases() -> list[Case]:
    objs = [invoice_obj(i) for i in range(1, N + 1)]
    jl: dict[str, Any] = {"drop": "invoices_jsonl"}
    js: dict[str, Any] = {"drop": "invoices_json"}

    def doc(records: str) -> Callable[[], bytes]:
        return lambda: ('{"data": {"invoices": [' + records + "]}}").encode()

    good_records = ", ".join(json.dumps(o) for o in objs)
    deep = "[" * 100_000 + "]" * 100_000
    return [
        loaded("jsonl_baseline", "good", lambda: jsonl(objs), **jl),
        loaded("jsonl_bom", "utf8", lambda: b"\xef\xbb\xbf" + jsonl(objs), **jl),
        loaded("jsonl_crlf", "windows", lambda: jsonl(objs).replace(b"\n", b"\r\n"), **jl),
        partly(
            "jsonl_malformed",
            "one-line",
            lambda: jsonl([*objs[:4], '{"invoice_number": "BIL-5",']),
            N,
            1,
            **jl,
        ),
        partly(
            "jsonl_not_object", "array-and-null", lambda: jsonl([*objs, "[1, 2]", "null"]), N + 2, 2, **jl
        ),
        partly(
            "jsonl_encoding",
            "bad-byte",
            lambda: jsonl(objs) + b'{"invoice_number": "\xff"}\n',
            N + 1,
            1,
            **jl,
        ),
        partly(
            "jsonl_deep_nesting",
            "100000-levels",
            lambda: jsonl([*objs, '{"invoice_number": ' + deep + "}"]),
            N + 1,
            1,
            **jl,
        ),
        partly(
            "jsonl_huge_number",
            "5000-digits",
            lambda: jsonl([*objs, '{"invoice_number": ' + "9" * 5000 + "}"]),
            N + 1,
            1,
            **jl,
        ),
        partly(
            "jsonl_lone_surrogate",
            "escaped",
            lambda: jsonl([*objs, {**invoice_obj(9), "invoice_number": "BIL-\\ud800"}]).replace(
                b"\\\\ud800", b"\\ud800"
            ),
            N + 1,
            1,
            **jl,
        ),
        partly(
            "jsonl_repeated_key",
            "amount-twice",
            lambda: jsonl([*objs, json.dumps(invoice_obj(9))[:-1] + ', "amount_gross": "1000"}']),
            N + 1,
            1,
            **jl,
        ),
        partly(
            "jsonl_long_line",
            "20mb",
            lambda: (
                jsonl(objs) + b'{"invoice_number": "' + b"x" * (20 * 1024 * 1024) + b'"}\n' + jsonl(objs[:1])
            ),
            N + 2,
            1,
            **jl,
        ),
        loaded(
            "jsonl_nan",
            "literals",
            lambda: (
                jsonl(
                    [
                        {**o, "amount_gross": v}
                        for o, v in zip(objs, ["NaN", "Infinity", "-Infinity", "1e999", "-0"], strict=True)
                    ]
                )
                .replace(b'"NaN"', b"NaN")
                .replace(b'"Infinity"', b"Infinity")
                .replace(b'"-Infinity"', b"-Infinity")
            ),
            **jl,
        ),
        partly(
            "jsonl_nul",
            "escaped",
            lambda: jsonl([*objs, {**invoice_obj(9), "status": "op\x00en"}]),
            N + 1,
            1,
            **jl,
        ),
        loaded("jsonl_blank_lines", "between-records", lambda: jsonl([objs[0], "", "   ", *objs[1:]]), **jl),
        rejected("jsonl_empty", "zero-bytes", lambda: b"", **jl),
        rejected("jsonl_binary", "random", lambda: noise(16 * 1024, 7), **jl),
        loaded("json_baseline", "good", doc(good_records), **js),
        rejected("json_truncated", "mid-record", lambda: doc(good_records)()[:-30], "not valid JSON", **js),
        rejected("json_empty", "zero-bytes", lambda: b"", **js),
        rejected(
            "json_wrong_path",
            "top-level-array",
            lambda: ("[" + good_records + "]").encode(),
            "no records",
            **js,
        ),
        partly(
            "json_deep_nesting",
            "100000-levels",
            doc(good_records + ', {"invoice_number": ' + deep + "}"),
            N + 1,
            1,
            **js,
        ),
        # ijson's C backend crashes on such a number (found by this corpus): the document is refused first.
        rejected(
            "json_huge_number",
            "5000-digits",
            doc(good_records + ', {"invoice_number": ' + "9" * 5000 + "}"),
            "digits",
            **js,
        ),
        partly(
            "json_lone_surrogate",
            "escaped",
            doc(
                good_records
                + ", "
                + json.dumps({**invoice_obj(9), "invoice_number": "BIL-\\ud800"}).replace(
                    "\\\\ud800", "\\ud800"
                )
            ),
            N + 1,
            1,
            marks=(
                pytest.mark.xfail(
                    strict=True,
                    reason="ijson's C backend (yajl2_c) decodes a lone \\ud800 escape to '?' before the reader "
                    "sees it, so the record lands as 'BIL-?'; catching it needs a pre-scan of the escapes",
                ),
            ),
            **js,
        ),
        partly(
            "json_repeated_key",
            "amount-twice",
            doc(good_records + ", " + json.dumps(invoice_obj(9))[:-1] + ', "amount_gross": "1000"}'),
            N + 1,
            1,
            **js,
        ),
        partly(
            "json_nul",
            "escaped",
            doc(good_records + ", " + json.dumps({**invoice_obj(9), "status": "op\x00en"})),
            N + 1,
            1,
            **js,
        ),
        partly("json_not_object", "scalars", doc(good_records + ', 1, "x", null, [1]'), N + 4, 4, **js),
        rejected(
            "json_malformed", "trailing-garbage", lambda: doc(good_records)() + b" {]", "not valid JSON", **js
        ),
        loaded("json_bom", "utf8", lambda: b"\xef\xbb\xbf" + doc(good_records)(), **js),
        rejected(
            "json_deep_nesting",
            "outside-records",
            lambda: ('{"x": ' + deep + ', "data": {"invoices": []}}').encode(),
            "no records",
            **js,
        ),
    ]


def fw_line(i: int, amount: str = "119.00", currency: str = "EUR") -> str:
    return f"{f'PAY-{i:06d}':<12}{amount:>10}{currency:<3}"


def fixed_width(body: Sequence[str], eol: str = "\n") -> str:
    return eol.join(["PAYMENTS 2026-11-25 - BANK EXPORT", "REFERENCE       AMOUNTCUR", *body]) + eol


def fixed_width_cases() -> list[Case]:
    good = [fw_line(i) for i in range(1, N + 1)]
    fw: dict[str, Any] = {"drop": "bank_fixed"}
    return [
        loaded("fw_baseline", "good", lambda: fixed_width(good).encode(), **fw),
        loaded("fw_line_endings", "crlf", lambda: fixed_width(good, "\r\n").encode(), **fw),
        loaded("fw_utf16", "le-bom", lambda: fixed_width(good).encode("utf-16"), **fw),
        partly(
            "fw_short_line", "truncated", lambda: fixed_width([*good[:4], good[4][:15]]).encode(), N, 1, **fw
        ),
        partly(
            "fw_nul", "padding", lambda: fixed_width(good).encode() + b"\x00" * 30 + b"\n", N + 1, 1, **fw
        ),
        partly(
            "fw_long_line",
            "20mb",
            lambda: fixed_width([*good, "z" * (20 * 1024 * 1024)]).encode(),
            N + 1,
            1,
            **fw,
        ),
        rejected(
            "fw_moved_columns",
            "header",
            lambda: fixed_width(good).replace("REFERENCE", "  REFERENCE").encode(),
            "layout changed",
            **fw,
        ),
        rejected("fw_binary", "random", lambda: noise(8192, 9), **fw),
        rejected("fw_empty", "zero-bytes", lambda: b"", **fw),
    ]


CASES = csv_cases() + xml_cases() + json_cases() + fixed_width_cases()


# --- landing and judging ------------------------------------------------------------------------


@dataclass
class Landed:
    manifest: Manifest
    rows: dict[str, list[Any]]
    quarantine: list[dict[str, Any]]
    seconds: float


def land(tmp_path: Path, name: str, content: bytes, declared: Dataset) -> Landed:
    """Land ``content`` as ``name`` into ``tmp_path``'s lake and quarantine folders, as the sweep would."""
    inbox = tmp_path / "download"
    inbox.mkdir(parents=True, exist_ok=True)
    local = inbox / name
    local.write_bytes(content)
    sha = hashlib.sha256(content).hexdigest()
    folder, quarantine_folder = tmp_path / "lake", tmp_path / "quarantine"
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    manifest = land_file(
        local_file=local,
        remote_path=f"/outbound/finance/{name}",
        sha256=sha,
        size=len(content),
        declared=declared,
        source="finance_sftp",
        entity="invoice",
        folder=folder,
        quarantine_folder=quarantine_folder,
    )
    seconds = time.monotonic() - started
    version = version_name(name, sha)
    parquet = folder / f"{version}.parquet"
    landed = pq.read_table(parquet).to_pydict() if parquet.exists() else {}
    quarantine = pq.read_table(quarantine_folder / f"{version}.parquet").to_pylist()
    return Landed(manifest, landed, quarantine, seconds)


def judge(case: Case, result: Landed) -> None:
    """The acceptance rules, for one file."""
    m = result.manifest
    if m["rejected"] is not None:
        outcome: Outcome = "rejected"
    elif m["rows_quarantined"]:
        outcome = "partly_quarantined"
    else:
        outcome = "loaded"
    detail = f"{case.id}: manifest {json.dumps({k: m[k] for k in ('rows_landed', 'rows_quarantined', 'rejected')})}"
    assert outcome == case.outcome, detail
    for q in result.quarantine:
        assert q["rule"], f"{case.id}: quarantine row without a rule: {q}"
        assert q["reason"], f"{case.id}: quarantine row without a reason: {q}"
    if outcome == "rejected":
        assert isinstance(m["rejected"], str), detail
        assert m["rejected"].strip(), detail
        assert m["rows_landed"] == 0, detail
        assert not result.rows, detail
        assert [q["rule"] for q in result.quarantine] == ["file_rejected"], detail
        if case.reason:
            import re

            assert re.search(case.reason, m["rejected"]), f"{detail}: reason does not match {case.reason!r}"
    else:
        # Zero rows unaccounted: landed + quarantined is every data line the generator wrote.
        assert m["rows_landed"] + m["rows_quarantined"] == m["data_lines"] == case.lines, detail
        assert len(result.rows.get("_source_line", [])) == m["rows_landed"], detail
        assert len({q["record_id"] for q in result.quarantine}) == m["rows_quarantined"], detail
        if case.quarantined is not None:
            assert m["rows_quarantined"] == case.quarantined, detail
        # No line is both landed and quarantined.
        landed_lines = {f"{m['path'].rsplit('/', 1)[-1]}:{n}" for n in result.rows.get("_source_line", [])}
        assert not landed_lines & {q["record_id"] for q in result.quarantine}, detail
        if case.check is not None:
            case.check(result.rows)
    everything = json.dumps([result.rows, result.quarantine, m], default=str, ensure_ascii=False)
    assert PASSWD not in everything, f"{case.id}: local file content leaked into the lake"


def case_params() -> list[Any]:
    return [pytest.param(c, id=c.id, marks=c.marks) for c in CASES]


def test_the_corpus_is_broad() -> None:
    assert len(CASES) >= 60
    assert len({c.kind for c in CASES}) >= 40
    assert len({c.id for c in CASES}) == len(CASES)  # ids are unique


@pytest.mark.parametrize("case", case_params())
def test_a_hostile_file_ends_in_exactly_one_outcome_and_every_line_is_accounted_for(
    tmp_path: Path, case: Case
) -> None:
    content = case.content()
    declared = DROPS[case.drop].model_copy(update=case.limits) if case.limits else DROPS[case.drop]
    result = land(tmp_path, FILE_NAMES[case.drop], content, declared)
    judge(case, result)
    # Bombs and floods are refused or read in bounded time, never worked through at length.
    assert result.seconds < 20, f"{case.id} took {result.seconds:.1f}s"
    assert not list((tmp_path / "download" / ".unpacked").glob("*")), "unpacked scratch copy left behind"


def landed_numbers(folder: Path) -> list[str]:
    return sorted(
        n for f in folder.glob("*.parquet") for n in pq.read_table(f).column("invoice_number").to_pylist()
    )


@pytest.mark.parametrize(
    "hostile",
    [pytest.param(c, id=c.id) for c in CASES if c.drop == "invoices" and c.outcome != "loaded"],
)
def test_a_hostile_file_does_not_take_its_good_neighbours_down(tmp_path: Path, hostile: Case) -> None:
    """Good files land into the same day's folders before and after a hostile one, each in full."""
    declared = DROPS["invoices"]
    before = land(tmp_path, f"invoices_{DAY}_a.csv", good_csv(3), declared)
    bad = land(tmp_path, f"invoices_{DAY}.csv", hostile.content(), declared)
    after = land(tmp_path, f"invoices_{DAY}_b.csv", csv_text(rows(7, start=100)).encode(), declared)
    for good, count in ((before, 3), (after, 7)):
        assert (
            good.manifest["rows_landed"],
            good.manifest["rows_quarantined"],
            good.manifest["rejected"],
        ) == (
            count,
            0,
            None,
        )
    # Every file keeps its own outcome: the hostile one did not remove or replace its neighbours' rows.
    hostile_rows = bad.rows.get("invoice_number", [])
    assert landed_numbers(tmp_path / "lake") == sorted(
        [*(r[0] for r in rows(3)), *(r[0] for r in rows(7, start=100)), *hostile_rows]
    )
    assert len(list((tmp_path / "lake").glob("*.json"))) == 3
