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

__all__ = ["ReleaseRecord"]


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

    @property
    def rho(self) -> Budget:
        return self.budget.rho

    @property
    def rows(self) -> int:
        return self.table.height
