"""The fitting steps every smartnoise-synth engine shares, in the order that keeps the budget safe.

Owns: the session interface the engines need (:class:`ExternalSessionLike`), and
the steps of a fit: the public-facts checks (row-level unit, budget left, MWEM's
histogram size, the extra installed, then the engine's own class check), the
DP total (:func:`_noisy_total`, a dpsynth-measured noisy 1-way marginal), the
charged rho expressed as smartnoise's (epsilon, delta) (:func:`_external_epsilon`),
and the hand-over (:func:`_fit_external`): the session charges the whole remaining
budget, only then returns the codes, and smartnoise fits them through a
transformer fitted on a public domain frame. :func:`_prepare` runs everything up
to the DP total; :func:`_fit_cube` is the whole MST/AIM fit.

Nothing here reads data except through the session, and only after the checks;
``snsynth`` and ``pandas`` are imported lazily.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dpsynth.engines.base import NoisyMarginalLike, SessionLike
from dpsynth.engines.smartnoise.model import ExternalModel
from dpsynth.engines.smartnoise.patches import INSTALL_HINT, SMARTNOISE_SYNTH_VERSION
from dpsynth.errors import InternalError, UsageError
from dpsynth.privacy.accountant import epsilon_for

__all__ = ["MWEM_MAX_CELLS", "ExternalSessionLike"]


class ExternalSessionLike(SessionLike, Protocol):
    """A session that can hand its codes to an external engine after charging all of
    its remaining budget (``MeasurementSession.spend_all_for_external``)."""

    def spend_all_for_external(self, step: str, mechanism: str) -> np.ndarray: ...


MWEM_MAX_CELLS = 10_000_000
"""Largest MWEM histogram (product of the public domain sizes of one split)."""

_SELECTION_NUMPY = "numpy global RNG (smartnoise-synth exponential mechanism)"
_MEASURE_GAUSS = "OpenDP floating-point Gaussian per cell, added in float arithmetic (smartnoise-synth)"
_NOT_DPSYNTH = "not dpsynth's OpenDP integer-count mechanisms"


# -- before any charge: public facts only ---------------------------------------------------


def _import_snsynth(engine: str) -> Any:
    try:
        with warnings.catch_warnings():  # its import-time deprecation warnings are not ours
            warnings.simplefilter("ignore")
            import snsynth
    except ImportError:
        raise UsageError(f"engine {engine} needs the optional extra: {INSTALL_HINT}") from None
    return snsynth


def _preflight(session: SessionLike, engine: str) -> None:
    """Checks on public facts only, before any budget is charged or data read."""
    if session.contribution_bound != 1:
        raise UsageError(
            f"engine {engine} supports only the row-level unit (contribution bound 1); "
            f"the schema's bound is {session.contribution_bound}: use aim or mst"
        )
    if session.remaining.rho <= 0:
        raise UsageError("the session has no budget left (rho must be positive)")


def _check_mwem_cells(engine: str, cols: tuple[str, ...], sizes: Sequence[int],
                      split_factor: int | None) -> None:
    """Every MWEM histogram (one per split of ``split_factor`` columns) fits in
    :data:`MWEM_MAX_CELLS`, from the public domain sizes."""
    factor = split_factor or len(cols)
    for start in range(0, len(cols), factor):
        cells = math.prod(sizes[start:start + factor])
        if cells > MWEM_MAX_CELLS:
            raise UsageError(
                f"engine {engine}: a histogram over {cols[start:start + factor]} has {cells} cells "
                f"(at most {MWEM_MAX_CELLS}); set a smaller split_factor or use aim"
            )


# -- the DP total and the external budget ---------------------------------------------------


def _noisy_total(session: SessionLike, rho: float, engine: str) -> tuple[float, NoisyMarginalLike]:
    """DP row count: the sum of a noisy 1-way marginal of the smallest column."""
    col = min(session.columns, key=lambda c: session.domain[c])
    m = session.measure((col,), rho, f"{engine}/total")
    return max(1.0, float(np.asarray(m.counts, dtype=np.float64).sum())), m


def _external_epsilon(rho: float, delta: float) -> float:
    """(epsilon, delta) whose smartnoise conversion back to rho stays within ``rho``."""
    from snsynth.utils import cdp_rho

    eps = epsilon_for(rho, delta)
    for _ in range(50):
        if cdp_rho(eps, delta) <= rho:
            return eps
        eps *= 1 - 1e-6
    raise InternalError("could not express the charged budget as smartnoise's (epsilon, delta)")


@dataclass(frozen=True)
class _Prepared:
    """What a fit knows once the checks passed and the DP total was measured."""

    base: Any
    """The smartnoise synthesizer class the engine's check returned."""
    cols: tuple[str, ...]
    sizes: list[int]
    total: float
    """dpsynth's DP row count."""
    total_m: NoisyMarginalLike
    """The noisy marginal it was summed from."""
    rho: float
    """The budget left for smartnoise (all of it is charged at the hand-over)."""


