"""The draft session: the only holder of a table's exact profile while a schema is drafted.

Owns: the exact aggregates of a table no schema describes yet (a
:class:`dpsynth.io.profile.TableProfile`, or anything with its methods) and every DP
step ``dpsynth schema draft`` may take on them: discrete Gaussian noise on count
vectors (cell classes, code forms, distinct values, values outside the kept keys,
magnitudes, grids, exact values, rows per patient) and thresholded key selection
(OpenDP's ``make_gaussian_threshold``) of a column's values or of its codes'
3-character categories. Each step charges the accountant (rho) and the draft's delta
for thresholds *before* its result is returned; a step the remaining budget cannot cover raises
:class:`~dpsynth.errors.BudgetError` and produces nothing.

Sensitivities follow the privacy unit: every count is over the contribution-bounded
rows (at most ``k`` per patient), so one patient changes a vector in which each row
falls in one cell by at most ``k`` (L2), and a distinct count by at most ``k``. A
vector in which one row can count in ``m`` cells (exact values on several grids) has
L2 sensitivity ``ceil(k * sqrt(m))``. The rows-per-patient histogram counts patients,
so one patient changes it by one.

Must not: expose the profile, exact counts or the true row count; draw noise itself
(only ``mechanisms.py`` calls OpenDP); or put values into messages. The public drafting
logic (``dpsynth.draft``) receives a session, never the table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dpsynth.errors import BudgetError, InternalError, UsageError
from dpsynth.privacy import mechanisms
from dpsynth.privacy.accountant import Accountant, Budget, Charge

__all__ = ["DraftSession", "NoisyCounts", "Profile"]


class Profile(Protocol):
    """The exact aggregates a draft session reads (``dpsynth.io.profile.TableProfile``)."""

    def classes(self, column: str) -> np.ndarray: ...
    def distinct(self, column: str) -> int: ...
    def key_counts(self, column: str, exclude: Sequence[str],
                   non_numeric_only: bool) -> dict[str, int]: ...
    def code_forms(self, column: str) -> np.ndarray: ...
    def outside_count(self, column: str, kept: Sequence[str], exclude: Sequence[str]) -> int: ...
    def category_counts(self, column: str, system: str) -> dict[str, int]: ...
    def magnitude_counts(self, column: str, kind: str) -> np.ndarray: ...
    def grid_counts(self, column: str, kind: str, origin: float, width: float,
                    n: int) -> np.ndarray: ...
    def edge_counts(self, column: str, kind: str, edges: Sequence[float]) -> np.ndarray: ...
    def exact_counts(self, column: str, kind: str, precisions: Sequence[float]) -> np.ndarray: ...
    def rows_per_patient(self, cap: int) -> np.ndarray: ...


@dataclass(frozen=True)
class NoisyCounts:
    """A DP count vector (public): exact counts plus discrete Gaussian noise of scale ``sigma``."""

    counts: np.ndarray
    sigma: float


class DraftSession:
    """Charges an :class:`Accountant` (and a delta for thresholds) for every noisy answer
    about a table's profile.

    ``columns``: the table's column names (public metadata); ``contribution_bound``: k;
    ``total``: the zCDP budget of the draft; ``threshold_delta``: the delta its key
    selections may spend in total. ``_noise``: TESTS ONLY, as in
    :class:`~dpsynth.privacy.session.MeasurementSession`.
    """

    __slots__ = ("__accountant", "__columns", "__delta", "__k", "__noise", "__profile",
                 "__unit")

    def __init__(self, profile: Profile, columns: Sequence[str], contribution_bound: int,
                 total: Budget, threshold_delta: float, *, unit_column: str | None = None,
                 _noise: mechanisms.NoiseBackend | None = None) -> None:
        if isinstance(contribution_bound, bool) or int(contribution_bound) != contribution_bound \
                or contribution_bound < 1:
            raise UsageError(f"contribution_bound ({contribution_bound}) must be a positive integer")
        if not 0 <= threshold_delta < 1:
            raise UsageError(f"threshold delta ({threshold_delta}) must be in [0, 1)")
        self.__profile = profile
        self.__columns = tuple(columns)
        self.__k = int(contribution_bound)
        self.__accountant = Accountant(total)
        self.__delta = float(threshold_delta)
        self.__unit = unit_column
        self.__noise: mechanisms.NoiseBackend = mechanisms.run_opendp if _noise is None else _noise

    def __repr__(self) -> str:
        return f"DraftSession(columns={len(self.__columns)}, remaining={self.remaining})"

    def __reduce__(self) -> str | tuple[Any, ...]:  # never pickle private data
        raise TypeError("a DraftSession cannot be pickled")

    # -- public facts ----------------------------------------------------------------------
    @property
    def columns(self) -> tuple[str, ...]:
        return self.__columns

    @property
    def contribution_bound(self) -> int:
        return self.__k

    @property
    def total(self) -> Budget:
        return self.__accountant.total

    @property
    def remaining(self) -> Budget:
        return self.__accountant.remaining

    @property
    def charges(self) -> tuple[Charge, ...]:
        return tuple(self.__accountant.charges)

    @property
    def delta_remaining(self) -> float:
        return max(0.0, self.__delta - math.fsum(c.delta for c in self.__accountant.charges))

    # -- DP steps ----------------------------------------------------------------------------
    def classes(self, column: str, rho: float, step: str) -> NoisyCounts:
        """Cells per class of ``dpsynth.io.profile.CLASSES`` (each row in one class)."""
        c = self._col(column)
        return self._gauss(step, (c,), self.__k, rho, lambda: self.__profile.classes(c))

    def distinct(self, column: str, rho: float, step: str) -> NoisyCounts:
        """Distinct values of ``column`` (one count)."""
        c = self._col(column)
        return self._gauss(step, (c,), self.__k, rho,
                           lambda: np.asarray([self.__profile.distinct(c)]))

    def outside(self, column: str, kept: Sequence[str], exclude: Sequence[str], rho: float,
                step: str) -> NoisyCounts:
        """Rows whose value is present (not null, not in ``exclude``) and not one of
        ``kept`` (one count): after key selection, how much an ``Other`` bucket would hold."""
        c = self._col(column)
        return self._gauss(step, (c,), self.__k, rho, lambda: np.asarray(
            [self.__profile.outside_count(c, tuple(kept), tuple(exclude))]))

    def code_forms(self, column: str, rho: float, step: str) -> NoisyCounts:
        """Present cells per code form of ``dpsynth.code_systems.CODE_FORMS`` (each in one)."""
        c = self._col(column)
        return self._gauss(step, (c,), self.__k, rho, lambda: self.__profile.code_forms(c))

    def magnitudes(self, column: str, kind: str, rho: float, step: str) -> NoisyCounts:
        c = self._col(column)
        return self._gauss(step, (c,), self.__k, rho,
                           lambda: self.__profile.magnitude_counts(c, kind))

    def grid(self, column: str, kind: str, origin: float, width: float, n: int, rho: float,
             step: str) -> NoisyCounts:
        c = self._col(column)
        return self._gauss(step, (c,), self.__k, rho,
                           lambda: self.__profile.grid_counts(c, kind, origin, width, n))

    def cells(self, column: str, kind: str, edges: Sequence[float], rho: float,
              step: str) -> NoisyCounts:
        """Values in the public cells ``[edges[i], edges[i+1])`` (ends clipped)."""
        c = self._col(column)
        return self._gauss(step, (c,), self.__k, rho,
                           lambda: self.__profile.edge_counts(c, kind, tuple(edges)))

    def exact(self, column: str, kind: str, precisions: Sequence[float], rho: float,
              step: str) -> NoisyCounts:
        """``[values read, exact zeros, values on each precision's grid]``: one row counts
        in up to ``2 + len(precisions)`` cells."""
        c = self._col(column)
        m = 2 + len(precisions)
        sens = math.ceil(self.__k * math.sqrt(m) - 1e-12)
        return self._gauss(step, (c,), sens, rho,
                           lambda: self.__profile.exact_counts(c, kind, tuple(precisions)))

    def rows_per_patient(self, cap: int, rho: float, step: str) -> NoisyCounts:
        """Patients by their number of rows (before bounding); sensitivity one patient."""
        if self.__unit is None:
            raise UsageError("rows per patient needs a patient id column")
        return self._gauss(step, (self.__unit,), 1, rho,
                           lambda: self.__profile.rows_per_patient(int(cap)))

    def keys(self, column: str, rho: float, delta: float, step: str, *,
             exclude: Sequence[str] = (), non_numeric_only: bool = False
             ) -> tuple[dict[str, float], float]:
        """Values of ``column`` held by enough patients: ``({value: noisy count}, threshold)``.

        A value only one patient holds passes the threshold with probability at most
        ``delta`` (charged to the draft's delta), whatever ``rho`` is."""
        c = self._col(column)
        return self._select(step, c, rho, delta, lambda: self.__profile.key_counts(
            c, tuple(exclude), non_numeric_only))

    def code_categories(self, column: str, system: str, rho: float, delta: float, step: str
                        ) -> tuple[dict[str, float], float]:
        """The 3-character categories of ``column``'s codes under public code system
        ``system`` held by enough patients, as :meth:`keys` selects values."""
        c = self._col(column)
        return self._select(step, c, rho, delta,
                            lambda: self.__profile.category_counts(c, system))

    # -- internals ---------------------------------------------------------------------------
    def _select(self, step: str, c: str, rho: float, delta: float, exact_counts: Any
                ) -> tuple[dict[str, float], float]:
        if delta > self.delta_remaining * (1 + 1e-9):
            raise BudgetError(f"{step}: requested delta {delta:.3g} but only "
                              f"{self.delta_remaining:.3g} remains for key selection")
        mech = mechanisms.gaussian_threshold(self.__k, rho, delta)
        exact = mechanisms.as_key_counts(exact_counts())
        self._charge(step, mech, (c,), float(self.__k))
        out = self.__noise(mech, exact)
        if not isinstance(out, dict):
            raise InternalError("key selection returned no map")
        assert mech.threshold is not None
        return {str(k): float(v) for k, v in out.items()}, float(mech.threshold)

    def _col(self, column: str) -> str:
        if column not in self.__columns:
            raise UsageError(f"column ({column!r}) must be one of the table's columns")
        return column

    def _gauss(self, step: str, cols: tuple[str, ...], sensitivity: int, rho: float,
               exact: Any) -> NoisyCounts:
        mech = mechanisms.gaussian_counts(sensitivity, rho)
        counts = mechanisms.as_counts(np.asarray(exact()))
        self._charge(step, mech, cols, float(sensitivity))
        noisy = np.asarray(self.__noise(mech, counts), dtype=np.float64)
        noisy.setflags(write=False)
        return NoisyCounts(noisy, mech.scale)

    def _charge(self, step: str, mech: mechanisms.PreparedMechanism, cols: tuple[str, ...],
                sensitivity: float) -> None:
        if mech.delta > self.delta_remaining * (1 + 1e-9):
            raise BudgetError(f"{step}: requested delta {mech.delta:.3g} but only "
                              f"{self.delta_remaining:.3g} remains")
        self.__accountant.spend(Charge(step=step, mechanism=mech.name, rho=mech.rho, columns=cols,
                                       noise_scale=mech.scale, sensitivity=sensitivity,
                                       delta=mech.delta))
