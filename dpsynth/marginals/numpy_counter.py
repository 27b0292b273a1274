"""Exact marginal counts over an in-memory code matrix (PRIVATE; the default backend).

Memory model: the counter keeps the caller's ``(n_rows, n_cols)`` code matrix in
its compact dtype (``uint8``/``uint16`` from :func:`dpsynth.io.load_encoded`, one
or two bytes per cell) as a read-only view, without copying it. A marginal is
counted in blocks of rows: for each block the raveled multi-index over the
marginal's columns is built in int64 (``block_rows x 8`` bytes) and counted with
``numpy.bincount``; the per-block counts are summed in int64, so results are
exactly those of one ``bincount`` over the whole table. Extra memory per count is
``O(block_rows + cells)``, independent of ``n_rows``.

:meth:`NumpyCounter.count_many` counts many marginals in one pass over the rows
(each block is read once, while it is in cache, for every marginal).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dpsynth.errors import InputDataError, UsageError
from dpsynth.marginals.columns import marginal_columns

__all__ = ["BLOCK_ROWS", "NumpyCounter"]

BLOCK_ROWS = 1 << 16
"""Rows per block: small enough that a block of a 50-column uint8 matrix (3 MB)
and its int64 index (0.5 MB) stay in cache."""
_TRANSPOSE_FROM = 4
"""Batches of at least this many marginals copy each block column-major first."""


class NumpyCounter:
    """Counts exact marginals of a contribution-bounded code matrix.

    Parameters
    ----------
    codes:
        ``(n_rows, n_cols)`` integer codes (any integer dtype; kept as is, not
        copied). The caller must not modify the array afterwards.
    columns, sizes:
        Public column names and domain sizes; column ``j`` takes values in
        ``[0, sizes[j])``. Checked here (fails closed, without values).
    """

    __slots__ = ("__codes", "__columns", "__index", "__sizes")

    def __init__(self, codes: np.ndarray, columns: Sequence[str], sizes: Sequence[int]) -> None:
        cols = tuple(str(c) for c in columns)
        if len(set(cols)) != len(cols):
            raise UsageError("columns must be unique")
        if len(sizes) != len(cols):
            raise UsageError(f"sizes ({len(sizes)}) must have one entry per column ({len(cols)})")
        arr = np.asarray(codes)
        if arr.ndim != 2 or arr.shape[1] != len(cols):
            raise InputDataError(f"codes must be a 2-D array with {len(cols)} columns")
        if arr.dtype.kind not in "iu":
            raise InputDataError("codes must be integers")
        if arr.shape[0] and arr.shape[1]:
            lo = arr.min(axis=0) if arr.dtype.kind == "i" else None
            hi = arr.max(axis=0)
            for j, (c, s) in enumerate(zip(cols, sizes, strict=True)):
                if (lo is not None and lo[j] < 0) or hi[j] >= s:
                    # No value in the message: only the column and the rule.
                    raise InputDataError("code outside the public domain", column=c, rule="domain")
        view = arr.view()
        view.setflags(write=False)
        self.__codes = view
        self.__columns = cols
        self.__sizes = tuple(int(s) for s in sizes)
        self.__index = {c: j for j, c in enumerate(cols)}

    def __repr__(self) -> str:
        return f"NumpyCounter(columns={len(self.__columns)})"

    def __reduce__(self) -> str | tuple[object, ...]:  # never pickle private data
        raise TypeError("a NumpyCounter cannot be pickled")

    @property
    def columns(self) -> tuple[str, ...]:
        return self.__columns

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.__sizes

    def count(self, cols: tuple[str, ...]) -> np.ndarray:
        """Exact int64 counts over ``cols``, shape = their domain sizes."""
        return self.count_many([cols])[0]

    def count_many(self, marginals: Sequence[tuple[str, ...]]) -> list[np.ndarray]:
        """Exact counts of several marginals in one pass over the rows."""
        plans = [self._plan(tuple(m)) for m in marginals]
        totals = [np.zeros(math.prod(shape), dtype=np.int64) for _, shape in plans]
        codes = self.__codes
        n = codes.shape[0]
        # A marginal with more cells than a block is counted with blocks as large as
        # its cell count, so bincount's minlength never dominates the work.
        small = [i for i, (_, shape) in enumerate(plans) if math.prod(shape) <= BLOCK_ROWS]
        large = [i for i, (_, shape) in enumerate(plans) if math.prod(shape) > BLOCK_ROWS]
        if small:
            for start in range(0, n, BLOCK_ROWS):
                block = codes[start:start + BLOCK_ROWS].T
                if len(small) >= _TRANSPOSE_FROM:
                    # one contiguous copy of the block serves every marginal
                    block = np.ascontiguousarray(block)
                for i in small:
                    self._add(totals[i], block, *plans[i])
        for i in large:
            step = max(BLOCK_ROWS, math.prod(plans[i][1]))
            for start in range(0, n, step):
                self._add(totals[i], codes[start:start + step].T, *plans[i])
        out = []
        for t, (_, shape) in zip(totals, plans, strict=True):
            t = t.reshape(shape)
            t.setflags(write=False)
            out.append(t)
        return out

    def export_codes(self) -> np.ndarray:
        """The codes as a read-only int64 array (external engines only; a copy
        unless the codes are already int64)."""
        out = np.asarray(self.__codes, dtype=np.int64)
        if out is not self.__codes:
            out.setflags(write=False)
        return out

    # -- internals -------------------------------------------------------------------
    def _plan(self, cols: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        cols = marginal_columns(cols, self.__index)
        idx = tuple(self.__index[c] for c in cols)
        return idx, tuple(self.__sizes[j] for j in idx)

    @staticmethod
    def _add(total: np.ndarray, block_t: np.ndarray, idx: tuple[int, ...],
             shape: tuple[int, ...]) -> None:
        """Add the counts of one block (``block_t``: the block transposed, one
        row per column) to ``total``."""
        flat = block_t[idx[0]].astype(np.int64)
        for j, s in zip(idx[1:], shape[1:], strict=True):
            flat *= s
            flat += block_t[j].astype(np.int64, copy=False)
        total += np.bincount(flat, minlength=total.size)
