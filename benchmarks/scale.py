"""Scale benchmark: `dpsynth release` on 1M, 3M and 10M-row patient tables.

Generates realistic large tables by sampling a model fitted to the shipped diabetes130
example (fresh patient ids, 1-5 encounters per patient, fresh encounter ids), then times
`dpsynth release` (mst and aim) in a subprocess per run and prints a table: wall time,
peak RSS, rows/second, and where the time went (read+check+encode, fit, the rest), with
the counting floor of a plain polars `scan_csv().group_by().len()` over the same columns.

    python benchmarks/scale.py --sizes 1000000 3000000 10000000 --engines mst aim
    python benchmarks/scale.py --sizes 1000000 10000000 --engines mst --formats csv parquet \
        --out benchmarks/results/scale-parquet.md

``--formats parquet`` releases from the same rows written as typed Parquet (:func:`to_parquet`).

Results are written to benchmarks/results/scale.md (and .json). Generated tables are
cached in --workdir (default /tmp/dpsynth-scale); they are synthetic, so nothing private.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
#: The release's stages, as its ``--json`` ``timings`` name them (``count`` is part of ``fit``).
STAGES = ("read_check_encode", "fit", "count", "sample", "validate", "bundle")
SCHEMA = ROOT / "schemas" / "diabetes130.yaml"
EXAMPLE = ROOT / "examples" / "diabetes130" / "diabetic_data.csv.gz"


def example_model(seed: int = 0) -> tuple[Any, Any, Any]:
    """(model, domain, schema): an MST model of the diabetes130 example at epsilon 10 (real
    OpenDP noise; internal, nothing of it is released), its domain and the schema."""
    from dpsynth.domain import Domain
    from dpsynth.engines import get_engine
    from dpsynth.io import load_encoded
    from dpsynth.privacy.accountant import Accountant, Budget, rho_for
    from dpsynth.privacy.session import MeasurementSession
    from dpsynth.schema import load_schema

    shipped = load_schema(SCHEMA)
    # The generator only needs a model of the table's own columns: without `represent:
    # all_rows`, whose internal row-count column a bare session does not add.
    schema = dataclasses.replace(shipped, privacy_unit=dataclasses.replace(
        shipped.privacy_unit, represent="kept_rows"))
    enc = load_encoded(EXAMPLE, schema, bounding_secret=seed)
    session = MeasurementSession(enc.codes, enc.columns, enc.sizes, enc.contribution_bound,
                                 Accountant(Budget(rho_for(10.0, 1e-9))))
    return get_engine("mst").fit(session, None), Domain.from_schema(schema), schema


def generate(n_rows: int, path: Path, seed: int = 0) -> None:
    """Sample n_rows encounters from an MST model of diabetes130 (epsilon 10), through
    the release's own generation step, so every row satisfies the schema's rules."""
    from dpsynth.generate import generate as generate_rows

    model, domain, schema = example_model(seed)
    rng = np.random.default_rng(seed)
    first_patient = 0
    chunk = 1_000_000
    for start in range(0, n_rows, chunk):
        m = min(chunk, n_rows - start)
        df = generate_rows(model, domain, schema, m, rng).table
        per = rng.integers(1, 6, size=m)  # 1-5 rows per patient
        pid = np.repeat(np.arange(first_patient, first_patient + m), per)[:m]
        first_patient = int(pid[-1]) + 1
        df = df.with_columns(
            pl.Series("encounter_id", np.arange(start, start + m) + 10_000_000),
            pl.Series("patient_nbr", pid + 100_000),
        )
        # decoded text columns are pl.Enum over the labels; a raw code is not a label
        df = df.with_columns([pl.col(c.name).cast(pl.String).replace(_raw_codes(c))
                              for c in schema.columns if c.kind == "code"])
        # CSV text as the hospital exports it: '?' for missing
        df = df.with_columns(pl.all().cast(pl.String).fill_null("?"))
        df = df.select([c.name for c in schema.columns])
        with path.open("ab" if start else "wb") as fh:
            df.write_csv(fh, include_header=start == 0)


#: Rows per Parquet row group: pyarrow's default (``pandas.DataFrame.to_parquet``), the
#: commonest way a custodian's export is written.
ROW_GROUP_ROWS = 1 << 20


def parquet_dtypes() -> dict[str, pl.DataType]:
    """The column types ``polars.read_csv(..., infer_schema_length=None)`` gives the
    shipped diabetes130 table (ids and integer-coded columns Int64, the rest String):
    how a custodian's Parquet export of it would be typed."""
    return dict(pl.read_csv(EXAMPLE, infer_schema_length=None).schema)


