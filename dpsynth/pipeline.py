"""The straight-line pipeline: ``check`` and ``release``, one step after another.

:func:`release` reads like the recipe of ``docs/architecture.md``: prepare (public)
-> reserve the budget in the ledger -> read, check, bound, encode and fit through
the measurement session (private) -> *privacy boundary* -> sample -> validate ->
build the reports -> write the bundle -> mark released. Each step is a call into
the module that owns it; this file only sequences them and keeps the ledger's
status in step with what has happened:

* every check that can be made without the data runs before the reservation:
  the schema and its limits, the output path (the same :func:`check_out_path`
  ``write_bundle`` runs at the end), ``--rows`` against the memory at hand;
* anything failing before the input is opened cancels the reservation (no
  budget spent);
* once the input has been opened, the charge stands: a later failure marks it
  ``spent-failed`` and leaves no bundle behind;
* once the bundle is in place, nothing marks the charge failed: if the process
  dies (or the ledger is unreachable) before ``mark_released``, the charge stays
  ``spent`` beside a complete bundle, and :func:`reconcile` (``dpsynth ledger
  reconcile``) marks it released from the bundle's manifest.

The ledger handle stays here, in the reserve and mark steps; nothing after the
boundary sees it (the reports get the ledger's public summary as data).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dpsynth.bundle import (
    MANIFEST,
    check_out_path,
    release_date,
    release_files,
    release_manifest,
    remove_stale_temp_dirs,
    write_bundle,
)
from dpsynth.capacity import check_rows
from dpsynth.config import ReleaseConfig
from dpsynth.crashpoints import crash_point
from dpsynth.domain import Domain
from dpsynth.draft import DraftConfig, propose, render
from dpsynth.engines import EngineSpec, Model, get_engine
from dpsynth.errors import (
    BudgetError,
    DpsynthError,
    InternalError,
    SchemaError,
    StorageError,
    TableProblemsError,
    UsageError,
)
from dpsynth.generate import generate
from dpsynth.hashing import sha256_file
from dpsynth.input_rules import input_path_problem, no_rows
from dpsynth.inspect import verify_bundle
from dpsynth.io import is_parquet, open_table
from dpsynth.io.profile import TableProfile, provisional_schema, read_header
from dpsynth.io.survey import Problem, offending_values, survey_table
from dpsynth.marginals import TimedCounter, open_counter
from dpsynth.privacy.accountant import Accountant, ApproxDP, Budget, Charge
from dpsynth.privacy.draft_session import DraftSession
from dpsynth.privacy.ledger import Ledger, open_ledger
from dpsynth.privacy.session import MeasurementSession
from dpsynth.record import ReleaseRecord, RowsPerPatient
from dpsynth.report.builder import build_reports, settings_dict
from dpsynth.rules import check_satisfiable, rule_cliques, structural_zeros
from dpsynth.schema import Schema, load_schema, parse_schema
from dpsynth.validate import raise_for_outcome
from dpsynth.validation_worker import Validator, start_validation
from dpsynth.version import __version__

__all__ = ["DraftConfig", "DraftResult", "ReleaseConfig", "ReleaseResult", "check",
           "draft_schema", "ledger_placement_warning", "reconcile", "release"]

Progress = Callable[[str], None]

UNIT_ROWS_SHARE = 0.02
"""Share of a release's rho spent on the rows-per-patient histogram (sensitivity 1;
at epsilon 1, delta 1e-9 its noise has sigma of about 41 patients). The engine gets
the rest."""


def check(schema_path: str | Path, input_path: str | Path | None = None,
          show_values: int = 0) -> dict[str, Any]:
    """Validate a schema, and optionally a table against it. Writes nothing.

    ``show_values`` (custodian only): a failing table's error also lists up to that
    many offending raw values per failing column check, as message lines for the
    terminal (never in the JSON form of the error)."""
    schema = load_schema(schema_path)
    check_satisfiable(schema)
    out: dict[str, Any] = {
        "schema": schema.name,
        "schema_sha256": schema.sha256,
        "columns": len(schema.columns),
        "released_columns": len(schema.measured_columns),
        "privacy_unit": schema.privacy_unit.description,
    }
    if input_path is not None:
        with open_table(input_path, schema) as lf:
            rows, problems = survey_table(lf, schema, lf.collect_schema().names(),
                                          parquet=is_parquet(input_path))
        if rows == 0:
            raise no_rows()
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            extra = (_value_lines(input_path, schema, problems, show_values)
                     if show_values > 0 else [])
            raise TableProblemsError([p.to_dict() for p in problems],
                                     [p.line() for p in problems], extra)
        out.update(input_checked=True, input_rows=rows,
                   warnings=[p.line() for p in problems],
                   problems=[p.to_dict() for p in problems])
    return out


def _value_lines(input_path: str | Path, schema: Schema, problems: list[Problem],
                 limit: int) -> list[str]:
    """PRIVATE VALUES of the custodian's table, for their terminal only."""
    with open_table(input_path, schema) as lf:
        values = offending_values(lf, schema, problems, limit, parquet=is_parquet(input_path))
    lines = ["the values below are PRIVATE cell values of your table (--show-values): for "
             "your eyes only; do not paste them into a schema, a ticket or a log"]
    for (column, rule), vals in values.items():
        shown = ", ".join(f"{v!r} ({n} row(s))" for v, n in vals)
        lines.append(f"column {column!r} [rule: {rule}]: {shown}")
    return lines


