"""``DATASHEET.md``: a datasheet for the synthetic dataset of one release.

Owns the researcher-facing description of a bundle: purpose, origin (the
schema's source and citation), how it was made (engine, epsilon/delta, privacy
unit), what the rows represent (:mod:`dpsynth.report.unit`), the privacy
statement, known limits, how to cite, and a clear warning that rows are not real
patients.

Must not: mention anything computed on the private table (true row count, exact
counts, input file name or hash). Its inputs are the public schema and a dict
of public release facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dpsynth.report.unit import unit_section_markdown
from dpsynth.schema import Schema

__all__ = ["datasheet_markdown"]


def _md(text: Any) -> str:
    """One line of plain text, safe inside Markdown (no raw HTML, no line breaks)."""
    s = " ".join(str(text).split())
    return s.replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class _Facts:
    """The release facts as the datasheet prints them ("?" when missing)."""

    rid: str
    engine: str
    eps: str
    delta: str
    rows: str

    @classmethod
    def of(cls, release: Mapping[str, Any]) -> _Facts:
        eps, delta, rows = release.get("epsilon"), release.get("delta"), release.get("rows")
        return cls(
            rid=_md(release.get("release_id", "?")),
            engine=_md(release.get("engine", "?")),
            eps=f"{float(eps):.4g}" if isinstance(eps, int | float) else "?",
            delta=f"{float(delta):.3g}" if isinstance(delta, int | float) else "?",
            rows=f"{int(rows):,}" if isinstance(rows, int) else "?",
        )


_WARNING_AND_PURPOSE = [
    "",
    "> **Warning: this is synthetic data. The rows are not real patients.** Each row was",
    "> drawn from a statistical model fitted to differentially private (noisy) statistics.",
    "> Do not treat a row as a person: do not use it to identify, contact, diagnose or make",
    "> any decision about anyone, and do not report individual rows as observations.",
    "",
    "## Purpose",
    "",
    "A privacy-protected synthetic copy of a patient table, made so that external",
    "researchers can explore the data, develop and test analysis code, and obtain",
    "approximate population-level results without access to real patient records.",
    "Confirm important findings on the real data through the data custodian.",
    "",
]

_PRIVACY_SCOPE = [
    "",
    "The guarantee covers each patient's records. It does not hide the schema (column",
    "names, categories, bounds are public), the existence of the dataset or this release,",
    "or population-level facts. See `privacy-report.html` for every step and the budget",
    "spent on this dataset across releases.",
    "",
]

_GENERAL_LIMITS = [
    "- **Small groups are noisy**: rare categories and small subgroups are dominated by",
    "  the added noise; check the relative noise in `quality-report.html` before use.",
    "- Only the relationships the model measured are preserved; other associations",
    "  (especially among three or more columns) may be weakened or absent.",
    "- Only the cross-column rules the schema declares are enforced (see **Rules**);",
    "  other clinical logic may be broken in some rows.",
    "- Variance estimates, p-values and confidence intervals computed on synthetic rows",
    "  do not account for the synthesis and the privacy noise.",
]


def _names(names: list[str]) -> str:
    return ", ".join(f"`{_md(n)}`" for n in names)


def _origin(schema: Schema) -> list[str]:
    lines = ["## Origin", "", f"- Table: `{_md(schema.name)}` (schema version "
             f"{_md(schema.version)})."]
    if schema.description:
        lines.append(f"- Description: {_md(schema.description)}")
    if schema.source:
        lines.append(f"- Source of the public schema: {_md(schema.source)}")
    if schema.citation:
        lines.append(f"- Original data: {_md(schema.citation)}")
    lines.append(f"- Schema file: `schema.yaml` in this bundle (SHA-256 `{schema.sha256}`).")
    return lines


def _how_made(schema: Schema, release: Mapping[str, Any], f: _Facts) -> list[str]:
    released = schema.released_columns
    withheld = [c for c in schema.columns if not c.released]
    lines = [
        "",
        "## How it was made",
        "",
        f"- Generator: dpsynth {_md(release.get('dpsynth_version', ''))}, engine `{f.engine}`.",
        f"- Privacy budget of this release: epsilon = {f.eps}, delta = {f.delta}.",
        f"- Privacy unit: {_md(schema.privacy_unit.description)}; at most k = "
        f"{schema.privacy_unit.max_rows} row(s) per "
        "unit were used (extra rows dropped at random before measuring).",
        "- Steps: the engine measured noisy marginal counts (differentially private noise",
        "  added to counts of column combinations), fitted a model to those noisy counts",
        "  only, and sampled the rows from that model.",
        f"- Synthetic rows: {f.rows} (chosen from a noisy estimate or set by the custodian; "
        "not the true size of the real table).",
        f"- Released columns ({len(released)}): " + _names([c.name for c in released]) + ".",
    ]
    derived = schema.derived_columns
    if derived:
        lines.append("- Derived columns (computed from the other synthetic columns after "
                     "sampling, never measured): " + ", ".join(
                         f"`{_md(c.name)}` = `{_md(c.expr)}`" for c in derived) + ".")
    if withheld:
        lines.append("- Withheld columns (identifiers and free text, never released): "
                     + _names([c.name for c in withheld]) + ".")
    if release.get("created"):
        lines.append(f"- Created: {_md(release['created'])}.")
    if release.get("seed") is not None:
        lines.append(f"- Sampler seed (post-processing only): {_md(release['seed'])}.")
    return lines


def _privacy_statement(schema: Schema, release: Mapping[str, Any], f: _Facts) -> list[str]:
    statement = release.get("statement") or (
        f"The release is ({f.eps}, {f.delta})-differentially private for "
        f"{schema.privacy_unit.description}."
    )
    return ["", "## Privacy statement", "", _md(statement), *_PRIVACY_SCOPE]


def _known_limits(schema: Schema) -> list[str]:
    released = schema.measured_columns
    binned = [c for c in released if c.kind in ("integer", "float", "date", "datetime")]
    coded = [c for c in released if c.kind == "code"]
    lines = ["## Known limits", ""]
    if binned:
        lines.append("- Numbers and dates were released as bins and drawn **uniformly inside "
                     "their bin** (numbers on their grid: whole numbers for integers, the "
                     "schema's `precision` for floats): values within a bin carry no "
                     "information (affected: " + _names([c.name for c in binned]) + ").")
    atoms = [c for c in binned if c.atoms]
    if atoms:
        lines.append("- Exact values with their own cell (released exactly, e.g. a zero or a "
                     "top code): " + ", ".join(
                         f"`{_md(c.name)}` ({', '.join(f'{a:g}' for a in c.atoms)})"
                         for c in atoms) + ".")
    if coded:
        lines.append("- Codes are released as **groups** (the group label, not the original "
                     "code): " + ", ".join(f"`{_md(c.name)}` ({_md(c.system)})" for c in coded)
                     + ".")
    return [*lines, *_GENERAL_LIMITS]


def _rules(rules: Mapping[str, Any] | None) -> list[str]:
    """The schema's rules: enforced ones (never broken) and warnings (with counts)."""
    if not rules or not (rules.get("enforced") or rules.get("warnings")):
        return []
    lines = ["", "## Rules", ""]
    for w in rules.get("warnings") or []:
        if w["violating_rows"]:
            lines.append(f"- **Warning rule `{_md(w['name'])}` is broken in "
                         f"{w['violating_rows']} synthetic row(s) "
                         f"({100 * w['violating_share']:.1f}%)**: `{_md(w['require'])}`.")
        else:
            lines.append(f"- Warning rule `{_md(w['name'])}` holds on every row: "
                         f"`{_md(w['require'])}`.")
    for e in rules.get("enforced") or []:
        lines.append(f"- Enforced rule `{_md(e['name'])}` holds on every row (generated rows "
                     f"breaking it were redrawn: {100 * e['rejected_share']:.1f}% of draws)"
                     + (f": `{_md(e['require'])}`" if e.get("require") else "") + ".")
    lines.append("- Enforcing rules conditions the model's distribution on them; rows were "
                 "redrawn, never edited.")
    return lines


