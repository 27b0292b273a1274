"""Reliability of `dpsynth release` under SIGKILL and under concurrency (issue 17).

Two parts, both with real processes (``python -m dpsynth release`` from this checkout):

1. **Kill trials.** N releases of a tiny generated table, each SIGKILLed: half at an
   injected point (``DPSYNTH_CRASH_AT``, every point of ``dpsynth.crashpoints.POINTS``
   in turn), a quarter at a random time after start-up, and a quarter while the bundle is
   written (a random delay, up to 1.3 times the write window one calibration run
   measured, after its temporary directory appears). After each trial the
   ledger and the output directory are checked:

   - no charge lost: every earlier charge is still there, its status only moved
     forward, and the counted rho never went down or past the total;
   - a read input is always charged: if the input file was opened (an audit hook in
     the child logs every ``open`` of it, fsynced, *before* the open happens), the
     release has a counted charge;
   - no bundle at the final path without the ledger saying ``released``, or ``spent``
     and reconcilable: ``dpsynth ledger reconcile --bundle`` then marks it released;
   - no half-written bundle at the final path: whatever is there passes
     ``verify_bundle``;
   - no plain-text copies left: the child's private ``TMPDIR`` holds no
     ``dpsynth-input-*`` (decompressed gzip input) afterwards;
   - stale bundle temp dirs (``.<out>.tmp-*``) a kill left are removed by the next
     release to the same ``--out`` (the next trial reuses the name when no bundle
     appeared there).

2. **Concurrency.** 16 releases started at once against one ledger whose dataset has
   room for exactly 5 of them, on SQLite and on a throwaway PostgreSQL server: exactly
   5 succeed, the others are refused (exit 4, nothing charged), and the counted rho,
   polled every 0.5 s while they run, never exceeds the total.

Writes a table to ``benchmarks/results/reliability.md`` and every trial to the JSON
beside it; exits 1 if any invariant failed. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dpsynth.bundle import TEMP_INFIX  # noqa: E402
from dpsynth.crashpoints import ENV, POINTS  # noqa: E402
from dpsynth.inspect import verify_bundle  # noqa: E402
from dpsynth.privacy.accountant import epsilon_for, rho_for  # noqa: E402
from dpsynth.privacy.ledger import COUNTED_STATUSES, open_ledger  # noqa: E402
from dpsynth.privacy.ledger.core import _TRANSITIONS  # noqa: E402

DATASET = "clinic"
DELTA = 1e-9
SCHEMA = """\
format: dpsynth.table-schema/v1
name: clinic
version: 1
privacy_unit: {column: pid, max_rows: 2}
columns:
  - {name: pid, kind: identifier}
  - {name: sex, kind: categorical, categories: [F, M]}
  - {name: age, kind: integer, bounds: [0, 99], bin_width: 10}
  - {name: smoker, kind: boolean}
  - {name: dx, kind: categorical, nullable: true, categories: [a, b, c, d]}
