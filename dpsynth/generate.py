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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from dpsynth.domain import Domain
from dpsynth.engines.base import Model
from dpsynth.errors import OutputValidationError
from dpsynth.rules import constraints, derive, passing, violations, warning_rules
from dpsynth.schema import Schema

__all__ = ["MAX_DRAW_FACTOR", "Generated", "generate"]

#: Give up after drawing this many times the requested rows (plus a small floor).
MAX_DRAW_FACTOR = 50
#: Rows drawn at once, at most.
CHUNK_ROWS = 1_000_000


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
             rng: np.random.Generator) -> Generated:
    """``n_rows`` synthetic rows satisfying every enforced rule (see module docstring)."""
    rules = constraints(schema)
    tables: list[pl.DataFrame] = []
    codes: list[np.ndarray] = []
    rejected = dict.fromkeys((r.name for r in rules), 0)
    have = draws = 0
    limit = MAX_DRAW_FACTOR * n_rows + 10_000
    rate = 1.0
    while have < n_rows:
        if draws >= limit:
            worst = max(rejected, key=lambda k: rejected[k])
            raise OutputValidationError(
                f"rule {worst!r} rejected {rejected[worst]} of {draws} generated rows: the "
                f"model puts almost no mass where the rules hold ({have} of {n_rows} rows "
                "found). Check the rule against the data's documentation")
        want = n_rows - have
        batch = min(CHUNK_ROWS, max(want, math.ceil(want / max(rate, 1e-3) * 1.1) + 16),
                    limit - draws)
        c = model.sample(batch, rng)
        t = derive(schema, domain.decode(c, rng))
        draws += batch
        if rules:
            for name, n in violations(t, rules).items():
                rejected[name] += n
            keep = passing(t, rules)
            t, c = t.filter(pl.Series(keep)), c[keep]
        tables.append(t)
        codes.append(c)
        have += t.height
        rate = max(have / draws, 1e-6)
    table = pl.concat(tables, how="vertical") if len(tables) > 1 else tables[0]
    all_codes = np.concatenate(codes) if len(codes) > 1 else codes[0]
    table, all_codes = table.head(n_rows), all_codes[:n_rows]
    return Generated(table=table, codes=all_codes, draws=draws, rejected=rejected,
                     warnings=violations(table, warning_rules(schema)))
