"""Drafting a table schema from DP measurements: the public half of ``dpsynth schema draft``.

Owns: the public facts every draft uses (:data:`MISSING_TOKENS`, the cell
:data:`CLASSES`, the magnitude buckets, the date format), the draft's settings
(:class:`DraftConfig`), how its budget is split across columns and steps, every
decision taken from the noisy answers (kind, missing tokens, categories, bounds,
bins, precision, atoms, the suggested contribution bound), and the YAML text with
a comment on every proposed value (:func:`render`).

Everything here is post-processing of DP outputs and public metadata (column names,
Parquet types): :func:`propose` gets a draft session
(:class:`dpsynth.privacy.draft_session.DraftSession`), never the table, and asks it
for noisy answers, each charged before it is returned.

Must not: import the private modules (``dpsynth.io``, the sessions, the mechanisms),
read the table, or draw noise.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Protocol

import numpy as np

from dpsynth.code_systems import ICD9, ICD10, CodeSystem, category_group, chapter_groups
from dpsynth.errors import UsageError
from dpsynth.privacy.accountant import ApproxDP, epsilon_for
from dpsynth.schema import Column, bin_values_exist

__all__ = [
    "CLASSES",
    "DATE_FORMAT",
    "DEFAULT_DRAFT_DELTA",
    "DEFAULT_DRAFT_EPSILON",
    "MISSING_TOKENS",
    "OTHER",
    "ColumnDraft",
    "Draft",
    "DraftConfig",
    "magnitude_edges",
    "propose",
    "render",
]

DEFAULT_DRAFT_EPSILON = 0.1
"""A draft only has to get the schema's shape right (kinds, frequent categories, rough
bounds); a small epsilon leaves almost all of a dataset's budget for the releases,
which compose with the draft in the ledger."""
DEFAULT_DRAFT_DELTA = 1e-10
"""A tenth of a dataset's default total delta (1e-9): half of a draft's delta is spent
outside rho (key selection), which the dataset's later releases then cannot use."""
MISSING_TOKENS: tuple[str, ...] = ("?", "NA", "N/A", "NULL", "-", "")
"""The public list of candidate missing-value tokens (exact cell text)."""
CLASSES: tuple[str, ...] = ("null", *(f"token:{t}" for t in MISSING_TOKENS), "integer",
                            "float", "date", "words", "code", "other")
"""Every cell is in exactly one class, tested in this order (a token before a number);
``words``: other text with whitespace inside (free text rather than an id); ``code``: a
diagnosis code with a letter (ICD-9 ``V57``, ``E885``; ICD-10 ``E11.9``, see
:mod:`dpsynth.code_systems`)."""
DATE_FORMAT = "%Y-%m-%d"
"""The date format the draft recognises (ISO 8601 dates); it is written into the schema."""
DECADES = tuple(range(-3, 13))
"""Magnitude buckets: |x| in [10^d, 10^(d+1)) for these d, each sign, and |x| < 1e-3."""
YEARS = (1800, 2200)
"""Dates: years counted in 5-year cells over this range (clipped at its ends)."""
PRECISIONS = (1.0, 0.1, 0.01, 0.001)
"""Decimal grids a float column's values are tested on (coarsest first)."""
OTHER = "Other"
"""The category a draft proposes for values its key selection did not keep."""
MAX_CATEGORIES = 1000
"""At most this many categories per column (the most frequent, by noisy count)."""
_I = {name: i for i, name in enumerate(CLASSES)}
_TOKENS = slice(1, 1 + len(MISSING_TOKENS))
_PRESENT = [_I["integer"], _I["float"], _I["date"], _I["words"], _I["code"], _I["other"]]
_WHOLE_BINS = 100
"""A whole-number column whose bounds hold at most this many numbers gets a bin per number:
it may hold codes rather than amounts, and decoding inside a wider bin would invent
values no one has."""
_NUMERIC_SHARE = 0.5
"""A CSV column is drafted as numbers when at least this share of its present cells read
as numbers; the rest (a token such as ``N``, rare codes) become null (``on_unreadable``)."""
_Z = 3.0
"""A noisy count is taken as evidence of something only above this many noise sigmas."""


def magnitude_edges() -> list[tuple[float, float]]:
    """The public value range of each magnitude bucket, in bucket order."""
    out = [(-(10.0 ** (d + 1)), -(10.0 ** d)) for d in reversed(DECADES)]
    out.append((-1e-3, 1e-3))
    out += [(10.0 ** d, 10.0 ** (d + 1)) for d in DECADES]
    return out


