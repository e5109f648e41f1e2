"""Validate canonical rows against the entity's Great Expectations suite; split valid and quarantined rows.

Batches are re-chunked to about 100k rows. Each chunk is checked where its rows are: the suite's
rules, compiled to DuckDB SQL predicates (:func:`crm_pipelines.quality.suites.rule_sql`), count per
rule the rows GX's pandas engine would count and fail, and list the failing row positions, in one
query over the chunk's Arrow columns (regexes with Python's ``re``, as GX's pandas engine matches
them, once per distinct value). GX stays the interface: the suite is built from the rules as
before, and each chunk's verdicts come back as GX ``ExpectationValidationResult`` objects in an
``ExpectationSuiteValidationResult``, ``mostly`` applied as GX applies it. A rule the compiler cannot
express with GX's exact result (a row condition other than null / not null, an uncommon kwarg) sends
the whole suite to GX itself, each chunk as a pandas DataFrame with ``result_format="COMPLETE"``.

Valid rows keep the input schema (``_raw`` included); every (row, failed rule) pair becomes one row
in the ``QUARANTINE`` schema; a ``severity: warn`` rule's failing rows are counted and stay valid.
Only counters outlive a chunk, so memory stays flat however many rows stream through.

How GX's own validation reports failing rows: the DataFrame's index is the row position, *named*
``__row__``, and the result format asks for ``unexpected_index_column_names=["__row__"]`` with
``exclude_unexpected_values=True``. GX then returns one ``{"__row__": [positions]}`` per expectation,
read straight off the index. Passing ``record_id`` as the index column instead would be ambiguous for
the very rows the rules must catch (null or duplicated ids), and GX's per-row ``DataFrame.at`` lookups
for named *columns* cost about 10 us a failing row per expectation.

One ephemeral GX context serves the whole process (see :func:`gx_context`); suites are never saved.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crm_pipelines.canonical import ENTITIES, QUARANTINE
from crm_pipelines.lake import reader
from crm_pipelines.quality.rules import (
    RAW_COLUMN,
    RawValue,
    Rule,
    RuleSet,
    load_rules,
    template_fields,
)
from crm_pipelines.quality.suites import RULE_META_KEY, RULE_ROWS, RuleSql, build_suite, rule_sql

if TYPE_CHECKING:
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.data_context import AbstractDataContext
    from great_expectations.datasource.fluent import PandasDatasource

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 100_000
ROW_INDEX = "__row__"
_DATASOURCE = "crm_pipelines_quality"
_BATCH_DEFINITION = "whole_dataframe"


class QualityError(RuntimeError):
    """A batch could not be validated (missing or mistyped column, an expectation raised in GX)."""


# ---------------------------------------------------------------------------------------------------
# One GX context per process: building it and importing GX take seconds, validating reuses both.


class _GxRuntime:
    lock = threading.Lock()
    context: AbstractDataContext | None = None
    datasource: PandasDatasource | None = None
    batch_definitions: ClassVar[dict[str, BatchDefinition[Any]]] = {}


def gx_context() -> AbstractDataContext:
    """The process-wide ephemeral GX context, created on first use.

    It keeps everything in memory, has usage analytics switched off (a pipeline must not phone home)
    and progress bars off (they would flood Dagster's captured stderr).

    Returns:
        The context.
    """
    with _GxRuntime.lock:
        if _GxRuntime.context is None:
            import great_expectations as gx
            from great_expectations.data_context.types.base import (
                DataContextConfig,
                InMemoryStoreBackendDefaults,
                ProgressBarsConfig,
            )

            config = DataContextConfig(
                store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
                analytics_enabled=False,
                progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
            )
            _GxRuntime.context = gx.get_context(mode="ephemeral", project_config=config)
        return _GxRuntime.context


def _batch_definition(entity: str) -> BatchDefinition[Any]:
    context = gx_context()
    with _GxRuntime.lock:
        definition = _GxRuntime.batch_definitions.get(entity)
        if definition is None:
            if _GxRuntime.datasource is None:
                _GxRuntime.datasource = context.data_sources.add_pandas(_DATASOURCE)
            asset = _GxRuntime.datasource.add_dataframe_asset(name=entity)
            definition = asset.add_batch_definition_whole_dataframe(_BATCH_DEFINITION)
            _GxRuntime.batch_definitions[entity] = definition
        return definition


# ---------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class BatchResult:
    """The outcome of one validated chunk.

    Attributes:
        valid: Rows that passed every rule, in the input schema.
        quarantine: One row per (failing row, failed rule), in the ``QUARANTINE`` schema.
        rows_in: Rows in the chunk.
        rows_quarantined: Distinct rows that failed at least one rule.
        gx_success: GX's verdict on this chunk alone (``mostly`` applied per chunk).
    """

    valid: pa.RecordBatch
    quarantine: pa.RecordBatch
    rows_in: int
    rows_quarantined: int
    gx_success: bool

    @property
    def rows_valid(self) -> int:
        return int(self.valid.num_rows)


@dataclass
class RuleStats:
    """Counters of one rule across every chunk of a run."""

    expectation: str
    columns: list[str]
    mostly: float
    tolerated_failures: int = 0
    severity: str = "error"
    evaluated: int = 0
    unexpected: int = 0
    gx_failed_batches: int = 0

    @property
    def unexpected_percent(self) -> float:
        return 100.0 * self.unexpected / self.evaluated if self.evaluated else 0.0

    @property
    def success(self) -> bool:
        # GX's rule: the share of evaluated (non-missing, condition-selected) rows that pass must
        # reach `mostly`; applied to the whole feed, not chunk by chunk. A warning never fails.
        if self.severity == "warn" or not self.evaluated or self.unexpected <= self.tolerated_failures:
            return True
        return (self.evaluated - self.unexpected) / self.evaluated >= self.mostly

    def to_dict(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation,
            "columns": list(self.columns),
            "mostly": self.mostly,
            "tolerated_failures": self.tolerated_failures,
            "severity": self.severity,
            "evaluated": self.evaluated,
            "unexpected": self.unexpected,
            "unexpected_percent": round(self.unexpected_percent, 4),
            "success": self.success,
            "gx_failed_batches": self.gx_failed_batches,
        }


@dataclass(frozen=True)
class ValidationSummary:
    """Totals of a run; :meth:`to_dict` is JSON-serialisable for Dagster asset-check metadata.

    Attributes:
        entity: Canonical entity validated.
        suite: Name of the GX suite.
        rows_in: Rows read.
        rows_valid: Rows that passed every rule.
        rows_quarantined: Distinct rows that failed a rule (``rows_valid + rows_quarantined == rows_in``).
        quarantine_records: Rows written to quarantine (one per failed rule, so >= ``rows_quarantined``).
        batches: Chunks validated.
        rules: Per-rule counters, in rule order.
        gx_statistics: GX's own statistics summed over the chunks.
        seconds: Time spent validating (excluding the consumer's work between chunks); ``gx_seconds``
            of it inside GX.
    """

    entity: str
    suite: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    quarantine_records: int
    batches: int
    rules: dict[str, RuleStats]
    gx_statistics: dict[str, Any]
    seconds: float
    gx_seconds: float

    @property
    def success(self) -> bool:
        """True when every rule met its ``mostly`` over the whole feed; False means stop the load."""
        return all(stats.success for stats in self.rules.values())

    @property
    def failed_rules(self) -> list[str]:
        return [name for name, stats in self.rules.items() if not stats.success]

    @property
    def warnings(self) -> dict[str, int]:
        """Rows flagged by each ``severity: warn`` rule (counted, not quarantined)."""
        return {name: stats.unexpected for name, stats in self.rules.items() if stats.severity == "warn"}

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON types.

        Returns:
            A dict of str, int, float, bool, lists and dicts.
        """
        return {
            "entity": self.entity,
            "suite": self.suite,
            "success": self.success,
            "failed_rules": self.failed_rules,
            "rows_in": self.rows_in,
            "rows_valid": self.rows_valid,
            "rows_quarantined": self.rows_quarantined,
            "quarantined_percent": round(100.0 * self.rows_quarantined / self.rows_in, 4)
            if self.rows_in
            else 0.0,
            "quarantine_records": self.quarantine_records,
            "warnings": self.warnings,
            "batches": self.batches,
            "rules": {name: stats.to_dict() for name, stats in self.rules.items()},
            "gx_statistics": dict(self.gx_statistics),
            "seconds": round(self.seconds, 3),
            "gx_seconds": round(self.gx_seconds, 3),
        }


# ---------------------------------------------------------------------------------------------------
# Rendering values for reasons and records


def _render(value: Any) -> str:
    """A value as a reason shows it: strings quoted, NULL as null, decimals as written."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(str(item) for item in value)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _unescape_json_string(text: str) -> str:
    # raw_value columns hold the JSON-escaped text (\u00d6sterreich); show it as the source meant it.
    try:
        decoded = json.loads(f'"{text}"')
    except ValueError:
        return text
    return decoded if isinstance(decoded, str) else text


def _regex_search(column: pa.ChunkedArray | pa.Array, regex: str, re2: str | None = None) -> pa.Array:
    """GX's pandas regex check, ``re.search`` on each value; null stays null.

    ASCII values are matched by Arrow's RE2 with ``re2`` (the same verdict, see
    :func:`crm_pipelines.quality.suites.re2_for_ascii`), the others with Python's ``re`` once per
    distinct value.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    python = pc.is_valid(column)
    matches = pa.nulls(len(column), pa.bool_())
    if re2 is not None:
        ascii_values = pc.fill_null(pc.string_is_ascii(column), False)
        try:
            matches = pc.if_else(ascii_values, pc.match_substring_regex(column, re2), None)
            python = pc.and_(python, pc.invert(ascii_values))
        except pa.ArrowInvalid:
            pass  # RE2 refuses the pattern: Python's re decides every value
    if pc.any(python).as_py():
        rest = column.filter(python)
        encoded = pc.dictionary_encode(rest)
        search = re.compile(regex).search
        found = pa.array([search(v) is not None for v in encoded.dictionary.to_pylist()], type=pa.bool_())
        matches = pc.replace_with_mask(matches, python, found.take(encoded.indices))
    return matches


def _empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in schema], schema=schema)


