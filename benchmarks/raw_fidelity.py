"""Fidelity on the values as released: TVD of the synthetic table against the real table's RAW values.

The encoded-domain TVD of ``compare_peers.py`` compares codes (schema bins and groups), so it
cannot see what a researcher sees: a synthetic income drawn uniformly inside the schema bin
[5000, 10000) is a perfect match in codes and can still be far from the real incomes. Here
both tables are compared as values:

* **numeric and date columns** (schema kinds integer, float, date, datetime) are cut at the
  REAL table's deciles. The edges are the distinct values among the 10th, 20th, ..., 90th
  percentiles of the real non-null values, each an actual real value (the inverted-CDF
  percentile, no interpolation). Cells are right-closed: ``(-inf, e1], (e1, e2], ...,
  (e_m, +inf)``, so a value equal to an edge goes to the cell that ends at it, values
  outside the real range go to the end cells, and null is a cell of its own. A point mass
  at an edge (income 0, ``WGTP`` 0, the ``POVPIP`` top code 501) therefore stays whole in
  one cell, on both sides, and an off-grid synthetic value near it (income 37.2) does not.
  Dates compare on their microsecond timestamps.
* **categorical columns** compare as text values (null its own cell); booleans as
  ``true``/``false``.
* **code columns** (ICD-9 and the like) are released as their public group labels, so the
  real codes are mapped to the same groups first (the schema's groups, through
  :func:`dpsynth.domain.column_exprs`); a table can instead exclude them.

A marginal's TVD is half the L1 distance of the two tables' cell frequencies (each table
normalised by its own row count). :func:`raw_tvd` reports the mean over all 1-way and all
2-way marginals of the evaluated columns, a seeded sample of 3-way marginals, and every
column's 1-way TVD. These numbers are computed on real rows: internal benchmark figures,
never for a bundle.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from dpsynth.domain import column_exprs, levels
from dpsynth.schema import Column, Schema

__all__ = ["NUMERIC_KINDS", "cells", "decile_edges", "independent", "numeric_columns", "raw_tvd",
           "real_values", "released_values"]

NUMERIC_KINDS = ("integer", "float", "date", "datetime")
"""Schema kinds compared in the real table's decile cells (every other kind by value)."""


def numeric_columns(schema: Schema) -> list[str]:
    """The released columns compared in decile cells."""
    return [c.name for c in schema.measured_columns if c.kind in NUMERIC_KINDS]


# -- the tables as values ----------------------------------------------------------------------------


def _real_column(col: Column, raw: pl.Expr) -> pl.Expr:
    missing = raw.is_null() | raw.is_in(list(col.missing_tokens))
    if col.kind == "code":
        idx = column_exprs(col).code.cast(pl.Int64)
        labels = [str(x) for x in levels(col)]
        value = idx.replace_strict(list(range(len(labels))), labels, default=None,
                                   return_dtype=pl.String)
    elif col.kind == "boolean":
        value = (pl.when(raw.is_in(list(col.true_tokens))).then(pl.lit("true"))
                 .when(raw.is_in(list(col.false_tokens))).then(pl.lit("false")))
    elif col.kind in ("integer", "float"):
        value = raw.str.strip_chars().cast(pl.Float64, strict=False)
    elif col.kind == "date":
        value = raw.str.strip_chars().str.to_date(col.date_format, strict=False).cast(pl.Datetime("us"))
    elif col.kind == "datetime":
        value = raw.str.strip_chars().str.to_datetime(col.date_format, strict=False, time_unit="us")
    else:
        value = raw
    return pl.when(missing).then(None).otherwise(value).alias(col.name)


def real_values(raw_text: pl.DataFrame, schema: Schema) -> pl.DataFrame:
    """The real table's released columns as values: ``raw_text`` as read from the file (every
    cell text); missing tokens become null, numbers Float64, dates Datetime, code columns their
    public group label (a code in no group: null), booleans ``true``/``false``. A number or
    date that does not parse is null (the release's input check refuses such a table anyway)."""
    return raw_text.select([_real_column(c, pl.col(c.name)) for c in schema.measured_columns])


def released_values(synth: pl.DataFrame, schema: Schema) -> pl.DataFrame:
    """The synthetic table (a bundle's ``synthetic.parquet`` or :meth:`Domain.decode`'s frame)
    in the same types as :func:`real_values`."""
    out = []
    for c in schema.measured_columns:
        e = pl.col(c.name)
        if c.kind in ("integer", "float"):
            e = e.cast(pl.Float64)
        elif c.kind in ("date", "datetime"):
            e = e.cast(pl.Datetime("us"))
        elif c.kind == "boolean":
            e = e.cast(pl.String).str.to_lowercase()
        else:
            e = e.cast(pl.String)
        out.append(e.alias(c.name))
    return synth.select(out)


def independent(real: pl.DataFrame, seed: int = 0, rows: int | None = None) -> pl.DataFrame:
    """The non-DP baseline: every column resampled on its own (with replacement) from ``real``'s
    exact values, ``rows`` rows (default: as many as ``real``); one row index per column."""
    n = real.height if rows is None else rows
    pick = np.random.default_rng(seed).integers(0, real.height, size=(n, real.width))
    return pl.DataFrame([real[c].gather(pick[:, j]) for j, c in enumerate(real.columns)])