@dataclass(frozen=True)
class ReleaseResult:
    """What a release produced (also the ``--json`` output, for the custodian)."""

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
    rules: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Charged(Protocol):
    """A run that holds a ledger charge (a release or a schema draft): what the ledger
    steps below need of it."""

    @property
    def release_id(self) -> str: ...
    @property
    def dataset_id(self) -> str: ...
    @property
    def say(self) -> Progress: ...
    @property
    def input_path(self) -> Path: ...
    @property
    def allow_shared_input(self) -> bool: ...
    def caution(self, message: str) -> None: ...


class _ReadsInput:
    """``input_path`` and ``allow_shared_input`` from the run's config (a release's or a
    draft's), as :class:`_Charged` needs them."""

    cfg: ReleaseConfig | DraftConfig

    @property
    def input_path(self) -> Path:
        return Path(self.cfg.input_path)

    @property
    def allow_shared_input(self) -> bool:
        return self.cfg.allow_shared_input


@dataclass
class _Run(_ReadsInput):
    """One release in progress: its public plan, and what the custodian is told."""

    cfg: ReleaseConfig
    schema: Schema
    engine: EngineSpec
    settings: Any
    budget: ApproxDP
    dataset_id: str
    release_id: str
    say: Progress
    warn: Progress | None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def caution(self, message: str) -> None:
        self.warnings.append(message)
        if self.warn is not None:
            self.warn(message)

    @contextlib.contextmanager
    def stage(self, name: str, message: str) -> Iterator[None]:
        self.say(message)
        t = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t


def release(cfg: ReleaseConfig, progress: Progress | None = None,
            warn: Progress | None = None) -> ReleaseResult:
    """Run one release end to end; see the module docstring for the ledger order.
    ``progress`` gets progress lines, ``warn`` warnings (also in the result)."""
    t0 = time.perf_counter()
    run = _prepare(cfg, progress or (lambda _m: None), warn)
    sign = _signer(cfg.sign_key) if cfg.sign_key is not None else None  # before the ledger
    # great-expectations loads in a worker process while the input is read and fitted
    worker = start_validation(run.schema, _file_bytes(run.input_path), cfg.rows)
    with contextlib.closing(worker) as validator, \
            open_ledger(str(cfg.ledger_url)) as ledger:
        _reserve(ledger, run)
        crash_point("after-reserve")
        spent = False
        try:
            _mark_spent(ledger, run)
            spent = True
            crash_point("after-spent")
            model, charges, unit_rows = _fit(run)
            crash_point("after-fit")
            # ======== privacy boundary: nothing below sees private data ========
            record = _public_record(run, model, charges, unit_rows,
                                    _public_summary(ledger, run.dataset_id), validator)
            with run.stage("bundle", "writing reports and the bundle"):
                path = write_bundle(cfg.out_dir, release_files(record, build_reports(record)),
                                    release_manifest(record), sign=sign)
        except BaseException as exc:
            _mark_failed(ledger, run, exc, spent)
            raise
        crash_point("after-publish")
        _mark_released(ledger, run, path)
        summary = _public_summary(ledger, run.dataset_id)
    audit = _audit(run, path)
    run.timings["total"] = time.perf_counter() - t0
    return ReleaseResult(
        release_id=run.release_id, dataset_id=run.dataset_id, bundle=str(path),
        rows=record.rows, engine=cfg.engine, epsilon=cfg.epsilon, delta=cfg.delta,
        rho=run.budget.rho.rho, ledger=summary, audit_dir=audit, warnings=run.warnings,
        rules=dict(record.rules),
        timings={k: round(v, 3) for k, v in run.timings.items()})


