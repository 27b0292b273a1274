"""Empirical DP audit: a distinguishing game on worst-case neighbouring tables.

The game (Jagielski, Ullman, Oprea 2020; Nasr et al. 2021): a table ``D`` and its
neighbour ``D' = D + one target patient`` whose record is unique (a combination of
categories absent from ``D``; its category of column ``a`` appears nowhere in ``D``).
The full release (encode -> MeasurementSession -> MST fit -> sample) runs ``runs``
times on each table with fresh noise. An attacker who knows ``D`` exactly and sees one
release guesses "the target is in". Its true/false positive rates give an empirical
lower bound on epsilon via one-sided Clopper-Pearson bounds:

    eps_lb = max( log((1 - delta - FPR_hi) / FNR_hi), log((1 - delta - FNR_hi) / FPR_hi) )

Attacks (all fixed before any run; the lower bound is the best of them, each at
confidence 1 - 0.05/4, so the union is a 95% bound):

* ``lr``: likelihood-ratio statistic on the noisy counts of the target's cell in every
  published marginal that contains it (the optimal test against Gaussian noise),
  standardised with the published noise scales; threshold chosen a priori from those
  scales and the number of runs.
* ``domain``: the target's category appears in the released domain of its column.
* ``rows``: the synthetic table has exactly ``|D| + 1`` rows.
* ``combo``: the target's combination appears in the synthetic rows.

Variants. ``honest`` is dpsynth as shipped. The BROKEN variants exist only here, to
show the audit has teeth; each must score a lower bound above the claim:

* ``noise/4``: a session wrapper that measures with 16x the charged rho (noise scale
  divided by 4) while the engine believes it spends the claimed budget;
* ``data-domain``: each column's domain is the categories observed in the table;
* ``true-rows``: the synthetic row count is the true row count.

Run: ``python benchmarks/dp_audit.py --runs 1000`` (writes benchmarks/results/dp_audit.md).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import beta, norm

from dpsynth.engines.mst import MSTSettings, fit_mst
from dpsynth.io import EncodedTable, load_encoded
from dpsynth.privacy.accountant import Accountant, Budget, rho_for
from dpsynth.privacy.session import MeasurementSession
from dpsynth.schema import load_schema

ALPHA = 0.05
ATTACKS = ("lr", "domain", "rows", "combo")
VARIANTS = ("honest", "noise/4", "data-domain", "true-rows")
DELTA = 1e-5
# Measurements carry the signal; a small selection share is the auditor's worst case.
SETTINGS = MSTSettings(oneway_share=0.5, select_share=0.05, max_iters=200)

SCHEMA = """\
format: dpsynth.table-schema/v1
name: audit-game
version: 1
privacy_unit: {max_rows: 1}
columns:
  - {name: a, kind: categorical, categories: [a0, a1, a2, a3]}
  - {name: b, kind: categorical, categories: [b0, b1, b2, b3]}
  - {name: c, kind: categorical, categories: [c0, c1, c2]}
"""
TARGET = ("a3", "b3", "c2")
TARGET_CODES = np.array([3, 3, 2])


def write_tables(folder: Path, n: int = 300, seed: int = 11) -> tuple[Path, Path, Path]:
    """Schema, D (``n`` rows, category a3 never used) and D' = D + the target row."""
    rng = np.random.default_rng(seed)
    a = rng.choice(["a0", "a1", "a2"], size=n, p=[0.5, 0.3, 0.2])
    b = np.where(a == "a0", rng.choice(["b0", "b1"], size=n), rng.choice(["b1", "b2", "b3"], size=n))
    c = rng.choice(["c0", "c1", "c2"], size=n, p=[0.6, 0.3, 0.1])
    rows = [",".join(r) for r in zip(a, b, c, strict=True)]
    (folder / "schema.yaml").write_text(SCHEMA)
    (folder / "d.csv").write_text("a,b,c\n" + "\n".join(rows) + "\n")
    (folder / "d1.csv").write_text("a,b,c\n" + "\n".join([*rows, ",".join(TARGET)]) + "\n")
    return folder / "schema.yaml", folder / "d.csv", folder / "d1.csv"


