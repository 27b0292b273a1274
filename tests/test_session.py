"""MeasurementSession: budget refusal, charge-before-return, noise scale, privacy unit, and
the test-only noise backend (same charges, never reachable from a release)."""

from __future__ import annotations

import ast
import dataclasses
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from conftest import SeededNoise, SessionFactory, ZeroNoise
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import dpsynth
from dpsynth.config import ReleaseConfig, engine_settings
from dpsynth.engines import ENGINES
from dpsynth.errors import BudgetError, InputDataError, InternalError, UsageError
from dpsynth.privacy.accountant import Accountant, Budget, Charge
from dpsynth.privacy.mechanisms import PreparedMechanism, run_opendp
from dpsynth.privacy.session import MeasurementSession, NoisyMarginal, dependence_l1

DPSYNTH = Path(dpsynth.__file__).parent
BENCHMARKS = Path(__file__).parents[1] / "benchmarks"

rng = np.random.default_rng(12345)  # data only; noise comes from OpenDP, unseeded, unless a
# test hands the session a test noise backend (tests/conftest.py)


def _session(
    codes: np.ndarray, sizes: list[int], rho: float = 1.0, k: int = 1
) -> tuple[MeasurementSession, Accountant]:
    acc = Accountant(Budget(rho))
    cols = [f"c{j}" for j in range(codes.shape[1])]
    return MeasurementSession(codes, cols, sizes, k, acc), acc


def _exact(codes: np.ndarray, cols: list[int], sizes: list[int]) -> np.ndarray:
    shape = [sizes[j] for j in cols]
    idx = np.ravel_multi_index(tuple(codes[:, j] for j in cols), shape)
    return np.bincount(idx, minlength=math.prod(shape)).reshape(shape)


CODES = np.stack([rng.integers(0, 3, 500), rng.integers(0, 4, 500)], axis=1)
SIZES = [3, 4]
GROUPS = {"c1": np.array([0, 0, 1, 1])}


def test_measure_returns_noisy_marginal_and_charges() -> None:
    s, acc = _session(CODES, SIZES, rho=1.0)
    m = s.measure(("c1", "c0"), 0.25, "probe")
    assert isinstance(m, NoisyMarginal)
    assert m.columns == ("c1", "c0") and m.shape == (4, 3) and m.counts.shape == (4, 3)
    assert m.sigma == pytest.approx(1 / math.sqrt(0.5))
    assert [c.step for c in s.charges] == ["probe"]
    assert acc.spent.rho == pytest.approx(0.25)
    assert s.remaining.rho == pytest.approx(0.75)
    assert not m.counts.flags.writeable


def test_refuses_to_overspend() -> None:
    s, acc = _session(CODES, SIZES, rho=1.0)
    s.measure(("c0",), 0.6, "first")
    with pytest.raises(BudgetError) as e:
        s.measure(("c1",), 0.6, "second")
    assert "second" in e.value.message and "remains" in e.value.message
    with pytest.raises(BudgetError):
        s.select_marginal([("c0",)], [np.zeros(3)], [1.0], [0.0], 0.5, "third")
    assert [c.step for c in acc.charges] == ["first"]
    s.measure(("c1",), s.remaining.rho, "rest")  # exactly the remainder is allowed
    assert acc.spent.rho == pytest.approx(1.0, rel=1e-12)


def test_charges_before_the_result_exists() -> None:
    events: list[str] = []

    class SpyAccountant(Accountant):
        def spend(self, charge: Charge) -> None:
            events.append("spend")
            super().spend(charge)

    def spy_noise(mech: PreparedMechanism, data: object, /) -> object:
        events.append("noise")
        return run_opendp(mech, data)

    acc = SpyAccountant(Budget(1.0))
    s = MeasurementSession(CODES, ["a", "b"], SIZES, 1, acc, _noise=spy_noise)
    s.measure(("a",), 0.1, "m")
    s.select_marginal([("a",), ("b",)], [np.zeros(3), np.zeros(4)], [1, 1], [0, 0], 0.1, "s")
    assert events == ["spend", "noise", "spend", "noise"]
    # A refused request never runs the mechanism.
    with pytest.raises(BudgetError):
        s.measure(("a",), 5.0, "too much")
    assert events[-1] == "spend"


