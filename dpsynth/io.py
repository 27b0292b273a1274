"""Reading the private table: read, check against the schema, bound, encode (PRIVATE).

This is the only module that opens the private input. It reads CSV, gzip CSV and
Parquet with polars (every CSV cell as text, so ICD codes and ``None`` keep their
form), checks the table against the schema and fails closed with an
:class:`InputDataError` naming the column and the rule, keeps at most k rows per
patient, and encodes the released columns to integer codes over the public
domain.

Rules for this module: messages name columns, rules, counts and row numbers,
never a cell value; nothing here draws DP noise; nothing after the privacy
boundary (engines, sampler, reports, bundle) may import it.

Contribution bounding randomness: rows of each patient are ranked by a random
permutation of row numbers drawn by ``numpy.random.default_rng(seed)``; with no
seed, the seed comes from the operating system (``secrets.randbits``). The
choice of which rows survive does not need to be secret for the DP guarantee
(any rule that looks at one patient's rows only keeps sensitivity at k), so a
seed may be given for reproducibility.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from dpsynth.domain import Domain, column_exprs
from dpsynth.errors import InputDataError, InternalError
from dpsynth.schema import Column, Schema

__all__ = [
    "CheckedTable",
    "EncodedTable",
    "bound_contributions",
    "check_and_encode",
    "check_table",
    "encode",
    "is_parquet",
    "load_encoded",
    "open_table",
    "read_table",
]

_TEMPORAL = (pl.Date, pl.Datetime)
_CHUNK = 1 << 24


@dataclass(frozen=True)
class EncodedTable:
    """Contribution-bounded, integer-coded released columns. PRIVATE: hand it to a
    MeasurementSession and drop the reference."""

    codes: np.ndarray
    columns: tuple[str, ...]
    sizes: tuple[int, ...]
    contribution_bound: int


def _sniff_format(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:2] == b"\x1f\x8b":
        return "csv.gz"
    if head == b"PAR1":
        return "parquet"
    return "csv"


def _header(raw_first_line: bytes) -> list[str]:
    try:
        text = raw_first_line.decode("utf-8")
    except UnicodeDecodeError:
        raise InputDataError("the header is not valid UTF-8", rule="encoding") from None
    text = text.lstrip("\ufeff").rstrip("\r\n")
    return next(csv.reader([text]), [])


def _check_header(names: list[str], schema: Schema) -> None:
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise InputDataError("the column name appears more than once in the header",
                                 column=n, rule="duplicate-column")
        seen.add(n)
    expected = [c.name for c in schema.columns]
    for n in expected:
        if n not in seen:
            raise InputDataError("the schema's column is missing from the table",
                                 column=n, rule="missing-column")
    for n in names:
        if n not in expected:
            raise InputDataError("the table has a column the schema does not define",
                                 column=n, rule="extra-column")


@contextlib.contextmanager
def open_table(path: str | Path, schema: Schema) -> Iterator[pl.LazyFrame]:
    """Open the table lazily after checking its header and encoding.

    Every column comes back as text (temporal Parquet columns as ISO text), so
    codes such as ICD-9 keep their form. A gzip CSV is first decompressed into a
    private temporary directory (mode 0700) that is removed on exit.
    """
    p = Path(path)
    if not p.is_file():
        raise InputDataError(f"input file {str(p)!r} does not exist or is not a file",
                             rule="input-file")
    if p.stat().st_size == 0:
        raise InputDataError("the input file is empty", rule="empty-file")
    fmt = _sniff_format(p)
    if fmt == "parquet":
        yield _scan_parquet(p, schema)
        return
    with tempfile.TemporaryDirectory(prefix="dpsynth-input-") as tmp:
        if fmt == "csv.gz":
            plain = Path(tmp) / "input.csv"
            try:
                with gzip.open(p, "rb") as src, plain.open("wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
            except (OSError, EOFError):
                raise InputDataError("the gzip file is corrupt or truncated", rule="gzip") from None
            p = plain
        _check_csv_bytes(p, schema)
        yield pl.scan_csv(p, infer_schema=False, empty_string_is_null=False,
                          truncate_ragged_lines=False, encoding="utf8")


def _check_csv_bytes(p: Path, schema: Schema) -> None:
    """Header names, then strict UTF-8 over the whole file (streamed)."""
    with p.open("rb") as fh:
        first = fh.readline()
        if not first.strip() and not fh.read(1 << 16).strip():
            raise InputDataError("the input file is empty", rule="empty-file")
        _check_header(_header(first), schema)
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        lines = 0
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line = lines + chunk.count(b"\n", 0, exc.start) + 1
                raise InputDataError(f"the file is not valid UTF-8 (first bad byte on line {line})",
                                     rule="encoding") from None
            lines += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputDataError("the file is not valid UTF-8 (it ends inside a character)",
                                 rule="encoding") from None


def _collect(lf: pl.LazyFrame) -> pl.DataFrame:
    """Collect with the streaming engine; a polars error never shows its text
    (it may quote a cell)."""
    try:
        return lf.collect(engine="streaming")
    except pl.exceptions.PolarsError:
        raise InputDataError("the file could not be parsed (ragged rows, bad quoting or a "
                             "corrupt file)", rule="csv-format") from None


def is_parquet(path: str | Path) -> bool:
    return _sniff_format(Path(path)) == "parquet"


def read_table(path: str | Path, schema: Schema) -> pl.DataFrame:
    """Read the whole table as text into memory (small tables only; the tests use it)."""
    with open_table(path, schema) as lf:
        df = _collect(lf)
    if df.height == 0:
        raise InputDataError("the table has a header but no rows", rule="no-rows")
    return df


def _scan_parquet(p: Path, schema: Schema) -> pl.LazyFrame:
    try:
        lf = pl.scan_parquet(p)
        file_schema = lf.collect_schema()
    except pl.exceptions.PolarsError:
        raise InputDataError("the file could not be read as Parquet", rule="parquet-format") from None
    _check_header(list(file_schema.names()), schema)
    casts = []
    for c in schema.columns:
        dtype = file_schema[c.name]
        _check_parquet_type(c, dtype)
        if c.kind in ("date", "datetime") and isinstance(dtype, _TEMPORAL):
            casts.append(pl.col(c.name).cast(pl.Datetime("us")).dt.strftime("%Y-%m-%dT%H:%M:%S%.f")
                         if c.kind == "datetime" else pl.col(c.name).cast(pl.Date).cast(pl.String))
        else:
            casts.append(pl.col(c.name).cast(pl.String))
    return lf.select(casts)


def _check_parquet_type(c: Column, dtype: pl.DataType) -> None:
    ok: bool
    if c.kind in ("identifier", "text"):
        ok = True
    elif c.kind == "integer":
        ok = dtype.is_integer() or dtype == pl.String
    elif c.kind == "float":
        ok = dtype.is_numeric() or dtype == pl.String
    elif c.kind in ("date", "datetime"):
        ok = isinstance(dtype, _TEMPORAL) or dtype == pl.String
    elif c.kind == "boolean":
        ok = dtype == pl.Boolean or dtype.is_integer() or dtype == pl.String
    else:  # categorical, code: text, or integer codes
        ok = dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum) or dtype.is_integer()
    if not ok:
        raise InputDataError(f"the Parquet type {dtype} does not fit kind {c.kind}",
                             column=c.name, rule="type")


def schema_checks(schema: Schema, exprs_of: Callable[[Column], Any],
                  unit_missing: Any) -> list[tuple[str | None, str, str, Any]]:
    """The ordered (column, rule, message, bad-row expression) list of the schema's
    rules. Shared by every backend: ``exprs_of`` builds a column's missing /
    malformed / out-of-domain expressions in the backend's own language (polars
    here, Spark SQL in ``dpsynth.marginals.spark``); ``unit_missing`` flags rows
    without a patient id (``None``: no patient id column)."""
    checks: list[tuple[str | None, str, str, Any]] = []
    if schema.privacy_unit.column is not None:
        checks.append((schema.privacy_unit.column, "privacy-unit-missing",
                       "the patient id is missing", unit_missing))
    for c in schema.measured_columns:
        e = exprs_of(c)
        if not c.nullable:
            checks.append((c.name, "not-nullable", "missing value in a non-nullable column",
                           e.missing))
        if e.malformed_rule:
            checks.append((c.name, e.malformed_rule, f"value cannot be read as {c.kind}",
                           e.malformed))
        if c.on_out_of_domain == "reject":
            checks.append((c.name, e.domain_rule, "value outside the schema's domain",
                           e.out_of_domain))
    return checks


_SHORT_ROW = "__dpsynth_short_row"
_BATCH_ROWS = 1 << 18
_NUMPY_CODE: dict[Any, type[np.unsignedinteger]] = {
    pl.UInt8: np.uint8, pl.UInt16: np.uint16, pl.UInt32: np.uint32}


@dataclass(frozen=True)
class CheckedTable:
    """A checked table (PRIVATE): the patient id column (if any) as integer ids, one
    per distinct patient id, and the released columns as compact integer codes.
    ``n_rows`` is for bounding and the audit only."""

    frame: pl.DataFrame
    n_rows: int


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
        if self._code is None:
            return ids.astype(self._np_dtype)
        out = self.codes[ids]
        if null is not None:
            self.nulls += int(null.sum())
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
        # also reads a short row's missing fields as "" (the column rules then
        # reject it, unless "" is a valid value there), so this flag is a guard;
        # touching every column is what makes polars reject rows with more fields.
        select.append(_short_row().alias(_SHORT_ROW))
    try:
        yield from lf.select(select).collect_batches(chunk_size=_BATCH_ROWS, engine="streaming")
    except pl.exceptions.PolarsError:
        raise InputDataError("the file could not be parsed (ragged rows, bad quoting or a "
                             "corrupt file)", rule="csv-format") from None


def _short_row() -> pl.Expr:
    """A CSV row with fewer fields than the header (some cell is null)."""
    return pl.any_horizontal(pl.all().is_null())


def _first_bad_row(lf: pl.LazyFrame, expr: pl.Expr) -> int:
    """Second pass, only for a failing table: the first row a rule rejects."""
    first = _collect(lf.with_row_index("__dpsynth_row").filter(expr.fill_null(False))
                     .select(pl.col("__dpsynth_row").min())).item()
    return int(first)


def check_and_encode(lf: pl.DataFrame | pl.LazyFrame, schema: Schema, *,
                     from_csv: bool = True) -> CheckedTable:
    """Check the table against the schema and encode it, in one streaming pass.

    Every rule and every code is a function of one cell, so each is evaluated once
    per distinct value of a column (:class:`_ColumnCodes`). Memory is the compact
    codes plus one batch. Fails closed on the first violated (column, rule), in the
    order of :func:`schema_checks`, with the number of bad rows and (from a second
    pass, only then) the first one; never shows a value.
    """
    lf = lf.lazy()
    unit = schema.privacy_unit.column
    unit_missing = None
    if unit is not None:
        uid = pl.col(unit)
        unit_missing = uid.is_null() | (uid.str.strip_chars() == "")
    checks = schema_checks(schema, column_exprs, unit_missing)
    domain = Domain.from_schema(schema)
    states: dict[str, _ColumnCodes] = {}
    per_column: dict[str | None, list[pl.Expr]] = {}
    position = []  # each check's index among its column's rules
    for col, _rule, _what, expr in checks:
        per_column.setdefault(col, []).append(expr)
        position.append(len(per_column[col]) - 1)
    if unit is not None:
        states[unit] = _ColumnCodes(unit, None, per_column.get(unit, []), pl.UInt32)
    for c, size in zip(domain.columns, domain.sizes, strict=True):
        states[c.name] = _ColumnCodes(c.name, column_exprs(c).code, per_column.get(c.name, []),
                                      _code_dtype(size))
    parts: list[pl.DataFrame] = []
    n_rows = n_short = 0
    for batch in _scan(lf, schema, from_csv):
        n_rows += batch.height
        if from_csv:
            n_short += int(batch[_SHORT_ROW].sum())
        parts.append(pl.DataFrame([pl.Series(name, st.add(batch[name]))
                                   for name, st in states.items()]))
    if n_rows == 0:
        raise InputDataError("the table has a header but no rows", rule="no-rows")
    if n_short:
        first = _first_bad_row(lf, _short_row())
        raise InputDataError(f"a row has fewer fields than the header in {n_short} row(s), "
                             f"first at data row {first + 1}", rule="csv-format")
    for (col, rule, what, expr), i in zip(checks, position, strict=True):
        n_bad = states[str(col)].bad_rows(i)
        if n_bad:
            first = _first_bad_row(lf, expr)
            raise InputDataError(f"{what} in {n_bad} row(s), first at data row {first + 1}",
                                 column=col, rule=rule)
    for c in domain.columns:
        if states[c.name].unencodable():  # pragma: no cover - the checks prevent it
            raise InternalError(f"column {c.name!r}: a value that passed the checks has no code")
    frame = pl.concat(parts) if parts else pl.DataFrame()
    return CheckedTable(frame, n_rows)


def check_table(df: pl.DataFrame | pl.LazyFrame, schema: Schema, *, from_csv: bool = True) -> int:
    """Fail closed on the first violated (column, rule); never shows a value.
    Returns the number of rows (PRIVATE: never for anything released)."""
    return check_and_encode(df, schema, from_csv=from_csv).n_rows


def bound_contributions(df: pl.DataFrame, unit_column: str, k: int,
                        seed: int | None = None) -> pl.DataFrame:
    """Keep at most ``k`` rows per patient, chosen uniformly at random.

    Row ``i`` (file order) gets the key ``permutation[i]`` of a permutation drawn by
    ``numpy.random.default_rng(seed)``; each patient keeps its ``k`` rows with the
    smallest keys. Any backend that numbers rows in file order reproduces the same
    choice from the same seed.
    """
    if seed is None:
        seed = secrets.randbits(63)
    key = np.random.default_rng(seed).permutation(df.height)
    unit = df[unit_column]
    patient = (unit if unit.dtype.is_integer() else unit.rank("dense")).to_numpy()
    # rows sorted by patient, then key; a row's rank is its place in its patient's run
    order = np.lexsort((key, patient))
    del key
    run_start = np.ones(order.size, dtype=bool)
    run_start[1:] = patient[order[1:]] != patient[order[:-1]]
    position = np.arange(order.size)
    rank = position - np.maximum.accumulate(np.where(run_start, position, 0))
    keep = np.zeros(order.size, dtype=bool)
    keep[order[rank < k]] = True
    return df.filter(pl.Series(keep))


def _code_dtype(size: int) -> type[pl.DataType]:
    return pl.UInt8 if size <= 255 else pl.UInt16 if size <= 65535 else pl.UInt32


def encode_exprs(schema: Schema) -> list[pl.Expr]:
    """Code expressions for the released columns, in the smallest integer type."""
    domain = Domain.from_schema(schema)
    return [column_exprs(c).code.cast(_code_dtype(s))
            for c, s in zip(domain.columns, domain.sizes, strict=True)]


def encode(df: pl.DataFrame | pl.LazyFrame, schema: Schema) -> np.ndarray:
    """Checked table -> integer codes (rows x released columns), row by row: the
    reference :func:`check_and_encode` is tested against."""
    out = _collect(df.lazy().select(encode_exprs(schema)))
    return _to_codes(out, len(schema.measured_columns))


def _to_codes(out: pl.DataFrame, n_cols: int) -> np.ndarray:
    if out.height == 0:
        return np.zeros((0, n_cols), dtype=np.uint8)
    return np.column_stack([s.to_numpy() for s in out.iter_columns()]) if n_cols else \
        np.zeros((out.height, 0), dtype=np.uint8)


def load_encoded(path: str | Path, schema: Schema, bounding_seed: int | None = None) -> EncodedTable:
    """Read, check, bound and encode: the whole private half of the pipeline.

    One streaming pass over the file (:func:`check_and_encode`); bounding runs on
    the compact codes, so memory grows with the number of rows times released
    columns (one or two bytes each) plus a 4-byte patient id, not with the text.
    """
    unit = schema.privacy_unit
    domain = Domain.from_schema(schema)
    with open_table(path, schema) as lf:
        compact = check_and_encode(lf, schema, from_csv=not is_parquet(path)).frame
    if unit.column is not None:
        compact = bound_contributions(compact, unit.column, unit.max_rows, bounding_seed)
        compact = compact.drop(unit.column)
    codes = _to_codes(compact, len(domain.columns))
    return EncodedTable(codes=codes, columns=domain.names, sizes=domain.sizes,
                        contribution_bound=unit.max_rows)
