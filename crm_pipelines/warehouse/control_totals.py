"""Control totals: the counts and amounts finance checks, followed from the source to the facts.

Per partition (day), source and file (for a file drop, the file version ``<name>@<sha256[:12]>``;
``''`` for a database or API source) and per measure (invoices: count, ``amount_net``,
``amount_tax``, ``amount_gross``; payments: count, ``amount``), every layer is totalled from its own
table:

======================  ================================================================================
layer                   what it totals
======================  ================================================================================
``source``              what the source delivered: for a file, the data lines its reader counted
                        (``ops.file_ingest``) and the amounts of its landed and quarantined lines; for a
                        database or API source, the extract (the raw snapshot)
``raw``                 ``raw.<source>__<dataset>``: the rows loaded
``quarantine_extract``  lines quarantined while reading the file (``ops.quarantine``, stage extract),
                        amounts read back from the line where it can be read
``quarantine_quality``  rows a quality rule quarantined (stage quality), amounts from the record kept
``merged``              rows with a key already seen that day, collapsed into the newest
``deleted``             records the source deleted (``staging.deleted``), at their last amounts
``staging``             ``staging.<entity>``
``superseded``          staged rows whose core row holds a later partition's version
``core``                ``core.<entity>`` rows written by this partition
``marts``               invoices: ``marts.fact_invoice`` rows of those core rows; payments: the
                        payments counted in ``amount_paid`` (a payment counts once per invoice it is
                        applied to, so one counted twice shows)
``unapplied``           payments whose invoice number no invoice in ``marts.fact_invoice`` carries
``deleted_later``       payments of this partition a later one deleted (no longer in ``amount_paid``)
======================  ================================================================================

At every stage the source total must equal what was loaded there plus what was accounted for on the
way (:data:`ACCOUNTED`); a difference names the source, day, file, layer, measure and amount. A
quarantined row whose amount cannot be read (a CSV line with a field too many) counts by its count,
and is listed in :attr:`ControlTotals.unreadable`. One more check covers the whole mart: the sum of
``amount_paid`` equals the payments applied in it (source ``all``).
"""

from __future__ import annotations

import csv
import json
import posixpath
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa

from crm_pipelines.files.csv_reader import normalize_header
from crm_pipelines.lake import DELETED
from crm_pipelines.mapping.spec import Mappings, SourceMapping
from crm_pipelines.sources import Dataset, Source
from crm_pipelines.sql import qualified, quote_ident
from crm_pipelines.warehouse.connection import table_exists

__all__ = [
    "ACCOUNTED",
    "CONTROLLED",
    "ControlTotals",
    "Mismatch",
    "UnreadableAmount",
    "compute_control_totals",
    "record_control_totals",
]

# The measures finance checks, per entity (besides the row count).
CONTROLLED: dict[str, tuple[str, ...]] = {
    "invoice": ("amount_net", "amount_tax", "amount_gross"),
    "payment": ("amount",),
}
COUNT = "count"
# The layers each stage's total is made of: what was loaded there, plus what left on the way.
ACCOUNTED: dict[str, tuple[str, ...]] = {
    "raw": ("raw", "quarantine_extract"),
    "staging": ("staging", "quarantine_extract", "quarantine_quality", "merged", "deleted"),
    "core": ("core", "superseded", "quarantine_extract", "quarantine_quality", "merged", "deleted"),
    "marts": (
        "marts",
        "unapplied",
        "deleted_later",
        "superseded",
        "quarantine_extract",
        "quarantine_quality",
        "merged",
        "deleted",
    ),
}
LAYERS = (
    "source",
    "raw",
    "quarantine_extract",
    "quarantine_quality",
    "merged",
    "deleted",
    "staging",
    "superseded",
    "core",
    "marts",
    "unapplied",
    "deleted_later",
)
# The mart each controlled entity reaches, and the column holding the core record id.
_FACT = {"invoice": ("fact_invoice", "invoice_id")}

ZERO = Decimal(0)
Totals = dict[str, Decimal]  # measure -> value
Group = tuple[str, str, str]  # (source, entity, file)


def _amount(expr: str) -> str:
    """An amount as staging reads it (``transform: decimal``): white space collapsed, DECIMAL(18, 2)."""
    return f"TRY_CAST(nullif(trim(regexp_replace(CAST({expr} AS VARCHAR), '\\s+', ' ', 'g')), '') AS DECIMAL(18, 2))"


