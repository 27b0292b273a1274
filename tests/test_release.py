"""End-to-end `dpsynth release`: the bundle, the ledger order, failures that leave nothing behind."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from dpsynth.cli import main

CANARY_ID = "CANARYID4471"
CANARY_TEXT = "CANARYTEXT9182"

SCHEMA = """\
format: dpsynth.table-schema/v1
name: clinic
version: 1
missing_tokens: [""]
privacy_unit: {column: pid, max_rows: 2}
subgroups: [sex]
columns:
  - {name: pid, kind: identifier}
  - {name: note, kind: text, nullable: true}
  - {name: sex, kind: categorical, categories: [F, M]}
  - {name: age, kind: integer, bounds: [0, 99], bin_width: 10}
  - {name: bmi, kind: float, nullable: true, bounds: [10, 70], bin_edges: [10, 18.5, 25, 30, 70]}
  - {name: visit, kind: date, bounds: ["2010-01-01", "2019-12-31"], bin_unit: year}
  - {name: smoker, kind: boolean}
  - {name: dx, kind: categorical, nullable: true, categories: [a, b, c, d]}
"""


def make_table(path: Path, n_patients: int = 1500, seed: int = 7) -> pl.DataFrame:
    """A correlated table: age drives dx and smoking; 1-3 rows per patient."""
    rng = np.random.default_rng(seed)
    rows_per = rng.integers(1, 4, size=n_patients)
    pid = np.repeat(np.arange(n_patients), rows_per)
    n = pid.size
    age = rng.integers(0, 100, size=n)
    sex = rng.choice(["F", "M"], size=n)
    bmi = np.round(rng.uniform(15, 45, size=n), 1).astype(str)
    bmi[rng.random(n) < 0.1] = ""
    dx = np.where(age > 60, rng.choice(["a", "b"], size=n), rng.choice(["c", "d", ""], size=n))
    smoker = np.where(age > 40, rng.random(n) < 0.6, rng.random(n) < 0.1)
    visit = [f"{2010 + int(y)}-0{1 + int(m)}-1{int(d)}" for y, m, d in
             zip(rng.integers(0, 10, n), rng.integers(0, 9, n), rng.integers(0, 9, n), strict=True)]
    ids = [str(p) for p in pid]
    ids[0] = CANARY_ID  # a patient id that must never reach the bundle
    df = pl.DataFrame({
        "pid": ids, "note": [CANARY_TEXT if i % 7 == 0 else "" for i in range(n)], "sex": sex,
        "age": age, "bmi": bmi.tolist(), "visit": visit, "smoker": smoker.astype(str), "dx": dx,
    }, strict=False)
    df.write_csv(path)
    return df


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Path | str]:
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    make_table(tmp_path / "table.csv")
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    res = CliRunner().invoke(main, ["ledger", "init", "--ledger", ledger, "--dataset-id", "clinic",
                                    "--total-epsilon", "3"])
    assert res.exit_code == 0, res.output
    return {"dir": tmp_path, "schema": tmp_path / "schema.yaml", "input": tmp_path / "table.csv",
            "ledger": ledger}


def run_release(env: dict[str, Path | str], out: str, *extra: str) -> tuple[int, str, str]:
    args = ["release", "--schema", str(env["schema"]), "--input", str(env["input"]),
            "--out", str(Path(env["dir"]) / out), "--ledger", str(env["ledger"]),
            "--engine", "mst", "--seed", "5", "--quiet", *extra]
    res = CliRunner().invoke(main, args)
    return res.exit_code, res.stdout, res.stderr


def charges(env: dict[str, Path | str]) -> list[tuple[str, str]]:
    db = str(env["ledger"]).removeprefix("sqlite:///")
    con = sqlite3.connect(db)
    try:
        return [(r[0], r[1]) for r in con.execute(
            "select release_id, status from charges order by created_at")]
    finally:
        con.close()


def test_release_writes_a_verified_bundle(env: dict[str, Path | str]) -> None:
    code, out, err = run_release(env, "b1", "--json", "--epsilon", "1", "--release-id", "r1",
                                 "--audit-dir", str(Path(env["dir"]) / "audit"))
    assert code == 0, err
    result = json.loads(out)
    bundle = Path(result["bundle"])
    names = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    for required in ["synthetic.parquet", "synthetic.csv", "schema.yaml", "manifest.json",
                     "privacy-report.json", "privacy-report.html", "quality-report.html",
                     "DATASHEET.md", "validation/suite.json", "validation/results.json"]:
        assert required in names
    syn = pl.read_parquet(bundle / "synthetic.parquet")
    assert syn.columns == ["sex", "age", "bmi", "visit", "smoker", "dx"]  # no id, no text
    assert syn.height == result["rows"]
    meta = __import__("pyarrow.parquet", fromlist=["x"]).read_schema(bundle / "synthetic.parquet")
    assert meta.metadata[b"dpsynth.release_id"] == b"r1"
    assert charges(env) == [("r1", "released")]
    assert (Path(env["dir"]) / "audit" / "audit-report.json").exists()
    assert not any("audit" in n for n in names)
    inspect = CliRunner().invoke(main, ["inspect", str(bundle), "--json"])
    assert inspect.exit_code == 0 and json.loads(inspect.stdout)["ok"] is True


def test_bundle_holds_no_private_values_nor_the_true_row_count(env: dict[str, Path | str]) -> None:
    # --rows: the DP estimate of the row count may equal the true count by chance
    code, out, err = run_release(env, "b1", "--json", "--epsilon", "1", "--rows", "1000")
    assert code == 0, err
    bundle = Path(json.loads(out)["bundle"])
    real = pl.read_csv(env["input"], infer_schema=False)
    n_raw = real.height
    n_bounded = int(real.group_by("pid").len()["len"].clip(upper_bound=2).sum())
    assert n_bounded > 2100  # not a year of the visit column
    number = re.compile(rb"(?<![\d.])(%d|%d)(?![\d.])" % (n_raw, n_bounded))
    for f in bundle.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert CANARY_ID.encode() not in data and CANARY_TEXT.encode() not in data, f
            assert not number.search(data), f"true row count in {f.name}"
    assert CANARY_ID not in out + err and CANARY_TEXT not in out + err


def test_overspend_is_refused_before_the_input_is_read(env: dict[str, Path | str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_release(env, "b1", "--epsilon", "2.9", "--release-id", "r1")[0] == 0  # zCDP: 2.9 + 1 > 3
    import dpsynth.io
    import dpsynth.pipeline

    # the two places that open the private file: the reader and the ledger's input hash
    reads: list[object] = []
    for module, name in ((dpsynth.io, "open_table"), (dpsynth.pipeline, "_file_sha256")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name,
                            lambda *a, _real=real, **k: reads.append(a) or _real(*a, **k))
    assert run_release(env, "b0", "--epsilon", "0.01", "--release-id", "r0")[0] == 0
    assert len(reads) == 2  # the spies see a release that does read the input
    reads.clear()
    code, _, err = run_release(env, "b2", "--epsilon", "1", "--release-id", "r2")
    assert code == 4, err
    assert "remaining" in err
    assert reads == []
    assert not (Path(env["dir"]) / "b2").exists()
    assert charges(env) == [("r1", "released"), ("r0", "released")]


def test_a_reused_release_id_is_refused(env: dict[str, Path | str]) -> None:
    assert run_release(env, "b1", "--epsilon", "0.5", "--release-id", "job-7")[0] == 0
    code, _, err = run_release(env, "b2", "--epsilon", "0.5", "--release-id", "job-7")
    assert code == 4 and "spend twice" in err
    assert not (Path(env["dir"]) / "b2").exists()


def test_failure_after_data_access_spends_the_budget_and_leaves_no_bundle(
        env: dict[str, Path | str], monkeypatch: pytest.MonkeyPatch) -> None:
    import dpsynth.pipeline

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected failure after the private half")

    monkeypatch.setattr(dpsynth.pipeline, "_public_record", boom)
    code, _, err = run_release(env, "b1", "--epsilon", "1", "--release-id", "r-fail")
    assert code == 1, err
    assert "injected" not in err  # foreign messages are never echoed
    assert charges(env) == [("r-fail", "spent-failed")]
    assert not (Path(env["dir"]) / "b1").exists()
    assert [p.name for p in Path(env["dir"]).iterdir() if p.name.startswith(".")] == []


def test_failure_before_data_access_cancels_the_charge(env: dict[str, Path | str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import dpsynth.pipeline

    def boom(path: Path) -> str:
        raise OSError("disk gone")

    monkeypatch.setattr(dpsynth.pipeline, "_file_sha256", boom)
    code, _, _ = run_release(env, "b1", "--epsilon", "1", "--release-id", "r-early")
    assert code == 1
    assert charges(env) == [("r-early", "cancelled")]
    # the cancelled charge gave its budget back: the full total is still available
    monkeypatch.undo()
    assert run_release(env, "b2", "--epsilon", "3", "--release-id", "r-next")[0] == 0


RULES = """\
rules:
  - {name: old_have_dx_ab, require: "age < 60 OR dx IN ('a', 'b')"}
  - {kind: null_together, columns: [bmi, dx]}
  - {name: young_do_not_smoke, require: "age >= 40 OR NOT smoker", severity: warning}
