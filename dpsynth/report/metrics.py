"""Distances between distributions, shared by the public reports and the internal audit.

Owns the one definition of total variation distance (TVD) in the package:
:func:`tvd` on two distributions over the same cells, :func:`distribution` to turn
(possibly noisy, possibly negative) counts into one, and :func:`codes_tvd` for two
tables of integer codes (the mixed-radix cell index is :func:`flat_index`).

Pure numpy arithmetic on whatever it is given: it reads no file and imports nothing
private, so the public reports (noisy measurements vs synthetic rows) and the
CONFIDENTIAL audit (real rows vs synthetic rows) can both use it. Whether a figure
computed with it may be published depends on its inputs, not on this module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["codes_tvd", "distribution", "flat_index", "tvd"]

#: Past this many cells :func:`codes_tvd` histograms only the cells that occur.
_DENSE_CELLS = 4_000_000


def tvd(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance ``0.5 · Σ |p - q|`` of two distributions on the same cells."""
    return 0.5 * float(np.abs(p - q).sum())


def distribution(counts: np.ndarray) -> np.ndarray:
    """Counts -> shares: negative counts (noise) set to 0, then normalised; uniform if none."""
    pos = np.clip(counts, 0, None)
    s = pos.sum()
    return pos / s if s > 0 else np.full(counts.shape, 1.0 / counts.size)


def flat_index(codes: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Mixed-radix cell index of each row of ``codes`` (rows x columns, column j < sizes[j])."""
    flat = np.zeros(codes.shape[0], dtype=np.int64)
    for j, s in enumerate(sizes):
        flat = flat * int(s) + codes[:, j]
    return flat


def codes_tvd(a: np.ndarray, b: np.ndarray, sizes: Sequence[int]) -> float:
    """TVD between the cell shares of two code tables over the same columns.

    An empty table has all shares 0 (so its distance to any table is 0.5)."""
    fa, fb = flat_index(a, sizes), flat_index(b, sizes)
    cells = math.prod(int(x) for x in sizes)
    if cells <= _DENSE_CELLS:
        ha = np.bincount(fa, minlength=cells) / max(fa.size, 1)
        hb = np.bincount(fb, minlength=cells) / max(fb.size, 1)
    else:
        _, inv = np.unique(np.concatenate([fa, fb]), return_inverse=True)
        k = int(inv.max()) + 1
        ha = np.bincount(inv[: fa.size], minlength=k) / max(fa.size, 1)
        hb = np.bincount(inv[fa.size:], minlength=k) / max(fb.size, 1)
    return tvd(ha, hb)
