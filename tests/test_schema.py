"""The schema resolves each column's bins, so it knows the number of codes without
``dpsynth.domain`` (issue 16: the schema <-> domain import circle is gone)."""

from __future__ import annotations

import ast
import datetime as dt
import inspect
import itertools
import re
from pathlib import Path

import pytest

import dpsynth.schema
from dpsynth.domain import levels
from dpsynth.errors import SchemaError
from dpsynth.schema import MAX_DOMAIN_SIZE, Column, load_schema, parse_schema

ROOT = Path(__file__).resolve().parents[1]

SCHEMA = """\
format: dpsynth.table-schema/v1
name: kinds
version: 1
privacy_unit: {column: pid}
columns:
  - {name: pid, kind: identifier}
  - {name: note, kind: text}
  - {name: cat, kind: categorical, nullable: true, categories: [a, b, c]}
  - {name: n, kind: integer, bounds: [-5, 38], bin_width: 4}
  - {name: x, kind: float, nullable: true, bounds: [0.5, 9.5], bin_edges: [0, 1, 2.5, 7, 10]}
  - {name: d, kind: date, bounds: ["2001-02-15", "2003-07-04"], bin_unit: month}
  - {name: w, kind: date, nullable: true, bounds: ["2001-02-15", "2001-06-04"], bin_unit: week}
  - {name: q, kind: date, bounds: ["2001-02-15", "2003-07-04"], bin_unit: quarter}
  - {name: y, kind: date, bounds: ["2001-02-15", "2003-07-04"], bin_unit: year}
  - {name: t, kind: datetime, bounds: ["2001-02-15T10:00:00", "2001-03-04T00:00:00"], bin_unit: day}
  - {name: b, kind: boolean, nullable: true}
  - {name: icd, kind: code, system: ICD-9, groups: [{label: g1, ranges: [[1, 139]]},
                                                    {label: g2, prefixes: [V]}]}
"""


def _schemas() -> list[dpsynth.schema.Schema]:
    return [parse_schema(SCHEMA), *(load_schema(p) for p in sorted((ROOT / "schemas").glob("*.yaml")))]


def test_schema_imports_no_other_dpsynth_module_but_errors() -> None:
    tree = ast.parse(inspect.getsource(dpsynth.schema))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {m for m in imported if m.startswith("dpsynth")} == {"dpsynth.errors"}


@pytest.mark.parametrize("schema", _schemas(), ids=lambda s: s.name)
def test_domain_size_counts_the_levels_and_the_null_code(schema: dpsynth.schema.Schema) -> None:
    for c in schema.measured_columns:
        assert c.n_levels == len(levels(c)) >= 1, c.name
        assert c.domain_size == c.n_levels + int(c.nullable), c.name


def test_unreleased_columns_have_no_domain() -> None:
    schema = parse_schema(SCHEMA)
    for name in ("pid", "note"):
        with pytest.raises(ValueError, match="has no domain"):
            _ = schema.column(name).domain_size


@pytest.mark.parametrize("name", ["d", "w", "q", "y", "t"])
def test_date_edges_cover_the_bounds_in_whole_units(name: str) -> None:
    col = parse_schema(SCHEMA).column(name)
    assert col.date_bounds is not None
    lo, hi = col.date_bounds
    edges = col.date_edges
    assert edges[0] <= lo < edges[1] and edges[-2] <= hi < edges[-1]
    assert all(a < b for a, b in itertools.pairwise(edges))
    assert all(e.time() == dt.time() for e in edges)
    if name == "w":
        assert {e.weekday() for e in edges} == {0}  # weeks start on Monday
    if name in ("q", "y"):
        assert {e.month for e in edges} <= ({1, 4, 7, 10} if name == "q" else {1})
        assert {e.day for e in edges} == {1}


def test_other_kinds_have_no_date_edges() -> None:
    assert parse_schema(SCHEMA).column("n").date_edges == ()


