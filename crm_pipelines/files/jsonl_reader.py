"""Streaming JSON Lines to Arrow, with the same row-level quarantine as the CSV reader.

One JSON object per line. A line that is not valid UTF-8 or JSON, is not an object, or lacks a
declared field is quarantined with its line number while the rest loads; a file with no usable
row at all is rejected whole. Values come through as strings (numbers as written, nested values as
JSON text), like the CSV reader's, so the mapping step converts types for every format the same way.
"""

from __future__ import annotations

import decimal
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from crm_pipelines.files.csv_reader import MAX_RECORD_CHARS, CsvChunk, normalize_header
from crm_pipelines.files.formats import FILE_FORMATS, FileFormat, FileRead
from crm_pipelines.files.records import DriftReport, RecordBatcher
from crm_pipelines.sources import Dataset

# Longest line read: one record of a JSON Lines export is kilobytes; a line of gigabytes (a file with
# no line breaks) would be held whole, then parsed into many times its size.
MAX_LINE_BYTES = 16 * 1024 * 1024


def _bounded_lines(raw: BinaryIO) -> Iterator[tuple[bytes, bool]]:
    """``(line, whole)``: each line, or the first :data:`MAX_LINE_BYTES` of a longer one (rest skipped)."""
    while line := raw.readline(MAX_LINE_BYTES):
        if len(line) < MAX_LINE_BYTES or line.endswith(b"\n"):
            yield line, True
            continue
        while (rest := raw.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
            pass
        yield line, False


class _Object(dict[str, Any]):
    """A JSON object that remembers the keys it was given more than once (the last value would win)."""

    repeated: tuple[str, ...] = ()

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _Object:
        obj = cls(pairs)
        if len(obj) != len(pairs):
            seen: set[str] = set()
            repeated: list[str] = []
            for key, _ in pairs:
                if key in seen:
                    repeated.append(key)
                seen.add(key)
            obj.repeated = tuple(repeated)
        return obj


def read_jsonl_batches(
    path: Path,
    *,
    columns: list[str],
    source_file: str,
    source: str,
    dataset: str,
    batch_rows: int = 65_536,
    drift: DriftReport | None = None,
) -> Iterator[CsvChunk]:
    """Stream a JSON Lines file as Arrow batches of string columns, quarantining broken lines.

    Args:
        path: Local ``.jsonl`` file (UTF-8, a BOM is ignored).
        columns: Required fields; keys are normalised like CSV headers (see ``normalize_header``).
        source_file: File name for lineage and quarantine ``record_id``.
        source: Quarantine ``source``.
        dataset: Quarantine ``entity``.
        batch_rows: Rows per yielded chunk.
        drift: Receives the names of fields the drop does not declare.

    Raises:
        FileRejected: no usable row in the whole file (raised at the end).
    """
    batcher = RecordBatcher(
        columns=columns,
        source_file=source_file,
        source=source,
        dataset=dataset,
        batch_rows=batch_rows,
        drift=drift,
        unit="line",
    )
    wanted = set(batcher.wanted)
    with open(path, "rb") as raw:
        for number, (data, whole) in enumerate(_bounded_lines(raw), start=1):
            if number == 1:
                data = data.removeprefix(b"\xef\xbb\xbf")
            if not whole:
                batcher.quarantine(
                    number,
                    data[:MAX_RECORD_CHARS].decode("utf-8", errors="replace"),
                    "line_too_long",
                    f"a line longer than {MAX_LINE_BYTES:,} bytes (not read)",
                )
                continue
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                batcher.quarantine(
                    number, data.decode("utf-8", errors="replace").rstrip("\r\n"), "encoding", str(exc)
                )
                continue
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            try:
                # Decimal: "100.00" stays "100.00" (a float would print 100.0).
                record = json.loads(text, parse_float=decimal.Decimal, object_pairs_hook=_Object.from_pairs)
            except json.JSONDecodeError as exc:
                batcher.quarantine(number, text, "malformed_json", exc.msg)
                continue
            except (ValueError, RecursionError) as exc:
                # Valid JSON Python will not build: an integer of thousands of digits (int conversion
                # limit), nesting deeper than the interpreter's recursion limit. Only this line is lost.
                batcher.quarantine(number, text, "malformed_json", f"{type(exc).__name__}: {exc}")
                continue
            twice = sorted({normalize_header(k) for k in getattr(record, "repeated", ())} & wanted)
            if twice:
                batcher.observe(record)
                batcher.quarantine(
                    number, text, "repeated_field", f"field(s) {', '.join(twice)} occur more than once"
                )
                continue
            if not isinstance(record, dict):
                batcher.quarantine(
                    number, text, "not_an_object", f"expected a JSON object, found {type(record).__name__}"
                )
                continue
            batcher.add(number, record, text)
            if batcher.full():
                yield batcher.flush()
    yield from batcher.finish()


def _read_declared(path: Path, declared: Dataset, read: FileRead) -> Iterator[CsvChunk]:
    return read_jsonl_batches(
        path,
        columns=declared.columns,
        source_file=read.source_file,
        source=read.source,
        dataset=read.dataset,
        batch_rows=read.batch_rows,
        drift=read.drift,
    )


FILE_FORMATS.add("jsonl", FileFormat(read=_read_declared))
