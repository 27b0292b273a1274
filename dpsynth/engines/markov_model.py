"""The fitted graphical model: a calibrated junction-tree distribution (no data).

Owns :class:`MarkovModel`, what estimation (:mod:`dpsynth.engines.estimation`)
returns and the sampler draws from: one probability table per junction-tree
clique, agreeing on separators, scaled to a DP estimate of the row count. It
answers marginal queries on any attribute set: from a clique that holds them, by
one tree walk for many pairs (:meth:`MarkovModel.marginals`), or by variable
elimination over the calibrated tree.

Everything here is post-processing of DP measurements. Must not: import the
measurement session or any private-table module, or draw randomness.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dpsynth.engines.junction_tree import Clique, JunctionTree

__all__ = ["MarkovModel"]


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
        self._cond_cache: dict[tuple[int, Clique, Clique], np.ndarray] = {}

    @property
    def cliques(self) -> tuple[Clique, ...]:
        return self.jt.cliques

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

    def marginals(self, queries: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Model marginals (counts) for many attribute tuples at once.

        Pairs that no clique holds are answered together per first attribute
        ``a``: one walk over the tree from ``a``'s clique carries
        ``P(a, separator)`` across each edge (``P(a, S') = sum_S P(a, S)
        P(S' | S)``), so all such pairs cost one pass instead of one variable
        elimination each. Other queries use :meth:`marginal`.
        """
        out: list[np.ndarray | None] = [None] * len(queries)
        by_first: dict[int, dict[int, list[int]]] = {}
        by_host: dict[int, list[tuple[int, tuple[int, ...]]]] = {}
        for k, q in enumerate(queries):
            qt = tuple(int(a) for a in q)
            host = self.jt.containing(qt) if len(set(qt)) == len(qt) else None
            if host is not None:
                by_host.setdefault(host, []).append((k, qt))
            elif len(qt) == 2 and qt[0] != qt[1]:
                by_first.setdefault(qt[0], {}).setdefault(qt[1], []).append(k)
            else:
                out[k] = self.marginal(qt)
        for h, items in by_host.items():  # queries a clique holds: shared partial sums
            steps, where = reduction_plan(self.sizes, self.jt.cliques[h],
                                          [tuple(sorted(qt)) for _, qt in items], 1)
            slots: dict[int, np.ndarray] = {}
            run_plan(self.probs[h], steps, slots)
            for k, qt in items:
                srt = tuple(sorted(qt))
                m = slots[where[srt]] * self.total
                out[k] = np.ascontiguousarray(np.transpose(m, [srt.index(a) for a in qt]))
        if by_first:
            nbrs = self._neighbours()
            for a, want in by_first.items():
                for b, pab in self._pairs_from(a, set(want), nbrs).items():
                    for k in want[b]:
                        out[k] = pab * self.total
        assert all(o is not None for o in out)
        return [o for o in out if o is not None]

    def _neighbours(self) -> list[list[int]]:
        jt = self.jt
        nb: list[list[int]] = [[] for _ in jt.cliques]
        for i, p in enumerate(jt.parent):
            if p >= 0:
                nb[i].append(p)
                nb[p].append(i)
        return nb

    def _pairs_from(self, a: int, want: set[int], nbrs: list[list[int]]) -> dict[int, np.ndarray]:
        """``P(a, b)`` for every ``b`` in ``want`` by one walk from ``a``'s clique."""
        jt = self.jt
        h = jt.containing((a,))
        assert h is not None
        found: dict[int, np.ndarray] = {}
        # Stack of (clique, previous clique, separator S, table over (a, *S)).
        hc = jt.cliques[h]
        stack: list[tuple[int, int, Clique, np.ndarray]] = []
        for c2 in nbrs[h]:
            sep = tuple(x for x in hc if x in jt.cliques[c2])
            stack.append((c2, h, sep, self._joint_with(h, a, sep)))
        left = set(want) - set(hc)
        while stack and left:
            c, prev, sep, t = stack.pop()
            cl = jt.cliques[c]
            for b in [x for x in cl if x in left and x not in sep]:
                found[b] = self._carry(t, c, sep, (b,))
                left.discard(b)
            for c2 in nbrs[c]:
                if c2 != prev:
                    sep2 = tuple(x for x in cl if x in jt.cliques[c2])
                    stack.append((c2, c, sep2, self._carry(t, c, sep, sep2)))
        for b in want:
            if b not in found:  # b shares a clique with a after all
                found[b] = self.prob_marginal((a, b))
        return found

    def _carry(self, t: np.ndarray, c: int, sep: Clique, tgt: Clique) -> np.ndarray:
        """``sum_S t[a, S] P(tgt | S)`` with ``P(tgt | S)`` from clique ``c`` (cached per model)."""
        key = (c, sep, tgt)
        cond = self._cond_cache.get(key)
        keep = tuple(sorted({*sep, *tgt}))
        if cond is None:
            cl = self.jt.cliques[c]
            p = self.probs[c]
            pm = p.sum(axis=tuple(k for k, x in enumerate(cl) if x not in keep))
            ps = pm.sum(axis=tuple(k for k, x in enumerate(keep) if x not in sep), keepdims=True)
            cond = np.divide(pm, ps, out=np.zeros_like(pm), where=ps > 0)
            self._cond_cache[key] = cond
        lab = {x: k + 1 for k, x in enumerate(keep)}
        return np.asarray(
            np.einsum(
                t, [0, *[lab[x] for x in sep]], cond, [lab[x] for x in keep], [0, *[lab[x] for x in tgt]]
            )
        )

    def _joint_with(self, h: int, a: int, sep: Clique) -> np.ndarray:
        """``P(a, S)`` from clique ``h`` (holding ``a`` and ``S``) with ``a`` as a separate leading axis."""
        keep = tuple(sorted({a, *sep}))
        m = self.prob_marginal(keep)
        if a not in sep:
            return np.moveaxis(m, keep.index(a), 0)
        # a is also a separator attribute: put it on the diagonal.
        eye_shape = [self.sizes[a]] + [self.sizes[x] if x == a else 1 for x in sep]
        eye = np.eye(self.sizes[a]).reshape(eye_shape)
        return eye * m[None]

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


