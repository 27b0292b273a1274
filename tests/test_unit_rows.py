"""The privacy unit made visible (issue 14, item 4): what the rows represent, the DP
rows-per-patient histogram, and ``represent: all_rows`` (the modelled row count and the
weight column)."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from test_release import SCHEMA, make_table

from dpsynth.bundle import write_synthetic_csv, write_synthetic_parquet
from dpsynth.cli import main
from dpsynth.domain import Domain
from dpsynth.engines.mst import MSTSettings, fit_mst
from dpsynth.errors import SchemaError, UsageError
from dpsynth.generate import generate
from dpsynth.io import load_encoded
from dpsynth.privacy.accountant import UNIT_ROWS_STEP, Accountant, Budget
from dpsynth.privacy.session import MeasurementSession
from dpsynth.record import RowsPerPatient
from dpsynth.report.datasheet import datasheet_markdown
from dpsynth.report.unit import unit_section_html
from dpsynth.schema import UNIT_ROWS_COLUMN, parse_schema

ALL_ROWS = SCHEMA.replace("privacy_unit: {column: pid, max_rows: 2}",
                          "privacy_unit: {column: pid, max_rows: 2, rows_cap: 3, "
                          "row_name: visit, represent: all_rows}")
EXPLICIT_OFF = SCHEMA.replace("privacy_unit: {column: pid, max_rows: 2}",
                              "privacy_unit: {column: pid, max_rows: 2, represent: kept_rows}")


def _unit(k: int, extra: str = "") -> str:
    return SCHEMA.replace("privacy_unit: {column: pid, max_rows: 2}",
                          f"privacy_unit: {{column: pid, max_rows: {k}{extra}}}")


# -- the DP histogram ----------------------------------------------------------------------


def test_rows_per_patient_is_charged_with_sensitivity_1_and_its_noise_matches_the_charge() -> None:
    exact = np.array([5000, 3000, 1000, 50], dtype=np.int64)
    acc = Accountant(Budget(10.0))
    codes = np.zeros((10, 1), dtype=np.uint8)
    session = MeasurementSession(codes, ["a"], [2], 3, acc, unit_rows=exact)  # k = 3
    rho = 0.002
    draws = [session.measure_unit_rows(rho) for _ in range(300)]
    charge = session.charges[0]
    assert len(session.charges) == 300
    assert charge.step == UNIT_ROWS_STEP and charge.sensitivity == 1.0
    assert charge.rho <= rho * (1 + 1e-9)
    sigma = draws[0].sigma
    assert charge.noise_scale == sigma
    # zCDP of the discrete Gaussian: rho = sensitivity^2 / (2 sigma^2), sensitivity 1 (not k)
    assert charge.rho == pytest.approx(1 / (2 * sigma**2), rel=1e-6)
    assert sigma == pytest.approx(1 / np.sqrt(2 * rho), rel=1e-6)
    # the noise actually drawn has that scale: 1200 draws estimate sigma within
    # 4 standard errors (relative standard error of a standard deviation: 1/sqrt(2n))
    noise = np.concatenate([d.counts - exact for d in draws])
    assert noise.std() == pytest.approx(sigma, rel=4 / np.sqrt(2 * noise.size))
    assert abs(noise.mean()) < 4 * sigma / np.sqrt(noise.size)
    assert session.spent.rho == pytest.approx(300 * charge.rho)


def test_a_session_without_the_histogram_refuses_to_measure_it() -> None:
    session = MeasurementSession(np.zeros((3, 1), dtype=np.uint8), ["a"], [2], 1,
                                 Accountant(Budget(1.0)))
    with pytest.raises(UsageError):
        session.measure_unit_rows(0.1)
    assert session.charges == ()


def test_the_exact_histogram_counts_every_patient_once_clamped_at_the_cap(tmp_path: Path) -> None:
    df = make_table(tmp_path / "t.csv", n_patients=400)
    per_patient = collections.Counter(df["pid"].to_list())
    for cap in (2, 3, 5):
        schema = parse_schema(_unit(2, f", rows_cap: {cap}"))
        enc = load_encoded(tmp_path / "t.csv", schema, bounding_secret=1)
        expected = np.bincount([min(n, cap) - 1 for n in per_patient.values()], minlength=cap)
        assert enc.unit_rows is not None
        assert enc.unit_rows.tolist() == expected.tolist()
        assert enc.unit_rows.sum() == len(per_patient)


def test_rows_cap_defaults_to_10_and_must_cover_k() -> None:
    assert parse_schema(SCHEMA).privacy_unit.rows_cap == 10
    assert parse_schema(_unit(12)).privacy_unit.rows_cap == 12
    with pytest.raises(SchemaError, match="rows_cap"):
        parse_schema(_unit(3, ", rows_cap: 2"))


# -- the wording -----------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "words"), [
    (1, "one randomly chosen visit per patient"),
    (3, "up to 3 visits per patient"),
])
def test_what_the_rows_represent_is_said_in_the_schema_words(k: int, words: str) -> None:
    schema = parse_schema(_unit(k, ", row_name: visit"))
    assert words in schema.privacy_unit.rows_represent
    assert "'pid'" in schema.privacy_unit.rows_represent
    hist = RowsPerPatient(counts=(900.0, 300.0, -4.0, 50.0), sigma=40.0, max_rows=k)
    sheet = datasheet_markdown(schema, {"release_id": "r", "unit_rows": hist})
    assert "## What the rows represent" in sheet and words in sheet
    assert "| 4 or more visits | 50 |" in sheet and "| 3 visits | -4 |" in sheet
    html = "\n".join(unit_section_html(schema, hist))
    assert words in html and "4 or more visits" in html
    assert "shares among patients, not among visits" in sheet


def test_derived_figures_of_the_histogram() -> None:
    hist = RowsPerPatient(counts=(60.0, 30.0, -5.0, 10.0), sigma=1.0, max_rows=1)
    assert hist.patients == 100.0
    assert hist.shares() == [0.6, 0.3, 0.0, 0.1]
    assert hist.mean_rows == pytest.approx((60 + 60 + 40) / 100)
    assert hist.kept_share == pytest.approx(100 / 160)
    assert hist.over_k_share == pytest.approx(0.4)


# -- end to end: the reports, the correction -------------------------------------------------


def _release(tmp_path: Path, schema_text: str, name: str) -> Path:
    (tmp_path / f"{name}.yaml").write_text(schema_text)
    if not (tmp_path / "table.csv").exists():
        make_table(tmp_path / "table.csv")
        res = CliRunner().invoke(main, ["ledger", "init", "--ledger",
                                        f"sqlite:///{tmp_path / 'l.db'}", "--dataset-id",
                                        "clinic", "--total-epsilon", "5"])
        assert res.exit_code == 0, res.output
    out = tmp_path / name
    res = CliRunner().invoke(main, [
        "release", "--schema", str(tmp_path / f"{name}.yaml"), "--input",
        str(tmp_path / "table.csv"), "--out", str(out), "--ledger",
        f"sqlite:///{tmp_path / 'l.db'}", "--engine", "mst", "--seed", "5", "--quiet",
        "--epsilon", "1"])
    assert res.exit_code == 0, res.output
    return out


def test_a_release_reports_the_unit_and_charges_the_histogram(tmp_path: Path) -> None:
    out = _release(tmp_path, SCHEMA, "kept")
    privacy = json.loads((out / "privacy-report.json").read_text())
    assert privacy["privacy_unit"]["rows_represent"].startswith("up to 2 rows per patient")
    steps = [s for s in privacy["steps"] if s["step"] == UNIT_ROWS_STEP]
    assert len(steps) == 1 and steps[0]["sensitivity"] == 1.0
    assert steps[0]["rho"] == pytest.approx(1 / (2 * steps[0]["noise_scale"] ** 2), rel=1e-6)
    assert steps[0]["rho"] == pytest.approx(0.02 * privacy["release"]["budget_rho"], rel=1e-6)
    assert privacy["release"]["spent_rho"] <= privacy["release"]["budget_rho"] * (1 + 1e-9)
    assert "What a synthetic row represents" in (out / "privacy-report.html").read_text()
    quality = (out / "quality-report.html").read_text()
    assert "What the rows represent" in quality and "rows-per-patient" in quality
    sheet = (out / "DATASHEET.md").read_text()
    assert "up to 2 rows per patient" in sheet and "| 10 or more rows |" in sheet
    synth = pl.read_parquet(out / "synthetic.parquet")
    assert "row_weight" not in synth.columns and UNIT_ROWS_COLUMN not in synth.columns


def test_represent_all_rows_adds_a_validated_weight_column(tmp_path: Path) -> None:
    out = _release(tmp_path, ALL_ROWS, "all")
    synth = pl.read_parquet(out / "synthetic.parquet")
    assert synth.columns[-1] == "row_weight" and UNIT_ROWS_COLUMN not in synth.columns
    # k = 2, cap 3: a patient with n rows keeps min(n, 2), each standing for n / min(n, 2)
    assert set(synth["row_weight"].unique().to_list()) <= {1.0, 1.5}
    assert synth["row_weight"].null_count() == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["columns"] == synth.columns
    results = json.loads((out / "validation/results.json").read_text())
    checked = {json.dumps(r, sort_keys=True) for r in results.get("results", [])}
    assert any('"row_weight"' in r and "between" in r for r in checked)
    assert CliRunner().invoke(main, ["inspect", str(out)]).exit_code == 0
    side = json.loads((out / "synthetic.csv.meta.json").read_text())
    assert side["dpsynth.synthetic"] is True and side["columns"][-1]["name"] == "row_weight"
    sheet = (out / "DATASHEET.md").read_text()
    assert "weight 'row_weight'" in sheet and "approximation" in sheet
    quality = (out / "quality-report.html").read_text()
    assert f"<code>{UNIT_ROWS_COLUMN}</code> is that modelled count" in quality
    # the saved model holds the internal row count: dpsynth sample turns it into the weight
    drawn = tmp_path / "drawn.parquet"
    res = CliRunner().invoke(main, ["sample", "--bundle", str(out), "--rows", "300", "--out",
                                    str(drawn), "--seed", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    sampled = pl.read_parquet(drawn)
    assert sampled.columns == synth.columns and sampled.height == 300
    assert set(sampled["row_weight"].unique().to_list()) <= {1.0, 1.5}


def test_the_modelled_row_count_is_the_patients_clamped_count(tmp_path: Path) -> None:
    df = make_table(tmp_path / "t.csv", n_patients=500)
    n_rows = collections.Counter(df["pid"].to_list())
    schema = parse_schema(ALL_ROWS)
    enc = load_encoded(tmp_path / "t.csv", schema, bounding_secret=3)
    assert enc.columns[-1] == UNIT_ROWS_COLUMN and enc.sizes[-1] == 3
    off = load_encoded(tmp_path / "t.csv", parse_schema(SCHEMA), bounding_secret=3)
    # the same rows are kept, with the same codes; the count is one more column
    assert np.array_equal(enc.codes[:, :-1], off.codes)
    # every kept row carries its patient's count: the rows with count code c belong to
    # patients with min(n, 3) = c + 1, each keeping min(n, 2) rows
    kept_by_code = np.bincount(enc.codes[:, -1].astype(np.int64), minlength=3)
    expected = np.zeros(3, dtype=np.int64)
    for n in n_rows.values():
        expected[min(n, 3) - 1] += min(n, 2)
    assert kept_by_code.tolist() == expected.tolist()


@pytest.mark.parametrize(("change", "message"), [
    (", represent: all_rows, weight_column: age", "weight_column"),
    (", represent: all_rows, weight_column: _unit_rows", "weight_column"),
])
def test_the_weight_column_cannot_clash(change: str, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        parse_schema(_unit(2, change))


def test_all_rows_needs_a_patient_column() -> None:
    text = SCHEMA.replace("privacy_unit: {column: pid, max_rows: 2}",
                          "privacy_unit: {represent: all_rows}")
    with pytest.raises(SchemaError, match="patient id column"):
        parse_schema(text)


def test_with_the_option_off_nothing_changes(tmp_path: Path, seeded_noise: object) -> None:
    """``represent: kept_rows`` (the default, written or not): the same codes, the same
    model columns, and for a fixed model and seed the same synthetic files."""
    make_table(tmp_path / "t.csv", n_patients=600)
    implicit, explicit = parse_schema(SCHEMA), parse_schema(EXPLICIT_OFF)
    a = load_encoded(tmp_path / "t.csv", implicit, bounding_secret=9)
    b = load_encoded(tmp_path / "t.csv", explicit, bounding_secret=9)
    assert np.array_equal(a.codes, b.codes) and a.columns == b.columns
    assert a.columns == Domain.from_schema(implicit).names == Domain.for_model(implicit).names
    assert implicit.released_columns == explicit.released_columns
    session = MeasurementSession(a.codes, a.columns, a.sizes, 2, Accountant(Budget(1.0)),
                                 _noise=seeded_noise)  # type: ignore[arg-type]
    model = fit_mst(session, MSTSettings())
    files = []
    for schema in (implicit, explicit):
        gen = generate(model, Domain.for_model(schema), schema, 500, np.random.default_rng(4))
        files.append((write_synthetic_parquet(gen.table, "r"), write_synthetic_csv(gen.table, "r")))
    assert files[0] == files[1]


# -- the benchmark's helpers ------------------------------------------------------------------


def test_the_benchmark_replicates_rows_by_their_weights_and_edits_only_the_unit() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from unit_effect import expand, schema_variant

    df = pl.DataFrame({"x": list(range(4000)), "row_weight": [1.0, 1.5, 2.0, 4.25] * 1000})
    out = expand(df, "row_weight")
    assert out.columns == ["x"]
    reps = out.group_by("x").len().sort("x")["len"].to_numpy().astype(np.int64)
    w = df["row_weight"].to_numpy()
    assert np.all((reps == np.floor(w)) | (reps == np.ceil(w)))
    # stochastic rounding keeps the expected count: 1000 rows of weight 1.5 give
    # 1500 +- 4 * sqrt(1000 * 0.25) copies
    half = reps[w == 1.5].sum()
    assert abs(half - 1500) < 4 * np.sqrt(250)
    shipped = (Path(__file__).resolve().parents[1] / "schemas/diabetes130.yaml").read_text()
    variant = schema_variant(shipped, 3, "all_rows")
    unit = parse_schema(variant).privacy_unit
    assert (unit.max_rows, unit.represent) == (3, "all_rows")
    kept = parse_schema(schema_variant(shipped, 2, "kept_rows"))
    assert kept.privacy_unit.represent == "kept_rows" and kept.privacy_unit.max_rows == 2
    assert [c.name for c in kept.columns] == [c.name for c in parse_schema(shipped).columns]



def test_schema_check_input_works_with_the_weight_column(tmp_path: Path) -> None:
    """``schema check --input`` on an ``all_rows`` schema (the shipped diabetes130 one is):
    the weight is computed from the modelled row count, which input rows do not have, so
    the check leaves it out (0.1 failed with a misleading csv-format error)."""
    make_table(tmp_path / "t.csv", n_patients=400)
    (tmp_path / "s.yaml").write_text(ALL_ROWS.replace(
        "columns:", "rules: [{name: adults_only, require: \"age >= 18\", severity: warning}]"
                    "\ncolumns:"))
    res = CliRunner().invoke(main, ["schema", "check", "--schema", str(tmp_path / "s.yaml"),
                                    "--input", str(tmp_path / "t.csv"), "--json"])
    assert res.exit_code == 0, res.output
    [problem] = json.loads(res.stdout)["problems"]  # the rest of the check still runs
    assert problem["rule"] == "adults_only" and problem["rows"] > 0
