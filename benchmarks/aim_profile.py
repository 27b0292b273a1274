"""Profile AIM's fit on one table, in-process, and score the fitted model.

Loads the table as the release does (read, check, bound with a fixed bounding
secret, encode; the schema's error rules give ``keep_together``), then fits AIM
on a measurement session and prints: fit wall and CPU seconds, rounds, the
selected cliques, and the fidelity of the *model* (its marginals against the
real encoded table, mean TVD over all 1-way and 2-way marginals: exact, no
sampling noise). With ``--profile`` the top functions of a cProfile run.

``--noise seeded`` replaces OpenDP's draw by numpy noise of the same scale
(the test double of tests/conftest.py, rebuilt here): runs become reproducible,
so two versions of the engine can be compared on the *same* noise (same
selections expected from an exact speedup). It is NOT differential privacy and
never leaves this benchmark. ``--noise opendp`` (default) is the release's noise.

Usage::

    PYTHONPATH=$PWD python benchmarks/aim_profile.py --noise seeded --seed 0
    PYTHONPATH=$PWD python benchmarks/aim_profile.py --profile 30
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import itertools
import json
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATASETS = {
    "nist": (REPO / "schemas/nist_excerpts.yaml",
             Path("/work/shared/data/nist_excerpts/national2019.csv.gz")),
    "diabetes130": (REPO / "schemas/diabetes130.yaml", REPO / "examples/diabetes130/diabetic_data.csv.gz"),
}
BOUNDING_SECRET = 20240601


class SeededNoise:
    """Numpy noise of each mechanism's own scale (benchmark only; not DP)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, mechanism: Any, data: Any, /) -> Any:
        values = np.asarray(data, dtype=np.float64)
        if mechanism.name == "discrete_gaussian":
            return values + np.rint(self.rng.normal(0.0, mechanism.scale, values.shape))
        if mechanism.name == "noisy_max":
            return int(np.argmax(values + self.rng.gumbel(0.0, mechanism.scale, values.shape)))
        raise ValueError(mechanism.name)


def load(name: str, cache: Path) -> tuple[np.ndarray, list[str], list[int], int, tuple]:
    from dpsynth.io import load_encoded
    from dpsynth.rules import rule_cliques
    from dpsynth.schema import load_schema

    schema_path, data_path = DATASETS[name]
    schema = load_schema(schema_path)
    keep = tuple(rule_cliques(schema))
    npy, meta = cache / f"{name}.npy", cache / f"{name}.json"
    if npy.exists() and meta.exists():
        m = json.loads(meta.read_text())
        return np.load(npy), m["columns"], m["sizes"], m["k"], keep
    enc = load_encoded(data_path, schema, bounding_secret=BOUNDING_SECRET)
    codes = np.asarray(enc.codes, dtype=np.int64)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(npy, codes)
    meta.write_text(json.dumps({"columns": list(enc.columns), "sizes": list(enc.sizes),
                                "k": enc.contribution_bound}))
    return codes, list(enc.columns), list(enc.sizes), enc.contribution_bound, keep


def model_tvd(model: Any, codes: np.ndarray, sizes: list[int]) -> dict[str, float]:
    """Mean TVD of the model's 1-way and 2-way marginals against the real codes."""
    n = codes.shape[0]
    out = {}
    for k in (1, 2):
        vals = []
        for idx in itertools.combinations(range(len(sizes)), k):
            flat = np.zeros(n, dtype=np.int64)
            for j in idx:
                flat = flat * sizes[j] + codes[:, j]
            real = np.bincount(flat, minlength=int(np.prod([sizes[j] for j in idx]))) / n
            m = model.markov_model.prob_marginal(idx).ravel()
            vals.append(0.5 * float(np.abs(real - m / m.sum()).sum()))
        out[f"model_tvd_{k}way"] = float(np.mean(vals))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="nist", choices=sorted(DATASETS))
    p.add_argument("--epsilon", type=float, default=1.0)
    p.add_argument("--delta", type=float, default=1e-9)
    p.add_argument("--noise", choices=["opendp", "seeded"], default="opendp")
    p.add_argument("--seed", type=int, default=0, help="seed of --noise seeded")
    p.add_argument("--option", action="append", default=[], help="AIM setting KEY=VALUE (ints/floats)")
    p.add_argument("--profile", type=int, default=0, help="print the top N functions (cumulative)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/aim_profile_cache"))
    p.add_argument("--json", type=Path, help="append one JSON line with the results here")
    a = p.parse_args(argv)

    from dpsynth.engines.aim import AIMSettings, fit_aim
    from dpsynth.privacy.accountant import Accountant, Budget, rho_for
    from dpsynth.privacy.session import MeasurementSession

    codes, cols, sizes, k, keep = load(a.dataset, a.cache)
    opts: dict[str, Any] = {}
    for kv in a.option:
        key, val = kv.split("=", 1)
        opts[key] = float(val) if "." in val or "e" in val else int(val)
    settings = dataclasses.replace(AIMSettings(**opts), keep_together=keep)
    noise = SeededNoise(a.seed) if a.noise == "seeded" else None
    accountant = Accountant(Budget(rho_for(a.epsilon, a.delta)))
    if noise is None:
        session = MeasurementSession(codes, cols, sizes, k, accountant)
    else:  # the tests' own helper: benchmarks never pass the test-only noise themselves
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from conftest import session_with_test_noise

        session = session_with_test_noise(codes, cols, sizes, k, accountant, noise)
    prof = cProfile.Profile() if a.profile else None
    w0, c0 = time.perf_counter(), time.process_time()
    if prof:
        prof.enable()
    model = fit_aim(session, settings)
    if prof:
        prof.disable()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    picked = [list(m.columns) for m in model.measurements if len(m.columns) > 1]
    res = {"dataset": a.dataset, "epsilon": a.epsilon, "noise": a.noise, "seed": a.seed,
           "options": opts, "fit_wall_s": round(wall, 2), "fit_cpu_s": round(cpu, 2),
           "rounds": model.info["rounds"], "final_iterations": model.info["final_iterations"],
           "total": round(model.total, 1), "load1": os.getloadavg()[0],
           **{k2: round(v, 5) for k2, v in model_tvd(model, codes, sizes).items()},
           "measured": picked}
    print(json.dumps({k2: v for k2, v in res.items() if k2 != "measured"}))
    if a.json:
        with a.json.open("a") as fh:
            fh.write(json.dumps(res) + "\n")
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(a.profile)
        s.write("\n")
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(a.profile)
        print(s.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
