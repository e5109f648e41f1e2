"""Sugar's filter API definitions (``filter[0][date_modified][$gte]=...``) as parameterised SQLite.

Operators ``$equals $not_equals $gt $gte $lt $lte $in $not_in $is_null $not_null $starts $ends
$contains $between $dateBetween $and $or``; ``date_modified``/``date_entered`` compare on the store's
canonical UTC instants, a whole-day value covering that day. Query-string filters arrive as PHP-style
bracket parameters and are nested back into lists and dicts first (:func:`nest`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from crm_pipelines_sandbox.simulators.records import ObjectDef, canonical, quote


def parse_instant(text: str) -> tuple[datetime, bool]:
    """A filter value as a UTC instant; True when it named a whole day (``2026-11-25``)."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return datetime.fromisoformat(text).replace(tzinfo=UTC), True
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC), False


def nest(query: Mapping[str, list[str]]) -> dict[str, Any]:
    """PHP-style bracket parameters (``filter[0][date_modified][$gte]=x``) as nested lists/dicts."""
    root: dict[str, Any] = {}
    for key, values in query.items():
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        if not parts:
            continue
        node: dict[str, Any] = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = values[0] if len(values) == 1 else values
    listed: dict[str, Any] = listify(root)
    return listed


def listify(node: Any) -> Any:
    if isinstance(node, dict):
        items = {k: listify(v) for k, v in node.items()}
        if items and all(k.isdigit() for k in items):
            return [items[k] for k in sorted(items, key=int)]
        return items
    return node


class FilterError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class _Sql:
    where: list[str]
    params: list[object]


class FilterCompiler:
    """Sugar filter definitions to parameterised SQLite over the store's columns."""

    _COMPARE = MappingProxyType({"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="})

    def __init__(self, obj: ObjectDef) -> None:
        self.obj = obj
        self.types = {f.name: f.type for f in obj.fields}

    def compile(self, definition: Any) -> _Sql:
        out = _Sql([], [])
        if definition in (None, "", []):
            return out
        if isinstance(definition, str):
            try:
                definition = json.loads(definition)
            except ValueError:
                raise FilterError("Unexpected filter type string.") from None
        if isinstance(definition, dict):
            definition = [definition]
        if not isinstance(definition, list):
            raise FilterError(f"Unexpected filter type {type(definition).__name__}.")
        for clause in definition:
            out.where.append(self._clause(clause, out.params))
        return out

    def _clause(self, clause: Any, params: list[object]) -> str:
        if not isinstance(clause, dict) or not clause:
            raise FilterError("Did not recognize the filter definition.")
        parts = []
        for name, value in clause.items():
            if name in ("$and", "$or"):
                subs = value if isinstance(value, list) else [value]
                joined = f" {name[1:].upper()} ".join(self._clause(s, params) for s in subs)
                parts.append(f"({joined})")
            elif name.startswith("$"):
                raise FilterError(f"Did not recognize the operand: {name}")
            else:
                parts.append(self._field(name, value, params))
        return "(" + " AND ".join(parts) + ")"

    def _column(self, name: str) -> str:
        if name == "date_modified":
            return "_modified"
        if name == "date_entered":
            return "_created"
        if name not in self.types:
            raise FilterError(f"Unknown field: {name}")
        return quote(name)

    def _value(self, name: str, value: Any) -> object:
        kind = self.types.get(name)
        if kind == "boolean":
            return 1 if str(value).lower() in ("1", "true") else 0
        if kind in ("number", "integer") and value not in (None, ""):
            try:
                return float(value) if kind == "number" else int(value)
            except (TypeError, ValueError):
                raise FilterError(f"Invalid value for {name}: {value}") from None
        return value

    def _field(self, name: str, spec: Any, params: list[object]) -> str:
        column = self._column(name)
        ops = spec if isinstance(spec, dict) else {"$equals": spec}
        conditions = []
        for op, operand in ops.items():
            if column in ("_modified", "_created"):
                conditions.append(self._instant(column, op, operand, params))
            elif op == "$equals":
                conditions.append(f"{column} = ?")
                params.append(self._value(name, operand))
            elif op == "$not_equals":
                conditions.append(f"({column} IS NULL OR {column} != ?)")
                params.append(self._value(name, operand))
            elif op in self._COMPARE:
                conditions.append(f"{column} {self._COMPARE[op]} ?")
                params.append(self._value(name, operand))
            elif op in ("$in", "$not_in"):
                values = operand if isinstance(operand, list) else [operand]
                marks = ", ".join("?" for _ in values) or "NULL"
                conditions.append(f"{column} {'NOT IN' if op == '$not_in' else 'IN'} ({marks})")
                params.extend(self._value(name, v) for v in values)
            elif op == "$is_null":
                conditions.append(f"({column} IS NULL OR {column} = '')")
            elif op == "$not_null":
                conditions.append(f"({column} IS NOT NULL AND {column} != '')")
            elif op in ("$starts", "$ends", "$contains"):
                pattern = str(operand).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                pattern = {"$starts": f"{pattern}%", "$ends": f"%{pattern}", "$contains": f"%{pattern}%"}[op]
                conditions.append(f"{column} LIKE ? ESCAPE '\\'")
                params.append(pattern)
            elif op == "$between":
                if not isinstance(operand, list) or len(operand) != 2:
                    raise FilterError("$between needs two values")
                conditions.append(f"{column} BETWEEN ? AND ?")
                params.extend(self._value(name, v) for v in operand)
            else:
                raise FilterError(f"Did not recognize the operand: {op}")
        return " AND ".join(conditions)

    def _instant(self, column: str, op: str, operand: Any, params: list[object]) -> str:
        """Datetime filters on the canonical UTC column; a whole-day value covers that day."""
        if op in ("$is_null", "$not_null"):
            return "0" if op == "$is_null" else "1"
        values = operand if isinstance(operand, list) else [operand]
        try:
            parsed = [parse_instant(str(v)) for v in values]
        except ValueError:
            raise FilterError(f"Invalid datetime value: {operand}") from None
        if op in ("$between", "$dateBetween"):
            if len(parsed) != 2:
                raise FilterError(f"{op} needs two values")
            (low, _), (high, high_day) = parsed
            params.extend([canonical(low), canonical(high + timedelta(days=1) if high_day else high)])
            return f"({column} >= ? AND {column} {'<' if high_day else '<='} ?)"
        instant, day = parsed[0]
        start = canonical(instant)
        after = canonical(instant + timedelta(days=1) if day else instant + timedelta(seconds=1))
        if op == "$equals":
            params.extend([start, after])
            return f"({column} >= ? AND {column} < ?)"
        if op == "$not_equals":
            params.extend([start, after])
            return f"({column} < ? OR {column} >= ?)"
        bounds = {"$gte": (">=", start), "$gt": (">=", after), "$lt": ("<", start), "$lte": ("<", after)}
        if op not in bounds:
            raise FilterError(f"Did not recognize the operand: {op}")
        sign, value = bounds[op]
        params.append(value)
        return f"{column} {sign} ?"
