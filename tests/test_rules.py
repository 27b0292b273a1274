"""Issue 12: rules as SQL, enforced in generation; derived columns; values on the real
grid (precision, atoms); impossible vs rare (``valid``); ``schema check`` lists every
problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from conftest import SessionFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsynth.cli import main
from dpsynth.domain import Domain, recode
from dpsynth.errors import OutputValidationError, SchemaError
from dpsynth.generate import MAX_DRAW_FACTOR, generate
from dpsynth.rules import check_satisfiable, derive
from dpsynth.schema import parse_schema

HEAD = """\
format: dpsynth.table-schema/v1
name: t
version: '1'
privacy_unit: {max_rows: 1}
"""

COLUMNS = """\
columns:
  - {name: sex, kind: categorical, categories: [F, M]}
  - {name: pregnant, kind: categorical, categories: ["no", "yes"]}
  - {name: ct, kind: float, bounds: [10, 45], bin_edges: [10, 20, 30, 40, 45], precision: 0.1,
     atoms: [45]}
  - {name: income, kind: integer, bounds: [0, 99999], bin_width: 10000, atoms: [0]}
  - {name: weight, kind: float, nullable: true, bounds: [30, 200], bin_width: 10, precision: 0.1}
  - {name: height, kind: float, nullable: true, bounds: [120, 220], bin_width: 20, precision: 1}
  - {name: bmi, kind: derived, expr: "weight / POWER(height / 100, 2)", precision: 0.01}
"""


def schema_with(rules: str = "", columns: str = COLUMNS):
    return parse_schema(HEAD + rules + columns)


# -- schema: parsing and refusals ---------------------------------------------------------


def test_rules_parse_and_name_their_columns() -> None:
    s = schema_with("""rules:
  - {name: men_not_pregnant, require: "sex = 'F' OR pregnant = 'no'"}
  - {name: bmi_needs_both, require: "bmi IS NULL OR (weight IS NOT NULL AND height IS NOT NULL)",
     severity: warning}
""")
    assert [(r.name, r.columns, r.severity) for r in s.rules] == [
        ("men_not_pregnant", ("sex", "pregnant"), "error"),
        ("bmi_needs_both", ("bmi", "weight", "height"), "warning")]


@pytest.mark.parametrize(("rule", "message"), [
    ('"foo(sex) = 1"', "rule 'r1' is not a valid SQL expression: unsupported function"),
    ('"sex = "', "rule 'r1' is not a valid SQL expression"),
    ('"nosuch = 1"', "rule 'r1' reads column 'nosuch', which is not a released column"),
    ('"pid = 1"', "rule 'r1' reads column 'pid', which is not a released column"),
])
def test_bad_rules_are_refused_naming_the_rule(rule: str, message: str) -> None:
    cols = COLUMNS + "  - {name: pid, kind: identifier}\n"
    with pytest.raises(SchemaError) as err:
        schema_with(f"rules:\n  - {{name: r1, require: {rule}}}\n", cols)
    assert message in str(err.value)


def test_legacy_rule_kinds_become_the_same_sql() -> None:
    s = parse_schema(HEAD + """rules:
  - {kind: null_below, columns: [weight, income], threshold: 15}
  - {kind: null_together, columns: [weight, height]}