# -- cells ------------------------------------------------------------------------------------------


def decile_edges(values: np.ndarray) -> np.ndarray:
    """The distinct 10th..90th percentiles (inverted CDF: each is a value of ``values``)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return np.zeros(0)
    return np.unique(np.quantile(v, np.arange(1, 10) / 10, method="inverted_cdf"))


def _as_float(s: pl.Series) -> np.ndarray:
    if s.dtype.is_temporal():
        s = s.cast(pl.Datetime("us")).dt.epoch("us")
    return s.cast(pl.Float64).to_numpy().astype(np.float64)  # null -> nan


def cells(real: pl.DataFrame, synth: pl.DataFrame, columns: Sequence[str],
          numeric_columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[int], dict[str, Any]]:
    """Both tables as integer cell codes (rows x columns), the number of cells per column, and
    each numeric column's decile edges (see the module docstring for the cells)."""
    numeric = set(numeric_columns)
    r_cols, s_cols, sizes = [], [], []
    edges: dict[str, Any] = {}
    for name in columns:
        if name in numeric:
            rv, sv = _as_float(real[name]), _as_float(synth[name])
            e = decile_edges(rv)
            edges[name] = e.tolist()
            n_cells = e.size + 1  # + null cell at index n_cells
            rc = np.where(np.isnan(rv), n_cells, np.searchsorted(e, np.nan_to_num(rv), side="left"))
            sc = np.where(np.isnan(sv), n_cells, np.searchsorted(e, np.nan_to_num(sv), side="left"))
            size = n_cells + 1
        else:
            rs, ss = real[name].cast(pl.String), synth[name].cast(pl.String)
            values = pl.concat([rs, ss]).drop_nulls().unique().sort()
            n_vals = values.len()
            size = n_vals + 1  # null is the last cell
            rc = rs.replace_strict(values, range(n_vals), default=n_vals, return_dtype=pl.Int64).to_numpy()
            sc = ss.replace_strict(values, range(n_vals), default=n_vals, return_dtype=pl.Int64).to_numpy()
        r_cols.append(np.asarray(rc, dtype=np.int64))
        s_cols.append(np.asarray(sc, dtype=np.int64))
        sizes.append(int(size))
    shape = (0, len(columns))
    r = np.column_stack(r_cols) if r_cols else np.zeros(shape, np.int64)
    s = np.column_stack(s_cols) if s_cols else np.zeros(shape, np.int64)
    return r, s, sizes, edges


def _freq(c: np.ndarray, idx: tuple[int, ...], sizes: Sequence[int]) -> np.ndarray:
    flat = np.zeros(c.shape[0], dtype=np.int64)
    for j in idx:
        flat = flat * sizes[j] + c[:, j]
    counts = np.bincount(flat, minlength=int(np.prod([sizes[j] for j in idx]))).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def _tvd(r: np.ndarray, s: np.ndarray, idx: tuple[int, ...], sizes: Sequence[int]) -> float:
    return float(0.5 * np.abs(_freq(r, idx, sizes) - _freq(s, idx, sizes)).sum())


def raw_tvd(real: pl.DataFrame, synth: pl.DataFrame, columns: Sequence[str],
            numeric_columns: Sequence[str], n_threeway: int = 300, seed: int = 3) -> dict[str, Any]:
    """Raw-value TVD of ``synth`` against ``real`` over ``columns``.

    ``real`` and ``synth`` hold values (e.g. :func:`real_values` / :func:`released_values`);
    ``numeric_columns`` (a subset of ``columns``, numeric or temporal dtype in both frames)
    are cut at ``real``'s deciles, the others compared as text. The row counts may differ.
    Returns ``tvd_1way``, ``tvd_2way`` (means over all 1- and 2-way marginals), ``tvd_3way``
    (mean over ``n_threeway`` seeded triples, all of them when there are fewer; None with
    fewer than 3 columns), ``per_column`` (each column's 1-way TVD), ``edges`` (the numeric
    columns' decile edges) and ``columns``.
    """
    columns = list(columns)
    r, s, sizes, edges = cells(real, synth, columns, numeric_columns)
    d = len(columns)
    one = {columns[j]: _tvd(r, s, (j,), sizes) for j in range(d)}
    pairs = list(itertools.combinations(range(d), 2))
    triples = list(itertools.combinations(range(d), 3))
    if len(triples) > n_threeway:
        pick = np.random.default_rng(seed).choice(len(triples), n_threeway, replace=False)
        triples = [triples[i] for i in sorted(pick)]
    return {
        "columns": columns,
        "tvd_1way": float(np.mean(list(one.values()))) if one else None,
        "tvd_2way": float(np.mean([_tvd(r, s, p, sizes) for p in pairs])) if pairs else None,
        "tvd_3way": float(np.mean([_tvd(r, s, t, sizes) for t in triples])) if triples else None,
        "per_column": one,
        "edges": edges,
    }
