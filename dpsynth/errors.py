"""The dpsynth exception tree and the exit code each error maps to.

Every error a user can cause is a subclass of :class:`DpsynthError` and carries
an ``exit_code``; the CLI (``dpsynth/cli.py``) is the single place where these
become a one-line message and a process exit status. Messages name columns and
rules, never cell values of the private table (docs/privacy-model.md).

::

    DpsynthError                      (abstract)
    ├── UsageError            exit 2  bad options, bad configuration
    │   ├── SchemaError       exit 2  schema file invalid (JSON Schema or semantics)
    │   └── ConditionError    exit 2  `dpsynth sample --condition` cannot hold (or
    │                                 almost never does) under the domain or the model
    ├── InputDataError        exit 3  the private table does not match the schema
    ├── BudgetError           exit 4  privacy budget refused (ledger or accountant)
    ├── OutputValidationError exit 5  the synthetic table failed its expectation suite
    ├── StorageError          exit 6  ledger or output storage unavailable
    │   └── BundleVerificationError  exit 6  `dpsynth inspect`: a bundle failed a check
    ├── ResourceLimitError    exit 7  a time limit the user set was reached (budget spent)
    └── InternalError         exit 1  a bug in dpsynth, never the user's fault

Exit code 0 means success. Anything not derived from :class:`DpsynthError` that
escapes is also reported as an internal error (exit 1) without its message,
because a foreign exception's text may quote data.
"""

from __future__ import annotations

from dataclasses import dataclass


class DpsynthError(Exception):
    """Base of all dpsynth errors; ``exit_code`` is the process status."""

    exit_code: int = 1
    kind: str = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        #: More lines printed before the message (stderr only, never in ``to_dict``).
        self.details: list[str] = []

    def to_dict(self) -> dict[str, object]:
        """A JSON-able description (for ``--json`` output)."""
        return {"error": self.kind, "exit_code": self.exit_code, "message": self.message}


class UsageError(DpsynthError):
    """Bad command-line options or configuration."""

    exit_code = 2
    kind = "usage"


class SchemaError(UsageError):
    """The schema file is not valid; ``path`` locates the offending entry."""

    kind = "schema"

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class ConditionError(UsageError):
    """A sampling condition that no value of the domain satisfies, that has zero
    probability under the released model, or that rejection sampling almost never
    meets. Raised before anything is written."""

    kind = "condition"


class InputDataError(DpsynthError):
    """The input table does not satisfy the schema.

    ``column`` and ``rule`` identify the failed check; the message never holds a
    cell value of the private table.
    """

    exit_code = 3
    kind = "input"

    def __init__(self, message: str, column: str | None = None, rule: str = "") -> None:
        prefix = f"column {column!r}: " if column is not None else ""
        suffix = f" [rule: {rule}]" if rule else ""
        super().__init__(f"{prefix}{message}{suffix}")
        self.column = column
        self.rule = rule

    def to_dict(self) -> dict[str, object]:
        d = super().to_dict()
        d.update(column=self.column, rule=self.rule)
        return d


class TableProblemsError(InputDataError):
    """``schema check --input`` found problems: every one, each as a line of its own
    (``details``) and in ``--json`` (``problems``). ``column`` and ``rule`` are the
    first failing check's (as a release would report it); a single problem is the
    message itself, as a release's error would be."""

    def __init__(self, problems: list[dict[str, object]], lines: list[str],
                 extra: list[str] | None = None) -> None:
        first = next((p for p in problems if p.get("severity") == "error"), problems[0])
        column = first.get("column")
        if len(lines) == 1:
            super().__init__(lines[0])
            self.details = list(extra or [])
        else:
            super().__init__(f"the table does not satisfy the schema: {len(problems)} "
                             "problem(s)")
            self.details = [*lines, *(extra or [])]
        self.column = column if isinstance(column, str) else None
        self.rule = str(first.get("rule") or "")
        self.problems = problems

    def to_dict(self) -> dict[str, object]:
        d = super().to_dict()
        d["problems"] = self.problems
        return d


class BudgetError(DpsynthError):
    """A privacy budget request was refused; states requested vs remaining."""

    exit_code = 4
    kind = "budget"


class OutputValidationError(DpsynthError):
    """The synthetic table failed the expectation suite built from the schema."""

    exit_code = 5
    kind = "output-validation"


class StorageError(DpsynthError):
    """The ledger or output storage is unavailable or inconsistent."""

    exit_code = 6
    kind = "storage"


class BundleVerificationError(StorageError):
    """A bundle failed ``dpsynth inspect``: damaged, inconsistent, or not signed by the
    given key. ``problems`` lists every failed check (not only the first); ``checks``
    and ``summary`` are the inspection's, for ``--json``."""

    kind = "bundle-verification"

    def __init__(self, bundle: str, problems: list[str], checks: dict[str, str] | None = None,
                 summary: dict[str, object] | None = None, signature: str = "") -> None:
        failed = [name for name, status in (checks or {}).items() if status == "failed"]
        super().__init__(f"bundle {bundle!r} failed verification: {len(problems)} problem(s) "
                         f"in check(s) {', '.join(failed) or 'unknown'}")
        self.bundle = bundle
        self.problems = list(problems)
        self.checks = dict(checks or {})
        self.summary = dict(summary or {})
        self.signature = signature

    def to_dict(self) -> dict[str, object]:
        d = super().to_dict()
        d.update(problems=self.problems, checks=self.checks, signature=self.signature,
                 summary=self.summary)
        return d


class ResourceLimitError(DpsynthError):
    """A resource limit the user set (such as AIM's ``max_seconds``) was reached.

    It is a failure, never an early stop: a run cut short by the clock would
    release something decided by the run time, which grows with the private row
    count. Raised after data was read, so the budget stays spent.
    """

    exit_code = 7
    kind = "resource-limit"


class InternalError(DpsynthError):
    """A bug in dpsynth (never the user's fault)."""

    exit_code = 1
    kind = "internal"


@dataclass(frozen=True)
class ExitCode:
    """Documented exit codes (README and ``dpsynth --help`` list them)."""

    code: int
    meaning: str


EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(0, "success"),
    ExitCode(1, "internal error (a bug in dpsynth)"),
    ExitCode(2, "usage, configuration or schema error"),
    ExitCode(3, "input data error (the table does not match the schema)"),
    ExitCode(4, "privacy budget refused"),
    ExitCode(5, "output validation failed"),
    ExitCode(6, "ledger or storage unavailable; or a bundle failed `dpsynth inspect`"),
    ExitCode(7, "a time limit set by the user was reached (budget stays spent)"),
)