@dataclass(frozen=True, kw_only=True)
class DraftConfig:
    """Settings of one ``dpsynth schema draft`` (validated on construction)."""

    input_path: Path
    """The private table (CSV, gzip CSV or Parquet)."""
    out_path: Path
    """Where the YAML draft is written (must not exist yet)."""
    ledger_url: str
    """The ledger the draft is charged to."""
    dataset_id: str
    """The ledger's dataset (the draft composes with its releases); also the schema name."""
    epsilon: float = DEFAULT_DRAFT_EPSILON
    """The draft's whole epsilon, split across columns."""
    delta: float = DEFAULT_DRAFT_DELTA
    """The draft's whole delta: half for key selection's thresholds, half for rho."""
    unit_column: str | None = None
    """The patient id column (the privacy unit); ``None``: each row is a unit."""
    max_rows: int | None = None
    """k, rows kept per patient while drafting; ``None``: 1 (and a suggestion is made)."""
    draft_id: str | None = None
    """The ledger entry's id (default ``schema-draft-<dataset>-<day>-<random>``)."""
    allow_shared_input: bool = False
    """As for releases: the same file already charged under another dataset id."""
    bounding_secret: bytes | int | None = field(default=None, repr=False)
    """TESTS AND BENCHMARKS: a fixed bounding secret (safe, see ``io.bounding``)."""

    def __post_init__(self) -> None:
        ApproxDP(self.epsilon, self.delta)  # epsilon > 0 finite, delta in (0, 1)
        if self.max_rows is not None:
            if self.unit_column is None:
                raise UsageError("--max-rows needs --unit-column (the patient id column)")
            if isinstance(self.max_rows, bool) or not 1 <= int(self.max_rows) <= 1000:
                raise UsageError(f"max rows ({self.max_rows}) must be between 1 and 1000")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", self.dataset_id or ""):
            raise UsageError(f"dataset id ({self.dataset_id!r}) must be 1-64 letters, digits, "
                             "'_', '.' or '-' (it is also the draft schema's name)")

    @property
    def budget(self) -> ApproxDP:
        return ApproxDP(self.epsilon, self.delta)

    @property
    def threshold_delta(self) -> float:
        """The delta key selection may spend (outside rho)."""
        return self.delta / 2

    @property
    def contribution_bound(self) -> int:
        return int(self.max_rows) if self.max_rows is not None else 1


class Session(Protocol):
    """What :func:`propose` asks of a draft session (``DraftSession`` fits)."""

    @property
    def remaining(self) -> Any: ...
    @property
    def total(self) -> Any: ...
    @property
    def delta_remaining(self) -> float: ...
    def classes(self, column: str, rho: float, step: str) -> Any: ...
    def distinct(self, column: str, rho: float, step: str) -> Any: ...
    def magnitudes(self, column: str, kind: str, rho: float, step: str) -> Any: ...
    def grid(self, column: str, kind: str, origin: float, width: float, n: int, rho: float,
             step: str) -> Any: ...
    def exact(self, column: str, kind: str, precisions: Sequence[float], rho: float,
              step: str) -> Any: ...
    def rows_per_patient(self, cap: int, rho: float, step: str) -> Any: ...
    def cells(self, column: str, kind: str, edges: Sequence[float], rho: float,
              step: str) -> Any: ...
    def keys(self, column: str, rho: float, delta: float, step: str, *,
             exclude: Sequence[str] = (), non_numeric_only: bool = False
             ) -> tuple[dict[str, float], float]: ...
    def code_forms(self, column: str, rho: float, step: str) -> Any: ...
    def outside(self, column: str, kept: Sequence[str], exclude: Sequence[str], rho: float,
                step: str) -> Any: ...
    def code_categories(self, column: str, system: str, rho: float, delta: float, step: str
                        ) -> tuple[dict[str, float], float]: ...


@dataclass
class ColumnDraft:
    """One column of the draft: its YAML fields in order, each with its comment."""

    name: str
    kind: str = "text"
    fields: list[tuple[str, Any, str]] = field(default_factory=list)
    rho: float = 0.0
    note: str = ""

    def put(self, key: str, value: Any, comment: str = "") -> None:
        self.fields.append((key, value, comment))


@dataclass
class Draft:
    """A proposed schema: public facts and DP outputs only."""

    name: str
    source: str
    epsilon: float
    delta: float
    draft_id: str
    unit_column: str | None
    max_rows: int
    max_rows_comment: str
    columns: list[ColumnDraft]
    suggested_max_rows: int | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "columns": {c.name: c.kind for c in self.columns},
            "released_columns": sum(c.kind not in ("identifier", "text") for c in self.columns),
            "privacy_unit": {"column": self.unit_column, "max_rows": self.max_rows,
                             "suggested_max_rows": self.suggested_max_rows},
        }


# -- the plan ----------------------------------------------------------------------------


@dataclass
class _Column:
    """What phase one learnt about a column (noisy, public)."""

    name: str
    counts: np.ndarray
    sigma: float
    distinct: float
    parquet: str | None
    plan: str = ""
    kind: str = ""
    rho: float = 0.0
    eps_note: str = ""
    candidate: str = ""
    """A public code system this column may hold (``icd9``, ``icd10``): tested by
    :func:`_code_test` before its plan is measured."""
    system: CodeSystem | None = None
    forms: tuple[np.ndarray, float] | None = None
    """The noisy code forms and their sigma (a candidate's test)."""

    @property
    def rows(self) -> float:
        return max(1.0, float(np.clip(self.counts, 0, None).sum()))

    def share(self, *names: str) -> float:
        present = max(1.0, float(np.clip(self.counts[_PRESENT], 0, None).sum()))
        return float(sum(max(0.0, self.counts[_I[n]]) for n in names)) / present


