"""SData machinery shared by the Infor CRM and Sage CRM simulators (both are SData providers).

Infor CRM (formerly Saleslogix, a Sage product until 2012) and Sage CRM both serve their records
through SData, Sage's REST protocol, so the query language, index paging and feed shape live here
once; :mod:`.infor_crm` and :mod:`.sage_crm` add what differs (paths, field names, JSON error shape,
dates, write verbs).

What SData says, and what this module implements:

* Query parameters (SData 1.1/2.0 core, section 6): ``where`` (the SData query language: ``eq``,
  ``ne``, ``lt``, ``le``, ``gt``, ``ge``, ``like``, ``in (...)``, ``between x and y``, ``and``,
  ``or``, ``not``, parentheses; strings in single quotes with ``''`` as an escaped quote; dates and
  date-times between ``@`` signs, e.g. ``@2026-11-25T10:00:00@``), ``orderBy`` (``f1 asc, f2 desc``),
  ``select`` (comma-separated properties; ``Address/City`` reaches into a nested object),
  ``startIndex`` (1-based) and ``count``.
  http://sage.github.io/SData-2.0/pages/core/0212/ (query language),
  http://sage.github.io/SData-2.0/pages/core/0604/ (query paging),
  http://sage.github.io/SData-2.0/pages/core/0305/ (paging information).
* JSON feeds (SData 2.0 JSON format): ``$totalResults``, ``$startIndex``, ``$itemsPerPage``,
  ``$resources`` with ``$key`` and ``$url`` per entry.
  http://sage.github.io/SData-2.0/pages/20/04-0500 (JSON responses).
* Error payloads: a diagnosis per problem with severity, sdataCode (``BadUrlSyntax``,
  ``BadQueryParameter``, ``ResourceKindNotFound``, ``BadWhereSyntax``, ``ApplicationUnavailable``,
  ``ApplicationDiagnosis`` ...), applicationCode and message; 503 carries ``Retry-After``.
  http://sage.github.io/SData-2.0/pages/core/0310/ (error payload),
  http://sage.github.io/SData-2.0/pages/core/0610/ (query error handling).

Paging stays fast at a million records: ``startIndex`` is an offset, but each page the simulator
serves leaves a bookmark (the sort key of its last row) for the page that follows it, so a reader
walking the pages in order (or a few ahead, in parallel) gets a keyset query on an indexed column
instead of an ``OFFSET`` that grows with the position. Bookmarks and the ``$totalResults`` count are
kept per store change sequence (records.current_seq): any write makes the next page an exact
offset query again, as the real server's ROW_NUMBER paging is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import quoteattr

from crm_pipelines_sandbox.simulators.base import (
    Faults,
    RateLimit,
    Request,
    Response,
    Router,
    SimulatorServer,
)
from crm_pipelines_sandbox.simulators.records import (
    FieldDef,
    ObjectDef,
    Stamped,
    StoreInfo,
    canonical,
    current_seq,
    insert_rows,
    open_store,
    quote,
    store_info,
    update_rows,
)

# SData diagnosis codes (core 3.10) and the HTTP status each goes with.
BAD_URL = "BadUrlSyntax"
BAD_QUERY = "BadQueryParameter"
BAD_WHERE = "BadWhereSyntax"
NOT_FOUND = "ResourceKindNotFound"
UNAVAILABLE = "ApplicationUnavailable"
APPLICATION = "ApplicationDiagnosis"


class SDataError(Exception):
    """A request the provider refuses: HTTP status, SData code, message (and an application code)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        application_code: str | None = None,
        severity: str = "Error",
        payload_path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.application_code = application_code
        self.severity = severity
        self.payload_path = payload_path


@dataclass(frozen=True)
class Diagnosis:
    severity: str
    sdata_code: str
    message: str
    application_code: str | None = None
    payload_path: str | None = None


