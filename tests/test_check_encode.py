"""The one-pass check+encode (distinct values, mapped back by index) against a row-by-row
reference built from the same column expressions.

``dpsynth.io.check_and_encode`` evaluates each rule and code once per distinct raw value;
the reference below evaluates them on every row, the straightforward way. Both must
reject the same (column, rule) with the same message (count and first row), or accept
and give identical codes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsynth.errors import InputDataError
from dpsynth.io import check_and_encode, encode, read_table
from dpsynth.io.checking import check_exprs
from dpsynth.schema import Schema, load_schema, parse_schema

ROOT = Path(__file__).resolve().parents[1]

SCHEMA = parse_schema("""\
format: dpsynth.table-schema/v1
name: messy
version: 1
missing_tokens: ["?"]
privacy_unit: {column: pid, max_rows: 2}
columns:
  - {name: pid, kind: identifier}
  - {name: cat, kind: categorical, nullable: true, categories: [a, b, "None"]}
  - {name: n, kind: integer, nullable: true, bounds: [-5, 38], bin_width: 4}
  - {name: c, kind: integer, bounds: [0, 9], bin_width: 2, on_out_of_domain: clamp}
  - {name: x, kind: float, nullable: true, bounds: [0.5, 9.5], bin_edges: [0, 1, 2.5, 7, 10],
     on_out_of_domain: "null"}
  - {name: d, kind: date, nullable: true, bounds: ["2001-02-15", "2003-07-04"], bin_unit: month}
  - {name: b, kind: boolean}
  - {name: icd, kind: code, system: ICD-9-CM, nullable: true, pattern: '[VE]?[0-9]{1,3}(\\.[0-9]{1,2})?',
     groups: [{label: circ, ranges: [[390, 459]]}, {label: ext, prefixes: [V, E]},
              {label: other, ranges: [[1, 389], [460, 999]]}]}
  - {name: grp, kind: categorical, nullable: true, categories: [a, b], on_out_of_domain: other,
     other_category: rest}
