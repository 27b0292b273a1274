"""The schema's table logic on values: derived columns, rules, and the checks on them.

Everything here works on *values* (a decoded synthetic table, or the custodian's
own table in ``schema check``), never on codes, and is public post-processing
when applied to the synthetic table:

* :func:`derive` computes the derived columns (``kind: derived``) from the other
  columns of a table, rounded to their ``precision``;
* :func:`constraints` lists what every released row must satisfy: the schema's
  ``error`` rules plus the implicit rules of derived columns (inside their
  ``bounds``; not null unless ``nullable``);
* :func:`violations` counts, per rule, the rows that break it (a rule is broken
  where its expression is FALSE; NULL passes, as in a SQL ``CHECK``);
* :func:`check_satisfiable` evaluates every rule and derived column on values
  drawn from the schema's public domain, *before* any data is read: an
  expression that cannot be evaluated on the columns' types, or a rule no value
  of the domain satisfies, is a :class:`~dpsynth.errors.SchemaError`.

Generation with these rules (redrawing rows that break one) is
:mod:`dpsynth.generate`'s. This module holds no data and never reads the private
table itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from dpsynth.domain import Domain, probe_values
from dpsynth.errors import SchemaError
from dpsynth.schema import Column, Rule, Schema, grid_decimals

__all__ = [
    "Constraint",
    "check_satisfiable",
    "constraints",
    "derive",
    "derived_expr",
    "passing",
    "rule_cliques",
    "rule_frame",
    "structural_zeros",
    "violations",
    "warning_rules",
]

#: Rows drawn uniformly from the schema's domain to check that rules can hold.
PROBE_ROWS = 20_000


@dataclass(frozen=True)
class Constraint:
    """One condition on released rows: true where the row satisfies it."""

    name: str
    expr: pl.Expr
    columns: tuple[str, ...]
    description: str = ""


def rule_frame(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with text columns as plain strings, so that SQL comparisons with
    literals work whatever the stored type (Enum, Categorical, String)."""
    casts = [pl.col(n).cast(pl.String) for n, t in df.schema.items()
             if isinstance(t, pl.Enum | pl.Categorical)]
    return df.with_columns(casts) if casts else df


def derive(schema: Schema, df: pl.DataFrame) -> pl.DataFrame:
    """Add the derived columns (in schema order, each may use the ones before it)
    and return the released columns in schema order. Derived values are Float64,
    rounded to the column's ``precision``."""
    derived = schema.derived_columns
    if not derived:
        return df
    view = rule_frame(df)
    out = df
    for c in derived:
        value = derived_expr(c)
        computed = view.select(value).to_series()
        view = view.with_columns(computed)
        out = out.with_columns(computed)
    return out.select([c.name for c in schema.released_columns])


def derived_expr(c: Column) -> pl.Expr:
    """A derived column's value: Float64, null where not finite, on its grid."""
    value = pl.sql_expr(c.expr).cast(pl.Float64)
    value = pl.when(value.is_finite()).then(value)  # x/0 and the like: null, not inf
    if c.precision is not None:
        p = c.precision
        value = (value / p).round(0) * p
        value = value.round(grid_decimals(p))
    return value.alias(c.name)


def constraints(schema: Schema) -> tuple[Constraint, ...]:
    """What every released row satisfies: ``error`` rules, then derived columns'
    implicit rules (``<column>:bounds``, ``<column>:not-null``)."""
    out = [Constraint(r.name, r.expr, r.columns, r.description)
           for r in schema.rules if r.severity == "error"]
    for c in schema.derived_columns:
        col = pl.col(c.name)
        if c.bounds is not None:
            lo, hi = c.bounds
            out.append(Constraint(f"{c.name}:bounds", col.is_between(lo, hi).fill_null(True),
                                  (c.name,), f"{c.name} lies in [{lo:g}, {hi:g}]"))
        if not c.nullable:
            out.append(Constraint(f"{c.name}:not-null", col.is_not_null(), (c.name,),
                                  f"{c.name} can be computed (its inputs are present)"))
    return tuple(out)


def rule_cliques(schema: Schema) -> tuple[tuple[str, ...], ...]:
    """For each ``error`` rule, the measured columns it depends on (a derived
    column stands for the measured columns its formula reads), when there are at
    least two: sets the engines should model jointly (``keep_together``)."""
    by_name = {c.name: c for c in schema.columns}

    def measured_inputs(name: str) -> list[str]:
        c = by_name[name]
        if c.kind != "derived":
            return [name]
        reads = pl.sql_expr(c.expr).meta.root_names()
        return [m for r in dict.fromkeys(reads) for m in measured_inputs(r)]

    out: list[tuple[str, ...]] = []
    for r in schema.rules:
        if r.severity != "error":
            continue
        cols = tuple(dict.fromkeys(m for c in r.columns for m in measured_inputs(c)))
        if len(cols) >= 2 and cols not in out:
            out.append(cols)
    return tuple(out)


