"""Sampler: rows drawn along the junction tree follow the model's marginals.

Models with tree, chain and cyclic clique sets are fitted to exact marginals of
random joint distributions; 200k sampled rows (fixed sampler seed) must match
every model clique marginal and some marginals outside the cliques within
multinomial sampling error.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from dpsynth.engines.estimation import MarkovModel, Observation, _Problem, estimate
from dpsynth.engines.junction_tree import build_junction_tree, triangulate
from dpsynth.engines.sampler import draw_rows, sample

N_SAMPLE = 200_000

STRUCTURES = {
    "tree": ([3, 4, 2, 5, 3], [(0, 1), (0, 2), (0, 3), (3, 4)]),
    "chain": ([2, 3, 4, 3, 2, 5], [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]),
    "cycle": ([3, 3, 4, 2, 3], [(0, 1), (1, 2), (2, 3), (3, 4), (0, 4)]),
    "triples": ([2, 3, 3, 4, 2], [(0, 1, 2), (1, 2, 3), (0, 3, 4), (2, 4)]),
    "disconnected": ([4, 3, 5, 2], [(0, 1), (2,), (3,)]),
}


def _model(sizes: list[int], cliques: list[tuple[int, ...]]) -> MarkovModel:
    rng = np.random.default_rng(7)
    joint = rng.dirichlet(np.full(math.prod(sizes), 0.5)).reshape(sizes)
    obs = []
    for c in cliques:
        axes = tuple(a for a in range(len(sizes)) if a not in c)
        obs.append(Observation(c, joint.sum(axis=axes) * 1e4, 1.0))
    return estimate(sizes, obs, total=1e4, max_iters=300).model


def _tvd_and_bound(codes: np.ndarray, model: MarkovModel, c: tuple[int, ...]) -> tuple[float, float]:
    shape = [model.sizes[a] for a in c]
    idx = np.ravel_multi_index(tuple(codes[:, a] for a in c), shape)
    emp = np.bincount(idx, minlength=math.prod(shape)) / len(codes)
    p = model.prob_marginal(c).ravel()
    tvd = 0.5 * float(np.abs(emp - p).sum())
    # E|emp_i - p_i| ~ sqrt(2/pi) * sd_i; allow 2x the expected TVD plus slack.
    expected = 0.5 * float(np.sum(np.sqrt(2 / math.pi * p * (1 - p) / len(codes))))
    return tvd, 2.0 * expected + 1e-3


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_sampled_marginals_match_model(name: str) -> None:
    sizes, cliques = STRUCTURES[name]
    model = _model(sizes, cliques)
    codes = sample(model, N_SAMPLE, np.random.default_rng(2024))
    assert codes.shape == (N_SAMPLE, len(sizes)) and codes.dtype == np.uint8  # compact codes
    for a, s in enumerate(sizes):
        assert codes[:, a].min() >= 0 and codes[:, a].max() < s
    queries = set(model.cliques) | set(cliques) | set(itertools.combinations(range(len(sizes)), 2))
    for c in sorted(queries):
        tvd, bound = _tvd_and_bound(codes, model, c)
        assert tvd <= bound, (c, tvd, bound)


def test_marginal_outside_cliques_is_exact_inference() -> None:
    # On a chain a-b-c, p(a, c) = sum_b p(a, b) p(c | b).
    sizes, cliques = STRUCTURES["chain"]
    model = _model(sizes, cliques)
    pab = model.prob_marginal((0, 1))
    pbc = model.prob_marginal((1, 2))
    pb = pbc.sum(axis=1)
    expected = np.einsum("ab,bc->ac", pab, pbc / pb[:, None])
    np.testing.assert_allclose(model.prob_marginal((0, 2)), expected, atol=1e-12)
    np.testing.assert_allclose(model.prob_marginal((2, 0)), expected.T, atol=1e-12)


def test_zero_probability_cells_are_never_drawn() -> None:
    sizes = [3, 3]
    joint = np.array([[0.5, 0.0, 0.0], [0.0, 0.25, 0.0], [0.0, 0.0, 0.25]])
    model = estimate(sizes, [Observation((0, 1), joint * 1e6, 1e-3)], total=1e6, max_iters=50).model
    # Mirror descent keeps exp-family tables strictly positive; force exact zeros.
    model.probs[0] = joint
    codes = sample(model, 50_000, np.random.default_rng(0))
    assert np.all(codes[:, 0] == codes[:, 1])


def test_sampling_is_reproducible_with_a_seed() -> None:
    model = _model(*STRUCTURES["cycle"])
    a = sample(model, 1000, np.random.default_rng(5))
    b = sample(model, 1000, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert sample(model, 0, np.random.default_rng(5)).shape == (0, 5)


# -- estimation internals the engines rely on ---------------------------------------


def _problem(sizes: list[int], cliques: list[tuple[int, ...]]) -> _Problem:
    rng = np.random.default_rng(3)
    obs = [Observation(c, rng.random([sizes[a] for a in c]) * 100, 1.0) for c in cliques]
    return _Problem(sizes, obs, 1000.0)


@pytest.mark.parametrize("scale", [0.1, 30.0, 2000.0])
def test_linear_space_calibration_matches_log_space(scale: float) -> None:
    # 2000: potentials far beyond exp's range force the log-space fallback.
    sizes, cliques = STRUCTURES["triples"]
    prob = _problem(sizes, [*cliques, (0,), (3,), (1, 2)])
    theta = {c: np.random.default_rng(5).normal(size=prob.y[c].shape) * scale for c in prob.cliques}
    fast, slow = prob.calibrate(theta), prob._calibrate_log(theta)
    for f, s in zip(fast, slow, strict=True):
        assert np.all(np.isfinite(f)) and f.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(f, s, atol=1e-12)


def test_nested_measurements_sum_through_their_container() -> None:
    # Potentials of (0,), (1, 2) are added via (0, 1, 2); marginals summed from it.
    sizes, cliques = STRUCTURES["triples"]
    prob = _problem(sizes, [*cliques, (0,), (1,), (1, 2), (4,)])
    theta = {c: np.random.default_rng(6).normal(size=prob.y[c].shape) for c in prob.cliques}
    direct = [np.zeros(s) for s in prob.shapes]
    for c, t in theta.items():
        direct[prob.host[c]] += t.reshape(prob.bshape[c])
    joint = np.zeros(sizes)
    for a, b in zip(prob.potentials(theta), direct, strict=True):
        assert a.shape == b.shape
    probs = prob.calibrate(theta)
    mu = prob.marginals(probs)
    for c in prob.cliques:
        h = prob.host[c]
        ax = prob.raxes[c]
        np.testing.assert_allclose(mu[c], (probs[h].sum(axis=ax) if ax else probs[h]) * prob.total)
    del joint
    # Same distribution as adding every potential to its own host.
    prob_direct = _problem(sizes, [*cliques, (0,), (1,), (1, 2), (4,)])
    prob_direct.potentials = lambda _t: [d.copy() for d in direct]  # type: ignore[method-assign]
    for a, b in zip(probs, prob_direct.calibrate(theta), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_batched_pair_marginals_match_elimination(name: str) -> None:
    sizes, cliques = STRUCTURES[name]
    model = _model(sizes, cliques)
    queries = [*itertools.permutations(range(len(sizes)), 2), (0,), tuple(range(min(3, len(sizes))))]
    for q, m in zip(queries, model.marginals(queries), strict=True):
        np.testing.assert_allclose(m, model.marginal(q), rtol=1e-9, atol=1e-9)


def test_triangulation_covers_cliques_and_is_chordal() -> None:
    rng = np.random.default_rng(11)
    for _ in range(40):
        n = int(rng.integers(2, 30))
        sizes = [int(s) for s in rng.integers(2, 9, n)]
        cl = [
            tuple(int(a) for a in rng.choice(n, min(n, int(rng.integers(1, 4))), replace=False))
            for _ in range(n)
        ]
        out = triangulate(n, cl, sizes)
        assert all(any(set(c) <= set(o) for o in out) for c in cl)
        assert {a for o in out for a in o} == set(range(n))
        jt = build_junction_tree(n, cl, sizes)
        # Running intersection: the cliques holding an attribute form a subtree.
        for a in range(n):
            holders = {i for i, c in enumerate(jt.cliques) if a in c}
            tops = [i for i in holders if jt.parent[i] not in holders]
            assert len(tops) == 1


def test_draw_rows_takes_compact_codes() -> None:
    """Synthetic codes are uint8: ``group * n_out`` must not wrap around."""
    n_groups, n_out = 100, 10
    table = np.zeros((n_groups, n_out))
    table[np.arange(n_groups), np.arange(n_groups) % n_out] = 1.0  # group g -> g % 10
    group = np.arange(n_groups, dtype=np.uint8).repeat(3)
    got = draw_rows(table, group, np.random.default_rng(0))
    np.testing.assert_array_equal(got, group.astype(np.int64) % n_out)


def test_draw_rows_gives_each_group_its_expected_counts() -> None:
    """Systematic draws: every group's cell counts are within one of ``m p`` (independent
    draws miss by about sqrt(m p) -- tens here), and they sum to the group's rows."""
    rng = np.random.default_rng(3)
    table = rng.dirichlet(np.full(7, 0.7), size=40)
    table[:, 2] = 0.0  # never drawn
    table[5] = 0.0  # no mass at all: uniform
    group = rng.integers(0, 40, 100_000)
    got = draw_rows(table, group, np.random.default_rng(4))
    counts = np.zeros((40, 7))
    np.add.at(counts, (group, got), 1)
    m = np.bincount(group, minlength=40)
    mass = table.sum(axis=1, keepdims=True)
    p = np.where(mass > 0, table / np.where(mass > 0, mass, 1), 1 / 7)
    assert np.abs(counts - p * m[:, None]).max() < 1.0
    assert counts[np.arange(40) != 5, 2].sum() == 0


