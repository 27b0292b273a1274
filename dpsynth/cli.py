"""The ``dpsynth`` command line: parse options, call one library function, render errors.

Each command parses its options, calls a single library function, and prints
the result (human text, or one JSON object with ``--json``). This module is the
only place where exceptions become messages and exit codes (see
``dpsynth.errors`` for the table); it holds no pipeline logic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from dpsynth.config import (
    BACKENDS,
    DEFAULT_DELTA,
    Option,
    ReleaseConfig,
    env_or_file,
    load_config_file,
    parse_engine_options,
)
from dpsynth.draft import DEFAULT_DRAFT_DELTA, DEFAULT_DRAFT_EPSILON
from dpsynth.errors import EXIT_CODES, DpsynthError, UsageError
from dpsynth.startup import frozen_imports
from dpsynth.version import __version__

F = TypeVar("F", bound=Callable[..., Any])

_EXIT_HELP = "\b\n" + "\n".join(f"  {e.code}  {e.meaning}" for e in EXIT_CODES)


def _loading_pipeline() -> contextlib.AbstractContextManager[None]:
    """The process's first import of ``dpsynth.pipeline`` (most of a command's start-up)
    runs under :func:`~dpsynth.startup.frozen_imports`; later ones have nothing to load."""
    return contextlib.nullcontext() if "dpsynth.pipeline" in sys.modules else frozen_imports()


def _emit_json(obj: dict[str, Any]) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def handle_errors(fn: F) -> F:
    """Turn dpsynth errors into a one-line message on stderr and their exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = bool(kwargs.get("as_json"))
        try:
            return fn(*args, **kwargs)
        except DpsynthError as exc:
            for line in exc.details:
                click.echo(f"dpsynth: error: {line}", err=True)
            _fail(exc.to_dict(), f"dpsynth: error: {exc.message}", exc.exit_code, as_json)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            _fail({"error": "interrupted", "exit_code": 1}, "dpsynth: interrupted", 1, as_json)
        except Exception as exc:  # a bug: never echo a foreign message (it may quote data)
            if os.environ.get("DPSYNTH_DEBUG") == "1":  # developers only: may show data
                raise
            _fail(
                {"error": "internal", "exit_code": 1, "type": type(exc).__name__},
                f"dpsynth: internal error ({type(exc).__name__}); this is a bug in dpsynth, "
                "please report it with the command you ran",
                1,
                as_json,
            )

    return wrapper  # type: ignore[return-value]


def _fail(obj: dict[str, Any], line: str, code: int, as_json: bool) -> None:
    if as_json:
        _emit_json({"ok": False, **obj})
    click.echo(line, err=True)
    sys.exit(code)


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print one machine-readable JSON object on stdout.")


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=f"Exit codes:\n\n{_EXIT_HELP}",
)
@click.version_option(__version__, prog_name="dpsynth")
def main() -> None:
    """dpsynth: differentially private synthetic copies of patient tables."""


@main.group()
def schema() -> None:
    """Draft table schema files under DP, and validate them (and tables against them)."""


@schema.command("check")
@click.option("--schema", "schema_path", required=True, type=click.Path(path_type=Path),
              help="Table schema file (YAML).")
@click.option("--input", "input_path", type=click.Path(path_type=Path),
              help="Also check this table (CSV, gzip CSV or Parquet) against the schema. "
                   "Nothing is written and no budget is spent.")
@click.option("--show-values", "show_values", type=click.IntRange(min=1), default=None,
              metavar="N",
              help="Custodian only: with --input, also print up to N offending raw values "
                   "per failing column check, with counts, to the terminal (PRIVATE values; "
                   "never with --json, never written to a file).")
