"""PostgreSQL as the warehouse analysts query: each committed load is published in one transaction.

``WAREHOUSE_URL=postgresql+psycopg://user:password@host:5432/warehouse`` keeps the models where they
run best, in DuckDB SQL on a local working copy (``WAREHOUSE_WORKING_COPY``), and makes PostgreSQL the
warehouse: after each write to the working copy commits, every relation whose content changed is
brought into PostgreSQL before the step ends.

- **Only what changed moves.** A relation is fingerprinted in DuckDB (row count and the sum of its row
  hashes, with its columns); the fingerprint published with it is kept in
  ``crm_pipelines_meta.published``, so an unchanged table costs one scan and no transfer. Each row
  carries ``_row_key``, its hash made unique among identical rows; the keys PostgreSQL holds are read
  back, and only the rows it lacks travel.
- **Loads through COPY, merges through ON CONFLICT.** New rows stream as CSV through
  ``COPY ... FROM STDIN`` into a temporary table and merge with ``INSERT ... ON CONFLICT``: on the
  table's primary key when it has one in DuckDB (the row is updated in place), else on ``_row_key``.
  Rows PostgreSQL holds and DuckDB no longer does are deleted the same way. A relation whose columns
  changed is rebuilt by one COPY.
- **Each load is one transaction,** with every relation it changed, so analysts see a load whole or
  not at all. Each relation is published under its own advisory lock: loads to different tables run
  concurrently; two loads of the same table take turns, and the later one finds the work done.
- **Roles** (``crm-pipelines warehouse-roles``, :mod:`crm_pipelines.warehouse.roles`): when the
  ``crm_loader`` role exists and the login may use it, tables are created as ``crm_loader``, so the
  schemas' default privileges give the analyst and PII-reader roles what they may read.

DuckDB views (the audit-trail query ``core.golden_field_lineage``) arrive as tables. A relation
dropped from the working copy stays in PostgreSQL until dropped there.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psycopg
from psycopg import sql as pgsql

from crm_pipelines.settings import working_copy_path
from crm_pipelines.sql import qualified, quote_ident, quote_literal
from crm_pipelines.warehouse import written
from crm_pipelines.warehouse.connection import SCHEMAS, Reader, Warehouse, register_backend

META_SCHEMA = "crm_pipelines_meta"
# The masked tables analysts read (crm_pipelines.privacy.masking) are published with the layers.
PUBLISHED_SCHEMAS = (*SCHEMAS, "analyst")
LOADER_ROLE = "crm_loader"
# Rows of the CSV that DuckDB writes and COPY reads: NULL is an unquoted empty field, "" an empty string.
_COPY_OPTIONS = "(FORMAT csv)"
_META_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {META_SCHEMA};
CREATE TABLE IF NOT EXISTS {META_SCHEMA}.published (
    relation TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    signature TEXT NOT NULL,
    row_count BIGINT NOT NULL,
    published_at TIMESTAMPTZ NOT NULL DEFAULT now()
)
"""
_NESTED = re.compile(r"(\[\d*\]$)|^(STRUCT|MAP|UNION)\b")
_SIMPLE_TYPES = {
    "VARCHAR": "text",
    "BOOLEAN": "boolean",
    "TINYINT": "smallint",
    "SMALLINT": "smallint",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "UTINYINT": "smallint",
    "USMALLINT": "integer",
    "UINTEGER": "bigint",
    "UBIGINT": "numeric(20)",
    "HUGEINT": "numeric(39)",
    "UHUGEINT": "numeric(39)",
    "FLOAT": "real",
    "DOUBLE": "double precision",
    "DATE": "date",
    "TIME": "time",
    "TIME WITH TIME ZONE": "timetz",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP_S": "timestamp",
    "TIMESTAMP_MS": "timestamp",
    "TIMESTAMP_NS": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "INTERVAL": "interval",
    "UUID": "uuid",
    "JSON": "jsonb",
    "BLOB": "bytea",
}


@dataclass(frozen=True)
class Relation:
    """A table or view of the working copy, as PostgreSQL will hold it."""

    schema: str
    name: str
    columns: tuple[tuple[str, str], ...]  # (column, DuckDB type)
    key: tuple[str, ...]  # the primary key in DuckDB, if any
    comments: tuple[tuple[str, str], ...] = ()
    is_view: bool = False
    definition: str = ""  # a view's SQL

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def target(self) -> str:
        return qualified(self.schema, self.name)

    @property
    def signature(self) -> str:
        """Columns, types and key as PostgreSQL sees them: a change rebuilds the table."""
        columns = ",".join(f"{c} {pg_type(t)}" for c, t in self.columns)
        return f"{columns}|key={','.join(self.key)}"


