"""Is a schema drafted under DP good enough to release with, unedited?

For each table (the shipped diabetes130 example, and the NIST national2019 excerpt that
``compare_peers.py`` uses), and each of several runs (fresh DP noise each time):

1. ``dpsynth schema draft`` at epsilon 0.1 (``--unit-column`` as the hand-written schema's
   privacy unit, ``--max-rows`` its k, so that both releases bound the same way);
2. ``dpsynth release`` at epsilon 1 with that draft, unedited;
3. ``dpsynth release`` at epsilon 1 with the hand-written schema (``schemas/``);

and compares both synthetic tables with the real table on raw values
(``raw_fidelity.raw_tvd``: the real table's deciles for the hand-written schema's number
columns, text values otherwise, code columns mapped to the hand-written schema's groups).
The two schemas encode the table differently: the hand-written release is read as
``compare_peers.py`` reads it (``raw_fidelity.released_values``), and the draft's release
as raw text through the hand-written schema (``raw_fidelity.real_values``), the way the
real table is read (so its ICD-9 codes, for one, are mapped to the hand-written groups).
A column the draft does not release (identifier, text) counts as all-null. The target:
the draft's mean 2-way TVD within 10% of the hand-written one's.

Usage::

    PYTHONPATH=. python benchmarks/schema_draft.py [--runs 3] [--engines mst] [--datasets nist,diabetes130]

Writes ``benchmarks/results/schema_draft.md`` and ``.json``. With ``--scale TABLE``, times
one draft of a large generated table instead (peak RSS of the child process), written to
``schema_draft_scale.md`` and ``.json``. Internal benchmark figures,
computed on real rows; never for a bundle.
"""

from __future__ import annotations

import argparse
import json
import shutil
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

from dpsynth.config import ReleaseConfig  # noqa: E402
from dpsynth.draft import DraftConfig  # noqa: E402
from dpsynth.io import read_table  # noqa: E402
from dpsynth.pipeline import draft_schema, release  # noqa: E402
from dpsynth.privacy.accountant import ApproxDP  # noqa: E402
from dpsynth.privacy.ledger import open_ledger  # noqa: E402
from dpsynth.schema import Schema, load_schema  # noqa: E402

DATASETS = {
    "diabetes130": (REPO / "schemas/diabetes130.yaml",
                    REPO / "examples/diabetes130/diabetic_data.csv.gz"),
    "nist": (REPO / "schemas/nist_excerpts.yaml",
             Path("/work/shared/data/nist_excerpts/national2019.csv.gz")),
}
DRAFT_EPSILON = 0.1
RELEASE_EPSILON = 1.0
TARGET = 1.10
"""The draft's 2-way TVD may be at most this times the hand-written schema's."""


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def as_values(table: pl.DataFrame, hand: Schema, draft: Schema | None = None) -> pl.DataFrame:
    """A synthetic table read as the real table is: every hand-schema column as raw text
    (absent: all null), then :func:`raw_fidelity.real_values` with the hand-written schema.
    A column the draft made a ``code`` column holds group labels (``"250 category"``,
    ``"001-139 infectious ..."``): each is read as the code it starts with, so a chapter
    lands in the hand-written group holding it."""
    code_cols = {c.name for c in draft.measured_columns if c.kind == "code"} if draft else set()
    cols = []
    for c in hand.measured_columns:
        if c.name in table.columns:
            s = table[c.name]
            if c.name in code_cols:
                s = s.cast(pl.String).str.extract(r"^([A-Z]?\d+)", 1)
            if s.dtype in (pl.Float32, pl.Float64):  # 3.0 -> "3" as a CSV would hold it
                s = pl.Series(c.name, [None if v is None else f"{v:.12g}" for v in s.to_list()],
                              dtype=pl.String)
            cols.append(s.cast(pl.String).alias(c.name))
        else:
            cols.append(pl.Series(c.name, [None] * table.height, dtype=pl.String))
    return real_values(pl.DataFrame(cols), hand)


def released(schema_path: Path, data: Path, ledger: str, out: Path, engine: str,
             seed: int) -> pl.DataFrame:
    cfg = ReleaseConfig(schema_path=schema_path, input_path=data, out_dir=out,
                        epsilon=RELEASE_EPSILON, engine=engine, ledger_url=ledger,
                        dataset_id="bench", seed=seed)
    result = release(cfg)
    return pl.read_parquet(Path(result.bundle) / "synthetic.parquet")