# -- broken variants (never in the library) ------------------------------------------------
class NoiseOverFourSession:
    """BROKEN ON PURPOSE: answers with 16x the charged rho (noise scale / 4)."""

    FACTOR = 16.0

    def __init__(self, enc: EncodedTable, rho: float) -> None:
        self._inner = MeasurementSession(enc.codes, enc.columns, enc.sizes, enc.contribution_bound,
                                         Accountant(Budget(rho * self.FACTOR)))

    @property
    def columns(self) -> tuple[str, ...]:
        return self._inner.columns

    @property
    def domain(self) -> Mapping[str, int]:
        return self._inner.domain

    @property
    def contribution_bound(self) -> int:
        return self._inner.contribution_bound

    @property
    def remaining(self) -> Budget:
        return Budget(self._inner.remaining.rho / self.FACTOR)

    def measure(self, cols: Sequence[str], rho: float, step: str, *,
                groups: Mapping[str, np.ndarray] | None = None) -> Any:
        return self._inner.measure(cols, min(rho * self.FACTOR, self._inner.remaining.rho), step,
                                   groups=groups)

    def select(self, candidates: Sequence[tuple[str, ...]], scores: Any, sensitivity: float,
               rho: float, step: str) -> int:
        return self._inner.select(candidates, scores, sensitivity, rho * self.FACTOR, step)

    def select_marginal(self, candidates: Sequence[tuple[str, ...]], model_marginals: Any,
                        weights: Sequence[float], penalties: Sequence[float], rho: float,
                        step: str) -> int:
        return self._inner.select_marginal(candidates, model_marginals, weights, penalties,
                                           rho * self.FACTOR, step)


def data_domain(enc: EncodedTable) -> tuple[EncodedTable, list[np.ndarray]]:
    """BROKEN ON PURPOSE: each column's domain is its observed categories."""
    codes = enc.codes.copy()
    kept = []
    for j in range(codes.shape[1]):
        seen = np.unique(codes[:, j])
        remap = np.full(enc.sizes[j], -1)
        remap[seen] = np.arange(seen.size)
        codes[:, j] = remap[codes[:, j]]
        kept.append(seen)
    return EncodedTable(codes, enc.columns, tuple(k.size for k in kept), enc.contribution_bound), kept


# -- one release and the attacker's view --------------------------------------------------
@dataclass
class Outcome:
    lr: float
    mu: float
    domain: bool
    rows: bool
    combo: bool


def run_once(enc: EncodedTable, variant: str, rho: float, d_codes: np.ndarray,
             rng: np.random.Generator) -> Outcome:
    """One full release on ``enc`` and the attacker's statistics (attacker knows D)."""
    released = [np.arange(s) for s in enc.sizes]  # published domain, as original codes
    run_enc = enc
    if variant == "data-domain":
        run_enc, released = data_domain(enc)
    session: Any
    if variant == "noise/4":
        session = NoiseOverFourSession(run_enc, rho)
    else:
        session = MeasurementSession(run_enc.codes, run_enc.columns, run_enc.sizes,
                                     run_enc.contribution_bound, Accountant(Budget(rho)))
    model = fit_mst(session, SETTINGS)
    n_rows = run_enc.codes.shape[0] if variant == "true-rows" else max(1, round(model.total))
    synth = model.sample(n_rows, rng)
    # back to original codes
    synth_orig = np.column_stack([released[j][synth[:, j]] for j in range(synth.shape[1])])
    in_domain = [bool(np.isin(TARGET_CODES[j], released[j])) for j in range(len(released))]
    # LR statistic over the published marginals containing the target's cell
    idx = {c: j for j, c in enumerate(run_enc.columns)}
    num, info = 0.0, 0.0
    for m in model.measurements:
        js = [idx[c] for c in m.columns]
        if not all(in_domain[j] for j in js):
            continue
        groups = getattr(m, "groups", None) or (None,) * len(js)
        cell, match = [], np.ones(d_codes.shape[0], dtype=bool)
        for j, g in zip(js, groups, strict=True):
            remap = np.full(enc.sizes[j], -1)
            remap[released[j]] = np.arange(released[j].size)
            t = remap[TARGET_CODES[j]]
            col = remap[d_codes[:, j]]
            if g is not None:
                t, col = g[t], np.where(col >= 0, g[np.clip(col, 0, None)], -1)
            cell.append(int(t))
            match &= col == t
        y = float(np.asarray(m.counts).reshape(m.shape)[tuple(cell)])
        num += (y - float(match.sum())) / m.sigma**2
        info += 1.0 / m.sigma**2
    return Outcome(
        lr=num / math.sqrt(info) if info > 0 else 0.0,
        mu=math.sqrt(info),
        domain=all(in_domain),
        rows=n_rows == d_codes.shape[0] + 1,
        combo=bool((synth_orig == TARGET_CODES).all(axis=1).any()),
    )


