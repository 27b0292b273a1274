"""Conditioning a fitted model on evidence: exact, by re-calibrating its junction tree.

Owns :func:`condition`: given, for some columns, a weight per code (1 for a code the
evidence allows, 0 for one it excludes), the model restricted to the allowed codes
and renormalised: ``P'(x) = P(x) prod_a w_a(x_a) / Z``, with ``Z`` the model's
probability of the evidence. Each column's weights multiply the table of one clique
that holds it (zeroing the excluded cells); one collect pass (leaves to root) and
one distribute pass (root to leaves) of Hugin propagation then make every clique
table the exact marginal of ``P'`` again, agreeing on separators, so the sampler
(:mod:`dpsynth.engines.sampler`) draws from ``P'`` exactly and ``marginal`` answers
``P'``'s marginals. For a column the model holds in a compressed domain (MST's
merged categories), a model code's weight is the expansion's mass on allowed codes,
and its expansion is restricted to them.

Post-processing of a DP model only. Must not: touch private data, draw randomness.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dpsynth.engines.base import FittedModel
from dpsynth.engines.junction_tree import Clique
from dpsynth.engines.markov_model import MarkovModel

__all__ = ["condition"]


def _onto(table: np.ndarray, clique: Clique, sep: Clique) -> np.ndarray:
    """``table`` (over ``clique``) summed down to ``sep`` (a subset, ascending)."""
    axes = tuple(k for k, a in enumerate(clique) if a not in sep)
    return table.sum(axis=axes) if axes else table


def _spread(vec: np.ndarray, clique: Clique, sep: Clique) -> np.ndarray:
    """``vec`` (over ``sep``) shaped to broadcast against a table over ``clique``."""
    return vec.reshape([vec.shape[sep.index(a)] if a in sep else 1 for a in clique])


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def condition(model: FittedModel, evidence: Mapping[int, np.ndarray]) -> tuple[FittedModel, float]:
    """``model`` conditioned on ``evidence`` (column index -> weights over that column's
    codes, in ``[0, 1]``), and ``Z``, the model's probability of the evidence.

    The conditioned model's ``total`` is ``Z * total``: the number of rows the model
    expects to satisfy the evidence. When ``Z`` is 0 the evidence is impossible under
    the model and the returned model must not be sampled.
    """
    mm = model.markov_model
    jt = mm.jt
    pots = [np.array(p, dtype=np.float64) for p in mm.probs]
    expansions = [model.expansion(j) for j in range(len(model.columns))]
    for a, weights in evidence.items():
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (model.sizes[a],) or np.any(w < 0) or np.any(w > 1):
            raise ValueError(f"evidence for column {model.columns[a]!r} must be "
                             f"{model.sizes[a]} weights in [0, 1]")
        ex = expansions[a]
        if ex is not None:
            restricted = ex * w[None, :]
            mass = restricted.sum(axis=1)
            expansions[a] = _ratio(restricted, mass[:, None])
            w = mass
        host = jt.containing((a,))
        if host is None:  # pragma: no cover - every attribute is in some clique
            raise ValueError(f"column {model.columns[a]!r} is in no clique")
        pots[host] = pots[host] * _spread(w, jt.cliques[host], (a,))
    # collect: each clique sends its separator marginal to its parent (leaves first)
    for i in reversed(jt.order):
        p = jt.parent[i]
        if p < 0:
            continue
        sep = jt.separator[i]
        message = _ratio(_onto(pots[i], jt.cliques[i], sep), _onto(mm.probs[i], jt.cliques[i], sep))
        pots[p] = pots[p] * _spread(message, jt.cliques[p], sep)
    root = jt.order[0]
    z = float(pots[root].sum())
    if not z > 0:
        return model, 0.0
    # distribute: each clique takes its parent's (now exact) separator marginal
    for i in jt.order:
        p = jt.parent[i]
        if p < 0:
            continue
        sep = jt.separator[i]
        message = _ratio(_onto(pots[p], jt.cliques[p], sep), _onto(pots[i], jt.cliques[i], sep))
        pots[i] = pots[i] * _spread(message, jt.cliques[i], sep)
    probs = [t / z for t in pots]
    conditioned = MarkovModel(mm.sizes, jt, probs, mm.total * z)
    info = {**model.info, "conditioned": True}
    return FittedModel(model.columns, model.sizes, conditioned, [], info, expansions), z