def to_parquet(csv_path: Path, path: Path, row_group_rows: int = ROW_GROUP_ROWS) -> None:
    """The generated CSV as typed Parquet (streamed; zstd, ``row_group_rows`` a group)."""
    tmp = path.with_suffix(".tmp")
    pl.scan_csv(csv_path, schema=parquet_dtypes()).sink_parquet(
        tmp, row_group_size=row_group_rows, compression="zstd")
    tmp.rename(path)


def _raw_codes(col: Any) -> dict[str, str]:
    """Group label -> a raw code of that group (decoded code columns hold labels)."""
    out = {}
    for g in col.groups:
        if g.ranges:
            out[g.label] = str(int(g.ranges[0][0]))
            continue
        for cand in (g.prefixes[0] + "01", g.prefixes[0] + "800", g.prefixes[0] + "x"):
            if col.pattern is None or re.fullmatch(col.pattern, cand):
                out[g.label] = cand
                break
    return out


def run_release(table: Path, engine: str, workdir: Path, backend: str = "polars") -> dict[str, object]:
    out = workdir / f"bundle-{table.stem}-{engine}-{time.time_ns()}"
    ledger = f"sqlite:///{workdir / 'ledger.db'}"
    env = dict(os.environ, DPSYNTH_LEDGER=ledger)
    subprocess.run([sys.executable, "-m", "dpsynth.cli", "ledger", "init", "--dataset-id",
                    "scale", "--total-epsilon", "1000000"], check=True, env=env,
                   capture_output=True)
    cmd = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-m", "dpsynth.cli", "release",
           "--schema", str(SCHEMA), "--input", str(table), "--out", str(out), "--epsilon", "1",
           "--engine", engine, "--dataset-id", "scale", "--json", "--seed", "1",
           "--backend", backend, "--quiet"]
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed",
                "wall_s": wall}
    elapsed, rss_kb = res.stderr.strip().splitlines()[-1].split()
    result = json.loads(res.stdout)
    subprocess.run(["rm", "-rf", str(out)], check=False)
    return {"wall_s": float(elapsed), "peak_rss_mb": int(rss_kb) / 1024,
            "timings": result["timings"]}


def stage_breakdown(timings: dict[str, float]) -> str:
    """One line: each stage's seconds and share of the release's ``total``."""
    total = timings.get("total", 0.0)
    parts = []
    for k in STAGES:
        v = timings.get(k, 0.0)
        tag = " (in fit)" if k == "count" else f" {100 * v / total:.0f}%" if total > 0 else ""
        parts.append(f"{k} {v:.1f}s{tag}")
    return ", ".join(parts) + f"; total {total:.1f}s"


def _input(r: dict[str, Any]) -> str:
    """The input format and file size, e.g. ``parquet 115 MB``."""
    size = r.get("input_mb")
    return f"{r.get('format', 'csv')}" + (f" {float(size):,.0f} MB" if size is not None else "")


def _floor(n_rows: int, seconds: float) -> str:
    """The floor column: seconds (rows/s), or a dash when it was not timed."""
    return "–" if seconds != seconds else f"{seconds:.1f} ({n_rows / seconds:,.0f})"


