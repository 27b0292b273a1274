"""Property tests of the public domain: encode/decode round trips and contribution bounding."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dpsynth.domain import Domain, column_exprs, decode_column, levels, recode
from dpsynth.io import bound_contributions
from dpsynth.schema import load_schema, parse_schema

ROOT = Path(__file__).resolve().parents[1]

SCHEMA = parse_schema("""\
format: dpsynth.table-schema/v1
name: props
version: 1
privacy_unit: {column: pid}
columns:
  - {name: pid, kind: identifier}
  - {name: cat, kind: categorical, nullable: true, categories: [a, b, c]}
  - {name: n, kind: integer, bounds: [-5, 38], bin_width: 4}
  - {name: e, kind: integer, bounds: [0, 100], bin_edges: [0, 1, 2, 5, 10, 100]}
  - {name: x, kind: float, nullable: true, bounds: [0.5, 9.5], bin_edges: [0, 1, 2.5, 7, 10]}
  - {name: d, kind: date, bounds: ["2001-02-15", "2003-07-04"], bin_unit: month}
  - {name: w, kind: date, bounds: ["2001-02-15", "2001-06-04"], bin_unit: week}
  - {name: t, kind: datetime, bounds: ["2001-02-15T10:00:00", "2001-03-04T00:00:00"], bin_unit: day}
  - {name: b, kind: boolean}
""")


def _encode(col_name: str, raw: list[str | None]) -> np.ndarray:
    col = SCHEMA.column(col_name)
    df = pl.DataFrame({col_name: raw}, schema={col_name: pl.String})
    return df.select(column_exprs(col).code).to_series().to_numpy()


def _as_text(col_name: str, values: pl.Series) -> list[str | None]:
    col = SCHEMA.column(col_name)
    if col.kind == "datetime":
        return [None if v is None else v.isoformat() for v in values.to_list()]
    if col.kind == "boolean":
        return [None if v is None else str(v).lower() for v in values.to_list()]
    return [None if v is None else str(v) for v in values.to_list()]


@pytest.mark.parametrize("name", ["cat", "n", "e", "x", "d", "w", "t", "b"])
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 200))
def test_decode_then_encode_returns_the_code(name: str, seed: int, n: int) -> None:
    """Decoded values lie inside the domain and re-encode to the code they came from."""
    col = SCHEMA.column(name)
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, col.domain_size, size=n)
    values = decode_column(col, codes, rng)
    assert values.len() == n
    if col.bounds is not None:
        nn = values.drop_nulls()
        assert nn.len() == 0 or (nn.min() >= col.bounds[0] and nn.max() <= col.bounds[1])  # type: ignore[operator]
    if col.date_bounds is not None:
        lo, hi = col.date_bounds
        for v in values.drop_nulls().to_list():
            v = v if isinstance(v, dt.datetime) else dt.datetime.combine(v, dt.time())
            assert lo.replace(hour=0) <= v <= hi
    again = _encode(name, _as_text(name, values))
    assert np.array_equal(again, codes)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.integers(-5, 37), min_size=1, max_size=50))
def test_integer_codes_are_in_range_and_monotone(values: list[int]) -> None:
    codes = _encode("n", [str(v) for v in values])
    size = SCHEMA.column("n").domain_size
    assert ((codes >= 0) & (codes < size)).all()
    order = np.argsort(values, kind="stable")
    assert (np.diff(codes[order]) >= 0).all()
    for v, c in zip(values, codes, strict=True):
        lo, hi = levels(SCHEMA.column("n"))[c]  # type: ignore[misc]
        assert lo <= v < hi or (c == size - 1 and v <= hi)


@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(0.5, 9.5, allow_nan=False), min_size=1, max_size=50))
def test_float_values_land_in_their_bin(values: list[float]) -> None:
    codes = _encode("x", [repr(v) for v in values])
    for v, c in zip(values, codes, strict=True):
        lo, hi = levels(SCHEMA.column("x"))[c]  # type: ignore[misc]
        assert lo <= v <= hi


@settings(max_examples=100, deadline=None)
@given(
    patients=st.lists(st.integers(0, 30), min_size=1, max_size=300),
    k=st.integers(1, 5),
    secret=st.one_of(st.binary(max_size=64), st.integers(0, 2**256 - 1)),
)
def test_bounding_keeps_at_most_k_rows_per_patient(patients: list[int], k: int,
                                                   secret: bytes | int) -> None:
    df = pl.DataFrame({"pid": [str(p) for p in patients], "row": range(len(patients))})
    out = bound_contributions(df, "pid", k, secret)
    counts = out.group_by("pid").len()
    assert counts["len"].max() <= k  # type: ignore[operator]
    # every patient keeps min(k, rows) rows: nobody is dropped entirely
    expected = df.group_by("pid").len().with_columns(pl.col("len").clip(upper_bound=k))
    joined = expected.join(counts, on="pid", suffix="_kept")
    assert joined.height == expected.height
    assert (joined["len"] == joined["len_kept"]).all()
    assert set(out["row"].to_list()) <= set(range(len(patients)))
    assert out["row"].is_sorted()  # kept rows stay in file order


def test_bounding_picks_rows_uniformly() -> None:
    """With k=1 and 4 rows per patient, each row survives about a quarter of the time
    (over 10 secrets; more cases in tests/test_bounding.py)."""
    df = pl.DataFrame({"pid": [str(i // 4) for i in range(4000)], "pos": [i % 4 for i in range(4000)]})
    kept = pl.concat([bound_contributions(df, "pid", 1, secret) for secret in range(10)])
    counts = kept["pos"].value_counts().sort("pos")["count"].to_numpy()
    # each position is kept in Binomial(10,000, 1/4) patient-draws: allow 5 standard deviations
    draws = 1000 * 10
    assert kept.height == draws
    assert np.all(np.abs(counts - draws / 4) < 5 * np.sqrt(draws * 0.25 * 0.75))


@pytest.mark.parametrize("path", sorted((ROOT / "schemas").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_schemas_load_and_decode(path: Path) -> None:
    schema = load_schema(path)
    domain = Domain.from_schema(schema)
    rng = np.random.default_rng(0)
    codes = np.column_stack([rng.integers(0, s, size=100) for s in domain.sizes])
    df = domain.decode(codes, rng)
    assert df.columns == list(domain.names)
    assert df.height == 100
    assert np.array_equal(recode(domain, df), codes)  # decode then recode is the identity
