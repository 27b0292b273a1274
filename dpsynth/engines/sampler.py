"""Drawing synthetic rows from a fitted junction-tree model (post-processing).

Owns: exact ancestral sampling along the junction tree. The root clique is drawn
from its marginal; each child clique's new attributes are drawn from the
child's table conditioned on the separator values already drawn for that row
(vectorised: one inverse-CDF lookup over a row-offset cumulative table, no
per-row Python loop). Because the tree's tables agree on separators, the rows
follow the model's distribution exactly, for every clique.

We do not use mbi's ``synthetic_data()``: it ranks rows inside parent groups
and conditions on the wrong cliques (benchmarks/README.md compares the two).

Must not: touch private data, or use any randomness but the caller's seeded
:class:`numpy.random.Generator`.
"""

from __future__ import annotations

import numpy as np

from dpsynth.engines.estimation import MarkovModel

__all__ = ["code_dtype", "draw_rows", "sample"]


def draw_rows(table: np.ndarray, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each row ``r`` draw a column of ``table[group[r]]`` (rows = probabilities)."""
    n_groups, n_out = table.shape
    group = group.astype(np.int64)  # compact codes would overflow in group * n_out
    t = np.clip(table, 0.0, None)
    mass = t.sum(axis=1, keepdims=True)
    # A separator configuration the child gives no mass (only through rounding)
    # falls back to uniform.
    t = np.where(mass > 0, t / np.where(mass > 0, mass, 1.0), 1.0 / n_out)
    cdf = np.cumsum(t, axis=1)
    cdf[:, -1] = 1.0
    keys = (cdf + np.arange(n_groups)[:, None]).ravel()
    u = rng.random(group.shape[0])
    pos = np.searchsorted(keys, group + u, side="right")
    pos = np.minimum(pos, group * n_out + n_out - 1)  # guard against rounding at the edge
    return pos - group * n_out


def code_dtype(sizes: tuple[int, ...] | list[int]) -> type[np.unsignedinteger]:
    """The smallest unsigned type holding every code (synthetic tables are large)."""
    top = max(sizes, default=1)
    return np.uint8 if top <= 1 << 8 else np.uint16 if top <= 1 << 16 else np.uint32


def sample(model: MarkovModel, n_rows: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_rows, n_attrs)`` integer codes drawn from ``model``, in the smallest unsigned
    type (:func:`code_dtype`), column-major so each column is contiguous."""
    if n_rows < 0:
        raise ValueError("n_rows must be non-negative")
    sizes = model.sizes
    jt = model.jt
    out = np.zeros((n_rows, len(sizes)), dtype=code_dtype(sizes), order="F")
    drawn: set[int] = set()
    for i in jt.order:
        clique = jt.cliques[i]
        sep = tuple(a for a in clique if a in drawn)
        new = tuple(a for a in clique if a not in drawn)
        if not new:
            continue
        p = model.probs[i]
        perm = [clique.index(a) for a in (*sep, *new)]
        table = np.transpose(p, perm).reshape(
            int(np.prod([sizes[a] for a in sep], dtype=np.int64)),
            int(np.prod([sizes[a] for a in new], dtype=np.int64)),
        )
        group = np.zeros(n_rows, dtype=np.int64)
        for a in sep:
            group *= sizes[a]
            group += out[:, a]
        flat = draw_rows(table, group, rng)
        for a in reversed(new):
            out[:, a] = flat % sizes[a]
            flat //= sizes[a]
        drawn.update(new)
    return out
