"""``dpsynth sample``: more rows from a released model, optionally conditioned.

:func:`sample_bundle` is the whole command, one step after another:

    check     the options, the output path (never overwritten, never inside the bundle)
    verify    the bundle passes every check of ``dpsynth inspect``
              (:func:`dpsynth.inspect.verify_bundle`), its model (``model/``) included
    load      the schema and the model (:func:`dpsynth.model_format.read_model`); a
              bundle without a model (the smartnoise engines) is refused
    condition parse ``--condition`` (:func:`dpsynth.condition.parse_condition`) and
              condition the model on the codes it allows
              (:func:`dpsynth.engines.conditioning.condition`)
    generate  draw, decode, derive and enforce the rules exactly as a release does
              (:func:`dpsynth.generate.generate`), keeping rows where the condition
              is TRUE, until there are ``--rows``
    write     the table (Parquet or CSV, marked synthetic like the release's table) and
              ``FILE.sample.json``, atomically: both appear, or neither

Sampling reads only the public bundle: it is post-processing of the release's DP
outputs, costs no budget, and never opens a ledger. Must not: import a private-data
module, the ledger or the measurement session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from dpsynth.bundle import (
    MANIFEST,
    SCHEMA,
    SYNTHETIC_NOTICE,
    Content,
    csv_writer,
    parquet_writer,
    write_synced,
)
from dpsynth.capacity import check_rows
from dpsynth.condition import Condition, parse_condition
from dpsynth.domain import Domain
from dpsynth.engines.conditioning import condition
from dpsynth.errors import BundleVerificationError, ConditionError, StorageError, UsageError
from dpsynth.generate import generate
from dpsynth.hashing import sha256_file
from dpsynth.inspect import verify_bundle
from dpsynth.model_format import MODEL_ARRAYS, MODEL_ENGINES, MODEL_JSON, read_model
from dpsynth.schema import parse_schema
from dpsynth.version import __version__

__all__ = ["SAMPLE_FORMAT", "SIDECAR_SUFFIX", "SampleConfig", "SampleResult", "sample_bundle"]

SAMPLE_FORMAT = "dpsynth.sample/v1"
SIDECAR_SUFFIX = ".sample.json"
#: Rejection sampling gives up after this many draws per requested row (plus a floor).
DRAWS_PER_ROW = 200
DRAWS_FLOOR = 1_000_000

Progress = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class SampleConfig:
    """The settings of one ``dpsynth sample`` run."""

    bundle: Path
    """The release bundle directory (it must pass ``dpsynth inspect``)."""
    rows: int
    """Rows to write: exactly this many, every one satisfying ``condition``."""
    out: Path
    """The table to write (never overwritten); its sidecar is ``out`` + ``.sample.json``."""
    condition: str | None = None
    """SQL boolean expression on released columns, values as released."""
    seed: int | None = None
    """Seed of the sampler (post-processing); drawn at random when not given."""
    format: Literal["csv", "parquet"] | None = None
    """Output format; by default from ``out``'s suffix (``.csv``, ``.parquet``)."""

    def __post_init__(self) -> None:
        if isinstance(self.rows, bool) or not isinstance(self.rows, int) or self.rows < 1:
            raise UsageError(f"--rows ({self.rows}) must be a positive integer")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise UsageError(f"--seed ({self.seed}) must be in [0, 2^63)")
        if self.condition is not None and not self.condition.strip():
            raise UsageError("--condition must not be empty")

    @property
    def table_format(self) -> Literal["csv", "parquet"]:
        if self.format is not None:
            return self.format
        suffix = Path(self.out).suffix.lower()
        if suffix == ".csv":
            return "csv"
        if suffix in (".parquet", ".pq"):
            return "parquet"
        raise UsageError(f"--out {str(self.out)!r} has no .csv or .parquet suffix; give "
                         "--format csv or --format parquet")

    @property
    def sidecar(self) -> Path:
        return Path(str(self.out) + SIDECAR_SUFFIX)


