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

import csv
import gzip
import io as _io
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from dpsynth.domain import Domain, column_exprs
from dpsynth.errors import InputDataError
from dpsynth.schema import Column, Schema

__all__ = ["EncodedTable", "bound_contributions", "check_table", "load_encoded", "read_table"]

_TEMPORAL = (pl.Date, pl.Datetime)


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


def read_table(path: str | Path, schema: Schema) -> pl.DataFrame:
    """Read the table and check its header; every column comes back as text
    (temporal Parquet columns keep their type)."""
    p = Path(path)
    if not p.is_file():
        raise InputDataError(f"input file {str(p)!r} does not exist or is not a file",
                             rule="input-file")
    if p.stat().st_size == 0:
        raise InputDataError("the input file is empty", rule="empty-file")
    fmt = _sniff_format(p)
    if fmt == "parquet":
        return _read_parquet(p, schema)
    if fmt == "csv.gz":
        try:
            with gzip.open(p, "rb") as fh:
                data = fh.read()
        except (OSError, EOFError):
            raise InputDataError("the gzip file is corrupt or truncated", rule="gzip") from None
    else:
        data = p.read_bytes()
    if not data.strip():
        raise InputDataError("the input file is empty", rule="empty-file")
    first = data.split(b"\n", 1)[0]
    names = _header(first)
    _check_header(names, schema)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputDataError(f"the file is not valid UTF-8 (first bad byte on line {line})",
                             rule="encoding") from None
    try:
        df = pl.read_csv(
            _io.BytesIO(data),
            infer_schema=False,
            empty_string_is_null=False,
            truncate_ragged_lines=False,
            encoding="utf8",
        )
    except pl.exceptions.PolarsError:
        # polars' own message may quote a cell: never show it
        raise InputDataError("the file could not be parsed as CSV (ragged rows or bad quoting)",
                             rule="csv-format") from None
    if df.height == 0:
        raise InputDataError("the table has a header but no rows", rule="no-rows")
    return df


def _read_parquet(p: Path, schema: Schema) -> pl.DataFrame:
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
    try:
        df = lf.select(casts).collect()
    except pl.exceptions.PolarsError:
        raise InputDataError("the Parquet file could not be decoded", rule="parquet-format") from None
    if df.height == 0:
        raise InputDataError("the table has no rows", rule="no-rows")
    return df


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


def check_table(df: pl.DataFrame, schema: Schema) -> None:
    """Fail closed on the first violated (column, rule); never shows a value."""
    unit = schema.privacy_unit.column
    checks: list[tuple[str, str, str, pl.Expr]] = []
    if unit is not None:
        uid = pl.col(unit)
        checks.append((unit, "privacy-unit-missing", "the patient id is missing",
                       uid.is_null() | (uid.str.strip_chars() == "")))
    for c in schema.measured_columns:
        e = column_exprs(c)
        if not c.nullable:
            checks.append((c.name, "not-nullable", "missing value in a non-nullable column",
                           e.missing))
        if e.malformed_rule:
            checks.append((c.name, e.malformed_rule, f"value cannot be read as {c.kind}",
                           e.malformed))
        if c.on_out_of_domain == "reject":
            checks.append((c.name, e.domain_rule, "value outside the schema's domain",
                           e.out_of_domain))
    exprs = []
    for i, (_, _, _, expr) in enumerate(checks):
        exprs.append(expr.fill_null(False).sum().alias(f"n{i}"))
        exprs.append(expr.fill_null(False).arg_max().alias(f"r{i}"))
    if not exprs:
        return
    res = df.select(exprs).row(0)
    for i, (col, rule, what, _) in enumerate(checks):
        n_bad = res[2 * i]
        if n_bad:
            row = res[2 * i + 1] + 1
            raise InputDataError(
                f"{what} in {n_bad} row(s), first at data row {row}", column=col, rule=rule
            )


def bound_contributions(df: pl.DataFrame, unit_column: str, k: int,
                        seed: int | None = None) -> pl.DataFrame:
    """Keep at most ``k`` rows per patient, chosen uniformly at random."""
    if seed is None:
        seed = secrets.randbits(63)
    rng = np.random.default_rng(seed)
    key = pl.Series("__dpsynth_key", rng.permutation(df.height))
    return (
        df.with_columns(key)
        .filter(pl.col("__dpsynth_key").rank("ordinal").over(unit_column) <= k)
        .drop("__dpsynth_key")
    )


def encode(df: pl.DataFrame, schema: Schema) -> np.ndarray:
    """Checked, bounded table -> integer codes (rows x released columns)."""
    cols = schema.measured_columns
    out = df.select([column_exprs(c).code for c in cols])
    return out.to_numpy().astype(np.int32, copy=False).reshape(out.height, len(cols))


def load_encoded(path: str | Path, schema: Schema, bounding_seed: int | None = None) -> EncodedTable:
    """Read, check, bound and encode: the whole private half of the pipeline."""
    df = read_table(path, schema)
    check_table(df, schema)
    unit = schema.privacy_unit
    if unit.column is not None:
        df = bound_contributions(df, unit.column, unit.max_rows, bounding_seed)
    domain = Domain.from_schema(schema)
    codes = encode(df, schema)
    return EncodedTable(codes=codes, columns=domain.names, sizes=domain.sizes,
                        contribution_bound=unit.max_rows)
