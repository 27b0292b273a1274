"""`dpsynth inspect`: every manifest field the files can confirm is checked, every failure is
listed, and a detached Ed25519 signature proves who released the bundle.

The tamper cases of issue 17 (defect 6) run through the command line only, so the same
cases can be run against 0.1.0 (commit 4f76b07), where each of them passed verification.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from test_release import SCHEMA, make_table

from dpsynth.cli import main
from dpsynth.inspect import LAYOUT, SIGNATURE, verify_bundle
from dpsynth.model_format import MODEL_ARRAYS, MODEL_JSON

MANIFEST = "manifest.json"


# ---------------------------------------------------------------- one real, signed release


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("release")
    (d / "schema.yaml").write_text(SCHEMA)
    make_table(d / "table.csv", n_patients=400)
    keys = d / "keys"
    keys.mkdir()
    run = CliRunner()
    res = run.invoke(main, ["keygen", "--out", str(keys / "custodian.pem")])
    assert res.exit_code == 0, res.output
    ledger = f"sqlite:///{d / 'ledger' / 'ledger.db'}"
    (d / "ledger").mkdir()
    res = run.invoke(main, ["ledger", "init", "--ledger", ledger, "--dataset-id", "clinic",
                            "--total-epsilon", "3"])
    assert res.exit_code == 0, res.output
    res = run.invoke(main, ["release", "--schema", str(d / "schema.yaml"), "--input",
                            str(d / "table.csv"), "--out", str(d / "out" / "bundle"), "--ledger",
                            ledger, "--engine", "mst", "--epsilon", "1", "--seed", "3", "--quiet",
                            "--release-id", "r1", "--sign-key", str(keys / "custodian.pem")])
    assert res.exit_code == 0, res.output
    return {"bundle": d / "out" / "bundle", "key": keys / "custodian.pem",
            "pub": keys / "custodian.pem.pub", "dir": d, "ledger": Path(ledger[10:])}


@pytest.fixture
def bundle(released: dict[str, Path], tmp_path: Path) -> Path:
    """A fresh copy of the released bundle for each test to damage."""
    return Path(shutil.copytree(released["bundle"], tmp_path / "bundle"))


def inspect(path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    res = CliRunner().invoke(main, ["inspect", str(path), "--json", *extra])
    return res.exit_code, json.loads(res.stdout), res.stderr


def load_manifest(b: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((b / MANIFEST).read_text())
    return doc


def save_manifest(b: Path, m: dict[str, Any]) -> None:
    (b / MANIFEST).write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


def rehash(b: Path, rel: str) -> None:
    """What a careful forger does: update the file's manifest entry to the new bytes."""
    m = load_manifest(b)
    data = (b / rel).read_bytes()
    for e in m["files"]:
        if e["path"] == rel:
            e.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    save_manifest(b, m)


def edit_manifest_text(b: Path, old: str, new: str) -> None:
    text = (b / MANIFEST).read_text()
    assert old in text
    (b / MANIFEST).write_text(text.replace(old, new))


# ---------------------------------------------------------------- the tamper cases


def t_epsilon(b: Path) -> None:  # the example: "epsilon": 1.0 -> 9.0, everywhere
    edit_manifest_text(b, '"epsilon": 1.0', '"epsilon": 9.0')


def t_rows(b: Path) -> None:
    m = load_manifest(b)
    edit_manifest_text(b, f'"rows": {m["rows"]}', f'"rows": {m["rows"] * 10}')


def t_rho(b: Path) -> None:
    m = load_manifest(b)
    edit_manifest_text(b, f'"rho": {m["privacy"]["rho"]}', f'"rho": {m["privacy"]["rho"] / 9}')


def t_delta(b: Path) -> None:
    edit_manifest_text(b, '"delta": 1e-09', '"delta": 1e-12')


def t_schema_replaced(b: Path) -> None:  # a wider schema, its manifest entry re-hashed
    p = b / "schema.yaml"
    p.write_text(p.read_text().replace("bounds: [0, 99]", "bounds: [0, 120]"))
    rehash(b, "schema.yaml")


def t_empty_directory(b: Path) -> None:
    (b / "validation" / "extra").mkdir()


def t_file_and_entry_removed(b: Path) -> None:
    (b / "privacy-report.html").unlink()
    m = load_manifest(b)
    m["files"] = [e for e in m["files"] if e["path"] != "privacy-report.html"]
    save_manifest(b, m)


