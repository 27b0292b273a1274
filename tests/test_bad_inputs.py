"""The bad-input corpus: every bad schema or table is turned away cleanly.

Each case asserts the documented exit code, that the one-line message names the
column and the rule, and that a canary planted in the private table never shows
up in anything dpsynth prints.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from dpsynth.cli import main

CANARY = "CANARY7731"
CANARY_NUM = "987654321"

BASE_SCHEMA = """\
format: dpsynth.table-schema/v1
name: mini
version: 1
missing_tokens: ["?", ""]
privacy_unit: {column: pid, max_rows: 2}
columns:
  - {name: pid, kind: identifier}
  - {name: note, kind: text, nullable: true}
  - {name: sex, kind: categorical, categories: [F, M]}
  - {name: age, kind: integer, bounds: [0, 119], bin_width: 10}
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
      - {label: "390-459", ranges: [[390, 459]]}
      - {label: V, prefixes: [V]}
"""

HEADER = ["pid", "note", "sex", "age", "bmi", "visit", "smoker", "dx"]
ROWS = [
    ["1", CANARY, "F", "34", "22.5", "2001-03-04", "true", "8"],
    ["1", "", "F", "35", "?", "2002-05-06", "false", "428.1"],
    ["2", "x", "M", "70", "31", "2010-01-01", "", "V58"],
    ["3", "y", "M", "5", "18.4", "2020-12-31", "1", "?"],
    ["4", "z", "F", "110", "69.9", "2000-01-01", "0", "39"],
]


def csv_bytes(header: list[str], rows: list[list[str]], eol: str = "\n") -> bytes:
    lines = [",".join(header)] + [",".join(r) for r in rows]
    return (eol.join(lines) + eol).encode("utf-8")


def with_cell(col: str, value: str, row: int = 2) -> bytes:
    rows = [list(r) for r in ROWS]
    rows[row][HEADER.index(col)] = value
    return csv_bytes(HEADER, rows)


def drop_col(col: str) -> bytes:
    i = HEADER.index(col)
    return csv_bytes([h for h in HEADER if h != col], [r[:i] + r[i + 1 :] for r in ROWS])


def parquet_with(**overrides: pl.Series) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        df = pl.DataFrame({h: [r[i] for r in ROWS] for i, h in enumerate(HEADER)})
        for name, series in overrides.items():
            df = df.with_columns(series.alias(name)) if series is not None else df.drop(name)
        df.write_parquet(path)

    return write


@dataclass
class Case:
    name: str
    exit_code: int
    column: str | None
    rule: str
    table: bytes | Callable[[Path], None] | None = None
    schema: str = BASE_SCHEMA
    suffix: str = ".csv"


def schema_edit(old: str, new: str) -> str:
    assert old in BASE_SCHEMA, old
    return BASE_SCHEMA.replace(old, new)


GOOD = csv_bytes(HEADER, ROWS)

CASES = [
    # --- bad tables (exit 3) ---
    Case("missing column", 3, "bmi", "missing-column", drop_col("bmi")),
    Case("extra column", 3, "ssn", "extra-column",
         csv_bytes([*HEADER, "ssn"], [[*r, CANARY] for r in ROWS])),
    Case("duplicated column name", 3, "age", "duplicate-column",
         csv_bytes([*HEADER, "age"], [[*r, "1"] for r in ROWS])),
    Case("unparseable integer", 3, "age", "parse-integer", with_cell("age", CANARY)),
    Case("decimal in integer column", 3, "age", "parse-integer", with_cell("age", "34.5")),
    Case("unparseable float", 3, "bmi", "parse-float", with_cell("bmi", CANARY)),
    Case("non-finite float", 3, "bmi", "parse-float", with_cell("bmi", "inf")),
    Case("unparseable date", 3, "visit", "parse-date", with_cell("visit", "04/03/2001")),
    Case("date outside bounds", 3, "visit", "bounds", with_cell("visit", "1999-12-31")),
    Case("unknown category", 3, "sex", "category", with_cell("sex", CANARY)),
    Case("category differs in case", 3, "sex", "category", with_cell("sex", "f")),
    Case("integer outside bounds", 3, "age", "bounds", with_cell("age", CANARY_NUM)),
    Case("negative age", 3, "age", "bounds", with_cell("age", "-1")),
    Case("null in non-nullable column", 3, "sex", "not-nullable", with_cell("sex", "?")),
    Case("empty field in non-nullable column", 3, "age", "not-nullable", with_cell("age", "")),
    Case("empty file", 3, None, "empty-file", b""),
    Case("header only", 3, None, "no-rows", csv_bytes(HEADER, [])),
    Case("non-UTF-8 bytes", 3, None, "encoding",
         GOOD.replace(CANARY.encode(), ("caf\u00e9" + CANARY).encode("latin-1"))),
    Case("bad boolean token", 3, "smoker", "boolean-token", with_cell("smoker", CANARY)),
    Case("malformed ICD code", 3, "dx", "code-format", with_cell("dx", CANARY)),
    Case("code outside every group", 3, "dx", "code-group", with_cell("dx", "250.83")),
    Case("missing patient id", 3, "pid", "privacy-unit-missing", with_cell("pid", "")),
    Case("patient id is a missing token", 3, "pid", "privacy-unit-missing", with_cell("pid", "?")),
    Case("parquet: one null patient id", 3, "pid", "privacy-unit-missing",
         parquet_with(pid=pl.Series([None, "1", "2", "3", "4"], dtype=pl.String)),
         suffix=".parquet"),
    Case("parquet: every patient id null", 3, "pid", "privacy-unit-missing",
         parquet_with(pid=pl.Series([None] * 5, dtype=pl.String)), suffix=".parquet"),
    Case("ragged row", 3, None, "csv-format", GOOD + f"5,{CANARY},F,1,20,2001-01-01,true,8,9\n".encode()),
    Case("corrupt gzip", 3, None, "gzip", gzip.compress(GOOD)[:40], suffix=".csv.gz"),
    Case("gzip: corrupt deflate data", 3, None, "gzip",
         bytes(b ^ 0xFF if 20 <= i < 40 else b for i, b in enumerate(gzip.compress(GOOD, mtime=0))),
         suffix=".csv.gz"),
    Case("parquet: categorical stored as float", 3, "sex", "type",
         parquet_with(sex=pl.Series([1.0, 2.0, 1.0, 2.0, 1.0])), suffix=".parquet"),
    Case("parquet: missing column", 3, "dx", "missing-column", parquet_with(dx=None),
         suffix=".parquet"),
    Case("parquet: out-of-domain category", 3, "sex", "category",
         parquet_with(sex=pl.Series(["F", "M", CANARY, "F", "M"])), suffix=".parquet"),
    # --- bad schemas (exit 2) ---
    Case("schema: duplicate column", 2, "sex", "unique",
         schema=schema_edit("  - {name: smoker,", "  - {name: sex, kind: boolean}\n  - {name: smoker,")),
    Case("schema: decreasing bin edges", 2, "bmi", "increasing",
         schema=schema_edit("[10, 18.5, 25, 30, 70]", "[10, 25, 18.5, 30, 70]")),
    Case("schema: bounds outside edges", 2, "bmi", "inside the bin edges",
         schema=schema_edit("bounds: [10, 70]", "bounds: [5, 70]")),
    Case("schema: privacy unit not defined", 2, "patient", "does not define",
         schema=schema_edit("{column: pid, max_rows: 2}", "{column: patient, max_rows: 2}")),
    Case("schema: privacy unit not an identifier", 2, "sex", "identifier",
         schema=schema_edit("{column: pid, max_rows: 2}", "{column: sex, max_rows: 2}")),
    Case("schema: unknown kind", 2, "age", "enum",
         schema=schema_edit("{name: age, kind: integer,", "{name: age, kind: number,")),
    Case("schema: categorical without categories", 2, "sex", "required",
         schema=schema_edit("{name: sex, kind: categorical, categories: [F, M]}",
                     "{name: sex, kind: categorical}")),
    Case("schema: clamp on a categorical", 2, "sex", "clamp",
         schema=schema_edit("categories: [F, M]}", "categories: [F, M], on_out_of_domain: clamp}")),
    Case("schema: null policy on non-nullable column", 2, "age", "nullable",
         schema=schema_edit("bin_width: 10}", "bin_width: 10, on_out_of_domain: null}")),
    Case("schema: category equal to a missing token", 2, "sex", "missing token",
         schema=schema_edit("categories: [F, M]}", 'categories: [F, M, "?"]}')),
    Case("schema: float bin width on integer", 2, "age", "whole number",
         schema=schema_edit("bin_width: 10}", "bin_width: 2.5}")),
    Case("schema: bad regular expression", 2, "dx", "regular expression",
         schema=schema_edit("pattern: 'V", "pattern: '(V")),
    Case("schema: not YAML", 2, None, "YAML", schema="format: [unclosed\n  - {"),
    Case("schema: missing format", 2, None, "format",
         schema=BASE_SCHEMA.replace("format: dpsynth.table-schema/v1\n", "")),
    Case("schema: k > 1 without a patient id column", 2, None, "max_rows",
         schema=schema_edit("{column: pid, max_rows: 2}", "{max_rows: 3}")),
    Case("schema: subgroup on a numeric column", 2, None, "subgroup",
         schema=BASE_SCHEMA.replace("columns:\n", "subgroups: [age]\ncolumns:\n", 1)),
    Case("schema: rule names unknown column", 2, None, "weight",
         schema=BASE_SCHEMA.replace(
             "columns:\n",
             "rules: [{kind: null_together, columns: [bmi, weight]}]\ncolumns:\n", 1)),
]


def _run(tmp_path: Path, case: Case, json_mode: bool) -> tuple[int, str]:
    schema_path = tmp_path / "schema.yaml"
    schema_path.write_text(case.schema)
    table_path = tmp_path / f"table{case.suffix}"
    table = GOOD if case.table is None else case.table
    if callable(table):
        table(table_path)
    else:
        table_path.write_bytes(table)
    args = ["schema", "check", "--schema", str(schema_path), "--input", str(table_path)]
    if json_mode:
        args.append("--json")
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.stdout + result.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused(tmp_path: Path, case: Case) -> None:
    code, out = _run(tmp_path, case, json_mode=False)
    assert code == case.exit_code, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {out!r}"
    line = lines[0]
    assert line.startswith("dpsynth: error: ")
    if case.column is not None:
        assert repr(case.column) in line or case.column in line, line
    assert case.rule in line, line
    assert CANARY not in out and CANARY_NUM not in out and "café" not in out


@pytest.mark.parametrize("case", [c for c in CASES if c.exit_code == 3],
                         ids=[c.name for c in CASES if c.exit_code == 3])
def test_bad_table_json_names_column_and_rule(tmp_path: Path, case: Case) -> None:
    code, out = _run(tmp_path, case, json_mode=True)
    assert code == 3
    doc = json.loads(out[: out.rindex("}") + 1])
    assert doc["ok"] is False and doc["exit_code"] == 3
    assert doc["rule"] == case.rule
    assert doc["column"] == case.column
    assert CANARY not in out


def test_good_table_passes(tmp_path: Path) -> None:
    code, out = _run(tmp_path, Case("good", 0, None, ""), json_mode=False)
    assert code == 0, out
    assert "satisfies the schema" in out


def test_crlf_and_gzip_and_parquet_are_read(tmp_path: Path) -> None:
    for name, writer in {
        "t.csv": lambda p: p.write_bytes(csv_bytes(HEADER, ROWS, eol="\r\n")),
        "t.csv.gz": lambda p: p.write_bytes(gzip.compress(csv_bytes(HEADER, ROWS, eol="\r\n"))),
        "t.parquet": parquet_with(),
    }.items():
        path = tmp_path / name
        writer(path)
        (tmp_path / "s.yaml").write_text(BASE_SCHEMA)
        res = CliRunner().invoke(main, ["schema", "check", "--schema", str(tmp_path / "s.yaml"),
                                        "--input", str(path)])
        assert res.exit_code == 0, (name, res.output)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25
    assert {c.exit_code for c in CASES} == {2, 3}