"""
# Logs every open() of the input file, fsynced, before it happens (sitecustomize runs
# at interpreter start in the child; the child's command stays `python -m dpsynth`).
SITECUSTOMIZE = '''\
import os, sys
_log, _input = os.environ.get("RELIABILITY_OPEN_LOG"), os.environ.get("RELIABILITY_INPUT")
if _log and _input:
    _target = os.path.realpath(_input)

    def _hook(event, args):
        if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        try:
            if os.path.realpath(os.fsdecode(args[0])) != _target:
                return
        except (TypeError, ValueError, OSError):
            return
        fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"opened\\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    sys.addaudithook(_hook)
'''


def make_table(path: Path, n_patients: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["pid,sex,age,smoker,dx"]
    for p in range(n_patients):
        for _ in range(rng.randint(1, 3)):
            age = rng.randint(0, 99)
            dx = rng.choice("ab") if age > 60 else rng.choice(["c", "d", ""])
            smoker = rng.random() < (0.6 if age > 40 else 0.1)
            lines.append(f"{p},{rng.choice('FM')},{age},{str(smoker).lower()},{dx}")
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)


@dataclass
class Setup:
    work: Path
    schema: Path
    inputs: dict[str, Path]
    hook_dir: Path
    python: str
    epsilon: float


def child_env(setup: Setup, tmpdir: Path, open_log: Path | None, input_path: Path | None,
              crash_at: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(setup.hook_dir)])
    env["TMPDIR"] = str(tmpdir)
    if open_log is not None and input_path is not None:
        env["RELIABILITY_OPEN_LOG"] = str(open_log)
        env["RELIABILITY_INPUT"] = str(input_path)
    if crash_at:
        env[ENV] = crash_at
    return env


def release_args(setup: Setup, ledger: str, input_path: Path, out: Path, release_id: str,
                 epsilon: float | None = None) -> list[str]:
    return [setup.python, "-m", "dpsynth", "release", "--schema", str(setup.schema),
            "--input", str(input_path), "--out", str(out), "--ledger", ledger,
            "--engine", "mst", "--epsilon", f"{epsilon or setup.epsilon:g}",
            "--release-id", release_id, "--seed", "1", "--quiet", "--json"]


def ledger_cli(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(ENV, None)
    return subprocess.run([setup.python, "-m", "dpsynth", "ledger", *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def snapshot(ledger: str) -> tuple[dict[str, tuple[str, float]], float, float]:
    """{release_id: (status, rho)}, counted rho, total rho."""
    with open_ledger(ledger) as led:
        s = led.summary(DATASET)
    return ({c.release_id: (c.status, c.rho) for c in s.charges},
            math.fsum(c.rho for c in s.charges if c.counted), s.total_rho)


# ------------------------------------------------------------------------ kill trials


@dataclass
class Trial:
    index: int
    mode: str  # "point", "time" (from the start) or "write" (from the bundle's temp dir)
    point: str | None
    kill_after_s: float | None
    input: str
    out: str
    release_id: str
    returncode: int | None = None
    killed: bool = False
    input_opened: bool = False
    status: str | None = None
    bundle_at_final_path: bool = False
    bundle_verified: bool | None = None
    reconciled: bool = False
    temp_dirs_left: int = 0
    stale_temp_dirs_before: int = 0
    stale_temp_dirs_removed: bool | None = None
    plain_text_copies_left: int = 0
    other_temp_entries_left: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _appeared(out: Path, old: frozenset[Path] = frozenset()) -> bool:
    """A new temporary directory of the bundle holds a file (or the bundle exists):
    writing has begun. Empty ones are the path check's probes (made and removed at
    once); ``old`` ones were left by an earlier, killed trial."""
    prefix = f".{out.name}{TEMP_INFIX}"
    try:
        return out.exists() or any(p.name.startswith(prefix) and p not in old and any(p.iterdir())
                                   for p in out.parent.iterdir())
    except OSError:
        return False


def run_killed(args: list[str], env: dict[str, str], kill_after: float | None,
               from_write_of: Path | None = None,
               old: frozenset[Path] = frozenset()) -> tuple[int, bool, float]:
    """Run ``args``; SIGKILL its process group ``kill_after`` seconds after it started,
    or (``from_write_of``) after the bundle's temporary directory appeared, if it is
    still running. Returns (returncode, killed by SIGKILL, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        if kill_after is not None:
            if from_write_of is not None:
                while proc.poll() is None and not _appeared(from_write_of, old):
                    time.sleep(0.005)
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    return proc.returncode, proc.returncode == -signal.SIGKILL, time.monotonic() - t0


def calibrate(setup: Setup, ledger: str) -> dict[str, float]:
    """One release without a kill: its wall time, start-up time, and the time from its
    bundle's temporary directory appearing to the bundle's rename and to exit."""
    out = setup.work / "calibration" / "bundle"
    tmp = setup.work / "calibration" / "tmp"
    tmp.mkdir(parents=True)
    out.parent.mkdir(exist_ok=True)
    env = child_env(setup, tmp, None, None, None)
    t0 = time.monotonic()
    proc = subprocess.Popen(release_args(setup, ledger, setup.inputs["csv"], out, "calibration"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t_write = t_publish = None
    while proc.poll() is None:
        now = time.monotonic()
        if t_write is None and _appeared(out):
            t_write = now
        if t_publish is None and out.exists():
            t_publish = now
        time.sleep(0.005)
    stdout, stderr = proc.communicate()
    end = time.monotonic()
    if proc.returncode != 0:
        raise SystemExit(f"calibration release failed ({proc.returncode}): {stderr[-2000:]}")
    timings = json.loads(stdout)["timings"]
    return {"wall": end - t0, "startup": max(0.0, end - t0 - timings["total"]),
            "bundle": timings.get("bundle", 0.0),
            "write_to_publish": (t_publish or end) - (t_write or end),
            "write_to_exit": end - (t_write or end)}


def check_trial(setup: Setup, ledger: str, trial: Trial, before: dict[str, tuple[str, float]],
                counted_before: float, out: Path, open_log: Path, tmpdir: Path,
                stale_before: list[Path]) -> dict[str, tuple[str, float]]:
    v = trial.violations
    charges, counted, total = snapshot(ledger)
    # no charge lost: every earlier charge is still there and only moved forward
    for rid, (st, rho) in before.items():
        now = charges.get(rid)
        if now is None:
            v.append(f"charge {rid} disappeared")
        elif now[1] != rho:
            v.append(f"charge {rid} changed its rho")
        elif now[0] != st and now[0] not in _TRANSITIONS[st]:
            v.append(f"charge {rid} moved {st} -> {now[0]}")
    if counted < counted_before - 1e-15:
        v.append("the counted budget went down")
    if counted > total * (1 + 1e-9):
        v.append("the counted budget exceeds the total")
    trial.status = charges.get(trial.release_id, (None, 0.0))[0]
    trial.input_opened = open_log.exists() and open_log.stat().st_size > 0
    # a read input is always charged
    if trial.input_opened and trial.status not in COUNTED_STATUSES:
        v.append(f"input opened but the charge is {trial.status}")
    if trial.killed and trial.status in ("cancelled", "spent-failed"):
        v.append(f"a killed run's charge became {trial.status}")  # no handler runs on SIGKILL
    # bundles at the final path: complete, and released or reconcilable
    trial.bundle_at_final_path = out.exists() or out.is_symlink()
    if trial.bundle_at_final_path:
        trial.bundle_verified = out.is_dir() and verify_bundle(out).ok
        if not trial.bundle_verified:
            v.append("a half-written bundle at the final path")
        if trial.status == "spent":
            r = ledger_cli(setup, "reconcile", "--ledger", ledger, "--bundle", str(out), "--json")
            trial.reconciled = r.returncode == 0
            if not trial.reconciled:
                v.append(f"bundle with a spent charge not reconcilable: {r.stderr.strip()[-300:]}")
            charges = snapshot(ledger)[0]
            trial.status = charges.get(trial.release_id, (None, 0.0))[0]
        if trial.status != "released":
            v.append(f"bundle at the final path while the charge is {trial.status}")
    elif trial.status == "released":
        v.append("charge released but no bundle at the final path")
    # temporary directories and plain-text copies
    prefix = f".{out.name}{TEMP_INFIX}"
    left = [p for p in out.parent.iterdir() if p.name.startswith(prefix)]
    trial.temp_dirs_left = len(left)
    if not trial.killed and left:
        v.append("a run that was not killed left a temporary bundle directory")
    trial.stale_temp_dirs_before = len(stale_before)
    if stale_before and trial.status is not None:  # the run got past its preflight
        trial.stale_temp_dirs_removed = not any(p.exists() for p in stale_before)
        if not trial.stale_temp_dirs_removed:
            v.append("a stale temporary bundle directory was not removed by the next run")
    entries = list(tmpdir.iterdir())
    trial.plain_text_copies_left = sum(p.name.startswith("dpsynth-input-") for p in entries)
    trial.other_temp_entries_left = len(entries) - trial.plain_text_copies_left
    if trial.plain_text_copies_left:
        v.append("a decompressed copy of the input was left in TMPDIR")
    return charges


def kill_trials(setup: Setup, n: int, rng: random.Random) -> tuple[list[Trial], dict[str, float]]:
    ledger = f"sqlite:///{setup.work / 'ledger' / 'kills.db'}"
    init = ledger_cli(setup, "init", "--ledger", ledger, "--dataset-id", DATASET,
                      "--total-epsilon", "1000", "--total-delta", "1e-6")
    if init.returncode != 0:
        raise SystemExit(init.stderr)
    cal = calibrate(setup, ledger)
    print(f"calibration: wall {cal['wall']:.1f} s, start-up {cal['startup']:.1f} s, "
          f"bundle stage {cal['bundle']:.1f} s, temporary directory to rename "
          f"{cal['write_to_publish']:.2f} s, to exit {cal['write_to_exit']:.2f} s", flush=True)
    points = list(POINTS)
    outdir = setup.work / "out"
    outdir.mkdir()
    name_index = 0
    trials: list[Trial] = []
    before, counted, _ = snapshot(ledger)
    for i in range(n):
        input_kind = "gz" if (i // 2) % 2 else "csv"
        out = outdir / f"bundle{name_index}"
        from_write: Path | None = None
        if i % 2 == 0:
            mode, point, after = "point", points[(i // 2) % len(points)], None
            if point == "after-decompress":
                input_kind = "gz"
        elif i % 4 == 1:  # anywhere after start-up, timed from the process start
            mode, point = "time", None
            after = rng.uniform(0.8 * cal["startup"], cal["wall"] * 1.05)
        else:  # while the bundle is written: timed from its temporary directory's appearance
            mode, point, from_write = "write", None, out
            # 1.3 x the write: about 3/4 of these land before the rename, the rest in the
            # short window after it (mark released, exit)
            after = rng.uniform(0.0, 1.3 * cal["write_to_publish"] + 0.05)
        stale = [p for p in outdir.iterdir() if p.name.startswith(f".{out.name}{TEMP_INFIX}")]
        tmpdir = setup.work / "tmp" / f"trial{i}"
        tmpdir.mkdir(parents=True)
        open_log = setup.work / "opens" / f"trial{i}.log"
        open_log.parent.mkdir(exist_ok=True)
        trial = Trial(i, mode, point, None if after is None else round(after, 2), input_kind,
                      out.name, f"trial-{i}")
        env = child_env(setup, tmpdir, open_log, setup.inputs[input_kind], point)
        args = release_args(setup, ledger, setup.inputs[input_kind], out, trial.release_id)
        # an injected point that is never reached (e.g. after-decompress on a plain CSV)
        # lets the run finish: that is reported, not a violation
        trial.returncode, trial.killed, trial.seconds = run_killed(args, env, after, from_write,
                                                                   frozenset(stale))
        before = check_trial(setup, ledger, trial, before, counted, out, open_log, tmpdir, stale)
        counted = snapshot(ledger)[1]
        if trial.bundle_at_final_path:
            name_index += 1
        trials.append(trial)
        what = point or (f"write+{after:.2f}s" if from_write else f"t={after:.1f}s")
        print(f"trial {i:3d} {mode:5s} {what:16s} {input_kind:3s} rc={trial.returncode:4d} "
              f"status={trial.status!s:13s} bundle={trial.bundle_at_final_path!s:5s} "
              f"tmp_left={trial.temp_dirs_left} violations={len(trial.violations)}", flush=True)
    return trials, cal


# ------------------------------------------------------------------------ concurrency


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """initdb + pg_ctl on a free port (as tests/pg_fixture.py does), in a directory of
    its own the ``postgres`` user can enter; yields a URL."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pg_fixture import _free_port, _run, find_pg_bin

    pgbin = find_pg_bin()
    if pgbin is None:
        raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql/<version>/bin")
    as_postgres = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="dpsynth-reliability-pg-"))
    base.chmod(0o755)
    datadir = base / "data"
    datadir.mkdir(mode=0o700)
    if as_postgres:
        shutil.chown(datadir, "postgres", "postgres")
    r = _run([str(pgbin / "initdb"), "-D", str(datadir), "-U", "postgres", "-A", "trust",
              "--no-sync", "-E", "UTF8", "--locale=C"], as_postgres)
    if r.returncode:
        raise RuntimeError(f"initdb failed: {r.stderr}")
    port = _free_port()
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {datadir} -c max_connections=100"
    r = _run([str(pgbin / "pg_ctl"), "-D", str(datadir), "-l", str(datadir / "server.log"),
              "-w", "-t", "60", "-o", opts, "start"], as_postgres)
    if r.returncode:
        raise RuntimeError(f"pg_ctl start failed: {r.stderr}")
    try:
        yield f"postgresql://postgres:unused@127.0.0.1:{port}/postgres"
    finally:
        _run([str(pgbin / "pg_ctl"), "-D", str(datadir), "-m", "fast", "-w", "stop"], as_postgres)
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Concurrency:
    backend: str
    processes: int
    room_for: int
    succeeded: int = 0
    refused: int = 0
    other: dict[str, int] = field(default_factory=dict)
    charges: int = 0
    bundles_verified: int = 0
    max_counted_over_total: float = 0.0
    polls: int = 0
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)


def concurrency(setup: Setup, backend: str, ledger: str, processes: int,
                room_for: int) -> Concurrency:
    eps = 0.5
    each = rho_for(eps, DELTA)
    total_eps = epsilon_for((room_for + 0.5) * each, DELTA)
    init = ledger_cli(setup, "init", "--ledger", ledger, "--dataset-id", DATASET,
                      "--total-epsilon", repr(total_eps), "--total-delta", repr(DELTA))
    if init.returncode != 0:
        raise SystemExit(init.stderr)
    total = snapshot(ledger)[2]
    assert math.floor(total / each) == room_for, (total, each)
    res = Concurrency(backend, processes, room_for)
    base = setup.work / f"concurrency-{backend}"
    (base / "tmp").mkdir(parents=True)
    env = child_env(setup, base / "tmp", None, None, None)
    t0 = time.monotonic()
    procs = [subprocess.Popen(release_args(setup, ledger, setup.inputs["csv"], base / f"b{i}",
                                           f"{backend}-{i}", epsilon=eps),
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i in range(processes)]
    worst = 0.0
    while any(p.poll() is None for p in procs):
        counted = snapshot(ledger)[1]
        worst = max(worst, counted / total)
        res.polls += 1
        time.sleep(0.5)
    res.seconds = time.monotonic() - t0
    codes = Counter(p.returncode for p in procs)
    res.succeeded, res.refused = codes.pop(0, 0), codes.pop(4, 0)
    res.other = {str(k): v for k, v in codes.items()}
    charges, counted, _ = snapshot(ledger)
    res.max_counted_over_total = max(worst, counted / total)
    res.charges = sum(1 for st, _ in charges.values() if st in COUNTED_STATUSES)
    res.bundles_verified = sum(1 for i in range(processes)
                               if (base / f"b{i}").is_dir() and verify_bundle(base / f"b{i}").ok)
    if res.succeeded != room_for:
        res.violations.append(f"{res.succeeded} releases succeeded, expected {room_for}")
    if res.refused != processes - room_for or res.other:
        res.violations.append(f"exit codes besides 0 and 4: {res.other}")
    if res.max_counted_over_total > 1 + 1e-9:
        res.violations.append("the counted budget exceeded the total")
    if res.charges != room_for or res.bundles_verified != room_for:
        res.violations.append(f"{res.charges} counted charges, {res.bundles_verified} bundles")
    print(f"concurrency {backend}: {res.succeeded} ok, {res.refused} refused, other {res.other}, "
          f"max counted/total {res.max_counted_over_total:.4f} ({res.polls} polls), "
          f"{res.seconds:.0f} s", flush=True)
    return res


# ------------------------------------------------------------------------ report


def load_note() -> str:
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "?"


def write_report(path: Path, trials: list[Trial], cal: dict[str, float],
                 conc: list[Concurrency], meta: dict[str, Any]) -> None:
    lines = ["# dpsynth reliability: SIGKILL trials and concurrent releases", "",
             f"Machine: {meta['machine']}, {meta['cpus']} cores; load average before "
             f"{meta['load_before']}, after {meta['load_after']}. Command: `{meta['command']}` "
             f"({meta['seconds']:.0f} s).", ""]
    if trials:
        lines += [f"Calibration release: wall {cal['wall']:.1f} s (start-up {cal['startup']:.1f} s, "
                  f"bundle stage {cal['bundle']:.1f} s; {cal['write_to_publish']:.2f} s from "
                  "the bundle's temporary directory appearing to its rename). Each trial SIGKILLs "
                  "`python -m dpsynth release` (MST, tiny generated table, CSV or gzip CSV) at an "
                  "injected point, at a random time after start-up, or once the temporary "
                  "directory appears, after a random delay of up to 1.3 x that window; then it "
                  "checks the invariants (benchmarks/README.md). `killed` < `trials`: the point "
                  "was never reached or the run ended first.", "",
                  "| kill | trials | killed | charge status after the kill | input opened (all "
                  "charged) | bundle at final path (verified; reconciled) | temp dirs left -> "
                  "removed by next run | plain-text copies left | violations |",
                  "|---|---|---|---|---|---|---|---|---|"]
        groups: dict[str, list[Trial]] = {}
        for t in trials:
            key = {"point": f"point `{t.point}`",
                   "write": "random time while the bundle is written",
                   "time": "random time after start-up"}[t.mode]
            groups.setdefault(key, []).append(t)
        for key in sorted(groups, key=lambda k: (not k.startswith("point"), k)):
            ts = groups[key]
            st = Counter(str(t.status) for t in ts)
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(st.items()))
            opened = sum(t.input_opened for t in ts)
            charged = sum(t.input_opened and t.status in COUNTED_STATUSES for t in ts)
            bundles = sum(t.bundle_at_final_path for t in ts)
            verified = sum(bool(t.bundle_verified) for t in ts)
            reconciled = sum(t.reconciled for t in ts)
            left = sum(t.temp_dirs_left > 0 for t in ts)
            removed = [t2.stale_temp_dirs_removed for t in ts for t2 in trials
                       if t2.index == t.index + 1 and t.temp_dirs_left and t2.out == t.out]
            removed_txt = f"{sum(bool(r) for r in removed)}/{len(removed)}" if removed else "-"
            copies = sum(t.plain_text_copies_left for t in ts)
            viol = sum(len(t.violations) for t in ts)
            lines.append(f"| {key} | {len(ts)} | {sum(t.killed for t in ts)} | {statuses} | "
                         f"{opened} ({charged}) | {bundles} ({verified}; {reconciled}) | "
                         f"{left} -> {removed_txt} | {copies} | {viol} |")
        all_v = [f"trial {t.index}: {x}" for t in trials for x in t.violations]
        lines += ["", f"Invariant violations in {len(trials)} trials: {len(all_v)}."]
        lines += [f"- {x}" for x in all_v]
        lines.append("")
    if conc:
        lines += ["| ledger | concurrent releases | room for | succeeded | refused (exit 4) | "
                  "other exits | counted charges | bundles verified | max counted / total "
                  "(polls) | seconds | violations |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in conc:
            lines.append(f"| {c.backend} | {c.processes} | {c.room_for} | {c.succeeded} | "
                         f"{c.refused} | {c.other or '-'} | {c.charges} | {c.bundles_verified} | "
                         f"{c.max_counted_over_total:.4f} ({c.polls}) | {c.seconds:.0f} | "
                         f"{len(c.violations)} |")
        lines += [f"- {c.backend}: {x}" for c in conc for x in c.violations]
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    path.with_suffix(".json").write_text(json.dumps({
        "meta": meta, "calibration": cal, "trials": [asdict(t) for t in trials],
        "concurrency": [asdict(c) for c in conc]}, indent=2) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=14,
                    help="SIGKILL trials: even ones at an injected point, odd ones at a random "
                         "time after start-up or while the bundle is written (default 14: every "
                         "point once, 7 random times)")
    ap.add_argument("--processes", type=int, default=16, help="concurrent releases (16)")
    ap.add_argument("--room-for", type=int, default=5,
                    help="releases the dataset's budget has room for (5)")
    ap.add_argument("--backends", default="sqlite,postgresql",
                    help="ledgers for the concurrency check (sqlite,postgresql)")
    ap.add_argument("--patients", type=int, default=300, help="patients in the generated table")
    ap.add_argument("--seed", type=int, default=17, help="seed of the kill times and the table")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "reliability.md",
                    help="the Markdown table (the JSON goes beside it)")
    ap.add_argument("--workdir", type=Path, help="keep the ledgers, bundles and logs here "
                    "(default: a temporary directory, removed)")
    args = ap.parse_args()
    t0 = time.monotonic()
    load_before = load_note()
    rng = random.Random(args.seed)
    keep = args.workdir is not None
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dpsynth-reliability-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        (work / "hook").mkdir(exist_ok=True)
        (work / "hook" / "sitecustomize.py").write_text(SITECUSTOMIZE)
        (work / "ledger").mkdir(exist_ok=True)
        (work / "schema.yaml").write_text(SCHEMA)
        inputs = {"csv": work / "table.csv", "gz": work / "table.csv.gz"}
        for p in inputs.values():
            make_table(p, args.patients, args.seed)
        setup = Setup(work, work / "schema.yaml", inputs, work / "hook", sys.executable, 0.05)
        trials, cal = kill_trials(setup, args.trials, rng) if args.trials else ([], {})
        conc = []
        for backend in [b for b in args.backends.split(",") if b]:
            if backend == "sqlite":
                conc.append(concurrency(setup, backend, f"sqlite:///{work / 'ledger' / 'conc.db'}",
                                        args.processes, args.room_for))
            elif backend == "postgresql":
                with throwaway_postgres() as url:
                    conc.append(concurrency(setup, backend, url, args.processes, args.room_for))
            else:
                raise SystemExit(f"unknown backend {backend!r}")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    cmd = "python benchmarks/reliability.py" + "".join(f" {a}" for a in sys.argv[1:])
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "command": cmd,
            "load_before": load_before, "load_after": load_note(),
            "seconds": time.monotonic() - t0}
    write_report(args.out, trials, cal, conc, meta)
    bad = sum(len(t.violations) for t in trials) + sum(len(c.violations) for c in conc)
    print(f"{bad} invariant violation(s); wrote {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