def t_parquet_rows_dropped(b: Path) -> None:
    p = b / "synthetic.parquet"
    pl.read_parquet(p).head(10).write_parquet(p)
    rehash(b, "synthetic.parquet")


def t_csv_rows_dropped(b: Path) -> None:
    p = b / "synthetic.csv"
    p.write_text("".join(p.read_text().splitlines(keepends=True)[:11]))
    rehash(b, "synthetic.csv")


def t_privacy_report_edited(b: Path) -> None:  # the report says 0.1, the manifest 1.0
    p = b / "privacy-report.json"
    doc = json.loads(p.read_text())
    doc["release"]["requested_epsilon"] = 0.1
    p.write_text(json.dumps(doc, indent=2))
    rehash(b, "privacy-report.json")


def t_release_id(b: Path) -> None:
    edit_manifest_text(b, '"release_id": "r1"', '"release_id": "r2"')


def t_columns(b: Path) -> None:
    edit_manifest_text(b, '"dx"\n', '"diagnosis"\n')


TAMPER: dict[str, tuple[Callable[[Path], None], set[str]]] = {
    "epsilon": (t_epsilon, {"privacy"}),
    "rows": (t_rows, {"rows"}),
    "rho": (t_rho, {"privacy"}),
    "delta": (t_delta, {"privacy"}),
    "schema-replaced-and-rehashed": (t_schema_replaced, {"schema"}),
    "empty-directory": (t_empty_directory, {"directory"}),
    "file-and-entry-removed": (t_file_and_entry_removed, {"files"}),
    "parquet-rows-dropped-and-rehashed": (t_parquet_rows_dropped, {"rows"}),
    "csv-rows-dropped-and-rehashed": (t_csv_rows_dropped, {"rows"}),
    "privacy-report-edited-and-rehashed": (t_privacy_report_edited, {"privacy"}),
    "release-id": (t_release_id, {"release"}),
    "columns": (t_columns, {"columns", "schema"}),
}


def test_the_untouched_bundle_passes(bundle: Path, released: dict[str, Path]) -> None:
    code, out, _ = inspect(bundle)
    assert code == 0, out
    assert out["ok"] is True and out["problems"] == []
    assert set(out["checks"].values()) <= {"ok", "skipped"}
    code, out, _ = inspect(bundle, "--verify-key", str(released["pub"]))
    assert code == 0, out
    assert out["signature"] == "verified" and out["checks"]["signature"] == "ok"
    assert all(v == "ok" for v in out["checks"].values()), out["checks"]


@pytest.mark.parametrize("case", list(TAMPER), ids=str)
def test_tamper_is_detected(bundle: Path, case: str) -> None:
    """Each of these passed `dpsynth inspect` in 0.1.0 (exit 0, no problem); now each
    fails with exit 6 and names the check that caught it."""
    tamper, checks = TAMPER[case]
    tamper(bundle)
    code, out, err = inspect(bundle)
    assert code == 6, out
    assert out["ok"] is False
    assert checks <= {p.split(":")[0] for p in out["problems"]}, out["problems"]
    assert err.count("\n") == 1 and err.startswith("dpsynth: error: ")


def test_every_failed_check_is_listed(bundle: Path) -> None:
    t_epsilon(bundle)
    t_rows(bundle)
    t_schema_replaced(bundle)
    t_empty_directory(bundle)
    code, out, _ = inspect(bundle)
    assert code == 6
    failed = {n for n, s in out["checks"].items() if s == "failed"}
    assert failed >= {"privacy", "rows", "schema", "directory"}
    assert {p.split(":")[0] for p in out["problems"]} == failed
    assert out["error"] == "bundle-verification" and out["exit_code"] == 6


def test_human_output(bundle: Path) -> None:
    t_rows(bundle)
    res = CliRunner().invoke(main, ["inspect", str(bundle)])
    assert res.exit_code == 6
    assert "PROBLEM: rows: the row count of synthetic.parquet" in res.stdout
    assert "bundle FAILED verification" in res.stdout
    assert res.stderr.count("\n") == 1 and "in check(s) rows" in res.stderr


# ---------------------------------------------------------------- the signature


