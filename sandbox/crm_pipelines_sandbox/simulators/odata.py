"""OData 4 query pieces shared by the simulators that speak OData 4 (Dataverse, Creatio).

* ``$filter``: ``field op literal`` with ``eq ne gt ge lt le``, ``and``/``or``/``not``, parentheses,
  ``contains``/``startswith``/``endswith``, and literals as OData 4 writes them (``'text'`` with ``''``
  escapes, numbers, ``true``/``false``, ``null``, bare GUIDs, ``2026-11-25``, ``2026-11-25T10:00:00Z``).
  It compiles to parameterised SQLite SQL over the record store: field names are resolved by the
  caller (so each system decides what its names mean), values are never interpolated, and an operand
  of the wrong type is refused the way Microsoft's OData library refuses it.
* ``$orderby`` and keyset paging conditions ("rows after this one in this order", NULLs included).
* ``multipart/mixed`` ``$batch`` bodies (OData 4.0 section 11.7): parse requests, changesets included,
  and write the answer.

Specification: https://docs.oasis-open.org/odata/odata/v4.0/errata03/os/complete/part1-protocol/odata-v4.0-errata03-os-part1-protocol-complete.html
(11.2.5 system query options, 11.7 batch requests) and part 2 (URL conventions: literals, operators).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http import HTTPStatus

from crm_pipelines_sandbox.simulators.records import canonical


class ODataError(Exception):
    """A request the service refuses: HTTP status, the system's error code and message."""

    def __init__(self, message: str, *, status: int = 400, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


@dataclass(frozen=True)
class Column:
    """What an API property name means in the store.

    Attributes:
        sql: The quoted SQL column (already checked against the table).
        type: ``string``, ``number``, ``integer``, ``boolean``, ``date``, ``datetime``, ``json`` or ``guid``.
        canonical_time: The column holds the store's canonical instants (``_modified``/``_created``), so
            datetime literals are converted to that text and compare exactly.
    """

    sql: str
    type: str
    canonical_time: bool = False


Resolver = Callable[[str], Column | None]

EDM_TYPES = {
    "string": "Edm.String",
    "json": "Edm.String",
    "number": "Edm.Decimal",
    "integer": "Edm.Int32",
    "boolean": "Edm.Boolean",
    "date": "Edm.Date",
    "datetime": "Edm.DateTimeOffset",
    "guid": "Edm.Guid",
}
_OPERATORS = {"eq": "=", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_OPERATOR_KINDS = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
_FUNCTIONS = {"contains", "startswith", "endswith"}

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<string>'(?:[^']|'')*')
    |(?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![\w-])
    |(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2}))
    |(?P<date>\d{4}-\d{2}-\d{2})(?![\w:])
    |(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDfFlL]?)
    |(?P<punct>[(),])
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


@dataclass(frozen=True)
class Literal:
    kind: str  # string, number, datetime, date, guid, boolean, null
    value: object

    @property
    def edm(self) -> str:
        if self.kind == "number":
            return "Edm.Decimal" if isinstance(self.value, float) else "Edm.Int32"
        return {
            "string": "Edm.String",
            "datetime": "Edm.DateTimeOffset",
            "date": "Edm.Date",
            "guid": "Edm.Guid",
            "boolean": "Edm.Boolean",
        }.get(self.kind, "null")


@dataclass(frozen=True)
class Comparison:
    field: str
    op: str  # eq ne gt ge lt le, or a function name
    literal: Literal


@dataclass(frozen=True)
class Logical:
    op: str  # and, or, not
    parts: tuple[Comparison | Logical, ...]


Expr = Comparison | Logical


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ODataError(f"Syntax error at position {pos} in '{text}'.")
        if match.lastgroup != "ws":
            tokens.append(_Tok(match.lastgroup or "", match.group(), pos))
        pos = match.end()
    return tokens


def parse_datetime(text: str) -> datetime:
    """An OData ``DateTimeOffset`` literal as an aware UTC datetime (up to 7 fractional digits)."""
    value = text.replace("Z", "+00:00")
    head, dot, rest = value.partition(".")
    if dot:
        digits = re.match(r"\d+", rest)
        assert digits is not None
        frac = digits.group()
        value = f"{head}.{(frac + '000000')[:6]}{rest[len(frac) :]}"
    return datetime.fromisoformat(value).astimezone(UTC)


