"""Adapters to smartnoise-synth 1.0.8's MST, AIM and MWEM (optional extra).

Owns: the engines ``smartnoise-mst``, ``smartnoise-aim`` and ``smartnoise-mwem``
behind dpsynth's engine protocol (the three ``fit_smartnoise_*`` functions), and
the package's public names. Installed with the ``smartnoise`` extra (see README,
"Optional: smartnoise-synth engines"); ``snsynth`` is imported lazily, so dpsynth
works without it. The package's modules:

* :mod:`~dpsynth.engines.smartnoise.settings`: the three frozen settings classes
  and their validation;
* :mod:`~dpsynth.engines.smartnoise.model`: :class:`ExternalModel`, the
  fitted-model wrapper every engine returns, and code conversion;
* :mod:`~dpsynth.engines.smartnoise.adapter`: the shared fitting steps (checks,
  DP total, external epsilon, the hand-over and fit);
* :mod:`~dpsynth.engines.smartnoise.patches`: the adaptations of smartnoise-synth
  1.0.8's internals, why each exists, and the version pin that guards them.

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
own implementation, not on dpsynth's; docs/privacy-model.md). Each fitted model's
``info`` states them as flags (``uses_true_n_internally``, ``true_n_use``,
``noise_source``, ``category_domain``):

* Row-level unit only: refused with :class:`UsageError` when the session's
  contribution bound k > 1, before any budget is charged or data read.
* Category domain: every engine gets the schema's public codes, never the
  data's. MST/AIM through a transformer fitted on a synthetic, public "domain
  frame"; MWEM through ``patches._public_domain_mwem``, a subclass that builds
  its histograms over the public cardinalities (smartnoise's own MWEM sizes each
  histogram from the column's min/max in the data, so a category absent from
  the data could never be sampled and its presence was disclosed without
  noise; issue 11).
* True row count. No engine's output depends on it. smartnoise's MST computes
  ``total = len(data)`` and passes it to mbi as ``known_total`` in its tree
  selection and its final estimation, which would scale the model to the true
  N (a use of N outside any mechanism under dpsynth's add/remove-one-row
  relation; the selection scores' sensitivity would also exceed the 1 it
  calibrates for). ``patches._dp_total_mst`` makes both estimations use
  dpsynth's DP total instead (``select`` overridden; ``MST`` runs smartnoise's
  own code with mbi's ``mirror_descent`` pinned to that total). AIM's estimation
  takes its total from the noisy 1-way measurements, and MWEM (as adapted here)
  starts from and keeps dpsynth's DP total instead of smartnoise's
  ``np.sum(histogram)``; the fitted objects' stored row count (``num_rows``)
  is cleared. The *public* total of every returned model is dpsynth's noisy
  estimate, never the true N.
* Noise is not dpsynth's. Selection (exponential mechanism) draws from numpy's
  global RNG (MST/AIM) or Python's ``random`` module (MWEM); measurement noise
  comes from OpenDP's *floating-point* Gaussian (MST/AIM) or Laplace (MWEM)
  samplers, called once per cell from Python on 0.0 and added to the count in
  float arithmetic. That is outside OpenDP's own guarantee and not the
  integer-count samplers of docs/privacy-model.md (and slow on large marginals).
* MWEM: pure epsilon-DP only with its selection retries off
  (``max_retries_exp_mechanism=0``, :data:`MWEM_SELECTION_RETRIES`). smartnoise's
  default re-draws the exponential mechanism up to 10 times while it picks an
  already measured query, then picks uniformly; the chance of reaching each
  outcome then involves powers of a data-dependent probability, and the pick can
  cost several times the epsilon smartnoise books for it. With 0 retries a pick
  is the exponential mechanism's choice plus a uniform choice with the mass the
  mechanism gave the measured queries: both terms change by at most e^epsilon
  between neighbouring tables, so the pick is epsilon-DP.
* The MST and MWEM subclasses rely on internals of smartnoise-synth 1.0.8, so
  for those engines any other installed version is refused before any budget
  is charged.
* mbi 1.1.0's ``synthetic_data()`` (MST/AIM sampling) is biased: ranks rows in
  parent groups and conditions on the wrong cliques.
* Sampling uses numpy's *global* RNG; :meth:`ExternalModel.sample` seeds it from
  the caller's generator for the duration of the call and restores it.

Must not: import the session module, private-data modules or opendp at module
level (the privacy-boundary test reads every file of this package).
"""

