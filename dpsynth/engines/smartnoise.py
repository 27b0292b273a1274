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
present, MWEM histogram size and smartnoise-synth version). The budget handed
to smartnoise is the charged rho expressed as smartnoise expects it:
``(epsilon_for(rho, delta), delta)`` for MST/AIM (they convert back to rho with
OpenDP's zCDP map; the adapter checks the round trip does not exceed the charge)
and pure ``epsilon = sqrt(2 rho)`` for MWEM (epsilon-DP implies
epsilon^2/2-zCDP).

Caveats (the privacy claim for the external charge rests on smartnoise-synth's
own implementation, not on dpsynth's; design.md §4). Each fitted model's
``info`` states them as flags (``uses_true_n_internally``, ``true_n_use``,
``noise_source``, ``category_domain``):

* Row-level unit only: refused with :class:`UsageError` when the session's
  contribution bound k > 1, before any budget is charged or data read.
* Category domain: every engine gets the schema's public codes, never the
  data's. MST/AIM through a transformer fitted on a synthetic, public "domain
  frame"; MWEM through :func:`_public_domain_mwem`, a subclass that builds its
  histograms over the public cardinalities (smartnoise's own MWEM sizes each
  histogram from the column's min/max in the data, so a category absent from
  the data could never be sampled and its presence was disclosed without
  noise; issue 11).
* True row count. No engine's output depends on it. smartnoise's MST computes
  ``total = len(data)`` and passes it to mbi as ``known_total`` in its tree
  selection and its final estimation, which would scale the model to the true
  N (a use of N outside any mechanism under dpsynth's add/remove-one-row
  relation; the selection scores' sensitivity would also exceed the 1 it
  calibrates for). :func:`_dp_total_mst` makes both estimations use dpsynth's DP total
  instead (``select`` overridden; ``MST`` runs smartnoise's own code with
  mbi's ``mirror_descent`` pinned to that total). AIM's estimation takes its
  total from the noisy 1-way measurements, and MWEM (as adapted here) starts
  from and keeps dpsynth's DP total instead of smartnoise's
  ``np.sum(histogram)``; the fitted objects' stored row count (``num_rows``)
  is cleared. The *public* total of every returned model is dpsynth's noisy
  estimate, never the true N.
* Noise is not dpsynth's. Selection (exponential mechanism) draws from numpy's
  global RNG (MST/AIM) or Python's ``random`` module (MWEM); measurement noise
  comes from OpenDP's *floating-point* Gaussian (MST/AIM) or Laplace (MWEM)
  samplers, called once per cell from Python on 0.0 and added to the count in
  float arithmetic. That is outside OpenDP's own guarantee and not the
  integer-count samplers of design.md §2.4 (and slow on large marginals).
* MWEM: pure epsilon-DP only with its selection retries off
  (``max_retries_exp_mechanism=0``). smartnoise's default re-draws the
  exponential mechanism up to 10 times while it picks an already measured
  query, then picks uniformly; the chance of reaching each outcome then
  involves powers of a data-dependent probability, and the pick can cost
  several times the epsilon smartnoise books for it. With 0 retries a pick is
  the exponential mechanism's choice plus a uniform choice with the mass the
  mechanism gave the measured queries: both terms change by at most e^epsilon
  between neighbouring tables, so the pick is epsilon-DP.
* The MST and MWEM subclasses rely on internals of smartnoise-synth 1.0.8, so
  for those engines any other installed version is refused before any budget
  is charged.
* mbi 1.1.0's ``synthetic_data()`` (MST/AIM sampling) is biased: ranks rows in
  parent groups and conditions on the wrong cliques (design.md §4).
* Sampling uses numpy's *global* RNG; :meth:`ExternalModel.sample` seeds it from
  the caller's generator for the duration of the call and restores it.

Must not: import the session module, private-data modules or opendp at module
level (the privacy-boundary test reads this file).
"""

from __future__ import annotations

import contextlib
import io
import math
import types
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
SMARTNOISE_SYNTH_VERSION = "1.0.8"
"""The smartnoise-synth release the adapters (and MWEM's overrides) were checked against."""
MWEM_SELECTION_RETRIES = 0
"""``max_retries_exp_mechanism`` passed to MWEM: 0 keeps each pick epsilon-DP (module docstring)."""
_MWEM_HOOKS = ("_histogram_from_data_attributes", "_initialize_a", "_multiplicative_weights",
               "_exponential_mechanism")
"""MWEMSynthesizer internals the adapter overrides or relies on (checked before any charge)."""
_MST_HOOKS = ("MST", "select")
"""MSTSynthesizer methods the adapter overrides or re-binds (checked before any charge)."""

_SELECTION_NUMPY = "numpy global RNG (smartnoise-synth exponential mechanism)"
_MEASURE_GAUSS = "OpenDP floating-point Gaussian per cell, added in float arithmetic (smartnoise-synth)"
_NOT_DPSYNTH = "not dpsynth's OpenDP integer-count mechanisms"


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
    session: ExternalSessionLike, engine: str, check: Any, make: Any, delta: float,
    total_share: float, true_n: dict[str, Any],
) -> ExternalModel:
    """``check(engine)`` returns the synthesizer class after the public-facts checks (before
    any charge); ``make(base, eps, delta, total)`` builds the synthesizer."""
    _preflight(session, engine)
    _import_snsynth(engine)
    base = check(engine)
    cols = tuple(session.columns)
    sizes = [session.domain[c] for c in cols]
    rho_all = session.remaining.rho
    total, total_m = _noisy_total(session, rho_all * total_share, engine)
    rho = session.remaining.rho
    eps = _external_epsilon(rho, delta)
    info = {"engine": engine, "external": f"smartnoise-synth {SMARTNOISE_SYNTH_VERSION}",
            "epsilon_passed": eps, "delta_passed": delta, "rho_passed": rho,
            "category_domain": "public (schema codes, through a transformer fitted on public codes)",
            **true_n,
            "noise_source": f"selection: {_SELECTION_NUMPY}; measurements: {_MEASURE_GAUSS}; "
                            f"{_NOT_DPSYNTH}"}
    synth = make(base, eps, delta, total)
    return _fit_external(session, engine, synth, cols, sizes, total, total_m, info)


# -- engines -------------------------------------------------------------------------------


def fit_smartnoise_mst(
    session: ExternalSessionLike, settings: SmartnoiseMSTSettings | None = None
) -> ExternalModel:
    """smartnoise-synth's MST on the session's codes, spending the whole remaining budget;
    its estimations use dpsynth's DP total, never the true N (:func:`_dp_total_mst`)."""
    s = settings or SmartnoiseMSTSettings()

    def make(base: Any, eps: float, delta: float, total: float) -> Any:
        return _dp_total_mst(base, total, epsilon=eps, delta=delta)

    true_n = {"uses_true_n_internally": False,
              "true_n_use": "none reaches the model: tree selection and final estimation get "
                            "known_total = dpsynth's DP total (smartnoise's len(data) replaced); "
                            "the fitted object's num_rows is cleared"}
    return _fit_cube(session, "smartnoise-mst", _check_mst_internals, make, s.delta,
                     s.total_share, true_n)


def fit_smartnoise_aim(
    session: ExternalSessionLike, settings: SmartnoiseAIMSettings | None = None
) -> ExternalModel:
    """smartnoise-synth's AIM on the session's codes, spending the whole remaining budget."""
    s = settings or SmartnoiseAIMSettings()

    def check(engine: str) -> Any:
        from snsynth.aim import AIMSynthesizer

        return AIMSynthesizer

    def make(base: Any, eps: float, delta: float, total: float) -> Any:
        return base(epsilon=eps, delta=delta, max_model_size=s.max_model_size,
                    degree=s.degree, max_cells=s.max_cells, rounds=s.rounds)

    true_n = {"uses_true_n_internally": False,
              "true_n_use": "none in the fit (mbi estimates the total from the noisy 1-way "
                            "measurements); the fitted object's num_rows is cleared"}
    return _fit_cube(session, "smartnoise-aim", check, make, s.delta, s.total_share, true_n)


def _snsynth_version() -> str | None:
    """The installed smartnoise-synth version (None when its metadata is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("smartnoise-synth")
    except PackageNotFoundError:
        return None


def _check_version(engine: str) -> None:
    """The installed smartnoise-synth must be the release whose internals the overrides
    were checked against; a public-facts check, before any charge."""
    found = _snsynth_version()
    if found != SMARTNOISE_SYNTH_VERSION:
        raise UsageError(
            f"engine {engine} needs smartnoise-synth {SMARTNOISE_SYNTH_VERSION} exactly (found "
            f"{found or 'no version metadata'}): its privacy fix overrides that release's internals. "
            f"Install it with: {INSTALL_HINT}"
        )


def _check_hooks(engine: str, cls: Any, where: str, hooks: Sequence[str]) -> None:
    missing = [h for h in hooks if not callable(getattr(cls, h, None))]
    if missing:
        raise UsageError(f"engine {engine}: {where} lacks {', '.join(missing)}; "
                         f"reinstall smartnoise-synth {SMARTNOISE_SYNTH_VERSION}")


def _check_mwem_internals(engine: str) -> Any:
    """MWEMSynthesizer, once the installed release is the checked one (before any charge)."""
    _check_version(engine)
    from snsynth.mwem import MWEMSynthesizer

    _check_hooks(engine, MWEMSynthesizer, "snsynth.mwem.MWEMSynthesizer", _MWEM_HOOKS)
    return MWEMSynthesizer


def _check_mst_internals(engine: str) -> Any:
    """MSTSynthesizer, once the installed release is the checked one and its ``MST`` still
    reaches mbi's estimation through the module name ``estimation`` (before any charge)."""
    _check_version(engine)
    from snsynth.mst import MSTSynthesizer

    _check_hooks(engine, MSTSynthesizer, "snsynth.mst.MSTSynthesizer", _MST_HOOKS)
    fn = MSTSynthesizer.MST
    names = set(getattr(getattr(fn, "__code__", None), "co_names", ()))
    if getattr(fn, "__closure__", None) is not None or not {"estimation", "mirror_descent"} <= names:
        raise UsageError(f"engine {engine}: snsynth.mst.MSTSynthesizer.MST is not the "
                         f"smartnoise-synth {SMARTNOISE_SYNTH_VERSION} method the adapter checked; "
                         f"reinstall that release")
    return MSTSynthesizer


class _DPTotalEstimation:
    """Stands in for mbi's ``estimation`` module inside smartnoise's ``MST``: its one use,
    ``mirror_descent(..., known_total=float(len(data)), ...)``, runs mbi's own
    ``mirror_descent`` with ``known_total`` = dpsynth's DP total. Any other attribute is
    missing, so a different ``MST`` fails instead of reaching mbi unpinned."""

    def __init__(self, total: float) -> None:
        self.total = float(total)
        self.calls = 0

    def mirror_descent(self, domain: Any, measurements: Any, *, known_total: float,
                       **kwargs: Any) -> Any:
        from mbi import estimation

        del known_total  # smartnoise's len(data): never used
        self.calls += 1
        return estimation.mirror_descent(domain, measurements, known_total=self.total, **kwargs)


def _dp_total_mst(base: Any, total: float, **kwargs: Any) -> Any:
    """smartnoise's MST (``base``) whose estimations use dpsynth's DP total, not the true N.

    smartnoise-synth 1.0.8's ``MSTSynthesizer.MST`` sets ``total = len(data.df)``
    (snsynth/mst/mst.py:113) and passes it to mbi's ``estimation.mirror_descent``
    as ``known_total`` twice: in ``select`` (line 122 -> 191, the estimate the
    tree-selection scores compare the true 2-way marginals with) and in the final
    estimation (line 126, the fitted model). Two hooks, no smartnoise code copied:

    * ``select`` is overridden to call smartnoise's ``select`` with ``total``
      (the only use of that argument is line 191's ``known_total``).
    * ``MST`` is smartnoise's own function (same code object) with the global
      name ``estimation`` bound, for this class only, to
      :class:`_DPTotalEstimation`; line 113's ``len(data.df)`` is still
      evaluated but flows only into the two replaced ``known_total`` arguments.

    Everything else is unchanged and uses N only through counts inside
    mechanisms: ``measure`` (Gaussian 1-/2-way marginals), ``compress_domain``
    (noisy measurements only), the selection scores ``|x - xhat|_1`` (sensitivity
    1 now that ``xhat`` is post-processing). ``fit`` stores ``num_rows =
    len(data)`` (line 95, the default sample size); it is cleared here and
    :meth:`ExternalModel.sample` always passes the row count. After ``fit`` the
    pinned estimation must have run exactly once and ``select`` exactly once,
    otherwise the model is refused.
    """
    public_total = float(total)
    pinned = _DPTotalEstimation(public_total)
    fn = base.MST
    mst_on_dp_total = types.FunctionType(fn.__code__, {**fn.__globals__, "estimation": pinned},
                                         fn.__name__, fn.__defaults__, fn.__closure__)

    class DPTotalMST(base):
        MST = mst_on_dp_total
        selections = 0

        def select(self, data: Any, rho: float, measurement_log: Any, total: float,
                   cliques: Sequence[Any] = ()) -> Any:
            del total  # smartnoise's len(data): never used
            self.selections += 1
            return super().select(data, rho, measurement_log, public_total, list(cliques))

        def fit(self, data: Any, *args: Any, **kw: Any) -> None:
            super().fit(data, *args, **kw)
            self.num_rows = None
            if pinned.calls != 1 or self.selections != 1:
                raise InternalError("smartnoise-mst did not run its estimations on the DP total "
                                    f"(pinned estimations {pinned.calls}, selections "
                                    f"{self.selections}); the model is not used")

    return DPTotalMST(**kwargs)


def _public_domain_mwem(base: Any, sizes: Sequence[int], total: float, **kwargs: Any) -> Any:
    """smartnoise's MWEM (``base``) on the schema's public domain and dpsynth's DP total.

    Two steps of smartnoise-synth 1.0.8's MWEM are replaced; the algorithm (query
    pool, exponential mechanism, Laplace measurements, multiplicative weights,
    sampling) is smartnoise's:

    * ``_histogram_from_data_attributes`` sized each histogram axis as
      ``max - min + 1`` of the column *in the data* (a category absent from the
      data had no cell). Here every axis has the column's public cardinality,
      codes are counted exactly into it, and the sampler's offsets are 0.
    * ``_initialize_a`` started the synthetic histogram at ``np.sum(histogram)``,
      the true N, which the multiplicative-weights update then keeps as its
      total (``sum_a``) and scales every update by. Here it starts at ``total``,
      dpsynth's DP estimate, so no step reads N outside a mechanism (the caller
      passes ``iterations`` and ``marginal_width`` so smartnoise does not derive
      them from N either).

    After ``fit`` the instance keeps only what ``sample`` needs: the private
    rows and exact histograms it held are dropped.
    """
    from snsynth.mwem import Histogram

    public_sizes = tuple(int(v) for v in sizes)
    public_total = float(total)

    class PublicDomainMWEM(base):
        synthetic_histograms: list[tuple[Any, Any, Any]]
        histograms: list[Any]
        data: Any

        def _histogram_from_data_attributes(self, data: Any, splits: Any = ()) -> list[Any]:
            histograms = []
            for split in splits:
                idx = [int(i) for i in split]
                dims = [public_sizes[i] for i in idx]
                codes = np.asarray(data, dtype=np.int64)[:, idx]
                counts = Histogram.histogramdd_indexes(codes, dims).astype(np.float64)
                for i, size in zip(idx, dims, strict=True):
                    self.mins_maxes[str(i)] = (0, size - 1)
                    self.scale[str(i)] = 1
                histograms.append(Histogram(counts, dims, [np.arange(d + 1) for d in dims], split))
            return histograms

        def _initialize_a(self, histogram: Any, dimensions: Any) -> np.ndarray:
            return np.full(np.shape(histogram), public_total / math.prod(dimensions), dtype=np.float64)

        def fit(self, data: Any, *args: Any, **kw: Any) -> None:
            super().fit(data, *args, **kw)
            self.synthetic_histograms = [(fake, None, split)
                                         for fake, _exact, split in self.synthetic_histograms]
            self.data = None
            self.histograms = []

    return PublicDomainMWEM(**kwargs)


def fit_smartnoise_mwem(
    session: ExternalSessionLike, settings: SmartnoiseMWEMSettings | None = None
) -> ExternalModel:
    """smartnoise-synth's MWEM (pure epsilon-DP) on the session's codes, over the schema's
    public domain and dpsynth's DP total; small domains only."""
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
    base = _check_mwem_internals(engine)

    total, total_m = _noisy_total(session, session.remaining.rho * s.total_share, engine)
    rho = session.remaining.rho
    eps = math.sqrt(2.0 * rho) * (1 - 1e-12)  # epsilon-DP implies epsilon^2/2-zCDP
    iterations = s.iterations or max(1, math.ceil(math.log10(max(total, 10.0)))) * 10
    synth = _public_domain_mwem(
        base, sizes, total,
        epsilon=eps,
        iterations=iterations,
        split_factor=s.split_factor,
        marginal_width=3 if total > 10_000 else 2,
        mult_weights_iterations=s.mult_weights_iterations,
        max_retries_exp_mechanism=MWEM_SELECTION_RETRIES,
    )
    info = {"engine": engine, "external": f"smartnoise-synth {SMARTNOISE_SYNTH_VERSION}",
            "epsilon_passed": eps, "rho_passed": rho, "iterations": iterations,
            "selection_retries": MWEM_SELECTION_RETRIES,
            "category_domain": "public (schema cardinalities; MWEM's data min/max step replaced)",
            "uses_true_n_internally": False,
            "true_n_use": "none: the synthetic histogram starts from and keeps dpsynth's DP total "
                          "(MWEM's np.sum(histogram) start replaced)",
            "noise_source": "selection: Python random module (smartnoise-synth exponential "
                            "mechanism); measurements: OpenDP floating-point Laplace per cell, "
                            f"added in float arithmetic (smartnoise-synth); {_NOT_DPSYNTH}"}
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
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # and AIM prints to stdout (would break --json)
        synth.fit(data, transformer=transformer, categorical_columns=list(cols))
    del data
    if hasattr(synth, "num_rows"):  # MST/AIM keep len(data) as their default sample size
        synth.num_rows = None
    model = ExternalModel(cols, sizes, synth, total, info)
    model.measurements = [total_m]
    return model