""" + COLUMNS)
    df = pl.DataFrame({"weight": [None, 70.0, None, 70.0], "income": [3, 3, 30, 30],
                       "height": [None, 170.0, 170.0, None]})
    ok = [df.select(r.expr).to_series().to_list() for r in s.rules]
    assert ok[0] == [True, False, False, True]   # null exactly when income < 15
    assert ok[1] == [True, True, False, False]   # null on the same rows


@pytest.mark.parametrize(("edit", "message"), [
    ("bin_width: 10000, atoms: [0]}", "bin_width: 7000, atoms: [0]}"),
    ("atoms: [45]}", "atoms: [46]}"),
    ("atoms: [45]}", "atoms: [45.05]}"),
    ("precision: 1}", "precision: 25}"),
])
def test_grid_mistakes_are_refused(edit: str, message: str) -> None:
    with pytest.raises(SchemaError):
        schema_with("", COLUMNS.replace(edit, message))


def test_bin_width_must_divide_the_range() -> None:
    with pytest.raises(SchemaError, match="does not divide the 101 whole numbers"):
        schema_with("", "columns:\n  - {name: n, kind: integer, bounds: [0, 100], bin_width: 10}\n")
    # the integer span [0, 99] has 100 values: ten bins of ten
    s = schema_with("", "columns:\n  - {name: n, kind: integer, bounds: [0, 99], bin_width: 10}\n")
    assert s.columns[0].n_bins == 10


def test_valid_must_contain_the_bounds() -> None:
    with pytest.raises(SchemaError, match="must contain the bounds"):
        schema_with("", COLUMNS.replace("bin_width: 10000,", "bin_width: 10000, valid: [1, 5],"))


def test_a_contradictory_rule_is_refused_before_any_data() -> None:
    s = schema_with('rules:\n  - {name: never, require: "income > 200000"}\n')
    with pytest.raises(SchemaError, match="'never' is false on all"):
        check_satisfiable(s)
    s = schema_with("rules:\n  - {name: typed, require: \"sex + 1 > 2\"}\n")
    with pytest.raises(SchemaError, match="'typed' cannot be evaluated"):
        check_satisfiable(s)
    check_satisfiable(schema_with('rules:\n  - {name: ok, require: "income > 50000"}\n'))


# -- decoding: values on the grid, atoms exact ---------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_decoded_numbers_lie_on_the_grid_and_recode_to_their_code(seed: int) -> None:
    s = schema_with()
    d = Domain.from_schema(s)
    rng = np.random.default_rng(seed)
    codes = np.column_stack([rng.integers(0, n, 500) for n in d.sizes])
    t = d.decode(codes, rng)
    ct = t["ct"].to_numpy()
    assert np.allclose(ct * 10, np.round(ct * 10), atol=1e-9)
    # the atom decodes exactly, and a bin never gives the atom's value
    atom_code = s.column("ct").n_bins
    assert np.all((ct == 45) == (codes[:, 2] == atom_code))
    income = t["income"].to_numpy()
    assert np.all((income == 0) == (codes[:, 3] == s.column("income").n_bins))
    w = t["weight"].drop_nulls().to_numpy()
    assert np.allclose(w * 10, np.round(w * 10), atol=1e-9)
    assert np.array_equal(recode(d, t), codes)


def test_derived_columns_are_computed_and_rounded() -> None:
    s = schema_with()
    df = pl.DataFrame({"sex": ["F", "M"], "pregnant": ["no", "no"], "ct": [20.0, 45.0],
                       "income": [0, 5], "weight": [70.0, None], "height": [175.0, 180.0]})
    out = derive(s, df)
    assert out.columns[-1] == "bmi"
    assert out["bmi"].to_list() == [22.86, None]


# -- generation: enforced rules ------------------------------------------------------------


class _FixedModel:
    """A stand-in for a fitted model: rows drawn uniformly from ``choices``."""

    def __init__(self, choices: np.ndarray) -> None:
        self.choices = choices
        self.total = float(len(choices))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.choices[rng.integers(0, len(self.choices), n)]


def _rows(d: Domain, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.integers(0, k, n) for k in d.sizes])


def test_generation_redraws_rows_that_break_an_error_rule() -> None:
    s = schema_with("""rules:
  - {name: men_not_pregnant, require: "sex = 'F' OR pregnant = 'no'"}
  - {name: high_income, require: "income < 90000", severity: warning}
