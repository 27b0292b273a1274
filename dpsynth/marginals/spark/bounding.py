"""Contribution bounding on Spark: the polars path's rule, run on the executors (PRIVATE).

Owns :func:`bound`, which keeps exactly the rows
:func:`dpsynth.io.bound_contributions` keeps for the same secret: each row's
content hash (:func:`dpsynth.io.content_hashes`: the keyed hash of the patient
id's raw text, mixed with the row's codes) and key (:func:`dpsynth.io.bounding_keys`)
come from the same functions, run with ``mapInPandas``; a window numbers a
patient's identical rows and another keeps each patient's ``k`` rows with the
smallest (key, hash, number). The rows a patient keeps depend only on that
patient's rows and the secret, not on row numbers, file order or partitioning.
Executors need dpsynth and its Python dependencies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from dpsynth.io import bounding_keys, content_hashes
from dpsynth.marginals.spark.session import pyspark_functions

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

__all__ = ["UID", "bound"]

UID = "__dpsynth_uid"
"""The patient id column (raw text) of the frame :func:`bound` takes."""
_KEY = "__dpsynth_key"
_HASH = "__dpsynth_hash"
_NUM = "__dpsynth_num"


def bound(df: DataFrame, n_codes: int, k: int, secret: bytes) -> DataFrame:
    """Keep each patient's ``k`` rows with the smallest bounding keys. ``df`` holds
    :data:`UID` and the codes ``c0 .. c{n_codes-1}``. Identical rows of a patient
    are numbered with a window (which copy gets which number does not matter: they
    are identical); ties by (hash, number)."""
    from pyspark.sql import Window
    from pyspark.sql.types import LongType, StructField, StructType

    F = pyspark_functions()
    codes = [f"c{j}" for j in range(n_codes)]

    def add_hash(batches: Iterator[Any]) -> Iterator[Any]:
        for b in batches:
            cols = [b[c].to_numpy(dtype=np.int64) for c in codes]
            yield b.assign(**{_HASH: content_hashes(secret, b[UID].to_numpy(dtype=object), cols)})

    def add_key(batches: Iterator[Any]) -> Iterator[Any]:
        for b in batches:
            yield b.assign(**{_KEY: bounding_keys(b[_HASH].to_numpy(dtype=np.int64),
                                                  b[_NUM].to_numpy(dtype=np.int64))})

    hashed = df.mapInPandas(add_hash, StructType(
        [*df.schema.fields, StructField(_HASH, LongType(), False)]))
    by_hash = Window.partitionBy(UID).orderBy(_HASH)
    numbered = hashed.withColumn(_NUM, (F.row_number().over(by_hash) - F.rank().over(by_hash))
                                 .cast("long"))
    keyed = numbered.mapInPandas(add_key, StructType(
        [*numbered.schema.fields, StructField(_KEY, LongType(), False)]))
    by_key = Window.partitionBy(UID).orderBy(_KEY, _HASH, _NUM)
    return (keyed.withColumn("__dpsynth_rank", F.row_number().over(by_key))
            .where(F.col("__dpsynth_rank") <= k))

