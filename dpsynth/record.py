"""The public record of one release: every DP output and public fact the reports,
the datasheet and the manifest need, in one frozen value.

The pipeline builds a :class:`ReleaseRecord` after the privacy boundary; the report
builder (:mod:`dpsynth.report.builder`) and the bundle layout
(:mod:`dpsynth.bundle`) read only this. Nothing in it was computed on the private
table without noise: the model and its measurements are DP outputs, the synthetic
table and the validation results are post-processing, the ledger facts are the
public dataset summary (no input hash, no timestamps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from dpsynth.domain import Domain
from dpsynth.engines.base import Model
from dpsynth.privacy.accountant import ApproxDP, Budget, Charge
from dpsynth.schema import Schema
from dpsynth.validate import ValidationOutcome

__all__ = ["ReleaseRecord", "RowsPerPatient"]


@dataclass(frozen=True, kw_only=True)
class RowsPerPatient:
    """The DP histogram of patients by number of input rows, clamped at the public cap
    C (a DP output: noisy counts, safe to publish), and what follows from it.

    ``counts[i]`` is the noisy number of patients with ``i + 1`` rows; the last entry
    counts patients with C rows or more. Derived figures clip negative noisy counts
    at zero; they treat the last entry as exactly C rows, so they are lower bounds
    where patients have more than C rows.
    """

    counts: tuple[float, ...]
    sigma: float
    """Noise scale of each count (discrete Gaussian, sensitivity 1)."""
    max_rows: int
    """k, the rows kept per patient."""

    @property
    def cap(self) -> int:
        return len(self.counts)

    def _clipped(self) -> np.ndarray:
        return np.clip(np.asarray(self.counts, dtype=np.float64), 0.0, None)

    @property
    def patients(self) -> float:
        """Noisy number of patients (negative counts clipped at zero)."""
        return float(self._clipped().sum())

    def shares(self) -> list[float]:
        """Share of patients in each entry (zeros when every clipped count is zero)."""
        c = self._clipped()
        return [float(x) for x in (c / c.sum() if c.sum() > 0 else c)]

    @property
    def mean_rows(self) -> float:
        """Rows per patient on average (counting C or more as C: a lower bound)."""
        c = self._clipped()
        n = np.arange(1, c.size + 1)
        return float((c * n).sum() / c.sum()) if c.sum() > 0 else 0.0

    @property
    def kept_share(self) -> float:
        """Share of the input's rows that bounding keeps: sum of min(n, k) over sum of n
        (with C or more counted as C, an upper bound)."""
        c = self._clipped()
        n = np.arange(1, c.size + 1)
        total = float((c * n).sum())
        return float((c * np.minimum(n, self.max_rows)).sum() / total) if total > 0 else 1.0

    @property
    def over_k_share(self) -> float:
        """Share of patients with more than k rows (some of their rows were dropped)."""
        c = self._clipped()
        return float(c[self.max_rows:].sum() / c.sum()) if c.sum() > 0 else 0.0


@dataclass(frozen=True, kw_only=True)
class ReleaseRecord:
    """One release, as far as anyone outside the custodian may know it."""

    release_id: str
    dataset_id: str
    created: str
    """The release date (UTC, ``YYYY-MM-DD``); never a time of day."""
    dpsynth_version: str
    schema: Schema
    domain: Domain
    engine: str
    engine_settings: Mapping[str, Any]
    budget: ApproxDP
    """The release's (epsilon, delta); ``budget.rho`` is what was charged."""
    charges: Sequence[Charge]
    """Every DP step of the fit, as the accountant recorded it."""
    dataset: Mapping[str, Any]
    """The ledger's public summary of the dataset after this charge."""
    model: Model
    sampler_seed: int
    codes: np.ndarray
    """The sampled synthetic rows as integer codes."""
    table: pl.DataFrame
    """The synthetic table as released (decoded values, derived columns included)."""
    rules: Mapping[str, Any]
    """What the schema's rules did in generation (:meth:`Generated.rules_json`)."""
    validation: ValidationOutcome
    unit_rows: RowsPerPatient | None = None
    """The DP rows-per-patient histogram (``None`` without a patient id column)."""

    @property
    def rho(self) -> Budget:
        return self.budget.rho

    @property
    def rows(self) -> int:
        return self.table.height