def propose(session: Session, header: Sequence[str], parquet_types: dict[str, str] | None,
            cfg: DraftConfig, draft_id: str, say: Callable[[str], None] = lambda _m: None
            ) -> Draft:
    """Measure and decide every column of the draft, then the privacy unit.

    Budget: 5% of rho for rows per patient (2% when k is given; with a patient id column);
    15% for phase one (each column's cell classes and distinct values); the rest split over
    the columns phase one found worth measuring by :data:`_WEIGHTS` (categories; code
    forms and code categories; bounds, bins, precision and atoms), what a number column
    with a bin per whole number does not need going to the columns measured after it.
    Key selection's delta is split equally over its uses."""
    unit = cfg.unit_column
    names = [c for c in header if c != unit]
    rho = float(session.total.rho)
    k_given = cfg.max_rows
    suggested: int | None = None
    max_rows_comment = ""
    if unit is not None:
        say("measuring rows per patient")
        k_rho = (_K_SHARE if k_given is None else _K_SHARE_GIVEN) * rho
        suggested = _suggest_k(session, k_rho)
        if k_given is None:
            max_rows_comment = (f"DP estimate (eps={_eps(k_rho, cfg.delta)}): 90% of patients "
                                f"have at most {suggested} row(s); review. The draft itself was "
                                "measured with 1 row per patient")
        else:
            max_rows_comment = (f"given by you (--max-rows); DP estimate (eps="
                                f"{_eps(k_rho, cfg.delta)}): 90% of patients have at most "
                                f"{suggested} row(s)")
    per = _PHASE_ONE * rho / max(1, len(names))
    cols: list[_Column] = []
    for i, name in enumerate(names, start=1):
        say(f"column {i}/{len(names)} {name!r}: cell classes and distinct values")
        cls = session.classes(name, 0.75 * per, f"draft:{name}:classes")
        dist = session.distinct(name, 0.25 * per, f"draft:{name}:distinct")
        col = _Column(name, np.asarray(cls.counts, dtype=np.float64), float(cls.sigma),
                      float(dist.counts[0]), (parquet_types or {}).get(name), rho=per)
        _decide(col)
        cols.append(col)
    by_name = {c.name: c for c in cols}
    work = [c for c in cols if c.plan in _WEIGHTS]
    weights = {c.name: _CODE_WEIGHT if c.candidate else _WEIGHTS[c.plan] for c in work}
    pool = float(session.remaining.rho) * (1 - 1e-9)
    total_w = sum(weights.values()) or 1.0
    n_keys = sum(c.plan in ("categorical", "numeric") for c in work) or 1  # code: numeric
    key_delta = session.delta_remaining / n_keys * (1 - 1e-9)
    shares = {c.name: pool * weights.get(c.name, 0.0) / total_w for c in cols}
    for c in work:
        if c.candidate:
            say(f"column {c.name!r}: code forms")
            spent = _FORMS_SHARE * shares[c.name]
            _code_test(session, c, spent)
            c.rho += spent
            shares[c.name] -= spent
    numeric: dict[str, _NumPlan] = {}
    for c in work:
        if c.plan == "numeric":
            say(f"column {c.name!r}: range and precision")
            numeric[c.name] = _numeric_plan(session, c, shares[c.name], cfg)
    # a number column with a bin per whole number needs no grid or atoms: its unspent share
    # goes to the columns measured after the numbers (key selection gains the most)
    spare = sum((1 - _MAG_SHARE - _EXACT_SHARE) * shares[n] for n, p in numeric.items()
                if p.whole_range)
    later = {c.name: weights[c.name] for c in work if c.plan in ("categorical", "code", "date")}
    for name, w in later.items():
        shares[name] += spare * w / (sum(later.values()) or 1.0)
    out: list[ColumnDraft] = []
    for i, name in enumerate(header, start=1):
        if name == unit:
            d = ColumnDraft(name, "identifier")
            d.put("description", "the patient id: the privacy unit",
                  "given by you (--unit-column); never released")
            out.append(d)
            continue
        col = by_name[name]
        share = shares[name]
        say(f"column {i}/{len(header)} {name!r}: {col.plan or col.kind}")
        if col.plan == "categorical":
            d = _categorical(session, col, share, key_delta, cfg)
        elif col.plan == "code":
            d = _code(session, col, share, key_delta, cfg)
        elif name in numeric:
            d = _numeric_finish(session, col, numeric[name], key_delta, cfg)
        elif col.plan == "date":
            d = _date(session, col, share, cfg)
        else:
            d = _not_released(col, cfg)
        d.rho = col.rho + share
        out.append(d)
    return Draft(name=cfg.dataset_id, source=cfg.input_path.name, epsilon=cfg.epsilon,
                 delta=cfg.delta, draft_id=draft_id, unit_column=unit,
                 max_rows=cfg.contribution_bound if k_given is not None or unit is None
                 else max(1, suggested or 1),
                 max_rows_comment=max_rows_comment, columns=out, suggested_max_rows=suggested)


def _decide(col: _Column) -> None:
    """The column's kind and what phase two measures, from phase one's noisy answers."""
    present = float(np.clip(col.counts[_PRESENT], 0, None).sum())
    ratio = col.distinct / col.rows
    if present < 2 * _Z * col.sigma:
        col.kind, col.plan = "text", ""
        col.eps_note = "almost every cell is missing or the table is too small to tell"
        return
    numeric = col.parquet in ("integer", "float") or (
        col.parquet in (None, "string") and col.share("integer", "float") >= _NUMERIC_SHARE)
    if numeric:
        n_float = float(col.counts[_I["float"]])
        whole = col.parquet == "integer" or (col.parquet != "float" and n_float <= max(
            _Z * col.sigma, 0.01 * float(col.counts[_I["integer"]] + n_float)))
        col.kind = "integer" if whole else "float"
        if whole and ratio >= 0.9:
            col.kind, col.plan = "identifier", ""
            col.eps_note = "nearly every row has its own whole number (id-like)"
            return
        col.plan = "numeric"
        # short numbers mixed with decimals or lettered codes may be ICD-9 codes (428, 250.83,
        # V57): a low bar here, the code-form test decides
        if col.parquet in (None, "string") and \
                col.counts[_I["float"]] + col.counts[_I["code"]] >= col.sigma * math.sqrt(2):
            col.candidate = "icd9"
        return
    if col.parquet in ("date", None, "string") and col.share("date") >= 0.9:
        col.kind, col.plan = "date", "date"
        return
    if col.parquet == "datetime":
        col.kind, col.plan = "text", ""
        col.eps_note = "a timestamp column: the draft does not propose datetime bounds"
        return
    if ratio >= 0.5 and col.share("words") >= 0.5:
        col.kind, col.plan = "text", ""
        col.eps_note = "most rows have their own value, mostly words (free text-like)"
    elif ratio >= 0.9:
        col.kind, col.plan = "identifier", ""
        col.eps_note = "nearly every row has its own value (id-like)"
    elif ratio >= 0.5:
        col.kind, col.plan = "text", ""
        col.eps_note = "most rows have their own value (free text-like)"
    else:
        col.kind, col.plan = "categorical", "categorical"
        if col.share("code") >= 0.5:  # mostly lettered codes (E11.9, I10): maybe ICD-10
            col.candidate = "icd10"


