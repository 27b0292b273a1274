"""How close can any DP schema draft at epsilon 0.1 get to a hand-written schema?

Issue 13's target asks a draft at epsilon 0.1, then a release at epsilon 1, to come within
10% of a hand-written schema's raw-value 2-way TVD. A draft can only list a category that
DP key selection lets through: a value held by fewer patients than the key-selection
threshold cannot appear, however good the rest of the draft is. This benchmark measures
that floor on the shipped diabetes130 example:

1. the threshold OpenDP's ``make_gaussian_threshold`` needs (``mechanisms.gaussian_threshold``,
   k = 1) at the draft's epsilon, for several ways of splitting it: the whole budget on one
   column (the best any single column can get), and 85% of it split evenly over the
   schema's categorical columns (the draft's own split gives about the same);
2. a hand-written schema's MST release (``--bundle``; see below) whose categorical values
   held by fewer than T patients in the real table are replaced by ``Other``, the best a
   draft with threshold T could release for them, for several T; its raw-value 2-way TVD
   against the real table (``raw_fidelity.raw_tvd``) over the hand-written one's;
3. each categorical column's own loss at the even split's threshold, and uneven splits,
   optimistically: the whole budget on key selection, a share of it on the m columns that
   lose most (as if a draft could know them in advance), the rest over the others.

Usage (a hand-written release first, then this)::

    dpsynth ledger init --ledger sqlite:///l.db --dataset-id d --total-epsilon 10
    dpsynth release --schema schemas/diabetes130.yaml --input examples/diabetes130/diabetic_data.csv.gz \\
        --ledger sqlite:///l.db --dataset-id d --engine mst --epsilon 1 --out /tmp/hand
    PYTHONPATH=. python benchmarks/draft_floor.py --bundle /tmp/hand

Writes ``benchmarks/results/draft_floor.md`` (and ``.json``). Internal benchmark figures,
computed on real rows; never for a bundle.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import raw_fidelity as rf  # noqa: E402

from dpsynth.privacy.accountant import rho_for  # noqa: E402
from dpsynth.privacy.mechanisms import gaussian_threshold  # noqa: E402
from dpsynth.schema import load_schema  # noqa: E402

REAL = ROOT / "examples" / "diabetes130" / "diabetic_data.csv.gz"  # the shipped example


def thresholds(epsilon: float, delta: float, n_categorical: int) -> list[tuple[str, float]]:
    """Key-selection thresholds (patients, k = 1) for ways of splitting the draft's budget."""
    rho = rho_for(epsilon, delta / 2)  # half of delta converts rho, half bounds key selection
    splits = [("the whole budget on one column", rho, delta / 2),
              (f"85% split over the {n_categorical} categorical columns",
               0.85 * rho / n_categorical, delta / 2 / n_categorical)]
    return [(label, float(gaussian_threshold(1, r, d).threshold)) for label, r, d in splits]


