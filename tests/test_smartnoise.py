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
from dpsynth.engines.smartnoise import adapter, patches
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


@pytest.mark.parametrize("fit", [sn.fit_smartnoise_mst, sn.fit_smartnoise_mwem], ids=["mst", "mwem"])
def test_refuses_an_unchecked_smartnoise_version_before_any_charge(
    fit, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # MST's DP-total fix and MWEM's public-domain fix override smartnoise-synth 1.0.8's
    # internals; any other release is refused on public facts, before a budget is charged
    # or a code is read
    monkeypatch.setattr(adapter, "_import_snsynth", lambda engine: None)
    monkeypatch.setattr(patches, "_snsynth_version", lambda: "1.0.9")
    s = _session()
    with pytest.raises(UsageError, match=r"smartnoise-synth 1\.0\.8 exactly"):
        fit(s, None)
    assert s.charges == ()


def test_mwem_checks_the_histogram_size_before_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # the public-facts checks keep their order: MWEM's size limit comes before `import snsynth`
    monkeypatch.setitem(sys.modules, "snsynth", None)
    s = MeasurementSession(np.zeros((10, 3), dtype=np.int64), ["x", "y", "z"], [1000, 1000, 1000], 1,
                           Accountant(Budget(1.0)))
    with pytest.raises(UsageError, match="split_factor"):
        sn.fit_smartnoise_mwem(s, None)
    assert s.charges == ()


def test_package_public_names() -> None:
    """Issue 16 split the module into a package; its public names are unchanged."""
    assert sorted(sn.__all__) == [
        "ExternalModel", "ExternalSessionLike", "SmartnoiseAIMSettings", "SmartnoiseMSTSettings",
        "SmartnoiseMWEMSettings", "fit_smartnoise_aim", "fit_smartnoise_mst", "fit_smartnoise_mwem",
    ]
    for name in sn.__all__:
        assert getattr(sn, name) is not None
    assert sn.SMARTNOISE_SYNTH_VERSION == "1.0.8" and "smartnoise-synth==1.0.8" in sn.INSTALL_HINT
    assert sn.MWEM_MAX_CELLS == 10_000_000 and sn.MWEM_SELECTION_RETRIES == 0


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
        adapter._import_snsynth("test")
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
def test_adapter_fits_spends_exactly_and_samples_in_domain(
    fit, settings, capsys: pytest.CaptureFixture[str]
) -> None:
    _need_snsynth()
    s = _session(rho=2.0)
    model = fit(s, settings)
    assert capsys.readouterr().out == ""  # smartnoise's prints would corrupt `--json` output
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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fit", "settings", "uses_n", "selection"),
    [
        (sn.fit_smartnoise_mst, sn.SmartnoiseMSTSettings(), False, "numpy global RNG"),
        (sn.fit_smartnoise_aim, sn.SmartnoiseAIMSettings(rounds=8), False, "numpy global RNG"),
        (sn.fit_smartnoise_mwem, sn.SmartnoiseMWEMSettings(iterations=10), False, "Python random"),
    ],
    ids=["mst", "aim", "mwem"],
)
def test_info_flags_say_how_each_engine_uses_n_and_draws_noise(fit, settings, uses_n, selection) -> None:
    """Issue 11: the flags must match what smartnoise-synth 1.0.8 does (module docstring)."""
    _need_snsynth()
    model = fit(_session(rho=0.5), settings)
    info = model.info
    assert info["uses_true_n_internally"] is uses_n
    assert info["true_n_use"]
    if not uses_n:
        assert info["true_n_use"].startswith("none")
    assert info["category_domain"].startswith("public")
    noise = info["noise_source"]
    assert selection in noise and "floating-point" in noise
    assert "not dpsynth's OpenDP integer-count mechanisms" in noise
    synth = model._synth
    # no fitted object keeps the true row count as its default sample size
    assert getattr(synth, "num_rows", None) is None
    if fit is sn.fit_smartnoise_mst:  # known_total is dpsynth's DP total, not len(data)
        assert "DP total" in info["true_n_use"]
        assert synth.synthesizer.total == model.total
    elif fit is sn.fit_smartnoise_aim:  # the total is mbi's estimate from noisy 1-way measurements
        assert synth.synthesizer.total != N
    else:  # MWEM's synthetic histogram carries dpsynth's DP total
        assert math.isclose(synth.synthetic_histograms[0][0].sum(), model.total, rel_tol=1e-9)


