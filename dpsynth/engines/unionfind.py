"""Disjoint sets over ``0 .. n-1`` (union-find): the one implementation the engines share.

AIM groups measured attributes into connected components, MST grows its spanning
tree without cycles, and the junction tree joins cliques into a maximum spanning
tree. Pure bookkeeping over public indices: no data, no randomness.
"""

from __future__ import annotations

__all__ = ["DisjointSets"]


class DisjointSets:
    """Sets of the integers ``0 .. n-1``, each at first on its own."""

    __slots__ = ("_parent",)

    def __init__(self, n: int) -> None:
        self._parent = list(range(n))

    def find(self, x: int) -> int:
        """The representative of ``x``'s set (with path halving)."""
        parent = self._parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        """Join ``a``'s set to ``b``'s (``b``'s representative stays); ``False`` when
        they were one set already."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self._parent[ra] = rb
        return True
