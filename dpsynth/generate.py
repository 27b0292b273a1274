"""Generation: draw rows from the fitted model, decode, derive, and keep only rows
that satisfy the schema's rules (post-processing of DP outputs: no budget).

:func:`generate` draws in chunks (so a large table never needs all its codes at
once beyond the released rows), decodes them to values
(:meth:`~dpsynth.domain.Domain.decode`), computes the derived columns
(:func:`~dpsynth.rules.derive`) and drops rows that break an ``error`` rule or a
derived column's implicit rule (:func:`~dpsynth.rules.constraints`), drawing more
until the requested number of rows is met. The released table is therefore a draw
from the model's distribution *conditioned on the rules*. The count of rejected
draws per rule is reported (quality report, ``--json``, datasheet).

If the rules reject nearly every draw, generation stops after
:data:`MAX_DRAW_FACTOR` times the requested rows and fails naming the rule that
rejected most (:class:`~dpsynth.errors.OutputValidationError`, exit 5). Rules that
no value of the domain satisfies are refused before any data is read
(:func:`dpsynth.rules.check_satisfiable`).

``keep`` (``dpsynth sample --condition``) is one more filter after the rules: rows
where it is not TRUE are dropped (never re-decoded, so the kept rows follow the
release's distribution conditioned on it exactly), counted in ``Generated.tested`` /
``Generated.kept``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from dpsynth.domain import Domain
from dpsynth.engines.base import Model
from dpsynth.errors import ConditionError, OutputValidationError
from dpsynth.rules import (
    Constraint,
    constraints,
    derive,
    passing,
    rule_frame,
    violations,
    warning_rules,
)
from dpsynth.schema import Schema

__all__ = ["MAX_DRAW_FACTOR", "Generated", "generate"]

#: Give up after drawing this many times the requested rows (plus a small floor).
MAX_DRAW_FACTOR = 50
#: Rows drawn at once, at most.
CHUNK_ROWS = 1_000_000
#: A row breaking a rule is decoded again from its codes this many times before it
#: is dropped (see :func:`_decode_within_rules`).
REDECODE_TRIES = 20


@dataclass(frozen=True)
class Generated:
    """The released synthetic rows, their codes, and what the rules did."""

    table: pl.DataFrame
    codes: np.ndarray
    draws: int
    """Rows drawn from the model in all (released + rejected)."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Per enforced rule: draws that broke it (a draw can break several)."""
    warnings: dict[str, int] = field(default_factory=dict)
    """Per ``warning`` rule: released rows that break it."""
    tested: int = 0
    """With ``keep``: rows that satisfied the rules and were tested against it."""
    kept: int = 0
    """With ``keep``: of those, the rows that satisfied it (some may be left out when
    more than ``n_rows`` were found)."""

    def rules_json(self, schema: Schema) -> dict[str, Any]:
        """The public summary of the rules for reports and ``--json``."""
        by_name = {r.name: r for r in schema.rules}
        enforced = [
            {"name": name, "severity": "error", "rejected_draws": n,
             "rejected_share": n / self.draws if self.draws else 0.0,
             "require": by_name[name].require if name in by_name else "",
             "description": by_name[name].description if name in by_name else ""}
            for name, n in self.rejected.items()]
        warned = [
            {"name": name, "severity": "warning", "violating_rows": n,
             "violating_share": n / self.table.height if self.table.height else 0.0,
             "require": by_name[name].require, "description": by_name[name].description}
            for name, n in self.warnings.items()]
        return {"draws": self.draws, "released_rows": self.table.height,
                "enforced": enforced, "warnings": warned}


