"""The schema resolves each column's bins, so it knows the number of codes without
``dpsynth.domain`` (issue 16: the schema <-> domain import circle is gone)."""

from __future__ import annotations

import ast
import datetime as dt
import inspect
import itertools
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