@json_option
@handle_errors
def schema_check(schema_path: Path, input_path: Path | None, show_values: int | None,
                 as_json: bool) -> None:
    """Validate a schema file; with --input, check a table against it.

    With --input every problem is reported in one run (each input check, each rule
    evaluated on the table's values, each derived column the table holds against
    its formula), with row counts and the first row; never a cell value. Exit 3
    when any input check or error rule fails; warning rules are listed only."""
    with _loading_pipeline():
        from dpsynth.pipeline import check

    if show_values and (as_json or input_path is None):
        raise UsageError("--show-values needs --input and prints to the terminal only: it "
                         "cannot be combined with --json")
    result = check(schema_path, input_path, show_values or 0)
    if as_json:
        _emit_json({"ok": True, **result})
    else:
        click.echo(f"schema {result['schema']!r} is valid: {result['columns']} columns, "
                   f"{result['released_columns']} released")
        for line in result.get("warnings", []):
            click.echo(f"dpsynth: warning: {line}", err=True)
        if input_path is not None:
            click.echo(f"the table satisfies the schema ({result['input_rows']} rows checked"
                       f"{', every rule holds' if not result.get('warnings') else ''})")


@schema.command("draft")
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path),
              help="The private table (CSV, gzip CSV or Parquet).")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path),
              help="The YAML draft to write (a new file; never written over).")
@click.option("--epsilon", type=float, default=DEFAULT_DRAFT_EPSILON, show_default=True,
              help="The draft's whole epsilon, split across columns. Small, because a draft "
                   "only has to get the schema's shape right (kinds, frequent categories, rough "
                   "bounds) and it composes with the dataset's releases in the ledger.")
@click.option("--delta", type=float, default=DEFAULT_DRAFT_DELTA, show_default=True,
              help="The draft's whole delta: half bounds the chance that a value only one "
                   "patient holds appears as a category (spent outside rho, so the dataset's "
                   "releases convert at a delta that much smaller), half converts the rest to "
                   "epsilon. The default is a tenth of the default dataset delta.")
@click.option("--ledger", "ledger_url", envvar="DPSYNTH_LEDGER", help="Ledger URL charged "
              "before the table is read (env DPSYNTH_LEDGER, or DPSYNTH_LEDGER_FILE naming a "
              "file that holds it).")
@click.option("--dataset-id", required=True,
              help="The ledger's dataset (set with `ledger init`); also the draft's schema name.")
@click.option("--unit-column", help="The patient id column (the privacy unit). Without it each "
                                    "row is a unit (k = 1).")
@click.option("--max-rows", type=int, metavar="K",
              help="Rows kept per patient while drafting (needs --unit-column; default 1, and "
                   "the draft suggests K from a DP quantile of rows per patient).")
@click.option("--allow-shared-input", is_flag=True,
              help="Allow an input file already charged under another dataset id.")
@click.option("--quiet", is_flag=True, help="No progress output on stderr.")
@json_option
@handle_errors
def schema_draft(input_path: Path, out_path: Path, epsilon: float, delta: float,
                 ledger_url: str | None, dataset_id: str, unit_column: str | None,
                 max_rows: int | None, allow_shared_input: bool, quiet: bool,
                 as_json: bool) -> None:
    """Write a commented schema draft learnt from a table under differential privacy.

    Kinds, categories (DP key selection: only values enough patients hold), bounds and
    bins (DP quantiles), precision, atoms and missing tokens are DP estimates, each with a
    comment; everything else says "fill in from documentation". The draft's budget is
    charged to the ledger (kind schema-draft) before the table is read and composes with
    the dataset's releases. Review the draft against the documentation, then run
    `schema check` and `release` with it.
    """
    with _loading_pipeline():
        from dpsynth.pipeline import DraftConfig, draft_schema

    url = _ledger_url(ledger_url)
    cfg = DraftConfig(input_path=input_path, out_path=out_path, ledger_url=url,
                      dataset_id=dataset_id, epsilon=epsilon, delta=delta,
                      unit_column=unit_column, max_rows=max_rows,
                      allow_shared_input=allow_shared_input)
    result = draft_schema(cfg, progress=_Progress(quiet or as_json), warn=_warn)
    if as_json:
        _emit_json({"ok": True, **result.to_dict()})
        return
    kinds: dict[str, int] = {}
    for kind in result.columns.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    click.echo(f"schema draft: {result.out} ({len(result.columns)} columns: "
               + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")")
    led = result.ledger
    click.echo(f"charged epsilon={result.epsilon:g}, delta={result.delta:g} to dataset "
               f"{result.dataset_id!r} as {result.draft_id!r}; spent epsilon "
               f"{led['spent_epsilon']:.4g} of {led['total_epsilon']:g}, remaining "
               f"{led['remaining_epsilon']:.4g}")
    click.echo("review every line against the documentation, then: dpsynth schema check "
               f"--schema {result.out}")


