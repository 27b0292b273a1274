"""The internal audit report: the synthetic table against the REAL table (CONFIDENTIAL).

Owns the custodian-only comparison written by ``dpsynth audit`` (:func:`audit`) and
``release --audit-dir`` (:func:`write_audit`): it reads the private table through
``dpsynth.io`` and the bundle's synthetic table, hands both as integer codes to

* :mod:`dpsynth.audit.utility` (on the rows the synthetic rows stand for: with
  ``represent: all_rows`` each is repeated by its weight, :func:`represented`): 1-, 2- and
  3-way marginal TVDs, association
  differences, train-on-synthetic / test-on-real AUC (``--target`` and every declared
  ``analysis.targets`` level, with a real-train ceiling, an independent-columns floor
  and per-subgroup AUCs), subgroup fidelity;
* :mod:`dpsynth.audit.disclosure`: exact matches and distance to the closest record
  against a baseline, anonymeter's risks (optional ``dpsynth[audit]`` extra);
* :mod:`dpsynth.audit.render`: the plots (each marked CONFIDENTIAL) and the page;

and writes ``audit-report.json`` and ``audit-report.html`` with
:func:`dpsynth.confidential.write_confidential` (mode 0600).

These figures are computed on private data and are NOT differentially private: they
must never go into the public bundle (``audit`` and ``pipeline`` refuse an output
directory at, inside or above a bundle: :func:`dpsynth.confidential.refuse_audit_dir`).
The report holds aggregate statistics only (column names, schema category labels,
rates and distances), never a row or a cell value of the real table. This package is
on the private side of the boundary; nothing public imports it (the public report
package :mod:`dpsynth.report` must not, and ``tests/test_privacy_boundary.py`` checks).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from dpsynth.audit.disclosure import anonymeter_risks, disclosure
from dpsynth.audit.render import BANNER, audit_html, plots
from dpsynth.audit.utility import (
    correlations,
    marginal_summaries,
    parse_target,
    subgroup_fidelity,
    tstr,
    tstr_targets,
)
from dpsynth.confidential import refuse_audit_dir, write_confidential
from dpsynth.domain import Domain, recode
from dpsynth.errors import StorageError, UsageError
from dpsynth.io import check_and_encode, is_parquet, open_table
from dpsynth.schema import Schema, load_schema

__all__ = ["BANNER", "audit", "represented", "write_audit"]


# -- loading --------------------------------------------------------------------------------
def _real_codes(path: Path, schema: Schema) -> np.ndarray:
    with open_table(path, schema) as lf:
        frame = check_and_encode(lf, schema, from_csv=not is_parquet(path)).frame
    return frame.select([c.name for c in schema.measured_columns]).to_numpy().astype(np.int64)


def _synthetic(bundle_path: Path, domain: Domain, schema: Schema
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """The bundle's synthetic table as codes, and (``represent: all_rows``) the released
    weight of every row, else None; the file is read once."""
    f = bundle_path / "synthetic.parquet"
    if not f.is_file():
        raise UsageError(f"bundle ({str(bundle_path)!r}) must contain synthetic.parquet")
    table = pl.read_parquet(f)
    weight = schema.weight_column
    weights = (table[weight.name].cast(pl.Float64).fill_null(1.0).to_numpy()
               if weight is not None else None)
    # code columns hold group labels after decoding: recode() is decode's inverse
    return recode(domain, table), weights


def represented(synth: np.ndarray, weights: np.ndarray | None,
                rng: np.random.Generator) -> np.ndarray:
    """The synthetic rows as the rows they stand for: each row repeated ``weight`` times
    (a fractional part by a seeded coin flip), so that unweighted figures on the result are
    the weighted figures a researcher gets with the weight column. Without weights, ``synth``."""
    if weights is None:
        return synth
    whole = np.floor(weights)
    times = whole.astype(np.int64) + (rng.random(weights.size) < weights - whole)
    return np.repeat(synth, times, axis=0)


def _strip(obj: Any) -> Any:
    """Drop the plot-only keys (leading underscore) before the report is written."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


