"""Spark backend for the private steps: read, check, bound, encode, count (PRIVATE).

For tables that outgrow one machine. Needs the optional extra ``dpsynth[spark]``
(pyspark) and Java 17. Everything after the exact counts stays local: the
:class:`SparkCounter` answers ``count``/``count_many`` for the measurement
session, which adds the noise and charges the accountant on the driver.

Same semantics as the polars path (``dpsynth.io.load_encoded``):

* **Reading.** Every CSV cell is text (header row, RFC 4180 quoting, an empty
  field is ``""``); Parquet columns are cast to text like ``dpsynth.io`` does
  (temporal columns are used as typed values). The header check, its messages
  and the ``duplicate-column``/``missing-column``/``extra-column`` rules are
  those of ``dpsynth.io``. Quoted fields spanning lines are not supported on the
  Spark path (such a file fails closed with ``csv-format``).
* **Checks** (:func:`_check`): the rules of :func:`dpsynth.io.check_table` in the
  same order, written as Spark SQL expressions from the schema's public
  information (:mod:`dpsynth.domain`): ``csv-format``, ``encoding``,
  ``privacy-unit-missing``, ``not-nullable``, the per-kind parse rule
  (``parse-integer``, ``code-format``, ...) and the domain rule (``category``,
  ``bounds``, ...). One Spark job computes every rule's violation count and first
  row; the first violated rule raises :class:`InputDataError` with the column,
  the rule, a count and a row number -- never a value. Spark/py4j error text never
  reaches a message (it may quote a cell): failures are caught and replaced.
* **Bounding** is exactly the polars path's (:func:`dpsynth.io.bound_contributions`):
  each row's content hash (:func:`dpsynth.io.content_hashes`: the keyed hash of the
  patient id's raw text, mixed with the row's codes) and key
  (:func:`dpsynth.io.bounding_keys`) are computed by the same functions, run on the
  executors with ``mapInPandas``; a window numbers a patient's identical rows and
  another keeps each patient's ``k`` rows with the smallest (key, hash, number).
  The rows a patient keeps depend only on that patient's rows and the secret, not
  on row numbers, file order or partitioning.
* **Row numbers** (0-based, file order) are only for the checks' "first at data
  row" messages. They come from the hidden ``_metadata`` column: for Parquet
  ``_metadata.row_index``; for CSV the split start ``_metadata.file_block_start``
  plus the position inside the split (``monotonically_increasing_id`` is
  consecutive within a partition and a split is read in order), turned into
  global numbers with one small aggregate (rows per split). Files of a directory
  input are numbered in lexicographic path order.
* **Known differences** (inputs both paths reject, possibly under another rule,
  or rare forms): Java vs Rust regular expressions for a code column's
  ``pattern``; date formats are translated from ``strftime`` to Spark patterns
  (``%Y %m %d %H %M %S %f %y %b %B %j``; no format means ISO 8601); blank lines in
  a CSV are skipped by Spark; a cell holding U+FFFD (the replacement character)
  is reported as ``encoding``.

Memory: the bounded, encoded table (one int per released column) is cached in
executor memory and disk; the driver holds one marginal at a time. Executors
need dpsynth and its Python dependencies (bounding runs Python there).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dpsynth.domain import _date_edges, domain_size, levels
from dpsynth.errors import InputDataError, UsageError
from dpsynth.schema import Column, Schema

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column as SparkColumn
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "INSTALL_HINT",
    "SparkCounter",
    "SparkEncoded",
    "spark_load",
    "spark_session",
]

INSTALL_HINT = "pip install 'dpsynth[spark]' (and a Java 17 runtime)"
_CORRUPT = "__dpsynth_corrupt"
_RN = "__dpsynth_rn"
_KEY = "__dpsynth_key"
_HASH = "__dpsynth_hash"
_NUM = "__dpsynth_num"
_UID = "__dpsynth_uid"
_BATCH = 32
"""Marginals counted per Spark job by :meth:`SparkCounter.count_many`."""
_LOCAL_CONF = {
    "spark.ui.enabled": "false",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.showConsoleProgress": "false",
}


def _pyspark() -> Any:
    try:
        import pyspark.sql  # noqa: F401
        from pyspark.sql import functions
    except ImportError:
        raise UsageError(f"the Spark backend needs pyspark: {INSTALL_HINT}") from None
    return functions


# -- session --------------------------------------------------------------------------


def spark_session(master: str | None = None, app_name: str = "dpsynth") -> SparkSession:
    """The SparkSession to run on.

    ``master`` given: a session for it (``local[2]``, ``spark://host:7077``,
    ``k8s://...``, ``yarn``). Otherwise the active session, or, under
    ``spark-submit`` (which provides the master and resources), that
    environment's; otherwise ``local[*]``. A local master gets loopback binding,
    no UI and few shuffle partitions.
    """
    _pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if master is None and active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if master is None and not under_submit:
        master = "local[*]"
    if master is not None:
        builder = builder.master(master)
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            # bounding runs Python on the workers: this interpreter, with dpsynth
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            for k, v in _LOCAL_CONF.items():
                builder = builder.config(k, v)
    try:
        return builder.getOrCreate()
    except Exception:
        raise UsageError("could not start Spark (is Java 17 installed and JAVA_HOME set?)") from None


# -- loading --------------------------------------------------------------------------


@dataclass(frozen=True)
class SparkEncoded:
    """What :func:`spark_load` returns (PRIVATE: the counter reads private data).

    Mirrors :class:`dpsynth.io.EncodedTable` with a counter instead of the codes:
    ``MeasurementSession(enc.counter, enc.columns, enc.sizes,
    enc.contribution_bound, accountant)``.
    """

    counter: SparkCounter
    columns: tuple[str, ...]
    sizes: tuple[int, ...]
    contribution_bound: int


def spark_load(path: str, schema: Schema, bounding_secret: bytes | int | None = None,
               spark: SparkSession | None = None) -> SparkEncoded:
    """Read, check, bound and encode ``path`` with Spark; return a cached counter.

    ``path``: a CSV (optionally ``.gz``) or Parquet file, or a directory of
    Parquet/CSV part files, on any file system Spark reads (local, HDFS, S3, ...).
    Format: Parquet when the name ends in ``.parquet``/``.pq``, a directory
    holding Parquet parts, or a local file starting with ``PAR1``; CSV otherwise.
    ``bounding_secret``: as :func:`dpsynth.io.load_encoded` (the same secret keeps
    the same rows on both backends; ``None``: a fresh random one).
    """
    from dpsynth.io import bounding_secret as secret_bytes

    F = _pyspark()
    secret = secret_bytes(bounding_secret)
    spark = spark or spark_session()
    # Dates are parsed and compared as UTC wall-clock microseconds.
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    columns = tuple(c.name for c in schema.measured_columns)
    sizes = tuple(domain_size(c) for c in schema.measured_columns)
    unit = schema.privacy_unit
    with _spark_errors():
        raw, from_csv = _read(spark, path, schema)
        numbered = _number_rows(spark, raw, parquet=not from_csv)
        _check(numbered, schema, from_csv)
        encoded = numbered.select(
            *([F.col(f"`{unit.column}`").alias(_UID)] if unit.column is not None else []),
            *[_encode(c).alias(f"c{j}") for j, c in enumerate(schema.measured_columns)],
        )
        if unit.column is not None:
            encoded = _bound(encoded, len(columns), unit.max_rows, secret)
        codes = encoded.select(*[f"c{j}" for j in range(len(columns))])
        counter = SparkCounter(codes, columns, sizes)
    return SparkEncoded(counter=counter, columns=columns, sizes=sizes,
                        contribution_bound=unit.max_rows)


@contextlib.contextmanager
def _spark_errors() -> Iterator[None]:
    """Spark and py4j errors may quote a cell: replace them, keep no text."""
    from pyspark.errors import PySparkException

    try:
        yield
    except (InputDataError, UsageError):
        raise
    except PySparkException:
        raise InputDataError("Spark could not read or process the input (details withheld: "
                             "they may quote a value)", rule="spark-read") from None
    except Exception as exc:
        if type(exc).__module__.startswith(("py4j", "pyspark")):
            raise InputDataError("Spark failed while processing the input (details withheld: "
                                 "they may quote a value)", rule="spark-read") from None
        raise


def _is_parquet(spark: SparkSession, path: str) -> bool:
    if re.search(r"\.(parquet|pq)/?$", path, re.IGNORECASE):
        return True
    if os.path.isfile(path):
        with open(path, "rb") as fh:
            return fh.read(4) == b"PAR1"
    if os.path.isdir(path):
        return any(n.endswith((".parquet", ".pq")) for n in os.listdir(path))
    return False


def _read(spark: SparkSession, path: str, schema: Schema) -> tuple[DataFrame, bool]:
    """The table with one text (or typed temporal) column per schema column, in
    schema order, plus ``_metadata``; CSV also carries the corrupt-record flag."""
    from dpsynth.io import _check_header, _header

    F = _pyspark()
    if os.path.exists(path) and os.path.isfile(path) and os.path.getsize(path) == 0:
        raise InputDataError("the input file is empty", rule="empty-file")
    if not (os.path.exists(path) or "://" in path):
        raise InputDataError(f"input file {path!r} does not exist or is not a file",
                             rule="input-file")
    if _is_parquet(spark, path):
        df = spark.read.parquet(path)
        names = [f.name for f in df.schema.fields]
        _check_header(names, schema)
        _check_parquet_types(df, schema)
        cols = [_parquet_text(df, c) for c in schema.columns]
        return df.select(*cols, "_metadata"), False
    from pyspark.sql.types import StringType, StructField, StructType

    first = spark.read.text(path).limit(1).collect()
    if not first or not str(first[0][0]).strip():
        raise InputDataError("the input file is empty", rule="empty-file")
    line = str(first[0][0])
    if "\ufffd" in line:
        raise InputDataError("the header is not valid UTF-8", rule="encoding")
    names = _header(line.encode("utf-8"))
    _check_header(names, schema)
    struct = StructType([StructField(n, StringType()) for n in names]
                        + [StructField(_CORRUPT, StringType())])
    df = (spark.read.schema(struct)
          .option("header", True).option("enforceSchema", True)
          .option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", _CORRUPT)
          .option("quote", '"').option("escape", '"').option("multiLine", False)
          .option("encoding", "UTF-8").option("comment", "\u0000")
          .csv(path))
    # An empty field is "" (as polars reads it); a short row is flagged corrupt.
    cols = [F.coalesce(F.col(f"`{c.name}`"), F.lit("")).alias(c.name) for c in schema.columns]
    return df.select(*cols, F.col(_CORRUPT).isNotNull().alias(_CORRUPT), "_metadata"), True


_SPARK_INT = ("ByteType", "ShortType", "IntegerType", "LongType")
_SPARK_NUM = (*_SPARK_INT, "FloatType", "DoubleType", "DecimalType")
_SPARK_TIME = ("DateType", "TimestampType", "TimestampNTZType")


def _check_parquet_types(df: DataFrame, schema: Schema) -> None:
    types = {f.name: type(f.dataType).__name__ for f in df.schema.fields}
    for c in schema.columns:
        t = types[c.name]
        if c.kind in ("identifier", "text"):
            ok = True
        elif c.kind == "integer":
            ok = t in (*_SPARK_INT, "StringType")
        elif c.kind == "float":
            ok = t in (*_SPARK_NUM, "StringType")
        elif c.kind in ("date", "datetime"):
            ok = t in (*_SPARK_TIME, "StringType")
        elif c.kind == "boolean":
            ok = t in ("BooleanType", *_SPARK_INT, "StringType")
        else:
            ok = t in ("StringType", *_SPARK_INT)
        if not ok:
            raise InputDataError(f"the Parquet type {t} does not fit kind {c.kind}",
                                 column=c.name, rule="type")


def _parquet_text(df: DataFrame, c: Column) -> SparkColumn:
    F = _pyspark()
    field = df.schema[c.name]
    col = F.col(f"`{c.name}`")
    if c.kind in ("date", "datetime") and type(field.dataType).__name__ in _SPARK_TIME:
        # as dpsynth.io: ISO text, then parsed like a CSV cell
        if c.kind == "date":
            return col.cast("date").cast("string").alias(c.name)
        return F.date_format(col.cast("timestamp"), "yyyy-MM-dd'T'HH:mm:ss.SSSSSS").alias(c.name)
    return col.cast("string").alias(c.name)


def _number_rows(spark: SparkSession, df: DataFrame, parquet: bool) -> DataFrame:
    """Add ``_RN``: the 0-based data row number in file order (see module doc)."""
    F = _pyspark()
    rest = [c for c in df.columns if c != "_metadata"]
    if parquet:
        local = df.select(*rest, F.col("_metadata.file_path").alias("__f"),
                          F.lit(0).cast("long").alias("__b"),
                          F.col("_metadata.row_index").alias("__m"))
    else:
        local = df.select(*rest, F.col("_metadata.file_path").alias("__f"),
                          F.col("_metadata.file_block_start").alias("__b"),
                          F.monotonically_increasing_id().alias("__m"))
    stats = local.groupBy("__f", "__b").agg(F.count(F.lit(1)).alias("__n"),
                                            F.min("__m").alias("__m0")).collect()
    stats = sorted(stats, key=lambda r: (r["__f"], r["__b"]))
    offsets, total = [], 0
    for r in stats:
        offsets.append((r["__f"], int(r["__b"]), total - int(r["__m0"])))
        total += int(r["__n"])
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    shift = spark.createDataFrame(offsets, StructType([
        StructField("__f", StringType()), StructField("__b", LongType()),
        StructField("__d", LongType())]))
    out = local.join(F.broadcast(shift), ["__f", "__b"])
    return out.select(*rest, (F.col("__m") + F.col("__d")).alias(_RN))


# -- checks ---------------------------------------------------------------------------


def _check(df: DataFrame, schema: Schema, from_csv: bool) -> int:
    """The rules of :func:`dpsynth.io.check_table`, in its order; one Spark job."""
    F = _pyspark()
    unit = schema.privacy_unit.column
    checks: list[tuple[str | None, str, str, SparkColumn]] = []
    if from_csv:
        checks.append((None, "csv-format", "a row has a different number of fields than the "
                       "header (or bad quoting)", F.col(_CORRUPT)))
        utf8_bad = F.lit(False)
        for c in schema.columns:
            utf8_bad = utf8_bad | F.coalesce(F.col(f"`{c.name}`").contains("\ufffd"), F.lit(False))
        checks.append((None, "encoding", "the file is not valid UTF-8", utf8_bad))
    unit_missing = None
    if unit is not None:
        uid = F.col(f"`{unit}`")
        unit_missing = uid.isNull() | (_strip(uid) == "")
    from dpsynth.io import schema_checks

    checks += schema_checks(schema, _exprs, unit_missing)
    aggs = []
    for i, (_, _, _, expr) in enumerate(checks):
        bad = F.coalesce(expr, F.lit(False))
        aggs.append(F.sum(bad.cast("long")).alias(f"n{i}"))
        aggs.append(F.min(F.when(bad, F.col(_RN))).alias(f"r{i}"))
    aggs.append(F.count(F.lit(1)).alias("n_rows"))
    res = df.agg(*aggs).collect()[0]
    if not res["n_rows"]:
        raise InputDataError("the table has a header but no rows", rule="no-rows")
    for i, (col, rule, what, _) in enumerate(checks):
        n_bad = res[f"n{i}"]
        if n_bad:
            row = int(res[f"r{i}"]) + 1
            raise InputDataError(f"{what} in {n_bad} row(s), first at data row {row}",
                                 column=col, rule=rule)
    return int(res["n_rows"])


# -- per-kind rules (Spark SQL versions of dpsynth.domain.column_exprs) ---------------


@dataclass(frozen=True)
class _Exprs:
    missing: SparkColumn
    malformed: SparkColumn
    out_of_domain: SparkColumn
    code: SparkColumn
    malformed_rule: str
    domain_rule: str


def _strip(c: SparkColumn) -> SparkColumn:
    """polars ``str.strip_chars()``: Unicode whitespace at both ends."""
    F = _pyspark()
    return F.regexp_replace(c, r"(?U)^\s+|\s+$", "")


def _in(c: SparkColumn, values: Sequence[str]) -> SparkColumn:
    F = _pyspark()
    return c.isin(list(values)) if values else F.lit(False)


_INT_RE = r"^[+-]?[0-9]+$"
_FLOAT_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_STRFTIME = {
    "Y": "yyyy", "m": "MM", "d": "dd", "H": "HH", "M": "mm", "S": "ss", "f": "SSSSSS",
    "y": "yy", "b": "MMM", "B": "MMMM", "j": "DDD", "e": "d",
}
_ONE_OR_TWO = {"m": "M", "d": "d", "H": "H", "M": "m", "S": "s"}


def _spark_pattern(fmt: str) -> str:
    """strftime -> Spark datetime pattern; one- or two-digit fields like chrono
    where a separator follows."""
    out: list[str] = []
    i = 0
    literal = ""
    while i < len(fmt):
        ch = fmt[i]
        if ch == "%" and i + 1 < len(fmt):
            if literal:
                out.append("'" + literal.replace("'", "''") + "'")
                literal = ""
            d = fmt[i + 1]
            if d == ".":  # %.f: optional fraction
                out.append("[.SSSSSS]")
                i += 3
                continue
            if d not in _STRFTIME:
                raise UsageError(f"date format directive %{d} is not supported by the Spark backend")
            nxt = fmt[i + 2] if i + 2 < len(fmt) else ""
            out.append(_ONE_OR_TWO[d] if d in _ONE_OR_TWO and nxt != "%" else _STRFTIME[d])
            i += 2
        else:
            literal += ch
            i += 1
    if literal:
        out.append("'" + literal.replace("'", "''") + "'")
    return "".join(out)


def _micros(d: dt.datetime) -> int:
    return (d - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)


def _value(col: Column, raw: SparkColumn) -> SparkColumn:
    """The parsed value (null when malformed), like ``dpsynth.domain._parsed``."""
    F = _pyspark()
    s = _strip(raw)
    if col.kind == "integer":
        return F.when(s.rlike(_INT_RE), s.try_cast("long"))
    if col.kind == "float":
        v = F.when(s.rlike(_FLOAT_RE), s.try_cast("double"))
        return F.when(~F.isnan(v) & (F.abs(v) != float("inf")), v)
    if col.kind in ("date", "datetime"):
        return F.unix_micros(_timestamp(col, raw, s))
    if col.kind == "boolean":
        return (F.when(_in(raw, col.true_tokens), F.lit(True))
                .when(_in(raw, col.false_tokens), F.lit(False)))
    return raw


def _timestamp(col: Column, raw: SparkColumn, s: SparkColumn) -> SparkColumn:
    F = _pyspark()
    if col.date_format is not None:
        pats = [_spark_pattern(col.date_format)]
    elif col.kind == "date":
        pats = ["yyyy-M-d"]
    else:
        pats = ["yyyy-M-d'T'H:m:s[.SSSSSS]", "yyyy-M-d H:m:s[.SSSSSS]", "yyyy-M-d'T'H:m",
                "yyyy-M-d H:m"]
    parsed = [F.try_to_timestamp(s, F.lit(p)) for p in pats]
    ts = parsed[0] if len(parsed) == 1 else F.coalesce(*parsed)
    return F.date_trunc("day", ts) if col.kind == "date" else ts


def _exprs(col: Column) -> _Exprs:
    F = _pyspark()
    raw = F.col(f"`{col.name}`")
    missing = raw.isNull() | _in(raw, col.missing_tokens)
    n = len(levels(col))
    null_code = F.lit(n if col.nullable else None).cast("int")
    if col.kind == "categorical":
        malformed = F.lit(False)
        pos = F.array_position(F.array(*[F.lit(c) for c in col.categories]), raw)
        in_domain = pos > 0
        code = F.when(in_domain, pos - 1)
        rule_m, rule_d = "", "category"
    elif col.kind == "code":
        stripped = _strip(raw)
        malformed = ~stripped.rlike(f"^(?:{col.pattern})$") if col.pattern else F.lit(False)
        number = F.regexp_extract(stripped, r"^([0-9]+)", 1).try_cast("long")
        chain: Any = None
        for i, g in enumerate(col.groups):
            cond = F.lit(False)
            for p in g.prefixes:
                cond = cond | stripped.startswith(p)
            for lo, hi in g.ranges:
                cond = cond | F.coalesce((number >= lo) & (number <= hi), F.lit(False))
            chain = F.when(cond, F.lit(i)) if chain is None else chain.when(cond, F.lit(i))
        assert chain is not None
        code = chain
        in_domain = code.isNotNull()
        rule_m, rule_d = "code-format", "code-group"
    elif col.kind == "boolean":
        value = _value(col, raw)
        malformed = value.isNull()
        in_domain = F.lit(True)
        code = value.cast("int")
        rule_m, rule_d = "boolean-token", "boolean"
    else:  # integer, float, date, datetime
        value = _value(col, raw)
        malformed = value.isNull()
        if col.kind in ("date", "datetime"):
            assert col.date_bounds is not None
            lo_v, hi_v = (F.lit(_micros(b)) for b in col.date_bounds)
            edges = [F.lit(_micros(e)) for e in _date_edges(col)]
        else:
            assert col.bounds is not None
            lo_v, hi_v = F.lit(float(col.bounds[0])), F.lit(float(col.bounds[1]))
            edges = [F.lit(float(e)) for e in col.bin_edges]
        in_domain = (value >= lo_v) & (value <= hi_v)
        v = F.least(F.greatest(value, lo_v), hi_v) if col.on_out_of_domain == "clamp" else value
        if col.kind in ("integer", "float"):
            v = v.cast("double")
        # searchsorted(edges, v, side="right") - 1, clipped to [0, n-1]
        idx = F.size(F.filter(F.array(*edges), lambda e: e <= v)) - 1
        code = F.when(v.isNotNull(), F.least(F.greatest(idx, F.lit(0)), F.lit(n - 1)))
        rule_m = {"integer": "parse-integer", "float": "parse-float",
                  "date": "parse-date", "datetime": "parse-datetime"}[col.kind]
        rule_d = "bounds"
    out_of_domain = F.lit(False) if col.on_out_of_domain == "clamp" else ~in_domain
    malformed_f = F.coalesce(malformed, F.lit(True))
    bad = missing | malformed_f | (F.coalesce(out_of_domain, F.lit(True))
                                   if col.on_out_of_domain == "null" else F.lit(False))
    final = F.when(bad, null_code).otherwise(code.cast("int"))
    return _Exprs(
        missing=missing,
        malformed=~missing & malformed_f,
        out_of_domain=~missing & ~malformed_f & F.coalesce(out_of_domain, F.lit(True)),
        code=final,
        malformed_rule=rule_m,
        domain_rule=rule_d,
    )


def _encode(col: Column) -> SparkColumn:
    return _exprs(col).code


# -- bounding -------------------------------------------------------------------------


def _bound(df: DataFrame, n_codes: int, k: int, secret: bytes) -> DataFrame:
    """Keep each patient's ``k`` rows with the smallest bounding keys, exactly as
    :func:`dpsynth.io.bound_contributions`: the content hash and the key come from
    the same functions (:func:`dpsynth.io.content_hashes`,
    :func:`dpsynth.io.bounding_keys`), run on the executors with ``mapInPandas``;
    identical rows of a patient are numbered with a window (which copy gets which
    number does not matter: they are identical); ties by (hash, number)."""
    from pyspark.sql import Window
    from pyspark.sql.types import LongType, StructField, StructType

    from dpsynth.io import bounding_keys, content_hashes

    F = _pyspark()
    codes = [f"c{j}" for j in range(n_codes)]

    def add_hash(batches: Iterator[Any]) -> Iterator[Any]:
        for b in batches:
            cols = [b[c].to_numpy(dtype=np.int64) for c in codes]
            yield b.assign(**{_HASH: content_hashes(secret, b[_UID].to_numpy(dtype=object), cols)})

    def add_key(batches: Iterator[Any]) -> Iterator[Any]:
        for b in batches:
            yield b.assign(**{_KEY: bounding_keys(b[_HASH].to_numpy(dtype=np.int64),
                                                  b[_NUM].to_numpy(dtype=np.int64))})

    hashed = df.mapInPandas(add_hash, StructType(
        [*df.schema.fields, StructField(_HASH, LongType(), False)]))
    by_hash = Window.partitionBy(_UID).orderBy(_HASH)
    numbered = hashed.withColumn(_NUM, (F.row_number().over(by_hash) - F.rank().over(by_hash))
                                 .cast("long"))
    keyed = numbered.mapInPandas(add_key, StructType(
        [*numbered.schema.fields, StructField(_KEY, LongType(), False)]))
    by_key = Window.partitionBy(_UID).orderBy(_KEY, _HASH, _NUM)
    return (keyed.withColumn("__dpsynth_rank", F.row_number().over(by_key))
            .where(F.col("__dpsynth_rank") <= k))


# -- counting -------------------------------------------------------------------------


class SparkCounter:
    """Exact marginal counts over a cached, bounded, encoded Spark DataFrame.

    Columns ``c0 .. c{d-1}`` hold the codes of the released columns (public names
    in :attr:`columns`). :meth:`count_many` counts up to 32 marginals per Spark
    job (one scan, one shuffle of partial counts). Call :meth:`close` (or use the
    counter as a context manager) to drop the cache.
    """

    __slots__ = ("__df", "__index", "columns", "sizes")

    def __init__(self, df: DataFrame, columns: Sequence[str], sizes: Sequence[int]) -> None:
        from pyspark import StorageLevel

        self.columns = tuple(columns)
        self.sizes = tuple(int(s) for s in sizes)
        self.__index = {c: j for j, c in enumerate(self.columns)}
        self.__df = df.persist(StorageLevel.MEMORY_AND_DISK)
        with _spark_errors():
            self.__df.count()  # materialise: the input is read, checked and bounded once

    def __repr__(self) -> str:
        return f"SparkCounter(columns={len(self.columns)})"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a SparkCounter cannot be pickled")

    def __enter__(self) -> SparkCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.__df.unpersist()

    def count(self, cols: tuple[str, ...]) -> np.ndarray:
        return self.count_many([cols])[0]

    def count_many(self, marginals: Sequence[tuple[str, ...]]) -> list[np.ndarray]:
        plans = [self._plan(tuple(m)) for m in marginals]
        out: list[np.ndarray] = []
        for start in range(0, len(plans), _BATCH):
            out.extend(self._count_batch(plans[start:start + _BATCH]))
        return out

    def export_codes(self) -> np.ndarray:
        """All codes on the driver (external engines with k = 1 only; small tables)."""
        with _spark_errors():
            tbl = self.__df.toArrow()
        if tbl.num_rows == 0:
            return np.zeros((0, len(self.columns)), dtype=np.int64)
        return np.column_stack([tbl.column(f"c{j}").to_numpy() for j in range(len(self.columns))]
                               ).astype(np.int64)

    def _plan(self, cols: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if not cols or len(set(cols)) != len(cols):
            raise UsageError(f"a marginal needs distinct columns ({cols})")
        for c in cols:
            if c not in self.__index:
                raise UsageError(f"column ({c!r}) is not in the counter's domain")
        idx = tuple(self.__index[c] for c in cols)
        return idx, tuple(self.sizes[j] for j in idx)

    def _count_batch(self, plans: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> list[np.ndarray]:
        F = _pyspark()
        cells = []
        for m, (idx, shape) in enumerate(plans):
            flat = F.col(f"c{idx[0]}").cast("long")
            for j, s in zip(idx[1:], shape[1:], strict=True):
                flat = flat * s + F.col(f"c{j}")
            cells.append(F.struct(F.lit(m).alias("m"), flat.alias("cell")))
        with _spark_errors():
            tbl = (self.__df.select(F.explode(F.array(*cells)).alias("x"))
                   .groupBy("x.m", "x.cell").count().toArrow())
        ms = tbl.column("m").to_numpy()
        cell = tbl.column("cell").to_numpy()
        cnt = tbl.column("count").to_numpy()
        out = []
        for m, (_, shape) in enumerate(plans):
            total = np.zeros(math.prod(shape), dtype=np.int64)
            sel = ms == m
            total[cell[sel]] = cnt[sel]
            total = total.reshape(shape)
            total.setflags(write=False)
            out.append(total)
        return out