"""


def test_error_rules_are_enforced_and_warnings_counted(env: dict[str, Path | str]) -> None:
    """bmi and dx are missing independently in the data, so a model that ignored the
    null_together rule would often break it: no released row does, and the release exits 0."""
    schema = Path(env["schema"])
    schema.write_text(SCHEMA.replace("subgroups: [sex]\n", "subgroups: [sex]\n" + RULES)
                      .replace("bin_edges: [10, 18.5, 25, 30, 70]}",
                               "bin_edges: [10, 18.5, 25, 30, 70], precision: 0.1}")
                      + "  - {name: bmi2, kind: derived, expr: \"bmi * 2\", precision: 0.5}\n")
    code, out, err = run_release(env, "b1", "--json", "--epsilon", "1", "--rows", "3000")
    assert code == 0, err
    result = json.loads(out)
    df = pl.read_parquet(Path(result["bundle"]) / "synthetic.parquet")
    assert df.height == 3000 and df.columns[-1] == "bmi2"
    # the enforced rules hold on every released row (checked here without dpsynth's code)
    assert df.filter((pl.col("age") >= 60) & ~pl.col("dx").is_in(["a", "b"])).height == 0
    assert df.filter(pl.col("bmi").is_null() != pl.col("dx").is_null()).height == 0
    # values on the grid, the derived column computed from the released values
    bmi = df["bmi"].drop_nulls().to_numpy()
    assert np.allclose(bmi * 10, np.round(bmi * 10), atol=1e-9)
    expected = (df["bmi"] * 2 / 0.5).round(0) * 0.5
    assert (df["bmi2"] - expected).abs().max() < 1e-9  # type: ignore[operator]
    rules = {r["name"]: r for r in result["rules"]["enforced"]}
    assert set(rules) == {"old_have_dx_ab", "null_together_bmi_dx"}
    # the engine measured (bmi, dx) jointly with structural zeros, so few or no draws are
    # redrawn (the redraw count itself is tested in test_rules with a fixed model)
    rejected = sum(r["rejected_draws"] for r in rules.values())
    privacy = json.loads((Path(result["bundle"]) / "privacy-report.json").read_text())
    settings = privacy["engine"]["settings"]
    assert ["bmi", "dx"] in settings["keep_together"]
    assert any(cols == ["bmi", "dx"] for cols, _ in settings["structural_zeros"])
    assert result["rules"]["draws"] >= 3000 + rejected - 1
    (warned,) = result["rules"]["warnings"]
    young_smokers = df.filter((pl.col("age") < 40) & pl.col("smoker")).height
    assert warned["name"] == "young_do_not_smoke" and warned["violating_rows"] == young_smokers
    assert young_smokers > 0  # 10% of the young smoke in the data
    assert any("young_do_not_smoke" in w for w in result["warnings"])
    report = (Path(result["bundle"]) / "quality-report.html").read_text()
    assert "young_do_not_smoke" in report and "null_together_bmi_dx" in report
    assert "young_do_not_smoke" in (Path(result["bundle"]) / "DATASHEET.md").read_text()


def test_a_rule_that_contradicts_the_domain_is_refused_before_the_data(
        env: dict[str, Path | str]) -> None:
    schema = Path(env["schema"])
    schema.write_text(SCHEMA.replace(
        "subgroups: [sex]\n",
        "subgroups: [sex]\nrules: [{name: impossible, require: \"age > 120\"}]\n"))
    code, _, err = run_release(env, "b1", "--epsilon", "1", "--release-id", "r-val")
    assert code == 2, err
    assert "impossible" in err and "contradicts" in err
    assert charges(env) == []
    assert not (Path(env["dir"]) / "b1").exists()


def test_inspect_detects_a_modified_file(env: dict[str, Path | str]) -> None:
    code, out, _ = run_release(env, "b1", "--json", "--epsilon", "1")
    assert code == 0
    bundle = Path(json.loads(out)["bundle"])
    csv = bundle / "synthetic.csv"
    csv.write_bytes(csv.read_bytes().replace(b"F,", b"M,", 1))
    res = CliRunner().invoke(main, ["inspect", str(bundle)])
    assert res.exit_code == 6
    assert "synthetic.csv" in res.stdout


def test_output_directory_that_exists_is_refused_without_a_charge(env: dict[str, Path | str]) -> None:
    out = Path(env["dir"]) / "b1"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    code, _, err = run_release(env, "b1", "--epsilon", "1")
    assert code == 2 and "not empty" in err
    assert charges(env) == []


def test_bundle_parent_directories_are_created(env: dict[str, Path | str]) -> None:
    code, out, err = run_release(env, "releases/2026/b1", "--json", "--epsilon", "0.5")
    assert code == 0, err
    assert Path(json.loads(out)["bundle"]) == Path(env["dir"]) / "releases" / "2026" / "b1"


def _run_minutes(t0: float, t1: float) -> re.Pattern[bytes]:
    """Any timestamp (ISO or compact) that falls in a minute of the run."""
    import datetime as dt

    forms = []
    for m in range(int(t0 // 60) - 1, int(t1 // 60) + 2):
        t = dt.datetime.fromtimestamp(m * 60, dt.UTC)
        forms += [t.strftime("%Y-%m-%d[T ]%H:%M"), t.strftime("%Y%m%dT%H%M")]
    return re.compile("|".join(forms).encode())


def test_bundle_carries_no_time_of_day(env: dict[str, Path | str]) -> None:
    """Issue 11, defect 4: the run time grows with N; no time of day in the bundle
    (0.1.0 wrote `created` to the second, the ledger charge's `created_at`, a
    timestamped release id and great-expectations' validation time)."""
    import datetime as dt
    import time

    t0 = time.time()
    code, out, err = run_release(env, "b1", "--json", "--epsilon", "1")
    during_run = _run_minutes(t0, time.time())
    assert code == 0, err
    result = json.loads(out)
    assert result["timings"]["total"] > 0  # the custodian still gets the timings on stdout
    bundle = Path(result["bundle"])
    today = dt.datetime.now(dt.UTC).date()
    midnight = dt.datetime.combine(today, dt.time(), tzinfo=dt.UTC).timestamp()
    for f in [bundle, *bundle.rglob("*")]:
        assert f.stat().st_mtime == midnight, f
        if f.is_file():
            assert not during_run.search(f.read_bytes()), f"time of day in {f.name}"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["created"] == today.isoformat()
    assert "created_at" not in manifest["ledger_entry"]
    assert re.fullmatch(r"clinic-\d{8}-[0-9a-f]{8}", manifest["release_id"])


def test_same_input_under_another_dataset_id_is_refused(env: dict[str, Path | str]) -> None:
    """Issue 11, defect 5: a new --dataset-id must not give the same bytes a fresh budget."""
    ledger = str(env["ledger"])
    assert CliRunner().invoke(main, ["ledger", "init", "--ledger", ledger, "--dataset-id",
                                     "clinic-copy", "--total-epsilon", "3"]).exit_code == 0
    assert run_release(env, "b1", "--epsilon", "1", "--release-id", "r1")[0] == 0
    code, _, err = run_release(env, "b2", "--epsilon", "1", "--release-id", "r2",
                               "--dataset-id", "clinic-copy")
    assert code == 4, err
    assert "'clinic'" in err and "--allow-shared-input" in err
    assert not (Path(env["dir"]) / "b2").exists()
    assert charges(env) == [("r1", "released"), ("r2", "cancelled")]  # nothing measured
    # the custodian states that the budgets are separate on purpose
    code, _, err = run_release(env, "b3", "--epsilon", "1", "--release-id", "r3",
                               "--dataset-id", "clinic-copy", "--allow-shared-input")
    assert code == 0, err
    assert "already charged under dataset id 'clinic'" in err
    # the same dataset id is never refused for its own input
    assert run_release(env, "b4", "--epsilon", "1", "--release-id", "r4")[0] == 0


def test_a_ledger_next_to_or_inside_the_bundle_is_warned_about(env: dict[str, Path | str]) -> None:
    from dpsynth.pipeline import ledger_placement_warning

    d = Path(env["dir"])
    code, _, err = run_release(env, "b1", "--epsilon", "0.5")  # env's ledger sits in d
    assert code == 0 and "warning: the ledger file" in err and "next to" in err
    assert "inside" in str(ledger_placement_warning(f"sqlite:///{d / 'b9' / 'l.db'}", d / "b9"))
    assert ledger_placement_warning(f"sqlite:///{d / 'ledgers' / 'l.db'}", d / "out" / "b9") is None
    assert ledger_placement_warning("postgresql://u@h/db", d / "b9") is None


def test_release_needs_a_ledger(env: dict[str, Path | str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DPSYNTH_LEDGER", raising=False)
    res = CliRunner().invoke(main, ["release", "--schema", str(env["schema"]), "--input",
                                    str(env["input"]), "--out", str(Path(env["dir"]) / "b1"),
                                    "--epsilon", "1", "--quiet"])
    assert res.exit_code == 2 and "--ledger" in res.stderr
    assert charges(env) == []


def test_audit_dir_at_or_above_the_bundle_is_refused(env: dict[str, Path | str]) -> None:
    d = Path(env["dir"])
    for audit_dir in (d, d / "b1", d / "b1" / "audit"):
        code, _, err = run_release(env, "b1", "--epsilon", "1", "--audit-dir", str(audit_dir))
        assert code == 2 and "CONFIDENTIAL" in err, (audit_dir, err)
    assert charges(env) == []


# -- issue 17: every check that needs no data runs before the budget is reserved ---------


def _spy_on_input_reads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record every opening of the private file (the reader and the ledger's input hash)."""
    import dpsynth.io
    import dpsynth.pipeline

    reads: list[object] = []
    for module, name in ((dpsynth.io, "open_table"), (dpsynth.pipeline, "_file_sha256")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name,
                            lambda *a, _real=real, **k: reads.append(a) or _real(*a, **k))
    return reads


def test_rows_beyond_the_maximum_are_refused_before_the_budget(
        env: dict[str, Path | str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 3: 0.1.0 read the input, then failed with a MemoryError (exit 1, spent)."""
    from dpsynth.config import MAX_ROWS

    reads = _spy_on_input_reads(monkeypatch)
    code, _, err = run_release(env, "b1", "--epsilon", "1", "--rows", "1000000000000")
    assert code == 2, err
    assert f"at most {MAX_ROWS:,}" in err
    assert reads == [] and charges(env) == []
    assert not (Path(env["dir"]) / "b1").exists()


def test_rows_beyond_the_memory_available_are_refused_before_the_budget(
        env: dict[str, Path | str], monkeypatch: pytest.MonkeyPatch) -> None:
    import dpsynth.capacity

    monkeypatch.setattr(dpsynth.capacity, "available_memory", lambda: 2**30)  # 1 GiB
    reads = _spy_on_input_reads(monkeypatch)
    per_row = dpsynth.capacity.ROW_BYTES + dpsynth.capacity.CELL_BYTES * 6  # 6 released columns
    fits = (2**30 - dpsynth.capacity.MARGIN_BYTES) // per_row
    code, _, err = run_release(env, "b1", "--epsilon", "1", "--rows", str(fits + 1))
    assert code == 2, err
    assert f"ask for at most {fits:,} rows" in err and "GiB of memory is available" in err
    assert reads == [] and charges(env) == []
    code, _, err = run_release(env, "b2", "--epsilon", "1", "--rows", "1000", "--release-id", "r2")
    assert code == 0, err


@pytest.mark.parametrize("target", ["empty-dir", "dangling", "file"])
def test_a_symlink_out_is_refused_before_the_budget(
        env: dict[str, Path | str], monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    """Defect 4: 0.1.0 accepted a symlink --out before reading, then refused it at the
    very end (exit 6, spent-failed)."""
    d = Path(env["dir"])
    if target == "empty-dir":
        (d / "real").mkdir()
    elif target == "file":
        (d / "real").write_text("x")
    (d / "b1").symlink_to(d / "real")
    reads = _spy_on_input_reads(monkeypatch)
    code, _, err = run_release(env, "b1", "--epsilon", "1")
    assert code == 2, err
    assert "symbolic link" in err
    assert reads == [] and charges(env) == []
    assert (d / "b1").is_symlink() and not any(p.name.startswith(".b1") for p in d.iterdir())


def test_write_bundle_and_the_preflight_run_the_same_path_checks(tmp_path: Path) -> None:
    """One function: whatever write_bundle refuses at the end, the preflight refuses first."""
    import inspect

    import dpsynth.bundle
    import dpsynth.pipeline

    assert "check_out_path(" in inspect.getsource(dpsynth.bundle.write_bundle)
    assert "check_out_path(" in inspect.getsource(dpsynth.pipeline._check_out_dir)
    from dpsynth.bundle import check_out_path, write_bundle
    from dpsynth.errors import StorageError, UsageError

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    for name in ("full", "link", "file"):
        with pytest.raises(UsageError):
            check_out_path(tmp_path / name, in_use=UsageError)
        with pytest.raises(StorageError):
            write_bundle(tmp_path / name, {"a.txt": b"a"}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "full", "link"]


def test_a_ledger_failure_after_the_bundle_is_published_leaves_it_reconcilable(
        env: dict[str, Path | str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 7b: once the bundle is in place the charge is never marked failed; it stays
    'spent' and `dpsynth ledger reconcile` marks it released from the manifest."""
    from dpsynth.errors import StorageError
    from dpsynth.privacy.ledger import Ledger

    def unreachable(self: Ledger, release_id: str, detail: str | None = None) -> None:
        raise StorageError("ledger sqlite:///x: SQLite error: disk I/O error")

    monkeypatch.setattr(Ledger, "mark_released", unreachable)
    code, _, err = run_release(env, "b1", "--epsilon", "1", "--release-id", "r1")
    assert code == 6, err
    bundle = Path(env["dir"]) / "b1"
    assert "dpsynth ledger reconcile --bundle" in err and str(bundle) in err
    assert charges(env) == [("r1", "spent")]
    assert CliRunner().invoke(main, ["inspect", str(bundle)]).exit_code == 0
    monkeypatch.undo()
    res = CliRunner().invoke(main, ["ledger", "show", "--ledger", str(env["ledger"])])
    assert "ledger reconcile --bundle" in res.stdout and "r1" in res.stdout
    res = CliRunner().invoke(main, ["ledger", "reconcile", "--ledger", str(env["ledger"]),
                                    "--bundle", str(bundle), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["bundles"][0]["status_before"] == "spent"
    assert charges(env) == [("r1", "released")]
    res = CliRunner().invoke(main, ["ledger", "reconcile", "--ledger", str(env["ledger"]),
                                    "--bundle", str(bundle)])
    assert res.exit_code == 0 and "already released" in res.stdout


def test_reconcile_refuses_a_bundle_that_fails_verification_or_does_not_match(
        env: dict[str, Path | str], monkeypatch: pytest.MonkeyPatch) -> None:
    from dpsynth.errors import StorageError
    from dpsynth.privacy.ledger import Ledger

    def unreachable(self: Ledger, release_id: str, detail: str | None = None) -> None:
        raise StorageError("ledger unreachable")

    monkeypatch.setattr(Ledger, "mark_released", unreachable)
    assert run_release(env, "b1", "--epsilon", "1", "--release-id", "r1")[0] == 6
    assert run_release(env, "b2", "--epsilon", "0.5", "--release-id", "r2")[0] == 6
    monkeypatch.undo()
    d = Path(env["dir"])

    def reconcile(bundle: Path) -> tuple[int, str]:
        res = CliRunner().invoke(main, ["ledger", "reconcile", "--ledger", str(env["ledger"]),
                                        "--bundle", str(bundle)])
        return res.exit_code, res.stderr

    csv = d / "b1" / "synthetic.csv"
    csv.write_bytes(csv.read_bytes() + b"F,1,,2011-01-01,true,a\n")  # a row slipped in
    code, err = reconcile(d / "b1")
    assert code == 6 and "fails verification" in err
    # a manifest that claims another budget than its charge (re-signed checksums aside)
    manifest = json.loads((d / "b2" / "manifest.json").read_text())
    manifest["release_id"] = "r1"
    manifest["ledger_entry"]["release_id"] = "r1"
    (d / "b2" / "manifest.json").write_text(json.dumps(manifest))
    code, err = reconcile(d / "b2")  # inspect sees the release id differ from the tables'
    assert code == 6 and "fails verification" in err and "release_id" in err
    assert charges(env) == [("r1", "spent"), ("r2", "spent")]


def test_available_memory_is_the_smallest_of_meminfo_and_the_cgroup_limit(tmp_path: Path) -> None:
    from dpsynth.capacity import available_memory

    proc, v2, v1, none = (tmp_path / n for n in ("proc", "v2", "v1", "none"))
    for d in (proc, v2, v1 / "memory", none):
        d.mkdir(parents=True)
    (proc / "meminfo").write_text("MemTotal:  8000000 kB\nMemAvailable:  4000000 kB\n")
    (v2 / "memory.max").write_text("2147483648\n")
    (v2 / "memory.current").write_text("1073741824\n")
    (v1 / "memory" / "memory.limit_in_bytes").write_text(str(2**63 - 4096))  # v1: no limit
    (v1 / "memory" / "memory.usage_in_bytes").write_text("1000")
    assert available_memory(proc, v2) == 2**30
    assert available_memory(proc, v1) == 4000000 * 1024
    assert available_memory(proc, none) == 4000000 * 1024
    assert available_memory(none, none) is None
    (v2 / "memory.max").write_text("max\n")
    assert available_memory(none, v2) is None
