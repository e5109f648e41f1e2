"""What the record-oriented readers (JSON Lines, JSON, XML) share: rows, quarantine, drift.

Each reader turns its format into ``(position, fields)`` pairs; :class:`RecordBatcher` keeps the
declared fields as strings (the CSV reader's schema, so every format lands alike), quarantines a
record that lacks one, collects the undeclared fields as schema drift, and decides at the end
whether the file had any usable record at all.
"""

from __future__ import annotations

import decimal
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyarrow as pa

from crm_pipelines.files.csv_reader import (
    MAX_RECORD_CHARS,
    SOURCE_FILE,
    SOURCE_LINE,
    CsvChunk,
    DriftReport,
    FileRejected,
    normalize_header,
    output_schema,
)

# A lone UTF-16 surrogate (JSON's "\ud800" escape) is no character: Arrow and Parquet refuse to store it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(value: str | None) -> tuple[str, str] | None:
    """(rule, reason) when a field value cannot be stored as text, else None.

    A NUL (JSON's ``\\u0000``) is binary data or damage and breaks the databases downstream; a lone
    surrogate cannot be encoded at all. The CSV reader quarantines NUL bytes the same way.
    """
    if value is None or (value.isascii() and "\x00" not in value):
        return None
    if "\x00" in value:
        return "nul_byte", "a NUL character inside a value (binary data or a damaged file, not text)"
    if _SURROGATE.search(value):
        return "encoding", "a lone UTF-16 surrogate (\\ud800-\\udfff) inside a value: not a character"
    return None


def storable(text: str) -> str:
    """``text`` with any lone surrogate replaced, so a quarantined record can always be written."""
    return text if text.isascii() or not _SURROGATE.search(text) else _SURROGATE.sub("\ufffd", text)


def _json_default(value: object) -> object:
    # Nested numbers parsed as Decimal (ijson, json.loads(parse_float=Decimal)); top-level ones
    # keep their written form through as_text, nested ones become JSON numbers again.
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def as_text(value: Any) -> str | None:
    """A field value as the string the lake keeps: text as is, numbers as written, nested as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


class RecordBatcher:
    """Collects records into Arrow batches of the declared columns, with quarantine and drift.

    Args:
        columns: Required fields (normalised like CSV headers).
        source_file: File name for ``_source_file`` and quarantine ``record_id``.
        source: Quarantine ``source``.
        dataset: Quarantine ``entity``.
        batch_rows: Rows per chunk.
        drift: Receives the undeclared field names.
        unit: What a position counts in reasons: ``line`` or ``record``.
    """

    def __init__(
        self,
        *,
        columns: list[str],
        source_file: str,
        source: str,
        dataset: str,
        batch_rows: int,
        drift: DriftReport | None,
        unit: str,
    ) -> None:
        self.wanted = [normalize_header(c) for c in columns]
        self._wanted_set = set(self.wanted)
        self.schema = output_schema(columns)
        self.source_file = source_file
        self.source = source
        self.dataset = dataset
        self.batch_rows = batch_rows
        self.drift = drift if drift is not None else DriftReport()
        self.unit = unit
        self._rows: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        self._quarantine: list[dict[str, str]] = []
        self.good = 0
        self.records = 0  # records seen, good or not (a line that is not JSON is not a record)
        self.quarantined = 0
        self._seen: set[str] = set()

    def quarantine(self, position: int, text: str, rule: str, reason: str) -> None:
        """Quarantine the record at ``position`` (its line, or its number in the file)."""
        self.quarantined += 1
        self._quarantine.append(
            {
                "source": self.source,
                "entity": self.dataset,
                "record_id": f"{self.source_file}:{position}",
                "record": storable(
                    text if len(text) <= MAX_RECORD_CHARS else text[:MAX_RECORD_CHARS] + " [truncated]"
                ),
                "rule": rule,
                "reason": f"{self.unit} {position}: {reason}",
            }
        )

    def observe(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Count a record and note its field names (for drift and the missing-column check)."""
        self.records += 1
        normalised = {normalize_header(k): v for k, v in fields.items()}
        self._seen.update(normalised)
        extra = [k for k in normalised if k not in self._wanted_set]
        if extra:
            self.drift.add(extra)
        return normalised

    def add(
        self, position: int, fields: Mapping[str, Any], text: str | Callable[[], str] | None = None
    ) -> None:
        """Take one record's fields (names normalised here); quarantine it if a declared one is missing.

        ``text`` is the record as it appeared, for the quarantine: a string, or a function that
        makes it (called only when the record is quarantined); None shows the fields as JSON.
        """
        normalised = self.observe(fields)
        missing = [c for c in self.wanted if c not in normalised]
        values = [] if missing else [as_text(normalised[name]) for name in self.wanted]
        problems = (
            []
            if missing
            else [(n, p) for n, v in zip(self.wanted, values, strict=True) if (p := text_problem(v))]
        )
        if missing or problems:
            record = text() if callable(text) else text if text is not None else as_text(dict(fields)) or ""
            if missing:
                self.quarantine(position, record, "missing_field", f"missing field(s) {', '.join(missing)}")
            else:
                name, (rule, reason) = problems[0]
                self.quarantine(position, record, rule, f"{name}: {reason}")
            return
        for name, value in zip(self.wanted, values, strict=True):
            self._rows[name].append(value)
        self._rows[SOURCE_FILE].append(self.source_file)
        self._rows[SOURCE_LINE].append(position)
        self.good += 1

    def full(self) -> bool:
        return len(self._rows[SOURCE_LINE]) >= self.batch_rows or len(self._quarantine) >= self.batch_rows

    def flush(self) -> CsvChunk:
        chunk = CsvChunk(
            rows=pa.RecordBatch.from_pydict(self._rows, schema=self.schema), quarantine=self._quarantine
        )
        self._rows = {name: [] for name in self.schema.names}
        self._quarantine = []
        return chunk

    def finish(self, *, where: str = "") -> Iterator[CsvChunk]:
        """The last chunk, or :class:`FileRejected` when no record was usable.

        A declared field that no record carries is a missing column (or a changed layout), not a
        few bad records, and the reason says so.
        """
        never = [c for c in self.wanted if c not in self._seen]
        if self.good == 0:
            detail = (
                f"required field(s) {', '.join(never)} are in none of the {self.records} record(s){where} "
                "(a missing column or a changed layout)"
                if never and self.records
                else f"{self.quarantined} record(s) quarantined{where}; required: {', '.join(self.wanted)}"
            )
            raise FileRejected(f"{self.source_file}: no usable rows: {detail}")
        if self._rows[SOURCE_LINE] or self._quarantine:
            yield self.flush()
