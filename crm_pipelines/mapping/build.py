"""Turn the declared mappings into DuckDB SQL over the lake's raw Parquet."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb

from crm_pipelines.canonical import ENTITIES, PHONE_DERIVED
from crm_pipelines.lake import (
    DELETED,
    LakePath,
    connect,
    files_in,
    has_parquet,
    parquet_glob,
    partition_dir,
    read_schema,
    scan_parquet,
)
from crm_pipelines.mapping.normalize import register_udfs
from crm_pipelines.mapping.spec import ColumnMapping, Mappings, SourceMapping
from crm_pipelines.sql import duckdb_type, quote_ident, quote_literal


def _text(column: str) -> str:
    return f"norm_text(CAST({quote_ident(column)} AS VARCHAR))"


def _ms_date(text: str) -> str:
    """An SData / ASP.NET JSON date, ``/Date(1764064800000)/`` or ``/Date(1764064800000+0100)/``
    (milliseconds since the epoch, UTC; the offset is the server's, for display only)."""
    millis = f"TRY_CAST(regexp_extract({text}, '^/Date\\((-?[0-9]+)', 1) AS BIGINT)"
    return f"CAST(epoch_ms({millis}) AS TIMESTAMP) AT TIME ZONE 'UTC'"


def column_sql(column: ColumnMapping, value_maps: dict[str, dict[str, str]]) -> str:
    """SQL expression for one canonical column, before the final cast to the canonical type."""
    t = column.transform
    if t == "const":
        return quote_literal(column.value or "")
    src = column.source_column or ""
    text = _text(src)
    if t == "text":
        return text
    if t == "lower":
        return f"lower({text})"
    if t == "upper":
        return f"upper({text})"
    if t == "code":
        # Identifiers people type with spaces, dots or dashes (VAT numbers, postcodes of codes).
        return f"nullif(upper(regexp_replace({text}, '[[:space:].-]', '', 'g')), '')"
    if t == "email":
        return f"norm_email({text})"
    if t == "domain":
        return f"norm_domain({text})"
    if t == "country":
        return f"norm_country({text})"
    if t == "phone":
        return f"norm_phone({text}, {_text(column.country_from or '')})"
    if t == "decimal":
        return f"TRY_CAST({text} AS DECIMAL(18, 2))"
    if t == "int":
        return f"TRY_CAST({text} AS BIGINT)"
    if t == "date":
        # ISO dates, SData dates, and the day-first dotted form people type into text fields.
        dotted = f"CAST(try_strptime({text}, '%d.%m.%Y') AS DATE)"
        return f"coalesce(TRY_CAST({text} AS DATE), CAST({_ms_date(text)} AS DATE), {dotted})"
    if t == "timestamp":
        return f"coalesce(TRY_CAST({text} AS TIMESTAMPTZ), {_ms_date(text)})"
    if t == "bool":
        return f"TRY_CAST({text} AS BOOLEAN)"
    if t == "ref":
        return f"{quote_literal((column.ref or '') + ':')} || {text}"
    if t == "value_map":
        pairs = value_maps[column.value_map or ""]
        whens = " ".join(f"WHEN {quote_literal(k.lower())} THEN {quote_literal(v)}" for k, v in pairs.items())
        # Unknown values pass through lower-cased so the quality rule names them in its reason.
        return f"CASE lower({text}) {whens} ELSE lower({text}) END"
    raise ValueError(f"unknown transform {t!r}")


# Columns of the keyed source rows (:attr:`PlannedMapping.source_sql`): the source row itself is one
# STRUCT column, so these names never meet a source's own columns (``_deleted`` is one).
KEY_RECORD_ID = "__stage_record_id"
KEY_HAS_KEY = "__stage_has_key"
KEY_DELETED = "__stage_deleted"
KEY_RAW = "__stage_raw"
KEY_ROW = "__stage_row"
KEYED = "__stage_keyed__"  # where mapping_sql puts its relation


@dataclass(frozen=True)
class PlannedMapping:
    """One source's mapping SQL for one entity, or why it was skipped.

    The mapping is two steps, so staging can run the first over every row and the second over some:

    - ``source_sql``: the source SELECT (the declared ``query`` / join / ``where``), pure SQL, one row
      per source row with its ``record_id`` (:data:`KEY_RECORD_ID`), whether it has a source key
      (:data:`KEY_HAS_KEY`), the deleted flag (:data:`KEY_DELETED`), the row as JSON (:data:`KEY_RAW`,
      the ``_raw`` column: whatever the query joined is in it) and the row itself (:data:`KEY_ROW`).
    - :meth:`mapping_sql`: the canonical columns with the normalising UDFs (the costly part) over any
      relation holding ``source_sql``'s rows.

    ``sql`` is both in one statement: every row mapped.
    """

    entity: str
    source: str
    sql: str | None
    missing_inputs: tuple[str, ...]
    source_sql: str | None = None
    mapping_template: str | None = None

    def mapping_sql(self, relation: str) -> str:
        """The column mapping over ``relation`` (a table name or a parenthesised SELECT of
        ``source_sql``'s columns); the rows as ``sql`` gives them for the same source rows."""
        if self.mapping_template is None:
            raise ValueError(f"{self.entity} from {self.source}: nothing to map ({self.missing_inputs})")
        return self.mapping_template.replace("{" + KEYED + "}", relation)


def plan_mapping(
    *,
    entity: str,
    mapping: SourceMapping,
    value_maps: dict[str, dict[str, str]],
    lake_dir: LakePath,
    partition: str,
) -> PlannedMapping:
    """Build the SELECT that maps one source onto ``entity`` for one partition.

    Args:
        entity: Canonical entity name.
        mapping: The declared source mapping.
        value_maps: Named value maps from the mappings file.
        lake_dir: Root of the lake.
        partition: Partition key (``YYYY-MM-DD``).

    Returns:
        The planned SQL, or ``sql=None`` with the datasets that have no data for the partition.
    """
    folders = {}
    for alias, dataset in mapping.inputs.items():
        source_dir, name = dataset.split("/")
        folders[alias] = partition_dir(lake_dir, "raw", source_dir, name, partition)
    missing = tuple(mapping.inputs[a] for a, f in folders.items() if not has_parquet(f))
    if missing:
        return PlannedMapping(entity, mapping.source, None, missing)

    main_alias = next(iter(mapping.inputs))

    def scan(alias: str) -> str:
        rows = scan_parquet(parquet_glob(folders[alias]))
        if alias == main_alias and mapping.where is not None:
            return f"(SELECT * FROM {rows} WHERE {mapping.where})"
        return rows

    if mapping.query is None:
        source_select = f"SELECT * FROM {scan(next(iter(mapping.inputs)))}"
    else:
        source_select = re.sub(r"\{(\w+)\}", lambda m: scan(m.group(1)), mapping.query)

    schema = ENTITIES[entity]
    source_id = _text(mapping.id)
    main_folder = folders[next(iter(mapping.inputs))]
    main_columns = set(read_schema(files_in(main_folder)[0]).names)
    # A row without a key still needs an identity to be quarantined under (source_id stays NULL,
    # which the quality rules reject); numbering keeps such rows apart instead of collapsing them.
    record_id = (
        f"coalesce({quote_literal(mapping.source + ':')} || {source_id}, "
        f"{quote_literal(mapping.source + ':<no id>#')} || CAST(row_number() OVER () AS VARCHAR))"
    )
    # Raw snapshots flag records the source deleted; they leave the live data as soft deletes.
    deleted = (
        f"coalesce(TRY_CAST({quote_ident(DELETED)} AS BOOLEAN), false)"
        if DELETED in main_columns
        else "false"
    )
    source_sql = (
        f"WITH src AS ({source_select})\n"
        f"SELECT {record_id} AS {KEY_RECORD_ID}, {source_id} IS NOT NULL AS {KEY_HAS_KEY}, "
        f"{deleted} AS {KEY_DELETED}, src AS {KEY_ROW}\nFROM src"
    )
    inner = [
        f"{KEY_RECORD_ID} AS record_id",
        f"{quote_literal(mapping.source)} AS source",
        f"{source_id} AS source_id",
    ]
    outer = ["record_id", "source", "source_id"]
    phone = mapping.columns.get("phone")
    for field in schema:
        if field.name in ("record_id", "source", "source_id"):
            continue
        name = quote_ident(field.name)
        if field.name in PHONE_DERIVED and phone is not None and phone.transform == "phone":
            continue  # filled below, from the phone
        column = mapping.columns.get(field.name)
        if field.name == "phone" and column is not None and column.transform == "phone":
            # norm_phone gives E.164, or "?<digits>" for a number it cannot place; the row flows on
            # with phone null, the digits and the flag, so only E.164 reaches golden records and syncs.
            inner.append(f"{column_sql(column, value_maps)} AS {name}")
            inner.append(
                f"nullif(regexp_replace({_text(column.source_column or '')}, '[^0-9]', '', 'g'), '') "
                "AS phone_digits"
            )
            outer.append(f"CAST(CASE WHEN starts_with({name}, '+') THEN {name} END AS VARCHAR) AS {name}")
            outer.append("CAST(phone_digits AS VARCHAR) AS phone_digits")
            outer.append(
                f"CAST(CASE WHEN {name} IS NULL THEN NULL WHEN starts_with({name}, '+') THEN 'e164' "
                "ELSE 'unparsable' END AS VARCHAR) AS phone_quality"
            )
            continue
        expr = "NULL" if column is None else column_sql(column, value_maps)
        inner.append(f"CAST({expr} AS {duckdb_type(field.type)}) AS {name}")
        outer.append(name)
    inner.append(f"{KEY_DELETED} AS {DELETED}")
    inner.append(f"{KEY_RAW} AS _raw")
    outer.extend([DELETED, "_raw"])
    # The source row's columns by their own names again, beside the keyed columns.
    template = (
        f"WITH src_rows AS (SELECT {KEY_RECORD_ID}, {KEY_DELETED}, to_json({KEY_ROW}) AS {KEY_RAW}, "
        f"{KEY_ROW}.* FROM {{{KEYED}}}),\n"
        f"mapped AS (SELECT {', '.join(inner)}\nFROM src_rows)\n"
        f"SELECT {', '.join(outer)}\nFROM mapped"
    )
    sql = template.replace("{" + KEYED + "}", f"({source_sql})")
    return PlannedMapping(entity, mapping.source, sql, (), source_sql=source_sql, mapping_template=template)


def plan_entity(
    *, entity: str, mappings: Mappings, lake_dir: LakePath, partition: str
) -> list[PlannedMapping]:
    """Plan every source mapping of one entity."""
    return [
        plan_mapping(
            entity=entity, mapping=m, value_maps=mappings.value_maps, lake_dir=lake_dir, partition=partition
        )
        for m in mappings.entities.get(entity, [])
    ]


def mapping_connection(
    *, spill_dir: Path | None = None, memory_limit: str = "1GB"
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the normaliser UDFs, UTC session time and a fixed memory budget.

    DuckDB's buffer pool grows to its limit; past it, joins and sorts spill to ``spill_dir``. So memory
    is set by this budget, not by the data's size.

    Args:
        spill_dir: Where DuckDB may spill (e.g. a folder in the lake); DuckDB's default when None.
        memory_limit: DuckDB ``memory_limit``.

    Returns:
        The connection.
    """
    con = connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = {quote_literal(memory_limit)}")
    if spill_dir is not None:
        spill_dir.mkdir(parents=True, exist_ok=True)
        con.execute(f"SET temp_directory = {quote_literal(str(spill_dir))}")
    con.execute("SET preserve_insertion_order = false")
    register_udfs(con)
    return con
