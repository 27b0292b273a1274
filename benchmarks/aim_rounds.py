"""AIM's planned rounds per column and iterations per round, compared on the same noise draws.

Each (dataset, setting, seed) runs the real ``dpsynth release`` (the CLI, in a child process)
with OpenDP's draw replaced by numpy noise of the same scales, seeded (``SeededNoise`` of
``benchmarks/aim_profile.py``): two settings then see the same noise until their choices
differ, so a difference of a few percent is visible in two seeds instead of dozens of DP
runs. This is NOT differential privacy: the bundle goes to a temporary directory, is scored
and deleted; nothing of it is kept or printed but the figures below.

Figures, on the values as released (``raw_fidelity``): mean raw 2-way TVD against the real
rows; for diabetes130 (the training split of ``benchmarks/tstr.py``, TVD against its
training rows bounded to k = 1) also the TSTR AUC of ``readmitted == "<30"``; the fit's
seconds (the release's ``timings.fit``; compare loosely, the machine is shared).

Datasets: ``nist`` (national2019), ``diabetes130`` (the shipped schema, with its
``analysis``), ``diabetes130-plain`` (the same without ``analysis``). Usage::

    PYTHONPATH=$PWD python benchmarks/aim_rounds.py --seeds 1,2 \\
        --settings 16x100,4x100,4x50 --datasets nist,diabetes130,diabetes130-plain
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

NIST = Path("/work/shared/data/nist_excerpts/national2019.csv.gz")
SCHEMAS = {"nist": REPO / "schemas/nist_excerpts.yaml", "diabetes130": REPO / "schemas/diabetes130.yaml",
           "diabetes130-plain": REPO / "schemas/diabetes130.yaml"}


def _worker(dataset: str, setting: str, seed: int, work: Path) -> dict:
    """One seeded release in ``work`` (a temporary directory), scored; runs in a child."""
    import polars as pl
    from aim_profile import SeededNoise
    from analysis_targets import plain_schema
    from raw_fidelity import numeric_columns, raw_tvd, real_values, released_values
    from tstr import TARGET, bounded_train, load_split, tstr_auc, write_train

    import dpsynth.privacy.mechanisms as mechanisms
    from dpsynth.cli import main as cli
    from dpsynth.schema import load_schema

    mechanisms.run_opendp = SeededNoise(seed)  # read by each new session: this process only
    rounds, iters = (int(x) for x in setting.split("x"))
    schema_path = SCHEMAS[dataset]
    if dataset == "diabetes130-plain":
        schema_path = plain_schema(schema_path, work / "plain.yaml")
    schema = load_schema(schema_path)
    if dataset == "nist":
        from dpsynth.io import read_table

        data = NIST
        real = real_values(read_table(NIST, schema), schema)
        test = None
    else:
        _, train, test_raw = load_split(SCHEMAS["diabetes130"])
        data = write_train(train, work / "train.csv.gz")
        unit = schema.privacy_unit.column
        assert unit is not None
        real = real_values(bounded_train(train, unit, schema.privacy_unit.max_rows), schema)
        test = real_values(test_raw, schema)
    ledger = f"sqlite:///{work / 'ledger.db'}"
    cli(["ledger", "init", "--ledger", ledger, "--dataset-id", schema.name, "--total-epsilon", "10"],
        standalone_mode=False)
    record = io.StringIO()
    with contextlib.redirect_stdout(record):
        cli(["release", "--schema", str(schema_path), "--input", str(data), "--epsilon", "1",
             "--engine", "aim", "--out", str(work / "bundle"), "--ledger", ledger, "--seed", "1",
             "--engine-option", f"rounds_per_column={rounds}", "--engine-option", f"round_iters={iters}",
             "--quiet", "--json"], standalone_mode=False)
    synth = released_values(pl.read_parquet(work / "bundle/synthetic.parquet"), schema)
    cols = [c.name for c in schema.measured_columns]
    out = {"dataset": dataset, "setting": setting, "seed": seed,
           "tvd_2way": raw_tvd(real, synth, cols, numeric_columns(schema), n_threeway=1)["tvd_2way"]}
    if test is not None:
        out["auc"] = tstr_auc(synth, test, schema, *TARGET)
    out["fit_s"] = json.loads(record.getvalue())["timings"]["fit"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--settings", default="16x100,4x100,4x50",
                   help="ROUNDS_PER_COLUMNxITERATIONS_PER_ROUND, comma-separated")
    p.add_argument("--datasets", default="nist,diabetes130,diabetes130-plain")
    p.add_argument("--out", type=Path, default=HERE / "results/aim_rounds.json")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        with tempfile.TemporaryDirectory(prefix="aim_rounds-") as tmp:
            print(json.dumps(_worker(a.worker[0], a.worker[1], int(a.worker[2]), Path(tmp))))
        return 0
    rows = []
    for dataset in a.datasets.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            for setting in a.settings.split(","):
                r = subprocess.run([sys.executable, __file__, "--worker", dataset, setting, str(seed)],
                                   capture_output=True, text=True, check=False)
                if r.returncode != 0:
                    raise SystemExit(f"{dataset} {setting} seed {seed} failed: {r.stderr.strip()[-600:]}")
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
                print(rows[-1], file=sys.stderr, flush=True)
    a.out.write_text(json.dumps(rows, indent=1))
    print("| dataset | setting (rounds per column x iterations) | seed | raw 2-way TVD | TSTR AUC | fit s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        auc = f"{r['auc']:.3f}" if "auc" in r else "—"
        print(f"| {r['dataset']} | {r['setting']} | {r['seed']} | {r['tvd_2way']:.4f} | {auc} | "
              f"{r['fit_s']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
