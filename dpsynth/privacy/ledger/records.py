"""What the ledger hands back: charge and dataset records, and the status names.

What this module owns
---------------------
* ``STATUSES`` and ``COUNTED_STATUSES``: the vocabulary shared by the state
  machine (``core``) and the tables' CHECK constraints and triggers (``sqlite``,
  ``postgres``).
* :class:`ChargeRecord` and :class:`DatasetSummary`: frozen records, storage-free
  (times are ISO 8601 text), whose ``to_dict`` is what ``dpsynth ledger show
  --json`` prints. The float fields are that JSON contract; the budgets they
  describe are also offered as :class:`~dpsynth.privacy.accountant.Budget` and
  :class:`~dpsynth.privacy.accountant.ApproxDP` values.

What it must not do
-------------------
* Touch a database, or compare or convert budgets other than through
  ``accountant`` (``Budget.covers`` is the one tolerance policy).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

from dpsynth.privacy.accountant import ApproxDP, Budget

__all__ = ["COUNTED_STATUSES", "KINDS", "STATUSES", "ChargeRecord", "DatasetSummary"]

STATUSES: tuple[str, ...] = ("reserved", "spent", "released", "spent-failed", "cancelled")
COUNTED_STATUSES: frozenset[str] = frozenset(STATUSES) - {"cancelled"}
"""Statuses whose rho counts against the dataset's total (all but cancelled)."""
KINDS: tuple[str, ...] = ("release", "schema-draft")
"""What a charge pays for: a release (``dpsynth release``) or a schema draft
(``dpsynth schema draft``). Both count against the same total."""


@dataclass(frozen=True)
class ChargeRecord:
    """One row of ``charges``; times are ISO 8601 in UTC."""

    release_id: str
    dataset_id: str
    rho: float
    epsilon: float
    delta: float
    engine: str
    dpsynth_version: str
    schema_hash: str
    input_hash: str | None
    status: str
    created_at: str
    updated_at: str
    detail: str | None
    kind: str = "release"
    """One of :data:`KINDS`."""
    extra_delta: float = 0.0
    """The part of ``delta`` spent outside rho: a schema draft's key selection is
    approximate zCDP, (rho, extra_delta); releases are pure zCDP (0). ``rho`` is the
    charge's zCDP part, so ``epsilon`` at ``delta - extra_delta`` covers it."""

    @property
    def counted(self) -> bool:
        """True when this charge counts against the dataset's total."""
        return self.status in COUNTED_STATUSES

    @property
    def cost(self) -> Budget:
        """The zCDP budget this charge holds against the dataset's total."""
        return Budget(self.rho)

    @property
    def requested(self) -> ApproxDP:
        """The (epsilon, delta) the release asked for."""
        return ApproxDP(self.epsilon, self.delta)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetSummary:
    """A dataset's total, what has been spent (counted charges) and what remains.

    rho composes by addition; ``spent_epsilon`` and ``remaining_epsilon`` are the
    epsilons at the dataset's ``total_delta`` (computed on first use: the tight
    conversion takes ~10 ms).
    """

    dataset_id: str
    total_epsilon: float
    total_delta: float
    total_rho: float
    created_at: str
    spent_rho: float
    remaining_rho: float
    charges: tuple[ChargeRecord, ...]
    spent_extra_delta: float = 0.0
    """Sum of the counted charges' ``extra_delta`` (delta spent outside rho)."""

    @property
    def conversion_delta(self) -> float:
        """The delta left for converting rho to epsilon: ``total_delta`` less the
        delta the counted charges spent outside rho."""
        return self.total_delta - self.spent_extra_delta

    @property
    def total(self) -> Budget:
        """The dataset's total as a zCDP budget (set once, from ``total_epsilon``
        and ``total_delta``)."""
        return Budget(self.total_rho)

    @property
    def spent(self) -> Budget:
        """The sum of the counted charges."""
        return Budget(self.spent_rho)

    @property
    def remaining(self) -> Budget:
        """What is left of the total (never negative)."""
        return Budget(self.remaining_rho)

    @cached_property
    def spent_epsilon(self) -> float:
        return self.spent.epsilon(self.conversion_delta)

    @cached_property
    def remaining_epsilon(self) -> float:
        return self.remaining.epsilon(self.conversion_delta)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spent_epsilon"] = self.spent_epsilon
        d["remaining_epsilon"] = self.remaining_epsilon
        d["charges"] = [c.to_dict() for c in self.charges]
        return d