def _how_to_cite(schema: Schema, f: _Facts) -> list[str]:
    return [
        "",
        "## How to cite",
        "",
        f"Cite the synthetic release as: *Synthetic {_md(schema.name)} data, dpsynth release "
        f"{f.rid}, engine {f.engine}, (epsilon = {f.eps}, delta = {f.delta})-differential "
        "privacy*, and cite the original data as:",
        "",
        f"> {_md(schema.citation) if schema.citation else '(no citation given in the schema)'}",
        "",
        "State in any publication that the analysis used differentially private synthetic",
        "data, not the real records.",
        "",
    ]


def datasheet_markdown(schema: Schema, release: Mapping[str, Any]) -> str:
    """The datasheet of a release.

    ``release`` holds public facts: ``release_id``, ``engine``, ``epsilon``,
    ``delta``, ``rows`` (synthetic rows), optionally ``created``,
    ``dpsynth_version``, ``dataset_id``, ``statement`` (the privacy report's plain
    statement), ``seed``, ``rules`` (what generation did with the schema's rules) and
    ``unit_rows`` (the DP rows-per-patient histogram, :class:`dpsynth.record.RowsPerPatient`).
    """
    f = _Facts.of(release)
    lines = [
        f"# Datasheet: synthetic `{_md(schema.name)}` (release `{f.rid}`)",
        *_WARNING_AND_PURPOSE,
        *_origin(schema),
        *_how_made(schema, release, f),
        *unit_section_markdown(schema, release.get("unit_rows")),
        *_privacy_statement(schema, release, f),
        *_known_limits(schema),
        *_rules(release.get("rules")),
        *_how_to_cite(schema, f),
    ]
    return "\n".join(lines)
