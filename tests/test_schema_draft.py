"""``dpsynth schema draft``: a schema learnt under DP, charged before the table is read.

Real components throughout: real CSV/Parquet files, the real profile and draft session,
OpenDP's own noise (never seeded), real SQLite ledgers, the real CLI and release. Noise
makes single outputs random, so each statistical claim is checked where the noise scale
(reported by the session) makes it certain in practice, and the privacy claim (a value
only one patient holds never appears) over many runs.
"""

from __future__ import annotations

import gzip
import json
import math
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner

from dpsynth.cli import main
from dpsynth.draft import DraftConfig, propose
from dpsynth.errors import BudgetError
from dpsynth.io.profile import TableProfile, provisional_schema, read_header
from dpsynth.io.reading import open_table
from dpsynth.privacy.accountant import ApproxDP, Budget
from dpsynth.privacy.draft_session import DraftSession
from dpsynth.privacy.ledger import open_ledger
from dpsynth.schema import load_schema

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "diabetes130" / "diabetic_data.csv.gz"


def _ledger(tmp_path: Path, dataset: str = "t", total: float = 5.0) -> str:
    url = f"sqlite:///{tmp_path / 'ledger' / 'l.db'}"
    (tmp_path / "ledger").mkdir(exist_ok=True)
    with open_ledger(url) as led:
        led.init_dataset(dataset, ApproxDP(total, 1e-9))
    return url


def _draft(args: list[str]) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, ["schema", "draft", *args])
    return res.exit_code, res.stdout, res.stderr


