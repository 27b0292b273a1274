"""The whole `dpsynth release` against smartnoise-synth MST's fit+sample, side by side.

Issue 15's ratio targets: the whole `dpsynth release --engine mst` on the NIST national2019
excerpt at least 50x faster than smartnoise-synth 1.0.8's MST fit+sample on the same table
(and `--engine aim` at least 6x), measured in one run on one machine. Each repetition runs,
back to back in fresh processes:

1. smartnoise MST (``compare_peers.py``'s worker: fit on the table's codes over the public
   domain, then sample as many rows; fit+sample seconds as the worker times them, and the
   process wall time including its imports);
2. `dpsynth release --engine mst` through the real CLI (``release_stages.run_once``: the
   process wall time, imports and interpreter start-up included, and the release's own
   ``total``);
3. the same with ``--engine aim`` (unless ``--engines`` says otherwise).

Both get the same rows: the table as ``compare_peers.prepare`` bounds it (k = 1; NIST has
no patient column, so every row), dpsynth as CSV text, smartnoise as its codes. epsilon 1,
delta 1e-9 (dpsynth's default delta), sampling seed 1. The ratio is smartnoise's fit+sample
over dpsynth's whole process wall time (the conservative one), per repetition, and the
median over repetitions; the ratio over the release's ``total`` (no start-up) is shown too.
On a machine shared with other jobs wall times stretch with the load, unevenly (smartnoise
runs several threads), so the ratio of CPU seconds (user + system of each whole process:
smartnoise's worker with its imports and data loading, dpsynth's release plus the
``ledger init`` before it) is given as well.

    python benchmarks/side_by_side.py --reps 3

Results: benchmarks/results/side_by_side.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import compare_peers  # noqa: E402
import release_stages  # noqa: E402

DELTA = 1e-9
TARGETS = {"mst": 50.0, "aim": 6.0}


def child_cpu() -> float:
    """CPU seconds (user + system) of this process's waited-for children so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def smartnoise_mst(data: Path, epsilon: float, out: Path, timeout: float) -> dict[str, Any]:
    """One smartnoise MST fit+sample in its own process (compare_peers' worker)."""
    cmd = [sys.executable, str(HERE / "compare_peers.py"), "--worker", "--system",
           "smartnoise-mst", "--data", str(data), "--epsilon", str(epsilon), "--delta",
           str(DELTA), "--seed", "1", "--out", str(out), "--dpsynth-path", "engine"]
    cpu = child_cpu()
    status, wall, rss = compare_peers.run_child(cmd, timeout, Path(str(out) + ".log"))
    cpu = child_cpu() - cpu
    if status != "ok":
        raise SystemExit(f"smartnoise MST: {status}; see {out}.log")
    res = json.loads(Path(str(out) + ".json").read_text())
    return {"fit_s": res["fit_s"], "sample_s": res["sample_s"],
            "fit_sample_s": res["fit_s"] + res["sample_s"], "wall_s": wall, "cpu_s": cpu,
            "peak_rss_mb": rss}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--engines", nargs="+", default=["mst", "aim"], choices=["mst", "aim"])
    ap.add_argument("--epsilon", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds for one smartnoise run")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "side_by_side.md")
    args = ap.parse_args(argv)
    schema = compare_peers.DATASETS["nist"][0]
    reps: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dpsynth-side-") as tmp:
        work = Path(tmp)
        meta = compare_peers.prepare("nist", work, None)
        data = work / "nist"
        table = data / "train.csv"
        print(f"NIST national2019: {meta['rows_train']} rows x {len(meta['columns'])} released "
              "columns", file=sys.stderr)
        for i in range(args.reps):
            load = os.getloadavg()[0]
            rep: dict[str, Any] = {"rep": i + 1, "load_before": load}
            rep["smartnoise-mst"] = smartnoise_mst(data, args.epsilon, data / f"sn-{i}", args.timeout)
            print(f"rep {i + 1}: smartnoise MST fit+sample "
                  f"{rep['smartnoise-mst']['fit_sample_s']:.1f} s", file=sys.stderr)
            for engine in args.engines:
                cpu = child_cpu()
                r = release_stages.run_once(ROOT, schema, table, engine, args.epsilon, work,
                                            i * 10 + len(rep))
                r["cpu_s"] = child_cpu() - cpu  # the ledger init's few seconds included
                rep[f"dpsynth-{engine}"] = r
                sn = rep["smartnoise-mst"]["fit_sample_s"]
                print(f"rep {i + 1}: dpsynth release --engine {engine}: process {r['wall_s']:.1f} s "
                      f"(total {r['timings']['total']:.1f} s): {sn / r['wall_s']:.1f}x",
                      file=sys.stderr)
            rep["load_after"] = os.getloadavg()[0]
            reps.append(rep)
            write(reps, args, meta)  # after every repetition: a stopped run keeps what it did
    print(write(reps, args, meta))
    return 0


def write(reps: list[dict[str, Any]], args: argparse.Namespace, meta: dict[str, Any]) -> str:
    """Write the results so far (markdown and json); return the markdown."""
    text = render(reps, args, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"argv": sys.argv[1:], "reps": reps},
                                                        indent=2))
    return text


