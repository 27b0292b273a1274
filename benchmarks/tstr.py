"""TSTR (train on synthetic, test on real) for a declared analysis target: issue 14's protocol.

The protocol, one function per step (the names are stable; other benchmarks import them):

1. :func:`split_by_patient`: the real table (every cell as text, as read from the file) is
   split 70/30 **by patient**: a seeded random 30 % of the patient ids, with ALL their
   encounters, is the test set; the other patients' encounters are the training set. No
   patient is in both. :func:`write_train` writes the training rows as a gzip CSV that
   ``dpsynth release --input`` reads, with the original header and the raw text unchanged.
2. A release is fitted on the training CSV (the release bounds it to k rows per patient).
3. :func:`tstr_auc`: a gradient-boosting classifier (scikit-learn's
   ``HistGradientBoostingClassifier``, fixed ``random_state``) is trained on the synthetic
   table and scored on the real test rows (all of their encounters), predicting
   ``target == positive``; the figure is the ROC AUC on the test rows.

Both tables are compared **as values as released** (``raw_fidelity.released_values`` for the
synthetic table, ``raw_fidelity.real_values`` for the real rows: missing tokens -> null,
numbers as floats, code columns as their public group labels) and go through the same
preprocessing, :func:`features`:

* the features are every released (measured) column except the target and the ICD-9 code
  columns (``system`` starting with "ICD-9": diag_1..3 on diabetes130; they are released as
  groups while the real rows hold raw codes, issue 14). Other code columns (diabetes130's
  ``medical_specialty``) are compared as their public group labels;
* **numeric columns** (integer, float, date, datetime) are float features, null -> NaN
  (HistGradientBoosting sends NaN to the side of each split that fits best);
* **every other column** is a native categorical feature (``categorical_features``): its
  values are mapped to the index of the schema's public level (``dpsynth.domain.levels``),
  the same map for both tables, so the codes never depend on either table; null, or a value
  outside the public levels, is NaN (the classifier's missing-category branch). Domain sizes
  are far below HistGradientBoosting's 255-category limit on the shipped schemas.

References that frame a release's AUC (non-DP, computed on real rows, internal figures only):

* :func:`real_train_ceiling`: the same classifier trained on the real training rows (by
  default bounded to the schema's k rows per patient, as the release sees them, with a fixed
  seed; ``bounded=False`` uses every training encounter);
* :func:`independent_floor`: trained on the real training rows with every column resampled
  independently (``raw_fidelity.independent``): the AUC a release reaches when it keeps the
  1-way marginals and no relationship between the columns (about 0.5).

Run as a script it prints the ceiling, the floor, and the AUC of any bundles given::

    python benchmarks/tstr.py                                   # ceiling and floor
    python benchmarks/tstr.py --write-train /tmp/train.csv.gz   # the CLI's input
    python benchmarks/tstr.py --bundle out/rel1 --bundle out/rel2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # raw_fidelity, when run as a script

from raw_fidelity import NUMERIC_KINDS, independent, real_values, released_values  # noqa: E402

from dpsynth.domain import levels  # noqa: E402
from dpsynth.schema import Schema, load_schema  # noqa: E402

__all__ = ["DEFAULT_DATA", "DEFAULT_SCHEMA", "SPLIT_SEED", "TARGET", "bounded_train", "feature_columns",
           "features", "independent_floor", "real_train_ceiling", "split_by_patient", "tstr_auc",
           "write_train"]

DEFAULT_SCHEMA = REPO / "schemas/diabetes130.yaml"
DEFAULT_DATA = REPO / "examples/diabetes130/diabetic_data.csv.gz"
TARGET = ("readmitted", "<30")
"""diabetes130's target: readmission within 30 days."""
SPLIT_SEED = 14
"""Seed of the patient split (issue 14)."""
BOUND_SEED = 20240601
"""Seed of the benchmark's k-rows-per-patient choice for the real-train ceiling."""
MODEL_SEED = 0
TEST_FRACTION = 0.3


# -- the split ------------------------------------------------------------------------------------


