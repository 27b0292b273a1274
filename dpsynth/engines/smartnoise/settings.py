"""Settings of the smartnoise-synth engines.

Owns: the frozen settings of ``smartnoise-mst`` (:class:`SmartnoiseMSTSettings`),
``smartnoise-aim`` (:class:`SmartnoiseAIMSettings`) and ``smartnoise-mwem``
(:class:`SmartnoiseMWEMSettings`), and their validation: a bad value is a
:class:`~dpsynth.errors.UsageError` when the settings are built, long before any
budget is charged. Public facts only; no data, no smartnoise import.
"""

from __future__ import annotations

from dataclasses import dataclass

from dpsynth.errors import UsageError

__all__ = ["SmartnoiseAIMSettings", "SmartnoiseMSTSettings", "SmartnoiseMWEMSettings"]


def _check_common(delta: float, total_share: float) -> None:
    if not (isinstance(delta, float) and 0 < delta < 1):
        raise UsageError(f"delta ({delta}) must be a float in (0, 1)")
    if not (isinstance(total_share, int | float) and 0 < total_share < 1):
        raise UsageError(f"total_share ({total_share}) must be in (0, 1)")


@dataclass(frozen=True, kw_only=True)
class SmartnoiseMSTSettings:
    """Settings of ``smartnoise-mst`` (smartnoise-synth's MSTSynthesizer)."""

    delta: float = 1e-9
    """delta used only to express the charged rho as the (epsilon, delta) pair
    smartnoise takes; the accounted budget is rho. ``dpsynth release`` sets it to
    the release's ``--delta``."""
    total_share: float = 0.02
    """Share of the budget for dpsynth's noisy total (the model's row count)."""

    def __post_init__(self) -> None:
        _check_common(self.delta, self.total_share)


@dataclass(frozen=True, kw_only=True)
class SmartnoiseAIMSettings:
    """Settings of ``smartnoise-aim`` (smartnoise-synth's AIMSynthesizer)."""

    delta: float = 1e-9
    """See :class:`SmartnoiseMSTSettings`."""
    total_share: float = 0.02
    """Share of the budget for dpsynth's noisy total."""
    max_model_size: float = 80.0
    """Model size limit (MB) passed to AIM."""
    degree: int = 2
    """Workload: all marginals of this many columns..."""
    max_cells: int = 10_000
    """...with at most this many cells."""
    rounds: int | None = None
    """AIM rounds (None: smartnoise's default, 16 x columns)."""

    def __post_init__(self) -> None:
        _check_common(self.delta, self.total_share)
        if not (isinstance(self.degree, int) and self.degree >= 1):
            raise UsageError(f"degree ({self.degree}) must be a positive integer")
        if not (isinstance(self.max_cells, int) and self.max_cells >= 1):
            raise UsageError(f"max_cells ({self.max_cells}) must be a positive integer")
        if not (isinstance(self.max_model_size, int | float) and self.max_model_size > 0):
            raise UsageError(f"max_model_size ({self.max_model_size}) must be positive")
        if self.rounds is not None and not (isinstance(self.rounds, int) and self.rounds >= 1):
            raise UsageError(f"rounds ({self.rounds}) must be a positive integer or None")


@dataclass(frozen=True, kw_only=True)
class SmartnoiseMWEMSettings:
    """Settings of ``smartnoise-mwem`` (smartnoise-synth's MWEMSynthesizer; small domains only)."""

    total_share: float = 0.02
    """Share of the budget for dpsynth's noisy total."""
    split_factor: int | None = None
    """Columns per independent histogram (None: all columns in one)."""
    iterations: int | None = None
    """MWEM iterations (None: 10 x ceil(log10(noisy total)), from the DP total)."""
    mult_weights_iterations: int = 20

    def __post_init__(self) -> None:
        _check_common(0.5, self.total_share)
        for name in ("split_factor", "iterations"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int) and v >= 1):
                raise UsageError(f"{name} ({v}) must be a positive integer or None")
        if not (isinstance(self.mult_weights_iterations, int) and self.mult_weights_iterations >= 1):
            raise UsageError(f"mult_weights_iterations ({self.mult_weights_iterations}) must be positive")
