"""Disclosure checks of a synthetic table against the REAL rows (CONFIDENTIAL figures).

Owns the disclosure half of the internal audit: the share of synthetic rows that
exactly match a training row, and the Hamming distance to the closest record (DCR),
each against a baseline (held-out rows the release never saw, or without them a
leave-one-out reference that says plainly it is not held out); and anonymeter's
singling-out, linkability and inference risks when the optional ``dpsynth[audit]``
extra is installed (they need the holdout as control rows).

Works on integer code arrays handed over by :mod:`dpsynth.audit`, which reads the
private table; this module reads no file. Its figures are computed on real rows and
are NOT differentially private: they go into the custodian-only audit report, as
aggregates only (shares, distances, risks; never a row), and never into a bundle.
It is on the private side of the boundary: nothing public imports it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from dpsynth.domain import Domain
from dpsynth.report.metrics import flat_index

__all__ = ["ANONYMETER_ATTACKS", "MAX_DCR_REFERENCE", "MAX_DCR_ROWS", "anonymeter_risks",
           "disclosure"]

MAX_DCR_ROWS = 2_000
"""Most synthetic (and reference) rows whose closest record is searched."""
MAX_DCR_REFERENCE = 20_000
"""Most real rows searched for the closest record."""
ANONYMETER_ATTACKS = 300
"""Most attacks per anonymeter evaluator."""

Curves = dict[str, np.ndarray]


# -- exact matches and distance to the closest record --------------------------------------
def _row_keys(codes: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    if math.prod(int(s) for s in sizes) < 2**62:
        return flat_index(codes, sizes)
    return np.array([hash(r.tobytes()) for r in codes], dtype=np.int64)  # pragma: no cover


def _match_share(synth: np.ndarray, ref: np.ndarray, sizes: Sequence[int]) -> float:
    return float(np.isin(_row_keys(synth, sizes), _row_keys(ref, sizes)).mean())


def _dcr(queries: np.ndarray, ref: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """Hamming distance (columns that differ) from each query row to its closest ``ref`` row."""
    out = np.empty(queries.shape[0], dtype=np.int64)
    step = max(1, 4_000_000 // max(ref.size, 1))
    for a in range(0, queries.shape[0], step):
        q = queries[a:a + step]
        dist = (q[:, None, :] != ref[None, :, :]).sum(axis=2)
        if exclude_self:  # query i is ref row a + i: leave it out
            idx = np.arange(q.shape[0])
            dist[idx, a + idx] = queries.shape[1] + 1
        out[a:a + step] = dist.min(axis=1)
    return out


def _dist_summary(d: np.ndarray, n_cols: int) -> dict[str, Any]:
    hist = np.bincount(d, minlength=n_cols + 1)[: n_cols + 1] / max(d.size, 1)
    return {"rows": int(d.size), "share_at_0": round(float((d == 0).mean()), 5),
            "median": float(np.median(d)), "mean": round(float(d.mean()), 4),
            "histogram": [round(float(h), 5) for h in hist]}


def _against_holdout(synth: np.ndarray, syn_q: np.ndarray, real: np.ndarray, holdout: np.ndarray,
                     domain: Domain, rng: np.random.Generator) -> tuple[dict[str, Any], Curves]:
    """Training vs holdout samples of equal size: the fair membership baseline."""
    sizes, d = domain.sizes, len(domain.names)
    m = min(holdout.shape[0], real.shape[0])
    train = real[rng.permutation(real.shape[0])[:m]]
    hold = holdout[rng.permutation(holdout.shape[0])[:m]]
    ref_t, ref_h = train[:MAX_DCR_REFERENCE], hold[:MAX_DCR_REFERENCE]
    dcr_t, dcr_h = _dcr(syn_q, ref_t), _dcr(syn_q, ref_h)
    curves = {"synthetic to training rows": dcr_t, "synthetic to holdout rows": dcr_h}
    closer = float((dcr_t < dcr_h).mean() + 0.5 * (dcr_t == dcr_h).mean())
    return {
        "baseline": "holdout",
        "note": ("training and holdout samples of equal size; a release that did not memorise "
                 "matches both equally often and is as close to one as to the other (the "
                 "holdout rows must not have been used in the release)"),
        "reference_rows": m,
        "exact_match_share_training": round(_match_share(synth, train, sizes), 5),
        "exact_match_share_holdout": round(_match_share(synth, hold, sizes), 5),
        "dcr_training": _dist_summary(dcr_t, d),
        "dcr_holdout": _dist_summary(dcr_h, d),
        "share_closer_to_training": round(closer, 4),
    }, curves


def _leave_one_out(synth: np.ndarray, syn_q: np.ndarray, real: np.ndarray, domain: Domain,
                   rng: np.random.Generator) -> tuple[dict[str, Any], Curves]:
    """No holdout: a same-size random subsample of the real rows, leave-one-out, as reference."""
    sizes, d = domain.sizes, len(domain.names)
    m = min(synth.shape[0], real.shape[0])
    sub_idx = rng.permutation(real.shape[0])[:m]
    keys = _row_keys(real, sizes)
    uniq, counts = np.unique(keys, return_counts=True)
    loo = float((counts[np.searchsorted(uniq, keys[sub_idx])] >= 2).mean())
    ref_idx = rng.permutation(real.shape[0])[:MAX_DCR_REFERENCE]
    ref = real[ref_idx]
    dcr_s = _dcr(syn_q, ref)
    q_idx = ref_idx[: min(MAX_DCR_ROWS, ref_idx.size)]
    dcr_r = _dcr(real[q_idx], ref, exclude_self=True)
    curves = {"synthetic to real rows": dcr_s, "real rows to other real rows (reference)": dcr_r}
    return {
        "baseline": "none (no --holdout given)",
        "note": ("NOT a held-out comparison: every real row was available to the release. The "
                 "reference is a same-size random subsample of real rows matched against the "
                 "OTHER real rows (leave-one-out), i.e. how often a fresh row from the same "
                 "population matches a record. A fair membership baseline needs --holdout with "
                 "rows the release never saw."),
        "reference_rows": m,
        "exact_match_share_training": round(_match_share(synth, real, sizes), 5),
        "exact_match_share_reference": round(loo, 5),
        "dcr_training": _dist_summary(dcr_s, d),
        "dcr_reference": _dist_summary(dcr_r, d),
    }, curves


def disclosure(real: np.ndarray, synth: np.ndarray, domain: Domain, holdout: np.ndarray | None,
               rng: np.random.Generator) -> tuple[dict[str, Any], Curves]:
    """Exact matches and distance to the closest record, against a non-member baseline.

    Returns the report section and the distance curves (for the plot only)."""
    syn_q = synth[rng.permutation(synth.shape[0])[:MAX_DCR_ROWS]]
    if holdout is not None:
        return _against_holdout(synth, syn_q, real, holdout, domain, rng)
    return _leave_one_out(synth, syn_q, real, domain, rng)


# -- anonymeter ---------------------------------------------------------------------------
def _risk(ev: Any) -> dict[str, Any]:
    r = ev.risk(confidence_level=0.95)
    return {"risk": round(float(r.value), 4), "ci95": [round(float(x), 4) for x in r.ci]}


def _attacks(ori: Any, syn: Any, ctl: Any, names: list[str], n_att: int, secret: str,
             rng: np.random.Generator) -> dict[str, Any]:
    """Run anonymeter's evaluators; one that fails is reported, not raised."""
    from anonymeter.evaluators import (
        InferenceEvaluator,
        LinkabilityEvaluator,
        SinglingOutEvaluator,
    )

    out: dict[str, Any] = {}
    half = len(names) // 2
    for mode in ("univariate", "multivariate"):
        try:
            out[f"singling_out_{mode}"] = _risk(SinglingOutEvaluator(
                ori=ori, syn=syn, control=ctl, n_attacks=n_att, n_cols=min(3, len(names)),
                max_attempts=100 * n_att,
                seed=int(rng.integers(2**31))).evaluate(mode=mode))
        except Exception as exc:  # anonymeter raises when no query singles anyone out
            out[f"singling_out_{mode}"] = {"status": f"failed ({type(exc).__name__})"}
    try:
        out["linkability"] = _risk(LinkabilityEvaluator(
            ori=ori, syn=syn, control=ctl, n_attacks=n_att, n_neighbors=10,
            aux_cols=(names[:half], names[half:])).evaluate(n_jobs=1))
    except Exception as exc:
        out["linkability"] = {"status": f"failed ({type(exc).__name__})"}
    try:
        out["inference"] = {"secret": secret, **_risk(InferenceEvaluator(
            ori=ori, syn=syn, control=ctl, n_attacks=n_att, secret=secret,
            aux_cols=[c for c in names if c != secret]).evaluate(n_jobs=1))}
    except Exception as exc:
        out["inference"] = {"secret": secret, "status": f"failed ({type(exc).__name__})"}
    return out


