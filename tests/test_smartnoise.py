"""The smartnoise-synth adapters and the session's one exit for external engines.

The session method and the adapters' refusals run everywhere; fitting runs only
where the optional extra (``snsynth``) is installed.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

from dpsynth.engines import smartnoise as sn
from dpsynth.errors import BudgetError, UsageError
from dpsynth.privacy.accountant import Accountant, Budget
from dpsynth.privacy.session import MeasurementSession

N = 2000
SIZES = [3, 4, 5, 2]


def _codes(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, N)
    b = (a + rng.integers(0, 2, N)) % 4
    c = (b + rng.integers(0, 2, N)) % 4  # code 4 of column c never occurs
    d = rng.integers(0, 2, N)
    return np.stack([a, b, c, d], 1)


def _session(rho: float = 1.0, k: int = 1) -> MeasurementSession:
    return MeasurementSession(_codes(), ["a", "b", "c", "d"], SIZES, k, Accountant(Budget(rho)))


# -- MeasurementSession.spend_all_for_external ---------------------------------------------


def test_spend_all_charges_everything_first_and_returns_codes() -> None:
    s = _session(0.5)
    s.measure(("a",), 0.1, "probe")
    codes = s.spend_all_for_external("ext/fit", "external engine")
    assert s.remaining.rho == 0
    assert math.isclose(s.spent.rho, 0.5)
    last = s.charges[-1]
    assert (last.step, last.mechanism) == ("ext/fit", "external engine")
    assert math.isclose(last.rho, 0.4)
    assert last.columns == ("a", "b", "c", "d")
    np.testing.assert_array_equal(codes, _codes())
    assert not codes.flags.writeable


def test_spend_all_twice_is_refused() -> None:
    s = _session()
    s.spend_all_for_external("ext/fit", "external engine")
    with pytest.raises(BudgetError):
        s.spend_all_for_external("ext/fit", "external engine")
    with pytest.raises(BudgetError):
        s.measure(("a",), 1e-3, "after")


def test_spend_all_refuses_patient_level_unit_without_charging() -> None:
    s = _session(k=2)
    with pytest.raises(UsageError, match="row-level"):
        s.spend_all_for_external("ext/fit", "external engine")
    assert s.charges == ()


# -- adapters: refusals that need no snsynth -------------------------------------------------


@pytest.mark.parametrize(
    "fit", [sn.fit_smartnoise_mst, sn.fit_smartnoise_aim, sn.fit_smartnoise_mwem]
)
def test_adapters_refuse_k_above_one_before_anything(fit) -> None:
    s = _session(k=3)
    with pytest.raises(UsageError, match="row-level unit"):
        fit(s, None)
    assert s.charges == ()


def test_missing_extra_is_a_usage_error_before_any_charge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "snsynth", None)  # makes `import snsynth` fail
    s = _session()
    with pytest.raises(UsageError, match=r"dpsynth\[smartnoise\]"):
        sn.fit_smartnoise_mst(s, None)
    assert s.charges == ()


def test_mwem_refuses_a_huge_histogram_from_public_sizes() -> None:
    s = MeasurementSession(np.zeros((10, 3), dtype=np.int64), ["x", "y", "z"], [1000, 1000, 1000], 1,
                           Accountant(Budget(1.0)))
    with pytest.raises(UsageError, match="split_factor"):
        sn.fit_smartnoise_mwem(s, None)
    assert s.charges == ()


def test_settings_are_validated() -> None:
    with pytest.raises(UsageError):
        sn.SmartnoiseMSTSettings(total_share=1.5)
    with pytest.raises(UsageError):
        sn.SmartnoiseAIMSettings(degree=0)
    with pytest.raises(UsageError):
        sn.SmartnoiseMWEMSettings(iterations=0)


# -- adapters with smartnoise-synth installed -----------------------------------------------


def _need_snsynth() -> None:
    try:
        sn._import_snsynth("test")
    except UsageError:
        if os.environ.get("DPSYNTH_REQUIRE_SMARTNOISE") == "1":
            pytest.fail("DPSYNTH_REQUIRE_SMARTNOISE=1 but the smartnoise extra is not installed")
        pytest.skip("the smartnoise extra is not installed")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fit", "settings"),
    [
        (sn.fit_smartnoise_mst, sn.SmartnoiseMSTSettings()),
        (sn.fit_smartnoise_aim, sn.SmartnoiseAIMSettings(rounds=8)),
        (sn.fit_smartnoise_mwem, sn.SmartnoiseMWEMSettings(iterations=10)),
    ],
    ids=["mst", "aim", "mwem"],
)
def test_adapter_fits_spends_exactly_and_samples_in_domain(fit, settings) -> None:
    _need_snsynth()
    s = _session(rho=2.0)
    model = fit(s, settings)
    assert math.isclose(s.spent.rho, 2.0, rel_tol=1e-9)
    assert s.remaining.rho == 0
    steps = [c.step for c in s.charges]
    assert steps[-1].endswith("/fit") and steps[0].endswith("/total")
    # the public total is dpsynth's noisy estimate, close to N at this budget
    assert abs(model.total - N) < 0.1 * N
    codes = model.sample(500, np.random.default_rng(1))
    assert codes.shape == (500, 4)
    assert (codes >= 0).all() and (codes < np.array(SIZES)).all()
    # seeded by our generator: same rng seed, same rows
    again = model.sample(500, np.random.default_rng(1))
    np.testing.assert_array_equal(codes, again)


@pytest.mark.slow
def test_mst_and_aim_get_the_public_domain_not_the_data_domain() -> None:
    _need_snsynth()
    model = sn.fit_smartnoise_mst(_session(rho=2.0), None)
    # column c has 5 public categories but only 4 occur in the data
    assert list(model._synth._transformer.cardinality) == SIZES
