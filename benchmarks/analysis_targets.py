"""Declared analysis targets on diabetes130 at epsilon 1 (issue 14's targets), several releases each.

Configurations (each released ``--runs`` times on the same training split):

* ``aim-targets`` / ``mst-targets``: this tree's CLI with the shipped schema, which declares
  ``analysis: {targets: [readmitted]}``;
* ``aim-plain`` / ``mst-plain``: this tree's CLI with the same schema minus its ``analysis``
  section (the workload without targets);
* ``v010-aim`` / ``v010-mst``: dpsynth 0.1.0 (commit 9cf5605, a worktree given by ``--v010``)
  with ITS OWN shipped schema (0.1.0 refuses the current one: its rules need a ``columns``
  key). Every column name is shared and 0.1.0's bins differ only at the edges (e.g.
  ``num_lab_procedures`` bounds [0, 150] vs [0, 149]), so all released columns are compared.

Per release, against real rows (internal figures, never for a bundle):

* **TSTR AUC** for ``readmitted == "<30"``: ``benchmarks/tstr.py``'s protocol (70/30 split by
  patient, gradient boosting on the values as released, ICD-9 columns left out, tested on the
  real 30 % with all their encounters);
* **2-way TVD** over all released columns: the raw-value TVD of ``raw_fidelity.raw_tvd``
  (numeric columns in the real table's decile cells, categories as text, code columns as
  their public groups), synthetic vs the real training rows bounded to k = 1 per patient
  (the table the release models; benchmark seed);
* **subgroup 2-way TVD**: the same, both tables restricted to one declared subgroup's group
  (``--subgroup``, default ``race=Hispanic``: about 2 % of the patients, see the results).

Releases run through the real CLI (a throwaway ledger each) in a work directory; existing
bundles are reused, so the script can be stopped and resumed. Usage::

    python benchmarks/analysis_targets.py --runs 3                    # run what is missing, evaluate
    python benchmarks/analysis_targets.py --runs 3 --no-release       # evaluate existing bundles
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from raw_fidelity import numeric_columns, raw_tvd, real_values, released_values  # noqa: E402
from tstr import (  # noqa: E402
    SPLIT_SEED,
    TARGET,
    bounded_train,
    independent_floor,
    load_split,
    real_train_ceiling,
    tstr_auc,
    write_train,
)

from dpsynth.schema import Schema  # noqa: E402


def _opts(**options: float) -> tuple[str, ...]:
    """``--engine-option KEY=VALUE`` arguments."""
    return tuple(a for k, v in options.items() for a in ("--engine-option", f"{k}={v}"))


CONFIGS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    # name: (engine, schema key, code tree, extra release arguments)
    "aim-targets": ("aim", "shipped", "this", ()),
    "aim-plain": ("aim", "plain", "this", ()),
    "v010-aim": ("aim", "v010", "v010", ()),
    "mst-targets": ("mst", "shipped", "this", ()),
    "mst-plain": ("mst", "plain", "this", ()),
    "v010-mst": ("mst", "v010", "v010", ()),
    # not run by default (--configs): other up-front shares and numbers of chosen target pairs
    "aim-targets-share20-pairs8": ("aim", "shipped", "this", _opts(analysis_share=0.2, analysis_pairs=8)),
    "aim-targets-share25-pairs10": ("aim", "shipped", "this", _opts(analysis_share=0.25, analysis_pairs=10)),
    "aim-targets-share30-pairs12": ("aim", "shipped", "this", _opts(analysis_share=0.3, analysis_pairs=12)),
    "aim-targets-share40-pairs10": ("aim", "shipped", "this", _opts(analysis_share=0.4, analysis_pairs=10)),
    "aim-targets-share45-pairs10": ("aim", "shipped", "this", _opts(analysis_share=0.45, analysis_pairs=10)),
    # the default before the targets got their weight as
    # budget (every target pair measured first from 10 %, analysis weight 4 in selection)
    "aim-targets-w4-all": ("aim", "shipped", "this", _opts(analysis_weight=4, analysis_share=0.1,
                                                            analysis_pairs=47)),
    # not run by default: the same with a larger up-front share
    "aim-targets-w4-all-share30": ("aim", "shipped", "this", _opts(analysis_weight=4, analysis_share=0.3,
                                                                    analysis_pairs=47)),
    # not run by default: the same with analysis marginals as heavy as generic ones in selection
    "aim-targets-w1-all": ("aim", "shipped", "this", _opts(analysis_weight=1, analysis_share=0.1,
                                                            analysis_pairs=47)),
}
DEFAULT_CONFIGS = ("aim-targets", "aim-plain", "v010-aim", "mst-targets", "mst-plain", "v010-mst")
SHIPPED = "aim-targets"
"""The configuration the release runs by default (the shipped schema, default settings)."""
TARGET_AUC = 0.64
TVD_SLACK = 1.10


def plain_schema(shipped: Path, out: Path) -> Path:
    """The shipped schema without its ``analysis:`` block (everything else byte-identical)."""
    lines = shipped.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("analysis:"))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith((" ", "#")))
    out.write_text("".join(lines[:start] + lines[end:]))
    return out


def release(cfg: str, run_no: int, work: Path, train_csv: Path, schemas: dict[str, Path],
            trees: dict[str, Path], epsilon: float) -> Path:
    """One release through the CLI (reused when its bundle exists); returns the bundle."""
    engine, schema_key, tree, extra = CONFIGS[cfg]
    d = work / cfg
    bundle = d / f"run{run_no}"
    if (bundle / "synthetic.parquet").is_file():
        return bundle
    d.mkdir(parents=True, exist_ok=True)
    ledger = d / "ledgers" / f"ledger{run_no}.db"  # not beside the bundle (the release warns)
    ledger.parent.mkdir(exist_ok=True)
    ledger.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(trees[tree])}
    # run from the code tree: ``python -m`` puts the working directory first on sys.path,
    # so from this checkout a 0.1.0 run would import this tree's dpsynth
    run = functools.partial(subprocess.run, env=env, cwd=trees[tree])
    cli = [sys.executable, "-m", "dpsynth"]
    run([*cli, "ledger", "init", "--ledger", f"sqlite:///{ledger.resolve()}", "--dataset-id",
         "diabetes130", "--total-epsilon", "10"], check=True, capture_output=True)
    t0 = time.perf_counter()
    print(f"  {cfg} run {run_no}: releasing ({engine}) ...", file=sys.stderr, flush=True)
    r = run([*cli, "release", "--schema", str(schemas[schema_key].resolve()), "--input",
             str(train_csv.resolve()), "--epsilon", str(epsilon), "--engine", engine, "--out",
             str(bundle.resolve()), "--ledger", f"sqlite:///{ledger.resolve()}", "--seed", str(run_no),
             "--quiet", "--json", *extra], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{cfg} run {run_no} failed (exit {r.returncode}): {r.stderr.strip()[-400:]}")
    (d / f"run{run_no}.json").write_text(r.stdout)
    print(f"  {cfg} run {run_no}: done in {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    return bundle


def restrict(values: pl.DataFrame, column: str, value: str) -> pl.DataFrame:
    return values.filter(pl.col(column).cast(pl.String) == value)


def subgroup_tvd(real: pl.DataFrame, other: pl.DataFrame, schema: Schema,
                 subgroup: tuple[str, str]) -> float | None:
    """Raw 2-way TVD over the released columns but the subgroup's own, both tables
    restricted to the subgroup's group (None when ``other`` has no row of it)."""
    s_col, s_val = subgroup
    mine = restrict(other, s_col, s_val)
    if not mine.height:
        return None
    cols = [c.name for c in schema.measured_columns if c.name != s_col]
    num = [c for c in numeric_columns(schema) if c != s_col]
    return raw_tvd(restrict(real, s_col, s_val), mine, cols, num, n_threeway=1)["tvd_2way"]


