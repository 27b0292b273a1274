"""Where a release's time goes: the stages of `dpsynth release`, several runs, medians.

Runs the real CLI (`python -m dpsynth.cli release ... --json`) in a subprocess per run on
one table (default: the NIST national2019 excerpt with `schemas/nist_excerpts.yaml`,
`--engine mst --epsilon 1`), with a throwaway SQLite ledger, and prints a table of the
release's `timings` (read_check_encode, fit, count, sample, validate, bundle, total): the
median seconds of each stage over the runs and its share of `total`, plus the size of
`quality-report.html`, the process wall time and the machine's load average before and
after (the numbers are only comparable between runs made under the same load).

    python benchmarks/release_stages.py --runs 5 --label after

`--pythonpath DIR` runs another checkout of dpsynth (e.g. an exported older commit, to
measure before and after under the same conditions). Results go to
benchmarks/results/release_stages-<label>.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = Path("/work/shared/data/nist_excerpts/national2019.csv.gz")
DEFAULT_SCHEMA = ROOT / "schemas" / "nist_excerpts.yaml"
STAGES = ("read_check_encode", "fit", "count", "sample", "validate", "bundle")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dpsynth.cli", *args]


def run_once(pythonpath: Path, schema: Path, table: Path, engine: str, epsilon: float,
             workdir: Path, n: int) -> dict[str, Any]:
    """One release in a fresh process; its timings, wall time and report sizes."""
    (workdir / "ledger").mkdir(exist_ok=True)
    ledger = f"sqlite:///{workdir / 'ledger' / f'ledger-{n}.db'}"
    # -m puts the working directory first on sys.path: run from the checkout to measure
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    subprocess.run(_cli("ledger", "init", "--ledger", ledger, "--dataset-id", "bench",
                        "--total-epsilon", "1000"), check=True, capture_output=True, cwd=pythonpath, env=env)
    out = workdir / f"bundle-{n}"
    cmd = _cli("release", "--schema", str(schema), "--input", str(table),
               "--ledger", ledger, "--dataset-id", "bench", "--engine", engine,
               "--epsilon", str(epsilon), "--seed", "1", "--quiet", "--json", "--out", str(out))
    load = os.getloadavg()[0]
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=pythonpath, env=env)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(f"release failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    timings = json.loads(res.stdout)["timings"]
    sizes = {p.name: p.stat().st_size for p in out.glob("*.html")}
    shutil.rmtree(out)
    return {"timings": timings, "wall_s": wall, "load_before": load,
            "load_after": os.getloadavg()[0], "html_bytes": sizes}


def table(runs: list[dict[str, Any]]) -> list[str]:
    """Median seconds and share of `total` per stage."""
    med = {k: statistics.median(r["timings"].get(k, 0.0) for r in runs)
           for k in (*STAGES, "total")}
    lines = ["| stage | median s | share of total | min s | max s |", "|---|---|---|---|---|"]
    for k in (*STAGES, "total"):
        vals = [r["timings"].get(k, 0.0) for r in runs]
        share = f"{100 * med[k] / med['total']:.0f}%" if k != "count" else "(in fit)"
        lines.append(f"| {k} | {med[k]:.2f} | {share} | {min(vals):.2f} | {max(vals):.2f} |")
    shares = [r["timings"]["bundle"] / r["timings"]["total"] for r in runs]
    lines += ["", f"bundle share of total, median over runs: {100 * statistics.median(shares):.0f}% "
              f"(runs: {', '.join(f'{100 * s:.0f}%' for s in shares)})"]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--label", default="current")
    ap.add_argument("--pythonpath", type=Path, default=ROOT,
                    help="the dpsynth checkout to run (default: this one)")
    ap.add_argument("--schema", type=Path, default=DEFAULT_SCHEMA)
    ap.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    ap.add_argument("--engine", default="mst")
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory(prefix="dpsynth-stages-") as tmp:
        for n in range(args.runs):
            r = run_once(args.pythonpath, args.schema, args.input, args.engine, args.epsilon,
                         Path(tmp), n)
            print(json.dumps(r), file=sys.stderr)
            runs.append(r)
    loads = [r["load_before"] for r in runs] + [r["load_after"] for r in runs]
    html = {k: statistics.median(r["html_bytes"].get(k, 0) for r in runs)
            for k in runs[0]["html_bytes"]}
    schema = args.schema.relative_to(ROOT) if args.schema.is_relative_to(ROOT) else args.schema
    command = (f"python benchmarks/release_stages.py --runs {args.runs} --label {args.label} "
               f"--engine {args.engine} --epsilon {args.epsilon:g} --input {args.input} "
               f"--schema {schema}"
               + (f" --pythonpath {args.pythonpath}" if args.pythonpath != ROOT else ""))
    text = "\n".join([
        f"# dpsynth release stages: {args.label}", "",
        f"Command: `{command}` (each run: `dpsynth release --engine {args.engine} --epsilon "
        f"{args.epsilon:g} --seed 1 --quiet --json`, a fresh process and ledger).", "",
        f"Machine: {platform.platform()}, {os.cpu_count()} cores, shared with other jobs: "
        f"1-minute load average {min(loads):.1f}–{max(loads):.1f} during the runs. "
        f"{args.runs} runs; process wall time median "
        f"{statistics.median(r['wall_s'] for r in runs):.1f} s.", "",
        *table(runs), "",
        "HTML sizes (bytes): " + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(html.items())),
        ""])
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"release_stages-{args.label}"
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