def _charges(url: str, dataset: str = "t") -> list[dict]:
    res = CliRunner().invoke(main, ["ledger", "show", "--ledger", url, "--dataset-id", dataset,
                                    "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["datasets"][0]["charges"]


def _clinic_table(path: Path, n_patients: int = 3000) -> None:
    """Patients with 1-3 rows each; clinic A is held by about 2/3 of the patients, B by the
    rest, and RARE by exactly one patient (on every one of their 4 rows)."""
    rng = random.Random(7)
    rows = []
    for p in range(n_patients):
        clinic = "A" if p % 3 else "B"
        for _ in range(rng.randint(1, 3)):
            rows.append((f"P{p:05d}", clinic, str(rng.randint(20, 90))))
    rows += [("P99999", "RARE", "50")] * 4
    rng.shuffle(rows)
    pl.DataFrame(rows, schema=["patient", "clinic", "age"], orient="row").write_csv(path)


# -- the privacy claims ----------------------------------------------------------------------


def test_a_category_held_by_one_patient_never_appears(tmp_path: Path) -> None:
    """Over many drafts (fresh OpenDP noise each time, one fixed bounding secret), the
    value only one patient holds is never proposed, and the value most patients hold
    always is: its count exceeds the threshold by many noise sigmas."""
    table = tmp_path / "clinics.csv"
    _clinic_table(table)
    header, types = read_header(table)
    cfg = DraftConfig(input_path=table, out_path=tmp_path / "d.yaml", ledger_url="unused",
                      dataset_id="clinics", epsilon=1.0, delta=1e-9, unit_column="patient",
                      max_rows=2)
    budget = Budget(ApproxDP(cfg.epsilon, cfg.delta - cfg.threshold_delta).rho.rho)
    runs, seen_rare, seen_a = 100, 0, 0
    with open_table(table, provisional_schema(header)) as lf:
        profile = TableProfile(lf, header, "patient", cfg.contribution_bound, secret=11)
        for _ in range(runs):
            session = DraftSession(profile, header, cfg.contribution_bound, budget,
                                   cfg.threshold_delta, unit_column="patient")
            draft = propose(session, header, types, cfg, "test")
            clinic = next(c for c in draft.columns if c.name == "clinic")
            cats = dict((k, v) for k, v, _ in clinic.fields).get("categories", [])
            seen_rare += "RARE" in cats
            seen_a += "A" in cats
            charge = next(c for c in session.charges if c.step == "draft:clinic:categories")
            # the guarantee behind "never": the rare value passes with probability <= delta
            assert charge.delta <= cfg.threshold_delta
            # A (about 2000 patients, more than 2000 rows at k=2) clears the threshold
            # (at most k + sigma * sqrt(2 ln(1/delta))) by more than 6 noise sigmas
            sigma = charge.noise_scale
            assert sigma is not None
            threshold_at_most = 2 + sigma * math.sqrt(2 * math.log(1 / charge.delta))
            assert (2000 - threshold_at_most) / sigma > 6
    assert seen_rare == 0
    assert seen_a == runs


def test_the_session_charges_before_it_answers(tmp_path: Path) -> None:
    """A step the remaining budget cannot cover is refused and answers nothing; the
    charges never exceed the total."""
    table = tmp_path / "clinics.csv"
    _clinic_table(table, 300)
    header, _ = read_header(table)
    with open_table(table, provisional_schema(header)) as lf:
        profile = TableProfile(lf, header, "patient", 1)
        session = DraftSession(profile, header, 1, Budget(1e-3), 1e-10, unit_column="patient")
        session.classes("clinic", 6e-4, "a")
        with pytest.raises(BudgetError):
            session.classes("clinic", 6e-4, "b")
        with pytest.raises(BudgetError):
            session.keys("clinic", 1e-4, 1e-9, "c")  # more delta than the session has
        assert [c.step for c in session.charges] == ["a"]
        assert sum(c.rho for c in session.charges) <= 1e-3


# -- what a draft proposes ---------------------------------------------------------------------


def _mixed_table(n: int = 4000) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    income = np.where(rng.random(n) < 0.3, 0, rng.integers(1, 200, n) * 100)
    return pl.DataFrame({
        "row_id": [str(i) for i in range(100_000, 100_000 + n)],
        "patient": [f"p{i}" for i in range(n)],
        "weight": [f"{w:.1f}" for w in rng.normal(75, 12, n)],
        "income": [str(x) for x in income],
        "visit": [f"20{10 + i % 10}-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(n)],
        "ward": rng.choice(["north", "south", "east"], n).tolist(),
        "note": [f"note {i} {rng.integers(1e9)}" for i in range(n)],
    })


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_kinds_bounds_precision_and_atoms(tmp_path: Path, fmt: str) -> None:
    """At a large epsilon the draft finds each kind (from DP counts for CSV, from the
    Parquet types for Parquet), bounds that hold nearly every value, the float's precision
    and the integer's atom at 0; the draft passes schema check as written."""
    df = _mixed_table()
    table = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        df.write_csv(table)
    else:
        df.with_columns(pl.col("weight").cast(pl.Float64), pl.col("income").cast(pl.Int64),
                        pl.col("visit").str.to_date()).write_parquet(table)
    url = _ledger(tmp_path)
    out = tmp_path / "d.yaml"
    code, stdout, stderr = _draft(["--input", str(table), "--out", str(out), "--ledger", url,
                                   "--dataset-id", "t", "--epsilon", "4", "--unit-column",
                                   "patient", "--json"])
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert summary["columns"] == {"row_id": "identifier", "patient": "identifier",
                                  "weight": "float", "income": "integer", "visit": "date",
                                  "ward": "categorical", "note": "text"}
    schema = load_schema(out)
    weight, income = schema.column("weight"), schema.column("income")
    assert weight.precision == 0.1
    assert weight.bounds is not None and weight.bounds[0] <= 50 and weight.bounds[1] >= 100
    assert income.atoms == (0.0,)
    assert schema.column("ward").categories == ("east", "north", "south")
    assert schema.column("visit").bin_unit == "month"
    res = CliRunner().invoke(main, ["schema", "check", "--schema", str(out), "--input",
                                    str(table)])
    assert res.exit_code == 0, res.output


def test_every_value_is_commented_and_strings_are_quoted(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    _mixed_table(2000).write_csv(table)
    url = _ledger(tmp_path)
    out = tmp_path / "d.yaml"
    code, _, stderr = _draft(["--input", str(table), "--out", str(out), "--ledger", url,
                              "--dataset-id", "t", "--quiet", "--epsilon", "2"])
    assert code == 0, stderr
    body = [ln for ln in out.read_text().splitlines() if not ln.startswith("#")]
    for line in body:
        key, _, value = line.strip().removeprefix("- ").partition(":")
        value = value.split("  #")[0].strip()
        if key in ("format", "name", "kind", "description", "on_out_of_domain",
                   "on_unreadable"):
            assert value.startswith('"'), line  # no bare YAML scalar to be misread
        if key not in ("privacy_unit", "columns", "name", "format") and value:
            assert ("DP estimate (eps=" in line and "review" in line) \
                or "fill in from documentation" in line or "public" in line \
                or "given by you" in line or "each row is one person" in line \
                or "become null" in line or "moved onto" in line or "nullable" in line \
                or "cells" in line, line
    assert "Other" in out.read_text()


# -- the shipped example: ledger, check, release ---------------------------------------------


def test_shipped_example_draft_check_and_release(tmp_path: Path) -> None:
    """The draft of the shipped example passes schema check as written; the ledger shows its
    charge (kind schema-draft) before a release made with the draft unedited, whose privacy
    report counts the draft in what was spent so far on the dataset."""
    url = _ledger(tmp_path, "diabetes130", 3.0)
    out = tmp_path / "draft.yaml"
    code, stdout, stderr = _draft(["--input", str(EXAMPLE), "--out", str(out), "--ledger", url,
                                   "--dataset-id", "diabetes130", "--unit-column", "patient_nbr",
                                   "--json"])
    assert code == 0, stderr
    result = json.loads(stdout)
    charges = _charges(url, "diabetes130")
    assert [(c["kind"], c["status"], c["epsilon"]) for c in charges] == [
        ("schema-draft", "released", 0.1)]
    assert charges[0]["extra_delta"] == pytest.approx(5e-11)
    shown = CliRunner().invoke(main, ["ledger", "show", "--ledger", url])
    assert "schema-draft" in shown.output and result["draft_id"] in shown.output
    check = CliRunner().invoke(main, ["schema", "check", "--schema", str(out)])
    assert check.exit_code == 0, check.output
    bundle = tmp_path / "bundle"
    rel = CliRunner().invoke(main, ["release", "--schema", str(out), "--input", str(EXAMPLE),
                                    "--epsilon", "1", "--ledger", url, "--dataset-id",
                                    "diabetes130", "--out", str(bundle), "--engine", "mst",
                                    "--json", "--seed", "1"])
    assert rel.exit_code == 0, rel.output
    report = json.loads((bundle / "privacy-report.json").read_text())
    dataset = report["dataset"]
    assert dataset["schema_drafts"] == 1 and dataset["releases"] == 1
    # zCDP composition of the draft (0.1) and the release (1): more than the release alone
    assert 1.0 < dataset["spent_epsilon"] < 1.1
    assert "schema drafts" in (bundle / "privacy-report.html").read_text()


# -- bad input: documented exit code, nothing written, no charge unless data was read ------------


def test_missing_input_file(tmp_path: Path) -> None:
    url = _ledger(tmp_path)
    out = tmp_path / "d.yaml"
    code, _, stderr = _draft(["--input", str(tmp_path / "nope.csv"), "--out", str(out),
                              "--ledger", url, "--dataset-id", "t"])
    assert code == 2 and "does not exist" in stderr
    assert not out.exists() and _charges(url) == []


def test_unknown_unit_column_cancels_the_charge(tmp_path: Path) -> None:
    table = tmp_path / "c.csv"
    _clinic_table(table, 50)
    url = _ledger(tmp_path)
    out = tmp_path / "d.yaml"
    code, _, stderr = _draft(["--input", str(table), "--out", str(out), "--ledger", url,
                              "--dataset-id", "t", "--unit-column", "patient_id"])
    assert code == 2 and "'patient_id'" in stderr
    assert not out.exists()
    assert [c["status"] for c in _charges(url)] == ["cancelled"]  # counts nothing


def test_insufficient_budget(tmp_path: Path) -> None:
    table = tmp_path / "c.csv"
    _clinic_table(table, 50)
    url = _ledger(tmp_path, total=0.05)
    out = tmp_path / "d.yaml"
    code, _, stderr = _draft(["--input", str(table), "--out", str(out), "--ledger", url,
                              "--dataset-id", "t"])
    assert code == 4 and "schema draft 'schema-draft-t-" in stderr and "refused" in stderr
    assert "release" not in stderr.split("refused")[0]  # a draft is not called a release
    assert not out.exists() and _charges(url) == []


def test_bad_table_after_reading_keeps_the_charge(tmp_path: Path) -> None:
    """A table that fails once its cells are read (a record with too few fields): exit 3,
    no draft, the charge stays spent (data was read)."""
    table = tmp_path / "bad.csv.gz"
    with gzip.open(table, "wt") as fh:
        fh.write("patient,clinic\nP1,A\nP2\nP3,B\n")
    url = _ledger(tmp_path)
    out = tmp_path / "d.yaml"
    code, _, stderr = _draft(["--input", str(table), "--out", str(out), "--ledger", url,
                              "--dataset-id", "t", "--unit-column", "patient"])
    assert code == 3 and "csv-format" in stderr
    assert not out.exists()
    assert [c["status"] for c in _charges(url)] == ["spent-failed"]


def test_existing_out_and_usage_errors(tmp_path: Path) -> None:
    table = tmp_path / "c.csv"
    _clinic_table(table, 50)
    url = _ledger(tmp_path)
    out = tmp_path / "d.yaml"
    out.write_text("reviewed: true\n")
    code, _, stderr = _draft(["--input", str(table), "--out", str(out), "--ledger", url,
                              "--dataset-id", "t"])
    assert code == 2 and "already exists" in stderr
    assert yaml.safe_load(out.read_text()) == {"reviewed": True}
    code, _, stderr = _draft(["--input", str(table), "--out", str(tmp_path / "e.yaml"),
                              "--ledger", url, "--dataset-id", "t", "--max-rows", "2"])
    assert code == 2 and "--unit-column" in stderr
    assert _charges(url) == []


# -- on_unreadable: the schema option drafts use for number and date columns -------------------


def _unreadable_schema(tmp_path: Path, policy: str, nullable: bool = True) -> Path:
    path = tmp_path / f"s-{policy}-{nullable}.yaml"
    path.write_text(
        "format: dpsynth.table-schema/v1\nname: t\nversion: '1'\nprivacy_unit: {max_rows: 1}\n"
        "columns:\n"
        f"  - {{name: n, kind: integer, bounds: [0, 9], bin_width: 1, "
        f"nullable: {str(nullable).lower()}, on_unreadable: {policy}}}\n"
        "  - {name: c, kind: categorical, categories: [a, b]}\n")
    return path


def test_on_unreadable_null_codes_text_as_missing(tmp_path: Path) -> None:
    """A number column holding text fails the table under reject (rule parse-integer,
    exit 3) and reads the text as missing under null; null needs nullable (exit 2)."""
    from dpsynth.io import load_encoded

    table = tmp_path / "t.csv"
    table.write_text("n,c\n1,a\nV57,b\n3,a\n")
    res = CliRunner().invoke(main, ["schema", "check", "--schema",
                                    str(_unreadable_schema(tmp_path, "reject")), "--input",
                                    str(table)])
    assert res.exit_code == 3 and "parse-integer" in res.stderr
    schema_path = _unreadable_schema(tmp_path, "null")
    res = CliRunner().invoke(main, ["schema", "check", "--schema", str(schema_path), "--input",
                                    str(table)])
    assert res.exit_code == 0, res.output
    enc = load_encoded(table, load_schema(schema_path), bounding_secret=1)
    null_code = 10  # ten bins 0..9, then the null code
    assert enc.codes[:, 0].tolist() == [1, null_code, 3]
    res = CliRunner().invoke(main, ["schema", "check", "--schema",
                                    str(_unreadable_schema(tmp_path, "null", nullable=False))])
    assert res.exit_code == 2 and "on_unreadable (null) needs nullable: true" in res.stderr


def test_degenerate_columns_still_give_a_valid_draft(tmp_path: Path) -> None:
    """Constant numbers (0, 7, 2.5), an empty column and a one-value category still give a
    draft that passes schema check with the table (bounds always increase)."""
    n = 3000
    table = tmp_path / "t.csv"
    pl.DataFrame({"zero": ["0"] * n, "seven": ["7"] * n, "half": ["2.5"] * n,
                  "empty": [""] * n, "one": ["x"] * n}).write_csv(table)
    url = _ledger(tmp_path)
    out = tmp_path / "d.yaml"
    code, _, stderr = _draft(["--input", str(table), "--out", str(out), "--ledger", url,
                              "--dataset-id", "t", "--epsilon", "2"])
    assert code == 0, stderr
    schema = load_schema(out)
    assert schema.column("zero").kind == "integer" and schema.column("one").kind == "categorical"
    res = CliRunner().invoke(main, ["schema", "check", "--schema", str(out), "--input",
                                    str(table)])
    assert res.exit_code == 0, res.output


# -- code columns, the other bucket, atoms ---------------------------------------------------


def _coded_table(n: int = 6000) -> pl.DataFrame:
    """One row per patient: an ICD-9 column (250.x held by about 40%, other chapters, V and
    E codes, a missing token), an ICD-10 column, a small-number column, a one-decimal lab
    value, a top-coded ratio (501 held by about 40%), and a clinic held mostly by A or B
    while 10% of the patients each have their own clinic."""
    rng = np.random.default_rng(5)
    icd9 = ["250", "250.01", "250.83", "428", "414", "8", "276", "599.7", "786.5", "V57",
            "V45.81", "E885", "E849.7", "?"]
    p9 = np.array([14, 13, 13, 10, 10, 4, 8, 6, 6, 5, 3, 3, 2, 3], dtype=float)
    icd10 = ["E11.9", "I10", "J18.9", "N39.0", "Z79.4", "C50.911", "F32.A", "S72.001A"]
    clinic = np.where(rng.random(n) < 0.9, rng.choice(["A", "B"], n), None)
    return pl.DataFrame({
        "patient": [f"p{i}" for i in range(n)],
        "dx": rng.choice(icd9, n, p=p9 / p9.sum()).tolist(),
        "dx10": rng.choice(icd10, n).tolist(),
        "visits": [str(x) for x in rng.integers(0, 30, n)],
        "hba1c": [f"{x:.1f}" for x in rng.uniform(4, 14, n)],
        "ratio": [str(x) for x in np.where(rng.random(n) < 0.4, 501, rng.integers(0, 500, n))],
        "clinic": [c if c is not None else f"solo-{i}" for i, c in enumerate(clinic)],
    })


def test_codes_other_bucket_and_atoms(tmp_path: Path) -> None:
    """At a large epsilon: the ICD-9 and ICD-10 columns are drafted as code columns with the
    public chapter lists (250 kept apart before them, as a frequent category), number columns
    stay numbers, the top code 501 is an atom, and the clinics each held by one patient are
    never listed but released as 'Other'. The draft passes schema check on the table."""
    from dpsynth.code_systems import ICD9, ICD10, chapter_groups

    table = tmp_path / "t.csv"
    _coded_table().write_csv(table)
    url = _ledger(tmp_path, total=10)
    out = tmp_path / "d.yaml"
    code, stdout, stderr = _draft(["--input", str(table), "--out", str(out), "--ledger", url,
                                   "--dataset-id", "t", "--epsilon", "6", "--unit-column",
                                   "patient", "--json"])
    assert code == 0, stderr
    assert json.loads(stdout)["columns"] == {
        "patient": "identifier", "dx": "code", "dx10": "code", "visits": "integer",
        "hba1c": "float", "ratio": "integer", "clinic": "categorical"}
    schema = load_schema(out)
    dx, dx10 = schema.column("dx"), schema.column("dx10")
    assert dx.pattern == ICD9.pattern and dx10.pattern == ICD10.pattern
    labels = [g.label for g in dx.groups]
    chapters = [g["label"] for g in chapter_groups(ICD9)]
    assert labels[-len(chapters):] == chapters
    assert labels[0] == "250 category"  # 40% of the codes: kept apart, and first
    # the others kept apart are categories near or above 5% of the codes (none below 4%)
    assert set(labels[:-len(chapters)]) <= {f"{c} category" for c in (
        "250", "428", "414", "276", "599", "786", "V57", "008")}
    labels10 = [g.label for g in dx10.groups]
    chapters10 = [g["label"] for g in chapter_groups(ICD10)]
    assert labels10[-len(chapters10):] == chapters10
    assert set(labels10[:-len(chapters10)]) <= {  # 8 codes, 12.5% each: kept apart
        f"{c} category" for c in ("E11", "I10", "J18", "N39", "Z79", "C50", "F32", "S72")}
    assert "?" in dx.missing_tokens
    assert 501.0 in schema.column("ratio").atoms
    clinic = schema.column("clinic")
    assert clinic.on_out_of_domain == "other" and clinic.categories == ("A", "B", "Other")
    res = CliRunner().invoke(main, ["schema", "check", "--schema", str(out), "--input",
                                    str(table)])
    assert res.exit_code == 0, res.output


def test_numbers_are_not_mistaken_for_codes(tmp_path: Path) -> None:
    """Whole numbers of 1-3 digits all match the ICD-9 pattern; without decimals or lettered
    codes among them they stay numbers, never codes (many drafts). Whole numbers stay
    integers but for the decision's false-alarm rate: "float" needs a noisy count of
    decimals above 3 sigma (one-sided, 0.135% per column), so 60 column drafts may show
    one or two (three or more: probability about 1e-4)."""
    rng = np.random.default_rng(9)
    n = 3000
    table = tmp_path / "n.csv"
    pl.DataFrame({"count": [str(x) for x in rng.integers(0, 400, n)],
                  "small": [str(x) for x in rng.integers(1, 9, n)]}).write_csv(table)
    header, types = read_header(table)
    cfg = DraftConfig(input_path=table, out_path=tmp_path / "d.yaml", ledger_url="unused",
                      dataset_id="n", epsilon=0.5)
    budget = Budget(ApproxDP(cfg.epsilon, cfg.delta - cfg.threshold_delta).rho.rho)
    with open_table(table, provisional_schema(header)) as lf:
        profile = TableProfile(lf, header, None, 1)
        kinds = []
        for _ in range(30):
            session = DraftSession(profile, header, 1, budget, cfg.threshold_delta)
            draft = propose(session, header, types, cfg, "test")
            kinds += [c.kind for c in draft.columns]
    assert set(kinds) <= {"integer", "float"}  # never a code column
    assert kinds.count("float") <= 2, kinds


def test_a_category_held_by_one_patient_is_never_kept_apart_or_listed(tmp_path: Path) -> None:
    """The other bucket and code categories come from DP key selection: over many drafts a
    clinic or a code category only one patient holds never appears by name."""
    df = _coded_table(3000).with_columns(
        pl.when(pl.col("patient") == "p7").then(pl.lit("999.99")).otherwise(pl.col("dx"))
        .alias("dx"))
    table = tmp_path / "t.csv"
    df.write_csv(table)
    header, types = read_header(table)
    cfg = DraftConfig(input_path=table, out_path=tmp_path / "d.yaml", ledger_url="unused",
                      dataset_id="t", epsilon=2.0, unit_column="patient", max_rows=1)
    budget = Budget(ApproxDP(cfg.epsilon, cfg.delta - cfg.threshold_delta).rho.rho)
    with open_table(table, provisional_schema(header)) as lf:
        profile = TableProfile(lf, header, "patient", 1, secret=3)
        for _ in range(20):
            session = DraftSession(profile, header, 1, budget, cfg.threshold_delta,
                                   unit_column="patient")
            draft = propose(session, header, types, cfg, "test")
            fields = {c.name: dict((k, v) for k, v, _ in c.fields) for c in draft.columns}
            assert not any(str(v).startswith("solo-")
                           for v in fields["clinic"].get("categories", []))
            groups = fields["dx"].get("groups", [])
            assert not any(g["label"].startswith("999") for g in groups)


def test_bins_holding_only_atoms_are_merged() -> None:
    """Atoms 0 and 1 (both frequent) would leave the whole-number bin [0, 2) with nothing
    but atoms, which the schema refuses: the bin is merged with its neighbour; a single bin
    that would hold nothing else drops its atoms instead."""
    from dpsynth.draft import _settle_atoms

    edges = [0.0, 2.0, 5.0, 10.0]
    assert _settle_atoms(edges, [0.0, 1.0], (0.0, 10.0), 1.0) == []
    assert edges == [0.0, 5.0, 10.0]
    edges = [0.0, 1.0]
    assert _settle_atoms(edges, [0.0, 1.0], (0.0, 1.0), 1.0) == [0.0, 1.0]
    edges = [0.0, 0.5, 3.0]  # no precision: a bin of positive width always holds values
    assert _settle_atoms(edges, [0.0], (0.0, 3.0), 0.0) == [] and edges == [0.0, 0.5, 3.0]


@pytest.mark.parametrize("cells", [33, 80])
def test_noise_alone_rarely_stretches_the_bounds(cells: int) -> None:
    """The bar for "this magnitude bucket / 5-year span holds values" keeps the chance that
    pure noise lifts any of a column's empty cells over it near ``_FALSE_ALARM`` (a fixed
    3.5 sigmas gave 0.8% for 33 cells, 1.8% for 80), and a count of 5 sigmas still counts."""
    from dpsynth.draft import _FALSE_ALARM, _evident

    sigma, trials = 7.0, 40_000
    noise = np.random.default_rng(cells).normal(0.0, sigma, (trials, cells))
    stretched = sum(bool(_evident(row, sigma).any()) for row in noise)
    # binomial(40000, 1e-3): mean 40, sd 6.3; a fixed 3.5-sigma bar would give >= 300
    assert stretched <= 2 * _FALSE_ALARM * trials
    counts = np.zeros(cells)
    counts[3] = 5 * sigma
    assert np.flatnonzero(_evident(counts, sigma)).tolist() == [3]
