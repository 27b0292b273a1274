"""MST (McKenna, Miklau, Sheldon 2021): maximum-spanning-tree synthesizer.

Owns the MST recipe on a measurement session: measure every 1-way marginal
(``oneway_share``, default 0.2), select a spanning tree of 2-way marginals one
edge at a time with noisy max on how badly the 1-way model explains each pair
(``select_share``, 0.1), measure the chosen 2-way marginals (the rest), and
estimate a graphical model. The paper splits in thirds; the tree's 2-way
measurements carry most of the 2-way utility, so they get more here.

Analysis targets (issue 14; public, from the schema's ``analysis`` section, set by the
release in ``targets``/``focus``/``subgroups``): in the tree selection a pair holding a
target scores ``analysis_weight`` (default 4) times its error, so the noisy max favours
edges to the target (the sensitivity is scaled by the same largest weight, so the
selection stays DP). After the tree, the pairs of each target with each subgroup column,
and a chain through each focus set, are measured like the tree's edges where the tree
lacks them. The workload used is in ``info["workload"]``. Without targets and focus the
fit is exactly the plain MST.

Must not: see data except through the session, or spend more than the session
has (it spends exactly what remains).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpsynth.engines.base import FittedModel, NoisyMarginalLike, SessionLike, zero_masks
from dpsynth.engines.estimation import Observation, estimate, estimate_total
from dpsynth.engines.unionfind import DisjointSets
from dpsynth.errors import UsageError

__all__ = ["MSTSettings", "fit_mst"]


@dataclass(frozen=True, kw_only=True)
class MSTSettings:
    """Settings of the MST engine."""

    oneway_share: float = 0.2
    """Share of the budget for the 1-way marginals (the paper: 1/3)."""
    select_share: float = 0.1
    """Share for choosing the tree edges (the paper: 1/3); the rest measures
    them. Measured on NIST national2019 at epsilon 1: mean 2-way TVD 0.053-0.055
    with 0.2/0.1 against 0.056-0.057 with 1/3 each."""
    max_iters: int = 1000
    """Mirror-descent iterations at most, from the uniform table. Starting instead from
    the tree factorisation of the noisy marginals (dpsynth 0.1.x after issue 15, with 500
    iterations) reached the same loss and 2-way TVD, but not the same model: on
    diabetes130 (epsilon 1, the shipped schema with its ``analysis`` targets, 6 seeded
    noise draws) its TSTR AUC for ``readmitted`` was 0.622 against 0.645 from the uniform
    table (2-way TVD 0.0201 vs 0.0197), and 2000 iterations from the tree start did not
    close the gap. ``benchmarks/results/mst_start.md``."""
    tol: float = 1e-6
    """Stop when the loss improves by less than this (relative) over 10 iterations."""
    compress_sigmas: float = 3.0
    """Merge categories whose noisy 1-way count is below this many sigma (0: never)."""
    keep_together: tuple[tuple[str, ...], ...] = ()
    """Column sets to model jointly (public: the release sets them from the schema's
    error rules, so that the model learns what a rule allows rather than having it
    imposed by rejection). The tree is selected as usual; each set then adds the
    2-way marginals of a chain through its columns that the tree lacks, measured
    like the tree's edges (the model is then a junction tree, no longer a tree)."""
    structural_zeros: tuple[tuple[tuple[str, ...], tuple[tuple[int, ...], ...]], ...] = ()
    """Cells no row can hold (public: the release sets them from the schema's error
    rules, :func:`dpsynth.rules.structural_zeros`): per column set, the code tuples.
    Where the set is measured, the model is fitted with zero mass on them."""
    targets: tuple[str, ...] = ()
    """Analysis targets (public: the release sets them from the schema's
    ``analysis.targets``): tree edges to them score ``analysis_weight`` times their error,
    and their pairs with each subgroup column are measured."""
    focus: tuple[tuple[str, ...], ...] = ()
    """Column sets known to matter (the schema's ``analysis.focus``): a chain of pairs
    through each is measured, as for ``keep_together``."""
    subgroups: tuple[str, ...] = ()
    """The schema's subgroup columns; used only with ``targets``."""
    analysis_weight: float = 4.0
    """Selection weight of a pair holding a target (other pairs weigh 1)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.analysis_weight, int | float) and np.isfinite(self.analysis_weight)
                and self.analysis_weight >= 1):
            raise UsageError(f"analysis_weight ({self.analysis_weight}) must be a number >= 1")
        for name in ("oneway_share", "select_share"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0 < v < 1):
                raise UsageError(f"{name} ({v}) must be in (0, 1)")
        if self.oneway_share + self.select_share >= 1:
            raise UsageError(
                f"oneway_share + select_share ({self.oneway_share + self.select_share}) must be less than 1"
            )
        if not (isinstance(self.max_iters, int) and self.max_iters >= 1):
            raise UsageError(f"max_iters ({self.max_iters}) must be a positive integer")
        if not (isinstance(self.compress_sigmas, int | float) and self.compress_sigmas >= 0):
            raise UsageError(f"compress_sigmas ({self.compress_sigmas}) must be non-negative")
        if not (isinstance(self.tol, int | float) and self.tol >= 0):
            raise UsageError(f"tol ({self.tol}) must be non-negative")


def _compress(m: NoisyMarginalLike, threshold: float) -> np.ndarray | None:
    """Public map code -> group merging categories whose noisy count is below threshold."""
    y = np.asarray(m.counts, dtype=np.float64)
    sup = y >= threshold
    if sup.all():
        return None
    g = np.empty(y.size, dtype=np.int64)
    g[sup] = np.arange(int(sup.sum()))
    g[~sup] = int(sup.sum())
    return g


def fit_mst(session: SessionLike, settings: MSTSettings | None = None) -> FittedModel:
    """Fit MST, spending the session's whole remaining budget."""
    s = settings or MSTSettings()
    cols = tuple(session.columns)
    sizes = [session.domain[c] for c in cols]
    d = len(cols)
    rho = session.remaining.rho
    if rho <= 0:
        raise UsageError("the session has no budget left (rho must be positive)")
    oneway_rho = rho * (s.oneway_share if d > 1 else 1.0)
    oneway = [session.measure((c,), oneway_rho / d, "mst/1-way") for c in cols]
    measurements: list[NoisyMarginalLike] = list(oneway)
    # Compression (MST's step 2): categories below 3 sigma merge into one group.
    groups = [_compress(m, s.compress_sigmas * m.sigma) if s.compress_sigmas > 0 else None for m in oneway]
    csizes = [int(g.max()) + 1 if g is not None else n for g, n in zip(groups, sizes, strict=True)]
    expansions: list[np.ndarray | None] = []
    obs: list[Observation] = []
    for j, (m, g) in enumerate(zip(oneway, groups, strict=True)):
        y = np.asarray(m.counts, dtype=np.float64)
        if g is None:
            expansions.append(None)
            obs.append(Observation((j,), y, m.sigma))
            continue
        members = np.bincount(g, minlength=csizes[j])
        obs.append(
            Observation((j,), np.bincount(g, weights=y, minlength=csizes[j]), m.sigma * np.sqrt(members))
        )
        emat = np.zeros((csizes[j], sizes[j]))
        emat[g, np.arange(sizes[j])] = 1.0
        expansions.append(emat / emat.sum(axis=1, keepdims=True))
    gmap = {cols[j]: g for j, g in enumerate(groups) if g is not None}
    if d > 1:
        targets = {cols.index(t) for t in s.targets if t in cols}
        chosen = _select_tree(session, cols, obs, expansions, rho * s.select_share / (d - 1),
                              targets, float(s.analysis_weight))
        tree = list(chosen)
        chosen += [e for e in _forced_edges(cols, s.keep_together) if e not in chosen]
        extra = _forced_edges(cols, _analysis_sets(s))
        chosen += [e for e in extra if e not in chosen]
        workload = {"tree": f"a spanning tree of {d - 1} pairs chosen by noisy max",
                    "target_weight": float(s.analysis_weight) if targets else 1.0,
                    "tree_pairs_with_a_target": [[cols[a], cols[b]] for a, b in tree
                                                 if a in targets or b in targets],
                    "analysis_pairs": [[cols[a], cols[b]] for a, b in extra]}
        measure_rho = session.remaining.rho / len(chosen)
        for n, (a, b) in enumerate(chosen):
            pair = (cols[a], cols[b])
            # The last measurement takes exactly what remains.
            r = session.remaining.rho if n == len(chosen) - 1 else measure_rho
            m = session.measure(pair, r, "mst/2-way", groups={c: gmap[c] for c in pair if c in gmap})
            measurements.append(m)
            obs.append(Observation((a, b), np.asarray(m.counts, dtype=np.float64), m.sigma))
    zeros = _compressed_zeros(zero_masks(s.structural_zeros, {c: j for j, c in enumerate(cols)},
                                         sizes), groups, csizes)
    est = estimate(csizes, obs, max_iters=s.max_iters, tol=s.tol,
                   zeros={c: m for c, m in zeros.items() if any(o.attrs == c for o in obs)})
    info = {"engine": "mst", "iterations": est.iterations, "estimation_seconds": est.seconds,
            "workload": workload if d > 1 else {}}
    return FittedModel(cols, sizes, est.model, measurements, info, expansions)