def split_by_patient(raw: pl.DataFrame, unit: str, test_fraction: float = TEST_FRACTION,
                     seed: int = SPLIT_SEED) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(train, test)``: a seeded random ``test_fraction`` of the distinct values of ``unit``
    (rounded to the nearest patient) with all their rows is ``test``; the rest is ``train``.
    Row order within each part is the input's."""
    ids = raw.get_column(unit).unique().sort()
    n_test = round(ids.len() * test_fraction)
    pick = np.random.default_rng(seed).permutation(ids.len())[:n_test]
    test_ids = ids.gather(np.sort(pick))
    in_test = pl.col(unit).is_in(test_ids.implode())
    return raw.filter(~in_test), raw.filter(in_test)


def write_train(train: pl.DataFrame, path: str | Path) -> Path:
    """The training rows as a CSV (gzip when ``path`` ends in ``.gz``) for ``dpsynth release``:
    the original columns, every cell the original text."""
    import gzip

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb", compresslevel=3) as fh:
            train.write_csv(fh)
    else:
        train.write_csv(path)
    return path


def bounded_train(train: pl.DataFrame, unit: str, k: int, seed: int = BOUND_SEED) -> pl.DataFrame:
    """At most ``k`` rows per patient, chosen with a fixed seed (the benchmark's stand-in for
    the release's bounding, used for the real-train ceiling)."""
    rng = np.random.default_rng(seed)
    keyed = train.with_columns(pl.Series("_key", rng.random(train.height)),
                               pl.int_range(train.height).alias("_row"))
    return keyed.sort("_key").group_by(unit, maintain_order=True).head(k).sort("_row").drop("_key", "_row")


# -- preprocessing and the classifier ----------------------------------------------------------------


def feature_columns(schema: Schema, target: str) -> list[str]:
    """Every measured column except ``target`` and the ICD-9 code columns."""
    return [c.name for c in schema.measured_columns
            if c.name != target and not (c.kind == "code" and c.system.upper().startswith("ICD-9"))]


def features(values: pl.DataFrame, schema: Schema, target: str) -> tuple[np.ndarray, np.ndarray]:
    """``(X, categorical_mask)`` from a table of values (``real_values`` / ``released_values``):
    numeric columns as floats, every other column as the index of its public level (NaN for
    null or a value outside the levels). The map depends on the schema only."""
    cols, mask = [], []
    for name in feature_columns(schema, target):
        col = schema.column(name)
        s = values.get_column(name)
        if col.kind in NUMERIC_KINDS:
            if s.dtype.is_temporal():
                s = s.cast(pl.Datetime("us")).dt.epoch("us")
            cols.append(s.cast(pl.Float64).to_numpy().astype(np.float64))
            mask.append(False)
        else:
            labels = [str(v).lower() if col.kind == "boolean" else str(v) for v in levels(col)]
            idx = s.cast(pl.String).replace_strict(labels, list(range(len(labels))), default=None,
                                                   return_dtype=pl.Float64)
            cols.append(idx.to_numpy().astype(np.float64))
            mask.append(True)
    return np.column_stack(cols), np.asarray(mask)


def _label(values: pl.DataFrame, target: str, positive: str) -> np.ndarray:
    return (values.get_column(target).cast(pl.String) == positive).fill_null(False).to_numpy()


