"""`dpsynth audit`: the CONFIDENTIAL internal report against the real table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from conftest import cli_release
from test_release import CANARY_ID, CANARY_TEXT, SCHEMA, make_table

from dpsynth.audit.utility import auc_score, fit_logistic
from dpsynth.cli import main


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("audit")
    (d / "schema.yaml").write_text(SCHEMA)
    make_table(d / "table.csv", n_patients=1200, seed=7)
    make_table(d / "holdout.csv", n_patients=400, seed=8)
    bundle = cli_release(d, total_epsilon="3")
    return {"dir": d, "schema": d / "schema.yaml", "input": d / "table.csv",
            "holdout": d / "holdout.csv", "bundle": bundle}


def run_audit(env: dict[str, Path], out: Path, *extra: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["audit", "--schema", str(env["schema"]), "--input",
                                  str(env["input"]), "--bundle", str(env["bundle"]),
                                  "--out", str(out), "--seed", "3", *extra])
    return r.exit_code, r.stdout, r.stderr


def test_audit_writes_confidential_json_and_html(released: dict[str, Path]) -> None:
    out = released["dir"] / "audit-out"
    code, stdout, err = run_audit(released, out, "--json", "--target", "smoker=true",
                                  "--holdout", str(released["holdout"]))
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["ok"] is True and summary["tvd_1way_mean"] is not None
    report = json.loads((out / "audit-report.json").read_text())
    assert report["confidential"].startswith("CONFIDENTIAL")
    u = report["utility"]
    for key in ("tvd_1way", "tvd_2way", "tvd_3way", "correlations", "tstr", "subgroups"):
        assert key in u
    assert u["tvd_3way"]["compared"] == 20 and len(u["tvd_3way"]["worst"][0]["columns"]) == 3
    assert 0 <= u["tvd_1way"]["mean"] <= u["tvd_3way"]["mean"] <= 1
    assert u["correlations"]["cramers_v"]["columns"] == ["sex", "age", "bmi", "visit", "smoker", "dx"]
    assert any(p["columns"] == ["age", "bmi"] for p in u["correlations"]["pearson_ordered"]["pairs"])
    t = u["tstr"]
    assert t["status"] == "ok" and t["value"] == "True"
    # smoking depends on age in the table: both models beat chance on real rows
    assert t["auc_train_real"] > 0.6 and t["auc_train_synthetic"] > 0.55
    assert [g["value"] for g in u["subgroups"][0]["groups"]] == ["F", "M"]
    d = report["disclosure"]
    assert d["baseline"] == "holdout"
    for key in ("exact_match_share_training", "exact_match_share_holdout", "dcr_training",
                "dcr_holdout", "share_closer_to_training", "anonymeter"):
        assert key in d
    assert d["anonymeter"]["status"].startswith(("ok", "not installed"))
    page = (out / "audit-report.html").read_text()
    assert "CONFIDENTIAL" in page and page.count("<img") >= 4
    assert "data:image/png;base64," in page


def test_audit_without_holdout_says_its_baseline_is_not_held_out(released: dict[str, Path]) -> None:
    out = released["dir"] / "audit-noholdout"
    code, _, err = run_audit(released, out)
    assert code == 0, err
    d = json.loads((out / "audit-report.json").read_text())["disclosure"]
    assert d["baseline"].startswith("none") and "NOT a held-out" in d["note"]
    assert "exact_match_share_reference" in d
    assert d["anonymeter"]["status"].startswith(("skipped", "not installed"))


def test_no_raw_row_or_private_value_in_the_report(released: dict[str, Path]) -> None:
    out = released["dir"] / "audit-out-raw"
    code, _, err = run_audit(released, out, "--target", "dx=a")
    assert code == 0, err
    real = pl.read_csv(released["input"], infer_schema=False)
    texts = [(out / f).read_text() for f in ("audit-report.json", "audit-report.html")]
    rows = [",".join(r) for r in real.select(["sex", "age", "bmi", "visit"]).rows()[:200]]
    bmis = {v for v in real["bmi"].to_list() if v and "." in v and v not in ("18.5",)}
    visits = set(real["visit"].to_list())
    for text in texts:
        assert CANARY_ID not in text and CANARY_TEXT not in text
        assert not any(r in text for r in rows)
        assert not any(v in text for v in visits)  # exact dates never appear
        assert sum(v in text for v in list(bmis)[:200]) < 5  # a number like 20.1 may be a stat


def test_out_inside_the_bundle_is_refused(released: dict[str, Path]) -> None:
    code, _, err = run_audit(released, released["bundle"] / "audit")
    assert code == 2 and "inside the bundle" in err
    assert not (released["bundle"] / "audit").exists()


def test_out_at_or_above_a_bundle_or_inside_another_bundle_is_refused(
        released: dict[str, Path], tmp_path: Path) -> None:
    """Issue 11, defect 6: whoever ships the bundle's parent ships the report too."""
    bundle = released["bundle"]
    other = tmp_path / "other-bundle"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"format": "dpsynth.bundle-manifest/v1"}))
    for out, why in ((bundle.parent, "bundle's parent"), (bundle.parent.parent, "contains"),
                     (other / "audit", "inside another release bundle")):
        code, _, err = run_audit(released, out)
        assert code == 2 and why in err and "CONFIDENTIAL" in err, (out, err)
    assert not (other / "audit").exists()