""")

# Values a column may hold: valid ones, missing tokens, garbage, whitespace variants
# (None: a Parquet null; in a CSV file, an empty field).
POOL: dict[str, list[str | None]] = {
    "pid": ["1", "2", "3", " 4", "", "  ", "?", None],
    "cat": ["a", "b", "None", "?", "", "A", "c"],
    "n": ["-5", "0", "12", "37", "38", "-6", " 7 ", "?", "1.5", "x", ""],
    "c": ["0", "3", "10", "11", "-1", "abc", ""],
    "x": ["0.5", "1", "2.7", "9.5", "9.6", "nan", "inf", "", "1e0", "-"],
    "d": ["2001-02-15", "2003-07-04", "2003-07-05", "2001-02-14", "2002-13-01", "", "2002-06-30"],
    "b": ["true", "false", "True", "1", "", "yes"],
    "icd": ["401", "250.01", "V45", "E880", "?", "", "1000", "abc", "459.9", " 428 "],
    "grp": ["a", "b", "rest", "zz", " a", "?", ""],
}
#: Values that pass every rule: tables built from these must be accepted.
VALID = {
    "pid": ["1", "2", "3"], "cat": ["a", "b", "None", "?"], "n": ["-5", "0", "12", "37", "?"],
    "c": ["0", "3", "10", "11", "-1"], "x": ["0.5", "1", "2.7", "9.5", "9.6", "?"],
    "d": ["2001-02-15", "2003-07-04", "?"], "b": ["true", "false"],
    "icd": ["401", "250.01", "V45", "E880", "?", "459.9", " 428 "],
    "grp": ["a", "b", "rest", "zz", " a", "?"],
}


def reference(df: pl.DataFrame, schema: Schema) -> tuple[str | None, str, str] | np.ndarray:
    """Row-by-row: the first failed (column, rule, message), or the codes."""
    for check, expr in check_exprs(schema):
        flags = df.select(expr.fill_null(False).alias("f")).to_series()
        if flags.any():
            message = f"{check.what} in {flags.sum()} row(s), first at data row {flags.arg_max() + 1}"
            return check.column, check.rule, str(InputDataError(message, column=check.column,
                                                                 rule=check.rule))
    return encode(df, schema)


def ours(df: pl.DataFrame, schema: Schema) -> tuple[str | None, str, str] | np.ndarray:
    try:
        frame = check_and_encode(df, schema, from_csv=False).frame
    except InputDataError as exc:
        return exc.column, exc.rule, str(exc)
    return frame.select([c.name for c in schema.measured_columns]).to_numpy()


def _same(a: object, b: object) -> None:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), (a, b)
        np.testing.assert_array_equal(a.astype(np.int64), b.astype(np.int64))
    else:
        assert a == b


def _table(draw: st.DrawFn, pool: dict[str, list[str | None]], n: int) -> pl.DataFrame:
    return pl.DataFrame({name: draw(st.lists(st.sampled_from(values), min_size=n, max_size=n))
                         for name, values in pool.items()}, schema={k: pl.String for k in pool})


@st.composite
def messy_tables(draw: st.DrawFn) -> pl.DataFrame:
    return _table(draw, POOL, draw(st.integers(1, 40)))


@st.composite
def clean_tables(draw: st.DrawFn) -> pl.DataFrame:
    return _table(draw, VALID, draw(st.integers(1, 40)))


@settings(max_examples=300, deadline=None)
@given(df=messy_tables())
def test_messy_tables_fail_like_the_row_by_row_reference(df: pl.DataFrame) -> None:
    _same(ours(df, SCHEMA), reference(df, SCHEMA))


@settings(max_examples=100, deadline=None)
@given(df=clean_tables())
def test_clean_tables_encode_like_the_row_by_row_reference(df: pl.DataFrame) -> None:
    got, want = ours(df, SCHEMA), reference(df, SCHEMA)
    assert isinstance(want, np.ndarray), want  # the pool is valid by construction
    _same(got, want)


def test_nulls_from_parquet_are_missing_values() -> None:
    df = pl.DataFrame({"pid": ["1", "2"], "cat": [None, "a"], "n": ["3", None], "c": ["1", "2"],
                       "x": [None, "1"], "d": [None, "2002-01-01"], "b": ["true", "false"],
                       "icd": [None, "401"], "grp": [None, "zz"]})
    _same(ours(df, SCHEMA), reference(df, SCHEMA))
    assert isinstance(ours(df, SCHEMA), np.ndarray)


def test_the_shipped_example_encodes_like_the_reference() -> None:
    schema = load_schema(ROOT / "schemas" / "diabetes130.yaml")
    df = read_table(ROOT / "examples" / "diabetes130" / "diabetic_data.csv.gz", schema)
    got = check_and_encode(df, schema).frame
    assert got.columns[0] == schema.privacy_unit.column
    # patient ids become integer ids, one per distinct patient (the same grouping)
    unit = schema.privacy_unit.column
    pairs = pl.DataFrame({"id": got[unit], "text": df[unit]})
    assert pairs.n_unique() == pairs["id"].n_unique() == pairs["text"].n_unique() == 71_518
    _same(got.drop(schema.privacy_unit.column).to_numpy(), encode(df, schema))
    # compact: one byte per cell for every diabetes130 column
    assert {str(t) for t in got.drop(schema.privacy_unit.column).dtypes} == {"UInt8"}


def test_a_short_csv_row_is_rejected(tmp_path: Path) -> None:
    """polars 2 reads a short row's missing fields as empty text; the fields of every
    record are counted while reading (rule csv-format), whatever the columns allow."""
    path = tmp_path / "t.csv"
    header = ",".join(POOL)
    path.write_text(f"{header}\n1,a,3,1,1,2001-03-01,true,401,a\n2,a,3,1\n")
    from dpsynth.io import open_table

    with pytest.raises(InputDataError) as err, open_table(path, SCHEMA) as lf:
        check_and_encode(lf, SCHEMA)
    assert (err.value.rule, err.value.column) == ("csv-format", None)
    assert "in 1 row(s), first at data row 2" in str(err.value)


@pytest.mark.parametrize("name", ["diabetes130", "nist_excerpts"])
def test_shipped_schemas_pass_schema_check_on_their_tables(name: str) -> None:
    """What a custodian runs first: ``schema check --input`` with the shipped schema on its
    table finds every rule holding (both use features an input row lacks, e.g. the weight
    of ``represent: all_rows``)."""
    from click.testing import CliRunner

    from dpsynth.cli import main

    table = {"diabetes130": ROOT / "examples" / "diabetes130" / "diabetic_data.csv.gz",
             "nist_excerpts": ROOT.parent / "shared" / "data" / "nist_excerpts"
                              / "national2019.csv.gz"}[name]
    if not table.is_file():
        pytest.skip(f"{table} is not on this machine")
    res = CliRunner().invoke(main, ["schema", "check", "--schema",
                                    str(ROOT / "schemas" / f"{name}.yaml"), "--input", str(table),
                                    "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["input_checked"] and out["problems"] == []
