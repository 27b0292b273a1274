"""How fast `dpsynth sample --condition` returns N rows, and whether they all satisfy it.

Target (issue 14): `dpsynth sample --condition` returns exactly N rows, all of which
satisfy the condition, in seconds, for N = 100,000.

For an MST and an AIM bundle of the shipped example (diabetes130, epsilon 1; built here
with a throwaway SQLite ledger unless `--mst-bundle` / `--aim-bundle` name existing
ones), runs the real CLI (`python -m dpsynth sample ... --json`, one fresh process per
run) for each condition below and reports the process wall time (median over `--runs`),
the command's own step timings (verify, load, condition, generate, write), the method,
the acceptance rate, the model's probability of the per-column evidence, and a check of
the written file: exactly N rows, every one satisfying the condition (evaluated with
polars on the file as written). The load average is printed with each run: the machine
is shared, and wall times are only comparable under the same load.

    python benchmarks/sample_speed.py --rows 100000 --runs 3

Results go to benchmarks/results/sample_speed.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schemas" / "diabetes130.yaml"
TABLE = ROOT / "examples" / "diabetes130" / "diabetic_data.csv.gz"
CONDITIONS = (
    ("race = 'Asian'", "one column, a ~0.6% group"),
    ("num_medications >= 20 AND gender = 'Female' AND age IN ('[70-80)', '[80-90)')",
     "three columns, AND of single-column terms"),
    ("(race = 'Asian' AND gender = 'Female') OR (race = 'Hispanic' AND A1Cresult = '>8')",
     "does not factor per column: rejection (race narrowed first)"),
)
STEPS = ("verify", "load", "condition", "generate", "write")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dpsynth", *args]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def build_bundle(engine: str, workdir: Path) -> Path:
    """A release of the shipped example (epsilon 1, seed 1) with a throwaway ledger."""
    out = workdir / engine
    if (out / "manifest.json").exists():
        return out
    (workdir / "ledger").mkdir(parents=True, exist_ok=True)
    ledger = f"sqlite:///{workdir / 'ledger' / f'{engine}.db'}"
    subprocess.run(_cli("ledger", "init", "--ledger", ledger, "--dataset-id", "diabetes130",
                        "--total-epsilon", "10"), check=True, capture_output=True, env=_env())
    print(f"building the {engine} bundle (a release of the shipped example) ...", flush=True)
    t = time.perf_counter()
    subprocess.run(_cli("release", "--schema", str(SCHEMA), "--input", str(TABLE), "--out",
                        str(out), "--ledger", ledger, "--engine", engine, "--epsilon", "1",
                        "--seed", "1", "--quiet"), check=True, env=_env())
    print(f"  done in {time.perf_counter() - t:.0f} s", flush=True)
    return out


def run_once(bundle: Path, condition: str, rows: int, out: Path, seed: int) -> dict[str, Any]:
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    res = subprocess.run(_cli("sample", "--bundle", str(bundle), "--rows", str(rows), "--out",
                              str(out), "--condition", condition, "--seed", str(seed),
                              "--json"), capture_output=True, text=True, env=_env())
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if res.returncode != 0:
        raise SystemExit(f"dpsynth sample failed ({res.returncode}): {res.stderr.strip()}")
    doc = json.loads(res.stdout)
    table = pl.read_parquet(out)
    satisfied = table.filter(pl.sql_expr(condition).fill_null(False)).height
    for p in (out, Path(str(out) + ".sample.json")):
        p.unlink()
    return {"wall_s": wall, "cpu_s": cpu, "load_before": load, "rows_written": table.height,
            "rows_satisfying": satisfied, **{k: doc[k] for k in (
                "method", "acceptance_rate", "draws", "evidence_probability", "timings")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mst-bundle", type=Path)
    ap.add_argument("--aim-bundle", type=Path)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dpsynth-sample-bench")
    ap.add_argument("--engines", default="mst,aim", help="comma-separated: mst, aim")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    given = {"mst": args.mst_bundle, "aim": args.aim_bundle}
    bundles = {e: given[e] or build_bundle(e, args.workdir) for e in args.engines.split(",")}
    outdir = Path(tempfile.mkdtemp(prefix="sample-bench-"))
    rows_out: list[dict[str, Any]] = []
    header = (f"| engine | condition | method | evidence P | acceptance | draws | wall s | CPU s "
              f"| {' | '.join(STEPS)} | rows | all satisfy |")
    print(header)
    for engine, bundle in bundles.items():
        for cond, what in CONDITIONS:
            runs = []
            for r in range(args.runs):
                runs.append(run_once(bundle, cond, args.rows, outdir / f"s{r}.parquet", seed=r))
                last = runs[-1]
                print(f"  {engine} run {r + 1}: {last['wall_s']:.2f} s wall, {last['cpu_s']:.2f} s "
                      f"CPU (load {last['load_before']:.1f})",
                      file=sys.stderr, flush=True)
            med = {s: statistics.median(x["timings"].get(s, 0.0) for x in runs) for s in STEPS}
            row = {
                "engine": engine, "condition": cond, "what": what, "method": runs[0]["method"],
                "evidence_probability": runs[0]["evidence_probability"],
                "acceptance_rate": statistics.median(x["acceptance_rate"] for x in runs),
                "draws": statistics.median(x["draws"] for x in runs),
                "wall_s": statistics.median(x["wall_s"] for x in runs),
                "cpu_s": statistics.median(x["cpu_s"] for x in runs),
                "steps_s": med,
                "rows_written": [x["rows_written"] for x in runs],
                "all_satisfy": all(x["rows_satisfying"] == x["rows_written"] == args.rows
                                   for x in runs),
                "load": [round(x["load_before"], 1) for x in runs],
                "runs": runs,
            }
            rows_out.append(row)
            print(f"| {engine} | `{cond}` | {row['method']} | {row['evidence_probability']:.4f} "
                  f"| {row['acceptance_rate']:.3f} | {row['draws']:.0f} | {row['wall_s']:.2f} | "
                  f"{row['cpu_s']:.2f} | "
                  + " | ".join(f"{med[s]:.2f}" for s in STEPS)
                  + f" | {args.rows} | {'yes' if row['all_satisfy'] else 'NO'} |", flush=True)
    results = ROOT / "benchmarks" / "results"
    stem = "sample_speed" + (f"-{args.label}" if args.label else "")
    meta = {"rows": args.rows, "runs": args.runs, "python": platform.python_version(),
            "cpus": os.cpu_count(), "bundles": {k: str(v) for k, v in bundles.items()}}
    (results / f"{stem}.json").write_text(json.dumps({"meta": meta, "results": rows_out},
                                                     indent=2) + "\n")
    lines = [
        "# `dpsynth sample --condition`: speed and correctness",
        "",
        f"N = {args.rows:,} rows per run, {args.runs} runs per row of the table (sampler seeds "
        "0, 1, 2), one fresh `python -m dpsynth sample ... --json` process per run, on MST and "
        "AIM bundles of the shipped example (diabetes130, epsilon 1, release seed 1). Wall and "
        "CPU (user + system) are of the whole process (interpreter start, imports, bundle "
        "verification included), medians; the step columns are the command's own wall "
        "timings (medians). On a shared machine CPU seconds are the better guide to the wall "
        "time on an idle one. *all satisfy*: every run wrote "
        "exactly N rows and the condition, evaluated with polars on the written file, holds "
        "on every one.",
        "",
        f"Machine: {os.cpu_count()} cores shared with other jobs; load average before each run: "
        + "; ".join(f"{r['engine']} {r['load']}" for r in rows_out[::len(CONDITIONS)]) + ".",
        "",
        "Reproduce: `python benchmarks/sample_speed.py --rows 100000 --runs 3`",
        "",
        header,
        "|" + "---|" * (header.count("|") - 1),
    ]
    for row in rows_out:
        lines.append(
            f"| {row['engine']} | `{row['condition']}` | {row['method']} | "
            f"{row['evidence_probability']:.4f} | {row['acceptance_rate']:.3f} | "
            f"{row['draws']:.0f} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | "
            + " | ".join(f"{row['steps_s'][s]:.2f}" for s in STEPS)
            + f" | {args.rows:,} | {'yes' if row['all_satisfy'] else 'NO'} |")
    lines += [
        "",
        "*evidence P*: the model's probability of the codes the condition allows (the "
        "expected share of rows in the subgroup). *acceptance*: of the rows drawn from the "
        "conditioned model that met the schema's rules, the share that met the condition "
        "(1 for an exact condition whose thresholds fall on bin edges; below 1 for rejection). "
        "*draws*: rows drawn from the conditioned model in all (generation over-draws by about "
        "10% and keeps a uniform subset).",
        "",
    ]
    (results / f"{stem}.md").write_text("\n".join(lines))
    print(f"wrote {results / stem}.md and .json")


if __name__ == "__main__":
    main()