def render(reps: list[dict[str, Any]], args: argparse.Namespace, meta: dict[str, Any]) -> str:
    loads = [r["load_before"] for r in reps] + [r["load_after"] for r in reps]
    lines = [
        "# dpsynth release vs smartnoise-synth MST, side by side", "",
        f"Command: `python benchmarks/side_by_side.py --reps {args.reps} --engines "
        f"{' '.join(args.engines)} --epsilon {args.epsilon:g}`", "",
        f"Table: NIST national2019 excerpt, {meta['rows_train']} rows x {len(meta['columns'])} "
        f"released columns, epsilon {args.epsilon:g}, delta {DELTA:g}. Machine: "
        f"{platform.platform()}, {os.cpu_count()} cores, shared with other jobs (1-minute load "
        f"average {min(loads):.1f}-{max(loads):.1f} during the runs); every run in a fresh process, "
        f"one after the other. Run {time.strftime('%Y-%m-%d %H:%M %Z')}.", "",
        "Ratio = smartnoise MST fit+sample seconds / dpsynth's seconds. \"process\" is the whole "
        "`dpsynth release` command, interpreter start-up and imports included; \"total\" is the "
        "release's own `timings.total` (from reading the schema to the bundle on disk).", "",
        "| rep | smartnoise MST fit s | sample s | fit+sample s | process CPU s | "
        + " | ".join(f"dpsynth {e} process s | total s | CPU s | ratio (process) | ratio (total) "
                     "| ratio (CPU)" for e in args.engines) + " |",
        "|" + "---|" * (5 + 6 * len(args.engines)),
    ]
    for r in reps:
        sn = r["smartnoise-mst"]
        cells = [str(r["rep"]), f"{sn['fit_s']:.1f}", f"{sn['sample_s']:.1f}",
                 f"{sn['fit_sample_s']:.1f}", _cpu(sn)]
        for e in args.engines:
            d = r[f"dpsynth-{e}"]
            cells += [f"{d['wall_s']:.1f}", f"{d['timings']['total']:.1f}", _cpu(d),
                      f"{sn['fit_sample_s'] / d['wall_s']:.1f}x",
                      f"{sn['fit_sample_s'] / d['timings']['total']:.1f}x",
                      f"{sn['cpu_s'] / d['cpu_s']:.1f}x" if "cpu_s" in sn and "cpu_s" in d else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| engine | target | median ratio (process) | median ratio (total) | "
              "median ratio (CPU) | met (process) |", "|---|---|---|---|---|---|"]
    for e in args.engines:
        proc = statistics.median(r["smartnoise-mst"]["fit_sample_s"] / r[f"dpsynth-{e}"]["wall_s"]
                                 for r in reps)
        tot = statistics.median(r["smartnoise-mst"]["fit_sample_s"]
                                / r[f"dpsynth-{e}"]["timings"]["total"] for r in reps)
        cpus = [r["smartnoise-mst"]["cpu_s"] / r[f"dpsynth-{e}"]["cpu_s"] for r in reps
                if "cpu_s" in r["smartnoise-mst"] and "cpu_s" in r[f"dpsynth-{e}"]]
        cpu = f"{statistics.median(cpus):.1f}x" if cpus else "–"
        lines.append(f"| {e} | >= {TARGETS[e]:g}x | {proc:.1f}x | {tot:.1f}x | {cpu} | "
                     f"{'yes' if proc >= TARGETS[e] else 'no'} |")
    stages = release_stages.STAGES
    lines += ["", "dpsynth stage medians (seconds, the release's `timings`; `count` is part of "
              "`fit`):", "", "| engine | " + " | ".join(stages) + " | total | process |",
              "|" + "---|" * (len(stages) + 3)]
    for e in args.engines:
        med = [statistics.median(r[f"dpsynth-{e}"]["timings"].get(k, 0.0) for r in reps)
               for k in (*stages, "total")]
        proc_med = statistics.median(r[f"dpsynth-{e}"]["wall_s"] for r in reps)
        lines.append(f"| {e} | " + " | ".join(f"{v:.2f}" for v in med) + f" | {proc_med:.2f} |")
    return "\n".join(lines) + "\n"


def _cpu(run: dict[str, Any]) -> str:
    return f"{run['cpu_s']:.1f}" if "cpu_s" in run else "–"


if __name__ == "__main__":
    raise SystemExit(main())