def _eps(rho: float, delta: float) -> str:
    return f"{epsilon_for(rho, delta):.2g}" if rho > 0 else "0"


def _review(col: _Column, rho: float, delta: float) -> str:
    return f"DP estimate (eps={_eps(rho, delta)}), review"


def _missing_comment(col: _Column) -> str:
    missing = float(np.clip(col.counts[[_I["null"], *range(_TOKENS.start, _TOKENS.stop)]],
                            0, None).sum())
    share = missing / col.rows
    if missing < _Z * col.sigma:
        return ("no missing cells detected (DP estimate); kept nullable so that a rare missing "
                "cell cannot stop a release; set false if the documentation says never missing")
    return f"about {100 * share:.1f}% of cells missing (DP estimate); review"


def _tokens_seen(col: _Column) -> list[str]:
    return [t for t, n in zip(MISSING_TOKENS, col.counts[_TOKENS], strict=True)
            if n >= _Z * col.sigma]


def _common(d: ColumnDraft, col: _Column, tokens: list[str], token_comment: str,
            ood: str, delta: float) -> None:
    d.put("nullable", True, _missing_comment(col))
    d.put("missing_tokens", tokens, token_comment)
    d.put("on_out_of_domain", ood, {
        "null": "rarer values become null (missing); values the documentation lists can be "
                "added above",
        "other": f"rarer values are released as {OTHER!r}; values the documentation lists can "
                 "be added above",
        "clamp": "values beyond the bounds are moved onto them"}[ood])


def _categorical(session: Session, col: _Column, rho: float, key_delta: float,
                 cfg: DraftConfig) -> ColumnDraft:
    tokens = _tokens_seen(col)
    keys, threshold = session.keys(col.name, (1 - _OUTSIDE_SHARE) * rho, key_delta,
                                   f"draft:{col.name}:categories", exclude=tokens)
    note = _review(col, col.rho + rho, cfg.delta)
    top = sorted(keys, key=lambda v: -keys[v])[:MAX_CATEGORIES]
    if not top:
        d = ColumnDraft(col.name, "text")
        d.put("description", "fill in from documentation",
              f"no value is held by enough patients to be released by DP key selection "
              f"(noisy count >= {threshold:.0f}); write the categories from the documentation "
              f"and make this column categorical, or leave it unreleased ({note})")
        return d
    # rows outside the kept values, counted afresh: the kept keys' own noisy counts are
    # biased upwards (they are the ones noise pushed over the threshold), so the present
    # count minus them would hide the rest
    out = session.outside(col.name, top, tokens, _OUTSIDE_SHARE * rho,
                          f"draft:{col.name}:outside")
    rest = float(out.counts[0])
    other = rest >= _Z * float(out.sigma)
    present = max(1.0, float(np.clip(col.counts[_PRESENT], 0, None).sum()))
    cats = _natural(top)
    d = ColumnDraft(col.name, "categorical")
    d.put("description", "fill in from documentation", "fill in from documentation")
    d.put("categories", cats + ([OTHER] if other and OTHER not in cats else []),
          f"{note}: DP key selection kept the values at least about {threshold:.0f} patients "
          "hold; rarer values must come from the documentation"
          + (f"; the rest (about {100 * rest / max(present, 1.0):.1f}% of values, DP estimate) "
             f"are released as {OTHER!r}" if other else
             f"; no clear share of other values (DP estimate): any would become null (or "
             f"write on_out_of_domain: other to release them as {OTHER!r})"))
    _common(d, col, tokens, f"{note}: tokens of the public list seen in this column"
            if tokens else f"{note}: none of the public missing tokens is frequent here",
            "other" if other else "null", cfg.delta)
    if other:
        d.put("other_category", OTHER, "values not listed above are released as this category "
              "(a value the table itself writes as this text joins it)")
    return d


_K_SHARE, _K_SHARE_GIVEN = 0.05, 0.02
"""Of the draft's rho: rows per patient, when the draft proposes k (none given) / when k
is given (the histogram then only backs a suggestion)."""
_PHASE_ONE = 0.15
"""Of the draft's rho: every column's cell classes and distinct values (kinds need only
shares of a column, so this stays small)."""
_WEIGHTS = {"categorical": 2.0, "numeric": 1.0, "date": 0.5}
"""Shares of the rest per plan: key selection gets the most (its threshold falls with the
square root of its rho, and every value it drops is lost to the release)."""
_OUTSIDE_SHARE = 0.1
"""Of a categorical column's share: the count of values outside the kept keys."""
_FORMS_SHARE = 0.3
"""Of a code candidate's share: the code-form test (the rest selects its categories)."""
_CODE_WEIGHT = 2.5
"""A code candidate's weight (:data:`_WEIGHTS`): a categorical column's and its code-form
test."""
_APART = 0.05
"""A 3-character code category holding at least this share of a code column's values
(DP estimate) is kept apart from its chapter (as a number column's atom is)."""


