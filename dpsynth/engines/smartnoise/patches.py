"""Adaptations of smartnoise-synth 1.0.8's internals, and the checks that they still apply.

Owns: the pinned release (:data:`SMARTNOISE_SYNTH_VERSION`, :data:`INSTALL_HINT`),
the public-facts checks run before any budget is charged (installed version,
hooks present, MST's method still the one checked), MST on dpsynth's DP total
(:func:`_dp_total_mst`), MWEM on the public domain and DP total
(:func:`_public_domain_mwem`), and MWEM's selection retries
(:data:`MWEM_SELECTION_RETRIES`). No data is read here: each function builds or
checks a class; the adapter fits it.

Why each adaptation exists (issue 11; the privacy claim for smartnoise's charge
rests on these):

* MST, DP total instead of the true N. smartnoise's ``MST`` computes ``total =
  len(data)`` and passes it to mbi as ``known_total`` in its tree selection and
  its final estimation, which scales the model to the true N: a use of N outside
  any mechanism under dpsynth's add/remove-one-row relation (and the selection
  scores' sensitivity would exceed the 1 it calibrates for). Both estimations
  get dpsynth's DP total instead.
* MWEM, public domain. smartnoise sizes each histogram axis from the column's
  min/max *in the data*, so a category absent from the data could never be
  sampled and its presence was disclosed without noise. Every axis gets the
  schema's public cardinality instead.
* MWEM, DP total instead of the true N. smartnoise starts the synthetic
  histogram at ``np.sum(histogram)`` (the true N) and keeps that total through
  every update; it starts from and keeps dpsynth's DP total instead.
* MWEM, no selection retries (``max_retries_exp_mechanism=0``). smartnoise's
  default re-draws the exponential mechanism up to 10 times while it picks an
  already measured query, then picks uniformly; the chance of each outcome then
  involves powers of a data-dependent probability, and a pick can cost several
  times the epsilon smartnoise books for it. With 0 retries a pick is the
  mechanism's choice plus a uniform choice with the mass it gave the measured
  queries: both terms change by at most e^epsilon between neighbours.

Why the version is pinned: the MST and MWEM subclasses override or re-bind
private methods and a module global of that exact release (line numbers below
are snsynth 1.0.8's). Another release could rename them, or reach N some other
way, and the subclass would then silently run smartnoise's unfixed code; so for
those engines any other installed version, a missing hook, or an ``MST`` that no
longer reaches mbi through the name ``estimation`` is a
:class:`~dpsynth.errors.UsageError` before any charge.
"""

from __future__ import annotations

import math
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

from dpsynth.errors import InternalError, UsageError

__all__ = ["INSTALL_HINT", "MWEM_SELECTION_RETRIES", "SMARTNOISE_SYNTH_VERSION"]

INSTALL_HINT = (
    "pip install 'dpsynth[smartnoise]' && "
    "pip install --no-deps smartnoise-synth==1.0.8 smartnoise-sql==1.0.10"
)
SMARTNOISE_SYNTH_VERSION = "1.0.8"
"""The smartnoise-synth release the adapters (and MWEM's overrides) were checked against."""
MWEM_SELECTION_RETRIES = 0
"""``max_retries_exp_mechanism`` passed to MWEM: 0 keeps each pick epsilon-DP (module docstring)."""
_MWEM_HOOKS = ("_histogram_from_data_attributes", "_initialize_a", "_multiplicative_weights",
               "_exponential_mechanism")
"""MWEMSynthesizer internals the adapter overrides or relies on (checked before any charge)."""
_MST_HOOKS = ("MST", "select")
"""MSTSynthesizer methods the adapter overrides or re-binds (checked before any charge)."""


# -- public-facts checks, before any charge ---------------------------------------------------


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


# -- MST on dpsynth's DP total --------------------------------------------------------------


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
    :meth:`~dpsynth.engines.smartnoise.model.ExternalModel.sample` always passes
    the row count. After ``fit`` the pinned estimation must have run exactly once
    and ``select`` exactly once, otherwise the model is refused.
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


# -- MWEM on the public domain and dpsynth's DP total ---------------------------------------


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
