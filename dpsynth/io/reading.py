"""Reading the private table: open it lazily after checking its bytes and header (PRIVATE).

Owns the file formats: CSV, gzip CSV and Parquet, told apart by their first
bytes (:func:`is_parquet`). Every CSV cell is read as text, so ICD codes and
``None`` keep their form; Parquet columns are checked against the column kinds
by type family (:func:`dpsynth.input_rules.check_parquet_type`) and cast to text,
batch by batch as pyarrow decodes them (:func:`parquet_batches`: memory is one batch,
whatever the file's row groups).
The checks here are those that need the file itself: the path is a regular file
and not empty, strict UTF-8, the header (:func:`dpsynth.input_rules.check_header`),
for CSV every record's number of fields (:func:`check_fields`, rule
``csv-format``) and for Parquet a readable file (rule ``parquet-format``). The
per-row checks are :mod:`dpsynth.io.checking`'s. A gzip CSV is read from a
temporary file without a name (:func:`decompressed`): no plain-text copy of the
private table outlives the process, even after a ``SIGKILL``.

Rules: messages name columns and rules, never a cell value (a polars error's text
may quote a cell, so it is replaced: :func:`collect`).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import itertools
import os
import re
import shutil
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, cast

import polars as pl

from dpsynth.crashpoints import crash_point
from dpsynth.errors import InputDataError, InternalError
from dpsynth.input_rules import (
    TypeFamily,
    check_header,
    check_parquet_type,
    empty_file,
    header_not_utf8,
    input_file_error,
    input_path_problem,
    no_rows,
    parquet_unreadable,
    ragged_rows,
)
from dpsynth.schema import Schema

__all__ = ["check_fields", "collect", "decompressed", "is_parquet", "open_table",
           "parquet_batches", "parse_header", "read_table", "unparseable"]

_TEMPORAL = (pl.Date, pl.Datetime)
_CHUNK = 1 << 24
_FIELD_BLOCK = 1 << 20
"""pyarrow's block in :func:`check_fields`: its reader reads up to 32 blocks ahead, so
this bounds its memory (about 40 MiB); a longer record makes pyarrow fail, and the
csv module then counts the fields instead (slower, same result)."""
_PARQUET_BATCH = 1 << 16
"""Rows pyarrow decodes at once in :func:`parquet_batches` (about 25 MB of text for 50
columns; larger batches measured no faster and hold more)."""
_PARQUET_BUFFER = 1 << 20
"""pyarrow's read buffer per column chunk in :func:`parquet_batches`: a column chunk is
streamed through it instead of being read whole."""
_PROC_FD = "/proc/self/fd"
_NAMED_PREFIX = "dpsynth-input-"


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
    """Open the table lazily after checking its header, encoding and (CSV) the
    number of fields of every record (:func:`check_fields`).

    Every column comes back as text (temporal Parquet columns as ISO text), so
    codes such as ICD-9 keep their form. A gzip CSV is first decompressed into a
    temporary file that has no name (:func:`decompressed`): no plain-text copy of
    the table is left behind, even when the process is killed.
    """
    p = Path(path)
    problem = input_path_problem(p)
    if problem is not None:
        raise input_file_error(str(p), problem)
    if p.stat().st_size == 0:
        raise empty_file()
    fmt = _sniff_format(p)
    if fmt == "parquet":
        yield _scan_parquet(p, schema)
        return
    with contextlib.ExitStack() as stack:
        if fmt == "csv.gz":
            p = stack.enter_context(decompressed(p))
        names = _check_csv_bytes(p, schema)
        lf = pl.scan_csv(p, infer_schema=False, empty_string_is_null=False,
                         truncate_ragged_lines=False, encoding="utf8")
        check_fields(p, len(names), lf)
        yield lf


@contextlib.contextmanager
def decompressed(p: Path) -> Iterator[Path]:
    """A gzip file's bytes in a temporary file without a name, as a path to read.

    The file is ``tempfile.TemporaryFile`` (mode 0600, in the system temporary
    directory): on Linux opened with ``O_TMPFILE``, elsewhere on POSIX unlinked
    as soon as it is created, so no directory entry points to the plain text and
    the kernel frees it when the last descriptor closes, also on ``SIGKILL``.
    Readers open it as ``/proc/self/fd/N``. Without ``/proc`` (macOS, BSD) it is
    a named file in a private directory ``dpsynth-input-<pid>-*`` (mode 0700),
    removed on exit; a kill leaves it, and the next :func:`decompressed` of any
    dpsynth process removes those whose process is gone.
    """
    if not os.path.isdir(_PROC_FD):  # pragma: no cover - Linux has /proc
        with _named_copy(p) as plain:
            yield plain
        return
    with tempfile.TemporaryFile(prefix="dpsynth-input-") as dst:
        _gunzip(p, dst)
        crash_point("after-decompress")
        yield Path(_PROC_FD) / str(dst.fileno())


def _gunzip(p: Path, dst: BinaryIO) -> None:
    try:
        with gzip.open(p, "rb") as src:
            shutil.copyfileobj(src, dst, _CHUNK)
        dst.flush()
    except (OSError, EOFError, zlib.error):
        raise InputDataError("the gzip file is corrupt or truncated", rule="gzip") from None


@contextlib.contextmanager
def _named_copy(p: Path) -> Iterator[Path]:  # pragma: no cover - systems without /proc
    tmp_root = Path(tempfile.gettempdir())
    for stale in tmp_root.glob(f"{_NAMED_PREFIX}*-*"):
        pid = stale.name.removeprefix(_NAMED_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)) and stale.stat().st_uid == os.getuid():
            shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{_NAMED_PREFIX}{os.getpid()}-") as tmp:
        plain = Path(tmp) / "input.csv"
        with plain.open("wb") as dst:
            _gunzip(p, dst)
        crash_point("after-decompress")
        yield plain


def _alive(pid: int) -> bool:  # pragma: no cover - systems without /proc
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_csv_bytes(p: Path, schema: Schema) -> list[str]:
    """Header names, then strict UTF-8 over the whole file (streamed). Returns the
    header's names."""
    with p.open("rb") as fh:
        first = fh.readline()
        if not first.strip() and not fh.read(1 << 16).strip():
            raise empty_file()
        names = parse_header(first)
        check_header(names, schema)
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
    return names