def _file_bytes(path: Path) -> int | None:
    """The input's size on disk (metadata, not data); None for a directory or on error."""
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def _signer(key_path: Path) -> Callable[[bytes], bytes]:
    """The manifest signer of ``--sign-key``. Imported here: only a signed release needs
    ``cryptography`` (a quarter of a second of start-up, issue 15)."""
    from dpsynth.signing import load_signer

    return load_signer(key_path)


def reconcile(ledger_url: str, bundle_dir: str | Path) -> dict[str, Any]:
    """Mark released the charge of a bundle that is in place while its charge is still
    ``spent`` (the release was killed, or lost the ledger, between publishing the
    bundle and ``mark_released``). Reads only the bundle's public manifest.

    The bundle must pass :func:`~dpsynth.inspect.verify_bundle`, and its manifest must
    match the charge (release id, dataset id, epsilon, delta, rho, schema hash);
    otherwise :class:`StorageError` (exit 6) and nothing changes. A charge already
    ``released`` is left as is. Returns what was found and done.
    """
    path = Path(bundle_dir)
    checked = verify_bundle(path)
    if not checked.ok:
        raise StorageError(f"bundle {str(path)!r} fails verification ({checked.problems[0]}"
                           f"{'; ...' if len(checked.problems) > 1 else ''}); not reconciled")
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    release_id = str(manifest["release_id"])
    entry, privacy = manifest["ledger_entry"], manifest["privacy"]
    with open_ledger(ledger_url) as ledger:
        charge = ledger.charge(release_id)
        mismatched = [name for name, theirs, ours in (
            ("dataset id", charge.dataset_id, manifest.get("dataset_id", entry.get("dataset_id"))),
            ("epsilon", charge.epsilon, privacy["epsilon"]),
            ("delta", charge.delta, privacy["delta"]),
            ("rho", charge.rho, entry["rho"]),
            ("schema hash", charge.schema_hash, manifest["schema_sha256"]),
        ) if theirs != ours]
        if mismatched:
            raise StorageError(f"bundle {str(path)!r} does not match the ledger's charge of "
                               f"{release_id!r} ({', '.join(mismatched)} differ); not reconciled")
        before = charge.status
        if before == "spent":
            charge = ledger.mark_released(
                release_id, detail=f"reconciled: bundle {path.resolve()!s} verified")
        elif before != "released":
            raise StorageError(
                f"the charge of {release_id!r} is {before!r}, yet bundle {str(path)!r} exists; "
                "only a 'spent' charge can be reconciled. Do not hand this bundle out before "
                "you know which run wrote it")
    return {"bundle": str(path), "release_id": release_id, "dataset_id": charge.dataset_id,
            "status_before": before, "status": charge.status}


# -- public preparation: nothing here reads the private table -------------------------


