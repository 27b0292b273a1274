"""Reading the private table with Spark, as the polars path reads it (PRIVATE).

Owns the Spark side of :mod:`dpsynth.io.reading`: the format
(:func:`dpsynth.io.is_parquet`, shared), the file-level rules and the header
check (:mod:`dpsynth.input_rules`, shared), Parquet type families for
:func:`dpsynth.input_rules.check_parquet_type`, every column read as text (an
empty CSV field as ``""``, temporal Parquet columns as ISO text), and the row
numbers of the "first at data row" messages (:func:`number_rows`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from dpsynth.input_rules import (
    TypeFamily,
    check_header,
    check_parquet_type,
    empty_file,
    header_not_utf8,
    input_file_error,
    input_path_problem,
)
from dpsynth.io import is_parquet, parse_header
from dpsynth.marginals.spark.session import pyspark_functions
from dpsynth.schema import Column, Schema

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column as SparkColumn
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["CORRUPT", "ROW_NUMBER", "number_rows", "read_input"]

CORRUPT = "__dpsynth_corrupt"
"""CSV: the column flagging a row Spark could not split into the header's fields."""
ROW_NUMBER = "__dpsynth_rn"
"""The column :func:`number_rows` adds: the 0-based data row number in file order."""

_FAMILY: dict[str, TypeFamily] = {
    "ByteType": "integer", "ShortType": "integer", "IntegerType": "integer", "LongType": "integer",
    "FloatType": "float", "DoubleType": "float", "DecimalType": "float",
    "DateType": "temporal", "TimestampType": "temporal", "TimestampNTZType": "temporal",
    "BooleanType": "boolean", "StringType": "string",
}


def read_input(spark: SparkSession, path: str, schema: Schema) -> tuple[DataFrame, bool]:
    """The table with one text column per schema column, in schema order, plus
    ``_metadata``; CSV also carries the :data:`CORRUPT` flag. Returns the frame and
    whether the input is CSV."""
    problem = input_path_problem(path, directory_ok=True)
    if problem is not None:
        raise input_file_error(path, problem)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise empty_file()
    if is_parquet(path):
        return _read_parquet(spark, path, schema), False
    return _read_csv(spark, path, schema), True


def _read_parquet(spark: SparkSession, path: str, schema: Schema) -> DataFrame:
    df = spark.read.parquet(path)
    check_header([f.name for f in df.schema.fields], schema)
    for c in schema.input_columns:
        t = type(df.schema[c.name].dataType).__name__
        check_parquet_type(c, _FAMILY.get(t, "other"), t)
    return df.select(*[_parquet_text(df, c) for c in schema.input_columns], "_metadata")


def _read_csv(spark: SparkSession, path: str, schema: Schema) -> DataFrame:
    from pyspark.sql.types import StringType, StructField, StructType

    F = pyspark_functions()
    first = spark.read.text(path).limit(1).collect()
    if not first or not str(first[0][0]).strip():
        raise empty_file()
    line = str(first[0][0])
    if "\ufffd" in line:  # Spark decodes bad bytes to U+FFFD
        raise header_not_utf8()
    names = parse_header(line.encode("utf-8"))
    check_header(names, schema)
    struct = StructType([StructField(n, StringType()) for n in names]
                        + [StructField(CORRUPT, StringType())])
    df = (spark.read.schema(struct)
          .option("header", True).option("enforceSchema", True)
          .option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT)
          .option("quote", '"').option("escape", '"').option("multiLine", False)
          .option("encoding", "UTF-8").option("comment", "\u0000")
          .csv(path))
    # An empty field is "" (as polars reads it); a short row is flagged corrupt.
    cols = [F.coalesce(F.col(f"`{c.name}`"), F.lit("")).alias(c.name) for c in schema.input_columns]
    return df.select(*cols, F.col(CORRUPT).isNotNull().alias(CORRUPT), "_metadata")


def _parquet_text(df: DataFrame, c: Column) -> SparkColumn:
    F = pyspark_functions()
    family = _FAMILY.get(type(df.schema[c.name].dataType).__name__, "other")
    col = F.col(f"`{c.name}`")
    if c.kind in ("date", "datetime") and family == "temporal":
        # as dpsynth.io: ISO text, then parsed like a CSV cell
        if c.kind == "date":
            return col.cast("date").cast("string").alias(c.name)
        return F.date_format(col.cast("timestamp"), "yyyy-MM-dd'T'HH:mm:ss.SSSSSS").alias(c.name)
    return col.cast("string").alias(c.name)


def number_rows(spark: SparkSession, df: DataFrame, parquet: bool) -> DataFrame:
    """Add :data:`ROW_NUMBER`: the 0-based data row number in file order.

    From the hidden ``_metadata`` column: for Parquet ``_metadata.row_index``; for
    CSV the split start ``_metadata.file_block_start`` plus the position inside the
    split (``monotonically_increasing_id`` is consecutive within a partition and a
    split is read in order), turned into global numbers with one small aggregate
    (rows per split). Files of a directory input are numbered in lexicographic
    path order.
    """
    F = pyspark_functions()
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
    return out.select(*rest, (F.col("__m") + F.col("__d")).alias(ROW_NUMBER))

