"""The internal audit report: the synthetic table against the REAL table (CONFIDENTIAL).

Owns the custodian-only comparison written to ``--audit-dir``: exact row counts,
1- and 2-way marginal total-variation distances between the real (encoded, not
bounded) table and the released synthetic table, with the worst marginals named.

These figures are computed on private data and are not differentially private:
they must never go into the public bundle (``pipeline`` refuses an audit dir
inside the bundle). This module reads the private table through ``dpsynth.io``
and is therefore on the private side of the boundary; nothing public imports it.
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from dpsynth.domain import Domain, column_exprs
from dpsynth.io import check_table, encode, is_parquet, read_table
from dpsynth.schema import Schema

__all__ = ["marginal_tvds", "write_audit"]

BANNER = ("CONFIDENTIAL: contains statistics of the real table that are NOT differentially "
          "private. Keep with the data custodian; never publish or add to the release bundle.")


def _hist(codes: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    idx = np.ravel_multi_index(tuple(codes.T), sizes)
    h = np.bincount(idx, minlength=int(np.prod(sizes))).astype(float)
    return h / max(h.sum(), 1.0)


def marginal_tvds(real: np.ndarray, synth: np.ndarray, names: tuple[str, ...],
                  sizes: tuple[int, ...], degree: int) -> list[tuple[tuple[str, ...], float]]:
    """TVD of every ``degree``-way marginal, worst first."""
    out = []
    for cols in itertools.combinations(range(len(names)), degree):
        sz = tuple(sizes[c] for c in cols)
        tvd = 0.5 * float(np.abs(_hist(real[:, cols], sz) - _hist(synth[:, cols], sz)).sum())
        out.append((tuple(names[c] for c in cols), tvd))
    return sorted(out, key=lambda x: -x[1])


def write_audit(audit_dir: Path, schema: Schema, input_path: Path, bundle_path: Path,
                release_id: str) -> Path:
    """Compare the bundle's synthetic table with the real one; write JSON + HTML."""
    domain = Domain.from_schema(schema)
    real_df = read_table(input_path, schema)
    check_table(real_df, schema, from_csv=not is_parquet(input_path))
    real = encode(real_df, schema)
    synth_df = pl.read_parquet(bundle_path / "synthetic.parquet")
    synth_text = synth_df.select(
        [pl.col(c.name).cast(pl.String) if c.kind not in ("boolean",) else
         pl.col(c.name).cast(pl.String).str.to_lowercase() for c in domain.columns])
    synth = synth_text.select([column_exprs(c).code for c in domain.columns]).to_numpy()
    synth = synth.astype(np.int64)
    one = marginal_tvds(real, synth, domain.names, domain.sizes, 1)
    two = marginal_tvds(real, synth, domain.names, domain.sizes, 2)
    report: dict[str, Any] = {
        "confidential": BANNER,
        "release_id": release_id,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "real_rows": int(real.shape[0]),
        "synthetic_rows": int(synth.shape[0]),
        "tvd_1way": {"mean": float(np.mean([t for _, t in one])), "worst": one[:5]},
        "tvd_2way": {"mean": float(np.mean([t for _, t in two])), "worst": two[:10]},
    }
    audit_dir.mkdir(parents=True, exist_ok=True)
    (audit_dir / "audit-report.json").write_text(json.dumps(report, indent=2))
    rows = "".join(f"<tr><td>{html.escape(' x '.join(c))}</td><td>{t:.4f}</td></tr>"
                   for c, t in one[:10] + two[:20])
    (audit_dir / "audit-report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>CONFIDENTIAL audit "
        f"{html.escape(release_id)}</title></head><body style='font-family:sans-serif'>"
        f"<p style='background:#b00;color:#fff;padding:1em;font-weight:bold'>{BANNER}</p>"
        f"<h1>Internal audit: {html.escape(release_id)}</h1>"
        f"<p>Real rows: {report['real_rows']}; synthetic rows: {report['synthetic_rows']}</p>"
        f"<p>Mean 1-way TVD {report['tvd_1way']['mean']:.4f}; mean 2-way TVD "
        f"{report['tvd_2way']['mean']:.4f}</p><table border=1><tr><th>marginal</th>"
        f"<th>TVD</th></tr>{rows}</table></body></html>")
    return audit_dir
