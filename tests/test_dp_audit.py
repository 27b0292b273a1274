"""The empirical DP audit (benchmarks/dp_audit.py): its pieces, and small end-to-end runs.

The CLI runs use MST (the fastest engine) and few trials. Their tolerances come from the
noise scale: the attacker's statistic ``c_hat`` (the target's estimated contribution, in
units of k) has standard deviation 1/mu under the claimed noise, so over n trials its mean
difference between D' and D has standard error sqrt(2/n)/mu and a sample standard
deviation has relative standard error about 1/sqrt(2(n-1)). Every check allows 4.5 standard
errors (a false failure about once in 150,000 runs) and fails if a plant is a no-op: with
the plants off, the standard deviation is twice the halved-noise value and the mean shift of
the patient unit is 1 instead of 4.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import norm

from dpsynth.io import load_encoded
from dpsynth.privacy.accountant import Accountant, Budget, epsilon_for, rho_for
from dpsynth.privacy.session import MeasurementSession
from dpsynth.schema import load_schema

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import dp_audit  # noqa: E402

Z = 4.5  # standard errors allowed by the statistical checks


def run_cli(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(BENCH / "dp_audit.py"), *args, "--json"],
                         capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout)


def shift_tol(r: dict[str, Any], scale: float = 1.0) -> float:
    return Z * scale * math.sqrt(2 / r["trials"]) / r["mu_planned"]


def sd_tol(r: dict[str, Any]) -> float:
    return Z / math.sqrt(2 * (r["trials"] - 1))


# -- the neighbouring tables -----------------------------------------------------------------
@pytest.mark.parametrize("unit", dp_audit.UNITS)
def test_neighbours_differ_by_one_unit_whose_cells_are_empty_in_d(tmp_path: Path, unit: str) -> None:
    schema_path, d_path, d1_path = dp_audit.write_tables(tmp_path, unit)
    schema = load_schema(schema_path)
    assert schema.privacy_unit.max_rows == dp_audit.K[unit]
    d, d1 = load_encoded(d_path, schema), load_encoded(d1_path, schema)
    target = np.array(dp_audit.TARGET)
    assert not (d.codes == target).any(axis=0).any()  # no row of D shares any category with it
    # the real reader bounds the target to k rows; the plant lets all of them through
    assert d1.codes.shape[0] == d.codes.shape[0] + dp_audit.K[unit]
    assert (d1.codes == target).all(axis=1).sum() == dp_audit.K[unit]
    with dp_audit.plant_skip_bounding():
        raw = load_encoded(d1_path, schema)
    assert raw.codes.shape[0] == d.codes.shape[0] + dp_audit.TARGET_ROWS[unit]
    assert raw.contribution_bound == dp_audit.K[unit]
    assert load_encoded(d1_path, schema).codes.shape[0] == d1.codes.shape[0]  # restored
    # every patient of D has at most k rows, so bounding leaves D as the attacker knows it
    lines = d_path.read_text().splitlines()[1:]
    assert d.codes.shape[0] == len(lines)


def test_common_categories_are_far_above_mst_compression(tmp_path: Path) -> None:
    # compression merges categories whose noisy count is below 3 sigma; the target's group
    # must never take in a category D uses, or its count on D would not be known exactly
    _, codes = dp_audit.draw_d("patient", 0)
    sigma_1way = 2 / math.sqrt(2 * rho_for(dp_audit.EPSILON, dp_audit.DELTA) * 0.2 / 3)
    for j in range(codes.shape[1]):
        assert np.bincount(codes[:, j]).min() > 3 * sigma_1way + 8 * sigma_1way


# -- the plants --------------------------------------------------------------------------------
def test_sensitivity_x2_halves_the_noise_but_not_the_charge() -> None:
    rho, cells = 0.02, 40_000
    sigma = 1 / math.sqrt(2 * rho)

    def measure() -> tuple[float, MeasurementSession, Any]:
        s = MeasurementSession(np.zeros((10, 1), dtype=np.int64), ("x",), (cells,), 1,
                               Accountant(Budget(rho)))
        m = s.measure(("x",), rho, "t")
        noise = np.array(m.counts, dtype=float)
        noise[0] -= 10
        return float(noise.std()), s, m

    honest, _, _ = measure()
    with dp_audit.plant_sensitivity_x2():
        planted, session, m = measure()
    tol = Z / math.sqrt(2 * cells)
    assert honest == pytest.approx(sigma, rel=tol)
    assert planted == pytest.approx(sigma / 2, rel=tol)
    assert m.sigma == pytest.approx(sigma, rel=1e-6)  # published sigma is the claimed one
    assert session.spent.rho == pytest.approx(rho)  # and the accountant charged the claim
    assert session.charges[0].noise_scale == pytest.approx(sigma, rel=1e-6)
    again, _, _ = measure()
    assert again == pytest.approx(sigma, rel=tol)  # the patch is gone after the block


# -- statistics ----------------------------------------------------------------------------------
def test_lower_bound_formula() -> None:
    n, a = 100, 0.05
    hi = 1 - (a / 2) ** (1 / n)  # perfect attack: FPR_hi = FNR_hi = hi
    assert dp_audit.eps_lower_bound(n, 0, n, n, 0.0, a) == pytest.approx(math.log((1 - hi) / hi))
    assert dp_audit.eps_lower_bound(50, 50, n, n, 0.0, a) == 0.0  # a coin flip proves nothing
    bound = dp_audit._bound_matrix(n, 0.05, a)
    for tp, fp in [(100, 0), (90, 20), (60, 5), (30, 2), (50, 50), (0, 100)]:
        assert bound[tp, fp] == pytest.approx(dp_audit.eps_lower_bound(tp, fp, n, n, 0.05, a), abs=1e-12)


def test_gaussian_profile_is_below_the_zcdp_conversion() -> None:
    for rho in (0.05, 0.486, 2.0):
        for delta in (1e-6, 0.05):
            assert dp_audit.gdp_epsilon(math.sqrt(2 * rho), delta) < epsilon_for(rho, delta)


def test_the_operating_point_has_the_power_the_issue_asks_for() -> None:
    e, d, n = dp_audit.EPSILON, dp_audit.DELTA, dp_audit.TRIALS
    for engine in dp_audit.ENGINES:
        mu = dp_audit.planned_mu(engine, e, d)
        tau = dp_audit.choose_threshold(n, e, d, mu)
        assert dp_audit.analytic_power(n, e, d, mu, tau, scale=0.5) >= 0.99
        assert dp_audit.analytic_power(n, e, d, mu, tau, shift=4.0) >= 0.999
        assert dp_audit.analytic_power(n, e, d, mu, tau) < 1e-6  # honest: nothing to find


@pytest.mark.parametrize("unit", dp_audit.UNITS)
def test_exact_mst_law_agrees_with_the_gaussian_model(unit: str) -> None:
    e, d, n = dp_audit.EPSILON, dp_audit.DELTA, dp_audit.TRIALS
    mu = dp_audit.planned_mu("mst", e, d)
    tau = dp_audit.choose_threshold(n, e, d, mu)
    fpr, tpr = dp_audit.mst_exact_rates(unit, "none", e, d, tau)
    # honest noise scales are >= 1.7: close to the normal law of c_hat
    assert fpr == pytest.approx(float(norm.sf(tau * mu)), abs=0.01)
    assert tpr == pytest.approx(float(norm.sf((tau - 1) * mu)), abs=0.01)
    for plant, least in (("sensitivity-x2", 0.99), ("skip-bounding", 0.999)):
        if plant == "skip-bounding" and unit == "row":
            continue
        rates = dp_audit.mst_exact_rates(unit, plant, e, d, tau)
        assert dp_audit.power_from_rates(n, e, d, *rates) >= least
    assert dp_audit.power_from_rates(n, e, d, fpr, tpr) < 1e-6


def test_auc_helper() -> None:
    assert dp_audit.auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert dp_audit.auc(np.array([1.0]), np.array([1.0])) == 0.5


# -- end to end, through the CLI ---------------------------------------------------------------
def test_cli_honest_patient_audit_detects_nothing_and_matches_the_noise_scale() -> None:
    r = run_cli("--engine", "mst", "--unit", "patient", "--plant", "none", "--trials", "80")
    assert r["trials"] == 80 and r["eps_claimed"] == dp_audit.EPSILON
    assert not r["detected"] and r["eps_lower_bound"] <= r["eps_claimed"], r
    assert r["mu_published_mean"] == pytest.approx(r["mu_planned"], rel=1e-6)
    assert r["c_hat_sd_d"] * r["mu_planned"] == pytest.approx(1.0, abs=sd_tol(r))
    # bounding keeps exactly k of the target's 8 rows: its contribution is 1 (in units of k)
    assert r["c_hat_mean_d1"] - r["c_hat_mean_d"] == pytest.approx(1.0, abs=shift_tol(r))


def test_cli_detects_skipped_bounding() -> None:
    # delta 0.1 (rho 0.635) instead of the benchmark's 0.05 buys the power with fewer trials
    r = run_cli("--engine", "mst", "--unit", "patient", "--plant", "skip-bounding", "--trials", "150",
                "--delta", "0.1")
    assert r["power_analytic"]["skip-bounding"] > 1 - 1e-9
    assert r["detected"] and r["eps_lower_bound"] > r["eps_claimed"], r
    assert r["c_hat_mean_d1"] - r["c_hat_mean_d"] == pytest.approx(4.0, abs=shift_tol(r))


def test_cli_sensitivity_x2_halves_the_attackers_noise() -> None:
    r = run_cli("--engine", "mst", "--unit", "row", "--plant", "sensitivity-x2", "--trials", "80")
    assert r["c_hat_sd_d"] * r["mu_planned"] == pytest.approx(0.5, abs=0.5 * sd_tol(r))
    assert r["c_hat_mean_d1"] - r["c_hat_mean_d"] == pytest.approx(1.0, abs=shift_tol(r, 0.5))


def test_cli_refuses_skip_bounding_without_patients() -> None:
    out = subprocess.run([sys.executable, str(BENCH / "dp_audit.py"), "--unit", "row", "--plant",
                          "skip-bounding"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "patient" in out.stderr
