"""Public discretisation: what each code of a released column means, value -> code, code -> value.

A column's domain comes only from its schema: category lists, bin edges, date
units and code groups (the schema resolves the bins and so knows the number of
codes, :attr:`~dpsynth.schema.Column.domain_size`). Codes are ``0 .. size-1``; a
nullable column's last code means null. Owns:

* :func:`levels` / :func:`level_labels`: the public value (or bin) behind each code;
* :func:`column_exprs`: the polars compiler of the input rules
  (:mod:`dpsynth.input_rules`): check and encode expressions over one raw text
  column, applied to the private table by :mod:`dpsynth.io`;
* decoding (:meth:`Domain.decode`): integer codes from the fitted model back to
  values, numbers and dates drawn uniformly inside their bin with a seeded
  generator (post-processing, so seeding is allowed), and :func:`recode`, its
  inverse.

This module holds no data and must not import ``dpsynth.io``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from dpsynth.input_rules import ColumnRules, column_rules
from dpsynth.schema import Column, Schema, bin_grid, grid_decimals, grid_points

__all__ = [
    "ColumnExprs",
    "Domain",
    "column_exprs",
    "decode_column",
    "level_labels",
    "levels",
    "probe_values",
    "recode",
    "value_expr",
]


def levels(col: Column) -> list[object]:
    """The public values behind codes ``0 .. n-1`` (null, if nullable, is code n)."""
    if col.kind == "categorical":
        return list(col.categories)
    if col.kind == "boolean":
        return [False, True]
    if col.kind == "code":
        return [g.label for g in col.groups]
    if col.kind in ("integer", "float"):
        e = col.bin_edges
        return [(e[i], e[i + 1]) for i in range(len(e) - 1)] + list(col.atoms)
    if col.kind in ("date", "datetime"):
        d = col.date_edges
        return [(d[i], d[i + 1]) for i in range(len(d) - 1)]
    raise ValueError(f"column {col.name!r} of kind {col.kind} has no domain")


def level_labels(col: Column) -> list[str]:
    """Human-readable labels for every code (for reports)."""
    out: list[str] = []
    for lv in levels(col):
        if isinstance(lv, tuple):
            a, b = lv
            if isinstance(a, dt.datetime):
                out.append(a.date().isoformat())
            elif col.kind == "integer" and b - a == 1:
                out.append(f"{a:g}")
            else:
                out.append(f"[{a:g}, {b:g})")
        elif isinstance(lv, float):  # an atom
            out.append(f"{lv:g}")
        else:
            out.append(str(lv))
    if col.nullable:
        out.append("(missing)")
    return out


@dataclass(frozen=True)
class Domain:
    """The released columns, in schema order, with their domain sizes."""

    columns: tuple[Column, ...]

    @classmethod
    def from_schema(cls, schema: Schema) -> Domain:
        """The input's measured columns (what the private table is encoded to)."""
        return cls(schema.measured_columns)

    @classmethod
    def for_model(cls, schema: Schema) -> Domain:
        """The model's columns: the measured ones, then the internal rows-per-patient
        column of ``represent: all_rows`` (:attr:`Schema.unit_rows_column`)."""
        return cls(schema.model_columns)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(c.domain_size for c in self.columns)

    def decode(self, codes: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
        """Codes (rows x columns) -> a typed synthetic table (text columns as
        ``pl.Enum`` over their public labels)."""
        return pl.DataFrame(
            [decode_column(c, codes[:, j], rng) for j, c in enumerate(self.columns)]
        )


@dataclass(frozen=True)
class ColumnExprs:
    """Polars expressions over one raw (text) input column, compiled from its
    :class:`~dpsynth.input_rules.ColumnRules`.

    ``missing``: the cell is missing; ``malformed``: not missing but cannot be
    read as the column's kind; ``invalid``: read but outside the column's
    ``valid`` range (an impossible value: always refused); ``out_of_domain``:
    read but outside the public domain; ``code``: the integer code (valid only
    where the checks pass or the out-of-domain policy maps the value to null or
    clamps it).
    """

    missing: pl.Expr
    malformed: pl.Expr
    invalid: pl.Expr
    out_of_domain: pl.Expr
    code: pl.Expr


def value_expr(col: Column) -> pl.Expr:
    """A released column's value as the synthetic table would hold it, read from the
    raw input text: categories as text, code columns as their group's label, numbers
    and dates parsed; null where the cell is missing, malformed or outside the
    domain. (For evaluating the schema's rules on the custodian's own table.)"""
    raw = pl.col(col.name)
    e = column_exprs(col)
    usable = ~(e.missing | e.malformed | e.invalid | e.out_of_domain)
    if col.kind == "categorical":
        value = raw
        if col.other_category:
            value = pl.when(raw.is_in(list(col.categories))).then(raw) \
                .otherwise(pl.lit(col.other_category))
    elif col.kind == "code":
        labels = pl.Series([g.label for g in col.groups], dtype=pl.String)
        value = pl.lit(labels).gather(e.code.cast(pl.Int64).clip(0, len(labels) - 1))
        value = pl.when(e.code < len(labels)).then(value)
    elif col.kind == "boolean":
        value = e.code.cast(pl.Boolean)
    else:
        value = _parsed(col, raw)
        if col.kind == "date":
            value = value.cast(pl.Date)
        if col.kind in ("integer", "float") and col.on_out_of_domain == "clamp":
            assert col.bounds is not None
            value = value.clip(col.bounds[0], col.bounds[1])
    return pl.when(usable).then(value).alias(col.name)


def _parsed(col: Column, raw: pl.Expr) -> pl.Expr:
    s = raw.str.strip_chars()
    if col.kind == "integer":
        return s.cast(pl.Int64, strict=False)
    if col.kind == "float":
        v = s.cast(pl.Float64, strict=False)
        return pl.when(v.is_finite()).then(v)
    if col.kind == "date":
        return s.str.to_date(col.date_format, strict=False).cast(pl.Datetime("us"))
    return s.str.to_datetime(col.date_format, strict=False, time_unit="us")


def column_exprs(col: Column) -> ColumnExprs:
    """Build the check and encode expressions for one released column."""
    r = column_rules(col)
    raw = pl.col(col.name)
    missing = raw.is_null() | raw.is_in(list(col.missing_tokens))
    compile_kind = {"categorical": _categorical, "code": _code, "boolean": _boolean}.get(
        col.kind, _binned)
    malformed, in_domain, code = compile_kind(r, raw)
    # clamp moves a value into the bounds, other codes it as the other category
    out_of_domain = pl.lit(False) if col.on_out_of_domain in ("clamp", "other") else ~in_domain
    bad = missing | malformed | (out_of_domain if col.on_out_of_domain == "null" else pl.lit(False))
    null_code = pl.lit(r.null_code, dtype=pl.Int64)
    final = pl.when(bad).then(null_code).otherwise(code).cast(pl.Int32).alias(col.name)
    present = ~missing & ~malformed.fill_null(True)
    invalid = pl.lit(False)
    if r.valid is not None:
        value = _parsed(col, raw)
        invalid = present & ((value < r.valid[0]) | (value > r.valid[1])).fill_null(False)
    return ColumnExprs(
        missing=missing,
        malformed=~missing & malformed.fill_null(True),
        invalid=invalid,
        out_of_domain=present & ~invalid & out_of_domain.fill_null(True),
        code=final,
    )


_Compiled = tuple[pl.Expr, pl.Expr, pl.Expr]
"""(malformed, in the domain, code) of a present cell."""


def _categorical(r: ColumnRules, raw: pl.Expr) -> _Compiled:
    cats = list(r.column.categories)
    # an Enum cast streams (replace_strict makes polars hold the whole column)
    code = raw.cast(pl.Enum(cats), strict=False).to_physical().cast(pl.Int64)
    if r.column.other_category:
        code = code.fill_null(cats.index(r.column.other_category))
    return pl.lit(False), raw.is_in(cats), code


def _code(r: ColumnRules, raw: pl.Expr) -> _Compiled:
    col = r.column
    stripped = raw.str.strip_chars()
    malformed = ~stripped.str.contains(f"^(?:{col.pattern})$") if col.pattern else pl.lit(False)
    number = stripped.str.extract(r"^(\d+)", 1).cast(pl.Int64, strict=False)
    chain: Any = None
    for i, g in enumerate(col.groups):
        cond = pl.lit(False)
        for p in g.prefixes:
            cond = cond | stripped.str.starts_with(p)
        for lo, hi in g.ranges:
            cond = cond | ((number >= lo) & (number <= hi))
        chain = pl.when(cond).then(i) if chain is None else chain.when(cond).then(i)
    if chain is None:  # pragma: no cover - the JSON Schema requires a group
        raise ValueError(f"code column {col.name!r} has no groups")
    code = chain.otherwise(None).cast(pl.Int64)
    return malformed, code.is_not_null(), code


def _boolean(r: ColumnRules, raw: pl.Expr) -> _Compiled:
    col = r.column
    value = (pl.when(raw.is_in(list(col.true_tokens))).then(True)
             .when(raw.is_in(list(col.false_tokens))).then(False))
    return value.is_null(), pl.lit(True), value.cast(pl.Int64)


def _binned(r: ColumnRules, raw: pl.Expr) -> _Compiled:
    """integer, float, date, datetime: parse, compare with the bounds, find the bin."""
    col = r.column
    value = _parsed(col, raw)
    if r.bounds is None:  # pragma: no cover - the schema sets bounds for these kinds
        raise ValueError(f"column {col.name!r} has no bounds")
    if col.kind in ("date", "datetime"):
        lo_v, hi_v = (pl.lit(b, dtype=pl.Datetime("us")) for b in r.bounds)
        edges = pl.Series(r.edges, dtype=pl.Datetime("us"))
    else:
        lo_v, hi_v = pl.lit(r.bounds[0]), pl.lit(r.bounds[1])
        edges = pl.Series(r.edges, dtype=pl.Float64)
    in_domain = (value >= lo_v) & (value <= hi_v)
    v = value.clip(lo_v, hi_v) if col.on_out_of_domain == "clamp" else value
    if col.kind in ("integer", "float"):
        v = v.cast(pl.Float64)
    n = len(edges) - 1  # bins; the atoms' codes follow them
    if len(edges) <= 65:
        # elementwise (so polars can stream it): count the inner edges at or below v
        idx = pl.sum_horizontal([(v >= pl.lit(e, dtype=edges.dtype)).cast(pl.Int64)
                                 for e in edges[1:-1]]) if n > 1 else pl.lit(0, pl.Int64)
    else:
        idx = pl.lit(edges).search_sorted(v, side="right").cast(pl.Int64) - 1
    code = idx.clip(0, n - 1)
    for i, atom in enumerate(r.atoms):
        code = pl.when(v == atom).then(pl.lit(n + i, pl.Int64)).otherwise(code)
    return value.is_null(), in_domain, code


def decode_column(col: Column, codes: np.ndarray, rng: np.random.Generator) -> pl.Series:
    """Codes -> values; numbers and dates are drawn uniformly inside their bin."""
    codes = np.asarray(codes, dtype=np.int64)
    lv = levels(col)
    n = len(lv)
    is_null = codes >= n
    safe = np.where(is_null, 0, codes)
    if col.kind in ("categorical", "code"):
        # an Enum: one byte or two a cell (a String column is 16 bytes a cell); the
        # bundle writers store it as plain text
        labels = [str(x) for x in lv]
        index = pl.Series(safe, dtype=pl.UInt32).set(pl.Series(is_null), None)
        return pl.Series(col.name, labels, dtype=pl.Enum(labels)).gather(index)
    if col.kind == "boolean":
        vals = safe.astype(bool)
        return pl.Series(col.name, vals).set(pl.Series(is_null), None)
    if col.kind in ("integer", "float"):
        s = pl.Series(col.name, _decode_number(col, safe, rng),
                      dtype=pl.Int64 if col.kind == "integer" else pl.Float64)
        return s.set(pl.Series(is_null), None)
    # date / datetime: uniform inside the bin, clipped to the bounds
    assert col.date_bounds is not None
    edges = col.date_edges
    b0, b1 = col.date_bounds
    start = np.array([max(edges[i], b0) for i in range(n)], dtype="datetime64[us]")
    end = np.array([min(edges[i + 1], b1 + dt.timedelta(microseconds=1)) for i in range(n)],
                   dtype="datetime64[us]")
    if col.kind == "date":
        s_days = start.astype("datetime64[D]").astype(np.int64)
        e_days = (end - np.timedelta64(1, "us")).astype("datetime64[D]").astype(np.int64)
        days = rng.integers(s_days[safe], np.maximum(e_days[safe], s_days[safe]) + 1)
        ser = pl.Series(col.name, days.astype("datetime64[D]"), dtype=pl.Date)
    else:
        s_us = start.astype(np.int64)
        e_us = end.astype(np.int64)
        s_s, e_s = s_us[safe] // 1_000_000, e_us[safe] // 1_000_000
        secs = rng.integers(s_s, np.maximum(e_s, s_s + 1))
        ser = pl.Series(col.name, (secs * 1_000_000).astype("datetime64[us]"),
                        dtype=pl.Datetime("us"))
    return ser.set(pl.Series(is_null), None)


def _decode_number(col: Column, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Numbers: an atom's code decodes to the atom; a bin's to a value drawn uniformly
    among the bin's values on the ``precision`` grid, atoms excluded (without a
    precision: uniformly in the bin's interval, clipped to the bounds)."""
    nb = col.n_bins
    is_atom = codes >= nb
    b = np.where(is_atom, 0, codes)
    if col.precision is None:
        grid = [bin_grid(col, i) for i in range(nb)]
        lo = np.array([g[0] for g in grid])
        hi = np.array([g[1] for g in grid])
        vals = rng.uniform(lo[b], hi[b])
    else:
        p = col.precision
        ks = [grid_points(col, i) or (0, -1) for i in range(nb)]
        k0 = np.array([k[0] for k in ks], dtype=np.int64)
        atom_ks = [sorted(round(a / p) for a in col.atoms if k[0] <= round(a / p) <= k[1])
                   for k in ks]
        width = max((len(a) for a in atom_ks), default=0)
        # the atoms' grid positions inside each bin, ascending, padded with "never"
        skip = np.full((nb, max(width, 1)), np.iinfo(np.int64).max, dtype=np.int64)
        for i, a in enumerate(atom_ks):
            skip[i, :len(a)] = a
        count = np.array([k[1] - k[0] + 1 - len(a) for k, a in zip(ks, atom_ks, strict=True)])
        k = k0[b] + rng.integers(0, np.maximum(count[b], 1))
        for j in range(width):  # step over the atoms at or below the drawn position
            k += k >= skip[b, j]
        vals = np.round(k * p, grid_decimals(p))
    if col.atoms:
        atoms = np.asarray(col.atoms, dtype=float)
        vals = np.where(is_atom, atoms[np.minimum(codes - nb, len(atoms) - 1).clip(0)], vals)
    if col.kind == "integer":
        return np.rint(vals).astype(np.int64)
    return vals.astype(float)


def probe_values(col: Column, per_bin: int = 64) -> pl.DataFrame:
    """Representative decoded values of every code (``code``, ``value``), for
    deciding what a rule allows in each cell: the code's value for categories,
    groups, booleans, atoms and null; for a bin, its grid values (all of them, or
    ``per_bin`` evenly spaced ones including both ends). Public: from the schema."""
    n = col.domain_size
    codes = np.arange(n)
    if col.kind in ("categorical", "code", "boolean"):
        values = decode_column(col, codes, np.random.default_rng(0))
        return pl.DataFrame({"code": codes, "value": values})
    parts: list[tuple[int, np.ndarray]] = []
    if col.kind in ("integer", "float"):
        for i in range(col.n_bins):
            ks = grid_points(col, i)
            if ks is not None:
                k = np.unique(np.linspace(ks[0], ks[1], min(per_bin, ks[1] - ks[0] + 1)).round())
                vals = np.round(k * (col.precision or 1.0), grid_decimals(col.precision or 1.0))
                vals = vals[~np.isin(vals, col.atoms)]
            else:
                lo, hi, _ = bin_grid(col, i)
                vals = np.linspace(lo, hi, per_bin)
            parts.append((i, vals))
        parts += [(col.n_bins + j, np.array([a])) for j, a in enumerate(col.atoms)]
        dtype: pl.DataType = pl.Int64() if col.kind == "integer" else pl.Float64()
        frame = pl.DataFrame({"code": np.concatenate([np.full(len(v), i) for i, v in parts]),
                              "value": pl.Series(np.concatenate([v for _, v in parts])).cast(dtype)})
    else:  # date, datetime: each day of the bin (or per_bin evenly spaced days)
        assert col.date_bounds is not None
        e, (b0, b1) = col.date_edges, col.date_bounds
        dparts = []
        for i in range(col.n_levels):
            d_lo = max(e[i], b0)
            d_hi = min(e[i + 1] - dt.timedelta(microseconds=1), b1)
            days = pl.datetime_range(d_lo, max(d_lo, d_hi), "1d", eager=True, time_unit="us")
            if days.len() > per_bin:
                days = days.gather(np.linspace(0, days.len() - 1, per_bin).round().astype(int))
            if col.kind == "date":
                days = days.dt.date()
            dparts.append(pl.DataFrame({"code": np.full(days.len(), i), "value": days}))
        frame = pl.concat(dparts)
    if col.nullable:
        frame = pl.concat([frame, pl.DataFrame({"code": [col.n_levels], "value": [None]},
                                               schema=frame.schema)])
    return frame


def recode(domain: Domain, df: pl.DataFrame) -> np.ndarray:
    """Decoded (synthetic) values -> codes: the inverse of :meth:`Domain.decode`.

    Code columns hold group labels after decoding, so they are matched by label;
    every other kind goes through the same text parsing as the input.
    """
    exprs = []
    for c in domain.columns:
        n = len(levels(c))
        null_code = n if c.nullable else None
        if c.kind == "code":
            labels = [g.label for g in c.groups]
            e = pl.col(c.name).replace_strict(labels, list(range(n)), default=null_code,
                                              return_dtype=pl.Int64)
            exprs.append(e.fill_null(null_code).alias(c.name))
            continue
        text = pl.col(c.name).cast(pl.String)
        if c.kind == "boolean":
            text = text.str.to_lowercase()
        exprs.append(column_exprs(c).code.cast(pl.Int64))
        df = df.with_columns(text.alias(c.name))
    out = df.select(exprs)
    return np.column_stack([s.to_numpy() for s in out.iter_columns()]).astype(np.int64)