def test_the_domain_size_limit_names_the_column() -> None:
    text = SCHEMA.replace("bounds: [-5, 38], bin_width: 4", "bounds: [0, 6000], bin_width: 1")
    with pytest.raises(SchemaError, match=f"domain has 6001 values, more than {MAX_DOMAIN_SIZE}"
                       ) as err:
        parse_schema(text)
    assert err.value.path == "schema.columns['n']"


def test_column_is_frozen_public_data() -> None:
    col = parse_schema(SCHEMA).column("cat")
    assert isinstance(col, Column) and col.measured
    with pytest.raises(AttributeError):
        col.nullable = False  # type: ignore[misc]


# -- issue 17, defect 5: inputs that used to take minutes and end in a MemoryError (exit 1)
# are refused at once (exit 2), by a limit checked before anything is built. Each test
# replaces the expensive step with a tripwire, so it fails (not hangs) where the limit is
# missing, without a timing assertion.


def _tripwire(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("an expensive step ran before the limit was checked")


@pytest.mark.parametrize("column", [
    "{name: n, kind: integer, bounds: [0, 999999999], bin_width: 1}",
    "{name: n, kind: float, bounds: [0, 10], bin_width: 1.0e-320}",
    "{name: n, kind: integer, bounds: [-1.0e300, 1.0e300], bin_width: 1}",
])
def test_a_billion_bins_are_refused_before_any_edge_is_built(
        column: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpsynth.schema, "_edges_from_width", _tripwire)
    text = SCHEMA.replace("{name: n, kind: integer, bounds: [-5, 38], bin_width: 4}", column)
    with pytest.raises(SchemaError, match=f"more than {MAX_DOMAIN_SIZE}") as err:
        parse_schema(text)
    assert err.value.path == "schema.columns['n']" and err.value.exit_code == 2


def test_a_thousand_years_of_days_is_refused_before_any_date_edge_is_built(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpsynth.schema, "_date_edges", _tripwire)
    text = SCHEMA.replace('bounds: ["2001-02-15", "2003-07-04"], bin_unit: month',
                          'bounds: ["1000-01-01", "2999-12-31"], bin_unit: day')
    with pytest.raises(SchemaError, match="domain has at least 730484 values") as err:
        parse_schema(text)
    assert err.value.path == "schema.columns['d']"


def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The billion laughs in YAML: ``width ** levels`` strings from a few hundred bytes."""
    lines = [f"  - &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"  - &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return SCHEMA.replace("categories: [a, b, c]}", "categories: [a, b, c]}\n"
                          "  - name: bomb\n    kind: categorical\n    categories:\n"
                          + "\n".join("  " + line for line in lines))


def test_a_yaml_alias_bomb_in_categories_is_refused_before_it_is_expanded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import jsonschema

    # 0.1.0 loaded the bomb (shared references) and then spent 38 s in the JSON Schema
    # check (its error message quotes the expanded value) before a MemoryError
    monkeypatch.setattr(jsonschema.Draft202012Validator, "iter_errors", _tripwire)
    with pytest.raises(SchemaError, match=r"YAML alias"):
        parse_schema(_alias_bomb())
    # few aliases, each used many times: the expanded size is what is limited
    assert dpsynth.schema.MAX_YAML_ALIASES >= 4 * 4
    with pytest.raises(SchemaError, match=r"values once its YAML aliases are expanded"):
        parse_schema(_alias_bomb(levels=5, width=4).replace(
            "[lol, lol, lol, lol]", "[" + ", ".join(["lol"] * 2000) + "]"))


def test_recursive_yaml_aliases_are_refused() -> None:
    text = SCHEMA.replace("categories: [a, b, c]}", "categories: &me [a, b, *me]}")
    with pytest.raises(SchemaError, match="refers to a node that contains it"):
        parse_schema(text)


def test_a_few_yaml_aliases_still_work() -> None:
    text = SCHEMA.replace("categories: [a, b, c]}", "categories: &abc [a, b, c]}\n"
                          "  - {name: cat2, kind: categorical, categories: *abc}")
    assert parse_schema(text).column("cat2").categories == ("a", "b", "c")


def test_an_oversized_schema_file_is_refused_before_yaml_reads_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dpsynth.schema.yaml.SafeLoader, "get_single_data", _tripwire)
    text = SCHEMA + "#" * dpsynth.schema.MAX_SCHEMA_BYTES
    with pytest.raises(SchemaError, match="larger than"):
        parse_schema(text)


def test_the_whole_table_domain_cap_counts_the_cells_of_all_column_pairs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # 30 columns of 4000 codes: each column is fine, their 435 pairs hold 6.96e9 cells
    wide = "".join(f"  - {{name: v{i}, kind: integer, bounds: [1, 4000], bin_width: 1}}\n"
                   for i in range(30))
    monkeypatch.setattr(dpsynth.schema, "_edges_from_width", _tripwire)
    with pytest.raises(SchemaError, match=r"hold 6,9[\d,]+ cells, more than 100,000,000") as err:
        parse_schema(SCHEMA + wide)
    assert err.value.path == "schema.columns"
    # the shipped schemas are far below it
    monkeypatch.undo()
    for schema in _schemas():
        sizes = [c.domain_size for c in schema.measured_columns]
        assert dpsynth.schema._table_domain_problem(sizes) is None


# -- on_out_of_domain: other -------------------------------------------------------------------


def _with_cat(spec: str) -> str:
    return SCHEMA.replace("{name: cat, kind: categorical, nullable: true, categories: [a, b, c]}",
                          spec)


def test_other_adds_its_category_once_and_codes_every_unlisted_value_as_it() -> None:
    import polars as pl

    from dpsynth.domain import column_exprs, value_expr

    added = parse_schema(_with_cat("{name: cat, kind: categorical, categories: [a, b], "
                                   "on_out_of_domain: other}")).column("cat")
    assert added.categories == ("a", "b", "Other") and added.other_category == "Other"
    listed = parse_schema(_with_cat("{name: cat, kind: categorical, categories: [a, rest, b], "
                                    "on_out_of_domain: other, other_category: rest}")
                          ).column("cat")
    assert listed.categories == ("a", "rest", "b") and listed.domain_size == 3
    df = pl.DataFrame({"cat": ["a", "b", "zz", "rest", "A"]})
    e = column_exprs(listed)
    assert df.select(e.code).to_series().to_list() == [0, 2, 1, 1, 1]
    assert not df.select(e.out_of_domain.any()).item()  # nothing is refused or nulled
    assert df.select(value_expr(listed)).to_series().to_list() == ["a", "b", "rest", "rest",
                                                                  "rest"]
    assert levels(listed) == ["a", "rest", "b"]


@pytest.mark.parametrize(("spec", "message"), [
    ("{name: cat, kind: categorical, categories: [a], other_category: x}",
     "other_category needs on_out_of_domain: other"),
    ("{name: cat, kind: categorical, categories: [a], on_out_of_domain: other, "
     "other_category: '?', missing_tokens: ['?']}", "other_category ('?') is also a missing token"),
])
def test_other_category_mistakes_are_named(spec: str, message: str) -> None:
    with pytest.raises(SchemaError, match=re.escape(message)) as err:
        parse_schema(_with_cat(spec))
    assert err.value.path == "schema.columns['cat']"


def test_other_is_only_for_categorical_columns() -> None:
    text = SCHEMA.replace("bounds: [-5, 38], bin_width: 4",
                          "bounds: [-5, 38], bin_width: 4, on_out_of_domain: other")
    with pytest.raises(SchemaError, match=r"on_out_of_domain \(other\) is only allowed for "
                                          "categorical columns"):
        parse_schema(text)
