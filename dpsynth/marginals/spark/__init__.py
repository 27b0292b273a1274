"""Spark backend for the private steps: read, check, bound, encode, count (PRIVATE).

For tables that outgrow one machine. Needs the optional extra ``dpsynth[spark]``
(pyspark) and Java 17. Everything after the exact counts stays local: the
:class:`SparkCounter` answers ``count``/``count_many`` for the measurement
session, which adds the noise and charges the accountant on the driver.

Same semantics as the polars path (:func:`dpsynth.io.load_encoded`), from the same
specifications, one module per step:

* :mod:`~dpsynth.marginals.spark.session`: the SparkSession, and Spark/py4j error
  text kept out of every message (it may quote a cell);
* :mod:`~dpsynth.marginals.spark.reading`: the format (:func:`dpsynth.io.is_parquet`),
  the file-level and header rules (:mod:`dpsynth.input_rules`), every cell as text,
  and row numbers for the messages. Quoted fields spanning lines are not supported
  on the Spark path (such a file fails closed with ``csv-format``);
* :mod:`~dpsynth.marginals.spark.rules`: the input rules
  (:mod:`dpsynth.input_rules`) compiled to Spark SQL and checked in one job;
* :mod:`~dpsynth.marginals.spark.bounding`: the bounding rule of
  :mod:`dpsynth.io.bounding`, with its own hash functions, on the executors;
* :mod:`~dpsynth.marginals.spark.counter`: :class:`SparkCounter`.

Memory: the bounded, encoded table (one int per released column) is cached in
executor memory and disk; the driver holds one marginal at a time. Executors
need dpsynth and its Python dependencies (bounding runs Python there). See
docs/scale.md, "The Spark backend".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dpsynth.io import bounding_secret as secret_bytes
from dpsynth.marginals.spark.bounding import UID, bound
from dpsynth.marginals.spark.counter import SparkCounter
from dpsynth.marginals.spark.reading import number_rows, read_input
from dpsynth.marginals.spark.rules import check, column_exprs
from dpsynth.marginals.spark.session import (
    INSTALL_HINT,
    pyspark_functions,
    spark_errors,
    spark_session,
)
from dpsynth.schema import Schema

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

__all__ = [
    "INSTALL_HINT",
    "SparkCounter",
    "SparkEncoded",
    "pyspark_functions",
    "spark_load",
    "spark_session",
]


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
    unit_rows: np.ndarray | None = None
    """As :attr:`dpsynth.io.EncodedTable.unit_rows` (exact; collected to the driver)."""


def spark_load(path: str, schema: Schema, bounding_secret: bytes | int | None = None,
               spark: SparkSession | None = None) -> SparkEncoded:
    """Read, check, bound and encode ``path`` with Spark; return a cached counter.

    ``path``: a CSV (optionally ``.gz``) or Parquet file, or a directory of
    Parquet/CSV part files, on any file system Spark reads (local, HDFS, S3, ...).
    Format: :func:`dpsynth.io.is_parquet` (a local file by its first bytes, a
    directory by its name or parts, a URL by its name); CSV otherwise.
    ``bounding_secret``: as :func:`dpsynth.io.load_encoded` (the same secret keeps
    the same rows on both backends; ``None``: a fresh random one).
    """
    F = pyspark_functions()
    secret = secret_bytes(bounding_secret)
    spark = spark or spark_session()
    # Dates are parsed and compared as UTC wall-clock microseconds.
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    columns = tuple(c.name for c in schema.model_columns)
    sizes = tuple(c.domain_size for c in schema.model_columns)
    n_measured = len(schema.measured_columns)
    unit = schema.privacy_unit
    unit_rows = None
    with spark_errors():
        raw, from_csv = read_input(spark, path, schema)
        numbered = number_rows(spark, raw, parquet=not from_csv)
        check(numbered, schema, from_csv)
        encoded = numbered.select(
            *([F.col(f"`{unit.column}`").alias(UID)] if unit.column is not None else []),
            *[column_exprs(c).code.alias(f"c{j}") for j, c in enumerate(schema.measured_columns)],
        )
        if unit.column is not None:
            # patients by row count clamped at the cap (all rows, before bounding); the
            # internal column of represent: all_rows is the same code, per kept row
            rows = f"c{n_measured}"
            per_patient = encoded.groupBy(UID).agg(
                (F.least(F.count(F.lit(1)), F.lit(unit.rows_cap)) - 1).alias(rows))
            unit_rows = np.zeros(unit.rows_cap, dtype=np.int64)
            for r in per_patient.groupBy(rows).count().collect():
                unit_rows[int(r[rows])] = int(r["count"])
            encoded = bound(encoded, n_measured, unit.max_rows, secret)
            if schema.unit_rows_column is not None:
                encoded = encoded.join(per_patient, on=UID, how="left")
        codes = encoded.select(*[f"c{j}" for j in range(len(columns))])
        counter = SparkCounter(codes, columns, sizes)
    return SparkEncoded(counter=counter, columns=columns, sizes=sizes,
                        contribution_bound=unit.max_rows, unit_rows=unit_rows)