def _literal(tok: _Tok) -> Literal:
    if tok.kind == "string":
        return Literal("string", tok.text[1:-1].replace("''", "'"))
    if tok.kind == "guid":
        return Literal("guid", tok.text.lower())
    if tok.kind == "datetime":
        return Literal("datetime", parse_datetime(tok.text))
    if tok.kind == "date":
        return Literal("date", date.fromisoformat(tok.text))
    if tok.kind == "number":
        text = tok.text.rstrip("mMdDfFlL")
        is_float = any(c in text for c in ".eE") or tok.text[-1] in "mMdDfF"
        return Literal("number", float(text) if is_float else int(text))
    if tok.kind == "ident" and tok.text in ("true", "false"):
        return Literal("boolean", tok.text == "true")
    if tok.kind == "ident" and tok.text == "null":
        return Literal("null", None)
    raise ODataError(f"Syntax error: '{tok.text}' at position {tok.pos} is not a literal.")


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
            raise ODataError(f"Syntax error: unexpected end of the expression '{self.text}'.")
        self.i += 1
        return tok

    def word(self, *words: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "ident" and tok.text in words:
            self.i += 1
            return True
        return False

    def punct(self, char: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "punct" and tok.text == char:
            self.i += 1
            return True
        return False

    def expect(self, char: str) -> None:
        if not self.punct(char):
            tok = self.peek()
            where = f"at position {tok.pos}" if tok else "at the end"
            raise ODataError(f"Syntax error: ')' or ',' expected {where} in '{self.text}'.")

    def parse(self) -> Expr:
        expr = self.parse_or()
        tok = self.peek()
        if tok is not None:
            raise ODataError(f"Syntax error at position {tok.pos} in '{self.text}'.")
        return expr

    def parse_or(self) -> Expr:
        parts = [self.parse_and()]
        while self.word("or"):
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else Logical("or", tuple(parts))

    def parse_and(self) -> Expr:
        parts = [self.parse_unary()]
        while self.word("and"):
            parts.append(self.parse_unary())
        return parts[0] if len(parts) == 1 else Logical("and", tuple(parts))

    def parse_unary(self) -> Expr:
        if self.word("not"):
            return Logical("not", (self.parse_unary(),))
        if self.punct("("):
            inner = self.parse_or()
            self.expect(")")
            return inner
        tok = self.next()
        if tok.kind != "ident":
            raise ODataError(f"Syntax error at position {tok.pos} in '{self.text}'.")
        if tok.text in _FUNCTIONS and self.punct("("):
            name = self.next()
            if name.kind != "ident":
                raise ODataError(f"Syntax error at position {name.pos} in '{self.text}'.")
            self.expect(",")
            value = _literal(self.next())
            self.expect(")")
            return Comparison(name.text, tok.text, value)
        op = self.next()
        if op.kind != "ident" or op.text not in _OPERATORS:
            raise ODataError(
                f"Syntax error: '{op.text}' at position {op.pos} is not a comparison operator in '{self.text}'."
            )
        return Comparison(tok.text, op.text, _literal(self.next()))


def parse_filter(text: str) -> Expr:
    """Parse a ``$filter`` expression; raises :class:`ODataError` (400) on a syntax error."""
    if not text.strip():
        raise ODataError("The $filter query option must not be empty.")
    return _Parser(text).parse()


def _iso_z(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FilterCompiler:
    """Turns a parsed ``$filter`` into SQL over the store with the caller's names.

    Args:
        resolve: API property name -> :class:`Column`, or None for an unknown name.
        unknown: Builds the error for an unknown property name.
    """

    resolve: Resolver
    unknown: Callable[[str], ODataError]
    params: list[object] = field(default_factory=list)

    def compile(self, expr: Expr) -> str:
        if isinstance(expr, Logical):
            if expr.op == "not":
                return f"NOT ({self.compile(expr.parts[0])})"
            joiner = f" {expr.op.upper()} "
            return joiner.join(f"({self.compile(part)})" for part in expr.parts)
        column = self.resolve(expr.field)
        if column is None:
            raise self.unknown(expr.field)
        if expr.op in _FUNCTIONS:
            return self._function(column, expr)
        return self._comparison(column, expr)

    def _function(self, column: Column, expr: Comparison) -> str:
        if column.type not in ("string", "json") or expr.literal.kind != "string":
            raise ODataError(
                f"No function signature for the function with name '{expr.op}' matches the specified "
                f"arguments. The function signatures considered are: {expr.op}(Edm.String Nullable=true, "
                "Edm.String Nullable=true)."
            )
        text = str(expr.literal.value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = {"contains": f"%{text}%", "startswith": f"{text}%", "endswith": f"%{text}"}[expr.op]
        self.params.append(pattern)
        return f"{column.sql} LIKE ? ESCAPE '\\'"

    def _comparison(self, column: Column, expr: Comparison) -> str:
        literal = expr.literal
        if literal.kind == "null":
            if expr.op == "eq":
                return f"{column.sql} IS NULL"
            if expr.op == "ne":
                return f"{column.sql} IS NOT NULL"
            raise self._incompatible(column, literal, expr.op)
        value = self._value(column, literal, expr.op)
        self.params.append(value)
        collate = " COLLATE NOCASE" if column.type in ("string", "json", "guid") else ""
        return f"{column.sql}{collate} {_OPERATORS[expr.op]} ?"

    def _value(self, column: Column, literal: Literal, op: str) -> object:
        kind, value = literal.kind, literal.value
        if column.type in ("string", "json") and kind == "string":
            return value
        if column.type == "guid" and kind == "guid":
            return value
        if column.type in ("number", "integer") and kind == "number":
            return value
        if column.type == "boolean" and kind == "boolean":
            return int(bool(value))
        if column.type == "date" and kind == "date":
            assert isinstance(value, date)
            return value.isoformat()
        if column.type == "datetime" and kind in ("datetime", "date"):
            if isinstance(value, datetime):
                instant = value
            else:
                assert isinstance(value, date)
                instant = datetime(value.year, value.month, value.day, tzinfo=UTC)
            return canonical(instant) if column.canonical_time else _iso_z(instant)
        raise self._incompatible(column, literal, op)

    @staticmethod
    def _incompatible(column: Column, literal: Literal, op: str) -> ODataError:
        return ODataError(
            "A binary operator with incompatible types was detected. Found operand types "
            f"'{EDM_TYPES.get(column.type, 'Edm.String')}' and '{literal.edm}' for operator kind "
            f"'{_OPERATOR_KINDS.get(op, op)}'."
        )


def compile_filter(
    text: str, resolve: Resolver, unknown: Callable[[str], ODataError]
) -> tuple[str, list[object]]:
    """``$filter`` text -> (SQL condition, parameters)."""
    compiler = FilterCompiler(resolve, unknown)
    return compiler.compile(parse_filter(text)), compiler.params


def split_list(text: str | None) -> list[str]:
    """A comma-separated query option (``$select``), blanks dropped."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def parse_orderby(text: str | None) -> list[tuple[str, bool]]:
    """``$orderby`` -> [(property, descending)]."""
    out: list[tuple[str, bool]] = []
    for part in split_list(text):
        words = part.split()
        if len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise ODataError(f"Syntax error in the $orderby query option: '{part}'.")
        out.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    return out


def parse_prefer(header: str | None) -> dict[str, str]:
    """``Prefer: odata.maxpagesize=100, odata.track-changes`` -> {name: value ("" when valueless)}."""
    out: dict[str, str] = {}
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            out[name.strip().lower()] = value.strip().strip('"')
    return out


def after_condition(order: Sequence[tuple[str, bool]], values: Sequence[object]) -> tuple[str, list[object]]:
    """SQL for "rows strictly after ``values`` in this order" (keyset paging).

    SQLite sorts NULLs first ascending and last descending; the condition follows that, so a page
    boundary on a NULL value neither repeats nor skips rows. The first term also bounds the leading
    column so an index on it serves the range.
    """
    params: list[object] = []
    alternatives: list[str] = []
    equal_prefix: list[str] = []
    equal_params: list[object] = []
    for (column, descending), value in zip(order, values, strict=True):
        if value is None:
            after = "0" if descending else f"{column} IS NOT NULL"
            after_params: list[object] = []
            equal, eq_params = f"{column} IS NULL", []
        else:
            after = f"({column} < ? OR {column} IS NULL)" if descending else f"{column} > ?"
            after_params = [value]
            equal, eq_params = f"{column} = ?", [value]
        alternatives.append(" AND ".join([*equal_prefix, after]))
        params.extend([*equal_params, *after_params])
        equal_prefix.append(equal)
        equal_params.extend(eq_params)
    condition = " OR ".join(f"({a})" for a in alternatives)
    first_column, first_desc = order[0]
    if values[0] is not None and not first_desc:
        return f"{first_column} >= ? AND ({condition})", [values[0], *params]
    return f"({condition})", params


# --- multipart/mixed $batch ---------------------------------------------------------------------


@dataclass
class BatchRequest:
    """One operation of a ``$batch``."""

    method: str
    url: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    content_id: str | None = None


@dataclass
class ChangeSet:
    """Operations that succeed or fail together."""

    boundary: str
    requests: list[BatchRequest]


@dataclass
class BatchResponse:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    content_id: str | None = None


def boundary_of(content_type: str | None) -> str | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type or "", re.IGNORECASE)
    return match.group(1) if match else None


def _split_parts(body: bytes, boundary: str) -> list[bytes]:
    delimiter = b"--" + boundary.encode()
    chunks = body.split(delimiter)
    if len(chunks) < 2:
        raise ODataError("The batch request body does not contain the boundary of its Content-Type.")
    parts: list[bytes] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        parts.append(chunk.strip(b"\r\n") if chunk.strip() else b"")
    return [p for p in parts if p]


def _headers_and_rest(block: bytes) -> tuple[dict[str, str], bytes]:
    text = block.replace(b"\r\n", b"\n")
    head, _, rest = text.partition(b"\n\n")
    headers: dict[str, str] = {}
    for line in head.decode("utf-8", errors="replace").split("\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers, rest


def _request(block: bytes, content_id: str | None) -> BatchRequest:
    lines = block.replace(b"\r\n", b"\n").split(b"\n")
    words = lines[0].decode("utf-8", errors="replace").split()
    if len(words) < 2:
        raise ODataError("The batch part does not start with an HTTP request line.")
    headers: dict[str, str] = {}
    index = 1
    while index < len(lines) and lines[index].strip():
        name, sep, value = lines[index].decode("utf-8", errors="replace").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
        index += 1
    body = b"\n".join(lines[index + 1 :]).strip()
    return BatchRequest(words[0].upper(), words[1], headers, body, content_id)


def parse_batch(body: bytes, content_type: str | None) -> list[BatchRequest | ChangeSet]:
    """Parse a ``multipart/mixed`` ``$batch`` body into operations and changesets, in order."""
    boundary = boundary_of(content_type)
    if not (content_type or "").lower().startswith("multipart/mixed") or boundary is None:
        raise ODataError("The content type of a batch request must be multipart/mixed with a boundary.")
    items: list[BatchRequest | ChangeSet] = []
    for part in _split_parts(body, boundary):
        headers, rest = _headers_and_rest(part)
        part_type = headers.get("content-type", "")
        if part_type.lower().startswith("multipart/mixed"):
            inner = boundary_of(part_type)
            if inner is None:
                raise ODataError("A changeset needs a boundary in its Content-Type.")
            requests = []
            for sub in _split_parts(rest, inner):
                sub_headers, sub_rest = _headers_and_rest(sub)
                requests.append(_request(sub_rest, sub_headers.get("content-id")))
            items.append(ChangeSet(inner, requests))
        else:
            items.append(_request(rest, headers.get("content-id")))
    return items


def _response_block(response: BatchResponse) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if response.content_id is not None:
        lines.append(f"Content-ID: {response.content_id}")
    lines.append("")
    lines.append(f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}")
    lines.extend(f"{name}: {value}" for name, value in response.headers.items())
    lines.append("")
    lines.append(response.body.decode("utf-8"))
    return "\r\n".join(lines)


def write_batch(items: Sequence[BatchResponse | list[BatchResponse]], boundary: str) -> bytes:
    """The ``multipart/mixed`` answer: one part per operation; a changeset's answers nested."""
    out: list[str] = []
    for item in items:
        out.append(f"--{boundary}")
        if isinstance(item, list):
            inner = boundary.replace("batchresponse_", "changesetresponse_", 1)
            out.append(f"Content-Type: multipart/mixed; boundary={inner}")
            out.append("")
            for response in item:
                out.append(f"--{inner}")
                out.append(_response_block(response))
            out.append(f"--{inner}--")
        else:
            out.append(_response_block(item))
    out.append(f"--{boundary}--")
    out.append("")
    return "\r\n".join(out).encode("utf-8")
