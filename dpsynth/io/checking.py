"""Checking and encoding the private table in one streaming pass (PRIVATE).

Owns :func:`check_and_encode`: the per-row checks of the schema
(:func:`dpsynth.input_rules.input_checks`, compiled to polars by
:func:`check_exprs`) and the codes of the released columns
(:func:`dpsynth.domain.column_exprs`), evaluated once per distinct raw value of a
column, and the compact integer codes it returns (one or two bytes a cell).
:func:`encode` is the row-by-row reference it is tested against.

Rules: fails closed on the first violated (column, rule) with the number of bad
rows and the first one, never a cell value; nothing here draws DP noise.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from dpsynth.domain import Domain, column_exprs
from dpsynth.errors import InternalError
from dpsynth.input_rules import (
    Check,
    bad_rows,
    input_checks,
    no_rows,
    ragged_rows,
    unit_missing_tokens,
)
from dpsynth.io.reading import collect, unparseable
from dpsynth.schema import Schema

__all__ = ["CheckedTable", "check_and_encode", "check_exprs", "check_table", "encode", "to_codes"]

_SHORT_ROW = "__dpsynth_short_row"
_BATCH_ROWS = 1 << 18
_NUMPY_CODE: dict[Any, type[np.unsignedinteger]] = {
    pl.UInt8: np.uint8, pl.UInt16: np.uint16, pl.UInt32: np.uint32}


@dataclass(frozen=True)
class CheckedTable:
    """A checked table (PRIVATE): the patient id column (if any) as integer ids, one
    per distinct patient id, and the released columns as compact integer codes.
    ``n_rows`` is for bounding and the audit only; ``unit_values[i]`` is the raw text
    of patient id ``i`` (bounding hashes it)."""

    frame: pl.DataFrame
    n_rows: int
    unit_values: pl.Series | None = None


class _ColumnCodes:
    """One column's distinct raw values, learnt as the batches stream past.

    The scan casts the column to a Categorical over its own fresh categories, so
    every distinct raw value has a small integer id. Each rule and the code are
    evaluated once per id (with the expressions of :func:`column_exprs`, on a
    one-column frame of the new values) and looked up for every row. ``counts``
    holds the rows per id, so a rule's number of bad rows is a dot product.
    """

    def __init__(self, name: str, code: pl.Expr | None, flags: list[pl.Expr],
                 dtype: type[pl.DataType]) -> None:
        self._code = code
        self._flags = [f.fill_null(False).alias(f"f{i}") for i, f in enumerate(flags)]
        self._np_dtype = _NUMPY_CODE[dtype]
        self.counts = np.zeros(0, dtype=np.int64)
        self.codes = np.zeros(0, dtype=np.int64)
        self.flags = np.zeros((0, len(flags)), dtype=bool)
        self.known = np.zeros(0, dtype=bool)
        self.nulls = 0
        null_code, null_flags = self._evaluate(pl.Series(name, [None], dtype=pl.String))
        self.null_code, self.null_flags = int(null_code[0]), null_flags[0]

    def _evaluate(self, text: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        """Codes (-1: none) and rule flags of the raw values ``text``."""
        frame = text.to_frame()
        codes = (frame.select(self._code).to_series().fill_null(-1).cast(pl.Int64).to_numpy()
                 if self._code is not None else np.zeros(len(text), dtype=np.int64))
        flags = (frame.select(self._flags).to_numpy().astype(bool) if self._flags
                 else np.zeros((len(text), 0), dtype=bool))
        return codes, flags

    def _learn(self, s: pl.Series) -> None:
        uniq = s.unique().drop_nulls()
        ids = uniq.to_physical().to_numpy()
        if not ids.size:
            return
        grow = int(ids.max()) + 1 - len(self.known)
        if grow > 0:
            self.counts = np.concatenate([self.counts, np.zeros(grow, dtype=np.int64)])
            self.codes = np.concatenate([self.codes, np.full(grow, -1, dtype=np.int64)])
            self.flags = np.concatenate([self.flags, np.zeros((grow, len(self._flags)), bool)])
            self.known = np.concatenate([self.known, np.zeros(grow, dtype=bool)])
        new = ~self.known[ids]
        if new.any():
            codes, flags = self._evaluate(uniq.filter(pl.Series(new)).cast(pl.String))
            self.codes[ids[new]], self.flags[ids[new]], self.known[ids[new]] = codes, flags, True

    def add(self, s: pl.Series) -> np.ndarray:
        """Account for one batch of the column; return its codes in the compact type
        (for a column without a code, the patient id, its ids)."""
        self._learn(s)  # every id in the batch is now known
        phys = s.to_physical()
        null = phys.is_null().to_numpy() if phys.null_count() else None
        ids = phys.fill_null(0).to_numpy()
        self.counts += np.bincount(ids if null is None else ids[~null],
                                   minlength=len(self.counts))
        if null is not None:  # every column, the patient id too (privacy-unit-missing)
            self.nulls += int(null.sum())
        if self._code is None:
            # a null id gets id 0 here; the table then fails its null check
            return ids.astype(self._np_dtype)
        out = self.codes[ids]
        if null is not None:
            out[null] = self.null_code
        return out.astype(self._np_dtype)

    def bad_rows(self, i: int) -> int:
        """Rows failing this column's rule ``i``."""
        return int(self.counts @ self.flags[:, i]) + (self.nulls if self.null_flags[i] else 0)

    def unencodable(self) -> bool:
        """A value with rows but no code (the checks make this impossible)."""
        return bool((self.codes[self.counts > 0] < 0).any()) or (
            self.nulls > 0 and self.null_code < 0)


