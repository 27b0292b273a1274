"""The straight-line pipeline: ``check`` and ``release``, one step after another.

Reads like design.md §3: schema -> budget reserved in the ledger -> private table
read, checked, bounded and encoded -> measurement session -> engine fit ->
(privacy boundary) -> sample -> decode -> validate -> reports -> bundle written
atomically -> ledger commit. Each step is a call into its module; this file only
sequences them and keeps the ledger's status in step with what has happened:

* anything failing before the input is opened cancels the reservation (no
  budget spent);
* once the input has been opened, the charge stands: a later failure marks it
  ``spent-failed`` and leaves no bundle behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth import __version__
from dpsynth.confidential import refuse_audit_dir
from dpsynth.errors import DpsynthError, StorageError, UsageError
from dpsynth.schema import Schema, load_schema

__all__ = ["ReleaseConfig", "ReleaseResult", "check", "ledger_placement_warning", "release"]

Progress = Callable[[str], None]
DEFAULT_DELTA = 1e-9


def check(schema_path: str | Path, input_path: str | Path | None = None) -> dict[str, Any]:
    """Validate a schema, and optionally a table against it. Writes nothing."""
    schema = load_schema(schema_path)
    out: dict[str, Any] = {
        "schema": schema.name,
        "schema_sha256": schema.sha256,
        "columns": len(schema.columns),
        "released_columns": len(schema.measured_columns),
        "privacy_unit": schema.privacy_unit.description,
    }
    if input_path is not None:
        from dpsynth.io import check_table, is_parquet, open_table

        with open_table(input_path, schema) as lf:
            check_table(lf, schema, from_csv=not is_parquet(input_path))
        out["input_checked"] = True
    return out


def ledger_placement_warning(ledger_url: str, out_dir: Path) -> str | None:
    """A warning when a SQLite ledger file sits inside the bundle directory or next
    to it (in its parent), where it could be shipped with the bundle: the ledger
    holds the input file's hash and every release's exact timestamps."""
    if not ledger_url.startswith("sqlite:///"):
        return None
    db = Path(ledger_url.removeprefix("sqlite:///")).resolve()
    out = out_dir.resolve()
    if out in db.parents or db.parent == out.parent:
        return (f"the ledger file {str(db)!r} sits {'inside' if out in db.parents else 'next to'} "
                f"the bundle {str(out)!r}, where it could be shipped with it; keep the ledger "
                "in a directory of its own that is never published")
    return None


@dataclass(frozen=True, kw_only=True)
class ReleaseConfig:
    """Everything a release needs; validated on construction."""

    schema_path: Path
    """The table schema (YAML)."""
    input_path: Path | str
    """The private table (CSV, gzip CSV or Parquet); a URL (s3a://, hdfs://) with Spark."""
    out_dir: Path
    """Where the bundle goes; must not exist yet (or be empty)."""
    epsilon: float
    """Epsilon of this release."""
    delta: float = DEFAULT_DELTA
    """Delta of this release."""
    engine: str = "aim"
    """Synthesis engine (see ``dpsynth.engines.ENGINES``)."""
    rows: int | None = None
    """Synthetic rows; default: the DP estimate of the (bounded) row count."""
    ledger_url: str | None = None
    """Ledger URL (``sqlite:///path`` or ``postgresql://...``); required."""
    dataset_id: str | None = None
    """Ledger dataset; default: the schema's name."""
    release_id: str | None = None
    """Idempotency key of this release; default: generated."""
    audit_dir: Path | None = None
    """Where the internal audit report goes (never inside the bundle)."""
    seed: int | None = None
    """Seed of the post-processing sampler (not of the DP noise)."""
    engine_settings: Any = None
    """Engine settings object; default: the engine's defaults."""
    backend: str = "polars"
    """Where the private steps run: ``polars`` (this machine) or ``spark``."""
    spark_master: str | None = None
    """Spark master URL for the spark backend (default: spark-submit's or local[*])."""
    allow_shared_input: bool = False
    """Allow an input whose exact bytes were already charged in this ledger under
    another dataset id (the custodian states that the two budgets are separate
    on purpose); by default such a release is refused (exit 4)."""

    def __post_init__(self) -> None:
        import math

        if not (isinstance(self.epsilon, int | float) and math.isfinite(self.epsilon)
                and self.epsilon > 0):
            raise UsageError(f"epsilon ({self.epsilon}) must be a positive finite number")
        if not (0 < self.delta < 1):
            raise UsageError(f"delta ({self.delta}) must be in (0, 1)")
        if self.backend not in ("polars", "spark"):
            raise UsageError(f"backend ({self.backend!r}) must be polars or spark")
        if self.rows is not None and self.rows < 1:
            raise UsageError(f"rows ({self.rows}) must be at least 1")
        if self.seed is not None and self.seed < 0:
            raise UsageError(f"seed ({self.seed}) must be non-negative")
        if not self.ledger_url:
            raise UsageError("--ledger (or DPSYNTH_LEDGER) must give a ledger URL, e.g. "
                             "sqlite:///var/lib/dpsynth/ledger.db (create it with "
                             "`dpsynth ledger init`)")
        if self.audit_dir is not None:
            refuse_audit_dir(self.audit_dir, self.out_dir, option="--audit-dir")


@dataclass(frozen=True)
class ReleaseResult:
    """What a release produced (also the ``--json`` output)."""

    release_id: str
    dataset_id: str
    bundle: str
    rows: int
    engine: str
    epsilon: float
    delta: float
    rho: float
    ledger: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    audit_dir: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _new_release_id(schema: Schema) -> str:
    """``<schema>-<YYYYMMDD>-<random>``: the day only, never the time of day (the
    release id is public, and with any later time it would give the run time)."""
    day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    return f"{schema.name}-{day}-{secrets.token_hex(4)}"


def _check_out_dir(out_dir: Path) -> None:
    """The bundle directory must be new (or empty); its parent is created if needed
    (the bundle itself only appears, atomically, at the end)."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UsageError(f"output directory {str(out_dir)!r} already exists and is not empty")
    parent = out_dir.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        raise StorageError(f"cannot create the parent directory of {str(out_dir)!r}") from None
    if not os.access(parent, os.W_OK):
        raise StorageError(f"cannot write in {str(parent)!r}")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def release(cfg: ReleaseConfig, progress: Progress | None = None,
            warn: Progress | None = None) -> ReleaseResult:
    """Run one release end to end; see the module docstring for the ledger order.

    ``progress`` gets progress lines, ``warn`` warnings (also returned in the
    result)."""
    from dpsynth.engines import get_engine
    from dpsynth.privacy.accountant import rho_for
    from dpsynth.privacy.ledger import open_ledger

    say = progress or (lambda _msg: None)
    warnings: list[str] = []

    def caution(message: str) -> None:
        warnings.append(message)
        if warn is not None:
            warn(message)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # 1. public preparation: nothing here reads the private table
    schema = load_schema(cfg.schema_path)
    engine = get_engine(cfg.engine)
    settings = cfg.engine_settings if cfg.engine_settings is not None else engine.settings()
    _check_out_dir(cfg.out_dir)
    if cfg.backend == "polars" and not Path(cfg.input_path).is_file():
        raise UsageError(f"input file {str(cfg.input_path)!r} does not exist")
    dataset_id = cfg.dataset_id or schema.name
    release_id = cfg.release_id or _new_release_id(schema)
    rho = rho_for(cfg.epsilon, cfg.delta)
    ledger_url = str(cfg.ledger_url)
    placement = ledger_placement_warning(ledger_url, cfg.out_dir)
    if placement:
        caution(placement)

    with open_ledger(ledger_url) as ledger:
        # 2. budget before data
        say(f"reserving epsilon={cfg.epsilon:g}, delta={cfg.delta:g} in the ledger")
        ledger.reserve(dataset_id, release_id, rho, cfg.epsilon, cfg.delta, cfg.engine,
                       __version__, schema.sha256)
        spent = False
        try:
            input_hash = (_file_sha256(Path(cfg.input_path))
                          if Path(cfg.input_path).is_file() else None)
            _refuse_shared_input(ledger, input_hash, dataset_id, cfg.allow_shared_input, caution)
            ledger.mark_spent(release_id, input_hash=input_hash)
            spent = True
            model, charges, private_timings = _private_half(cfg, schema, engine, settings, rho,
                                                            say)
            timings.update(private_timings)
            # ======== privacy boundary: nothing below sees private data ========
            bundle_path, n_rows, t_post = _public_half(
                cfg, schema, model, charges, settings, release_id, dataset_id, rho, ledger, say)
            timings.update(t_post)
            ledger.mark_released(release_id)
        except BaseException as exc:
            detail = exc.kind if isinstance(exc, DpsynthError) else type(exc).__name__
            with contextlib.suppress(DpsynthError):
                ledger.mark_failed(release_id, f"failed: {detail}")
            if spent:
                say("release failed after the input was read: the budget stays spent")
            raise
        summary = ledger.summary(dataset_id)

    audit_path = None
    if cfg.audit_dir is not None and cfg.backend == "spark":
        say("--audit-dir is not supported with --backend spark yet: run `dpsynth audit` on a "
            "machine that can read the table")
    elif cfg.audit_dir is not None:
        say("writing the internal audit report (confidential)")
        from dpsynth.audit import write_audit

        audit_path = str(write_audit(cfg.audit_dir, schema, Path(cfg.input_path), bundle_path,
                                     release_id))
    timings["total"] = time.perf_counter() - t0
    return ReleaseResult(
        release_id=release_id, dataset_id=dataset_id, bundle=str(bundle_path), rows=n_rows,
        engine=cfg.engine, epsilon=cfg.epsilon, delta=cfg.delta, rho=rho,
        ledger=_public_summary(summary), timings={k: round(v, 3) for k, v in timings.items()},
        audit_dir=audit_path, warnings=warnings,
    )


def _refuse_shared_input(ledger: Any, input_hash: str | None, dataset_id: str, allowed: bool,
                         caution: Progress) -> None:
    """The same bytes charged under another dataset id would get a fresh budget by
    accident: refuse (exit 4, naming that dataset) unless the custodian allowed it.
    Once a dataset id has a counted charge on these bytes, it is never refused again
    (its first charge was either the original one or an allowed one).

    Runs after the input was hashed but before anything is measured: the refusal
    cancels the reservation (no DP output exists, and the only party who learns
    that the file matches is the custodian, who holds it)."""
    from dpsynth.errors import BudgetError

    if input_hash is None:
        return
    charged = ledger.datasets_with_input(input_hash)
    # this dataset already spends on these bytes (first, or allowed earlier): settled
    others = [d for d in charged if d != dataset_id]
    if not others or dataset_id in charged:
        return
    names = ", ".join(repr(o) for o in others)
    if not allowed:
        raise BudgetError(
            f"this input file was already charged under dataset id {names} in this ledger; its "
            f"releases must share that budget (use --dataset-id {others[0]}). If the two "
            "budgets are separate on purpose, pass --allow-shared-input")
    caution(f"this input file was already charged under dataset id {names}; its budget under "
            f"{dataset_id!r} is separate because --allow-shared-input was given")


def _public_summary(summary: Any) -> dict[str, Any]:
    """Dataset totals for reports: no input hashes (a hash of the private file lets
    someone who knows all but one record confirm a guess of the last one)."""
    return {
        "dataset_id": summary.dataset_id,
        "total_epsilon": summary.total_epsilon,
        "total_delta": summary.total_delta,
        "spent_epsilon": summary.spent_epsilon,
        "remaining_epsilon": summary.remaining_epsilon,
        "spent_rho": summary.spent_rho,
        "total_rho": summary.total_rho,
        "releases": len([c for c in summary.charges if c.counted]),
    }


def _private_half(cfg: ReleaseConfig, schema: Schema, engine: Any, settings: Any, rho: float,
                  say: Progress) -> tuple[Any, list[Any], dict[str, float]]:
    """Read, check, bound, encode, measure and fit. Only DP outputs (and timings:
    ``count`` is the part of ``fit`` spent counting exact marginals) leave."""
    from dpsynth.marginals import TimedCounter, open_counter
    from dpsynth.privacy.accountant import Accountant, Budget
    from dpsynth.privacy.session import MeasurementSession

    t = time.perf_counter()
    say(f"reading and checking the input against the schema ({cfg.backend})")
    with open_counter(cfg.input_path, schema, backend=cfg.backend,
                      spark_master=cfg.spark_master) as loaded:
        counter = TimedCounter(loaded.counter)
        session = MeasurementSession(counter, loaded.columns, loaded.sizes,
                                     loaded.contribution_bound, Accountant(Budget(rho)))
        t_read = time.perf_counter() - t
        t = time.perf_counter()
        say(f"fitting the {cfg.engine} model (every measurement is charged to the accountant)")
        model = engine.fit(session, settings)  # inside the with: Spark needs the counter
        charges = list(session.charges)
        del session
    return model, charges, {"read_check_encode": t_read, "fit": time.perf_counter() - t,
                            "count": counter.seconds}


def _public_half(cfg: ReleaseConfig, schema: Schema, model: Any, charges: list[Any],
                 settings: Any, release_id: str, dataset_id: str, rho: float, ledger: Any,
                 say: Progress) -> tuple[Path, int, dict[str, float]]:
    """Post-processing only: sample, decode, validate, report, write the bundle."""
    from dpsynth.bundle import Content, release_date, synthetic_table_files, write_bundle
    from dpsynth.domain import Domain
    from dpsynth.report.datasheet import datasheet_markdown
    from dpsynth.report.privacy import privacy_report, render_privacy_html
    from dpsynth.report.quality import quality_report_html
    from dpsynth.validate import raise_for_outcome, validate_synthetic

    timings: dict[str, float] = {}
    domain = Domain.from_schema(schema)
    seed = cfg.seed if cfg.seed is not None else secrets.randbits(63)
    rng = np.random.default_rng(seed)
    n_rows = cfg.rows if cfg.rows is not None else max(1, round(model.total))

    t = time.perf_counter()
    say(f"sampling {n_rows} synthetic rows")
    codes = model.sample(n_rows, rng)
    df = domain.decode(codes, rng)
    timings["sample"] = time.perf_counter() - t

    t = time.perf_counter()
    say("validating the synthetic table (great-expectations)")
    outcome = validate_synthetic(df, schema, n_rows, n_rows)
    raise_for_outcome(outcome)
    timings["validate"] = time.perf_counter() - t

    t = time.perf_counter()
    say("writing reports and the bundle")
    import json

    import yaml  # noqa: F401  (schema text is written as is)

    engine_settings = _settings_dict(settings)
    # the dataset summary "so far" includes this release's charge (already counted)
    summary = _public_summary(ledger.summary(dataset_id))
    report = privacy_report(
        schema=schema, release_id=release_id, engine=cfg.engine, engine_settings=engine_settings,
        epsilon=cfg.epsilon, delta=cfg.delta, rho=rho, charges=charges, dataset_summary=summary)
    quality = quality_report_html(schema, [_Measured(m) for m in model.measurements], codes,
                                  domain.names, domain.sizes, float(model.total))
    release_info = {"release_id": release_id, "engine": cfg.engine, "epsilon": cfg.epsilon,
                    "delta": cfg.delta, "rows": n_rows, "dpsynth_version": __version__,
                    "created": release_date()}
    files: dict[str, Content] = {
        **synthetic_table_files(df, release_id),  # streamed to disk by write_bundle
        "schema.yaml": schema.text.encode("utf-8"),
        "privacy-report.json": json.dumps(report, indent=2, default=str).encode(),
        "privacy-report.html": render_privacy_html(report).encode("utf-8"),
        "quality-report.html": quality.encode("utf-8"),
        "validation/suite.json": json.dumps(outcome.suite_json, indent=2, default=str).encode(),
        "validation/results.json": json.dumps(outcome.results_json, indent=2,
                                              default=str).encode(),
        "DATASHEET.md": datasheet_markdown(schema, release_info).encode("utf-8"),
    }
    charge = ledger.charge(release_id)
    manifest_fields = {
        "release_id": release_id,
        "dataset_id": dataset_id,
        "engine": {"name": cfg.engine, "settings": engine_settings},
        "sampler_seed": seed,
        "rows": n_rows,
        "columns": list(domain.names),
        "privacy": {"epsilon": cfg.epsilon, "delta": cfg.delta, "rho": rho,
                    "unit": schema.privacy_unit.description},
        "schema_sha256": schema.sha256,
        "ledger_entry": {"release_id": charge.release_id, "dataset_id": charge.dataset_id,
                         "rho": charge.rho, "epsilon": charge.epsilon, "delta": charge.delta,
                         "status_at_bundle_time": charge.status},
    }
    path = write_bundle(cfg.out_dir, files, manifest_fields)
    timings["bundle"] = time.perf_counter() - t
    return path, n_rows, timings


def _settings_dict(settings: Any) -> dict[str, Any]:
    try:
        return asdict(settings)
    except TypeError:
        return {}


class _Measured:
    """Adapter: a noisy marginal as the quality report reads it, over the full domain.

    Engines may measure over merged categories (MST merges rare ones, a public map
    derived from noisy 1-way counts); such a group's noisy count is shared equally
    among its categories and its noise scale kept (a conservative interval).
    """

    def __init__(self, m: Any) -> None:
        self.columns = tuple(m.columns)
        noisy = np.asarray(m.counts, dtype=float).reshape(m.shape)
        for axis, g in enumerate(getattr(m, "groups", None) or ()):
            if g is not None:
                g = np.asarray(g)
                share = np.bincount(g)[g].astype(float)
                shape = [1] * noisy.ndim
                shape[axis] = g.size
                noisy = noisy.take(g, axis=axis) / share.reshape(shape)
        self.noisy = noisy
        self.sigma = float(m.sigma)
