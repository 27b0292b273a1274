"""Validation in a worker process (dpsynth.validation_worker): the same outcome as in the
release's own process, errors that keep their type, and nothing left behind.

Each test starts real worker processes (``python -m dpsynth.validation_worker``), which
import great-expectations: seconds of CPU each, so the cases share workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from test_release import SCHEMA, make_table  # tests/ is on sys.path (conftest.py)
from test_validate import _cases, _table, small  # noqa: F401 - small: a fixture

import dpsynth
from dpsynth.errors import InternalError
from dpsynth.schema import Schema, load_schema
from dpsynth.validate import validate_synthetic
from dpsynth.validation_worker import (
    ENV,
    WORKER_MAX_INPUT_BYTES,
    WORKER_MAX_ROWS,
    InProcess,
    ValidationWorker,
    start_validation,
)

CODE_ROOT = Path(dpsynth.__file__).resolve().parents[1]


def _dumps(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def test_the_worker_gives_the_outcome_validation_gives_in_process(small: Schema) -> None:  # noqa: F811
    """Every case of test_validate's comparison with the old implementation (passing and
    failing tables, the shipped example's synthetic table, wrong types, missing columns):
    the worker's suite and results JSON, failures and warnings are the in-process ones."""
    workers: dict[str, ValidationWorker] = {}
    try:
        for name, df, schema, lo, hi in _cases(small):
            if name.startswith("example"):
                lo = hi = df.height
            worker = workers.get(schema.sha256)
            if worker is None:
                worker = workers[schema.sha256] = ValidationWorker(schema)
            there = worker.validate(df, lo, hi)
            here = validate_synthetic(df, schema, lo, hi)
            assert _dumps(there.suite_json) == _dumps(here.suite_json), name
            assert _dumps(there.results_json) == _dumps(here.results_json), name
            assert (there.success, there.failed, there.warnings) == (
                here.success, here.failed, here.warnings), name
    finally:
        for worker in workers.values():
            worker.close()


def test_an_error_in_the_worker_is_raised_in_the_caller_and_close_cleans_up() -> None:
    schema = load_schema(CODE_ROOT / "schemas" / "nist_excerpts.yaml")
    worker = ValidationWorker(schema)
    workdir = worker._dir
    try:
        assert workdir.is_dir() and oct(workdir.stat().st_mode & 0o777) == "0o700"
        with pytest.raises(InternalError, match=r"row range \(5, 1\)"):
            worker.validate(pl.DataFrame({"x": [1]}), 5, 1)  # a DpsynthError, as raised there
        # a foreign exception (polars: the rules' columns are missing): its type only
        with pytest.raises(InternalError, match=r"worker process \(ColumnNotFoundError\)$"):
            worker.validate(pl.DataFrame({"x": [1]}), 1, 1)
        df = _table(schema)
        assert worker.validate(df, df.height, df.height).success  # the worker carries on
        assert list(workdir.iterdir()) == [workdir / "schema.pickle"]  # no table left
    finally:
        worker.close()
    assert not workdir.exists()
    with pytest.raises(InternalError, match="closed"):
        worker.validate(pl.DataFrame({"x": [1]}), 1, 1)


def test_a_worker_closed_before_validating_is_stopped() -> None:
    worker = ValidationWorker(load_schema(CODE_ROOT / "schemas" / "nist_excerpts.yaml"))
    proc, workdir = worker._proc, worker._dir
    assert proc is not None
    t = time.perf_counter()
    worker.close()  # while it imports great-expectations
    assert proc.poll() is not None and time.perf_counter() - t < 5
    assert not workdir.exists()


def test_a_table_that_cannot_be_handed_over_is_validated_here() -> None:
    """No room for the table in the temporary directory (made unwritable here by a
    directory in its place): the worker is stopped and the same validation runs in
    this process."""
    schema = load_schema(CODE_ROOT / "schemas" / "nist_excerpts.yaml")
    df = _table(schema)
    worker = ValidationWorker(schema)
    proc, workdir = worker._proc, worker._dir
    (workdir / "synthetic.arrow").mkdir()
    try:
        out = worker.validate(df, df.height, df.height)
        assert proc is not None and proc.poll() is not None and not workdir.exists()
        here = validate_synthetic(df, schema, df.height, df.height)
        assert _dumps(out.results_json) == _dumps(here.results_json)
        # and again, here (a row count outside the range fails as it would there)
        assert "expect_table_row_count_to_be_between" in worker.validate(df, 1, 1).failed
    finally:
        worker.close()