def test_each_row_of_a_systematic_draw_has_the_conditional_distribution() -> None:
    """A row's own draw is exactly ``table[g]``, whatever its place in the group: over
    20,000 seeds, the first, a middle and the last row of a 3-row group and a lone row
    take each cell as often as the table says (binomial error), and two rows of one
    group are not tied to the cells' order (their joint is not independent: that is what
    keeps the counts balanced)."""
    table = np.array([[0.6, 0.3, 0.1], [0.25, 0.5, 0.25]])
    group = np.array([0, 0, 0, 1])
    trials = 20_000
    draws = np.stack([draw_rows(table, group, np.random.default_rng(s)) for s in range(trials)])
    for row, g in enumerate(group):
        freq = np.bincount(draws[:, row], minlength=3) / trials
        sd = np.sqrt(table[g] * (1 - table[g]) / trials)
        assert (np.abs(freq - table[g]) < 4 * sd + 1e-9).all(), (row, freq)
    # Rows of a group are exchangeable: row 0 takes cell 0 while row 2 takes cell 1 as
    # often as the other way round (rows taking the sweep's cells in order would make one
    # of the two impossible).
    a = np.mean((draws[:, 0] == 0) & (draws[:, 2] == 1))
    b = np.mean((draws[:, 0] == 1) & (draws[:, 2] == 0))
    assert a > 0.2 and abs(a - b) < 4 * math.sqrt(a / trials) * math.sqrt(2)


def test_draw_rows_with_rows_in_few_of_many_groups() -> None:
    """Only groups that have rows are swept (a large clique, a small batch): each of them
    still gets its own table's cells."""
    table = np.zeros((10_000, 3))
    table[:, 0] = 1.0
    table[7] = [0.0, 1.0, 0.0]
    table[9_999] = [0.0, 0.0, 1.0]
    group = np.array([9_999, 7, 42, 7, 9_999, 9_999], dtype=np.uint16)
    got = draw_rows(table, group, np.random.default_rng(1))
    np.testing.assert_array_equal(got, [2, 1, 0, 1, 2, 2])