""")
    d = Domain.from_schema(s)
    g = generate(_FixedModel(_rows(d, 1000, 1)), d, s, 4000,  # type: ignore[arg-type]
                 np.random.default_rng(2))
    t = g.table
    assert t.height == 4000 and g.codes.shape == (4000, len(d.sizes))
    assert t.filter((pl.col("sex") == "M") & (pl.col("pregnant") == "yes")).height == 0
    # about a quarter of uniform draws break the rule: the count is reported
    share = g.rejected["men_not_pregnant"] / g.draws
    assert 0.18 < share < 0.32
    assert g.draws - g.rejected["men_not_pregnant"] >= 4000
    assert g.warnings["high_income"] == t.filter(pl.col("income") >= 90000).height > 0
    assert np.array_equal(recode(d, t.drop("bmi")), g.codes)  # codes kept with their rows


def test_generation_fails_naming_the_rule_when_almost_nothing_passes() -> None:
    s = schema_with('rules:\n  - {name: rare, require: "income = 0 AND ct = 45"}\n')
    d = Domain.from_schema(s)
    rows = _rows(d, 200, 3)
    rows[:, 3] = 0  # income never 0 in this model
    with pytest.raises(OutputValidationError, match="rule 'rare' rejected"):
        generate(_FixedModel(rows), d, s, 100, np.random.default_rng(0))  # type: ignore[arg-type]
    assert MAX_DRAW_FACTOR >= 10


# -- input: impossible vs rare, and schema check listing every problem ---------------------


CHECK_SCHEMA = HEAD + """rules:
  - {name: men_not_pregnant, require: "sex = 'F' OR pregnant = 'no'"}
  - {name: heavy, require: "weight < 150", severity: warning}
columns:
  - {name: sex, kind: categorical, categories: [F, M]}
  - {name: pregnant, kind: categorical, categories: ["no", "yes"]}
  - {name: meds, kind: integer, bounds: [0, 49], bin_width: 10, valid: [0, 1000],
     on_out_of_domain: clamp}
  - {name: age, kind: integer, bounds: [0, 99], bin_width: 10}
  - {name: weight, kind: float, nullable: true, bounds: [30, 200], bin_width: 10, precision: 0.1}
  - {name: height, kind: float, nullable: true, bounds: [120, 220], bin_width: 20}
  - {name: bmi, kind: derived, expr: "weight / POWER(height / 100, 2)", precision: 0.1}
