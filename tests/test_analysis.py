"""Declared analysis targets (issue 14): the schema's ``analysis`` section, how AIM and MST
use it, the quality report's per-subgroup TVD against the noisy measurements, and the
audit's TSTR for every declared target."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SessionFactory, ZeroNoise, cli_release
from test_release import SCHEMA, make_table

from dpsynth.cli import main
from dpsynth.engines import AIMSettings, MSTSettings
from dpsynth.engines.aim import AnalysisPlan, _workload, analysis_workload, fit_aim
from dpsynth.engines.mst import fit_mst
from dpsynth.errors import SchemaError, UsageError
from dpsynth.privacy.accountant import Accountant, Budget
from dpsynth.report.quality import _Marginal, within_group_tvd
from dpsynth.schema import parse_schema

ANALYSIS = "analysis:\n  targets: [smoker]\n  focus: [[age, bmi]]\n"


def _schema(extra: str) -> str:
    return SCHEMA.replace("subgroups: [sex]\n", "subgroups: [sex]\n" + extra)


# -- schema ---------------------------------------------------------------------------------------


def test_analysis_section_loads() -> None:
    s = parse_schema(_schema(ANALYSIS))
    assert s.analysis.targets == ("smoker",) and s.analysis.focus == (("age", "bmi"),)
    assert s.analysis
    assert not parse_schema(SCHEMA).analysis  # absent: empty and falsy


@pytest.mark.parametrize(("analysis", "words"), [
    ("analysis: {targets: [nosuch]}\n", ["analysis.targets", "'nosuch'", "does not define"]),
    ("analysis: {targets: [pid]}\n", ["analysis.targets", "'pid'", "measured"]),
    ("analysis: {targets: [note]}\n", ["analysis.targets", "'note'", "measured"]),
    ("analysis: {focus: [[age, age]]}\n", ["analysis.focus[0]", "distinct"]),
    ("analysis: {focus: [[age]]}\n", ["analysis", "focus"]),
    ("analysis: {targets: smoker}\n", ["analysis", "targets"]),
    ("analysis: {outcome: [smoker]}\n", ["analysis", "outcome"]),
])
def test_bad_analysis_sections_are_refused_with_the_place(analysis: str, words: list[str]) -> None:
    with pytest.raises(SchemaError) as e:
        parse_schema(_schema(analysis))
    text = str(e.value)
    assert all(w in text for w in words), text
    assert "\n" not in text


def test_shipped_diabetes130_schema_declares_readmitted(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    text = (repo / "schemas/diabetes130.yaml").read_text()
    assert text == (repo / "k8s/schema/diabetes130.yaml").read_text()
    assert parse_schema(text).analysis.targets == ("readmitted",)


# -- AIM --------------------------------------------------------------------------------------------


def _codes(n: int = 4000, seed: int = 1) -> tuple[np.ndarray, list[int]]:
    """c0 (target) depends on c1; c2, c3 are independent noise; c4 is a 3-level subgroup."""
    rng = np.random.default_rng(seed)
    c1 = rng.integers(0, 4, n)
    c0 = (rng.random(n) < 0.1 + 0.2 * c1).astype(np.int64)
    cols = [c0, c1, rng.integers(0, 3, n), rng.integers(0, 5, n), rng.integers(0, 3, n)]
    return np.column_stack(cols), [2, 4, 3, 5, 3]


def test_aim_workload_without_analysis_is_the_plain_one() -> None:
    sizes = [2, 4, 3, 5, 3]
    plain = _workload(5, 2, sizes, 10**6)
    # AIM's weights: w_c = sum over all pairs r of |c & r|
    pairs = list(itertools.combinations(range(5), 2))
    for c, w in plain.items():
        assert w == sum(len(set(c) & set(r)) for r in pairs)
    plan = analysis_workload(tuple(f"c{j}" for j in range(5)), AIMSettings())
    assert plan == AnalysisPlan([], [], [])


def test_aim_analysis_plan_by_default_leaves_the_selection_workload_plain() -> None:
    cols = tuple(f"c{j}" for j in range(6))
    s = AIMSettings(targets=("c0",), subgroups=("c5",), focus=(("c2", "c3"),), analysis_pairs=2)
    plan = analysis_workload(cols, s)
    assert plan.weighted == []  # analysis_weight 0: the rounds select as plain AIM
    assert plan.public == [(0, 5), (2, 3)]  # target x subgroup, focus: no selection
    assert plan.choose_from == [([(0, 1), (0, 2), (0, 3), (0, 4)], 2)]  # 2 of them by noisy max
    # no more other pairs than analysis_pairs: all measured, no selection
    few = analysis_workload(cols, AIMSettings(targets=("c0",), subgroups=("c5",), analysis_pairs=4))
    assert few.public == [(0, 5), (0, 1), (0, 2), (0, 3), (0, 4)] and few.choose_from == []


def test_aim_workload_weights_target_pairs_and_subgroup_triples() -> None:
    cols = tuple(f"c{j}" for j in range(5))
    s = AIMSettings(targets=("c0",), subgroups=("c4",), focus=(("c2", "c3"),), analysis_weight=4.0)
    plan = analysis_workload(cols, s)
    target_pairs = [(0, a) for a in range(1, 5)]
    triples = [(0, a, 4) for a in range(1, 4)]
    assert plan.public == [(0, 4), (0, 1), (0, 2), (0, 3), (2, 3)]
    assert [c for c, _ in plan.weighted] == [*target_pairs, (2, 3), *triples]
    assert all(w == 4.0 for _, w in plan.weighted)
    cands = _workload(5, 2, [2, 4, 3, 5, 3], 10**6, plan.weighted)
    work = [(r, 1.0) for r in itertools.combinations(range(5), 2)] + plan.weighted
    for c, w in cands.items():  # the documented formula, for every candidate
        assert w == pytest.approx(sum(wr * len(set(c) & set(r)) for r, wr in work))
    assert (0, 1, 4) in cands  # triples with a target are candidates
    assert cands[(0, 1)] > 1.5 * cands[(1, 2)]  # target pairs weigh more than generic ones


def test_aim_measures_every_target_pair_first_and_spends_exactly_the_budget(
        make_session: SessionFactory) -> None:
    codes, sizes = _codes()
    acc = Accountant(Budget(0.5))
    session = make_session(codes, sizes, ZeroNoise(), accountant=acc)
    s = AIMSettings(targets=("c0",), subgroups=("c4",), max_rounds=40, round_iters=20, final_iters=50)
    model = fit_aim(session, s)
    steps = [(c.step, c.columns) for c in acc.charges]
    first = [cols for step, cols in steps if step == "aim/analysis"]
    assert sorted(first) == [("c0", f"c{a}") for a in range(1, 5)]
    assert not any(step == "aim/analysis-select" for step, _ in steps)  # 3 other pairs <= 8
    analysis_rho = sum(c.rho for c in acc.charges if c.step == "aim/analysis")
    assert analysis_rho == pytest.approx(s.analysis_share * 0.5)
    assert acc.spent.rho == pytest.approx(0.5)
    assert acc.spent.rho <= 0.5 * (1 + 1e-12)
    w = model.info["workload"]
    assert w["analysis_share"] == s.analysis_share and w["analysis_pairs_chosen"] == []
    assert {tuple(x["columns"]) for x in w["analysis"] if x["measured_first"]} == set(first)
    # with exact counts the model holds the target's dependence on c1
    m = model.marginal(["c1", "c0"])
    assert np.allclose(m[:, 1] / m.sum(axis=1), [0.1, 0.3, 0.5, 0.7], atol=0.03)


def test_aim_chooses_the_target_pairs_by_noisy_max_and_keeps_plain_selection(
        make_session: SessionFactory) -> None:
    codes, sizes = _codes()
    plain_acc, acc = Accountant(Budget(0.5)), Accountant(Budget(0.5))
    fit_aim(make_session(codes, sizes, ZeroNoise(), accountant=plain_acc),
            AIMSettings(max_rounds=40, round_iters=20, final_iters=20))
    s = AIMSettings(targets=("c0",), subgroups=("c4",), analysis_pairs=1, max_rounds=40,
                    round_iters=20, final_iters=20)
    model = fit_aim(make_session(codes, sizes, ZeroNoise(), accountant=acc), s)
    picks = [c for c in acc.charges if c.step == "aim/analysis-select"]
    assert len(picks) == 1 and picks[0].sensitivity == 4.0  # dependence score: 4 k, k = 1
    measured = [c.columns for c in acc.charges if c.step == "aim/analysis"]
    assert measured == [("c0", "c4"), ("c0", "c1")]  # subgroup pair, then the one chosen
    up_front = sum(c.rho for c in acc.charges if c.step.startswith("aim/analysis"))
    assert up_front == pytest.approx(s.analysis_share * 0.5)
    assert picks[0].rho == pytest.approx((1 - s.measure_share) * s.analysis_share * 0.5)
    assert acc.spent.rho == pytest.approx(0.5)
    w = model.info["workload"]
    assert w["analysis_pairs_chosen"] == [["c0", "c1"]]
    assert [x["columns"] for x in w["analysis"] if x.get("chosen_by_noisy_max")] == [["c0", "c1"]]
    # the rounds' noisy max has plain AIM's sensitivity: analysis weight 0 adds nothing
    sens = {c.sensitivity for c in acc.charges if c.step == "aim/select"}
    assert sens and sens == {c.sensitivity for c in plain_acc.charges if c.step == "aim/select"}
    heavy = Accountant(Budget(0.5))
    fit_aim(make_session(codes, sizes, ZeroNoise(), accountant=heavy),
            AIMSettings(targets=("c0",), subgroups=("c4",), analysis_weight=4.0, max_rounds=40,
                        round_iters=20, final_iters=20))
    assert min(c.sensitivity or 0 for c in heavy.charges if c.step == "aim/select") > max(sens)


def test_aim_rounds_leave_the_target_to_the_analysis_step(make_session: SessionFactory) -> None:
    """With the target's pairs measured up front, no round measures it with another column
    (``rounds_with_targets`` False); allowed, the rounds do pick the target's dependence on
    c1 (the rounds' model does not hold the analysis measurements); with no analysis share,
    or with the target's marginals weighted into the rounds' workload, nothing is held back."""
    codes, sizes = _codes()

    def rounds(**kw: object) -> tuple[list[tuple[str, ...]], dict]:
        acc = Accountant(Budget(0.5))
        s = AIMSettings(targets=("c0",), subgroups=("c4",), max_rounds=40, round_iters=20,
                        final_iters=20, **kw)  # type: ignore[arg-type]
        model = fit_aim(make_session(codes, sizes, ZeroNoise(), accountant=acc), s)
        return [c.columns for c in acc.charges if c.step == "aim/measure"], model.info["workload"]

    held, w = rounds()
    assert held and not any("c0" in cols and len(cols) > 1 for cols in held)
    assert w["rounds"] == "no marginal of c0 with another column"
    allowed, w = rounds(rounds_with_targets=True)
    assert any(set(cols) >= {"c0", "c1"} for cols in allowed)
    assert w["rounds"] == "every workload marginal"
    for kw in ({"analysis_share": 0.0}, {"analysis_weight": 1.0}):  # nothing held / weighted
        _, w = rounds(**kw)
        assert w["rounds"] == "every workload marginal"


def test_aim_chooses_target_pairs_on_dependence_beyond_sampling_noise(
        make_session: SessionFactory) -> None:
    """A wide independent column's pair is further from independence (sampling noise over 400
    cells) than a narrow dependent one's; the chance term makes the narrow one win."""
    rng = np.random.default_rng(7)
    n = 4000
    c1 = rng.integers(0, 2, n)
    c0 = (rng.random(n) < np.where(c1 == 1, 0.42, 0.30)).astype(np.int64)
    codes = np.column_stack([c0, c1, rng.integers(0, 200, n), rng.integers(0, 3, n)])
    sizes = [2, 2, 200, 3]

    def l1_from_independence(a: int) -> float:
        joint = np.zeros((sizes[a], 2))
        np.add.at(joint, (codes[:, a], c0), 1)
        return float(np.abs(joint - np.outer(joint.sum(1), joint.sum(0)) / n).sum())

    assert l1_from_independence(2) > l1_from_independence(1)  # raw distance would pick c2
    acc = Accountant(Budget(0.5))
    model = fit_aim(make_session(codes, sizes, ZeroNoise(), accountant=acc),
                    AIMSettings(targets=("c0",), analysis_pairs=1, max_rounds=40, round_iters=20,
                                final_iters=20))
    assert model.info["workload"]["analysis_pairs_chosen"] == [["c0", "c1"]]


