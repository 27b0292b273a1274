"""The great-expectations suite built from the schema, run on synthetic tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from dpsynth.domain import Domain
from dpsynth.errors import OutputValidationError
from dpsynth.rules import constraints, derive, passing
from dpsynth.schema import Schema, load_schema, parse_schema
from dpsynth.validate import build_suite, raise_for_outcome, validate_synthetic

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
N = 200

SMALL = """
format: dpsynth.table-schema/v1
name: small
version: "1"
privacy_unit: {column: pid, max_rows: 2}
columns:
  - {name: pid, kind: identifier}
  - {name: note, kind: text}
  - {name: sex, kind: categorical, categories: [F, M]}
  - {name: age, kind: integer, bounds: [0, 99], bin_width: 10}
  - {name: dose, kind: float, nullable: true, bounds: [0, 5], bin_width: 1}
  - {name: unit, kind: categorical, nullable: true, categories: [mg, ml]}
  - {name: seen, kind: date, bounds: ["2020-01-01", "2020-12-31"], bin_unit: month}
  - {name: smoker, kind: boolean, nullable: true}
rules:
  - {kind: null_together, columns: [dose, unit], severity: error}
"""


def _table(schema: Schema, n: int = N, seed: int = 0) -> pl.DataFrame:
    """``n`` random rows of the schema's domain that keep its error rules."""
    d = Domain.from_schema(schema)
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(0, k, 200 * n) for k in d.sizes], axis=1)
    df = derive(schema, d.decode(codes, rng))
    df = df.filter(pl.Series(passing(df, constraints(schema))))
    assert df.height >= n
    return df.head(n)


@pytest.fixture(scope="module")
def small() -> Schema:
    return parse_schema(SMALL)


def _consistent(schema: Schema) -> pl.DataFrame:
    """A random table of the small schema that also keeps its null_together rule."""
    df = _table(schema)
    return df.with_columns(pl.when(pl.col("dose").is_null()).then(None)
                           .otherwise(pl.col("unit").fill_null("mg")).alias("unit"))


@pytest.mark.parametrize("name", ["diabetes130", "nist_excerpts"])
def test_decoded_random_codes_pass(name: str) -> None:
    schema = load_schema(SCHEMAS / f"{name}.yaml")
    out = validate_synthetic(_table(schema), schema, N, N)
    assert out.success, out.failed
    assert out.failed == []
    kinds = {e["type"] for e in out.suite_json["expectations"]}
    assert {"expect_table_columns_to_match_ordered_list", "expect_table_row_count_to_be_between",
            "expect_column_values_to_be_in_type_list",
            "expect_column_values_to_be_in_set"} <= kinds
    assert out.results_json["statistics"]["evaluated_expectations"] == len(
        out.suite_json["expectations"])


def test_suite_covers_schema(small: Schema) -> None:
    suite = build_suite(small, 10, 20).to_json_dict()
    by_type: dict[str, list[dict]] = {}
    for e in suite["expectations"]:
        by_type.setdefault(e["type"], []).append(e["kwargs"])
    assert by_type["expect_table_columns_to_match_ordered_list"][0]["column_list"] == [
        "sex", "age", "dose", "unit", "seen", "smoker"]
    assert by_type["expect_table_row_count_to_be_between"][0] == {"min_value": 10,
                                                                 "max_value": 20}
    not_null = {k["column"] for k in by_type["expect_column_values_to_not_be_null"]
                if "row_condition" not in k}
    assert not_null == {"sex", "age", "seen"}
    between = {k["column"]: (k["min_value"], k["max_value"])
               for k in by_type["expect_column_values_to_be_between"]}
    assert between["age"] == (0, 99)
    assert between["dose"] == (0.0, 5.0)


def test_consistent_small_table_passes(small: Schema) -> None:
    out = validate_synthetic(_consistent(small), small, N, N)
    assert out.success, out.failed


def _failed_text(out) -> str:  # type: ignore[no-untyped-def]
    return " | ".join(out.failed)


