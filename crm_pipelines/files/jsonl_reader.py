"""Streaming JSON Lines to Arrow, with the same row-level quarantine as the CSV reader.

One JSON object per line. A line that is not valid UTF-8 or JSON, is not an object, or lacks a
declared field is quarantined with its line number while the rest loads; a file with no usable
row at all is rejected whole. Values come through as strings (nested values as JSON text), like
the CSV reader's, so the mapping step converts types for every format the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from crm_pipelines.files.csv_reader import (
    MAX_RECORD_CHARS,
    SOURCE_FILE,
    SOURCE_LINE,
    CsvChunk,
    FileRejected,
    normalize_header,
    output_schema,
)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def read_jsonl_batches(
    path: Path,
    *,
    columns: list[str],
    source_file: str,
    source: str,
    dataset: str,
    batch_rows: int = 65_536,
) -> Iterator[CsvChunk]:
    """Stream a JSON Lines file as Arrow batches of string columns, quarantining broken lines.

    Args:
        path: Local ``.jsonl`` file (UTF-8, a BOM is ignored).
        columns: Required fields; keys are normalised like CSV headers (see ``normalize_header``).
        source_file: File name for lineage and quarantine ``record_id``.
        source: Quarantine ``source``.
        dataset: Quarantine ``entity``.
        batch_rows: Rows per yielded chunk.

    Raises:
        FileRejected: no usable row in the whole file (raised at the end).
    """
    wanted = [normalize_header(c) for c in columns]
    schema = output_schema(columns)
    rows: dict[str, list[Any]] = {name: [] for name in schema.names}
    quarantine: list[dict[str, str]] = []
    good = 0

    def bad(line: int, text: str, rule: str, reason: str) -> None:
        quarantine.append(
            {
                "source": source,
                "entity": dataset,
                "record_id": f"{source_file}:{line}",
                "record": text[:MAX_RECORD_CHARS],
                "rule": rule,
                "reason": f"line {line}: {reason}",
            }
        )

    def flush() -> CsvChunk:
        batch = pa.RecordBatch.from_pydict(rows, schema=schema)
        chunk = CsvChunk(rows=batch, quarantine=list(quarantine))
        for values in rows.values():
            values.clear()
        quarantine.clear()
        return chunk

    with open(path, "rb") as raw:
        for number, data in enumerate(raw, start=1):
            if number == 1:
                data = data.removeprefix(b"\xef\xbb\xbf")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad(number, data.decode("utf-8", errors="replace").rstrip("\r\n"), "encoding", str(exc))
                continue
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                bad(number, text, "malformed_json", exc.msg)
                continue
            if not isinstance(record, dict):
                bad(number, text, "not_an_object", f"expected a JSON object, found {type(record).__name__}")
                continue
            fields = {normalize_header(k): v for k, v in record.items()}
            missing = [c for c in wanted if c not in fields]
            if missing:
                bad(number, text, "missing_field", f"missing {', '.join(missing)}")
                continue
            for name in wanted:
                rows[name].append(_as_text(fields[name]))
            rows[SOURCE_FILE].append(source_file)
            rows[SOURCE_LINE].append(number)
            good += 1
            if len(rows[SOURCE_LINE]) >= batch_rows:
                yield flush()
    if good == 0:
        raise FileRejected(
            f"{source_file}: no usable rows ({len(quarantine)} line(s) quarantined; required: {', '.join(wanted)})"
        )
    if rows[SOURCE_LINE] or quarantine:
        yield flush()
