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
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import polars as pl

from dpsynth.errors import InternalError, OutputValidationError
from dpsynth.rules import rule_frame
from dpsynth.schema import Column, Rule, Schema

# Must be set before great_expectations is imported: no usage statistics leave the host.
os.environ["GX_ANALYTICS_ENABLED"] = "false"

with warnings.catch_warnings():
    # great-expectations 1.x imports the deprecated ``sre_constants`` module and
    # emits DeprecationWarnings at import time; they are not ours to fix and would
    # break callers that run with warnings as errors.
    warnings.simplefilter("ignore")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.metadata_types import FailureSeverity

__all__ = [
    "ValidationOutcome",
    "build_suite",
    "raise_for_outcome",
    "validate_synthetic",
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
#: Columns validated together in one batch (see :func:`_partition`).
_CHUNK_COLUMNS = 4


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


def _severity(rule: Rule) -> FailureSeverity:
    return FailureSeverity.WARNING if rule.severity == "warning" else FailureSeverity.CRITICAL


def _rule_meta(rule: Rule) -> dict[str, Any]:
    return {
        "dpsynth_rule": rule.name,
        "require": rule.require,
        "columns": list(rule.columns),
        "description": rule.description,
    }


def _column_expectations(col: Column) -> list[Any]:
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
    return [gxe.ExpectColumnValuesToBeInSet(
        column=RULE_COLUMN.format(rule.name), value_set=[True], severity=_severity(rule),
        meta=_rule_meta(rule))]


def build_suite(schema: Schema, min_rows: int, max_rows: int) -> gx.ExpectationSuite:
    """The expectation suite a synthetic table of ``schema`` must pass.

    ``min_rows``/``max_rows`` bound the row count (the requested synthetic size).
    Identifier and text columns are absent because the table must match the
    released columns exactly, in schema order.
    """
    if not 0 <= min_rows <= max_rows:
        raise InternalError(f"row range ({min_rows}, {max_rows}) must satisfy 0 <= min <= max")
    released = [c.name for c in schema.released_columns]
    expectations: list[Any] = [
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=released),
        gxe.ExpectTableRowCountToBeBetween(min_value=int(min_rows), max_value=int(max_rows)),
    ]
    for col in schema.released_columns:
        expectations.extend(_column_expectations(col))
    for rule in schema.rules:
        expectations.extend(_rule_expectations(rule))
    # Passing the expectations to the constructor keeps the suite free of any
    # data context (add_expectation would need one to persist into).
    return gx.ExpectationSuite(
        name=f"dpsynth.{schema.name}",
        expectations=expectations,
        meta={
            "dpsynth_schema": schema.name,
            "dpsynth_schema_version": schema.version,
            "dpsynth_schema_sha256": schema.sha256,
            "withheld_columns": [c.name for c in schema.columns if not c.measured],
        },
    )


def _to_pandas(df: pl.DataFrame, *, compact: bool = False) -> pd.DataFrame:
    """Convert with predictable dtypes: nullable Int64/boolean/string,
    float64 (null -> NaN), datetime64[us] for dates and datetimes.

    Text goes through a categorical so that every cell refers to one shared
    string object per distinct value (8 bytes a cell, not a new Python string);
    with ``compact`` it stays categorical (for table-level expectations, which
    read only the column names and the row count)."""
    data: dict[str, Any] = {}
    for s in df.iter_columns():
        dtype = s.dtype
        mask = s.is_null().to_numpy()
        if dtype.is_integer():
            values = s.fill_null(0).cast(pl.Int64).to_numpy()
            data[s.name] = pd.arrays.IntegerArray(values, mask)
        elif dtype == pl.Boolean:
            values = s.fill_null(False).to_numpy().astype(bool)
            data[s.name] = pd.arrays.BooleanArray(values, mask)
        elif dtype.is_float():
            data[s.name] = s.cast(pl.Float64).to_numpy()
        elif dtype == pl.Date or isinstance(dtype, pl.Datetime):
            arr = s.cast(pl.Datetime("us")).to_numpy()
            data[s.name] = pd.Series(arr.astype("datetime64[us]"))
        elif dtype == pl.String or isinstance(dtype, pl.Enum | pl.Categorical):
            cat = (s if dtype != pl.String else s.cast(pl.Categorical)).to_pandas()
            data[s.name] = cat if compact else cat.astype(pd.StringDtype("python"))
        else:
            data[s.name] = s.to_pandas()
    return pd.DataFrame(data, index=pd.RangeIndex(df.height))


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


