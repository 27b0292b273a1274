"""A sampling condition (``dpsynth sample --condition``): parsed, checked, and turned
into per-column evidence on codes.

A condition is a SQL boolean expression over released columns, values as released
(the same polars SQL parser as the schema's rules: no Python eval). Unlike a rule, a
row satisfies it only where it is TRUE (NULL fails, as in a SQL ``WHERE``).

:func:`parse_condition` splits the expression into its top-level ``AND`` terms. For
each term over measured columns it works out, from the schema's public domain alone
(:func:`dpsynth.domain.probe_values`: every value of a small bin, evenly spaced ones of
a large bin, the category or group of other codes), which codes of each column can
satisfy it. Their intersection per column is the evidence the model is conditioned on
(:func:`dpsynth.engines.conditioning.condition`); sampling then keeps only decoded rows
where the whole condition holds. Because the evidence only excludes codes on which the
condition never holds, the kept rows follow the release's distribution conditioned on
the condition exactly, whatever the condition; the evidence only makes rejection rare.

The condition is *exact* (``method = "exact"``) when every term reads one measured
column: the evidence then is the condition up to bins that straddle a threshold, and
rows are only rejected inside such bins. Otherwise (a term over two columns, such as
``a = 1 OR b = 2``, or over a derived column) it is sampled by *rejection*: the
acceptance rate is reported. Holds no data; never reads the private table.

Limit: a bin with more than :data:`PROBES_PER_BIN` values (a float bin on a fine
precision grid, a date bin of many years) is probed at that many evenly spaced values,
both ends included. A condition that holds inside such a bin only between two probes
(``x = 3.317`` in a bin of 10,000 values) counts as never holding there.
"""

from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from dpsynth.domain import Domain, probe_values
from dpsynth.errors import ConditionError, SchemaError, UsageError
from dpsynth.rules import derive, rule_frame
from dpsynth.schema import Schema, sql_columns

__all__ = ["Condition", "Term", "parse_condition"]

#: A bin is probed at up to this many of its values (all of them when it has fewer).
PROBES_PER_BIN = 4096
#: Evaluate a term on at most this many probe rows (the cross product over its columns).
MAX_PROBE_ROWS = 2_000_000
#: Rows drawn uniformly from the domain to check that the condition can be evaluated.
CHECK_ROWS = 2_000


@dataclass(frozen=True)
class Term:
    """One top-level ``AND`` term of a condition (the terms on one and the same column
    joined into one)."""

    sql: str
    """The term, as polars prints it (for messages and the sidecar)."""
    columns: tuple[str, ...]
    allowed: dict[str, np.ndarray] | None = field(default=None, compare=False)
    """Per measured column: which codes can satisfy the term (boolean mask); ``None``
    when the term reads a derived column or has too many cells to probe."""


@dataclass(frozen=True)
class Condition:
    """A parsed sampling condition (see the module docstring)."""

    text: str
    terms: tuple[Term, ...]

    @property
    def expr(self) -> pl.Expr:
        """True where a row satisfies the condition (NULL -> false)."""
        return pl.sql_expr(self.text).fill_null(False)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for t in self.terms for c in t.columns))

    @property
    def method(self) -> str:
        """``exact`` when every term reads one measured column, else ``rejection``."""
        exact = all(len(t.columns) == 1 and t.allowed is not None for t in self.terms)
        return "exact" if exact else "rejection"

    def evidence(self, domain: Domain) -> dict[int, np.ndarray]:
        """Column index -> 0/1 weights over its codes: the codes every term allows."""
        out: dict[int, np.ndarray] = {}
        index = {c: j for j, c in enumerate(domain.names)}
        for t in self.terms:
            for col, mask in (t.allowed or {}).items():
                j = index[col]
                out[j] = out.get(j, np.ones(mask.size)) * mask
        return out


def _split(expr: pl.Expr) -> list[pl.Expr]:
    """The top-level ``AND`` terms of ``expr`` (itself when it is not an ``AND``)."""
    inputs = expr.meta.pop()
    if len(inputs) == 2:
        right, left = inputs
        if expr.meta.eq(left & right):
            return [*_split(left), *_split(right)]
    return [expr]


