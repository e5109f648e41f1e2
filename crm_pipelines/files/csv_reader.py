"""Streaming CSV to Arrow, with row-level quarantine of structurally broken rows.

The file is decoded to UTF-8 in a small Python stream (bad bytes become U+FFFD) and parsed by
Arrow's streaming CSV reader, so memory stays at a few blocks whatever the file size. Rows with
the wrong number of fields, undecodable bytes, a NUL, or a quote that is never closed are quarantined
with their physical line number; every other row comes through with every declared column as a string.
A record Arrow cannot delimit within a parse block (a quote never closed in a big file, a line of
megabytes) is no reason to lose the file: from the first line Arrow did not deliver, every physical
line is read on its own, with memory bounded per line.
Types are not touched here: the mapping step converts them.

Line numbers: Arrow reports the record number of a bad row but not the line of a good one, so we
count lines ourselves: a record spans one line plus the line breaks inside its quoted values.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from crm_pipelines.files.formats import FILE_FORMATS, FileFormat, FileRead
from crm_pipelines.sources import Dataset

# Bytes Arrow parses at a time; also the largest single record we accept.
BLOCK_SIZE = 1024 * 1024
# Bytes read from disk per decode step.
READ_CHUNK = 1024 * 1024
# The longest header line we look for before giving up (a binary file has no line breaks).
MAX_HEADER_CHARS = 1024 * 1024
# Columns a file may have: Arrow builds one array per column per block, so 200,000 columns of an 800 KB
# file take gigabytes. No export of invoices or payments comes near this.
MAX_COLUMNS = 4096
REPLACEMENT = "\ufffd"
# Longest quarantined record text kept; an unclosed quote can make a "row" of the whole file.
MAX_RECORD_CHARS = 64 * 1024

SOURCE_FILE = "_source_file"
SOURCE_LINE = "_source_line"


class FileRejected(Exception):
    """The whole file is unusable (no header, a missing column, no data rows, ...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Undeclared column names kept per file: a file with a field per record id must not flood the ledger.
MAX_NEW_COLUMNS = 100


@dataclass
class DriftReport:
    """Columns (fields, elements) a file carries that its drop does not declare.

    They are not loaded (the declared columns are the contract); they are reported so a human
    decides whether to declare them. The readers fill it in while they stream.
    """

    new_columns: list[str] = field(default_factory=list)
    truncated: bool = False

    def add(self, names: Iterable[str]) -> None:
        for name in names:
            if name in self.new_columns:
                continue
            if len(self.new_columns) >= MAX_NEW_COLUMNS:
                self.truncated = True
                return
            self.new_columns.append(name)


@dataclass
class CsvChunk:
    """Rows that passed the structural checks, and the rows quarantined since the previous chunk."""

    rows: pa.RecordBatch
    quarantine: list[dict[str, str]] = field(default_factory=list)


_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def normalize_header(name: str) -> str:
    """``" Invoice-Number "``, ``InvoiceNumber``, ``invoiceNumber`` -> ``"invoice_number"``.

    BOM removed, camel case split (XML elements and JSON keys are usually written that way;
    ``VATNumber`` -> ``vat_number``, ``IBAN`` stays whole), runs of spaces and dashes -> ``_``.
    """
    split = _CAMEL_BOUNDARY.sub("_", name.replace("\ufeff", "").strip())
    return re.sub(r"[\s\-]+", "_", split.lower())


def output_schema(columns: list[str]) -> pa.Schema:
    """Schema of :attr:`CsvChunk.rows` for the declared ``columns``."""
    names = [normalize_header(c) for c in columns]
    return pa.schema(
        [pa.field(n, pa.string()) for n in names]
        + [pa.field(SOURCE_FILE, pa.string()), pa.field(SOURCE_LINE, pa.int64())]
    )


def _line_breaks(text: str) -> int:
    """Line breaks in ``text``: ``\\n``, ``\\r\\n`` and a lone ``\\r`` each count once."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


class _Utf8Stream(io.RawIOBase):
    """Decodes a byte stream from ``encoding`` and re-encodes it as UTF-8 for Arrow.

    Undecodable bytes become U+FFFD, so Arrow always sees valid UTF-8 (its bad-row callback cannot
    cope with anything else) and the reader can quarantine those rows by looking for U+FFFD.
    """

    def __init__(self, raw: BinaryIO, encoding: str, delimiter: str | None = None) -> None:
        super().__init__()
        # utf-8-sig drops a leading BOM and is otherwise identical to utf-8.
        if codecs.lookup(encoding).name == "utf-8":
            encoding = "utf-8-sig"
        self._raw = raw
        self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self._pending = b""
        self._eof = False
        self.saw_replacement = False
        # NUL is no character of any export: a value holding one is damage (a crashed writer's padding,
        # a binary field), and databases truncate or refuse it. Such rows are quarantined.
        self.saw_nul = False
        # Parity of '"' characters: odd at the end means the file most likely ends inside a quote.
        self.quotes = 0
        # Lines made of the delimiter only (",,,,"): Arrow reads them as rows of empty values, like a
        # blank line; their numbers tell the two apart. Scanned per decoded chunk, in C (re).
        self.delimiter_only_lines: set[int] = set()
        # A line break first: re finds candidates by that literal, ten times faster than (?m)^.
        self._only_delimiters = (
            None
            if delimiter is None
            else re.compile(
                rf"\n[ ]*{re.escape(delimiter)}(?:[ ]*{re.escape(delimiter)})*[ ]*(?=\r?\n|\r?\Z)"
            )
        )
        self._line = 1  # the line the unscanned text starts on
        self._unscanned = ""

    def _decode_more(self) -> str:
        if self._eof:
            return ""
        data = self._raw.read(READ_CHUNK)
        final = not data
        self._eof = final
        text = self._decoder.decode(data, final=final)
        if REPLACEMENT in text:
            self.saw_replacement = True
        if "\x00" in text:
            self.saw_nul = True
        self.quotes += text.count('"')
        if self._only_delimiters is not None:
            self._scan_lines(text, final)
        return text

    def _scan_lines(self, text: str, final: bool) -> None:
        """Note the numbers of delimiter-only lines among the complete lines decoded so far."""
        assert self._only_delimiters is not None
        buffered = self._unscanned + text
        end = len(buffered) if final else buffered.rfind("\n") + 1
        complete, self._unscanned = buffered[:end], buffered[end:]
        # Each match starts at the line break before the line; the text starts at a line's start.
        # Lines are counted by '\n' alone (one pass): a file broken by lone '\r' has no match anyway.
        for match in self._only_delimiters.finditer("\n" + complete):
            self.delimiter_only_lines.add(self._line + complete.count("\n", 0, match.start()))
        self._line += complete.count("\n")

    def read_header(self) -> tuple[str, bool]:
        """The first line (without its line break), and whether any text follows it."""
        text = ""
        while True:
            match = re.search(r"\r\n|\r|\n", text)
            # A '\r' at the end of what we have may be the first half of '\r\n'.
            if match and not (match.group() == "\r" and match.end() == len(text) and not self._eof):
                header, rest = text[: match.start()], text[match.end() :]
                break
            if self._eof:
                header, rest = text, ""
                break
            if len(text) > MAX_HEADER_CHARS:
                raise ValueError(f"no line break in the first {MAX_HEADER_CHARS} characters")
            text += self._decode_more()
        # Look past the header so "nothing follows" is known now, not as an Arrow error later.
        while not rest and not self._eof:
            rest = self._decode_more()
        self._pending = rest.encode("utf-8")
        return header, bool(rest)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._eof and (size < 0 or len(self._pending) < size):
            self._pending += self._decode_more().encode("utf-8")
        if size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


@dataclass
class _BadRow:
    number: int  # Arrow's record number: 1 = first record after the header
    text: str
    actual: int


class _LineTracker:
    """Maps Arrow's record stream back to physical line numbers.

    Good rows come in batches, bad rows through the callback with their record number; records
    arrive in order, so a cursor (next record number, its first line) is all the state needed.
    """

    def __init__(self, first_line: int) -> None:
        self.next_record = 1
        self.next_line = first_line
        self.pending: list[_BadRow] = []

    def take_batch(self, spans: np.ndarray) -> tuple[np.ndarray, list[tuple[_BadRow, int]]]:
        """Line numbers of a batch of good rows, and the bad rows (with lines) that precede them."""
        n = len(spans)
        if n == 0:
            return np.empty(0, dtype=np.int64), []
        bad_numbers = np.fromiter((b.number for b in self.pending), dtype=np.int64, count=len(self.pending))
        # The good rows are the first n record numbers, from the cursor on, that are not bad.
        width = n + len(bad_numbers)
        taken = np.zeros(width, dtype=bool)
        offsets = bad_numbers - self.next_record
        taken[offsets[(offsets >= 0) & (offsets < width)]] = True
        good = np.flatnonzero(~taken)[:n]
        last = int(good[-1])
        before = [b for b in self.pending if b.number - self.next_record < last]
        self.pending = [b for b in self.pending if b.number - self.next_record >= last]
        record_spans = np.ones(last + 1, dtype=np.int64)
        record_spans[good] = spans
        for bad in before:
            record_spans[bad.number - self.next_record] = _line_breaks(bad.text) + 1
        starts = self.next_line + np.concatenate(([0], np.cumsum(record_spans[:-1])))
        bad_lines = [(bad, int(starts[bad.number - self.next_record])) for bad in before]
        self.next_line = int(starts[-1] + record_spans[-1])
        self.next_record += last + 1
        return starts[good], bad_lines

    def take_rest(self) -> list[tuple[_BadRow, int]]:
        """Bad rows after the last good row (end of file)."""
        out = []
        for bad in self.pending:
            # Records between bad rows cannot be missing here; if Arrow ever skips numbers we still
            # keep counting from the last known line rather than fail.
            self.next_line += max(bad.number - self.next_record, 0)
            out.append((bad, self.next_line))
            self.next_line += _line_breaks(bad.text) + 1
            self.next_record = bad.number + 1
        self.pending = []
        return out


# Bytes looked at to guess the encoding and the delimiter of a file nobody described.
SNIFF_BYTES = 64 * 1024
CANDIDATE_DELIMITERS = (",", ";", "\t", "|")


@dataclass(frozen=True)
class CsvDialect:
    """What :func:`detect_dialect` found: the text encoding and the field delimiter."""

    encoding: str
    delimiter: str


def _utf16_or_32(sample: bytes) -> str | None:
    """``utf-32``/``utf-16`` for a sample with that BOM, ``utf-16-le``/``-be`` for BOM-less UTF-16, or None.

    Excel's "Unicode text" and many Windows tools write UTF-16. Without a BOM it shows as a NUL byte
    in every other position (the high byte of ASCII text): read as cp1252 it would be a header of
    ``i\\0n\\0v\\0...``. A file of NULs only, or binary noise, has no such pattern.
    """
    if sample.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    head = sample[: 4096 - 4096 % 2]
    if len(head) < 4:
        return None
    even, odd = head[0::2].count(0) / (len(head) // 2), head[1::2].count(0) / (len(head) // 2)
    if odd > 0.9 and even < 0.1:
        return "utf-16-le"
    if even > 0.9 and odd < 0.1:
        return "utf-16-be"
    return None


def detect_dialect(path: Path) -> CsvDialect:
    """Guess a CSV file's encoding and delimiter from its first bytes.

    Encoding: a UTF-16 or UTF-32 BOM, or UTF-16 without one, means that (see :func:`_utf16_or_32`);
    a UTF-8 BOM (or none and valid UTF-8) means UTF-8. A sample with invalid UTF-8 is
    still UTF-8 when it holds more well-formed multi-byte characters than invalid bytes: a UTF-8 file
    damaged in a few places (its bad rows are quarantined for their undecodable bytes, and its
    "München" stays "München"). Otherwise it is read as cp1252, the usual export encoding of Windows
    ERPs and spreadsheets (it has a character for nearly every byte, so it cannot fail; a wrong guess
    shows up as quarantined rows, not as silently dropped ones). Delimiter: the candidate (``, ; tab |``) occurring most
    often in the header line outside quotes, provided it occurs at all; else a comma.
    """
    with open(path, "rb") as raw:
        sample = raw.read(SNIFF_BYTES)
    wide = _utf16_or_32(sample)
    if wide is not None:
        encoding = wide
    elif sample.startswith(codecs.BOM_UTF8):
        encoding = "utf-8"
    else:
        # final=False: the sample may end in the middle of a multi-byte character.
        decoded = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(sample, final=False)
        invalid = decoded.count("\ufffd") - sample.count("\ufffd".encode())
        well_formed = sum(1 for c in decoded if c > "\x7f" and c != "\ufffd")
        encoding = "utf-8" if invalid == 0 or well_formed > invalid else "cp1252"
    text = sample.decode(encoding, errors="replace").lstrip("\ufeff")
    header = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]
    unquoted = re.sub(r'"[^"]*"', "", header)
    counts = {d: unquoted.count(d) for d in CANDIDATE_DELIMITERS}
    best = max(CANDIDATE_DELIMITERS, key=lambda d: counts[d])
    return CsvDialect(encoding=encoding, delimiter=best if counts[best] else ",")


def _as_csv_line(values: list[str], delimiter: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="").writerow(values)
    return out.getvalue()


def read_csv_batches(
    path: Path,
    *,
    columns: list[str],
    source_file: str,
    source: str,
    dataset: str,
    batch_rows: int = 65_536,
    delimiter: str = ",",
    encoding: str = "utf-8",
    drift: DriftReport | None = None,
) -> Iterator[CsvChunk]:
    """Stream a CSV file as Arrow batches of string columns, quarantining broken rows.

    Args:
        path: Local CSV file with a header row.
        columns: Required columns, in any order in the file; header names are normalised
            (see :func:`normalize_header`) on both sides. Other columns in the file are dropped.
        source_file: File name for lineage (``_source_file`` and quarantine ``record_id``).
        source: Quarantine ``source`` (system the file came from).
        dataset: Quarantine ``entity`` (raw dataset name).
        batch_rows: Rows per yielded chunk (the last one may be smaller).
        delimiter: Field separator.
        encoding: Text encoding of the file; undecodable bytes quarantine their row.
        drift: Receives the header's columns that are not in ``columns`` (reported, not loaded).

    Yields:
        :class:`CsvChunk`; the rows of every chunk have the schema :func:`output_schema` gives
        for ``columns``. A row whose fields are all empty (a blank line) is skipped, not quarantined.

    Raises:
        FileRejected: no header, a required column missing or duplicated, or no data rows at all.
            Header problems are raised before the first chunk; "no data rows" is known only at the
            end, when nothing has been yielded. A record bigger than the parse block (an unclosed
            quote in a big file, a monstrous line) does not reject the file: from there on each
            line is read on its own (see ``_RowParser._take_lines``).
    """
    if batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    if len(delimiter) != 1:
        raise ValueError("delimiter must be a single character")
    wanted = [normalize_header(c) for c in columns]
    with open(path, "rb") as raw:
        stream = _Utf8Stream(raw, encoding, delimiter)
        try:
            header_line, has_more = stream.read_header()
        except ValueError as exc:
            raise FileRejected(f"{source_file}: no header row: {exc}") from exc
        if not header_line.strip():
            raise FileRejected(f"{source_file}: the file is empty (no header row)")
        try:
            header = next(csv.reader([header_line], delimiter=delimiter, strict=True))
        except csv.Error as exc:
            raise FileRejected(f"{source_file}: the header row is not valid CSV: {exc}") from exc
        if len(header) > MAX_COLUMNS:
            raise FileRejected(
                f"{source_file}: the header has {len(header):,} columns; more than {MAX_COLUMNS:,} are "
                "not read (memory), and the drop declares "
                f"{len(wanted)}"
            )
        names = [normalize_header(h) for h in header]
        # Before the checks: a renamed column is both missing and new, and the report shows both.
        if drift is not None:
            drift.add(n or f"(unnamed column {i + 1})" for i, n in enumerate(names) if n not in wanted)
        missing = [c for c in wanted if c not in names]
        if missing:
            raise FileRejected(
                f"{source_file}: missing required column(s) {', '.join(missing)}; the header has "
                f"{', '.join(names)} (required: {', '.join(wanted)})"
            )
        duplicated = sorted({c for c in wanted if names.count(c) > 1})
        if duplicated:
            raise FileRejected(
                f"{source_file}: column(s) {', '.join(duplicated)} appear more than once in the header"
            )
        if not has_more:
            raise FileRejected(f"{source_file}: no data rows after the header")
        parser = _RowParser(
            reread=partial(_physical_lines, path, encoding),
            header=header,
            names=names,
            wanted=wanted,
            source_file=source_file,
            source=source,
            dataset=dataset,
            batch_rows=batch_rows,
            delimiter=delimiter,
        )
        yield from parser.run(stream)


class _RowParser:
    """Runs Arrow over the body of the file and re-chunks its output to ``batch_rows``."""

    def __init__(
        self,
        *,
        reread: Callable[[int], Iterator[tuple[int, str, bool]]],
        header: list[str],
        names: list[str],
        wanted: list[str],
        source_file: str,
        source: str,
        dataset: str,
        batch_rows: int,
        delimiter: str,
    ) -> None:
        self.reread = reread
        self.header = header
        self.names = names
        self.source_file = source_file
        self.source = source
        self.dataset = dataset
        self.batch_rows = batch_rows
        self.delimiter = delimiter
        self.schema = output_schema(wanted)
        # Positional internal names: the header may hold duplicate or empty names we do not use.
        self.internal = [f"c{i}" for i in range(len(names))]
        self.picks = [names.index(c) for c in wanted]
        self.tracker = _LineTracker(first_line=2)
        self.buffered: list[pa.RecordBatch] = []
        self.buffered_rows = 0
        self.quarantine: list[dict[str, str]] = []
        self.data_rows = 0  # good + quarantined rows, for the "no data rows" check
        # The file's last good record: how many lines it spans and whether it was kept.
        self.last_span = 0
        self.last_kept = False

    def _on_invalid(self, row: Any) -> str:
        # Must never raise: Arrow would turn that into an unhelpful parse error.
        self.tracker.pending.append(_BadRow(int(row.number or 0), row.text or "", int(row.actual_columns)))
        return "skip"

    def _entry(self, line: int, record: str, rule: str, reason: str) -> dict[str, str]:
        return {
            "source": self.source,
            "entity": self.dataset,
            "record_id": f"{self.source_file}:{line}",
            "record": record
            if len(record) <= MAX_RECORD_CHARS
            else record[:MAX_RECORD_CHARS] + " [truncated]",
            "rule": rule,
            "reason": f"line {line}: {reason}",
        }

    def _quarantine_bad(self, bad_rows: list[tuple[_BadRow, int]]) -> None:
        # A line of spaces and tabs only (a careless editor's trailing line) is a blank line, skipped
        # like an empty one, unless the spaces are the delimiter (a row of delimiters is quarantined).
        bad_rows = [(b, n) for b, n in bad_rows if b.text.strip() or self.delimiter in b.text]
        for bad, line in bad_rows:
            self.quarantine.append(
                self._entry(
                    line, bad.text, "field_count", f"expected {len(self.names)} fields, found {bad.actual}"
                )
            )
        self.data_rows += len(bad_rows)

    def _open(self, stream: _Utf8Stream) -> pacsv.CSVStreamingReader:
        return pacsv.open_csv(
            pa.PythonFile(stream, mode="r"),
            # use_threads=False: Arrow only reports bad-row numbers when it parses serially.
            read_options=pacsv.ReadOptions(
                use_threads=False, block_size=BLOCK_SIZE, column_names=self.internal
            ),
            parse_options=pacsv.ParseOptions(
                delimiter=self.delimiter,
                newlines_in_values=True,
                # Blank lines must come through (as all-empty rows) or the line count drifts.
                ignore_empty_lines=False,
                invalid_row_handler=self._on_invalid,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in self.internal},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )

    def run(self, stream: _Utf8Stream) -> Iterator[CsvChunk]:
        try:
            for batch in self._open(stream):
                self._take(batch, stream.saw_replacement, stream.saw_nul, stream.delimiter_only_lines)
                if self.buffered_rows >= self.batch_rows or len(self.quarantine) >= self.batch_rows:
                    yield from self._emit(final=False)
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc):
                raise FileRejected(f"{self.source_file}: the CSV could not be parsed: {exc}") from exc
            recover_from: int | None = self.tracker.next_line
        else:
            recover_from = None
        if recover_from is not None:
            # A record longer than a parse block: an unclosed quote swallowing the rest of a big file,
            # or one monstrous line. Arrow cannot go on; every line from the first one it did not
            # deliver is read on its own, so each lands or is quarantined by its own line number.
            self.tracker.pending = []
            for _ in self._take_lines(self.reread(recover_from)):
                yield from self._emit(final=False)
        elif stream.quotes % 2 and not self.tracker.pending:
            self._check_unclosed_quote()
        self._quarantine_bad(self.tracker.take_rest())
        if self.data_rows == 0:
            raise FileRejected(f"{self.source_file}: no data rows after the header")
        yield from self._emit(final=True)

    def _take(
        self, batch: pa.RecordBatch, check_encoding: bool, check_nul: bool, delimiter_only: set[int]
    ) -> None:
        n = batch.num_rows
        spans = np.ones(n, dtype=np.int64)
        total_length = np.zeros(n, dtype=np.int64)
        for col in batch.columns:
            breaks, lengths = _value_stats(col)
            spans += breaks
            total_length += lengths
        lines, bad_rows = self.tracker.take_batch(spans)
        self._quarantine_bad(bad_rows)
        if n == 0:
            return
        blank = total_length == 0
        if delimiter_only and blank.any():
            self._quarantine_delimiters_only(lines[blank], delimiter_only)
        repeated = self._quarantine_repeated_header(batch, lines)
        if repeated is not None:
            blank |= repeated
        checks = [c for c, on in ((_ENCODING_CHECK, check_encoding), (_NUL_CHECK, check_nul)) if on]
        garbled = self._quarantine_garbled(batch, lines, checks) if checks else None
        self.last_span = int(spans[-1])
        self.last_kept = not blank[-1] and not (garbled is not None and garbled[-1].as_py())
        out = pa.RecordBatch.from_arrays(
            [batch.column(i) for i in self.picks] + [repeat_string(self.source_file, n), int64_array(lines)],
            schema=self.schema,
        )
        if garbled is not None or blank.any():
            drop = pc.not_equal(int64_array(blank.astype(np.int64)), 0)
            if garbled is not None:
                drop = pc.or_(drop, garbled)
            out = out.filter(pc.invert(drop))
        self.data_rows += out.num_rows
        if out.num_rows:
            self.buffered.append(out)
            self.buffered_rows += out.num_rows

    def _check_unclosed_quote(self) -> None:
        """Recover the lines the last row swallowed through a quote that is never closed.

        Arrow accepts a quoted field that runs to the end of the file; the tell-tales are an odd
        number of quote characters in the file and a last record spanning several lines. The line
        the quote opens on is quarantined; every line after it is read again on its own, so each
        lands or is quarantined by its own line number.
        """
        if not (self.last_kept and self.last_span > 1 and self.buffered_rows):
            return
        table = pa.Table.from_batches(self.buffered, schema=self.schema)
        last = table.slice(table.num_rows - 1).to_pylist()[0]
        rest = table.slice(0, table.num_rows - 1)
        self.buffered = rest.to_batches()
        self.buffered_rows = rest.num_rows
        self.data_rows -= 1
        line = int(last[SOURCE_LINE])
        numbered = self.reread(line)
        for number, text, _ in numbered:
            self._bad_line(number, text, "unclosed_quote", "a quote opened on this line is never closed")
            break
        for _ in self._take_lines(numbered):
            pass

    def _take_lines(self, numbered: Iterator[tuple[int, str, bool]]) -> Iterator[None]:
        """Land or quarantine physical lines one by one, each parsed as a record of its own.

        For the lines Arrow could not delimit (after a quote that is never closed). The same rules as
        for Arrow's rows: blank lines skipped; wrong field count, a row of delimiters, the header again,
        undecodable bytes or a NUL quarantined; a line longer than a parse block quarantined unread.
        Yields each time :attr:`batch_rows` good rows were buffered (the caller emits them).
        """
        good: list[tuple[int, list[str]]] = []
        for number, text, whole in numbered:
            if not whole:
                self._bad_line(
                    number, text, "line_too_long", f"a line longer than {BLOCK_SIZE:,} characters (not read)"
                )
                continue
            if not text.strip() and self.delimiter not in text:
                continue  # a blank line, as Arrow skips it
            if "\x00" in text:
                self._bad_line(number, text, _NUL_CHECK[1], _NUL_CHECK[2])
                continue
            try:
                fields = next(csv.reader([text], delimiter=self.delimiter, strict=True))
            except (csv.Error, StopIteration) as exc:
                self._bad_line(number, text, "unclosed_quote", f"not valid CSV on its own: {exc}")
                continue
            if len(fields) != len(self.names):
                self._bad_line(
                    number, text, "field_count", f"expected {len(self.names)} fields, found {len(fields)}"
                )
            elif not any(f.strip() for f in fields):
                self._bad_line(number, text, "empty_row", "a row of delimiters only: every field is empty")
            elif [normalize_header(f) for f in fields] == self.names:
                self._bad_line(number, text, "repeated_header", "the header row again, inside the data")
            elif REPLACEMENT in text:
                self._bad_line(number, text, _ENCODING_CHECK[1], _ENCODING_CHECK[2])
            else:
                good.append((number, fields))
                if len(good) >= self.batch_rows:
                    self._buffer_lines(good)
                    good = []
                    yield None
        if good:
            self._buffer_lines(good)
            yield None

    def _buffer_lines(self, good: list[tuple[int, list[str]]]) -> None:
        arrays = [pa.array([fields[i] for _, fields in good], pa.string()) for i in self.picks]
        arrays += [repeat_string(self.source_file, len(good)), int64_array(np.array([n for n, _ in good]))]
        self.buffered.append(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.buffered_rows += len(good)
        self.data_rows += len(good)

    def _bad_line(self, line: int, text: str, rule: str, reason: str) -> None:
        self.quarantine.append(self._entry(line, text, rule, reason))
        self.data_rows += 1

    def _quarantine_delimiters_only(self, blank_lines: np.ndarray, delimiter_only: set[int]) -> None:
        """A row of delimiters and nothing else is a row that lost its values, not a blank line."""
        for line in (int(x) for x in blank_lines if int(x) in delimiter_only):
            delimiter_only.discard(line)
            self.quarantine.append(
                self._entry(
                    line,
                    self.delimiter * (len(self.names) - 1),
                    "empty_row",
                    "a row of delimiters only: every field is empty",
                )
            )
            self.data_rows += 1

    def _quarantine_repeated_header(self, batch: pa.RecordBatch, lines: np.ndarray) -> np.ndarray | None:
        """Quarantine rows that repeat the header (files concatenated with their headers); their mask."""
        if batch.num_columns != len(self.header):
            return None
        # The header again as another export writes it: a BOM (files concatenated byte by byte), other
        # case or spacing. Candidates by the first name (one kernel per batch), then compared normalised.
        first = self.header[0].replace("\ufeff", "").strip()
        col0 = batch.column(0)
        if first:
            same = pc.and_(
                pc.match_substring(col0, first, ignore_case=True),
                pc.less_equal(pc.utf8_length(col0), len(first) + 8),
            )
        else:
            same = pc.equal(col0, self.header[0])
        if not pc.any(same).as_py():  # the usual case
            return None
        mask = np.zeros(batch.num_rows, dtype=bool)
        for i in np.flatnonzero(same.to_numpy(zero_copy_only=False)):
            values = [str(col[int(i)].as_py()) for col in batch.columns]
            mask[i] = [normalize_header(v) for v in values] == self.names
        for i in np.flatnonzero(mask):
            self.quarantine.append(
                self._entry(
                    int(lines[i]),
                    _as_csv_line(self.header, self.delimiter),
                    "repeated_header",
                    "the header row again, inside the data (files joined with their headers?)",
                )
            )
            self.data_rows += 1
        return mask if mask.any() else None

    def _quarantine_garbled(
        self, batch: pa.RecordBatch, lines: np.ndarray, checks: list[tuple[str, str, str]]
    ) -> pa.Array:
        """Quarantine rows holding a character of ``checks`` (U+FFFD, NUL), once each; their mask."""
        garbled: pa.Array | None = None
        for needle, _, _ in checks:
            for col in batch.columns:
                hit = pc.match_substring(col, needle)
                garbled = hit if garbled is None else pc.or_(garbled, hit)
        assert garbled is not None
        for i in np.flatnonzero(garbled.to_numpy(zero_copy_only=False)):
            values = [str(batch.column(j)[int(i)].as_py()) for j in range(batch.num_columns)]
            needle, rule, reason = next(c for c in checks if any(c[0] in v for v in values))
            self.quarantine.append(
                self._entry(int(lines[i]), _as_csv_line(values, self.delimiter), rule, reason)
            )
            self.data_rows += 1
        return garbled

    def _emit(self, final: bool) -> Iterator[CsvChunk]:
        """Yield full ``batch_rows`` chunks (and, when ``final``, the remainder)."""
        table = pa.Table.from_batches(self.buffered, schema=self.schema)
        offset = 0
        # Before the end, keep at least one row back: the last row of the file may still be
        # quarantined (see _check_unclosed_quote).
        while table.num_rows - offset > self.batch_rows or (final and offset < table.num_rows):
            size = min(self.batch_rows, table.num_rows - offset)
            rows = table.slice(offset, size).combine_chunks().to_batches()
            yield CsvChunk(rows[0] if rows else _empty(self.schema), self._drain_quarantine())
            offset += size
        rest = table.slice(offset)
        self.buffered = rest.to_batches()
        self.buffered_rows = rest.num_rows
        # Quarantine with no rows to ride on: a run of bad rows, or bad rows at the end.
        if self.quarantine and (final or len(self.quarantine) >= self.batch_rows):
            yield CsvChunk(_empty(self.schema), self._drain_quarantine())

    def _drain_quarantine(self) -> list[dict[str, str]]:
        out, self.quarantine = self.quarantine, []
        return out


# (character, rule, reason) of the rows quarantined for what a value holds.
_ENCODING_CHECK = (
    REPLACEMENT,
    "encoding",
    "bytes that are not valid in the file's encoding (shown as U+FFFD)",
)
_NUL_CHECK = ("\x00", "nul_byte", "a NUL byte inside a value (binary data or a damaged file, not text)")


def read_lines(text: TextIO, count: int, max_chars: int = BLOCK_SIZE) -> tuple[list[str], list[int]]:
    """Up to ``count`` lines of ``text`` (line breaks kept), each holding at most ``max_chars``.

    A line longer than that (a binary blob, a file with no line breaks) comes as its first
    ``max_chars`` characters and the rest of it is skipped unread, so one monstrous line cannot
    take the memory of the step; the second list gives the positions of those lines.
    """
    readline = text.readline
    lines: list[str] = []
    cut: list[int] = []
    while len(lines) < count and (line := readline(max_chars)):
        if len(line) == max_chars and not line.endswith(("\n", "\r")):
            cut.append(len(lines))
            while (
                (rest := readline(max_chars)) and len(rest) == max_chars and not rest.endswith(("\n", "\r"))
            ):
                pass
        lines.append(line)
    return lines, cut


def _physical_lines(path: Path, encoding: str, start: int) -> Iterator[tuple[int, str, bool]]:
    """``(line number, text, whole)`` of the file's lines from ``start`` on, split as the line count
    splits them (``\\r\\n``, ``\\r`` or ``\\n``), decoded as the reader decodes them; see
    :func:`read_lines` for ``whole`` (False: a line cut short)."""
    if codecs.lookup(encoding).name == "utf-8":
        encoding = "utf-8-sig"
    with open(path, encoding=encoding, errors="replace", newline="") as text:
        number = 0
        while True:
            lines, cut = read_lines(text, 4096)
            if not lines:
                return
            for i, line in enumerate(lines):
                number += 1
                if number >= start:
                    yield number, line.rstrip("\r\n"), i not in cut


def _value_stats(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per value of a string array: line breaks inside it, and its length in bytes.

    Works on the raw offsets and data buffers with numpy: Arrow's substring kernels cost more than
    the parse itself, and almost every value has no line break at all.
    """
    n = len(col)
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + n + 1]
    lengths = np.diff(offsets).astype(np.int64)
    breaks = np.zeros(n, dtype=np.int64)
    data_buffer = col.buffers()[2]
    if n == 0 or data_buffer is None:
        return breaks, lengths
    start, end = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(data_buffer, dtype=np.uint8)[start:end]
    lf = np.flatnonzero(data == 10)
    if len(lf):
        breaks += np.bincount(np.searchsorted(offsets, lf + start, side="right") - 1, minlength=n)
    cr = np.flatnonzero(data == 13)
    if len(cr):
        owner = np.searchsorted(offsets, cr + start, side="right") - 1
        after = cr + 1
        # '\r\n' was counted once as '\n'; only a '\r' not followed by '\n' in its value adds a line.
        followed = (after < len(data)) & (after + start < offsets[owner + 1])
        followed[followed] = data[after[followed]] == 10
        lone = owner[~followed]
        if len(lone):
            breaks += np.bincount(lone, minlength=n)
    return breaks, lengths


def int64_array(values: np.ndarray) -> pa.Array:
    # From buffers: pa.array() on numpy input imports pandas, which costs seconds on first use.
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def repeat_string(value: str, n: int) -> pa.Array:
    """A string array of ``n`` copies of ``value`` (built from buffers: pa.repeat is slow for strings)."""
    encoded = value.encode("utf-8")
    offsets = np.arange(n + 1, dtype=np.int32) * len(encoded)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(encoded * n))


def _empty(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)


def _read_declared(path: Path, declared: Dataset, read: FileRead) -> Iterator[CsvChunk]:
    assert read.dialect is not None  # a text format: its dialect is detected before reading
    return read_csv_batches(
        path,
        columns=declared.columns,
        source_file=read.source_file,
        source=read.source,
        dataset=read.dataset,
        batch_rows=read.batch_rows,
        encoding=read.dialect.encoding,
        delimiter=read.dialect.delimiter,
        drift=read.drift,
    )


FILE_FORMATS.add("csv", FileFormat(read=_read_declared, text=True))