def pg_type(duckdb_type: str) -> str:
    """The PostgreSQL type for a DuckDB column type; lists, structs and maps travel as ``jsonb``."""
    upper = duckdb_type.upper()
    if _NESTED.search(upper):
        return "jsonb"
    decimal = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", upper)
    if decimal:
        return f"numeric({decimal.group(1)},{decimal.group(2)})"
    if upper in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[upper]
    if upper.startswith("ENUM"):
        return "text"
    raise TypeError(f"no PostgreSQL type for the DuckDB type {duckdb_type!r}")


def _csv_expression(column: str, duckdb_type: str) -> str:
    """How a column is written into the CSV that COPY reads.

    PostgreSQL text cannot hold the NUL character, which DuckDB text can: it arrives as U+FFFD.
    """
    name = quote_ident(column)
    kind = pg_type(duckdb_type)
    if kind == "jsonb":
        text = name if duckdb_type.upper() == "JSON" else f"to_json({name})"
        # JSON escapes a NUL as \u0000, which jsonb refuses too.
        return f"replace(CAST({text} AS VARCHAR), '\\u0000', '\\ufffd')"
    if kind == "bytea":
        return f"'\\x' || hex({name})"
    if kind == "text":
        return f"replace(CAST({name} AS VARCHAR), chr(0), chr(65533))"
    return name


def relations(con: duckdb.DuckDBPyConnection) -> list[Relation]:
    """Every table and view of the published schemas, with columns in order and primary keys."""
    schemas = list(PUBLISHED_SCHEMAS)
    marks = ", ".join("?" for _ in schemas)
    names = con.execute(
        f"SELECT schema_name, table_name, false, '' FROM duckdb_tables() WHERE database_name = current_database() "
        f"AND NOT temporary AND schema_name IN ({marks}) "
        f"UNION ALL SELECT schema_name, view_name, true, sql FROM duckdb_views() WHERE database_name = current_database() "
        f"AND NOT temporary AND NOT internal AND schema_name IN ({marks}) ORDER BY 1, 2",
        [*schemas, *schemas],
    ).fetchall()
    columns: dict[tuple[str, str], list[tuple[str, str, str | None]]] = {}
    for schema, table, column, dtype, comment in con.execute(
        f"SELECT schema_name, table_name, column_name, data_type, comment FROM duckdb_columns() "
        f"WHERE database_name = current_database() AND schema_name IN ({marks}) "
        f"ORDER BY schema_name, table_name, column_index",
        schemas,
    ).fetchall():
        columns.setdefault((schema, table), []).append((column, dtype, comment))
    keys = {
        (schema, table): tuple(cols)
        for schema, table, cols in con.execute(
            "SELECT schema_name, table_name, constraint_column_names FROM duckdb_constraints() "
            "WHERE database_name = current_database() AND constraint_type = 'PRIMARY KEY'"
        ).fetchall()
    }
    found = []
    for schema, table, is_view, definition in names:
        described = columns.get((schema, table), [])
        found.append(
            Relation(
                schema=schema,
                name=table,
                columns=tuple((c, t) for c, t, _ in described),
                key=keys.get((schema, table), ()),
                comments=tuple((c, text) for c, _, text in described if text),
                is_view=bool(is_view),
                definition=str(definition or ""),
            )
        )
    return found


def _reads_any(relation: Relation, tables: set[str]) -> bool:
    """Whether a view may read one of ``tables``: its SQL names one, or names no published table at all."""
    if not relation.is_view:
        return False
    text = relation.definition.lower().replace('"', "")
    if not any(f"{schema}." in text for schema in PUBLISHED_SCHEMAS):
        return True
    return any(table in text for table in tables)


def fingerprint(con: duckdb.DuckDBPyConnection, relation: Relation) -> str:
    """Row count and the sum of row hashes (a sum, not a xor: two equal rows do not cancel out)."""
    count, total = con.execute(
        f"SELECT count(*), coalesce(sum(CAST(hash(__row) AS HUGEINT)), 0) FROM {relation.target} AS __row"
    ).fetchall()[0]
    return f"{count}:{total}:{relation.signature}"


