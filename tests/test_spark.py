"""Spark backend (dpsynth.marginals.spark) against the polars/numpy path.

Same bounded marginal counts for the same input and bounding secret (CSV read in
several splits, Parquet in several row groups), the same kept rows whatever the
file order, the same InputDataError column and rule for bad inputs, and a full
fit + sample through Spark. Runs Spark in
``local[2]`` with one module-scoped session. Skipped when pyspark or Java is
missing, unless ``DPSYNTH_REQUIRE_SPARK=1`` (then those are failures).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_bad_inputs import BASE_SCHEMA
from test_check_encode import POOL, VALID
from test_check_encode import SCHEMA as MESSY

from dpsynth.errors import InputDataError
from dpsynth.io import load_encoded
from dpsynth.marginals import NumpyCounter, open_counter
from dpsynth.schema import Schema, parse_schema

_REQUIRED = os.environ.get("DPSYNTH_REQUIRE_SPARK") == "1"
_MISSING = [what for what, ok in (
    ("pyspark (pip install 'dpsynth[spark]')", importlib.util.find_spec("pyspark") is not None),
    ("java (a Java 17 runtime on PATH or JAVA_HOME)",
     shutil.which("java") is not None or bool(os.environ.get("JAVA_HOME"))),
) if not ok]
if _MISSING and not _REQUIRED:
    pytest.skip(f"Spark backend tests need {' and '.join(_MISSING)}", allow_module_level=True)

# the same small schema as the bad-input corpus (one kind of each column)
SCHEMA_TEXT = BASE_SCHEMA
CANARY = "Zq7-SECRET-value"
SECRET = b"a known bounding secret: safe by design"
MARGINALS = [("sex",), ("age",), ("bmi",), ("visit",), ("smoker",), ("dx",),
             ("sex", "age"), ("bmi", "dx"), ("visit", "smoker"), ("age", "bmi", "dx")]


@pytest.fixture(scope="module")
def schema() -> Schema:
    return parse_schema(SCHEMA_TEXT)


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from dpsynth.marginals.spark import spark_session

    session = spark_session("local[2]")
    session.sparkContext.setLogLevel("ERROR")
    # small splits: the CSV is read in several partitions, so row numbering across
    # splits is exercised
    session.conf.set("spark.sql.files.maxPartitionBytes", "16k")
    session.conf.set("spark.sql.files.openCostInBytes", "1k")
    yield session
    session.stop()


def _table(n: int = 1500) -> pl.DataFrame:
    rng = np.random.default_rng(7)
    return pl.DataFrame({
        "pid": [f"p{i}" for i in rng.integers(0, 400, n)],  # ~4 rows per patient, k = 2
        "note": rng.choice(["a", "", "?", "x y"], n),
        "sex": rng.choice(["F", "M"], n),
        "age": [str(x) for x in rng.integers(0, 111, n)],
        "bmi": rng.choice(["?", "", "22.5", "18.5", "69.9", "10", " 31 ", "1e1"], n),
        "visit": rng.choice(["2001-03-04", "2020-12-31", "2000-01-01", "2010-1-5"], n),
        "smoker": rng.choice(["true", "0", "yes", "", "F"], n),
        "dx": rng.choice(["8", "428.1", "V58", "?", "39", "139", " 459", ""], n),
    })


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("spark-in")
    df = _table()
    df.write_csv(d / "t.csv")
    df.write_parquet(d / "t.parquet", row_group_size=200)  # several row groups
    return {"csv": d / "t.csv", "parquet": d / "t.parquet"}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_same_bounded_counts_as_polars(spark: object, schema: Schema, inputs: dict[str, Path],
                                       fmt: str) -> None:
    from dpsynth.marginals.spark import spark_load

    path = inputs[fmt]
    enc = load_encoded(path, schema, bounding_secret=SECRET)
    ref = NumpyCounter(enc.codes, enc.columns, enc.sizes).count_many(MARGINALS)
    loaded = spark_load(str(path), schema, SECRET, spark)  # type: ignore[arg-type]
    with loaded.counter as counter:
        assert (loaded.columns, loaded.sizes) == (enc.columns, enc.sizes)
        assert loaded.contribution_bound == enc.contribution_bound == 2
        got = counter.count_many(MARGINALS)
        single = counter.count(("sex", "age"))
    assert 0 < ref[0].sum() < 1500  # bounding dropped rows
    for m, g, r in zip(MARGINALS, got, ref, strict=True):
        assert g.shape == r.shape, m
        np.testing.assert_array_equal(g, r, err_msg=str(m))
    np.testing.assert_array_equal(single, ref[6])


def test_same_rows_per_patient_and_modelled_count_as_polars(spark: object,
                                                            inputs: dict[str, Path]) -> None:
    """The DP histogram's exact input and ``represent: all_rows``'s internal column agree
    on both backends (issue 14, item 4)."""
    from dpsynth.marginals.spark import spark_load
    from dpsynth.schema import UNIT_ROWS_COLUMN

    text = SCHEMA_TEXT.replace("max_rows: 2", "max_rows: 2, rows_cap: 5, represent: all_rows")
    assert text != SCHEMA_TEXT
    schema = parse_schema(text)
    enc = load_encoded(inputs["csv"], schema, bounding_secret=SECRET)
    assert enc.columns[-1] == UNIT_ROWS_COLUMN and enc.unit_rows is not None
    marginals = [(UNIT_ROWS_COLUMN,), ("sex", UNIT_ROWS_COLUMN)]
    ref = NumpyCounter(enc.codes, enc.columns, enc.sizes).count_many(marginals)
    loaded = spark_load(str(inputs["csv"]), schema, SECRET, spark)  # type: ignore[arg-type]
    with loaded.counter as counter:
        assert (loaded.columns, loaded.sizes) == (enc.columns, enc.sizes)
        assert loaded.unit_rows is not None
        np.testing.assert_array_equal(loaded.unit_rows, enc.unit_rows)
        for g, r in zip(counter.count_many(marginals), ref, strict=True):
            np.testing.assert_array_equal(g, r)


def test_another_secret_keeps_other_rows(spark: object, schema: Schema,
                                         inputs: dict[str, Path]) -> None:
    from dpsynth.marginals.spark import spark_load

    a = load_encoded(inputs["csv"], schema, bounding_secret=7)
    ref = NumpyCounter(a.codes, a.columns, a.sizes).count(("age", "bmi", "dx"))
    loaded = spark_load(str(inputs["csv"]), schema, 7, spark)  # type: ignore[arg-type]
    with loaded.counter as counter:
        np.testing.assert_array_equal(counter.count(("age", "bmi", "dx")), ref)
    b = load_encoded(inputs["csv"], schema, bounding_secret=8)
    assert not np.array_equal(NumpyCounter(b.codes, b.columns, b.sizes).count(("age", "bmi", "dx")),
                              ref)


def test_file_order_does_not_change_the_kept_rows(spark: object, schema: Schema,
                                                  tmp_path: Path) -> None:
    """Bounding looks at each patient's own rows only: the same rows in another
    order (and another split layout) give the same bounded counts on both backends."""
    from dpsynth.marginals.spark import spark_load

    df = _table()
    df.write_csv(tmp_path / "a.csv")
    df.sample(fraction=1.0, shuffle=True, seed=3).write_parquet(tmp_path / "b.parquet",
                                                                 row_group_size=300)
    enc = load_encoded(tmp_path / "a.csv", schema, bounding_secret=SECRET)
    ref = NumpyCounter(enc.codes, enc.columns, enc.sizes).count_many(MARGINALS)
    loaded = spark_load(str(tmp_path / "b.parquet"), schema, SECRET, spark)  # type: ignore[arg-type]
    with loaded.counter as counter:
        got = counter.count_many(MARGINALS)
    for m, g, r in zip(MARGINALS, got, ref, strict=True):
        np.testing.assert_array_equal(g, r, err_msg=str(m))


def _bad_csv(tmp: Path, edit: str) -> Path:
    df = _table(40)
    if edit == "missing column":
        df = df.drop("bmi")
    elif edit == "bad category":
        df = df.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(pl.lit(CANARY))
                             .otherwise(pl.col("sex")).alias("sex"))
    elif edit == "unparseable integer":
        df = df.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("34.5"))
                             .otherwise(pl.col("age")).alias("age"))
    elif edit == "null in non-nullable":
        df = df.with_columns(pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("?"))
                             .otherwise(pl.col("sex")).alias("sex"))
    elif edit == "bad code":
        df = df.with_columns(pl.when(pl.int_range(pl.len()) == 9).then(pl.lit(CANARY))
                             .otherwise(pl.col("dx")).alias("dx"))
    elif edit == "missing patient id":
        df = df.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(pl.lit(""))
                             .otherwise(pl.col("pid")).alias("pid"))
    elif edit == "missing-token patient id":
        df = df.with_columns(pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("?"))
                             .otherwise(pl.col("pid")).alias("pid"))
    path = tmp / "bad.csv"
    df.write_csv(path)
    if edit == "ragged row":
        with path.open("a") as fh:
            fh.write(f"p1,{CANARY},F,1,20,2001-01-01,true,8,9\n")
    if edit == "short row":  # issue 17 (2): the missing fields (smoker, dx) may be empty
        with path.open("a") as fh:
            fh.write(f"p1,{CANARY},F,1,20,2001-01-01\n")
    return path


@pytest.mark.parametrize("edit", ["missing column", "bad category", "unparseable integer",
                                  "null in non-nullable", "bad code", "missing patient id",
                                  "missing-token patient id", "ragged row", "short row"])
def test_same_error_as_polars(spark: object, schema: Schema, tmp_path: Path, edit: str) -> None:
    from dpsynth.marginals.spark import spark_load

    path = _bad_csv(tmp_path, edit)
    with pytest.raises(InputDataError) as polars_err:
        load_encoded(path, schema, bounding_secret=SECRET)
    with pytest.raises(InputDataError) as spark_err:
        spark_load(str(path), schema, SECRET, spark)  # type: ignore[arg-type]
    p, s = polars_err.value, spark_err.value
    assert (s.column, s.rule) == (p.column, p.rule)
    assert str(s) == str(p)  # one message (dpsynth.input_rules), the same count and first row
    assert CANARY not in str(s) and "34.5" not in str(s)
    assert s.__cause__ is None and (s.__context__ is None or s.__suppress_context__)


@pytest.mark.parametrize("nulls", ["one", "all"])
def test_null_patient_ids_in_parquet_fail_on_both_backends(spark: object, schema: Schema,
                                                            tmp_path: Path, nulls: str) -> None:
    """Issue 17 (1): a null patient id is not a patient; it must not be merged with one."""
    from dpsynth.marginals.spark import spark_load

    df = _table(40)
    null_id = pl.lit(None, dtype=pl.String)
    df = df.with_columns((pl.when(pl.int_range(pl.len()) == 6).then(null_id).otherwise(pl.col("pid"))
                          if nulls == "one" else null_id).alias("pid"))
    path = tmp_path / "nulls.parquet"
    df.write_parquet(path)
    with pytest.raises(InputDataError) as polars_err:
        load_encoded(path, schema, bounding_secret=SECRET)
    with pytest.raises(InputDataError) as spark_err:
        spark_load(str(path), schema, SECRET, spark)  # type: ignore[arg-type]
    for err in (polars_err.value, spark_err.value):
        assert (err.column, err.rule) == ("pid", "privacy-unit-missing")
    assert str(spark_err.value) == str(polars_err.value)
    assert f"in {1 if nulls == 'one' else 40} row(s)" in str(polars_err.value)


def test_a_fifo_is_refused_before_spark_opens_it(spark: object, schema: Schema,
                                                 tmp_path: Path) -> None:
    """Issue 17 (8): say what the path is (reading a FIFO would block)."""
    from dpsynth.marginals.spark import spark_load

    os.mkfifo(tmp_path / "t.csv")
    with pytest.raises(InputDataError) as err:
        spark_load(str(tmp_path / "t.csv"), schema, SECRET, spark)  # type: ignore[arg-type]
    assert err.value.rule == "input-file"
    assert "is not a regular file (it is a FIFO)" in str(err.value)


def test_full_release_through_spark(spark: object, schema: Schema,
                                    inputs: dict[str, Path]) -> None:
    from dpsynth.engines import get_engine
    from dpsynth.privacy.accountant import Accountant, Budget
    from dpsynth.privacy.session import MeasurementSession

    # the fixture's session is active: open_counter uses it and does not stop it
    with open_counter(inputs["parquet"], schema, backend="spark", bounding_secret=SECRET) as loaded:
        session = MeasurementSession(loaded.counter, loaded.columns, loaded.sizes,
                                     loaded.contribution_bound, Accountant(Budget(0.5)))
        model = get_engine("mst").fit(session)
        assert session.remaining.rho == pytest.approx(0, abs=1e-9)
    codes = model.sample(200, np.random.default_rng(0))
    assert codes.shape == (200, len(loaded.columns))
    assert ((codes >= 0) & (codes < np.array(loaded.sizes))).all()
    assert spark.getActiveSession() is not None  # type: ignore[attr-defined]


def _messy_csv(path: Path, pool: dict[str, list[str]], seed: int, n: int = 60) -> Path:
    rng = np.random.default_rng(seed)
    pl.DataFrame({k: [v[j] for j in rng.integers(0, len(v), n)] for k, v in pool.items()},
                 schema={k: pl.String for k in pool}).write_csv(path)
    return path


def test_every_column_policy_codes_like_polars(spark: object, tmp_path: Path) -> None:
    """Missing tokens, nullable columns, clamp and null policies, a code pattern:
    the Spark compiler of dpsynth.input_rules codes and bounds like the polars one."""
    from dpsynth.marginals.spark import spark_load

    path = _messy_csv(tmp_path / "clean.csv", VALID, seed=1, n=300)
    enc = load_encoded(path, MESSY, bounding_secret=SECRET)
    marginals = [(c,) for c in enc.columns] + [("n", "c"), ("x", "d"), ("b", "icd")]
    ref = NumpyCounter(enc.codes, enc.columns, enc.sizes).count_many(marginals)
    loaded = spark_load(str(path), MESSY, SECRET, spark)  # type: ignore[arg-type]
    with loaded.counter as counter:
        got = counter.count_many(marginals)
    for m, g, r in zip(marginals, got, ref, strict=True):
        np.testing.assert_array_equal(g, r, err_msg=str(m))


@pytest.mark.parametrize("seed", [2, 5, 11])
def test_messy_tables_fail_like_polars(spark: object, tmp_path: Path, seed: int) -> None:
    from dpsynth.marginals.spark import spark_load

    path = _messy_csv(tmp_path / "messy.csv", POOL, seed=seed)
    with pytest.raises(InputDataError) as polars_err:
        load_encoded(path, MESSY, bounding_secret=SECRET)
    with pytest.raises(InputDataError) as spark_err:
        spark_load(str(path), MESSY, SECRET, spark)  # type: ignore[arg-type]
    assert str(spark_err.value) == str(polars_err.value)


def test_the_format_comes_from_the_bytes_on_both_backends(spark: object, schema: Schema,
                                                           tmp_path: Path) -> None:
    """One is_parquet for both: a local CSV named .parquet is read as CSV."""
    from dpsynth.marginals.spark import spark_load

    path = tmp_path / "misnamed.parquet"
    _table(200).write_csv(path)
    enc = load_encoded(path, schema, bounding_secret=SECRET)
    loaded = spark_load(str(path), schema, SECRET, spark)  # type: ignore[arg-type]
    with loaded.counter as counter:
        np.testing.assert_array_equal(
            counter.count(("sex", "age")),
            NumpyCounter(enc.codes, enc.columns, enc.sizes).count(("sex", "age")))


def test_the_spark_counter_refuses_a_bad_marginal_like_the_session(
        spark: object, schema: Schema, inputs: dict[str, Path]) -> None:
    from dpsynth.errors import UsageError
    from dpsynth.marginals.spark import spark_load

    loaded = spark_load(str(inputs["parquet"]), schema, SECRET, spark)  # type: ignore[arg-type]
    with loaded.counter as counter:
        for cols, message in [((), "a marginal needs at least one column"),
                              (("sex", "sex"), "columns of a marginal (('sex', 'sex')) must be distinct"),
                              (("zz",), "column ('zz') is not in the domain")]:
            with pytest.raises(UsageError) as err:
                counter.count(cols)
            assert str(err.value) == message
