"""Reading the private table under failure (issue 17: defects 1, 2, 7a and 8).

* a null or missing-token patient id never becomes a patient (rule privacy-unit-missing);
* a CSV record cut short (or a blank line) fails csv-format with its data row number,
  even where the missing fields could be empty;
* a gzip input killed with SIGKILL right after it was decompressed leaves no
  plain-text copy of the table anywhere (a real kill of a real ``dpsynth release``);
* messages: a PostgreSQL connection error is one line with the password redacted, a
  corrupt Parquet file is parquet-format, a directory or FIFO says what it is;
* a bad input leaves nothing behind: no bundle, no temporary directory, and no
  ledger charge unless the private file was read.
"""

from __future__ import annotations

import gzip
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from test_bad_inputs import BASE_SCHEMA, CANARY, HEADER, ROWS, csv_bytes
from test_release import CANARY_ID, CANARY_TEXT, make_table
from test_release import SCHEMA as RELEASE_SCHEMA

from dpsynth.cli import main
from dpsynth.errors import InputDataError
from dpsynth.io import load_encoded
from dpsynth.schema import parse_schema

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "S3cr3t-Pw-5521"


def _check(tmp_path: Path, table: Path, schema: str = BASE_SCHEMA) -> tuple[int, str]:
    (tmp_path / "schema.yaml").write_text(schema)
    res = CliRunner().invoke(main, ["schema", "check", "--schema", str(tmp_path / "schema.yaml"),
                                    "--input", str(table)])
    return res.exit_code, res.stdout + res.stderr


def _one_line(out: str) -> str:
    """The one problem line (``schema check`` adds a summary line after its list)."""
    lines = [ln for ln in out.splitlines()
             if ln.strip() and "the table does not satisfy the schema:" not in ln]
    assert len(lines) == 1, f"expected one line, got: {out!r}"
    return lines[0]


# -- defect 1: null patient ids --------------------------------------------------------


@pytest.mark.parametrize("ids", [[None, "1", "2", "3", "4"], [None] * 5, ["1", "1", None, None, "4"]],
                         ids=["one null", "all null", "two nulls"])
def test_null_patient_ids_in_parquet_are_refused(tmp_path: Path, ids: list[str | None]) -> None:
    df = pl.DataFrame({h: [r[i] for r in ROWS] for i, h in enumerate(HEADER)})
    df.with_columns(pl.Series("pid", ids, dtype=pl.String)).write_parquet(tmp_path / "t.parquet")
    with pytest.raises(InputDataError) as err:
        load_encoded(tmp_path / "t.parquet", parse_schema(BASE_SCHEMA), bounding_secret=1)
    assert (err.value.column, err.value.rule) == ("pid", "privacy-unit-missing")
    first = ids.index(None) + 1
    assert f"in {ids.count(None)} row(s), first at data row {first}" in str(err.value)


@pytest.mark.parametrize("pid", ["", "  ", "?", " ? "])
def test_empty_and_missing_token_patient_ids_in_csv_are_refused(tmp_path: Path, pid: str) -> None:
    rows = [list(r) for r in ROWS]
    rows[3][0] = f'"{pid}"'
    (tmp_path / "t.csv").write_bytes(csv_bytes(HEADER, rows))
    code, out = _check(tmp_path, tmp_path / "t.csv")
    line = _one_line(out)
    assert code == 3 and "privacy-unit-missing" in line and "first at data row 4" in line, line


# -- defect 2: short CSV records -------------------------------------------------------

# The schema's last two columns (smoker, dx) are nullable with "" a missing token, so
# polars 2 filled a record cut short there with "" and every column rule passed.
SHORT = {
    "last field missing": b"5,x,M,70,31,2010-01-01,true\n",
    "last two fields missing": b"5,x,M,70,31,2010-01-01\n",
    "blank line": b"\n",
}


@pytest.mark.parametrize("gz", [False, True], ids=["csv", "gzip"])
@pytest.mark.parametrize("short", list(SHORT), ids=list(SHORT))
def test_a_record_cut_short_is_refused_with_its_data_row(tmp_path: Path, short: str,
                                                         gz: bool) -> None:
    rows = [list(r) for r in ROWS]
    rows[1][1] = f'"two\nlines, {CANARY}"'  # a quoted line break: rows are records, not lines
    text = csv_bytes(HEADER, rows[:3]) + SHORT[short] + csv_bytes(HEADER, rows[3:]).split(b"\n", 1)[1]
    path = tmp_path / ("t.csv.gz" if gz else "t.csv")
    path.write_bytes(gzip.compress(text) if gz else text)
    code, out = _check(tmp_path, path)
    line = _one_line(out)
    assert code == 3, line
    assert "[rule: csv-format]" in line and "in 1 row(s), first at data row 4" in line, line
    assert CANARY not in out


def test_a_record_with_an_extra_field_is_refused_with_its_data_row(tmp_path: Path) -> None:
    text = csv_bytes(HEADER, ROWS[:2]) + f"5,{CANARY},F,1,20,2001-01-01,true,8,9\n".encode()
    (tmp_path / "t.csv").write_bytes(text + csv_bytes(HEADER, ROWS[2:]).split(b"\n", 1)[1])
    code, out = _check(tmp_path, tmp_path / "t.csv")
    line = _one_line(out)
    assert code == 3 and "csv-format" in line and "first at data row 3" in line, line
    assert CANARY not in out