def _row_keys(con: duckdb.DuckDBPyConnection, relation: Relation) -> str:
    """Fill ``__keys`` (``rid``: the row's rowid, ``k``: its row key) and return the table to read rows from.

    The row key is the row's hash, made unique among equal rows by their count. Only two narrow columns
    are computed for every row; the full rows are read for the ones that travel. A view is read into a
    temporary table first, for its rowids.
    """
    source = relation.target
    if relation.is_view:
        con.execute(f"CREATE OR REPLACE TEMP TABLE __view AS SELECT * FROM {relation.target}")
        source = "__view"
    con.execute(
        "CREATE OR REPLACE TEMP TABLE __keys AS "
        "SELECT rid, CAST(hash(h, row_number() OVER (PARTITION BY h)) >> 1 AS BIGINT) AS k "
        f"FROM (SELECT rowid AS rid, hash(__row) AS h FROM {source} AS __row)"
    )
    return source


def _rows_of(relation: Relation, source: str, keys: str) -> str:
    """The CSV columns and ``_row_key`` of the rows whose rowids ``keys`` (``rid``, ``k``) lists."""
    exprs = ", ".join(_csv_expression(c, t) for c, t in relation.columns)
    return f"SELECT {exprs}, __wanted.k FROM {source} AS __src JOIN {keys} AS __wanted ON __src.rowid = __wanted.rid"


def _drop_temps(con: duckdb.DuckDBPyConnection) -> None:
    for temp in ("__keys", "__view", "__held", "__new"):
        con.execute(f"DROP TABLE IF EXISTS temp.{temp}")


class PostgresWarehouse(Warehouse):
    """The warehouse on a PostgreSQL server; the models run in a local DuckDB working copy.

    Args:
        url: ``postgresql+psycopg://user:password@host:port/database`` (``WAREHOUSE_URL``); libpq
            parameters such as ``sslmode=verify-full`` go in the query string.
        lock_timeout: Seconds to wait for the working copy's writer lock.
        working_copy: The DuckDB file (``WAREHOUSE_WORKING_COPY``, default ``data/warehouse.work.duckdb``).
    """

    backend = "postgresql"

    def __init__(self, url: str, *, lock_timeout: float = 1800.0, working_copy: Path | None = None) -> None:
        self._working = working_copy
        self._check_all = False
        super().__init__(url, lock_timeout=lock_timeout)
        self.conninfo = conninfo_from_url(url)

    def _working_copy(self, url: str) -> Path:
        return self._working or working_copy_path()

    def describe(self) -> str:
        params = psycopg.conninfo.conninfo_to_dict(self.conninfo)
        where = f"{params.get('user', '')}@{params.get('host', 'localhost')}:{params.get('port', 5432)}"
        return f"PostgreSQL {where}/{params.get('dbname', '')} (models in {self.path})"

    @property
    def _unpublished(self) -> Path:
        """Present from the start of a write until its publish committed: a write that died or failed in
        between (the process killed, the server down) leaves it, and the next write checks everything."""
        return self.path.with_name(f"{self.path.name}.unpublished")

    def before_write(self, con: duckdb.DuckDBPyConnection) -> None:
        written.enable(con)
        self._check_all = self._unpublished.exists()
        self._unpublished.touch()

    def after_write(self, con: duckdb.DuckDBPyConnection) -> None:
        scratch = self.path.parent / f".{self.path.name}.publish"
        only = None if self._check_all else written.written_tables(con)
        publish(con, self.conninfo, scratch=scratch, only=only)
        self._unpublished.unlink(missing_ok=True)

    def end_write(self, con: duckdb.DuckDBPyConnection) -> None:
        # After a failure the connection may refuse statements until it is closed: the error the
        # caller sees is the failure's, and the next write's enable() empties the log anyway.
        with suppress(duckdb.Error):
            written.disable(con)

    @contextmanager
    def read(self) -> Iterator[Reader]:
        with psycopg.connect(self.conninfo, autocommit=True) as pg:
            pg.execute("SET TIME ZONE 'UTC'")
            pg.execute("SET default_transaction_read_only = on")
            yield _QmarkConnection(pg)