def tstr_auc(train_df: pl.DataFrame, test_df: pl.DataFrame, schema: Schema, target: str = TARGET[0],
             positive: str = TARGET[1], seed: int = MODEL_SEED) -> float:
    """ROC AUC on ``test_df`` of a HistGradientBoostingClassifier trained on ``train_df``.

    Both frames hold values as released (``released_values`` / ``real_values``); the label is
    ``target == positive`` (null: negative). A training table whose label is constant gives a
    constant score, AUC 0.5.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    x_train, mask = features(train_df, schema, target)
    y_train = _label(train_df, target, positive)
    x_test, _ = features(test_df, schema, target)
    y_test = _label(test_df, target, positive)
    if y_test.all() or not y_test.any():
        raise ValueError(f"the test rows' label {target} == {positive!r} is constant: no AUC")
    if y_train.all() or not y_train.any():
        return 0.5
    clf = HistGradientBoostingClassifier(categorical_features=mask, random_state=seed, max_iter=200)
    clf.fit(x_train, y_train)
    return float(roc_auc_score(y_test, clf.predict_proba(x_test)[:, 1]))


# -- references --------------------------------------------------------------------------------------


def real_train_ceiling(train_raw: pl.DataFrame, test_raw: pl.DataFrame, schema: Schema,
                       target: str = TARGET[0], positive: str = TARGET[1], bounded: bool = True) -> float:
    """TSTR AUC when the training table is the real training rows themselves (bounded to the
    schema's k rows per patient unless ``bounded=False``)."""
    unit = schema.privacy_unit.column
    if bounded and unit is not None:
        train_raw = bounded_train(train_raw, unit, schema.privacy_unit.max_rows)
    return tstr_auc(real_values(train_raw, schema), real_values(test_raw, schema), schema, target, positive)


def independent_floor(train_raw: pl.DataFrame, test_raw: pl.DataFrame, schema: Schema,
                      target: str = TARGET[0], positive: str = TARGET[1], seed: int = 0) -> float:
    """TSTR AUC of the real (bounded) training rows with every column resampled on its own."""
    unit = schema.privacy_unit.column
    if unit is not None:
        train_raw = bounded_train(train_raw, unit, schema.privacy_unit.max_rows)
    ind = independent(real_values(train_raw, schema), seed=seed)
    return tstr_auc(ind, real_values(test_raw, schema), schema, target, positive)


def bundle_auc(bundle: str | Path, test_raw: pl.DataFrame, schema: Schema, target: str = TARGET[0],
               positive: str = TARGET[1]) -> float:
    """TSTR AUC of a release bundle's ``synthetic.parquet``."""
    synth = released_values(pl.read_parquet(Path(bundle) / "synthetic.parquet"), schema)
    return tstr_auc(synth, real_values(test_raw, schema), schema, target, positive)


def load_split(schema_path: str | Path = DEFAULT_SCHEMA, data_path: str | Path = DEFAULT_DATA,
               seed: int = SPLIT_SEED) -> tuple[Schema, pl.DataFrame, pl.DataFrame]:
    """The schema and the (train, test) raw-text split of the table."""
    from dpsynth.io import read_table

    schema = load_schema(schema_path)
    unit = schema.privacy_unit.column
    if unit is None:
        raise ValueError("the schema has no privacy unit column: no split by patient")
    train, test = split_by_patient(read_table(data_path, schema), unit, seed=seed)
    return schema, train, test


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--schema", default=str(DEFAULT_SCHEMA))
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--target", default=f"{TARGET[0]}={TARGET[1]}", help="COLUMN=VALUE")
    p.add_argument("--seed", type=int, default=SPLIT_SEED, help="seed of the patient split")
    p.add_argument("--write-train", metavar="PATH", help="write the training rows (CSV, .gz ok)")
    p.add_argument("--bundle", action="append", default=[], help="a release bundle to score (repeatable)")
    a = p.parse_args(argv)
    target, positive = a.target.split("=", 1)
    schema, train, test = load_split(a.schema, a.data, a.seed)
    unit = schema.privacy_unit.column
    print(f"split by {unit} (seed {a.seed}): train {train.height} rows, test {test.height} rows "
          f"({test.get_column(unit).n_unique()} patients)", file=sys.stderr)
    if a.write_train:
        print(f"wrote {write_train(train, a.write_train)}", file=sys.stderr)
    rows = [("real train (k rows per patient)", real_train_ceiling(train, test, schema, target, positive)),
            ("real train (all encounters)",
             real_train_ceiling(train, test, schema, target, positive, bounded=False)),
            ("independent columns", independent_floor(train, test, schema, target, positive))]
    rows += [(f"bundle {b}", bundle_auc(b, test, schema, target, positive)) for b in a.bundle]
    print(f"| training table | AUC ({target} == {positive}) |\n|---|---|")
    for name, v in rows:
        print(f"| {name} | {v:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