def _key(expr: str) -> str:
    """A source key as staging reads it: white space collapsed, empty is none."""
    return f"nullif(trim(regexp_replace(CAST({expr} AS VARCHAR), '\\s+', ' ', 'g')), '')"


@dataclass(frozen=True)
class UnreadableAmount:
    """A quarantined row counted by its count only: its amounts could not be read."""

    source: str
    entity: str
    file: str
    record_id: str
    rule: str
    why: str


@dataclass(frozen=True)
class Mismatch:
    """A stage whose total is not the source's: loaded there plus accounted for on the way."""

    partition: str
    source: str
    entity: str
    file: str
    layer: str
    measure: str
    expected: Decimal
    actual: Decimal
    parts: tuple[tuple[str, Decimal], ...]

    @property
    def difference(self) -> Decimal:
        """What the stage holds beyond the source (negative: missing)."""
        return self.actual - self.expected

    def describe(self) -> str:
        if self.source == "all":
            return (
                f"all payments {self.partition}: marts.fact_invoice amount_paid sums to "
                f"{_fmt(self.measure, self.actual)}, the payments applied to its invoices to "
                f"{_fmt(self.measure, self.expected)}: off by {_signed(self.measure, self.difference)}"
            )
        where = f"{self.source} {self.entity} {self.partition}" + (f" file {self.file}" if self.file else "")
        parts = " + ".join(f"{layer} {_fmt(self.measure, v)}" for layer, v in self.parts if v)
        return (
            f"{where}: {self.layer} {self.measure} is off by {_signed(self.measure, self.difference)} "
            f"(source {_fmt(self.measure, self.expected)}, {parts or 'nothing'} = {_fmt(self.measure, self.actual)})"
        )


def _fmt(measure: str, value: Decimal) -> str:
    return f"{value:,.0f}" if measure == COUNT else f"{value:,.2f}"


def _signed(measure: str, value: Decimal) -> str:
    return ("+" if value > 0 else "") + _fmt(measure, value)


@dataclass
class ControlTotals:
    """One partition's control totals: ``totals[(source, entity, file)][layer][measure]``."""

    partition: str
    totals: dict[Group, dict[str, Totals]] = field(default_factory=dict)
    unreadable: list[UnreadableAmount] = field(default_factory=list)

    def measures(self, entity: str) -> tuple[str, ...]:
        return (COUNT, *CONTROLLED.get(entity, ()))

    def value(self, group: Group, layer: str, measure: str) -> Decimal:
        return self.totals.get(group, {}).get(layer, {}).get(measure, ZERO)

    def checked_layers(self, group: Group) -> list[str]:
        """The stages whose equation applies to a group: those the warehouse holds a table for."""
        return [layer for layer in ACCOUNTED if layer in self.totals.get(group, {})]

    def mismatches(self) -> list[Mismatch]:
        """Every (group, stage, measure) where the stage does not account for the source total."""
        out = []
        for group in sorted(self.totals):
            source, entity, file = group
            if source == "all":
                # The whole mart: amount_paid holds exactly the payments applied to its invoices.
                for measure in self.measures(entity):
                    paid = self.value(group, "marts", measure)
                    applied = self.value(group, "core", measure)
                    if paid != applied:
                        out.append(
                            Mismatch(
                                self.partition,
                                source,
                                entity,
                                file,
                                "marts",
                                measure,
                                applied,
                                paid,
                                (("marts", paid),),
                            )
                        )
                continue
            for stage in self.checked_layers(group):
                for measure in self.measures(entity):
                    expected = self.value(group, "source", measure)
                    parts = tuple((layer, self.value(group, layer, measure)) for layer in ACCOUNTED[stage])
                    actual = sum((v for _, v in parts), ZERO)
                    if actual != expected:
                        out.append(
                            Mismatch(
                                self.partition, source, entity, file, stage, measure, expected, actual, parts
                            )
                        )
        return out

    def source_totals(self) -> dict[tuple[str, str], Totals]:
        """Per (source, entity): the source layer summed over its files (what the UI plots)."""
        out: dict[tuple[str, str], Totals] = {}
        for (source, entity, _), layers in sorted(self.totals.items()):
            if source == "all":
                continue
            totals = out.setdefault((source, entity), dict.fromkeys(self.measures(entity), ZERO))
            for measure in totals:
                totals[measure] += layers.get("source", {}).get(measure, ZERO)
        return out

    def table(self) -> list[tuple[str, str, str, str, dict[str, Decimal]]]:
        """Rows (source, entity, file, measure, {layer: value}) in a stable order, for reports."""
        rows = []
        for group in sorted(self.totals):
            source, entity, file = group
            for measure in self.measures(entity):
                rows.append(
                    (
                        source,
                        entity,
                        file,
                        measure,
                        {layer: values.get(measure, ZERO) for layer, values in self.totals[group].items()},
                    )
                )
        return rows