def _prepare(cfg: ReleaseConfig, say: Progress, warn: Progress | None) -> _Run:
    schema = load_schema(cfg.schema_path)
    check_satisfiable(schema)
    _check_out_dir(cfg.out_dir, say)
    problem = input_path_problem(cfg.input_path, directory_ok=cfg.backend == "spark")
    if problem is not None:
        raise UsageError(f"input file {str(cfg.input_path)!r} {problem}")
    if cfg.rows is not None:
        check_rows(schema, cfg.rows)
    settings = cfg.settings()
    if "keep_together" in {f.name for f in dataclasses.fields(settings)}:
        # the schema's error rules: model their columns jointly, with zero mass on the
        # cells they forbid (public choices, from the schema only)
        settings = dataclasses.replace(settings, keep_together=rule_cliques(schema),
                                       structural_zeros=structural_zeros(schema))
    if schema.analysis and "targets" in {f.name for f in dataclasses.fields(settings)}:
        # the schema's analysis section: what researchers will study (public)
        settings = dataclasses.replace(settings, targets=schema.analysis.targets,
                                       focus=schema.analysis.focus, subgroups=schema.subgroups)
    run = _Run(cfg=cfg, schema=schema, engine=get_engine(cfg.engine), settings=settings,
               budget=ApproxDP(cfg.epsilon, cfg.delta), dataset_id=cfg.dataset_id or schema.name,
               release_id=cfg.release_id or _new_release_id(schema), say=say, warn=warn)
    placement = ledger_placement_warning(str(cfg.ledger_url), cfg.out_dir)
    if placement:
        run.caution(placement)
    return run


def _new_release_id(schema: Schema) -> str:
    """``<schema>-<YYYYMMDD>-<random>``: the day only, never the time of day (the
    release id is public, and with any later time it would give the run time)."""
    day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    return f"{schema.name}-{day}-{secrets.token_hex(4)}"


def _check_out_dir(out_dir: Path, say: Progress) -> None:
    """Every check ``write_bundle`` will make of the output path (one function,
    :func:`~dpsynth.bundle.check_out_path`), before anything is reserved: a refusal
    here is exit 2 and costs nothing. Temporary directories a killed release left
    beside the same path are removed first (only unlocked ones: their writer is
    dead); one that is still locked means another release is writing this path now."""
    removed, kept = remove_stale_temp_dirs(out_dir)
    for d in removed:
        say(f"removed {str(d)!r}, left behind by a release that was killed while writing")
    if kept:
        raise UsageError(
            f"{str(kept[0])!r} beside the output directory is in use (another release is "
            f"writing {str(out_dir)!r} now) or could not be checked; choose another --out, "
            "or remove it once no release is running")
    check_out_path(out_dir, in_use=UsageError)


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


# -- the ledger steps ---------------------------------------------------------------


def _reserve(ledger: Ledger, run: _Run) -> None:
    """Budget before data: the charge exists before the input is opened."""
    run.say(f"reserving epsilon={run.budget.epsilon:g}, delta={run.budget.delta:g} in the ledger")
    ledger.reserve(run.dataset_id, run.release_id, run.budget, run.cfg.engine, __version__,
                   run.schema.sha256)


def _mark_spent(ledger: Ledger, run: _Charged) -> None:
    """Hash the input, refuse bytes already charged under another dataset id, and
    mark the charge spent: from here on a failure keeps it."""
    path = run.input_path
    input_hash = _file_sha256(path) if path.is_file() else None
    if input_hash is not None:
        _refuse_shared_input(ledger.datasets_with_input(input_hash), run)
    ledger.mark_spent(run.release_id, input_hash=input_hash)


def _refuse_shared_input(charged: list[str], run: _Charged) -> None:
    """The same bytes charged under another dataset id would get a fresh budget by
    accident: refuse (exit 4, naming that dataset) unless the custodian allowed it.
    Once a dataset id has a counted charge on these bytes, it is never refused again
    (its first charge was either the original one or an allowed one).

    Runs after the input was hashed but before anything is measured: the refusal
    cancels the reservation (no DP output exists, and the only party who learns
    that the file matches is the custodian, who holds it)."""
    others = [d for d in charged if d != run.dataset_id]
    if not others or run.dataset_id in charged:
        return
    names = ", ".join(repr(o) for o in others)
    if not run.allow_shared_input:
        raise BudgetError(
            f"this input file was already charged under dataset id {names} in this ledger; its "
            f"releases must share that budget (use --dataset-id {others[0]}). If the two "
            "budgets are separate on purpose, pass --allow-shared-input")
    run.caution(f"this input file was already charged under dataset id {names}; its budget "
                f"under {run.dataset_id!r} is separate because --allow-shared-input was given")