class _Progress:
    """Progress lines on stderr, only when stderr is a terminal and not --quiet."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.enabled:
            click.echo(f"[{time.perf_counter() - self.t0:6.1f}s] {message}", err=True)


def _warn(message: str) -> None:
    """Warnings go to stderr always (also with --quiet/--json: stdout stays JSON)."""
    click.echo(f"warning: {message}", err=True)


def _ledger_url(url: str | None) -> str:
    url = env_or_file("DPSYNTH_LEDGER", url)
    if not url:
        raise UsageError("--ledger (or DPSYNTH_LEDGER, or DPSYNTH_LEDGER_FILE) must give a "
                         "ledger URL, e.g. sqlite:///dpsynth-ledger.db")
    return url


def _click_type(f: dataclasses.Field[Any], opt: Option) -> Any:
    if opt.choices == "engines":
        from dpsynth.engines import ENGINES

        return click.Choice(list(ENGINES))
    if opt.choices == "backends":
        return click.Choice(list(BACKENDS))
    hint = str(f.type)
    if "Path" in hint and "str" not in hint:
        return click.Path(path_type=Path)
    return {"float": float, "int": int}.get(hint.split(" |")[0], str)


def release_options(fn: F) -> F:
    """The ``release`` options, built from :class:`ReleaseConfig`'s declarations."""
    for f in reversed(dataclasses.fields(ReleaseConfig)):
        opt: Option = f.metadata["option"]
        default = f.default if f.default is not dataclasses.MISSING else None
        extra = ""
        if opt.required and f.name != "ledger_url":
            extra = " [required]"
        elif default not in (None, False) and not isinstance(default, Mapping):
            extra = f" [default: {default:g}]" if isinstance(default, float) else \
                f" [default: {default}]"
        if isinstance(default, bool):
            fn = click.option(opt.flag, f.name, is_flag=True, help=opt.help)(fn)
        elif f.name == "engine_options":
            fn = click.option(opt.flag, f.name, multiple=True, metavar=opt.metavar,
                              help=opt.help)(fn)
        else:
            fn = click.option(opt.flag, f.name, type=_click_type(f, opt), envvar=opt.envvar,
                              metavar=opt.metavar, help=opt.help + extra)(fn)
    return click.option("--config", "config_path", type=click.Path(path_type=Path),
                        help="YAML file of release settings by name (epsilon, engine, "
                             "engine_options: {KEY: VALUE}, ...); options given on the "
                             "command line win.")(fn)


@main.command("release")
@release_options
@click.option("--quiet", is_flag=True, help="No progress output on stderr.")
@json_option
@handle_errors
def release_cmd(config_path: Path | None, quiet: bool, as_json: bool, **options: Any) -> None:
    """Release a differentially private synthetic copy of a table as a bundle.

    The budget is reserved in the ledger before the input is read; once the input
    has been read the budget stays spent even if the release then fails.
    """
    with _loading_pipeline():
        from dpsynth.pipeline import release

    file = load_config_file(config_path) if config_path is not None else {}
    for f in dataclasses.fields(ReleaseConfig):  # NAME_FILE: the value from a mounted secret
        if f.metadata["option"].envvar:
            options[f.name] = env_or_file(f.metadata["option"].envvar, options[f.name])
    options["engine_options"] = {**file.pop("engine_options", {}),
                                 **parse_engine_options(options["engine_options"])}
    cfg = ReleaseConfig.from_values(options, file)
    result = release(cfg, progress=_Progress(quiet or as_json), warn=_warn)
    if as_json:
        _emit_json({"ok": True, **result.to_dict()})
    else:
        click.echo(f"released {result.rows} synthetic rows (epsilon={result.epsilon:g}, "
                   f"delta={result.delta:g}, engine={result.engine})")
        click.echo(f"bundle: {result.bundle}")
        led = result.ledger
        click.echo(f"dataset {result.dataset_id!r}: spent epsilon {led['spent_epsilon']:.4g} of "
                   f"{led['total_epsilon']:g} (delta {led['total_delta']:g}); "
                   f"remaining {led['remaining_epsilon']:.4g}")
        if result.audit_dir:
            click.echo(f"internal audit report (CONFIDENTIAL): {result.audit_dir}")


