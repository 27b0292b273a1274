"""What the privacy unit does to a release of diabetes130, and what ``represent: all_rows`` fixes.

Issue 14, item 4. With k = 1 a release keeps one random encounter per patient, so the synthetic
table describes patients, not encounters: readmission within 30 days is rarer in it than among
all real encounters (patients with many encounters are readmitted more often). This benchmark
measures, for k = 1, 2, 3 (``represent: kept_rows``) and for the correction (``represent:
all_rows``, k = 1 and k = 2), with MST and AIM at epsilon 1:

* the share of ``readmitted == "<30"`` in the synthetic table (weighted by ``row_weight`` where
  the release has one) against the real training encounters and the real test encounters;
* the raw-value mean 2-way TVD (``raw_fidelity.raw_tvd``) of the synthetic table against the
  real training ENCOUNTERS (all of them, unbounded: what a researcher wants the table to
  describe);
* TSTR AUC for ``readmitted == "<30"`` (``tstr.py``'s protocol: 70/30 split by patient, fit on
  the 70 %, test on every encounter of the real 30 %).

A weighted table is scored through its replicated form: each row repeated ``floor(w)`` or
``ceil(w)`` times (seeded stochastic rounding, so the expected count is ``w``); the TVD and the
TSTR model then see an encounter-level table. The weighted share is exact (no replication).

Every release goes through :func:`dpsynth.pipeline.release` (the CLI's code path) with real
OpenDP noise, on the training split written as a gzip CSV, with a throwaway SQLite ledger. The
figures compare with real rows: internal benchmark numbers, never part of a bundle.

    python benchmarks/unit_effect.py --engines mst aim --runs 2      # ~1 h on 2 cores
    python benchmarks/unit_effect.py --engines mst --runs 1 --configs k1 k1-all

Results: ``benchmarks/results/unit_effect.md`` and ``.json`` (rewritten after every release, so
an interrupted run leaves its finished rows).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from raw_fidelity import numeric_columns, raw_tvd, real_values, released_values  # noqa: E402
from tstr import DEFAULT_DATA, DEFAULT_SCHEMA, TARGET, load_split, tstr_auc, write_train  # noqa: E402

from dpsynth.config import ReleaseConfig  # noqa: E402
from dpsynth.pipeline import release  # noqa: E402
from dpsynth.privacy.accountant import ApproxDP  # noqa: E402
from dpsynth.privacy.ledger import open_ledger  # noqa: E402
from dpsynth.schema import load_schema  # noqa: E402

RESULTS = HERE / "results"
CONFIGS: dict[str, tuple[int, str]] = {
    "k1": (1, "kept_rows"),
    "k2": (2, "kept_rows"),
    "k3": (3, "kept_rows"),
    "k1-all": (1, "all_rows"),
    "k2-all": (2, "all_rows"),
}
"""Name -> (max_rows, represent)."""
EXPAND_SEED = 7


def schema_variant(text: str, k: int, represent: str) -> str:
    """The shipped schema's text with ``max_rows: k`` and ``represent`` set."""
    out, n = re.subn(r"(?m)^(  max_rows:) \d+$", rf"\1 {k}", text)
    if n != 1:
        raise SystemExit("the schema must have exactly one 'max_rows:' line under privacy_unit")
    out = re.sub(r"(?m)^  represent: \w+\n", "", out)
    if represent != "kept_rows":
        out = out.replace(f"  max_rows: {k}\n", f"  max_rows: {k}\n  represent: {represent}\n", 1)
    return out


def expand(synth: pl.DataFrame, weight: str, seed: int = EXPAND_SEED) -> pl.DataFrame:
    """Replicate each row ``floor(w)`` or ``ceil(w)`` times (P(ceil) = frac(w)); drop ``weight``."""
    w = synth.get_column(weight).to_numpy()
    u = np.random.default_rng(seed).random(w.size)
    reps = (np.floor(w) + (u < w - np.floor(w))).astype(np.int64)
    return synth.drop(weight).select(pl.all().gather(np.repeat(np.arange(w.size), reps)))


