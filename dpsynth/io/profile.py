"""Exact aggregates of a table no schema describes yet, for ``dpsynth schema draft`` (PRIVATE).

Owns: reading a table's header as public metadata (:func:`read_header`: column names,
and for Parquet the stored types), opening the table with every column as text (the
same :func:`~dpsynth.io.reading.open_table` and its file checks as a release, through a
provisional all-``text`` schema), keeping at most k rows per patient (the release's rule,
:func:`~dpsynth.io.bounding.bounding_mask`, on the patient id and a hash of each row's
text), and the exact counts the draft's DP steps add noise to (:class:`TableProfile`):

* per column, how many cells fall in each class of :data:`dpsynth.draft.CLASSES` (null, each public
  missing token, whole number, other number, ISO date, anything else) and how many
  distinct values it holds;
* a column's values with their counts (for key selection), or its codes' 3-character
  categories under a public code system (:mod:`dpsynth.code_systems`);
* per column, how many present cells have each code form of
  :data:`dpsynth.code_systems.CODE_FORMS`;
* numbers (or a date's year) counted in public cells: decades of magnitude, an equal
  grid, exact zeros and values on decimal grids;
* patients counted by their number of rows.

Everything is an aggregation of a lazy polars query run by the streaming engine, over
the contribution-bounded rows (the rows-per-patient count excepted, see there).

Must not: draw noise, return anything but to the draft session
(:class:`dpsynth.privacy.draft_session.DraftSession`, which charges before it answers),
or put a cell value in a message.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from dpsynth.code_systems import CATEGORY_PATTERN, CODE_FORMS, ICD9, ICD10, form_patterns
from dpsynth.draft import CLASSES, DATE_FORMAT, DECADES, MISSING_TOKENS
from dpsynth.errors import InputDataError
from dpsynth.input_rules import check_header, input_file_error, input_path_problem, parquet_unreadable
from dpsynth.io.bounding import bounding_mask
from dpsynth.io.reading import collect, is_parquet, parse_header
from dpsynth.schema import Column, PrivacyUnit, Schema

__all__ = ["TableProfile", "provisional_schema", "read_header"]

_ROW = "__dpsynth_draft_row"
_GRID_CELLS_MAX = 100_000
MAGNITUDE_BUCKETS = 2 * len(DECADES) + 1


def provisional_schema(names: Sequence[str]) -> Schema:
    """A schema that reads every column of the header as text: lets the release's reader
    (its file checks, CSV and Parquet handling) open a table no schema describes yet."""
    cols = tuple(Column(name=n, kind="text") for n in dict.fromkeys(names))
    return Schema(name="draft", version="0", description="", privacy_unit=PrivacyUnit(None, 1),
                  columns=cols)


def read_header(path: str | Path) -> tuple[list[str], dict[str, str] | None]:
    """The column names of a table, and for Parquet each column's stored type: public
    metadata, read without reading a cell. Duplicate names fail (rule ``duplicate-column``)."""
    p = Path(path)
    problem = input_path_problem(p)
    if problem is not None:
        raise input_file_error(str(p), problem)
    if p.stat().st_size == 0:
        raise InputDataError("the file is empty", rule="empty-file")
    if is_parquet(p):
        try:
            schema = pl.read_parquet_schema(p)
        except Exception:
            raise parquet_unreadable() from None
        names = list(schema)
        types: dict[str, str] | None = {n: _family(t) for n, t in schema.items()}
    else:
        with p.open("rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        try:
            with (gzip.open(p, "rb") if gz else p.open("rb")) as fh:
                first = fh.readline()
        except (OSError, EOFError, zlib.error):
            raise InputDataError("the gzip file is corrupt or truncated", rule="gzip") from None
        names, types = parse_header(first), None
    check_header(names, provisional_schema(names))
    return names, types


def _family(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return "integer"
    if dtype.is_float() or dtype.is_decimal():
        return "float"
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype == pl.Boolean:
        return "boolean"
    return "string"


def _number(c: str, kind: str) -> pl.Expr:
    """A cell as a number the way a release reads ``kind`` (``integer``/``float``; the
    year for ``date``); null when it does not parse."""
    s = pl.col(c).str.strip_chars()
    if kind == "integer":
        return s.cast(pl.Int64, strict=False).cast(pl.Float64)
    if kind == "date":
        return s.str.to_date(DATE_FORMAT, strict=False).dt.year().cast(pl.Float64)
    v = s.cast(pl.Float64, strict=False)
    return pl.when(v.is_finite()).then(v)


def _class(c: str) -> pl.Expr:
    raw = pl.col(c)
    s = raw.str.strip_chars()
    expr: Any = pl.when(raw.is_null()).then(0)
    for i, t in enumerate(MISSING_TOKENS, start=1):
        expr = expr.when(raw == t).then(i)
    n = len(MISSING_TOKENS) + 1
    return (expr.when(s.cast(pl.Int64, strict=False).is_not_null()).then(n)
            .when(s.cast(pl.Float64, strict=False).is_finite().fill_null(False)).then(n + 1)
            .when(s.str.to_date(DATE_FORMAT, strict=False).is_not_null()).then(n + 2)
            .when(s.str.contains(r"\s")).then(n + 3)
            .when(s.str.contains(_CODE_LIKE)).then(n + 4)
            .otherwise(n + 5))


_CODE_LIKE = "|".join(form_patterns()[2:])
"""A diagnosis code with a letter (an ICD-9 V or E code, an ICD-10 code): class ``code``."""


def _form(c: str) -> pl.Expr:
    """A present cell's index in :data:`CODE_FORMS` (null for a missing cell)."""
    raw = pl.col(c)
    s = raw.str.strip_chars()
    expr: Any = pl.when(raw.is_null() | raw.is_in(list(MISSING_TOKENS))).then(None)
    for i, pattern in enumerate(form_patterns()):
        expr = expr.when(s.str.contains(pattern)).then(i)
    return expr.otherwise(len(CODE_FORMS) - 1)


