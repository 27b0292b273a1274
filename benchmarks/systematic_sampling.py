"""Systematic against independent draws from the same fitted models.

For each (dataset, engine, seed) one seeded release is made (``seeded_options.seeded_release``:
numpy noise of OpenDP's scales and a seeded bounding key, so NOT differential privacy; the
bundle lives in a temporary directory and is deleted). Its model is then sampled with
``dpsynth sample`` at the release's row count, with several sampler seeds, by

* ``systematic``: the shipped sampler (``dpsynth.engines.sampler.draw_rows``: each
  separator group's rows take one stratified sweep of its conditional CDF), and
* ``independent``: :func:`independent_draw_rows` below, the sampler before it (every row an
  independent inverse-CDF draw), patched in for the run.

Each table is scored on the values as released (``seeded_options.score``: raw 2-way TVD
against the real rows; TSTR AUC of ``readmitted == "<30"`` for diabetes130). Because the
models are the same, the difference between the two rows is the sampler's alone. Usage::

    PYTHONPATH=$PWD python benchmarks/systematic_sampling.py --seeds 1,2,3,4 \\
        --engines aim,mst --datasets diabetes130,nist --draws 3 \\
        --out benchmarks/results/systematic_sampling

``--time-rows N`` instead times both samplers on one model (``scale.example_model``: MST of
the diabetes130 example): the model's codes alone (``model.sample``) and the release's whole
generation step (``dpsynth.generate.generate``: codes, decoding, rules), best of
``--repeat``, alternating the samplers::

    PYTHONPATH=$PWD python benchmarks/systematic_sampling.py --time-rows 10000000 \\
        --out benchmarks/results/systematic_sampling_time
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from seeded_options import _commit, run_children, save  # noqa: E402

from dpsynth.engines.sampler import draw_rows as _SHIPPED  # noqa: E402

SAMPLERS = ("independent", "systematic")


def independent_draw_rows(table: np.ndarray, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The reference: for each row ``r`` an independent draw from ``table[group[r]]``
    (one inverse-CDF lookup over a row-offset cumulative table)."""
    n_groups, n_out = table.shape
    group = group.astype(np.int64)
    t = np.clip(table, 0.0, None)
    mass = t.sum(axis=1, keepdims=True)
    t = np.where(mass > 0, t / np.where(mass > 0, mass, 1.0), 1.0 / n_out)
    cdf = np.cumsum(t, axis=1)
    cdf[:, -1] = 1.0
    keys = (cdf + np.arange(n_groups)[:, None]).ravel()
    pos = np.searchsorted(keys, group + rng.random(group.shape[0]), side="right")
    pos = np.minimum(pos, group * n_out + n_out - 1)
    return pos - group * n_out


def use_sampler(name: str) -> None:
    """Make the engines draw with ``name`` (one of :data:`SAMPLERS`) in this process."""
    import dpsynth.engines.base as base
    import dpsynth.engines.sampler as sampler

    draw = _SHIPPED if name == "systematic" else independent_draw_rows
    sampler.draw_rows = base.draw_rows = draw  # type: ignore[assignment]


def _worker(dataset: str, engine: str, seed: int, draws: int, work: Path) -> list[dict]:
    """One seeded release, then ``draws`` samples with each sampler, scored (in a child)."""
    import polars as pl
    from seeded_options import score, seeded_release

    from dpsynth.cli import main as cli

    made = seeded_release(dataset, engine, "default", seed, work)
    n = pl.read_parquet(made["bundle"] / "synthetic.parquet").height
    rows = []
    for name in SAMPLERS:
        use_sampler(name)
        for k in range(1, draws + 1):
            out = work / f"{name}-{k}.parquet"
            cli(["sample", "--bundle", str(made["bundle"]), "--rows", str(n), "--out", str(out),
                 "--seed", str(k), "--quiet"], standalone_mode=False)
            rows.append({"dataset": dataset, "engine": engine, "seed": seed, "sampler": name,
                         "draw": k, **score(pl.read_parquet(out), made)})
    return rows


