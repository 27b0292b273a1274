"""Smoke version of the empirical DP audit (benchmarks/dp_audit.py).

Few runs make the lower bound weak, so the settings are chosen where the game is
decisive: the broken "noise/4" variant at claimed epsilon 2 with delta 1e-2 (its real
privacy loss is far above the claim; a Gaussian model of the attack puts the median bound
at 3.2 and the chance of missing it below 1 in 2000) is caught with 300 runs per side; the honest
release must stay at or below its claim; the two data-dependent variants leak
deterministically and are caught with a few dozen runs.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import dp_audit

from dpsynth.io import EncodedTable
from dpsynth.privacy.accountant import rho_for


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[EncodedTable, EncodedTable]:
    return dp_audit.load_tables(tmp_path_factory.mktemp("game"))


def test_the_neighbouring_tables_differ_by_one_unique_patient(
        tables: tuple[EncodedTable, EncodedTable]) -> None:
    d, d1 = tables
    assert d1.codes.shape[0] == d.codes.shape[0] + 1
    assert not (d.codes == dp_audit.TARGET_CODES).all(axis=1).any()
    assert (d1.codes[-1] == dp_audit.TARGET_CODES).all()
    assert dp_audit.TARGET_CODES[0] not in d.codes[:, 0]  # its category is absent from D


def test_lower_bound_formula() -> None:
    # a perfect attack on n runs per side: bound = log((1 - delta - FPR_hi) / FNR_hi)
    n, a = 100, 0.05
    hi = 1 - (a / 2) ** (1 / n)
    assert dp_audit.eps_lower_bound(n, 0, n, n, 0.0, a) == pytest.approx(math.log((1 - hi) / hi))
    assert dp_audit.eps_lower_bound(50, 50, n, n, 0.0, a) == 0.0  # a coin flip proves nothing


def test_noise_over_four_charges_the_claim_but_adds_a_quarter_of_the_noise(
        tables: tuple[EncodedTable, EncodedTable]) -> None:
    d, _ = tables
    rho = rho_for(1.0, 1e-5)
    s = dp_audit.NoiseOverFourSession(d, rho)
    m = s.measure(("a",), rho / 2, "t")
    assert m.sigma == pytest.approx(1 / math.sqrt(2 * rho / 2) / 4, rel=1e-6)
    assert s.remaining.rho == pytest.approx(rho / 2)


def test_honest_release_stays_within_its_claim(tables: tuple[EncodedTable, EncodedTable]) -> None:
    r = dp_audit.play("honest", 2.0, 150, tables, seed=1, delta=1e-2)
    assert r.eps_lb <= 2.0, r


def test_noise_divided_by_four_is_caught(tables: tuple[EncodedTable, EncodedTable]) -> None:
    r = dp_audit.play("noise/4", 2.0, 300, tables, seed=2, delta=1e-2)
    assert r.eps_lb > 2.0, r
    assert r.auc > 0.8


@pytest.mark.parametrize("variant", ["data-domain", "true-rows"])
def test_data_dependent_variants_are_caught(tables: tuple[EncodedTable, EncodedTable],
                                            variant: str) -> None:
    r = dp_audit.play(variant, 1.0, 60, tables, seed=3)
    assert r.fpr == 0.0 and r.tpr == 1.0, r
    assert r.eps_lb > 1.0, r


def test_auc_helper() -> None:
    assert dp_audit.auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert dp_audit.auc(np.array([1.0]), np.array([1.0])) == 0.5
