"""Utility of a synthetic table measured against the REAL table (CONFIDENTIAL figures).

Owns the utility half of the internal audit: 1-, 2- and 3-way marginal
total-variation distances (mean, median, the worst marginals named), association
differences (Cramér's V for every pair, Pearson on codes for ordered pairs),
train-on-synthetic / test-on-real AUC for a binary target ``column == value`` and for
every level of each declared ``analysis.targets`` column, next to a real-train ceiling,
an independent-columns floor and the AUC inside each subgroup (a numpy/scipy L2
logistic regression on one-hot codes, :func:`fit_logistic`, scored by
:func:`auc_score`, so it needs no optional package), and subgroup fidelity for the
schema's subgroups (real vs synthetic share and 1-way TVD inside each group).

Works on integer code arrays handed over by :mod:`dpsynth.audit`, which reads the
private table; this module reads no file. Its figures are computed on real rows and
are NOT differentially private: they go into the custodian-only audit report and
never into a bundle. It is on the private side of the boundary: nothing public
imports it. The TVD itself is the shared :func:`dpsynth.report.metrics.codes_tvd`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from dpsynth.domain import Domain, column_exprs, level_labels
from dpsynth.errors import UsageError
from dpsynth.report.metrics import codes_tvd
from dpsynth.schema import Schema

__all__ = ["MAX_COMBOS", "MAX_TARGET_LEVELS", "MAX_TRAIN_ROWS", "MIN_GROUP_CLASS", "auc_score",
           "correlations", "fit_logistic", "marginal_summaries", "marginal_tvds", "parse_target",
           "subgroup_fidelity", "target_levels", "tstr", "tstr_code", "tstr_targets"]

_ORDERED = ("integer", "float", "date", "datetime")
MAX_COMBOS = 600
"""Most 3-way marginals compared (a seeded random subset beyond this)."""
MAX_TRAIN_ROWS = 200_000
"""Most rows each target model is trained on."""
MAX_TARGET_LEVELS = 10
"""A declared target with more levels than this is not audited level by level."""
FLOOR_DRAWS = 3
"""Shuffles averaged for the independent-columns floor."""
MIN_GROUP_CLASS = 10
"""A subgroup's TSTR AUC needs at least this many positive and negative test rows."""

TvdList = list[tuple[tuple[str, ...], float]]


# -- marginals -------------------------------------------------------------------------------------
def marginal_tvds(real: np.ndarray, synth: np.ndarray, names: tuple[str, ...],
                  sizes: tuple[int, ...], degree: int, max_combos: int | None = None,
                  rng: np.random.Generator | None = None) -> TvdList:
    """TVD of every ``degree``-way marginal (a random subset past ``max_combos``), worst first."""
    combos = list(itertools.combinations(range(len(names)), degree))
    if max_combos is not None and len(combos) > max_combos:
        pick = (rng or np.random.default_rng(0)).choice(len(combos), max_combos, replace=False)
        combos = [combos[i] for i in sorted(pick)]
    out = [(tuple(names[c] for c in cols),
            codes_tvd(real[:, cols], synth[:, cols], [sizes[c] for c in cols])) for cols in combos]
    return sorted(out, key=lambda x: -x[1])


def _tvd_summary(tvds: TvdList, n_all: int, top: int) -> dict[str, Any]:
    vals = [t for _, t in tvds]
    return {"marginals": n_all, "compared": len(tvds),
            "mean": float(np.mean(vals)) if vals else None,
            "median": float(np.median(vals)) if vals else None,
            "worst": [{"columns": list(c), "tvd": round(t, 5)} for c, t in tvds[:top]]}


def marginal_summaries(real: np.ndarray, synth: np.ndarray, domain: Domain,
                       rng: np.random.Generator) -> tuple[dict[int, TvdList], dict[str, Any]]:
    """The 1-, 2- and 3-way TVDs (for the plots) and their summaries ``tvd_{k}way``."""
    names, sizes = domain.names, domain.sizes
    tvds: dict[int, TvdList] = {}
    summaries: dict[str, Any] = {}
    for k, top in ((1, 10), (2, 10), (3, 10)):
        n_all = math.comb(len(names), k)
        tvds[k] = marginal_tvds(real, synth, names, sizes, k, MAX_COMBOS, rng) if n_all else []
        summaries[f"tvd_{k}way"] = _tvd_summary(tvds[k], n_all, top)
    return tvds, summaries


# -- associations ----------------------------------------------------------------------------------
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


