"""Salesforce REST API simulator: OAuth token endpoint, SOQL query/queryAll with query locators, limits.

It serves what is in a Salesforce store (see :mod:`.store`) the way the REST API (v58.0-v62.0)
does: ``totalSize``/``done``/``nextRecordsUrl``/``records`` pages with ``attributes`` per record,
numbers and booleans as JSON types, the ``Sforce-Limit-Info`` header, and Salesforce's error
bodies (``[{"message": ..., "errorCode": ...}]``).

SOQL support is the subset a connector uses: ``SELECT f1, f2 | COUNT() FROM Obj [WHERE ...]
[ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...] [LIMIT n] [OFFSET n]`` where conditions are
``Field op literal`` (=, !=, <>, <, <=, >, >=, LIKE, IN, NOT IN) combined with AND, OR, NOT and
parentheses, and literals are strings, numbers, booleans, null, dates and unquoted datetimes
(``2026-11-25T00:00:00Z``). Queries become parameterised SQLite SQL: field names are checked
against the table, values are never interpolated.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import re
import secrets
import sqlite3
import threading
import time
from array import array
from collections import OrderedDict, deque
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from crm_pipelines_sandbox.simulators.base import (
    Faults,
    RateLimit,
    Request,
    Response,
    Router,
    SimulatorServer,
)
from crm_pipelines_sandbox.simulators.store import (
    SALESFORCE_INTEGER_TYPES,
    SALESFORCE_KEY_PREFIXES,
    SALESFORCE_NUMERIC_TYPES,
    open_store,
    table_columns,
)

API_VERSIONS = ("58.0", "59.0", "60.0", "61.0", "62.0")
API_VERSION = "62.0"
DEFAULT_CLIENT_ID = "3MVG9sandbox.crm-pipelines.client"
DEFAULT_CLIENT_SECRET = "sandbox-client-secret"
DEFAULT_REFRESH_TOKEN = "5Aep861sandbox.refresh.token"
DEFAULT_TOKEN_TTL = 7200.0
DEFAULT_BATCH_SIZE = 2000
DEFAULT_API_LIMIT = 100_000
MAX_OFFSET = 2000
_LOCATOR_IDLE_SECONDS = 15 * 60
_MAX_LOCATORS = 50
_VERSION_LABELS = {
    "58.0": "Summer '23",
    "59.0": "Winter '24",
    "60.0": "Spring '24",
    "61.0": "Summer '24",
    "62.0": "Winter '25",
}
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_V = r"/services/data/v(?P<version>\d+\.\d)"


class SoqlError(Exception):
    """A query Salesforce would reject; carries the errorCode and message it would send."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


# ---------------------------------------------------------------------------------------------
# SOQL subset: tokens, parse tree, translation to SQLite
# ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<string>'(?:[^'\\]|\\.)*')
    |(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
    |(?P<date>\d{4}-\d{2}-\d{2})
    |(?P<number>[+-]?\d+(?:\.\d+)?)
    |(?P<op><=|>=|!=|<>|=|<|>)
    |(?P<punct>[(),])
    |(?P<ident>[A-Za-z_][A-Za-z0-9_.]*)""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int

    def word(self) -> str:
        return self.text.upper() if self.kind == "ident" else ""


@dataclass(frozen=True)
class _Literal:
    kind: str  # string, number, date, datetime, boolean, null
    value: object
    pos: int


@dataclass(frozen=True)
class _Cond:
    field: str
    field_pos: int
    op: str  # =, !=, <, <=, >, >=, LIKE, IN, NOT IN
    values: tuple[_Literal, ...]


@dataclass(frozen=True)
class _Bool:
    op: str  # AND, OR, NOT
    parts: tuple[_Cond | _Bool, ...]


@dataclass(frozen=True)
class _Order:
    field: str
    field_pos: int
    descending: bool
    nulls: str | None  # FIRST, LAST or None for Salesforce's default


@dataclass
class SoqlQuery:
    """A parsed query (field names as written; checked against the object when compiled)."""

    text: str
    sobject: str
    sobject_pos: int
    fields: list[tuple[str, int]] | None  # None for COUNT()
    where: _Cond | _Bool | None = None
    order: list[_Order] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise SoqlError("MALFORMED_QUERY", f"unexpected character {text[pos]!r} at column {pos + 1}")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(_Tok(kind, match.group(), pos))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise self.error("unexpected end of query")
        self.i += 1
        return tok

    def error(self, message: str, tok: _Tok | None = None) -> SoqlError:
        tok = tok or self.peek()
        where = f"ERROR at Row:1:Column:{tok.pos + 1}\n" if tok else ""
        return SoqlError("MALFORMED_QUERY", f"\n{self.text}\n{where}{message}")

    def accept(self, *words: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.word() == words[0]:
            save = self.i
            for word in words:
                tok = self.peek()
                if tok is None or tok.word() != word:
                    self.i = save
                    return False
                self.i += 1
            return True
        return False

    def expect(self, *words: str) -> None:
        if not self.accept(*words):
            tok = self.peek()
            found = f"'{tok.text}'" if tok else "end of query"
            raise self.error(f"unexpected token: {found}, expected {' '.join(words)}")

    def punct(self, char: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "punct" and tok.text == char:
            self.i += 1
            return True
        return False

    def ident(self) -> _Tok:
        tok = self.next()
        if tok.kind != "ident":
            raise self.error(f"unexpected token: '{tok.text}'", tok)
        return tok

    def parse(self) -> SoqlQuery:
        self.expect("SELECT")
        fields: list[tuple[str, int]] | None = []
        tok = self.peek()
        if tok is not None and tok.word() == "COUNT" and self._is_count():
            self.i += 3
            fields = None
        else:
            assert fields is not None
            while True:
                name = self.ident()
                if name.word() == "FROM":
                    raise self.error("unexpected token: 'FROM'", name)
                fields.append((name.text, name.pos))
                if not self.punct(","):
                    break
        self.expect("FROM")
        sobject = self.ident()
        query = SoqlQuery(self.text, sobject.text, sobject.pos, fields)
        if self.accept("WHERE"):
            query.where = self.parse_or()
        if self.accept("ORDER", "BY"):
            while True:
                name = self.ident()
                descending = False
                if self.accept("DESC"):
                    descending = True
                else:
                    self.accept("ASC")
                nulls = None
                if self.accept("NULLS", "FIRST"):
                    nulls = "FIRST"
                elif self.accept("NULLS", "LAST"):
                    nulls = "LAST"
                query.order.append(_Order(name.text, name.pos, descending, nulls))
                if not self.punct(","):
                    break
        if self.accept("LIMIT"):
            query.limit = self.integer()
        if self.accept("OFFSET"):
            query.offset = self.integer()
        tok = self.peek()
        if tok is not None:
            raise self.error(f"unexpected token: '{tok.text}'", tok)
        return query

    def _is_count(self) -> bool:
        rest = self.tokens[self.i + 1 : self.i + 3]
        return len(rest) == 2 and rest[0].text == "(" and rest[1].text == ")"

    def integer(self) -> int:
        tok = self.next()
        if tok.kind != "number" or not tok.text.isdigit():
            raise self.error(f"unexpected token: '{tok.text}', expected a non-negative integer", tok)
        return int(tok.text)

    def parse_or(self) -> _Cond | _Bool:
        parts = [self.parse_and()]
        while self.accept("OR"):
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else _Bool("OR", tuple(parts))

    def parse_and(self) -> _Cond | _Bool:
        parts = [self.parse_unary()]
        while self.accept("AND"):
            parts.append(self.parse_unary())
        return parts[0] if len(parts) == 1 else _Bool("AND", tuple(parts))

    def parse_unary(self) -> _Cond | _Bool:
        if self.accept("NOT"):
            return _Bool("NOT", (self.parse_unary(),))
        if self.punct("("):
            inner = self.parse_or()
            if not self.punct(")"):
                raise self.error("expected ')'")
            return inner
        return self.parse_condition()

    def parse_condition(self) -> _Cond:
        name = self.ident()
        if self.accept("NOT", "IN"):
            return _Cond(name.text, name.pos, "NOT IN", self.literal_list())
        if self.accept("IN"):
            return _Cond(name.text, name.pos, "IN", self.literal_list())
        if self.accept("LIKE"):
            return _Cond(name.text, name.pos, "LIKE", (self.literal(),))
        tok = self.next()
        if tok.kind != "op":
            raise self.error(f"unexpected token: '{tok.text}', expected a comparison operator", tok)
        op = "!=" if tok.text == "<>" else tok.text
        return _Cond(name.text, name.pos, op, (self.literal(),))

    def literal_list(self) -> tuple[_Literal, ...]:
        if not self.punct("("):
            raise self.error("expected '(' after IN")
        values = [self.literal()]
        while self.punct(","):
            values.append(self.literal())
        if not self.punct(")"):
            raise self.error("expected ')'")
        return tuple(values)

    def literal(self) -> _Literal:
        tok = self.next()
        if tok.kind == "string":
            body = tok.text[1:-1]
            value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), body)
            return _Literal("string", value, tok.pos)
        if tok.kind == "number":
            number: float | int = float(tok.text) if "." in tok.text else int(tok.text)
            return _Literal("number", number, tok.pos)
        if tok.kind == "date":
            return _Literal("date", tok.text, tok.pos)
        if tok.kind == "datetime":
            return _Literal("datetime", _normalize_datetime(tok.text), tok.pos)
        word = tok.word()
        if word in ("TRUE", "FALSE"):
            return _Literal("boolean", word == "TRUE", tok.pos)
        if word == "NULL":
            return _Literal("null", None, tok.pos)
        raise self.error(f"unexpected token: '{tok.text}', expected a literal value", tok)


def _normalize_datetime(text: str) -> str:
    """A SOQL datetime literal as the store holds datetimes: ``YYYY-MM-DDTHH:MM:SS.mmm+0000`` in UTC."""
    value = text.replace("Z", "+00:00")
    if re.search(r"[+-]\d{4}$", value):
        value = f"{value[:-2]}:{value[-2:]}"
    parsed = datetime.fromisoformat(value).astimezone(UTC)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}+0000"