# ------------------------------------------------------------------------------------- computing


def compute_control_totals(
    con: duckdb.DuckDBPyConnection,
    *,
    partition: str,
    mappings: Mappings,
    sources: dict[str, Source],
) -> ControlTotals:
    """Total every controlled entity's counts and amounts per source, file and layer for a partition.

    Args:
        con: Warehouse connection (temporary tables are created on it).
        partition: Partition key (the day).
        mappings: The declared mappings (they say which raw dataset, key and amount columns feed each
            entity).
        sources: The source catalog (a file drop's format, for reading its quarantined lines).

    Returns:
        The totals; :meth:`ControlTotals.mismatches` says whether they add up.
    """
    result = ControlTotals(partition)
    for entity in CONTROLLED:
        for mapping in mappings.entities.get(entity, []):
            _total_mapping(con, result, entity=entity, mapping=mapping, sources=sources)
    if "payment" in mappings.entities and table_exists(con, "marts", "fact_invoice"):
        _total_amount_paid(con, result)
    for scratch in ("_ct_raw", "_ct_keys", "_ct_quarantine", "_ct_staged", "_ct_deleted"):
        con.execute(f"DROP TABLE IF EXISTS {scratch}")
    return result


def _total_mapping(
    con: duckdb.DuckDBPyConnection,
    result: ControlTotals,
    *,
    entity: str,
    mapping: SourceMapping,
    sources: dict[str, Source],
) -> None:
    partition = result.partition
    measures = CONTROLLED[entity]
    source = mapping.source
    source_dir, dataset = next(iter(mapping.inputs.values())).split("/")
    spec = sources.get(source_dir)
    declared = spec.datasets.get(dataset) if spec else None
    is_file = spec is not None and spec.kind == "sftp"
    columns = {}
    for measure in measures:
        column = mapping.columns.get(measure)
        if column is None or column.source_column is None:
            raise ValueError(f"{source} {entity}: the mapping declares no source column for {measure}")
        columns[measure] = column.source_column

    raw = f"{source_dir}__{dataset}"
    amounts = ", ".join(f"{_amount(quote_ident(columns[m]))} AS {quote_ident(m)}" for m in measures)
    if table_exists(con, "raw", raw):
        raw_columns = {r[0] for r in con.execute(f"DESCRIBE {qualified('raw', raw)}").fetchall()}
        file_expr = "coalesce(CAST(_source_file AS VARCHAR), '')" if "_source_file" in raw_columns else "''"
        deleted = f"coalesce({quote_ident(DELETED)}, false)" if DELETED in raw_columns else "false"
        where = "" if mapping.where is None else f" AND ({mapping.where})"
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE _ct_raw AS
            SELECT {file_expr} AS file, ? || {_key(quote_ident(mapping.id))} AS record_id,
                   {deleted} AS deleted, {amounts}
            FROM {qualified("raw", raw)} WHERE _partition = ?{where}
            """,
            [f"{source}:", partition],
        )
    else:
        nulls = ", ".join(f"CAST(NULL AS DECIMAL(18, 2)) AS {quote_ident(m)}" for m in measures)
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _ct_raw AS SELECT '' AS file, CAST(NULL AS VARCHAR) AS record_id, "
            f"false AS deleted, {nulls} WHERE false"
        )
    sums = ", ".join(f"sum({quote_ident(m)})" for m in measures)
    # One row per key: the file it came in (the last, should it come in two), how often, its amounts
    # summed, and its amounts as deleted.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _ct_keys AS
        SELECT record_id, max(file) AS file, count(*) AS n,
               {", ".join(f"sum({quote_ident(m)}) AS {quote_ident(m)}" for m in measures)},
               {", ".join(f"any_value({quote_ident(m)}) FILTER (WHERE deleted) AS {quote_ident('del_' + m)}" for m in measures)}
        FROM _ct_raw WHERE record_id IS NOT NULL GROUP BY record_id
        """
    )
    _load_quarantine(con, result, entity=entity, source=source, declared=declared, columns=columns)

    layers: dict[str, list[tuple[Any, ...]]] = {}
    layers["raw"] = con.execute(f"SELECT file, count(*), {sums} FROM _ct_raw GROUP BY file").fetchall()
    for stage in ("extract", "quality"):
        layers[f"quarantine_{stage}"] = con.execute(
            f"SELECT file, count(*), {sums} FROM _ct_quarantine WHERE stage = ? GROUP BY file", [stage]
        ).fetchall()
    has_staging = table_exists(con, "staging", entity)
    if has_staging:
        staged_sums = ", ".join(f"sum(s.{quote_ident(m)})" for m in measures)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _ct_staged AS SELECT * FROM {qualified('staging', entity)} "
            "WHERE _partition = ? AND source = ?",
            [partition, source],
        )
        if table_exists(con, "staging", "deleted"):
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _ct_deleted AS SELECT DISTINCT record_id FROM staging.deleted "
                "WHERE _partition = ? AND source = ? AND entity = ?",
                [partition, source, entity],
            )
        else:
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _ct_deleted AS SELECT NULL::VARCHAR AS record_id WHERE false"
            )
        layers["staging"] = con.execute(
            f"SELECT coalesce(k.file, ''), count(*), {staged_sums} "
            "FROM _ct_staged AS s LEFT JOIN _ct_keys AS k USING (record_id) GROUP BY 1"
        ).fetchall()
        layers["deleted"] = con.execute(
            f"""
            SELECT coalesce(k.file, ''), count(*), {", ".join(f"sum(k.{quote_ident('del_' + m)})" for m in measures)}
            FROM _ct_deleted AS d LEFT JOIN _ct_keys AS k USING (record_id) GROUP BY 1
            """
        ).fetchall()
        # A key that came more than once: the rows beyond the one kept (staged, quarantined or
        # deleted) were merged into it. A key kept nowhere merged nothing: it is missing.
        survivor = {
            m: f"coalesce(s.{quote_ident(m)}, q.{quote_ident(m)}, k.{quote_ident('del_' + m)})"
            for m in measures
        }
        layers["merged"] = con.execute(
            f"""
            SELECT k.file, sum(k.n - 1),
                   {", ".join(f"sum(coalesce(k.{quote_ident(m)}, 0) - coalesce({survivor[m]}, 0))" for m in measures)}
            FROM _ct_keys AS k
            LEFT JOIN _ct_staged AS s USING (record_id)
            LEFT JOIN (SELECT * FROM _ct_quarantine WHERE stage = 'quality') AS q USING (record_id)
            LEFT JOIN _ct_deleted AS d USING (record_id)
            WHERE k.n > 1 AND (s.record_id IS NOT NULL OR q.record_id IS NOT NULL OR d.record_id IS NOT NULL)
            GROUP BY 1
            """
        ).fetchall()
    if has_staging and table_exists(con, "core", entity):
        core = qualified("core", entity)
        core_columns = {r[0] for r in con.execute(f"DESCRIBE {core}").fetchall()}
        is_deleted = "coalesce(c.is_deleted, false)" if "is_deleted" in core_columns else "false"
        layers["core"] = con.execute(
            f"""
            SELECT coalesce(k.file, ''), count(*), {", ".join(f"sum(c.{quote_ident(m)})" for m in measures)}
            FROM {core} AS c LEFT JOIN _ct_keys AS k USING (record_id)
            WHERE c._partition = ? AND c.source = ? GROUP BY 1
            """,
            [partition, source],
        ).fetchall()
        layers["superseded"] = con.execute(
            f"""
            SELECT coalesce(k.file, ''), count(*), {staged_sums}
            FROM _ct_staged AS s JOIN {core} AS c USING (record_id) LEFT JOIN _ct_keys AS k USING (record_id)
            WHERE c._partition IS DISTINCT FROM ? GROUP BY 1
            """,
            [partition],
        ).fetchall()
        if entity in _FACT and table_exists(con, "marts", _FACT[entity][0]):
            mart, id_column = _FACT[entity]
            fact = qualified("marts", mart)
            fact_id = quote_ident(id_column)
            # Fact rows of this partition's core rows, and fact rows with no core row at all.
            layers["marts"] = con.execute(
                f"""
                SELECT coalesce(k.file, ''), count(*), {", ".join(f"sum(f.{quote_ident(m)})" for m in measures)}
                FROM {fact} AS f LEFT JOIN {core} AS c ON c.record_id = f.{fact_id}
                LEFT JOIN _ct_keys AS k ON k.record_id = f.{fact_id}
                WHERE (c._partition = ? AND c.source = ?) OR (c.record_id IS NULL AND f.source = ?)
                GROUP BY 1
                """,
                [partition, source, source],
            ).fetchall()
        elif entity == "payment" and table_exists(con, "marts", "fact_invoice"):
            applied = (
                "(SELECT count(*) FROM marts.fact_invoice AS f WHERE f.invoice_number = c.invoice_number)"
            )
            this_partition = f"FROM {core} AS c LEFT JOIN _ct_keys AS k USING (record_id) WHERE c._partition = ? AND c.source = ?"
            layers["marts"] = con.execute(
                f"""
                SELECT coalesce(k.file, ''), sum({applied}), {", ".join(f"sum(c.{quote_ident(m)} * {applied})" for m in measures)}
                {this_partition} AND NOT {is_deleted} GROUP BY 1
                """,
                [partition, source],
            ).fetchall()
            layers["unapplied"] = con.execute(
                f"""
                SELECT coalesce(k.file, ''), count(*), {", ".join(f"sum(c.{quote_ident(m)})" for m in measures)}
                {this_partition} AND NOT {is_deleted} AND {applied} = 0 GROUP BY 1
                """,
                [partition, source],
            ).fetchall()
            layers["deleted_later"] = con.execute(
                f"""
                SELECT coalesce(k.file, ''), count(*), {", ".join(f"sum(c.{quote_ident(m)})" for m in measures)}
                {this_partition} AND {is_deleted} GROUP BY 1
                """,
                [partition, source],
            ).fetchall()

    by_file: dict[str, dict[str, Totals]] = defaultdict(dict)
    for layer, rows in layers.items():
        for file, count, *values in rows:
            by_file[str(file)][layer] = {
                COUNT: Decimal(int(count or 0)),
                **{m: Decimal(v or 0) for m, v in zip(measures, values, strict=True)},
            }

    versions = _file_versions(con, source=source_dir, dataset=dataset, partition=partition) if is_file else {}
    for name in versions:
        by_file.setdefault(name, {layer: {} for layer in layers})
    if not by_file:
        return
    for name, file_layers in by_file.items():
        totals = {
            layer: {m: file_layers.get(layer, {}).get(m, ZERO) for m in (COUNT, *measures)}
            for layer in layers
        }
        # What the source delivered: the rows landed and the lines quarantined while reading; for a
        # file, the count is the data lines its reader saw (the ledger), so a lost line shows.
        totals["source"] = {m: totals["raw"][m] + totals["quarantine_extract"][m] for m in (COUNT, *measures)}
        label = name
        if is_file:
            version = versions.get(name)
            if version is not None:
                label, data_lines = version
                totals["source"][COUNT] = Decimal(data_lines)
        result.totals[(source, entity, label)] = {layer: totals[layer] for layer in LAYERS if layer in totals}
    for item in _unreadable(con, source=source, entity=entity):
        version = versions.get(item.file)
        result.unreadable.append(
            UnreadableAmount(
                item.source,
                item.entity,
                version[0] if version else item.file,
                item.record_id,
                item.rule,
                item.why,
            )
        )