def _code_test(session: Session, col: _Column, rho: float) -> None:
    """Is the candidate a column of a public code system? Decided from a DP count of its
    present cells' code forms (:data:`dpsynth.code_systems.CODE_FORMS`)."""
    f = session.code_forms(col.name, rho, f"draft:{col.name}:code-forms")
    counts = np.asarray(f.counts, dtype=np.float64)
    s = float(f.sigma)
    present = max(1.0, float(np.clip(counts, 0, None).sum()))
    number, decimal, letter, icd10, other = (float(x) for x in counts)
    if col.candidate == "icd9":
        # many 1-3 digit codes (a column of decimals is a measurement), clearly some with a
        # decimal part or a V/E letter, and (almost) nothing outside the ICD-9 pattern
        ok = (number >= 0.2 * present and decimal + letter >= _Z * s * math.sqrt(2)
              and decimal + letter >= 0.01 * present
              and icd10 + other <= 0.05 * present + _Z * s * math.sqrt(2))
        system = ICD9
    else:
        ok = (icd10 >= _Z * s and icd10 + letter >= 0.9 * present
              and number + decimal + other <= 0.1 * present + _Z * s * math.sqrt(3))
        system = ICD10
    if ok:
        col.kind, col.plan, col.system, col.forms = "code", "code", system, (counts, s)


def _code(session: Session, col: _Column, rho: float, key_delta: float,
          cfg: DraftConfig) -> ColumnDraft:
    assert col.system is not None and col.forms is not None
    system = col.system
    counts, _sigma = col.forms
    present = max(1.0, float(np.clip(counts, 0, None).sum()))
    matching = {"icd9": counts[:3].sum(), "icd10": counts[2:4].sum()}[system.key] / present
    cats, threshold = session.code_categories(col.name, system.key, rho, key_delta,
                                              f"draft:{col.name}:code-categories")
    apart = sorted((c for c, n in cats.items() if n >= _APART * present),
                   key=lambda c: -cats[c])
    note = _review(col, col.rho + rho, cfg.delta)
    d = ColumnDraft(col.name, "code")
    d.put("description", "fill in from documentation", "fill in from documentation")
    d.put("system", system.system,
          f"{note}: about {100 * min(1.0, matching):.0f}% of present values have the form of "
          f"{system.key.upper()} codes; check the documentation")
    d.put("pattern", system.pattern, f"the public pattern of {system.key.upper()} codes; "
          "a value breaking it becomes null (on_unreadable)")
    d.put("groups", [category_group(system, c) for c in apart] + chapter_groups(system),
          "the standard chapters of the public classification (first match wins)"
          + (f"; before them, {len(apart)} frequent categor{'y' if len(apart) == 1 else 'ies'} "
             f"(3 characters) each holding at least {100 * _APART:.0f}% of values ({note}: DP key selection, "
             f"threshold about {threshold:.0f} patients)" if apart else ""))
    tokens = _tokens_seen(col)
    _common(d, col, tokens, f"{note}: tokens of the public list seen in this column"
            if tokens else f"{note}: none of the public missing tokens is frequent here", "null",
            cfg.delta)
    d.put("on_unreadable", "null", "rare text that is not a code becomes null; set reject to "
          "refuse the table instead")
    return d


def _natural(values: list[str]) -> list[str]:
    def key(v: str) -> tuple[int, float, str]:
        try:
            return (0, float(v), v)
        except ValueError:
            return (1, 0.0, v)
    return sorted(values, key=key)


def _nice(x: float, integer: bool) -> float:
    """The smallest of 1, 2, 5 x 10^j at least ``x`` (whole numbers for integers)."""
    if x <= 0:
        return 1.0
    e = math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        step = m * 10.0 ** e
        if step >= x * (1 - 1e-12):
            return max(1.0, round(step)) if integer else float(f"{step:.12g}")
    return 10.0 ** (e + 1)


def _quantile_cell(noisy: np.ndarray, alpha: float) -> int:
    cum = np.maximum.accumulate(np.cumsum(noisy))
    total = cum[-1]
    if total <= 0:
        return int(np.argmax(noisy)) if alpha < 0.5 else len(noisy) - 1
    return int(np.searchsorted(cum, alpha * total, side="left").clip(0, len(noisy) - 1))


@dataclass
class _NumPlan:
    """A number column between its first answers (range, precision) and its grid."""

    rho: float
    precision: float | None
    zero_share: float
    grid: tuple[float, float, int]
    """``(origin, width, cells)``."""
    whole_range: bool = False
    """Whole numbers within one decade: the bounds are the decades', a bin per number."""
    edges: tuple[float, ...] = ()
    """The public cells counted for bounds and quantiles (an equal grid or 1-2-5 steps)."""
    read: float = 1.0
    """Values read as the kind (noisy, at least 1)."""


