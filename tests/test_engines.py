"""Engine contract, run against every engine in the registry on shared inputs.

One oracle for all engines (as in Private-PGM's tests): at a large budget the
fitted marginals agree with the noisy measurements within a tolerance derived
from their sigma; the accountant's total equals the requested budget and never
exceeds it; the model's total is close to the true N (which the engine never
saw); sampling returns codes in the domain.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from dpsynth.engines import ENGINES, AIMSettings, FittedModel, MSTSettings, get_engine
from dpsynth.errors import UsageError
from dpsynth.privacy.accountant import Accountant, Budget
from dpsynth.privacy.session import MeasurementSession

# The native engines share the model contract; the optional smartnoise adapters have
# no model marginals and are tested in tests/test_smartnoise.py.
NATIVE = sorted(n for n in ENGINES if not n.startswith("smartnoise-"))

N = 3000


def _tree(rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    a = rng.integers(0, 4, N)
    b = (a + rng.integers(0, 2, N)) % 4
    c = (b * 2 + rng.integers(0, 2, N)) % 6
    d = rng.integers(0, 3, N)
    e = (a + d) % 3
    return np.stack([a, b, c, d, e], 1), [4, 4, 6, 3, 3]


def _cycle(rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    a = rng.integers(0, 3, N)
    b = (a + rng.integers(0, 2, N)) % 3
    c = (b + rng.integers(0, 2, N)) % 3
    d = (a + c) % 3
    return np.stack([a, b, c, d], 1), [3, 3, 3, 3]


def _constant_and_sparse(rng: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    # A constant column, a size-1 domain, and a wide column with empty categories.
    a = np.zeros(N, dtype=np.int64)
    b = np.zeros(N, dtype=np.int64)
    c = rng.integers(0, 5, N) * 3
    d = (c // 3 + rng.integers(0, 2, N)) % 5
    return np.stack([a, b, c, d], 1), [2, 1, 15, 5]


INPUTS: dict[str, Callable[[np.random.Generator], tuple[np.ndarray, list[int]]]] = {
    "tree": _tree,
    "cycle": _cycle,
    "constant-and-sparse": _constant_and_sparse,
}

# Fast settings for the small inputs; an engine not listed runs with defaults.
FAST = {
    "aim": AIMSettings(max_rounds=12, round_iters=50, final_iters=400),
    "mst": MSTSettings(max_iters=400),
}


def _fit(name: str, data: str, rho: float, k: int = 1) -> tuple[FittedModel, Accountant, np.ndarray]:
    codes, sizes = INPUTS[data](np.random.default_rng(99))
    acc = Accountant(Budget(rho))
    session = MeasurementSession(codes, [f"x{j}" for j in range(len(sizes))], sizes, k, acc)
    spec = get_engine(name)
    return spec.fit(session, FAST.get(name)), acc, codes


@pytest.mark.parametrize("data", list(INPUTS))
@pytest.mark.parametrize("name", NATIVE)
def test_engine_contract(name: str, data: str) -> None:
    rho = 200.0
    model, acc, codes = _fit(name, data, rho)
    # Budget: exactly what was asked, never more.
    assert acc.spent.rho == pytest.approx(rho, rel=1e-9)
    assert acc.spent.rho <= rho * (1 + 1e-9)
    assert all(c.rho > 0 for c in acc.charges)
    # Fitted marginals agree with every measurement within a few sigma per cell
    # (the data are consistent, so the fit can reach the noise floor).
    assert model.measurements
    for m in model.measurements:
        fit = model.marginal_like(m)
        tol = 5 * m.sigma + 0.005 * N
        assert np.max(np.abs(fit - m.counts)) <= tol, (m.columns, m.sigma)
    # The total comes from noisy sums; its sd is 1/sqrt(sum 1/(sigma^2 cells)).
    sd = 1 / math.sqrt(sum(1 / (m.sigma**2 * m.counts.size) for m in model.measurements))
    assert abs(model.total - N) <= 6 * sd + 1e-6 * N
    # Sampling returns codes in the public domain.
    synth = model.sample(500, np.random.default_rng(1))
    assert synth.shape == (500, codes.shape[1])
    assert np.all(synth >= 0) and np.all(synth < np.array(model.sizes))
    assert model.columns == tuple(f"x{j}" for j in range(codes.shape[1]))


@pytest.mark.parametrize("name", NATIVE)
def test_engine_spends_exactly_a_small_budget(name: str) -> None:
    rho = 0.05
    _, acc, _ = _fit(name, "tree", rho, k=2)
    assert acc.spent.rho == pytest.approx(rho, rel=1e-9)
    assert acc.spent.rho <= rho * (1 + 1e-9)
    assert all(c.sensitivity is not None and c.sensitivity >= 2 for c in acc.charges)


@pytest.mark.parametrize("name", NATIVE)
def test_engine_recovers_strong_dependence(name: str) -> None:
    # x1 = x0 or x0+1 (mod 4): the model must keep the off-pattern cells near empty.
    model, _, _ = _fit(name, "tree", 50.0)
    pair = model.marginal(("x0", "x1"))
    mask = np.zeros((4, 4), dtype=bool)
    for a in range(4):
        mask[a, a] = mask[a, (a + 1) % 4] = True
    assert pair[~mask].sum() <= 0.02 * N


def test_registry() -> None:
    assert get_engine().name == "aim"
    assert set(ENGINES) >= {"aim", "mst"}
    with pytest.raises(UsageError):
        get_engine("nope")
    with pytest.raises(UsageError):
        get_engine("mst").fit(None, AIMSettings())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "factory",
    [
        lambda: AIMSettings(degree=4),
        lambda: AIMSettings(max_model_size=0),
        lambda: AIMSettings(max_seconds=-1),
        lambda: AIMSettings(measure_share=1.0),
        lambda: MSTSettings(oneway_share=0.6, select_share=0.5),
        lambda: MSTSettings(max_iters=0),
    ],
)
def test_settings_are_validated(factory: Callable[[], object]) -> None:
    with pytest.raises(UsageError):
        factory()


def test_settings_are_frozen_and_keyword_only() -> None:
    s = AIMSettings()
    with pytest.raises(AttributeError):
        s.degree = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        AIMSettings(2)  # type: ignore[misc]


def test_aim_size_oracle_matches_full_triangulation() -> None:
    from dpsynth.engines.aim import _SizeOracle
    from dpsynth.engines.junction_tree import model_size

    rng = np.random.default_rng(4)
    for _ in range(30):
        d = int(rng.integers(3, 25))
        sizes = [int(s) for s in rng.integers(2, 12, d)]
        cliques = [
            tuple(sorted(int(a) for a in rng.choice(d, 2, replace=False)))
            for _ in range(int(rng.integers(0, d)))
        ]
        oracle = _SizeOracle(d, cliques, sizes)
        assert oracle.total == model_size(d, cliques, sizes)
        for _ in range(10):
            cand = tuple(sorted(int(a) for a in rng.choice(d, int(rng.integers(1, 3)), replace=False)))
            assert oracle.size_with(cand) == model_size(d, [*cliques, cand], sizes)


def test_disjoint_sets_match_connected_components() -> None:
    """The engines' one union-find (AIM components, MST tree, junction tree joins)."""
    from dpsynth.engines.unionfind import DisjointSets

    rng = np.random.default_rng(5)
    for _ in range(50):
        n = int(rng.integers(1, 30))
        sets = DisjointSets(n)
        comp = list(range(n))  # naive: relabel a whole component on each join
        for _ in range(int(rng.integers(0, 2 * n))):
            a, b = (int(x) for x in rng.integers(0, n, 2))
            assert sets.union(a, b) == (comp[a] != comp[b])
            old, new = comp[a], comp[b]
            comp = [new if c == old else c for c in comp]
            assert sets.find(a) == sets.find(b)
        for a in range(n):
            for b in range(n):
                assert (sets.find(a) == sets.find(b)) == (comp[a] == comp[b])


