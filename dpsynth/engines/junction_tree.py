"""Junction trees over public attribute domains (pure graph work, no data).

Owns: triangulating the graph of a clique set by greedy min-fill elimination,
building a junction tree over the resulting maximal cliques (a maximum-weight
spanning tree on separator sizes, so disconnected parts join through empty
separators), and the hypothetical model size used by AIM to bound growth.

Attributes are integer indices ``0..n-1``; every clique is a sorted tuple.
Must not: touch private data or draw randomness.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dpsynth.engines.unionfind import DisjointSets

__all__ = ["JunctionTree", "build_junction_tree", "model_size", "triangulate"]

Clique = tuple[int, ...]


def _canon(cliques: Iterable[Iterable[int]]) -> list[Clique]:
    return [tuple(sorted(set(c))) for c in cliques]


def _maximal_cliques(cliques: Iterable[Iterable[int]]) -> list[Clique]:
    """Cliques not contained in another, largest first (then lexicographic)."""
    cs = sorted(set(_canon(cliques)), key=lambda c: (-len(c), c))
    out: list[Clique] = []
    masks: list[int] = []
    for c in cs:
        m = 0
        for a in c:
            m |= 1 << a
        if not any(m & t == m for t in masks):
            out.append(c)
            masks.append(m)
    return out


def triangulate(n_vars: int, cliques: Iterable[Iterable[int]], sizes: Sequence[int]) -> list[Clique]:
    """Maximal cliques of a chordal completion found by greedy min-fill elimination.

    Ties are broken by the cell count of the clique the elimination creates,
    then by the lowest attribute index. Every input clique is contained in some
    output clique; every attribute appears in at least one. Neighbourhoods are
    bitsets and a vertex's score is recomputed only when its neighbourhood or
    the edges among its neighbours changed (AIM calls this once per candidate
    per round).
    """
    adj = [0] * n_vars
    for c in cliques:
        mask = 0
        for a in c:
            mask |= 1 << a
        for a in c:
            adj[a] |= mask & ~(1 << a)
    logsize = [math.log(max(int(s), 1)) for s in sizes]
    bits = [1 << v for v in range(n_vars)]
    elim_cliques: list[Clique] = []

    def members(mask: int) -> list[int]:
        out = []
        while mask:
            low = mask & -mask
            out.append(low.bit_length() - 1)
            mask ^= low
        return out

    def key(v: int) -> tuple[int, float]:
        nb = adj[v]
        missing = 0
        weight = 0.0
        for u in members(nb):
            missing += (nb & ~adj[u]).bit_count() - 1
            weight += logsize[u]
        return (missing // 2, logsize[v] + weight)

    heap: list[tuple[int, float, int]] = []
    current: list[tuple[int, float]] = [(-1, 0.0)] * n_vars
    for v in range(n_vars):
        if adj[v]:
            current[v] = key(v)
            heap.append((*current[v], v))
        else:
            heap.append((-1, 0.0, v))
    heapq.heapify(heap)
    gone = 0
    while heap:
        k0, k1, v = heapq.heappop(heap)
        if gone & bits[v] or (k0 >= 0 and current[v] != (k0, k1)):
            continue  # stale entry
        nb = adj[v]
        nbl = members(nb)
        elim_cliques.append(tuple(members(nb | bits[v])))
        fill = False
        for u in nbl:
            if nb & ~bits[u] & ~adj[u]:
                fill = True
            adj[u] = (adj[u] | nb) & ~bits[u] & ~bits[v]
        # A score changes only for the neighbours of v (their neighbourhood lost v and
        # may gain fill edges) and, when fill edges were added, for vertices adjacent
        # to their ends: the fill-in among those vertices' neighbours changed.
        touched = nb
        if fill:
            for u in nbl:
                touched |= adj[u]
        adj[v] = 0
        gone |= bits[v]
        for u in members(touched & ~bits[v]):
            ku = key(u) if adj[u] else (-1, 0.0)
            current[u] = ku
            heapq.heappush(heap, (*ku, u))
    return _maximal_cliques(elim_cliques)


def model_size(n_vars: int, cliques: Iterable[Iterable[int]], sizes: Sequence[int]) -> int:
    """Total cells over the junction tree cliques a model on ``cliques`` needs."""
    return sum(math.prod(sizes[a] for a in c) for c in triangulate(n_vars, cliques, sizes))


@dataclass(frozen=True)
class JunctionTree:
    """A rooted junction tree.

    ``order`` lists clique indices root first, parents before children;
    ``parent[i]`` is ``-1`` for the root; ``separator[i]`` is
    ``cliques[i] & cliques[parent[i]]`` (sorted; empty for the root and for
    joins between disconnected parts).
    """

    cliques: tuple[Clique, ...]
    parent: tuple[int, ...]
    order: tuple[int, ...]
    separator: tuple[Clique, ...]

    def containing(self, attrs: Iterable[int]) -> int | None:
        """Index of the smallest clique containing ``attrs`` (``None`` if none)."""
        s = set(attrs)
        best: int | None = None
        for i, c in enumerate(self.cliques):
            if s.issubset(c) and (best is None or len(c) < len(self.cliques[best])):
                best = i
        return best


def build_junction_tree(n_vars: int, cliques: Iterable[Iterable[int]], sizes: Sequence[int]) -> JunctionTree:
    """Triangulate and connect the maximal cliques into a junction tree."""
    mcs = triangulate(n_vars, cliques, sizes)
    m = len(mcs)
    edges: list[tuple[int, float, int, int]] = []
    for i in range(m):
        si = set(mcs[i])
        for j in range(i + 1, m):
            w = len(si.intersection(mcs[j]))
            edges.append((-w, 0.0, i, j))
    edges.sort()
    joined = DisjointSets(m)
    nbrs: list[list[int]] = [[] for _ in range(m)]
    for _, _, i, j in edges:
        if joined.union(i, j):
            nbrs[i].append(j)
            nbrs[j].append(i)
    # Root at the largest clique (sampling starts there).
    root = max(range(m), key=lambda i: math.prod(sizes[a] for a in mcs[i])) if m else 0
    parent = [-1] * m
    order = [root] if m else []
    seen = {root}
    k = 0
    while k < len(order):
        i = order[k]
        k += 1
        for j in nbrs[i]:
            if j not in seen:
                seen.add(j)
                parent[j] = i
                order.append(j)
    sep = tuple(tuple(sorted(set(mcs[i]) & set(mcs[parent[i]]))) if parent[i] >= 0 else () for i in range(m))
    return JunctionTree(tuple(mcs), tuple(parent), tuple(order), sep)
