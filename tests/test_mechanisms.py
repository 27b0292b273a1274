"""dpsynth.privacy.mechanisms: the cost each prepared mechanism reports is OpenDP's own
map, its noise has the scale it reports, bad sensitivities and budgets are refused,
and nothing here hands out noise that no one charged for."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import opendp.prelude as dp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dpsynth.errors import InternalError, UsageError
from dpsynth.privacy import mechanisms
from dpsynth.privacy.mechanisms import (
    PreparedMechanism,
    as_counts,
    as_scores,
    gaussian_counts,
    noisy_max_selector,
    run_opendp,
)

dp.enable_features("contrib")

RHOS = [1e-6, 1e-4, 0.02, 0.5, 3.0, 100.0]


def _opendp_gaussian(scale: float) -> Any:
    """The discrete Gaussian on i64 count vectors, built here, not by dpsynth."""
    return dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T="i64")), dp.l2_distance(T="i64"),
                              scale=scale)


def _opendp_noisy_max(scale: float) -> Any:
    return dp.m.make_noisy_max(dp.vector_domain(dp.atom_domain(T=float, nan=False)),
                               dp.linf_distance(T=float), dp.zero_concentrated_divergence(),
                               scale=scale)


# -- cost: OpenDP's map, at most what was asked ----------------------------------------


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("k", [1, 2, 7])
def test_gaussian_counts_reports_opendps_map(k: int, rho: float) -> None:
    mech = gaussian_counts(k, rho)
    assert (mech.name, mech.sensitivity) == ("discrete_gaussian", k)
    assert mech.rho == _opendp_gaussian(mech.scale).map(k) == mech._measurement.map(k)
    assert mech.rho <= rho and mech.rho == pytest.approx(rho, rel=1e-9)
    assert mech.scale == pytest.approx(k / math.sqrt(2 * rho), rel=1e-9)


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("sensitivity", [0.25, 1.0, 3.0, 14.5])
def test_noisy_max_reports_opendps_map(sensitivity: float, rho: float) -> None:
    mech = noisy_max_selector(sensitivity, rho)
    assert (mech.name, mech.sensitivity) == ("noisy_max", sensitivity)
    assert mech.rho == _opendp_noisy_max(mech.scale).map(sensitivity) == mech._measurement.map(
        sensitivity)
    assert mech.rho <= rho and mech.rho == pytest.approx(rho, rel=1e-9)
    assert mech.scale == pytest.approx(sensitivity / math.sqrt(2 * rho), rel=1e-9)


@settings(max_examples=150, deadline=None)
@given(k=st.integers(1, 50), rho=st.floats(1e-8, 1e3))
def test_calibrated_cost_never_exceeds_the_request(k: int, rho: float) -> None:
    for mech in (gaussian_counts(k, rho), noisy_max_selector(float(k), rho)):
        assert mech.rho <= rho
        assert mech.rho == pytest.approx(rho, rel=1e-9)


# -- noise: the scale reported is the scale drawn ---------------------------------------


def test_discrete_gaussian_noise_has_the_reported_scale() -> None:
    mech = gaussian_counts(3, 0.05)
    n = 20_000
    out = run_opendp(mech, as_counts(np.zeros(n, dtype=np.int64)))
    assert out.dtype == np.float64 and out.shape == (n,)
    assert np.all(out == np.round(out))  # integer noise
    var = float(np.var(out, ddof=1))
    lo, hi = stats.chi2.ppf([5e-5, 1 - 5e-5], n - 1) / (n - 1)
    assert lo * mech.scale**2 <= var <= hi * mech.scale**2
    assert abs(float(out.mean())) <= 4.5 * mech.scale / math.sqrt(n)


def test_noisy_max_noise_has_the_reported_scale() -> None:
    # Gumbel noise of scale b: the lower of two scores a gap g apart wins with
    # probability 1 / (1 + e^(g / b)); here g = b, so 1 / (1 + e).
    mech = noisy_max_selector(2.0, 0.08)
    draws = 4_000
    lower_wins = sum(run_opendp(mech, as_scores([0.0, mech.scale])) == 0 for _ in range(draws))
    p = 1 / (1 + math.e)
    lo, hi = stats.binom.ppf([5e-5, 1 - 5e-5], draws, p)
    assert lo <= lower_wins <= hi


def test_run_opendp_is_the_mechanisms_own_run() -> None:
    mech = noisy_max_selector(1.0, 1e6)
    assert run_opendp(mech, as_scores([0.0, 1e4, 3.0])) == mech.run(as_scores([0.0, 1e4, 3.0])) == 1
    assert isinstance(run_opendp(mech, [1.0, 0.0]), int)


# -- refusals ---------------------------------------------------------------------------

BAD_NUMBERS = [0, 0.0, -1, -1e-9, math.nan, math.inf, -math.inf, True, "0.1", None, np.nan]


@pytest.mark.parametrize("make", [gaussian_counts, noisy_max_selector])
@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
def test_bad_rho_refused(make: Any, bad: Any) -> None:
    with pytest.raises(UsageError, match=r"^rho \(.*\) must be a positive finite number$"):
        make(1, bad)


@pytest.mark.parametrize("make", [gaussian_counts, noisy_max_selector])
@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
def test_bad_sensitivity_refused(make: Any, bad: Any) -> None:
    with pytest.raises(UsageError, match=r"^sensitivity \(.*\) must be a positive finite number$"):
        make(bad, 0.1)


def test_counts_need_an_integer_sensitivity() -> None:
    with pytest.raises(UsageError, match=r"^sensitivity \(1.5\) must be an integer for counts$"):
        gaussian_counts(1.5, 0.1)  # type: ignore[arg-type]
    assert gaussian_counts(np.int64(2), 0.1).sensitivity == 2  # type: ignore[arg-type]
    assert gaussian_counts(2.0, 0.1).sensitivity == 2  # type: ignore[arg-type]
    assert noisy_max_selector(1.5, 0.1).sensitivity == 1.5


@pytest.mark.parametrize("bad", [
    np.array([1.0, 2.0]),             # not integers
    np.array([3, -1]),                # negative
    np.array([2**62 + 1], dtype=np.uint64),  # beyond OpenDP's i64 counts
    np.array(["1"]),
])
def test_bad_counts_refused(bad: np.ndarray) -> None:
    with pytest.raises(InternalError, match="counts"):
        as_counts(bad)


def test_counts_are_flattened_to_contiguous_int64() -> None:
    out = as_counts(np.arange(6, dtype=np.uint8).reshape(2, 3).T)
    assert out.dtype == np.int64 and out.flags.c_contiguous and out.tolist() == [0, 3, 1, 4, 2, 5]
    assert as_counts(np.zeros(0, dtype=np.int32)).shape == (0,)


@pytest.mark.parametrize("bad", [[], [1.0, math.nan], [math.inf], np.zeros((0, 3))])
def test_bad_scores_refused(bad: Any) -> None:
    with pytest.raises(InternalError, match="scores must be a non-empty vector of finite numbers"):
        as_scores(bad)


# -- surface ----------------------------------------------------------------------------


def test_nothing_hands_out_uncharged_noise() -> None:
    """The module offers prepared mechanisms (the session charges, then runs them) and
    validators; no function returns a noisy answer by itself."""
    assert sorted(mechanisms.__all__) == [
        "NoiseBackend", "PreparedMechanism", "as_counts", "as_key_counts", "as_scores",
        "gaussian_counts", "gaussian_threshold", "noisy_max_selector", "run_opendp",
    ]
    assert not hasattr(mechanisms, "noisy_counts") and not hasattr(mechanisms, "noisy_max")
    assert isinstance(gaussian_counts(1, 0.1), PreparedMechanism)
    assert isinstance(noisy_max_selector(1.0, 0.1), PreparedMechanism)
    assert isinstance(mechanisms.gaussian_threshold(1, 0.1, 1e-9), PreparedMechanism)


@pytest.mark.parametrize("k", [1, 3])
def test_gaussian_threshold_costs_what_was_asked(k: int) -> None:
    """Key selection: OpenDP's map gives at most the requested rho and delta at the input
    distance one patient makes (k keys, each by k); the threshold is the smallest whole
    number with that delta, so one lower would cost more delta."""
    rho, delta = 1e-3, 1e-9
    mech = mechanisms.gaussian_threshold(k, rho, delta)
    assert mech.rho <= rho and 0 < mech.delta <= delta
    assert mech.threshold is not None and mech.threshold > k
    cost = mech._measurement.map((k, k, k))
    assert (cost[0], cost[1]) == (mech.rho, mech.delta)
    lower = dp.m.make_gaussian_threshold(
        dp.map_domain(dp.atom_domain(T=str), dp.atom_domain(T="i64")),
        dp.l02inf_distance(dp.absolute_distance(T="i64")), scale=mech.scale,
        threshold=int(mech.threshold) - 1)
    assert lower.map((k, k, k))[1] > delta
    # a key far above the threshold (by 10 noise scales) is kept; one at 1 is dropped
    big = int(mech.threshold + 10 * mech.scale)
    out = mech.run(mechanisms.as_key_counts({"big": big, "one": 1}))
    assert set(out) == {"big"}


def test_prepared_mechanism_is_frozen() -> None:
    mech = gaussian_counts(1, 0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        mech.rho = 0.0  # type: ignore[misc]
