"""Private-PGM style estimation: a graphical model fitted to noisy marginals.

Owns: the estimate of the total (precision-weighted sums of the noisy
marginals), belief propagation on a junction tree (exact in log space), and
mirror descent with Armijo line search (McKenna et al., Private-PGM) minimising
``sum_m ||M_c(mu) - y_m||^2 / sigma_m^2`` with warm starts. The fitted model it
returns is a :class:`~dpsynth.engines.markov_model.MarkovModel`.

Everything here is post-processing of DP measurements. Must not: import the
measurement session or any private-table module, use the true row count, or
draw randomness (sampling lives in ``sampler.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dpsynth.engines.junction_tree import Clique, build_junction_tree
from dpsynth.engines.markov_model import MarkovModel

_GROW_AFTER = 3

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
        covered = {a for c in self.cliques for a in c}
        structure = [*self.cliques, *[(a,) for a in range(n) if a not in covered]]
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
        # A measured clique inside a larger measured clique is summed from (and
        # its potential added through) the smallest such clique, not its host:
        # many 1-way measurements no longer each sweep a large host table.
        self.desc = sorted(self.cliques, key=lambda c: (-len(c), -math.prod(self.sizes[a] for a in c)))
        self.via: dict[Clique, tuple[Clique, tuple[int, ...], tuple[int, ...]] | None] = {}
        for c in self.cliques:
            sc = set(c)
            sups = [c2 for c2 in self.cliques if sc < set(c2)]
            if not sups:
                self.via[c] = None
                continue
            c2 = min(sups, key=lambda x: math.prod(self.sizes[a] for a in x))
            self.via[c] = (
                c2,
                tuple(k for k, a in enumerate(c2) if a not in c),
                tuple(self.sizes[a] if a in c else 1 for a in c2),
            )
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
        acc: dict[Clique, np.ndarray] = {}
        for c in reversed(self.desc):  # smallest first: add into the container
            t = theta[c]
            if c in acc:
                t = acc.pop(c) + t
            via = self.via[c]
            if via is not None:
                c2, _, shape = via
                acc[c2] = (
                    acc[c2] + t.reshape(shape)
                    if c2 in acc
                    else np.broadcast_to(t.reshape(shape), theta[c2].shape)
                )
            else:
                acc[c] = t
        pots = [np.zeros(s) for s in self.shapes]
        for c, t in acc.items():
            pots[self.host[c]] += t.reshape(self.bshape[c])
        return pots

    def calibrate(self, theta: Mapping[Clique, np.ndarray]) -> list[np.ndarray]:
        """Calibrated clique probability tables (each sums to 1).

        Sum-product with one ``exp`` per clique cell: the upward pass
        exponentiates each clique's log potential (plus its children's log
        messages) relative to its maximum per separator configuration, so the
        messages are exact in log space; the downward pass rescales a child by
        ``parent separator marginal / upward sum``, which keeps every table
        bounded by 1. Non-finite values fall back to log space.
        """
        jt = self.jt
        acc = self.potentials(theta)
        n = len(acc)
        ex: list[np.ndarray] = [np.empty(0)] * n
        up: list[np.ndarray] = [np.empty(0)] * n
        with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            for i in reversed(jt.order):
                a = acc[i]
                p = jt.parent[i]
                ax = self.up_axes[i]
                # Shift by the maximum per separator configuration, so every
                # upward message is exact in log space (no underflow to -inf).
                m = a.max(axis=ax, keepdims=True) if p >= 0 and ax else a.max()
                if np.any(np.isnan(m) | (m == np.inf)):
                    return self._calibrate_log(theta)
                # a separator configuration with -inf everywhere (structural zeros)
                # is impossible: its message is 0 (log -inf), never NaN
                m = np.where(np.isfinite(m), m, 0.0)
                a -= m
                np.exp(a, out=a)
                ex[i] = a
                if p < 0:
                    continue
                s = a.sum(axis=ax, keepdims=True) if ax else a  # >= 1 everywhere
                up[i] = s
                acc[p] += (np.log(s) + m).reshape(self.pshape[i])
            probs: list[np.ndarray] = [np.empty(0)] * n
            for i in jt.order:
                e = ex[i]
                p = jt.parent[i]
                if p >= 0:
                    pm = probs[p]
                    sm = pm.sum(axis=self.down_axes[i], keepdims=True) if self.down_axes[i] else pm
                    ratio = np.divide(sm.reshape(self.cshape[i]), up[i],
                                      out=np.zeros(up[i].shape), where=up[i] > 0)
                    e *= ratio
                z = float(e.sum())
                if not (z > 0 and math.isfinite(z)):
                    return self._calibrate_log(theta)
                e /= z
                probs[i] = e
        return probs

    def _calibrate_log(self, theta: Mapping[Clique, np.ndarray]) -> list[np.ndarray]:
        """Log-space sum-product (slower; robust to any potentials)."""
        jt = self.jt
        acc = self.potentials(theta)
        up: list[np.ndarray | None] = [None] * len(acc)
        for i in reversed(jt.order):
            p = jt.parent[i]
            if p < 0:
                continue
            m = _lse(acc[i], self.up_axes[i])
            up[i] = m
            acc[p] += m.reshape(self.pshape[i])
        beliefs: list[np.ndarray] = [np.empty(0)] * len(acc)
        for i in jt.order:
            p = jt.parent[i]
            if p < 0:
                b = acc[i]
            else:
                mu = up[i]
                assert mu is not None
                mu_p = mu.reshape(self.pshape[i])
                # an impossible separator configuration stays impossible (-inf - -inf)
                diff = np.where(np.isneginf(mu_p), -np.inf, beliefs[p] - mu_p)
                down = _lse(diff, self.down_axes[i])
                b = acc[i] + down.reshape(self.cshape[i])
            beliefs[i] = b - _lse(b, tuple(range(b.ndim)))
        probs = [np.exp(b) for b in beliefs]
        for q in probs:
            q /= q.sum()
        return probs

    def marginals(self, probs: list[np.ndarray]) -> dict[Clique, np.ndarray]:
        out: dict[Clique, np.ndarray] = {}
        for c in self.desc:  # largest first: sum from the smallest container
            via = self.via[c]
            if via is not None:
                out[c] = out[via[0]].sum(axis=via[1])
                continue
            h = self.host[c]
            ax = self.raxes[c]
            out[c] = (probs[h].sum(axis=ax) if ax else probs[h]) * self.total
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

    def model(self, probs: list[np.ndarray]) -> MarkovModel:
        return MarkovModel(self.sizes, self.jt, probs, self.total)


def estimate(
    sizes: Sequence[int],
    observations: Sequence[Observation],
    *,
    total: float | None = None,
    warm_start: EstimationResult | None = None,
    max_iters: int = 1000,
    tol: float = 1e-5,
    zeros: Mapping[Clique, np.ndarray] | None = None,
) -> EstimationResult:
    """Fit a graphical model to ``observations`` by mirror descent.

    ``total`` defaults to :func:`estimate_total`. Stops after ``max_iters``
    iterations, or when the loss improved by less than ``tol`` (relative) over the
    last 10 iterations (never by the clock). ``warm_start`` reuses a
    previous fit's potentials and step size. ``zeros`` (public: from the schema's
    rules) marks, per measured clique, the cells no row can hold (True): their
    log-potential is -inf from the start, so the model puts no mass there and the
    fit spreads the measured mass over the possible cells (structural zeros).
    """
    t0 = time.perf_counter()
    if total is None:
        total = estimate_total(observations)
    prob = _Problem(sizes, observations, total)
    theta: dict[Clique, np.ndarray] = {}
    # Natural scale of a mirror-descent step on count-scaled marginals.
    alpha = 1.0 / (max(float(np.max(w)) for w in prob.w.values()) * total)
    def start(c: Clique) -> np.ndarray:
        t = np.zeros(prob.y[c].shape)
        if zeros is not None and c in zeros:
            t[np.asarray(zeros[c], dtype=bool)] = -np.inf  # a mirror step keeps -inf
        return t

    if warm_start is not None:
        alpha = warm_start.step
        for c in prob.cliques:
            prev = warm_start.theta.get(c)
            theta[c] = prev.copy() if prev is not None else start(c)
    else:
        theta = {c: start(c) for c in prob.cliques}
    probs = prob.calibrate(theta)
    mu = prob.marginals(probs)
    loss, grad = prob.loss(mu)
    history = [loss]
    it = 0
    # Armijo line search. Mirror descent's step settles near a stable value, so
    # rather than doubling it before every iteration (two belief propagations
    # per iteration) it is doubled only after a few first-try successes.
    streak = _GROW_AFTER
    for it in range(1, max_iters + 1):
        if streak >= _GROW_AFTER:
            alpha *= 2.0
            streak = 0
        first = True
        for _ in range(30):
            new_theta = {c: theta[c] - alpha * grad[c] for c in prob.cliques}
            new_probs = prob.calibrate(new_theta)
            new_mu = prob.marginals(new_probs)
            new_loss, new_grad = prob.loss(new_mu)
            decrease = sum(float(np.vdot(grad[c], mu[c] - new_mu[c])) for c in prob.cliques)
            if loss - new_loss >= 0.5 * alpha * decrease:
                streak = streak + 1 if first else 0
                break
            alpha *= 0.5
            first = False
        else:
            break  # no step decreases the loss: converged to rounding
        theta, probs, mu, loss, grad = new_theta, new_probs, new_mu, new_loss, new_grad
        history.append(loss)
        if it >= 10 and history[-11] - loss <= tol * max(loss, 1.0):
            break
    return EstimationResult(
        model=prob.model(probs),
        theta=theta,
        loss=loss,
        iterations=it,
        seconds=time.perf_counter() - t0,
        step=alpha,
        history=history,
    )
