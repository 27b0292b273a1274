"""Engine settings compared on the same noise draws: seeded releases, scored, then deleted.

Each (configuration, seed) runs the real ``dpsynth release`` (the CLI, in a child process)
with two sources of randomness fixed by the seed:

* OpenDP's draws are replaced by numpy noise of the same scales (``SeededNoise`` of
  ``benchmarks/aim_profile.py``);
* the bounding secret (which encounter per patient is kept, ``dpsynth.io.bounding``) is
  derived from the seed instead of ``secrets.token_bytes``.

Two configurations then see the same rows and the same noise until their choices differ, so a
difference shows in a few seeds instead of dozens of DP runs. This is NOT differential
privacy: the bundle goes to a temporary directory, is scored and deleted; nothing of it is
kept or printed but the figures below.

Figures, on the values as released (``raw_fidelity``): mean raw 2-way TVD against the real
rows; for diabetes130 (the training split of ``benchmarks/tstr.py``, TVD against its training
rows bounded to k = 1) also the TSTR AUC of ``readmitted == "<30"`` and the 2-way TVD inside
race = Hispanic (``SUBGROUP``); the fit's seconds (the
release's ``timings.fit``; compare loosely, the machine is shared).

Datasets: ``nist`` (national2019), ``diabetes130`` (the shipped schema, with its
``analysis``), ``diabetes130-plain`` (the same without ``analysis``). A configuration is
``default`` or ``KEY=VALUE`` engine options joined by ``;``. Usage::

    PYTHONPATH=$PWD python benchmarks/seeded_options.py --engine aim --seeds 1,2,3,4 \\
        --datasets diabetes130 --configs "default" "rounds_per_column=16;round_iters=100" \\
        --out benchmarks/results/NAME        # -> NAME.json, NAME.md (and the table on stdout)
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

NIST = Path("/work/shared/data/nist_excerpts/national2019.csv.gz")
SCHEMAS = {"nist": REPO / "schemas/nist_excerpts.yaml", "diabetes130": REPO / "schemas/diabetes130.yaml",
           "diabetes130-plain": REPO / "schemas/diabetes130.yaml"}
SUBGROUP = ("race", "Hispanic")
"""diabetes130's subgroup figure: the group ``analysis_targets.py`` reports (2.1 % of patients)."""


class _SeededSecrets:
    """Stands in for the ``secrets`` module inside ``dpsynth.io.bounding`` (benchmark only)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def token_bytes(self, n: int) -> bytes:
        return hashlib.sha256(f"bounding {self.seed}".encode()).digest()[:n]


def _options(config: str) -> list[str]:
    """``--engine-option`` arguments of a configuration."""
    return [] if config == "default" else [a for o in config.split(";") if o
                                          for a in ("--engine-option", o)]


def seeded_release(dataset: str, engine: str, config: str, seed: int, work: Path) -> dict:
    """One seeded release into ``work / "bundle"`` (call in a child process: it replaces
    OpenDP's noise and the bounding secret process-wide). Returns the schema, the real
    rows to score against (``real``; ``test`` for diabetes130) and the release's JSON."""
    from aim_profile import SeededNoise
    from analysis_targets import plain_schema
    from raw_fidelity import real_values
    from tstr import bounded_train, load_split, write_train

    import dpsynth.io.bounding as bounding
    import dpsynth.privacy.mechanisms as mechanisms
    from dpsynth.cli import main as cli
    from dpsynth.schema import load_schema

    mechanisms.run_opendp = SeededNoise(seed)  # read by each new session: this process only
    bounding.secrets = _SeededSecrets(seed)  # type: ignore[assignment]
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
             "--engine", engine, "--out", str(work / "bundle"), "--ledger", ledger, "--seed", "1",
             *_options(config), "--quiet", "--json"], standalone_mode=False)
    return {"schema": schema, "real": real, "test": test, "bundle": work / "bundle",
            "release": json.loads(record.getvalue())}


def score(synth_table: pl.DataFrame, made: dict) -> dict:
    """Raw 2-way TVD of a released-format table; for diabetes130 also the TSTR AUC and the
    2-way TVD inside ``SUBGROUP`` (``analysis_targets.py``'s subgroup figure)."""
    from analysis_targets import subgroup_tvd
    from raw_fidelity import numeric_columns, raw_tvd, released_values
    from tstr import TARGET, tstr_auc

    schema = made["schema"]
    synth = released_values(synth_table, schema)
    cols = [c.name for c in schema.measured_columns]
    num = numeric_columns(schema)
    out = {"tvd_2way": raw_tvd(made["real"], synth, cols, num, n_threeway=1)["tvd_2way"]}
    if made["test"] is not None:
        out["auc"] = tstr_auc(synth, made["test"], schema, *TARGET)
        out["subgroup_tvd_2way"] = subgroup_tvd(made["real"], synth, schema, SUBGROUP)
    return out