"""

CANARY = "777.77"


def _write(tmp_path: Path, rows: dict[str, list[str]]) -> tuple[Path, Path]:
    schema, table = tmp_path / "s.yaml", tmp_path / "t.csv"
    schema.write_text(CHECK_SCHEMA)
    pl.DataFrame(rows).write_csv(table)
    return schema, table


def _good_rows(n: int = 20) -> dict[str, list[str]]:
    return {"sex": ["F", "M"] * (n // 2), "pregnant": ["no"] * n, "meds": ["3"] * n,
            "age": ["40"] * n, "weight": ["70.0"] * n, "height": ["175"] * n,
            "bmi": ["22.9"] * n}


def test_schema_check_lists_every_problem_in_one_run(tmp_path: Path) -> None:
    rows = _good_rows()
    rows["pregnant"][3] = "yes"          # a man marked pregnant: error rule
    rows["age"][5] = "150"               # out of the domain
    rows["age"][6] = "x"                 # not an integer
    rows["weight"][7] = "180.0"          # warning rule (and bmi no longer matches)
    rows["meds"][8] = "-1"               # impossible: outside valid
    rows["meds"][9] = "60"               # rare: clamped, fine
    rows["bmi"][10] = CANARY             # differs from its formula
    schema, table = _write(tmp_path, rows)
    res = CliRunner().invoke(main, ["schema", "check", "--schema", str(schema), "--input",
                                    str(table), "--json"])
    assert res.exit_code == 3, res.output
    doc = json.loads(res.stdout)
    got = {(p["column"], p["rule"], p["rows"], p["first_row"], p["severity"])
           for p in doc["problems"]}
    assert got == {
        ("age", "parse-integer", 1, 7, "error"),
        ("age", "bounds", 1, 6, "error"),
        ("meds", "valid", 1, 9, "error"),
        (None, "men_not_pregnant", 1, 4, "error"),
        (None, "heavy", 1, 8, "warning"),
        ("bmi", "derived", 2, 8, "error"),
    }
    assert CANARY not in res.output and "-1" not in res.stderr
    # without --json: one line per problem, then the summary
    res = CliRunner().invoke(main, ["schema", "check", "--schema", str(schema), "--input",
                                    str(table)])
    assert res.exit_code == 3
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 7 and "6 problem(s)" in lines[-1]
    assert any("men_not_pregnant" in line and "first at data row 4" in line for line in lines)


def test_schema_check_passes_a_clean_table_and_shows_warnings(tmp_path: Path) -> None:
    rows = _good_rows()
    rows["weight"][2] = "160.0"
    rows["bmi"][2] = "52.2"
    schema, table = _write(tmp_path, rows)
    res = CliRunner().invoke(main, ["schema", "check", "--schema", str(schema), "--input",
                                    str(table)])
    assert res.exit_code == 0, res.output
    assert "20 rows checked" in res.stdout
    assert "warning: rule 'heavy' is false in 1 row(s)" in res.stderr


def test_release_refuses_an_impossible_value_but_clamps_a_rare_one(tmp_path: Path) -> None:
    rows = _good_rows(200)
    rows["meds"][9] = "60"
    schema, table = _write(tmp_path, rows)
    ledger = f"sqlite:///{tmp_path / 'l' / 'ledger.db'}"
    (tmp_path / "l").mkdir()
    assert CliRunner().invoke(main, ["ledger", "init", "--ledger", ledger, "--dataset-id", "t",
                                     "--total-epsilon", "5"]).exit_code == 0
    args = ["release", "--schema", str(schema), "--input", str(table), "--ledger", ledger,
            "--engine", "mst", "--epsilon", "1", "--seed", "1", "--quiet"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o" / "b1")])
    assert res.exit_code == 0, res.output
    rows["meds"][9] = "-1"
    pl.DataFrame(rows).write_csv(table)
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "o" / "b2")])
    assert res.exit_code == 3
    assert "column 'meds'" in res.stderr and "[rule: valid]" in res.stderr
    assert not (tmp_path / "o" / "b2").exists()


def test_the_readme_schema_example_loads_and_its_rules_can_hold() -> None:
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"```yaml\n(format: dpsynth.*?)```", readme, re.S)
    assert block is not None
    schema = parse_schema(block.group(1))
    check_satisfiable(schema)
    assert schema.rules and schema.derived_columns


# -- fitting: the engines model an error rule's columns jointly ----------------------------


def test_engines_measure_the_columns_of_each_error_rule_jointly(make_session: SessionFactory) -> None:
    from conftest import SeededNoise

    from dpsynth.engines.aim import AIMSettings, fit_aim
    from dpsynth.engines.mst import MSTSettings, fit_mst
    from dpsynth.rules import rule_cliques

    s = schema_with("""rules:
  - {name: men_not_pregnant, require: "sex = 'F' OR pregnant = 'no'"}
  - {name: bmi_range, require: "bmi IS NULL OR bmi < 40"}
  - {name: w, require: "income > 0", severity: warning}