def _prepare(session: SessionLike, engine: str, check: Callable[[str], Any], total_share: float,
             public_check: Callable[[tuple[str, ...], list[int]], None] | None = None) -> _Prepared:
    """The public-facts checks (``_preflight``, ``public_check(cols, sizes)``, the extra
    installed, ``check(engine)`` returning the synthesizer class), then the DP total on
    ``total_share`` of the remaining budget. Nothing is charged unless every check passed."""
    _preflight(session, engine)
    cols = tuple(session.columns)
    sizes = [session.domain[c] for c in cols]
    if public_check is not None:
        public_check(cols, sizes)
    _import_snsynth(engine)
    base = check(engine)
    total, total_m = _noisy_total(session, session.remaining.rho * total_share, engine)
    return _Prepared(base, cols, sizes, total, total_m, session.remaining.rho)


# -- the hand-over and the fit --------------------------------------------------------------


def _frames(codes: np.ndarray, columns: Sequence[str], sizes: Sequence[int]) -> tuple[Any, Any]:
    """The private codes and a public domain frame (every code of every column), as DataFrames."""
    import pandas as pd

    data = pd.DataFrame(np.asarray(codes, dtype=np.int64), columns=list(columns))
    width = max(sizes)
    public = pd.DataFrame(
        {c: np.arange(width, dtype=np.int64) % s for c, s in zip(columns, sizes, strict=True)}
    )
    return data, public


def _domain_transformer(public: Any) -> Any:
    """A smartnoise TableTransformer fitted on public codes only (identity label maps)."""
    from snsynth.transform import LabelTransformer, TableTransformer

    tt = TableTransformer([LabelTransformer(nullable=False) for _ in public.columns])
    tt.fit(public)
    return tt


def _fit_cube(
    session: ExternalSessionLike, engine: str, check: Any, make: Any, delta: float,
    total_share: float, true_n: dict[str, Any],
) -> ExternalModel:
    """``check(engine)`` returns the synthesizer class after the public-facts checks (before
    any charge); ``make(base, eps, delta, total)`` builds the synthesizer."""
    p = _prepare(session, engine, check, total_share)
    eps = _external_epsilon(p.rho, delta)
    info = {"engine": engine, "external": f"smartnoise-synth {SMARTNOISE_SYNTH_VERSION}",
            "epsilon_passed": eps, "delta_passed": delta, "rho_passed": p.rho,
            "category_domain": "public (schema codes, through a transformer fitted on public codes)",
            **true_n,
            "noise_source": f"selection: {_SELECTION_NUMPY}; measurements: {_MEASURE_GAUSS}; "
                            f"{_NOT_DPSYNTH}"}
    synth = make(p.base, eps, delta, p.total)
    return _fit_external(session, engine, synth, p, info)


def _fit_external(session: ExternalSessionLike, engine: str, synth: Any, p: _Prepared,
                  info: dict[str, Any]) -> ExternalModel:
    """Hand the codes over (charging the whole remaining budget), fit ``synth`` on the
    public domain, and wrap it; shared by every smartnoise engine."""
    codes = session.spend_all_for_external(f"{engine}/fit", f"{engine} (smartnoise-synth 1.0.8)")
    data, public = _frames(codes, p.cols, p.sizes)
    del codes
    transformer = _domain_transformer(public)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # and AIM prints to stdout (would break --json)
        synth.fit(data, transformer=transformer, categorical_columns=list(p.cols))
    del data
    if hasattr(synth, "num_rows"):  # MST/AIM keep len(data) as their default sample size
        synth.num_rows = None
    model = ExternalModel(p.cols, p.sizes, synth, p.total, info)
    model.measurements = [p.total_m]
    return model