def timing(n_rows: int, repeat: int) -> str:
    """Seconds per sampler for ``n_rows`` rows, as a markdown table."""
    import time

    from scale import example_model

    from dpsynth.generate import generate

    model, domain, schema = example_model()
    best: dict[tuple[str, str], float] = {}
    for _ in range(repeat):
        for name in SAMPLERS:
            use_sampler(name)
            for step in ("model.sample", "generate"):
                rng = np.random.default_rng(0)
                t = time.perf_counter()
                if step == "model.sample":
                    model.sample(n_rows, rng)
                else:
                    generate(model, domain, schema, n_rows, rng)
                s = time.perf_counter() - t
                best[(name, step)] = min(best.get((name, step), s), s)
    lines = [f"Rows: {n_rows:,}; model: MST of the diabetes130 example "
             f"({len(model.columns)} columns); best of {repeat}. Code: "
             f"{_commit()}.", "",
             "| step | independent s | systematic s |", "|---|---|---|"]
    for step in ("model.sample", "generate"):
        lines.append(f"| {step} | {best[('independent', step)]:.2f} | "
                     f"{best[('systematic', step)]:.2f} |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict], command: str) -> str:
    """Means per (dataset, engine, sampler), the paired difference per model, every draw."""
    lines = [f"Command: `{command}`  ", f"Code: {_commit()}. Seeded numpy noise and bounding "
             "secret (not DP); the same models sampled by both samplers.", "",
             "| dataset | engine | sampler | models x draws | mean raw 2-way TVD | sd over draws "
             "| mean TSTR AUC | sd over draws |", "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["engine"], r["sampler"]), []).append(r)

    def spread(rs: list[dict], key: str) -> float:
        """Mean over models of the sd between one model's draws."""
        per: dict[int, list[float]] = {}
        for r in rs:
            per.setdefault(r["seed"], []).append(r[key])
        return statistics.fmean(statistics.stdev(v) if len(v) > 1 else 0.0 for v in per.values())

    for (dataset, engine, name), rs in groups.items():
        models = len({r["seed"] for r in rs})
        auc = (f"{statistics.fmean(r['auc'] for r in rs):.4f} | {spread(rs, 'auc'):.4f}"
               if "auc" in rs[0] else "— | —")
        lines.append(f"| {dataset} | {engine} | {name} | {models} x {len(rs) // models} | "
                     f"{statistics.fmean(r['tvd_2way'] for r in rs):.4f} | "
                     f"{spread(rs, 'tvd_2way'):.5f} | {auc} |")
    lines += ["", "Per model (mean over its draws), systematic minus independent:", "",
              "| dataset | engine | seed | TVD independent | TVD systematic | difference | "
              "AUC difference |", "|---|---|---|---|---|---|---|"]
    models: dict[tuple[str, str, int], dict[str, list[dict]]] = {}
    for r in rows:
        models.setdefault((r["dataset"], r["engine"], r["seed"]), {}).setdefault(
            r["sampler"], []).append(r)

    def mean(by: dict[str, list[dict]], name: str, key: str) -> float:
        return statistics.fmean(r[key] for r in by[name])

    for (dataset, engine, seed), by in models.items():
        ti, ts = mean(by, "independent", "tvd_2way"), mean(by, "systematic", "tvd_2way")
        auc = (f"{mean(by, 'systematic', 'auc') - mean(by, 'independent', 'auc'):+.4f}"
               if "auc" in by["systematic"][0] else "—")
        lines.append(f"| {dataset} | {engine} | {seed} | {ti:.4f} | {ts:.4f} | {ts - ti:+.4f} "
                     f"({(ts - ti) / ti:+.1%}) | {auc} |")
    lines += ["", "| dataset | engine | seed | sampler | draw | raw 2-way TVD | TSTR AUC |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        auc = f"{r['auc']:.4f}" if "auc" in r else "—"
        lines.append(f"| {r['dataset']} | {r['engine']} | {r['seed']} | {r['sampler']} | "
                     f"{r['draw']} | {r['tvd_2way']:.4f} | {auc} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--engines", default="aim,mst")
    p.add_argument("--datasets", default="diabetes130")
    p.add_argument("--draws", type=int, default=3, help="sampler seeds per sampler and model")
    p.add_argument("--parallel", type=int, default=2, help="models at a time")
    p.add_argument("--out", type=Path, help="writes OUT.json and OUT.md")
    p.add_argument("--time-rows", type=int, help="time both samplers for this many rows instead")
    p.add_argument("--repeat", type=int, default=3, help="timing repetitions (--time-rows)")
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.time_rows:
        save(timing(a.time_rows, a.repeat), None, a.out)
        return 0
    if a.worker:
        dataset, engine, seed, draws = a.worker
        with tempfile.TemporaryDirectory(prefix="systematic_sampling-") as tmp:
            print(json.dumps(_worker(dataset, engine, int(seed), int(draws), Path(tmp))))
        return 0
    jobs = [(dataset, engine, int(seed), a.draws) for dataset in a.datasets.split(",")
            for engine in a.engines.split(",") for seed in a.seeds.split(",")]
    rows = [r for got in run_children(__file__, jobs, a.parallel) for r in got]
    command = "python benchmarks/systematic_sampling.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    save(markdown(rows, command), rows, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