@main.group()
def ledger() -> None:
    """Set and inspect privacy budgets in the ledger."""


@ledger.command("init")
@click.option("--ledger", "ledger_url", envvar="DPSYNTH_LEDGER", help="Ledger URL "
              "(sqlite:///path or postgresql://...; env DPSYNTH_LEDGER, or DPSYNTH_LEDGER_FILE "
              "naming a file that holds it).")
@click.option("--dataset-id", required=True, help="Dataset id (usually the schema's name).")
@click.option("--total-epsilon", required=True, type=float,
              help="Total epsilon for all releases of this dataset (set once).")
@click.option("--total-delta", default=DEFAULT_DELTA, show_default=True, type=float,
              help="Total delta for all releases of this dataset.")
@json_option
@handle_errors
def ledger_init(ledger_url: str | None, dataset_id: str, total_epsilon: float, total_delta: float,
                as_json: bool) -> None:
    """Set a dataset's total budget (once; repeating the same totals is a no-op)."""
    from dpsynth.privacy.accountant import ApproxDP
    from dpsynth.privacy.ledger import open_ledger

    with open_ledger(_ledger_url(ledger_url)) as led:
        summary = led.init_dataset(dataset_id, ApproxDP(total_epsilon, total_delta))
    if as_json:
        _emit_json({"ok": True, **summary.to_dict()})
    else:
        click.echo(f"dataset {dataset_id!r}: total epsilon {summary.total_epsilon:g}, "
                   f"delta {summary.total_delta:g}; remaining epsilon "
                   f"{summary.remaining_epsilon:.4g}")


@ledger.command("show")
@click.option("--ledger", "ledger_url", envvar="DPSYNTH_LEDGER", help="Ledger URL "
              "(env DPSYNTH_LEDGER, or DPSYNTH_LEDGER_FILE naming a file that holds it).")
@click.option("--dataset-id", help="Only this dataset.")
@json_option
@handle_errors
def ledger_show(ledger_url: str | None, dataset_id: str | None, as_json: bool) -> None:
    """Show datasets, their budgets and every charge against them."""
    from dpsynth.privacy.ledger import open_ledger

    with open_ledger(_ledger_url(ledger_url)) as led:
        summaries = [led.summary(dataset_id)] if dataset_id else led.datasets()
    if as_json:
        _emit_json({"ok": True, "datasets": [s.to_dict() for s in summaries]})
        return
    if not summaries:
        click.echo("no datasets in this ledger (run `dpsynth ledger init`)")
    for s in summaries:
        click.echo(f"{s.dataset_id}: total epsilon {s.total_epsilon:g} (delta {s.total_delta:g}), "
                   f"spent {s.spent_epsilon:.4g}, remaining {s.remaining_epsilon:.4g}")
        for c in s.charges:
            click.echo(f"  {c.created_at}  {c.release_id:<40} {c.kind:<12} {c.status:<13} "
                       f"epsilon {c.epsilon:g} delta {c.delta:g} rho {c.rho:.4g} {c.engine}")
    open_ = [c.release_id for s in summaries for c in s.charges
             if c.status in ("reserved", "spent") and c.kind == "release"]
    if open_:
        click.echo(f"{len(open_)} charge(s) not finished ({', '.join(open_)}): a release still "
                   "running, or one that was killed (counted either way). If the bundle of a "
                   "'spent' one exists, `dpsynth ledger reconcile --bundle DIR` marks it released.")


@ledger.command("reconcile")
@click.option("--ledger", "ledger_url", envvar="DPSYNTH_LEDGER", help="Ledger URL "
              "(env DPSYNTH_LEDGER).")
@click.option("--bundle", "bundles", required=True, multiple=True,
              type=click.Path(path_type=Path),
              help="A bundle directory whose charge may still be 'spent' (repeatable).")
@json_option
@handle_errors
def ledger_reconcile(ledger_url: str | None, bundles: tuple[Path, ...], as_json: bool) -> None:
    """Mark released the 'spent' charge of a bundle a killed release left in place.

    The bundle must pass `dpsynth inspect` and its manifest must match the charge
    (release id, dataset id, epsilon, delta, schema hash). Nothing else is changed:
    the budget was counted all along.
    """
    with _loading_pipeline():
        from dpsynth.pipeline import reconcile

    url = _ledger_url(ledger_url)
    results = [reconcile(url, b) for b in bundles]
    if as_json:
        _emit_json({"ok": True, "bundles": results})
        return
    for r in results:
        done = "marked released" if r["status_before"] != r["status"] else "already released"
        click.echo(f"{r['bundle']}: charge {r['release_id']!r} {done}")


