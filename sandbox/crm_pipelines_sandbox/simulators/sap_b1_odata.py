"""The OData v3 query options SAP Business One Service Layer supports, compiled to SQLite.

``$filter`` (``eq ne gt ge lt le and or not``, parentheses, ``startswith endswith contains
substringof``, ``null``, string and number literals, ``datetime'...'``), ``$orderby`` and ``$select``
for :mod:`.sap_b1`. Property names are resolved by the caller (:class:`Resolver`), so the same
compiler serves an entity set (``UpdateDate``) and a ``$crossjoin`` (``BusinessPartners/UpdateDate``).

Service Layer's documented quirks are kept: dates accept ``2014-04-23``, ``20140423``,
``datetime'2014-04-23'`` and ``2014-04-23T12:21:21`` (the time part is ignored); times accept
``18:38:00``, ``1838`` or a full timestamp, and only hours and minutes count
(https://help.sap.com/doc/6ab840ef2e8140f3af9eeb7d8fef9f06/latest/en-US/Working_with_SAP_Business_One_Service_Layer.pdf,
section 3.6). Enumerations accept the value or the name (``CardType eq 'C'`` or ``'cCustomer'``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

# How a property is stored: a plain column, or a date / time of day derived from a canonical instant.
Kind = Literal["string", "number", "integer", "date", "instant_date", "instant_time"]


@dataclass(frozen=True)
class Column:
    """A resolved property: the SQL expression that holds it and how to compare it."""

    sql: str
    kind: Kind
    enum: dict[str, str] | None = None  # accepted spelling -> stored value


Resolver = Callable[[str], Column]


class ODataError(Exception):
    """A query Service Layer refuses (400), with the error code and text it answers."""

    def __init__(self, message: str, code: int = -1000) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<datetime>datetime'[^']*')
    |(?P<string>'(?:[^']|'')*')
    |(?P<number>-?\d+(?:\.\d+)?)
    |(?P<punct>[(),])
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)""",
    re.VERBOSE,
)
_OPS = {"eq": "=", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_FUNCS = {"startswith", "endswith", "contains", "substringof"}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str


@dataclass(frozen=True)
class _Literal:
    value: object  # str, float, int or None


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ODataError(f"Syntax error at position {pos} in '{text}'")
        if match.lastgroup != "ws":
            out.append(_Tok(match.lastgroup or "", match.group()))
        pos = match.end()
    return out


def parse_date(text: str) -> date:
    """A Service Layer date literal; hours, minutes and seconds are ignored."""
    value = text.strip()
    if value.startswith("datetime'"):
        value = value[len("datetime'") : -1]
    digits = re.sub(r"[^0-9]", "", value.split("T")[0])
    if len(digits) < 8:
        raise ODataError(f"Invalid date value '{text}'")
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        raise ODataError(f"Invalid date value '{text}'") from None


def parse_time(text: str) -> str:
    """A Service Layer time literal as ``HH:MM``: only hours and minutes are effective."""
    value = text.strip()
    if "T" in value:
        value = value.split("T", 1)[1]
    digits = re.sub(r"[^0-9]", "", value)
    if len(digits) < 4:
        raise ODataError(f"Invalid time value '{text}'")
    return f"{digits[:2]}:{digits[2:4]}"


class _Compiler:
    def __init__(self, text: str, resolve: Resolver) -> None:
        self.tokens = _tokens(text)
        self.i = 0
        self.resolve = resolve
        self.params: list[object] = []

    def peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise ODataError("Unexpected end of $filter")
        self.i += 1
        return tok

    def word(self, *words: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "name" and tok.text in words:
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
            raise ODataError(f"Expected '{char}' in $filter")

    def compile(self) -> str:
        sql = self.or_()
        left = self.peek()
        if left is not None:
            raise ODataError(f"Unexpected '{left.text}' in $filter")
        return sql

    def or_(self) -> str:
        parts = [self.and_()]
        while self.word("or"):
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def and_(self) -> str:
        parts = [self.not_()]
        while self.word("and"):
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def not_(self) -> str:
        if self.word("not"):
            return f"(NOT {self.not_()})"
        return self.primary()

    def primary(self) -> str:
        if self.punct("("):
            inner = self.or_()
            self.expect(")")
            return inner
        tok = self.peek()
        if tok is not None and tok.kind == "name" and tok.text in _FUNCS:
            return self.function()
        left = self.operand()
        op = self.take()
        if op.kind != "name" or op.text not in _OPS:
            raise ODataError(f"Unknown operator '{op.text}' in $filter")
        right = self.operand()
        return self.comparison(left, op.text, right)

    def operand(self) -> Column | _Literal:
        tok = self.take()
        if tok.kind == "string":
            return _Literal(tok.text[1:-1].replace("''", "'"))
        if tok.kind == "datetime":
            return _Literal(tok.text)
        if tok.kind == "number":
            return _Literal(float(tok.text) if "." in tok.text else int(tok.text))
        if tok.kind == "name":
            if tok.text == "null":
                return _Literal(None)
            if tok.text in ("true", "false"):
                return _Literal("tYES" if tok.text == "true" else "tNO")
            return self.resolve(tok.text)
        raise ODataError(f"Unexpected '{tok.text}' in $filter")

    def function(self) -> str:
        name = self.take().text
        self.expect("(")
        first = self.operand()
        self.expect(",")
        second = self.operand()
        self.expect(")")
        if name == "substringof":  # OData v3: substringof('text', Property)
            first, second = second, first
        if not isinstance(first, Column) or not isinstance(second, _Literal):
            raise ODataError(f"{name} needs a property and a string literal")
        text = str(second.value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = {"startswith": f"{text}%", "endswith": f"%{text}"}.get(name, f"%{text}%")
        self.params.append(pattern)
        return f"({first.sql} LIKE ? ESCAPE '\\')"

    def comparison(self, left: Column | _Literal, op: str, right: Column | _Literal) -> str:
        flipped = {"gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}
        if isinstance(left, _Literal) and isinstance(right, Column):
            left, right, op = right, left, flipped.get(op, op)
        if isinstance(left, Column) and isinstance(right, Column):
            return f"({left.sql} {_OPS[op]} {right.sql})"  # a join condition of a $crossjoin
        if not isinstance(left, Column) or not isinstance(right, _Literal):
            raise ODataError("A comparison needs a property")
        if right.value is None:
            if op not in ("eq", "ne"):
                raise ODataError("null can only be compared with eq or ne")
            return f"({left.sql} IS {'NOT ' if op == 'ne' else ''}NULL)"
        if left.kind == "instant_date":
            return self.instant_date(left.sql, op, parse_date(str(right.value)))
        if left.kind == "instant_time":
            self.params.append(parse_time(str(right.value)))
            return f"(substr({left.sql}, 12, 5) {_OPS[op]} ?)"
        self.params.append(self.value(left, right.value))
        return f"({left.sql} {_OPS[op]} ?)"

    def instant_date(self, column: str, op: str, day: date) -> str:
        """A date comparison as a range on the canonical instant, so the index serves it."""
        start, end = day.isoformat(), (day + timedelta(days=1)).isoformat()
        if op == "eq":
            self.params.extend([start, end])
            return f"({column} >= ? AND {column} < ?)"
        if op == "ne":
            self.params.extend([start, end])
            return f"({column} < ? OR {column} >= ?)"
        sign, value = {"ge": (">=", start), "gt": (">=", end), "lt": ("<", start), "le": ("<", end)}[op]
        self.params.append(value)
        return f"({column} {sign} ?)"

    @staticmethod
    def value(column: Column, value: object) -> object:
        if column.enum is not None:
            text = str(value)
            if text not in column.enum:
                raise ODataError(f"Enumeration value '{text}' is invalid")
            return column.enum[text]
        if column.kind == "date":
            return parse_date(str(value)).isoformat()
        if column.kind in ("number", "integer") and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise ODataError(f"Invalid number '{value}'") from None
        return value


def compile_filter(text: str, resolve: Resolver) -> tuple[str, list[object]]:
    """``$filter`` as an SQL condition and its parameters."""
    compiler = _Compiler(text, resolve)
    return compiler.compile(), compiler.params


def compile_orderby(text: str, resolve: Resolver) -> list[str]:
    """``$orderby`` as SQL terms. A date derived from an instant orders by the instant (a finer,
    compatible order), so a following time of the same instant adds nothing."""
    terms: list[str] = []
    instants: set[str] = set()
    for item in (part.strip() for part in text.split(",") if part.strip()):
        name, _, direction = item.partition(" ")
        direction = direction.strip().lower() or "asc"
        if direction not in ("asc", "desc"):
            raise ODataError(f"Invalid $orderby direction '{direction}'")
        column = resolve(name.strip())
        if column.kind == "instant_time" and column.sql in instants:
            continue
        if column.kind == "instant_date":
            instants.add(column.sql)
            terms.append(f"{column.sql} {direction.upper()}")
        elif column.kind == "instant_time":
            terms.append(f"substr({column.sql}, 12, 8) {direction.upper()}")
        else:
            terms.append(f"{column.sql} {direction.upper()}")
    return terms


def split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses (``$expand=A($select=x,y),B``)."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    if current.strip():
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]