def conninfo_from_url(url: str) -> str:
    """The libpq URI of a SQLAlchemy-style URL: ``postgresql+psycopg://`` becomes ``postgresql://``."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


class _QmarkConnection:
    """A psycopg connection taking DuckDB's placeholders (``?`` with a list, ``$name`` with a mapping), so
    one query text serves both backends."""

    def __init__(self, pg: psycopg.Connection[Any]) -> None:
        self._pg = pg

    def execute(self, query: str, parameters: object = None, /) -> psycopg.Cursor[Any]:
        if not parameters:
            return self._pg.execute(query.encode())
        named = isinstance(parameters, Mapping)
        pieces = re.split(r"('(?:[^']|'')*')", query)
        text = "".join(piece if piece.startswith("'") else _placeholders(piece, named) for piece in pieces)
        values = dict(parameters) if isinstance(parameters, Mapping) else list(parameters)  # type: ignore[call-overload]
        return self._pg.execute(text.encode(), values)


def _placeholders(text: str, named: bool) -> str:
    text = text.replace("%", "%%")
    return re.sub(r"\$(\w+)", r"%(\1)s", text) if named else text.replace("?", "%s")


def _use_loader_role(pg: psycopg.Connection[Any]) -> None:
    """Act as ``crm_loader`` when this database has the roles (roles are cluster-wide: the loader must
    have been given this database) and the login may."""
    if not pg.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [LOADER_ROLE]).fetchall():
        return
    ready = pg.execute(
        "SELECT has_database_privilege(%(role)s, current_database(), 'CREATE') "
        "AND pg_has_role(current_user, %(role)s, 'USAGE')",
        {"role": LOADER_ROLE},
    ).fetchall()[0][0]
    if ready:
        pg.execute(f"SET ROLE {quote_ident(LOADER_ROLE)}".encode())


def publish(
    con: duckdb.DuckDBPyConnection, conninfo: str, *, scratch: Path, only: set[str] | None = None
) -> dict[str, int]:
    """Bring every relation of the working copy that changed since it was last published into PostgreSQL.

    Args:
        only: The relations the load wrote (:func:`crm_pipelines.warehouse.written.written_tables`);
            views and relations never published are checked too. ``None`` checks every relation.

    Returns:
        Rows sent per relation published (``{}`` when nothing changed).
    """
    found = relations(con)
    with psycopg.connect(conninfo, autocommit=True) as pg:
        _use_loader_role(pg)
        with pg.transaction():
            pg.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [META_SCHEMA])
            pg.execute(_META_DDL.encode())
        published: dict[str, str] = dict(
            pg.execute(f"SELECT relation, fingerprint FROM {META_SCHEMA}.published").fetchall()
        )
        if only is not None:
            found = [r for r in found if r.label in only or r.label not in published or _reads_any(r, only)]
        prints = {r.label: fingerprint(con, r) for r in found}
        changed = [r for r in found if published.get(r.label) != prints[r.label]]
        if not changed:
            return {}
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True, exist_ok=True)
        sent: dict[str, int] = {}
        try:
            with pg.transaction():
                for relation in changed:  # sorted by label: locks are always taken in one order
                    pg.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [relation.label])
                state = {
                    label: (fp, signature)
                    for label, fp, signature in pg.execute(
                        f"SELECT relation, fingerprint, signature FROM {META_SCHEMA}.published "
                        "WHERE relation = ANY(%s)",
                        [[r.label for r in changed]],
                    ).fetchall()
                }
                for relation in changed:
                    fp, signature = state.get(relation.label, (None, None))
                    if fp == prints[relation.label]:
                        continue  # a concurrent load published the same content
                    if signature == relation.signature:
                        sent[relation.label] = _merge(con, pg, relation, scratch)
                    else:
                        _rebuild(con, pg, relation, scratch)
                        sent[relation.label] = _count(prints[relation.label])
                    pg.execute(
                        f"INSERT INTO {META_SCHEMA}.published (relation, fingerprint, signature, row_count) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT (relation) DO UPDATE SET "
                        "fingerprint = EXCLUDED.fingerprint, signature = EXCLUDED.signature, "
                        "row_count = EXCLUDED.row_count, published_at = now()",
                        [
                            relation.label,
                            prints[relation.label],
                            relation.signature,
                            _count(prints[relation.label]),
                        ],
                    )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return sent


def _count(print_: str) -> int:
    return int(print_.split(":", 1)[0])


def _column_list(relation: Relation) -> str:
    return ", ".join([*(quote_ident(c) for c, _ in relation.columns), "_row_key"])


def _copy_in(pg: psycopg.Connection[Any], target: str, columns: str, path: Path) -> None:
    """Stream a CSV file into ``target`` through ``COPY ... FROM STDIN``, a megabyte at a time."""
    statement = f"COPY {target} ({columns}) FROM STDIN {_COPY_OPTIONS}".encode()
    with path.open("rb") as f, pg.cursor() as cur, cur.copy(statement) as copy:
        while chunk := f.read(1 << 20):
            copy.write(chunk)


def _write_csv(con: duckdb.DuckDBPyConnection, query: str, path: Path) -> None:
    con.execute(f"COPY ({query}) TO {quote_literal(str(path))} (FORMAT csv, HEADER false)")


def _rebuild(
    con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any], relation: Relation, scratch: Path
) -> None:
    """(Re)create the table with the relation's columns and load every row by one COPY."""
    definitions = [f"{quote_ident(c)} {pg_type(t)}" for c, t in relation.columns]
    definitions.append("_row_key BIGINT NOT NULL")
    pg.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(relation.schema)}".encode())
    pg.execute(f"DROP TABLE IF EXISTS {relation.target}".encode())
    pg.execute(f"CREATE TABLE {relation.target} ({', '.join(definitions)})".encode())
    for column, text in relation.comments:
        comment = pgsql.SQL("COMMENT ON COLUMN {} IS {}").format(
            pgsql.Identifier(relation.schema, relation.name, column), pgsql.Literal(text)
        )
        pg.execute(comment)
    path = scratch / f"{uuid.uuid4().hex}.csv"
    source = _row_keys(con, relation)
    _write_csv(con, _rows_of(relation, source, "__keys"), path)
    _drop_temps(con)
    _copy_in(pg, relation.target, _column_list(relation), path)
    # Constraints after the COPY: one index build instead of a row-by-row one.
    pg.execute(f"ALTER TABLE {relation.target} ADD UNIQUE (_row_key)".encode())
    if relation.key:
        columns = ", ".join(quote_ident(c) for c in relation.key)
        pg.execute(f"ALTER TABLE {relation.target} ADD PRIMARY KEY ({columns})".encode())