@dataclass(frozen=True)
class SampleResult:
    """What a sample run wrote and how the rows were drawn (also its ``--json``)."""

    out: str
    sidecar: str
    format: str
    rows: int
    release_id: str
    manifest_sha256: str
    engine: str
    condition: str | None
    method: str
    """``unconditional``, ``exact`` (per-column evidence; rows rejected only inside bins
    that straddle a threshold) or ``rejection`` (see :mod:`dpsynth.condition`)."""
    acceptance_rate: float
    """Of the rows drawn that satisfied the rules, the share that satisfied the condition."""
    draws: int
    """Rows drawn from the (conditioned) model in all."""
    evidence_probability: float
    """The model's probability of the per-column evidence (1 without a condition)."""
    seed: int
    dpsynth_version: str
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per step (verify, load, condition, generate, write); ``--json`` only,
    never in the sidecar."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_bundle(cfg: SampleConfig, progress: Progress | None = None) -> SampleResult:
    """Draw ``cfg.rows`` rows from the bundle's model (see the module docstring)."""
    say = progress or (lambda _m: None)
    bundle = Path(cfg.bundle)
    fmt = cfg.table_format
    _check_out(cfg.out, cfg.sidecar, bundle)
    timings: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(step: str) -> None:
        now = time.perf_counter()
        timings[step] = round(now - clock[0], 3)
        clock[0] = now

    say(f"verifying the bundle {str(bundle)!r}")
    checked = verify_bundle(bundle)
    lap("verify")
    if not checked.ok:
        raise BundleVerificationError(str(bundle), checked.problems, checked.checks,
                                      checked.summary, checked.signature)
    manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    engine = str(manifest["engine"]["name"])
    if engine not in MODEL_ENGINES:
        raise UsageError(f"bundle {str(bundle)!r} was released with engine {engine!r}, which "
                         f"saves no model (only {' and '.join(MODEL_ENGINES)} bundles have "
                         "model/): dpsynth sample cannot draw from it")
    if not any(e.get("path") == MODEL_JSON for e in manifest.get("files", [])):
        raise UsageError(f"bundle {str(bundle)!r} holds no model/ (it was written before "
                         "dpsynth saved models): dpsynth sample cannot draw from it")
    schema = parse_schema((bundle / SCHEMA).read_text(encoding="utf-8"), source_name=SCHEMA)
    check_rows(schema, cfg.rows)
    model, _ = read_model((bundle / MODEL_JSON).read_bytes(), (bundle / MODEL_ARRAYS).read_bytes())
    domain = Domain.for_model(schema)  # with represent: all_rows, the internal row count too
    lap("load")
    cond: Condition | None = None
    z = 1.0
    if cfg.condition is not None:
        cond = parse_condition(cfg.condition, schema)
        say(f"conditioning the model on {len(cond.evidence(domain))} column(s) ({cond.method})")
        model, z = condition(model, cond.evidence(domain))
        if z <= 0:
            raise ConditionError("--condition has zero probability under the released model "
                                 "(the codes it allows carry no mass); nothing was written")
    lap("condition")
    seed = cfg.seed if cfg.seed is not None else secrets.randbits(63)
    rng = np.random.default_rng(seed)
    say(f"sampling {cfg.rows} rows")
    generated = generate(model, domain, schema, cfg.rows, rng,
                         keep=cond.expr if cond is not None else None,
                         max_draws=DRAWS_PER_ROW * cfg.rows + DRAWS_FLOOR)
    lap("generate")
    result = SampleResult(
        out=str(cfg.out), sidecar=str(cfg.sidecar), format=fmt, rows=generated.table.height,
        release_id=str(manifest["release_id"]), manifest_sha256=sha256_file(bundle / MANIFEST),
        engine=engine, condition=cfg.condition,
        method=cond.method if cond is not None else "unconditional",
        acceptance_rate=generated.kept / generated.tested if cond is not None else 1.0,
        draws=generated.draws, evidence_probability=z, seed=seed, dpsynth_version=__version__)
    say(f"writing {str(cfg.out)!r} and its sidecar")
    _publish(cfg, generated.table, result, manifest)
    lap("write")
    return dataclasses.replace(result, timings=timings)


# -- output ---------------------------------------------------------------------------


def _check_out(out: Path, sidecar: Path, bundle: Path) -> None:
    """Refuse an output that exists, or that would land inside the bundle (which would
    then fail ``inspect``: a file the manifest does not list)."""
    for p in (out, sidecar):
        if p.exists() or p.is_symlink():
            raise UsageError(f"output file {str(p)!r} already exists; choose a new --out "
                             "(sample files are never overwritten)")
    o, b = Path(out).resolve(), bundle.resolve()
    if b in o.parents:
        raise UsageError(f"--out {str(out)!r} is inside the bundle {str(bundle)!r}; write "
                         "sampled rows outside it (the bundle's manifest lists every file)")


def _sidecar(result: SampleResult, table: pl.DataFrame, manifest: Mapping[str, Any]
             ) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": SAMPLE_FORMAT,
        "dpsynth.synthetic": True,
        "file": Path(result.out).name,
        "table_format": result.format,
        "notice": SYNTHETIC_NOTICE,
        "release_id": result.release_id,
        "dataset_id": manifest.get("dataset_id"),
        "manifest_sha256": result.manifest_sha256,
        "engine": result.engine,
        "condition": result.condition,
        "rows": result.rows,
        "seed": result.seed,
        "method": result.method,
        "acceptance_rate": result.acceptance_rate,
        "draws": result.draws,
        "evidence_probability": result.evidence_probability,
        "dpsynth_version": result.dpsynth_version,
        "columns": [{"name": n, "type": str(pl.String() if isinstance(t, pl.Enum | pl.Categorical)
                                            else t)} for n, t in table.schema.items()],
    }
    if result.format == "csv":
        doc["null"] = "an empty cell"
    return doc


def _publish(cfg: SampleConfig, table: pl.DataFrame, result: SampleResult,
             manifest: Mapping[str, Any]) -> None:
    """Write the table and its sidecar to temporary files beside them, fsync, and link
    both into place (a link never replaces an existing file); on any failure neither
    is left behind."""
    side = (json.dumps(_sidecar(result, table, manifest), indent=2) + "\n").encode("utf-8")
    data: Content = (parquet_writer(table, result.release_id) if result.format == "parquet"
                     else csv_writer(table))
    targets = [(Path(cfg.out), data), (cfg.sidecar, side)]
    temps: list[Path] = []
    placed: list[Path] = []
    try:
        for final, content in targets:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
            temps.append(Path(name))
            with os.fdopen(fd, "wb") as fh:
                write_synced(fh, content)
            os.chmod(name, 0o644)  # mkstemp makes it 0600; sampled rows are public
        for (final, _), tmp in zip(targets, temps, strict=True):
            os.link(tmp, final)
            placed.append(final)
    except BaseException as exc:
        for p in placed:
            with contextlib.suppress(OSError):
                p.unlink()
        if isinstance(exc, FileExistsError):
            raise UsageError(f"output file {exc.filename!r} appeared while sampling; not "
                             "overwritten") from None
        if isinstance(exc, OSError):
            raise StorageError(f"cannot write {str(cfg.out)!r} "
                               f"({exc.strerror or type(exc).__name__})") from None
        raise
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                tmp.unlink()
    with contextlib.suppress(OSError):
        fd = os.open(Path(cfg.out).parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
