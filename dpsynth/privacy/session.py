"""The measurement session: the only object holding private data after encoding.

Owns: a counter over the contribution-bounded integer codes of the private
table (``dpsynth.marginals``: numpy in memory by default, Spark for tables beyond
one machine), a cache of the exact marginals it returned, and every DP step
engines may take on them: noisy marginals (discrete Gaussian) and noisy-max
selection (Gumbel). Each step charges the accountant *before* its result is
returned, and a step the remaining budget cannot cover raises
:class:`~dpsynth.errors.BudgetError` without producing output.

Sensitivities follow the privacy unit: one patient contributes up to ``k``
rows, so adding or removing a patient changes any histogram by at most ``k`` in
L1 and in L2. The one histogram over patients rather than rows, patients by
their number of rows clamped at a public cap (:meth:`MeasurementSession.measure_unit_rows`),
changes by 1.

Must not: expose the codes, exact counts or the true row count (no public
attribute or method returns them; quality scores that need exact counts are
computed in here and only leave through noisy max), draw noise itself (only
``mechanisms.py`` calls OpenDP), or put values into messages. Engines receive a
session, never a table; nothing under ``dpsynth/engines/`` imports this module
(a test checks it), they only use the object they are given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from dpsynth.errors import BudgetError, InternalError, UsageError
from dpsynth.marginals import MarginalCounter, NumpyCounter, marginal_columns
from dpsynth.privacy import mechanisms
from dpsynth.privacy.accountant import UNIT_ROWS_STEP, Accountant, Budget, Charge

__all__ = ["MAX_MARGINAL_CELLS", "MeasurementSession", "NoisyMarginal", "dependence_l1"]

MAX_MARGINAL_CELLS = 50_000_000
"""Largest marginal (cells) the session will count and noise."""


@dataclass(frozen=True)
class NoisyMarginal:
    """A DP marginal: noisy counts over ``columns`` (public, safe to keep).

    ``counts`` has shape ``shape`` (one axis per column, in ``columns`` order)
    and holds exact counts plus discrete Gaussian noise of scale ``sigma``.
    """

    columns: tuple[str, ...]
    shape: tuple[int, ...]
    counts: np.ndarray
    sigma: float
    step: str = ""
    groups: tuple[np.ndarray | None, ...] | None = None
    """Per column, the public map code -> group the counts were taken over
    (``None``: the column's own codes)."""

    @property
    def cells(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def precision(self) -> float:
        """1 / sigma^2: the weight of this measurement in estimation."""
        return 1.0 / self.sigma**2


class MeasurementSession:
    """Charges an :class:`Accountant` for every noisy answer about private codes.

    Parameters
    ----------
    codes:
        Either ``(n_rows, n_cols)`` integer codes, already contribution-bounded
        (at most ``contribution_bound`` rows per patient), column ``j`` in
        ``[0, sizes[j])`` -- kept in their dtype, not copied, counted by a
        :class:`~dpsynth.marginals.NumpyCounter`; or any
        :class:`~dpsynth.marginals.MarginalCounter` over such a table (e.g. the
        Spark backend's), whose ``columns`` and ``sizes`` must match.
    columns, sizes:
        Public column names and domain sizes (from the schema, never the data).
    contribution_bound:
        ``k``, rows one patient may contribute (the histogram sensitivity).
    accountant:
        Spent before each result is returned.
    unit_rows:
        Exact patients by row count clamped at the public cap (before bounding), for
        :meth:`measure_unit_rows` only; ``None`` without a patient id column.
    _noise:
        TESTS ONLY: the :class:`~dpsynth.privacy.mechanisms.NoiseBackend` that
        runs each prepared mechanism instead of OpenDP's sampler
        (:func:`~dpsynth.privacy.mechanisms.run_opendp`), e.g. a seeded or
        zero-noise double from ``tests/conftest.py``. Mechanisms, charges and
        recorded scales are exactly those of a release. Nothing in ``dpsynth``
        passes it and no setting reaches it (a test checks both).
    """

    __slots__ = ("__accountant", "__cache", "__columns", "__counter", "__domain", "__index", "__k",
                 "__noise", "__unit_rows")

    def __init__(
        self,
        codes: np.ndarray | MarginalCounter,
        columns: Sequence[str],
        sizes: Sequence[int],
        contribution_bound: int,
        accountant: Accountant,
        *,
        unit_rows: np.ndarray | None = None,
        _noise: mechanisms.NoiseBackend | None = None,
    ) -> None:
        cols = tuple(str(c) for c in columns)
        if len(set(cols)) != len(cols):
            raise UsageError("columns must be unique")
        if len(sizes) != len(cols):
            raise UsageError(f"sizes ({len(sizes)}) must have one entry per column ({len(cols)})")
        for c, s in zip(cols, sizes, strict=True):
            if int(s) != s or s < 1:
                raise UsageError(f"domain size of column {c!r} ({s}) must be a positive integer")
        if isinstance(contribution_bound, bool) or int(contribution_bound) != contribution_bound:
            raise UsageError(f"contribution_bound ({contribution_bound}) must be an integer")
        if contribution_bound < 1:
            raise UsageError(f"contribution_bound ({contribution_bound}) must be at least 1")
        if not isinstance(accountant, Accountant):
            raise UsageError("accountant must be a dpsynth Accountant")
        counter = _as_counter(codes, cols, sizes)
        self.__counter = counter
        self.__columns = cols
        self.__domain: Mapping[str, int] = MappingProxyType(
            {c: int(s) for c, s in zip(cols, sizes, strict=True)}
        )
        self.__index = {c: j for j, c in enumerate(cols)}
        self.__k = int(contribution_bound)
        self.__accountant = accountant
        self.__cache: dict[tuple[str, ...], np.ndarray] = {}
        if _noise is not None and not callable(_noise):
            raise UsageError("_noise must be a noise backend (a callable)")
        self.__noise: mechanisms.NoiseBackend = mechanisms.run_opendp if _noise is None else _noise
        self.__unit_rows: np.ndarray | None = None
        if unit_rows is not None:
            hist = np.asarray(unit_rows)
            if hist.ndim != 1 or hist.size < 1 or hist.dtype.kind not in "iu" or hist.min() < 0:
                raise UsageError("unit_rows must be a non-empty vector of non-negative counts")
            hist = np.ascontiguousarray(hist, dtype=np.int64)
            hist.setflags(write=False)
            self.__unit_rows = hist

    # -- public, non-private facts ---------------------------------------------------
    def __repr__(self) -> str:
        return f"MeasurementSession(columns={len(self.__columns)}, remaining={self.remaining})"

    def __reduce__(self) -> str | tuple[Any, ...]:  # never pickle private data
        raise TypeError("a MeasurementSession cannot be pickled")

    @property
    def columns(self) -> tuple[str, ...]:
        return self.__columns

    @property
    def domain(self) -> Mapping[str, int]:
        """Ordered, read-only mapping column -> public domain size."""
        return self.__domain

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
    def spent(self) -> Budget:
        return self.__accountant.spent

    @property
    def charges(self) -> tuple[Charge, ...]:
        return tuple(self.__accountant.charges)

    def shape(self, cols: Sequence[str]) -> tuple[int, ...]:
        return tuple(self.__domain[c] for c in self._check_cols(cols))

    # -- DP steps --------------------------------------------------------------------
    def measure(
        self,
        cols: Sequence[str],
        rho: float,
        step: str,
        *,
        groups: Mapping[str, np.ndarray] | None = None,
    ) -> NoisyMarginal:
        """Noisy marginal over ``cols`` with discrete Gaussian noise costing ``rho``.

        ``groups`` optionally maps a column to a public array ``code -> group``
        (values ``0..g-1``, e.g. rare categories merged after a noisy 1-way);
        that axis of the marginal then has ``g`` cells. Grouping does not change
        the sensitivity.
        """
        cols = self._check_cols(cols)
        maps = self._check_groups(cols, groups or {})
        shape = tuple(
            int(g.max()) + 1 if g is not None else self.__domain[c] for c, g in zip(cols, maps, strict=True)
        )
        mech = mechanisms.gaussian_counts(self.__k, rho)
        exact = self.__exact(cols)
        if any(g is not None for g in maps):
            exact = self._regroup(exact, self.shape(cols), maps, shape)
        self._charge(step, mech, cols, float(self.__k))
        noisy = np.asarray(self.__noise(mech, mechanisms.as_counts(exact)), dtype=np.float64).reshape(shape)
        noisy.setflags(write=False)
        return NoisyMarginal(
            columns=cols,
            shape=shape,
            counts=noisy,
            sigma=mech.scale,
            step=step,
            groups=maps if any(g is not None for g in maps) else None,
        )

    def measure_unit_rows(self, rho: float, step: str = UNIT_ROWS_STEP) -> NoisyMarginal:
        """Noisy count of patients by their number of rows (before bounding), clamped
        at the schema's public cap C: entry ``i`` counts patients with ``i + 1`` rows,
        the last one those with C or more. Discrete Gaussian costing ``rho``.

        Each patient adds one to exactly one entry, whatever their number of rows, so
        adding or removing a patient changes this histogram by 1 in L1 and in L2: the
        sensitivity is 1, not k. The result's ``columns`` is ``(UNIT_ROWS_STEP,)``.
        """
        if self.__unit_rows is None:
            raise UsageError(f"{step}: this session was given no rows-per-patient counts "
                             "(the table has no patient id column)")
        mech = mechanisms.gaussian_counts(1, rho)
        self._charge(step, mech, (UNIT_ROWS_STEP,), 1.0)
        shape = (int(self.__unit_rows.size),)
        noisy = np.asarray(self.__noise(mech, mechanisms.as_counts(self.__unit_rows)),
                           dtype=np.float64).reshape(shape)
        noisy.setflags(write=False)
        return NoisyMarginal(columns=(UNIT_ROWS_STEP,), shape=shape, counts=noisy,
                             sigma=mech.scale, step=step)

    def select(
        self,
        candidates: Sequence[tuple[str, ...]],
        scores: Sequence[float] | np.ndarray,
        sensitivity: float,
        rho: float,
        step: str,
    ) -> int:
        """Noisy max over caller-supplied scores with declared L-inf ``sensitivity``.

        The caller does not hold private data, so its scores are public unless
        they came from the session; use :meth:`select_marginal` for scores that
        need exact counts.
        """
        if len(candidates) != len(scores) or not candidates:
            raise UsageError("candidates and scores must be non-empty and of equal length")
        values = mechanisms.as_scores(scores)
        return self._noisy_max(values, float(sensitivity), rho, step, candidates)

    def select_marginal(
        self,
        candidates: Sequence[tuple[str, ...]],
        model_marginals: Sequence[np.ndarray],
        weights: Sequence[float],
        penalties: Sequence[float],
        rho: float,
        step: str,
    ) -> int:
        """Pick the candidate marginal the model gets most wrong (AIM/MST selection).

        Score of candidate ``i`` is ``weights[i] * (||model_i - data_i||_1 -
        penalties[i])`` where ``data_i`` are the exact counts (read here, never
        returned) and ``model_i`` is the engine's estimate in the candidate's
        column order and shape. Adding or removing one patient moves
        ``data_i`` by at most ``k`` in L1, so the sensitivity is
        ``k * max|weights|``.
        """
        n = len(candidates)
        if n == 0 or not (len(model_marginals) == len(weights) == len(penalties) == n):
            raise UsageError(
                "candidates, model_marginals, weights and penalties must be non-empty and of equal length"
            )
        w = np.asarray(weights, dtype=np.float64)
        pen = np.asarray(penalties, dtype=np.float64)
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(pen))) or np.all(w == 0):
            raise UsageError("weights and penalties must be finite; some weight must be non-zero")
        scores = np.empty(n)
        self.__prefetch([self._check_cols(cl) for cl in candidates])
        for i, (cl, est) in enumerate(zip(candidates, model_marginals, strict=True)):
            cl = self._check_cols(cl)
            m = np.asarray(est, dtype=np.float64)
            if m.shape != self.shape(cl):
                raise UsageError(f"model marginal for {cl} has shape {m.shape}, expected {self.shape(cl)}")
            err = float(np.abs(m.ravel() - self.__exact(cl)).sum())
            scores[i] = w[i] * (err - pen[i])
        sensitivity = float(self.__k * np.max(np.abs(w)))
        return self._noisy_max(mechanisms.as_scores(scores), sensitivity, rho, step, candidates)

    def select_dependence(
        self,
        candidates: Sequence[tuple[str, str]],
        penalties: Sequence[float],
        rho: float,
        step: str,
    ) -> int:
        """Pick the pair of columns that depend on each other most (noisy max).

        Score of pair ``(a, b)`` is ``||n_ab - n_a n_b / n||_1 - penalties[i]``: the exact
        2-way counts' L1 distance from the product of their *own* exact margins (``n`` the
        row count; all read here, never returned), less a public penalty (what sampling
        alone would put there). Unlike :meth:`select_marginal` against a model of noisy
        1-way marginals, no 1-way noise enters the score, so wide columns do not win on it.

        Sensitivity ``4 k``: adding one row (cell ``a0, b0``) moves ``n_ab`` by 1 in L1 and
        the product ``g_ab = n_a n_b / n`` by ``sum |g'_ab - g_ab| = sum |-n_a n_b + n
        (d_a n_b + n_a d_b + d_a d_b)| / (n (n + 1)) <= (n^2 + 2 n^2 + n) / (n (n + 1)) < 3``
        (``d_a`` is 1 at ``a0``, else 0), so the score moves by less than 4 (triangle
        inequality); a patient adds or removes at most ``k`` rows, one at a time.
        """
        n = len(candidates)
        if n == 0 or len(penalties) != n:
            raise UsageError("candidates and penalties must be non-empty and of equal length")
        pen = np.asarray(penalties, dtype=np.float64)
        if not np.all(np.isfinite(pen)):
            raise UsageError("penalties must be finite")
        pairs = [self._check_cols(cl) for cl in candidates]
        if any(len(cl) != 2 for cl in pairs):
            raise UsageError("select_dependence compares pairs of columns only")
        self.__prefetch(pairs)
        scores = np.array([dependence_l1(self.__exact(cl).reshape(self.shape(cl))) for cl in pairs]) - pen
        sensitivity = 4.0 * self.__k
        return self._noisy_max(mechanisms.as_scores(scores), sensitivity, rho, step, candidates)

    def spend_all_for_external(self, step: str, mechanism: str) -> np.ndarray:
        """EXTERNAL ENGINES ONLY: charge the whole remaining budget, then hand over the codes.

        This is the one deliberate exit of private data from the session. It
        exists for adapters to third-party synthesizers (smartnoise-synth) that
        must see the table itself and cannot work through :meth:`measure` and
        :meth:`select`. The contract:

        * The entire remaining budget is charged to the accountant as a single
          :class:`Charge` labelled ``step`` / ``mechanism`` *before* the codes
          are returned, so nothing else can ever be measured in this session
          and a crash after the call still counts as spent.
        * From here on the privacy claim for that charge rests on the external
          implementation, not on dpsynth: the caller must run a mechanism whose
          own guarantee is at most the charged rho, and must document the
          external engine's caveats (it may use the true row count, learn
          categories from the data, draw noise with numpy).
        * Only the row-level unit is supported (``contribution_bound == 1``):
          external engines analyse one row as the unit, so with ``k > 1`` their
          guarantee would not cover a patient. Refused here with
          :class:`UsageError`, before anything is charged or returned.

        Returns a read-only view of the ``(n_rows, n_cols)`` int64 codes in
        :attr:`columns` order. Treat it as PRIVATE: pass it to the external
        engine and drop the reference.
        """
        if self.__k != 1:
            raise UsageError(
                f"external engine step {step!r} supports only the row-level unit "
                f"(contribution bound 1), not {self.__k}"
            )
        export = getattr(self.__counter, "export_codes", None)
        if export is None:
            raise UsageError(f"external engine step {step!r} needs the codes in memory; "
                             "this counting backend cannot hand them over")
        rho = self.__accountant.remaining.rho
        if rho <= 0:
            raise BudgetError(f"{step}: no budget remains to hand to an external engine")
        self.__accountant.spend(
            Charge(
                step=step,
                mechanism=mechanism,
                rho=rho,
                columns=self.__columns,
                noise_scale=None,
                sensitivity=1.0,
            )
        )
        codes: np.ndarray = export()
        codes.setflags(write=False)
        return codes

    # -- internals -------------------------------------------------------------------
    def _noisy_max(
        self,
        scores: list[float],
        sensitivity: float,
        rho: float,
        step: str,
        candidates: Sequence[tuple[str, ...]],
    ) -> int:
        mech = mechanisms.noisy_max_selector(sensitivity, rho)
        cols = tuple(sorted({c for cl in candidates for c in cl}))
        self._charge(step, mech, cols, sensitivity)
        pick = int(self.__noise(mech, scores))
        if not 0 <= pick < len(scores):
            raise InternalError(f"the noise backend picked candidate {pick} of {len(scores)}")
        return pick

    def _charge(self, step: str, mech: Any, cols: tuple[str, ...], sensitivity: float) -> None:
        """Charge the accountant for ``mech`` (its rho from OpenDP's map) before it runs."""
        self.__accountant.spend(Charge(step=step, mechanism=mech.name, rho=mech.rho, columns=cols,
                                       noise_scale=mech.scale, sensitivity=sensitivity))

    def _check_groups(
        self, cols: tuple[str, ...], groups: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray | None, ...]:
        for c in groups:
            if c not in cols:
                raise UsageError(f"grouped column ({c!r}) must be one of the marginal's columns")
        out: list[np.ndarray | None] = []
        for c in cols:
            g = groups.get(c)
            if g is None:
                out.append(None)
                continue
            arr = np.asarray(g)
            if arr.shape != (self.__domain[c],) or arr.dtype.kind not in "iu":
                raise UsageError(f"groups of column {c!r} must be an integer array of its domain size")
            if arr.min() < 0 or np.unique(arr).size != int(arr.max()) + 1:
                raise UsageError(f"groups of column {c!r} must use every group 0..g-1")
            arr = arr.astype(np.int64)
            arr.setflags(write=False)
            out.append(arr)
        return tuple(out)

    @staticmethod
    def _regroup(
        flat: np.ndarray,
        shape: tuple[int, ...],
        maps: tuple[np.ndarray | None, ...],
        new_shape: tuple[int, ...],
    ) -> np.ndarray:
        idx = np.indices(shape).reshape(len(shape), -1)
        new = np.zeros(idx.shape[1], dtype=np.int64)
        for ax, (g, s) in enumerate(zip(maps, new_shape, strict=True)):
            new *= s
            new += g[idx[ax]] if g is not None else idx[ax]
        return np.bincount(new, weights=flat, minlength=math.prod(new_shape)).astype(np.int64)

    def _check_cols(self, cols: Sequence[str]) -> tuple[str, ...]:
        out = marginal_columns(cols, self.__index)
        cells = math.prod(self.__domain[c] for c in out)
        if cells > MAX_MARGINAL_CELLS:
            raise UsageError(
                f"marginal over {out} ({cells} cells) must have at most {MAX_MARGINAL_CELLS} cells"
            )
        return out

    def __exact(self, cols: tuple[str, ...]) -> np.ndarray:
        hit = self.__cache.get(cols)
        if hit is not None:
            return hit
        self.__prefetch([cols])
        return self.__cache[cols]

    def __prefetch(self, marginals: Sequence[tuple[str, ...]]) -> None:
        """Count every uncached marginal, in one batch when the counter can."""
        todo = list(dict.fromkeys(m for m in marginals if m not in self.__cache))
        if not todo:
            return
        many = getattr(self.__counter, "count_many", None)
        results = many(todo) if many is not None else [self.__counter.count(m) for m in todo]
        if len(results) != len(todo):
            raise InternalError("the marginal counter returned the wrong number of marginals")
        for cols, res in zip(todo, results, strict=True):
            arr = np.asarray(res)
            if arr.shape != self.shape(cols) or arr.dtype.kind not in "iu":
                raise InternalError(f"the marginal counter returned a bad result for {cols}")
            counts = np.ascontiguousarray(arr.ravel(), dtype=np.int64)
            counts.setflags(write=False)
            self.__cache[cols] = counts


def dependence_l1(joint: np.ndarray) -> float:
    """``||n_ab - n_a n_b / n||_1`` of a 2-way count table: its distance from the product of
    its own margins (0 for an empty table). Changes by less than 4 per row added or removed
    (:meth:`MeasurementSession.select_dependence`)."""
    counts = np.asarray(joint, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return 0.0
    return float(np.abs(counts - np.outer(counts.sum(axis=1), counts.sum(axis=0)) / total).sum())


def _as_counter(codes: np.ndarray | MarginalCounter, cols: tuple[str, ...],
                sizes: Sequence[int]) -> MarginalCounter:
    if isinstance(codes, np.ndarray) or not hasattr(codes, "count"):
        return NumpyCounter(np.asarray(codes), cols, sizes)
    counter = codes
    if tuple(counter.columns) != cols or tuple(int(s) for s in counter.sizes) != tuple(
        int(s) for s in sizes
    ):
        raise UsageError("the counter's columns and sizes must match the session's")
    return counter