@pytest.mark.parametrize("short", [False, True], ids=["good", "short record"])
def test_a_record_longer_than_the_counting_block_is_counted(tmp_path: Path, short: bool) -> None:
    """A 3 MiB clinical note: pyarrow's 1 MiB blocks cannot hold the record, so the
    fields are counted by the csv module instead, with the same result."""
    rows = [list(r) for r in ROWS]
    rows[0][1] = '"' + "word, \n" * (3 << 17) + '"'
    text = csv_bytes(HEADER, rows)
    if short:
        text += b"5,x,M,70,31,2010-01-01,true\n"
    (tmp_path / "t.csv").write_bytes(text)
    code, out = _check(tmp_path, tmp_path / "t.csv")
    if short:
        assert code == 3 and "csv-format" in out and "first at data row 6" in out, out
    else:
        assert code == 0, out


def test_quoted_line_breaks_and_crlf_are_still_read(tmp_path: Path) -> None:
    rows = [list(r) for r in ROWS]
    rows[0][1] = '"a note\r\nover two lines, with a comma"'
    (tmp_path / "t.csv").write_bytes(csv_bytes(HEADER, rows, eol="\r\n"))
    code, out = _check(tmp_path, tmp_path / "t.csv")
    assert code == 0, out


# -- defect 7a: no plain-text copy survives a SIGKILL after decompression ---------------


def _files_holding(root: Path, needles: list[bytes]) -> list[Path]:
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            f = Path(dirpath) / name
            try:
                data = f.read_bytes()
            except OSError:
                continue
            if any(n in data for n in needles):
                found.append(f)
    return found


