"""The one check of a marginal's columns, shared by every counter and the session.

Owns :func:`marginal_columns`: the numpy and Spark counters
(:mod:`dpsynth.marginals`) and :class:`~dpsynth.privacy.session.MeasurementSession`
refuse the same marginals with the same messages. Public information only.
"""

from __future__ import annotations

from collections.abc import Container, Sequence

from dpsynth.errors import UsageError

__all__ = ["marginal_columns"]


def marginal_columns(cols: Sequence[str], known: Container[str]) -> tuple[str, ...]:
    """``cols`` as a tuple, after checking it names a marginal: at least one column,
    no column twice, each one of ``known``."""
    out = tuple(cols)
    if not out:
        raise UsageError("a marginal needs at least one column")
    if len(set(out)) != len(out):
        raise UsageError(f"columns of a marginal ({out}) must be distinct")
    for c in out:
        if c not in known:
            raise UsageError(f"column ({c!r}) is not in the domain")
    return out