from __future__ import annotations

import math
from typing import Any

from dpsynth.engines.smartnoise.adapter import (
    _NOT_DPSYNTH,
    ExternalSessionLike,
    _check_mwem_cells,
    _fit_cube,
    _fit_external,
    _prepare,
)
from dpsynth.engines.smartnoise.adapter import MWEM_MAX_CELLS as MWEM_MAX_CELLS
from dpsynth.engines.smartnoise.model import ExternalModel
from dpsynth.engines.smartnoise.patches import INSTALL_HINT as INSTALL_HINT
from dpsynth.engines.smartnoise.patches import (
    MWEM_SELECTION_RETRIES,
    SMARTNOISE_SYNTH_VERSION,
    _check_mst_internals,
    _check_mwem_internals,
    _dp_total_mst,
    _public_domain_mwem,
)
from dpsynth.engines.smartnoise.settings import (
    SmartnoiseAIMSettings,
    SmartnoiseMSTSettings,
    SmartnoiseMWEMSettings,
)

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


def fit_smartnoise_mst(
    session: ExternalSessionLike, settings: SmartnoiseMSTSettings | None = None
) -> ExternalModel:
    """smartnoise-synth's MST on the session's codes, spending the whole remaining budget;
    its estimations use dpsynth's DP total, never the true N (``patches._dp_total_mst``)."""
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


def fit_smartnoise_mwem(
    session: ExternalSessionLike, settings: SmartnoiseMWEMSettings | None = None
) -> ExternalModel:
    """smartnoise-synth's MWEM (pure epsilon-DP) on the session's codes, over the schema's
    public domain and dpsynth's DP total; small domains only."""
    s = settings or SmartnoiseMWEMSettings()
    engine = "smartnoise-mwem"

    def histogram_sizes(cols: tuple[str, ...], sizes: list[int]) -> None:
        _check_mwem_cells(engine, cols, sizes, s.split_factor)

    p = _prepare(session, engine, _check_mwem_internals, s.total_share, histogram_sizes)
    eps = math.sqrt(2.0 * p.rho) * (1 - 1e-12)  # epsilon-DP implies epsilon^2/2-zCDP
    iterations = s.iterations or max(1, math.ceil(math.log10(max(p.total, 10.0)))) * 10
    synth = _public_domain_mwem(
        p.base, p.sizes, p.total,
        epsilon=eps,
        iterations=iterations,
        split_factor=s.split_factor,
        marginal_width=3 if p.total > 10_000 else 2,
        mult_weights_iterations=s.mult_weights_iterations,
        max_retries_exp_mechanism=MWEM_SELECTION_RETRIES,
    )
    info = {"engine": engine, "external": f"smartnoise-synth {SMARTNOISE_SYNTH_VERSION}",
            "epsilon_passed": eps, "rho_passed": p.rho, "iterations": iterations,
            "selection_retries": MWEM_SELECTION_RETRIES,
            "category_domain": "public (schema cardinalities; MWEM's data min/max step replaced)",
            "uses_true_n_internally": False,
            "true_n_use": "none: the synthetic histogram starts from and keeps dpsynth's DP total "
                          "(MWEM's np.sum(histogram) start replaced)",
            "noise_source": "selection: Python random module (smartnoise-synth exponential "
                            "mechanism); measurements: OpenDP floating-point Laplace per cell, "
                            f"added in float arithmetic (smartnoise-synth); {_NOT_DPSYNTH}"}
    return _fit_external(session, engine, synth, p, info)
