"""Privacy budgets and their accounting in zero-concentrated DP (zCDP).

zCDP's rho is the internal currency: Gaussian measurements cost
``Delta_2^2 / (2 sigma^2)`` and compose by addition; a noisy-max selection that
is ``eps``-DP with bounded range costs ``eps^2 / 8``. Budgets are reported to
people as (epsilon, delta) with the tight conversion of Canonne, Kamath and
Steinke (2020), the one OpenDP's ``make_zCDP_to_approxDP`` uses; tests compare
the two.

This module owns the arithmetic only. It never sees data, never draws noise,
and does not import opendp (mechanisms.py does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from dpsynth.errors import BudgetError, UsageError

__all__ = [
    "UNIT_ROWS_STEP",
    "Accountant",
    "ApproxDP",
    "Budget",
    "Charge",
    "delta_for",
    "epsilon_for",
    "rho_for",
]

UNIT_ROWS_STEP = "unit/rows-per-patient"
"""The accounted step (and pseudo-column) of the rows-per-patient histogram
(``MeasurementSession.measure_unit_rows``; sensitivity 1)."""

# Relative slack allowed when comparing float budgets: a spend that equals the
# total up to rounding of the conversions is not an overspend.
_REL_TOL = 1e-9


def _log_delta(rho: float, eps: float, alpha: float) -> float:
    # log of exp((a-1)(a rho - eps)) * (1 - 1/a)^a / (a - 1)   (CKS20, Cor. 13)
    return (alpha - 1) * (alpha * rho - eps) + alpha * math.log1p(-1 / alpha) - math.log(alpha - 1)


def delta_for(rho: float, epsilon: float) -> float:
    """Smallest delta such that a rho-zCDP mechanism is (epsilon, delta)-DP."""
    if rho < 0 or epsilon < 0:
        raise UsageError(f"rho ({rho}) and epsilon ({epsilon}) must be non-negative")
    if rho == 0:
        return 0.0
    # The objective is convex in alpha; golden-section search on log(alpha - 1).
    lo, hi = math.log(1e-9), math.log(1e7)
    f = lambda t: _log_delta(rho, epsilon, 1 + math.exp(t))  # noqa: E731
    g = (math.sqrt(5) - 1) / 2
    a, b = lo + (1 - g) * (hi - lo), lo + g * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(200):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = lo + (1 - g) * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = f(b)
    return min(1.0, math.exp(min(fa, fb)))


def epsilon_for(rho: float, delta: float) -> float:
    """Smallest epsilon such that a rho-zCDP mechanism is (epsilon, delta)-DP."""
    if not 0 < delta < 1:
        raise UsageError(f"delta ({delta}) must be in (0, 1)")
    if rho == 0:
        return 0.0
    lo, hi = 0.0, rho + 2 * math.sqrt(rho * math.log(1 / delta)) + 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if delta_for(rho, mid) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def rho_for(epsilon: float, delta: float) -> float:
    """Largest rho whose (epsilon, delta) conversion stays within the given pair."""
    if not epsilon > 0 or not math.isfinite(epsilon):
        raise UsageError(f"epsilon ({epsilon}) must be a positive finite number")
    if not 0 < delta < 1:
        raise UsageError(f"delta ({delta}) must be in (0, 1)")
    lo, hi = 0.0, epsilon  # rho <= epsilon always suffices as an upper bracket
    while delta_for(hi, epsilon) <= delta:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if delta_for(mid, epsilon) <= delta:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True, order=True)
class Budget:
    """A zCDP budget ``rho`` (non-negative, finite) with checked arithmetic."""

    rho: float

    def __post_init__(self) -> None:
        if not (isinstance(self.rho, int | float) and math.isfinite(self.rho) and self.rho >= 0):
            raise UsageError(f"rho ({self.rho}) must be a non-negative finite number")

    @classmethod
    def from_epsilon_delta(cls, epsilon: float, delta: float) -> Budget:
        return cls(rho_for(epsilon, delta))

    def epsilon(self, delta: float) -> float:
        return epsilon_for(self.rho, delta)

    def __add__(self, other: Budget) -> Budget:
        return Budget(self.rho + other.rho)

    def __sub__(self, other: Budget) -> Budget:
        if other.rho > self.rho * (1 + _REL_TOL):
            raise BudgetError(f"cannot take rho {other.rho:.6g} from rho {self.rho:.6g}")
        return Budget(max(0.0, self.rho - other.rho))

    def __mul__(self, share: float) -> Budget:
        if not share >= 0:
            raise UsageError(f"budget share ({share}) must be non-negative")
        return Budget(self.rho * share)

    def covers(self, other: Budget) -> bool:
        """True when ``other`` fits within this budget (up to float rounding).

        The one tolerance policy of the package: every "does this spend fit?"
        question (accountant, ledger, reports) is asked through this method."""
        return other.rho <= self.rho * (1 + _REL_TOL)


@dataclass(frozen=True)
class ApproxDP:
    """An (epsilon, delta) pair as people state budgets; ``rho`` is its zCDP
    equivalent (the largest rho whose conversion fits the pair)."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (isinstance(self.epsilon, int | float) and math.isfinite(self.epsilon)
                and self.epsilon > 0):
            raise UsageError(f"epsilon ({self.epsilon}) must be a positive finite number")
        if not (isinstance(self.delta, int | float) and 0 < self.delta < 1):
            raise UsageError(f"delta ({self.delta}) must be in (0, 1)")

    @property
    def rho(self) -> Budget:
        return Budget(rho_for(self.epsilon, self.delta))

    @classmethod
    def of(cls, budget: Budget, delta: float) -> ApproxDP:
        """The (epsilon, delta) a rho budget gives at ``delta``."""
        return cls(max(epsilon_for(budget.rho, delta), math.ulp(0.0)), delta)


@dataclass(frozen=True)
class Charge:
    """One accounted DP step, as it appears in the privacy report."""

    step: str
    mechanism: str
    rho: float
    columns: tuple[str, ...] = ()
    noise_scale: float | None = None
    sensitivity: float | None = None
    delta: float = 0.0
    """Delta spent outside rho (approximate zCDP: a thresholded key selection); 0 for
    the pure zCDP steps of a release."""


@dataclass
class Accountant:
    """Tracks spending against a total zCDP budget; refuses to overspend.

    ``spend`` is called *before* a noisy result is released to the caller, so a
    refused request never produces output.
    """

    total: Budget
    charges: list[Charge] = field(default_factory=list)

    @property
    def spent(self) -> Budget:
        return Budget(math.fsum(c.rho for c in self.charges))

    @property
    def remaining(self) -> Budget:
        return Budget(max(0.0, self.total.rho - self.spent.rho))

    def spend(self, charge: Charge) -> None:
        if not self.remaining.covers(Budget(charge.rho)):
            raise BudgetError(
                f"{charge.step}: requested rho {charge.rho:.6g} but only "
                f"{self.remaining.rho:.6g} of {self.total.rho:.6g} remains"
            )
        self.charges.append(charge)