def polars_floor(table: Path) -> float:
    """Seconds for one streaming pass of scan_csv + group_by(all released columns).len()."""
    from dpsynth.schema import load_schema

    cols = [c.name for c in load_schema(SCHEMA).measured_columns]
    t = time.perf_counter()
    pl.scan_csv(table, infer_schema=False).group_by(cols).len().collect(engine="streaming")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    ap.add_argument("--engines", nargs="+", default=["mst", "aim"])
    ap.add_argument("--backends", nargs="+", default=["polars"], choices=["polars", "spark"])
    ap.add_argument("--skip-floor", action="store_true",
                    help="do not time the polars group_by floor (one more pass over the CSV)")
    ap.add_argument("--formats", nargs="+", default=["csv"], choices=["csv", "parquet"],
                    help="input formats; parquet is the same rows, typed (see parquet_dtypes)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/dpsynth-scale"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.md")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in args.sizes:
        csv_table = args.workdir / f"diabetes-{n}.csv"
        if not csv_table.exists():
            t = time.perf_counter()
            generate(n, csv_table)
            print(f"generated {csv_table} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        floor = float("nan") if args.skip_floor else polars_floor(csv_table)
        for fmt in args.formats:
            table = csv_table
            if fmt == "parquet":
                table = csv_table.with_suffix(".parquet")
                if not table.exists():
                    to_parquet(csv_table, table)
            for backend in args.backends:
                for engine in args.engines:
                    r = run_release(table, engine, args.workdir, backend)
                    r.update(rows=n, engine=engine, backend=backend, format=fmt, floor_s=floor,
                             input_mb=table.stat().st_size / 2**20)
                    print(json.dumps(r), file=sys.stderr)
                    if isinstance(r.get("timings"), dict):
                        print(f"{n:,} rows, {fmt}, {backend}, {engine}: "
                              f"{stage_breakdown(r['timings'])}", file=sys.stderr)
                    rows.append(r)
    lines = ["| rows | input | backend | engine | wall s | peak RSS GiB | rows/s | "
             "read+check+bound+encode s (rows/s) | fit s (of which counting) | sample s | "
             "validate s | bundle s | other s | polars floor s (rows/s) |", "|" + "---|" * 14]
    for r in rows:
        head = (f"| {r['rows']:,} | {_input(r)} | {r['backend']} | {r['engine']} | "
                f"{r['wall_s']:.1f} |")
        if "error" in r:
            lines.append(f"{head} error: {r['error']} |" + " |" * 8)
            continue
        tm = r["timings"]
        assert isinstance(tm, dict)
        n_rows, wall = int(r["rows"]), float(r["wall_s"])
        read = tm.get("read_check_encode", 0.0)
        parts = [read] + [tm.get(k, 0.0) for k in ("fit", "sample", "validate", "bundle")]
        lines.append(f"{head} {float(r['peak_rss_mb']) / 1024:.2f} | {n_rows / wall:,.0f} | "
                     f"{read:.1f} ({n_rows / read:,.0f}) | "
                     f"{parts[1]:.1f} ({tm.get('count', float('nan')):.1f}) | "
                     + " | ".join(f"{x:.1f}" for x in parts[2:])
                     + f" | {wall - sum(parts):.1f} | " + _floor(n_rows, float(r["floor_s"])) + " |")
    lines += ["", "Stage breakdown (seconds and share of the release's `total`; `count` is "
              "part of `fit`):", "",
              "| rows | input | backend | engine | " + " | ".join(STAGES) + " | total |",
              "|" + "---|" * (len(STAGES) + 5)]
    for r in rows:
        tm = r.get("timings")
        if not isinstance(tm, dict):
            continue
        total = float(tm.get("total", 0.0))
        cells = [f"{tm.get(k, 0.0):.1f}" + (f" ({100 * tm.get(k, 0.0) / total:.0f}%)"
                                             if total > 0 and k != "count" else "")
                 for k in STAGES]
        lines.append(f"| {r['rows']:,} | {_input(r)} | {r['backend']} | {r['engine']} | "
                     + " | ".join(cells) + f" | {total:.1f} |")
    header = (f"# dpsynth scale benchmark\n\nMachine: {platform.platform()}, "
              f"{os.cpu_count()} cores. Command: `python benchmarks/scale.py "
              f"--sizes {' '.join(map(str, args.sizes))} --engines {' '.join(args.engines)} "
              f"--backends {' '.join(args.backends)} --formats {' '.join(args.formats)}`\n\n"
              "Parquet input: the same rows as the CSV, typed as `polars.read_csv(..., "
              "infer_schema_length=None)` types the diabetes130 columns (13 Int64, 37 String), "
              f"zstd, {ROW_GROUP_ROWS:,} rows per row group (pyarrow's default).\n\n"
              "`other` is the rest of the wall time: interpreter start-up, ledger, hashing the "
              "input, reports.\n\n")
    text = header + "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