@main.command("inspect")
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--verify-key", type=click.Path(path_type=Path), metavar="KEY.pub",
              help="The custodian's Ed25519 public key (PEM): also require manifest.json.sig "
                   "to be its signature of manifest.json, proving who released the bundle.")
@json_option
@handle_errors
def inspect_cmd(bundle_dir: Path, verify_key: Path | None, as_json: bool) -> None:
    """Verify a bundle: checksums, manifest against files, signature (exit 6 if it fails).

    Every file must match the manifest and nothing else may be in the directory; the
    manifest's schema hash, row count, columns, ids and epsilon/delta/rho must agree with
    the files that carry them. Without --verify-key this shows the bundle is complete and
    consistent, not who made it (docs/bundle-format.md). All failures are listed.
    """
    from dpsynth.errors import BundleVerificationError
    from dpsynth.inspect import verify_bundle
    from dpsynth.signing import load_public_key

    key = load_public_key(verify_key) if verify_key is not None else None
    result = verify_bundle(bundle_dir, verify_key=key)
    if as_json and result.ok:
        _emit_json(result.to_dict())
    elif not as_json:
        for name, value in result.summary.items():
            click.echo(f"{name}: {value}")
        click.echo("checks: " + ", ".join(f"{n} {s}" for n, s in result.checks.items()))
        click.echo(f"signature: {result.signature}"
                   + (f" (key {key.fingerprint})" if key is not None else ""))
        for p in result.problems:
            click.echo(f"PROBLEM: {p}")
        click.echo("bundle verified: every check passed" if result.ok
                   else "bundle FAILED verification")
    if not result.ok:
        raise BundleVerificationError(str(bundle_dir), result.problems, result.checks,
                                      result.summary, result.signature)


@main.command("sample")
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(path_type=Path),
              help="Release bundle of an aim or mst release (it must pass `dpsynth inspect`).")
@click.option("--rows", required=True, type=click.IntRange(min=1), metavar="N",
              help="Rows to write: exactly N, every one satisfying --condition.")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path),
              metavar="FILE", help="Table to write (never overwritten); how it was drawn goes "
                                   "to FILE.sample.json.")
@click.option("--condition", metavar="SQL",
              help="SQL boolean expression on released columns, values as released, e.g. "
                   "\"race = 'Asian'\" or \"num_medications >= 20 AND gender = 'Female'\". "
                   "An AND of single-column conditions is sampled exactly from the model's "
                   "conditional distribution; anything else by rejection (the acceptance rate "
                   "is reported). A row satisfies it only where it is TRUE (NULL fails). Dates are "
                   "written DATE 'YYYY-MM-DD'.")
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), metavar="S",
              help="Seed of the sampler (post-processing; not of any DP noise). Random when "
                   "not given; recorded in the sidecar either way.")
@click.option("--format", "table_format", type=click.Choice(["csv", "parquet"]),
              help="Output format [default: from FILE's suffix, .csv or .parquet].")
@click.option("--quiet", is_flag=True, help="No progress output on stderr.")
@json_option
@handle_errors
def sample_cmd(bundle_dir: Path, rows: int, out_path: Path, condition: str | None,
               seed: int | None, table_format: str | None, quiet: bool, as_json: bool) -> None:
    """Draw synthetic rows from a bundle's released model, optionally conditioned.

    Post-processing of the release: no budget, no ledger. Rows are decoded and checked
    against the schema's rules exactly as the release's were, and marked synthetic like
    the release's table (Parquet metadata; the sidecar for CSV). An impossible
    condition is refused (exit 2) and nothing is written.
    """
    from dpsynth.sample import SampleConfig, sample_bundle

    cfg = SampleConfig(bundle=bundle_dir, rows=rows, out=out_path, condition=condition,
                       seed=seed, format=table_format)  # type: ignore[arg-type]
    result = sample_bundle(cfg, progress=_Progress(quiet or as_json))
    if as_json:
        _emit_json({"ok": True, **result.to_dict()})
        return
    click.echo(f"wrote {result.rows} synthetic rows to {result.out} (sidecar {result.sidecar})")
    if result.condition is not None:
        click.echo(f"condition {result.condition!r}: method {result.method}, acceptance rate "
                   f"{result.acceptance_rate:.4g} ({result.draws} rows drawn)")