def parse_soql(text: str) -> SoqlQuery:
    """Parse the supported SOQL subset; raises :class:`SoqlError` (MALFORMED_QUERY) otherwise."""
    if not text or not text.strip():
        raise SoqlError("MALFORMED_QUERY", "A query string is required (parameter q)")
    return _Parser(text.strip()).parse()


@dataclass
class _Compiled:
    sobject: str
    fields: list[str] | None  # canonical names; None for COUNT()
    where_sql: str
    params: list[object]
    order_sql: str
    limit: int | None
    offset: int | None


class _Compiler:
    """Checks a parsed query against the object's fields and builds parameterised SQL."""

    def __init__(self, query: SoqlQuery, sobject: str, types: dict[str, str], include_deleted: bool) -> None:
        self.query = query
        self.sobject = sobject
        self.types = types
        self.by_lower = {name.lower(): name for name in types}
        self.include_deleted = include_deleted
        self.params: list[object] = []

    def invalid_field(self, name: str, pos: int) -> SoqlError:
        pointer = " " * pos + "^"
        if "." in name:
            detail = f"Didn't understand relationship '{name.split('.')[0]}' in field path."
        else:
            detail = (
                f"No such column '{name}' on entity '{self.sobject}'. If you are attempting to use a custom "
                "field, be sure to append the '__c' after the custom field name. Please reference your WSDL "
                "or the describe call for the appropriate names."
            )
        return SoqlError(
            "INVALID_FIELD", f"\n{self.query.text}\n{pointer}\nERROR at Row:1:Column:{pos + 1}\n{detail}"
        )

    def field(self, name: str, pos: int) -> str:
        canonical = self.by_lower.get(name.lower())
        if canonical is None:
            raise self.invalid_field(name, pos)
        return canonical

    def compile(self) -> _Compiled:
        fields: list[str] | None = None
        if self.query.fields is not None:
            fields = []
            for name, pos in self.query.fields:
                canonical = self.field(name, pos)
                if canonical in fields:
                    raise SoqlError("MALFORMED_QUERY", f"duplicate field selected: {canonical}")
                fields.append(canonical)
        clauses = []
        if self.query.where is not None:
            clauses.append(self.expr(self.query.where))
        if not self.include_deleted and "IsDeleted" in self.types:
            clauses.append('"IsDeleted" = 0')
        order_parts = []
        for order in self.query.order:
            name = self.field(order.field, order.field_pos)
            collate = " COLLATE NOCASE" if self._is_text(name) else ""
            direction = "DESC" if order.descending else "ASC"
            # Salesforce's defaults (nulls first ascending, last descending) are SQLite's too.
            nulls = f" NULLS {order.nulls}" if order.nulls else ""
            order_parts.append(f'"{name}"{collate} {direction}{nulls}')
        order_parts.append("rowid ASC")  # a stable order, so pages never overlap
        if self.query.offset is not None and self.query.offset > MAX_OFFSET:
            raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is {MAX_OFFSET}")
        return _Compiled(
            sobject=self.sobject,
            fields=fields,
            where_sql=" AND ".join(f"({c})" for c in clauses),
            params=self.params,
            order_sql=", ".join(order_parts),
            limit=self.query.limit,
            offset=self.query.offset,
        )

    def _is_text(self, name: str) -> bool:
        sf_type = self.types[name]
        return sf_type not in SALESFORCE_NUMERIC_TYPES | SALESFORCE_INTEGER_TYPES | {
            "boolean",
            "date",
            "datetime",
            "id",
            "reference",
        }

    def expr(self, node: _Cond | _Bool) -> str:
        if isinstance(node, _Bool):
            if node.op == "NOT":
                return f"NOT ({self.expr(node.parts[0])})"
            return f" {node.op} ".join(f"({self.expr(part)})" for part in node.parts)
        return self.condition(node)

    def value(self, name: str, literal: _Literal) -> object:
        sf_type = self.types[name]
        expected, quoted = self._expected(sf_type)
        if literal.kind == "null":
            return None
        if literal.kind != expected:
            how = "should be enclosed in quotes" if quoted else "should not be enclosed in quotes"
            raise SoqlError(
                "INVALID_FIELD",
                f"\n{self.query.text}\n{' ' * literal.pos}^\nERROR at Row:1:Column:{literal.pos + 1}\n"
                f"value of filter criterion for field '{name}' must be of type {self._type_name(sf_type)} "
                f"and {how}",
            )
        if literal.kind == "boolean":
            return int(bool(literal.value))
        return literal.value

    @staticmethod
    def _expected(sf_type: str) -> tuple[str, bool]:
        if sf_type == "datetime":
            return "datetime", False
        if sf_type == "date":
            return "date", False
        if sf_type == "boolean":
            return "boolean", False
        if sf_type in SALESFORCE_NUMERIC_TYPES | SALESFORCE_INTEGER_TYPES:
            return "number", False
        return "string", True

    @staticmethod
    def _type_name(sf_type: str) -> str:
        if sf_type in SALESFORCE_NUMERIC_TYPES:
            return "double"
        return {"datetime": "dateTime", "date": "date", "boolean": "boolean", "int": "int"}.get(
            sf_type, "string"
        )

    def condition(self, cond: _Cond) -> str:
        name = self.field(cond.field, cond.field_pos)
        column = f'"{name}"'
        collate = " COLLATE NOCASE" if self._is_text(name) else ""
        if cond.op in ("IN", "NOT IN"):
            values = [self.value(name, literal) for literal in cond.values]
            present = [v for v in values if v is not None]
            marks = ", ".join("?" for _ in present)
            self.params.extend(present)
            has_null = len(present) < len(values)
            if cond.op == "IN":
                sql = f"{column}{collate} IN ({marks})" if present else "0"
                return f"({sql} OR {column} IS NULL)" if has_null else sql
            sql = f"{column}{collate} NOT IN ({marks})" if present else "1"
            return f"({sql} AND {column} IS NOT NULL)" if has_null else f"({sql} OR {column} IS NULL)"
        literal = cond.values[0]
        if cond.op == "LIKE":
            if not self._is_text(name) or literal.kind != "string":
                raise SoqlError(
                    "INVALID_FIELD",
                    f"invalid operator on {name}: LIKE needs a text field and a quoted pattern",
                )
            self.params.append(literal.value)
            return f"{column} LIKE ?"  # SQLite's LIKE is case-insensitive, as SOQL's is
        value = self.value(name, literal)
        if value is None:
            if cond.op == "=":
                return f"{column} IS NULL"
            if cond.op == "!=":
                return f"{column} IS NOT NULL"
            raise SoqlError("INVALID_FIELD", f"null can only be compared with = or != (field {name})")
        self.params.append(value)
        if cond.op == "!=":
            # In SOQL a record whose field is null is 'not equal' to any value.
            return f"({column}{collate} != ? OR {column} IS NULL)"
        return f"{column}{collate} {cond.op} ?"


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