def test_aim_chooses_a_subgroups_own_pairs_when_asked(make_session: SessionFactory) -> None:
    """subgroup_pairs: the subgroup column's most dependent non-target pair is chosen by the
    same noisy max and measured from the analysis share; a pair two pools share is measured
    once."""
    rng = np.random.default_rng(3)
    n = 4000
    g = rng.integers(0, 3, n)
    c2 = np.where(rng.random(n) < 0.6, g, rng.integers(0, 3, n))  # depends on the subgroup
    c1 = rng.integers(0, 4, n)
    c0 = (rng.random(n) < 0.1 + 0.2 * c1).astype(np.int64)
    codes = np.column_stack([c0, c1, c2, rng.integers(0, 5, n), g])
    sizes = [2, 4, 3, 5, 3]
    cols = tuple(f"c{j}" for j in range(5))
    s = AIMSettings(targets=("c0",), subgroups=("c4",), analysis_pairs=1, subgroup_pairs=1,
                    max_rounds=40, round_iters=20, final_iters=20)
    plan = analysis_workload(cols, s)
    assert plan.choose_from == [([(0, 1), (0, 2), (0, 3)], 1), ([(1, 4), (2, 4), (3, 4)], 1)]
    assert analysis_workload(cols, AIMSettings(subgroups=("c4",), subgroup_pairs=2)).choose_from == []
    acc = Accountant(Budget(0.5))
    model = fit_aim(make_session(codes, sizes, ZeroNoise(), accountant=acc), s)
    assert model.info["workload"]["analysis_pairs_chosen"] == [["c0", "c1"], ["c2", "c4"]]
    measured = [c.columns for c in acc.charges if c.step == "aim/analysis"]
    assert measured == [("c0", "c4"), ("c0", "c1"), ("c2", "c4")]
    assert sum(c.rho for c in acc.charges if c.step.startswith("aim/analysis")) == pytest.approx(0.1)
    assert acc.spent.rho == pytest.approx(0.5)