def _compressed_zeros(masks: dict[tuple[int, ...], np.ndarray], groups: list[np.ndarray | None],
                      csizes: list[int]) -> dict[tuple[int, ...], np.ndarray]:
    """Zero masks on the compressed domain: a merged cell is a zero only when every
    cell merged into it is."""
    out: dict[tuple[int, ...], np.ndarray] = {}
    for clique, mask in masks.items():
        for axis, a in enumerate(clique):
            g = groups[a]
            if g is None:
                continue
            shape = list(mask.shape)
            shape[axis] = csizes[a]
            merged = np.ones(shape, dtype=bool)
            for orig in range(mask.shape[axis]):
                idx: list[Any] = [slice(None)] * mask.ndim
                idx[axis] = int(g[orig])
                src: list[Any] = [slice(None)] * mask.ndim
                src[axis] = orig
                merged[tuple(idx)] &= mask[tuple(src)]
            mask = merged
        out[clique] = mask
    return out


def _forced_edges(cols: tuple[str, ...], keep: tuple[tuple[str, ...], ...]) -> list[tuple[int, int]]:
    """The pairs ``keep_together`` asks for: a chain through each set's columns."""
    index = {c: j for j, c in enumerate(cols)}
    edges: list[tuple[int, int]] = []
    for group in keep:
        members = [index[c] for c in group if c in index]
        for a, b in itertools.pairwise(members):
            e = (min(a, b), max(a, b))
            if e not in edges:
                edges.append(e)
    return edges