# -- entry points -----------------------------------------------------------------------------
def write_audit(audit_dir: Path, schema: Schema, input_path: Path, bundle_path: Path,
                release_id: str, *, target: str | None = None, holdout_path: Path | None = None,
                seed: int | None = None) -> Path:
    """Compare the bundle's synthetic table with the real one; write JSON + HTML."""
    domain = Domain.from_schema(schema)
    if target is not None:
        parse_target(target, schema, domain)  # fail before reading the private table
    rng = np.random.default_rng(seed if seed is not None else secrets.randbits(63))
    real = _real_codes(input_path, schema)
    synth, weights = _synthetic(bundle_path, domain, schema)
    # utility compares what the rows stand for (weighted rows against every real row);
    # disclosure compares the released records themselves
    stands_for = represented(synth, weights, rng)
    holdout = _real_codes(holdout_path, schema) if holdout_path is not None else None
    tvds, summaries = marginal_summaries(real, stands_for, domain, rng)
    corr = correlations(real, stands_for, domain)
    declared = tstr_targets(real, stands_for, domain, schema, rng, holdout)
    t: dict[str, Any] = (tstr(real, stands_for, domain, target, schema, rng, holdout)
                         if target is not None
                         else next((x for x in declared if x.get("status") == "ok"),
                                   {"status": "skipped: name a target with --target COLUMN=VALUE "
                                              "or declare analysis.targets in the schema"}))
    subgroups = subgroup_fidelity(real, stands_for, domain, schema)
    disc, curves = disclosure(real, synth, domain, holdout, rng)
    target_col = target.partition("=")[0].strip() if target else None
    disc["anonymeter"] = anonymeter_risks(real, synth, domain, holdout, target_col, rng)
    report: dict[str, Any] = {
        "confidential": BANNER,
        "release_id": release_id,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),  # custodian-only
        "real_rows": int(real.shape[0]),
        "synthetic_rows": int(synth.shape[0]),
        # represent: all_rows: utility figures weight each synthetic row by its weight column
        "utility_weighted_by": schema.privacy_unit.weight_column if weights is not None else None,
        "synthetic_rows_represented": int(stands_for.shape[0]),
        "holdout_rows": int(holdout.shape[0]) if holdout is not None else None,
        "utility": {**summaries, "correlations": corr, "tstr": t, "tstr_targets": declared,
                    "subgroups": subgroups},
        "disclosure": disc,
    }
    roc: dict[str, Any] = t.get("_roc") or {}
    pngs = plots(tvds, corr, domain.names, subgroups, curves, roc)
    clean = _strip(report)
    write_confidential(audit_dir / "audit-report.json", json.dumps(clean, indent=2).encode())
    write_confidential(audit_dir / "audit-report.html", audit_html(clean, pngs).encode("utf-8"))
    return audit_dir


def _bundle_release_id(bundle: Path, schema: Schema) -> str:
    """The bundle's release id (its directory name without a manifest); the schema must match."""
    manifest = bundle / "manifest.json"
    if not manifest.is_file():
        return bundle.name
    try:
        m = json.loads(manifest.read_text())
    except (OSError, ValueError):
        raise StorageError(f"manifest of {str(bundle)!r} is unreadable") from None
    sha = m.get("schema_sha256")
    if sha is not None and sha != schema.sha256:
        raise UsageError("schema does not match the bundle (schema_sha256 differs from its "
                         "manifest)")
    return str(m.get("release_id", bundle.name))


def audit(schema_path: str | Path, input_path: str | Path, bundle_path: str | Path,
          out_dir: str | Path, *, target: str | None = None,
          holdout_path: str | Path | None = None, seed: int | None = None) -> dict[str, Any]:
    """Write the CONFIDENTIAL internal audit report of a released bundle to ``out_dir``.

    Returns a short summary (paths and headline numbers; no real values).
    """
    schema = load_schema(schema_path)
    bundle, out = Path(bundle_path), Path(out_dir)
    if not bundle.is_dir():
        raise UsageError(f"bundle directory {str(bundle)!r} does not exist")
    refuse_audit_dir(out, bundle, option="--out")
    if not Path(input_path).is_file():
        raise UsageError(f"input file {str(input_path)!r} does not exist")
    if holdout_path is not None and not Path(holdout_path).is_file():
        raise UsageError(f"holdout file {str(holdout_path)!r} does not exist")
    release_id = _bundle_release_id(bundle, schema)
    write_audit(out, schema, Path(input_path), bundle, release_id, target=target,
                holdout_path=Path(holdout_path) if holdout_path is not None else None, seed=seed)
    report = json.loads((out / "audit-report.json").read_text())
    u = report["utility"]
    return {
        "release_id": release_id,
        "out": str(out),
        "json": str(out / "audit-report.json"),
        "html": str(out / "audit-report.html"),
        "tvd_1way_mean": u["tvd_1way"]["mean"],
        "tvd_2way_mean": u["tvd_2way"]["mean"],
        "tvd_3way_mean": u["tvd_3way"]["mean"],
        "tstr_auc": u["tstr"].get("auc_train_synthetic"),
        "tstr_targets": [{k: x.get(k) for k in ("target", "value", "auc_train_synthetic",
                                                 "auc_train_real", "auc_train_independent")}
                         for x in u["tstr_targets"] if x.get("status") == "ok"],
        "exact_match_share": report["disclosure"]["exact_match_share_training"],
        "anonymeter": report["disclosure"]["anonymeter"]["status"],
    }