def anonymeter_risks(real: np.ndarray, synth: np.ndarray, domain: Domain,
                     holdout: np.ndarray | None, target_col: str | None,
                     rng: np.random.Generator) -> dict[str, Any]:
    """Anonymeter's singling-out, linkability and inference risks (95% intervals)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import anonymeter.evaluators  # noqa: F401
    except ImportError:
        return {"status": "not installed: pip install 'dpsynth[audit]' to run anonymeter"}
    if holdout is None:
        return {"status": "skipped: anonymeter needs control rows the release never saw; "
                          "pass --holdout"}
    if len(domain.names) < 2:
        return {"status": "skipped: needs at least two released columns"}
    import pandas as pd

    def frame(a: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({n: [f"c{v}" for v in a[:, k]] for k, n in enumerate(domain.names)})

    n = min(real.shape[0], 5 * ANONYMETER_ATTACKS)
    ori = frame(real[rng.permutation(real.shape[0])[:n]])
    syn = frame(synth[rng.permutation(synth.shape[0])[:n]])
    ctl = frame(holdout[rng.permutation(holdout.shape[0])[:n]])
    n_att = max(10, min(ANONYMETER_ATTACKS, ctl.shape[0] - 1, ori.shape[0] - 1))
    names = list(domain.names)
    secret = target_col if target_col in names else names[-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attacks = _attacks(ori, syn, ctl, names, n_att, secret, rng)
    return {"status": "ok", "attacks": n_att, "rows": n, **attacks}
