"""The OpenDP noise mechanisms dpsynth uses, and nothing else.

Owns: building OpenDP measurements (vectorised discrete Gaussian on integer
counts; Gumbel noisy max for selection) at a requested zCDP cost, and reporting
the rho *OpenDP's own* ``map`` says each one costs, so accounting cannot drift
from the mechanism.

Must not: read private tables, charge an accountant (``session.py`` does, before
it runs a prepared mechanism), or draw noise from anywhere but OpenDP. This is
the only module that calls OpenDP samplers; only ``dpsynth/privacy/`` imports
opendp (a test checks it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import opendp.prelude as dp

from dpsynth.errors import InternalError, UsageError

__all__ = [
    "PreparedMechanism",
    "gaussian_counts",
    "noisy_counts",
    "noisy_max",
    "noisy_max_selector",
]

dp.enable_features("contrib")

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

    def run(self, data: Any) -> Any:
        return self._convert(self._measurement(data))


def _check(sensitivity: float, rho: float) -> None:
    if not (math.isfinite(rho) and rho > 0):
        raise UsageError(f"rho ({rho}) must be a positive finite number")
    if not (math.isfinite(sensitivity) and sensitivity > 0):
        raise UsageError(f"sensitivity ({sensitivity}) must be a positive finite number")


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
    if int(sensitivity_l2) != sensitivity_l2:
        raise UsageError(f"sensitivity ({sensitivity_l2}) must be an integer for counts")
    _check(sensitivity_l2, rho)
    d_in = int(sensitivity_l2)
    space = (dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="i64"))

    def build(s: float) -> Any:
        return dp.m.make_gaussian(*space, scale=s)

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
        dp.vector_domain(dp.atom_domain(T=float, nan=False)),
        dp.linf_distance(T=float),
        dp.zero_concentrated_divergence(),
    )

    def build(s: float) -> Any:
        return dp.m.make_noisy_max(*space, scale=s)

    meas, scale = _calibrate(build, d_in, d_in / math.sqrt(2 * rho), rho)
    return PreparedMechanism("noisy_max", scale, d_in, float(meas.map(d_in)), meas, int)


def noisy_counts(counts: np.ndarray, sensitivity_l2: int, rho: float) -> tuple[np.ndarray, float, float]:
    """Add discrete Gaussian noise to integer ``counts``.

    Returns ``(noisy counts as float64, sigma, rho charged by OpenDP's map)``.
    Callers that must account first use :func:`gaussian_counts` and ``run``.
    """
    mech = gaussian_counts(sensitivity_l2, rho)
    return mech.run(_as_i64(counts)), mech.scale, mech.rho


def noisy_max(scores: Sequence[float] | np.ndarray, sensitivity_linf: float, rho: float) -> tuple[int, float]:
    """Index of the (noisily) largest score; returns ``(index, rho charged)``."""
    mech = noisy_max_selector(sensitivity_linf, rho)
    return mech.run(as_scores(scores)), mech.rho


def _as_i64(counts: np.ndarray) -> np.ndarray:
    arr = np.asarray(counts)
    if arr.dtype.kind not in "iu":
        raise InternalError("counts must be an integer array")
    if arr.size and (arr.min() < 0 or arr.max() > _MAX_COUNT):
        raise InternalError("counts out of range for the noise mechanism")
    return np.ascontiguousarray(arr.ravel(), dtype=np.int64)


def as_scores(scores: Sequence[float] | np.ndarray) -> list[float]:
    arr = np.asarray(scores, dtype=np.float64).ravel()
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        raise InternalError("scores must be a non-empty vector of finite numbers")
    return [float(v) for v in arr]


def as_counts(counts: np.ndarray) -> np.ndarray:
    """Validate and convert exact counts for :meth:`PreparedMechanism.run`."""
    return _as_i64(counts)