# -- statistics ---------------------------------------------------------------------------
def cp_upper(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper-Pearson upper bound on a rate with ``k`` of ``n``."""
    return 1.0 if k >= n else float(beta.ppf(1 - alpha, k + 1, n - k))


def eps_lower_bound(tp: int, fp: int, n_pos: int, n_neg: int, delta: float, alpha: float) -> float:
    """Empirical epsilon lower bound (Jagielski et al. 2020; Nasr et al. 2021)."""
    fpr_hi = cp_upper(fp, n_neg, alpha / 2)
    fnr_hi = cp_upper(n_pos - tp, n_pos, alpha / 2)
    best = 0.0
    if fnr_hi > 0 and 1 - delta - fpr_hi > 0:
        best = max(best, math.log((1 - delta - fpr_hi) / fnr_hi))
    if fpr_hi > 0 and 1 - delta - fnr_hi > 0:
        best = max(best, math.log((1 - delta - fnr_hi) / fpr_hi))
    return best


def prior_threshold(mu: float, n: int, delta: float, alpha: float) -> float:
    """Threshold for the LR statistic maximising the expected bound (public inputs only)."""
    best_t, best = 0.0, -1.0
    for t in np.arange(-2.0, 8.0, 0.05):
        tp = round(float(norm.sf(t - mu)) * n)
        fp = round(float(norm.sf(t)) * n)
        lb = eps_lower_bound(tp, fp, n, n, delta, alpha)
        if lb > best:
            best_t, best = float(t), lb
    return best_t


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score on D' > score on D), ties counted half."""
    from scipy.stats import rankdata

    r = rankdata(np.concatenate([pos, neg]))
    return float((r[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


@dataclass
class Row:
    variant: str
    epsilon: float
    runs: int
    attack: str
    tpr: float
    fpr: float
    auc: float
    eps_lb: float
    seconds: float


def play(variant: str, epsilon: float, runs: int, tables: tuple[EncodedTable, EncodedTable],
         seed: int = 0, delta: float = DELTA) -> Row:
    """``runs`` releases on each of D and D'; the best a-priori attack's bound."""
    d, d1 = tables
    rho = rho_for(epsilon, delta)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    neg = [run_once(d, variant, rho, d.codes, rng) for _ in range(runs)]
    pos = [run_once(d1, variant, rho, d.codes, rng) for _ in range(runs)]
    a = ALPHA / len(ATTACKS)
    t_lr = prior_threshold(neg[0].mu, runs, delta, a)
    best: tuple[float, str, float, float, float] = (-1.0, "", 0.0, 0.0, 0.5)
    for attack in ATTACKS:
        if attack == "lr":
            sp = np.array([o.lr for o in pos])
            sn = np.array([o.lr for o in neg])
            guess_p, guess_n = sp > t_lr, sn > t_lr
        else:
            sp = np.array([getattr(o, attack) for o in pos], dtype=float)
            sn = np.array([getattr(o, attack) for o in neg], dtype=float)
            guess_p, guess_n = sp > 0.5, sn > 0.5
        tp, fp = int(guess_p.sum()), int(guess_n.sum())
        lb = eps_lower_bound(tp, fp, runs, runs, delta, a)
        if lb > best[0]:
            best = (lb, attack, tp / runs, fp / runs, auc(sp, sn))
    lb, attack, tpr, fpr, area = best
    return Row(variant, epsilon, runs, attack, tpr, fpr, area, lb, time.perf_counter() - t0)


def load_tables(folder: Path) -> tuple[EncodedTable, EncodedTable]:
    schema_path, d_path, d1_path = write_tables(folder)
    schema = load_schema(schema_path)
    return load_encoded(d_path, schema), load_encoded(d1_path, schema)


def table(rows: list[Row]) -> str:
    head = ("| variant | claimed epsilon | runs per side | best attack | TPR | FPR | attack AUC "
            "| epsilon lower bound (95%) | verdict |\n|---|---|---|---|---|---|---|---|---|\n")
    body = "".join(
        f"| {r.variant} | {r.epsilon:g} | {r.runs} | {r.attack} | {r.tpr:.3f} | {r.fpr:.3f} | "
        f"{r.auc:.3f} | {r.eps_lb:.2f} | "
        f"{'VIOLATION' if r.eps_lb > r.epsilon else 'consistent'} |\n" for r in rows)
    return head + body


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=1000, help="releases per table per variant")
    p.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--seed", type=int, default=0, help="seed of the post-processing sampler")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dp_audit.md")
    args = p.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        tables = load_tables(Path(tmp))
        for eps in args.epsilons:
            for v in args.variants:
                r = play(v, eps, args.runs, tables, seed=args.seed)
                rows.append(r)
                print(f"{v:12} eps={eps:g}: attack={r.attack} TPR={r.tpr:.3f} FPR={r.fpr:.3f} "
                      f"AUC={r.auc:.3f} eps_lb={r.eps_lb:.2f} ({r.seconds:.0f}s)", flush=True)
    md = (f"# Empirical DP audit (distinguishing game)\n\n"
          f"Command: `python benchmarks/dp_audit.py --runs {args.runs}`; engine MST "
          f"({SETTINGS}), delta {DELTA:g}, |D| = 300 rows, 3 columns; the target is one extra row "
          f"with a category absent from D. Lower bounds: one-sided Clopper-Pearson, 95% overall "
          f"(Bonferroni over {len(ATTACKS)} attacks fixed in advance).\n\n" + table(rows))
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(md)
    bad = [r for r in rows if r.variant == "honest" and r.eps_lb > r.epsilon]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
