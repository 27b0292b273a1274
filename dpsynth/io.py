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

Contribution bounding (:func:`bound_contributions`): each patient keeps at most k
rows, chosen by a keyed hash. A row's key is a hash of a per-run secret, the
patient id's raw text and the row's codes (identical rows of a patient are
numbered, so each row gets its own key); each patient keeps its k rows with the
smallest keys. So the rows a patient keeps depend only on that patient's own rows
and the secret: adding, removing or moving any other row changes nothing for
them, which keeps the sensitivity at k for any secret. The secret is 32 bytes from
``secrets.token_bytes`` unless one is given; it only makes the choice random, so a
known secret (for a reproducible run) is safe too. The Spark backend computes the
same keys with the same functions (:func:`content_hashes`, :func:`bounding_keys`).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import hashlib
import itertools
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from dpsynth.domain import Domain, column_exprs
from dpsynth.errors import InputDataError, InternalError, UsageError
from dpsynth.schema import Column, Schema

__all__ = [
    "CheckedTable",
    "EncodedTable",
    "bound_contributions",
    "bounding_keys",
    "bounding_secret",
    "check_and_encode",
    "check_table",
    "content_hashes",
    "encode",
    "is_parquet",
    "load_encoded",
    "open_table",
    "patient_hashes",
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
    # the raw text of each patient id (by Categorical id), for bounding
    unit_values = unit_dtype.categories.to_series() if isinstance(unit_dtype, pl.Categorical) else None
    return CheckedTable(frame, n_rows, unit_values)


def check_table(df: pl.DataFrame | pl.LazyFrame, schema: Schema, *, from_csv: bool = True) -> int:
    """Fail closed on the first violated (column, rule); never shows a value.
    Returns the number of rows (PRIVATE: never for anything released)."""
    return check_and_encode(df, schema, from_csv=from_csv).n_rows


# -- contribution bounding ---------------------------------------------------------------

_PERSON = b"dpsynth-bound-v1"
"""blake2b personalisation of the patient hash (16 bytes); a new rule takes a new one."""
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_LOW32 = np.uint64(0xFFFFFFFF)
_HASH_BLOCK = 1 << 13


def bounding_secret(secret: bytes | int | None = None) -> bytes:
    """The per-run bounding secret as bytes. ``None``: 32 fresh bytes from the
    operating system (``secrets.token_bytes``); ``bytes``: as they are (at most 64,
    blake2b's key size); an ``int`` (0 <= secret < 2**256, for reproducible runs):
    its 32-byte big-endian form. The secret only makes the choice random: the DP
    guarantee holds for any secret, known or not."""
    if secret is None:
        return secrets.token_bytes(32)
    if isinstance(secret, bool) or not isinstance(secret, int | bytes):
        raise UsageError("the bounding secret must be bytes, a non-negative int or None")
    if isinstance(secret, int):
        if not 0 <= secret < 1 << 256:
            raise UsageError("an int bounding secret must satisfy 0 <= secret < 2**256")
        return secret.to_bytes(32, "big")
    if len(secret) > 64:
        raise UsageError("the bounding secret must be at most 64 bytes")
    return bytes(secret)


def patient_hashes(secret: bytes, values: Iterable[str]) -> np.ndarray:
    """One keyed hash per patient id (``uint64``): blake2b keyed with ``secret``
    (8-byte digest, read little-endian) over the id's raw text in UTF-8."""
    base = hashlib.blake2b(key=secret, digest_size=8, person=_PERSON)

    def one(value: str) -> bytes:
        h = base.copy()
        h.update(value.encode("utf-8"))
        return h.digest()

    values = iter(values)
    parts = [np.zeros(0, dtype=np.uint64)]
    while chunk := b"".join(map(one, itertools.islice(values, 1 << 16))):
        parts.append(np.frombuffer(chunk, dtype="<u8").astype(np.uint64))
    return np.concatenate(parts)


def _fmix(x: np.ndarray) -> None:
    """splitmix64's finaliser, in place (wrapping ``uint64`` arithmetic)."""
    x ^= x >> 30
    x *= _M1
    x ^= x >> 27
    x *= _M2
    x ^= x >> 31


def _mix_codes(patient_hash: np.ndarray, columns: Sequence[np.ndarray],
               rows: np.ndarray | None = None) -> np.ndarray:
    """Per row, the patient's hash mixed with the row's codes (per column: xor,
    multiply, xorshift; then splitmix64's finaliser); the top 63 bits as ``int64``.
    ``rows``: the rows of ``columns`` that ``patient_hash`` belongs to (all if None)."""
    n = len(patient_hash)
    cols = [c if c.dtype.kind == "u" else c.astype(np.uint64) for c in map(np.asarray, columns)]
    out = np.empty(n, dtype=np.int64)
    for s in range(0, n, _HASH_BLOCK):
        e = min(s + _HASH_BLOCK, n)
        h = np.array(patient_hash[s:e], dtype=np.uint64)
        for c in cols:
            h ^= c[s:e] if rows is None else c[rows[s:e]]
            h *= _GOLDEN
            h ^= h >> 29
        _fmix(h)
        out[s:e] = (h >> 1).view(np.int64)
    return out


def content_hashes(secret: bytes, patient_values: Sequence[str] | np.ndarray,
                   codes: Sequence[np.ndarray]) -> np.ndarray:
    """Each row's content hash (``int64``, 0 <= h < 2**63): the keyed hash of its
    patient id's raw text (:func:`patient_hashes`, once per distinct id) mixed with
    its codes. ``patient_values``: each row's raw patient id; ``codes``: one array of
    code values per released column (any integer dtype). A patient's identical rows
    get the same hash. Both backends compute the hash with this code."""
    import pandas as pd

    ids, distinct = pd.factorize(np.asarray(patient_values, dtype=object))
    return _mix_codes(patient_hashes(secret, distinct)[ids], codes)


def bounding_keys(content_hash: np.ndarray, occurrence: np.ndarray) -> np.ndarray:
    """Each row's bounding key (``int64``, 0 <= key < 2**63) from its content hash
    and its occurrence number among its patient's identical rows (0, 1, ...), so
    identical rows get distinct keys. Both backends compute the key with this code."""
    x = np.asarray(content_hash, dtype=np.int64).view(np.uint64) + _GOLDEN * (
        np.asarray(occurrence).astype(np.uint64) + np.uint64(1))
    _fmix(x)
    return (x >> 1).view(np.int64)


def _offsets(*keys: np.ndarray) -> np.ndarray:
    """Each position's offset in its run of equal ``keys`` (runs are contiguous)."""
    n = len(keys[0])
    same = np.ones(max(n - 1, 0), dtype=bool)
    for a in keys:
        same &= a[1:] == a[:-1]
    pos = np.arange(n)
    start = np.concatenate([[True], ~same]) if n else np.zeros(0, dtype=bool)
    return pos - np.maximum.accumulate(np.where(start, pos, 0))


def _occurrences(h: np.ndarray, run: np.ndarray) -> np.ndarray:
    """For rows grouped by patient (``run``, nondecreasing) in file order: each row's
    number among the earlier rows of its patient with the same content hash ``h``."""
    n = len(h)
    # sort by the hash's top 32 bits, then position: identical rows of a patient are
    # adjacent and in file order
    packed = np.sort(((h.view(np.uint64) >> 31) << 32) | np.arange(n, dtype=np.uint64))
    top, pos = packed >> 32, (packed & _LOW32).astype(np.int64)
    dup = np.zeros(n, dtype=bool)
    dup[1:] = top[1:] == top[:-1]
    dup[:-1] |= dup[1:]
    occurrence = np.zeros(n, dtype=np.int64)
    if not dup.any():
        return occurrence
    top, pos = top[dup], pos[dup]
    first = np.concatenate([[True], top[1:] != top[:-1]])
    group = np.cumsum(first) - 1
    lead = pos[first][group]
    pure = (h[pos] == h[lead]) & (run[pos] == run[lead])
    pure_group = np.logical_and.reduceat(pure, np.flatnonzero(first))[group]
    occurrence[pos[pure_group]] = _offsets(top[pure_group])
    # rare: two contents share the top 32 bits; number those groups exactly
    mixed = pos[~pure_group]
    if mixed.size:
        mixed = mixed[np.lexsort((mixed, h[mixed], run[mixed]))]
        occurrence[mixed] = _offsets(run[mixed], h[mixed])
    return occurrence


def _smallest_k(key: np.ndarray, h: np.ndarray, occurrence: np.ndarray, run: np.ndarray,
                lengths: np.ndarray, k: int) -> np.ndarray:
    """For rows grouped by patient (``run`` = 0, 1, ... with ``lengths`` rows each,
    every one more than ``k``): whether the row is among its patient's ``k`` smallest
    by (key, content hash, occurrence)."""
    bits = max(1, (len(lengths) - 1).bit_length())
    # sort by patient, then the key's top bits: the k-th value is the patient's cut
    packed = (run.astype(np.uint64) << (64 - bits)) | (key.view(np.uint64) >> (bits - 1))
    cut_at = np.concatenate([[0], np.cumsum(lengths)[:-1]]) + k
    ordered = np.sort(packed)
    cut, after = ordered[cut_at - 1], ordered[cut_at]
    keep = packed <= np.repeat(cut, lengths)
    # rare: the k-th and (k+1)-th share the top bits; rank those patients exactly
    tied = np.repeat(after == cut, lengths)
    if tied.any():
        rows = np.flatnonzero(tied)
        rows = rows[np.lexsort((occurrence[rows], h[rows], key[rows], run[rows]))]
        keep[rows] = _offsets(run[rows]) < k
    return keep


def bound_contributions(df: pl.DataFrame, unit_column: str, k: int,
                        secret: bytes | int | None = None,
                        unit_values: pl.Series | None = None) -> pl.DataFrame:
    """Keep at most ``k`` rows per patient, chosen at random by a keyed hash.

    The rule: a row's content hash is :func:`content_hashes` of its patient id's raw
    text and its codes (every column of ``df`` but ``unit_column``); a patient's
    identical rows are numbered 0, 1, ...; a row's key is :func:`bounding_keys` of
    (content hash, number); each patient keeps its ``k`` rows with the smallest keys
    (ties, which need a 63-bit collision, by content hash then number). So the rows
    a patient keeps depend only on that patient's rows, as a multiset (not on their
    order, nor on any other row), and on the secret; for a random secret they are a
    uniformly random ``k``-subset of them. Patients with at most ``k`` rows keep
    them all (and are not hashed). The Spark backend computes the same keys with the
    same functions, so both keep the same rows for the same secret. Kept rows stay
    in file order.

    ``unit_values``: if given, ``unit_column`` holds integer indexes into it (the
    Categorical ids of :func:`check_and_encode`) and it holds the raw ids' text;
    otherwise ``unit_column`` holds the raw ids. ``secret``: see
    :func:`bounding_secret` (``None``: a fresh one).
    """
    key_secret = bounding_secret(secret)
    n = df.height
    if n >= 1 << 32:
        raise UsageError("more than 2**32 rows: use the spark backend")
    unit = df[unit_column]
    if unit.null_count():
        raise InputDataError("the patient id is missing", column=unit_column,
                             rule="privacy-unit-missing")
    if unit_values is None:
        unit = unit.cast(pl.String)
        unit_values = unit.unique().sort()
        unit = unit.rank("dense") - 1
    # rows grouped by patient, in file order: one sort of (patient << 32 | row)
    row = unit.to_numpy().astype(np.uint64)
    row <<= 32
    row |= np.arange(n, dtype=np.uint64)
    row.sort()
    patient = row >> 32
    row &= _LOW32
    starts = np.flatnonzero(np.concatenate([[True], patient[1:] != patient[:-1]]))
    lengths = np.diff(np.append(starts, n))
    over = lengths > k
    if not over.any():
        return df
    row = row[np.repeat(over, lengths)]  # the rows of patients with more than k rows
    lengths = lengths[over]
    need = patient[starts[over]].astype(np.int64)
    del patient, starts
    run = np.repeat(np.arange(len(lengths)), lengths)
    raw = unit_values.gather(need)
    if raw.null_count():  # pragma: no cover - every id in the column has its text
        raise InternalError("a patient id has no raw value")
    hashes = patient_hashes(key_secret, itertools.chain.from_iterable(
        raw.slice(i, 1 << 16).to_list() for i in range(0, len(raw), 1 << 16)))
    del raw
    # content hashes, computed in file order (the code columns are read in order)
    in_file = np.zeros(n, dtype=np.int64)
    in_file[row] = run + 1
    file_rows = np.flatnonzero(in_file)
    codes = [df[c].to_numpy() for c in df.columns if c != unit_column]
    in_file[file_rows] = _mix_codes(hashes[in_file[file_rows] - 1], codes, file_rows)
    h = in_file[row]
    del in_file, file_rows, codes
    occurrence = _occurrences(h, run)
    keep = _smallest_k(bounding_keys(h, occurrence), h, occurrence, run, lengths, k)
    mask = np.ones(n, dtype=bool)
    mask[row[~keep]] = False
    return df.filter(pl.Series(mask))


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


def load_encoded(path: str | Path, schema: Schema,
                 bounding_secret: bytes | int | None = None) -> EncodedTable:
    """Read, check, bound and encode: the whole private half of the pipeline.

    One streaming pass over the file (:func:`check_and_encode`); bounding runs on
    the compact codes, so memory grows with the number of rows times released
    columns (one or two bytes each) plus a 4-byte patient id, not with the text.
    ``bounding_secret``: the key of :func:`bound_contributions` (``None``: a fresh
    random one; a known one is safe, see :func:`bounding_secret`).
    """
    unit = schema.privacy_unit
    domain = Domain.from_schema(schema)
    with open_table(path, schema) as lf:
        checked = check_and_encode(lf, schema, from_csv=not is_parquet(path))
    compact = checked.frame
    if unit.column is not None:
        compact = bound_contributions(compact, unit.column, unit.max_rows, bounding_secret,
                                      checked.unit_values)
        compact = compact.drop(unit.column)
    del checked
    codes = _to_codes(compact, len(domain.columns))
    return EncodedTable(codes=codes, columns=domain.names, sizes=domain.sizes,
                        contribution_bound=unit.max_rows)