# -- issue 11: MWEM on the public domain --------------------------------------------------
#
# D has no row with a = 3 (column a's public domain is {0, 1, 2, 3}); D' is D plus one row
# with a = 3. smartnoise's MWEM sized its histograms from each column's min/max in the data,
# so a release from D could never contain a = 3 and one from D' could: a neighbouring pair
# with privacy loss infinity (the issue saw a = 3 in 0 of 15 releases from D, 9 of 15 from D').

MWEM_SIZES = [4, 2]


def _neighbours() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    a = rng.integers(0, 3, 500)  # never 3
    b = (a + rng.integers(0, 2, 500)) % 2
    d = np.stack([a, b], 1)
    return d, np.vstack([d, [[3, 0]]])


def _mwem_release(codes: np.ndarray, rho: float = 0.5, iterations: int = 5) -> sn.ExternalModel:
    s = MeasurementSession(codes, ["a", "b"], MWEM_SIZES, 1, Accountant(Budget(rho)))
    return sn.fit_smartnoise_mwem(s, sn.SmartnoiseMWEMSettings(iterations=iterations))


def _p_a3(model: sn.ExternalModel) -> float:
    fake = model._synth.synthetic_histograms[0][0]
    return float(fake[3].sum() / fake.sum()) if fake.shape[0] > 3 else 0.0


def test_mwem_neighbouring_tables_get_the_same_public_histogram() -> None:
    _need_snsynth()
    d, d_prime = _neighbours()
    models = [_mwem_release(d), _mwem_release(d_prime)]
    for m in models:
        # the fitted histogram's shape and sampler offsets are the schema's, not the data's
        assert [f.shape for f, _, _ in m._synth.synthetic_histograms] == [tuple(MWEM_SIZES)]
        assert m._synth.mins_maxes == {"0": (0, 3), "1": (0, 1)}
        assert m._synth.max_retries_exp_mechanism == sn.MWEM_SELECTION_RETRIES == 0
        # a = 3 has positive probability whichever neighbour was released
        assert _p_a3(m) > 0
        # and the fitted object holds no private rows or exact histograms
        assert m._synth.data is None and m._synth.histograms == []
        assert all(exact is None for _, exact, _ in m._synth.synthetic_histograms)


def test_mwem_releases_from_d_can_contain_the_category_d_lacks() -> None:
    """The issue's experiment: count the releases whose synthetic table contains a = 3."""
    _need_snsynth()
    d, d_prime = _neighbours()
    runs = 10
    hits = {}
    for name, codes in (("D", d), ("D'", d_prime)):
        hits[name] = sum(
            bool((_mwem_release(codes).sample(500, np.random.default_rng(r))[:, 0] == 3).any())
            for r in range(runs)
        )
    # before the fix hits["D"] was always 0; now a = 3 shows up in most releases of either
    # table (about 9 in 10 at this budget, so all-zero has probability ~1e-10)
    assert hits["D"] >= 1 and hits["D'"] >= 1, hits


def test_mwem_starts_from_the_dp_total_not_the_true_n(monkeypatch: pytest.MonkeyPatch) -> None:
    """smartnoise's MWEM started its synthetic histogram at np.sum(histogram) (the true N)
    and kept that total through every multiplicative-weights update."""
    _need_snsynth()
    true_noisy_total = adapter._noisy_total

    def shifted(session, rho, engine):  # a DP total that cannot equal N by chance
        _total, m = true_noisy_total(session, rho, engine)
        return float(N + 37), m

    monkeypatch.setattr(adapter, "_noisy_total", shifted)
    model = sn.fit_smartnoise_mwem(_session(rho=0.5), sn.SmartnoiseMWEMSettings(iterations=5))
    assert model.total == N + 37
    for fake, _, _ in model._synth.synthetic_histograms:
        assert math.isclose(fake.sum(), N + 37, rel_tol=1e-9)


