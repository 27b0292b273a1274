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
* a column's values with their counts (for key selection);
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
            .otherwise(n + 4))


def _norm(req: Sequence[Any]) -> tuple[Any, ...]:
    """A request in one canonical form (the cache's key)."""
    what, column = str(req[0]), str(req[1])
    if what == "keys":
        return (what, column, tuple(str(t) for t in req[2]), bool(req[3]))
    if what == "magnitudes":
        return (what, column, str(req[2]))
    if what == "grid":
        return (what, column, str(req[2]), float(req[3]), float(req[4]), int(req[5]))
    if what == "exact":
        return (what, column, str(req[2]), tuple(float(p) for p in req[3]))
    if what == "edges":
        return (what, column, str(req[2]), tuple(float(e) for e in req[3]))
    raise ValueError(f"unknown profile request {what!r}")


class TableProfile:
    """Exact aggregates of one table (PRIVATE). Hand it to a ``DraftSession`` and drop it.

    ``lf``: the table with every column as text (:func:`~dpsynth.io.reading.open_table`
    with :func:`provisional_schema`). With ``unit_column``, at most ``k`` rows per patient
    are kept (the release's bounding rule and ``secret``) before anything is counted, and
    a missing or blank patient id fails (rule ``privacy-unit-missing``).
    """

    def __init__(self, lf: pl.LazyFrame, columns: Sequence[str], unit_column: str | None,
                 k: int, secret: bytes | int | None = None, *, parquet: bool = False) -> None:
        self._columns = tuple(columns)
        self._unit = unit_column
        self._parquet = parquet
        self._all = lf
        self._lf = lf if unit_column is None else self._bounded(lf, unit_column, k, secret)
        self._classes: dict[str, np.ndarray] | None = None
        self._distinct: dict[str, int] | None = None
        self._cache: dict[tuple[Any, ...], Any] = {}

    def _collect(self, lf: pl.LazyFrame) -> pl.DataFrame:
        return collect(lf, parquet=self._parquet)

    def _bounded(self, lf: pl.LazyFrame, unit: str, k: int,
                 secret: bytes | int | None) -> pl.LazyFrame:
        others = [c for c in self._columns if c != unit]
        content = (pl.struct(others).hash(seed=0) if others else pl.lit(0, dtype=pl.UInt64))
        compact = self._collect(lf.select(pl.col(unit), content.alias("__content")))
        ids = compact[unit]
        if ids.null_count() or (ids.str.strip_chars() == "").any():
            raise InputDataError("the patient id is missing", column=unit,
                                 rule="privacy-unit-missing")
        mask = bounding_mask(compact, unit, k, secret)
        del compact, ids
        if mask.all():
            return lf
        kept = pl.DataFrame({_ROW: pl.Series(np.flatnonzero(mask).astype(np.uint32),
                                             dtype=pl.UInt32)})
        return (lf.with_row_index(_ROW).join(kept.lazy(), on=_ROW, how="semi")
                .drop(_ROW))

    # -- one pass: classes and distinct values of every column ---------------------------

    def _scan(self) -> None:
        cols = self._columns
        parts = [_class(c).alias(f"c{i}") for i, c in enumerate(cols)]
        parts += [pl.col(c).hash(seed=0).alias(f"h{i}") for i, c in enumerate(cols)]
        aggs = [(pl.col(f"c{i}") == j).sum().alias(f"c{i}_{j}")
                for i in range(len(cols)) for j in range(len(CLASSES))]
        aggs += [pl.col(f"h{i}").n_unique().alias(f"h{i}") for i in range(len(cols))]
        row = self._collect(self._lf.select(parts).select(aggs)).row(0)
        n = len(CLASSES)
        self._classes = {c: np.asarray(row[i * n:(i + 1) * n], dtype=np.int64)
                         for i, c in enumerate(cols)}
        base = len(cols) * n
        self._distinct = {c: int(row[base + i]) for i, c in enumerate(cols)}

    def classes(self, column: str) -> np.ndarray:
        """Cells of ``column`` per class of :data:`CLASSES` (each row in one class)."""
        if self._classes is None:
            self._scan()
        assert self._classes is not None
        return self._classes[column]

    def distinct(self, column: str) -> int:
        """Distinct cell values of ``column`` (counted by a 64-bit hash of each value)."""
        if self._distinct is None:
            self._scan()
        assert self._distinct is not None
        return self._distinct[column]

    # -- per column, answered in batches: one pass over the table per kind of request --------

    def prefetch(self, requests: Sequence[tuple[Any, ...]]) -> None:
        """Count every request not counted yet, in one pass per kind of request:
        ``("keys", column, exclude, non_numeric_only)``, ``("magnitudes", column, kind)``,
        ``("grid", column, kind, origin, width, n)``, ``("exact", column, kind, precisions)``.
        The results wait here for the per-column methods below."""
        todo = [r for r in dict.fromkeys(_norm(r) for r in requests) if r not in self._cache]
        keys = [r for r in todo if r[0] == "keys"]
        cells = [r for r in todo if r[0] in ("magnitudes", "grid", "edges")]
        exact = [r for r in todo if r[0] == "exact"]
        if keys:
            exprs = []
            for i, (_, column, exclude, non_numeric) in enumerate(keys):
                raw = pl.col(column)
                keep = raw.is_not_null() & ~raw.is_in(list(exclude))
                if non_numeric:
                    keep &= _number(column, "float").is_null()
                exprs.append(pl.when(keep).then(raw).alias(f"k{i}"))
            df = self._collect(self._lf.select(exprs).unpivot(variable_name="r", value_name="v")
                               .drop_nulls("v").group_by(["r", "v"]).agg(pl.len().alias("n")))
            found: dict[str, dict[str, int]] = {f"k{i}": {} for i in range(len(keys))}
            for r, v, n in df.iter_rows():
                found[r][v] = int(n)
            for i, req in enumerate(keys):
                self._cache[req] = found[f"k{i}"]
        if cells:
            exprs, sizes = [], []
            for i, req in enumerate(cells):
                index, n = self._cell_index(req)
                exprs.append(index.alias(f"g{i}"))
                sizes.append(n)
            df = self._collect(self._lf.select(exprs).unpivot(variable_name="r", value_name="i")
                               .drop_nulls("i").group_by(["r", "i"]).agg(pl.len().alias("n")))
            arrays = [np.zeros(n, dtype=np.int64) for n in sizes]
            for r, i, n in df.iter_rows():
                arrays[int(r[1:])][int(i)] = int(n)
            for req, arr in zip(cells, arrays, strict=True):
                self._cache[req] = arr
        if exact:
            aggs: list[pl.Expr] = []
            spans = []
            for _, column, kind, precisions in exact:
                v = _number(column, kind)
                start = len(aggs)
                aggs += [v.is_not_null().sum(), (v == 0).sum()]
                for p in precisions:
                    q = v / p
                    aggs.append(((q - q.round()).abs()
                                 <= 1e-9 * pl.max_horizontal(q.abs(), pl.lit(1.0))).sum())
                spans.append((start, len(aggs)))
            row = self._collect(self._lf.select([a.alias(f"a{i}") for i, a in enumerate(aggs)])
                                ).row(0)
            for req, (lo, hi) in zip(exact, spans, strict=True):
                self._cache[req] = np.asarray([int(x or 0) for x in row[lo:hi]], dtype=np.int64)

    def _cell_index(self, req: tuple[Any, ...]) -> tuple[pl.Expr, int]:
        if req[0] == "magnitudes":
            v = _number(req[1], req[2])
            mid = len(DECADES)
            d = (v.abs().log10().floor().clip(DECADES[0], DECADES[-1]) - DECADES[0]
                 ).cast(pl.Int64)
            return (pl.when(v.abs() < 1e-3).then(mid).when(v > 0).then(mid + 1 + d)
                    .otherwise(mid - 1 - d)), MAGNITUDE_BUCKETS
        if req[0] == "edges":
            _, column, kind, edges = req
            if len(edges) < 2 or len(edges) > _GRID_CELLS_MAX:
                raise ValueError("cells need 2..100000 increasing edges")
            index = _number(column, kind).cut(list(edges[1:-1]), left_closed=True)
            return index.to_physical().cast(pl.Int64), len(edges) - 1
        _, column, kind, origin, width, n = req
        if not 1 <= n <= _GRID_CELLS_MAX or not width > 0:
            raise ValueError("grid must have 1..100000 cells of positive width")
        v = _number(column, kind)
        return ((v - origin) / width).floor().clip(0, n - 1).cast(pl.Int64), int(n)

    def _get(self, req: tuple[Any, ...]) -> Any:
        req = _norm(req)
        if req not in self._cache:
            self.prefetch([req])
        return self._cache[req]

    def key_counts(self, column: str, exclude: Sequence[str],
                   non_numeric_only: bool) -> dict[str, int]:
        """Each value of ``column`` with its number of rows: not null, not in ``exclude``,
        and with ``non_numeric_only`` not readable as a number."""
        out: dict[str, int] = self._get(("keys", column, tuple(exclude), bool(non_numeric_only)))
        return out

    def magnitude_counts(self, column: str, kind: str) -> np.ndarray:
        """Values of ``column`` (read as ``kind``) per magnitude bucket
        (:func:`dpsynth.draft.magnitude_edges`)."""
        out: np.ndarray = self._get(("magnitudes", column, kind))
        return out

    def grid_counts(self, column: str, kind: str, origin: float, width: float,
                    n: int) -> np.ndarray:
        """Values of ``column`` (read as ``kind``) in ``n`` cells ``[origin + i * width,
        origin + (i + 1) * width)``; values outside go to the end cells."""
        out: np.ndarray = self._get(("grid", column, kind, float(origin), float(width), int(n)))
        return out

    def edge_counts(self, column: str, kind: str, edges: Sequence[float]) -> np.ndarray:
        """Values of ``column`` (read as ``kind``) in the cells ``[edges[i], edges[i+1])``;
        values outside go to the end cells."""
        out: np.ndarray = self._get(("edges", column, kind, tuple(float(e) for e in edges)))
        return out

    def exact_counts(self, column: str, kind: str, precisions: Sequence[float]) -> np.ndarray:
        """``[values read, exact zeros, values on the grid of each of precisions]``."""
        out: np.ndarray = self._get(("exact", column, kind, tuple(float(p) for p in precisions)))
        return out

    def rows_per_patient(self, cap: int) -> np.ndarray:
        """Patients by their number of rows in the whole table (before bounding): cell
        ``i`` counts patients with ``i + 1`` rows, the last cell those with ``cap`` or
        more. Adding or removing one patient changes one cell by one."""
        if self._unit is None:
            raise ValueError("rows per patient needs a patient id column")
        per = self._all.group_by(self._unit).agg(pl.len().alias("r"))
        df = self._collect(per.select((pl.col("r").clip(1, cap) - 1).alias("i"))
                           .group_by("i").agg(pl.len().alias("n")))
        out = np.zeros(cap, dtype=np.int64)
        out[df["i"].to_numpy().astype(np.int64)] = df["n"].to_numpy()
        return out
