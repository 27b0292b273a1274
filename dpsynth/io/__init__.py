"""The private table, from file to bounded integer codes (PRIVATE).

The only package that opens the private input. :func:`load_encoded` is the whole
private half of the polars path: read, check against the schema, bound, encode.
Its parts, one module each:

* :mod:`dpsynth.io.reading`: CSV, gzip CSV and Parquet; bytes, header and
  Parquet types (:func:`open_table`, :func:`is_parquet`, :func:`read_table`);
* :mod:`dpsynth.io.checking`: the per-row checks and the codes, in one streaming
  pass (:func:`check_and_encode`, :func:`check_table`, :func:`encode`);
* :mod:`dpsynth.io.bounding`: at most k rows per patient, chosen by a keyed hash
  (:func:`bound_contributions` and the hash functions the Spark backend shares).

What is checked, and every message, is :mod:`dpsynth.input_rules` (shared with
the Spark backend, :mod:`dpsynth.marginals.spark`).

Rules for this package: messages name columns, rules, counts and row numbers,
never a cell value; nothing here draws DP noise; nothing after the privacy
boundary (engines, sampler, reports, bundle) may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from dpsynth.domain import Domain
from dpsynth.io.bounding import (
    bound_contributions,
    bounding_keys,
    bounding_secret,
    content_hashes,
    patient_hashes,
)
from dpsynth.io.checking import CheckedTable, check_and_encode, check_table, encode, to_codes
from dpsynth.io.reading import is_parquet, open_table, parse_header, read_table
from dpsynth.schema import UNIT_ROWS_COLUMN, Schema

__all__ = [
    "CheckedTable",
    "EncodedTable",
    "bound_contributions",
    "bounding_keys",
    "bounding_secret",
    "check_and_encode",
    "check_table",
    "content_hashes",
    "encode",
    "is_parquet",
    "load_encoded",
    "open_table",
    "parse_header",
    "patient_hashes",
    "read_table",
    "rows_per_patient",
]


@dataclass(frozen=True)
class EncodedTable:
    """Contribution-bounded, integer-coded released columns. PRIVATE: hand it to a
    MeasurementSession and drop the reference."""

    codes: np.ndarray
    columns: tuple[str, ...]
    sizes: tuple[int, ...]
    contribution_bound: int
    unit_rows: np.ndarray | None = None
    """Exact patients by row count in the input, before bounding: entry ``i`` counts
    the patients with ``i + 1`` rows, the last one those with ``rows_cap`` or more
    (:func:`rows_per_patient`); ``None`` without a patient id column."""


def load_encoded(path: str | Path, schema: Schema,
                 bounding_secret: bytes | int | None = None) -> EncodedTable:
    """Read, check, bound and encode: the whole private half of the pipeline.

    One streaming pass over the file (:func:`check_and_encode`); bounding runs on
    the compact codes, so memory grows with the number of rows times released
    columns (one or two bytes each) plus a 4-byte patient id, not with the text.
    ``bounding_secret``: the key of :func:`bound_contributions` (``None``: a fresh
    random one; a known one is safe, see :func:`dpsynth.io.bounding.bounding_secret`).

    ``open_table`` and ``bound_contributions`` are looked up in this package when
    called, so a test or audit that replaces ``dpsynth.io.<name>`` sees every call.
    """
    unit = schema.privacy_unit
    domain = Domain.for_model(schema)
    with open_table(path, schema) as lf:
        checked = check_and_encode(lf, schema, from_csv=not is_parquet(path))
    compact = checked.frame
    unit_rows = None
    if unit.column is not None:
        counts = rows_per_patient(compact, unit.column, unit.rows_cap)
        unit_rows = np.bincount(counts[_CODE].to_numpy(), minlength=unit.rows_cap)
        compact = bound_contributions(compact, unit.column, unit.max_rows, bounding_secret,
                                      checked.unit_values)
        if schema.unit_rows_column is not None:  # represent: all_rows
            compact = compact.join(counts.rename({_CODE: UNIT_ROWS_COLUMN}), on=unit.column,
                                   how="left", maintain_order="left")
        compact = compact.drop(unit.column)
    del checked
    codes = to_codes(compact, len(domain.columns))
    return EncodedTable(codes=codes, columns=domain.names, sizes=domain.sizes,
                        contribution_bound=unit.max_rows, unit_rows=unit_rows)


_CODE = "_code"


def rows_per_patient(frame: pl.DataFrame, unit_column: str, cap: int) -> pl.DataFrame:
    """One row per patient of ``frame`` (all of its rows, before bounding): the patient
    id and ``_code``, the row count clamped at ``cap`` minus one (codes 0 .. cap-1 of
    :attr:`~dpsynth.schema.Schema.unit_rows_column`). A patient's count depends on
    their own rows only, so adding or removing a patient moves one patient's entry."""
    return frame.group_by(unit_column).agg(
        (pl.len().clip(upper_bound=cap) - 1).cast(pl.UInt8).alias(_CODE))