class _FastClock:
    """A clock that jumps 1,000 s at every reading (as on a huge table)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1000.0
        return self.now


def test_aim_rounds_do_not_depend_on_wall_clock_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11, defect 2: the run time grows with the private N, so it must not decide
    the last round. 0.1.0 stopped after one round once ``max_seconds`` (300 s) passed."""
    import dpsynth.engines.aim as aim

    monkeypatch.setattr(aim.time, "perf_counter", _FastClock())
    model, acc, _ = _fit("aim", "tree", 1.0)
    rounds = model.info["rounds"]
    planned = FAST["aim"].max_rounds
    assert planned is not None and rounds > 1
    # each round before the last spends the planned per-round budget, never "the rest"
    measured = [c.rho for c in acc.charges if c.step == "aim/measure"]
    assert measured[0] == pytest.approx(0.9 * 1.0 / planned, rel=1e-9)
    assert acc.spent.rho == pytest.approx(1.0, rel=1e-9)


def test_aim_time_guard_fails_instead_of_stopping_early(monkeypatch: pytest.MonkeyPatch) -> None:
    import dpsynth.engines.aim as aim
    from dpsynth.errors import ResourceLimitError

    monkeypatch.setattr(aim.time, "perf_counter", _FastClock())
    codes, sizes = INPUTS["tree"](np.random.default_rng(99))
    session = MeasurementSession(codes, [f"x{j}" for j in range(len(sizes))], sizes, 1,
                                 Accountant(Budget(1.0)))
    with pytest.raises(ResourceLimitError, match="max_seconds"):
        aim.fit_aim(session, AIMSettings(max_rounds=12, max_seconds=10.0))
    assert ResourceLimitError.exit_code == 7


