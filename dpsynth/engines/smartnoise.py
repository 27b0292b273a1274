"""Adapters to smartnoise-synth 1.0.8's MST, AIM and MWEM (optional extra).

Owns: the engines ``smartnoise-mst``, ``smartnoise-aim`` and ``smartnoise-mwem``
behind dpsynth's engine protocol, their settings, and :class:`ExternalModel`,
the fitted-model wrapper they return. Installed with the ``smartnoise`` extra
(see README, "Optional: smartnoise-synth engines"); ``snsynth`` is imported
lazily, so dpsynth works without it.

How they reach the data (the one exception to "engines get a session, never the
table"). smartnoise-synth fits on the table itself, so the adapter asks the
session for the codes through ``session.spend_all_for_external(step,
mechanism)``, which first charges the *entire* remaining budget as one charge
labelled with the engine and only then returns the codes. Before that, the
adapter spends a small share (``total_share``) on a dpsynth-measured noisy
1-way marginal whose sum is the model's DP ``total`` (the default synthetic row
count), and checks everything that can be checked on public facts (k, package
present, MWEM histogram size). The budget handed to smartnoise is the charged
rho expressed as smartnoise expects it: ``(epsilon_for(rho, delta), delta)``
for MST/AIM (they convert back to rho with OpenDP's zCDP map; the adapter
checks the round trip does not exceed the charge) and pure
``epsilon = sqrt(2 rho)`` for MWEM (epsilon-DP implies epsilon^2/2-zCDP).

Caveats (the privacy claim for the external charge rests on smartnoise-synth's
own implementation, not on dpsynth's; design.md §4):

* Row-level unit only: refused with :class:`UsageError` when the session's
  contribution bound k > 1, before any budget is charged or data read.
* It uses the true row count internally (MST/AIM ``known_total``; MWEM picks
  its query width from it when not given). The *public* total of the returned
  model is dpsynth's noisy estimate, never the true N, and MWEM's iterations
  and query width are derived from that estimate.
* MST/AIM get the public category domain through a transformer fitted on a
  synthetic, public "domain frame", so they do not learn categories from the
  data. MWEM ignores it and learns each column's min/max from the data
  (categories absent from the data can never be sampled).
* Exponential-mechanism choices are drawn with numpy, and OpenDP's float
  samplers are called once per cell from Python (slow on large marginals).
* mbi 1.1.0's ``synthetic_data()`` (MST/AIM sampling) is biased: ranks rows in
  parent groups and conditions on the wrong cliques (design.md §4).
* Sampling uses numpy's *global* RNG; :meth:`ExternalModel.sample` seeds it from
  the caller's generator for the duration of the call and restores it.

Must not: import the session module, private-data modules or opendp at module
level (the privacy-boundary test reads this file).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dpsynth.engines.base import NoisyMarginalLike, SessionLike
from dpsynth.errors import InternalError, UsageError
from dpsynth.privacy.accountant import epsilon_for

__all__ = [
    "ExternalModel",
    "ExternalSessionLike",
    "SmartnoiseAIMSettings",
    "SmartnoiseMSTSettings",
    "SmartnoiseMWEMSettings",
    "fit_smartnoise_aim",
    "fit_smartnoise_mst",
    "fit_smartnoise_mwem",
]



class ExternalSessionLike(SessionLike, Protocol):
    """A session that can hand its codes to an external engine after charging all of
    its remaining budget (``MeasurementSession.spend_all_for_external``)."""

    def spend_all_for_external(self, step: str, mechanism: str) -> np.ndarray: ...


INSTALL_HINT = (
    "pip install 'dpsynth[smartnoise]' && "
    "pip install --no-deps smartnoise-synth==1.0.8 smartnoise-sql==1.0.10"
)
MWEM_MAX_CELLS = 10_000_000
"""Largest MWEM histogram (product of the public domain sizes of one split)."""


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
    smartnoise takes; the accounted budget is rho."""
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
    import pandas as pd

    if isinstance(out, pd.DataFrame):
        arr = out[list(columns)].to_numpy() if set(columns) <= set(out.columns) else out.to_numpy()
    else:
        arr = np.asarray([tuple(r) for r in out])
    return np.asarray(arr, dtype=np.int64).reshape(-1, len(columns))


# -- shared fitting steps ------------------------------------------------------------------


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


def _noisy_total(session: SessionLike, rho: float, engine: str) -> tuple[float, NoisyMarginalLike]:
    """DP row count: the sum of a noisy 1-way marginal of the smallest column."""
    col = min(session.columns, key=lambda c: session.domain[c])
    m = session.measure((col,), rho, f"{engine}/total")
    return max(1.0, float(np.asarray(m.counts, dtype=np.float64).sum())), m


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