def one_run(name: str, engine: str, run: int, work: Path, real: pl.DataFrame,
            draft_epsilon: float = DRAFT_EPSILON) -> dict[str, Any]:
    hand_path, data = DATASETS[name]
    hand = load_schema(hand_path)
    d = work / f"{name}-{engine}-{run}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    url = f"sqlite:///{d / 'ledger.db'}"
    with open_ledger(url) as led:
        led.init_dataset("bench", ApproxDP(10.0, 1e-6))
    unit = hand.privacy_unit
    t0 = time.perf_counter()
    dr = draft_schema(DraftConfig(input_path=data, out_path=d / "draft.yaml", ledger_url=url,
                                  dataset_id="bench", epsilon=draft_epsilon,
                                  unit_column=unit.column,
                                  max_rows=unit.max_rows if unit.column else None))
    draft_s = time.perf_counter() - t0
    say(f"{name} run {run}: draft in {draft_s:.0f}s; releasing with it ({engine})")
    synth_draft = released(d / "draft.yaml", data, url, d / "bundle-draft", engine, run)
    say(f"{name} run {run}: releasing with the hand-written schema ({engine})")
    synth_hand = released(hand_path, data, url, d / "bundle-hand", engine, run)
    columns = [c.name for c in hand.measured_columns]
    numeric = numeric_columns(hand)
    tv_draft = raw_tvd(real, as_values(synth_draft, hand, load_schema(d / "draft.yaml")),
                       columns, numeric)
    tv_hand = raw_tvd(real, released_values(synth_hand, hand), columns, numeric)
    kinds: dict[str, int] = {}
    for k in dr.columns.values():
        kinds[k] = kinds.get(k, 0) + 1
    return {
        "dataset": name, "engine": engine, "run": run, "draft_epsilon": draft_epsilon,
        "draft_seconds": round(draft_s, 1),
        "draft_kinds": kinds, "draft_released_columns": dr.released_columns,
        "draft_2way": tv_draft["tvd_2way"], "hand_2way": tv_hand["tvd_2way"],
        "draft_1way": tv_draft["tvd_1way"], "hand_1way": tv_hand["tvd_1way"],
        "ratio_2way": tv_draft["tvd_2way"] / tv_hand["tvd_2way"],
        "worst_columns": sorted(((c, round(tv_draft["per_column"][c] - tv_hand["per_column"][c],
                                           3)) for c in columns), key=lambda x: -x[1])[:5],
    }


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"# Schema draft (epsilon {args.draft_epsilon:g}) vs hand-written schema: release at "
        "epsilon 1",
        "",
        f"Command: `PYTHONPATH=. python benchmarks/schema_draft.py --runs {args.runs} "
        f"--engines {args.engines} --datasets {args.datasets}"
        + (f" --draft-epsilon {args.draft_epsilon:g}" if args.draft_epsilon != DRAFT_EPSILON
           else "") + (f" --out {args.out}" if args.out != HERE / "results" / "schema_draft"
                       else "") + "`",
        "",
        "Raw-value TVD against the real table (`raw_fidelity.raw_tvd`), both synthetic tables "
        "read through the hand-written schema; a column the draft does not release counts as "
        f"all-null. Target: draft 2-way TVD <= {TARGET:.2f} x hand-written.",
        "",
        "| dataset | engine | run | draft s | released cols (draft) | 1-way draft | 1-way hand "
        "| 2-way draft | 2-way hand | ratio 2-way | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['engine']} | {r['run']} | {r['draft_seconds']} | "
            f"{r['draft_released_columns']} | {r['draft_1way']:.4f} | {r['hand_1way']:.4f} | "
            f"{r['draft_2way']:.4f} | {r['hand_2way']:.4f} | {r['ratio_2way']:.2f} | "
            f"{'met' if r['ratio_2way'] <= TARGET else 'missed'} |")
    lines += ["", "Mean over runs:", "",
              "| dataset | engine | 2-way draft | 2-way hand | ratio | target |", "|---|---|---|---|---|---|"]
    for key in sorted({(r["dataset"], r["engine"]) for r in rows}):
        rs = [r for r in rows if (r["dataset"], r["engine"]) == key]
        dm = float(np.mean([r["draft_2way"] for r in rs]))
        hm = float(np.mean([r["hand_2way"] for r in rs]))
        lines.append(f"| {key[0]} | {key[1]} | {dm:.4f} | {hm:.4f} | {dm / hm:.2f} | "
                     f"{'met' if dm / hm <= TARGET else 'missed'} |")
    lines += ["", "Columns whose 1-way TVD the draft worsens most (draft minus hand, per run):", ""]
    for r in rows:
        worst = ", ".join(f"{c} +{v}" for c, v in r["worst_columns"])
        lines.append(f"- {r['dataset']} {r['engine']} run {r['run']}: {worst}")
    return "\n".join(lines) + "\n"