def generate(model: Model, domain: Domain, schema: Schema, n_rows: int,
             rng: np.random.Generator, *, keep: pl.Expr | None = None,
             max_draws: int | None = None) -> Generated:
    """``n_rows`` synthetic rows satisfying every enforced rule, and ``keep`` when given
    (see module docstring). ``max_draws``: give up after drawing this many rows
    (default :data:`MAX_DRAW_FACTOR` times ``n_rows``, plus a small floor)."""
    rules = constraints(schema)
    tables: list[pl.DataFrame] = []
    codes: list[np.ndarray] = []
    rejected = dict.fromkeys((r.name for r in rules), 0)
    have = draws = tested = 0
    limit = max_draws if max_draws is not None else MAX_DRAW_FACTOR * n_rows + 10_000
    rate = 1.0
    while have < n_rows:
        if draws >= limit:
            if keep is not None and tested - have >= sum(rejected.values()):
                raise ConditionError(
                    f"the condition held in {have} of {tested} rows drawn ({have / max(tested, 1):.2g}"
                    f" of them); {draws} draws is the limit for {n_rows} rows. It has almost no "
                    "mass under the model: write it as an AND of conditions on single columns so "
                    "that it is sampled exactly, or ask for fewer rows")
            worst = max(rejected, key=lambda k: rejected[k])
            raise OutputValidationError(
                f"rule {worst!r} rejected {rejected[worst]} of {draws} generated rows: the "
                f"model puts almost no mass where the rules hold ({have} of {n_rows} rows "
                "found). Check the rule against the data's documentation")
        want = n_rows - have
        batch = min(CHUNK_ROWS, max(want, math.ceil(want / max(rate, 1e-3) * 1.1) + 16),
                    limit - draws)
        c = model.sample(batch, rng)
        draws += batch
        t, c = _decode_within_rules(domain, schema, rules, c, rng, rejected)
        if keep is not None:
            tested += t.height
            ok = rule_frame(t).select(keep.fill_null(False)).to_series().to_numpy()
            t, c = t.filter(pl.Series(ok)), c[ok]
        tables.append(t)
        codes.append(c)
        have += t.height
        rate = max(have / draws, 1e-6)
    table = pl.concat(tables, how="vertical") if len(tables) > 1 else tables[0]
    all_codes = np.concatenate(codes) if len(codes) > 1 else codes[0]
    if table.height > n_rows:  # a uniform subset: rows redecoded last are not favoured
        subset = np.sort(rng.choice(table.height, n_rows, replace=False))
        table, all_codes = table[subset], all_codes[subset]
    return Generated(table=table, codes=all_codes, draws=draws, rejected=rejected,
                     warnings=violations(table, warning_rules(schema)), tested=tested,
                     kept=have if keep is not None else 0)


def _decode_within_rules(domain: Domain, schema: Schema, rules: tuple[Constraint, ...],
                         c: np.ndarray, rng: np.random.Generator, rejected: dict[str, int]
                         ) -> tuple[pl.DataFrame, np.ndarray]:
    """Decode sampled codes to rows that satisfy ``rules``, in row order.

    A value inside a bin carries no information (it is drawn uniformly), so a row
    that breaks a rule is first decoded again from the *same codes*, up to
    :data:`REDECODE_TRIES` times: the model's distribution over cells is kept, and
    only the within-bin draws are conditioned on the rules. Rows still breaking a
    rule are dropped (their cell admits few or no values satisfying it), and
    counted in ``rejected`` per rule they break."""
    t = derive(schema, domain.decode(c, rng))
    if not rules:
        return t, c
    good = passing(t, rules)
    pieces, positions = [t.filter(pl.Series(good))], [np.flatnonzero(good)]
    pending, failed = np.flatnonzero(~good), t.filter(pl.Series(~good))
    for _ in range(REDECODE_TRIES):
        if pending.size == 0:
            break
        again = derive(schema, domain.decode(c[pending], rng))
        good = passing(again, rules)
        pieces.append(again.filter(pl.Series(good)))
        positions.append(pending[good])
        pending, failed = pending[~good], again.filter(pl.Series(~good))
    if pending.size:
        for name, n in violations(failed, rules).items():
            rejected[name] += n
    order = np.argsort(np.concatenate(positions), kind="stable")
    rows = pl.concat(pieces, how="vertical")[order]
    return rows, c[np.sort(np.concatenate(positions))]
