"""Where a release validates its synthetic table: in a worker process started early.

Importing great-expectations takes about 5 of the 7 seconds a release spent importing
its modules (NIST excerpt, 2 cores, issue 15), more than reading, checking and fitting
together. A release therefore starts :class:`ValidationWorker` before it reserves its
budget: a child process (``python -m dpsynth.validation_worker``) that imports
great-expectations and compiles the schema's suite on another core while the release
reads the input and fits the model. When the synthetic table is ready, the release
writes it to a private temporary directory (Arrow IPC), the worker runs
:func:`dpsynth.validate.validate_synthetic` on it, exactly as the release would have
in its own process, and sends the :class:`~dpsynth.validate.ValidationOutcome` back.

:func:`start_validation` picks where validation runs: the worker, unless the process
already imported great-expectations (nothing left to hide), has a single core (nothing
to overlap with), reads an input larger than :data:`WORKER_MAX_INPUT_BYTES` or asks for
more than :data:`WORKER_MAX_ROWS` rows (memory matters more there than seconds), or
``DPSYNTH_VALIDATION_WORKER=0`` is set (test suites, debugging);
then :class:`InProcess` validates in the release's process. Both give the same outcome
(``tests/test_validation_worker.py``).

Rules this module keeps: the worker is given only what validation is given (the
public schema and the synthetic table), never the private input or the ledger; its
stdout is the reply channel (a pickle of ``("ok", outcome)``, ``("error", DpsynthError)``
or ``("crash", exception type name)``: never a foreign exception's message, which may
quote data). The worker holds nothing worth waiting for, so it is killed when the
release ends, and its temporary directory removed; when the release itself is killed,
the worker sees its stdin close, removes the directory and exits.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import IO, Any, Protocol

import polars as pl

from dpsynth.errors import DpsynthError, InternalError
from dpsynth.schema import Schema
from dpsynth.startup import frozen_imports
from dpsynth.validate import ValidationOutcome, validate_synthetic, warm_up

__all__ = ["ENV", "WORKER_MAX_INPUT_BYTES", "WORKER_MAX_ROWS", "InProcess", "ValidationWorker", "Validator",
           "start_validation"]

ENV = "DPSYNTH_VALIDATION_WORKER"
"""Set to ``0`` to validate in the release's own process."""

_SCHEMA = "schema.pickle"
_TABLE = "synthetic.arrow"


class Validator(Protocol):
    """Runs one schema's suite on a synthetic table; closed when the release ends."""

    def validate(self, df: pl.DataFrame, min_rows: int, max_rows: int) -> ValidationOutcome: ...
    def close(self) -> None: ...


class InProcess:
    """Validation in this process (great-expectations imported here, on first use)."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    def validate(self, df: pl.DataFrame, min_rows: int, max_rows: int) -> ValidationOutcome:
        return validate_synthetic(df, self.schema, min_rows, max_rows)

    def close(self) -> None:
        return None


class ValidationWorker:
    """Validation in a child process, started now so that its imports overlap the caller's
    work. :meth:`validate` as often as needed; :meth:`close` always. When the table
    cannot be written to the temporary directory, validation falls back to this
    process (same outcome, great-expectations imported here)."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._in_process = False
        self._dir = Path(tempfile.mkdtemp(prefix="dpsynth-validate-"))  # mode 0700
        try:
            with (self._dir / _SCHEMA).open("wb") as fh:
                pickle.dump(schema, fh)
            # -m: the worker's __main__ is a module (pyspark, which great-expectations
            # imports, exits a process whose __main__ has neither a spec nor a file, as
            # under multiprocessing's spawn); the package's own root as the working
            # directory, so the child imports this dpsynth, whatever the caller's cwd.
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-m", __name__, str(self._dir)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                cwd=Path(__file__).resolve().parents[1])
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    def validate(self, df: pl.DataFrame, min_rows: int, max_rows: int) -> ValidationOutcome:
        if self._in_process:
            return validate_synthetic(df, self.schema, min_rows, max_rows)
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise InternalError("the validation worker was closed")
        table = self._dir / _TABLE
        try:
            df.write_ipc(table)
        except OSError:  # no room for the table in the temporary directory (a small
            self.close()  # emptyDir in Kubernetes): the same validation, in this process
            self._in_process = True
            return validate_synthetic(df, self.schema, min_rows, max_rows)
        request = {"table": str(table), "min_rows": int(min_rows), "max_rows": int(max_rows)}
        try:
            proc.stdin.write(json.dumps(request).encode() + b"\n")
            proc.stdin.flush()
            status, value = pickle.load(proc.stdout)  # noqa: S301 - our own child's reply
        except (OSError, EOFError, pickle.UnpicklingError):
            raise InternalError(f"the validation worker ended (exit status {proc.wait()}) "
                                "without an answer") from None
        finally:
            table.unlink(missing_ok=True)
        if status == "ok" and isinstance(value, ValidationOutcome):
            return value
        if status == "error" and isinstance(value, DpsynthError):
            raise value
        raise InternalError(f"validation failed in its worker process ({value})")

    def close(self) -> None:
        """Stop the worker and remove its directory. The worker holds nothing worth
        waiting for (between requests it is idle; before the first it may still be
        importing), so it is killed."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        shutil.rmtree(self._dir, ignore_errors=True)


WORKER_MAX_INPUT_BYTES = 64 * 2**20
"""Inputs larger than this (64 MiB on disk, about a million CSV rows of 50 columns)
validate in the release's process: there great-expectations' import is a few percent of
the release, while a worker would add its own memory (about 350 MB idle, plus a copy of
the synthetic table) to the container's peak, which the scale targets bound."""