def _mark_released(ledger: Ledger, run: _Run, path: Path) -> None:
    """spent -> released, once the bundle is in place. Never marks the charge failed:
    the bundle exists, so a ledger error here leaves the charge ``spent`` for
    ``dpsynth ledger reconcile`` (exit 6, naming the bundle)."""
    try:
        ledger.mark_released(run.release_id)
    except Exception as exc:
        detail = exc.message if isinstance(exc, DpsynthError) else type(exc).__name__
        raise StorageError(
            f"the bundle {str(path)!r} is complete but the ledger was not updated ({detail}); "
            f"the charge of {run.release_id!r} stays 'spent' until you run: dpsynth ledger "
            f"reconcile --bundle {path!s}") from None


def _mark_failed(ledger: Ledger, run: _Charged, exc: BaseException, spent: bool) -> None:
    detail = exc.kind if isinstance(exc, DpsynthError) else type(exc).__name__
    with contextlib.suppress(DpsynthError):
        ledger.mark_failed(run.release_id, f"failed: {detail}")
    if spent:
        run.say("failed after the input was read: the budget stays spent")


def _public_summary(ledger: Ledger, dataset_id: str) -> dict[str, Any]:
    """Dataset totals for reports: no input hashes (a hash of the private file lets
    someone who knows all but one record confirm a guess of the last)."""
    summary = ledger.summary(dataset_id)
    return {
        "dataset_id": summary.dataset_id,
        "total_epsilon": summary.total_epsilon,
        "total_delta": summary.total_delta,
        "spent_epsilon": summary.spent_epsilon,
        "remaining_epsilon": summary.remaining_epsilon,
        "spent_rho": summary.spent_rho,
        "total_rho": summary.total_rho,
        "releases": len([c for c in summary.charges if c.counted and c.kind == "release"]),
        "schema_drafts": len([c for c in summary.charges
                              if c.counted and c.kind == "schema-draft"]),
    }


def _file_sha256(path: Path) -> str:
    """The input file's SHA-256 (custodian-only: stored in the ledger, never released)."""
    return sha256_file(path)


# -- the private half ---------------------------------------------------------------


def _fit(run: _Run) -> tuple[Model, list[Charge], RowsPerPatient | None]:
    """Read, check, bound, encode, measure and fit. Only DP outputs leave (and the
    custodian's timings: ``count`` is the part of ``fit`` spent counting).

    With a patient id column, the first DP step is the rows-per-patient histogram
    (:data:`UNIT_ROWS_SHARE` of the release's rho, sensitivity 1); the engine gets
    the rest of the budget."""
    cfg = run.cfg
    run.say(f"reading and checking the input against the schema ({cfg.backend})")
    t = time.perf_counter()
    with open_counter(cfg.input_path, run.schema, backend=cfg.backend,
                      spark_master=cfg.spark_master) as loaded:
        run.timings["read_check_encode"] = time.perf_counter() - t
        counter = TimedCounter(loaded.counter)
        session = MeasurementSession(counter, loaded.columns, loaded.sizes,
                                     loaded.contribution_bound, Accountant(run.budget.rho),
                                     unit_rows=loaded.unit_rows)
        unit_rows = None
        if loaded.unit_rows is not None:
            noisy = session.measure_unit_rows(UNIT_ROWS_SHARE * run.budget.rho.rho)
            unit_rows = RowsPerPatient(counts=tuple(float(x) for x in noisy.counts),
                                       sigma=noisy.sigma, max_rows=loaded.contribution_bound)
        with run.stage("fit", f"fitting the {cfg.engine} model (every measurement is charged "
                       "to the accountant)"):
            model = run.engine.fit(session, run.settings)  # inside: Spark needs the counter
        charges = list(session.charges)
        del session
    run.timings["count"] = counter.seconds
    return model, charges, unit_rows


