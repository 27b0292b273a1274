"""``DATASHEET.md``: a datasheet for the synthetic dataset of one release.

Owns the researcher-facing description of a bundle: purpose, origin (the
schema's source and citation), how it was made (engine, epsilon/delta, privacy
unit), the privacy statement, known limits, how to cite, and a clear warning
that rows are not real patients.

Must not: mention anything computed on the private table (true row count, exact
counts, input file name or hash). Its inputs are the public schema and a dict
of public release facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dpsynth.schema import Schema

__all__ = ["datasheet_markdown"]


def _md(text: Any) -> str:
    """One line of plain text, safe inside Markdown (no raw HTML, no line breaks)."""
    s = " ".join(str(text).split())
    return s.replace("<", "&lt;").replace(">", "&gt;")


def datasheet_markdown(schema: Schema, release: Mapping[str, Any]) -> str:
    """The datasheet of a release.

    ``release`` holds public facts: ``release_id``, ``engine``, ``epsilon``,
    ``delta``, ``rows`` (synthetic rows), optionally ``created``,
    ``dpsynth_version``, ``dataset_id``, ``statement`` (the privacy report's plain
    statement) and ``seed``.
    """
    rid = _md(release.get("release_id", "?"))
    engine = _md(release.get("engine", "?"))
    eps = release.get("epsilon")
    delta = release.get("delta")
    eps_s = f"{float(eps):.4g}" if isinstance(eps, int | float) else "?"
    delta_s = f"{float(delta):.3g}" if isinstance(delta, int | float) else "?"
    rows = release.get("rows")
    rows_s = f"{int(rows):,}" if isinstance(rows, int) else "?"
    released = schema.measured_columns
    withheld = [c for c in schema.columns if not c.measured]
    k = schema.privacy_unit.max_rows
    statement = release.get("statement") or (
        f"The release is ({eps_s}, {delta_s})-differentially private for "
        f"{schema.privacy_unit.description}."
    )
    binned = [c.name for c in released if c.kind in ("integer", "float", "date", "datetime")]
    coded = [c for c in released if c.kind == "code"]
    lines = [
        f"# Datasheet: synthetic `{_md(schema.name)}` (release `{rid}`)",
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
        "## Origin",
        "",
        f"- Table: `{_md(schema.name)}` (schema version {_md(schema.version)}).",
    ]
    if schema.description:
        lines.append(f"- Description: {_md(schema.description)}")
    if schema.source:
        lines.append(f"- Source of the public schema: {_md(schema.source)}")
    if schema.citation:
        lines.append(f"- Original data: {_md(schema.citation)}")
    lines += [
        f"- Schema file: `schema.yaml` in this bundle (SHA-256 `{schema.sha256}`).",
        "",
        "## How it was made",
        "",
        f"- Generator: dpsynth {_md(release.get('dpsynth_version', ''))}, engine `{engine}`.",
        f"- Privacy budget of this release: epsilon = {eps_s}, delta = {delta_s}.",
        f"- Privacy unit: {_md(schema.privacy_unit.description)}; at most k = {k} row(s) per "
        "unit were used (extra rows dropped at random before measuring).",
        "- Steps: the engine measured noisy marginal counts (differentially private noise",
        "  added to counts of column combinations), fitted a model to those noisy counts",
        "  only, and sampled the rows from that model.",
        f"- Synthetic rows: {rows_s} (chosen from a noisy estimate or set by the custodian; "
        "not the true size of the real table).",
        f"- Released columns ({len(released)}): "
        + ", ".join(f"`{_md(c.name)}`" for c in released) + ".",
    ]
    if withheld:
        lines.append("- Withheld columns (identifiers and free text, never released): "
                     + ", ".join(f"`{_md(c.name)}`" for c in withheld) + ".")
    if release.get("created"):
        lines.append(f"- Created: {_md(release['created'])}.")
    if release.get("seed") is not None:
        lines.append(f"- Sampler seed (post-processing only): {_md(release['seed'])}.")
    lines += [
        "",
        "## Privacy statement",
        "",
        _md(statement),
        "",
        "The guarantee covers each patient's records. It does not hide the schema (column",
        "names, categories, bounds are public), the existence of the dataset or this release,",
        "or population-level facts. See `privacy-report.html` for every step and the budget",
        "spent on this dataset across releases.",
        "",
        "## Known limits",
        "",
    ]
    if binned:
        lines.append("- Numbers and dates were released as bins and drawn **uniformly inside "
                     "their bin**: values within a bin carry no information (affected: "
                     + ", ".join(f"`{_md(n)}`" for n in binned) + ").")
    if coded:
        lines.append("- Codes are released as **groups** (the group label, not the original "
                     "code): " + ", ".join(f"`{_md(c.name)}` ({_md(c.system)})" for c in coded)
                     + ".")
    lines += [
        "- **Small groups are noisy**: rare categories and small subgroups are dominated by",
        "  the added noise; check the relative noise in `quality-report.html` before use.",
        "- Only the relationships the model measured are preserved; other associations",
        "  (especially among three or more columns) may be weakened or absent.",
        "- **Cross-column rules may be broken** in some rows (for example a value present",
        "  where it should be missing); `validation/results.json` lists the checks.",
        "- Variance estimates, p-values and confidence intervals computed on synthetic rows",
        "  do not account for the synthesis and the privacy noise.",
        "",
        "## How to cite",
        "",
        f"Cite the synthetic release as: *Synthetic {_md(schema.name)} data, dpsynth release "
        f"{rid}, engine {engine}, (epsilon = {eps_s}, delta = {delta_s})-differential privacy*, "
        "and cite the original data as:",
        "",
        f"> {_md(schema.citation) if schema.citation else '(no citation given in the schema)'}",
        "",
        "State in any publication that the analysis used differentially private synthetic",
        "data, not the real records.",
        "",
    ]
    return "\n".join(lines)
