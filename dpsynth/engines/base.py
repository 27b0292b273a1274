"""The engine protocol and the fitted model every engine returns.

Owns: the one signature all engines share (``fit(session, settings) ->
FittedModel``), the structural types an engine may rely on (the session and
noisy-marginal protocols), and :class:`FittedModel`, the public result of an
engine: a graphical model fitted to DP measurements that answers marginal
queries and samples rows.

Engines receive a measurement session and only see what it returns (noisy
marginals, noisy-max choices). Must not: import the session module, private
data modules (io, check, marginals) or opendp; the model's total is a DP
estimate from the measurements, never the true row count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dpsynth.engines.estimation import MarkovModel, Observation
from dpsynth.engines.sampler import code_dtype, draw_rows
from dpsynth.engines.sampler import sample as _sample
from dpsynth.errors import UsageError

__all__ = ["Engine", "FittedModel", "Model", "NoisyMarginalLike", "SessionLike", "to_observation",
           "zero_masks"]


@runtime_checkable
class NoisyMarginalLike(Protocol):
    """What engines read from a noisy marginal (``session.NoisyMarginal``)."""

    @property
    def columns(self) -> tuple[str, ...]: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def counts(self) -> np.ndarray: ...
    @property
    def sigma(self) -> float: ...


class BudgetLike(Protocol):
    @property
    def rho(self) -> float: ...


class SessionLike(Protocol):
    """The measurement-session surface engines may use."""

    @property
    def columns(self) -> tuple[str, ...]: ...
    @property
    def domain(self) -> Mapping[str, int]: ...
    @property
    def contribution_bound(self) -> int: ...
    @property
    def remaining(self) -> BudgetLike: ...

    def measure(
        self,
        cols: Sequence[str],
        rho: float,
        step: str,
        *,
        groups: Mapping[str, np.ndarray] | None = None,
    ) -> NoisyMarginalLike: ...

    def select(
        self,
        candidates: Sequence[tuple[str, ...]],
        scores: Sequence[float] | np.ndarray,
        sensitivity: float,
        rho: float,
        step: str,
    ) -> int: ...

    def select_marginal(
        self,
        candidates: Sequence[tuple[str, ...]],
        model_marginals: Sequence[np.ndarray],
        weights: Sequence[float],
        penalties: Sequence[float],
        rho: float,
        step: str,
    ) -> int: ...

    def select_dependence(
        self,
        candidates: Sequence[tuple[str, str]],
        penalties: Sequence[float],
        rho: float,
        step: str,
    ) -> int: ...


def to_observation(m: NoisyMarginalLike, index: Mapping[str, int]) -> Observation:
    """A noisy marginal in estimation's layout (attributes in ascending index order)."""
    attrs = [index[c] for c in m.columns]
    order = sorted(range(len(attrs)), key=lambda k: attrs[k])
    y = np.transpose(np.asarray(m.counts, dtype=np.float64).reshape(m.shape), order)
    return Observation(tuple(attrs[k] for k in order), np.ascontiguousarray(y), float(m.sigma))