def _forge_consistently(b: Path, epsilon: float) -> None:
    """Rewrite the release as if it had another epsilon, consistently everywhere: what
    anyone can do, and what no check without a signature can catch."""
    from dpsynth.privacy.accountant import epsilon_for, rho_for

    m = load_manifest(b)
    old_rho, delta = m["privacy"]["rho"], m["privacy"]["delta"]
    rho = rho_for(epsilon, delta)
    for block in (m["privacy"], m["ledger_entry"]):
        block.update(epsilon=epsilon, rho=rho)
    p = b / "privacy-report.json"
    doc = json.loads(p.read_text())
    for s in doc["steps"]:
        s["rho"] = s["rho"] * rho / old_rho
    spent = math.fsum(s["rho"] for s in doc["steps"])
    doc["release"].update(requested_epsilon=epsilon, budget_rho=rho, spent_rho=spent,
                          epsilon=epsilon_for(spent, delta))
    p.write_text(json.dumps(doc, indent=2))
    save_manifest(b, m)
    rehash(b, "privacy-report.json")


def test_a_consistent_forgery_needs_the_signature(bundle: Path,
                                                  released: dict[str, Path]) -> None:
    _forge_consistently(bundle, 9.0)
    code, out, _ = inspect(bundle)  # the limit of what the files alone can prove
    assert code == 0, out["problems"]
    assert out["summary"]["epsilon"] == 9.0 and out["signature"] == "not verified"
    code, out, _ = inspect(bundle, "--verify-key", str(released["pub"]))
    assert code == 6
    assert out["signature"] == "invalid"
    assert [p.split(":")[0] for p in out["problems"]] == ["signature"]


def test_signature_is_not_listed_and_covers_every_byte(bundle: Path,
                                                       released: dict[str, Path]) -> None:
    m = load_manifest(bundle)
    assert SIGNATURE not in {e["path"] for e in m["files"]}
    assert len((bundle / SIGNATURE).read_bytes()) == 64
    (bundle / MANIFEST).write_text((bundle / MANIFEST).read_text() + "\n")  # same content
    assert inspect(bundle)[0] == 0
    code, out, _ = inspect(bundle, "--verify-key", str(released["pub"]))
    assert code == 6 and out["signature"] == "invalid"


def test_missing_signature_or_other_key(bundle: Path, tmp_path: Path) -> None:
    assert CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / "other")]).exit_code == 0
    code, out, _ = inspect(bundle, "--verify-key", str(tmp_path / "other.pub"))
    assert code == 6 and out["signature"] == "invalid"
    (bundle / SIGNATURE).unlink()
    code, out, _ = inspect(bundle, "--verify-key", str(tmp_path / "other.pub"))
    assert code == 6 and out["signature"] == "missing"
    code, out, _ = inspect(bundle)
    assert code == 0 and out["signature"] == "unsigned"


def test_bad_verify_key_is_a_usage_error(bundle: Path, released: dict[str, Path],
                                         tmp_path: Path) -> None:
    for path, text in ((released["key"], "is a private key"),
                       (tmp_path / "nope.pub", "does not exist"),
                       (released["dir"] / "schema.yaml", "must be a PEM Ed25519 public key")):
        res = CliRunner().invoke(main, ["inspect", str(bundle), "--verify-key", str(path)])
        assert res.exit_code == 2, res.output
        assert text in res.stderr and res.stderr.count("\n") == 1


def test_keygen(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / "k"), "--json"])
    assert res.exit_code == 0
    out = json.loads(res.stdout)
    assert out["fingerprint"].startswith("sha256:") and len(out["fingerprint"]) == 71
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in (tmp_path / "k").read_bytes()
    assert b"BEGIN PUBLIC KEY" in (tmp_path / "k.pub").read_bytes()
    again = CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / "k")])
    assert again.exit_code == 2 and "never overwritten" in again.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_interoperates(bundle: Path, released: dict[str, Path], tmp_path: Path) -> None:
    """The documented openssl commands: verify without dpsynth, and make keys dpsynth reads."""
    ok = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(released["pub"]),
                         "-rawin", "-in", str(bundle / MANIFEST), "-sigfile",
                         str(bundle / SIGNATURE)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    key, pub = tmp_path / "key.pem", tmp_path / "key.pub.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True)
    from dpsynth.signing import load_public_key, load_signer

    signer = load_signer(key)
    assert signer.public.fingerprint == load_public_key(pub).fingerprint
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(pub), "-outform", "DER"],
                         capture_output=True, check=True).stdout
    assert signer.public.fingerprint == "sha256:" + hashlib.sha256(der).hexdigest()


