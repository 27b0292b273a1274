"""dpsynth: differentially private synthetic copies of patient tables.

Module map (imports point one way: cli -> pipeline -> steps -> privacy/schema/errors;
``docs/architecture.md`` has the data flow and where new things go)::

    cli.py           click commands; the one place errors become messages
    config.py        ReleaseConfig: every release setting declared once
    capacity.py      will --rows N fit in the memory available (checked before reserving)
    crashpoints.py   DPSYNTH_CRASH_AT: a real SIGKILL at named points (reliability tests)
    pipeline.py      check(), release() and draft_schema(): the straight-line sequences
    startup.py       heavy imports with the cyclic GC paused and the heap frozen
    errors.py        exception tree and exit codes
    schema.py        schema file -> validated, frozen Schema (public information only)
    domain.py        public discretisation: value <-> integer code
    code_systems.py  public code classifications (ICD-9-CM, ICD-10-CM patterns, chapters)
    draft.py         the schema draft's YAML writer (public side of `schema draft`)
    input_rules.py   the input rules, written once for both backends
    io/              PRIVATE: read, check, bound and encode the input table
    marginals/       PRIVATE: exact marginal counters (numpy, Spark)
    privacy/
      accountant.py  zCDP Budget, ApproxDP, conversions, the Accountant
      mechanisms.py  the only caller of OpenDP's samplers
      session.py     PRIVATE: MeasurementSession, the only holder of encoded data
      ledger/        per-dataset budget ledger (core, SQLite, PostgreSQL)
    engines/         AIM, MST, smartnoise adapters, estimation, sampler (public side)
    validate.py      great-expectations suite for the synthetic table
    validation_worker.py  validation in a worker process started early (imports overlap)
    record.py        ReleaseRecord: the public facts of one release
    report/          privacy report, quality report, datasheet (public side)
    bundle.py        bundle layout, manifest, atomic write (optionally signed)
    model_format.py  the fitted model in the bundle (model/, dpsynth.model/v1)
    condition.py     a sampling condition: parsed, checked, codes it allows per column
    sample.py        dpsynth sample: rows from a bundle's model, optionally conditioned
    inspect.py       verification of a bundle: checksums, manifest against files, signature
    signing.py       Ed25519 keys and detached signatures of the manifest
    confidential.py  where custodian-only files go, written 0600
    audit/           PRIVATE: the confidential internal audit report
    rules.py         derived columns and rules on values (public post-processing)
    generate.py      sampling, decoding and rule enforcement of synthetic rows
    hashing.py       sha256_file
    version.py       the installed version (package metadata)

The public API is what ``__all__`` lists; everything else may change.
"""

import typing as _typing

from dpsynth.config import ReleaseConfig
from dpsynth.errors import (
    BudgetError,
    DpsynthError,
    InputDataError,
    InternalError,
    OutputValidationError,
    ResourceLimitError,
    SchemaError,
    StorageError,
    UsageError,
)
from dpsynth.schema import Schema, load_schema
from dpsynth.version import __version__

if _typing.TYPE_CHECKING:
    from dpsynth.pipeline import ReleaseResult, check, release

_LAZY = {"ReleaseResult", "check", "release"}
"""Names from ``dpsynth.pipeline``, imported on first use: the pipeline pulls in every
step (polars, OpenDP, great-expectations), which ``import dpsynth`` and
``dpsynth --help`` should not pay for."""


def __getattr__(name: str) -> _typing.Any:
    if name in _LAZY:
        from dpsynth import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'dpsynth' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)

__all__ = [
    "BudgetError",
    "DpsynthError",
    "InputDataError",
    "InternalError",
    "OutputValidationError",
    "ReleaseConfig",
    "ReleaseResult",
    "ResourceLimitError",
    "Schema",
    "SchemaError",
    "StorageError",
    "UsageError",
    "__version__",
    "check",
    "load_schema",
    "release",
]