class FittedModel:
    """A fitted synthesizer: post-processing of DP measurements only.

    ``total`` is the DP estimate of the number of rows (from the noisy
    measurements); ``measurements`` are the noisy marginals the model was fitted
    to; ``cliques`` are the junction-tree cliques (column names).
    """

    def __init__(
        self,
        columns: Sequence[str],
        sizes: Sequence[int],
        model: MarkovModel,
        measurements: Sequence[NoisyMarginalLike],
        info: Mapping[str, Any] | None = None,
        expansions: Sequence[np.ndarray | None] | None = None,
    ) -> None:
        self.columns = tuple(columns)
        self.sizes = tuple(int(s) for s in sizes)
        self._model = model
        # expansions[j]: (model codes x original codes) row-stochastic matrix for a
        # column the model holds in a compressed domain (``None``: identity).
        self._expand = list(expansions) if expansions is not None else [None] * len(sizes)
        self._index = {c: j for j, c in enumerate(self.columns)}
        self.measurements = list(measurements)
        self.info: dict[str, Any] = dict(info or {})

    def __repr__(self) -> str:
        return (
            f"FittedModel(columns={len(self.columns)}, cliques={len(self.cliques)}, "
            f"measurements={len(self.measurements)})"
        )

    @property
    def total(self) -> float:
        return self._model.total

    @property
    def cliques(self) -> list[tuple[str, ...]]:
        return [tuple(self.columns[a] for a in c) for c in self._model.cliques]

    @property
    def markov_model(self) -> MarkovModel:
        return self._model

    def expansion(self, j: int) -> np.ndarray | None:
        """Column ``j``'s (model codes x codes) row-stochastic matrix, when the model
        holds the column in a compressed domain (``None``: its own codes)."""
        return self._expand[j]

    def marginal(self, cols: Sequence[str]) -> np.ndarray:
        """Model marginal over ``cols`` (axes in that order), scaled to ``total``."""
        try:
            attrs = [self._index[c] for c in cols]
        except KeyError as e:
            raise UsageError(f"column ({e.args[0]!r}) is not in the model") from None
        out = self._model.marginal(attrs)
        for ax, a in enumerate(attrs):
            ex = self._expand[a]
            if ex is not None:
                out = np.moveaxis(np.tensordot(out, ex, axes=([ax], [0])), -1, ax)
        return out

    def marginal_like(self, m: NoisyMarginalLike) -> np.ndarray:
        """The model's answer to measurement ``m`` (same columns, grouping and shape)."""
        out = self.marginal(m.columns)
        groups = getattr(m, "groups", None)
        if groups:
            for ax, g in enumerate(groups):
                if g is not None:
                    onehot = np.zeros((g.size, int(g.max()) + 1))
                    onehot[np.arange(g.size), g] = 1.0
                    out = np.moveaxis(np.tensordot(out, onehot, axes=([ax], [0])), -1, ax)
        return out

    def sample(self, n_rows: int, rng: np.random.Generator) -> np.ndarray:
        """``(n_rows, len(columns))`` integer codes drawn from the model."""
        if isinstance(n_rows, bool) or int(n_rows) != n_rows or n_rows < 0:
            raise UsageError(f"n_rows ({n_rows}) must be a non-negative integer")
        codes = _sample(self._model, int(n_rows), rng)
        if any(ex is not None for ex in self._expand):
            # the model's (merged) domain may need a smaller type than the full one
            codes = codes.astype(code_dtype(self.sizes), order="F")
            for j, ex in enumerate(self._expand):
                if ex is not None:
                    codes[:, j] = draw_rows(ex, codes[:, j], rng)
        return codes


class Model(Protocol):
    """What every engine returns (:class:`FittedModel`, or a smartnoise
    ``ExternalModel``): DP outputs and post-processing of them only."""

    columns: tuple[str, ...]
    sizes: tuple[int, ...]
    measurements: list[Any]
    """The noisy marginals the model was fitted to (empty for external engines)."""
    info: dict[str, Any]
    """Public facts about the fit (rounds, iterations, flags) for the privacy report."""

    @property
    def total(self) -> float:
        """The DP estimate of the number of rows."""
        ...

    def sample(self, n_rows: int, rng: np.random.Generator) -> np.ndarray:
        """``(n_rows, len(columns))`` integer codes drawn from the model."""
        ...


class Engine(Protocol):
    """An engine: ``fit(session, settings)`` returns a :class:`FittedModel`.

    It must spend exactly the session's remaining budget (never more: the
    session refuses) and use only the session's noisy answers.
    """

    def __call__(self, session: SessionLike, settings: Any) -> FittedModel: ...


def zero_masks(zeros: tuple[tuple[tuple[str, ...], tuple[tuple[int, ...], ...]], ...],
               index: dict[str, int], sizes: Sequence[int]) -> dict[tuple[int, ...], np.ndarray]:
    """Structural zeros as boolean masks over cliques in an engine's layout (sorted
    attribute indices); column sets not in the domain are skipped."""
    out: dict[tuple[int, ...], np.ndarray] = {}
    for cols, cells in zeros:
        if not all(c in index for c in cols):
            continue
        attrs = [index[c] for c in cols]
        order = np.argsort(attrs)
        clique = tuple(int(attrs[k]) for k in order)
        mask = np.zeros(tuple(sizes[a] for a in clique), dtype=bool)
        if cells:
            idx = np.asarray(cells, dtype=np.int64)[:, order]
            mask[tuple(idx.T)] = True
        out[clique] = out[clique] | mask if clique in out else mask
    return out