def _file_versions(
    con: duckdb.DuckDBPyConnection, *, source: str, dataset: str, partition: str
) -> dict[str, tuple[str, int]]:
    """File name -> (``<name>@<sha256[:12]>``, data lines) of the partition's current file versions.

    A corrected file supersedes the earlier version of its name in the lake, so the version ingested
    last is the one the raw rows hold.
    """
    if not table_exists(con, "ops", "file_ingest"):
        return {}
    versions: dict[str, tuple[str, int]] = {}
    for path, sha256, data_lines in con.execute(
        "SELECT path, sha256, data_lines FROM ops.file_ingest WHERE source = ? AND dataset = ? AND partition = ? "
        "ORDER BY ingested_at, path",
        [source, dataset, partition],
    ).fetchall():
        name = posixpath.basename(str(path))
        versions[name] = (f"{name}@{str(sha256)[:12]}", int(data_lines))
    return versions


# ---------------------------------------------------------------------------- quarantined amounts


def _load_quarantine(
    con: duckdb.DuckDBPyConnection,
    result: ControlTotals,
    *,
    entity: str,
    source: str,
    declared: Dataset | None,
    columns: dict[str, str],
) -> None:
    """``_ct_quarantine``: one row per quarantined record, with its file and the amounts it shows."""
    measures = list(columns)
    rows: dict[str, list[Any]] = {
        "stage": [],
        "file": [],
        "record_id": [],
        "rule": [],
        "why": [],
        **{f"text_{m}": [] for m in measures},
    }
    if table_exists(con, "ops", "quarantine"):
        found = con.execute(
            "SELECT stage, record_id, any_value(record), min(rule) FROM ops.quarantine "
            "WHERE partition = ? AND source = ? AND entity = ? GROUP BY stage, record_id ORDER BY stage, record_id",
            [result.partition, source, entity],
        ).fetchall()
        for stage, record_id, record, rule in found:
            if stage == "extract":
                file = str(record_id).rsplit(":", 1)[0]
                values, why = _read_line(record, declared)
            else:
                values, why = _read_json(record)
                file = str(values.get("_source_file") or "") if values else ""
            rows["stage"].append(str(stage))
            rows["file"].append(file)
            rows["record_id"].append(str(record_id))
            rows["rule"].append(str(rule))
            rows["why"].append(why)
            for m in measures:
                value = values.get(normalize_header(columns[m])) if values else None
                rows[f"text_{m}"].append(None if value is None else str(value))
    arrow = pa.table({k: pa.array(v, pa.string()) for k, v in rows.items()})
    con.register("_ct_quarantine_input", arrow)
    # Read as staging reads the raw value; a value there that does not read as an amount is unreadable.
    unreadable = " OR ".join(f"(text_{m} IS NOT NULL AND {_amount(f'text_{m}')} IS NULL)" for m in measures)
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _ct_quarantine AS
        SELECT stage, file, record_id, rule,
               coalesce(why, CASE WHEN {unreadable} THEN 'an amount is not a number' END) AS why,
               {", ".join(f"{_amount(f'text_{m}')} AS {quote_ident(m)}" for m in measures)}
        FROM _ct_quarantine_input
        """
    )
    con.unregister("_ct_quarantine_input")


def _unreadable(con: duckdb.DuckDBPyConnection, *, source: str, entity: str) -> list[UnreadableAmount]:
    return [
        UnreadableAmount(source, entity, str(file), str(record_id), str(rule), str(why))
        for file, record_id, rule, why in con.execute(
            "SELECT file, record_id, rule, why FROM _ct_quarantine WHERE why IS NOT NULL ORDER BY record_id"
        ).fetchall()
    ]


def _read_json(record: object) -> tuple[dict[str, Any] | None, str | None]:
    """The fields of a quality-quarantined record (the source row as JSON)."""
    try:
        value = json.loads(str(record))
    except (TypeError, ValueError):
        return None, "the record is not readable"
    if not isinstance(value, dict):
        return None, "the record is not readable"
    return {normalize_header(str(k)): v for k, v in value.items()}, None


def _read_line(record: object, declared: Dataset | None) -> tuple[dict[str, Any] | None, str | None]:
    """The fields of a line the file reader quarantined, where they can be told apart.

    An XML element or a JSON object names its fields; a CSV line is read by position only when it has
    exactly the declared number of fields. A fixed-width line was quarantined for its length, so its
    positions cannot be trusted; a truncated record or a whole rejected file cannot be read either.
    """
    if record is None or declared is None:
        return None, "no record of the line"
    text = str(record)
    if text.endswith(" [truncated]"):
        return None, "the line was truncated in quarantine"
    stripped = text.strip()
    if stripped.startswith("<"):
        try:
            element = ET.fromstring(stripped)
        except ET.ParseError:
            return None, "the element is not well-formed XML"
        return {normalize_header(child.tag): (child.text or "").strip() or None for child in element}, None
    if stripped.startswith("{"):
        return _read_json(stripped)
    if declared.format != "csv":
        return None, f"a quarantined {declared.format} line cannot be split into fields"
    wanted = [normalize_header(c) for c in declared.columns]
    delimiters: Sequence[str] = [declared.delimiter] if declared.delimiter else [",", ";", "\t", "|"]
    for delimiter in delimiters:
        fields = next(csv.reader([text], delimiter=delimiter), [])
        if len(fields) == len(wanted):
            return dict(zip(wanted, fields, strict=True)), None
    found = len(next(csv.reader([text], delimiter=delimiters[0]), []))
    return None, f"{found} fields where {len(wanted)} are declared: which one is the amount is unknown"


def _total_amount_paid(con: duckdb.DuckDBPyConnection, result: ControlTotals) -> None:
    """The whole mart: ``amount_paid`` summed against the live payments applied to its invoices."""
    if not table_exists(con, "core", "payment"):
        return
    core_columns = {r[0] for r in con.execute("DESCRIBE core.payment").fetchall()}
    live = "WHERE NOT coalesce(is_deleted, false)" if "is_deleted" in core_columns else ""
    row = con.execute(
        f"""
        SELECT count(*), sum(p.amount) FROM marts.fact_invoice AS f
        JOIN (SELECT invoice_number, amount FROM core.payment {live}) AS p USING (invoice_number)
        """
    ).fetchone()
    paid = con.execute("SELECT sum(amount_paid) FROM marts.fact_invoice").fetchone()
    applied_count, applied = (row[0], row[1]) if row else (0, None)
    result.totals[("all", "payment", "")] = {
        "core": {COUNT: Decimal(int(applied_count or 0)), "amount": Decimal(applied or 0)},
        "marts": {
            COUNT: Decimal(int(applied_count or 0)),
            "amount": Decimal(paid[0] or 0) if paid else ZERO,
        },
    }


# ------------------------------------------------------------------------------------- recording

DDL = """
CREATE TABLE IF NOT EXISTS ops.control_totals (
    run_id VARCHAR NOT NULL,
    partition VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    entity VARCHAR NOT NULL,
    file VARCHAR NOT NULL,           -- a file drop's version, <name>@<sha256[:12]>; '' for a database or API
    layer VARCHAR NOT NULL,
    measure VARCHAR NOT NULL,        -- count, or the amount column (amount_net, amount_tax, amount_gross, amount)
    value DECIMAL(38, 2) NOT NULL,
    difference DECIMAL(38, 2),       -- stages (raw, staging, core, marts): loaded + accounted - source
    checked_at TIMESTAMPTZ NOT NULL
)
"""


def record_control_totals(con: duckdb.DuckDBPyConnection, *, run_id: str, totals: ControlTotals) -> int:
    """Append the run's control totals to ``ops.control_totals``; returns the rows written."""
    con.execute(DDL)
    off = {(m.source, m.entity, m.file, m.layer, m.measure): m.difference for m in totals.mismatches()}
    rows: dict[str, list[Any]] = defaultdict(list)
    for source, entity, file, measure, layers in totals.table():
        checked = set(ACCOUNTED) if source != "all" else {"marts"}
        for layer, value in layers.items():
            rows["source"].append(source)
            rows["entity"].append(entity)
            rows["file"].append(file)
            rows["layer"].append(layer)
            rows["measure"].append(measure)
            rows["value"].append(value)
            difference = off.get((source, entity, file, layer, measure), ZERO) if layer in checked else None
            rows["difference"].append(difference)
    if not rows:
        return 0
    arrow = pa.table(
        {
            **{k: pa.array(rows[k], pa.string()) for k in ("source", "entity", "file", "layer", "measure")},
            "value": pa.array(rows["value"], pa.decimal128(38, 2)),
            "difference": pa.array(rows["difference"], pa.decimal128(38, 2)),
        }
    )
    con.register("_ct_record", arrow)
    con.execute(
        "INSERT INTO ops.control_totals BY NAME SELECT *, ? AS run_id, ? AS partition, now() AS checked_at "
        "FROM _ct_record",
        [run_id, totals.partition],
    )
    con.unregister("_ct_record")
    return int(arrow.num_rows)