class TableProfile:
    """Exact aggregates of one table (PRIVATE). Hand it to a ``DraftSession`` and drop it.

    ``lf``: the table with every column as text (:func:`~dpsynth.io.reading.open_table`
    with :func:`provisional_schema`). With ``unit_column``, at most ``k`` rows per patient
    are kept (the release's bounding rule and ``secret``) before anything is counted, and
    a missing or blank patient id fails (rule ``privacy-unit-missing``).

    Everything is computed from one streaming pass over the bounded rows that counts each
    column's distinct cell texts (:meth:`_values`): a cell's class, number, magnitude or
    grid cell is a function of its text, so each is evaluated once per distinct text and
    weighted by its count. Memory grows with the distinct texts, not with the rows.
    """

    def __init__(self, lf: pl.LazyFrame, columns: Sequence[str], unit_column: str | None,
                 k: int, secret: bytes | int | None = None, *, parquet: bool = False) -> None:
        self._columns = tuple(columns)
        self._unit = unit_column
        self._parquet = parquet
        self._per_patient: np.ndarray | None = None
        self._lf = lf if unit_column is None else self._bounded(lf, unit_column, k, secret)
        self._counts: dict[str, pl.DataFrame] | None = None

    def _collect(self, lf: pl.LazyFrame) -> pl.DataFrame:
        return collect(lf, parquet=self._parquet)

    def _bounded(self, lf: pl.LazyFrame, unit: str, k: int,
                 secret: bytes | int | None) -> pl.LazyFrame:
        others = [c for c in self._columns if c != unit]
        content = (pl.struct(others).hash(seed=0) if others else pl.lit(0, dtype=pl.UInt64))
        # the patient id as a Categorical: a small integer a row, its text once per patient
        compact = self._collect(lf.select(pl.col(unit).cast(pl.Categorical),
                                          content.alias("__content")))
        ids = compact[unit]
        dtype = ids.dtype
        assert isinstance(dtype, pl.Categorical)
        codes = ids.to_physical()
        texts = dtype.categories.to_series()
        seen = texts.gather(codes.unique().drop_nulls())
        if ids.null_count() or (seen.str.strip_chars() == "").any():
            raise InputDataError("the patient id is missing", column=unit,
                                 rule="privacy-unit-missing")
        self._per_patient = codes.value_counts(name="r")["r"].to_numpy()
        mask = bounding_mask(compact.with_columns(codes.alias(unit)), unit, k, secret,
                             unit_values=texts)
        del compact, ids, codes, texts, seen
        if mask.all():
            return lf
        kept = pl.Series(_ROW, np.flatnonzero(mask).astype(np.uint32), dtype=pl.UInt32)
        return (lf.with_row_index(_ROW).filter(pl.col(_ROW).is_in(kept.implode()))
                .drop(_ROW))

    def _values(self, column: str) -> pl.DataFrame:
        """``column``'s distinct cell texts (null included) and their row counts ``n``."""
        if column == self._unit:
            raise ValueError("the patient id column is not profiled (it is the privacy unit)")
        if self._counts is None:
            cols = tuple(c for c in self._columns if c != self._unit)
            out = self._collect(
                self._lf.select([pl.col(c).alias(f"v{i}") for i, c in enumerate(cols)])
                .unpivot(variable_name="c", value_name="v")
                .group_by(["c", "v"]).agg(pl.len().cast(pl.Int64).alias("n")))
            parts = out.partition_by("c", as_dict=True, include_key=False)
            empty = pl.DataFrame({"v": pl.Series([], dtype=pl.String),
                                  "n": pl.Series([], dtype=pl.Int64)})
            self._counts = {c: parts.get((f"v{i}",), empty).rename({"v": c})
                            for i, c in enumerate(cols)}
        return self._counts[column]

    def _weighted(self, column: str, index: pl.Expr, n: int) -> np.ndarray:
        df = (self._values(column).select(index.alias("i"), "n").drop_nulls("i")
              .group_by("i").agg(pl.col("n").sum()))
        out = np.zeros(n, dtype=np.int64)
        out[df["i"].to_numpy().astype(np.int64)] = df["n"].to_numpy()
        return out

    # -- the aggregates --------------------------------------------------------------------

    def classes(self, column: str) -> np.ndarray:
        """Cells of ``column`` per class of :data:`dpsynth.draft.CLASSES` (each row in one)."""
        return self._weighted(column, _class(column), len(CLASSES))

    def distinct(self, column: str) -> int:
        """Distinct cell values of ``column`` (a missing cell counts as one value)."""
        return self._values(column).height

    def key_counts(self, column: str, exclude: Sequence[str],
                   non_numeric_only: bool) -> dict[str, int]:
        """Each value of ``column`` with its number of rows: not null, not in ``exclude``,
        and with ``non_numeric_only`` not readable as a number."""
        raw = pl.col(column)
        keep = raw.is_not_null() & ~raw.is_in(list(exclude))
        if non_numeric_only:
            keep &= _number(column, "float").is_null()
        df = self._values(column).filter(keep)
        return dict(zip(df[column].to_list(), df["n"].to_list(), strict=True))

    def outside_count(self, column: str, kept: Sequence[str], exclude: Sequence[str]) -> int:
        """Rows of ``column`` holding a value (not null, not in ``exclude``) that is not one
        of ``kept``."""
        raw = pl.col(column)
        keep = raw.is_not_null() & ~raw.is_in(list(exclude)) & ~raw.is_in(list(kept))
        return int(self._values(column).filter(keep)["n"].sum())

    def code_forms(self, column: str) -> np.ndarray:
        """Present cells of ``column`` (not null, not a public missing token) per code form
        of :data:`dpsynth.code_systems.CODE_FORMS` (each in one)."""
        return self._weighted(column, _form(column), len(CODE_FORMS))

    def category_counts(self, column: str, system: str) -> dict[str, int]:
        """Each 3-character category of the codes of ``column`` that match code system
        ``system``'s pattern (``icd9``, ``icd10``) with its number of rows; ICD-9 numbers
        without leading zeros (``008`` and ``8`` are one category)."""
        pattern = {"icd9": ICD9, "icd10": ICD10}[system].pattern
        s = pl.col(column).str.strip_chars()
        cat = s.str.extract(CATEGORY_PATTERN[system], 1)
        cat = pl.when(cat.str.contains(r"^\d+$")).then(
            cat.cast(pl.Int64, strict=False).cast(pl.String)).otherwise(cat)
        df = (self._values(column)
              .filter(s.str.contains(f"^(?:{pattern})$").fill_null(False))
              .select(cat.alias("k"), "n").group_by("k").agg(pl.col("n").sum()))
        return dict(zip(df["k"].to_list(), df["n"].to_list(), strict=True))

    def magnitude_counts(self, column: str, kind: str) -> np.ndarray:
        """Values of ``column`` (read as ``kind``) per magnitude bucket
        (:func:`dpsynth.draft.magnitude_edges`)."""
        v = _number(column, kind)
        mid = len(DECADES)
        d = (v.abs().log10().floor().clip(DECADES[0], DECADES[-1]) - DECADES[0]).cast(pl.Int64)
        index = pl.when(v.abs() < 1e-3).then(mid).when(v > 0).then(mid + 1 + d) \
            .otherwise(mid - 1 - d)
        return self._weighted(column, index, MAGNITUDE_BUCKETS)

    def grid_counts(self, column: str, kind: str, origin: float, width: float,
                    n: int) -> np.ndarray:
        """Values of ``column`` (read as ``kind``) in ``n`` cells ``[origin + i * width,
        origin + (i + 1) * width)``; values outside go to the end cells."""
        if not 1 <= n <= _GRID_CELLS_MAX or not width > 0:
            raise ValueError("grid must have 1..100000 cells of positive width")
        index = ((_number(column, kind) - origin) / width).floor().clip(0, n - 1)
        return self._weighted(column, index.cast(pl.Int64), int(n))

    def edge_counts(self, column: str, kind: str, edges: Sequence[float]) -> np.ndarray:
        """Values of ``column`` (read as ``kind``) in the cells ``[edges[i], edges[i+1])``;
        values outside go to the end cells."""
        if not 2 <= len(edges) <= _GRID_CELLS_MAX:
            raise ValueError("cells need 2..100000 increasing edges")
        v = _number(column, kind)
        inner = pl.lit(pl.Series([float(e) for e in edges[1:-1]], dtype=pl.Float64)).implode()
        index = pl.when(v.is_not_null()).then(inner.explode().search_sorted(v, side="right"))
        return self._weighted(column, index.cast(pl.Int64), len(edges) - 1)

    def exact_counts(self, column: str, kind: str, precisions: Sequence[float]) -> np.ndarray:
        """``[values read, exact zeros, values on the grid of each of precisions]``."""
        v = _number(column, kind)
        n = pl.col("n")
        aggs = [(v.is_not_null() * n).sum(), ((v == 0).fill_null(False) * n).sum()]
        for p in precisions:
            q = v / p
            on = ((q - q.round()).abs() <= 1e-9 * pl.max_horizontal(q.abs(), pl.lit(1.0)))
            aggs.append((on.fill_null(False) * n).sum())
        row = self._values(column).select([a.alias(f"a{i}") for i, a in enumerate(aggs)]).row(0)
        return np.asarray([int(x or 0) for x in row], dtype=np.int64)

    def rows_per_patient(self, cap: int) -> np.ndarray:
        """Patients by their number of rows in the whole table (before bounding): cell
        ``i`` counts patients with ``i + 1`` rows, the last cell those with ``cap`` or
        more. Adding or removing one patient changes one cell by one."""
        if self._per_patient is None:
            raise ValueError("rows per patient needs a patient id column")
        return np.bincount(np.clip(self._per_patient, 1, cap) - 1, minlength=cap).astype(np.int64)
