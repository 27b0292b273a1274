"""dpsynth's AIM and MST against smartnoise-synth 1.0.8 (MST, AIM) and dpmm, side by side.

One process tree on one machine: this script prepares the data once (the same
contribution-bounded, schema-encoded codes dpsynth uses, bounding seed fixed),
then runs every (system, dataset, epsilon) in its own subprocess so that fit
time, sample time and peak RSS (``os.wait4`` rusage of that child) are per
system. Utility is computed here, on the codes each child wrote:

* mean total-variation distance of all 1-way, all 2-way and a fixed (seeded)
  sample of 300 3-way marginals, synthetic vs the real training codes;
* diabetes130 only: ROC AUC of a HistGradientBoosting classifier (fixed seed)
  trained on synthetic rows and tested on 20% real rows held out before
  anything else, predicting ``readmitted == "<30"``.

Every system gets the training codes, the public domain sizes, (epsilon,
delta) and k = 1. Two non-DP reference rows per dataset (``real-train``: the
training codes themselves; ``independent``: each column sampled from its exact
1-way marginal) frame the numbers. dpmm pins opendp 0.12 / pandas 2.1 and does
not co-install with dpsynth; it runs from its own venv (``--dpmm-python``,
default /opt/dpmmv/bin/python) and is skipped when that is missing.

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

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
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


# -- data preparation (main process) --------------------------------------------------------


def prepare(name: str, work: Path, data_path: Path | None) -> dict:
    from dpsynth.domain import level_labels
    from dpsynth.io import load_encoded
    from dpsynth.schema import load_schema

    schema_path, default_path = DATASETS[name]
    schema = load_schema(schema_path)
    enc = load_encoded(data_path or default_path, schema, bounding_secret=BOUNDING_SEED)
    codes = np.asarray(enc.codes, dtype=np.int64)
    meta: dict = {"dataset": name, "columns": list(enc.columns), "sizes": list(enc.sizes),
                  "k": enc.contribution_bound, "rows_bounded": int(codes.shape[0])}
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    if name == "diabetes130":
        perm = np.random.default_rng(SPLIT_SEED).permutation(codes.shape[0])
        n_test = codes.shape[0] // 5
        np.save(d / "test.npy", codes[perm[:n_test]])
        codes = codes[perm[n_test:]]
        target = "readmitted"
        labels = level_labels(schema.column(target))
        meta.update(target=target, target_index=enc.columns.index(target),
                    positive_code=labels.index("<30"), rows_test=int(n_test))
    np.save(d / "train.npy", codes)
    meta["rows_train"] = int(codes.shape[0])
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


def to_markdown(rows: list[dict], info: dict, command: str) -> str:
    head = ["system", "dataset", "epsilon", "status", "fit s", "sample s", "peak RSS MB",
            "TVD 1-way", "TVD 2-way", "TVD 3-way", "AUC (<30)"]
    out = ["# dpsynth vs peers", "", f"Command: `{command}`", "",
           f"Run: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["system"], r["dataset"], _fmt(r["epsilon"], 0) if r["epsilon"] else "non-DP",
                 r["status"], _fmt(r.get("fit_s"), 1), _fmt(r.get("sample_s"), 2),
                 _fmt(r.get("peak_rss_mb"), 0), _fmt(r.get("tvd_1way")), _fmt(r.get("tvd_2way")),
                 _fmt(r.get("tvd_3way")), _fmt(r.get("auc"))]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Machine and versions:", "", "```", json.dumps(info, indent=2), "```", "",
            "TVD: mean total-variation distance, synthetic vs the real (training) encoded table; "
            "3-way over a fixed seeded sample of 300 triples. AUC: HistGradientBoosting trained on "
            "synthetic rows, tested on the 20% real rows held out first (diabetes130 only). "
            "Peak RSS: max resident set of the system's own subprocess. delta = 1e-9, k = 1.", ""]
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
    rows: list[dict] = []
    for ds in datasets:
        meta = prepare(ds, work, None)
        d = work / ds
        real = np.load(d / "train.npy")
        test = np.load(d / "test.npy") if ds == "diabetes130" else None
        sizes = meta["sizes"]
        print(f"[{ds}] {meta['rows_train']} training rows x {len(sizes)} columns", flush=True)
        rng = np.random.default_rng(a.seed)
        indep = np.stack([rng.choice(s, real.shape[0], p=_marg(real, (j,), sizes))
                          for j, s in enumerate(sizes)], 1)
        for name, codes in (("real-train", real), ("independent", indep)):
            r = {"system": name, "dataset": ds, "epsilon": None, "status": "reference"}
            r.update({f"tvd_{k.replace('-', '')}": v for k, v in tvd(real, codes, sizes).items()})
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
                       "--seed", str(a.seed), "--out", str(stem)]
                status, wall, rss = run_child(cmd, timeout, Path(str(stem) + ".log"))
                r.update(status=status, wall_s=wall, peak_rss_mb=rss)
                if status == "ok":
                    r.update(json.loads(Path(str(stem) + ".json").read_text()))
                    synth = np.load(str(stem) + ".npy")
                    r.update({f"tvd_{k.replace('-', '')}": v for k, v in tvd(real, synth, sizes).items()})
                    if test is not None:
                        r["auc"] = auc(synth, test, meta)
                elif status.startswith("error"):
                    tail = Path(str(stem) + ".log").read_text(errors="replace").strip().splitlines()[-3:]
                    r["error_tail"] = tail
                print(f"  {system:15s} eps={eps:g}: {status}, fit {_fmt(r.get('fit_s'), 1)} s, "
                      f"sample {_fmt(r.get('sample_s'), 2)} s, RSS {rss:.0f} MB, "
                      f"TVD2 {_fmt(r.get('tvd_2way'))}, AUC {_fmt(r.get('auc'))}", flush=True)
    info = machine_info()
    md = to_markdown(rows, info, command)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "machine": info, "rows": rows},
                                                   indent=2, default=str))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
