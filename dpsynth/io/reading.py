"""Reading the private table: open it lazily after checking its bytes and header (PRIVATE).

Owns the file formats: CSV, gzip CSV and Parquet, told apart by their first
bytes (:func:`is_parquet`). Every CSV cell is read as text, so ICD codes and
``None`` keep their form; Parquet columns are checked against the column kinds
by type family (:func:`dpsynth.input_rules.check_parquet_type`) and cast to text.
The checks here are those that need the file itself: the file exists and is not
empty, strict UTF-8, and the header (:func:`dpsynth.input_rules.check_header`).
The per-row checks are :mod:`dpsynth.io.checking`'s.

Rules: messages name columns and rules, never a cell value (a polars error's text
may quote a cell, so it is replaced: :func:`collect`).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from dpsynth.errors import InputDataError
from dpsynth.input_rules import (
    TypeFamily,
    check_header,
    check_parquet_type,
    empty_file,
    header_not_utf8,
    missing_input,
    no_rows,
)
from dpsynth.schema import Schema

__all__ = ["collect", "is_parquet", "open_table", "parse_header", "read_table", "unparseable"]

_TEMPORAL = (pl.Date, pl.Datetime)
_CHUNK = 1 << 24


def _sniff_format(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(4)
    if head[:2] == b"\x1f\x8b":
        return "csv.gz"
    if head == b"PAR1":
        return "parquet"
    return "csv"


def is_parquet(path: str | Path) -> bool:
    """Whether ``path`` holds Parquet (both backends decide with this): a local file
    by its first bytes (``PAR1``), whatever its name; a local directory when its name
    ends in ``.parquet``/``.pq`` or it holds such part files; any other path (an
    HDFS or S3 URL Spark reads) by its name ending in ``.parquet``/``.pq``."""
    p = Path(path)
    if p.is_file():
        return _sniff_format(p) == "parquet"
    named = re.search(r"\.(parquet|pq)/?$", str(path), re.IGNORECASE) is not None
    if p.is_dir():
        return named or any(n.endswith((".parquet", ".pq")) for n in os.listdir(p))
    return named


def parse_header(raw_first_line: bytes) -> list[str]:
    """The column names of a CSV header line (raw bytes, BOM and line end allowed)."""
    try:
        text = raw_first_line.decode("utf-8")
    except UnicodeDecodeError:
        raise header_not_utf8() from None
    text = text.lstrip("\ufeff").rstrip("\r\n")
    return next(csv.reader([text]), [])


@contextlib.contextmanager
def open_table(path: str | Path, schema: Schema) -> Iterator[pl.LazyFrame]:
    """Open the table lazily after checking its header and encoding.

    Every column comes back as text (temporal Parquet columns as ISO text), so
    codes such as ICD-9 keep their form. A gzip CSV is first decompressed into a
    private temporary directory (mode 0700) that is removed on exit.
    """
    p = Path(path)
    if not p.is_file():
        raise missing_input(str(p))
    if p.stat().st_size == 0:
        raise empty_file()
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
            raise empty_file()
        check_header(parse_header(first), schema)
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


def unparseable() -> InputDataError:
    """What a polars parse failure becomes (its own text may quote a cell)."""
    return InputDataError("the file could not be parsed (ragged rows, bad quoting or a "
                          "corrupt file)", rule="csv-format")


def collect(lf: pl.LazyFrame) -> pl.DataFrame:
    """Collect with the streaming engine; a polars error never shows its text
    (it may quote a cell)."""
    try:
        return lf.collect(engine="streaming")
    except pl.exceptions.PolarsError:
        raise unparseable() from None


def read_table(path: str | Path, schema: Schema) -> pl.DataFrame:
    """Read the whole table as text into memory (small tables only; the tests use it)."""
    with open_table(path, schema) as lf:
        df = collect(lf)
    if df.height == 0:
        raise no_rows()
    return df


def _scan_parquet(p: Path, schema: Schema) -> pl.LazyFrame:
    try:
        lf = pl.scan_parquet(p)
        file_schema = lf.collect_schema()
    except pl.exceptions.PolarsError:
        raise InputDataError("the file could not be read as Parquet", rule="parquet-format") from None
    check_header(list(file_schema.names()), schema)
    casts = []
    for c in schema.input_columns:
        dtype = file_schema[c.name]
        check_parquet_type(c, _family(dtype), str(dtype))
        if c.kind in ("date", "datetime") and isinstance(dtype, _TEMPORAL):
            casts.append(pl.col(c.name).cast(pl.Datetime("us")).dt.strftime("%Y-%m-%dT%H:%M:%S%.f")
                         if c.kind == "datetime" else pl.col(c.name).cast(pl.Date).cast(pl.String))
        else:
            casts.append(pl.col(c.name).cast(pl.String))
    return lf.select(casts)


def _family(dtype: pl.DataType) -> TypeFamily:
    if dtype.is_integer():
        return "integer"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_numeric():
        return "float"
    if isinstance(dtype, _TEMPORAL):
        return "temporal"
    if dtype == pl.String:
        return "string"
    if dtype == pl.Categorical or isinstance(dtype, pl.Enum):
        return "categorical"
    return "other"
