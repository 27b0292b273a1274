"""The OpenDP noise mechanisms dpsynth uses, and nothing else.

Owns: building OpenDP measurements (vectorised discrete Gaussian on integer
counts; Gumbel noisy max for selection; a thresholded discrete Gaussian on a
map of keys to counts, for selecting keys nobody listed in advance) at a
requested zCDP cost, reporting the
rho *OpenDP's own* ``map`` says each one costs, so accounting cannot drift from
the mechanism, and the noise backend that runs them (:func:`run_opendp`; the
:class:`NoiseBackend` protocol lets tests hand the session a seeded or
zero-noise double instead).

Must not: read private tables, charge an accountant (``session.py`` does, before
it runs a prepared mechanism), draw noise from anywhere but OpenDP, or offer
noise that no one charged for: it returns prepared mechanisms, never noisy
answers, and only the session runs them. This is the only module that calls
OpenDP samplers; only ``dpsynth/privacy/`` imports opendp, and engines and
reports import neither this module nor the session (tests check both).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import opendp.measurements as dpm
from opendp.domains import atom_domain, map_domain, vector_domain
from opendp.measures import zero_concentrated_divergence
from opendp.metrics import absolute_distance, l02inf_distance, l2_distance, linf_distance
from opendp.mod import enable_features

from dpsynth.errors import InternalError, UsageError

__all__ = [
    "NoiseBackend",
    "PreparedMechanism",
    "as_counts",
    "as_key_counts",
    "as_scores",
    "gaussian_counts",
    "gaussian_threshold",
    "noisy_max_selector",
    "run_opendp",
]

# Not ``opendp.prelude``: it imports OpenDP's extras (scikit-learn, polars, mbi), about
# 4 CPU seconds at every start-up, for nothing this module uses.
enable_features("contrib")

# Counts must fit OpenDP's i64 atom domain.
_MAX_COUNT = 2**62


@dataclass(frozen=True)
class PreparedMechanism:
    """An OpenDP measurement built for one release, not yet run.

    ``rho`` is the cost by OpenDP's privacy map at ``sensitivity``; the caller
    charges it before calling :meth:`run`.
    """

    name: str
    scale: float
    sensitivity: float
    rho: float
    _measurement: Any
    _convert: Callable[[Any], Any]
    delta: float = 0.0
    """Delta outside rho (approximate zCDP; only :func:`gaussian_threshold`), also
    from OpenDP's map."""
    threshold: float | None = None
    """The count a key's noisy count must reach to be released (thresholds only)."""

    def run(self, data: Any) -> Any:
        return self._convert(self._measurement(data))


class NoiseBackend(Protocol):
    """Runs a prepared mechanism on validated data: ``(mechanism, data) -> output``.

    The output has the type :meth:`PreparedMechanism.run` gives: float64 noisy
    counts of ``data``'s length, or the chosen index. Releases always use
    :func:`run_opendp`; another backend exists only in the tests, handed to the
    session's test-only ``_noise`` argument, and the session builds, charges and
    records the same :class:`PreparedMechanism` whichever backend runs it.
    """

    def __call__(self, mechanism: PreparedMechanism, data: Any, /) -> Any: ...


def run_opendp(mechanism: PreparedMechanism, data: Any, /) -> Any:
    """The noise backend of every release: OpenDP's own sampler for ``mechanism``."""
    return mechanism.run(data)


def _check(sensitivity: float, rho: float) -> None:
    for name, value in (("rho", rho), ("sensitivity", sensitivity)):
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or not (math.isfinite(value) and value > 0)):
            raise UsageError(f"{name} ({value}) must be a positive finite number")


def _calibrate(build: Callable[[float], Any], d_in: Any, scale: float, rho: float) -> tuple[Any, float]:
    """Nudge ``scale`` up until OpenDP's map says the cost is at most ``rho``."""
    for i in range(60):
        m = build(scale)
        if m.map(d_in) <= rho:
            return m, scale
        scale *= 1 + 1e-12 * 2.0**i
    raise InternalError("could not calibrate an OpenDP mechanism to the requested rho")


def gaussian_counts(sensitivity_l2: int, rho: float) -> PreparedMechanism:
    """Discrete Gaussian on a vector of integer counts costing at most ``rho``.

    ``sensitivity_l2`` is the L2 distance between neighbouring count vectors
    (k when one patient contributes up to k rows).
    """
    _check(sensitivity_l2, rho)
    if int(sensitivity_l2) != sensitivity_l2:
        raise UsageError(f"sensitivity ({sensitivity_l2}) must be an integer for counts")
    d_in = int(sensitivity_l2)
    space = (vector_domain(atom_domain(T="i64")), l2_distance(T="i64"))

    def build(s: float) -> Any:
        return dpm.make_gaussian(*space, scale=s)

    meas, scale = _calibrate(build, d_in, d_in / math.sqrt(2 * rho), rho)

    def convert(out: Any) -> np.ndarray:
        return np.asarray(out, dtype=np.float64)

    return PreparedMechanism("discrete_gaussian", scale, d_in, float(meas.map(d_in)), meas, convert)