def check_fields(p: Path, n_fields: int, lf: pl.LazyFrame) -> None:
    """Every record of the CSV file ``p`` has the header's ``n_fields`` fields
    (rule ``csv-format``), else fail with the number of such records and the first.

    polars fills the missing fields of a short record with ``""`` (and a blank
    line is a record of ``""``), so a record cut short in fields that may be
    empty would pass every column rule: the fields are counted here, by a second
    parser. pyarrow's streaming CSV reader (quote-aware, quoted line breaks
    allowed, blocks of 1 MiB, one column converted) reports every record with
    too few or too many fields to ``invalid_row_handler``; it skips blank lines,
    so its number of records must also equal the number polars reads (``lf``,
    polars' fast row count). Only when they disagree (or pyarrow fails) does
    Python's :mod:`csv` module read the file again for the count and the first
    bad record's data row number; a disagreement it cannot explain fails as
    :func:`unparseable`. Memory: pyarrow's read-ahead (about 40 MiB, whatever the
    file's size) or one record. Never shows a cell.
    """
    fast = _count_records(p, n_fields)
    try:
        expected: int | None = int(lf.select(pl.len()).collect().item())
    except pl.exceptions.PolarsError:
        expected = None
    if fast is not None and fast == (0, expected):
        return
    n_bad, first, records = _count_records_exactly(p, n_fields)
    if n_bad:
        raise ragged_rows(n_bad, first)
    if records != expected:
        raise unparseable()