def _worker(dataset: str, engine: str, config: str, seed: int, work: Path) -> dict:
    """One seeded release in ``work`` (a temporary directory), scored; runs in a child."""
    import polars as pl

    made = seeded_release(dataset, engine, config, seed, work)
    return {"dataset": dataset, "engine": engine, "config": config, "seed": seed,
            **score(pl.read_parquet(work / "bundle/synthetic.parquet"), made),
            "fit_s": made["release"]["timings"]["fit"]}


def run_children(script: str, jobs: list[tuple], parallel: int) -> list:
    """Each job's ``script --worker JOB...`` in a child process, ``parallel`` at a time; the
    JSON of each child's last stdout line, in job order (echoed to stderr as it arrives)."""
    def one(job: tuple) -> object:
        r = subprocess.run([sys.executable, script, "--worker", *map(str, job)],
                           capture_output=True, text=True, check=False, cwd=REPO)
        if r.returncode != 0:
            raise SystemExit(f"{job} failed: {r.stderr.strip()[-600:]}")
        got = json.loads(r.stdout.strip().splitlines()[-1])
        print(json.dumps(got), file=sys.stderr, flush=True)
        return got

    with ThreadPoolExecutor(max(1, parallel)) as pool:
        return list(pool.map(one, jobs))


def save(text: str, rows: list[dict] | None, out: Path | None) -> None:
    """Print the markdown; with ``out``, write OUT.md (and OUT.json of the rows)."""
    print(text)
    if out:
        if rows is not None:
            out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
        out.with_suffix(".md").write_text(text)


def _commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "dpsynth"], cwd=REPO,
                           capture_output=True, text=True, check=False).stdout.strip()
    return head + (" (with uncommitted changes to dpsynth/)" if dirty else "")


def markdown(rows: list[dict], command: str, commit: str) -> str:
    """Means per (dataset, engine, configuration), then every release."""
    lines = [f"Command: `{command}`  ", f"Code: {commit}. Seeded numpy noise and bounding secret "
             "(not DP; `benchmarks/seeded_options.py`).", "",
             "| dataset | engine | configuration | seeds | mean raw 2-way TVD | mean TSTR AUC "
             "| mean subgroup 2-way TVD | mean fit s |",
             "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["engine"], r["config"]), []).append(r)
    for (dataset, engine, config), rs in groups.items():
        aucs = [r["auc"] for r in rs if "auc" in r]
        subs = [r["subgroup_tvd_2way"] for r in rs if "subgroup_tvd_2way" in r]
        auc = f"{statistics.fmean(aucs):.3f}" if aucs else "—"
        sub = f"{statistics.fmean(subs):.4f}" if subs else "—"
        lines.append(f"| {dataset} | {engine} | `{config}` | {len(rs)} | "
                     f"{statistics.fmean(r['tvd_2way'] for r in rs):.4f} | {auc} | {sub} | "
                     f"{statistics.fmean(r['fit_s'] for r in rs):.1f} |")
    lines += ["", "| dataset | engine | configuration | seed | raw 2-way TVD | TSTR AUC | "
              "subgroup 2-way TVD | fit s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        auc = f"{r['auc']:.3f}" if "auc" in r else "—"
        sub = f"{r['subgroup_tvd_2way']:.4f}" if "subgroup_tvd_2way" in r else "—"
        lines.append(f"| {r['dataset']} | {r['engine']} | `{r['config']}` | {r['seed']} | "
                     f"{r['tvd_2way']:.4f} | {auc} | {sub} | {r['fit_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", default="aim", choices=("aim", "mst"))
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--configs", nargs="+", default=["default"],
                   help='"default" or "KEY=VALUE;KEY=VALUE" engine options')
    p.add_argument("--datasets", default="diabetes130")
    p.add_argument("--parallel", type=int, default=2, help="releases at a time")
    p.add_argument("--out", type=Path, help="writes OUT.json and OUT.md")
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        dataset, engine, config, seed = a.worker
        with tempfile.TemporaryDirectory(prefix="seeded_options-") as tmp:
            print(json.dumps(_worker(dataset, engine, config, int(seed), Path(tmp))))
        return 0
    jobs = [(dataset, a.engine, config, int(seed)) for dataset in a.datasets.split(",")
            for seed in a.seeds.split(",") for config in a.configs]
    rows = run_children(__file__, jobs, a.parallel)
    command = "python benchmarks/seeded_options.py " + " ".join(
        f'"{x}"' if ";" in x or " " in x else x for x in (argv if argv is not None else sys.argv[1:]))
    save(markdown(rows, command, _commit()), rows, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