@dataclass
class _Cursor:
    """A query locator: the snapshot of matching rows (by rowid, in order) and how to render them."""

    sobject: str
    fields: list[str]
    rowids: array[int]
    batch_size: int
    last_used: float


@dataclass
class _BulkJob:
    """A Bulk API 2.0 query job: its query, state, and once complete the rows it returns."""

    id: str
    operation: str
    sobject: str
    query: str
    compiled: _Compiled
    created: str
    state: str = "UploadComplete"
    polls: int = 0
    error: str | None = None
    rowids: array[int] | None = None


def _csv_value(sf_type: str, value: object) -> str:
    """A field as Bulk 2.0 CSV writes it: null as nothing, booleans true/false, numbers as in JSON."""
    rendered = _json_value(sf_type, value)
    if rendered is None:
        return ""
    if isinstance(rendered, bool):
        return "true" if rendered else "false"
    if isinstance(rendered, int | float):
        return json.dumps(rendered)
    return str(rendered)


# Fields a create must set, as the org's page layouts and the schema require.
_REQUIRED_ON_CREATE = {
    "Account": ("Name",),
    "Contact": ("LastName",),
    "Opportunity": ("Name", "StageName"),
    "Lead": ("LastName", "Company", "Status"),
}
# Fields the platform sets on one object: a Case's auto-number, and IsClosed/ClosedDate, which follow
# its Status (the CaseStatus values marked closed); a write setting them is refused like a system field.
_NOT_UPDATEABLE = {"Case": frozenset({"CaseNumber", "IsClosed", "ClosedDate"})}
_CLOSED_CASE_STATUSES = frozenset({"Closed"})
# System fields (every sObject has them): set by the platform, refused in a write.
_READ_ONLY = frozenset(
    {
        "Id",
        "CreatedDate",
        "CreatedById",
        "LastModifiedDate",
        "LastModifiedById",
        "SystemModstamp",
        "IsDeleted",
    }
)
UPSERT_MAX_RECORDS = 200
COLLECTION_MAX_RECORDS = 200
# Text and text-like fields hold at most 255 characters (a longer value is STRING_TOO_LONG).
_TEXT_TYPES = frozenset({"string", "url", "phone", "email", "picklist"})
_MAX_TEXT_LENGTH = 255
_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")


def _invalid_value(types: dict[str, str], values: dict[str, object]) -> dict[str, object] | None:
    """The SaveResult of the first value its field's type refuses (None: all fit); coerces in place.

    Text longer than the field holds is STRING_TOO_LONG; text in a number or date field is
    INVALID_TYPE_ON_FIELD_IN_RECORD (as the platform answers a create, an update and an upsert).
    """
    for field_name, value in values.items():
        sf_type = types[field_name]
        if sf_type in _TEXT_TYPES and isinstance(value, str) and len(value) > _MAX_TEXT_LENGTH:
            return _failed(
                "STRING_TOO_LONG",
                f"{_label(field_name)}: data value too large: {value[:40]}... (max length={_MAX_TEXT_LENGTH})",
                [field_name],
            )
        if sf_type in SALESFORCE_NUMERIC_TYPES and value is not None:
            try:
                values[field_name] = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return _failed(
                    "INVALID_TYPE_ON_FIELD_IN_RECORD",
                    f"{_label(field_name)}: value not of required type: {value}",
                    [field_name],
                )
        if sf_type == "date" and value is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
            return _failed(
                "INVALID_TYPE_ON_FIELD_IN_RECORD",
                f"{_label(field_name)}: value not of required type: {value}",
                [field_name],
            )
        if sf_type == "boolean" and value is not None:
            values[field_name] = int(bool(value))
    return None


def _sf_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response.json(status, [{"message": message, "errorCode": code}], headers)


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    return Response.json(status, {"error": error, "error_description": description})


def _now_iso() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000"


def _job_info(job: _BulkJob, version: str) -> dict[str, object]:
    info: dict[str, object] = {
        "id": job.id,
        "operation": job.operation,
        "object": job.sobject,
        "createdById": "005Qy000000Integ",
        "createdDate": job.created,
        "systemModstamp": _now_iso(),
        "state": job.state,
        "concurrencyMode": "Parallel",
        "contentType": "CSV",
        "apiVersion": float(version),
        "jobType": "V2Query",
        "lineEnding": "LF",
        "columnDelimiter": "COMMA",
    }
    if job.rowids is not None:
        info["numberRecordsProcessed"] = len(job.rowids)
    if job.error is not None:
        info["errorMessage"] = job.error
    return info


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if number == 0:
            return out


