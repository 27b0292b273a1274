"""Exact marginal counts over a cached, bounded, encoded Spark DataFrame (PRIVATE).

Owns :class:`SparkCounter`, the :class:`~dpsynth.marginals.MarginalCounter` of
the Spark backend. Everything after the exact counts stays local: the counter
answers ``count``/``count_many`` for the measurement session, which adds the
noise and charges the accountant on the driver. Memory: the table (one int per
released column) is cached in executor memory and disk; the driver holds one
batch of marginals at a time.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from dpsynth.marginals.columns import marginal_columns
from dpsynth.marginals.spark.session import pyspark_functions, spark_errors

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame

__all__ = ["SparkCounter"]

_BATCH = 32
"""Marginals counted per Spark job by :meth:`SparkCounter.count_many`."""


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
        with spark_errors():
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
        with spark_errors():
            tbl = self.__df.toArrow()
        if tbl.num_rows == 0:
            return np.zeros((0, len(self.columns)), dtype=np.int64)
        return np.column_stack([tbl.column(f"c{j}").to_numpy() for j in range(len(self.columns))]
                               ).astype(np.int64)

    def _plan(self, cols: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        cols = marginal_columns(cols, self.__index)
        idx = tuple(self.__index[c] for c in cols)
        return idx, tuple(self.sizes[j] for j in idx)

    def _count_batch(self, plans: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> list[np.ndarray]:
        F = pyspark_functions()
        cells = []
        for m, (idx, shape) in enumerate(plans):
            flat = F.col(f"c{idx[0]}").cast("long")
            for j, s in zip(idx[1:], shape[1:], strict=True):
                flat = flat * s + F.col(f"c{j}")
            cells.append(F.struct(F.lit(m).alias("m"), flat.alias("cell")))
        with spark_errors():
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