def _count_records(p: Path, n_fields: int) -> tuple[int, int] | None:
    """pyarrow: (records with another number of fields, all records but blank
    lines), or ``None`` when pyarrow cannot read the file."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    invalid = itertools.count()

    def on_invalid(_row: object) -> str:  # the row's text is never looked at
        next(invalid)
        return "skip"

    names = [f"f{i}" for i in range(n_fields)]
    try:
        reader = pacsv.open_csv(
            p,
            read_options=pacsv.ReadOptions(use_threads=False, block_size=_FIELD_BLOCK,
                                           skip_rows=1, column_names=names),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=True,
                                             invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(include_columns=names[:1],
                                                 column_types={names[0]: pa.binary()},
                                                 check_utf8=False))
        records = sum(batch.num_rows for batch in reader)
    except pa.ArrowException:
        return None
    n_invalid = next(invalid)
    return n_invalid, records + n_invalid


def _count_records_exactly(p: Path, n_fields: int) -> tuple[int, int, int]:
    """Python's csv module: (records with another number of fields, the first
    one's data row number (0: none), all records). A blank line is a record of
    no fields."""
    n_bad = first = records = 0
    limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a long clinical note is one field
    try:
        with p.open("r", encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            next(reader, None)  # the header
            for records, row in enumerate(reader, start=1):
                if len(row) != n_fields:
                    n_bad += 1
                    first = first or records
    except csv.Error:
        raise unparseable() from None
    finally:
        csv.field_size_limit(limit)
    return n_bad, first, records


def unparseable(*, parquet: bool = False) -> InputDataError:
    """What a polars read failure becomes (its own text may quote a cell): rule
    ``parquet-format`` for a Parquet input, else ``csv-format``."""
    if parquet:
        return parquet_unreadable()
    return InputDataError("the file could not be parsed (ragged rows, bad quoting or a "
                          "corrupt file)", rule="csv-format")


def collect(lf: pl.LazyFrame, *, parquet: bool = False) -> pl.DataFrame:
    """Collect with the streaming engine; a polars error never shows its text
    (it may quote a cell): :func:`unparseable`."""
    try:
        return lf.collect(engine="streaming")
    except pl.exceptions.ColumnNotFoundError:
        # the plan names a column the table lacks: headers are checked before any
        # plan is built, so this is dpsynth's own mistake, not a malformed file
        raise InternalError("a query refers to a column the table does not have") from None
    except pl.exceptions.PolarsError:
        raise unparseable(parquet=parquet) from None


def read_table(path: str | Path, schema: Schema) -> pl.DataFrame:
    """Read the whole table as text into memory (small tables only; the tests use it)."""
    with open_table(path, schema) as lf:
        df = collect(lf, parquet=is_parquet(path))
    if df.height == 0:
        raise no_rows()
    return df


def _scan_parquet(p: Path, schema: Schema) -> pl.LazyFrame:
    try:
        file_schema = pl.scan_parquet(p).collect_schema()  # the footer only
    except pl.exceptions.PolarsError:
        raise parquet_unreadable() from None
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
    return parquet_batches(p, file_schema).select(casts)


def parquet_batches(p: Path, file_schema: pl.Schema) -> pl.LazyFrame:
    """The Parquet file ``p`` as a LazyFrame (of ``file_schema``, polars' own reading of
    its types) whose rows pyarrow decodes :data:`_PARQUET_BATCH` at a time.

    polars' Parquet reader decodes a whole row group at once, several in parallel,
    so its memory grows with the writer's row-group size (1M rows of 50 columns: about
    0.7 GB). pyarrow's record-batch reader decodes page by page and its column chunks
    are read through a buffer of :data:`_PARQUET_BUFFER` bytes, so memory is one batch
    whatever the file's layout. Only the columns the query projects are read; polars
    applies the rest of the query, streaming. A pyarrow read error (corrupt or
    truncated data pages) is rule ``parquet-format``, never pyarrow's text.
    """
    from polars.io.plugins import register_io_source

    def batches(with_columns: list[str] | None, predicate: pl.Expr | None,
                n_rows: int | None, _batch_size: int | None) -> Iterator[pl.DataFrame]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = list(file_schema.names()) if with_columns is None else with_columns
        dtypes = pl.Schema({c: file_schema[c] for c in columns})
        read = columns or list(file_schema.names())[:1]  # a bare row count reads one column
        left = n_rows
        try:
            reader = pq.ParquetFile(p, buffer_size=_PARQUET_BUFFER, pre_buffer=False)
            for rb in reader.iter_batches(batch_size=_PARQUET_BATCH, columns=read,
                                          use_threads=True):
                if left is not None and left <= 0:
                    return
                # polars' own types for the file (a dictionary column read by pyarrow as
                # Categorical where polars says Enum, say): cast to them
                df = (cast(pl.DataFrame, pl.from_arrow(rb)).select(columns).cast(dtypes)
                      if columns else pl.DataFrame(height=rb.num_rows))
                if predicate is not None:
                    df = df.filter(predicate)
                if left is not None:
                    df = df.head(left)
                    left -= df.height
                yield df
        except (pa.ArrowException, OSError):
            raise parquet_unreadable() from None

    return register_io_source(batches, schema=file_schema, explain_name="dpsynth-parquet")


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