def test_test_noise_changes_the_draw_only(zero_noise: ZeroNoise, seeded_noise: SeededNoise) -> None:
    """A session with a test noise backend builds and charges exactly the mechanisms
    of an OpenDP session; only the numbers drawn differ."""

    def steps(s: MeasurementSession) -> tuple[list[NoisyMarginal], int]:
        ms = [s.measure(("c0",), 0.1, "one"), s.measure(("c1", "c0"), 0.2, "two", groups=GROUPS)]
        pick = s.select_marginal([("c0",), ("c1",)], [np.zeros(3), np.zeros(4)], [1, 1], [0, 0],
                                 0.05, "pick")
        return ms, pick

    real, _ = _session(CODES, SIZES, k=2)
    real_ms, _ = steps(real)
    for noise in (zero_noise, seeded_noise):
        s = MeasurementSession(CODES, ["c0", "c1"], SIZES, 2, Accountant(Budget(1.0)), _noise=noise)
        ms, _ = steps(s)
        assert s.charges == real.charges and s.remaining == real.remaining
        assert [(m.columns, m.shape, m.sigma) for m in ms] == [
            (m.columns, m.shape, m.sigma) for m in real_ms]
        assert noise.calls == [(c.mechanism, c.noise_scale) for c in real.charges]
        assert all(not m.counts.flags.writeable for m in ms)


def test_zero_noise_returns_the_exact_answers(zero_noise: ZeroNoise, make_session: SessionFactory) -> None:
    s = make_session(CODES, SIZES, zero_noise)
    m = s.measure(("c1", "c0"), 0.1, "m")
    np.testing.assert_array_equal(m.counts, _exact(CODES, [1, 0], SIZES))
    grouped = s.measure(("c1", "c0"), 0.1, "g", groups=GROUPS)
    np.testing.assert_array_equal(grouped.counts, _exact(CODES, [1, 0], SIZES).reshape(2, 2, 3).sum(1))
    assert s.select([("c0",), ("c1",), ("c0", "c1")], [3.0, -1.0, 7.0], 1.0, 0.1, "p") == 2


def test_seeded_noise_is_reproducible(make_session: SessionFactory) -> None:
    def draw(seed: int) -> np.ndarray:
        s = make_session(CODES, SIZES, SeededNoise(seed))
        return s.measure(("c0", "c1"), 0.01, "m").counts

    np.testing.assert_array_equal(draw(7), draw(7))
    assert not np.array_equal(draw(7), draw(8))
    noise = draw(7) - _exact(CODES, [0, 1], SIZES)
    assert np.all(noise == np.round(noise)) and np.any(noise != 0)


def test_a_bad_noise_backend_is_caught(make_session: SessionFactory) -> None:
    with pytest.raises(UsageError, match="_noise must be a noise backend"):
        MeasurementSession(CODES, ["a", "b"], SIZES, 1, Accountant(Budget(1.0)),
                           _noise="zero")  # type: ignore[arg-type]
    s = make_session(CODES, SIZES, lambda mech, data: 5)
    with pytest.raises(InternalError, match="picked candidate 5 of 2"):
        s.select([("c0",), ("c1",)], [0.0, 1.0], 1.0, 0.1, "p")