def test_report_files_are_owner_only_and_marked_on_every_page(released: dict[str, Path]) -> None:
    import base64
    import io
    import re
    import stat

    out = released["dir"] / "audit-mode"
    out.mkdir(mode=0o755)
    (out / "audit-report.html").write_text("old")  # an existing file gets its mode reset
    (out / "audit-report.html").chmod(0o644)
    code, _, err = run_audit(released, out)
    assert code == 0, err
    for name in ("audit-report.json", "audit-report.html"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    page = (out / "audit-report.html").read_text()
    # the banner is fixed to the top of every printed page, and every plot carries the mark
    assert "@media print{.banner.top{position:fixed" in page
    assert page.count("CONFIDENTIAL") >= 3
    from PIL import Image

    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert pngs
    for data in pngs:
        px = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(int)
        mark = (abs(px[..., 0] - 0xBB) <= 6) & (px[..., 1] <= 6) & (px[..., 2] <= 6)
        assert int(mark.sum()) > 20  # the CONFIDENTIAL text (#b00) is drawn on the figure


def test_bad_target_is_a_usage_error(released: dict[str, Path]) -> None:
    code, _, err = run_audit(released, released["dir"] / "a2", "--target", "nosuch=1")
    assert code == 2 and "target" in err
    code, _, err = run_audit(released, released["dir"] / "a3", "--target", "dx=zzz")
    assert code == 2 and "public domain" in err


def test_logistic_regression_and_auc_on_a_known_signal() -> None:
    from scipy import sparse

    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, size=(2000, 3))
    y = rng.random(2000) < np.where(x[:, 0] == 1, 0.8, 0.2)
    w = fit_logistic(sparse.csr_matrix(x.astype(float)), y)
    assert w[0] > 1.5 and abs(w[1]) < 0.3
    assert auc_score(y, x[:, 0].astype(float)) == pytest.approx(0.8, abs=0.04)
    assert auc_score(np.array([True, False]), np.array([1.0, 0.0])) == 1.0


def test_represented_repeats_rows_by_their_weight() -> None:
    from dpsynth.audit import represented

    synth = np.array([[0], [1], [2]])
    rng = np.random.default_rng(0)
    assert represented(synth, None, rng) is synth
    out = represented(synth, np.array([1.0, 3.0, 2.0]), rng)
    assert out[:, 0].tolist() == [0, 1, 1, 1, 2, 2]
    # a fractional weight is kept on average: 1.5 -> 1 or 2 copies, 1.5 in the mean
    many = represented(np.zeros((20_000, 1), dtype=np.int64), np.full(20_000, 1.5), rng)
    assert abs(many.shape[0] / 20_000 - 1.5) < 4 * np.sqrt(0.25 / 20_000)


def test_audit_weights_utility_by_the_released_weight_column(tmp_path: Path) -> None:
    """``represent: all_rows``: the audit's utility figures are on the weighted rows (the
    encounters the rows stand for), its disclosure figures on the released rows."""
    schema = SCHEMA.replace("privacy_unit: {column: pid, max_rows: 2}",
                            "privacy_unit: {column: pid, max_rows: 1, rows_cap: 3, "
                            "represent: all_rows}")
    (tmp_path / "schema.yaml").write_text(schema)
    make_table(tmp_path / "table.csv", n_patients=600, seed=5)
    bundle = cli_release(tmp_path, total_epsilon="3")
    env = {"schema": tmp_path / "schema.yaml", "input": tmp_path / "table.csv", "bundle": bundle}
    code, _, err = run_audit(env, tmp_path / "audit-out", "--json")
    assert code == 0, err
    report = json.loads((tmp_path / "audit-out" / "audit-report.json").read_text())
    weights = pl.read_parquet(bundle / "synthetic.parquet")["row_weight"]
    assert report["utility_weighted_by"] == "row_weight"
    # k = 1: integer weights, so the represented rows are exactly the weights' sum
    assert report["synthetic_rows_represented"] == int(weights.sum()) > report["synthetic_rows"]
    assert "weight each synthetic row by" in (tmp_path / "audit-out" / "audit-report.html").read_text()