def evaluate(bundle: Path, schema: Schema, real_train: pl.DataFrame, real_test: pl.DataFrame,
             subgroup: tuple[str, str]) -> dict:
    """A bundle's figures, cached beside it (``runN.eval.json``, keyed by the subgroup)."""
    cache = bundle.parent / f"{bundle.name}.eval.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("subgroup") == list(subgroup):
            return cached["result"]
    result = _evaluate(bundle, schema, real_train, real_test, subgroup)
    cache.write_text(json.dumps({"subgroup": list(subgroup), "result": result}))
    return result


def _evaluate(bundle: Path, schema: Schema, real_train: pl.DataFrame, real_test: pl.DataFrame,
              subgroup: tuple[str, str]) -> dict:
    synth = released_values(pl.read_parquet(bundle / "synthetic.parquet"), schema)
    cols = [c.name for c in schema.measured_columns]
    num = numeric_columns(schema)
    out = {"bundle": str(bundle), "rows": synth.height,
           "auc": tstr_auc(synth, real_test, schema, *TARGET),
           "tvd_2way": raw_tvd(real_train, synth, cols, num, n_threeway=1)["tvd_2way"],
           "subgroup_rows": restrict(synth, *subgroup).height,
           "subgroup_tvd_2way": subgroup_tvd(real_train, synth, schema, subgroup)}
    rec = bundle.parent / f"{bundle.name}.json"
    if rec.is_file():
        timings = json.loads(rec.read_text()).get("timings") or {}
        out["seconds"] = timings.get("total")
    return out