# -- the public half: post-processing of DP outputs only ------------------------------


def _public_record(run: _Run, model: Model, charges: list[Charge],
                   unit_rows: RowsPerPatient | None, dataset: dict[str, Any],
                   validator: Validator) -> ReleaseRecord:
    """Sample, decode and validate; gather every public fact of the release."""
    cfg, domain = run.cfg, Domain.for_model(run.schema)
    seed = cfg.seed if cfg.seed is not None else secrets.randbits(63)
    rng = np.random.default_rng(seed)
    n_rows = cfg.rows if cfg.rows is not None else max(1, round(model.total))
    with run.stage("sample", f"sampling {n_rows} synthetic rows"):
        generated = generate(model, domain, run.schema, n_rows, rng)
    rules = generated.rules_json(run.schema)
    for rule in rules["warnings"]:
        if rule["violating_rows"]:
            run.caution(f"warning rule {rule['name']!r} is broken in {rule['violating_rows']} "
                        f"of {n_rows} synthetic rows ({100 * rule['violating_share']:.1f}%)")
    with run.stage("validate", "validating the synthetic table (great-expectations)"):
        outcome = validator.validate(generated.table, n_rows, n_rows)
        raise_for_outcome(outcome)
    return ReleaseRecord(
        release_id=run.release_id, dataset_id=run.dataset_id, created=release_date(),
        dpsynth_version=__version__, schema=run.schema, domain=domain, engine=cfg.engine,
        engine_settings=settings_dict(run.settings), budget=run.budget, charges=charges,
        dataset=dataset, model=model, sampler_seed=seed, codes=generated.codes,
        table=generated.table, rules=rules, validation=outcome, unit_rows=unit_rows)


def _audit(run: _Run, bundle: Path) -> str | None:
    """The optional CONFIDENTIAL audit report (after the release; not in the bundle)."""
    if run.cfg.audit_dir is None:
        return None
    if run.cfg.backend == "spark":
        run.say("--audit-dir is not supported with --backend spark yet: run `dpsynth audit` on "
                "a machine that can read the table")
        return None
    run.say("writing the internal audit report (confidential)")
    from dpsynth.audit import write_audit  # only with --audit-dir: not at start-up

    return str(write_audit(run.cfg.audit_dir, run.schema, Path(run.cfg.input_path), bundle,
                           run.release_id))


# -- schema draft: the same ledger steps, a profile instead of a schema ------------------------


@dataclass(frozen=True)
class DraftResult:
    """What a schema draft produced (also the ``--json`` output, for the custodian)."""

    draft_id: str
    dataset_id: str
    out: str
    epsilon: float
    delta: float
    rho: float
    extra_delta: float
    columns: dict[str, str]
    released_columns: int
    privacy_unit: dict[str, Any]
    ledger: dict[str, Any]
    charges: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _DraftRun(_ReadsInput):
    """One schema draft in progress (the ledger steps' view of it)."""

    cfg: DraftConfig
    release_id: str
    dataset_id: str
    say: Progress
    warn: Progress | None

    def caution(self, message: str) -> None:
        if self.warn is not None:
            self.warn(message)


