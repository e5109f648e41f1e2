"""File formats a drop can declare (``format:`` in sources.yaml), each registered by its reader module.

A format is a reader plus what it needs: whether the file's text encoding (and delimiter) is detected
per file, which of a drop's settings it reads (``records_path``, ``record_path``, ``layout``) and how
they are checked. :mod:`crm_pipelines.files.readers` imports the built-in readers, so a new format is
one reader module that calls ``FILE_FORMATS.add`` and one import there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from crm_pipelines.registry import Registry

if TYPE_CHECKING:
    from crm_pipelines.files.csv_reader import CsvChunk, CsvDialect, DriftReport
    from crm_pipelines.sources import Dataset

__all__ = ["FILE_FORMATS", "FORMAT_SETTINGS", "FileFormat", "FileRead"]

# The drop settings that belong to one format or another; a format names the ones it reads.
FORMAT_SETTINGS = ("records_path", "record_path", "layout")


@dataclass(frozen=True)
class FileRead:
    """One file being read: where its rows and quarantined lines say they come from, and how to read it.

    Attributes:
        source_file: File name for lineage and quarantine ``record_id``.
        source: Quarantine ``source``.
        dataset: Quarantine ``entity``.
        dialect: Encoding and delimiter, for the formats that need them (:attr:`FileFormat.text`).
        drift: Receives the columns the file has and the drop does not declare.
        batch_rows: Rows per chunk.
    """

    source_file: str
    source: str
    dataset: str
    dialect: CsvDialect | None
    drift: DriftReport
    batch_rows: int = 65_536


@dataclass(frozen=True)
class FileFormat:
    """A format's reader and what it needs.

    Attributes:
        read: Streams a local, unpacked file in chunks of rows and quarantined lines; raises
            ``FileRejected`` when the file is unusable as a whole.
        text: The encoding (and delimiter) is declared or detected per file.
        settings: The drop settings (of :data:`FORMAT_SETTINGS`) this format reads.
        check: Validates a drop of this format and returns it (possibly completed, e.g. the columns
            a fixed-width layout names); raises ValueError naming the bad setting.
    """

    read: Callable[[Path, Dataset, FileRead], Iterator[CsvChunk]]
    text: bool = False
    settings: tuple[str, ...] = ()
    check: Callable[[Dataset], Dataset] | None = None


# Every format a drop can declare, by name.
FILE_FORMATS: Registry[FileFormat] = Registry("file format")