def test_wrong_category_fails_and_names_column(small: Schema) -> None:
    df = _consistent(small).with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("CANARY-X")).otherwise(pl.col("sex").cast(pl.String))
        .alias("sex"))
    out = validate_synthetic(df, small, N, N)
    assert not out.success
    assert "expect_column_values_to_be_in_set (column 'sex')" in out.failed
    with pytest.raises(OutputValidationError) as err:
        raise_for_outcome(out)
    assert err.value.exit_code == 5
    assert "sex" in err.value.message
    assert "CANARY" not in err.value.message  # names, never values


def test_out_of_bounds_number_fails(small: Schema) -> None:
    df = _consistent(small).with_columns(pl.lit(150, dtype=pl.Int64).alias("age"))
    out = validate_synthetic(df, small, N, N)
    assert out.failed == ["expect_column_values_to_be_between (column 'age')"]


def test_date_out_of_range_fails(small: Schema) -> None:
    import datetime as dt

    df = _consistent(small).with_columns(pl.lit(dt.date(2021, 1, 1)).alias("seen"))
    out = validate_synthetic(df, small, N, N)
    assert out.failed == ["expect_column_values_to_be_between (column 'seen')"]


def test_null_in_non_nullable_fails(small: Schema) -> None:
    df = _consistent(small).with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("age")).alias("age"))
    out = validate_synthetic(df, small, N, N)
    assert out.failed == ["expect_column_values_to_not_be_null (column 'age')"]


def test_wrong_type_fails(small: Schema) -> None:
    df = _consistent(small).with_columns(pl.col("age").cast(pl.String))
    out = validate_synthetic(df, small, N, N)
    assert "expect_column_values_to_be_in_type_list (column 'age')" in out.failed


def test_identifier_column_present_fails(small: Schema) -> None:
    df = _consistent(small).with_columns(pl.lit("p1").alias("pid"))
    out = validate_synthetic(df, small, N, N)
    assert not out.success
    assert any("match_ordered_list" in f and "'pid'" in f for f in out.failed), out.failed


def test_missing_column_fails(small: Schema) -> None:
    out = validate_synthetic(_consistent(small).drop("smoker"), small, N, N)
    assert not out.success
    assert "expect_column_to_exist (column 'smoker')" in out.failed


def test_too_few_rows_fails(small: Schema) -> None:
    out = validate_synthetic(_consistent(small), small, N + 1, N + 10)
    assert out.failed == ["expect_table_row_count_to_be_between"]


def test_null_together_error_rule_fails(small: Schema) -> None:
    df = _consistent(small).with_columns(pl.lit("mg").alias("unit"))  # unit never null
    out = validate_synthetic(df, small, N, N)
    assert not out.success
    assert any("null_together" in f and "'unit'" in f for f in out.failed), out.failed


def test_warning_rules_are_reported_but_do_not_fail() -> None:
    text = (SCHEMAS / "nist_excerpts.yaml").read_text().replace(
        "  description: 'MSP: N/A (age less than 15 years)'",
        "  description: 'MSP: N/A (age less than 15 years)'\n  severity: warning")
    schema = parse_schema(text)
    assert [r.severity for r in schema.rules if r.name == "marital_status_na_under_15"] == ["warning"]
    df = _table(schema).with_columns(pl.lit(10, dtype=pl.Int64).alias("AGEP"),
                                     pl.lit("1").alias("MSP"))
    out = validate_synthetic(df, schema, N, N)
    assert any("marital_status_na_under_15" in w and "'MSP'" in w for w in out.warnings), out
    assert not any("marital_status_na_under_15" in f for f in out.failed)


def test_error_rules_fail_validation_with_their_name_and_row_count() -> None:
    schema = load_schema(SCHEMAS / "nist_excerpts.yaml")
    df = _table(schema).with_columns(pl.lit(10, dtype=pl.Int64).alias("AGEP"),
                                     pl.lit("1").alias("MSP"))
    out = validate_synthetic(df, schema, N, N)
    assert not out.success
    assert any(f.startswith("rule 'marital_status_na_under_15' (reads 'MSP', 'AGEP') is broken in")
               for f in out.failed), out.failed