Reduction = tuple[int, tuple[int, ...], int]
"""One step of a :func:`reduction_plan`: ``(source slot, axes to sum, target slot)``."""


def reduction_plan(sizes: Sequence[int], attrs: Clique, targets: Sequence[Clique],
                   first_slot: int) -> tuple[list[Reduction], dict[Clique, int]]:
    """How to sum a table over ``attrs`` (slot 0) down to every clique of ``targets``
    with few passes over the large table.

    Targets that do not contain some attribute ``x`` are summed from the table with
    ``x`` summed out once (a slot of its own, numbered from ``first_slot``), the
    rest from the table itself; recursively. Pairs inside a 5-attribute clique cost
    about two passes over it instead of one each. Returns the steps and each
    target's slot. Exact: the same sums in another order.
    """
    steps: list[Reduction] = []
    where: dict[Clique, int] = {}
    counter = [first_slot]

    def rec(slot: int, over: Clique, todo: list[Clique]) -> None:
        for t in todo:
            if t == over:
                where[t] = slot
        todo = [t for t in todo if t != over]
        while todo:
            if len(todo) == 1:
                t = todo[0]
                dst = counter[0]
                counter[0] += 1
                steps.append((slot, tuple(k for k, a in enumerate(over) if a not in t), dst))
                where[t] = dst
                return
            x = max(over, key=lambda a: (sum(a not in t for t in todo), sizes[a], -a))
            rest = [t for t in todo if x not in t]
            todo = [t for t in todo if x in t]
            if len(rest) == 1:
                rec(slot, over, rest)
            else:
                dst = counter[0]
                counter[0] += 1
                steps.append((slot, (over.index(x),), dst))
                rec(dst, tuple(a for a in over if a != x), rest)

    rec(0, tuple(attrs), sorted(set(targets)))
    return steps, where


def run_plan(table: np.ndarray, steps: Sequence[Reduction], slots: dict[int, np.ndarray]) -> None:
    """Apply :func:`reduction_plan` steps to ``table`` (slot 0), filling ``slots``."""
    slots[0] = table
    for src, axes, dst in steps:
        slots[dst] = slots[src].sum(axis=axes) if axes else slots[src]


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