class Floor:
    """The hand-written release, the real table, and each categorical column's patients
    per value: the release's 2-way TVD with some columns' rare values made ``Other``."""

    def __init__(self, bundle: Path) -> None:
        schema = load_schema(ROOT / "schemas" / "diabetes130.yaml")
        raw = pl.read_csv(REAL, infer_schema_length=0)
        self.cols = [c.name for c in schema.measured_columns]
        self.num = [c for c in rf.numeric_columns(schema) if c in self.cols]
        self.cat = [c.name for c in schema.measured_columns if c.kind == "categorical"]
        unit = schema.privacy_unit.column
        self.patients = {n: raw.select(unit, pl.col(n).alias("v")).unique().group_by("v").len()
                         for n in self.cat}
        self.real = rf.real_values(raw, schema).with_columns(
            [pl.col(n).cast(pl.String) for n in self.cat])
        self.synth = rf.released_values(pl.read_parquet(bundle / "synthetic.parquet"), schema)
        self.base = self.tvd({})

    def tvd(self, cutoff: dict[str, float]) -> float:
        """2-way TVD with the values of each column in ``cutoff`` held by fewer patients
        than its cutoff replaced by ``Other``."""
        s = self.synth
        for name, t in cutoff.items():
            keep = self.patients[name].filter(pl.col("len") >= t)["v"].to_list()
            value = pl.col(name).cast(pl.String)
            s = s.with_columns(pl.when(value.is_in(keep) | value.is_null()).then(value)
                               .otherwise(pl.lit("Other")).alias(name))
        return float(rf.raw_tvd(self.real, s, self.cols, self.num)["tvd_2way"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, required=True,
                    help="A hand-written diabetes130 schema's release (MST, epsilon 1).")
    ap.add_argument("--epsilon", type=float, default=0.1)
    ap.add_argument("--delta", type=float, default=1e-10)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "draft_floor.md")
    args = ap.parse_args()
    schema = load_schema(ROOT / "schemas" / "diabetes130.yaml")
    n_cat = sum(c.kind == "categorical" for c in schema.measured_columns)
    th = thresholds(args.epsilon, args.delta, n_cat)
    cutoffs = sorted({*(t for _, t in th), 2880.0, 1000.0, 500.0, 300.0, 100.0})
    fl = Floor(args.bundle)
    base = fl.base
    rows = [(t, fl.tvd(dict.fromkeys(fl.cat, t))) for t in cutoffs]
    # which columns lose most at the even split's threshold, each on its own
    even = th[1][1]
    loss = sorted(((fl.tvd({n: even}) - base, n) for n in fl.cat), reverse=True)
    rho = rho_for(args.epsilon, args.delta / 2)
    focused = []
    n_keys = len(fl.cat)
    for m in (3, 5, 7):
        top, rest = [n for _, n in loss[:m]], [n for _, n in loss[m:]]
        for share in (0.5, 0.7, 0.9):
            # the whole budget on key selection (nothing for numbers, kinds or bounds):
            # `share` of it split over the m worst columns, the rest over the others
            keys_delta = args.delta / 2 / n_keys
            t_top = float(gaussian_threshold(1, share * rho / m, keys_delta).threshold)
            t_rest = float(gaussian_threshold(1, (1 - share) * rho / (n_keys - m),
                                              keys_delta).threshold)
            cut = {**dict.fromkeys(top, t_top), **dict.fromkeys(rest, t_rest)}
            focused.append((m, share, t_top, t_rest, fl.tvd(cut), top))
    lines = ["# How close can a DP schema draft get? (diabetes130)", "",
             f"Command: `PYTHONPATH=. python benchmarks/draft_floor.py --bundle BUNDLE` "
             f"(epsilon {args.epsilon}, delta {args.delta}; BUNDLE a hand-written schema's MST "
             "release at epsilon 1, see the script's docstring).", "",
             "Key-selection thresholds (patients a value needs to be listed, k = 1):", "",
             "| split of the draft's budget | threshold |", "|---|---|"]
    lines += [f"| {label} | {t:,.0f} |" for label, t in th]
    lines += ["", "The hand-written release with every categorical value held by fewer than T "
              "patients replaced by `Other` (the best a draft with threshold T can list), "
              "raw-value 2-way TVD against the real table:", "",
              "| T (patients) | 2-way TVD | ratio to the hand-written release | within 1.10x |",
              "|---|---|---|---|",
              f"| (hand-written, nothing replaced) | {base:.4f} | 1.00 | yes |"]
    lines += [f"| {t:,.0f} | {v:.4f} | {v / base:.2f} | {'yes' if v / base <= 1.10 else 'no'} |"
              for t, v in rows]
    lines += ["", f"Each categorical column on its own at the even split's threshold "
              f"({even:,.0f}): the 2-way TVD it adds (the allowance, 10% of the hand-written "
              f"release's, is {0.1 * base:.4f}):", "", "| column | added 2-way TVD |",
              "|---|---|"]
    lines += [f"| {n} | {d:+.4f} |" for d, n in loss[:12]]
    lines += ["", "Uneven splits, optimistically: the whole budget on key selection (nothing "
              "for number columns, kinds, bounds or bins), a share of it on the m columns that "
              "lose most (even if a draft could know them in advance), the rest over the other "
              "categorical columns:", "",
              "| m | share on the m | their threshold | the others' threshold | 2-way TVD | ratio "
              "| within 1.10x |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {m} | {sh:.0%} | {tt:,.0f} | {tr:,.0f} | {v:.4f} | {v / base:.3f} | "
              f"{'yes' if v / base <= 1.10 else 'no'} |" for m, sh, tt, tr, v, _ in focused]
    lines += ["", "The m columns, worst first: " + ", ".join(n for _, n in loss[:7]) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"thresholds": th, "hand_tvd_2way": base, "floor": rows,
         "column_loss": [[n, d] for d, n in loss],
         "focused": [{"m": m, "share": sh, "threshold_top": tt, "threshold_rest": tr,
                      "tvd_2way": v, "columns": top} for m, sh, tt, tr, v, top in focused]},
        indent=2))


if __name__ == "__main__":
    main()