def _scan(lf: pl.LazyFrame, schema: Schema, from_csv: bool) -> Iterator[pl.DataFrame]:
    """The one streaming pass over the file, in batches: the patient id and every
    released column as a Categorical over its own fresh categories, and (CSV) a
    short-row flag."""
    namespace = f"dpsynth-{secrets.token_hex(8)}"
    unit = schema.privacy_unit.column
    names = ([unit] if unit is not None else []) + [c.name for c in schema.measured_columns]
    select = [pl.col(n).cast(pl.Categorical(pl.Categories(n, namespace))) for n in names]
    if from_csv:
        # Empty CSV fields arrive as "" (empty_string_is_null=False). polars 2.x
        # also reads a short row's missing fields as "", so the fields of every
        # record are counted before this scan (dpsynth.io.reading.check_fields,
        # rule csv-format); this flag (a null cell, polars 1.x's short row) is a
        # guard, and touching every column makes polars reject longer rows.
        select.append(_short_row().alias(_SHORT_ROW))
    try:
        yield from lf.select(select).collect_batches(chunk_size=_BATCH_ROWS, engine="streaming")
    except pl.exceptions.PolarsError:
        raise unparseable(parquet=not from_csv) from None


def _short_row() -> pl.Expr:
    """A CSV row with fewer fields than the header (some cell is null)."""
    return pl.any_horizontal(pl.all().is_null())


def _first_bad_row(lf: pl.LazyFrame, expr: pl.Expr, from_csv: bool) -> int:
    """Second pass, only for a failing table: the first row a rule rejects."""
    first = collect(lf.with_row_index("__dpsynth_row").filter(expr.fill_null(False))
                    .select(pl.col("__dpsynth_row").min()), parquet=not from_csv).item()
    return int(first)


def check_exprs(schema: Schema) -> list[tuple[Check, pl.Expr]]:
    """The schema's per-row checks, in order, each with its polars expression: true
    on the rows that fail it."""
    exprs = {c.name: column_exprs(c) for c in schema.measured_columns}
    out = []
    for check in input_checks(schema):
        if check.flag == "unit-missing":
            stripped = pl.col(check.column).str.strip_chars()
            tokens = unit_missing_tokens(schema)
            expr = pl.col(check.column).is_null() | (stripped == "")
            if tokens:
                expr = expr | stripped.is_in(list(tokens))
        else:
            e = exprs[check.column]
            expr = {"missing": e.missing, "malformed": e.malformed, "invalid": e.invalid,
                    "out-of-domain": e.out_of_domain}[check.flag]
        out.append((check, expr))
    return out