class SalesforceSimulator(SimulatorServer):
    """A Salesforce org's REST API over a Salesforce store."""

    name = "salesforce"

    def __init__(
        self,
        store_path: Path,
        *,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        refresh_token: str = DEFAULT_REFRESH_TOKEN,
        token_ttl: float = DEFAULT_TOKEN_TTL,
        api_limit: int = DEFAULT_API_LIMIT,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: RateLimit | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.token_ttl = token_ttl
        self.api_limit = api_limit
        self.api_usage = 0
        self.org_id = "00DQy000000Sandb"
        self.user_id = "005Qy000000Integ"
        self._tokens: dict[str, float] = {}
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._cursor_seq = 0
        self._state_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._jobs: dict[str, _BulkJob] = {}
        # Bulk jobs complete after this many status polls (the first answers InProgress).
        self.bulk_polls_to_complete = 1
        # Records per result page the parallel results resource hands out (Salesforce picks its own).
        self.bulk_result_page_records = 50_000
        # Messages for the next query jobs to fail with (state Failed, errorMessage), in order.
        self.bulk_failures: deque[str] = deque()
        # statusCodes to answer for an external id on its next upsert attempts (per-record faults).
        self.record_faults: dict[str, list[str]] = {}
        super().__init__(store_path, host=host, port=port, rate_limit=rate_limit, faults=faults)

    # -- token management ----------------------------------------------------------------------

    def issue_token(self) -> str:
        """A new access token, valid for ``token_ttl`` seconds."""
        token = f"{self.org_id}!AQ{secrets.token_urlsafe(72)}"
        with self._state_lock:
            self._tokens[token] = time.monotonic() + self.token_ttl
        return token

    def revoke_tokens(self) -> None:
        """Invalidate every issued access token (the next data call gets 401 INVALID_SESSION_ID)."""
        with self._state_lock:
            self._tokens.clear()

    def expire_tokens(self) -> None:
        """Make every issued token expire now, as if the session timeout had passed."""
        with self._state_lock:
            for token in self._tokens:
                self._tokens[token] = 0.0

    def authenticate(self, request: Request) -> tuple[str | None, Response | None]:
        token = request.bearer_token()
        now = time.monotonic()
        with self._state_lock:
            expires = self._tokens.get(token or "")
            if token is None or expires is None or expires <= now:
                if token is not None:
                    self._tokens.pop(token, None)
                denied = _sf_error(
                    401, "INVALID_SESSION_ID", "Session expired or invalid", {"WWW-Authenticate": "Token"}
                )
                return None, denied
        return token, None

    def count_usage(self, key: str) -> Response | None:
        with self._state_lock:
            if self.api_usage >= self.api_limit:
                return _sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            self.api_usage += 1
        return None

    def rate_limited(self, retry_after: float) -> Response:
        wait = self.retry_after_header(retry_after)
        return _sf_error(
            429,
            "REQUEST_LIMIT_EXCEEDED",
            f"Request rate limit exceeded. Retry after {wait} seconds.",
            {"Retry-After": wait},
        )

    def error_response(self, status: int) -> Response:
        if status == 429:
            return self.rate_limited(1.0)
        if status == 503:
            return _sf_error(
                503, "SERVER_UNAVAILABLE", "Server is temporarily unavailable. Please try again later."
            )
        if status == 401:
            return _sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        error_id = f"{secrets.randbelow(10**9)}-{secrets.randbelow(10**5)} ({secrets.randbelow(10**9)})"
        return _sf_error(
            status,
            "UNKNOWN_EXCEPTION",
            f"An unexpected error occurred. Please include this ErrorId if you contact support: {error_id}",
        )

    def not_found(self, request: Request) -> Response:
        return _sf_error(404, "NOT_FOUND", "The requested resource does not exist")

    def method_not_allowed(self, request: Request) -> Response:
        return _sf_error(
            405, "METHOD_NOT_ALLOWED", f"HTTP Method '{request.method}' not allowed. Allowed are GET,HEAD"
        )

    def common_headers(self, request: Request, key: str | None) -> dict[str, str]:
        with self._state_lock:
            usage = self.api_usage
        return {"Sforce-Limit-Info": f"api-usage={usage}/{self.api_limit}"}

    # -- routes --------------------------------------------------------------------------------

    def register_routes(self, router: Router) -> None:
        router.add("POST", r"/services/oauth2/token", self.token, auth=False)
        router.add("GET", r"/services/data/?", self.versions, auth=False)
        router.add("GET", _V + r"/?", self.resources)
        router.add("GET", _V + r"/limits/?", self.limits)
        router.add("GET", _V + r"/sobjects/?", self.describe_global)
        router.add("GET", _V + r"/sobjects/(?P<sobject>\w+)/describe/?", self.describe)
        router.add("GET", _V + r"/sobjects/(?P<sobject>\w+)/(?P<record_id>[A-Za-z0-9]{15,18})", self.retrieve)
        router.add("GET", _V + r"/query/?", self.query)
        router.add("GET", _V + r"/queryAll/?", self.query_all)
        router.add(
            "GET", _V + r"/(?:query|queryAll)/(?P<locator>01g[A-Za-z0-9]+)-(?P<offset>\d+)", self.query_more
        )
        router.add("POST", _V + r"/jobs/query/?", self.create_query_job)
        router.add("GET", _V + r"/jobs/query/(?P<job_id>750[A-Za-z0-9]+)", self.query_job_status)
        router.add("GET", _V + r"/jobs/query/(?P<job_id>750[A-Za-z0-9]+)/results", self.query_job_results)
        router.add(
            "GET", _V + r"/jobs/query/(?P<job_id>750[A-Za-z0-9]+)/resultPages", self.query_job_result_pages
        )
        router.add(
            "PATCH", _V + r"/composite/sobjects/(?P<sobject>\w+)/(?P<id_field>\w+)", self.upsert_collection
        )
        router.add("PATCH", _V + r"/composite/sobjects/?", self.update_collection)
        router.add(
            "PATCH", _V + r"/sobjects/(?P<sobject>\w+)/(?P<record_id>[A-Za-z0-9]{15,18})", self.update_record
        )

    def token(self, request: Request) -> Response:
        form = request.form()
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = request.header("Authorization") or ""
        if basic.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(basic[6:].strip()).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return _oauth_error("invalid_client", "invalid client credentials")
            client_id, _, client_secret = decoded.partition(":")
        grant = form.get("grant_type")
        if grant == "client_credentials":
            if not (
                client_id
                and client_secret
                and hmac.compare_digest(client_id, self.client_id)
                and hmac.compare_digest(client_secret, self.client_secret)
            ):
                return _oauth_error("invalid_client", "invalid client credentials")
        elif grant == "refresh_token":
            if not client_id or not hmac.compare_digest(client_id, self.client_id):
                return _oauth_error("invalid_client_id", "client identifier invalid")
            if client_secret is not None and not hmac.compare_digest(client_secret, self.client_secret):
                return _oauth_error("invalid_client", "invalid client credentials")
            if not hmac.compare_digest(form.get("refresh_token") or "", self.refresh_token):
                return _oauth_error("invalid_grant", "expired access/refresh token")
        elif not grant:
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        else:
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        issued_at = str(int(time.time() * 1000))
        identity = f"https://login.salesforce.com/id/{self.org_id}AAA/{self.user_id}AAA"
        signature = base64.b64encode(
            hmac.new(self.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        ).decode()
        return Response.json(
            200,
            {
                "access_token": self.issue_token(),
                "signature": signature,
                "scope": "api",
                "instance_url": self.base_url,
                "id": identity,
                "token_type": "Bearer",
                "issued_at": issued_at,
            },
        )

    def versions(self, request: Request) -> Response:
        return Response.json(
            200,
            [
                {"label": _VERSION_LABELS[v], "url": f"/services/data/v{v}", "version": v}
                for v in API_VERSIONS
            ],
        )

    def _check_version(self, version: str) -> Response | None:
        if version in API_VERSIONS:
            return None
        return _sf_error(404, "NOT_FOUND", "The requested resource does not exist")

    def resources(self, request: Request, version: str) -> Response:
        if (bad := self._check_version(version)) is not None:
            return bad
        base = f"/services/data/v{version}"
        names = ("sobjects", "query", "queryAll", "limits")
        return Response.json(200, {name: f"{base}/{name}" for name in names})

    def limits(self, request: Request, version: str) -> Response:
        if (bad := self._check_version(version)) is not None:
            return bad
        with self._state_lock:
            used = self.api_usage
        return Response.json(
            200,
            {
                "DailyApiRequests": {"Max": self.api_limit, "Remaining": max(0, self.api_limit - used)},
                "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
                "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
            },
        )

    def _field_types(self, sobject: str) -> dict[str, str] | None:
        """Current fields of an object (name -> Salesforce type), None when it is not in the store."""
        conn = self.db()
        rows = conn.execute(
            "SELECT name, type FROM _fields WHERE object = ? ORDER BY position", (sobject,)
        ).fetchall()
        if not rows:
            return None
        present = set(table_columns(conn, sobject))
        return {str(name): str(sf_type) for name, sf_type in rows if name in present}

    def _canonical_sobject(self, name: str) -> str | None:
        row = (
            self.db()
            .execute("SELECT DISTINCT object FROM _fields WHERE object = ? COLLATE NOCASE", (name,))
            .fetchone()
        )
        return None if row is None else str(row[0])

    def describe_global(self, request: Request, version: str) -> Response:
        if (bad := self._check_version(version)) is not None:
            return bad
        objects = [
            str(r[0]) for r in self.db().execute("SELECT DISTINCT object FROM _fields ORDER BY object")
        ]
        base = f"/services/data/v{version}/sobjects"
        return Response.json(
            200,
            {
                "encoding": "UTF-8",
                "maxBatchSize": 200,
                "sobjects": [
                    {
                        "name": name,
                        "label": name,
                        "keyPrefix": SALESFORCE_KEY_PREFIXES.get(name),
                        "queryable": True,
                        "urls": {
                            "sobject": f"{base}/{name}",
                            "describe": f"{base}/{name}/describe",
                            "rowTemplate": f"{base}/{name}/{{ID}}",
                        },
                    }
                    for name in objects
                ],
            },
        )

    def describe(self, request: Request, version: str, sobject: str) -> Response:
        if (bad := self._check_version(version)) is not None:
            return bad
        name = self._canonical_sobject(sobject)
        types = self._field_types(name) if name else None
        if name is None or types is None:
            return _sf_error(404, "NOT_FOUND", f"The requested resource does not exist: {sobject}")
        return Response.json(
            200,
            {
                "name": name,
                "label": name,
                "keyPrefix": SALESFORCE_KEY_PREFIXES.get(name),
                "queryable": True,
                "fields": [
                    {"name": field_name, "type": sf_type, "nillable": field_name != "Id", "label": field_name}
                    for field_name, sf_type in types.items()
                ],
            },
        )

    def retrieve(self, request: Request, version: str, sobject: str, record_id: str) -> Response:
        if (bad := self._check_version(version)) is not None:
            return bad
        name = self._canonical_sobject(sobject)
        types = self._field_types(name) if name else None
        if name is None or types is None:
            return self.not_found(request)
        wanted = list(types)
        if request.param("fields"):
            by_lower = {f.lower(): f for f in types}
            wanted = []
            for part in (request.param("fields") or "").split(","):
                canonical = by_lower.get(part.strip().lower())
                if canonical is None:
                    return _sf_error(
                        400, "INVALID_FIELD", f"No such column '{part.strip()}' on sobject of type {name}"
                    )
                wanted.append(canonical)
        columns = ", ".join(f'"{f}"' for f in ["Id", *wanted])
        row = self.db().execute(f'SELECT {columns} FROM "{name}" WHERE "Id" = ?', (record_id,)).fetchone()
        if row is None:
            return self.not_found(request)
        return Response.json(200, self._record(name, version, ["Id", *wanted], types, row, skip_first=True))

    # -- queries -------------------------------------------------------------------------------

    def query(self, request: Request, version: str) -> Response:
        return self._run_query(request, version, include_deleted=False)

    def query_all(self, request: Request, version: str) -> Response:
        return self._run_query(request, version, include_deleted=True)

    def _batch_size(self, request: Request) -> int:
        options = request.header("Sforce-Query-Options") or ""
        match = re.search(r"batchSize\s*=\s*(\d+)", options)
        if not match:
            return DEFAULT_BATCH_SIZE
        return min(2000, max(200, int(match.group(1))))

    def _run_query(self, request: Request, version: str, *, include_deleted: bool) -> Response:
        if (bad := self._check_version(version)) is not None:
            return bad
        try:
            parsed = parse_soql(request.param("q") or "")
            sobject = self._canonical_sobject(parsed.sobject)
            types = self._field_types(sobject) if sobject else None
            if sobject is None or types is None:
                pointer = " " * parsed.sobject_pos + "^"
                raise SoqlError(
                    "INVALID_TYPE",
                    f"\n{parsed.text}\n{pointer}\nERROR at Row:1:Column:{parsed.sobject_pos + 1}\n"
                    f"sObject type '{parsed.sobject}' is not supported. If you are attempting to use a custom "
                    "object, be sure to append the '__c' after the entity name. Please reference your WSDL or "
                    "the describe call for the appropriate names.",
                )
            compiled = _Compiler(parsed, sobject, types, include_deleted).compile()
            return self._execute(compiled, types, version, self._batch_size(request))
        except SoqlError as exc:
            return _sf_error(exc.status, exc.code, exc.message)
        except sqlite3.Error as exc:
            return _sf_error(400, "MALFORMED_QUERY", f"query could not be run: {exc}")

    def _execute(self, compiled: _Compiled, types: dict[str, str], version: str, batch_size: int) -> Response:
        conn = self.db()
        where = f" WHERE {compiled.where_sql}" if compiled.where_sql else ""
        table = f'"{compiled.sobject}"'
        if compiled.fields is None:
            count = conn.execute(f"SELECT COUNT(*) FROM {table}{where}", compiled.params).fetchone()[0]
            if compiled.limit is not None:
                count = min(count, compiled.limit)
            return Response.json(200, {"totalSize": count, "done": True, "records": []})
        limit = -1 if compiled.limit is None else compiled.limit
        sql = f"SELECT rowid FROM {table}{where} ORDER BY {compiled.order_sql} LIMIT ? OFFSET ?"
        rowids = array(
            "q", (r[0] for r in conn.execute(sql, [*compiled.params, limit, compiled.offset or 0]))
        )
        cursor = _Cursor(compiled.sobject, compiled.fields, rowids, batch_size, time.monotonic())
        locator = self._store_cursor(cursor) if len(rowids) > batch_size else None
        return self._page(cursor, locator, 0, types, version)

    def _store_cursor(self, cursor: _Cursor) -> str:
        with self._state_lock:
            now = time.monotonic()
            for key in [k for k, c in self._cursors.items() if now - c.last_used > _LOCATOR_IDLE_SECONDS]:
                del self._cursors[key]
            while len(self._cursors) >= _MAX_LOCATORS:
                self._cursors.popitem(last=False)
            self._cursor_seq += 1
            n, body = self._cursor_seq, ""
            for _ in range(9):
                n, r = divmod(n, 62)
                body = _B62[r] + body
            locator = f"01gQy0{body}{secrets.choice(_B62)}{secrets.choice(_B62)}{secrets.choice(_B62)}"
            self._cursors[locator] = cursor
            return locator

    def query_more(self, request: Request, version: str, locator: str, offset: str) -> Response:
        if (bad := self._check_version(version)) is not None:
            return bad
        with self._state_lock:
            cursor = self._cursors.get(locator)
            if cursor is not None:
                cursor.last_used = time.monotonic()
                self._cursors.move_to_end(locator)
        start = int(offset)
        if cursor is None or start > len(cursor.rowids):
            return _sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        types = self._field_types(cursor.sobject) or {}
        missing = [f for f in cursor.fields if f not in types]
        if missing:
            return _sf_error(
                400, "INVALID_FIELD", f"No such column '{missing[0]}' on entity '{cursor.sobject}'"
            )
        return self._page(cursor, locator, start, types, version)

    def _page(
        self, cursor: _Cursor, locator: str | None, start: int, types: dict[str, str], version: str
    ) -> Response:
        end = min(start + cursor.batch_size, len(cursor.rowids))
        wanted = list(cursor.rowids[start:end])
        columns = ", ".join(f'"{f}"' for f in ["Id", *cursor.fields])
        rows = (
            self.db()
            .execute(
                f'SELECT rowid, {columns} FROM "{cursor.sobject}" WHERE rowid IN (SELECT value FROM json_each(?))',
                (json.dumps(wanted),),
            )
            .fetchall()
        )
        by_rowid = {row[0]: row[1:] for row in rows}
        fields = ["Id", *cursor.fields]
        records = [
            self._record(cursor.sobject, version, fields, types, by_rowid[rowid], skip_first=True)
            for rowid in wanted
            if rowid in by_rowid  # rows removed since the query ran are skipped, not invented
        ]
        body: dict[str, object] = {"totalSize": len(cursor.rowids), "done": end >= len(cursor.rowids)}
        if end < len(cursor.rowids) and locator is not None:
            body["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{end}"
        body["records"] = records
        return Response.json(200, body)

    # -- Bulk API 2.0 query jobs -----------------------------------------------------------------

    def create_query_job(self, request: Request, version: str) -> Response:
        if (bad := self._check_version(version)) is not None:
            return bad
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return _sf_error(400, "JSON_PARSER_ERROR", "The request body is not valid JSON")
        operation = body.get("operation")
        if operation not in ("query", "queryAll"):
            return _sf_error(400, "INVALIDJOB", f"Invalid operation: {operation}")
        try:
            parsed = parse_soql(str(body.get("query") or ""))
            if parsed.fields is None:
                raise SoqlError("INVALIDJOB", "Aggregate Relationships not supported in Bulk Query: COUNT()")
            if parsed.offset is not None:
                raise SoqlError("INVALIDJOB", "OFFSET clause is not supported in Bulk API 2.0 queries")
            sobject = self._canonical_sobject(parsed.sobject)
            types = self._field_types(sobject) if sobject else None
            if sobject is None or types is None:
                raise SoqlError("INVALIDJOB", f"Entity '{parsed.sobject}' is not supported by the Bulk API.")
            compiled = _Compiler(parsed, sobject, types, operation == "queryAll").compile()
        except SoqlError as exc:
            return _sf_error(400, exc.code, exc.message)
        with self._state_lock:
            self._cursor_seq += 1
            job_id = f"750Qy{self._cursor_seq:010d}AAA"
            job = _BulkJob(job_id, operation, sobject, parsed.text, compiled, _now_iso())
            if self.bulk_failures:
                job.error = self.bulk_failures.popleft()
            self._jobs[job_id] = job
        return Response.json(200, _job_info(job, version))

    def query_job_status(self, request: Request, version: str, job_id: str) -> Response:
        if (bad := self._check_version(version)) is not None:
            return bad
        with self._state_lock:
            job = self._jobs.get(job_id)
        if job is None:
            return _sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        if job.state in ("UploadComplete", "InProgress"):
            job.polls += 1
            if job.polls <= self.bulk_polls_to_complete:
                job.state = "InProgress"
            elif job.error is not None:
                job.state = "Failed"
            else:
                # The job's rows are fixed when it completes, like a query locator's.
                compiled = job.compiled
                where = f" WHERE {compiled.where_sql}" if compiled.where_sql else ""
                limit = -1 if compiled.limit is None else compiled.limit
                sql = f'SELECT rowid FROM "{compiled.sobject}"{where} ORDER BY {compiled.order_sql} LIMIT ?'
                job.rowids = array("q", (r[0] for r in self.db().execute(sql, [*compiled.params, limit])))
                job.state = "JobComplete"
        return Response.json(200, _job_info(job, version))

    def query_job_result_pages(self, request: Request, version: str, job_id: str) -> Response:
        """Get Parallel Results for a Query Job (API 58.0+): up to five result URLs per answer.

        Each ``resultUrl`` is a results request with its own locator, so a client fetches them at
        once; ``nextRecordsUrl`` names the next five until ``done``.
        """
        if (bad := self._check_version(version)) is not None:
            return bad
        if float(version) < 58.0:
            return _sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        with self._state_lock:
            job = self._jobs.get(job_id)
        if job is None:
            return _sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        if job.state != "JobComplete" or job.rowids is None:
            return _sf_error(400, "INVALIDJOBSTATE", f"Job {job_id} is in state {job.state}, not JobComplete")
        try:
            start = int(request.param("locator") or "0", 36)
        except ValueError:
            return _sf_error(400, "INVALIDLOCATOR", "Invalid locator")
        size = self.bulk_result_page_records
        base = f"/services/data/v{version}/jobs/query/{job_id}"
        starts = list(range(start, len(job.rowids), size))[:5]
        pages = [{"resultUrl": f"{base}/results?locator={_base36(s)}&maxRecords={size}"} for s in starts]
        following = start + 5 * size
        done = following >= len(job.rowids)
        body: dict[str, object] = {"resultPages": pages, "done": done}
        body["nextRecordsUrl"] = None if done else f"{base}/resultPages?locator={_base36(following)}"
        return Response.json(200, body)

    def query_job_results(self, request: Request, version: str, job_id: str) -> Response:
        if (bad := self._check_version(version)) is not None:
            return bad
        with self._state_lock:
            job = self._jobs.get(job_id)
        if job is None:
            return _sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        if job.state != "JobComplete" or job.rowids is None:
            return _sf_error(400, "INVALIDJOBSTATE", f"Job {job_id} is in state {job.state}, not JobComplete")
        try:
            start = int(request.param("locator") or "0", 36) if request.param("locator") else 0
            page = int(request.param("maxRecords") or "50000")
        except ValueError:
            return _sf_error(400, "INVALIDLOCATOR", "Invalid locator or maxRecords")
        if start > len(job.rowids) or page < 1:
            return _sf_error(400, "INVALIDLOCATOR", "Invalid locator or maxRecords")
        end = min(start + page, len(job.rowids))
        wanted = list(job.rowids[start:end])
        fields = job.compiled.fields or []
        types = self._field_types(job.sobject) or {}
        columns = ", ".join(f'"{f}"' for f in fields)
        rows = (
            self.db()
            .execute(
                f'SELECT rowid, {columns} FROM "{job.sobject}" WHERE rowid IN (SELECT value FROM json_each(?))',
                (json.dumps(wanted),),
            )
            .fetchall()
        )
        by_rowid = {row[0]: row[1:] for row in rows}
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(fields)
        written = 0
        for rowid in wanted:
            row = by_rowid.get(rowid)
            if row is None:
                continue
            writer.writerow([_csv_value(types.get(f, "string"), v) for f, v in zip(fields, row, strict=True)])
            written += 1
        # The locator is opaque to clients; here it is the next row's position in base 36.
        locator = "null" if end >= len(job.rowids) else _base36(end)
        return Response(
            200,
            out.getvalue().encode("utf-8"),
            {
                "Content-Type": "text/csv",
                "Sforce-Locator": locator,
                "Sforce-NumberOfRecords": str(written),
            },
        )

    def upsert_collection(self, request: Request, version: str, sobject: str, id_field: str) -> Response:
        """sObject Collections upsert: one result per record, in request order (allOrNone false)."""
        if (bad := self._check_version(version)) is not None:
            return bad
        name = self._canonical_sobject(sobject)
        types = self._field_types(name) if name else None
        if name is None or types is None:
            return _sf_error(404, "NOT_FOUND", f"The requested resource does not exist: {sobject}")
        if id_field not in types:
            return _sf_error(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {id_field}",
            )
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return _sf_error(400, "JSON_PARSER_ERROR", "The request body is not valid JSON")
        records = body.get("records")
        if not isinstance(records, list) or not records:
            return _sf_error(400, "INVALID_FIELD", "records must be a non-empty list")
        if len(records) > UPSERT_MAX_RECORDS:
            return _sf_error(
                400,
                "EXCEEDED_ID_LIMIT",
                f"Record limit reached. Only {UPSERT_MAX_RECORDS} records allowed per request.",
            )
        results: list[dict[str, object]] = []
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            for record in records:
                results.append(self._upsert_one(conn, name, id_field, types, record))
        return Response.json(200, results)

    def _upsert_one(
        self,
        conn: sqlite3.Connection,
        sobject: str,
        id_field: str,
        types: dict[str, str],
        record: object,
    ) -> dict[str, object]:
        failed = _failed
        if not isinstance(record, dict):
            return failed("INVALID_FIELD", "a record must be an object", [])
        values = {k: v for k, v in record.items() if k != "attributes"}
        key = values.get(id_field)
        if key in (None, ""):
            return failed("MISSING_ARGUMENT", f"{id_field} not specified", [id_field])
        queued = self.record_faults.get(str(key))
        if queued:
            code = queued.pop(0)
            return failed(code, f"injected {code} for {key}", [])
        unknown = sorted(set(values) - set(types))
        if unknown:
            return failed(
                "INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type {sobject}", unknown
            )
        read_only = sorted(set(values) & _READ_ONLY)
        if read_only:
            return failed(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(read_only)}",
                read_only,
            )
        invalid = _invalid_value(types, values)
        if invalid is not None:
            return invalid
        stamp = _now_iso()
        found = conn.execute(f'SELECT "Id" FROM "{sobject}" WHERE "{id_field}" = ?', (key,)).fetchall()
        if len(found) > 1:
            return failed(
                "DUPLICATE_EXTERNAL_ID", f"{id_field}: more than one record found for {key}", [id_field]
            )
        stamped = dict(values)
        for column in ("LastModifiedDate", "SystemModstamp"):
            if column in types:
                stamped[column] = stamp
        if "LastModifiedById" in types:
            stamped["LastModifiedById"] = self.integration_user
        if found:
            record_id = str(found[0][0])
            assignments = ", ".join(f'"{c}" = ?' for c in stamped)
            conn.execute(
                f'UPDATE "{sobject}" SET {assignments} WHERE "Id" = ?', [*stamped.values(), record_id]
            )
            return {"id": record_id, "success": True, "errors": [], "created": False}
        missing = [f for f in _REQUIRED_ON_CREATE.get(sobject, ()) if values.get(f) in (None, "")]
        if missing:
            return failed(
                "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing
            )
        record_id = f"{SALESFORCE_KEY_PREFIXES.get(sobject, '001')}Qy{secrets.token_hex(5).upper()}AAA"[:18]
        stamped["Id"] = record_id
        if "CreatedDate" in types:
            stamped["CreatedDate"] = stamp
        if "CreatedById" in types:
            stamped["CreatedById"] = self.integration_user
        quoted = ", ".join(f'"{c}"' for c in stamped)
        marks = ", ".join("?" for _ in stamped)
        conn.execute(f'INSERT INTO "{sobject}" ({quoted}) VALUES ({marks})', list(stamped.values()))
        return {"id": record_id, "success": True, "errors": [], "created": True}

    # -- updates by record id -------------------------------------------------------------------

    @property
    def integration_user(self) -> str:
        """The 18-character id of the user the tokens belong to (LastModifiedById of its writes)."""
        return f"{self.user_id}AAA"

    def update_collection(self, request: Request, version: str) -> Response:
        """sObject Collections update: up to 200 records by Id, a SaveResult per record in order.

        Each record names its type (``attributes.type``) and carries its ``Id``. With ``allOrNone``
        true one failure rolls every record back (the others answer ALL_OR_NONE_OPERATION_ROLLED_BACK).
        """
        if (bad := self._check_version(version)) is not None:
            return bad
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return _sf_error(400, "JSON_PARSER_ERROR", "The request body is not valid JSON")
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not records:
            return _sf_error(400, "INVALID_FIELD", "records must be a non-empty list")
        if len(records) > COLLECTION_MAX_RECORDS:
            return _sf_error(
                400,
                "EXCEEDED_ID_LIMIT",
                f"Record limit reached. Only {COLLECTION_MAX_RECORDS} records allowed per request.",
            )
        all_or_none = body.get("allOrNone") is True
        results: list[dict[str, object]] = []
        with self._write_lock, closing(open_store(self.store_path)) as conn:
            conn.execute("SAVEPOINT collection")
            for record in records:
                sobject = None
                if isinstance(record, dict) and isinstance(record.get("attributes"), dict):
                    sobject = record["attributes"].get("type")
                results.append(self._update_one(conn, str(sobject or ""), record))
            if all_or_none and not all(r["success"] for r in results):
                conn.execute("ROLLBACK TO collection")
                results = [
                    r
                    if not r["success"]
                    else _failed(
                        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                        "Record rolled back because not all records were valid and the request was using "
                        "AllOrNone header",
                        [],
                    )
                    for r in results
                ]
            conn.execute("RELEASE collection")
            conn.commit()
        return Response.json(200, results)

    def update_record(self, request: Request, version: str, sobject: str, record_id: str) -> Response:
        """``PATCH .../sobjects/{SObject}/{id}``: update one record; 204 on success."""
        if (bad := self._check_version(version)) is not None:
            return bad
        name = self._canonical_sobject(sobject)
        if name is None:
            return self.not_found(request)
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return _sf_error(400, "JSON_PARSER_ERROR", "The request body is not valid JSON")
        if not isinstance(body, dict):
            return _sf_error(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
        if any(k.lower() == "id" for k in body):
            return _sf_error(
                400, "INVALID_FIELD", "The Id field should not be specified in the sobject data."
            )
        with self._write_lock, closing(open_store(self.store_path)) as conn, conn:
            result = self._update_one(conn, name, {**body, "Id": record_id})
        if result["success"]:
            return Response(204)
        errors = result["errors"]
        assert isinstance(errors, list)
        first = errors[0]
        status = 404 if first["statusCode"] in ("INVALID_CROSS_REFERENCE_KEY", "ENTITY_IS_DELETED") else 400
        if first["statusCode"] == "INVALID_CROSS_REFERENCE_KEY":
            return _sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        return Response.json(
            status,
            [{"message": e["message"], "errorCode": e["statusCode"], "fields": e["fields"]} for e in errors],
        )

    def _update_one(self, conn: sqlite3.Connection, sobject: str, record: object) -> dict[str, object]:
        """Update one record by its Id on an open write transaction: a SaveResult."""
        if not isinstance(record, dict):
            return _failed("INVALID_FIELD", "a record must be an object", [])
        name = self._canonical_sobject(sobject) if sobject else None
        types = self._field_types(name) if name else None
        if name is None or types is None:
            return _failed("INVALID_TYPE", "Must send a concrete entity type.", [])
        by_lower = {field.lower(): field for field in types}
        values: dict[str, object] = {}
        for key, value in record.items():
            if key == "attributes":
                continue
            canonical = by_lower.get(key.lower())
            if canonical is None:
                return _failed("INVALID_FIELD", f"No such column '{key}' on sobject of type {name}", [key])
            values[canonical] = value
        record_id = values.pop("Id", None)
        if record_id in (None, ""):
            return _failed("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
        record_id = str(record_id)
        prefix = SALESFORCE_KEY_PREFIXES.get(name)
        if not _ID.fullmatch(record_id) or (prefix is not None and not record_id.startswith(prefix)):
            return _failed("MALFORMED_ID", f"{name} ID: id value of incorrect type: {record_id}", ["Id"])
        queued = self.record_faults.get(record_id)
        if queued:
            code = queued.pop(0)
            return _failed(code, f"injected {code} for {record_id}", [])
        read_only = sorted(set(values) & (_READ_ONLY | _NOT_UPDATEABLE.get(name, frozenset())))
        if read_only:
            return _failed(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(read_only)}. Please check the security settings "
                "of this field and verify that it is read/write for your profile or permission set.",
                read_only,
            )
        invalid = _invalid_value(types, values)
        if invalid is not None:
            return invalid
        where = '"Id" = ?' if len(record_id) == 18 else 'substr("Id", 1, 15) = ?'
        found = conn.execute(f'SELECT "Id", "IsDeleted" FROM "{name}" WHERE {where}', (record_id,)).fetchone()
        if found is None:
            return _failed("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
        if found[1]:
            return _failed("ENTITY_IS_DELETED", "entity is deleted", [])
        stamp = _now_iso()
        for column in ("LastModifiedDate", "SystemModstamp"):
            if column in types:
                values[column] = stamp
        if "LastModifiedById" in types:
            values["LastModifiedById"] = self.integration_user
        if name == "Case" and "Status" in values:
            closed = values["Status"] in _CLOSED_CASE_STATUSES
            was_closed = conn.execute('SELECT "IsClosed" FROM "Case" WHERE "Id" = ?', (found[0],)).fetchone()[
                0
            ]
            values["IsClosed"] = int(closed)
            if closed != bool(was_closed):
                values["ClosedDate"] = stamp if closed else None
        assignments = ", ".join(f'"{c}" = ?' for c in values)
        conn.execute(f'UPDATE "{name}" SET {assignments} WHERE "Id" = ?', [*values.values(), found[0]])
        return {"id": str(found[0]), "success": True, "errors": []}

    @staticmethod
    def _record(
        sobject: str,
        version: str,
        fields: list[str],
        types: dict[str, str],
        row: tuple[object, ...] | sqlite3.Row,
        *,
        skip_first: bool,
    ) -> dict[str, object]:
        """A record as the API renders it; the first column is the Id used for the attributes URL."""
        record: dict[str, object] = {
            "attributes": {"type": sobject, "url": f"/services/data/v{version}/sobjects/{sobject}/{row[0]}"}
        }
        for name, value in zip(
            fields[1:] if skip_first else fields, tuple(row)[1:] if skip_first else row, strict=True
        ):
            record[name] = _json_value(types.get(name, "string"), value)
        return record


def _failed(code: str, message: str, fields: list[str]) -> dict[str, object]:
    """A SaveResult of a record that failed."""
    return {"success": False, "errors": [{"statusCode": code, "message": message, "fields": fields}]}


def _label(field_name: str) -> str:
    """A field's label as Setup shows it: ``ERP_Customer_Number__c`` is "ERP Customer Number"."""
    base = field_name.removesuffix("__c")
    return base.replace("_", " ") if field_name.endswith("__c") else base


def _json_value(sf_type: str, value: object) -> object:
    """Numbers as JSON numbers, booleans as JSON booleans; text Salesforce would hold stays text."""
    if value is None:
        return None
    if sf_type == "boolean":
        return bool(value) if isinstance(value, int) else value
    if sf_type in SALESFORCE_NUMERIC_TYPES:
        return float(value) if isinstance(value, int | float) else value
    if sf_type in SALESFORCE_INTEGER_TYPES:
        return int(value) if isinstance(value, int | float) else value
    return value if isinstance(value, str) else str(value)