def _external_epsilon(rho: float, delta: float) -> float:
    """(epsilon, delta) whose smartnoise conversion back to rho stays within ``rho``."""
    from snsynth.utils import cdp_rho

    eps = epsilon_for(rho, delta)
    for _ in range(50):
        if cdp_rho(eps, delta) <= rho:
            return eps
        eps *= 1 - 1e-6
    raise InternalError("could not express the charged budget as smartnoise's (epsilon, delta)")


def _fit_cube(
    session: ExternalSessionLike, engine: str, make: Any, delta: float, total_share: float
) -> ExternalModel:
    _preflight(session, engine)
    _import_snsynth(engine)
    cols = tuple(session.columns)
    sizes = [session.domain[c] for c in cols]
    rho_all = session.remaining.rho
    total, total_m = _noisy_total(session, rho_all * total_share, engine)
    rho = session.remaining.rho
    eps = _external_epsilon(rho, delta)
    info = {"engine": engine, "external": "smartnoise-synth 1.0.8", "epsilon_passed": eps,
            "delta_passed": delta, "rho_passed": rho, "uses_true_n_internally": True}
    return _fit_external(session, engine, make(eps, delta), cols, sizes, total, total_m, info)


# -- engines -------------------------------------------------------------------------------


def fit_smartnoise_mst(
    session: ExternalSessionLike, settings: SmartnoiseMSTSettings | None = None
) -> ExternalModel:
    """smartnoise-synth's MST on the session's codes, spending the whole remaining budget."""
    s = settings or SmartnoiseMSTSettings()

    def make(eps: float, delta: float) -> Any:
        from snsynth.mst import MSTSynthesizer

        return MSTSynthesizer(epsilon=eps, delta=delta)

    return _fit_cube(session, "smartnoise-mst", make, s.delta, s.total_share)


def fit_smartnoise_aim(
    session: ExternalSessionLike, settings: SmartnoiseAIMSettings | None = None
) -> ExternalModel:
    """smartnoise-synth's AIM on the session's codes, spending the whole remaining budget."""
    s = settings or SmartnoiseAIMSettings()

    def make(eps: float, delta: float) -> Any:
        from snsynth.aim import AIMSynthesizer

        return AIMSynthesizer(epsilon=eps, delta=delta, max_model_size=s.max_model_size,
                              degree=s.degree, max_cells=s.max_cells, rounds=s.rounds)

    return _fit_cube(session, "smartnoise-aim", make, s.delta, s.total_share)


def fit_smartnoise_mwem(
    session: ExternalSessionLike, settings: SmartnoiseMWEMSettings | None = None
) -> ExternalModel:
    """smartnoise-synth's MWEM (pure epsilon-DP) on the session's codes; small domains only."""
    s = settings or SmartnoiseMWEMSettings()
    engine = "smartnoise-mwem"
    _preflight(session, engine)
    cols = tuple(session.columns)
    sizes = [session.domain[c] for c in cols]
    factor = s.split_factor or len(cols)
    for start in range(0, len(cols), factor):
        cells = math.prod(sizes[start:start + factor])
        if cells > MWEM_MAX_CELLS:
            raise UsageError(
                f"engine {engine}: a histogram over {cols[start:start + factor]} has {cells} cells "
                f"(at most {MWEM_MAX_CELLS}); set a smaller split_factor or use aim"
            )
    _import_snsynth(engine)
    from snsynth.mwem import MWEMSynthesizer

    total, total_m = _noisy_total(session, session.remaining.rho * s.total_share, engine)
    rho = session.remaining.rho
    eps = math.sqrt(2.0 * rho) * (1 - 1e-12)  # epsilon-DP implies epsilon^2/2-zCDP
    iterations = s.iterations or max(1, math.ceil(math.log10(max(total, 10.0)))) * 10
    synth = MWEMSynthesizer(
        epsilon=eps,
        iterations=iterations,
        split_factor=s.split_factor,
        marginal_width=3 if total > 10_000 else 2,
        mult_weights_iterations=s.mult_weights_iterations,
    )
    info = {"engine": engine, "external": "smartnoise-synth 1.0.8", "epsilon_passed": eps,
            "rho_passed": rho, "iterations": iterations, "uses_true_n_internally": False}
    return _fit_external(session, engine, synth, cols, sizes, total, total_m, info)


def _fit_external(session: ExternalSessionLike, engine: str, synth: Any,
                  cols: tuple[str, ...], sizes: list[int], total: float, total_m: Any,
                  info: dict[str, Any]) -> ExternalModel:
    """Hand the codes over (charging the whole remaining budget), fit ``synth`` on the
    public domain, and wrap it; shared by every smartnoise engine."""
    codes = session.spend_all_for_external(f"{engine}/fit", f"{engine} (smartnoise-synth 1.0.8)")
    data, public = _frames(codes, cols, sizes)
    del codes
    transformer = _domain_transformer(public)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        synth.fit(data, transformer=transformer, categorical_columns=list(cols))
    del data
    model = ExternalModel(cols, sizes, synth, total, info)
    model.measurements = [total_m]
    return model