def _ordered_pair(real: np.ndarray, synth: np.ndarray, domain: Domain, i: int,
                  j: int) -> dict[str, Any] | None:
    """Pearson on codes of two ordered columns, real vs synthetic (None if undefined)."""
    ci, cj = domain.columns[i], domain.columns[j]
    # the null code (last) is not ordered: leave those rows out
    ni = len(level_labels(ci)) - int(ci.nullable)
    nj = len(level_labels(cj)) - int(cj.nullable)
    rr = real[(real[:, i] < ni) & (real[:, j] < nj)]
    ss = synth[(synth[:, i] < ni) & (synth[:, j] < nj)]
    pr, ps = _pearson(rr[:, i], rr[:, j]), _pearson(ss[:, i], ss[:, j])
    if pr is None or ps is None:
        return None
    return {"columns": [domain.names[i], domain.names[j]], "real": round(pr, 4),
            "synthetic": round(ps, 4), "difference": round(ps - pr, 4)}


def correlations(real: np.ndarray, synth: np.ndarray, domain: Domain) -> dict[str, Any]:
    """Cramér's V for every pair, Pearson on codes for ordered pairs; real vs synthetic.

    The key ``_diff`` (synthetic - real Cramér's V matrix) is for the plot only."""
    d = len(domain.names)
    v_real, v_syn = np.eye(d), np.eye(d)
    pearson: list[dict[str, Any]] = []
    for i, j in itertools.combinations(range(d), 2):
        si, sj = domain.sizes[i], domain.sizes[j]
        v_real[i, j] = v_real[j, i] = _cramers_v(real[:, i], real[:, j], si, sj)
        v_syn[i, j] = v_syn[j, i] = _cramers_v(synth[:, i], synth[:, j], si, sj)
        if domain.columns[i].kind in _ORDERED and domain.columns[j].kind in _ORDERED:
            pair = _ordered_pair(real, synth, domain, i, j)
            if pair is not None:
                pearson.append(pair)
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


# -- train on synthetic, test on real --------------------------------------------------------------
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


def parse_target(spec: str, schema: Schema, domain: Domain) -> tuple[int, int, str, str]:
    """``COLUMN=VALUE`` -> (column index, value code, column name, value label).

    Checks the target against the public domain only, so it can fail before the real
    table is read."""
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


def target_levels(schema: Schema, domain: Domain, column: str) -> list[int]:
    """The codes a declared analysis target is audited at, one-vs-rest: ``true`` for a
    boolean, the last level of a two-level column (both give the same AUC), every level
    otherwise; none past :data:`MAX_TARGET_LEVELS` levels (null is never a positive)."""
    col = domain.columns[domain.names.index(column)]
    n = len(level_labels(col)) - int(col.nullable)
    if n > MAX_TARGET_LEVELS:
        return []
    return [n - 1] if n == 2 else list(range(n))


def tstr(real: np.ndarray, synth: np.ndarray, domain: Domain, target: str, schema: Schema,
         rng: np.random.Generator, test: np.ndarray | None = None) -> dict[str, Any]:
    """Train on synthetic, test on real, for the binary target ``column == value``
    (``target`` is ``COLUMN=VALUE``); see :func:`tstr_code`."""
    j, code, _, _ = parse_target(target, schema, domain)
    return tstr_code(real, synth, domain, j, code, schema, rng, test)