def test_bad_sign_key_fails_before_the_ledger(released: dict[str, Path], tmp_path: Path) -> None:
    """A key that cannot sign must stop the release before any budget is reserved."""
    import sqlite3

    ledger = released["ledger"]
    before = sqlite3.connect(ledger).execute("select count(*) from charges").fetchone()
    (tmp_path / "bad.pem").write_text("not a key\n")
    res = CliRunner().invoke(main, [
        "release", "--schema", str(released["dir"] / "schema.yaml"), "--input",
        str(released["dir"] / "table.csv"), "--out", str(tmp_path / "b"), "--ledger",
        f"sqlite:///{ledger}", "--engine", "mst", "--epsilon", "0.5", "--quiet",
        "--sign-key", str(tmp_path / "bad.pem")])
    assert res.exit_code == 2 and "--sign-key" in res.stderr
    after = sqlite3.connect(ledger).execute("select count(*) from charges").fetchone()
    assert before == after
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- the API, file by file


def test_verify_bundle_result(bundle: Path) -> None:
    res = verify_bundle(bundle)
    assert res.ok and res.signature == "not verified"
    assert res.summary["release_id"] == "r1" and res.summary["engine"] == "mst"
    assert res.summary["files"] == len(LAYOUT) + len((MODEL_JSON, MODEL_ARRAYS))  # an mst bundle


def test_modified_file(bundle: Path) -> None:
    p = bundle / "DATASHEET.md"
    p.write_bytes(p.read_bytes().replace(b"Datasheet", b"DATASHEET"))  # same size
    assert verify_bundle(bundle).problems == ["files: checksum mismatch: DATASHEET.md"]


def test_size_change(bundle: Path) -> None:
    (bundle / "quality-report.html").write_text("<p>")
    problems = verify_bundle(bundle).problems
    assert [p.split(" (")[0] for p in problems] == ["files: size mismatch: quality-report.html"]


def test_missing_file(bundle: Path) -> None:
    (bundle / "validation" / "results.json").unlink()
    res = verify_bundle(bundle)
    assert res.problems == ["files: missing file: validation/results.json"]
    assert res.checks["files"] == "failed"


def test_extra_file(bundle: Path) -> None:
    (bundle / "validation" / "notes.txt").write_text("hello")
    assert verify_bundle(bundle).problems == ["directory: unlisted file: validation/notes.txt"]


def test_symlink_is_refused(bundle: Path) -> None:  # (0.1.0 caught this one already)
    os.symlink("/etc/hostname", bundle / "notes.txt")
    assert verify_bundle(bundle).problems == ["directory: unlisted file: notes.txt (symbolic link)"]


def test_fifo_is_refused(bundle: Path) -> None:
    os.mkfifo(bundle / "pipe")
    assert verify_bundle(bundle).problems == ["directory: unlisted file: pipe (not a regular file)"]


def test_invalid_manifest(bundle: Path) -> None:
    m = load_manifest(bundle)
    del m["release_id"]
    save_manifest(bundle, m)
    res = verify_bundle(bundle)
    assert any(p.startswith("manifest: invalid") and "release_id" in p for p in res.problems)
    (bundle / MANIFEST).write_text("{not json")
    assert verify_bundle(bundle).problems == ["manifest: not readable JSON (JSONDecodeError)"]
    (bundle / MANIFEST).unlink()
    assert verify_bundle(bundle).problems == [f"manifest: missing file: {MANIFEST}"]


def test_unreadable_parquet_is_a_problem_not_a_crash(bundle: Path) -> None:
    (bundle / "synthetic.parquet").write_bytes(b"PAR1 garbage")
    rehash(bundle, "synthetic.parquet")
    problems = verify_bundle(bundle).problems
    assert problems and all("synthetic.parquet is not readable Parquet" in p for p in problems)


def _set_results(b: Path, success: bool, severity: str) -> None:
    p = b / "validation" / "results.json"
    doc = json.loads(p.read_text())
    doc["success"] = success
    doc["results"][0]["success"] = success
    doc["results"][0]["expectation_config"]["severity"] = severity
    p.write_text(json.dumps(doc, indent=2))
    rehash(b, "validation/results.json")


def test_failed_warning_rule_is_not_a_problem(bundle: Path) -> None:
    _set_results(bundle, False, "warning")  # severity: warning rules are reported, not fatal
    assert verify_bundle(bundle).ok
    _set_results(bundle, False, "critical")
    assert [p.split(":")[0] for p in verify_bundle(bundle).problems] == ["release"]


def test_not_a_directory(tmp_path: Path) -> None:
    from dpsynth.errors import StorageError

    with pytest.raises(StorageError):
        verify_bundle(tmp_path / "nope")
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "nope")])
    assert res.exit_code == 6