def test_aim_without_analysis_has_no_analysis_step(make_session: SessionFactory) -> None:
    codes, sizes = _codes()
    acc = Accountant(Budget(0.5))
    session = make_session(codes, sizes, ZeroNoise(), accountant=acc)
    model = fit_aim(session, AIMSettings(max_rounds=6, round_iters=20, final_iters=20))
    assert not any(c.step == "aim/analysis" for c in acc.charges)
    assert model.info["workload"]["analysis"] == [] and model.info["workload"]["analysis_share"] == 0


def test_analysis_settings_are_validated() -> None:
    for bad in ({"analysis_weight": -1}, {"analysis_weight": float("inf")}, {"analysis_share": 0.6},
                {"analysis_share": -0.1}, {"analysis_pairs": -1}, {"analysis_pairs": 2.5},
                {"subgroup_pairs": -1}, {"subgroup_pairs": True}):
        with pytest.raises(UsageError):
            AIMSettings(**bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        MSTSettings(analysis_weight=float("nan"))


# -- MST --------------------------------------------------------------------------------------------


def test_mst_weights_target_edges_and_measures_target_subgroup_pairs(
        make_session: SessionFactory) -> None:
    codes, sizes = _codes()
    acc = Accountant(Budget(0.5))
    session = make_session(codes, sizes, ZeroNoise(), accountant=acc)
    model = fit_mst(session, MSTSettings(targets=("c0",), subgroups=("c4",), max_iters=50))
    measured = [c.columns for c in acc.charges if c.step == "mst/2-way"]
    assert ("c0", "c4") in measured  # target x subgroup, whatever the tree chose
    assert ("c0", "c1") in measured  # the target's real dependence is in the tree
    w = model.info["workload"]
    assert w["target_weight"] == 4.0 and w["analysis_pairs"] == [["c0", "c4"]]
    # the selection's sensitivity carries the largest weight (k = 1)
    selects = [c for c in acc.charges if c.step == "mst/select"]
    assert selects and all(c.sensitivity == pytest.approx(4.0) for c in selects)
    assert acc.spent.rho == pytest.approx(0.5)


def test_mst_without_analysis_selects_with_unit_weights(make_session: SessionFactory) -> None:
    codes, sizes = _codes()
    acc = Accountant(Budget(0.5))
    session = make_session(codes, sizes, ZeroNoise(), accountant=acc)
    model = fit_mst(session, MSTSettings(max_iters=20))
    selects = [c for c in acc.charges if c.step == "mst/select"]
    assert all(c.sensitivity == pytest.approx(1.0) for c in selects)
    assert len([c for c in acc.charges if c.step == "mst/2-way"]) == 4
    assert model.info["workload"]["analysis_pairs"] == []


# -- quality report ---------------------------------------------------------------------------------


def test_within_group_tvd_interval_covers_the_noise_free_tvd() -> None:
    """The half-width bounds the TVD the noise alone adds: over many draws of Gaussian
    noise of std sigma, the noise-free TVD lies in the interval at least ~95% of the time."""
    rng = np.random.default_rng(0)  # test noise for a formula check, not DP noise
    true = np.array([[400.0, 100.0, 300.0, 200.0], [20.0, 5.0, 15.0, 10.0]])
    synth = np.array([[380.0, 120.0, 310.0, 190.0], [25.0, 5.0, 10.0, 10.0]])
    sigma = 6.0
    hits = 0
    trials = 400
    for _ in range(trials):
        noisy = true + rng.normal(0, sigma, true.shape)
        m = _Marginal(("s", "a"), true.shape, noisy, sigma, synth)
        res = within_group_tvd(m, 0, 1)
        assert res is not None
        t, h, n_g = res
        exact = 0.5 * np.abs(synth[1] / synth[1].sum() - true[1] / true[1].sum()).sum()
        hits += abs(t - exact) <= h
        assert n_g == pytest.approx(noisy[1].sum())
    assert hits / trials >= 0.93
    # the interval narrows with the group: the big group's is ~1/20 of the small one's
    m = _Marginal(("s", "a"), true.shape, true, sigma, synth)
    big, small = within_group_tvd(m, 0, 0), within_group_tvd(m, 0, 1)
    assert big is not None and small is not None
    assert big[1] == pytest.approx(small[1] * 50 / 1000)
    empty = _Marginal(("s", "a"), true.shape, np.vstack([true[0], -np.abs(true[1])]), sigma, synth)
    assert within_group_tvd(empty, 0, 1) is None


# -- release and audit ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("analysis")
    (d / "schema.yaml").write_text(_schema("analysis: {targets: [smoker]}\n"))
    make_table(d / "table.csv", n_patients=1500, seed=7)
    bundle = cli_release(d, total_epsilon="5")
    return {"dir": d, "schema": d / "schema.yaml", "input": d / "table.csv",
            "bundle": bundle}


def test_release_reports_list_the_workload_and_subgroup_fidelity(analysed: dict[str, Path]) -> None:
    b = analysed["bundle"]
    report = json.loads((b / "privacy-report.json").read_text())
    assert report["engine"]["settings"]["targets"] == ["smoker"]
    assert report["engine"]["settings"]["subgroups"] == ["sex"]
    assert report["workload"]["analysis_pairs"] == [["sex", "smoker"]]
    page = (b / "privacy-report.html").read_text()
    assert "<h3>Workload</h3>" in page and "sex, smoker" in page
    quality = (b / "quality-report.html").read_text()
    assert "smoker inside the group (95% interval)" in quality
    assert "Mean TVD inside the group" in quality


def test_audit_runs_tstr_for_every_declared_target(analysed: dict[str, Path]) -> None:
    out = analysed["dir"] / "audit"
    r = CliRunner().invoke(main, ["audit", "--schema", str(analysed["schema"]), "--input",
                                  str(analysed["input"]), "--bundle", str(analysed["bundle"]),
                                  "--out", str(out), "--seed", "3", "--json"])
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    report = json.loads((out / "audit-report.json").read_text())
    declared = report["utility"]["tstr_targets"]
    assert [(t["target"], t["value"]) for t in declared] == [("smoker", "True")]
    t = declared[0]
    # smoking depends on age: the real-train ceiling beats chance, the independent-columns
    # floor does not (its columns carry no relationship), the release lies above the floor
    assert t["auc_train_real"] > 0.6
    assert abs(t["auc_train_independent"] - 0.5) < 0.15 < t["auc_train_real"] - 0.5
    assert t["auc_train_synthetic"] > t["auc_train_independent"]
    assert {g["value"] for g in t["subgroups"]} == {"F", "M"}
    assert all(0 <= g["auc_train_real"] <= 1 for g in t["subgroups"])
    # without --target the headline is the first declared target's
    assert report["utility"]["tstr"]["target"] == "smoker"
    assert summary["tstr_targets"][0]["auc_train_real"] == pytest.approx(t["auc_train_real"])
    assert not math.isnan(summary["tstr_auc"])


def test_audit_prints_each_declared_target(analysed: dict[str, Path]) -> None:
    r = CliRunner().invoke(main, ["audit", "--schema", str(analysed["schema"]), "--input",
                                  str(analysed["input"]), "--bundle", str(analysed["bundle"]),
                                  "--out", str(analysed["dir"] / "audit-text"), "--seed", "3"])
    assert r.exit_code == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("TSTR AUC"))
    assert "smoker = True" in line and "real-train ceiling 0." in line and "floor 0." in line