def _partition(suite_json: dict[str, Any], present: list[str],
               available: list[str]) -> list[tuple[list[int], list[str]]]:
    """Split the suite into groups of expectations and the (few) columns each group reads;
    the first group holds the table-level expectations (column list, row count), which
    see the table's ``present`` columns; the others read from ``available`` (the
    table and the rules' outcome columns).

    great-expectations' pandas engine copies and filters the whole frame for every
    metric, so validating narrow frames is several times faster on wide tables, and
    only a few columns are ever converted to pandas at a time.
    """
    groups: dict[tuple[str, ...], list[int]] = {}
    table_level: list[int] = []
    for i, cfg in enumerate(suite_json["expectations"]):
        cols = _columns_of(cfg)
        if cols is None:
            table_level.append(i)
            continue
        key = tuple(sorted(cols))
        groups.setdefault(key, []).append(i)
    out: list[tuple[list[int], list[str]]] = [(table_level, list(present))]
    # merge single-column groups into chunks of a few columns
    chunk_idx: list[int] = []
    chunk_cols: list[str] = []
    for key, idx in groups.items():
        present_cols = [c for c in available if c in key]
        if len(key) > 1:
            out.append((idx, present_cols))
            continue
        chunk_idx.extend(idx)
        chunk_cols.extend(c for c in present_cols if c not in chunk_cols)
        if len(chunk_cols) >= _CHUNK_COLUMNS:
            out.append((chunk_idx, chunk_cols))
            chunk_idx, chunk_cols = [], []
    if chunk_idx:
        out.append((chunk_idx, chunk_cols))
    return out


def validate_synthetic(
    df: pl.DataFrame, schema: Schema, min_rows: int, max_rows: int
) -> ValidationOutcome:
    """Run the schema's suite on the synthetic table ``df`` (never the private input).

    The suite is evaluated in parts, each on a frame holding only the columns its
    expectations read; the results are merged back in suite order.
    """
    suite = build_suite(schema, min_rows, max_rows)
    present = list(df.columns)
    if schema.rules:  # each rule's outcome, as a column great-expectations checks
        outcomes = rule_frame(df).select(
            [r.expr.alias(RULE_COLUMN.format(r.name)) for r in schema.rules])
        full = df.hstack(outcomes.get_columns())
    else:
        full = df
    with warnings.catch_warnings():
        # great-expectations' internals raise pandas/pydantic deprecation warnings;
        # the outcome below is what we report.
        warnings.simplefilter("ignore")
        suite_json = suite.to_json_dict()
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False)
        source = context.data_sources.add_pandas("dpsynth")
        asset = source.add_dataframe_asset("synthetic")
        batch_def = asset.add_batch_definition_whole_dataframe("synthetic")
        merged: dict[int, dict[str, Any]] = {}
        run_meta: dict[str, Any] = {}
        for n, (idx, cols) in enumerate(_partition(suite_json, present, list(full.columns))):
            if not idx:
                continue
            part = gx.ExpectationSuite(
                name=suite.name, expectations=[suite.expectations[i] for i in idx])
            frame = _to_pandas(full.select(cols), compact=n == 0)
            batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
            result = batch.validate(part, result_format="SUMMARY").to_json_dict()
            run_meta = run_meta or dict(result.get("meta") or {})
            for i, r in zip(idx, result.get("results", []), strict=True):
                merged[i] = r

    results = [merged[i] for i in sorted(merged)]
    n_ok = sum(1 for r in results if r.get("success"))
    results_json: dict[str, Any] = {
        "success": n_ok == len(results),
        "suite_name": suite.name,
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
