"""Private-PGM style estimation: a graphical model fitted to noisy marginals.

Owns: the estimate of the total (precision-weighted sums of the noisy
marginals), belief propagation on a junction tree (exact in log space), and
mirror descent with Armijo line search (McKenna et al., Private-PGM) minimising
``sum_m ||M_c(mu) - y_m||^2 / sigma_m^2`` with warm starts. The fitted model it
returns is a :class:`~dpsynth.engines.markov_model.MarkovModel`.

Cost of one iteration (AIM runs thousands): the measured cliques' targets,
weights, potentials, marginals and gradients live in one flat vector, so the
loss, the gradient and a step are whole-array operations; a junction-tree
clique's potential is built from small partial sums and written once; and the
marginals a large clique hands on (measured cliques it hosts, its children's
separators) are summed through shared partial sums
(:func:`~dpsynth.engines.markov_model.reduction_plan`), about one pass over it
instead of one per marginal. All exact: the same sums in another order.

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
from dpsynth.engines.markov_model import MarkovModel, reduction_plan, run_plan

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
        # Every per-clique vector (targets, weights, potentials, marginals, gradients)
        # lives in one flat array, clique after clique: the loss, the gradient and a
        # mirror-descent step are a few whole-array operations, not one per clique.
        self.offsets: dict[Clique, slice] = {}
        self.cshapes: dict[Clique, tuple[int, ...]] = {}
        n_cells = 0
        for c in self.cliques:
            shape = acc[c][0].shape
            size = math.prod(shape)
            self.offsets[c] = slice(n_cells, n_cells + size)
            self.cshapes[c] = shape
            n_cells += size
        self.n_cells = n_cells
        self.y_flat = np.empty(n_cells)
        self.w_flat = np.empty(n_cells)
        for c in self.cliques:
            sl = self.offsets[c]
            self.w_flat[sl] = np.asarray(acc[c][1]).ravel()
            self.y_flat[sl] = (acc[c][0] / acc[c][1]).ravel()
        self.y = self.views(self.y_flat)
        self.w = self.views(self.w_flat)
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
        # Per junction-tree clique, the measured cliques whose potentials it hosts (those
        # not added through a measured container), ordered so that each partial sum
        # spans as few cells as possible: only the last addition is host-sized.
        self.plan: list[list[Clique]] = [[] for _ in jt.cliques]
        for h in range(len(jt.cliques)):
            todo = [c for c in self.cliques if self.via[c] is None and self.host[c] == h]
            span: set[int] = set()
            while todo:
                nxt = min(todo, key=lambda c: (math.prod(self.sizes[a] for a in span.union(c)), c))
                todo.remove(nxt)
                span.update(nxt)
                self.plan[h].append(nxt)
        # ... and how to sum their marginals out of the host's table (few passes).
        self.reduce = [reduction_plan(self.sizes, jt.cliques[h], self.plan[h], 1)
                       for h in range(len(jt.cliques))]
        self.via_desc = [(c, v[0], v[1]) for c in self.desc if (v := self.via[c]) is not None]
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
        # The separator marginals a parent hands its children, summed through shared
        # partial sums (a large clique with several children is read about once).
        self.sep_plan = [
            reduction_plan(self.sizes, c, [jt.separator[i] for i in range(len(jt.cliques))
                                           if jt.parent[i] == h], 1)
            for h, c in enumerate(jt.cliques)
        ]

    def views(self, flat: np.ndarray) -> dict[Clique, np.ndarray]:
        """Per-clique views (shaped) into a flat vector of this problem's layout."""
        return {c: flat[self.offsets[c]].reshape(self.cshapes[c]) for c in self.cliques}

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
        pots: list[np.ndarray] = []
        for h, shape in enumerate(self.shapes):
            part: np.ndarray | None = None
            for c in self.plan[h]:  # small partial sums first, one pass over the host
                t = acc[c].reshape(self.bshape[c])
                part = t if part is None else part + t
            pot = np.empty(shape)
            pot[...] = 0.0 if part is None else part
            pots.append(pot)
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
            seps: dict[int, dict[int, np.ndarray]] = {}
            for i in jt.order:
                e = ex[i]
                p = jt.parent[i]
                if p >= 0:
                    # sums to the parent's total (1): sum_S sm(S) / up(S) * up(S); no
                    # renormalisation pass. Bounded: e <= 1, sm <= 1, up >= 1 except
                    # on an impossible separator configuration (structural zeros),
                    # where up = sm = 0 and the child's rows stay 0.
                    steps, where = self.sep_plan[p]
                    slots = seps.get(p)
                    if slots is None:
                        slots = seps[p] = {}
                        run_plan(probs[p], steps, slots)
                    sm = slots[where[jt.separator[i]]]
                    e *= np.divide(sm.reshape(self.cshape[i]), up[i],
                                   out=np.zeros(up[i].shape), where=up[i] > 0)
                else:
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
        """Model marginals (counts) of the measured cliques, as views of :meth:`flat_marginals`."""
        return self.views(self.flat_marginals(probs))

    def flat_marginals(self, probs: list[np.ndarray]) -> np.ndarray:
        """Model marginals (counts) of the measured cliques in the flat layout."""
        flat = np.empty(self.n_cells)
        out = self.views(flat)
        for h, (steps, where) in enumerate(self.reduce):
            if where:
                slots: dict[int, np.ndarray] = {}
                run_plan(probs[h], steps, slots)
                for c, k in where.items():
                    out[c][...] = slots[k]
        for c, c2, ax in self.via_desc:  # largest first: sum from the smallest container
            np.sum(out[c2], axis=ax, out=out[c])
        flat *= self.total
        return flat

    def loss(self, mu: Mapping[Clique, np.ndarray]) -> tuple[float, dict[Clique, np.ndarray]]:
        flat = np.empty(self.n_cells)
        for c in self.cliques:
            flat[self.offsets[c]] = np.asarray(mu[c]).ravel()
        total, grad = self.flat_loss(flat)
        return total, self.views(grad)

    def flat_loss(self, mu: np.ndarray) -> tuple[float, np.ndarray]:
        """``sum w (mu - y)^2`` and its gradient in ``mu`` (flat layout)."""
        d = mu - self.y_flat
        wd = self.w_flat * d
        return float(np.dot(wd, d)), 2.0 * wd

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
    previous fit's potentials and step size (else the fit starts from the uniform
    table). ``zeros`` (public: from the schema's
    rules) marks, per measured clique, the cells no row can hold (True): their
    log-potential is -inf from the start, so the model puts no mass there and the
    fit spreads the measured mass over the possible cells (structural zeros).
    """
    t0 = time.perf_counter()
    if total is None:
        total = estimate_total(observations)
    prob = _Problem(sizes, observations, total)
    # Natural scale of a mirror-descent step on count-scaled marginals.
    alpha = 1.0 / (float(np.max(prob.w_flat)) * total)
    theta_flat = np.zeros(prob.n_cells)
    if warm_start is not None:
        alpha = warm_start.step
        for c in prob.cliques:
            prev = warm_start.theta.get(c)
            if prev is not None:
                theta_flat[prob.offsets[c]] = np.asarray(prev, dtype=np.float64).ravel()
    for c, mask in (zeros or {}).items():
        if c in prob.offsets:  # structural zeros: -inf, which a mirror step keeps
            cell = theta_flat[prob.offsets[c]]
            cell[np.asarray(mask, dtype=bool).ravel()] = -np.inf
            theta_flat[prob.offsets[c]] = cell
    probs = prob.calibrate(prob.views(theta_flat))
    mu = prob.flat_marginals(probs)
    loss, grad = prob.flat_loss(mu)
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
            new_theta = theta_flat - alpha * grad
            new_probs = prob.calibrate(prob.views(new_theta))
            new_mu = prob.flat_marginals(new_probs)
            new_loss, new_grad = prob.flat_loss(new_mu)
            decrease = float(np.dot(grad, mu - new_mu))
            if loss - new_loss >= 0.5 * alpha * decrease:
                streak = streak + 1 if first else 0
                break
            alpha *= 0.5
            first = False
        else:
            break  # no step decreases the loss: converged to rounding
        theta_flat, probs, mu, loss, grad = new_theta, new_probs, new_mu, new_loss, new_grad
        history.append(loss)
        if it >= 10 and history[-11] - loss <= tol * max(loss, 1.0):
            break
    theta = prob.views(theta_flat)
    return EstimationResult(
        model=prob.model(probs),
        theta=theta,
        loss=loss,
        iterations=it,
        seconds=time.perf_counter() - t0,
        step=alpha,
        history=history,
    )