def test_no_release_path_can_reach_the_test_noise() -> None:
    """Only tests pass ``_noise``: no code in dpsynth/ or benchmarks/ passes that
    keyword to anything, no call of MeasurementSession there forwards ``*args`` or
    ``**kwargs``, and neither a release setting, a config-file key nor an engine option
    reaches it."""
    calls = 0
    for path in [*DPSYNTH.rglob("*.py"), *BENCHMARKS.rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path}:{getattr(node, 'lineno', '?')}"
            assert not (isinstance(node, ast.keyword) and node.arg == "_noise"), where
            if isinstance(node, ast.Call) and _called_name(node.func) == "MeasurementSession":
                calls += 1
                assert None not in [k.arg for k in node.keywords], where
                assert not any(isinstance(a, ast.Starred) for a in node.args), where
    assert calls >= 1  # the pipeline's own session is among them
    assert "MeasurementSession(" in (DPSYNTH / "pipeline.py").read_text(encoding="utf-8")
    assert not [f.name for f in dataclasses.fields(ReleaseConfig) if "noise" in f.name]
    with pytest.raises(UsageError, match="unknown setting '_noise'"):
        ReleaseConfig.from_values({}, {"_noise": "zero"})
    for engine in ENGINES:
        with pytest.raises(UsageError, match="'_noise' is not a setting"):
            engine_settings(engine, {"_noise": "zero"})


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else None


def test_charge_is_opendp_map_and_records_scale() -> None:
    s, _ = _session(CODES, SIZES, rho=1.0, k=2)
    m = s.measure(("c0", "c1"), 0.3, "x")
    (c,) = s.charges
    assert c.mechanism == "discrete_gaussian" and c.columns == ("c0", "c1")
    assert c.rho <= 0.3 and c.rho == pytest.approx(0.3, rel=1e-9)
    assert c.noise_scale == m.sigma and c.sensitivity == 2.0


@pytest.mark.parametrize("k", [1, 3])
def test_noise_has_declared_scale(k: int) -> None:
    # 20,000 cells in one measurement; the sample variance of the noise must sit
    # in a two-sided 1e-4 chi-square interval around sigma^2 (fixed-seed-free).
    size = 20_000
    codes = rng.integers(0, size, (30_000, 1))
    s, _ = _session(codes, [size], rho=1.0, k=k)
    m = s.measure(("c0",), 0.02, "noise")
    expected_sigma = k / math.sqrt(2 * 0.02)
    assert m.sigma == pytest.approx(expected_sigma, rel=1e-9)
    noise = m.counts - _exact(codes, [0], [size])
    assert np.all(noise == np.round(noise))  # integer noise on integer counts
    n = noise.size
    var = float(np.var(noise, ddof=1))
    lo, hi = stats.chi2.ppf([5e-5, 1 - 5e-5], n - 1) / (n - 1)
    assert lo * expected_sigma**2 <= var <= hi * expected_sigma**2
    assert abs(float(noise.mean())) <= 4.5 * expected_sigma / math.sqrt(n)


def test_sensitivity_scales_with_contribution_bound() -> None:
    for k in (1, 2, 5):
        s, _ = _session(CODES, SIZES, rho=1.0, k=k)
        assert s.measure(("c0",), 0.5, "m").sigma == pytest.approx(k)
        s.select_marginal([("c0",), ("c1",)], [np.zeros(3), np.zeros(4)], [1, 2], [0, 0], 0.1, "s")
        assert s.charges[-1].sensitivity == 2 * k


def test_select_marginal_scores_the_worst_fit_highest(zero_noise: ZeroNoise,
                                                     make_session: SessionFactory) -> None:
    s = make_session(CODES, SIZES, zero_noise)
    good0 = _exact(CODES, [0], SIZES).astype(float)
    good1 = _exact(CODES, [1], SIZES).astype(float)
    bad = np.full((3, 4), 500 / 12)
    cands = [("c0",), ("c1",), ("c0", "c1")]
    assert s.select_marginal(cands, [good0, good1, bad], [1, 1, 1], [0, 0, 0], 0.1, "s") == 2
    # a penalty above the error, or a small weight, moves the pick
    err = float(np.abs(bad - _exact(CODES, [0, 1], SIZES)).sum())
    assert s.select_marginal(cands, [good0, good1, bad], [1, 1, 1], [-1, 0, err + 2], 0.1, "s") == 0
    assert s.select_marginal(cands, [good0 + 1, good1, bad], [1, 1, 0.01], [0, 0, 0], 0.1, "s") == 0
    with pytest.raises(UsageError):  # wrong shape for a candidate
        s.select_marginal(cands, [good0, good1, np.zeros(3)], [1, 1, 1], [0, 0, 0], 1.0, "s")
    assert [c.sensitivity for c in s.charges] == [1.0, 1.0, 1.0]