def test_where_validation_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """In process when asked (the test suite sets DPSYNTH_VALIDATION_WORKER=0), or once
    great-expectations is loaded here; otherwise in a worker (on 2 or more cores)."""
    schema = load_schema(CODE_ROOT / "schemas" / "nist_excerpts.yaml")
    monkeypatch.setenv(ENV, "0")
    assert isinstance(start_validation(schema), InProcess)
    monkeypatch.delenv(ENV)
    # a large input (memory matters more than seconds) or one of unknown size: in process
    assert isinstance(start_validation(schema, WORKER_MAX_INPUT_BYTES + 1), InProcess)
    assert isinstance(start_validation(schema, None), InProcess)
    assert isinstance(start_validation(schema, 1_000_000, WORKER_MAX_ROWS + 1), InProcess)
    v = start_validation(schema, 1_000_000)
    try:
        expected = InProcess if ("great_expectations" in sys.modules
                                 or len(os.sched_getaffinity(0)) < 2) else ValidationWorker
        assert isinstance(v, expected)
    finally:
        v.close()


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    child = {**os.environ, "PYTHONPATH": str(CODE_ROOT), "TMPDIR": str(tmp_path / "tmp")}
    child.pop(ENV, None)  # the worker, as a custodian's release runs it
    child.pop("DPSYNTH_CRASH_AT", None)
    child.update(env)
    return subprocess.run([sys.executable, "-m", "dpsynth", *args], env=child,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture
def clinic(tmp_path: Path) -> Path:
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    make_table(tmp_path / "table.csv", n_patients=300)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "ledger").mkdir()
    ledger = f"sqlite:///{tmp_path / 'ledger' / 'ledger.db'}"
    res = _cli(tmp_path, "ledger", "init", "--ledger", ledger, "--dataset-id", "clinic",
               "--total-epsilon", "3")
    assert res.returncode == 0, res.stderr
    return tmp_path


def _release(d: Path, out: str, **env: str) -> subprocess.CompletedProcess[str]:
    return _cli(d, "release", "--schema", str(d / "schema.yaml"), "--input",
                str(d / "table.csv"), "--out", str(d / out), "--ledger",
                f"sqlite:///{d / 'ledger' / 'ledger.db'}", "--engine", "mst", "--epsilon",
                "0.5", "--seed", "1", "--quiet", "--json", **env)


def test_a_release_validates_in_its_worker_and_leaves_nothing_behind(clinic: Path) -> None:
    """The real CLI with the worker: the bundle's results are those of validating its
    synthetic table in process, and the worker's directory is gone."""
    res = _release(clinic, "bundle")
    assert res.returncode == 0, res.stderr
    assert list((clinic / "tmp").iterdir()) == []
    bundle = Path(json.loads(res.stdout)["bundle"])
    results = json.loads((bundle / "validation" / "results.json").read_text())
    assert results["success"] and results["statistics"]["evaluated_expectations"] > 20
    table = pl.read_parquet(bundle / "synthetic.parquet")
    here = validate_synthetic(table, load_schema(clinic / "schema.yaml"), table.height,
                              table.height)
    assert json.loads(_dumps(here.results_json)) == results


def test_a_killed_release_leaves_no_worker_directory(clinic: Path) -> None:
    """SIGKILL of the release (dpsynth.crashpoints) right after reserving: its worker sees
    stdin close, removes its directory and exits."""
    res = _release(clinic, "bundle", DPSYNTH_CRASH_AT="after-reserve")
    assert res.returncode == -9, res.stderr
    deadline = time.monotonic() + 120  # the worker finishes importing first
    while list((clinic / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert list((clinic / "tmp").iterdir()) == []
    assert not (clinic / "bundle").exists()