@main.command("keygen")
@click.option("--out", "out_path", required=True, type=click.Path(path_type=Path),
              metavar="KEY", help="Private key file to create (PEM, mode 0600); the public key "
                                  "is written to KEY.pub. Existing files are never overwritten.")
@json_option
@handle_errors
def keygen_cmd(out_path: Path, as_json: bool) -> None:
    """Create an Ed25519 key pair for signing bundles (release --sign-key KEY).

    Keep KEY secret (a Kubernetes Secret, a vault); give KEY.pub to researchers by a
    channel other than the bundle, so that `dpsynth inspect --verify-key KEY.pub` proves
    the bundle came from you.
    """
    from dpsynth.signing import generate_keypair

    private, public, fingerprint = generate_keypair(out_path)
    if as_json:
        _emit_json({"ok": True, "private_key": str(private), "public_key": str(public),
                    "fingerprint": fingerprint})
    else:
        click.echo(f"private key (keep secret): {private}")
        click.echo(f"public key (give to researchers): {public}")
        click.echo(f"fingerprint: {fingerprint}")


def _auc_text(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


@main.command("audit")
@click.option("--schema", "schema_path", required=True, type=click.Path(path_type=Path),
              help="Table schema file (YAML) the bundle was released with.")
@click.option("--input", "input_path", required=True, type=click.Path(path_type=Path),
              help="The private table the release was made from (CSV, gzip CSV or Parquet).")
@click.option("--bundle", "bundle_dir", required=True, type=click.Path(path_type=Path),
              help="The release bundle directory to audit.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Directory for the CONFIDENTIAL report (audit-report.json/.html); never "
                   "inside the bundle.")
@click.option("--target", help="Binary target COLUMN=VALUE for train-on-synthetic, test-on-real "
                               "(e.g. readmitted=<30), besides every level of the schema's "
                               "analysis.targets.")
@click.option("--holdout", "holdout_path", type=click.Path(path_type=Path),
              help="Real rows the release never saw (same schema): the baseline for exact-match, "
                   "distance-to-closest-record and anonymeter checks.")
@click.option("--seed", type=int, help="Seed of the audit's subsampling (not of any DP noise).")
@json_option
@handle_errors
def audit_cmd(schema_path: Path, input_path: Path, bundle_dir: Path, out_dir: Path,
              target: str | None, holdout_path: Path | None, seed: int | None,
              as_json: bool) -> None:
    """Write the CONFIDENTIAL internal audit report of a bundle against the real table.

    Utility (marginal TVD, associations, train-on-synthetic/test-on-real, subgroups) and
    disclosure checks (exact matches, distance to closest record, anonymeter). The report
    holds statistics of the real table that are not differentially private: keep it with
    the custodian, never in the bundle.
    """
    from dpsynth.audit import audit

    result = audit(schema_path, input_path, bundle_dir, out_dir, target=target,
                   holdout_path=holdout_path, seed=seed)
    if as_json:
        _emit_json({"ok": True, **result})
    else:
        click.echo(f"internal audit report (CONFIDENTIAL) of {result['release_id']}: "
                   f"{result['html']}")
        click.echo(f"mean TVD 1-way {result['tvd_1way_mean']:.4f}, 2-way "
                   f"{result['tvd_2way_mean']:.4f}; exact-match share "
                   f"{result['exact_match_share']:.4f}; anonymeter: {result['anonymeter']}")
        for t in result["tstr_targets"]:
            click.echo(f"TSTR AUC {t['target']} = {t['value']}: synthetic "
                       f"{_auc_text(t['auc_train_synthetic'])}, real-train ceiling "
                       f"{_auc_text(t['auc_train_real'])}, independent-columns floor "
                       f"{_auc_text(t['auc_train_independent'])}")


if __name__ == "__main__":  # pragma: no cover
    main()