_DATE_GRID = (float(YEARS[0]), 5.0, (YEARS[1] - YEARS[0]) // 5)
_MAG_SHARE, _EXACT_SHARE, _GRID_SHARE, _ATOM_SHARE = 0.3, 0.15, 0.35, 0.2
_ATOM = 0.05
"""A value held by at least this share of a binned column's values (DP key selection)
is proposed as an atom: its own cell, decoded exactly (a top code, a common amount)."""
_QUANTILES = 20
"""Bins: the 5% quantiles (rounded to the measured grid)."""
_FALSE_ALARM = 1e-3
"""Chance, per column, that noise alone lifts one of its empty ranges (a magnitude bucket, a
5-year span) over the bar of :func:`_evident` and so stretches the drafted bounds. The bar
grows with the number of cells: about 4.0 sigmas for the 33 magnitude buckets and 4.2 for
the 80 date spans. A fixed 3.5 sigmas stretched one column in about 130 (buckets) or 55
(spans), and a 10-year date column then drafted as yearly."""


def _evident(counts: np.ndarray, sigma: float) -> np.ndarray:
    """Which noisy counts show that their range holds values: above the one-sided normal
    quantile ``1 - _FALSE_ALARM / len(counts)`` in sigmas (a Bonferroni bar, so that all
    empty cells together stay under :data:`_FALSE_ALARM`). Public: a function of noisy
    counts and their public sigma only."""
    z = NormalDist().inv_cdf(1.0 - _FALSE_ALARM / max(len(counts), 1))
    return np.asarray(counts) >= z * sigma


def _numeric_plan(session: Session, col: _Column, rho: float, cfg: DraftConfig) -> _NumPlan:
    kind = col.kind
    integer = kind == "integer"
    left = rho
    mags = session.magnitudes(col.name, kind, _MAG_SHARE * left, f"draft:{col.name}:magnitudes")
    m = np.asarray(mags.counts)
    edges = magnitude_edges()
    kept = np.flatnonzero(_evident(m, mags.sigma))
    if kept.size == 0:
        kept = np.asarray([int(np.argmax(m))])
    lo_range, hi_range = edges[int(kept[0])][0], edges[int(kept[-1])][1]
    precision: float | None = 1.0 if integer else None
    exact = session.exact(col.name, kind, () if integer else PRECISIONS, _EXACT_SHARE * left,
                          f"draft:{col.name}:exact")
    e = np.asarray(exact.counts)
    read = max(float(e[0]), 1.0)
    if not integer:
        slack = _Z * exact.sigma * math.sqrt(2)  # noise of read - on_grid
        for p, n in zip(PRECISIONS, e[2:], strict=True):
            if read - n <= 0.02 * read + slack:
                precision = p
                break
    if integer and hi_range - lo_range <= 41:  # one decade (and zero): a bin per number
        # counts (children, visits, codes 1-9) so often hold 0 that a small column starting
        # at 1 gets the bin for 0 too (a public choice: one cell, empty if 0 never occurs);
        # the noisy zero count alone is too weak to show a few percent of zeros
        lo_i = 0 if lo_range == 1.0 else math.ceil(lo_range)
        hi_i = max(math.ceil(hi_range) - 1, lo_i + 1)  # bounds must increase
        return _NumPlan(rho=rho, precision=precision, zero_share=max(0.0, float(e[1])) / read,
                        grid=(float(lo_i), 1.0, max(1, hi_i - lo_i + 1)), whole_range=True)
    zero_share = max(0.0, float(e[1])) / read
    if e[1] >= _Z * exact.sigma:  # exact zeros: the range holds 0
        lo_range, hi_range = min(lo_range, 0.0), max(hi_range, 0.0)
    mass = np.where(_evident(m, mags.sigma), m, 0.0)
    if mass.max() < 0.7 * mass.sum():  # spread over decades (incomes, counts): 1-2-5 cells
        cuts = _log_edges(lo_range, hi_range, integer, precision)
        if len(cuts) >= 3:
            return _NumPlan(rho=rho, precision=precision, zero_share=zero_share,
                            grid=(0.0, 0.0, 0), edges=cuts, read=read)
    grid_rho = _GRID_SHARE * left
    sigma_g = cfg.contribution_bound / math.sqrt(2 * grid_rho)
    cells = int(np.clip(read / (4 * sigma_g), 10, 200))
    width = _nice((hi_range - lo_range) / cells, integer)
    if precision is not None and width < precision:
        width = precision
    origin = float(f"{math.floor(lo_range / width) * width:.12g}")
    n = int(min(100_000, max(1, math.ceil((hi_range - origin) / width))))
    cuts = tuple(float(f"{origin + i * width:.12g}") for i in range(n + 1))
    return _NumPlan(rho=rho, precision=precision, zero_share=zero_share, grid=(origin, width, n),
                    edges=cuts, read=read)


_MANTISSAS = (1, 1.5, 2, 3, 5, 7)
"""Cells of a column spread over decades: about six a decade, so that its 5% quantiles
are not all rounded onto the same few edges."""


def _log_edges(lo: float, hi: float, integer: bool, precision: float | None
               ) -> tuple[float, ...]:
    """Public cell edges 0, +-1, 1.5, 2, 3, 5, 7 x 10^d inside ``[lo, hi]`` (whole numbers
    for integers, multiples of ``precision``)."""
    steps = [m * 10.0 ** d for d in DECADES for m in _MANTISSAS] + [10.0 ** (DECADES[-1] + 1)]
    cand = {0.0, lo, hi, *steps, *(-x for x in steps)}
    out = []
    for x in sorted(cand):
        x = float(f"{x:.12g}")
        if not lo <= x <= hi:
            continue
        if integer and not x.is_integer():
            continue
        if precision is not None and not math.isclose(round(x / precision) * precision, x,
                                                      rel_tol=1e-9, abs_tol=1e-12):
            continue
        out.append(x)
    return tuple(sorted(set(out)))


def _numeric_finish(session: Session, col: _Column, plan: _NumPlan, key_delta: float,
                    cfg: DraftConfig) -> ColumnDraft:
    kind = col.kind
    integer = kind == "integer"
    origin, width, n = plan.grid
    note = _review(col, col.rho + plan.rho, cfg.delta)
    if plan.whole_range:
        d = ColumnDraft(col.name, kind)
        d.put("description", "fill in from documentation", "fill in from documentation")
        lo, hi = _num(origin), _num(origin + n - 1)
        d.put("bounds", [lo, hi], f"{note}: the decades of magnitude that hold values")
        d.put("bin_width", 1, f"{note}: one bin per whole number in the bounds")
        _common(d, col, list(MISSING_TOKENS), _PUBLIC_TOKENS, "clamp", cfg.delta)
        if col.parquet is None:
            d.put("on_unreadable", "null", _UNREADABLE)
        return d
    grid = session.cells(col.name, kind, plan.edges, _GRID_SHARE * plan.rho,
                         f"draft:{col.name}:grid")
    g = np.clip(np.asarray(grid.counts), 0, None)
    # the bounds from the cells clearly holding values: tens of noise-only cells in the
    # tails would otherwise stretch them (a code column of values 1-25 once got bounds
    # 0-120 and coarse bins); the quantiles from every cell inside the bounds
    clean = np.where(g >= 2 * grid.sigma, g, 0.0)
    tails = clean if clean.sum() > 0 else g
    precision, zero_share = plan.precision, plan.zero_share
    cuts = plan.edges

    def at(i: int) -> float:
        return cuts[min(i, len(cuts) - 1)]

    i_lo, i_hi = _quantile_cell(tails, 0.005), _quantile_cell(tails, 0.995)
    g = np.where((np.arange(g.size) >= i_lo) & (np.arange(g.size) <= i_hi), g, 0.0)
    if g.sum() <= 0:
        g = tails
    lo = at(i_lo)
    hi = at(i_hi + 1)
    if integer:
        hi -= 1
    if hi <= lo:
        hi = lo + (1 if integer else (precision or width or 1.0))
    d = ColumnDraft(col.name, kind)
    d.put("description", "fill in from documentation", "fill in from documentation")
    d.put("bounds", [_num(lo), _num(hi)],
          f"{note}: about 0.5% of values lie below / above (clamped onto the bounds)")
    atoms: dict[float, float] = {}
    if integer and hi - lo + 1 <= _WHOLE_BINS:
        d.put("bin_width", 1, f"{note}: one bin per whole number in the bounds")
    else:
        inner = sorted({at(_quantile_cell(g, q / _QUANTILES) + 1) for q in range(1, _QUANTILES)})
        bin_edges = [lo, *(x for x in inner if lo < x < hi), hi]
        step = 1.0 if integer else (precision or 0.0)
        if zero_share >= _ATOM and lo <= 0 <= hi:
            atoms[0.0] = zero_share
        atoms.update(_heavy_values(session, col, plan, key_delta, lo, hi, step))
        for a in _settle_atoms(bin_edges, sorted(atoms), (lo, hi), step):
            del atoms[a]  # a single bin would hold nothing else
        grid_note = (f"a grid of {_num(width)}" if width > 0 else "steps of 1, 1.5, 2, 3, 5, 7 x 10^k")
        d.put("bin_edges", [_num(x) for x in bin_edges],
              f"{note}: {100 // _QUANTILES}% quantiles rounded to {grid_note}")
    if not integer and precision is not None:
        d.put("precision", _num(precision),
              f"{note}: at least 98% of values are multiples of {_num(precision)}")
    if atoms:
        shares = ", ".join(f"{_num(a)}: about {100 * s:.0f}%" for a, s in sorted(atoms.items()))
        d.put("atoms", [_num(a) for a in sorted(atoms)],
              f"{note}: values held by at least {100 * _ATOM:.0f}% of values each ({shares}); "
              "each is its own cell, decoded exactly")
    _common(d, col, list(MISSING_TOKENS), _PUBLIC_TOKENS, "clamp", cfg.delta)
    if col.parquet is None:
        d.put("on_unreadable", "null", _UNREADABLE)
    return d


def _heavy_values(session: Session, col: _Column, plan: _NumPlan, key_delta: float,
                  lo: float, hi: float, step: float) -> dict[float, float]:
    """Values at least :data:`_ATOM` of the column holds (DP key selection over the cell
    texts), inside the bounds and on the grid: ``{value: noisy share}``."""
    keys, _threshold = session.keys(col.name, _ATOM_SHARE * plan.rho, key_delta,
                                    f"draft:{col.name}:atoms", exclude=MISSING_TOKENS)
    out: dict[float, float] = {}
    for text, n in keys.items():
        try:
            v = float(text)
        except ValueError:
            continue
        if not math.isfinite(v):
            continue
        out[v] = out.get(v, 0.0) + n
    return {v: n / plan.read for v, n in out.items() if n >= _ATOM * plan.read
            and lo <= v <= hi and (not step or math.isclose(round(v / step) * step, v,
                                                            rel_tol=1e-9, abs_tol=1e-9))}


def _settle_atoms(edges: list[float], atoms: list[float], bounds: tuple[float, float],
                  step: float) -> list[float]:
    """Merge bins that would hold nothing but atoms with a neighbour, in place (the schema
    refuses such a bin: an atom is never drawn from its bin); returns the atoms to drop
    (only when a single bin is left and holds nothing else). Uses the schema's own rule
    (:func:`dpsynth.schema.bin_values_exist`)."""
    while True:
        col = Column(name="draft", kind="float", bounds=bounds, bin_edges=tuple(edges),
                     atoms=tuple(atoms), precision=step or None)
        empty = [i for i in range(len(edges) - 1) if not bin_values_exist(col, i)]
        if not empty:
            return []
        if len(edges) <= 2:
            return list(atoms)
        i = empty[0]
        edges.pop(i + 1 if i < len(edges) - 2 else i)


_PUBLIC_TOKENS = "the public list of missing tokens (none of them can be read as this kind)"
_UNREADABLE = ("DP cannot rule out rare text in this column (codes, notes): such cells become "
               "null; set reject to refuse the table instead, once you know there is none")


def _date(session: Session, col: _Column, rho: float, cfg: DraftConfig) -> ColumnDraft:
    g = session.grid(col.name, "date", *_DATE_GRID, rho, f"draft:{col.name}:years")
    counts = np.asarray(g.counts)
    kept = np.flatnonzero(_evident(counts, g.sigma))
    if kept.size == 0:
        kept = np.asarray([int(np.argmax(counts))])
    y0 = YEARS[0] + int(kept[0]) * 5
    y1 = YEARS[0] + int(kept[-1]) * 5 + 4
    note = _review(col, col.rho + rho, cfg.delta)
    d = ColumnDraft(col.name, "date")
    d.put("description", "fill in from documentation", "fill in from documentation")
    d.put("bounds", [f"{y0:04d}-01-01", f"{y1:04d}-12-31"],
          f"{note}: the 5-year spans holding dates (clamped onto the bounds)")
    d.put("bin_unit", "month" if y1 - y0 < 10 else "year", "public choice from the span")
    d.put("format", DATE_FORMAT, "the date format the draft recognises (ISO 8601)")
    _common(d, col, list(MISSING_TOKENS), _PUBLIC_TOKENS, "clamp", cfg.delta)
    if col.parquet is None:
        d.put("on_unreadable", "null", _UNREADABLE)
    return d


def _not_released(col: _Column, cfg: DraftConfig) -> ColumnDraft:
    d = ColumnDraft(col.name, col.kind or "text")
    d.put("description", "fill in from documentation",
          f"{_review(col, col.rho, cfg.delta)}: {col.eps_note or 'not released'}; never "
          "released; if it should be, give its kind and domain from the documentation")
    return d


def _suggest_k(session: Session, rho: float) -> int:
    noisy = np.asarray(session.rows_per_patient(64, rho, "draft:rows-per-patient").counts)
    return _quantile_cell(noisy, 0.9) + 1


# -- YAML ----------------------------------------------------------------------------------


def _num(x: float) -> int | float:
    x = float(f"{x:.12g}")
    return int(x) if x.is_integer() else x


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(_num(v))
    return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a YAML quoted scalar


def _value(v: Any) -> str:
    """A YAML flow value: scalars, lists and mappings (keys quoted like every string)."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_scalar(k)}: {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return _scalar(v)


def render(draft: Draft, version: str) -> str:
    """The draft as commented YAML: every string quoted, every proposed value with a comment
    saying where it came from ("DP estimate (eps=...), review" or "fill in from documentation")."""
    lines = [
        f"# dpsynth table schema DRAFT for {draft.source}, written by `dpsynth schema draft` "
        f"(dpsynth {version}).",
        f"# Values that depend on the data are DP estimates: the whole draft cost epsilon="
        f"{draft.epsilon:g}, delta={draft.delta:g}, charged to the ledger as {draft.draft_id!r}",
        "# (kind schema-draft). Column names and Parquet types are public metadata. Nothing",
        "# else was read from the table. Review every line against the table's documentation:",
        "#   'DP estimate (eps=...), review': learnt under DP; noisy, and rare values are missing.",
        "#   'fill in from documentation': the draft could not learn it (a placeholder).",
        "format: \"dpsynth.table-schema/v1\"",
        f"name: {_scalar(draft.name)}",
        "version: \"draft-1\"  # fill in from documentation",
        "description: \"fill in from documentation\"  # fill in from documentation",
        "privacy_unit:",
    ]
    if draft.unit_column is None:
        lines.append("  max_rows: 1  # each row is one person (no --unit-column given); if rows "
                     "share a patient, name the patient id column")
    else:
        lines.append(f"  column: {_scalar(draft.unit_column)}  # given by you (--unit-column)")
        lines.append(f"  max_rows: {draft.max_rows}  # {draft.max_rows_comment}")
    lines.append("columns:")
    for c in draft.columns:
        lines.append(f"  - name: {_scalar(c.name)}")
        kind_note = ("given by you" if c.name == draft.unit_column else
                     f"DP estimate (eps={_eps(c.rho, draft.delta)} for this column), review")
        lines.append(f"    kind: {_scalar(c.kind)}  # {kind_note}")
        for key, value, comment in c.fields:
            if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
                lines.append(f"    {key}:  # {comment}" if comment else f"    {key}:")
                lines += [f"      - {_value(x)}" for x in value]  # a mapping a line
                continue
            text = f"    {key}: {_value(value)}"
            lines.append(f"{text}  # {comment}" if comment else text)
    return "\n".join(lines) + "\n"