def noisy_max_selector(sensitivity_linf: float, rho: float) -> PreparedMechanism:
    """Gumbel noisy max (exponential mechanism) over float scores costing at most ``rho``.

    ``sensitivity_linf`` bounds how much any one score can change between
    neighbouring tables. Running it returns the chosen index.
    """
    _check(sensitivity_linf, rho)
    d_in = float(sensitivity_linf)
    space = (
        vector_domain(atom_domain(T=float, nan=False)),
        linf_distance(T=float),
        zero_concentrated_divergence(),
    )

    def build(s: float) -> Any:
        return dpm.make_noisy_max(*space, scale=s)

    meas, scale = _calibrate(build, d_in, d_in / math.sqrt(2 * rho), rho)
    return PreparedMechanism("noisy_max", scale, d_in, float(meas.map(d_in)), meas, int)


def gaussian_threshold(contribution_bound: int, rho: float, delta: float) -> PreparedMechanism:
    """Key selection: discrete Gaussian noise on a map ``key -> count`` of keys not
    known in advance, releasing only keys whose noisy count reaches a threshold
    (OpenDP's ``make_gaussian_threshold``, approximate zCDP).

    One patient adds up to ``k = contribution_bound`` rows, so changes at most ``k``
    keys, each by at most ``k``, with L2 distance at most ``k``: the input distance
    is ``(l0, l2, linf) = (k, k, k)``. The scale is calibrated so that the zCDP part
    costs at most ``rho``, then the smallest integer threshold whose delta (the
    chance that a key only this patient holds passes it) is at most ``delta``.
    Running it takes a ``dict[str, int]`` and returns ``dict[str, float]``.
    """
    _check(contribution_bound, rho)
    _check(1.0, delta)
    if int(contribution_bound) != contribution_bound:
        raise UsageError(f"contribution bound ({contribution_bound}) must be an integer")
    if not delta < 1:
        raise UsageError(f"delta ({delta}) must be less than 1")
    k = int(contribution_bound)
    d_in = (k, k, k)
    space = (map_domain(atom_domain(T=str), atom_domain(T="i64")),
             l02inf_distance(absolute_distance(T="i64")))

    def build_at(threshold: int) -> Callable[[float], Any]:
        def build(s: float) -> Any:
            return _ZCDPPart(dpm.make_gaussian_threshold(*space, scale=s, threshold=threshold))
        return build

    part, scale = _calibrate(build_at(k + 1), d_in, k / math.sqrt(2 * rho), rho)
    lo, hi = k + 1, k + 1
    while part.inner.map(d_in)[1] > delta:  # grow until delta fits, then bisect
        lo, hi = hi, 2 * hi
        part = _ZCDPPart(dpm.make_gaussian_threshold(*space, scale=scale, threshold=hi))
        if hi > _MAX_COUNT:
            raise InternalError("could not find a threshold for the requested delta")
    while lo < hi:
        mid = (lo + hi) // 2
        if dpm.make_gaussian_threshold(*space, scale=scale, threshold=mid).map(d_in)[1] <= delta:
            hi = mid
        else:
            lo = mid + 1
    meas = dpm.make_gaussian_threshold(*space, scale=scale, threshold=hi)
    cost_rho, cost_delta = meas.map(d_in)

    def convert(out: Any) -> dict[str, float]:
        return {str(key): float(v) for key, v in dict(out).items()}

    return PreparedMechanism("gaussian_threshold", scale, float(k), float(cost_rho), meas,
                             convert, delta=float(cost_delta), threshold=float(hi))


@dataclass(frozen=True)
class _ZCDPPart:
    """A thresholded measurement seen through its zCDP part only (for :func:`_calibrate`)."""

    inner: Any

    def map(self, d_in: Any) -> float:
        return float(self.inner.map(d_in)[0])


def as_key_counts(counts: dict[str, int]) -> dict[str, int]:
    """Validate and convert exact key counts for a :func:`gaussian_threshold` mechanism."""
    out: dict[str, int] = {}
    for key, n in counts.items():
        if not isinstance(key, str) or isinstance(n, bool) or not 0 <= int(n) <= _MAX_COUNT:
            raise InternalError("key counts must map text to counts in range")
        out[key] = int(n)
    return out


def as_counts(counts: np.ndarray) -> np.ndarray:
    """Validate and convert exact counts for :meth:`PreparedMechanism.run`."""
    arr = np.asarray(counts)
    if arr.dtype.kind not in "iu":
        raise InternalError("counts must be an integer array")
    if arr.size and (arr.min() < 0 or arr.max() > _MAX_COUNT):
        raise InternalError("counts out of range for the noise mechanism")
    return np.ascontiguousarray(arr.ravel(), dtype=np.int64)


def as_scores(scores: Sequence[float] | np.ndarray) -> list[float]:
    """Validate and convert selection scores for :meth:`PreparedMechanism.run`."""
    arr = np.asarray(scores, dtype=np.float64).ravel()
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise InternalError("scores must be a non-empty vector of finite numbers")
    return [float(v) for v in arr]
