"""The great-expectations suite for the *synthetic* table, built from the public schema.

This module owns the output check of a release (docs/architecture.md, after the privacy
boundary): :func:`build_suite` turns a :class:`~dpsynth.schema.Schema` into an
expectation suite (exactly the released columns, in order; their types,
category sets, bounds and date ranges; nullability; the row count within the
requested size; the schema's cross-column rules), and :func:`validate_synthetic`
runs it on a synthetic table. :func:`raise_for_outcome` turns a failed outcome into
:class:`~dpsynth.errors.OutputValidationError` (exit 5).

Severity: a rule declared ``severity: warning`` is evaluated and reported (in
``ValidationOutcome.warnings`` and the results JSON) but never fails the suite;
every other expectation is ``critical``.

Rules must not do: this module only ever sees the synthetic table and the
schema. It must never be given the private input table (input checks live in
the reader), because great-expectations copies offending values into its
results (``partial_unexpected_list``) and those results go in the public
bundle. It is the only module that imports ``great_expectations``; it keeps it
quiet (no analytics, no progress bars, no warnings leaking into the caller).
great-expectations and pandas are imported when validation first runs, not when this
module loads (seconds of start-up, issue 15): importing :class:`ValidationOutcome` or
:func:`raise_for_outcome` costs nothing. Where a release runs validation (a worker
process, usually) is :mod:`dpsynth.validation_worker`'s business.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import polars as pl

from dpsynth.errors import InternalError, OutputValidationError
from dpsynth.rules import rule_frame
from dpsynth.schema import Column, Rule, Schema

if TYPE_CHECKING:
    import great_expectations as gx
    import pandas as pd

# Must be set before great_expectations is imported: no usage statistics leave the host.
os.environ["GX_ANALYTICS_ENABLED"] = "false"


class _GX(NamedTuple):
    """The parts of great-expectations this module uses."""

    gx: Any
    gxe: Any
    ProgressBarsConfig: Any
    FailureSeverity: Any


@functools.cache
def _gx() -> _GX:
    """great-expectations, imported on first use, not when this module loads.

    Its import is most of a release's start-up (about 5 of the 7 seconds of
    ``import dpsynth.pipeline`` on 2 cores, issue 15), and every command but a release
    that validates does without it; a release imports it in its validation worker
    (:mod:`dpsynth.validation_worker`) while it reads and fits."""
    with warnings.catch_warnings():
        # great-expectations 1.x imports the deprecated ``sre_constants`` module and
        # emits DeprecationWarnings at import time; they are not ours to fix and would
        # break callers that run with warnings as errors.
        warnings.simplefilter("ignore")
        import great_expectations as gx
        import great_expectations.expectations as gxe
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.expectations.metadata_types import FailureSeverity
    return _GX(gx, gxe, ProgressBarsConfig, FailureSeverity)

__all__ = [
    "ValidationOutcome",
    "build_suite",
    "raise_for_outcome",
    "validate_synthetic",
    "warm_up",
]

#: pandas dtype names accepted for each column kind (after :func:`_to_pandas`).
_TYPE_LISTS: dict[str, list[str]] = {
    "categorical": ["StringDtype"],
    "code": ["StringDtype"],
    "integer": ["Int64Dtype", "int64"],
    "float": ["float64"],
    "boolean": ["BooleanDtype", "bool"],
    "date": ["datetime64", "datetime64[us]", "datetime64[ns]"],
    "datetime": ["datetime64", "datetime64[us]", "datetime64[ns]"],
    "derived": ["float64"],
}
#: The frame column holding rule ``name``'s outcome per row (true: satisfied).
RULE_COLUMN = "rule:{}"
#: Columns validated together in one batch of value expectations (:func:`_value_batches`).
#: Wider batches are slower, not faster: great-expectations' pandas engine copies the whole
#: frame for every metric. CPU seconds on the NIST excerpt's columns (issue 15), 4 / 8 / 16 /
#: 40 columns a batch: 1.81 / 1.84 / 1.97 / 2.36 at 27k rows, 4.4 / 4.8 / 5.3 / 6.6 at 500k.
_BATCH_COLUMNS = 4


@dataclass(frozen=True)
class ValidationOutcome:
    """What running the suite on a synthetic table found.

    ``success`` counts critical (error-severity) expectations only; ``failed``
    and ``warnings`` name the failed expectations and their columns (never cell
    values); ``suite_json`` and ``results_json`` go into the bundle's
    ``validation/`` directory.
    """

    success: bool
    suite_json: dict[str, Any]
    results_json: dict[str, Any]
    failed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _severity(rule: Rule) -> Any:
    severity = _gx().FailureSeverity
    return severity.WARNING if rule.severity == "warning" else severity.CRITICAL


def _rule_meta(rule: Rule) -> dict[str, Any]:
    return {
        "dpsynth_rule": rule.name,
        "require": rule.require,
        "columns": list(rule.columns),
        "description": rule.description,
    }


def _column_expectations(col: Column) -> list[Any]:
    gxe = _gx().gxe
    name = col.name
    out: list[Any] = [
        gxe.ExpectColumnToExist(column=name),
        gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=_TYPE_LISTS[col.kind]),
    ]
    if col.kind == "categorical":
        out.append(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(col.categories)))
    elif col.kind == "code":
        out.append(gxe.ExpectColumnValuesToBeInSet(
            column=name, value_set=[g.label for g in col.groups]))
    elif col.kind == "derived":
        if col.bounds is not None:
            out.append(gxe.ExpectColumnValuesToBeBetween(
                column=name, min_value=float(col.bounds[0]), max_value=float(col.bounds[1])))
    elif col.kind in ("integer", "float"):
        if col.bounds is None:  # pragma: no cover - the schema loader guarantees bounds
            raise InternalError(f"column {name!r} has no bounds")
        lo, hi = col.bounds
        if col.kind == "integer":
            out.append(gxe.ExpectColumnValuesToBeBetween(
                column=name, min_value=int(lo), max_value=int(hi)))
        else:
            out.append(gxe.ExpectColumnValuesToBeBetween(
                column=name, min_value=float(lo), max_value=float(hi)))
    elif col.kind in ("date", "datetime"):
        if col.date_bounds is None:  # pragma: no cover
            raise InternalError(f"column {name!r} has no date bounds")
        b0, b1 = col.date_bounds
        if col.kind == "date":
            # a date column holds whole days: the upper bound's day is allowed in full
            b0 = b0.replace(hour=0, minute=0, second=0, microsecond=0)
            b1 = b1.replace(hour=0, minute=0, second=0, microsecond=0)
        out.append(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=b0, max_value=b1))
    if not col.nullable:
        out.append(gxe.ExpectColumnValuesToNotBeNull(column=name))
    return out


def _rule_expectations(rule: Rule) -> list[Any]:
    """A rule is checked on its outcome column (:data:`RULE_COLUMN`, computed by
    polars from the rule's SQL): every value must be true (NULL counts as true)."""
    return [_gx().gxe.ExpectColumnValuesToBeInSet(
        column=RULE_COLUMN.format(rule.name), value_set=[True], severity=_severity(rule),
        meta=_rule_meta(rule))]


@dataclass(frozen=True)
class _Compiled:
    """The schema's part of the suite, built once per schema (:func:`_compiled`): the column
    and rule expectations, their JSON, and how they are split into batches."""

    expectations: tuple[Any, ...]
    configs: tuple[dict[str, Any], ...]
    type_checks: tuple[int, ...]  # indices of the column type expectations
    groups: tuple[tuple[tuple[int, ...], str], ...]  # (indices, the column they read)
    columns: dict[str, Column]  # the released columns by name


#: Compiled suites by schema text hash (a process validates few schemas; bounded anyway).
_COMPILED: dict[str, _Compiled] = {}
_COMPILED_MAX = 16


def _compiled(schema: Schema) -> _Compiled:
    """The schema's expectations, compiled once per schema (not once per release)."""
    key = schema.sha256
    hit = _COMPILED.get(key)
    if hit is not None:
        return hit
    expectations: list[Any] = []
    for col in schema.released_columns:
        expectations.extend(_column_expectations(col))
    for rule in schema.rules:
        expectations.extend(_rule_expectations(rule))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        configs: list[dict[str, Any]] = _gx().gx.ExpectationSuite(
            name="parts", expectations=expectations).to_json_dict()["expectations"]
    type_checks = tuple(i for i, c in enumerate(configs)
                        if c["type"] == "expect_column_values_to_be_in_type_list")
    by_column: dict[str, list[int]] = {}
    for i, cfg in enumerate(configs):
        if i in type_checks:
            continue
        column = (cfg.get("kwargs") or {}).get("column")
        if column is None:  # pragma: no cover - every column and rule expectation names one
            raise InternalError("a column expectation names no column")
        by_column.setdefault(str(column), []).append(i)
    out = _Compiled(tuple(expectations), tuple(configs), type_checks,
                    tuple((tuple(v), k) for k, v in by_column.items()),
                    {c.name: c for c in schema.released_columns})
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.pop(next(iter(_COMPILED)))
    _COMPILED[key] = out
    return out


def _suite_meta(schema: Schema) -> dict[str, Any]:
    return {
        "dpsynth_schema": schema.name,
        "dpsynth_schema_version": schema.version,
        "dpsynth_schema_sha256": schema.sha256,
        "withheld_columns": [c.name for c in schema.columns if not c.measured],
    }


def _table_expectations(schema: Schema, min_rows: int, max_rows: int) -> list[Any]:
    if not 0 <= min_rows <= max_rows:
        raise InternalError(f"row range ({min_rows}, {max_rows}) must satisfy 0 <= min <= max")
    gxe = _gx().gxe
    return [
        gxe.ExpectTableColumnsToMatchOrderedList(
            column_list=[c.name for c in schema.released_columns]),
        gxe.ExpectTableRowCountToBeBetween(min_value=int(min_rows), max_value=int(max_rows)),
    ]


def build_suite(schema: Schema, min_rows: int, max_rows: int) -> gx.ExpectationSuite:
    """The expectation suite a synthetic table of ``schema`` must pass.

    ``min_rows``/``max_rows`` bound the row count (the requested synthetic size).
    Identifier and text columns are absent because the table must match the
    released columns exactly, in schema order. The column and rule expectations are
    built once per schema and shared by every suite of that schema.
    """
    table = _table_expectations(schema, min_rows, max_rows)
    # Passing the expectations to the constructor keeps the suite free of any
    # data context (add_expectation would need one to persist into).
    suite: gx.ExpectationSuite = _gx().gx.ExpectationSuite(
        name=f"dpsynth.{schema.name}", expectations=[*table, *_compiled(schema).expectations],
        meta=_suite_meta(schema))
    return suite


def _suite_json(schema: Schema, table: list[Any]) -> dict[str, Any]:
    """``build_suite(...).to_json_dict()``, with the schema's part serialised once."""
    head: dict[str, Any] = dict(_gx().gx.ExpectationSuite(
        name=f"dpsynth.{schema.name}", expectations=table, meta=_suite_meta(schema)).to_json_dict())
    head["expectations"] = [*head["expectations"], *copy.deepcopy(_compiled(schema).configs)]
    return head


def _to_pandas(df: pl.DataFrame, *, compact: bool = False) -> pd.DataFrame:
    """Convert with predictable dtypes: nullable Int64/boolean/string,
    float64 (null -> NaN), datetime64[us] for dates and datetimes.

    Text goes through a categorical so that every cell refers to one shared
    string object per distinct value (8 bytes a cell, not a new Python string);
    with ``compact`` it stays categorical (for table-level expectations, which
    read only the column names and the row count)."""
    import pandas as pd  # only where validation runs (see _gx)

    data: dict[str, Any] = {}
    for s in df.iter_columns():
        data[s.name] = _series_to_pandas(s, compact=compact)
    return pd.DataFrame(data, index=pd.RangeIndex(df.height))


def _series_to_pandas(s: pl.Series, *, compact: bool = False) -> Any:
    import pandas as pd

    dtype = s.dtype
    if dtype.is_integer():
        mask = s.is_null().to_numpy()
        values = s.fill_null(0).cast(pl.Int64).to_numpy()
        return pd.arrays.IntegerArray(values, mask)
    if dtype == pl.Boolean:
        mask = s.is_null().to_numpy()
        values = s.fill_null(False).to_numpy().astype(bool)
        return pd.arrays.BooleanArray(values, mask)
    if dtype.is_float():
        return s.cast(pl.Float64).to_numpy()
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        arr = s.cast(pl.Datetime("us")).to_numpy()
        return pd.Series(arr.astype("datetime64[us]"))
    if dtype == pl.String or isinstance(dtype, pl.Enum | pl.Categorical):
        cat = (s if dtype != pl.String else s.cast(pl.Categorical)).to_pandas()
        return cat if compact else cat.astype(pd.StringDtype("python"))
    return s.to_pandas()


#: Dates pandas holds at nanosecond precision (great-expectations compares those
#: vectorised, other datetimes one value at a time in Python); integers float64 holds exactly.
_NS_MIN, _NS_MAX = dt.datetime(1678, 1, 1), dt.datetime(2261, 12, 31)
_EXACT_FLOAT = 2**53


def _is_text(dtype: Any) -> bool:
    return bool(dtype == pl.String or isinstance(dtype, pl.Enum | pl.Categorical))


def _passes(s: pl.Series, col: Column) -> bool:
    """Whether column ``s`` has the type ``col``'s kind asks for and passes every value
    expectation of ``col`` (computed by polars; see :func:`_value_series`)."""
    if not col.nullable and s.null_count():
        return False
    dtype, kind = s.dtype, col.kind
    if kind in ("categorical", "code"):
        allowed = list(col.categories) if kind == "categorical" else [g.label for g in col.groups]
        return _is_text(dtype) and bool(s.drop_nulls().cast(pl.String).is_in(allowed).all())
    if kind == "integer":
        if not dtype.is_integer() or col.bounds is None:
            return False
        lo, hi = s.min(), s.max()
        if lo is None or hi is None:
            return True
        low, high = float(lo), float(hi)  # type: ignore[arg-type]
        return col.bounds[0] <= low and high <= col.bounds[1] and abs(low) < _EXACT_FLOAT \
            and abs(high) < _EXACT_FLOAT
    if kind in ("date", "datetime"):
        if not (dtype == pl.Date or isinstance(dtype, pl.Datetime)) or col.date_bounds is None:
            return False
        us = s.cast(pl.Datetime("us"))
        lo, hi = us.min(), us.max()
        if lo is None:
            return True
        if not (isinstance(lo, dt.datetime) and isinstance(hi, dt.datetime)):
            return False
        b0, b1 = col.date_bounds
        if kind == "date":
            b0 = b0.replace(hour=0, minute=0, second=0, microsecond=0)
            b1 = b1.replace(hour=0, minute=0, second=0, microsecond=0)
        return b0 <= lo and hi <= b1 and lo >= _NS_MIN and hi <= _NS_MAX
    return False


def _value_series(s: pl.Series, col: Column | None) -> Any:
    """``s`` for the value expectations (set, bounds, not null) of ``col``.

    The type expectations read the dtypes :func:`_to_pandas` gives; these read only the
    values. When a column has its kind's type and passes them all (checked here with
    polars), their results are counts that do not depend on how the column is held, so it
    is handed over in the form great-expectations evaluates fastest: integers as numpy
    int64 (float64 with NaN when some are null), compared vectorised instead of one Python
    call per cell; text left categorical (no string per cell); dates at nanosecond
    precision. A column that fails any of them converts exactly as :func:`_to_pandas`
    does, so its unexpected values, counts and messages are the same as before."""
    import pandas as pd

    if col is None or not _passes(s, col):
        return _series_to_pandas(s)
    if col.kind == "integer":
        return s.cast(pl.Float64 if s.has_nulls() else pl.Int64).to_numpy()
    if col.kind in ("categorical", "code"):
        return _series_to_pandas(s, compact=True)
    return pd.Series(s.cast(pl.Datetime("ns")).to_numpy().astype("datetime64[ns]"))


def _describe(result: dict[str, Any]) -> str:
    cfg = result.get("expectation_config") or {}
    kind = str(cfg.get("type", "unknown expectation"))
    kwargs = cfg.get("kwargs") or {}
    meta = cfg.get("meta") or {}
    if meta.get("dpsynth_rule"):
        cols = ", ".join(repr(c) for c in meta.get("columns") or [])
        n_bad = (result.get("result") or {}).get("unexpected_count")
        where = f" in {n_bad} row(s)" if n_bad is not None else ""
        return f"rule {meta['dpsynth_rule']!r} (reads {cols}) is broken{where}"
    text = kind
    if kwargs.get("column") is not None:
        text += f" (column {kwargs['column']!r})"
    if kind == "expect_table_columns_to_match_ordered_list":
        observed = (result.get("result") or {}).get("observed_value") or []
        expected = list(kwargs.get("column_list") or [])
        extra = [c for c in observed if c not in expected]
        missing = [c for c in expected if c not in observed]
        parts = []
        if extra:
            parts.append("unexpected columns " + ", ".join(repr(c) for c in extra))
        if missing:
            parts.append("missing columns " + ", ".join(repr(c) for c in missing))
        if not parts:
            parts.append("columns out of order")
        text += f" ({'; '.join(parts)})"
    if (result.get("exception_info") or {}).get("raised_exception"):
        text += " (could not be evaluated)"
    return text


def _columns_of(config: dict[str, Any]) -> set[str] | None:
    """Columns an expectation reads, or None for a table-level expectation."""
    kwargs = config.get("kwargs") or {}
    if kwargs.get("column") is None:
        return None
    cols = {str(kwargs["column"])}
    meta = config.get("meta") or {}
    cols.update(str(c) for c in meta.get("columns") or [])
    return cols


def _value_batches(comp: _Compiled, available: list[str]) -> list[tuple[list[int], list[str]]]:
    """The value expectations of ``comp`` in batches of whole columns (a column's checks,
    or a rule's check on its outcome column), :data:`_BATCH_COLUMNS` columns a batch; each
    with the columns it reads that ``available`` holds."""
    out: list[tuple[list[int], list[str]]] = []
    chunk_idx: list[int] = []
    chunk_cols: list[str] = []
    for idx, column in comp.groups:
        chunk_idx.extend(idx)
        chunk_cols.extend([column] if column in available else [])
        if len(chunk_cols) >= _BATCH_COLUMNS:
            out.append((chunk_idx, chunk_cols))
            chunk_idx, chunk_cols = [], []
    if chunk_idx:
        out.append((chunk_idx, chunk_cols))
    return out


def _config_key(config: dict[str, Any]) -> str:
    kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
    return json.dumps([config.get("type"), kwargs, config.get("meta") or {}], sort_keys=True,
                      default=str)


def _place(results: list[dict[str, Any]], where: list[int],
           suite_expectations: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each result of one batch at its expectation's position in the suite.

    great-expectations returns a batch's results in suite order, except that an
    expectation whose metrics raised comes first; so results are matched to their
    expectation by configuration, not by position."""
    if len(results) != len(where):
        raise InternalError(f"great-expectations returned {len(results)} results for "
                            f"{len(where)} expectations")
    slots: dict[str, list[int]] = {}
    for i in where:
        slots.setdefault(_config_key(suite_expectations[i]), []).append(i)
    out: dict[int, dict[str, Any]] = {}
    for r in results:
        free = slots.get(_config_key(r.get("expectation_config") or {}))
        if not free:
            raise InternalError("a validation result matches no expectation of its batch")
        out[free.pop(0)] = r
    return out


#: The ephemeral great-expectations context's batch definition, made once per process.
_BATCH_DEFINITION: list[Any] = []


def _batch_definition() -> Any:
    if not _BATCH_DEFINITION:
        ge = _gx()
        context = ge.gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ge.ProgressBarsConfig(
            globally=False, metric_calculations=False)
        source = context.data_sources.add_pandas("dpsynth")
        asset = source.add_dataframe_asset("synthetic")
        _BATCH_DEFINITION.append(asset.add_batch_definition_whole_dataframe("synthetic"))
    return _BATCH_DEFINITION[0]


def warm_up(schema: Schema) -> None:
    """Do now what the first :func:`validate_synthetic` of ``schema`` would do before it
    reads the table: import great-expectations, make its context and compile the
    schema's suite (the validation worker's first step, while the release fits)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as in validate_synthetic
        _batch_definition()
        _compiled(schema)


def validate_synthetic(
    df: pl.DataFrame, schema: Schema, min_rows: int, max_rows: int
) -> ValidationOutcome:
    """Run the schema's suite on the synthetic table ``df`` (never the private input).

    The suite is evaluated in parts, each on a frame holding only what its expectations
    read: the table-level ones (column list, row count) on the whole table with text
    left categorical; the column type checks on the table's dtypes (no rows: they read
    only the dtypes); the value checks in batches of a few columns (:func:`_value_batches`,
    values converted by :func:`_value_series`). The results are merged back in suite
    order, and are the same as validating the whole suite on one frame.
    """
    import pandas as pd

    comp = _compiled(schema)
    table = _table_expectations(schema, min_rows, max_rows)
    present = list(df.columns)
    if schema.rules:  # each rule's outcome, as a column great-expectations checks
        # only the rules' columns become plain text: every text column of a large table
        # as strings took more memory than the rest of the release (issue 15)
        read = list(dict.fromkeys(c for r in schema.rules for c in r.columns))
        outcomes = rule_frame(df.select(read)).select(
            [r.expr.alias(RULE_COLUMN.format(r.name)) for r in schema.rules])
        full = df.hstack(outcomes.get_columns())
    else:
        full = df
    available = list(full.columns)
    type_cols = {next(iter(_columns_of(comp.configs[i]) or ())) for i in comp.type_checks}
    parts: list[tuple[list[Any], list[int], Any]] = [
        (table, list(range(len(table))), lambda: _to_pandas(full.select(present), compact=True)),
        ([comp.expectations[i] for i in comp.type_checks],
         [len(table) + i for i in comp.type_checks],
         lambda: _to_pandas(full.select([c for c in available if c in type_cols]).head(0))),
    ]
    for idx, cols in _value_batches(comp, available):
        parts.append(([comp.expectations[i] for i in idx], [len(table) + i for i in idx],
                      lambda cols=cols: pd.DataFrame(
                          {c: _value_series(full[c], comp.columns.get(c)) for c in cols},
                          index=pd.RangeIndex(full.height))))
    with warnings.catch_warnings():
        # great-expectations' internals raise pandas/pydantic deprecation warnings;
        # the outcome below is what we report.
        warnings.simplefilter("ignore")
        suite_json = _suite_json(schema, table)
        batch_def = _batch_definition()
        suite_class = _gx().gx.ExpectationSuite
        merged: dict[int, dict[str, Any]] = {}
        run_meta: dict[str, Any] = {}
        for expectations, where, frame in parts:
            if not expectations:
                continue
            part = suite_class(name=f"dpsynth.{schema.name}", expectations=expectations)
            batch = batch_def.get_batch(batch_parameters={"dataframe": frame()})
            result = batch.validate(part, result_format="SUMMARY").to_json_dict()
            run_meta = run_meta or dict(result.get("meta") or {})
            merged.update(_place(result.get("results", []), where, suite_json["expectations"]))

    results = [merged[i] for i in sorted(merged)]
    n_ok = sum(1 for r in results if r.get("success"))
    results_json: dict[str, Any] = {
        "success": n_ok == len(results),
        "suite_name": f"dpsynth.{schema.name}",
        "results": results,
        "statistics": {
            "evaluated_expectations": len(results),
            "successful_expectations": n_ok,
            "unsuccessful_expectations": len(results) - n_ok,
            "success_percent": 100.0 * n_ok / len(results) if results else 100.0,
        },
        # no validation_time: the bundle carries no time of day (see dpsynth.bundle)
        "meta": {"active_batch_definition": run_meta.get("active_batch_definition"),
                 "great_expectations_version": run_meta.get("great_expectations_version")},
    }
    failed: list[str] = []
    warned: list[str] = []
    for r in results:
        if r.get("success"):
            continue
        severity = (r.get("expectation_config") or {}).get("severity", "critical")
        (warned if severity in ("warning", "info") else failed).append(_describe(r))
    return ValidationOutcome(
        success=not failed,
        suite_json=dict(suite_json),
        results_json=results_json,
        failed=failed,
        warnings=warned,
    )


def raise_for_outcome(outcome: ValidationOutcome) -> None:
    """Raise :class:`OutputValidationError` (exit 5) when a critical expectation failed."""
    if outcome.success:
        return
    shown = outcome.failed[:5]
    more = f" and {len(outcome.failed) - 5} more" if len(outcome.failed) > 5 else ""
    raise OutputValidationError(
        f"synthetic table failed {len(outcome.failed)} expectation(s): "
        f"{'; '.join(shown)}{more}"
    )
