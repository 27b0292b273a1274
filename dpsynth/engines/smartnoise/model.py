"""The model a smartnoise-synth engine returns.

Owns: :class:`ExternalModel`, the wrapper that gives a fitted smartnoise
synthesizer dpsynth's sampling interface (``columns``, ``sizes``, ``total``,
``sample``), and the conversion of smartnoise's sampled rows back to integer
codes, checked against the public domain. The wrapped synthesizer holds no
private rows (the adapters clear them after ``fit``); ``total`` is dpsynth's DP
estimate of the row count, never the true N.

Sampling uses numpy's *global* RNG (smartnoise's sampler draws from it):
:meth:`ExternalModel.sample` seeds it from the caller's generator for the
duration of the call and restores it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from dpsynth.engines.base import NoisyMarginalLike
from dpsynth.errors import InternalError, UsageError

__all__ = ["ExternalModel"]


class ExternalModel:
    """A model fitted by an external synthesizer (FittedModel's sampling interface).

    ``total`` is dpsynth's DP estimate of the row count; ``measurements`` is
    empty (the external engine's measurements are not exposed); ``cliques`` is
    empty and :meth:`marginal` is not available.
    """

    def __init__(
        self,
        columns: Sequence[str],
        sizes: Sequence[int],
        synthesizer: Any,
        total: float,
        info: dict[str, Any],
    ) -> None:
        self.columns = tuple(columns)
        self.sizes = tuple(int(s) for s in sizes)
        self._synth = synthesizer
        self._total = float(total)
        self.measurements: list[NoisyMarginalLike] = []
        self.cliques: list[tuple[str, ...]] = []
        self.info = dict(info)

    def __repr__(self) -> str:
        return f"ExternalModel(engine={self.info.get('engine')!r}, columns={len(self.columns)})"

    @property
    def total(self) -> float:
        return self._total

    def marginal(self, cols: Sequence[str]) -> np.ndarray:
        raise UsageError(f"engine {self.info.get('engine')!r} does not expose model marginals")

    def sample(self, n_rows: int, rng: np.random.Generator) -> np.ndarray:
        """``(n_rows, len(columns))`` integer codes from smartnoise's own sampler.

        smartnoise draws from numpy's global RNG; it is seeded from ``rng``
        for this call and its previous state restored afterwards.
        """
        if isinstance(n_rows, bool) or int(n_rows) != n_rows or n_rows < 0:
            raise UsageError(f"n_rows ({n_rows}) must be a non-negative integer")
        n = int(n_rows)
        if n == 0:
            return np.zeros((0, len(self.columns)), dtype=np.int64)
        state = np.random.get_state()
        np.random.seed(int(rng.integers(0, 2**32 - 1)))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = self._synth.sample(n)
        finally:
            np.random.set_state(state)
        codes = _to_codes(out, self.columns)
        if codes.shape != (n, len(self.columns)):
            raise InternalError(f"{self.info.get('engine')} returned {codes.shape[0]} rows, expected {n}")
        for j, (c, s) in enumerate(zip(self.columns, self.sizes, strict=True)):
            col = codes[:, j]
            if col.size and (col.min() < 0 or col.max() >= s):
                raise InternalError(f"{self.info.get('engine')} sampled a code outside column {c!r}'s domain")
        return codes


def _to_codes(out: Any, columns: Sequence[str]) -> np.ndarray:
    """smartnoise's sample (a DataFrame or a sequence of rows) as ``(n, len(columns))`` int64."""
    import pandas as pd

    if isinstance(out, pd.DataFrame):
        arr = out[list(columns)].to_numpy() if set(columns) <= set(out.columns) else out.to_numpy()
    else:
        arr = np.asarray([tuple(r) for r in out])
    return np.asarray(arr, dtype=np.int64).reshape(-1, len(columns))