def scale(table: Path, unit: str, out: Path) -> None:
    """Time one draft of a large table in a child process and record its peak RSS (the
    table is generated, e.g. ``scale.py``'s 10M-row diabetes table: nothing private)."""
    import os
    import subprocess

    work = Path(tempfile.mkdtemp(prefix="schema-draft-scale-"))
    url = f"sqlite:///{work / 'ledger.db'}"
    with open_ledger(url) as led:
        led.init_dataset("scale", ApproxDP(3.0, 1e-9))
    code = ("import sys; from pathlib import Path; from dpsynth.pipeline import DraftConfig, "
            "draft_schema; draft_schema(DraftConfig(input_path=Path(sys.argv[1]), "
            "out_path=Path(sys.argv[2]), ledger_url=sys.argv[3], dataset_id='scale', "
            "unit_column=sys.argv[4]), progress=lambda m: print(m, file=sys.stderr, flush=True))")
    # a script file, not ``python -c``: under -c an import of great_expectations (pyspark's
    # connect utilities) can end the interpreter silently with status 0
    script = work / "draft_child.py"
    script.write_text(code.replace("; ", "\n") + "\n")
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, str(script), str(table), str(work / "draft.yaml"), url,
                          unit], env={**os.environ, "PYTHONPATH": str(REPO)})
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0 or not (work / "draft.yaml").exists():
        raise SystemExit(f"the draft child failed (wait status {status}); nothing recorded")
    rows = sum(1 for _ in table.open("rb")) - 1
    result = {"table": str(table), "rows": rows, "exit_status": status, "wall_s": round(wall, 1),
              "user_cpu_s": round(usage.ru_utime, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}
    text = ("# schema draft on a large table\n\n"
            f"Command: `PYTHONPATH=. python benchmarks/schema_draft.py --scale {table} "
            f"--unit-column {unit}`\n\n| rows | wall s | user CPU s | peak RSS MB |\n"
            f"|---|---|---|---|\n| {rows} | {result['wall_s']} | {result['user_cpu_s']} | "
            f"{result['peak_rss_mb']} |\n")
    print(text)
    Path(str(out) + "_scale.md").write_text(text)
    Path(str(out) + "_scale.json").write_text(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=Path, default=None,
                    help="Instead: time one draft of this (generated) table, peak RSS.")
    ap.add_argument("--unit-column", default="patient_nbr")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--draft-epsilon", type=float, default=DRAFT_EPSILON)
    ap.add_argument("--engines", default="mst")
    ap.add_argument("--datasets", default="diabetes130,nist")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "schema_draft")
    args = ap.parse_args()
    if args.scale is not None:
        scale(args.scale, args.unit_column, args.out)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="schema-draft-bench-"))
    rows: list[dict[str, Any]] = []
    for name in args.datasets.split(","):
        hand_path, data = DATASETS[name]
        hand = load_schema(hand_path)
        real = real_values(read_table(data, hand), hand)
        for engine in args.engines.split(","):
            for run in range(1, args.runs + 1):
                say(f"{name} {engine} run {run}/{args.runs}")
                rows.append(one_run(name, engine, run, work, real, args.draft_epsilon))
                r = rows[-1]
                say(f"  2-way TVD draft {r['draft_2way']:.4f} hand {r['hand_2way']:.4f} "
                    f"(ratio {r['ratio_2way']:.2f})")
    text = write_results(rows, args)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(str(args.out) + ".md").write_text(text)
    Path(str(args.out) + ".json").write_text(json.dumps(rows, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
