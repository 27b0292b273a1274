"""The input rules compiled to Spark SQL, and the one job that checks them (PRIVATE).

Owns the Spark compiler of :mod:`dpsynth.input_rules`: :func:`column_exprs`
builds a released column's missing / malformed / out-of-domain flags and its code
from the same :class:`~dpsynth.input_rules.ColumnRules` the polars compiler
(:func:`dpsynth.domain.column_exprs`) reads, and :func:`check` runs every check
of :func:`~dpsynth.input_rules.input_checks`, in order, after two CSV-only ones
(``csv-format``, ``encoding``), as one Spark job computing each rule's violation
count and first row. The first violated rule raises with the column, the rule, a
count and a row number, never a value.

Known differences from polars (inputs both paths reject, possibly under another
rule, or rare forms): Java vs Rust regular expressions for a code column's
``pattern``; date formats are translated from ``strftime`` to Spark patterns
(``%Y %m %d %H %M %S %f %y %b %B %j``; no format means ISO 8601); blank lines in
a CSV are skipped by Spark; a cell holding U+FFFD (the replacement character) is
reported as ``encoding``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dpsynth.errors import UsageError
from dpsynth.input_rules import (
    ColumnRules,
    bad_rows,
    column_rules,
    input_checks,
    no_rows,
    ragged_rows,
    unit_missing_tokens,
)
from dpsynth.marginals.spark.reading import CORRUPT, ROW_NUMBER
from dpsynth.marginals.spark.session import pyspark_functions
from dpsynth.schema import Column, Schema

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import Column as SparkColumn
    from pyspark.sql import DataFrame

__all__ = ["SparkExprs", "check", "column_exprs"]


def check(df: DataFrame, schema: Schema, from_csv: bool) -> int:
    """Every input check, in order, in one Spark job; returns the number of rows
    (PRIVATE: never for anything released)."""
    F = pyspark_functions()
    checks: list[tuple[str | None, str, str, SparkColumn]] = []
    if from_csv:  # a short or long record is corrupt to Spark (PERMISSIVE mode)
        checks.append((None, "csv-format", "", F.col(CORRUPT)))
        utf8_bad = F.lit(False)
        for c in schema.input_columns:
            utf8_bad = utf8_bad | F.coalesce(F.col(f"`{c.name}`").contains("\ufffd"), F.lit(False))
        checks.append((None, "encoding", "the file is not valid UTF-8", utf8_bad))
    exprs = {c.name: column_exprs(c) for c in schema.measured_columns}
    for chk in input_checks(schema):
        if chk.flag == "unit-missing":
            uid = F.col(f"`{chk.column}`")
            expr = uid.isNull() | (_strip(uid) == "") | _in(_strip(uid), unit_missing_tokens(schema))
        else:
            e = exprs[chk.column]
            expr = {"missing": e.missing, "malformed": e.malformed, "invalid": e.invalid,
                    "out-of-domain": e.out_of_domain}[chk.flag]
        checks.append((chk.column, chk.rule, chk.what, expr))
    aggs = []
    for i, (_, _, _, expr) in enumerate(checks):
        bad = F.coalesce(expr, F.lit(False))
        aggs.append(F.sum(bad.cast("long")).alias(f"n{i}"))
        aggs.append(F.min(F.when(bad, F.col(ROW_NUMBER))).alias(f"r{i}"))
    aggs.append(F.count(F.lit(1)).alias("n_rows"))
    res = df.agg(*aggs).collect()[0]
    if not res["n_rows"]:
        raise no_rows()
    for i, (col, rule, what, _) in enumerate(checks):
        n_bad = res[f"n{i}"]
        if n_bad and rule == "csv-format":
            raise ragged_rows(n_bad, int(res[f"r{i}"]) + 1)
        if n_bad:
            raise bad_rows(what, n_bad, int(res[f"r{i}"]) + 1, column=col, rule=rule)
    return int(res["n_rows"])


@dataclass(frozen=True)
class SparkExprs:
    """Spark SQL expressions over one raw (text) column: the counterpart of
    :class:`dpsynth.domain.ColumnExprs`."""

    missing: SparkColumn
    malformed: SparkColumn
    invalid: SparkColumn
    out_of_domain: SparkColumn
    code: SparkColumn


def column_exprs(col: Column) -> SparkExprs:
    """Build the check and encode expressions for one released column."""
    F = pyspark_functions()
    r = column_rules(col)
    raw = F.col(f"`{col.name}`")
    missing = raw.isNull() | _in(raw, col.missing_tokens)
    compile_kind = {"categorical": _categorical, "code": _code, "boolean": _boolean}.get(
        col.kind, _binned)
    malformed, in_domain, code = compile_kind(r, raw)
    # clamp moves a value into the bounds, other codes it as the other category
    out_of_domain = F.lit(False) if col.on_out_of_domain in ("clamp", "other") else ~in_domain
    malformed_f = F.coalesce(malformed, F.lit(True))
    bad = missing | malformed_f | (F.coalesce(out_of_domain, F.lit(True))
                                   if col.on_out_of_domain == "null" else F.lit(False))
    null_code = F.lit(r.null_code).cast("int")
    present = ~missing & ~malformed_f
    invalid = F.lit(False)
    if r.valid is not None:
        value = _value(col, raw)
        invalid = present & F.coalesce((value < F.lit(r.valid[0])) | (value > F.lit(r.valid[1])),
                                       F.lit(False))
    return SparkExprs(
        missing=missing,
        malformed=~missing & malformed_f,
        invalid=invalid,
        out_of_domain=present & ~invalid & F.coalesce(out_of_domain, F.lit(True)),
        code=F.when(bad, null_code).otherwise(code.cast("int")),
    )


_Compiled = tuple["SparkColumn", "SparkColumn", "SparkColumn"]
"""(malformed, in the domain, code) of a present cell."""


def _categorical(r: ColumnRules, raw: SparkColumn) -> _Compiled:
    F = pyspark_functions()
    cats = list(r.column.categories)
    pos = F.array_position(F.array(*[F.lit(c) for c in cats]), raw)
    in_domain = pos > 0
    code = F.when(in_domain, pos - 1)
    if r.column.other_category:
        code = code.otherwise(F.lit(cats.index(r.column.other_category)))
    return F.lit(False), in_domain, code


def _code(r: ColumnRules, raw: SparkColumn) -> _Compiled:
    F = pyspark_functions()
    col = r.column
    stripped = _strip(raw)
    malformed = ~stripped.rlike(f"^(?:{col.pattern})$") if col.pattern else F.lit(False)
    number = F.regexp_extract(stripped, r"^([0-9]+)", 1).try_cast("long")
    chain: Any = None
    for i, g in enumerate(col.groups):
        cond = F.lit(False)
        for p in g.prefixes:
            cond = cond | stripped.startswith(p)
        for lo, hi in g.ranges:
            cond = cond | F.coalesce((number >= lo) & (number <= hi), F.lit(False))
        chain = F.when(cond, F.lit(i)) if chain is None else chain.when(cond, F.lit(i))
    if chain is None:  # pragma: no cover - the JSON Schema requires a group
        raise ValueError(f"code column {col.name!r} has no groups")
    return malformed, chain.isNotNull(), chain


def _boolean(r: ColumnRules, raw: SparkColumn) -> _Compiled:
    F = pyspark_functions()
    col = r.column
    value = (F.when(_in(raw, col.true_tokens), F.lit(True))
             .when(_in(raw, col.false_tokens), F.lit(False)))
    return value.isNull(), F.lit(True), value.cast("int")


def _binned(r: ColumnRules, raw: SparkColumn) -> _Compiled:
    """integer, float, date, datetime: parse, compare with the bounds, find the bin."""
    F = pyspark_functions()
    col = r.column
    value = _value(col, raw)
    if r.bounds is None:  # pragma: no cover - the schema sets bounds for these kinds
        raise ValueError(f"column {col.name!r} has no bounds")
    lo_v, hi_v = (_lit(b) for b in r.bounds)
    edges = [_lit(e) for e in r.edges]
    in_domain = (value >= lo_v) & (value <= hi_v)
    v = F.least(F.greatest(value, lo_v), hi_v) if col.on_out_of_domain == "clamp" else value
    if col.kind in ("integer", "float"):
        v = v.cast("double")
    # searchsorted(edges, v, side="right") - 1, clipped to [0, n-1]
    idx = F.size(F.filter(F.array(*edges), lambda e: e <= v)) - 1
    n_bins = len(r.edges) - 1  # the atoms' codes follow the bins
    code = F.when(v.isNotNull(), F.least(F.greatest(idx, F.lit(0)), F.lit(n_bins - 1)))
    for i, atom in enumerate(r.atoms):
        code = F.when(v == F.lit(float(atom)), F.lit(n_bins + i)).otherwise(code)
    return value.isNull(), in_domain, code


def _strip(c: SparkColumn) -> SparkColumn:
    """polars ``str.strip_chars()``: Unicode whitespace at both ends."""
    F = pyspark_functions()
    return F.regexp_replace(c, r"(?U)^\s+|\s+$", "")


def _in(c: SparkColumn, values: Sequence[str]) -> SparkColumn:
    F = pyspark_functions()
    return c.isin(list(values)) if values else F.lit(False)


_INT_RE = r"^[+-]?[0-9]+$"
_FLOAT_RE = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_STRFTIME = {
    "Y": "yyyy", "m": "MM", "d": "dd", "H": "HH", "M": "mm", "S": "ss", "f": "SSSSSS",
    "y": "yy", "b": "MMM", "B": "MMMM", "j": "DDD", "e": "d",
}
_ONE_OR_TWO = {"m": "M", "d": "d", "H": "H", "M": "m", "S": "s"}


def _spark_pattern(fmt: str) -> str:
    """strftime -> Spark datetime pattern; one- or two-digit fields like chrono
    where a separator follows."""
    out: list[str] = []
    i = 0
    literal = ""
    while i < len(fmt):
        ch = fmt[i]
        if ch == "%" and i + 1 < len(fmt):
            if literal:
                out.append("'" + literal.replace("'", "''") + "'")
                literal = ""
            d = fmt[i + 1]
            if d == ".":  # %.f: optional fraction
                out.append("[.SSSSSS]")
                i += 3
                continue
            if d not in _STRFTIME:
                raise UsageError(f"date format directive %{d} is not supported by the Spark backend")
            nxt = fmt[i + 2] if i + 2 < len(fmt) else ""
            out.append(_ONE_OR_TWO[d] if d in _ONE_OR_TWO and nxt != "%" else _STRFTIME[d])
            i += 2
        else:
            literal += ch
            i += 1
    if literal:
        out.append("'" + literal.replace("'", "''") + "'")
    return "".join(out)


def _lit(x: float | dt.datetime) -> SparkColumn:
    """A bound or edge as Spark compares it: a double, or microseconds since 1970 (UTC)."""
    F = pyspark_functions()
    if isinstance(x, dt.datetime):
        return F.lit((x - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1))
    return F.lit(float(x))


def _value(col: Column, raw: SparkColumn) -> SparkColumn:
    """The parsed number or timestamp (null when malformed), like polars'."""
    F = pyspark_functions()
    s = _strip(raw)
    if col.kind == "integer":
        return F.when(s.rlike(_INT_RE), s.try_cast("long"))
    if col.kind == "float":
        v = F.when(s.rlike(_FLOAT_RE), s.try_cast("double"))
        return F.when(~F.isnan(v) & (F.abs(v) != float("inf")), v)
    return F.unix_micros(_timestamp(col, s))


def _timestamp(col: Column, s: SparkColumn) -> SparkColumn:
    F = pyspark_functions()
    if col.date_format is not None:
        pats = [_spark_pattern(col.date_format)]
    elif col.kind == "date":
        pats = ["yyyy-M-d"]
    else:
        pats = ["yyyy-M-d'T'H:m:s[.SSSSSS]", "yyyy-M-d H:m:s[.SSSSSS]", "yyyy-M-d'T'H:m",
                "yyyy-M-d H:m"]
    parsed = [F.try_to_timestamp(s, F.lit(p)) for p in pats]
    ts = parsed[0] if len(parsed) == 1 else F.coalesce(*parsed)
    return F.date_trunc("day", ts) if col.kind == "date" else ts


