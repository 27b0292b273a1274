"""Accountant: conversions against OpenDP's own maps; budget arithmetic properties."""

from __future__ import annotations

import math

import opendp.prelude as dp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsynth.errors import BudgetError, UsageError
from dpsynth.privacy.accountant import (
    Accountant,
    Budget,
    Charge,
    delta_for,
    epsilon_for,
    rho_for,
)

dp.enable_features("contrib")


def _opendp_profile(rho: float) -> dp.PrivacyProfile:
    # A scalar Gaussian with sensitivity 1 and scale 1/sqrt(2 rho) is rho-zCDP.
    meas = dp.m.make_gaussian(
        dp.atom_domain(T=float, nan=False),
        dp.absolute_distance(T=float),
        scale=1 / math.sqrt(2 * rho),
    )
    assert meas.map(1.0) == pytest.approx(rho, rel=1e-12)
    return dp.c.make_zCDP_to_approxDP(meas).map(1.0)


RHOS = [1e-4, 3e-3, 0.0107, 0.1, 0.5, 1.0, 5.0]
DELTAS = [1e-12, 1e-9, 1e-6, 1e-3]


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("delta", DELTAS)
def test_epsilon_matches_opendp(rho: float, delta: float) -> None:
    assert epsilon_for(rho, delta) == pytest.approx(_opendp_profile(rho).epsilon(delta), rel=1e-6)


@pytest.mark.parametrize("rho", RHOS)
@pytest.mark.parametrize("epsilon", [0.1, 1.0, 3.0, 10.0])
def test_delta_matches_opendp(rho: float, epsilon: float) -> None:
    expected = _opendp_profile(rho).delta(epsilon)
    if expected > 0.99:
        # For delta ~ 0.99 (rho 5, epsilon 0.1) our search over alpha finds 0.99281,
        # OpenDP reports 0.99342: every alpha > 1 gives a valid bound (CKS20, Cor. 13)
        # and ours is the infimum over a wider alpha range (alpha - 1 = e^-4.96),
        # checked by a grid search. Far outside any usable regime.
        pytest.xfail("OpenDP searches a narrower alpha range when delta > 0.99")
    assert delta_for(rho, epsilon) == pytest.approx(expected, rel=1e-6, abs=1e-300)


@pytest.mark.parametrize("epsilon", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("delta", DELTAS)
def test_rho_for_inverts_and_is_safe(epsilon: float, delta: float) -> None:
    rho = rho_for(epsilon, delta)
    assert _opendp_profile(rho).delta(epsilon) <= delta * (1 + 1e-6)
    assert epsilon_for(rho, delta) == pytest.approx(epsilon, rel=1e-6)


def test_rejects_bad_inputs() -> None:
    with pytest.raises(UsageError):
        rho_for(0.0, 1e-9)
    with pytest.raises(UsageError):
        rho_for(1.0, 1.5)
    with pytest.raises(UsageError):
        Budget(-1.0)
    with pytest.raises(UsageError):
        Budget(math.inf)


finite = st.floats(min_value=0.0, max_value=1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(finite, finite, finite)
def test_budget_addition(a: float, b: float, c: float) -> None:
    x, y, z = Budget(a), Budget(b), Budget(c)
    assert (x + y).rho == (y + x).rho
    assert ((x + y) + z).rho == pytest.approx((x + (y + z)).rho, rel=1e-12, abs=1e-300)
    assert ((x + y) - y).rho == pytest.approx(a, rel=1e-9, abs=1e-9 * (a + b))


@settings(max_examples=200, deadline=None)
@given(finite, finite)
def test_budget_subtraction_never_negative(a: float, b: float) -> None:
    if b > a * (1 + 1e-9):
        with pytest.raises(BudgetError):
            Budget(a) - Budget(b)
    else:
        assert (Budget(a) - Budget(b)).rho >= 0


@settings(max_examples=100, deadline=None)
@given(
    st.floats(min_value=1e-6, max_value=10.0),
    st.lists(st.floats(min_value=0.0, max_value=5.0), max_size=30),
)
def test_accountant_never_overspends(total: float, requests: list[float]) -> None:
    acc = Accountant(Budget(total))
    for i, r in enumerate(requests):
        before = acc.spent.rho
        try:
            acc.spend(Charge(step=f"s{i}", mechanism="test", rho=r))
        except BudgetError as e:
            assert acc.spent.rho == before  # a refusal spends nothing
            assert "remains" in e.message
        assert acc.spent.rho <= total * (1 + 1e-9)
    assert acc.remaining.rho == pytest.approx(max(0.0, total - acc.spent.rho), abs=1e-12)
