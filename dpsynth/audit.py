"""The internal audit report: the synthetic table against the REAL table (CONFIDENTIAL).

Owns the custodian-only comparison written by ``dpsynth audit`` and ``release
--audit-dir``:

* utility: 1-, 2- and 3-way marginal total-variation distances (mean, worst, the
  worst marginals named), association differences (Cramér's V for every pair,
  Pearson on codes for ordered pairs), train-on-synthetic / test-on-real AUC for a
  binary target ``column == value`` (a numpy/scipy logistic regression on one-hot
  codes, so it needs no optional package), and subgroup fidelity for the schema's
  subgroups (real vs synthetic share and 1-way TVD inside each group);
* disclosure: exact-match shares and Hamming distance to the closest record of the
  synthetic rows against training rows and against a held-out baseline, and
  anonymeter's singling-out, linkability and inference risks when the optional
  ``dpsynth[audit]`` extra is installed.

These figures are computed on private data and are NOT differentially private: they
must never go into the public bundle (``audit`` and ``pipeline`` refuse an output
directory inside the bundle). The report holds aggregate statistics only (column
names, schema category labels, rates and distances), never a row or a cell value
of the real table. This module reads the private table through ``dpsynth.io`` and
is on the private side of the boundary; nothing public imports it.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io as _io
import itertools
import json
import math
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from dpsynth.confidential import refuse_audit_dir, write_confidential
from dpsynth.domain import Domain, column_exprs, level_labels, recode
from dpsynth.errors import StorageError, UsageError
from dpsynth.io import check_and_encode, is_parquet, open_table
from dpsynth.schema import Schema, load_schema

__all__ = ["BANNER", "audit", "marginal_tvds", "write_audit"]

BANNER = ("CONFIDENTIAL: contains statistics of the real table that are NOT differentially "
          "private. Keep with the data custodian; never publish or add to the release bundle.")

_ORDERED = ("integer", "float", "date", "datetime")
MAX_COMBOS = 600
"""Most 3-way marginals compared (a seeded random subset beyond this)."""
MAX_TRAIN_ROWS = 200_000
MAX_DCR_ROWS = 2_000
MAX_DCR_REFERENCE = 20_000
ANONYMETER_ATTACKS = 300


# -- loading --------------------------------------------------------------------------------
def _real_codes(path: Path, schema: Schema) -> np.ndarray:
    with open_table(path, schema) as lf:
        frame = check_and_encode(lf, schema, from_csv=not is_parquet(path)).frame
    return frame.select([c.name for c in schema.measured_columns]).to_numpy().astype(np.int64)


def _synth_codes(bundle_path: Path, domain: Domain) -> np.ndarray:
    f = bundle_path / "synthetic.parquet"
    if not f.is_file():
        raise UsageError(f"bundle ({str(bundle_path)!r}) must contain synthetic.parquet")
    # code columns hold group labels after decoding: recode() is decode's inverse
    return recode(domain, pl.read_parquet(f))


# -- utility ----------------------------------------------------------------------------------
def _flat(codes: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    flat = np.zeros(codes.shape[0], dtype=np.int64)
    for j, s in enumerate(sizes):
        flat = flat * int(s) + codes[:, j]
    return flat


def _tvd(real: np.ndarray, synth: np.ndarray, sizes: Sequence[int]) -> float:
    r, s = _flat(real, sizes), _flat(synth, sizes)
    cells = math.prod(int(x) for x in sizes)
    if cells <= 4_000_000:
        hr = np.bincount(r, minlength=cells) / max(r.size, 1)
        hs = np.bincount(s, minlength=cells) / max(s.size, 1)
    else:
        _, inv = np.unique(np.concatenate([r, s]), return_inverse=True)
        k = int(inv.max()) + 1
        hr = np.bincount(inv[: r.size], minlength=k) / max(r.size, 1)
        hs = np.bincount(inv[r.size:], minlength=k) / max(s.size, 1)
    return 0.5 * float(np.abs(hr - hs).sum())


def marginal_tvds(real: np.ndarray, synth: np.ndarray, names: tuple[str, ...],
                  sizes: tuple[int, ...], degree: int, max_combos: int | None = None,
                  rng: np.random.Generator | None = None) -> list[tuple[tuple[str, ...], float]]:
    """TVD of every ``degree``-way marginal (a random subset past ``max_combos``), worst first."""
    combos = list(itertools.combinations(range(len(names)), degree))
    if max_combos is not None and len(combos) > max_combos:
        pick = (rng or np.random.default_rng(0)).choice(len(combos), max_combos, replace=False)
        combos = [combos[i] for i in sorted(pick)]
    out = [(tuple(names[c] for c in cols),
            _tvd(real[:, cols], synth[:, cols], [sizes[c] for c in cols])) for cols in combos]
    return sorted(out, key=lambda x: -x[1])


def _tvd_summary(tvds: list[tuple[tuple[str, ...], float]], n_all: int, top: int) -> dict[str, Any]:
    vals = [t for _, t in tvds]
    return {"marginals": n_all, "compared": len(tvds),
            "mean": float(np.mean(vals)) if vals else None,
            "median": float(np.median(vals)) if vals else None,
            "worst": [{"columns": list(c), "tvd": round(t, 5)} for c, t in tvds[:top]]}


def _cramers_v(x: np.ndarray, y: np.ndarray, sx: int, sy: int) -> float:
    table = np.bincount(x * sy + y, minlength=sx * sy).reshape(sx, sy).astype(float)
    table = table[table.sum(1) > 0][:, table.sum(0) > 0]
    n = table.sum()
    if n == 0 or min(table.shape) < 2:
        return 0.0
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return math.sqrt(chi2 / n / (min(table.shape) - 1))


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if x.size < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def correlations(real: np.ndarray, synth: np.ndarray, domain: Domain) -> dict[str, Any]:
    """Cramér's V for every pair, Pearson on codes for ordered pairs; real vs synthetic."""
    d = len(domain.names)
    v_real, v_syn = np.eye(d), np.eye(d)
    pearson: list[dict[str, Any]] = []
    for i, j in itertools.combinations(range(d), 2):
        si, sj = domain.sizes[i], domain.sizes[j]
        v_real[i, j] = v_real[j, i] = _cramers_v(real[:, i], real[:, j], si, sj)
        v_syn[i, j] = v_syn[j, i] = _cramers_v(synth[:, i], synth[:, j], si, sj)
        ci, cj = domain.columns[i], domain.columns[j]
        if ci.kind in _ORDERED and cj.kind in _ORDERED:
            # the null code (last) is not ordered: leave those rows out
            ni = len(level_labels(ci)) - int(ci.nullable)
            nj = len(level_labels(cj)) - int(cj.nullable)
            rr = real[(real[:, i] < ni) & (real[:, j] < nj)]
            ss = synth[(synth[:, i] < ni) & (synth[:, j] < nj)]
            pr, ps = _pearson(rr[:, i], rr[:, j]), _pearson(ss[:, i], ss[:, j])
            if pr is not None and ps is not None:
                pearson.append({"columns": [domain.names[i], domain.names[j]],
                                "real": round(pr, 4), "synthetic": round(ps, 4),
                                "difference": round(ps - pr, 4)})
    diff = v_syn - v_real
    iu = np.triu_indices(d, 1)
    pairs = sorted(((abs(float(diff[a, b])), a, b) for a, b in zip(*iu, strict=True)), reverse=True)
    return {
        "cramers_v": {"columns": list(domain.names),
                      "real": np.round(v_real, 4).tolist(), "synthetic": np.round(v_syn, 4).tolist(),
                      "mean_abs_difference": float(np.abs(diff[iu]).mean()) if d > 1 else 0.0,
                      "max_abs_difference": float(np.abs(diff[iu]).max()) if d > 1 else 0.0,
                      "worst": [{"columns": [domain.names[a], domain.names[b]],
                                 "real": round(float(v_real[a, b]), 4),
                                 "synthetic": round(float(v_syn[a, b]), 4)} for _, a, b in pairs[:5]]},
        "pearson_ordered": {
            "pairs": pearson,
            "mean_abs_difference": float(np.mean([abs(p["difference"]) for p in pearson]))
            if pearson else None},
        "_diff": diff,
    }