def test_sigkill_after_decompress_leaves_no_plain_text_copy(tmp_path: Path) -> None:
    """A real SIGKILL (DPSYNTH_CRASH_AT=after-decompress) of `dpsynth release` on a gzip
    input: no file anywhere under the run's temporary directory or the bundle's parent
    holds the table's text, and no dpsynth-input-* entry in the system temporary
    directory does either."""
    work = tmp_path / "work"
    tmp = tmp_path / "tmp"
    work.mkdir()
    tmp.mkdir()
    (work / "schema.yaml").write_text(RELEASE_SCHEMA)
    make_table(work / "table.csv")
    (work / "table.csv.gz").write_bytes(gzip.compress((work / "table.csv").read_bytes()))
    (work / "table.csv").unlink()
    ledger = f"sqlite:///{work / 'ledger.db'}"
    res = CliRunner().invoke(main, ["ledger", "init", "--ledger", ledger, "--dataset-id", "clinic",
                                    "--total-epsilon", "3"])
    assert res.exit_code == 0, res.output
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp),
           "DPSYNTH_CRASH_AT": "after-decompress"}
    before = set(Path(tempfile.gettempdir()).glob("dpsynth-input-*"))
    proc = subprocess.run(
        [sys.executable, "-m", "dpsynth.cli", "release", "--schema", str(work / "schema.yaml"),
         "--input", str(work / "table.csv.gz"), "--epsilon", "1", "--out", str(work / "bundle"),
         "--ledger", ledger, "--quiet"],
        env=env, cwd=work, capture_output=True, timeout=900, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode(errors="replace")
    needles = [CANARY_ID.encode(), CANARY_TEXT.encode()]
    assert _files_holding(tmp_path, needles) == []
    new = set(Path(tempfile.gettempdir()).glob("dpsynth-input-*")) - before
    assert [p for p in new if _files_holding(p, needles) or p.is_file()] == []
    assert not (work / "bundle").exists()


# -- defect 8: messages ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_postgresql_connection_error_is_one_line_without_the_password(host: str) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://bob:{PASSWORD}@{host}:{_free_port()}/ledger"  # nothing listens there
    res = CliRunner().invoke(main, ["ledger", "show", "--ledger", url])
    out = res.stdout + res.stderr
    assert res.exit_code == 6, out
    line = _one_line(out)
    assert "cannot connect to PostgreSQL" in line and "***" in line
    assert PASSWORD not in out


@pytest.mark.postgres
def test_a_postgresql_server_refusal_is_one_line_without_the_password(pg_server: object) -> None:
    host, port = pg_server.host, pg_server.port  # type: ignore[attr-defined]
    for url in (f"postgresql://postgres:{PASSWORD}@{host}:{port}/no_such_database",
                f"postgresql://no_such_role:{PASSWORD}@{host}:{port}/postgres"):
        res = CliRunner().invoke(main, ["ledger", "show", "--ledger", url])
        out = res.stdout + res.stderr
        assert res.exit_code == 6, out
        assert "does not exist" in _one_line(out)
        assert PASSWORD not in out


def corrupt_parquet(path: Path) -> None:
    """A Parquet file whose footer is intact and whose data pages are garbage."""
    pl.DataFrame({h: [r[i] for r in ROWS] for i, h in enumerate(HEADER)}).write_parquet(path)
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    for i in range(4, len(data) - 8 - footer):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def truncated_parquet(path: Path) -> None:
    pl.DataFrame({h: [r[i] for r in ROWS] for i, h in enumerate(HEADER)}).write_parquet(path)
    path.write_bytes(path.read_bytes()[:-20])


@pytest.mark.parametrize("write", [corrupt_parquet, truncated_parquet], ids=["corrupt", "truncated"])
def test_an_unreadable_parquet_file_is_parquet_format(tmp_path: Path,
                                                      write: Callable[[Path], None]) -> None:
    write(tmp_path / "t.parquet")
    code, out = _check(tmp_path, tmp_path / "t.parquet")
    line = _one_line(out)
    assert code == 3 and "[rule: parquet-format]" in line and "csv" not in line, line


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    (path / "part-0.csv").write_bytes(csv_bytes(HEADER, ROWS))
    return path


@pytest.mark.parametrize(("make", "says"), [
    (_directory, "is a directory"),
    (_fifo, "is not a regular file (it is a FIFO)"),
    (lambda p: p, "does not exist"),
], ids=["directory", "fifo", "missing"])
def test_an_input_that_is_not_a_regular_file_says_what_it_is(
        tmp_path: Path, make: Callable[[Path], Path], says: str) -> None:
    path = make(tmp_path / "input.csv")
    code, out = _check(tmp_path, path)
    line = _one_line(out)
    assert code == 3 and says in line and "[rule: input-file]" in line, line
    # release: refused before the ledger is opened, so nothing is charged
    (tmp_path / "r.yaml").write_text(RELEASE_SCHEMA)
    ledger = tmp_path / "ledger.db"
    res = CliRunner().invoke(main, ["release", "--schema", str(tmp_path / "r.yaml"), "--input",
                                    str(path), "--epsilon", "1", "--out", str(tmp_path / "b"),
                                    "--ledger", f"sqlite:///{ledger}", "--quiet"])
    assert res.exit_code == 2 and says in _one_line(res.stdout + res.stderr), res.output
    assert not ledger.exists() and not (tmp_path / "b").exists()


# -- bad input leaves nothing behind ----------------------------------------------------


def _release_input(kind: str, path: Path) -> Path:
    if kind == "short record":
        make_table(path)
        path.write_bytes(path.read_bytes() + b"9999,,F,50,22.5,2012-01-11,True\n")  # no dx
    elif kind == "null patient id (parquet)":
        df = make_table(path).with_columns(
            pl.when(pl.int_range(pl.len()) == 10).then(None).otherwise(pl.col("pid")).alias("pid"))
        path = path.with_suffix(".parquet")
        df.write_parquet(path)
    elif kind == "corrupt parquet":
        make_table(path)
        df = pl.read_csv(path, infer_schema=False)
        path = path.with_suffix(".parquet")
        df.write_parquet(path)
        data = bytearray(path.read_bytes())
        footer = int.from_bytes(data[-8:-4], "little")
        for i in range(4, len(data) - 8 - footer):
            data[i] ^= 0x5A
        path.write_bytes(bytes(data))
    elif kind == "corrupt gzip":
        make_table(path)
        packed = gzip.compress(path.read_bytes())
        path = path.with_suffix(".csv.gz")
        path.write_bytes(packed[: len(packed) // 2])
    return path


@pytest.mark.parametrize(("kind", "rule"), [
    ("short record", "csv-format"),
    ("null patient id (parquet)", "privacy-unit-missing"),
    ("corrupt parquet", "parquet-format"),
    ("corrupt gzip", "gzip"),
])
def test_a_bad_input_leaves_no_bundle_and_keeps_the_charge_it_read(tmp_path: Path, kind: str,
                                                                   rule: str) -> None:
    """The file was opened (hashed and read), so the charge stays spent-failed; no
    bundle, no temporary directory beside it, and nothing in the run's temp dir."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "schema.yaml").write_text(RELEASE_SCHEMA)
    path = _release_input(kind, work / "table.csv")
    ledger = work / "ledger.db"
    runner = CliRunner()
    assert runner.invoke(main, ["ledger", "init", "--ledger", f"sqlite:///{ledger}",
                                "--dataset-id", "clinic", "--total-epsilon", "3"]).exit_code == 0
    out_parent = tmp_path / "out"
    res = runner.invoke(main, ["release", "--schema", str(work / "schema.yaml"), "--input",
                               str(path), "--epsilon", "1", "--out", str(out_parent / "b"),
                               "--ledger", f"sqlite:///{ledger}", "--release-id", "r1", "--quiet"])
    out = res.stdout + res.stderr
    assert res.exit_code == 3, out
    assert f"[rule: {rule}]" in _one_line(out)
    assert CANARY_ID not in out and CANARY_TEXT not in out
    assert list(out_parent.iterdir()) == []
    con = sqlite3.connect(ledger)
    try:
        assert con.execute("select release_id, status from charges").fetchall() == [
            ("r1", "spent-failed")]
    finally:
        con.close()