""")
    # a derived column stands for the measured columns its formula reads
    assert rule_cliques(s) == (("sex", "pregnant"), ("weight", "height"))
    rng = np.random.default_rng(0)
    sizes = [2, 2, 6]
    codes = np.column_stack([rng.integers(0, n, 3000) for n in sizes])
    keep = (("c0", "c1"), ("c1", "c2"))
    for seed in range(5):  # a 3-column tree holds both pairs by chance 1 time in 3
        model = fit_mst(make_session(codes, sizes, SeededNoise(seed), rho=0.5),
                        MSTSettings(keep_together=keep))
        measured = {tuple(m.columns) for m in model.measurements}
        assert {("c0", "c1"), ("c1", "c2")} <= measured, measured
    session = make_session(codes, sizes, SeededNoise(1), rho=0.5)
    fit_aim(session, AIMSettings(keep_together=keep, max_rounds=4))
    forced = [c.columns for c in session.charges if c.step == "aim/keep-together"]
    assert forced == [("c0", "c1"), ("c1", "c2")], session.charges
    plain = fit_mst(make_session(codes, sizes, SeededNoise(1), rho=0.5), MSTSettings())
    assert len([m for m in plain.measurements if len(m.columns) == 2]) == 2  # a tree: d - 1


# -- structural zeros: the model puts no mass where an error rule cannot hold -------------


def test_structural_zeros_are_the_cells_a_rule_forbids_for_every_value() -> None:
    from dpsynth.rules import structural_zeros

    s = parse_schema(HEAD + """rules:
  - {name: young_unmarried, require: "(married IS NULL) = (age < 15)"}
  - {name: inside_a_bin, require: "age < 12 OR income > 0"}
columns:
  - {name: married, kind: categorical, nullable: true, categories: ["no", "yes"]}
  - {name: age, kind: integer, bounds: [0, 29], bin_edges: [0, 10, 15, 30]}
  - {name: income, kind: integer, bounds: [0, 99], bin_width: 50, atoms: [0]}
""")
    (cols, cells), (cols2, cells2) = structural_zeros(s)
    assert cols == ("married", "age")
    # married no/yes (0, 1) under 15 (age bins 0, 1); null (2) from 15 (bin 2)
    assert cells == ((0, 0), (0, 1), (1, 0), (1, 1), (2, 2))
    # age bin [10, 15) holds ages 10 and 11 where the rule holds: not a zero;
    # only bins [15, 30) (code 2) with the atom 0 (code 2 of income) are
    assert (cols2, cells2) == (("age", "income"), ((2, 2),))


def test_estimation_with_zeros_leaves_impossible_cells_and_configurations_empty() -> None:
    from dpsynth.engines.estimation import Observation, estimate

    rng = np.random.default_rng(0)
    sizes = [3, 4, 5]
    zero01 = np.zeros((3, 4), bool)
    zero01[0, :2] = True
    zero12 = np.zeros((4, 5), bool)
    zero12[3, :] = True  # value 3 of attribute 1 is impossible altogether
    obs = [Observation((0, 1), np.abs(rng.normal(80, 20, (3, 4))), 5.0),
           Observation((1, 2), np.abs(rng.normal(50, 20, (4, 5))), 5.0),
           Observation((2,), np.full(5, 200.0), 5.0)]
    est = estimate(sizes, obs, zeros={(0, 1): zero01, (1, 2): zero12})
    m01, m12 = est.model.marginal((0, 1)), est.model.marginal((1, 2))
    assert not np.isnan(m01).any() and not np.isnan(m12).any()
    assert np.all(m01[zero01] == 0) and np.all(m12[zero12] == 0) and np.all(m01[:, 3] == 0)
    assert m01.sum() == pytest.approx(est.model.marginal((2,)).sum())
    from dpsynth.engines.sampler import sample

    rows = sample(est.model, 2000, np.random.default_rng(1)).astype(np.int64)
    assert not np.any(zero01[rows[:, 0], rows[:, 1]]) and not np.any(rows[:, 1] == 3)


def test_probe_values_of_dates_cover_each_bin() -> None:
    from dpsynth.domain import probe_values

    s = parse_schema(HEAD + "columns:\n  - {name: d, kind: date, nullable: true, "
                     "bounds: ['2020-01-15', '2020-03-10'], bin_unit: month}\n")
    f = probe_values(s.column("d"))
    got = {code: (g["value"].min(), g["value"].max(), g.height)
           for (code,), g in f.group_by(["code"])}
    import datetime as dt
    assert got[0] == (dt.date(2020, 1, 15), dt.date(2020, 1, 31), 17)
    assert got[2] == (dt.date(2020, 3, 1), dt.date(2020, 3, 10), 10)
    assert got[3][2] == 1  # null
