"""One entry point over the drop formats: a local, unpacked file in, Arrow chunks out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from crm_pipelines.files.csv_reader import CsvChunk, CsvDialect, DriftReport, detect_dialect, read_csv_batches
from crm_pipelines.files.fixed_width_reader import read_fixed_width_batches
from crm_pipelines.files.json_reader import read_json_batches
from crm_pipelines.files.jsonl_reader import read_jsonl_batches
from crm_pipelines.files.xml_reader import read_xml_batches
from crm_pipelines.sources import Dataset


def text_dialect(path: Path, declared: Dataset) -> CsvDialect | None:
    """Encoding and delimiter for the text formats (declared, else detected); None for the others.

    JSON is UTF-8 by definition and XML declares its own encoding, so they need none.
    """
    if declared.format not in ("csv", "fixed_width"):
        return None
    detected = detect_dialect(path)
    return CsvDialect(
        encoding=declared.encoding or detected.encoding,
        delimiter=declared.delimiter or detected.delimiter,
    )


def read_file_batches(
    path: Path,
    *,
    declared: Dataset,
    source_file: str,
    source: str,
    dataset: str,
    dialect: CsvDialect | None,
    drift: DriftReport,
    batch_rows: int = 65_536,
) -> Iterator[CsvChunk]:
    """Stream ``path`` in the drop's declared format (see each reader for its rules).

    Args:
        path: Local file, already unpacked (see ``compression.unpacked``).
        declared: The drop: format, columns and the format's settings.
        source_file: File name for lineage and quarantine ``record_id``.
        source: Quarantine ``source``.
        dataset: Quarantine ``entity``.
        dialect: From :func:`text_dialect` (CSV and fixed-width).
        drift: Receives the columns the file has and the drop does not declare.
        batch_rows: Rows per chunk.

    Raises:
        FileRejected: the file is unusable as a whole (the reason says why).
    """
    if declared.format == "csv":
        assert dialect is not None
        return read_csv_batches(
            path,
            columns=declared.columns,
            source_file=source_file,
            source=source,
            dataset=dataset,
            batch_rows=batch_rows,
            encoding=dialect.encoding,
            delimiter=dialect.delimiter,
            drift=drift,
        )
    if declared.format == "jsonl":
        return read_jsonl_batches(
            path,
            columns=declared.columns,
            source_file=source_file,
            source=source,
            dataset=dataset,
            batch_rows=batch_rows,
            drift=drift,
        )
    if declared.format == "json":
        return read_json_batches(
            path,
            columns=declared.columns,
            source_file=source_file,
            source=source,
            dataset=dataset,
            batch_rows=batch_rows,
            records_path=declared.records_path,
            drift=drift,
        )
    if declared.format == "xml":
        assert declared.record_path is not None  # validated
        return read_xml_batches(
            path,
            columns=declared.columns,
            source_file=source_file,
            source=source,
            dataset=dataset,
            batch_rows=batch_rows,
            record_path=declared.record_path,
            drift=drift,
        )
    assert declared.layout is not None
    assert dialect is not None
    return read_fixed_width_batches(
        path,
        layout=declared.layout,
        source_file=source_file,
        source=source,
        dataset=dataset,
        batch_rows=batch_rows,
        encoding=dialect.encoding,
        drift=drift,
    )
