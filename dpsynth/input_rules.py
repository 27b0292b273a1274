"""The rules an input table must pass, as backend-neutral data (public information only).

Owns the one specification of the input checks and codes, built from the schema
and compiled by each backend into its own expressions: polars
(:func:`dpsynth.domain.column_exprs`, run by :mod:`dpsynth.io`) and Spark SQL
(:mod:`dpsynth.marginals.spark`). Both backends read, in this order:

1. the file-level rules and their messages: ``input-file`` (the path is missing, a
   directory or not a regular file: :func:`input_path_problem`), ``empty-file``,
   ``encoding`` (:func:`header_not_utf8`), ``parquet-format`` (a corrupt or
   truncated Parquet file: :func:`parquet_unreadable`), ``no-rows``; for CSV
   also ``gzip`` (a corrupt gzip file) and ``csv-format`` (a record with another
   number of fields than the header, or a file the parser cannot split);
2. the header (:func:`check_header`: rules ``duplicate-column``,
   ``missing-column``, ``extra-column``) and, for Parquet, each column's stored
   type by family (:func:`check_parquet_type`: rule ``type``);
3. the per-row checks (:func:`input_checks`): ``privacy-unit-missing`` (a null,
   blank or missing-token patient id: :func:`unit_missing_tokens`), then per
   released column ``not-nullable``, the kind's parse rule and its domain rule;
   the first violated one fails the table with :func:`bad_rows`;
4. how each released column's cells are read and coded (:class:`ColumnRules`).

Messages name columns, rules, counts and row numbers, never a cell value.
Must not: import a backend (polars, pyspark) or read data.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from dataclasses import dataclass
from typing import Literal

from dpsynth.errors import InputDataError
from dpsynth.schema import Column, Schema

__all__ = [
    "Check",
    "ColumnRules",
    "TypeFamily",
    "bad_rows",
    "check_header",
    "check_parquet_type",
    "column_rules",
    "empty_file",
    "header_not_utf8",
    "input_checks",
    "input_file_error",
    "input_path_problem",
    "no_rows",
    "parquet_unreadable",
    "ragged_rows",
    "unit_missing_tokens",
]


# -- file-level rules -------------------------------------------------------------------


_NOT_REGULAR = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def input_path_problem(path: str | os.PathLike[str], *, directory_ok: bool = False) -> str | None:
    """What keeps a local input path from being read, as the end of a message
    (``does not exist``, ``is a directory``, ``is not a regular file (it is a
    FIFO)``), or ``None`` when it is a regular file (or a directory, when
    ``directory_ok``: Spark reads a directory of part files). Only the path is
    looked at (``os.stat``): a FIFO is never opened, so nothing blocks. A URL
    (``scheme://...``) is for Spark to open: ``None``."""
    if "://" in str(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be looked at ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(mode) or (directory_ok and stat.S_ISDIR(mode)):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    what = next((name for test, name in _NOT_REGULAR if test(mode)), "not a file")
    return f"is not a regular file (it is {what})"


def input_file_error(path: str, problem: str) -> InputDataError:
    """Rule ``input-file``: ``problem`` from :func:`input_path_problem`."""
    return InputDataError(f"input file {path!r} {problem}", rule="input-file")


def empty_file() -> InputDataError:
    return InputDataError("the input file is empty", rule="empty-file")


def header_not_utf8() -> InputDataError:
    return InputDataError("the header is not valid UTF-8", rule="encoding")


def parquet_unreadable() -> InputDataError:
    """Rule ``parquet-format``: a Parquet file that cannot be read (corrupt or
    truncated: its footer, schema or data pages)."""
    return InputDataError("the file could not be read as Parquet (corrupt or truncated)",
                          rule="parquet-format")


def no_rows() -> InputDataError:
    return InputDataError("the table has a header but no rows", rule="no-rows")


def bad_rows(what: str, n_bad: int, first_row: int, *, column: str | None = None,
             rule: str) -> InputDataError:
    """A row rule failed in ``n_bad`` rows, the first at data row ``first_row`` (1-based)."""
    return InputDataError(f"{what} in {n_bad} row(s), first at data row {first_row}",
                          column=column, rule=rule)


def ragged_rows(n_bad: int, first_row: int) -> InputDataError:
    """Rule ``csv-format``: ``n_bad`` CSV records do not have the header's number of
    fields (a record cut short, a blank line, an extra field, or quoting that
    splits a record wrongly), the first at data row ``first_row``."""
    return bad_rows("a row has a different number of fields than the header (or bad quoting)",
                    n_bad, first_row, rule="csv-format")


def check_header(names: list[str], schema: Schema) -> None:
    """The table's column names, in file order, against the schema's columns: no
    name twice, every schema column present (derived ones may be absent), no other
    column."""
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise InputDataError("the column name appears more than once in the header",
                                 column=n, rule="duplicate-column")
        seen.add(n)
    expected = [c.name for c in schema.columns]
    for n in (c.name for c in schema.input_columns):
        if n not in seen:
            raise InputDataError("the schema's column is missing from the table",
                                 column=n, rule="missing-column")
    for n in names:
        if n not in expected:
            raise InputDataError("the table has a column the schema does not define",
                                 column=n, rule="extra-column")


TypeFamily = Literal["integer", "float", "temporal", "boolean", "string", "categorical", "other"]
"""A stored Parquet type, as each backend classifies it: ``float`` is any non-integer
number (decimals too), ``temporal`` a date or timestamp, ``categorical`` a
dictionary type the backend keeps apart from plain strings."""

_PARQUET_FITS: dict[str, frozenset[str]] = {
    "integer": frozenset({"integer", "string"}),
    "float": frozenset({"integer", "float", "string"}),
    "date": frozenset({"temporal", "string"}),
    "datetime": frozenset({"temporal", "string"}),
    "boolean": frozenset({"boolean", "integer", "string"}),
    "categorical": frozenset({"string", "categorical", "integer"}),
    "code": frozenset({"string", "categorical", "integer"}),
}


def check_parquet_type(col: Column, family: TypeFamily, type_name: str) -> None:
    """Whether a Parquet column stored as ``type_name`` (of ``family``) can hold
    ``col``'s kind; identifier and text columns take any type. Every accepted
    column is then read as text (a temporal one as ISO 8601 text)."""
    if col.kind in ("identifier", "text") or family in _PARQUET_FITS[col.kind]:
        return
    raise InputDataError(f"the Parquet type {type_name} does not fit kind {col.kind}",
                         column=col.name, rule="type")


# -- per-row rules ----------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnRules:
    """How one released column's raw text is checked and coded, for any backend.

    A cell is *missing* when null or one of ``column.missing_tokens`` (exact text).
    Any other cell is read by the column's kind:

    * categorical: the text itself; in the domain when it is one of
      ``column.categories`` (exact text), coded by its position there. Nothing
      is malformed.
    * code: the text without surrounding whitespace; malformed when
      ``column.pattern`` is set and does not match all of it; coded by the first
      of ``column.groups`` with a prefix it starts with or a range holding the
      number its leading digits form; out of the domain when no group matches.
    * boolean: the text itself; one of ``true_tokens`` is code 1, one of
      ``false_tokens`` code 0, anything else malformed. Never out of the domain.
    * integer, float, date, datetime: the text without surrounding whitespace,
      parsed as the kind (a float must be finite; dates by ``column.date_format``,
      else ISO 8601; a date is a datetime at midnight); malformed when it does not
      parse; in the domain inside ``bounds`` (inclusive). ``clamp`` moves a value
      into the bounds first. Coded by its bin: the number of inner ``edges``
      at or below it (bins ``[e_i, e_i+1)``, the last one closed), or by its atom's
      code when it equals one of ``atoms``. A number outside ``valid`` fails the
      table (rule ``valid``), before the domain rule is applied.

    Out-of-domain cells fail the table under ``on_out_of_domain: reject``, are
    coded as missing under ``null``, as the column's ``other_category`` under
    ``other`` (categorical), and cannot occur under ``clamp``. Malformed
    cells fail the table unless ``on_unreadable: null`` codes them as missing. Missing
    cells get ``null_code`` (a non-nullable column fails the table first).
    """

    column: Column
    malformed_rule: str
    """Rule of a present cell the kind cannot read (``""``: categorical, none can fail)."""
    domain_rule: str
    """Rule of a read cell outside the public domain."""
    n_levels: int
    """Codes ``0 .. n_levels-1`` are values."""
    null_code: int | None
    """The code of a missing cell: ``n_levels`` if nullable, else ``None``."""
    bounds: tuple[float, float] | tuple[dt.datetime, dt.datetime] | None = None
    """Numbers, dates: the inclusive bounds."""
    edges: tuple[float, ...] | tuple[dt.datetime, ...] = ()
    """Numbers, dates: the bin edges."""
    atoms: tuple[float, ...] = ()
    """Numbers: values with their own code, ``len(edges) - 1 + i`` for ``atoms[i]``
    (a value equal to an atom takes the atom's code, not its bin's)."""
    valid: tuple[float, float] | None = None
    """Numbers: the possible values; a read value outside fails rule ``valid``
    whatever ``on_out_of_domain`` says (impossible, not rare)."""


_RULES = {"categorical": ("", "category"), "code": ("code-format", "code-group"),
          "boolean": ("boolean-token", "boolean"), "integer": ("parse-integer", "bounds"),
          "float": ("parse-float", "bounds"), "date": ("parse-date", "bounds"),
          "datetime": ("parse-datetime", "bounds")}


def column_rules(col: Column) -> ColumnRules:
    """The rules of one released column (``ValueError`` for identifier and text)."""
    n = col.n_levels
    malformed_rule, domain_rule = _RULES[col.kind]
    bounds: tuple[float, float] | tuple[dt.datetime, dt.datetime] | None = None
    edges: tuple[float, ...] | tuple[dt.datetime, ...] = ()
    if col.kind in ("date", "datetime"):
        bounds, edges = col.date_bounds, col.date_edges
    elif col.kind in ("integer", "float"):
        bounds, edges = col.bounds, tuple(float(e) for e in col.bin_edges)
    return ColumnRules(column=col, malformed_rule=malformed_rule, domain_rule=domain_rule,
                       n_levels=n, null_code=n if col.nullable else None, bounds=bounds,
                       edges=edges, atoms=col.atoms, valid=col.valid)


Flag = Literal["unit-missing", "missing", "malformed", "invalid", "out-of-domain"]


@dataclass(frozen=True)
class Check:
    """One per-row check: rows where ``flag`` holds for ``column`` fail rule ``rule``.

    ``flag``: ``unit-missing``, the patient id is null (a Parquet null, or an empty
    CSV field), only whitespace, or one of the id column's missing tokens once
    stripped (:func:`unit_missing_tokens`): such rows have no known patient, and
    merging them into one would bound the wrong unit; else a cell of a released
    column is ``missing``, ``malformed``, ``invalid`` or ``out-of-domain`` as
    :class:`ColumnRules` defines them (each excludes the ones before it).
    """

    column: str
    rule: str
    what: str
    """The message's subject (:func:`bad_rows`)."""
    flag: Flag


def unit_missing_tokens(schema: Schema) -> tuple[str, ...]:
    """The patient id column's missing tokens, stripped, that are not blank: a
    patient id equal to one of them (once stripped) is missing (rule
    ``privacy-unit-missing``). Empty when there is no patient id column."""
    unit = schema.privacy_unit.column
    if unit is None:
        return ()
    return tuple(sorted({t.strip() for t in schema.column(unit).missing_tokens} - {""}))


def input_checks(schema: Schema) -> tuple[Check, ...]:
    """Every per-row check of the schema, in the order the first failure is reported."""
    checks: list[Check] = []
    if schema.privacy_unit.column is not None:
        checks.append(Check(schema.privacy_unit.column, "privacy-unit-missing",
                            "the patient id is missing", "unit-missing"))
    for c in schema.measured_columns:
        r = column_rules(c)
        if not c.nullable:
            checks.append(Check(c.name, "not-nullable", "missing value in a non-nullable column",
                                "missing"))
        if r.malformed_rule and c.on_unreadable == "reject":
            checks.append(Check(c.name, r.malformed_rule, f"value cannot be read as {c.kind}",
                                "malformed"))
        if c.valid is not None:
            checks.append(Check(c.name, "valid", "impossible value (outside the schema's valid "
                                "range)", "invalid"))
        if c.on_out_of_domain == "reject":
            checks.append(Check(c.name, r.domain_rule, "value outside the schema's domain",
                                "out-of-domain"))
    return tuple(checks)