# -- issue 11: MST on dpsynth's DP total ----------------------------------------------------
#
# smartnoise's MST set total = len(data) and passed it to mbi as known_total in its tree
# selection and final estimation (snsynth/mst/mst.py:113, 122/191, 126): the model was
# scaled to the true N, a use of N outside any mechanism under add/remove-one-row.


def _codes_n(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, n)
    b = (a + rng.integers(0, 2, n)) % 4
    c = (b + rng.integers(0, 2, n)) % 4
    d = rng.integers(0, 2, n)
    return np.stack([a, b, c, d], 1)


def _mst_on(codes: np.ndarray, rho: float = 0.5, total_share: float = 0.02) -> sn.ExternalModel:
    s = MeasurementSession(codes, ["a", "b", "c", "d"], SIZES, 1, Accountant(Budget(rho)))
    return sn.fit_smartnoise_mst(s, sn.SmartnoiseMSTSettings(total_share=total_share))


@pytest.mark.slow
def test_mst_model_total_is_the_dp_total_not_the_true_n() -> None:
    _need_snsynth()
    totals = []
    for n in (700, 1500, 3000):
        # a small share for the total, so its noise (sd about 30 rows) is plainly visible
        model = _mst_on(_codes_n(n, seed=n), rho=0.5, total_share=0.002)
        m = model.measurements[0]
        sd = m.sigma * math.sqrt(m.counts.size)  # the DP total is a noisy marginal's sum
        # mbi's model is scaled to dpsynth's DP total (smartnoise scaled it to n exactly)
        assert model._synth.synthesizer.total == model.total
        assert abs(model.total - n) <= 6 * sd, (n, model.total, sd)
        assert model._synth.num_rows is None
        totals.append((n, model.total))
    # each total equals n with probability about 1%: all three only by a failure
    assert any(total != n for n, total in totals), totals


@pytest.mark.slow
def test_mst_neighbouring_tables_give_mbi_the_dp_total_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """On D and D + one row, every known_total MST hands mbi is dpsynth's DP total (pinned
    here to the same value for both): nothing in the fit scales by len(data)."""
    _need_snsynth()
    from mbi import estimation

    true_noisy_total = adapter._noisy_total

    def pinned(session, rho, engine):  # still measured and charged; its value fixed
        _total, m = true_noisy_total(session, rho, engine)
        return 1234.0, m

    monkeypatch.setattr(adapter, "_noisy_total", pinned)
    seen: list[float] = []
    real = estimation.mirror_descent

    def spy(domain, measurements, *args, **kwargs):
        seen.append(kwargs["known_total"])
        return real(domain, measurements, *args, **kwargs)

    monkeypatch.setattr(estimation, "mirror_descent", spy)
    d = _codes_n(800, seed=3)
    d_plus = np.vstack([d, [[2, 3, 4, 1]]])  # one more row (with the category c = 4 d lacks)
    calls = {}
    for name, codes in (("D", d), ("D+1", d_plus)):
        seen.clear()
        model = _mst_on(codes)
        # the selection's estimate and the final estimate, both on the DP total
        calls[name] = list(seen)
        assert model.total == 1234.0
        assert model._synth.synthesizer.total == 1234.0
    assert calls == {"D": [1234.0, 1234.0], "D+1": [1234.0, 1234.0]}, calls


def test_mst_refuses_a_changed_mst_method_before_any_charge(monkeypatch: pytest.MonkeyPatch) -> None:
    """The DP-total fix re-binds the name `estimation` inside smartnoise's MST; an MST that no
    longer reaches mbi through that name would run unpinned, so it is refused up front."""
    _need_snsynth()
    from snsynth.mst import MSTSynthesizer

    def other_mst(self, data, epsilon, delta):  # reaches mbi some other way
        raise AssertionError("must not run")

    monkeypatch.setattr(MSTSynthesizer, "MST", other_mst)
    s = _session()
    with pytest.raises(UsageError, match=r"MSTSynthesizer\.MST"):
        sn.fit_smartnoise_mst(s, None)
    assert s.charges == ()