def share(values: pl.DataFrame, weights: np.ndarray | None = None) -> float:
    hit = (values.get_column(TARGET[0]).cast(pl.String) == TARGET[1]).fill_null(False).to_numpy()
    return float(np.average(hit, weights=weights))


def run_one(engine: str, name: str, k: int, represent: str, work: Path, train_csv: Path,
            schema_text: str, ledger: str, test_values: pl.DataFrame,
            train_values: pl.DataFrame, run: int) -> dict[str, Any]:
    schema_path = work / f"schema-{name}.yaml"
    schema_path.write_text(schema_variant(schema_text, k, represent), encoding="utf-8")
    out = work / f"{engine}-{name}-{run}"
    t0 = time.perf_counter()
    res = release(ReleaseConfig(schema_path=schema_path, input_path=train_csv, out_dir=out,
                                epsilon=1.0, engine=engine, ledger_url=ledger,
                                dataset_id="unit-effect", seed=run))
    seconds = time.perf_counter() - t0
    schema = load_schema(schema_path)
    synth = pl.read_parquet(out / "synthetic.parquet")
    weight = schema.privacy_unit.weight_column if represent == "all_rows" else None
    weights = synth.get_column(weight).to_numpy() if weight else None
    scored = expand(synth, weight) if weight else synth
    values = released_values(scored, schema)
    cols = [c.name for c in schema.measured_columns]
    tvd = raw_tvd(train_values, values, cols, numeric_columns(schema), n_threeway=0)
    row = {
        "engine": engine, "config": name, "k": k, "represent": represent, "run": run,
        "release_id": res.release_id, "rows": res.rows, "scored_rows": scored.height,
        "share_unweighted": share(released_values(synth, schema)),
        "share": share(released_values(synth, schema), weights),
        "tvd_2way": tvd["tvd_2way"], "tvd_1way": tvd["tvd_1way"],
        "tstr_auc": tstr_auc(values, test_values, schema),
        "seconds": round(seconds, 1),
    }
    if weight:
        row["tstr_auc_unweighted"] = tstr_auc(released_values(synth, schema), test_values, schema)
    return row


def _mean(rows: list[dict[str, Any]], key: str) -> str:
    vals = [r[key] for r in rows if r.get(key) is not None]
    if not vals:
        return "—"
    m = float(np.mean(vals))
    return f"{m:.3f}" + (f" ± {float(np.std(vals, ddof=1)):.3f}" if len(vals) > 1 else "")


