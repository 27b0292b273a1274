"""``schema check --input``: every problem of the custodian's table, in one run (PRIVATE).

A release stops at the first failed input check (fail closed, nothing measured).
A custodian writing a schema needs the whole list instead: :func:`survey_table`
evaluates every per-row input check (:func:`dpsynth.io.checking.check_exprs`),
every schema rule on the table's values (:func:`dpsynth.domain.value_expr`:
what the synthetic table would hold), and every derived column the table also
holds against its formula, in one streaming pass, and returns each failing one
with its row count and first row.

This is the custodian's own table, shown to the custodian: counts and row
numbers are fine here, cell values still never appear (nor polars' messages,
which may quote one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from dpsynth.domain import value_expr
from dpsynth.input_rules import bad_rows
from dpsynth.io.checking import check_exprs
from dpsynth.io.reading import collect
from dpsynth.rules import derived_expr
from dpsynth.schema import Schema

__all__ = ["Problem", "offending_values", "survey_table"]

_ROW = "__dpsynth_row"


@dataclass(frozen=True)
class Problem:
    """One failed check: ``rows`` rows fail it, the first at data row ``first_row``."""

    column: str | None
    rule: str
    what: str
    rows: int
    first_row: int
    severity: str = "error"
    """``error`` blocks a release (input checks) or breaks an error rule; ``warning``
    is a warning rule the table breaks."""

    def line(self) -> str:
        """As a release reports a failed check (:func:`dpsynth.input_rules.bad_rows`)."""
        tag = "warning: " if self.severity == "warning" else ""
        return tag + bad_rows(self.what, self.rows, self.first_row, column=self.column,
                              rule=self.rule).message

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def survey_table(lf: pl.LazyFrame, schema: Schema, header: list[str], *,
                 parquet: bool = False) -> tuple[int, list[Problem]]:
    """The table's row count and every problem, input checks first (in release
    order), then rules, then derived columns the table holds. ``header`` is the
    table's columns (``parquet``: a read failure is rule ``parquet-format``). One
    streaming pass."""
    checks: list[_Check] = [(c.column, c.rule, c.what, "error", e) for c, e in check_exprs(schema)]
    n_input = len(checks)
    # the values a synthetic table would hold, derived columns computed from them
    typed = [value_expr(c) for c in schema.measured_columns]
    # the schema's own derived columns; not the weight of represent: all_rows (computed
    # from the modelled row count, which an input row does not have; no rule reads it)
    own = [c for c in schema.columns if c.kind == "derived"]
    derived = [derived_expr(c) for c in own]
    checks += [(None, r.name, f"rule {r.name!r} is false", r.severity, ~r.expr)
               for r in schema.rules]
    for c in own:
        if c.name in header:
            tol = (c.precision or 0.0) + 1e-9
            given = pl.col(f"__given_{c.name}")
            differ = ((given - pl.col(c.name)).abs() > tol).fill_null(False) | (
                given.is_null() != pl.col(c.name).is_null())
            checks.append((c.name, "derived", "value differs from the column's formula by more "
                           f"than {tol:g}", "error", differ))
    givens = [pl.col(c.name).str.strip_chars().cast(pl.Float64, strict=False)
              .alias(f"__given_{c.name}") for c in own if c.name in header]
    raw_flags = [e.fill_null(False).alias(f"f{i}") for i, (*_, e) in enumerate(checks[:n_input])]
    frame = (lf.with_row_index(_ROW)
             .with_columns(raw_flags)
             .with_columns(*givens)
             .with_columns(*typed))
    for d in derived:
        frame = frame.with_columns(d)
    later = [e.fill_null(False).alias(f"f{i}") for i, (*_, e) in enumerate(checks)
             if i >= n_input]
    out = collect(frame.with_columns(later).select(pl.len().alias("rows"),
                                                  *_aggregates(len(checks))),
                  parquet=parquet)
    return int(out["rows"].item()), _problems(out, checks)


def offending_values(lf: pl.LazyFrame, schema: Schema, problems: list[Problem], limit: int, *,
                     parquet: bool = False) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """PRIVATE VALUES, for the custodian's terminal only (``schema check
    --show-values``; never written to a file or to ``--json``): for each of
    ``problems`` (from :func:`survey_table`) that is a failing input check of a
    column, up to ``limit`` distinct raw values that fail it, most frequent first,
    with their row counts."""
    exprs = {(c.column, c.rule): e for c, e in check_exprs(schema)}
    out: dict[tuple[str, str], list[tuple[str, int]]] = {}
    for p in problems:
        key = (p.column or "", p.rule)
        if p.column is None or key not in exprs:
            continue
        top = collect(lf.filter(exprs[key].fill_null(False))
                      .group_by(pl.col(p.column).cast(pl.String)).agg(pl.len().alias("n"))
                      .sort(["n", p.column], descending=[True, False]).head(limit),
                      parquet=parquet)
        out[key] = [(str(v), int(n)) for v, n in top.iter_rows()]
    return out


_Check = tuple[str | None, str, str, str, pl.Expr]


def _aggregates(n: int) -> list[pl.Expr]:
    return [e for i in range(n) for e in (
        pl.col(f"f{i}").sum().alias(f"n{i}"),
        pl.col(_ROW).filter(pl.col(f"f{i}")).min().alias(f"r{i}"))]


def _problems(out: pl.DataFrame, checks: list[_Check]) -> list[Problem]:
    problems = []
    for i, (column, rule, what, severity, _) in enumerate(checks):
        n_bad = int(out[f"n{i}"].item() or 0)
        if n_bad:
            problems.append(Problem(column, rule, what, n_bad, int(out[f"r{i}"].item()) + 1,
                                    severity))
    return problems