WORKER_MAX_ROWS = 1_000_000
"""A release asking for more synthetic rows than this (``--rows``) validates in process:
the worker would hold its own copy of the synthetic table."""


def start_validation(schema: Schema, input_bytes: int | None = None,
                     rows: int | None = None) -> Validator:
    """A :class:`ValidationWorker` when one can hide great-expectations' import, else
    :class:`InProcess` (see the module docstring). ``input_bytes``: the input's size on
    disk (file metadata, known before the table is read); None when not known (e.g. a
    Spark directory), which validates in process. ``rows``: the synthetic rows asked for
    (None: about as many as the input, which its size bounds)."""
    if (os.environ.get(ENV) == "0" or "great_expectations" in sys.modules
            or len(os.sched_getaffinity(0)) < 2
            or input_bytes is None or input_bytes > WORKER_MAX_INPUT_BYTES
            or (rows is not None and rows > WORKER_MAX_ROWS)):
        return InProcess(schema)
    return ValidationWorker(schema)


def _serve(workdir: Path, requests: IO[bytes], reply: IO[bytes]) -> None:
    """The worker: warm up, then answer each request line on ``reply`` until the parent
    closes ``requests`` (or dies); then remove the directory (nobody else may)."""
    try:
        with (workdir / _SCHEMA).open("rb") as fh:
            schema = pickle.load(fh)  # noqa: S301 - written by our parent, in its 0700 dir
        with frozen_imports():
            warm_up(schema)
        broken = None
    except Exception as exc:
        broken = _failure(exc)
    for line in requests:
        result = broken or _answer(schema, json.loads(line))
        try:
            pickle.dump(result, reply)
        except Exception as exc:  # pragma: no cover - an outcome that does not pickle
            pickle.dump(_failure(exc), reply)
        reply.flush()
    shutil.rmtree(workdir, ignore_errors=True)


def _answer(schema: Schema, request: dict[str, Any]) -> tuple[str, Any]:
    try:
        df = pl.read_ipc(request["table"])
        return ("ok", validate_synthetic(df, schema, request["min_rows"], request["max_rows"]))
    except Exception as exc:
        return _failure(exc)


def _failure(exc: Exception) -> tuple[str, Any]:
    """A dpsynth error as it is; of any other exception only its type (its message may
    quote a value), with the traceback on stderr for developers (as in the CLI)."""
    if isinstance(exc, DpsynthError):
        return ("error", exc)
    if os.environ.get("DPSYNTH_DEBUG") == "1":
        traceback.print_exception(exc)
    return ("crash", type(exc).__name__)


def main(argv: list[str]) -> int:
    """``python -m dpsynth.validation_worker WORKDIR`` (started by :class:`ValidationWorker`)."""
    reply = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    # anything else that writes to stdout (a library's print) goes to stderr instead
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with reply:
        _serve(Path(argv[0]), sys.stdin.buffer, reply)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