def test_select_marginal_finds_the_worst_fit_with_opendp_noise() -> None:
    s, _ = _session(CODES, SIZES, rho=1e6)
    good0 = _exact(CODES, [0], SIZES).astype(float)
    bad = np.full((3, 4), 500 / 12)
    assert s.select_marginal([("c0",), ("c0", "c1")], [good0, bad], [1, 1], [0, 0], 1e3, "s") == 1


def test_select_dependence_picks_the_dependent_pair_and_charges_4k(
        zero_noise: ZeroNoise, make_session: SessionFactory) -> None:
    n = 2000
    a = rng.integers(0, 3, n)
    codes = np.stack([a, (a + (rng.random(n) < 0.2)) % 3, rng.integers(0, 5, n)], axis=1)
    for k in (1, 3):
        s = make_session(codes, [3, 3, 5], zero_noise, k=k)
        assert s.select_dependence([("c0", "c2"), ("c0", "c1")], [0.0, 0.0], 0.1, "dep") == 1
        assert s.charges[-1].sensitivity == 4 * k and s.charges[-1].columns == ("c0", "c1", "c2")
        # the public penalty is subtracted from the score: a large one moves the pick
        exact = dependence_l1(_exact(codes, [0, 1], [3, 3, 5]))
        assert s.select_dependence([("c0", "c2"), ("c0", "c1")], [0.0, exact], 0.1, "dep") == 0
    with pytest.raises(UsageError):  # pairs only, refused before anything is charged
        s.select_dependence([("c0", "c1", "c2")], [0.0], 0.1, "dep")
    with pytest.raises(UsageError):
        s.select_dependence([("c0", "c1")], [float("nan")], 0.1, "dep")
    assert len(s.charges) == 2


def test_dependence_l1_is_zero_for_a_product_and_known_otherwise() -> None:
    assert dependence_l1(np.outer([1, 2, 3], [4, 4])) == pytest.approx(0.0)
    assert dependence_l1(np.array([[5, 0], [0, 5]])) == pytest.approx(10.0)  # |5-2.5| * 4
    assert dependence_l1(np.zeros((2, 3))) == 0.0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), min_size=4, max_size=4), min_size=3, max_size=3),
       st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), min_size=1, max_size=4))
def test_dependence_l1_moves_less_than_4_per_row(table: list[list[int]],
                                                rows: list[tuple[int, int]]) -> None:
    """The sensitivity select_dependence declares: a patient adding (or removing) k rows
    moves the score by less than 4 k, whatever the table (the docstring's bound)."""
    before = np.array(table, dtype=np.int64)
    after = before.copy()
    for a, b in rows:
        after[a, b] += 1
    assert abs(dependence_l1(after) - dependence_l1(before)) < 4 * len(rows)


def test_select_with_public_scores(zero_noise: ZeroNoise, make_session: SessionFactory) -> None:
    s = make_session(CODES, SIZES, zero_noise)
    assert s.select([("c0",), ("c1",)], [0.0, 1e-9], 1.0, 0.1, "pick") == 1
    assert s.charges[-1].sensitivity == 1.0 and s.charges[-1].columns == ("c0", "c1")
    real, _ = _session(CODES, SIZES, rho=1e6)
    assert real.select([("c0",), ("c1",)], [0.0, 1e4], 1.0, 1e3, "pick") == 1