def tstr_code(real: np.ndarray, synth: np.ndarray, domain: Domain, j: int, code: int,
              schema: Schema, rng: np.random.Generator, test: np.ndarray | None = None
              ) -> dict[str, Any]:
    """Train on synthetic, test on real, for the binary target ``column j == code``.

    Three models, each tested on the same real rows: trained on the synthetic table
    (``auc_train_synthetic``), on half of the real rows (the ceiling, ``auc_train_real``),
    and on that half with every column shuffled on its own (the independent-columns
    floor, ``auc_train_independent``: the 1-way marginals kept, every relationship
    gone; such a model's coefficients are noise, so its AUC scatters around 0.5 and the
    floor is the mean over :data:`FLOOR_DRAWS` shuffles). The test rows are the other
    half of the real rows, or ``test`` (the holdout rows) when given. ``subgroups``: the
    synthetic- and real-trained models' AUC inside each group of the schema's subgroup
    columns (groups with fewer than :data:`MIN_GROUP_CLASS` positive or negative test
    rows are left out). The key ``_roc`` is for the plot only.
    """
    name, col = domain.names[j], domain.columns[j]
    label = level_labels(col)[code]
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
    res: dict[str, Any] = {"positive_share_real": round(float(y_te.mean()), 4) if y_te.size else None,
                           "positive_share_synthetic": round(float((synth[:, j] == code).mean()), 4)}
    x_te = _onehot(te_real[:, feats], sizes)
    roc: dict[str, Any] = {}
    scores: dict[str, np.ndarray] = {}
    for label_, train in (("train_synthetic", syn), ("train_real", tr_real)):
        y_tr = train[:, j] == code
        if y_tr.all() or not y_tr.any():
            res[f"auc_{label_}"] = None
            continue
        w = fit_logistic(_onehot(train[:, feats], sizes), y_tr)
        score = x_te @ w[:-1] + w[-1]
        res[f"auc_{label_}"] = auc_score(y_te, score)
        roc[label_] = (y_te, score)
        scores[label_] = score
    floors = [_independent_auc(tr_real, x_te, y_te, j, code, feats, sizes, rng)
              for _ in range(FLOOR_DRAWS)]
    ok = [f for f in floors if f is not None]
    res["auc_train_independent"] = float(np.mean(ok)) if ok else None
    a, b = res.get("auc_train_synthetic"), res.get("auc_train_real")
    res["auc_gap"] = round(b - a, 4) if a is not None and b is not None else None
    res["subgroups"] = _tstr_subgroups(te_real, y_te, scores, domain, schema, j)
    return {**out, **res, "status": "ok", "_roc": roc}


def _independent_auc(train: np.ndarray, x_te: Any, y_te: np.ndarray, j: int, code: int,
                     feats: list[int], sizes: list[int], rng: np.random.Generator) -> float | None:
    """AUC of a model trained on ``train`` with every column shuffled on its own."""
    if train.shape[0] == 0:
        return None
    indep = np.column_stack([train[rng.permutation(train.shape[0]), k] for k in range(train.shape[1])])
    y_tr = indep[:, j] == code
    if y_tr.all() or not y_tr.any():
        return None
    w = fit_logistic(_onehot(indep[:, feats], sizes), y_tr)
    return auc_score(y_te, x_te @ w[:-1] + w[-1])


def _tstr_subgroups(test: np.ndarray, y: np.ndarray, scores: dict[str, np.ndarray], domain: Domain,
                    schema: Schema, target: int) -> list[dict[str, Any]]:
    """The synthetic- and real-trained models' AUC inside each subgroup's groups."""
    out: list[dict[str, Any]] = []
    for name in schema.subgroups:
        if name not in domain.names or domain.names.index(name) == target:
            continue
        k = domain.names.index(name)
        for code, label in enumerate(level_labels(domain.columns[k])):
            inside = test[:, k] == code
            pos = int(y[inside].sum())
            neg = int(inside.sum()) - pos
            if min(pos, neg) < MIN_GROUP_CLASS:
                continue
            row: dict[str, Any] = {"column": name, "value": label, "test_rows": int(inside.sum()),
                                   "positive_share": round(pos / (pos + neg), 4)}
            for key in ("train_synthetic", "train_real"):
                sc = scores.get(key)
                row[f"auc_{key}"] = auc_score(y[inside], sc[inside]) if sc is not None else None
            out.append(row)
    return out


def tstr_targets(real: np.ndarray, synth: np.ndarray, domain: Domain, schema: Schema,
                 rng: np.random.Generator, test: np.ndarray | None = None) -> list[dict[str, Any]]:
    """:func:`tstr_code` for every level of every declared ``analysis.targets`` column
    (:func:`target_levels`)."""
    out: list[dict[str, Any]] = []
    for name in schema.analysis.targets:
        if name not in domain.names:
            continue
        j = domain.names.index(name)
        codes = target_levels(schema, domain, name)
        if not codes:
            out.append({"target": name, "status": f"skipped: more than {MAX_TARGET_LEVELS} levels"})
        out.extend(tstr_code(real, synth, domain, j, c, schema, rng, test) for c in codes)
    return out


# -- subgroups -------------------------------------------------------------------------------------
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
            inside = [(codes_tvd(r[:, [k]], s[:, [k]], [domain.sizes[k]]))
                      for k in range(len(domain.names)) if k != j] if r.size and s.size else []
            groups.append({"value": label, "real_rows": int(r.shape[0]),
                           "real_share": round(r.shape[0] / max(real.shape[0], 1), 5),
                           "synthetic_share": round(s.shape[0] / max(synth.shape[0], 1), 5),
                           "tvd_1way_inside": round(float(np.mean(inside)), 5) if inside else None})
        out.append({"column": name, "status": "ok", "groups": groups})
    return out