def draft_schema(cfg: DraftConfig, progress: Progress | None = None,
                 warn: Progress | None = None) -> DraftResult:
    """Write a schema draft learnt under DP (``dpsynth schema draft``).

    The ledger order is a release's: public checks (input path, output path) -> reserve
    the draft's budget (kind ``schema-draft``) -> read the header (public metadata: column
    names, Parquet types; an unknown ``--unit-column`` cancels the charge) -> mark spent
    -> profile the table through a :class:`DraftSession` -> write the YAML atomically ->
    mark released. After the input was read the charge stays spent, whatever happens."""
    say = progress or (lambda _m: None)
    problem = input_path_problem(cfg.input_path)
    if problem is not None:
        raise UsageError(f"input file {str(cfg.input_path)!r} {problem}")
    _check_draft_out(cfg.out_path)
    run = _DraftRun(cfg=cfg, release_id=cfg.draft_id or _new_draft_id(cfg.dataset_id),
                    dataset_id=cfg.dataset_id, say=say, warn=warn)
    with open_ledger(cfg.ledger_url) as ledger:
        say(f"reserving epsilon={cfg.epsilon:g}, delta={cfg.delta:g} in the ledger (schema-draft)")
        charge = ledger.reserve(run.dataset_id, run.release_id, cfg.budget, "schema-draft",
                                __version__, "none", kind="schema-draft",
                                extra_delta=cfg.threshold_delta)
        spent = False
        try:
            header, types = read_header(cfg.input_path)
            if cfg.unit_column is not None and cfg.unit_column not in header:
                raise UsageError(f"--unit-column {cfg.unit_column!r} must be a column of the "
                                 f"table (its header has {len(header)} columns)")
            _mark_spent(ledger, run)
            spent = True
            text, summary = _draft_text(run, header, types, Budget(charge.rho))
            _write_new_file(cfg.out_path, text)
        except BaseException as exc:
            _mark_failed(ledger, run, exc, spent)
            raise
        try:
            ledger.mark_released(run.release_id, detail="schema draft written")
        except DpsynthError as exc:
            raise StorageError(f"the draft {str(cfg.out_path)!r} is written but the ledger was "
                               f"not updated ({exc.message}); its charge stays counted") from None
        dataset = _public_summary(ledger, run.dataset_id)
    return DraftResult(draft_id=run.release_id, dataset_id=run.dataset_id, out=str(cfg.out_path),
                       epsilon=cfg.epsilon, delta=cfg.delta, rho=charge.rho,
                       extra_delta=charge.extra_delta, ledger=dataset, **summary)


def _draft_text(run: _DraftRun, header: list[str], types: dict[str, str] | None,
                rho: Budget) -> tuple[str, dict[str, Any]]:
    """The private half of a draft: profile the table through a session, propose, render.
    Only DP outputs leave (the YAML text and a summary of it)."""
    cfg = run.cfg
    k = cfg.contribution_bound
    run.say("reading the table (every column as text)")
    with open_table(cfg.input_path, provisional_schema(header)) as lf:
        profile = TableProfile(lf, header, cfg.unit_column, k, cfg.bounding_secret,
                               parquet=is_parquet(cfg.input_path))
        session = DraftSession(profile, header, k, rho, cfg.threshold_delta,
                               unit_column=cfg.unit_column)
        del profile
        draft = propose(session, header, types, cfg, run.release_id, run.say)
        charges = len(session.charges)
        del session
    text = render(draft, __version__)
    try:
        parse_schema(text, str(cfg.out_path))
    except SchemaError as exc:  # the draft must pass schema check as written
        raise InternalError(f"the schema draft does not pass its own check ({exc.message})"
                            ) from None
    return text, {**draft.summary(), "charges": charges}


def _new_draft_id(dataset_id: str) -> str:
    """``schema-draft-<dataset>-<YYYYMMDD>-<random>`` (the day only, as release ids)."""
    day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    return f"schema-draft-{dataset_id}-{day}-{secrets.token_hex(4)}"


def _check_draft_out(out: Path) -> None:
    """The draft's output path, before anything is reserved: a new file in an existing
    directory (a reviewed draft is never overwritten)."""
    if out.exists() or out.is_symlink():
        raise UsageError(f"--out {str(out)!r} already exists; the draft is never written over "
                         "an existing file (choose another path, or remove it)")
    if not out.parent.is_dir():
        raise UsageError(f"--out {str(out)!r}: directory {str(out.parent)!r} does not exist")


def _write_new_file(out: Path, text: str) -> None:
    """Write ``text`` to ``out`` atomically (a temporary file in the same directory,
    fsynced, then linked into place, which fails if ``out`` appeared meanwhile)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, out)
        except FileExistsError:
            raise UsageError(f"--out {str(out)!r} appeared while the draft was made; "
                             "not written over") from None
    finally:
        os.unlink(tmp)
