"""Parquet input is streamed in pyarrow batches and read exactly like the same table as CSV.

``dpsynth.io.reading.parquet_batches`` replaces polars' own Parquet scan (which decodes a
whole row group at once) with pyarrow's record-batch reader. These tests check that it
gives polars' types and rows, whatever the row groups and batch size, and that a typed
Parquet table (integer codes as Int64, dates as Date, booleans, floats and nulls, the
way ``polars.read_csv(..., infer_schema_length=None)`` types an export) and the same
table as CSV text give the same codes, marginal counts and problems.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from polars.testing import assert_frame_equal

from dpsynth.cli import main
from dpsynth.errors import InputDataError
from dpsynth.io import load_encoded, reading
from dpsynth.io.reading import parquet_batches
from dpsynth.marginals import open_counter
from dpsynth.schema import parse_schema

SCHEMA_TEXT = """\
format: dpsynth.table-schema/v1
name: typed
version: 1
missing_tokens: ["?"]
privacy_unit: {column: pid, max_rows: 2}
columns:
  - {name: enc, kind: identifier}
  - {name: pid, kind: identifier}
  - {name: race, kind: categorical, nullable: true, categories: [A, B, C]}
  - {name: adm, kind: categorical, categories: [1, 2, 3, 5, 8]}
  - {name: days, kind: integer, bounds: [1, 14], bin_width: 1}
  - {name: labs, kind: integer, nullable: true, bounds: [0, 99], bin_width: 10,
     on_out_of_domain: clamp}
  - {name: bmi, kind: float, nullable: true, bounds: [10, 70], bin_edges: [10, 18.5, 25, 30, 70]}
  - {name: visit, kind: date, bounds: ["2000-01-01", "2020-12-31"], bin_unit: year}
  - {name: smoker, kind: boolean, nullable: true}
  - name: dx
    kind: code
    system: ICD-9
    nullable: true
    pattern: 'V\\d{2}|\\d{1,3}(\\.\\d{1,2})?'
    groups:
      - {label: "001-139", ranges: [[1, 139]]}
      - {label: "140-459", ranges: [[140, 459]]}
      - {label: V, prefixes: [V]}
"""
SCHEMA = parse_schema(SCHEMA_TEXT)
N_ROWS = 3_000


def typed_table(seed: int = 5) -> pl.DataFrame:
    """A clean table, typed as polars' CSV inference types an export (seeded)."""
    rng = np.random.default_rng(seed)
    n = N_ROWS
    pid = np.repeat(np.arange(n), rng.integers(1, 4, size=n))[:n] + 1000
    bmi = np.round(rng.uniform(10, 70, n), 1)
    return pl.DataFrame({
        "enc": np.arange(n, dtype=np.int64) + 5_000_000,
        "pid": pid.astype(np.int64),
        "race": rng.choice(["A", "B", "C", "?"], n),  # '?' stays text, as in diabetes130
        "adm": rng.choice([1, 2, 3, 5, 8], n).astype(np.int64),
        "days": rng.integers(1, 15, n).astype(np.int64),
        "labs": pl.Series(rng.integers(0, 130, n)).set(pl.Series(rng.random(n) < 0.1), None),
        "bmi": pl.Series(bmi).set(pl.Series(rng.random(n) < 0.1), None),
        "visit": pl.date_range(dt.date(2000, 1, 1), dt.date(2020, 12, 31), "1d", eager=True)
                 .sample(n, with_replacement=True, seed=seed),
        "smoker": pl.Series(rng.random(n) < 0.3).set(pl.Series(rng.random(n) < 0.05), None),
        "dx": rng.choice(["8", "428.1", "V58", "250.01", "39", "?"], n),
    })


def write_both(df: pl.DataFrame, tmp_path: Path, row_group: int = 700) -> tuple[Path, Path]:
    """The table as typed Parquet (several row groups) and as CSV text (nulls as '?')."""
    pq, csv = tmp_path / "t.parquet", tmp_path / "t.csv"
    df.write_parquet(pq, row_group_size=row_group)
    df.write_csv(csv, null_value="?")
    return pq, csv


