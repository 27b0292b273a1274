"""Crash windows of a release, tested by REAL kills (issue 17, defects 7b and 7c).

Each test runs ``python -m dpsynth release`` in a subprocess with
``DPSYNTH_CRASH_AT`` naming an injected point (``dpsynth.crashpoints``): the process
SIGKILLs itself there, nothing is flushed and no handler runs. The kill is never
simulated. Afterwards the ledger and the output directory must tell the truth:

* the charge is counted (reserved, spent) once the budget was reserved;
* no bundle at the final path unless it is complete; a complete bundle with a
  ``spent`` charge is reconcilable (``dpsynth ledger reconcile``);
* a temporary bundle directory left by the kill is removed by the next release to
  the same path, never while its writer is alive.

``benchmarks/reliability.py`` runs many more kills (random points and times) and the
16-way concurrency check on both ledger backends.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_release import SCHEMA, make_table  # tests/ is on sys.path (conftest.py)

import dpsynth
from dpsynth.bundle import STALE_AFTER_S
from dpsynth.cli import main
from dpsynth.crashpoints import ENV, POINTS
from dpsynth.inspect import verify_bundle

CODE_ROOT = Path(dpsynth.__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Path | str]:
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    make_table(tmp_path / "table.csv", n_patients=300)
    (tmp_path / "ledger").mkdir()
    ledger = f"sqlite:///{tmp_path / 'ledger' / 'ledger.db'}"
    res = CliRunner().invoke(main, ["ledger", "init", "--ledger", ledger, "--dataset-id", "clinic",
                                    "--total-epsilon", "3"])
    assert res.exit_code == 0, res.output
    (tmp_path / "out").mkdir()
    return {"dir": tmp_path, "out": tmp_path / "out", "schema": tmp_path / "schema.yaml",
            "input": tmp_path / "table.csv", "ledger": ledger}


def release(env: dict[str, Path | str], out: str, release_id: str,
            crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m dpsynth release`` in a subprocess (this checkout's code)."""
    child = {**os.environ, "PYTHONPATH": str(CODE_ROOT)}
    child.pop(ENV, None)
    if crash_at is not None:
        child[ENV] = crash_at
    args = [sys.executable, "-m", "dpsynth", "release", "--schema", str(env["schema"]),
            "--input", str(env["input"]), "--out", str(Path(env["out"]) / out),
            "--ledger", str(env["ledger"]), "--engine", "mst", "--epsilon", "0.2",
            "--release-id", release_id, "--seed", "1", "--quiet", "--json"]
    return subprocess.run(args, env=child, capture_output=True, text=True, timeout=600,
                          check=False)


def status(env: dict[str, Path | str], release_id: str) -> str | None:
    con = sqlite3.connect(str(env["ledger"]).removeprefix("sqlite:///"))
    try:
        rows = con.execute("select status from charges where release_id = ?",
                           (release_id,)).fetchall()
    finally:
        con.close()
    return rows[0][0] if rows else None


def temp_dirs(env: dict[str, Path | str], out: str) -> list[Path]:
    return sorted(p for p in Path(env["out"]).iterdir() if p.name.startswith(f".{out}.tmp-"))


def killed(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize(("point", "expected"), [("after-spent", "spent"),
                                                  ("before-publish", "spent")])
def test_a_kill_before_the_bundle_is_published_leaves_a_counted_charge_and_no_bundle(
        env: dict[str, Path | str], point: str, expected: str) -> None:
    proc = release(env, "b1", "r1", crash_at=point)
    assert killed(proc), proc.stderr
    assert status(env, "r1") == expected
    assert not (Path(env["out"]) / "b1").exists()


def test_a_kill_after_publishing_is_reconciled_from_the_manifest(
        env: dict[str, Path | str]) -> None:
    """7b: SIGKILL between the rename and mark_released. The complete bundle is in place
    with its charge 'spent'; `ledger show` says so and `ledger reconcile` fixes it."""
    proc = release(env, "b1", "r1", crash_at="after-publish")
    assert killed(proc), proc.stderr
    bundle = Path(env["out"]) / "b1"
    assert verify_bundle(bundle).ok
    assert status(env, "r1") == "spent"
    show = CliRunner().invoke(main, ["ledger", "show", "--ledger", str(env["ledger"])])
    assert "not finished (r1)" in show.stdout and "ledger reconcile --bundle" in show.stdout
    res = CliRunner().invoke(main, ["ledger", "reconcile", "--ledger", str(env["ledger"]),
                                    "--bundle", str(bundle), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["bundles"] == [
        {"bundle": str(bundle), "release_id": "r1", "dataset_id": "clinic",
         "status_before": "spent", "status": "released"}]
    assert status(env, "r1") == "released"


def test_a_kill_while_writing_the_bundle_leaves_a_temp_dir_the_next_run_removes(
        env: dict[str, Path | str]) -> None:
    """7c: SIGKILL inside write_bundle leaves `.b1.tmp-*` (never a bundle at b1); the next
    release to b1 removes it (its writer is dead: nobody holds its lock) and succeeds."""
    proc = release(env, "b1", "r1", crash_at="in-bundle")
    assert killed(proc), proc.stderr
    assert status(env, "r1") == "spent"
    assert not (Path(env["out"]) / "b1").exists()
    (stale,) = temp_dirs(env, "b1")
    # stale once unchanged for STALE_AFTER_S: wait from the directory's own change time (the
    # next release reaches the check within a second of starting, since start-up is fast)
    time.sleep(max(0.0, STALE_AFTER_S + 0.5 - (time.time() - stale.lstat().st_ctime)))
    proc = release(env, "b1", "r2")
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists() and temp_dirs(env, "b1") == []
    assert verify_bundle(Path(env["out"]) / "b1").ok
    assert status(env, "r2") == "released" and status(env, "r1") == "spent"


def test_a_temp_dir_whose_writer_is_alive_is_never_removed(env: dict[str, Path | str]) -> None:
    """A live writer holds the flock on its temp dir: the release refuses (exit 2, no
    charge) instead of removing it; once the lock is gone, the dir is removed."""
    live = Path(env["out"]) / ".b1.tmp-live0000"
    live.mkdir()
    (live / "synthetic.csv").write_text("half")
    old = time.time() - 3600
    os.utime(live, (old, old))
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; "
                               f"fcntl.flock({fd}, fcntl.LOCK_EX); print('locked', flush=True); "
                               "time.sleep(600)"], pass_fds=(fd,), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        time.sleep(STALE_AFTER_S)  # the ctime of the test's own writes must be old enough
        res = CliRunner().invoke(main, ["release", "--schema", str(env["schema"]), "--input",
                                        str(env["input"]), "--out", str(Path(env["out"]) / "b1"),
                                        "--ledger", str(env["ledger"]), "--engine", "mst",
                                        "--epsilon", "0.2", "--quiet"])
        assert res.exit_code == 2 and "in use" in res.stderr, res.output
        assert live.exists()
        con = sqlite3.connect(str(env["ledger"]).removeprefix("sqlite:///"))
        assert con.execute("select count(*) from charges").fetchone() == (0,)
        con.close()
        probe = os.open(live, os.O_RDONLY | os.O_DIRECTORY)  # a lock of its own
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(probe)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
        os.close(fd)
    from dpsynth.bundle import remove_stale_temp_dirs

    assert remove_stale_temp_dirs(Path(env["out"]) / "b1") == ([live], [])


def test_every_crash_point_is_named_in_pipeline_order() -> None:
    assert list(POINTS)[:3] == ["after-reserve", "after-spent", "after-decompress"]
    assert {"in-bundle", "before-publish", "after-publish"} <= set(POINTS)
