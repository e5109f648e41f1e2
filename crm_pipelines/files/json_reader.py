"""Streaming JSON documents to Arrow: the records sit in one array somewhere inside the document.

``{"data": {"invoices": [{...}, {...}]}}`` with ``records_path: data.invoices``. The document is
parsed incrementally (ijson, on its C backend), one record at a time, so a multi-gigabyte export
never sits in memory. A record that is not an object or lacks a declared field is quarantined
with its number (a JSON document has no meaningful lines: exports are often a single line), and
``_source_line`` holds that number. A document that is not valid JSON is rejected whole, since
nothing after the error can be trusted; so is one without records at the path.

Records are built here from ijson's event stream rather than by ``ijson.items``, for two hostile
inputs: ``items`` keeps a prefix string per open level, so a record nested 100,000 levels deep takes
gigabytes (here a record nested past :data:`MAX_RECORD_DEPTH` is quarantined and not built further,
and nesting outside the records costs one list entry per level), and a key repeated in one record
(``"amount": 1, "amount": 1000``) would silently keep the last value (here it is quarantined like
XML's repeated element). An integer of thousands of digits crashes ijson's C backend (Python refuses
to convert it and the backend does not check), so the bytes are screened for such a run first and
the document is rejected with that reason.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import ijson

from crm_pipelines.files.csv_reader import CsvChunk, FileRejected, normalize_header
from crm_pipelines.files.formats import FILE_FORMATS, FileFormat, FileRead
from crm_pipelines.files.records import DriftReport, RecordBatcher, as_text
from crm_pipelines.sources import Dataset

# Bytes ijson reads per step.
READ_CHUNK = 1024 * 1024
# Levels of arrays and objects one record may nest (as for XML records).
MAX_RECORD_DEPTH = 64
# Digits in a row that reject the document: below Python's int conversion limit (4,300 by default).
MAX_DIGITS = 4000
_DIGITS = b"0123456789"
_LONG_DIGITS = re.compile(rb"[0-9]{%d}" % MAX_DIGITS)
_TOO_DEEP = object()  # a record nested past MAX_RECORD_DEPTH, not built
_STARTS = frozenset(("start_map", "start_array"))
_ENDS = frozenset(("end_map", "end_array"))
_ARRAY = object()  # an open array outside the records (a map's entry holds its current key)


class _DigitScreen(io.RawIOBase):
    """Passes a file's bytes through, raising :class:`FileRejected` at a run of :data:`MAX_DIGITS` digits."""

    def __init__(self, raw: BinaryIO, source_file: str) -> None:
        super().__init__()
        self._raw = raw
        self._source_file = source_file
        self._run = 0  # digits at the end of what was read so far

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        lead = len(data) - len(data.lstrip(_DIGITS))
        if lead == len(data):
            self._run += lead
        else:
            if self._run + lead >= MAX_DIGITS or _LONG_DIGITS.search(data):
                self._run = MAX_DIGITS
            else:
                self._run = len(data) - len(data.rstrip(_DIGITS))
        if self._run >= MAX_DIGITS:
            raise FileRejected(
                f"{self._source_file}: a run of more than {MAX_DIGITS:,} digits (a number no export writes, "
                "and one the JSON parser cannot convert); the document is rejected whole"
            )
        buffer[: len(data)] = data
        return len(data)


def _value(event: str, value: Any, events: Iterator[tuple[str, Any]]) -> tuple[Any, list[str]]:
    """The value that starts with ``event`` (consuming its events), and the keys its object repeats.

    Past :data:`MAX_RECORD_DEPTH` levels nothing more is built and the value is ``_TOO_DEEP``.
    """
    if event not in _STARTS:
        return value, []
    root: Any = {} if event == "start_map" else []
    containers: list[Any] = [root]
    parent: Any = root
    key = ""
    keys: list[str] = []  # the keys being filled in the enclosing objects
    repeated: list[str] = []
    skipped = 0  # levels open past the limit
    too_deep = False
    for event, value in events:
        if skipped:
            skipped += 1 if event in _STARTS else -1 if event in _ENDS else 0
            continue
        if event == "map_key":
            key = value
            if parent is root and key in root:
                repeated.append(key)
            continue
        if event in _ENDS:
            containers.pop()
            if not containers:
                break
            parent = containers[-1]
            key = keys.pop()
            continue
        if event in _STARTS:
            if len(containers) >= MAX_RECORD_DEPTH:
                skipped, too_deep = 1, True
                continue
            child: Any = {} if event == "start_map" else []
            if type(parent) is dict:
                parent[key] = child
            else:
                parent.append(child)
            containers.append(child)
            keys.append(key)
            parent = child
            continue
        if type(parent) is dict:
            parent[key] = value
        else:
            parent.append(value)
    return (_TOO_DEEP if too_deep else root), repeated