def _as_batch(table: pa.Table) -> pa.RecordBatch:
    if table.num_rows == 0:
        return _empty_batch(table.schema)
    return pa.concat_batches(table.to_batches())


def _rechunk(batches: Iterable[pa.RecordBatch | pa.Table], rows: int) -> Iterator[pa.Table]:
    """Regroup incoming batches into tables of ``rows`` rows (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for item in batches:
        pieces = item.to_batches() if isinstance(item, pa.Table) else [item]
        for piece in pieces:
            if piece.num_rows == 0:
                continue
            pending.append(piece)
            count += piece.num_rows
            while count >= rows:
                try:
                    table = pa.Table.from_batches(pending)
                except pa.ArrowInvalid as exc:
                    raise QualityError(f"batches do not share one schema: {exc}") from exc
                yield table.slice(0, rows)
                rest = table.slice(rows)
                pending = rest.to_batches()
                count = rest.num_rows
    if count:
        try:
            yield pa.Table.from_batches(pending)
        except pa.ArrowInvalid as exc:
            raise QualityError(f"batches do not share one schema: {exc}") from exc


# ---------------------------------------------------------------------------------------------------
# The run


class ValidationRun:
    """A single-pass validation of a stream of batches.

    Iterate it for one :class:`BatchResult` per chunk, then read :attr:`summary`. Made by
    :func:`validate_batches`.
    """

    def __init__(
        self,
        *,
        entity: str,
        batches: Iterable[pa.RecordBatch | pa.Table],
        key_column: str,
        rules: RuleSet,
        batch_rows: int,
        source: str | None,
    ) -> None:
        if entity not in ENTITIES:
            raise QualityError(f"unknown entity {entity!r}; known: {sorted(ENTITIES)}")
        if batch_rows < 1:
            raise ValueError("batch_rows must be >= 1")
        self.entity = entity
        self.key_column = key_column
        self.source = source
        self._batches = batches
        self._batch_rows = batch_rows
        self._rules = {rule.name: rule for rule in rules.rules_for(entity)}
        self._derived = rules.derived_for(entity)
        self._suite = build_suite(entity=entity, rules=rules)
        self._templates = {name: template_fields(rule.reason) for name, rule in self._rules.items()}
        self._schema = ENTITIES[entity]
        derived_names = {d.name for d in self._derived}
        needed: dict[str, None] = {}  # ordered set of columns GX reads
        for rule in self._rules.values():
            for column in [*rule.columns, *(c.column for c in rule.when)]:
                needed[column] = None
        self._frame_columns = list(needed)
        # The suite as SQL predicates when every rule compiles (else GX validates pandas frames).
        frame_types = {
            **{f.name: f.type for f in self._schema},
            **{d.name: d.arrow_type for d in self._derived},
        }
        frame_types = {
            name: pa.float64() if pa.types.is_decimal(dtype) else dtype for name, dtype in frame_types.items()
        }
        compiled = [
            rule_sql(rule=rule, types=frame_types, position=i) for i, rule in enumerate(self._rules.values())
        ]
        self._sql: list[RuleSql] | None = (
            [c for c in compiled if c is not None] if all(c is not None for c in compiled) else None
        )
        self._configurations: dict[str, Any] = {}
        self._input_columns = sorted(
            {c for c in needed if c not in derived_names}
            | {c for d in self._derived for c in d.inputs}
            | {key_column}
        )
        self._stats = {
            name: RuleStats(
                expectation=rule.expectation,
                columns=list(rule.columns),
                mostly=rule.mostly,
                tolerated_failures=rules.tolerated_failures,
                severity=rule.severity,
            )
            for name, rule in self._rules.items()
        }
        self._gx_stats: dict[str, Any] = {
            "evaluated_expectations": 0,
            "successful_expectations": 0,
            "unsuccessful_expectations": 0,
            "success_percent": 100.0,
            "batches_failed": 0,
            "great_expectations_version": None,
        }
        self._rows_in = 0
        self._rows_valid = 0
        self._rows_quarantined = 0
        self._quarantine_records = 0
        self._chunks = 0
        self._gx_seconds = 0.0
        self._seconds = 0.0
        self._started = False
        self._finished = False

    def __iter__(self) -> Iterator[BatchResult]:
        if self._started:
            raise RuntimeError("a ValidationRun can be iterated only once")
        self._started = True
        return self._run()

    def _run(self) -> Iterator[BatchResult]:
        definition = _batch_definition(self.entity) if self._sql is None else None
        for table in _rechunk(self._batches, self._batch_rows):
            # Time only our own work: the consumer's writes between chunks are not validation.
            chunk_started = time.perf_counter()
            result = self._validate_chunk(definition, table)
            self._seconds += time.perf_counter() - chunk_started
            yield result
        self._finished = True
        log.info(
            "quality %s: %d rows in, %d valid, %d quarantined, success=%s",
            self.entity,
            self._rows_in,
            self._rows_valid,
            self._rows_quarantined,
            self.summary.success,
        )

    @property
    def summary(self) -> ValidationSummary:
        """Totals of the run.

        Returns:
            The summary.

        Raises:
            RuntimeError: The run has not been iterated to the end.
        """
        if not self._finished:
            raise RuntimeError("iterate the ValidationRun to the end before reading its summary")
        gx_stats = dict(self._gx_stats)
        evaluated = gx_stats["evaluated_expectations"]
        gx_stats["success_percent"] = (
            round(100.0 * gx_stats["successful_expectations"] / evaluated, 4) if evaluated else 100.0
        )
        return ValidationSummary(
            entity=self.entity,
            suite=self._suite.name,
            rows_in=self._rows_in,
            rows_valid=self._rows_valid,
            rows_quarantined=self._rows_quarantined,
            quarantine_records=self._quarantine_records,
            batches=self._chunks,
            rules=self._stats,
            gx_statistics=gx_stats,
            seconds=self._seconds,
            gx_seconds=self._gx_seconds,
        )

    # -- one chunk ----------------------------------------------------------------------------------

    def _typed_column(self, table: pa.Table, name: str) -> pa.ChunkedArray:
        if name not in table.column_names:
            raise QualityError(
                f"{self.entity} batch has no column {name!r}, which the quality rules read; "
                f"batch columns: {table.column_names}"
            )
        column = table.column(name)
        expected = self._schema.field(name).type if name in self._schema.names else None
        if expected is None or column.type == expected:
            return column
        try:
            return column.cast(expected)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise QualityError(
                f"{self.entity} column {name!r} is {column.type}, canonical type is {expected}: {exc}"
            ) from exc

    def _derive(self, table: pa.Table) -> dict[str, pa.ChunkedArray]:
        return {
            spec.name: spec.derive(table, functools.partial(self._typed_column, table))
            for spec in self._derived
        }

    def _frame_arrays(
        self, table: pa.Table, derived: dict[str, pa.ChunkedArray]
    ) -> dict[str, pa.ChunkedArray]:
        arrays: dict[str, pa.ChunkedArray] = {}
        for name in self._frame_columns:
            column = derived[name] if name in derived else self._typed_column(table, name)
            if pa.types.is_decimal(column.type):
                # GX compares numbers in pandas; Decimal objects would be an object column, ~50x slower.
                column = column.cast(pa.float64())
            arrays[name] = column
        return arrays

    def _frame(self, table: pa.Table, derived: dict[str, pa.ChunkedArray]) -> pd.DataFrame:
        # date_as_object=False: datetime64 columns compare vectorised (object dates go row by row).
        frame = pa.table(self._frame_arrays(table, derived)).to_pandas(date_as_object=False)
        frame.index = pd.RangeIndex(table.num_rows, name=ROW_INDEX)
        return frame

    def _validate_chunk(self, definition: BatchDefinition[Any] | None, table: pa.Table) -> BatchResult:
        rows = table.num_rows
        offset = self._rows_in
        for name in self._input_columns:
            self._typed_column(table, name)  # fail early, naming the column, before GX does
        derived = self._derive(table)
        gx_started = time.perf_counter()
        if definition is None:
            outcome, unexpected_rows = self._validate_sql(table, derived)
        else:
            outcome, unexpected_rows = self._validate_gx(definition, table, derived)
        self._gx_seconds += time.perf_counter() - gx_started

        failed = np.zeros(rows, dtype=bool)
        pieces: list[pa.RecordBatch] = []
        row_json: dict[int, str] = {}
        for rule_name, expectation_result in self._results_by_rule(outcome.results):
            rule = self._rules[rule_name]
            self._raise_on_exception(rule, expectation_result.exception_info)
            details = expectation_result.result
            unexpected = int(details.get("unexpected_count") or 0)
            positions = unexpected_rows[rule_name]
            if len(positions) != unexpected:
                raise QualityError(
                    f"rule {rule_name}: GX reported {unexpected} unexpected rows but returned "
                    f"{len(positions)} row positions; refusing to pass rows unchecked"
                )
            stats = self._stats[rule_name]
            stats.evaluated += int(details.get("element_count") or 0) - int(details.get("missing_count") or 0)
            stats.unexpected += unexpected
            if not expectation_result.success:
                stats.gx_failed_batches += 1
            if unexpected and rule.severity == "error":
                failed[positions] = True
                pieces.append(self._quarantine_rows(table, derived, rule, positions, offset, row_json))

        statistics = outcome.statistics
        for key in ("evaluated_expectations", "successful_expectations", "unsuccessful_expectations"):
            self._gx_stats[key] += int(statistics.get(key) or 0)
        if not outcome.success:
            self._gx_stats["batches_failed"] += 1
        self._gx_stats["great_expectations_version"] = outcome.meta.get("great_expectations_version")

        quarantined = int(failed.sum())
        valid = table.filter(pa.array(~failed)) if quarantined else table
        quarantine = pa.concat_batches(pieces) if pieces else _empty_batch(QUARANTINE)
        self._rows_in += rows
        self._rows_valid += rows - quarantined
        self._rows_quarantined += quarantined
        self._quarantine_records += quarantine.num_rows
        self._chunks += 1
        return BatchResult(
            valid=_as_batch(valid),
            quarantine=quarantine,
            rows_in=rows,
            rows_quarantined=quarantined,
            gx_success=bool(outcome.success),
        )

    def _validate_gx(
        self, definition: BatchDefinition[Any], table: pa.Table, derived: dict[str, pa.ChunkedArray]
    ) -> tuple[Any, dict[str, np.ndarray]]:
        """GX validates the chunk as a pandas DataFrame (a suite with a rule SQL cannot decide)."""
        frame = self._frame(table, derived)
        result_format = {
            "result_format": "COMPLETE",
            "unexpected_index_column_names": [ROW_INDEX],
            "exclude_unexpected_values": True,
            "return_unexpected_index_query": False,
            "partial_unexpected_count": 0,
        }
        with _GxRuntime.lock:  # GX makes no thread-safety promise for a shared context
            batch = definition.get_batch(batch_parameters={"dataframe": frame})
            outcome = batch.validate(self._suite, result_format=result_format)
        del frame, batch
        positions = {
            str(r.expectation_config.meta[RULE_META_KEY]): self._positions(r.result)
            for r in outcome.results
            if r.expectation_config is not None and RULE_META_KEY in (r.expectation_config.meta or {})
        }
        return outcome, positions

    def _validate_sql(
        self, table: pa.Table, derived: dict[str, pa.ChunkedArray]
    ) -> tuple[Any, dict[str, np.ndarray]]:
        """The suite's rules as DuckDB SQL over the chunk's Arrow columns; GX's results from the counts.

        Each rule counts the rows GX's pandas engine would count (its domain, the checked rows, the
        failing rows) and lists the failing row positions; the verdicts are GX's (``mostly`` over the
        checked rows) and come back as GX ``ExpectationValidationResult`` objects in an
        ``ExpectationSuiteValidationResult``, as a GX validation returns them.
        """
        import great_expectations as gx
        from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
        from great_expectations.validator.validation_statistics import calc_validation_statistics

        assert self._sql is not None
        arrays: dict[str, pa.ChunkedArray | pa.Array] = dict(self._frame_arrays(table, derived))
        for compiled in self._sql:
            if compiled.regex is not None and compiled.match_column is not None:
                arrays[compiled.match_column] = _regex_search(
                    arrays[self._rules[compiled.rule].column], compiled.regex, compiled.regex_re2
                )
        arrays[ROW_INDEX] = pa.array(np.arange(table.num_rows, dtype=np.int64))
        columns = []
        counts = []
        for i, compiled in enumerate(self._sql):
            columns.append(
                f"coalesce({compiled.domain}, false) AS d{i}, coalesce({compiled.evaluated}, false) AS e{i}, "
                f"coalesce({compiled.unexpected}, false) AS u{i}"
            )
            counts.append(
                f"count_if(d{i}), count_if(e{i}), count_if(u{i}), "
                f"coalesce(list({ROW_INDEX} ORDER BY {ROW_INDEX}) FILTER (WHERE u{i}), [])"
            )
        rows = pa.table(arrays)
        with reader() as con:
            try:
                con.register(RULE_ROWS, rows)
                ((*values,),) = con.execute(
                    f"SELECT {', '.join(counts)} FROM (SELECT {ROW_INDEX}, {', '.join(columns)} FROM {RULE_ROWS})"
                ).fetchall()
            except duckdb.Error as exc:
                raise QualityError(f"{self.entity}: the rules' SQL could not be evaluated: {exc}") from exc
        results = []
        positions: dict[str, np.ndarray] = {}
        for i, compiled in enumerate(self._sql):
            element, checked, unexpected, failing = values[4 * i : 4 * i + 4]
            rule = self._rules[compiled.rule]
            # GX: vacuously true without rows to check, else the share passing must reach mostly.
            success = not element or not checked or (checked - unexpected) / checked >= rule.mostly
            result: dict[str, Any] = {"element_count": element, "unexpected_count": unexpected}
            if compiled.reports_missing:
                result["missing_count"] = element - checked
            results.append(
                ExpectationValidationResult(
                    success=success, expectation_config=self._configuration(compiled.rule), result=result
                )
            )
            positions[compiled.rule] = np.asarray(failing, dtype=np.int64)
        statistics = calc_validation_statistics(results)
        outcome = ExpectationSuiteValidationResult(
            success=statistics.success,
            results=results,
            suite_name=self._suite.name,
            statistics={
                "evaluated_expectations": statistics.evaluated_expectations,
                "successful_expectations": statistics.successful_expectations,
                "unsuccessful_expectations": statistics.unsuccessful_expectations,
                "success_percent": statistics.success_percent,
            },
            meta={"great_expectations_version": gx.__version__},
        )
        return outcome, positions

    def _configuration(self, rule_name: str) -> Any:
        if not self._configurations:
            for expectation in self._suite.expectations:
                configuration = expectation.configuration
                self._configurations[str((configuration.meta or {})[RULE_META_KEY])] = configuration
        return self._configurations[rule_name]

    def _results_by_rule(self, results: Iterable[Any]) -> list[tuple[str, Any]]:
        """GX results keyed by rule name, in rule declaration order (GX does not keep suite order)."""
        by_rule: dict[str, Any] = {}
        for expectation_result in results:
            config = expectation_result.expectation_config
            if config is None or RULE_META_KEY not in (config.meta or {}):
                raise QualityError(f"GX returned a result without the {RULE_META_KEY!r} meta of a rule")
            by_rule[config.meta[RULE_META_KEY]] = expectation_result
        missing = sorted(set(self._rules) - set(by_rule))
        if missing:
            raise QualityError(f"GX returned no result for rules {missing}")
        return [(name, by_rule[name]) for name in self._rules]

    @staticmethod
    def _raise_on_exception(rule: Rule, info: Any) -> None:
        # GX catches exceptions per expectation and marks it failed; that is a broken rule, not bad
        # data, and must not silently quarantine nothing.
        entries = (
            [info] if isinstance(info, dict) and "raised_exception" in info else list((info or {}).values())
        )
        for entry in entries:
            if isinstance(entry, dict) and entry.get("raised_exception"):
                raise QualityError(
                    f"rule {rule.name} could not be evaluated by GX: {entry.get('exception_message')}"
                )

    @staticmethod
    def _positions(details: dict[str, Any]) -> np.ndarray:
        index_list = details.get("unexpected_index_list") or []
        positions: list[int] = []
        for entry in index_list:
            if isinstance(entry, dict):
                positions.extend(int(p) for p in entry.get(ROW_INDEX, []))
            else:
                positions.append(int(entry))
        return np.asarray(positions, dtype=np.int64)

    def _quarantine_rows(
        self,
        table: pa.Table,
        derived: dict[str, pa.ChunkedArray],
        rule: Rule,
        positions: np.ndarray,
        offset: int,
        row_json: dict[int, str],
    ) -> pa.RecordBatch:
        take = pa.array(positions)
        count = len(positions)

        def values(name: str) -> list[Any]:
            if name in derived:
                taken: list[Any] = derived[name].take(take).to_pylist()
                if any(isinstance(spec, RawValue) and spec.name == name for spec in self._derived):
                    return [None if v is None else _unescape_json_string(v) for v in taken]
                return taken
            if name in table.column_names:
                column: list[Any] = table.column(name).take(take).to_pylist()
                return column
            return [None] * count

        record_ids = values(self.key_column)
        sources = [self.source] * count if self.source else values("source")
        for i, (record_id, source) in enumerate(zip(record_ids, sources, strict=True)):
            if not source:
                sources[i] = record_id.split(":", 1)[0] if record_id and ":" in record_id else "unknown"
            if record_id is None:
                # No id to point at: name the row by its position in the run instead.
                record_ids[i] = f"{self.entity}#row{offset + int(positions[i])}"

        raw = values(RAW_COLUMN) if RAW_COLUMN in table.column_names else [None] * count
        missing = [
            int(p) for p, r in zip(positions, raw, strict=True) if r is None and int(p) not in row_json
        ]
        if missing:
            canonical = [c for c in table.column_names if c != RAW_COLUMN]
            rows = table.select(canonical).take(pa.array(missing)).to_pylist()
            for position, row in zip(missing, rows, strict=True):
                row_json[position] = json.dumps(row, default=_json_default, ensure_ascii=False)
        records = [r if r is not None else row_json[int(p)] for p, r in zip(positions, raw, strict=True)]

        constants: dict[str, Any] = {
            **rule.resolved_kwargs(),
            "column": rule.column,
            "rule": rule.name,
            "entity": self.entity,
        }
        fields = self._templates[rule.name]
        rendered: dict[str, list[str]] = {}
        for name in fields:
            if name == "value":
                rendered[name] = [_render(v) for v in values(rule.column)]
            elif name in constants and name not in table.column_names and name not in derived:
                rendered[name] = [_render(constants[name])] * count
            else:
                rendered[name] = [_render(v) for v in values(name)]
        reasons = [rule.reason.format_map({name: rendered[name][i] for name in fields}) for i in range(count)]

        return pa.RecordBatch.from_arrays(
            [
                pa.array(sources, pa.string()),
                pa.array([self.entity] * count, pa.string()),
                pa.array(record_ids, pa.string()),
                pa.array(records, pa.string()),
                pa.array([rule.name] * count, pa.string()),
                pa.array(reasons, pa.string()),
            ],
            schema=QUARANTINE,
        )


def validate_batches(
    *,
    entity: str,
    batches: Iterable[pa.RecordBatch | pa.Table],
    key_column: str = "record_id",
    rules: RuleSet | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    source: str | None = None,
) -> ValidationRun:
    """Validate canonical rows of one entity and split them into valid and quarantined rows.

    Nothing happens until the returned run is iterated; it yields one :class:`BatchResult` per chunk
    of about ``batch_rows`` rows (small input batches are merged, big ones split), and afterwards
    ``run.summary`` holds the totals::

        run = validate_batches(entity="account", batches=pq.ParquetFile(path).iter_batches())
        for result in run:
            valid_sink.write(result.valid)
            quarantine_sink.write(result.quarantine)
        if not run.summary.success:
            raise Failure(...)  # the feed is broken: stop the load

    Args:
        entity: Canonical entity name (a key of ``canonical.ENTITIES``).
        batches: Canonical rows (typed as ``canonical.py`` says) plus, optionally, a ``_raw`` column
            with the source row as JSON; all batches share one schema.
        key_column: Column naming a row in quarantine (``record_id``).
        rules: Rule set; ``None`` for the packaged ``rules.yaml``.
        batch_rows: Rows per GX validation; memory use is proportional to it.
        source: Value of the quarantine ``source`` column; ``None`` to take each row's ``source``
            column (falling back to the ``record_id`` prefix).

    Returns:
        The run: iterate it once, then read ``summary``.

    Raises:
        QualityError: Unknown entity (at once); while iterating, a column the rules need is missing
            or cannot be cast to its canonical type, or GX could not evaluate a rule.
    """
    rule_set = rules if rules is not None else load_rules()
    return ValidationRun(
        entity=entity,
        batches=batches,
        key_column=key_column,
        rules=rule_set,
        batch_rows=batch_rows,
        source=source,
    )


@dataclass(frozen=True)
class TableValidation:
    """:func:`validate_table`'s result: all valid rows, all quarantine rows and the summary."""

    valid: pa.Table
    quarantine: pa.Table
    summary: ValidationSummary
    batch_results: list[BatchResult] = field(default_factory=list, repr=False)


def validate_table(
    *,
    entity: str,
    table: pa.Table,
    key_column: str = "record_id",
    rules: RuleSet | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    source: str | None = None,
) -> TableValidation:
    """Validate an in-memory table in one call (small data, tests, notebooks).

    Args:
        entity: Canonical entity name.
        table: Canonical rows (plus optional ``_raw``).
        key_column: Column naming a row in quarantine.
        rules: Rule set; ``None`` for the packaged ``rules.yaml``.
        batch_rows: Rows per GX validation.
        source: Quarantine ``source`` override, as in :func:`validate_batches`.

    Returns:
        Valid rows (input schema), quarantine rows (``QUARANTINE`` schema) and the summary.
    """
    run = validate_batches(
        entity=entity,
        batches=[table],
        key_column=key_column,
        rules=rules,
        batch_rows=batch_rows,
        source=source,
    )
    results = list(run)
    valid = pa.Table.from_batches([r.valid for r in results], schema=table.schema)
    quarantine = pa.Table.from_batches([r.quarantine for r in results], schema=QUARANTINE)
    return TableValidation(valid=valid, quarantine=quarantine, summary=run.summary, batch_results=results)
