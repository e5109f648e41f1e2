"""Streaming XML to Arrow with defusedxml: records found by an element path, one at a time.

``<Invoices><Invoice>...</Invoice>...</Invoices>`` with ``record_path: Invoices/Invoice``. A
record's fields are its attributes and its child elements (nested ones flattened with ``_``:
``<Customer><Code>`` is ``customer_code``); names are matched without namespaces and normalised
like CSV headers.

Parsing goes through defusedxml's hardened expat parser, so entity declarations (billion laughs,
quadratic blow-up) and external entities or DTDs (XXE) are refused, and the file is rejected with
that reason. It is pull parsing like ``iterparse``, with one difference that matters here: the
parser feeds our own target instead of a tree builder, so only the record being read is ever
built (nothing accumulates under the root, no ``clear()`` bookkeeping), and the target can note
the line each record starts on, which ``iterparse`` cannot tell (its events arrive a whole read
buffer later). A document that is not well-formed is rejected whole: expat stops at the first
error and nothing after it can be trusted.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import defusedxml
from defusedxml.ElementTree import DefusedXMLParser

from crm_pipelines.files.csv_reader import CsvChunk, FileRejected, normalize_header
from crm_pipelines.files.formats import FILE_FORMATS, FileFormat, FileRead
from crm_pipelines.files.records import DriftReport, RecordBatcher
from crm_pipelines.sources import Dataset

READ_CHUNK = 256 * 1024


def local_name(tag: str) -> str:
    """``{urn:x}Invoice`` -> ``Invoice``."""
    return tag.rsplit("}", 1)[-1]


def element_text(element: ET.Element) -> str:
    """A record as XML text, for the quarantine."""
    return ET.tostring(element, encoding="unicode")


def record_fields(element: ET.Element) -> tuple[dict[str, str | None], list[str]]:
    """A record's fields (attributes, then children flattened), and the names that occur twice."""
    fields: dict[str, str | None] = {}
    repeated: list[str] = []

    def put(name: str, value: str | None) -> None:
        if name in fields:
            repeated.append(name)
        fields[name] = value

    for key, value in element.attrib.items():
        put(normalize_header(local_name(key)), value)

    def walk(node: ET.Element, prefix: str) -> None:
        for child in node:
            name = prefix + normalize_header(local_name(child.tag))
            if len(child):
                walk(child, name + "_")
            else:
                put(name, (child.text or "").strip())
            for key, value in child.attrib.items():
                put(f"{name}_{normalize_header(local_name(key))}", value)

    walk(element, "")
    return fields, repeated


# Levels of elements one record may nest: deeper is no invoice or payment but an attack on the parser's
# callers (flattening and printing a record recurse once per level).
MAX_RECORD_DEPTH = 64


class _RecordTarget:
    """Parser target that builds only the elements under ``record_path`` and queues finished records.

    A record nested deeper than :data:`MAX_RECORD_DEPTH` is not built further: it is queued as ``None``
    (quarantined by the reader) while the parser goes on to the next record.
    """

    def __init__(self, path: list[str], source_file: str) -> None:
        self.path = path
        self.source_file = source_file
        self.depth = 0  # elements open right now
        self.matched = 0  # leading elements of the open path that follow record_path
        self.builder: ET.TreeBuilder | None = None
        self.record_line = 0
        self.built = 0  # elements of the record open in the builder
        self.skipped = 0  # elements open below the depth limit, not built
        self.done: list[tuple[int, ET.Element | None]] = []
        self.too_deep = False  # the open record went past the depth limit
        self.parser: DefusedXMLParser | None = None  # set once the parser exists (for line numbers)
        self.root: str | None = None

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        name = local_name(tag)
        if self.depth == 0:
            self.root = name
            if name != self.path[0]:
                raise FileRejected(
                    f"{self.source_file}: the root element is <{name}>, the record path "
                    f"{'/'.join(self.path)} expects <{self.path[0]}> (a changed layout?)"
                )
        if self.builder is not None:
            if self.skipped or self.built >= MAX_RECORD_DEPTH:
                self.skipped += 1
            else:
                self.builder.start(tag, attrib)
                self.built += 1
        elif self.matched == self.depth and name == self.path[self.depth]:
            self.matched += 1
            if self.matched == len(self.path):
                assert self.parser is not None
                self.record_line = self.parser.parser.CurrentLineNumber
                self.builder = ET.TreeBuilder()
                self.builder.start(tag, attrib)
                self.built, self.skipped, self.too_deep = 1, 0, False
        self.depth += 1

    def end(self, tag: str) -> None:
        self.depth -= 1
        if self.builder is not None:
            if self.skipped:
                self.skipped -= 1
                self.too_deep = True
            else:
                self.builder.end(tag)
                self.built -= 1
            if self.depth == len(self.path) - 1:
                record = self.builder.close()
                self.done.append((self.record_line, None if self.too_deep else record))
                self.builder = None
        if self.matched > self.depth:
            self.matched = self.depth

    def data(self, text: str) -> None:
        # Text outside a record (indentation between records) is dropped, never kept.
        if self.builder is not None and not self.skipped:
            self.builder.data(text)

    def close(self) -> None:
        return None


