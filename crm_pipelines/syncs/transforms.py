"""The mapping vocabulary both ways: how a target's value is read into the source's form, and back.

Reading (``canonical_sql``) is the mapping's own SQL (:func:`crm_pipelines.mapping.build.column_sql`)
cast to the transform's canonical type and then to text, so a value the target spells differently
(``+49 30 1234567`` and ``+49301234567``, ``Germany`` and ``DE``) compares equal. Writing
(:func:`write_value`) turns the source's canonical value into what the target's API takes: a number for
``decimal``, the map's spelling for ``value_map``, a country name or code as declared.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pycountry

from crm_pipelines.mapping.build import column_sql
from crm_pipelines.mapping.spec import ColumnMapping
from crm_pipelines.syncs.spec import SyncField

__all__ = ["NoTargetValue", "canonical_sql", "canonical_type", "current_sql", "write_value"]


class NoTargetValue(ValueError):
    """The target has no spelling for a value (a value map without it): the field is not written."""


# The DuckDB type a transform's value has in the canonical form (the rest are text).
_TYPES = {
    "decimal": "DECIMAL(18, 2)",
    "int": "BIGINT",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
    "bool": "BOOLEAN",
}


def canonical_type(field: SyncField) -> str:
    """The DuckDB type of ``field``'s canonical value."""
    return _TYPES.get(field.transform, "VARCHAR")


def canonical_sql(expression: str, field: SyncField) -> str:
    """``expression`` in the field's canonical form, as text (comparable across sides)."""
    return f"CAST(TRY_CAST({expression} AS {canonical_type(field)}) AS VARCHAR)"


def current_sql(target_field: str, field: SyncField, value_maps: dict[str, dict[str, str]]) -> str:
    """SQL reading the target's raw ``target_field`` into the canonical text form (mapping forward)."""
    if field.transform == "value_map" and field.value_map is None:
        # Only explicit values: read the target's spelling back through them.
        pairs = {target: source for source, target in field.values.items()}
        mapping = ColumnMapping.model_validate(
            {"from": target_field, "transform": "value_map", "value_map": "_"}
        )
        return canonical_sql(column_sql(mapping, {"_": pairs}), field)
    mapping = ColumnMapping.model_validate(
        {
            "from": target_field,
            "transform": field.transform,
            "country_from": field.country_from,
            "value_map": field.value_map,
        }
    )
    return canonical_sql(column_sql(mapping, value_maps), field)


def _country(code: str, fmt: str | None) -> str:
    country = pycountry.countries.get(alpha_2=code)
    if country is None or fmt in (None, "alpha2"):
        return code
    return str(country.alpha_3 if fmt == "alpha3" else getattr(country, "common_name", country.name))


def write_value(value: str | None, field: SyncField, value_maps: dict[str, dict[str, str]]) -> Any:
    """The value the target's API takes for a canonical ``value`` (as text; None clears the field)."""
    if value is None:
        return None
    t = field.transform
    if t in ("decimal",):
        number = Decimal(value)
        return int(number) if number == number.to_integral_value() else float(number)
    if t == "int":
        return int(value)
    if t == "bool":
        return value.lower() == "true"
    if t == "date":
        day = dt.date.fromisoformat(value)
        return day.strftime(field.format) if field.format else day.isoformat()
    if t == "timestamp":
        moment = dt.datetime.fromisoformat(value)
        return moment.strftime(field.format) if field.format else moment.isoformat()
    if t == "country":
        return _country(value, field.format)
    if t == "value_map":
        if value in field.values:
            return field.values[value]
        # The map's first spelling of the canonical value, as the YAML writes it.
        for spelling, canonical in value_maps.get(field.value_map or "", {}).items():
            if canonical == value:
                return spelling
        raise NoTargetValue(f"{value!r} has no spelling in value map {field.value_map or '(values)'}")
    return value