def write_results(rows: list[dict[str, Any]], refs: dict[str, Any], command: str,
                  tag: str = "") -> None:
    """``results/unit_effect.json`` and ``.md``; with ``tag`` only
    ``results/unit_effect-<tag>.json`` (a partial run, for :func:`combine`)."""
    RESULTS.mkdir(exist_ok=True)
    stem = f"unit_effect-{tag}" if tag else "unit_effect"
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({"command": command, "references": refs, "runs": rows}, indent=2) + "\n")
    if tag:
        return
    lines = [
        "# What the privacy unit does to diabetes130 (issue 14, item 4)",
        "",
        f"`{command}`. Epsilon 1, delta 1e-9, real OpenDP noise, one release per row of the "
        "runs table; the release is fitted on the 70 % training split (by patient, "
        "`benchmarks/tstr.py`). Share: `readmitted == \"<30\"` in the synthetic table "
        "(weighted by `row_weight` for `represent: all_rows`). TVD: raw-value mean 2-way TVD "
        "against the real training ENCOUNTERS (all of them). TSTR: AUC on every encounter of "
        "the real 30 % test patients. `all_rows` tables are scored replicated by their "
        "weights (TVD, TSTR); `TSTR unweighted` trains on the rows as released.",
        "",
        "## References (real data, no DP)",
        "",
        "| reference | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.3f} |" for k, v in refs.items()]
    lines += ["", "## Means over runs (± standard deviation)", "",
              "| engine | config | k | represent | runs | share <30 | unweighted share | "
              "2-way TVD | TSTR AUC | TSTR unweighted |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["engine"], r["config"]), []).append(r)
    for (engine, name), g in groups.items():
        lines.append(f"| {engine} | {name} | {g[0]['k']} | {g[0]['represent']} | {len(g)} | "
                     f"{_mean(g, 'share')} | {_mean(g, 'share_unweighted')} | "
                     f"{_mean(g, 'tvd_2way')} | {_mean(g, 'tstr_auc')} | "
                     f"{_mean(g, 'tstr_auc_unweighted')} |")
    lines += ["", "## Every release", "",
              "| engine | config | run | rows | share <30 | 2-way TVD | TSTR AUC | seconds |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['engine']} | {r['config']} | {r['run']} | {r['rows']:,} | {r['share']:.4f} | "
              f"{r['tvd_2way']:.4f} | {r['tstr_auc']:.3f} | {r['seconds']} |" for r in rows]
    (RESULTS / "unit_effect.md").write_text("\n".join(lines) + "\n")


def combine(paths: list[Path]) -> None:
    """Merge result files of runs made in parallel (``--tag``) into ``unit_effect.md``/``.json``."""
    docs = [json.loads(p.read_text()) for p in paths]
    rows = [r for d in docs for r in d["runs"]]
    rows.sort(key=lambda r: (r["engine"], list(CONFIGS).index(r["config"]), r["run"]))
    write_results(rows, docs[0]["references"], "; ".join(d["command"] for d in docs))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engines", nargs="+", default=["mst", "aim"])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--first-run", type=int, default=1, help="number of the first run")
    p.add_argument("--tag", default="", help="write results/unit_effect-TAG.json only")
    p.add_argument("--combine", nargs="+", type=Path, metavar="JSON",
                   help="merge these result files into unit_effect.md/.json and exit")
    a = p.parse_args(argv)
    if a.combine:
        combine(a.combine)
        return 0
    command = "python benchmarks/unit_effect.py " + " ".join(argv if argv is not None else sys.argv[1:])
    schema, train, test = load_split(DEFAULT_SCHEMA, DEFAULT_DATA)
    test_values, train_values = real_values(test, schema), real_values(train, schema)
    from tstr import real_train_ceiling

    refs = {
        "real training encounters, share <30": share(train_values),
        "real test encounters, share <30": share(test_values),
        "TSTR ceiling: real training, 1 encounter per patient": real_train_ceiling(train, test, schema),
        "TSTR ceiling: real training, all encounters":
            real_train_ceiling(train, test, schema, bounded=False),
    }
    print(json.dumps(refs, indent=1), file=sys.stderr)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="unit-effect-") as tmp:
        work = Path(tmp)
        train_csv = write_train(train, work / "train.csv.gz")
        ledger = f"sqlite:///{work / 'ledger' / 'l.db'}"
        (work / "ledger").mkdir()
        with open_ledger(ledger) as led:
            led.init_dataset("unit-effect", ApproxDP(1000.0, 1e-6))
        text = DEFAULT_SCHEMA.read_text(encoding="utf-8")
        for run in range(a.first_run, a.first_run + a.runs):
            for engine in a.engines:
                for name in a.configs:
                    k, represent = CONFIGS[name]
                    print(f"[{time.strftime('%H:%M:%S')}] {engine} {name} run {run} ...",
                          file=sys.stderr, flush=True)
                    row = run_one(engine, name, k, represent, work, train_csv, text, ledger,
                                  test_values, train_values, run)
                    rows.append(row)
                    print(f"    share {row['share']:.4f} tvd2 {row['tvd_2way']:.4f} "
                          f"auc {row['tstr_auc']:.3f} ({row['seconds']} s)", file=sys.stderr,
                          flush=True)
                    write_results(rows, refs, command, a.tag)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