def test_does_not_expose_private_data() -> None:
    s, _ = _session(CODES, SIZES)
    public = [a for a in dir(s) if not a.startswith("_")]
    assert set(public) <= {
        "columns",
        "domain",
        "contribution_bound",
        "total",
        "remaining",
        "spent",
        "charges",
        "shape",
        "measure",
        "select",
        "select_marginal",
        # noisy max on a pair's distance from the product of its own margins (4 k)
        "select_dependence",
        # noisy patients by row count (sensitivity 1), charged before it answers
        "measure_unit_rows",
        # the one exit for private codes: charges the whole remaining budget first,
        # for the optional smartnoise adapters only (k = 1); see its docstring
        "spend_all_for_external",
    }
    for a in public:
        v = getattr(s, a)
        assert not isinstance(v, np.ndarray)
        assert v != len(CODES)
    assert str(len(CODES)) not in repr(s)
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(AttributeError):
        s.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        s.domain["c0"] = 10  # type: ignore[index]


def test_validates_inputs_without_leaking_values() -> None:
    bad = CODES.copy()
    bad[7, 1] = 987654
    with pytest.raises(InputDataError) as e:
        _session(bad, SIZES)
    assert "987654" not in e.value.message and "c1" in e.value.message
    with pytest.raises(InputDataError):
        _session(CODES.astype(float), SIZES)
    with pytest.raises(UsageError):
        MeasurementSession(CODES, ["a", "b"], SIZES, 0, Accountant(Budget(1.0)))
    s, _ = _session(CODES, SIZES)
    with pytest.raises(UsageError):
        s.measure(("nope",), 0.1, "x")
    with pytest.raises(UsageError):
        s.measure(("c0", "c0"), 0.1, "x")
    with pytest.raises(UsageError):
        s.measure(("c0",), 0.0, "x")
    assert s.charges == ()


def test_timed_counter_counts_like_its_inner_counter() -> None:
    """The release's ``count`` timing wraps the counter without changing what the
    session sees: same exact counts, the same optional methods, seconds adding up."""
    from dpsynth.marginals import NumpyCounter, TimedCounter

    inner = NumpyCounter(CODES.astype(np.uint8), ("c0", "c1"), (3, 4))
    timed = TimedCounter(inner)
    assert (timed.columns, timed.sizes) == (inner.columns, inner.sizes)
    np.testing.assert_array_equal(timed.count(("c1", "c0")), _exact(CODES, [1, 0], SIZES))
    many = timed.count_many([("c0",), ("c0", "c1")])
    np.testing.assert_array_equal(many[1], _exact(CODES, [0, 1], SIZES))
    assert timed.seconds > 0
    assert not hasattr(TimedCounter(object()), "count_many")  # type: ignore[arg-type]
    acc = Accountant(Budget(1.0))
    session = MeasurementSession(timed, ["c0", "c1"], SIZES, 1, acc)
    m = session.measure(("c0", "c1"), 0.5, "probe")
    assert m.counts.shape == (3, 4) and acc.spent.rho == pytest.approx(0.5)


@pytest.mark.parametrize("cols, message", [
    ((), "a marginal needs at least one column"),
    (("c0", "c0"), r"columns of a marginal \(\('c0', 'c0'\)\) must be distinct"),
    (("c0", "zz"), r"column \('zz'\) is not in the domain"),
])
def test_session_and_counter_refuse_a_bad_marginal_alike(cols: tuple[str, ...], message: str) -> None:
    """One check of a marginal's columns (dpsynth.marginals.columns), one message, for
    the session and every counter (tests/test_spark.py checks the Spark counter)."""
    from dpsynth.marginals import NumpyCounter

    s, acc = _session(CODES, SIZES)
    with pytest.raises(UsageError, match=f"^{message}$"):
        s.measure(cols, 0.5, "probe")
    assert acc.charges == []
    with pytest.raises(UsageError, match=f"^{message}$"):
        NumpyCounter(CODES, ("c0", "c1"), SIZES).count(cols)