def test_reduction_plan_sums_every_target_exactly() -> None:
    """Marginals summed through shared partial sums equal direct sums."""
    from dpsynth.engines.markov_model import reduction_plan, run_plan

    rng = np.random.default_rng(8)
    for _ in range(40):
        n = int(rng.integers(1, 6))
        attrs = tuple(sorted(int(a) for a in rng.choice(12, n, replace=False)))
        sizes = [int(s) for s in rng.integers(1, 5, 12)]
        table = rng.random([sizes[a] for a in attrs])
        targets = [tuple(sorted(int(a) for a in rng.choice(attrs, int(rng.integers(1, n + 1)),
                                                           replace=False)))
                   for _ in range(int(rng.integers(1, 8)))]
        steps, where = reduction_plan(sizes, attrs, targets, 1)
        slots: dict[int, np.ndarray] = {}
        run_plan(table, steps, slots)
        assert set(where) == set(targets)
        for t in targets:
            direct = table.sum(axis=tuple(k for k, a in enumerate(attrs) if a not in t))
            np.testing.assert_allclose(slots[where[t]], direct, rtol=1e-12)
        # never more full passes over the table than targets
        assert sum(1 for src, _, _ in steps if src == 0) <= len(set(targets))


def _naive_min_fill(n: int, cliques: list[tuple[int, ...]], sizes: list[int]) -> list[tuple[int, ...]]:
    """Greedy min-fill, every remaining vertex rescored at every step (the reference)."""
    from dpsynth.engines.junction_tree import _maximal_cliques

    adj = {v: set() for v in range(n)}
    for c in cliques:
        for a in c:
            adj[a] |= set(c) - {a}
    logsize = [math.log(max(s, 1)) for s in sizes]

    def key(v: int) -> tuple[int, float, int]:
        nb = sorted(adj[v])
        if not nb:
            return (-1, 0.0, v)
        missing = sum(1 for i, a in enumerate(nb) for b in nb[i + 1:] if b not in adj[a])
        weight = 0.0
        for u in nb:
            weight += logsize[u]
        return (missing, logsize[v] + weight, v)

    out = []
    while adj:
        v = min(key(u) for u in adj)[2]
        nb = adj.pop(v)
        out.append(tuple(sorted(nb | {v})))
        for u in nb:
            adj[u] |= nb - {u}
            adj[u].discard(v)
    return _maximal_cliques(out)


def test_triangulation_equals_naive_min_fill() -> None:
    """Rescoring only the vertices an elimination can affect changes nothing."""
    from dpsynth.engines.junction_tree import triangulate

    rng = np.random.default_rng(12)
    for _ in range(300):
        n = int(rng.integers(1, 26))
        sizes = [int(s) for s in rng.integers(1, 9, n)]
        cliques = [tuple(sorted(int(a) for a in rng.choice(n, min(n, int(rng.integers(1, 4))),
                                                           replace=False)))
                   for _ in range(int(rng.integers(0, 2 * n)))]
        assert triangulate(n, cliques, sizes) == _naive_min_fill(n, cliques, sizes)