#: Structural zeros are worked out for rules over at most this many cells.
MAX_ZERO_CELLS = 200_000


def structural_zeros(schema: Schema) -> tuple[tuple[tuple[str, ...], tuple[tuple[int, ...], ...]], ...]:
    """For each ``error`` rule over 2 or 3 measured columns (no derived ones), the
    cells (code tuples, in the rule's column order) where the rule is false for
    every value the cell can decode to (:func:`dpsynth.domain.probe_values`): no
    released row can hold them, so the engines fit the model with zero mass there.
    A cell where some value passes (a threshold inside a bin) is left to generation,
    which re-decodes or redraws. Public: computed from the schema only."""
    by_name = {c.name: c for c in schema.columns}
    out: list[tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]] = []
    for r in schema.rules:
        cols = r.columns
        if (r.severity != "error" or not 2 <= len(cols) <= 3
                or not all(by_name[c].measured for c in cols)):
            continue
        if math.prod(by_name[c].domain_size for c in cols) > MAX_ZERO_CELLS:
            continue
        frame: pl.DataFrame | None = None
        for c in cols:
            probes = probe_values(by_name[c]).rename({"code": f"__code_{c}", "value": c})
            frame = probes if frame is None else frame.join(probes, how="cross")
        assert frame is not None
        if frame.height > 20 * MAX_ZERO_CELLS:
            continue
        keys = [f"__code_{c}" for c in cols]
        held = (rule_frame(frame).with_columns(r.expr.alias("__ok"))
                .group_by(keys).agg(pl.col("__ok").any()).filter(~pl.col("__ok")))
        cells = tuple(sorted(tuple(int(v) for v in row) for row in held.select(keys).iter_rows()))
        if cells:
            out.append((cols, cells))
    return tuple(out)


def warning_rules(schema: Schema) -> tuple[Constraint, ...]:
    """The ``warning`` rules: counted and reported, never enforced."""
    return tuple(Constraint(r.name, r.expr, r.columns, r.description)
                 for r in schema.rules if r.severity == "warning")


def violations(df: pl.DataFrame, rules: Sequence[Constraint | Rule]) -> dict[str, int]:
    """Rows of ``df`` that break each rule (its expression is FALSE)."""
    if not rules or df.height == 0:
        return {r.name: 0 for r in rules}
    view = rule_frame(df)
    ok = view.select([r.expr.fill_null(True).alias(f"r{i}") for i, r in enumerate(rules)])
    return {r.name: int(ok.height - ok[f"r{i}"].sum()) for i, r in enumerate(rules)}


def passing(df: pl.DataFrame, rules: Sequence[Constraint]) -> np.ndarray:
    """A boolean mask of the rows of ``df`` that satisfy every rule."""
    if not rules:
        return np.ones(df.height, dtype=bool)
    view = rule_frame(df)
    both = pl.all_horizontal([r.expr.fill_null(True) for r in rules])
    return view.select(both.alias("ok")).to_series().to_numpy().astype(bool)


# -- before any data: can the rules be evaluated, and can they hold? ---------------------


def check_satisfiable(schema: Schema) -> None:
    """Refuse (before any data is read) a derived column or rule that cannot be
    evaluated on the columns' types, and a rule no value of the domain satisfies."""
    if not schema.rules and not schema.derived_columns:
        return
    domain = Domain.for_model(schema)
    rng = np.random.default_rng(0)
    codes = np.column_stack([rng.integers(0, n, PROBE_ROWS) for n in domain.sizes])
    table = domain.decode(codes, rng)
    view = rule_frame(table)
    for c in schema.derived_columns:
        try:
            computed = view.select(derived_expr(c)).to_series()
        except Exception as exc:  # polars raises several types for a bad expression
            raise SchemaError(f"expr cannot be computed on the columns' types: "
                              f"{_first_line(exc)}", f"schema.columns[{c.name!r}]") from None
        view = view.with_columns(computed)
    for r in schema.rules:
        try:
            held = view.select(r.expr.alias("ok")).to_series()
        except Exception as exc:
            raise SchemaError(f"rule {r.name!r} cannot be evaluated on the columns' types: "
                              f"{_first_line(exc)}", "schema.rules") from None
        if held.dtype != pl.Boolean:
            raise SchemaError(f"rule {r.name!r} is not a condition (it gives {held.dtype}, "
                              "not true/false)", "schema.rules")
        if not held.any():
            raise SchemaError(
                f"rule {r.name!r} is false on all {PROBE_ROWS} rows drawn from the schema's "
                "domain: it contradicts the columns' categories or bounds", "schema.rules")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."