@pytest.fixture(params=[7, None], ids=["batches-of-7", "default-batch"])
def batch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Run with tiny pyarrow batches (many batches per row group, rows split across
    them) and with the shipped batch size."""
    if request.param is not None:
        monkeypatch.setattr(reading, "_PARQUET_BATCH", request.param)
    return int(reading._PARQUET_BATCH)


def test_parquet_batches_read_like_polars(tmp_path: Path, batch: int) -> None:
    df = typed_table().with_columns(
        pl.col("race").cast(pl.Categorical).alias("race_cat"),
        pl.col("race").cast(pl.Enum(["A", "B", "C", "?"])).alias("race_enum"),
        pl.col("days").cast(pl.UInt8).alias("days_u8"),
        pl.col("bmi").cast(pl.Float32).alias("bmi_f32"),
        pl.col("visit").cast(pl.Datetime("us", "UTC")).alias("visit_ts"),
        pl.col("visit").cast(pl.Datetime("ms")).alias("visit_ms"),
    )
    path = tmp_path / "t.parquet"
    df.write_parquet(path, row_group_size=500)
    schema = pl.scan_parquet(path).collect_schema()
    lf = parquet_batches(path, schema)
    assert lf.collect_schema() == schema
    want = pl.read_parquet(path)
    assert_frame_equal(lf.collect(engine="streaming"), want, categorical_as_str=True)
    assert_frame_equal(lf.collect(engine="in-memory"), want, categorical_as_str=True)
    # projection, a row limit, a filter, row numbers and a bare count, as the checks use them
    assert_frame_equal(lf.select("labs", "dx").head(1234).collect(engine="streaming"),
                       want.select("labs", "dx").head(1234))
    assert_frame_equal(lf.filter(pl.col("adm") == 5).select("enc").collect(engine="streaming"),
                       want.filter(pl.col("adm") == 5).select("enc"))
    first = (lf.with_row_index("r").filter(pl.col("labs") > 120).select(pl.col("r").min())
             .collect(engine="streaming").item())
    assert first == want.with_row_index("r").filter(pl.col("labs") > 120)["r"].min()
    assert lf.select(pl.len()).collect(engine="streaming").item() == N_ROWS


def test_typed_parquet_and_csv_give_the_same_codes_and_marginals(tmp_path: Path,
                                                                  batch: int) -> None:
    pq, csv = write_both(typed_table(), tmp_path)
    from_pq = load_encoded(pq, SCHEMA, bounding_secret=11)
    from_csv = load_encoded(csv, SCHEMA, bounding_secret=11)
    assert from_pq.codes.shape[0] > 0 and from_pq.codes.dtype == from_csv.codes.dtype
    np.testing.assert_array_equal(from_pq.codes, from_csv.codes)
    # the counts the session measures, through the counting backend
    with open_counter(pq, SCHEMA, bounding_secret=11) as a, \
            open_counter(csv, SCHEMA, bounding_secret=11) as b:
        cols = a.columns
        for marginal in [(c,) for c in cols] + [(cols[0], cols[3]), (cols[1], cols[4], cols[6])]:
            got, want = a.counter.count(marginal), b.counter.count(marginal)
            assert got.sum() == from_csv.codes.shape[0]
            np.testing.assert_array_equal(got, want)


BAD = {
    # (column, a cell written into one row, typed for Parquet), one problem each
    "category not in the domain": ("adm", 4),
    "integer out of bounds": ("days", 15),
    "category text": ("race", "D"),
    "malformed code": ("dx", "X12"),
    "null patient id": ("pid", None),
    "null where not nullable": ("visit", None),
}


def with_bad_cells(df: pl.DataFrame, cells: dict[int, tuple[str, object]]) -> pl.DataFrame:
    """``df`` with ``cells`` (row -> (column, value)) written in, in the column's type."""
    for row, (column, value) in cells.items():
        hit = pl.Series(np.arange(df.height) == row)
        df = df.with_columns(df[column].set(hit, None) if value is None
                             else df[column].scatter(row, pl.Series([value], dtype=df[column].dtype)))
    return df


@pytest.mark.parametrize("case", sorted(BAD))
def test_typed_parquet_and_csv_fail_with_the_same_problem(tmp_path: Path, batch: int,
                                                          case: str) -> None:
    row = 2345
    pq, csv = write_both(with_bad_cells(typed_table(), {row: BAD[case]}), tmp_path)
    errors = []
    for path in (pq, csv):
        with pytest.raises(InputDataError) as exc:
            load_encoded(path, SCHEMA, bounding_secret=1)
        errors.append((exc.value.column, exc.value.rule, str(exc.value)))
    assert errors[0] == errors[1]
    assert errors[0][0] == BAD[case][0] and f"first at data row {row + 1}" in errors[0][2]


def _schema_check(tmp_path: Path, path: Path) -> tuple[int, list[dict[str, object]]]:
    (tmp_path / "s.yaml").write_text(SCHEMA_TEXT)
    res = CliRunner().invoke(main, ["schema", "check", "--schema", str(tmp_path / "s.yaml"),
                                    "--input", str(path), "--json"])
    return res.exit_code, json.loads(res.stdout)["problems"]


def test_schema_check_lists_the_same_problems_for_parquet_and_csv(tmp_path: Path,
                                                                  batch: int) -> None:
    cells = {100 + 400 * i: BAD[case] for i, case in enumerate(sorted(BAD))}
    pq, csv = write_both(with_bad_cells(typed_table(), cells), tmp_path)
    got, want = _schema_check(tmp_path, pq), _schema_check(tmp_path, csv)
    assert got == want
    assert got[0] == 3 and {p["column"] for p in got[1]} == {c for c, _ in BAD.values()}, got


def test_a_clean_typed_table_passes_schema_check_in_both_formats(tmp_path: Path) -> None:
    pq, csv = write_both(typed_table(), tmp_path)
    assert _schema_check(tmp_path, pq) == _schema_check(tmp_path, csv) == (0, [])
