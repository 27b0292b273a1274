"""What the synthetic rows represent, and the DP rows-per-patient histogram, for the reports.

Owns the wording both the quality report (HTML, :func:`unit_section_html`) and the
datasheet (Markdown, :func:`unit_section_markdown`) use: what one synthetic row stands
for under the privacy unit ("one randomly chosen encounter per patient" when k = 1,
"up to k encounters per patient" otherwise, in the schema's words, from
:attr:`~dpsynth.schema.PrivacyUnit.rows_represent`), what that does to shares of
outcomes that go with many rows, and the noisy histogram of patients by number of
rows (clamped at the schema's public cap) with 95% intervals from its noise scale.

Must not: receive anything computed on the real table. Its inputs are the public schema
and the DP histogram (:class:`~dpsynth.record.RowsPerPatient`), so everything here is
post-processing.
"""

from __future__ import annotations

import html
from typing import Protocol

from dpsynth.schema import UNIT_ROWS_COLUMN, PrivacyUnit, Schema, plural

__all__ = ["RowsPerPatientLike", "unit_section_html", "unit_section_markdown"]

_Z95 = 1.96


class RowsPerPatientLike(Protocol):
    """The DP histogram as :class:`dpsynth.record.RowsPerPatient` holds it (read only)."""

    @property
    def counts(self) -> tuple[float, ...]: ...
    @property
    def sigma(self) -> float: ...
    @property
    def cap(self) -> int: ...
    @property
    def patients(self) -> float: ...
    @property
    def mean_rows(self) -> float: ...
    @property
    def kept_share(self) -> float: ...
    @property
    def over_k_share(self) -> float: ...
    def shares(self) -> list[float]: ...


def _consequence(unit: PrivacyUnit) -> str:
    """Why it matters, and what the option ``represent: all_rows`` does."""
    many = plural(unit.row_name)
    if unit.column is None:
        return ""
    if unit.represent == "all_rows":
        return (f"Unweighted, the rows describe patients (up to {unit.max_rows} "
                f"{many} each), not {many}. Weighted by {unit.weight_column!r}, shares "
                f"approximate those among all {many}: the model learned each patient's "
                f"number of {many} (clamped at {unit.rows_cap}) together with the other "
                "columns. This is an approximation: patients with more than "
                f"{unit.rows_cap} {many} count as {unit.rows_cap}, and the weight says "
                f"nothing about how a patient's {many} differ from one another.")
    return (f"Shares in this table are shares among patients, not among {many}: an outcome "
            f"that is more common in patients with many {many} (repeat admissions, for "
            f"example) is rarer here than among all {many}. To approximate {many}, set "
            "privacy_unit.represent: all_rows in the schema (adds a weight column).")


def _rows_label(i: int, cap: int, unit: PrivacyUnit) -> str:
    many = plural(unit.row_name)
    return f"{cap} or more {many}" if i == cap else f"{i} {unit.row_name if i == 1 else many}"


def unit_section_html(schema: Schema, unit_rows: RowsPerPatientLike | None) -> list[str]:
    """The quality report's "What the rows represent" section (HTML fragments)."""
    unit = schema.privacy_unit
    parts = ["<h2 id=\"unit\">What the rows represent</h2>",
             f"<p>Each synthetic row represents <strong>{html.escape(unit.rows_represent)}"
             "</strong>.</p>"]
    consequence = _consequence(unit)
    if consequence:
        parts.append(f"<p>{html.escape(consequence)}</p>")
    if unit.represent == "all_rows":
        parts.append(f"<p>In the tables below, <code>{UNIT_ROWS_COLUMN}</code> is that modelled "
                     f"count of {html.escape(plural(unit.row_name))} per patient: an internal "
                     "column, not released; <code>"
                     f"{html.escape(unit.weight_column)}</code> is computed from it.</p>")
    if unit_rows is None:
        return parts
    many = plural(unit.row_name)
    half = _Z95 * unit_rows.sigma
    parts += [
        f"<h3>Patients by number of {html.escape(many)} (differentially private)</h3>",
        f"<p>Noisy counts (σ = {unit_rows.sigma:.3g} patients each, one patient adds one "
        f"count); the real table was never read for this page. Patients with more than "
        f"{unit.max_rows} {html.escape(many)}: {100 * unit_rows.over_k_share:.1f}%. Mean "
        f"{html.escape(many)} per patient: at least {unit_rows.mean_rows:.2f}. Share of "
        f"{html.escape(many)} kept by the bound k = {unit.max_rows}: at most "
        f"{100 * unit_rows.kept_share:.1f}%.</p>",
        "<table id=\"rows-per-patient\"><thead><tr><th>Patients with</th>"
        "<th>Noisy count</th><th>95% interval ±</th><th>Share of patients</th></tr>"
        "</thead><tbody>"]
    for i, (count, share) in enumerate(zip(unit_rows.counts, unit_rows.shares(),
                                           strict=True), start=1):
        parts.append(f"<tr><td>{html.escape(_rows_label(i, unit_rows.cap, unit))}</td>"
                     f"<td class=\"num\">{count:,.0f}</td><td class=\"num\">{half:,.0f}</td>"
                     f"<td class=\"num\">{100 * share:.1f}%</td></tr>")
    parts.append("</tbody></table>")
    return parts


def unit_section_markdown(schema: Schema, unit_rows: RowsPerPatientLike | None) -> list[str]:
    """The datasheet's "What the rows represent" section (Markdown lines)."""
    unit = schema.privacy_unit
    lines = ["", "## What the rows represent", "",
             f"Each synthetic row represents **{_md(unit.rows_represent)}**."]
    consequence = _consequence(unit)
    if consequence:
        lines += ["", _md(consequence)]
    if unit_rows is None:
        return lines
    many = plural(unit.row_name)
    half = _Z95 * unit_rows.sigma
    lines += [
        "",
        f"Patients by number of {many}, measured with differential privacy (noisy counts, "
        f"noise sigma {unit_rows.sigma:.3g} patients, 95% interval ± {half:,.0f}; part of "
        "this release's budget):",
        "",
        "| patients with | noisy count | share of patients |",
        "|---|---:|---:|",
    ]
    for i, (count, share) in enumerate(zip(unit_rows.counts, unit_rows.shares(),
                                           strict=True), start=1):
        lines.append(f"| {_rows_label(i, unit_rows.cap, unit)} | {count:,.0f} | "
                     f"{100 * share:.1f}% |")
    lines += ["", f"Patients with more than k = {unit.max_rows} {many}: "
              f"{100 * unit_rows.over_k_share:.1f}%; {many} kept by the bound: at most "
              f"{100 * unit_rows.kept_share:.1f}% of all {many}."]
    return lines


def _md(text: str) -> str:
    s = " ".join(str(text).split())
    return s.replace("<", "&lt;").replace(">", "&gt;")
