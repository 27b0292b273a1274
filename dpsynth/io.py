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
    """Read the whole table as text into memory (for small tables and the audit)."""
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


@dataclass(frozen=True)
class CheckedTable:
    """A checked table: the patient id column (if any) and the released columns as
    compact integer codes (PRIVATE). ``n_rows`` is for bounding and the audit only."""

    frame: pl.DataFrame
    n_rows: int


def _scan_categorical(lf: pl.LazyFrame, schema: Schema, from_csv: bool) -> pl.DataFrame:
    """The one streaming pass over the file: every released column as a Categorical
    over its own fresh set of categories (so a column's physical ids are 0..k-1 for
    its k distinct raw values), the patient id as text, and (CSV) a short-row flag."""
    namespace = f"dpsynth-{secrets.token_hex(8)}"
    select: list[pl.Expr] = []
    unit = schema.privacy_unit.column
    if unit is not None:
        select.append(pl.col(unit))
    select += [pl.col(c.name).cast(pl.Categorical(pl.Categories(c.name, namespace)))
               for c in schema.measured_columns]
    if from_csv:
        # Empty CSV fields arrive as "" (empty_string_is_null=False), so a null can
        # only be a row with fewer fields than the header; touching every column
        # also makes polars reject rows with more fields.
        select.append(pl.any_horizontal(pl.all().is_null()).alias(_SHORT_ROW))
    return _collect(lf.select(select))


@dataclass
class _Distinct:
    """One column's distinct raw values (``values``, the last one null) and how many
    rows hold each (``counts``); ``index()`` maps every row to its value's position."""

    column: pl.Series
    values: pl.DataFrame
    counts: np.ndarray

    @classmethod
    def of(cls, s: pl.Series) -> _Distinct:
        uniq = s.unique().drop_nulls()
        ids = uniq.to_physical().to_numpy()
        k = int(ids.max()) + 1 if ids.size else 0
        text = pl.Series(s.name, [None] * (k + 1), dtype=pl.String).scatter(
            ids, uniq.cast(pl.String))
        return cls(s, text.to_frame(), np.bincount(cls._index(s, k), minlength=k + 1))

    @staticmethod
    def _index(s: pl.Series, k: int) -> np.ndarray:
        return s.to_physical().fill_null(k).to_numpy()

    def index(self) -> np.ndarray:
        return self._index(self.column, len(self.counts) - 1)

    def lut(self, expr: pl.Expr) -> np.ndarray:
        return self.values.select(expr.alias("v")).to_series().to_numpy()


def check_and_encode(lf: pl.DataFrame | pl.LazyFrame, schema: Schema, *,
                     from_csv: bool = True) -> CheckedTable:
    """Check the table against the schema and encode it, in one pass over the file.

    Every rule and every code is a function of one cell, so each is evaluated once
    per distinct value of a column (with the same expressions as
    :func:`dpsynth.domain.column_exprs`) and mapped back to rows by index. Fails
    closed on the first violated (column, rule), in the order of
    :func:`schema_checks`, with the number of bad rows and the first one; never
    shows a value.
    """
    scanned = _scan_categorical(lf.lazy(), schema, from_csv)
    n_rows = scanned.height
    if n_rows == 0:
        raise InputDataError("the table has a header but no rows", rule="no-rows")
    unit = schema.privacy_unit.column
    if from_csv:
        short = scanned.drop_in_place(_SHORT_ROW)
        if short.any():
            raise InputDataError(
                f"a row has fewer fields than the header in {short.sum()} row(s), "
                f"first at data row {int(short.arg_max() or 0) + 1}", rule="csv-format")
    unit_missing = None
    if unit is not None:
        uid = pl.col(unit)
        unit_missing = uid.is_null() | (uid.str.strip_chars() == "")
    distinct = {c.name: _Distinct.of(scanned[c.name]) for c in schema.measured_columns}
    for col, rule, what, expr in schema_checks(schema, column_exprs, unit_missing):
        if col in distinct:
            d = distinct[col]
            bad_value = d.lut(expr.fill_null(False)).astype(bool)
            n_bad = int(d.counts[bad_value].sum())
            first = int(np.argmax(bad_value[d.index()])) if n_bad else 0
        else:  # the patient id: checked row by row
            n_bad, first = scanned.select(expr.sum().alias("n"), expr.arg_max().alias("i")).row(0)
        if n_bad:
            raise InputDataError(
                f"{what} in {n_bad} row(s), first at data row {first + 1}", column=col, rule=rule)
    domain = Domain.from_schema(schema)
    out: list[pl.Series] = [scanned[unit]] if unit is not None else []
    for c, size in zip(domain.columns, domain.sizes, strict=True):
        d = distinct.pop(c.name)
        scanned.drop_in_place(c.name)  # frees the column once d is gone
        code = d.values.select(column_exprs(c).code).to_series()
        if code.filter(pl.Series(d.counts > 0)).null_count():  # pragma: no cover - checked above
            raise InternalError(f"column {c.name!r}: a value that passed the checks has no code")
        out.append(pl.Series(c.name, code.fill_null(0).cast(_code_dtype(size)).to_numpy()[d.index()]))
    return CheckedTable(pl.DataFrame(out), n_rows)


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
    rng = np.random.default_rng(seed)
    key = pl.Series("__dpsynth_key", rng.permutation(df.height))
    return (
        df.with_columns(key)
        .filter(pl.col("__dpsynth_key").rank("ordinal").over(unit_column) <= k)
        .drop("__dpsynth_key")
    )


def _code_dtype(size: int) -> type[pl.DataType]:
    return pl.UInt8 if size <= 255 else pl.UInt16 if size <= 65535 else pl.UInt32


def encode_exprs(schema: Schema) -> list[pl.Expr]:
    """Code expressions for the released columns, in the smallest integer type."""
    domain = Domain.from_schema(schema)
    return [column_exprs(c).code.cast(_code_dtype(s))
            for c, s in zip(domain.columns, domain.sizes, strict=True)]


def encode(df: pl.DataFrame | pl.LazyFrame, schema: Schema) -> np.ndarray:
    """Checked table -> integer codes (rows x released columns)."""
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
    columns (one or two bytes each), not with the text.
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
