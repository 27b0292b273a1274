"""Private-PGM style estimation: a graphical model fitted to noisy marginals.

Owns: the estimate of the total (precision-weighted sums of the noisy
marginals), log-space belief propagation on a junction tree, mirror descent
with Armijo line search (McKenna et al., Private-PGM) minimising
``sum_m ||M_c(mu) - y_m||^2 / sigma_m^2`` with warm starts, and the fitted
:class:`MarkovModel` answering marginal queries on any attribute set
(variable elimination over the calibrated tree).

Everything here is post-processing of DP measurements. Must not: import the
measurement session or any private-table module, use the true row count, or
draw randomness (sampling lives in ``sampler.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpsynth.engines.junction_tree import Clique, JunctionTree, build_junction_tree

__all__ = [
    "EstimationResult",
    "MarkovModel",
    "Observation",
    "estimate",
    "estimate_total",
]


@dataclass(frozen=True)
class Observation:
    """A noisy marginal in estimation's layout: sorted attribute indices.

    ``y`` has one axis per attribute of ``attrs`` (ascending index order);
    ``sigma`` is the noise scale, a number or an array broadcastable to ``y``
    (e.g. a merged cell summing several noisy cells).
    """

    attrs: Clique
    y: np.ndarray
    sigma: float | np.ndarray


def estimate_total(observations: Sequence[Observation]) -> float:
    """Precision-weighted mean of the noisy marginals' sums (at least 1).

    The sum of a marginal with ``cells`` cells has noise variance
    ``sigma^2 * cells``.
    """
    if not observations:
        raise ValueError("at least one observation is needed to estimate the total")
    num = den = 0.0
    for o in observations:
        w = 1.0 / float(np.sum(np.broadcast_to(np.square(o.sigma), o.y.shape)))
        num += w * float(o.y.sum())
        den += w
    return max(1.0, num / den)


def _lse(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """log-sum-exp over ``axes`` keeping dims."""
    if not axes:
        return x
    m = x.max(axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.exp(x - m).sum(axis=axes, keepdims=True)) + m


class MarkovModel:
    """A calibrated junction-tree distribution scaled to ``total`` rows.

    ``probs[i]`` is the probability table of ``jt.cliques[i]`` (axes in
    ascending attribute order); tables agree on separators.
    """

    def __init__(self, sizes: Sequence[int], jt: JunctionTree, probs: list[np.ndarray], total: float) -> None:
        self.sizes = tuple(int(s) for s in sizes)
        self.jt = jt
        self.probs = probs
        self.total = float(total)

    @property
    def cliques(self) -> tuple[Clique, ...]:
        return self.jt.cliques

    def size(self) -> int:
        return sum(p.size for p in self.probs)

    def marginal(self, attrs: Sequence[int]) -> np.ndarray:
        """Model marginal over ``attrs`` (in the given order) in counts (sums to total)."""
        return self.prob_marginal(attrs) * self.total

    def prob_marginal(self, attrs: Sequence[int]) -> np.ndarray:
        q = tuple(int(a) for a in attrs)
        if len(set(q)) != len(q):
            raise ValueError("attributes of a marginal must be distinct")
        srt = tuple(sorted(q))
        host = self.jt.containing(srt)
        if host is not None:
            c = self.jt.cliques[host]
            p = self.probs[host]
            axes = tuple(k for k, a in enumerate(c) if a not in srt)
            out = p.sum(axis=axes) if axes else p
        else:
            out = self._eliminate(srt)
        perm = [srt.index(a) for a in q]
        return np.ascontiguousarray(np.transpose(out, perm))

    def _eliminate(self, q: Clique) -> np.ndarray:
        jt = self.jt
        qs = set(q)
        # Choose cliques covering q, greedily by coverage.
        required: set[int] = set()
        left = set(qs)
        while left:
            best = max(range(len(jt.cliques)), key=lambda i: len(left.intersection(jt.cliques[i])))
            required.add(best)
            left -= set(jt.cliques[best])
        # Steiner subtree: union of root paths, then prune.
        nodes: set[int] = set()
        for r in required:
            i = r
            while i >= 0 and i not in nodes:
                nodes.add(i)
                i = jt.parent[i]
        kids: dict[int, set[int]] = {i: set() for i in nodes}
        for i in nodes:
            p = jt.parent[i]
            if p >= 0 and p in nodes:
                kids[p].add(i)
        top = next(i for i in jt.order if i in nodes)
        changed = True
        while changed:
            changed = False
            for i in list(nodes):
                if i in required:
                    continue
                if not kids[i] and i != top:
                    nodes.discard(i)
                    kids[jt.parent[i]].discard(i)
                    changed = True
                elif i == top and len(kids[i]) == 1:
                    nodes.discard(i)
                    (top,) = tuple(kids[i])
                    changed = True
        factors: dict[int, list[tuple[Clique, np.ndarray]]] = {
            i: [(jt.cliques[i], self.probs[i])] for i in nodes
        }
        carried: dict[int, set[int]] = {i: set(jt.cliques[i]) & qs for i in nodes}
        for i in reversed(jt.order):
            if i not in nodes or i == top:
                continue
            c = jt.cliques[i]
            sep = jt.separator[i]
            sep_axes = tuple(k for k, a in enumerate(c) if a not in sep)
            ps = self.probs[i].sum(axis=sep_axes) if sep_axes else self.probs[i]
            inv = np.divide(1.0, ps, out=np.zeros_like(ps), where=ps > 0)
            keep = tuple(sorted(set(sep) | carried[i]))
            msg = _contract([*factors[i], (sep, inv)], keep)
            p = jt.parent[i]
            factors[p].append((keep, msg))
            carried[p] |= carried[i]
        return _contract(factors[top], q)


def _contract(factors: Sequence[tuple[Clique, np.ndarray]], out: Clique) -> np.ndarray:
    labels: dict[int, int] = {}
    for vs, _ in factors:
        for v in vs:
            labels.setdefault(v, len(labels))
    args: list[Any] = []
    for vs, arr in factors:
        args.append(arr)
        args.append([labels[v] for v in vs])
    args.append([labels[v] for v in out])
    einsum: Any = np.einsum
    return np.asarray(einsum(*args, optimize=len(factors) > 2))


@dataclass
class EstimationResult:
    """The fitted model plus state for a warm start and diagnostics."""

    model: MarkovModel
    theta: dict[Clique, np.ndarray]
    loss: float
    iterations: int
    seconds: float
    step: float
    history: list[float] = field(default_factory=list)


class _Problem:
    """Structure shared by all iterations of one fit."""

    def __init__(
        self,
        sizes: Sequence[int],
        observations: Sequence[Observation],
        total: float,
        extra_cliques: Sequence[Clique] = (),
    ) -> None:
        n = len(sizes)
        self.sizes = tuple(int(s) for s in sizes)
        self.total = float(total)
        # Combine observations of the same clique (precision-weighted mean).
        acc: dict[Clique, tuple[np.ndarray, np.ndarray]] = {}
        for o in observations:
            w = np.broadcast_to(1.0 / np.square(np.asarray(o.sigma, dtype=np.float64)), o.y.shape)
            yw = np.asarray(o.y, dtype=np.float64) * w
            if o.attrs in acc:
                s, ww = acc[o.attrs]
                acc[o.attrs] = (s + yw, ww + w)
            else:
                acc[o.attrs] = (yw, w)
        self.cliques: list[Clique] = list(acc)
        self.y = {c: acc[c][0] / acc[c][1] for c in self.cliques}
        self.w = {c: acc[c][1] for c in self.cliques}
        covered = {a for c in self.cliques for a in c} | {a for c in extra_cliques for a in c}
        structure = [*self.cliques, *extra_cliques, *[(a,) for a in range(n) if a not in covered]]
        self.jt = build_junction_tree(n, structure, self.sizes)
        jt = self.jt
        self.shapes = [tuple(self.sizes[a] for a in c) for c in jt.cliques]
        self.host: dict[Clique, int] = {}
        self.bshape: dict[Clique, tuple[int, ...]] = {}
        self.raxes: dict[Clique, tuple[int, ...]] = {}
        for c in self.cliques:
            h = jt.containing(c)
            if h is None:  # pragma: no cover - triangulation guarantees a host
                raise RuntimeError("junction tree misses a measured clique")
            hc = jt.cliques[h]
            self.host[c] = h
            self.bshape[c] = tuple(self.sizes[a] if a in c else 1 for a in hc)
            self.raxes[c] = tuple(k for k, a in enumerate(hc) if a not in c)
        # Message plumbing per non-root clique.
        self.up_axes: list[tuple[int, ...]] = []
        self.down_axes: list[tuple[int, ...]] = []
        self.pshape: list[tuple[int, ...]] = []
        self.cshape: list[tuple[int, ...]] = []
        for i, c in enumerate(jt.cliques):
            p = jt.parent[i]
            sep = set(jt.separator[i])
            self.up_axes.append(tuple(k for k, a in enumerate(c) if a not in sep))
            self.cshape.append(tuple(self.sizes[a] if a in sep else 1 for a in c))
            if p >= 0:
                pc = jt.cliques[p]
                self.down_axes.append(tuple(k for k, a in enumerate(pc) if a not in sep))
                self.pshape.append(tuple(self.sizes[a] if a in sep else 1 for a in pc))
            else:
                self.down_axes.append(())
                self.pshape.append(())

    def potentials(self, theta: Mapping[Clique, np.ndarray]) -> list[np.ndarray]:
        pots = [np.zeros(s) for s in self.shapes]
        for c, t in theta.items():
            pots[self.host[c]] += t.reshape(self.bshape[c])
        return pots

    def calibrate(self, pots: list[np.ndarray]) -> list[np.ndarray]:
        """Normalised log beliefs (each logsumexp's to 0)."""
        jt = self.jt
        acc = [p.copy() for p in pots]
        up: list[np.ndarray | None] = [None] * len(pots)
        for i in reversed(jt.order):
            p = jt.parent[i]
            if p < 0:
                continue
            m = _lse(acc[i], self.up_axes[i])
            up[i] = m
            acc[p] += m.reshape(self.pshape[i])
        beliefs: list[np.ndarray] = [np.empty(0)] * len(pots)
        for i in jt.order:
            p = jt.parent[i]
            if p < 0:
                b = acc[i]
            else:
                mu = up[i]
                assert mu is not None
                down = _lse(beliefs[p] - mu.reshape(self.pshape[i]), self.down_axes[i])
                b = acc[i] + down.reshape(self.cshape[i])
            beliefs[i] = b - _lse(b, tuple(range(b.ndim)))
        return beliefs

    def marginals(self, logb: list[np.ndarray]) -> dict[Clique, np.ndarray]:
        probs: dict[int, np.ndarray] = {}
        out: dict[Clique, np.ndarray] = {}
        for c in self.cliques:
            h = self.host[c]
            if h not in probs:
                probs[h] = np.exp(logb[h]) * self.total
            ax = self.raxes[c]
            out[c] = probs[h].sum(axis=ax) if ax else probs[h]
        return out

    def loss(self, mu: Mapping[Clique, np.ndarray]) -> tuple[float, dict[Clique, np.ndarray]]:
        total = 0.0
        grad: dict[Clique, np.ndarray] = {}
        for c in self.cliques:
            d = mu[c] - self.y[c]
            wd = self.w[c] * d
            total += float(np.vdot(wd, d))
            grad[c] = 2.0 * wd
        return total, grad

    def model(self, logb: list[np.ndarray]) -> MarkovModel:
        probs = [np.exp(b) for b in logb]
        for p in probs:
            p /= p.sum()
        return MarkovModel(self.sizes, self.jt, probs, self.total)


def estimate(
    sizes: Sequence[int],
    observations: Sequence[Observation],
    *,
    total: float | None = None,
    warm_start: EstimationResult | None = None,
    extra_cliques: Sequence[Clique] = (),
    max_iters: int = 1000,
    tol: float = 1e-5,
    max_seconds: float = math.inf,
) -> EstimationResult:
    """Fit a graphical model to ``observations`` by mirror descent.

    ``total`` defaults to :func:`estimate_total`. Stops after ``max_iters``
    iterations, after ``max_seconds``, or when the loss improved by less than
    ``tol`` (relative) over the last 10 iterations. ``warm_start`` reuses a
    previous fit's potentials and step size.
    """
    t0 = time.perf_counter()
    if total is None:
        total = estimate_total(observations)
    prob = _Problem(sizes, observations, total, extra_cliques)
    theta: dict[Clique, np.ndarray] = {}
    # Natural scale of a mirror-descent step on count-scaled marginals.
    alpha = 1.0 / (max(float(np.max(w)) for w in prob.w.values()) * total)
    if warm_start is not None:
        alpha = warm_start.step
        for c in prob.cliques:
            prev = warm_start.theta.get(c)
            theta[c] = prev.copy() if prev is not None else np.zeros(prob.y[c].shape)
    else:
        theta = {c: np.zeros(prob.y[c].shape) for c in prob.cliques}
    logb = prob.calibrate(prob.potentials(theta))
    mu = prob.marginals(logb)
    loss, grad = prob.loss(mu)
    history = [loss]
    it = 0
    for it in range(1, max_iters + 1):
        alpha *= 2.0
        for _ in range(30):
            new_theta = {c: theta[c] - alpha * grad[c] for c in prob.cliques}
            new_logb = prob.calibrate(prob.potentials(new_theta))
            new_mu = prob.marginals(new_logb)
            new_loss, new_grad = prob.loss(new_mu)
            decrease = sum(float(np.vdot(grad[c], mu[c] - new_mu[c])) for c in prob.cliques)
            if loss - new_loss >= 0.5 * alpha * decrease:
                break
            alpha *= 0.5
        else:
            break  # no step decreases the loss: converged to rounding
        theta, logb, mu, loss, grad = new_theta, new_logb, new_mu, new_loss, new_grad
        history.append(loss)
        if it >= 10 and history[-11] - loss <= tol * max(loss, 1.0):
            break
        if time.perf_counter() - t0 > max_seconds:
            break
    return EstimationResult(
        model=prob.model(logb),
        theta=theta,
        loss=loss,
        iterations=it,
        seconds=time.perf_counter() - t0,
        step=alpha,
        history=history,
    )
