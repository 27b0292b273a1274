"""dpsynth's AIM and MST against smartnoise-synth 1.0.8 (MST, AIM) and dpmm, side by side.

One process tree on one machine: this script prepares the data once (the same
contribution-bounded, schema-encoded codes dpsynth uses, bounding seed fixed),
then runs every (system, dataset, epsilon) in its own subprocess so that fit
time, sample time and peak RSS (``os.wait4`` rusage of that child) are per
system. Utility is computed here, on the codes each child wrote:

* mean total-variation distance of all 1-way, all 2-way and a fixed (seeded)
  sample of 300 3-way marginals, synthetic vs the real training codes;
* the same TVDs on the values *as released*, against the real training rows'
  raw values (``raw_fidelity.py``: numeric columns in the real table's decile
  cells, categories as text, null its own cell, code columns by public group;
  a few columns per dataset excluded, ``RAW_EXCLUDE``), each also as a ratio to
  the ``independent`` row's, and every evaluated column's 1-way raw TVD;
* diabetes130 only: ROC AUC of a HistGradientBoosting classifier (fixed seed)
  trained on synthetic rows and tested on 20% real rows held out before
  anything else, predicting ``readmitted == "<30"``.

Every system gets the training codes, the public domain sizes, (epsilon,
delta) and k = 1. dpsynth's systems run, by default, through the real release
(``dpsynth.pipeline.release`` on the training rows written as CSV, ``--rows``
= the training row count, a throwaway ledger): their released values are the
bundle's ``synthetic.parquet``, their codes its re-encoding, and their stage
timings (the release's ``timings``) are reported. With ``--dpsynth-path engine``
they fit in-process on the codes as the peers do. Peer systems' codes (and
dpsynth's with ``engine``) are turned into values by dpsynth's decoder
(``Domain.decode``, seeded), i.e. as dpsynth would release them. Two non-DP
reference rows per dataset (``real-train``: the training rows themselves;
``independent``: each column resampled independently from the training rows,
the same draw for codes and raw values) frame the numbers. dpmm pins opendp
0.12 / pandas 2.1 and does not co-install with dpsynth; it runs from its own
venv (``--dpmm-python``, default /opt/dpmmv/bin/python) and is skipped when
that is missing.

See benchmarks/README.md for setup. Usage::

    python benchmarks/compare_peers.py --quick
    python benchmarks/compare_peers.py            # the full grid
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np  # the only third-party import at the top: the dpmm venv runs this file too

if TYPE_CHECKING:
    import polars as pl

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # raw_fidelity, when run as a script or a worker
DATASETS = {
    "nist": (REPO / "schemas/nist_excerpts.yaml",
             Path("/work/shared/data/nist_excerpts/national2019.csv.gz")),
    "diabetes130": (REPO / "schemas/diabetes130.yaml", REPO / "examples/diabetes130/diabetic_data.csv.gz"),
}
SYSTEMS = ["dpsynth-aim", "dpsynth-mst", "smartnoise-mst", "smartnoise-aim", "dpmm-mst", "dpmm-aim"]
BOUNDING_SEED = 20240601
SPLIT_SEED = 7
THREEWAY_SEED = 3
N_THREEWAY = 300
RAW_EXCLUDE: dict[str, dict[str, str]] = {
    # columns left out of the raw-value TVD, with the reason (every other released column counts;
    # code columns that stay in are compared after mapping the real codes to their public groups)
    "nist": {"INDP": "released as its public sector groups (INDP_CAT carries the sector)",
             "DENSITY": "one value per PUMA, and that list of values is not public"},
    "diabetes130": {},
}


# -- data preparation (main process) --------------------------------------------------------


def _bound_raw(raw: pl.DataFrame, unit: str | None, k: int) -> pl.DataFrame:
    """At most k rows per patient, chosen with a fixed seed (a benchmark-only choice, so that
    the kept rows' raw text is known; the release re-bounds them, a no-op at k rows)."""
    import polars as pl

    if unit is None:
        return raw
    rng = np.random.default_rng(BOUNDING_SEED)
    keyed = raw.with_columns(pl.Series("_key", rng.random(raw.height)),
                             pl.int_range(raw.height).alias("_row"))
    return keyed.sort("_key").group_by(unit, maintain_order=True).head(k).sort("_row").drop("_key", "_row")


def prepare(name: str, work: Path, data_path: Path | None) -> dict:
    """Bounded (and, on diabetes130, split) real rows: their raw text as ``train.csv`` (the
    input of dpsynth's release), their codes as ``train.npy`` and their values (missing ->
    null, see ``raw_fidelity.real_values``) as ``train_values.parquet``."""
    from raw_fidelity import numeric_columns, real_values

    from dpsynth.domain import level_labels
    from dpsynth.io import load_encoded, read_table
    from dpsynth.schema import load_schema

    schema_path, default_path = DATASETS[name]
    schema = load_schema(schema_path)
    raw = _bound_raw(read_table(data_path or default_path, schema), schema.privacy_unit.column,
                     schema.privacy_unit.max_rows)
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    meta: dict = {"dataset": name, "schema": str(schema_path), "k": schema.privacy_unit.max_rows,
                  "rows_bounded": raw.height}
    if name == "diabetes130":
        perm = np.random.default_rng(SPLIT_SEED).permutation(raw.height)
        n_test = raw.height // 5
        raw[perm[:n_test]].write_csv(d / "test.csv")
        test = load_encoded(d / "test.csv", schema, bounding_secret=BOUNDING_SEED)
        np.save(d / "test.npy", np.asarray(test.codes, dtype=np.int64))
        raw = raw[np.sort(perm[n_test:])]
        target = "readmitted"
        labels = level_labels(schema.column(target))
        meta.update(target=target, target_index=list(test.columns).index(target),
                    positive_code=labels.index("<30"), rows_test=int(n_test))
    raw.write_csv(d / "train.csv")
    enc = load_encoded(d / "train.csv", schema, bounding_secret=BOUNDING_SEED)
    codes = np.asarray(enc.codes, dtype=np.int64)
    if codes.shape[0] != raw.height:  # pragma: no cover - bounding at k rows is a no-op
        raise SystemExit("re-encoding the training rows changed their number")
    np.save(d / "train.npy", codes)
    real_values(raw, schema).write_parquet(d / "train_values.parquet")
    excluded = RAW_EXCLUDE.get(name, {})
    raw_cols = [c for c in enc.columns if c not in excluded]
    meta.update(columns=list(enc.columns), sizes=list(enc.sizes), rows_train=int(codes.shape[0]),
                raw_columns=raw_cols, raw_numeric=[c for c in numeric_columns(schema) if c in raw_cols],
                raw_excluded=excluded)
    (d / "meta.json").write_text(json.dumps(meta))
    return meta


# -- one system in a child process ----------------------------------------------------------


def _worker(a: argparse.Namespace) -> None:
    d = Path(a.data)
    meta = json.loads((d / "meta.json").read_text())
    codes = np.load(d / "train.npy")
    cols, sizes = meta["columns"], meta["sizes"]
    n = codes.shape[0]
    eps, delta = a.epsilon, a.delta
    t0 = time.perf_counter()
    if a.system.startswith("dpsynth-") and a.dpsynth_path == "release":
        del codes
        _release_worker(a, d, meta, n)
        return
    if a.system.startswith("dpsynth-"):
        from dpsynth.engines import get_engine
        from dpsynth.privacy.accountant import Accountant, Budget, rho_for
        from dpsynth.privacy.session import MeasurementSession

        spec = get_engine(a.system.removeprefix("dpsynth-"))
        session = MeasurementSession(codes, cols, sizes, 1, Accountant(Budget(rho_for(eps, delta))))
        del codes
        model = spec.fit(session)
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        synth = model.sample(n, np.random.default_rng(a.seed))
    elif a.system.startswith("smartnoise-"):
        import warnings

        import pandas as pd

        warnings.simplefilter("ignore")
        from snsynth.transform import LabelTransformer, TableTransformer

        df = pd.DataFrame(codes, columns=cols)
        width = max(sizes)
        public = pd.DataFrame({c: np.arange(width) % s for c, s in zip(cols, sizes, strict=True)})
        tt = TableTransformer([LabelTransformer(nullable=False) for _ in cols])
        tt.fit(public)  # the public domain: no categories learned from the data
        if a.system == "smartnoise-mst":
            from snsynth.mst import MSTSynthesizer

            s = MSTSynthesizer(epsilon=float(eps), delta=delta)
        else:
            from snsynth.aim import AIMSynthesizer

            s = AIMSynthesizer(epsilon=float(eps), delta=delta)
        s.fit(df, transformer=tt, categorical_columns=cols)
        fit_s = time.perf_counter() - t0
        np.random.seed(a.seed)  # smartnoise samples from numpy's global RNG
        t1 = time.perf_counter()
        out = s.sample(n)
        synth = (out[cols].to_numpy() if isinstance(out, pd.DataFrame)
                 else np.asarray([tuple(r) for r in out])).astype(np.int64)
    elif a.system.startswith("dpmm-"):
        import pandas as pd

        df = pd.DataFrame(codes, columns=cols)
        domain = dict(zip(cols, sizes, strict=True))
        if a.system == "dpmm-mst":
            from dpmm.models.mst import MSTGM as M
        else:
            from dpmm.models.aim import AIMGM as M
        m = M(epsilon=float(eps), delta=delta, domain=domain)
        m.fit(df)
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        out = m.generate(n_records=n)
        synth = out[cols].to_numpy().astype(np.int64)
    else:
        raise SystemExit(f"unknown system {a.system}")
    sample_s = time.perf_counter() - t1
    np.save(a.out + ".npy", np.asarray(synth, dtype=np.int64))
    Path(a.out + ".json").write_text(json.dumps({"fit_s": fit_s, "sample_s": sample_s, "rows": int(n)}))


def _release_worker(a: argparse.Namespace, d: Path, meta: dict, n: int) -> None:
    """dpsynth through the real release on ``train.csv``; the bundle's synthetic table is the
    released values, its re-encoding the codes, and the release's timings are kept."""
    import shutil

    import polars as pl

    from dpsynth.config import ReleaseConfig
    from dpsynth.domain import Domain, recode
    from dpsynth.pipeline import release
    from dpsynth.privacy.accountant import ApproxDP
    from dpsynth.privacy.ledger import open_ledger
    from dpsynth.schema import load_schema

    stem = Path(a.out)
    bundle = d / "bundles" / stem.name
    ledger_db = d / "ledgers" / f"{stem.name}.sqlite"
    shutil.rmtree(bundle, ignore_errors=True)
    ledger_db.unlink(missing_ok=True)
    ledger_db.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{ledger_db}"
    with open_ledger(url) as led:
        led.init_dataset("bench", ApproxDP(1e6, 0.5))
    cfg = ReleaseConfig(schema_path=Path(meta["schema"]), input_path=d / "train.csv", out_dir=bundle,
                        epsilon=a.epsilon, delta=a.delta, engine=a.system.removeprefix("dpsynth-"),
                        rows=n, ledger_url=url, dataset_id="bench", seed=a.seed)
    result = release(cfg).to_dict()
    table = pl.read_parquet(Path(result["bundle"]) / "synthetic.parquet")
    table.write_parquet(str(stem) + ".parquet")
    codes = recode(Domain.from_schema(load_schema(cfg.schema_path)), table)
    np.save(str(stem) + ".npy", codes)
    t = result["timings"]
    Path(str(stem) + ".json").write_text(json.dumps({
        "fit_s": t.get("fit"), "sample_s": t.get("sample"), "rows": int(table.height),
        "timings": t, "path": "release"}))


def run_child(cmd: list[str], timeout: float, log: Path) -> tuple[str, float, float]:
    """Run ``cmd``; returns (status, wall seconds, peak RSS MB of that child and its children)."""
    t0 = time.perf_counter()
    with log.open("wb") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        status = "ok"
        while True:
            pid, st, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                os.killpg(p.pid, signal.SIGKILL)
                pid, st, ru = os.wait4(p.pid, 0)
                status = "timeout"
                break
            time.sleep(0.2)
    p.returncode = os.waitstatus_to_exitcode(st)
    if status == "ok" and p.returncode != 0:
        status = f"error (exit {p.returncode})"
    return status, time.perf_counter() - t0, ru.ru_maxrss / 1024.0


# -- utility --------------------------------------------------------------------------------


def _marg(codes: np.ndarray, idx: tuple[int, ...], sizes: list[int]) -> np.ndarray:
    flat = np.zeros(codes.shape[0], dtype=np.int64)
    for j in idx:
        flat = flat * sizes[j] + codes[:, j]
    c = np.bincount(flat, minlength=math.prod(sizes[j] for j in idx)).astype(np.float64)
    return c / max(c.sum(), 1.0)


def tvd(real: np.ndarray, synth: np.ndarray, sizes: list[int]) -> dict[str, float]:
    d = len(sizes)
    triples = list(itertools.combinations(range(d), 3))
    pick = np.random.default_rng(THREEWAY_SEED).choice(len(triples), min(N_THREEWAY, len(triples)),
                                                       replace=False)
    sets = {"1-way": [(j,) for j in range(d)], "2-way": list(itertools.combinations(range(d), 2)),
            "3-way": [triples[i] for i in sorted(pick)]}
    return {k: float(np.mean([0.5 * np.abs(_marg(real, s, sizes) - _marg(synth, s, sizes)).sum()
                              for s in v])) for k, v in sets.items()}


def raw_row(real_values: pl.DataFrame, synth_values: pl.DataFrame, meta: dict) -> dict:
    """The raw-value TVDs of one system (``raw_fidelity.raw_tvd``), as row fields."""
    from raw_fidelity import raw_tvd

    out = raw_tvd(real_values, synth_values, meta["raw_columns"], meta["raw_numeric"],
                  n_threeway=N_THREEWAY, seed=THREEWAY_SEED)
    return {"raw_tvd_1way": out["tvd_1way"], "raw_tvd_2way": out["tvd_2way"],
            "raw_tvd_3way": out["tvd_3way"], "raw_per_column": out["per_column"]}


def decoded_values(codes: np.ndarray, schema_path: str, seed: int) -> pl.DataFrame:
    """Codes as dpsynth would release them (``Domain.decode``, seeded), as values."""
    from raw_fidelity import released_values

    from dpsynth.domain import Domain
    from dpsynth.schema import load_schema

    schema = load_schema(schema_path)
    return released_values(Domain.from_schema(schema).decode(codes, np.random.default_rng(seed)), schema)


def add_ratios(rows: list[dict]) -> None:
    """``raw_ratio_{1,2,3}way``: each row's raw TVD over the same dataset's ``independent`` row's."""
    ind: dict[str, dict] = {r["dataset"]: r for r in rows if r["system"] == "independent"}
    for r in rows:
        base = ind.get(r["dataset"], {})
        for k in ("1way", "2way", "3way"):
            v, b = r.get(f"raw_tvd_{k}"), base.get(f"raw_tvd_{k}")
            if v is not None and b:
                r[f"raw_ratio_{k}"] = v / b


def auc(train: np.ndarray, test: np.ndarray, meta: dict) -> float | None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    t, pos = meta["target_index"], meta["positive_code"]
    feats = [j for j in range(train.shape[1]) if j != t]
    y = train[:, t] == pos
    if y.all() or not y.any():
        return 0.5  # a constant label: the model can only guess
    clf = HistGradientBoostingClassifier(random_state=0, max_iter=200)
    clf.fit(train[:, feats], y)
    return float(roc_auc_score(test[:, t] == pos, clf.predict_proba(test[:, feats])[:, 1]))


# -- orchestration --------------------------------------------------------------------------


def machine_info() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split()[1]
        info["mem_gib"] = round(int(mem) / 2**20, 1)
    except OSError:
        pass
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        info["commit"] = head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = None
    import importlib.metadata as md

    for pkg in ("dpsynth", "smartnoise-synth", "mbi", "opendp", "numpy", "scikit-learn"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = None
    return info


def _fmt(v: object, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _ratio(v: object) -> str:
    return f"{v:.2f}×" if isinstance(v, float) else "–"


STAGES = ["read_check_encode", "fit", "count", "sample", "validate", "bundle", "total"]


def to_markdown(rows: list[dict], info: dict, command: str, metas: dict[str, dict]) -> str:
    head = ["system", "dataset", "epsilon", "status", "fit s", "sample s", "peak RSS MB",
            "TVD 1-way", "TVD 2-way", "TVD 3-way", "raw TVD 1-way", "raw TVD 2-way", "raw TVD 3-way",
            "raw 1-way ÷ indep.", "raw 2-way ÷ indep.", "raw 3-way ÷ indep.", "AUC (<30)"]
    out = ["# dpsynth vs peers", "", f"Command: `{command}`", "",
           f"Run: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; dpsynth commit {info.get('commit')}", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["system"], r["dataset"], _fmt(r["epsilon"], 0) if r["epsilon"] else "non-DP",
                 r["status"], _fmt(r.get("fit_s"), 1), _fmt(r.get("sample_s"), 2),
                 _fmt(r.get("peak_rss_mb"), 0), _fmt(r.get("tvd_1way")), _fmt(r.get("tvd_2way")),
                 _fmt(r.get("tvd_3way")), _fmt(r.get("raw_tvd_1way")), _fmt(r.get("raw_tvd_2way")),
                 _fmt(r.get("raw_tvd_3way")), _ratio(r.get("raw_ratio_1way")),
                 _ratio(r.get("raw_ratio_2way")), _ratio(r.get("raw_ratio_3way")), _fmt(r.get("auc"))]
        out.append("| " + " | ".join(cells) + " |")
    for ds, meta in metas.items():
        done = [r for r in rows if r["dataset"] == ds and r.get("raw_per_column")
                and r["system"] != "real-train"]
        if not done:
            continue
        excl = "; ".join(f"{c} ({why})" for c, why in meta["raw_excluded"].items()) or "none"
        out += ["", f"## {ds}: 1-way raw TVD per column", "",
                f"Evaluated: {len(meta['raw_columns'])} columns; in the real table's decile cells: "
                f"{', '.join(meta['raw_numeric']) or 'none'}. Excluded: {excl}.", ""]
        names = [f"{r['system']}" + (f" ε={r['epsilon']:g}" if r["epsilon"] else "") for r in done]
        out += ["| column | " + " | ".join(names) + " | " + " | ".join(f"{n} ÷ indep." for n in names[1:])
                + " |", "|" + "---|" * (2 * len(names))]
        ind = next((r for r in done if r["system"] == "independent"), None)
        for c in meta["raw_columns"]:
            vals = [r["raw_per_column"][c] for r in done]
            base = ind["raw_per_column"][c] if ind else None
            ratios = [_ratio(v / base) if base else "–" for v in vals[1:]]
            out.append(f"| {c} | " + " | ".join(_fmt(v) for v in vals) + " | " + " | ".join(ratios) + " |")
    timed = [r for r in rows if r.get("timings")]
    if timed:
        out += ["", "## dpsynth release stages (seconds, the release's `timings`)", "",
                "`count` is the part of `fit` spent counting marginals; `other` = total minus the "
                "listed stages except count (ledger, hashing the input, audit).", "",
                "| system | dataset | epsilon | " + " | ".join(STAGES) + " | other |",
                "|" + "---|" * (len(STAGES) + 4)]
        for r in timed:
            t = r["timings"]
            other = t.get("total", 0.0) - sum(t.get(k, 0.0) for k in STAGES if k not in ("count", "total"))
            out.append(f"| {r['system']} | {r['dataset']} | {r['epsilon']:g} | "
                       + " | ".join(_fmt(t.get(k), 2) for k in STAGES) + f" | {other:.2f} |")
    out += ["", "Machine and versions:", "", "```", json.dumps(info, indent=2), "```", "",
            "TVD: mean total-variation distance, synthetic vs the real (training) encoded table; "
            "3-way over a fixed seeded sample of 300 triples. Raw TVD: the same on the values as "
            "released vs the real training rows' raw values (benchmarks/raw_fidelity.py: numeric "
            "columns in the real values' decile cells, right-closed, null its own cell; categories "
            "as text; code columns by public group); dpsynth rows run through `dpsynth.pipeline."
            "release` unless the command says `--dpsynth-path engine`, the others' codes are "
            "decoded by dpsynth's decoder. ÷ indep.: ratio to the `independent` row (each column "
            "resampled independently from the real training rows). AUC: HistGradientBoosting "
            "trained on synthetic rows, tested on the 20% real rows held out first (diabetes130 "
            "only). Peak RSS: max resident set of the system's own subprocess (for a release: "
            "reading, fitting, sampling and writing the bundle). delta = 1e-9, k = 1.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="epsilon 1, NIST only, 300 s timeout per run (unless given explicitly)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--datasets", default="nist,diabetes130")
    ap.add_argument("--epsilons", default="1,10")
    ap.add_argument("--delta", type=float, default=1e-9)
    ap.add_argument("--timeout", type=float, default=None, help="seconds per run (default 1800)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (post-processing only)")
    ap.add_argument("--dpmm-python", default="/opt/dpmmv/bin/python")
    ap.add_argument("--out", default=str(HERE / "results/compare_peers.md"))
    ap.add_argument("--workdir", default=None, help="keep data and synthetic codes here")
    ap.add_argument("--dpsynth-path", choices=["release", "engine"], default="release",
                    help="dpsynth systems: the full release on the training CSV (stage timings, "
                    "values from the bundle) or the engine in-process on the codes")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--system", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--epsilon", type=float, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:  # --out is the path stem of the child's .npy/.json
        _worker(a)
        return 0

    argv_used = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/compare_peers.py " + " ".join(shlex.quote(x) for x in argv_used)
    datasets = a.datasets.split(",")
    epsilons = [float(e) for e in a.epsilons.split(",")]
    timeout = a.timeout
    if a.quick:
        if "--datasets" not in argv_used:
            datasets = ["nist"]
        if "--epsilons" not in argv_used:
            epsilons = [1.0]
        timeout = timeout or 300.0
    timeout = timeout or 1800.0
    systems = a.systems.split(",")
    for s in systems:
        if s not in SYSTEMS:
            ap.error(f"unknown system {s!r}; choose from {SYSTEMS}")
    dpmm_ok = Path(a.dpmm_python).is_file()

    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="compare_peers-"))
    work.mkdir(parents=True, exist_ok=True)
    import polars as pl

    rows: list[dict] = []
    metas: dict[str, dict] = {}
    for ds in datasets:
        meta = metas[ds] = prepare(ds, work, None)
        d = work / ds
        real = np.load(d / "train.npy")
        real_vals = pl.read_parquet(d / "train_values.parquet")
        test = np.load(d / "test.npy") if ds == "diabetes130" else None
        sizes = meta["sizes"]
        print(f"[{ds}] {meta['rows_train']} training rows x {len(sizes)} columns; raw-value TVD over "
              f"{len(meta['raw_columns'])} of them", flush=True)
        # independent: every column resampled on its own from the training rows (one row index
        # per column), the same draw for the codes and the raw values
        rng = np.random.default_rng(a.seed)
        n = real.shape[0]
        pick = rng.integers(0, n, size=(n, len(sizes)))
        indep = np.take_along_axis(real, pick, axis=0)
        indep_vals = pl.DataFrame([real_vals[c].gather(pick[:, j])
                                   for j, c in enumerate(meta["columns"])])
        for name, codes, vals in (("real-train", real, real_vals), ("independent", indep, indep_vals)):
            r = {"system": name, "dataset": ds, "epsilon": None, "status": "reference"}
            r.update({f"tvd_{k.replace('-', '')}": v for k, v in tvd(real, codes, sizes).items()})
            r.update(raw_row(real_vals, vals, meta))
            if test is not None:
                r["auc"] = auc(codes, test, meta)
            rows.append(r)
        for eps in epsilons:
            for system in systems:
                r = {"system": system, "dataset": ds, "epsilon": eps}
                rows.append(r)
                if system.startswith("dpmm-") and not dpmm_ok:
                    r["status"] = f"skipped (no dpmm venv at {a.dpmm_python})"
                    print(f"  {system:15s} eps={eps:g}: {r['status']}", flush=True)
                    continue
                python = a.dpmm_python if system.startswith("dpmm-") else sys.executable
                stem = d / f"{system}-eps{eps:g}"
                cmd = [python, str(Path(__file__).resolve()), "--worker", "--system", system,
                       "--data", str(d), "--epsilon", str(eps), "--delta", str(a.delta),
                       "--seed", str(a.seed), "--out", str(stem), "--dpsynth-path", a.dpsynth_path]
                status, wall, rss = run_child(cmd, timeout, Path(str(stem) + ".log"))
                r.update(status=status, wall_s=wall, peak_rss_mb=rss)
                if status == "ok":
                    r.update(json.loads(Path(str(stem) + ".json").read_text()))
                    synth = np.load(str(stem) + ".npy")
                    r.update({f"tvd_{k.replace('-', '')}": v for k, v in tvd(real, synth, sizes).items()})
                    released = Path(str(stem) + ".parquet")
                    if r.get("path") == "release" and released.is_file():
                        from raw_fidelity import released_values

                        from dpsynth.schema import load_schema

                        vals = released_values(pl.read_parquet(released), load_schema(meta["schema"]))
                    else:
                        vals = decoded_values(synth, meta["schema"], a.seed)
                    r.update(raw_row(real_vals, vals, meta))
                    if test is not None:
                        r["auc"] = auc(synth, test, meta)
                elif status.startswith("error"):
                    tail = Path(str(stem) + ".log").read_text(errors="replace").strip().splitlines()[-3:]
                    r["error_tail"] = tail
                print(f"  {system:15s} eps={eps:g}: {status}, fit {_fmt(r.get('fit_s'), 1)} s, "
                      f"sample {_fmt(r.get('sample_s'), 2)} s, RSS {rss:.0f} MB, "
                      f"TVD2 {_fmt(r.get('tvd_2way'))}, raw TVD1 {_fmt(r.get('raw_tvd_1way'))}, "
                      f"raw TVD2 {_fmt(r.get('raw_tvd_2way'))}, AUC {_fmt(r.get('auc'))}", flush=True)
    add_ratios(rows)
    info = machine_info()
    md = to_markdown(rows, info, command, metas)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "machine": info, "rows": rows},
                                                   indent=2, default=str))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