def _analysis_sets(s: MSTSettings) -> tuple[tuple[str, ...], ...]:
    """Column sets measured after the tree: (target, subgroup) pairs and the focus sets."""
    pairs = tuple((t, g) for t in s.targets for g in s.subgroups if g != t)
    return pairs + s.focus


def _select_tree(session: SessionLike, cols: tuple[str, ...], obs: list[Observation],
                 expansions: list[np.ndarray | None], select_rho: float,
                 targets: set[int] | frozenset[int] = frozenset(),
                 target_weight: float = 1.0) -> list[tuple[int, int]]:
    """The spanning tree's edges, one noisy-max selection each (``select_rho`` each):
    the pair the independent 1-way model explains worst (a pair holding a target
    weighted by ``target_weight``), among the pairs that join two parts of the tree."""
    d = len(cols)
    total = estimate_total(obs)
    probs = []
    for j, o in enumerate(obs):
        p = np.clip(o.y, 0.0, None)
        p = p / p.sum() if p.sum() > 0 else np.full(p.size, 1.0 / p.size)
        ex = expansions[j]
        probs.append(p @ ex if ex is not None else p)
    pairs = [(i, j) for i in range(d) for j in range(i + 1, d)]
    tree = DisjointSets(d)
    chosen: list[tuple[int, int]] = []
    for _ in range(d - 1):
        cand = [p for p in pairs if tree.find(p[0]) != tree.find(p[1])]
        k = session.select_marginal(
            [(cols[a], cols[b]) for a, b in cand],
            [total * np.outer(probs[a], probs[b]) for a, b in cand],
            [target_weight if a in targets or b in targets else 1.0 for a, b in cand],
            [0.0] * len(cand),
            select_rho,
            "mst/select",
        )
        a, b = cand[k]
        tree.union(a, b)
        chosen.append((a, b))
    return chosen