def read_xml_batches(
    path: Path,
    *,
    columns: list[str],
    source_file: str,
    source: str,
    dataset: str,
    record_path: str,
    batch_rows: int = 65_536,
    drift: DriftReport | None = None,
) -> Iterator[CsvChunk]:
    """Stream the records of an XML document as Arrow batches of string columns.

    Args:
        path: Local XML file (its encoding comes from its XML declaration, UTF-8 by default).
        columns: Required fields (attributes or child elements), normalised like CSV headers.
        source_file: File name for lineage and quarantine ``record_id``.
        source: Quarantine ``source``.
        dataset: Quarantine ``entity``.
        record_path: Element path from the root to a record, e.g. ``Invoices/Invoice``.
        batch_rows: Rows per yielded chunk.
        drift: Receives the names of fields the drop does not declare.

    Raises:
        FileRejected: entities or external references (refused as hostile), not well-formed, a
            root element other than the path's, no records, or no usable record at all.
    """
    steps = [s for s in record_path.strip("/").split("/") if s]
    target = _RecordTarget(steps, source_file)
    parser = DefusedXMLParser(target=target, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    target.parser = parser
    batcher = RecordBatcher(
        columns=columns,
        source_file=source_file,
        source=source,
        dataset=dataset,
        batch_rows=batch_rows,
        drift=drift,
        unit="line",
    )
    found = 0

    def take() -> Iterator[CsvChunk]:
        nonlocal found
        for line, element in target.done:
            found += 1
            if element is None:
                batcher.quarantine(
                    line,
                    f"<{steps[-1]}> nested more than {MAX_RECORD_DEPTH} levels deep (not kept)",
                    "nesting_depth",
                    f"the record nests elements more than {MAX_RECORD_DEPTH} levels deep",
                )
                if batcher.full():
                    yield batcher.flush()
                continue
            fields, repeated = record_fields(element)
            twice = sorted({n for n in repeated if n in batcher.wanted})
            if twice:
                batcher.observe(fields)
                batcher.quarantine(
                    line,
                    element_text(element),
                    "repeated_field",
                    f"field(s) {', '.join(twice)} occur more than once",
                )
            else:
                batcher.add(line, fields, partial(element_text, element))
            if batcher.full():
                yield batcher.flush()
        target.done.clear()

    with open(path, "rb") as raw:
        try:
            while block := raw.read(READ_CHUNK):
                parser.feed(block)
                yield from take()
            parser.close()
            yield from take()
        except defusedxml.DefusedXmlException as exc:
            raise FileRejected(
                f"{source_file}: refused as hostile XML: {exc} (entity declarations and external "
                "references are not accepted: billion-laughs and XXE attacks use them)"
            ) from exc
        except ET.ParseError as exc:
            raise FileRejected(
                f"{source_file}: not well-formed XML: {exc}; the file is rejected whole"
            ) from exc
    if found == 0:
        raise FileRejected(
            f"{source_file}: no <{steps[-1]}> records at {'/'.join(steps)} (root <{target.root}>; "
            "a changed layout?)"
        )
    yield from batcher.finish(where=f" at {'/'.join(steps)}")


# Element names from the root to one record, joined by '/', e.g. Invoices/Invoice.
_RECORD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*(/[A-Za-z_][A-Za-z0-9_.\-]*)*")


def _check(declared: Dataset) -> Dataset:
    if declared.record_path is None or not _RECORD_PATH.fullmatch(declared.record_path):
        raise ValueError(
            "format xml needs record_path, element names from the root joined by '/', e.g. "
            f"Invoices/Invoice (got {declared.record_path!r})"
        )
    return declared


def _read_declared(path: Path, declared: Dataset, read: FileRead) -> Iterator[CsvChunk]:
    assert declared.record_path is not None  # checked with the declaration
    return read_xml_batches(
        path,
        columns=declared.columns,
        source_file=read.source_file,
        source=read.source,
        dataset=read.dataset,
        batch_rows=read.batch_rows,
        record_path=declared.record_path,
        drift=read.drift,
    )


FILE_FORMATS.add("xml", FileFormat(read=_read_declared, settings=("record_path",), check=_check))
