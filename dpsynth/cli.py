"""The ``dpsynth`` command line: parse options, call one library function, render errors.

Each command parses its options, calls a single library function, and prints
the result (human text, or one JSON object with ``--json``). This module is the
only place where exceptions become messages and exit codes (see
``dpsynth.errors`` for the table); it holds no pipeline logic.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from dpsynth import __version__
from dpsynth.errors import EXIT_CODES, DpsynthError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

_EXIT_HELP = "\b\n" + "\n".join(f"  {e.code}  {e.meaning}" for e in EXIT_CODES)


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
            _fail(exc.to_dict(), f"dpsynth: error: {exc.message}", exc.exit_code, as_json)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except KeyboardInterrupt:
            _fail({"error": "interrupted", "exit_code": 1}, "dpsynth: interrupted", 1, as_json)
        except Exception as exc:  # a bug: never echo a foreign message (it may quote data)
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
    """Validate table schema files (and tables against them)."""


@schema.command("check")
@click.option("--schema", "schema_path", required=True, type=click.Path(path_type=Path),
              help="Table schema file (YAML).")
@click.option("--input", "input_path", type=click.Path(path_type=Path),
              help="Also check this table (CSV, gzip CSV or Parquet) against the schema. "
                   "Nothing is written and no budget is spent.")
@json_option
@handle_errors
def schema_check(schema_path: Path, input_path: Path | None, as_json: bool) -> None:
    """Validate a schema file; with --input, check a table against it."""
    from dpsynth.pipeline import check

    result = check(schema_path, input_path)
    if as_json:
        _emit_json({"ok": True, **result})
    else:
        click.echo(f"schema {result['schema']!r} is valid: {result['columns']} columns, "
                   f"{result['released_columns']} released")
        if input_path is not None:
            click.echo("the table satisfies the schema")


def _not_yet(name: str) -> None:
    raise UsageError(f"{name} is not available in this build")


if __name__ == "__main__":  # pragma: no cover
    main()
