"""benchmarks/raw_fidelity.py: decile cells and raw-value TVD on hand-made tables."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dpsynth.schema import load_schema

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from raw_fidelity import (  # noqa: E402
    decile_edges,
    independent,
    raw_tvd,
    real_values,
    released_values,
)


def test_decile_edges_are_real_values_and_distinct() -> None:
    # 0 is a point mass covering the 10th..40th percentiles: one edge, not four
    v = np.array([0.0] * 4 + [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, np.nan])
    assert decile_edges(v).tolist() == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]


def test_known_tvd_categorical_numeric_and_null() -> None:
    # real x: edges [1, 2, 3, 4, ..] -> values 1..10 each in its own cell (right-closed)
    real = pl.DataFrame({"x": [float(i) for i in range(1, 11)],
                         "c": ["a"] * 5 + ["b"] * 4 + [None]})
    # synth x: 0.5 -> (-inf, 1]; 1.0 -> (-inf, 1] (an edge stays in the cell ending at it);
    # 1.5 -> (1, 2]; 99 -> (9, +inf) ... so cells: 2 in cell 0, 1 in cell 1, 1 in cell 9, rest null
    synth = pl.DataFrame({"x": [0.5, 1.0, 1.5, 99.0, None],
                          "c": ["a", "a", "a", "c", "b"]})
    out = raw_tvd(real, synth, ["x", "c"], ["x"])
    assert out["edges"]["x"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    # x: real 0.1 in each of 10 cells; synth cell0 .4, cell1 .2, cell9 .2, null .2
    # |.1-.4| + |.1-.2| + 7*.1 + |.1-.2| + |0-.2| = .3+.1+.7+.1+.2 = 1.4 -> 0.7
    assert out["per_column"]["x"] == pytest.approx(0.7)
    # c: real a .5 b .4 null .1; synth a .6 b .2 c .2 -> (.1 + .2 + .2 + .1) / 2 = 0.3
    assert out["per_column"]["c"] == pytest.approx(0.3)
    assert out["tvd_1way"] == pytest.approx(0.5)
    assert out["tvd_3way"] is None


def test_two_way_sees_what_one_way_cannot_and_identity_is_zero() -> None:
    real = pl.DataFrame({"a": ["x", "y"] * 50, "b": ["x", "y"] * 50})
    swapped = pl.DataFrame({"a": ["x", "y"] * 50, "b": ["y", "x"] * 50})
    out = raw_tvd(real, swapped, ["a", "b"], [])
    assert out["tvd_1way"] == pytest.approx(0.0)
    assert out["tvd_2way"] == pytest.approx(1.0)
    assert raw_tvd(real, real, ["a", "b"], [])["tvd_2way"] == pytest.approx(0.0)


def test_off_grid_value_is_seen_and_point_mass_stays_in_one_cell() -> None:
    # income: half 0, half 20000; a synthetic 0.4 is not 0
    real = pl.DataFrame({"inc": [0.0] * 50 + [20000.0] * 50})
    assert raw_tvd(real, pl.DataFrame({"inc": [0.0] * 50 + [20000.0] * 50}), ["inc"],
                   ["inc"])["tvd_1way"] == pytest.approx(0.0)
    off = pl.DataFrame({"inc": [0.4] * 50 + [20000.0] * 50})
    assert raw_tvd(real, off, ["inc"], ["inc"])["tvd_1way"] == pytest.approx(0.5)


def test_real_and_released_values_of_a_nist_row() -> None:
    schema = load_schema(ROOT / "schemas/nist_excerpts.yaml")
    names = [c.name for c in schema.columns]
    row = {n: "1" for n in names}
    row.update(PUMA="17-03529", PINCP="15400.0", POVPIP="N", INDP="7870", DENSITY="100.5")
    real = real_values(pl.DataFrame([row]), schema)
    assert real["PINCP"].to_list() == [15400.0]
    assert real["POVPIP"].to_list() == [None]  # N is the missing token
    assert real["INDP"].to_list() == ["EDU educational services"]  # mapped to its public group
    synth = released_values(pl.DataFrame({**{n: [real[n][0]] for n in real.columns},
                                          "AGEP": [1], "PINCP": [15400.0]}), schema)
    assert synth["AGEP"].dtype == pl.Float64
    cols = list(real.columns)
    num = [c for c in cols if real[c].dtype == pl.Float64]
    assert raw_tvd(real, synth, cols, num)["tvd_1way"] == pytest.approx(0.0)


def test_independent_keeps_one_way_and_breaks_pairs() -> None:
    real = pl.DataFrame({"a": ["x", "y"] * 2000, "b": [1.0, 2.0] * 2000})
    ind = independent(real, seed=1)
    assert ind.height == real.height and ind.columns == real.columns
    out = raw_tvd(real, ind, ["a", "b"], ["b"])
    assert out["tvd_1way"] < 0.03  # sampling noise only
    assert out["tvd_2way"] == pytest.approx(0.5, abs=0.03)  # a and b were equal, now independent
