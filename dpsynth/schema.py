"""Table schema files: YAML -> validated, frozen :class:`Schema` (public information only).

A schema describes one private table with facts taken from its documentation
(codebook, data dictionary): each column's kind, category list, bounds and bins,
code groupings, which tokens mean missing, what to do with out-of-domain values,
and the privacy unit (patient id column and contribution bound k).

Loading runs two checks, in order, and fails with :class:`SchemaError` (exit 2):

1. the file against the published JSON Schema ``schemas/table-schema.v1.json``;
2. semantics JSON Schema cannot express: unique names, increasing bin edges,
   bounds inside the edges, the privacy unit is an identifier column, rules and
   subgroups name real columns, ...

Owns the schema types (:class:`Schema`, :class:`Column`, ...) and each column's
bins: numeric ``bin_width`` and date ``bin_unit`` are resolved to edges here, so a
column knows its number of codes (:attr:`Column.domain_size`); what each code
means (levels, encoding, decoding) is :mod:`dpsynth.domain`'s. This module imports
no other part of dpsynth but the errors, and never reads the private table;
everything here is public.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jsonschema
import polars as pl
import yaml

from dpsynth.errors import SchemaError

__all__ = [
    "DEFAULT_ROWS_CAP",
    "MEASURED_KINDS",
    "UNIT_ROWS_COLUMN",
    "Analysis",
    "CodeGroup",
    "Column",
    "PrivacyUnit",
    "Rule",
    "Schema",
    "load_schema",
    "load_yaml",
    "parse_schema",
    "plural",
    "table_schema_json",
]

Kind = Literal[
    "categorical", "integer", "float", "date", "datetime", "boolean", "code", "identifier", "text",
    "derived",
]
OutOfDomain = Literal["reject", "null", "clamp", "other"]

#: Kinds that are measured and released; identifier and text columns never are.
MEASURED_KINDS = frozenset(
    {"categorical", "integer", "float", "date", "datetime", "boolean", "code"}
)
DEFAULT_TRUE_TOKENS = ("true", "True", "TRUE", "1", "yes", "Yes", "YES", "Y", "T")
DEFAULT_FALSE_TOKENS = ("false", "False", "FALSE", "0", "no", "No", "NO", "N", "F")
#: A column's domain larger than this is almost certainly a schema mistake
#: (noise on huge marginals drowns the signal); coarsen the bins instead.
MAX_DOMAIN_SIZE = 5000
#: Whole-table cap: the cells of all 2-way marginals, sum over column pairs of
#: |D_i| x |D_j|. MST scores every pair in each of its d - 1 selection rounds (an
#: exact and an expected table per pair) and AIM's workload holds every pair, so this
#: is the memory and counting work of one round (8 bytes a cell); the product of all
#: domain sizes, by contrast, is never materialised by a marginal model.
MAX_PAIR_CELLS = 100_000_000
#: Whole-table cap on released columns: pair selection is O(d^2) per round over d - 1
#: rounds, and AIM's 3-way workload holds C(d, 3) candidates.
MAX_COLUMNS = 1000
#: Schema files larger than this are refused before YAML parses them.
MAX_SCHEMA_BYTES = 2**20
#: YAML aliases (``*name``) allowed in a schema file, and values the document may
#: hold once aliases are expanded: an "alias bomb" is refused before it is built.
MAX_YAML_ALIASES = 100
MAX_YAML_NODES = 200_000


@dataclass(frozen=True)
class CodeGroup:
    """One group of a code column: codes starting with a prefix or in a numeric range."""

    label: str
    prefixes: tuple[str, ...] = ()
    ranges: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True, kw_only=True)
class Column:
    """One column of the table, with its public domain."""

    name: str
    kind: Kind
    description: str = ""
    nullable: bool = False
    missing_tokens: tuple[str, ...] = ("",)
    on_out_of_domain: OutOfDomain = "reject"
    #: a present cell the kind cannot read: refuse the table, or code it as missing
    on_unreadable: Literal["reject", "null"] = "reject"
    # categorical
    categories: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    ordered: bool = False
    #: ``on_out_of_domain: other``: the category (one of ``categories``) every other value is
    #: coded as; empty otherwise
    other_category: str = ""
    # integer / float: bounds and bin edges (bins are [e_i, e_i+1), the last one closed)
    bounds: tuple[float, float] | None = None
    bin_edges: tuple[float, ...] = ()
    #: exact values with their own code (after the bins), decoded exactly
    atoms: tuple[float, ...] = ()
    #: decoded values lie on the grid ``k * precision`` (integer columns: whole numbers)
    precision: float | None = None
    #: possible values (outside them the table is refused); ``bounds`` lie inside
    valid: tuple[float, float] | None = None
    # derived: a SQL expression over other released columns, computed after sampling
    expr: str = ""
    # date / datetime
    date_bounds: tuple[dt.datetime, dt.datetime] | None = None
    bin_unit: str = ""
    date_format: str | None = None
    # boolean
    true_tokens: tuple[str, ...] = DEFAULT_TRUE_TOKENS
    false_tokens: tuple[str, ...] = DEFAULT_FALSE_TOKENS
    # code
    system: str = ""
    pattern: str | None = None
    groups: tuple[CodeGroup, ...] = ()

    @property
    def measured(self) -> bool:
        """True when the column is measured (and so part of the model's domain)."""
        return self.kind in MEASURED_KINDS

    @property
    def released(self) -> bool:
        """True when the column is part of the synthetic table: measured or derived."""
        return self.kind in MEASURED_KINDS or self.kind == "derived"

    @property
    def date_edges(self) -> tuple[dt.datetime, ...]:
        """A date or datetime column's bin edges: from the start of the first bound's
        ``bin_unit`` (day, week from Monday, month, quarter, year) in steps of one unit,
        until an edge passes the last bound. Empty for other kinds."""
        if self.date_bounds is None:
            return ()
        return _date_edges(*self.date_bounds, self.bin_unit)

    @property
    def n_levels(self) -> int:
        """Codes for values, ``0 .. n_levels-1``: one per category, code group, boolean
        value or bin. ``ValueError`` for identifier and text columns (not released)."""
        if self.kind == "categorical":
            return len(self.categories)
        if self.kind == "code":
            return len(self.groups)
        if self.kind == "boolean":
            return 2
        if self.kind in ("integer", "float"):
            return len(self.bin_edges) - 1 + len(self.atoms)
        if self.kind in ("date", "datetime"):
            return len(self.date_edges) - 1
        raise ValueError(f"column {self.name!r} of kind {self.kind} has no domain")

    @property
    def domain_size(self) -> int:
        """Number of codes, the null code (``n_levels``, if nullable) included."""
        return self.n_levels + (1 if self.nullable else 0)

    @property
    def n_bins(self) -> int:
        """Numbers: the bins (codes ``0 .. n_bins-1``); the atoms follow them."""
        return len(self.bin_edges) - 1


def _date_edges(b0: dt.datetime, b1: dt.datetime, unit: str) -> tuple[dt.datetime, ...]:
    def floor(d: dt.datetime) -> dt.datetime:
        d = d.replace(hour=0, minute=0, second=0, microsecond=0)
        if unit == "week":
            return d - dt.timedelta(days=d.weekday())
        if unit == "month":
            return d.replace(day=1)
        if unit == "quarter":
            return d.replace(day=1, month=3 * ((d.month - 1) // 3) + 1)
        if unit == "year":
            return d.replace(day=1, month=1)
        return d

    def step(d: dt.datetime) -> dt.datetime:
        if unit == "day":
            return d + dt.timedelta(days=1)
        if unit == "week":
            return d + dt.timedelta(days=7)
        months = {"month": 1, "quarter": 3, "year": 12}[unit]
        m = d.month - 1 + months
        return d.replace(year=d.year + m // 12, month=m % 12 + 1)

    edges = [floor(b0)]
    while edges[-1] <= b1:
        edges.append(step(edges[-1]))
    return tuple(edges)


DEFAULT_ROWS_CAP = 10
"""Default public cap C of the rows-per-patient distribution (``privacy_unit.rows_cap``;
``max_rows`` when that is larger)."""
UNIT_ROWS_COLUMN = "_unit_rows"
"""The internal modelled column of ``represent: all_rows``: the patient's row count,
clamped at ``rows_cap`` (categories ``"1" .. "C"``). Measured and sampled, never
released: the weight column is computed from it."""
Represent = Literal["kept_rows", "all_rows"]


def plural(noun: str) -> str:
    """An English plural of a schema's row noun (encounter -> encounters, entry -> entries)."""
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in ("a", "e", "i", "o", "u"):
        return noun[:-1] + "ies"
    return noun + "s"


@dataclass(frozen=True)
class PrivacyUnit:
    """The protected individual: ``column`` identifies a patient, who keeps at most
    ``max_rows`` rows (the contribution bound k).

    ``rows_cap`` (C) is the public cap of the rows-per-patient distribution every
    release measures; ``row_name`` is what one row is (the reports' word);
    ``represent`` says what the synthetic table describes: the kept rows
    (``kept_rows``, the default), or approximately every input row (``all_rows``:
    the clamped row count is modelled and ``weight_column`` added)."""

    column: str | None
    max_rows: int = 1
    rows_cap: int = DEFAULT_ROWS_CAP
    row_name: str = "row"
    represent: Represent = "kept_rows"
    weight_column: str = "row_weight"

    @property
    def description(self) -> str:
        if self.column is None:
            return "one person per row (no patient id column); each row is a privacy unit"
        return (f"one patient, identified by {self.column!r}, contributing up to "
                f"{self.max_rows} row(s)")

    @property
    def rows_represent(self) -> str:
        """What one synthetic row stands for, in the schema's words: "one randomly
        chosen encounter per patient ('patient_nbr')" (k = 1) or "up to k encounters
        per patient" (k > 1), and the weight when ``represent`` is ``all_rows``."""
        noun, many = self.row_name, plural(self.row_name)
        if self.column is None:
            return f"one {noun} per person (each {noun} is a different person)"
        k = self.max_rows
        what = (f"one randomly chosen {noun} per patient" if k == 1
                else f"up to {k} {many} per patient (chosen at random when a patient has more)")
        what += f" (patient id column {self.column!r}, never released)"
        if self.represent == "all_rows":
            what += (f"; each row carries a weight {self.weight_column!r} (the patient's "
                     f"number of {many}, clamped at {self.rows_cap}, divided by the rows kept) "
                     f"so that weighted analyses approximate all {many}")
        return what


@dataclass(frozen=True)
class Analysis:
    """What researchers will study with the release (public: a statement of intent, no data).

    ``targets`` are outcomes they will predict; ``focus`` are other column sets whose joint
    distribution is known to matter. The engines give these marginals (and the targets'
    joint marginals with the schema's subgroups) more weight and budget; without them
    (both empty) every engine behaves as if the section were absent.
    """

    targets: tuple[str, ...] = ()
    focus: tuple[tuple[str, ...], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.targets or self.focus)


@dataclass(frozen=True)
class Rule:
    """A cross-column rule: a SQL boolean expression every synthetic row satisfies.

    ``require`` is parsed by polars' SQL expression parser (no Python eval;
    unknown functions are refused). A row satisfies the rule when the expression
    is not FALSE: NULL passes, as in a SQL ``CHECK`` constraint. An ``error``
    rule is enforced when rows are generated (never broken in a release); a
    ``warning`` rule is counted and reported. ``columns`` are the released
    columns the expression reads. The older ``null_together``/``null_below``
    forms are written as such expressions when the schema is loaded.
    """

    name: str
    require: str
    columns: tuple[str, ...]
    severity: Literal["error", "warning"] = "error"
    description: str = ""

    @property
    def expr(self) -> pl.Expr:
        """The rule as a polars expression: true where the row satisfies it (NULL -> true)."""
        return pl.sql_expr(self.require).fill_null(True)

@dataclass(frozen=True)
class Schema:
    """A validated table schema. ``text`` is the file as written (it goes in the bundle)."""

    name: str
    version: str
    description: str
    privacy_unit: PrivacyUnit
    columns: tuple[Column, ...]
    subgroups: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    analysis: Analysis = field(default_factory=Analysis)
    source: str = ""
    citation: str = ""
    text: str = field(default="", repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def measured_columns(self) -> tuple[Column, ...]:
        """The input's columns that are measured under DP (the model's domain, but for
        :attr:`unit_rows_column`)."""
        return tuple(c for c in self.columns if c.measured)

    @property
    def unit_rows_column(self) -> Column | None:
        """``represent: all_rows``: the internal column holding each kept row's patient
        row count clamped at ``rows_cap`` (codes 0 .. C-1 mean 1 .. C or more rows).
        Computed from the input, modelled like any column, never released."""
        unit = self.privacy_unit
        if unit.represent != "all_rows":
            return None
        cap = unit.rows_cap
        return Column(name=UNIT_ROWS_COLUMN, kind="categorical", ordered=True,
                      categories=tuple(str(n) for n in range(1, cap + 1)),
                      labels=((str(cap), f"{cap} or more"),),
                      description=f"{plural(unit.row_name)} of the patient, clamped at {cap}")

    @property
    def weight_column(self) -> Column | None:
        """``represent: all_rows``: the released weight, a derived column: the patient's
        clamped row count c over the rows kept for them, ``c / min(c, k)``."""
        unit = self.privacy_unit
        if unit.represent != "all_rows":
            return None
        n = f'CAST("{UNIT_ROWS_COLUMN}" AS DOUBLE)'
        return Column(name=unit.weight_column, kind="derived", nullable=False,
                      expr=f"{n} / LEAST({n}, {unit.max_rows})",
                      bounds=(1.0, unit.rows_cap / min(unit.rows_cap, unit.max_rows)),
                      description=(f"how many {plural(unit.row_name)} of the input this row "
                                   "stands for (approximately)"))

    @property
    def model_columns(self) -> tuple[Column, ...]:
        """The model's domain: the measured columns, then :attr:`unit_rows_column`."""
        extra = self.unit_rows_column
        return self.measured_columns + ((extra,) if extra is not None else ())

    @property
    def released_columns(self) -> tuple[Column, ...]:
        """Columns of the synthetic table, in schema order: measured and derived, then
        the weight column (``represent: all_rows``)."""
        weight = self.weight_column
        return (tuple(c for c in self.columns if c.released)
                + ((weight,) if weight is not None else ()))

    @property
    def input_columns(self) -> tuple[Column, ...]:
        """Columns the input table must have: all but the derived ones (which it may
        also have; they are then ignored by the release and compared by ``schema check``)."""
        return tuple(c for c in self.columns if c.kind != "derived")

    @property
    def derived_columns(self) -> tuple[Column, ...]:
        """Columns computed after sampling: the schema's derived ones, then the weight."""
        weight = self.weight_column
        return (tuple(c for c in self.columns if c.kind == "derived")
                + ((weight,) if weight is not None else ()))

    def column(self, name: str) -> Column:
        """A column by name: the schema's, the internal one, or the weight."""
        for c in (*self.columns, self.unit_rows_column, self.weight_column):
            if c is not None and c.name == name:
                return c
        raise KeyError(name)


def table_schema_json() -> dict[str, Any]:
    """The published JSON Schema of the schema format."""
    text = resources.files("dpsynth.resources").joinpath("table-schema.v1.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


def load_schema(path: str | Path) -> Schema:
    """Read, validate and build a schema from a YAML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaError(f"schema file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"schema file {str(p)!r} cannot be read ({type(exc).__name__})") from None
    return parse_schema(text, source_name=str(p))


class _SchemaLoader(yaml.SafeLoader):
    """YAML as the schema means it (the YAML 1.2 core schema's scalars): only
    ``true``/``false`` are booleans, so ``categories: [no, yes]`` is two words,
    not two booleans; and a number with a leading zero (``01``, ``0123``) is text,
    so a code list keeps its zeros (YAML 1.1 reads ``0123`` as octal 83)."""


_SchemaLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_SchemaLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
_SchemaLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"))


class _LimitedLoader(_SchemaLoader):
    """The schema's loader (:class:`_SchemaLoader`), refusing, while composing (before any value is built),
    more than :data:`MAX_YAML_ALIASES` aliases, a document of more than
    :data:`MAX_YAML_NODES` values once aliases are expanded, and recursive aliases."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise SchemaError(f"more than {MAX_YAML_ALIASES} YAML aliases (*name)")
        return super().compose_node(parent, index)

    def compose_document(self) -> Any:
        node = super().compose_document()
        if node is not None:
            _expanded_size(node)
        return node


def _expanded_size(root: yaml.Node) -> int:
    """Values in the document with every alias expanded (shared nodes counted once
    per use), refusing past :data:`MAX_YAML_NODES`; iterative, memoised per node."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if not done:
            if key in open_:
                raise SchemaError("a YAML alias refers to a node that contains it")
            open_.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        open_.discard(key)
        sizes[key] = 1 + sum(sizes[id(c)] for c in children)
        if sizes[key] > MAX_YAML_NODES:
            raise SchemaError(f"the schema holds more than {MAX_YAML_NODES:,} values once its "
                              "YAML aliases are expanded")
    return sizes[id(root)]


def load_yaml(text: str, source_name: str) -> Any:
    """A YAML document read the way schemas are (:class:`_SchemaLoader`'s scalars), with the
    size and alias limits of :class:`_LimitedLoader`; :class:`SchemaError` naming
    ``source_name`` otherwise. Also used for ``--config`` files."""
    if len(text) > MAX_SCHEMA_BYTES:
        raise SchemaError(f"{source_name} is larger than {MAX_SCHEMA_BYTES:,} characters")
    loader = _LimitedLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise SchemaError(f"{source_name} is not valid YAML{where}") from None
    except SchemaError as exc:
        raise SchemaError(f"{source_name}: {exc.message}") from None
    finally:
        loader.dispose()


def _domain_floor(c: dict[str, Any]) -> int:
    """A column's number of codes from the raw document, without building anything (no
    edges, no category tuples): exact but for dates (a lower bound); 0 when the entry
    is malformed (the JSON Schema reports it)."""
    kind, extra = c.get("kind"), 1 if c.get("nullable") is True else 0
    try:
        if kind in ("categorical", "code"):
            values = c.get("categories" if kind == "categorical" else "groups")
            return len(values) + extra if isinstance(values, list) else 0
        if kind == "boolean":
            return 2 + extra
        if kind in ("integer", "float"):
            if isinstance(c.get("bin_edges"), list):
                return max(0, len(c["bin_edges"]) - 1) + extra
            lo, hi = (float(x) for x in c["bounds"])
            span = hi - lo + 1 if kind == "integer" else hi - lo
            n = span / float(c["bin_width"])  # the same count as _edges_from_width
            return (max(1, math.ceil(n - 1e-12)) if math.isfinite(n) else MAX_DOMAIN_SIZE + 1) + extra
        if kind in ("date", "datetime"):
            b0, b1 = (dt.datetime.fromisoformat(str(x)).replace(tzinfo=None) for x in c["bounds"])
            days = {"day": 1, "week": 7, "month": 31, "quarter": 92, "year": 366}[c["bin_unit"]]
            return (b1 - b0).days // days + extra
    except (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError):
        return 0
    return 0


def _refuse_large_domains(doc: dict[str, Any]) -> None:
    """Per-column and whole-table domain caps, before anything is built (a schema with
    10^9 integer bins is refused here in microseconds, not after building 10^9 edges)."""
    columns = doc.get("columns")
    if not isinstance(columns, list):
        return
    sizes = []
    for c in columns:
        if isinstance(c, dict) and c.get("kind") in MEASURED_KINDS:
            n = _domain_floor(c)
            if n > MAX_DOMAIN_SIZE:
                at_least = "at least " if c.get("kind") in ("date", "datetime") else ""
                raise SchemaError(f"domain has {at_least}{n} values, more than {MAX_DOMAIN_SIZE}; "
                                  "use wider bins", f"schema.columns[{c.get('name')!r}]")
            sizes.append(n)
    problem = _table_domain_problem(sizes)
    if problem:
        raise SchemaError(problem, "schema.columns")


def _table_domain_problem(sizes: list[int]) -> str | None:
    """The whole-table cap (:data:`MAX_COLUMNS`, :data:`MAX_PAIR_CELLS`), or None."""
    if len(sizes) > MAX_COLUMNS:
        return f"{len(sizes)} released columns, more than {MAX_COLUMNS}"
    total = sum(sizes)
    pair_cells = (total * total - sum(n * n for n in sizes)) // 2
    if pair_cells > MAX_PAIR_CELLS:
        return (f"the 2-way marginals of all column pairs hold {pair_cells:,} cells, more than "
                f"{MAX_PAIR_CELLS:,} (marginal models count and score every pair); use wider "
                "bins or fewer columns")
    return None


def parse_schema(text: str, source_name: str = "<schema>") -> Schema:
    """Validate schema text (YAML) and build a :class:`Schema`. Size limits come first:
    the text (:data:`MAX_SCHEMA_BYTES`), YAML aliases and their expansion
    (:data:`MAX_YAML_ALIASES`, :data:`MAX_YAML_NODES`), then each column's domain and the
    whole table's (:data:`MAX_DOMAIN_SIZE`, :data:`MAX_COLUMNS`, :data:`MAX_PAIR_CELLS`),
    all before anything is built."""
    doc = load_yaml(text, source_name)
    if not isinstance(doc, dict):
        raise SchemaError(f"{source_name} must hold a mapping at the top level")
    _refuse_large_domains(doc)
    for col in doc.get("columns") or []:
        # YAML reads an unquoted `null` as None: that spelling means the "null" policy.
        for key in ("on_out_of_domain", "on_unreadable"):
            if isinstance(col, dict) and key in col and col[key] is None:
                col[key] = "null"
    validator = jsonschema.Draft202012Validator(table_schema_json())
    errors = sorted(validator.iter_errors(doc), key=lambda e: (len(e.absolute_path), e.message))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        path = _json_path(doc, list(err.absolute_path))
        raise SchemaError(_explain(err), path)
    return _build(doc, text)


def _explain(err: jsonschema.ValidationError) -> str:
    """A JSON Schema failure as an instruction: which keys to give instead of the
    dumped entry for ``oneOf``/``anyOf``, and how to write a boolean."""
    if err.validator in ("oneOf", "anyOf") and isinstance(err.instance, dict):
        subs = err.validator_value if isinstance(err.validator_value, list) else []
        forms = [sorted(sub.get("required", [])) for sub in subs if isinstance(sub, dict)]
        given = [f for f in forms if f and all(k in err.instance for k in f)]
        choices = " or ".join(" and ".join(f) for f in forms if f)
        if len(given) > 1:
            return f"give either {choices}, not both"
        return f"give either {choices}"
    if (err.validator == "type" and err.validator_value == "boolean"
            and isinstance(err.instance, str)):
        return (f"{err.instance!r} is text, not a boolean: write true or false (the schema "
                "reads YAML 1.2, where yes/no/on/off are words)")
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        return _short(err.message) + " (check the spelling, or the keys this kind accepts)"
    return f"{_short(err.message)} (JSON Schema rule: {err.validator})"


def _short(message: str, limit: int = 160) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _json_path(doc: Any, parts: list[Any]) -> str:
    """Render a JSON path, naming columns by their name rather than index."""
    out = "schema"
    node = doc
    for part in parts:
        if isinstance(part, int) and isinstance(node, list):
            item = node[part] if part < len(node) else None
            name = item.get("name") if isinstance(item, dict) else None
            out += f"[{name!r}]" if isinstance(name, str) else f"[{part}]"
            node = item
        else:
            out += f".{part}"
            node = node.get(part) if isinstance(node, dict) else None
    return out


def _tokens(values: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in values)


def _category_text(v: Any) -> str:
    # YAML gives ints, floats and bools for unquoted scalars; compare as the text a
    # CSV cell would hold (1 -> "1", True -> "true").
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _parse_date(value: str, where: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise SchemaError(f"bound {value!r} is not an ISO 8601 date", where) from None
    return parsed.replace(tzinfo=None)


def _edges_from_width(lo: float, hi: float, width: float, integer: bool,
                      where: str) -> tuple[float, ...]:
    """Edges ``lo, lo+w, ..`` covering the bounds; the width must divide the span
    (integer bins hold whole numbers: ``[lo, hi]`` has ``hi - lo + 1`` of them),
    else the last bin would silently be narrower than the others."""
    span = hi - lo + 1 if integer else hi - lo
    n = round(span / width)
    if n < 1 or not math.isclose(n * width, span, rel_tol=1e-9, abs_tol=1e-12):
        what = f"the {span:g} whole numbers of" if integer else "the span of"
        raise SchemaError(
            f"bin_width {width:g} does not divide {what} the bounds ({lo:g}, {hi:g}): the last "
            "bin would be narrower than the others; change the bounds or the width, or give "
            "bin_edges", where)
    return tuple(lo + i * width for i in range(n + 1))


def grid_decimals(precision: float) -> int:
    """Decimal places that print a multiple of ``precision`` exactly (``0.25`` -> 2)."""
    text = f"{precision:.12g}"
    return len(text.split(".")[1]) if "." in text and "e" not in text else (
        max(0, -math.floor(math.log10(precision))) + 6)


def on_grid(value: float, precision: float) -> bool:
    """Whether ``value`` is a multiple of ``precision`` (to rounding error)."""
    k = round(value / precision)
    return math.isclose(k * precision, value, rel_tol=1e-9, abs_tol=1e-9)


def _build_column(c: dict[str, Any], table_missing: tuple[str, ...]) -> Column:
    name = c["name"]
    where = f"schema.columns[{name!r}]"
    kind = c["kind"]
    common: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "description": c.get("description", ""),
        "nullable": bool(c.get("nullable", False)),
        "missing_tokens": _tokens(c["missing_tokens"]) if "missing_tokens" in c else table_missing,
        "on_out_of_domain": c.get("on_out_of_domain", "reject"),
        "on_unreadable": c.get("on_unreadable", "reject"),
    }
    ood = common["on_out_of_domain"]
    if ood == "clamp" and kind not in ("integer", "float", "date", "datetime"):
        raise SchemaError(
            "on_out_of_domain (clamp) is only allowed for integer, float, date and datetime columns",
            where,
        )
    if ood == "other" and kind != "categorical":
        raise SchemaError("on_out_of_domain (other) is only allowed for categorical columns", where)
    if ood == "null" and not common["nullable"]:
        raise SchemaError("on_out_of_domain (null) needs nullable: true", where)
    if common["on_unreadable"] == "null" and not common["nullable"]:
        raise SchemaError("on_unreadable (null) needs nullable: true", where)
    build = _KIND_BUILDERS.get(kind)
    return build(c, common, where) if build is not None else Column(**common)  # identifier, text


def _categorical(c: dict[str, Any], common: dict[str, Any], where: str) -> Column:
    cats = tuple(_category_text(v) for v in c["categories"])
    dupes = sorted({x for x in cats if cats.count(x) > 1})
    if dupes:
        raise SchemaError(f"categories must be unique; repeated: {', '.join(dupes)}", where)
    clash = sorted(set(cats) & set(common["missing_tokens"]))
    if clash:
        raise SchemaError(
            f"category {clash[0]!r} is also a missing token; a value cannot be both", where
        )
    other = ""
    if common["on_out_of_domain"] == "other":
        other = str(c.get("other_category", "Other"))
        if other in common["missing_tokens"]:
            raise SchemaError(f"other_category ({other!r}) is also a missing token", where)
        if other not in cats:
            cats = (*cats, other)
    elif "other_category" in c:
        raise SchemaError("other_category needs on_out_of_domain: other", where)
    labels = tuple((str(k), str(v)) for k, v in c.get("labels", {}).items())
    unknown = [k for k, _ in labels if k not in cats]
    if unknown:
        raise SchemaError(f"labels name unknown category {unknown[0]!r}", where)
    return Column(**common, categories=cats, labels=labels, ordered=bool(c.get("ordered")),
                  other_category=other)


def _numeric(c: dict[str, Any], common: dict[str, Any], where: str) -> Column:
    lo, hi = (float(x) for x in c["bounds"])
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise SchemaError(f"bounds ({lo:g}, {hi:g}) must be finite and increasing", where)
    integer = common["kind"] == "integer"
    if integer and not (lo.is_integer() and hi.is_integer()):
        raise SchemaError("bounds of an integer column must be whole numbers", where)
    if "bin_edges" in c:
        edges = tuple(float(x) for x in c["bin_edges"])
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise SchemaError("bin_edges must be strictly increasing", where)
        if integer and not all(e.is_integer() for e in edges):
            raise SchemaError("bin_edges of an integer column must be whole numbers", where)
        if not (edges[0] <= lo and hi <= edges[-1]):
            raise SchemaError(
                f"bounds ({lo:g}, {hi:g}) must lie inside the bin edges "
                f"({edges[0]:g} .. {edges[-1]:g})",
                where,
            )
        if not (edges[1] > lo and edges[-2] <= hi):
            raise SchemaError("every bin must overlap the bounds; drop bins outside them", where)
    else:
        width = float(c["bin_width"])
        if integer and not width.is_integer():
            raise SchemaError("bin_width of an integer column must be a whole number", where)
        edges = _edges_from_width(lo, hi, width, integer, where)
    precision = _precision(c, integer, where)
    atoms = _atoms(c, (lo, hi), integer, precision, where)
    valid = _valid(c, (lo, hi), where)
    col = Column(**common, bounds=(lo, hi), bin_edges=edges, atoms=atoms, precision=precision,
                 valid=valid)
    for i in range(col.n_bins):
        if not bin_values_exist(col, i):
            a, b = edges[i], edges[i + 1]
            raise SchemaError(f"bin [{a:g}, {b:g}) holds no value on the column's grid besides "
                              "its atoms; drop the bin (merge its edges) or the atom", where)
    return col


def _precision(c: dict[str, Any], integer: bool, where: str) -> float | None:
    if "precision" not in c:
        return 1.0 if integer else None
    p = float(c["precision"])
    if integer and not p.is_integer():
        raise SchemaError("precision of an integer column must be a whole number", where)
    return p


def _atoms(c: dict[str, Any], bounds: tuple[float, float], integer: bool,
           precision: float | None, where: str) -> tuple[float, ...]:
    atoms = tuple(float(a) for a in c.get("atoms", []))
    if len(set(atoms)) != len(atoms):
        raise SchemaError("atoms must be unique", where)
    for a in atoms:
        if not bounds[0] <= a <= bounds[1]:
            raise SchemaError(f"atom {a:g} must lie inside the bounds", where)
        if precision is not None and not on_grid(a, precision):
            raise SchemaError(f"atom {a:g} is not on the precision grid ({precision:g})", where)
        if integer and not a.is_integer():
            raise SchemaError(f"atom {a:g} of an integer column must be a whole number", where)
    return atoms


def _valid(c: dict[str, Any], bounds: tuple[float, float], where: str) -> tuple[float, float] | None:
    if "valid" not in c:
        return None
    v0, v1 = (float(x) for x in c["valid"])
    if not v0 <= bounds[0] <= bounds[1] <= v1:
        raise SchemaError(f"valid ({v0:g}, {v1:g}) must contain the bounds "
                          f"({bounds[0]:g}, {bounds[1]:g})", where)
    return v0, v1


def bin_grid(col: Column, i: int) -> tuple[float, float, bool]:
    """Bin ``i`` of a numeric column inside its bounds: ``(lo, hi, hi_closed)``."""
    assert col.bounds is not None
    e = col.bin_edges
    last = i == len(e) - 2  # only the last bin is closed (and only it can pass the bounds)
    return max(e[i], col.bounds[0]), min(e[i + 1], col.bounds[1]), last


def grid_points(col: Column, i: int) -> tuple[int, int] | None:
    """Bin ``i``'s grid values ``k * precision`` as an inclusive range of k (``None``
    without a precision, or when the bin holds no grid value)."""
    if col.precision is None:
        return None
    lo, hi, closed = bin_grid(col, i)
    p = col.precision
    k0 = math.ceil(lo / p - 1e-9)
    k1 = math.floor(hi / p + 1e-9)
    if not closed and on_grid(hi, p):
        k1 -= 1
    return (k0, k1) if k1 >= k0 else None


def bin_values_exist(col: Column, i: int) -> bool:
    """Whether bin ``i`` can hold a value that is not an atom."""
    if col.precision is None:
        lo, hi, _ = bin_grid(col, i)
        return hi > lo
    ks = grid_points(col, i)
    if ks is None:
        return False
    inside = sum(1 for a in col.atoms if ks[0] <= round(a / col.precision) <= ks[1])
    return ks[1] - ks[0] + 1 > inside


def _derived(c: dict[str, Any], common: dict[str, Any], where: str) -> Column:
    bounds = None
    if "bounds" in c:
        lo, hi = (float(x) for x in c["bounds"])
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise SchemaError(f"bounds ({lo:g}, {hi:g}) must be finite and increasing", where)
        bounds = (lo, hi)
    precision = float(c["precision"]) if "precision" in c else None
    nullable = bool(c.get("nullable", True))
    return Column(**{**common, "nullable": nullable, "missing_tokens": common["missing_tokens"]},
                  expr=str(c["expr"]), bounds=bounds, precision=precision)


def _date(c: dict[str, Any], common: dict[str, Any], where: str) -> Column:
    b0, b1 = (_parse_date(str(x), where) for x in c["bounds"])
    if b0 >= b1:
        raise SchemaError("date bounds must be increasing", where)
    return Column(**common, date_bounds=(b0, b1), bin_unit=c["bin_unit"],
                  date_format=c.get("format"))


def _boolean(c: dict[str, Any], common: dict[str, Any], where: str) -> Column:
    t = _tokens(c.get("true_tokens", DEFAULT_TRUE_TOKENS))
    f = _tokens(c.get("false_tokens", DEFAULT_FALSE_TOKENS))
    both = set(t) & set(f) | (set(t) | set(f)) & set(common["missing_tokens"])
    if both:
        raise SchemaError(f"token {sorted(both)[0]!r} has two meanings", where)
    return Column(**common, true_tokens=t, false_tokens=f)


def _code(c: dict[str, Any], common: dict[str, Any], where: str) -> Column:
    pattern = c.get("pattern")
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error:
            raise SchemaError("pattern is not a valid regular expression", where) from None
    groups = []
    for g in c["groups"]:
        ranges = tuple((float(r[0]), float(r[1])) for r in g.get("ranges", []))
        if not ranges and not g.get("prefixes"):
            raise SchemaError(f"group {g['label']!r} needs prefixes or ranges", where)
        if any(a > b for a, b in ranges):
            raise SchemaError(f"group {g['label']!r} has a range with lo > hi", where)
        groups.append(CodeGroup(g["label"], _tokens(g.get("prefixes", [])), ranges))
    labels_ = [g.label for g in groups]
    if len(set(labels_)) != len(labels_):
        raise SchemaError("group labels must be unique", where)
    return Column(**common, system=c["system"], pattern=pattern, groups=tuple(groups))


_KIND_BUILDERS = {"categorical": _categorical, "integer": _numeric, "float": _numeric,
                  "date": _date, "datetime": _date, "boolean": _boolean, "code": _code,
                  "derived": _derived}


def _build(doc: dict[str, Any], text: str) -> Schema:
    table_missing = _tokens(doc.get("missing_tokens", [""]))
    columns = tuple(_build_column(c, table_missing) for c in doc["columns"])
    names = [c.name for c in columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SchemaError(f"column names must be unique; repeated: {', '.join(dupes)}", "schema")
    by_name = {c.name: c for c in columns}

    pu = doc["privacy_unit"]
    k = int(pu.get("max_rows", 1))
    unit = PrivacyUnit(column=pu.get("column"), max_rows=k,
                       rows_cap=int(pu.get("rows_cap", max(DEFAULT_ROWS_CAP, k))),
                       row_name=str(pu.get("row_name", "row")),
                       represent=pu.get("represent", "kept_rows"),
                       weight_column=str(pu.get("weight_column", "row_weight")))
    if unit.rows_cap < unit.max_rows:
        raise SchemaError(f"rows_cap ({unit.rows_cap}) must be at least max_rows "
                          f"({unit.max_rows})", "schema.privacy_unit")
    if unit.represent == "all_rows":
        if unit.column is None:
            raise SchemaError("represent: all_rows needs a patient id column (without one "
                              "every row is kept already)", "schema.privacy_unit")
        if unit.weight_column == UNIT_ROWS_COLUMN:
            raise SchemaError(f"weight_column must not be {UNIT_ROWS_COLUMN!r} (the internal "
                              "row-count column)", "schema.privacy_unit")
        for name in (unit.weight_column, UNIT_ROWS_COLUMN):
            if name in by_name:
                raise SchemaError(f"column {name!r} is added by represent: all_rows, so no "
                                  "schema column may have that name; set weight_column",
                                  "schema.privacy_unit")
    if unit.column is None:
        if unit.max_rows != 1:
            raise SchemaError("without a patient id column each row is a person, so max_rows "
                              "must be 1", "schema.privacy_unit")
    elif unit.column not in by_name:
        raise SchemaError(f"names column {unit.column!r}, which the schema does not define",
                          "schema.privacy_unit")
    elif by_name[unit.column].kind != "identifier":
        raise SchemaError(f"column {unit.column!r} must be of kind identifier",
                          "schema.privacy_unit")
    if not any(c.measured for c in columns):
        raise SchemaError("the schema has no column to synthesise", "schema.columns")

    for c in columns:
        if c.measured and c.domain_size > MAX_DOMAIN_SIZE:
            raise SchemaError(
                f"domain has {c.domain_size} values, more than {MAX_DOMAIN_SIZE}; use wider bins",
                f"schema.columns[{c.name!r}]",
            )
    too_large = _table_domain_problem([c.domain_size for c in columns if c.measured])
    if too_large:
        raise SchemaError(too_large, "schema.columns")

    subgroups = tuple(doc.get("subgroups", []))
    for s in subgroups:
        if s not in by_name or by_name[s].kind not in ("categorical", "boolean", "code"):
            raise SchemaError(f"subgroup {s!r} must name a categorical, boolean or code column",
                              "schema.subgroups")

    analysis = _build_analysis(doc.get("analysis") or {}, by_name)
    _check_derived(columns)
    rules = tuple(_build_rule(r, i, by_name) for i, r in enumerate(doc.get("rules", [])))
    rule_names = [r.name for r in rules]
    dupes = sorted({n for n in rule_names if rule_names.count(n) > 1})
    if dupes:
        raise SchemaError(f"rule names must be unique; repeated: {', '.join(dupes)}",
                          "schema.rules")

    return Schema(
        name=doc["name"],
        version=str(doc["version"]),
        description=doc.get("description", ""),
        privacy_unit=unit,
        columns=columns,
        subgroups=subgroups,
        rules=rules,
        analysis=analysis,
        source=doc.get("source", ""),
        citation=doc.get("citation", ""),
        text=text,
    )


def _build_analysis(a: dict[str, Any], by_name: dict[str, Column]) -> Analysis:
    """``analysis:`` -> :class:`Analysis`; every column named must be a measured column
    (the engines model those; derived columns are computed after sampling)."""

    def measured(name: str, where: str) -> str:
        if name not in by_name:
            raise SchemaError(f"names column {name!r}, which the schema does not define", where)
        if not by_name[name].measured:
            raise SchemaError(f"column {name!r} must be a measured released column (not "
                              f"{by_name[name].kind})", where)
        return name

    targets = tuple(measured(t, "schema.analysis.targets") for t in a.get("targets", []))
    focus: list[tuple[str, ...]] = []
    for i, group in enumerate(a.get("focus", [])):
        where = f"schema.analysis.focus[{i}]"
        cols = tuple(measured(c, where) for c in group)
        if len(set(cols)) != len(cols):
            raise SchemaError("must name distinct columns", where)
        focus.append(cols)
    return Analysis(targets=targets, focus=tuple(focus))


def sql_columns(text: str, what: str, where: str) -> tuple[str, ...]:
    """Parse a SQL expression (polars' SQL parser: no Python eval, unknown functions
    refused) and return the columns it reads, in order of appearance."""
    try:
        expr = pl.sql_expr(text)
        names = expr.meta.root_names()
    except Exception as exc:  # polars raises several types (SQLInterfaceError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SchemaError(f"{what} is not a valid SQL expression: {_short(first)}", where) from None
    return tuple(dict.fromkeys(names))


def _check_derived(columns: tuple[Column, ...]) -> None:
    """A derived column reads measured columns, or derived columns defined before it."""
    earlier: dict[str, Column] = {}
    for c in columns:
        if c.kind == "derived":
            where = f"schema.columns[{c.name!r}]"
            for name in sql_columns(c.expr, "expr", where):
                ref = earlier.get(name)
                if ref is None or not ref.released:
                    raise SchemaError(
                        f"expr reads column {name!r}, which is not a measured column or a "
                        "derived column defined before this one", where)
        earlier[c.name] = c


def _build_rule(r: dict[str, Any], i: int, by_name: dict[str, Column]) -> Rule:
    name = str(r.get("name") or "")
    where = f"schema.rules[{name or i}]"
    if "require" in r:
        require = str(r["require"])
    else:
        require, default_name = _legacy_rule(r, by_name, where)
        name = name or default_name
    columns = sql_columns(require, f"rule {name!r}", where)
    for col in columns:
        if col not in by_name or not by_name[col].released:
            raise SchemaError(f"rule {name!r} reads column {col!r}, which is not a released "
                              "column (identifier and text columns are never released)", where)
    return Rule(name=name, require=require, columns=columns, severity=r.get("severity", "error"),
                description=r.get("description", ""))


def _legacy_rule(r: dict[str, Any], by_name: dict[str, Column], where: str) -> tuple[str, str]:
    """The older rule kinds, written as SQL (same meaning): ``null_together`` (the
    columns are null on the same rows) and ``null_below`` (``columns[0]`` is null
    exactly when ``columns[1] < threshold``)."""
    cols = tuple(r["columns"])
    for col in cols:
        if col not in by_name or not by_name[col].measured:
            raise SchemaError(f"names column {col!r}, which is not a released column", where)
    q = [_quoted(c) for c in cols]
    if r["kind"] == "null_below":
        if len(cols) != 2 or "threshold" not in r:
            raise SchemaError("null_below needs exactly two columns and a threshold", where)
        if by_name[cols[1]].kind not in ("integer", "float"):
            raise SchemaError(f"null_below compares {cols[1]!r}, which must be numeric", where)
        if not by_name[cols[0]].nullable:
            raise SchemaError(f"null_below needs {cols[0]!r} to be nullable", where)
        return (f"({q[0]} IS NULL) = ({q[1]} < {float(r['threshold'])!r})",
                f"{cols[0]}_null_below_{cols[1]}")
    if not all(by_name[x].nullable for x in cols):
        raise SchemaError("null_together needs every named column to be nullable", where)
    parts = [f"({q[0]} IS NULL) = ({other} IS NULL)" for other in q[1:]]
    return " AND ".join(parts), "null_together_" + "_".join(cols)


def _quoted(name: str) -> str:
    """A column name as a SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
