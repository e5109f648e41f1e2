"""Streaming JSON documents to Arrow: the records sit in one array somewhere inside the document.

``{"data": {"invoices": [{...}, {...}]}}`` with ``records_path: data.invoices``. The document is
parsed incrementally (ijson, on its C backend), one record at a time, so a multi-gigabyte export
never sits in memory. A record that is not an object or lacks a declared field is quarantined
with its number (a JSON document has no meaningful lines: exports are often a single line), and
``_source_line`` holds that number. A document that is not valid JSON is rejected whole, since
nothing after the error can be trusted; so is one without records at the path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import ijson

from crm_pipelines.files.csv_reader import CsvChunk, FileRejected
from crm_pipelines.files.formats import FILE_FORMATS, FileFormat, FileRead
from crm_pipelines.files.records import DriftReport, RecordBatcher, as_text
from crm_pipelines.sources import Dataset

# Bytes ijson reads per step.
READ_CHUNK = 1024 * 1024


def items_prefix(records_path: str | None) -> str:
    """ijson's prefix for the elements of the array at ``records_path`` (None: the document is the array)."""
    return f"{records_path}.item" if records_path else "item"


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
    with open(path, "rb") as raw:
        if raw.read(3) != b"\xef\xbb\xbf":
            raw.seek(0)
        try:
            # use_float=False: numbers come as Decimal and keep their written form ("100.00").
            for number, record in enumerate(
                ijson.items(raw, items_prefix(records_path), buf_size=READ_CHUNK), start=1
            ):
                if isinstance(record, dict):
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
