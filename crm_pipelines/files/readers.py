"""One entry point over the drop formats: a local, unpacked file in, Arrow chunks out.

Each format's reader registers itself in :data:`~crm_pipelines.files.formats.FILE_FORMATS`; importing
this module imports the built-in ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

# The built-in formats register themselves when their modules are imported.
from crm_pipelines.files import (  # noqa: F401
    csv_reader,
    fixed_width_reader,
    json_reader,
    jsonl_reader,
    xml_reader,
)
from crm_pipelines.files.csv_reader import CsvChunk, CsvDialect, DriftReport, detect_dialect
from crm_pipelines.files.formats import FILE_FORMATS, FileRead
from crm_pipelines.sources import Dataset

__all__ = ["FILE_FORMATS", "read_file_batches", "text_dialect"]


def text_dialect(path: Path, declared: Dataset) -> CsvDialect | None:
    """Encoding and delimiter for the text formats (declared, else detected); None for the others.

    JSON is UTF-8 by definition and XML declares its own encoding, so they need none.
    """
    if not FILE_FORMATS.get(declared.format).text:
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
        dialect: From :func:`text_dialect` (the text formats).
        drift: Receives the columns the file has and the drop does not declare.
        batch_rows: Rows per chunk.

    Raises:
        FileRejected: the file is unusable as a whole (the reason says why).
    """
    read = FileRead(
        source_file=source_file,
        source=source,
        dataset=dataset,
        dialect=dialect,
        drift=drift,
        batch_rows=batch_rows,
    )
    return FILE_FORMATS.get(declared.format).read(path, declared, read)