def _mean(xs: list[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return statistics.fmean(v) if v else None


def _sd(xs: list[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return statistics.stdev(v) if len(v) > 1 else None


def _f(x: float | None, d: int = 4) -> str:
    return "—" if x is None else f"{x:.{d}f}"


def summarise(results: dict[str, list[dict]]) -> dict[str, dict]:
    out = {}
    for cfg, runs in results.items():
        if not runs:
            continue
        out[cfg] = {k: _mean([r.get(k) for r in runs]) for k in ("auc", "tvd_2way", "subgroup_tvd_2way",
                                                                  "seconds")}
        out[cfg]["auc_sd"] = _sd([r["auc"] for r in runs])
        out[cfg]["runs"] = len(runs)
    return out


def markdown(meta: dict, refs: dict, results: dict[str, list[dict]], summary: dict[str, dict]) -> str:
    s_col, s_val = meta["subgroup"]
    lines = [
        "# Declared analysis targets: diabetes130, epsilon 1",
        "",
        "Generated by `benchmarks/analysis_targets.py` (see its docstring for the protocol). "
        f"Training split: {meta['train_rows']} rows of {meta['train_patients']} patients; test: "
        f"{meta['test_rows']} rows (all encounters) of {meta['test_patients']} patients; split by "
        f"patient, seed {meta['split_seed']}. TSTR target `{TARGET[0]} == \"{TARGET[1]}\"`.",
        "",
        f"Subgroup: `{s_col} = {s_val}`, {100 * meta['subgroup_patient_share']:.2f}% of the training "
        f"patients. Declared subgroups' groups holding 2-5% of the patients: "
        + ", ".join(f"{c}={v} ({100 * sh:.2f}%)" for c, v, sh in meta["groups_2_5"]) + ".",
        "",
        "| configuration | runs | TSTR AUC mean (sd) | 2-way TVD (all columns) | "
        f"2-way TVD inside {s_col}={s_val} | release seconds |",
        "|---|---|---|---|---|---|",
    ]
    for cfg in summary:
        if cfg not in summary:
            continue
        m = summary[cfg]
        name = f"{cfg} (shipped default)" if cfg == SHIPPED else cfg
        lines.append(f"| {name} | {m['runs']} | {_f(m['auc'], 3)} ({_f(m['auc_sd'], 3)}) | "
                     f"{_f(m['tvd_2way'])} | {_f(m['subgroup_tvd_2way'])} | {_f(m['seconds'], 0)} |")
    lines += [
        f"| real train, k = 1 (ceiling) | — | {refs['ceiling']:.3f} | 0 | 0 | — |",
        f"| real train, all encounters | — | {refs['ceiling_all']:.3f} | — | — | — |",
        f"| independent columns (floor) | — | {refs['floor']:.3f} | {_f(refs['independent_tvd_2way'])} | "
        f"{_f(refs['independent_subgroup_tvd_2way'])} | — |",
        f"| real test patients, k = 1 (a fresh real sample: noise alone) | — | — | "
        f"{_f(refs.get('fresh_tvd_2way'))} | {_f(refs.get('fresh_subgroup_tvd_2way'))} | — |",
        "",
        "## Targets",
        "",
    ]
    a, p, v = summary.get("aim-targets"), summary.get("aim-plain"), summary.get("v010-aim")
    if a:
        ok = a["auc"] is not None and a["auc"] >= TARGET_AUC
        lines.append(f"- AIM with targets, mean TSTR AUC over {a['runs']} releases: {_f(a['auc'], 3)} "
                     f"(target >= {TARGET_AUC}): **{'met' if ok else 'missed'}**.")
    if a and p:
        ratio = a["tvd_2way"] / p["tvd_2way"]
        lines.append(f"- 2-way TVD with / without targets: {_f(a['tvd_2way'])} / {_f(p['tvd_2way'])} = "
                     f"{ratio:.3f} (target <= {TVD_SLACK}): **{'met' if ratio <= TVD_SLACK else 'missed'}**.")
    if a and v and a["subgroup_tvd_2way"] is not None and v["subgroup_tvd_2way"] is not None:
        better = a["subgroup_tvd_2way"] < v["subgroup_tvd_2way"]
        lines.append(f"- 2-way TVD inside {s_col}={s_val}, AIM with targets vs 0.1.0's AIM: "
                     f"{_f(a['subgroup_tvd_2way'])} vs {_f(v['subgroup_tvd_2way'])}: "
                     f"**{'improved' if better else 'not improved'}**.")
    lines += ["", "## Every release", "",
              "| configuration | run | AUC | 2-way TVD | subgroup 2-way TVD | subgroup rows | seconds |",
              "|---|---|---|---|---|---|---|"]
    for cfg, runs in results.items():
        for i, r in enumerate(runs, 1):
            lines.append(f"| {cfg} | {i} | {r['auc']:.3f} | {_f(r['tvd_2way'])} | "
                         f"{_f(r['subgroup_tvd_2way'])} | {r['subgroup_rows']} | {_f(r.get('seconds'), 0)} |")
    lines += ["", f"Machine: {meta['machine']}. Release times are wall-clock on a machine shared by "
              "several engineers (2 cores): compare them only loosely.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--epsilon", type=float, default=1.0)
    p.add_argument("--work", type=Path, default=Path("/tmp/analysis_targets"))
    p.add_argument("--v010", type=Path, default=Path("/work/wt-v010"),
                   help="a worktree of dpsynth 0.1.0 (git worktree add DIR 9cf5605)")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"of {', '.join(CONFIGS)}")
    p.add_argument("--subgroup", default="race=Hispanic", help="COLUMN=VALUE")
    p.add_argument("--no-release", action="store_true", help="only evaluate bundles that exist")
    p.add_argument("--out", type=Path, default=HERE / "results/analysis_targets")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    shipped = REPO / "schemas/diabetes130.yaml"
    schemas = {"shipped": shipped, "plain": plain_schema(shipped, a.work / "diabetes130-no-analysis.yaml"),
               "v010": a.v010 / "schemas/diabetes130.yaml"}
    trees = {"this": REPO, "v010": a.v010}
    schema, train, test = load_split(shipped)
    unit = schema.privacy_unit.column
    assert unit is not None
    train_csv = a.work / "train.csv.gz"
    if not train_csv.is_file():
        write_train(train, train_csv)
    s_col, s_val = a.subgroup.split("=", 1)
    bounded = bounded_train(train, unit, schema.privacy_unit.max_rows)
    real_train = real_values(bounded, schema)
    real_test = real_values(test, schema)
    # the declared subgroups' groups by share of patients (one row per patient after bounding)
    groups = []
    for c in schema.subgroups:
        shares = real_train.get_column(c).cast(pl.String).value_counts(normalize=True, name="share")
        groups += [(c, str(v), float(sh)) for v, sh in shares.iter_rows()
                   if v is not None and 0.02 <= sh <= 0.05]
    sub_share = float((real_train.get_column(s_col).cast(pl.String) == s_val).fill_null(False).mean())
    print(f"split: train {train.height} rows, test {test.height} rows; {s_col}={s_val}: "
          f"{100 * sub_share:.2f}% of patients", file=sys.stderr)
    from raw_fidelity import independent

    ind = independent(real_train, seed=0)
    cols = [c.name for c in schema.measured_columns]
    num = numeric_columns(schema)
    refs_cache = a.work / "references.json"
    cached = json.loads(refs_cache.read_text()) if refs_cache.is_file() else {}
    refs = cached.get("refs") if cached.get("subgroup") == [s_col, s_val] else None
    refs = refs or {"ceiling": real_train_ceiling(train, test, schema, *TARGET),
            "ceiling_all": real_train_ceiling(train, test, schema, *TARGET, bounded=False),
            "floor": independent_floor(train, test, schema, *TARGET),
            "independent_tvd_2way": raw_tvd(real_train, ind, cols, num, n_threeway=1)["tvd_2way"],
            "independent_subgroup_tvd_2way": subgroup_tvd(real_train, ind, schema, (s_col, s_val))}
    if "fresh_tvd_2way" not in refs:
        # the real test patients (bounded like the training rows) against the training rows:
        # what a sample of the same population scores, sampling noise alone (its subgroup holds
        # about 0.43 x the training subgroup's rows, so this overstates a same-size sample's)
        fresh = real_values(bounded_train(test, unit, schema.privacy_unit.max_rows), schema)
        refs["fresh_tvd_2way"] = raw_tvd(real_train, fresh, cols, num, n_threeway=1)["tvd_2way"]
        refs["fresh_subgroup_tvd_2way"] = subgroup_tvd(real_train, fresh, schema, (s_col, s_val))
    refs_cache.write_text(json.dumps({"subgroup": [s_col, s_val], "refs": refs}))
    print(f"references: {refs}", file=sys.stderr)
    configs = [c for c in a.configs.split(",") if c]
    results: dict[str, list[dict]] = {c: [] for c in configs}
    for run in range(1, a.runs + 1):  # interleaved: a stopped run leaves every config comparable
        for cfg in configs:
            bundle = a.work / cfg / f"run{run}"
            if not a.no_release:
                bundle = release(cfg, run, a.work, train_csv, schemas, trees, a.epsilon)
            if not (bundle / "synthetic.parquet").is_file():
                continue
            r = evaluate(bundle, schema, real_train, real_test, (s_col, s_val))
            results[cfg].append(r)
            print(f"  {cfg} run {run}: AUC {r['auc']:.3f}, 2-way TVD {r['tvd_2way']:.4f}, "
                  f"subgroup 2-way TVD {_f(r['subgroup_tvd_2way'])}", file=sys.stderr, flush=True)
    summary = summarise(results)
    meta = {"train_rows": train.height, "train_patients": train.get_column(unit).n_unique(),
            "test_rows": test.height, "test_patients": test.get_column(unit).n_unique(),
            "split_seed": SPLIT_SEED, "subgroup": [s_col, s_val], "subgroup_patient_share": sub_share,
            "groups_2_5": groups, "epsilon": a.epsilon,
            "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(
        {"meta": meta, "references": refs, "summary": summary, "runs": results}, indent=2))
    text = markdown(meta, refs, results, summary)
    a.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
