"""Streaming fixed-width files to Arrow by a declared layout, with line-level quarantine.

Positions count characters after decoding (a cp1252 ``é`` is one character, as in the writer's
COBOL or report layout), from 1. Lines are read a batch at a time and cut into fields with Arrow's
string kernels, so memory stays flat and the Python work per line is one ``rstrip``; a line longer
than a megabyte is quarantined without being held. A line of
the wrong length (a truncated line, or one a different writer padded otherwise) or with bytes
that are not valid in the encoding is quarantined with its line number; a blank line is skipped.
With ``header_names`` the header line is checked against the layout, so a file whose columns
moved is rejected whole rather than loaded shifted.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crm_pipelines.files.csv_reader import (
    BLOCK_SIZE,
    MAX_RECORD_CHARS,
    REPLACEMENT,
    CsvChunk,
    DriftReport,
    FileRejected,
    int64_array,
    normalize_header,
    output_schema,
    read_lines,
    repeat_string,
)
from crm_pipelines.files.formats import FILE_FORMATS, FileFormat, FileRead
from crm_pipelines.sources import Dataset, FixedWidthLayout


def _without_line_break(line: str) -> str:
    return line.rstrip("\r\n")


def check_header(line: str, layout: FixedWidthLayout, source_file: str) -> list[str]:
    """Raise :class:`FileRejected` if a field's label is not at its position; return undeclared labels.

    Undeclared labels are the words in the header outside every declared field: new columns.
    """
    for f in layout.fields:
        found = line[f.start - 1 : f.end].strip()
        expected = f.header if f.header is not None else f.name
        if normalize_header(found) != normalize_header(expected):
            raise FileRejected(
                f"{source_file}: the layout changed: expected {expected!r} at positions "
                f"{f.start}-{f.end} of the header, found {found!r} (header: {line.strip()!r})"
            )
    outside = list(line)
    for f in layout.fields:
        outside[f.start - 1 : f.end] = " " * f.width
    return [normalize_header(word) for word in "".join(outside).split()]


def read_fixed_width_batches(
    path: Path,
    *,
    layout: FixedWidthLayout,
    source_file: str,
    source: str,
    dataset: str,
    encoding: str = "utf-8",
    batch_rows: int = 65_536,
    drift: DriftReport | None = None,
) -> Iterator[CsvChunk]:
    """Stream a fixed-width file as Arrow batches of string columns (values trimmed of padding).

    Args:
        path: Local file.
        layout: Field positions, header lines, and the line length check.
        source_file: File name for ``_source_file`` and quarantine ``record_id``.
        source: Quarantine ``source``.
        dataset: Quarantine ``entity``.
        encoding: Text encoding; undecodable bytes quarantine their line.
        batch_rows: Lines per yielded chunk.
        drift: Receives header labels outside the layout, or notes data beyond its last field.

    Raises:
        FileRejected: fewer lines than the header, a header that does not match the layout, or
            no usable line at all (raised at the end; the reason gives the line lengths found).
    """
    drift = drift if drift is not None else DriftReport()
    names = [normalize_header(f.name) for f in layout.fields]
    schema = output_schema(names)
    needed = layout.line_length or layout.end
    if codecs.lookup(encoding).name == "utf-8":
        encoding = "utf-8-sig"
    usable = quarantined = 0
    lengths_seen: dict[int, int] = {}
    with open(path, "rb") as raw:
        # newline="": lines split at \n, \r\n and \r, and the break is kept (then stripped) so
        # a stray \r inside a line cannot shift the positions of what follows it.
        text = io.TextIOWrapper(raw, encoding=encoding, errors="replace", newline="")
        # Bounded: a line of megabytes (no fixed-width record) is quarantined without being held.
        header = [_without_line_break(line) for line in read_lines(text, layout.header_lines)[0]]
        if len(header) < layout.header_lines:
            raise FileRejected(
                f"{source_file}: {len(header)} line(s), but the layout has {layout.header_lines} header line(s)"
            )
        if layout.header_names:
            drift.add(check_header(header[-1], layout, source_file))
        number = layout.header_lines  # line number of the last line read
        longer = False
        while True:
            raw_lines, cut = read_lines(text, batch_rows)
            if not raw_lines:
                break
            lines = [_without_line_break(line) for line in raw_lines]
            too_long = np.zeros(len(lines), dtype=bool)
            too_long[cut] = True
            first = number + 1
            number += len(lines)
            values = pa.array(lines, type=pa.string())
            lengths = pc.utf8_length(values).to_numpy(zero_copy_only=False)
            blank = pc.utf8_length(pc.utf8_trim_whitespace(values)).to_numpy(zero_copy_only=False) == 0
            garbled = pc.match_substring(values, REPLACEMENT).to_numpy(zero_copy_only=False)
            # A NUL is no character of a report line: a crashed writer's padding, binary data.
            nul = pc.match_substring(values, "\x00").to_numpy(zero_copy_only=False)
            wrong = lengths != needed if layout.line_length else lengths < needed
            bad = ((wrong | garbled | nul) & ~blank) | too_long
            quarantine = []
            for i in np.flatnonzero(bad):
                line_no = first + int(i)
                line = lines[int(i)]
                if too_long[i]:
                    rule, reason = "line_too_long", f"a line longer than {BLOCK_SIZE:,} characters (not read)"
                elif nul[i]:
                    rule, reason = (
                        "nul_byte",
                        "a NUL byte in the line (binary data or a damaged file, not text)",
                    )
                elif garbled[i]:
                    rule, reason = (
                        "encoding",
                        "bytes that are not valid in the file's encoding (shown as U+FFFD)",
                    )
                else:
                    lengths_seen[int(lengths[i])] = lengths_seen.get(int(lengths[i]), 0) + 1
                    rule = "line_length"
                    reason = f"the line has {lengths[i]} characters, the layout " + (
                        f"{needed}" if layout.line_length else f"needs at least {needed}"
                    )
                quarantine.append(
                    {
                        "source": source,
                        "entity": dataset,
                        "record_id": f"{source_file}:{line_no}",
                        "record": line[:MAX_RECORD_CHARS],
                        "rule": rule,
                        "reason": f"line {line_no}: {reason}",
                    }
                )
            keep = ~bad & ~blank
            good = values.take(int64_array(np.flatnonzero(keep)))
            n = len(good)
            if not layout.line_length and n and not longer and (lengths[keep] > needed).any():
                longer = True
                drift.add([f"(characters after position {needed})"])
            columns = [
                pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(good, f.start - 1, f.end))
                for f in layout.fields
            ]
            rows = pa.RecordBatch.from_arrays(
                [*columns, repeat_string(source_file, n), int64_array(first + np.flatnonzero(keep))],
                schema=schema,
            )
            usable += n
            quarantined += len(quarantine)
            if n or quarantine:
                yield CsvChunk(rows=rows, quarantine=quarantine)
    if usable == 0:
        found = ", ".join(f"{length} ({count} lines)" for length, count in sorted(lengths_seen.items()))
        raise FileRejected(
            f"{source_file}: no usable rows: {quarantined} line(s) quarantined"
            + (
                f"; line lengths found: {found}, the layout needs {needed} (a changed layout?)"
                if found
                else ""
            )
        )


def _check(declared: Dataset) -> Dataset:
    if declared.layout is None:
        raise ValueError("format fixed_width needs a layout (fields with name, start and width)")
    names = [f.name for f in declared.layout.fields]
    if declared.columns and declared.columns != names:
        raise ValueError("format fixed_width takes its columns from layout.fields; leave columns out")
    declared.columns = names
    return declared


def _read_declared(path: Path, declared: Dataset, read: FileRead) -> Iterator[CsvChunk]:
    assert declared.layout is not None  # checked with the declaration
    assert read.dialect is not None  # a text format: its encoding is detected before reading
    return read_fixed_width_batches(
        path,
        layout=declared.layout,
        source_file=read.source_file,
        source=read.source,
        dataset=read.dataset,
        batch_rows=read.batch_rows,
        encoding=read.dialect.encoding,
        drift=read.drift,
    )


FILE_FORMATS.add(
    "fixed_width", FileFormat(read=_read_declared, text=True, settings=("layout",), check=_check)
)