def parse_condition(text: str, schema: Schema) -> Condition:
    """Parse and check ``text`` against ``schema`` (every failure is a one-line
    :class:`UsageError`, exit 2, naming the column or the reason, never a value of the
    private table: nothing here has seen it)."""
    try:
        columns = sql_columns(text, "the condition", "--condition")
    except SchemaError as exc:
        raise UsageError(exc.message) from None
    by_name = {c.name: c for c in schema.columns}
    for col in columns:
        if col not in by_name or not by_name[col].released:
            raise UsageError(f"--condition reads column {col!r}, which is not a released "
                             "column of the bundle's schema")
    if not columns:
        raise UsageError("--condition reads no column; give a condition on released columns, "
                         "e.g. \"race = 'Asian'\"")
    _check_evaluable(text, schema)
    # terms on the same single column are probed together ("age = 25 AND age = 26" can
    # never hold, although each term can)
    single: dict[str, list[pl.Expr]] = {}
    parts: list[tuple[tuple[str, ...], pl.Expr]] = []
    for e in _split(pl.sql_expr(text)):
        cols = tuple(dict.fromkeys(e.meta.root_names()))
        if len(cols) == 1:
            single.setdefault(cols[0], []).append(e)
        else:
            parts.append((cols, e))
    parts = [((c,), functools.reduce(operator.and_, es)) for c, es in single.items()] + parts
    terms = []
    for cols, e in parts:
        allowed = _allowed_codes(e, cols, schema)
        if allowed is not None and not all(m.any() for m in allowed.values()):
            raise ConditionError(f"--condition can never hold: no value of the domain of "
                             f"{_names(cols)} satisfies {str(e)[:120]}")
        terms.append(Term(str(e), cols, allowed))
    cond = Condition(text, tuple(terms))
    domain = Domain.for_model(schema)
    for j, w in cond.evidence(domain).items():
        if not w.any():
            raise ConditionError(f"--condition can never hold: its terms on column "
                             f"{domain.names[j]!r} allow no value together")
    return cond


def _names(cols: tuple[str, ...]) -> str:
    return ", ".join(repr(c) for c in cols) if cols else "no column"


def _check_evaluable(text: str, schema: Schema) -> None:
    """Evaluate the condition on rows drawn from the public domain: it must run on the
    columns' types and give true/false."""
    domain = Domain.for_model(schema)
    rng = np.random.default_rng(0)
    codes = np.column_stack([rng.integers(0, n, CHECK_ROWS) for n in domain.sizes])
    view = rule_frame(derive(schema, domain.decode(codes, rng)))
    try:
        held = view.select(pl.sql_expr(text).alias("ok")).to_series()
    except Exception as exc:  # polars raises several types for a bad expression
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"--condition cannot be evaluated on the columns' types: "
                         f"{first[:160]}") from None
    if held.dtype != pl.Boolean:
        raise UsageError(f"--condition is not a condition (it gives {held.dtype}, not "
                         "true/false)")


def _allowed_codes(term: pl.Expr, cols: tuple[str, ...],
                   schema: Schema) -> dict[str, np.ndarray] | None:
    """Per column of ``term``, the codes for which some probe row satisfies it (the
    projection of the term's satisfying cells); ``None`` when it reads a derived
    column or its cross product of probes would exceed :data:`MAX_PROBE_ROWS`."""
    by_name = {c.name: c for c in schema.columns}
    if not cols or not all(by_name[c].measured for c in cols):
        return None
    cells = math.prod(by_name[c].domain_size for c in cols)
    if cells > MAX_PROBE_ROWS:
        return None
    per_bin = int(min(PROBES_PER_BIN, (MAX_PROBE_ROWS / cells) ** (1 / len(cols))))
    frame: pl.DataFrame | None = None
    for c in cols:
        probes = probe_values(by_name[c], per_bin=max(2, per_bin))
        probes = probes.rename({"code": f"__code_{c}", "value": c})
        frame = probes if frame is None else frame.join(probes, how="cross")
    assert frame is not None
    if frame.height > 2 * MAX_PROBE_ROWS:
        return None
    ok = rule_frame(frame).select(term.fill_null(False).alias("__ok")).to_series()
    passing = frame.filter(ok)
    return {c: np.isin(np.arange(by_name[c].domain_size),
                       passing[f"__code_{c}"].unique().to_numpy()) for c in cols}