def _records(raw: io.RawIOBase, path: list[str]) -> Iterator[tuple[Any, list[str]]]:
    """The elements of the array at the keys ``path`` ([]: the document is the array), one at a time."""
    events: Iterator[tuple[str, Any]] = iter(ijson.basic_parse(raw, buf_size=READ_CHUNK))
    open_: list[object] = []  # per open container outside the records: _ARRAY, or the map's current key
    depth = len(path)
    for event, value in events:
        if len(open_) == depth + 1 and open_[-1] is _ARRAY and event != "end_array" and open_[:depth] == path:
            yield _value(event, value, events)
        elif event == "map_key":
            open_[-1] = value
        elif event == "start_map":
            open_.append(None)
        elif event == "start_array":
            open_.append(_ARRAY)
        elif event in ("end_map", "end_array"):
            open_.pop()


def read_json_batches(
    path: Path,
    *,
    columns: list[str],
    source_file: str,
    source: str,
    dataset: str,
    records_path: str | None = None,
    batch_rows: int = 65_536,
    drift: DriftReport | None = None,
) -> Iterator[CsvChunk]:
    """Stream the records of a JSON document as Arrow batches of string columns.

    Args:
        path: Local JSON file (UTF-8; a BOM is ignored).
        columns: Required fields; keys are normalised like CSV headers.
        source_file: File name for lineage and quarantine ``record_id``.
        source: Quarantine ``source``.
        dataset: Quarantine ``entity``.
        records_path: Dot path of the array holding the records, e.g. ``data.invoices``; None
            when the document itself is the array.
        batch_rows: Rows per yielded chunk.
        drift: Receives the names of fields the drop does not declare.

    Raises:
        FileRejected: not valid JSON (the error's position is in the reason), no records at
            ``records_path``, or no usable record at all.
    """
    where = f" at {records_path or 'the top level'}"
    batcher = RecordBatcher(
        columns=columns,
        source_file=source_file,
        source=source,
        dataset=dataset,
        batch_rows=batch_rows,
        drift=drift,
        unit="record",
    )
    number = 0
    wanted = set(batcher.wanted)
    with open(path, "rb") as raw:
        if raw.read(3) != b"\xef\xbb\xbf":
            raw.seek(0)
        try:
            # Numbers come as Decimal (use_float=False) and keep their written form ("100.00").
            steps = records_path.split(".") if records_path else []
            for number, (record, repeated) in enumerate(
                _records(_DigitScreen(raw, source_file), steps), start=1
            ):
                twice = sorted({normalize_header(k) for k in repeated} & wanted)
                if record is _TOO_DEEP:
                    batcher.quarantine(
                        number,
                        f"(a record nested more than {MAX_RECORD_DEPTH} levels deep, not kept)",
                        "nesting_depth",
                        f"the record nests arrays or objects more than {MAX_RECORD_DEPTH} levels deep",
                    )
                elif isinstance(record, dict) and twice:
                    batcher.observe(record)
                    batcher.quarantine(
                        number,
                        as_text(record) or "",
                        "repeated_field",
                        f"field(s) {', '.join(twice)} occur more than once",
                    )
                elif isinstance(record, dict):
                    batcher.add(number, record)
                else:
                    batcher.quarantine(
                        number,
                        as_text(record) or "null",
                        "not_an_object",
                        f"expected a JSON object, found {type(record).__name__}",
                    )
                if batcher.full():
                    yield batcher.flush()
        except ijson.JSONError as exc:
            raise FileRejected(
                f"{source_file}: not valid JSON after record {number}: {exc}; the document is rejected "
                "whole (nothing after a syntax error can be trusted)"
            ) from exc
    if number == 0:
        raise FileRejected(
            f"{source_file}: no records{where} (the path is missing, empty or not an array: "
            "a changed layout?)"
        )
    yield from batcher.finish(where=where)


# A dot path through the document to the records' array, e.g. data.invoices.
_RECORDS_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*")


def _check(declared: Dataset) -> Dataset:
    if declared.records_path is not None and not _RECORDS_PATH.fullmatch(declared.records_path):
        raise ValueError(
            f"records_path {declared.records_path!r} must be keys joined by dots, e.g. data.invoices"
        )
    return declared


def _read_declared(path: Path, declared: Dataset, read: FileRead) -> Iterator[CsvChunk]:
    return read_json_batches(
        path,
        columns=declared.columns,
        source_file=read.source_file,
        source=read.source,
        dataset=read.dataset,
        batch_rows=read.batch_rows,
        records_path=declared.records_path,
        drift=read.drift,
    )


FILE_FORMATS.add("json", FileFormat(read=_read_declared, settings=("records_path",), check=_check))