def check_and_encode(lf: pl.DataFrame | pl.LazyFrame, schema: Schema, *,
                     from_csv: bool = True) -> CheckedTable:
    """Check the table against the schema and encode it, in one streaming pass.

    Every rule and every code is a function of one cell, so each is evaluated once
    per distinct value of a column (:class:`_ColumnCodes`). Memory is the compact
    codes plus one batch. Fails closed on the first violated (column, rule), in the
    order of :func:`dpsynth.input_rules.input_checks`, with the number of bad rows
    and (from a second pass, only then) the first one; never shows a value.
    """
    lf = lf.lazy()
    unit = schema.privacy_unit.column
    checks = check_exprs(schema)
    states, position = _column_states(schema, checks)
    parts: list[pl.DataFrame] = []
    n_rows = n_short = 0
    unit_dtype = None
    for batch in _scan(lf, schema, from_csv):
        n_rows += batch.height
        if from_csv:
            n_short += int(batch[_SHORT_ROW].sum())
        parts.append(pl.DataFrame([pl.Series(name, st.add(batch[name]))
                                   for name, st in states.items()]))
        if unit is not None:
            unit_dtype = batch[unit].dtype
    if n_rows == 0:
        raise no_rows()
    if n_short:
        first = _first_bad_row(lf, _short_row(), from_csv)
        raise ragged_rows(n_short, first + 1)
    for (check, expr), i in zip(checks, position, strict=True):
        n_bad = states[check.column].bad_rows(i)
        if n_bad:
            first = _first_bad_row(lf, expr, from_csv)
            raise bad_rows(check.what, n_bad, first + 1, column=check.column, rule=check.rule)
    for c in schema.measured_columns:
        if states[c.name].unencodable():  # pragma: no cover - the checks prevent it
            raise InternalError(f"column {c.name!r}: a value that passed the checks has no code")
    frame = pl.concat(parts) if parts else pl.DataFrame()
    # the raw text of each patient id (by Categorical id), for bounding
    unit_values = unit_dtype.categories.to_series() if isinstance(unit_dtype, pl.Categorical) else None
    return CheckedTable(frame, n_rows, unit_values)


def _column_states(schema: Schema, checks: list[tuple[Check, pl.Expr]]
                   ) -> tuple[dict[str, _ColumnCodes], list[int]]:
    """One :class:`_ColumnCodes` per scanned column (the patient id first, then the
    released columns), holding that column's checks; and each check's index among
    its column's checks."""
    per_column: dict[str, list[pl.Expr]] = {}
    position = []
    for check, expr in checks:
        per_column.setdefault(check.column, []).append(expr)
        position.append(len(per_column[check.column]) - 1)
    states: dict[str, _ColumnCodes] = {}
    unit = schema.privacy_unit.column
    if unit is not None:
        states[unit] = _ColumnCodes(unit, None, per_column.get(unit, []), pl.UInt32)
    domain = Domain.from_schema(schema)
    for c, size in zip(domain.columns, domain.sizes, strict=True):
        states[c.name] = _ColumnCodes(c.name, column_exprs(c).code, per_column.get(c.name, []),
                                      _code_dtype(size))
    return states, position


def check_table(df: pl.DataFrame | pl.LazyFrame, schema: Schema, *, from_csv: bool = True) -> int:
    """Fail closed on the first violated (column, rule); never shows a value.
    Returns the number of rows (PRIVATE: never for anything released)."""
    return check_and_encode(df, schema, from_csv=from_csv).n_rows


def _code_dtype(size: int) -> type[pl.DataType]:
    return pl.UInt8 if size <= 255 else pl.UInt16 if size <= 65535 else pl.UInt32


def encode(df: pl.DataFrame | pl.LazyFrame, schema: Schema) -> np.ndarray:
    """Checked table -> integer codes (rows x released columns), row by row: the
    reference :func:`check_and_encode` is tested against."""
    domain = Domain.from_schema(schema)
    exprs = [column_exprs(c).code.cast(_code_dtype(s))
             for c, s in zip(domain.columns, domain.sizes, strict=True)]
    return to_codes(collect(df.lazy().select(exprs)), len(domain.columns))


def to_codes(out: pl.DataFrame, n_cols: int) -> np.ndarray:
    """A frame of code columns as one ``(rows, n_cols)`` array in their common type."""
    if out.height == 0:
        return np.zeros((0, n_cols), dtype=np.uint8)
    return np.column_stack([s.to_numpy() for s in out.iter_columns()]) if n_cols else \
        np.zeros((out.height, 0), dtype=np.uint8)