# --- the SData query language ----------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<string>'(?:[^']|'')*')
    |(?P<date>@[^@]*@)
    |(?P<number>-?\d+(?:\.\d+)?)
    |(?P<punct>[(),])
    |(?P<ident>[A-Za-z_$][A-Za-z0-9_$]*(?:[./][A-Za-z_$][A-Za-z0-9_$]*)*)""",
    re.VERBOSE,
)
_COMPARISONS = {"eq": "=", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


@dataclass(frozen=True)
class Literal:
    kind: str  # string, number, date, null, boolean
    value: object
    text: str


@dataclass(frozen=True)
class Column:
    """What a property name in ``where``/``orderBy`` means in SQL, and how literals become parameters.

    Attributes:
        sql: The (quoted) SQL expression.
        convert: Turns a literal into the parameter compared with ``sql``; raises ``ValueError``
            when the literal does not fit the property's type.
        not_null: The column never holds NULL (meta columns, keys): it can carry keyset paging.
        name: The property name as the API spells it.
    """

    sql: str
    convert: Callable[[Literal], object]
    not_null: bool = False
    name: str = ""


Resolver = Callable[[str], Column | None]


def parse_sdata_instant(text: str) -> datetime:
    """An SData date literal (without the ``@``): date, or date-time with optional fraction and zone.

    A value without a zone is taken as UTC (both servers store UTC instants).
    """
    value = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def instant_param(literal: Literal) -> object:
    """A literal compared with a canonical ``_created``/``_modified`` column."""
    if literal.kind == "null":
        return None
    if literal.kind not in ("date", "string"):
        raise ValueError(f"{literal.text} is not a date")
    return canonical(parse_sdata_instant(str(literal.value)))


def typed_param(field_type: str, format_date: Callable[[datetime], str]) -> Callable[[Literal], object]:
    """The literal converter for a stored field of this type (dates as the system stores them)."""

    def convert(literal: Literal) -> object:
        if literal.kind == "null":
            return None
        if field_type in ("number", "integer"):
            number = float(str(literal.value))
            return int(number) if field_type == "integer" and number.is_integer() else number
        if field_type == "boolean":
            text = str(literal.value).lower()
            if text in ("true", "t", "1", "y"):
                return 1
            if text in ("false", "f", "0", "n"):
                return 0
            raise ValueError(f"{literal.text} is not a boolean")
        if field_type in ("date", "datetime") and literal.kind == "date":
            return format_date(parse_sdata_instant(str(literal.value)))
        return str(literal.value)

    return convert


class _WhereParser:
    def __init__(self, text: str, resolve: Resolver) -> None:
        self.text = text
        self.resolve = resolve
        self.tokens: list[tuple[str, str]] = []
        self.columns: set[str] = set()
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise self.error(f"unexpected character {text[pos]!r} at position {pos + 1}")
            if match.lastgroup != "ws":
                self.tokens.append((match.lastgroup or "", match.group()))
            pos = match.end()
        self.i = 0

    def error(self, message: str) -> SDataError:
        return SDataError(400, BAD_WHERE, f"Invalid where expression '{self.text}': {message}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def word(self) -> str:
        tok = self.peek()
        return tok[1].lower() if tok and tok[0] == "ident" else ""

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise self.error("unexpected end of expression")
        self.i += 1
        return tok

    def expect_punct(self, char: str) -> None:
        kind, text = self.take()
        if kind != "punct" or text != char:
            raise self.error(f"expected '{char}' but found '{text}'")

    def parse(self) -> tuple[str, list[object]]:
        params: list[object] = []
        sql = self.disjunction(params)
        left = self.peek()
        if left is not None:
            raise self.error(f"unexpected '{left[1]}'")
        return sql, params

    def disjunction(self, params: list[object]) -> str:
        parts = [self.conjunction(params)]
        while self.word() == "or":
            self.take()
            parts.append(self.conjunction(params))
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def conjunction(self, params: list[object]) -> str:
        parts = [self.unary(params)]
        while self.word() == "and":
            self.take()
            parts.append(self.unary(params))
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def unary(self, params: list[object]) -> str:
        if self.word() == "not":
            self.take()
            return f"(NOT {self.unary(params)})"
        tok = self.peek()
        if tok == ("punct", "("):
            self.take()
            inner = self.disjunction(params)
            self.expect_punct(")")
            return f"({inner})"
        return self.comparison(params)

    def column(self) -> Column:
        kind, text = self.take()
        if kind != "ident":
            raise self.error(f"expected a property name but found '{text}'")
        if self.peek() == ("punct", "("):
            raise self.error(f"function '{text}' is not supported")
        column = self.resolve(text)
        if column is None:
            raise self.error(f"property '{text}' does not exist")
        self.columns.add(column.name or text)
        return column

    def literal(self) -> Literal:
        kind, text = self.take()
        if kind == "string":
            return Literal("string", text[1:-1].replace("''", "'"), text)
        if kind == "date":
            return Literal("date", text[1:-1], text)
        if kind == "number":
            return Literal("number", text, text)
        if kind == "ident" and text.lower() == "null":
            return Literal("null", None, text)
        if kind == "ident" and text.lower() in ("true", "false"):
            return Literal("boolean", text.lower(), text)
        raise self.error(f"expected a value but found '{text}'")

    def param(self, column: Column, literal: Literal) -> object:
        try:
            return column.convert(literal)
        except ValueError as exc:
            raise self.error(f"{literal.text} does not fit {column.name or 'the property'}: {exc}") from None

    def comparison(self, params: list[object]) -> str:
        column = self.column()
        operator = self.word()
        negate = False
        if operator == "not":
            self.take()
            negate = True
            operator = self.word()
            if operator not in ("in", "like", "between"):
                raise self.error("'not' must be followed by in, like or between")
        self.take()
        prefix = "NOT " if negate else ""
        if operator in _COMPARISONS:
            literal = self.literal()
            if literal.kind == "null":
                return f"{column.sql} IS {'NOT ' if operator == 'ne' else ''}NULL"
            params.append(self.param(column, literal))
            return f"{column.sql} {_COMPARISONS[operator]} ?"
        if operator == "like":
            literal = self.literal()
            params.append(str(literal.value))
            return f"{column.sql} {prefix}LIKE ?"
        if operator == "between":
            low = self.literal()
            if self.word() != "and":
                raise self.error("between needs 'and'")
            self.take()
            high = self.literal()
            params.extend([self.param(column, low), self.param(column, high)])
            return f"{column.sql} {prefix}BETWEEN ? AND ?"
        if operator == "in":
            self.expect_punct("(")
            values = [self.param(column, self.literal())]
            while self.peek() == ("punct", ","):
                self.take()
                values.append(self.param(column, self.literal()))
            self.expect_punct(")")
            params.extend(values)
            return f"{column.sql} {prefix}IN ({', '.join('?' for _ in values)})"
        raise self.error(f"unknown operator '{operator}'")


@dataclass(frozen=True)
class Where:
    sql: str
    params: tuple[object, ...]
    columns: frozenset[str]  # property names the condition mentions


def compile_where(text: str | None, resolve: Resolver) -> Where:
    """Compile an SData ``where`` into parameterised SQL (values are never interpolated)."""
    if not text or not text.strip():
        return Where("", (), frozenset())
    parser = _WhereParser(text, resolve)
    sql, params = parser.parse()
    return Where(sql, tuple(params), frozenset(parser.columns))


def compile_order(text: str | None, resolve: Resolver) -> list[tuple[Column, bool]]:
    """``orderBy=f1 asc, f2 desc`` as (column, descending) pairs."""
    out: list[tuple[Column, bool]] = []
    for part in (text or "").split(","):
        words = part.split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise SDataError(400, BAD_QUERY, f"Invalid orderBy clause '{part.strip()}'")
        column = resolve(words[0])
        if column is None:
            raise SDataError(400, BAD_QUERY, f"Invalid orderBy: property '{words[0]}' does not exist")
        out.append((column, len(words) == 2 and words[1].lower() == "desc"))
    return out


# --- paging ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeedQuery:
    """One listing: table, filter and order (the order's last term is always ``rowid``)."""

    table: str
    where: str
    params: tuple[object, ...]
    order: tuple[tuple[str, bool], ...]  # (SQL expression, descending)
    keyset: bool  # every order expression is NOT NULL and all go the same direction


class Pager:
    """``$totalResults`` and page bookmarks per query and store version (thread-safe)."""

    def __init__(self, max_queries: int = 64) -> None:
        self.max_queries = max_queries
        self._totals: OrderedDict[tuple[FeedQuery, int], int] = OrderedDict()
        self._marks: OrderedDict[tuple[FeedQuery, int], dict[int, tuple[object, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    def _remember(self, cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.max_queries:
            cache.popitem(last=False)

    def total(self, conn: sqlite3.Connection, query: FeedQuery, seq: int) -> int:
        with self._lock:
            found = self._totals.get((query, seq))
        if found is not None:
            return found
        where = f" WHERE {query.where}" if query.where else ""
        total = int(
            conn.execute(f"SELECT COUNT(*) FROM {quote(query.table)}{where}", query.params).fetchone()[0]
        )
        with self._lock:
            self._remember(self._totals, (query, seq), total)
        return total

    def page(
        self, conn: sqlite3.Connection, query: FeedQuery, seq: int, offset: int, count: int, columns: str
    ) -> list[sqlite3.Row]:
        """Rows ``offset .. offset + count - 1`` (0-based) of the query, as sqlite3.Row."""
        if count <= 0:
            return []
        order_sql = ", ".join(f"{expr} {'DESC' if desc else 'ASC'}" for expr, desc in query.order)
        sort_exprs = [expr for expr, _ in query.order]
        conditions = [query.where] if query.where else []
        params = list(query.params)
        skip = offset
        if query.keyset:
            with self._lock:
                marks = self._marks.get((query, seq), {})
                start = max((at for at in marks if at <= offset), default=None)
                bookmark = marks[start] if start is not None else None
            if bookmark is not None and start is not None:
                direction = "<" if query.order[0][1] else ">"
                # First in the WHERE: SQLite seeks its index with the first range bound it meets on
                # a column, and a `ModifyDate ge` filter would otherwise restart every page at the
                # window's start.
                conditions.insert(
                    0, f"({', '.join(sort_exprs)}) {direction} ({', '.join('?' for _ in sort_exprs)})"
                )
                params = [*bookmark, *params]
                skip = offset - start
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        sort_columns = ", ".join(f"{expr} AS _sort{i}" for i, expr in enumerate(sort_exprs))
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            f"SELECT {sort_columns}, {columns} FROM {quote(query.table)}{where}"
            f" ORDER BY {order_sql} LIMIT ? OFFSET ?",
            [*params, count, skip],
        ).fetchall()
        if query.keyset and rows:
            last = rows[-1]
            with self._lock:
                kept = self._marks.get((query, seq))
                if kept is None:
                    kept = {}
                    self._remember(self._marks, (query, seq), kept)
                kept[offset + len(rows)] = tuple(last[f"_sort{i}"] for i in range(len(sort_exprs)))
        return rows


# --- the shared server -----------------------------------------------------------------------------


@dataclass
class ObjectView:
    """How one store object is exposed: its resource name and the roles some of its fields play."""

    resource: str  # as it appears in the URL
    references: Mapping[str, str] = field(default_factory=dict)  # field -> referenced resource
    include_only: frozenset[str] = frozenset()  # json fields returned only when named in include=
    external_id: str | None = None  # the field an upsert looks records up by (record_faults key)
    created_by: str | None = None  # the field the server stamps with the user who created a record
    modified_by: str | None = None  # ... and with the user who saved it last


class SDataSimulator(SimulatorServer):
    """An SData provider over a record store; subclasses say what differs between the two servers.

    Attributes:
        record_faults: Per-record faults for the write side: an external id value (or a key) ->
            application codes answered, one per attempt, instead of writing (a retryable failure
            for the tests: answered as HTTP 409 with a ``Transient`` diagnosis).
        token_ttl_seconds: Kept for the sandbox contract; HTTP Basic has nothing that expires.
    """

    name = "sdata"
    prefix = "/sdata"
    realm = "SData"
    names_case_insensitive = False
    key_as_property = False  # whether the key is also a property of the entry besides $key
    # Whether entries carry an $etag (and single reads an ETag header) that a PUT may send back in
    # If-Match: SData's update concurrency check (core 9.3), answered 412 when the record changed.
    etags = False
    api_user_id: object = None  # what the audit fields hold for a save through the API
    default_count = 100
    max_count = 1000

    def __init__(
        self,
        store_path: Path,
        *,
        username: str,
        password: str,
        views: Mapping[str, ObjectView],
        token_ttl_seconds: float | None = None,
        throttle_status: int = 503,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: RateLimit | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.views = dict(views)
        self._resources = {
            (v.resource.lower() if self.names_case_insensitive else v.resource): obj
            for obj, v in views.items()
        }
        self.token_ttl_seconds = token_ttl_seconds
        # SData documents 503 + Retry-After for transient refusals; a gateway in front may say 429.
        self.throttle_status = throttle_status
        self.record_faults: dict[str, list[str]] = {}
        self.pager = Pager()
        self._write_lock = threading.Lock()
        super().__init__(store_path, host=host, port=port, rate_limit=rate_limit, faults=faults)

    # -- what differs per server ---------------------------------------------------------------

    def diagnoses_body(self, diagnoses: Sequence[Diagnosis]) -> object:
        """The JSON error body for these diagnoses."""
        raise NotImplementedError

    def format_date(self, value: datetime) -> str:
        """How the store holds a date-time of a non-meta field (for where literals on it)."""
        return canonical(value)

    def render(self, obj: ObjectDef, fdef: FieldDef, value: object) -> object:
        """A stored value as the API's JSON renders it."""
        if value is None:
            return None
        if fdef.type == "number":
            return float(value) if isinstance(value, int | float) else value
        if fdef.type == "integer":
            return int(value) if isinstance(value, int | float) else value
        if fdef.type == "boolean":
            return bool(value)
        if fdef.type == "json":
            return json.loads(str(value))
        return value

    def entry_meta(self, obj: ObjectDef, row: sqlite3.Row) -> dict[str, object]:
        key = row[obj.key]
        meta: dict[str, object] = {"$key": str(key), "$url": self.entry_url(obj, key)}
        if self.etags:
            meta["$etag"] = self.etag(row)
        return meta

    @staticmethod
    def etag(row: sqlite3.Row) -> str:
        """The record's version: it changes with every save (the store's change sequence)."""
        digest = hashlib.md5(f"{row['_seq']}:{row['_modified']}".encode(), usedforsecurity=False).digest()
        return base64.b64encode(digest).decode()

    def feed_meta(self, obj: ObjectDef, request: Request) -> dict[str, object]:
        return {"$url": f"{self.base_url}{request.path}"}

    def new_key(self, conn: sqlite3.Connection, obj: ObjectDef) -> object:
        raise NotImplementedError

    def writable_value(self, obj: ObjectDef, fdef: FieldDef, value: object) -> object:
        """A JSON value from a request body as the store keeps it (references may come as {$key})."""
        if isinstance(value, dict) and fdef.name in self.views[obj.name].references:
            return value.get("$key")
        if fdef.type == "json" and value is not None:
            return value
        if fdef.type == "boolean" and value is not None:
            return 1 if value in (True, 1, "true", "T", "Y") else 0
        if fdef.type == "datetime" and isinstance(value, str):
            try:
                return self.format_date(parse_sdata_instant(value))  # kept as the server renders it
            except ValueError:
                return value  # already the server's own form (/Date(ms)/)
        return value

    # -- helpers ---------------------------------------------------------------------------------

    def fail(self, error: SDataError, headers: Mapping[str, str] | None = None) -> Response:
        diagnosis = Diagnosis(
            error.severity, error.code, error.message, error.application_code, error.payload_path
        )
        return Response.json(error.status, self.diagnoses_body([diagnosis]), headers)

    def entry_url(self, obj: ObjectDef, key: object) -> str:
        return f"{self.base_url}{self.prefix}/{self.views[obj.name].resource}('{key}')"

    def info(self) -> StoreInfo:
        return store_info(self.db())

    def object_for(self, resource: str) -> ObjectDef:
        name = self._resources.get(resource.lower() if self.names_case_insensitive else resource)
        info = self.info()
        if name is None or name not in info.objects:
            raise SDataError(404, NOT_FOUND, f"Resource kind '{resource}' does not exist")
        return info.objects[name]

    def field_for(self, obj: ObjectDef, name: str) -> FieldDef | None:
        for fdef in obj.fields:
            if fdef.name == name or (self.names_case_insensitive and fdef.name.lower() == name.lower()):
                return fdef
        return None

    def resolver(self, obj: ObjectDef) -> Resolver:
        """Property names in where/orderBy: the created/modified fields compare as exact instants."""

        def resolve(name: str) -> Column | None:
            base = name.split(".", 1)[0]
            if name in ("$key", "Id") or (base in self.views[obj.name].references and "." in name):
                is_key = name in ("$key", "Id")
                fdef = self.field_for(obj, obj.key if is_key else base)
                assert fdef is not None
                # The key is never null, so an order on it can page by bookmark.
                return Column(quote(fdef.name), typed_param(fdef.type, self.format_date), is_key, name)
            fdef = self.field_for(obj, name)
            if fdef is None or fdef.type == "json":
                return None
            if fdef.name == obj.modified_field:
                return Column("_modified", instant_param, True, fdef.name)
            if fdef.name == obj.created_field:
                return Column("_created", instant_param, True, fdef.name)
            return Column(
                quote(fdef.name), typed_param(fdef.type, self.format_date), fdef.name == obj.key, fdef.name
            )

        return resolve

    def visibility(self, obj: ObjectDef, where: Where) -> str:
        """The implicit filter on deleted rows (the store keeps them; listings hide them)."""
        return "_deleted_at IS NULL"

    def selected(self, obj: ObjectDef, request: Request) -> list[tuple[FieldDef, tuple[str, ...]]]:
        """Fields to return, each with the sub-properties asked for (``Address/City``).

        ``precedence=0`` omits the payload (SData core 6.5): entries carry their protocol properties
        ($key, $url) only. The schema declares no precedence levels, so any other value changes nothing.
        """
        view = self.views[obj.name]
        precedence = (request.param("precedence") or "").strip()
        if precedence:
            if not precedence.isdigit():
                raise SDataError(
                    400, BAD_QUERY, f"Invalid value '{precedence}' for query parameter 'precedence'"
                )
            if int(precedence) == 0:
                return []
        include = {
            part.strip().lower() for part in (request.param("include") or "").split(",") if part.strip()
        }
        raw = request.param("select")
        chosen: dict[str, list[str]] = {}
        if raw is None or not raw.strip() or raw.strip() == "*":
            for fdef in obj.fields:
                if (fdef.name == obj.key and not self.key_as_property) or (
                    fdef.name in view.include_only and fdef.name.lower() not in include
                ):
                    continue
                chosen[fdef.name] = []
        else:
            for part in raw.split(","):
                name, _, sub = part.strip().partition("/")
                if not name or name == "$key":
                    continue
                named = self.field_for(obj, name)
                if named is None:
                    raise SDataError(
                        400,
                        BAD_QUERY,
                        f"Invalid select: property '{name}' does not exist on '{view.resource}'",
                    )
                subs = chosen.setdefault(named.name, [])
                if sub and sub != "*":
                    subs.append(sub)
        for name in view.include_only:
            if name.lower() in include:
                chosen.setdefault(name, [])
        by_name = {f.name: f for f in obj.fields}
        return [
            (by_name[name], tuple(subs))
            for name, subs in chosen.items()
            if name != obj.key or self.key_as_property
        ]

    def entry(
        self, obj: ObjectDef, row: sqlite3.Row, fields: Sequence[tuple[FieldDef, tuple[str, ...]]]
    ) -> dict[str, object]:
        out = self.entry_meta(obj, row)
        view = self.views[obj.name]
        for fdef, subs in fields:
            value = self.render(obj, fdef, row[fdef.name])
            if fdef.name in view.references:
                value = (
                    None
                    if value is None
                    else {
                        "$key": str(value),
                        "$url": f"{self.base_url}{self.prefix}/{view.references[fdef.name]}('{value}')",
                    }
                )
            elif subs and isinstance(value, dict):
                value = {k: v for k, v in value.items() if k in subs or k.startswith("$")}
            out[fdef.name] = value
        return out

    # -- auth, limits, errors --------------------------------------------------------------------

    def expire_tokens(self) -> None:
        """HTTP Basic sends the credentials with every request: there is nothing to expire."""

    def unauthorized(self) -> Response:
        error = SDataError(
            401,
            APPLICATION,
            "Authentication failed: the user name or password is incorrect.",
            application_code="AuthenticationFailed",
        )
        return self.fail(error, {"WWW-Authenticate": f'Basic realm="{self.realm}"'})

    def authenticate(self, request: Request) -> tuple[str | None, Response | None]:
        credentials = request.basic_auth()
        if credentials is None:
            return None, self.unauthorized()
        user, password = credentials
        user_ok = hmac.compare_digest(user.encode(), self.username.encode())
        password_ok = hmac.compare_digest(password.encode(), self.password.encode())
        if not (user_ok and password_ok):
            return None, self.unauthorized()
        return user, None

    def rate_limited(self, retry_after: float) -> Response:
        wait = self.retry_after_header(retry_after)
        error = SDataError(
            self.throttle_status,
            UNAVAILABLE,
            f"Too many requests: the service is temporarily unavailable. Retry after {wait} seconds.",
            severity="Transient",
        )
        return self.fail(error, {"Retry-After": wait})

    def error_response(self, status: int) -> Response:
        if status in (429, 503):
            saved = self.throttle_status
            self.throttle_status = status
            try:
                return self.rate_limited(1.0)
            finally:
                self.throttle_status = saved
        if status == 401:
            return self.unauthorized()
        messages = {
            400: (BAD_QUERY, "The request is invalid."),
            403: (APPLICATION, "Access denied: the user is not allowed to read this resource."),
            404: (NOT_FOUND, "The requested resource does not exist."),
            500: (APPLICATION, "An unexpected error occurred on the server."),
        }
        code, message = messages.get(status, (APPLICATION, f"The server answered {status}."))
        severity = "Fatal" if status >= 500 else "Error"
        return self.fail(SDataError(status, code, message, severity=severity))

    def not_found(self, request: Request) -> Response:
        return self.fail(SDataError(404, NOT_FOUND, f"The resource '{request.path}' does not exist"))

    def method_not_allowed(self, request: Request) -> Response:
        return self.fail(
            SDataError(405, BAD_URL, f"Method {request.method} is not supported on '{request.path}'")
        )

    # -- routes ----------------------------------------------------------------------------------

    def register_routes(self, router: Router) -> None:
        resource = self.prefix + r"/(?P<resource>[A-Za-z][A-Za-z0-9_]*)"
        selector = r"\((?P<selector>.+)\)"
        router.add("GET", resource + r"/?", self.guarded(self.list_resources))
        router.add("GET", resource + r"/\$schema/?", self.guarded(self.schema))
        router.add("GET", resource + selector, self.guarded(self.read_resource))
        router.add("POST", resource + r"/?", self.guarded(self.create_resource))
        for method in self.update_methods():
            router.add(method, resource + selector, self.guarded(self.update_resource))

    def update_methods(self) -> tuple[str, ...]:
        return ("PUT",)

    def guarded(self, handler: Callable[..., Response]) -> Callable[..., Response]:
        def run(request: Request, **params: str) -> Response:
            try:
                return handler(request, **params)
            except SDataError as error:
                return self.fail(error)

        return run

    # -- reads -----------------------------------------------------------------------------------

    def _int_param(self, request: Request, name: str, default: int, minimum: int) -> int:
        raw = request.param(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SDataError(400, BAD_QUERY, f"Invalid value '{raw}' for query parameter '{name}'") from None
        if value < minimum:
            raise SDataError(400, BAD_QUERY, f"Query parameter '{name}' must be at least {minimum}")
        return value

    def list_resources(self, request: Request, resource: str) -> Response:
        obj = self.object_for(resource)
        start = self._int_param(request, "startIndex", 1, 1)
        # The provider may cap a page (SData 3.5): $itemsPerPage says what it used.
        count = min(self._int_param(request, "count", self.default_count, 0), self.max_count)
        resolve = self.resolver(obj)
        where = compile_where(request.param("where"), resolve)
        order = compile_order(request.param("orderBy"), resolve)
        fields = self.selected(obj, request)
        conditions = [c for c in (self.visibility(obj, where), where.sql) if c]
        order_terms = [(c.sql, desc) for c, desc in order] or [(quote(obj.key), False)]
        keyset = all(c.not_null for c, _ in order) and len({desc for _, desc in order_terms}) == 1
        query = FeedQuery(
            table=obj.name,
            where=" AND ".join(f"({c})" for c in conditions),
            params=where.params,
            order=(*order_terms, ("rowid", order_terms[0][1])),
            keyset=keyset,
        )
        conn = self.db()
        seq = current_seq(conn)
        total = self.pager.total(conn, query, seq)
        rows = self.pager.page(conn, query, seq, start - 1, count, "*")
        body: dict[str, object] = self.feed_meta(obj, request)
        body.update(
            {
                "$totalResults": total,
                "$startIndex": start,
                "$itemsPerPage": count,
                "$resources": [self.entry(obj, row, fields) for row in rows],
            }
        )
        return Response.json(200, body)

    def _find(self, conn: sqlite3.Connection, obj: ObjectDef, selector: str) -> sqlite3.Row | None:
        text = unquote(selector).strip()
        match = re.fullmatch(r"'((?:[^']|'')*)'|(-?\d+)", text)
        if match is None:
            raise SDataError(400, BAD_URL, f"Invalid resource selector '({text})'")
        key: object = match.group(1).replace("''", "'") if match.group(1) is not None else match.group(2)
        fdef = self.field_for(obj, obj.key)
        if fdef is not None and fdef.type == "integer":
            try:
                key = int(str(key))
            except ValueError:
                return None
        conn.row_factory = sqlite3.Row
        found: sqlite3.Row | None = conn.execute(
            f"SELECT * FROM {quote(obj.name)} WHERE {quote(obj.key)} = ? AND _deleted_at IS NULL", (key,)
        ).fetchone()
        return found

    def read_resource(self, request: Request, resource: str, selector: str) -> Response:
        obj = self.object_for(resource)
        row = self._find(self.db(), obj, selector)
        if row is None:
            raise SDataError(
                404,
                APPLICATION,
                f"The resource {resource}({unquote(selector)}) does not exist",
                application_code="NotFound",
            )
        entry = self.entry(obj, row, self.selected(obj, request))
        return Response.json(200, entry, {"ETag": self.etag(row)} if self.etags else None)

    def schema(self, request: Request, resource: str) -> Response:
        """The resource kind's XSD (SData ``$schema``); fields added later are in it too."""
        obj = self.object_for(resource)
        view = self.views[obj.name]
        xsd_types = {
            "string": "xs:string",
            "number": "xs:decimal",
            "integer": "xs:int",
            "boolean": "xs:boolean",
            "date": "xs:date",
            "datetime": "xs:dateTime",
            "json": "xs:anyType",
        }
        kind = view.resource
        lines = [
            '<?xml version="1.0" encoding="utf-8"?>',
            '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"'
            ' xmlns:sme="http://schemas.sage.com/sdata/sme/2007"'
            ' elementFormDefault="qualified">',
            f'  <xs:element name={quoteattr(kind)} type={quoteattr(kind + "--type")} sme:role="resourceKind"'
            f' sme:pluralName={quoteattr(kind)} sme:canGet="true" sme:canPost="true" sme:canPut="true"/>',
            f"  <xs:complexType name={quoteattr(kind + '--type')}>",
            "    <xs:all>",
        ]
        for fdef in obj.fields:
            if fdef.name in view.references:
                extra = f' sme:relationship="reference" sme:target={quoteattr(view.references[fdef.name])}'
                xsd = "xs:string"
            else:
                extra = ""
                xsd = xsd_types[fdef.type]
            occurs = "1" if fdef.required else "0"
            lines.append(
                f'      <xs:element name={quoteattr(fdef.name)} type="{xsd}" minOccurs="{occurs}"'
                f' nillable="{"false" if fdef.required else "true"}"{extra}/>'
            )
        lines += ["    </xs:all>", "  </xs:complexType>", "</xs:schema>", ""]
        return Response(
            200, "\n".join(lines).encode("utf-8"), {"Content-Type": "application/xml; charset=utf-8"}
        )

    # -- writes ----------------------------------------------------------------------------------

    def _body(self, request: Request) -> dict[str, Any]:
        try:
            body = request.json()
        except ValueError:
            raise SDataError(400, BAD_QUERY, "The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise SDataError(400, BAD_QUERY, "The request body must be a JSON object (one resource)")
        return body

    def _injected(self, names: Iterable[object]) -> None:
        for name in names:
            queued = self.record_faults.get(str(name)) if name not in (None, "") else None
            if queued:
                code = queued.pop(0)
                raise SDataError(
                    409,
                    APPLICATION,
                    f"Injected failure {code} for {name}",
                    application_code=code,
                    severity="Transient",
                )

    def _changes(self, obj: ObjectDef, body: Mapping[str, Any]) -> dict[str, object]:
        changes: dict[str, object] = {}
        view = self.views[obj.name]
        system = {
            obj.key,
            obj.created_field,
            obj.modified_field,
            obj.deleted_flag,
            view.created_by,
            view.modified_by,
        }
        for name, value in body.items():
            if name.startswith("$"):
                continue  # $key, $url, $etag ... are protocol properties, not data
            fdef = self.field_for(obj, name)
            if fdef is None:
                raise SDataError(
                    400,
                    APPLICATION,
                    f"The property '{name}' does not exist on resource kind '{self.views[obj.name].resource}'",
                    application_code="PropertyNotFound",
                    payload_path=name,
                )
            if fdef.name in system:
                continue  # the server sets keys and stamps itself
            changes[fdef.name] = self.writable_value(obj, fdef, value)
        return changes

    def _missing(self, obj: ObjectDef, values: Mapping[str, object]) -> None:
        for fdef in obj.fields:
            if fdef.required and fdef.name != obj.key and values.get(fdef.name) in (None, ""):
                raise SDataError(
                    400,
                    APPLICATION,
                    f"The property '{fdef.name}' is required",
                    application_code="RequiredFieldMissing",
                    payload_path=fdef.name,
                )

    def create_resource(self, request: Request, resource: str) -> Response:
        obj = self.object_for(resource)
        changes = self._changes(obj, self._body(request))
        external_id = self.views[obj.name].external_id
        self._injected([changes.get(external_id) if external_id else None])
        self._missing(obj, changes)
        now = datetime.now(UTC)
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            info = store_info(conn)
            obj = info.objects[obj.name]
            key = self.new_key(conn, obj)
            stamps = self.audit(obj, created=True)
            insert_rows(conn, info, obj.name, [Stamped({**changes, **stamps, obj.key: key}, now, now)])
            conn.row_factory = sqlite3.Row
            row = conn.execute(
                f"SELECT * FROM {quote(obj.name)} WHERE {quote(obj.key)} = ?", (key,)
            ).fetchone()
            entry = self.entry(obj, row, self.selected(obj, request))
        return Response.json(201, entry, {"Location": str(entry["$url"])})

    def update_resource(self, request: Request, resource: str, selector: str) -> Response:
        obj = self.object_for(resource)
        changes = self._changes(obj, self._body(request))
        external_id = self.views[obj.name].external_id
        self._injected([changes.get(external_id) if external_id else None, unquote(selector).strip("'")])
        now = datetime.now(UTC)
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            info = store_info(conn)
            obj = info.objects[obj.name]
            row = self._find(conn, obj, selector)
            if row is None:
                raise SDataError(
                    404,
                    APPLICATION,
                    f"The resource {resource}({unquote(selector)}) does not exist",
                    application_code="NotFound",
                )
            expected = (request.header("If-Match") or "").strip()
            if self.etags and expected and expected not in ("*", self.etag(row)):
                # SData 9.5: 412 with the resource as it is now, for the consumer to merge.
                current = self.entry(obj, row, self.selected(obj, request))
                return Response.json(412, current, {"ETag": self.etag(row)})
            merged = {name: row[name] for name in obj.field_names}
            merged.update(changes)
            self._missing(obj, merged)
            changes.update(self.audit(obj, created=False))
            update_rows(conn, info, obj.name, [row[obj.key]], at=now, changes=changes)
            conn.row_factory = sqlite3.Row
            fresh = conn.execute(
                f"SELECT * FROM {quote(obj.name)} WHERE {quote(obj.key)} = ?", (row[obj.key],)
            ).fetchone()
            entry = self.entry(obj, fresh, self.selected(obj, request))
        return Response.json(200, entry, {"ETag": self.etag(fresh)} if self.etags else None)

    def audit(self, obj: ObjectDef, *, created: bool) -> dict[str, object]:
        """The audit fields a save through the API stamps with the API user (created_by only on create)."""
        view = self.views[obj.name]
        fields = [view.modified_by, view.created_by if created else None]
        return {name: self.api_user_id for name in fields if name and name in obj.field_names}


def random_password() -> str:
    """A fresh password for a simulator run."""
    return secrets.token_urlsafe(18)