def _onehot(codes: np.ndarray, sizes: Sequence[int]) -> Any:
    from scipy import sparse

    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    n, d = codes.shape
    cols = (codes + offsets).ravel()
    rows = np.repeat(np.arange(n), d)
    return sparse.csr_matrix((np.ones(n * d), (rows, cols)), shape=(n, int(sum(sizes))))


def fit_logistic(x: Any, y: np.ndarray, l2: float = 1.0) -> np.ndarray:
    """L2-regularised logistic regression (L-BFGS); returns weights with the bias last."""
    from scipy.optimize import minimize

    n, p = x.shape
    yy = y.astype(float)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ w[:-1] + w[-1]
        # log(1 + e^z) - y z, computed stably
        val = float(np.logaddexp(0, z).sum() - yy @ z) / n + 0.5 * l2 * float(w[:-1] @ w[:-1]) / n
        g = 1 / (1 + np.exp(-z)) - yy
        grad = np.concatenate([x.T @ g / n + l2 * w[:-1] / n, [g.sum() / n]])
        return val, grad

    res = minimize(loss, np.zeros(p + 1), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return np.asarray(res.x)


def auc_score(y: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    r = rankdata(score)
    return float((r[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _parse_target(spec: str, schema: Schema, domain: Domain) -> tuple[int, int, str, str]:
    col_name, sep, value = spec.partition("=")
    col_name = col_name.strip()
    if not sep or not col_name or value == "":
        raise UsageError(f"target ({spec!r}) must be COLUMN=VALUE")
    if col_name not in domain.names:
        raise UsageError(f"target column ({col_name!r}) must be a released column")
    j = domain.names.index(col_name)
    col = domain.columns[j]
    raw = value.lower() if col.kind == "boolean" else value
    code = pl.DataFrame({col_name: [raw]}).select(column_exprs(col).code).item()
    n_levels = len(level_labels(col)) - int(col.nullable)
    if code is None or int(code) >= n_levels:
        raise UsageError(f"target value for {col_name!r} must be a value of its public domain")
    return j, int(code), col_name, level_labels(col)[int(code)]


def tstr(real: np.ndarray, synth: np.ndarray, domain: Domain, target: str, schema: Schema,
         rng: np.random.Generator, test: np.ndarray | None = None) -> dict[str, Any]:
    """Train on synthetic, test on real, for the binary target ``column == value``.

    The reference model is trained on half of the real rows and tested on the other
    half (train-real/test-real); the synthetic model is tested on the same half.
    """
    j, code, name, label = _parse_target(target, schema, domain)
    feats = [k for k in range(len(domain.names)) if k != j]
    sizes = [domain.sizes[k] for k in feats]
    out: dict[str, Any] = {"target": name, "value": label, "model": "logistic regression "
                           "(L2, one-hot codes of every other released column)"}
    if not feats:
        return {**out, "status": "skipped: the target is the only released column"}
    perm = rng.permutation(real.shape[0])
    half = perm.size // 2
    tr_real, te_real = real[perm[:half][:MAX_TRAIN_ROWS]], real[perm[half:]]
    if test is not None:
        te_real = test
        out["test_rows"] = "the --holdout table"
    else:
        out["test_rows"] = "a random half of the real table"
    syn = synth[rng.permutation(synth.shape[0])[:MAX_TRAIN_ROWS]]
    y_te = te_real[:, j] == code
    res: dict[str, Any] = {"positive_share_real": round(float(y_te.mean()), 4),
                           "positive_share_synthetic": round(float((synth[:, j] == code).mean()), 4)}
    x_te = _onehot(te_real[:, feats], sizes)
    roc: dict[str, Any] = {}
    for label_, train in (("train_synthetic", syn), ("train_real", tr_real)):
        y_tr = train[:, j] == code
        if y_tr.all() or not y_tr.any():
            res[f"auc_{label_}"] = None
            continue
        w = fit_logistic(_onehot(train[:, feats], sizes), y_tr)
        score = x_te @ w[:-1] + w[-1]
        res[f"auc_{label_}"] = auc_score(y_te, score)
        roc[label_] = (y_te, score)
    a, b = res.get("auc_train_synthetic"), res.get("auc_train_real")
    res["auc_gap"] = round(b - a, 4) if a is not None and b is not None else None
    return {**out, **res, "status": "ok", "_roc": roc}


def subgroup_fidelity(real: np.ndarray, synth: np.ndarray, domain: Domain,
                      schema: Schema) -> list[dict[str, Any]]:
    """Per declared subgroup value: real vs synthetic share and 1-way TVD inside the group."""
    out: list[dict[str, Any]] = []
    for name in schema.subgroups:
        if name not in domain.names:
            out.append({"column": name, "status": "skipped: not a released column"})
            continue
        j = domain.names.index(name)
        labels = level_labels(domain.columns[j])
        groups = []
        for code, label in enumerate(labels):
            r, s = real[real[:, j] == code], synth[synth[:, j] == code]
            inside = [(_tvd(r[:, [k]], s[:, [k]], [domain.sizes[k]]))
                      for k in range(len(domain.names)) if k != j] if r.size and s.size else []
            groups.append({"value": label, "real_rows": int(r.shape[0]),
                           "real_share": round(r.shape[0] / max(real.shape[0], 1), 5),
                           "synthetic_share": round(s.shape[0] / max(synth.shape[0], 1), 5),
                           "tvd_1way_inside": round(float(np.mean(inside)), 5) if inside else None})
        out.append({"column": name, "status": "ok", "groups": groups})
    return out


# -- disclosure -------------------------------------------------------------------------------
def _row_keys(codes: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    if math.prod(int(s) for s in sizes) < 2**62:
        return _flat(codes, sizes)
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


def disclosure(real: np.ndarray, synth: np.ndarray, domain: Domain, holdout: np.ndarray | None,
               rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Exact matches and distance to the closest record, against a non-member baseline."""
    sizes, d = domain.sizes, len(domain.names)
    curves: dict[str, np.ndarray] = {}
    syn_q = synth[rng.permutation(synth.shape[0])[:MAX_DCR_ROWS]]
    if holdout is not None:
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
    # No holdout: a same-size random subsample of the real rows, leave-one-out, as reference
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


def anonymeter_risks(real: np.ndarray, synth: np.ndarray, domain: Domain,
                     holdout: np.ndarray | None, target_col: str | None,
                     rng: np.random.Generator) -> dict[str, Any]:
    """Anonymeter's singling-out, linkability and inference risks (95% intervals)."""
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from anonymeter.evaluators import (
                InferenceEvaluator,
                LinkabilityEvaluator,
                SinglingOutEvaluator,
            )
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
    half = len(names) // 2
    secret = target_col if target_col in names else names[-1]

    def risk(ev: Any) -> dict[str, Any]:
        r = ev.risk(confidence_level=0.95)
        return {"risk": round(float(r.value), 4), "ci95": [round(float(x), 4) for x in r.ci]}

    out: dict[str, Any] = {"status": "ok", "attacks": n_att, "rows": n}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mode in ("univariate", "multivariate"):
            try:
                out[f"singling_out_{mode}"] = risk(SinglingOutEvaluator(
                    ori=ori, syn=syn, control=ctl, n_attacks=n_att, n_cols=min(3, len(names)),
                    max_attempts=100 * n_att,
                    seed=int(rng.integers(2**31))).evaluate(mode=mode))
            except Exception as exc:  # anonymeter raises when no query singles anyone out
                out[f"singling_out_{mode}"] = {"status": f"failed ({type(exc).__name__})"}
        try:
            out["linkability"] = risk(LinkabilityEvaluator(
                ori=ori, syn=syn, control=ctl, n_attacks=n_att, n_neighbors=10,
                aux_cols=(names[:half], names[half:])).evaluate(n_jobs=1))
        except Exception as exc:
            out["linkability"] = {"status": f"failed ({type(exc).__name__})"}
        try:
            out["inference"] = {"secret": secret, **risk(InferenceEvaluator(
                ori=ori, syn=syn, control=ctl, n_attacks=n_att, secret=secret,
                aux_cols=[c for c in names if c != secret]).evaluate(n_jobs=1))}
        except Exception as exc:
            out["inference"] = {"secret": secret, "status": f"failed ({type(exc).__name__})"}
    return out


# -- plots and HTML ---------------------------------------------------------------------------
def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    # every figure carries the mark, so a plot copied out of the report still says it
    fig.text(0.5, 0.5, "CONFIDENTIAL", ha="center", va="center", rotation=30, fontsize=40,
             color="#b00", alpha=0.15, weight="bold")
    fig.text(0.01, 0.99, "CONFIDENTIAL: real-data statistics, not DP", ha="left", va="top",
             fontsize=10, color="#b00", weight="bold")
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(tvds: dict[int, list[tuple[tuple[str, ...], float]]], corr: dict[str, Any],
           names: tuple[str, ...], subgroups: list[dict[str, Any]],
           curves: dict[str, np.ndarray], roc: dict[str, Any]) -> dict[str, str]:
    from matplotlib.figure import Figure

    out: dict[str, str] = {}
    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot()
    data = [[t for _, t in tvds[k]] or [0.0] for k in sorted(tvds)]
    ax.boxplot(data)
    ax.set_xticks(range(1, len(data) + 1), [f"{k}-way" for k in sorted(tvds)])
    ax.set_ylabel("TVD (real vs synthetic)")
    ax.set_title("Marginal total-variation distance")
    out["Marginal TVD by degree"] = _png(fig)

    diff = corr["_diff"]
    fig = Figure(figsize=(1.5 + 0.45 * len(names), 1.2 + 0.45 * len(names)))
    ax = fig.add_subplot()
    lim = max(0.05, float(np.abs(diff).max()))
    im = ax.imshow(diff, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    fig.colorbar(im, ax=ax, label="Cramér's V: synthetic - real")
    ax.set_title("Association differences")
    out["Association differences (Cramér's V)"] = _png(fig)

    pts = [(g["real_rows"], g["tvd_1way_inside"], sg["column"]) for sg in subgroups
           if sg.get("status") == "ok" for g in sg["groups"] if g["tvd_1way_inside"] is not None]
    if pts:
        fig = Figure(figsize=(6, 3.2))
        ax = fig.add_subplot()
        for col in sorted({p[2] for p in pts}):
            xs = [max(p[0], 1) for p in pts if p[2] == col]
            ys = [p[1] for p in pts if p[2] == col]
            ax.scatter(xs, ys, label=col)
        ax.set_xscale("log")
        ax.set_xlabel("real rows in the group (log)")
        ax.set_ylabel("mean 1-way TVD inside the group")
        ax.set_title("Subgroup fidelity: small groups suffer most")
        ax.legend(fontsize=7)
        out["Subgroup fidelity"] = _png(fig)

    if curves:
        fig = Figure(figsize=(6, 3.2))
        ax = fig.add_subplot()
        d = len(names)
        width = 0.8 / len(curves)
        for i, (label, v) in enumerate(curves.items()):
            h = np.bincount(v, minlength=d + 1)[: d + 1] / max(v.size, 1)
            ax.bar(np.arange(d + 1) + i * width, h, width=width, label=label)
        ax.set_xlabel("Hamming distance to the closest record (columns that differ)")
        ax.set_ylabel("share of rows")
        ax.set_title("Distance to closest record")
        ax.legend(fontsize=7)
        out["Distance to closest record"] = _png(fig)

    if roc:
        fig = Figure(figsize=(4, 4))
        ax = fig.add_subplot()
        for label, (y, score) in roc.items():
            order = np.argsort(-score)
            ys = y[order]
            tpr = np.concatenate([[0], np.cumsum(ys) / max(ys.sum(), 1)])
            fpr = np.concatenate([[0], np.cumsum(~ys) / max((~ys).sum(), 1)])
            ax.plot(fpr, tpr, label=label.replace("_", " "))
        ax.plot([0, 1], [0, 1], ls=":", c="grey")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title("Target model tested on real rows")
        ax.legend(fontsize=7)
        out["Train-on-synthetic, test-on-real ROC"] = _png(fig)
    return out


def _html(report: dict[str, Any], plots: dict[str, str]) -> str:
    e = html.escape
    banner = f"<p class='banner top'>{e(BANNER)}</p>"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>CONFIDENTIAL audit {e(report['release_id'])}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        ".banner{background:#b00;color:#fff;padding:1em;font-weight:bold}"
        "table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}"
        "pre{background:#f4f4f4;padding:.5em;overflow:auto}"
        # printed, the banner is repeated at the top of every page
        "@media print{.banner.top{position:fixed;top:0;left:0;right:0;margin:0}"
        "body{margin-top:6em}.banner.bottom{display:none}}</style></head><body>",
        banner,
        f"<h1>CONFIDENTIAL internal audit: {e(report['release_id'])}</h1>",
        f"<p>Real rows: {report['real_rows']}; synthetic rows: {report['synthetic_rows']}; "
        f"created {e(report['created'])}</p>",
        "<h2>Marginal TVD</h2><table><tr><th>degree</th><th>compared</th><th>mean</th>"
        "<th>worst marginals</th></tr>",
    ]
    for k in ("tvd_1way", "tvd_2way", "tvd_3way"):
        s = report["utility"][k]
        worst = "; ".join(f"{' x '.join(w['columns'])} ({w['tvd']:.3f})" for w in s["worst"][:5])
        mean = f"{s['mean']:.4f}" if s["mean"] is not None else "-"
        parts.append(f"<tr><td>{k[4:]}</td><td>{s['compared']}/{s['marginals']}</td>"
                     f"<td>{mean}</td><td>{e(worst)}</td></tr>")
    parts.append("</table>")
    for title, key in (("Associations", "correlations"), ("Train on synthetic, test on real",
                                                          "tstr"),
                       ("Subgroup fidelity", "subgroups")):
        parts.append(f"<h2>{title}</h2><pre>{e(json.dumps(report['utility'][key], indent=1))}</pre>")
    parts.append("<h2>Disclosure checks</h2>")
    parts.append(f"<pre>{e(json.dumps(report['disclosure'], indent=1))}</pre>")
    parts.append("<h2>Plots</h2>")
    for title, data in plots.items():
        parts.append(f"<h3>{e(title)}</h3><img alt='{e(title)}' src='data:image/png;base64,{data}'>")
    parts.append(f"<p class='banner bottom'>{e(BANNER)}</p></body></html>")
    return "".join(parts)


def _strip(obj: Any) -> Any:
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
        _parse_target(target, schema, domain)  # fail before reading the private table
    rng = np.random.default_rng(seed if seed is not None else secrets.randbits(63))
    real = _real_codes(input_path, schema)
    synth = _synth_codes(bundle_path, domain)
    holdout = _real_codes(holdout_path, schema) if holdout_path is not None else None
    names, sizes = domain.names, domain.sizes
    tvds, summaries = {}, {}
    for k, top in ((1, 10), (2, 10), (3, 10)):
        n_all = math.comb(len(names), k)
        tvds[k] = marginal_tvds(real, synth, names, sizes, k, MAX_COMBOS, rng) if n_all else []
        summaries[f"tvd_{k}way"] = _tvd_summary(tvds[k], n_all, top)
    corr = correlations(real, synth, domain)
    t: dict[str, Any] = (tstr(real, synth, domain, target, schema, rng, holdout) if target is not None
         else {"status": "skipped: name a target with --target COLUMN=VALUE"})
    subgroups = subgroup_fidelity(real, synth, domain, schema)
    disc, curves = disclosure(real, synth, domain, holdout, rng)
    target_col = target.partition("=")[0].strip() if target else None
    disc["anonymeter"] = anonymeter_risks(real, synth, domain, holdout, target_col, rng)
    report: dict[str, Any] = {
        "confidential": BANNER,
        "release_id": release_id,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),  # custodian-only
        "real_rows": int(real.shape[0]),
        "synthetic_rows": int(synth.shape[0]),
        "holdout_rows": int(holdout.shape[0]) if holdout is not None else None,
        "utility": {**summaries, "correlations": corr, "tstr": t, "subgroups": subgroups},
        "disclosure": disc,
    }
    roc: dict[str, Any] = t.get("_roc") or {}
    plots = _plots(tvds, corr, names, subgroups, curves, roc)
    clean = _strip(report)
    write_confidential(audit_dir / "audit-report.json", json.dumps(clean, indent=2).encode())
    write_confidential(audit_dir / "audit-report.html", _html(clean, plots).encode("utf-8"))
    return audit_dir


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
    release_id = bundle.name
    manifest = bundle / "manifest.json"
    if manifest.is_file():
        try:
            m = json.loads(manifest.read_text())
        except (OSError, ValueError):
            raise StorageError(f"manifest of {str(bundle)!r} is unreadable") from None
        release_id = str(m.get("release_id", release_id))
        sha = m.get("schema_sha256")
        if sha is not None and sha != schema.sha256:
            raise UsageError("schema does not match the bundle (schema_sha256 differs from its "
                             "manifest)")
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
        "exact_match_share": report["disclosure"]["exact_match_share_training"],
        "anonymeter": report["disclosure"]["anonymeter"]["status"],
    }