def _merge(
    con: duckdb.DuckDBPyConnection, pg: psycopg.Connection[Any], relation: Relation, scratch: Path
) -> int:
    """Send the rows PostgreSQL lacks and delete the rows DuckDB no longer has; returns rows sent."""
    held = scratch / f"{uuid.uuid4().hex}.keys.csv"
    with (
        held.open("wb") as f,
        pg.cursor() as cur,
        cur.copy(f"COPY (SELECT _row_key FROM {relation.target}) TO STDOUT {_COPY_OPTIONS}".encode()) as copy,
    ):
        for data in copy:
            f.write(data)
    con.execute("CREATE OR REPLACE TEMP TABLE __held (k BIGINT)")
    if held.stat().st_size:
        con.execute(
            f"INSERT INTO __held SELECT * FROM read_csv({quote_literal(str(held))}, "
            "columns = {'k': 'BIGINT'}, header = false)"
        )
    source = _row_keys(con, relation)
    con.execute("CREATE OR REPLACE TEMP TABLE __new AS SELECT rid, k FROM __keys ANTI JOIN __held USING (k)")
    gone_keys = "SELECT k FROM __held ANTI JOIN __keys USING (k)"
    sent = int(con.execute("SELECT count(*) FROM __new").fetchall()[0][0])
    removed = int(con.execute(f"SELECT count(*) FROM ({gone_keys})").fetchall()[0][0])
    incoming, gone = scratch / f"{uuid.uuid4().hex}.csv", scratch / f"{uuid.uuid4().hex}.gone.csv"
    _write_csv(con, _rows_of(relation, source, "__new"), incoming)
    _write_csv(con, gone_keys, gone)
    _drop_temps(con)
    if removed and not relation.key:
        _delete_gone(pg, relation, gone)  # keyless: a changed row is a gone row and a new one
    if sent:
        columns = _column_list(relation)
        if relation.key:
            keys = ", ".join(quote_ident(c) for c in relation.key)
            updates = [
                f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}"
                for c, _ in relation.columns
                if c not in relation.key
            ]
            conflict = (
                f"ON CONFLICT ({keys}) DO UPDATE SET {', '.join([*updates, '_row_key = EXCLUDED._row_key'])}"
            )
        else:
            conflict = "ON CONFLICT (_row_key) DO NOTHING"
        pg.execute(f"CREATE TEMP TABLE _incoming (LIKE {relation.target}) ON COMMIT DROP".encode())
        _copy_in(pg, "_incoming", columns, incoming)
        pg.execute(
            f"INSERT INTO {relation.target} ({columns}) SELECT {columns} FROM _incoming {conflict}".encode()
        )
        pg.execute("DROP TABLE _incoming")
    if removed and relation.key:
        _delete_gone(pg, relation, gone)  # keyed: changed rows were updated in place, what is left is gone
    return sent


def _delete_gone(pg: psycopg.Connection[Any], relation: Relation, gone: Path) -> None:
    pg.execute("CREATE TEMP TABLE _gone (k BIGINT) ON COMMIT DROP")
    _copy_in(pg, "_gone", "k", gone)
    pg.execute(f"DELETE FROM {relation.target} AS t USING _gone AS g WHERE t._row_key = g.k".encode())
    pg.execute("DROP TABLE _gone")


register_backend("postgresql", PostgresWarehouse)
register_backend("postgres", PostgresWarehouse)
