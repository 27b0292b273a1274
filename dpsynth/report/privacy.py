"""The privacy report of a release: what was protected, how, and what the guarantee means.

Owns ``privacy-report.json`` (:func:`privacy_report`) and ``privacy-report.html``
(:func:`render_privacy_html`): the privacy unit and contribution bound k, the
neighbouring relation, every DP step with its zCDP cost (rho) and noise scale,
the totals for this release and for the dataset so far (from the ledger), the
(epsilon, delta) statement in plain words, and what the guarantee does not cover.
The page shell (CSS, document) is :mod:`dpsynth.report.page`.

Must not: receive or show anything computed on the private table (true row
count, exact counts, input validation results, the input file's hash); it gets
the accountant's charges, public settings and the ledger's budget totals only.
It does not import the ledger (totals arrive as a plain dict) nor opendp.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from dpsynth.errors import InternalError, UsageError
from dpsynth.privacy.accountant import UNIT_ROWS_STEP, Budget, epsilon_for
from dpsynth.report.page import html_page
from dpsynth.schema import PrivacyUnit, Schema

__all__ = ["REPORT_FORMAT", "ChargeLike", "privacy_report", "render_privacy_html"]

REPORT_FORMAT = "dpsynth.privacy-report/v1"
_DATASET_KEYS = ("dataset_id", "total_epsilon", "total_delta", "spent_epsilon",
                 "remaining_epsilon", "releases", "schema_drafts")
_DATASET_LABELS = {
    "total_epsilon": "Total budget ε", "total_delta": "Total budget δ",
    "spent_epsilon": "Spent ε so far on this dataset (all releases and schema drafts, "
                     "this one included)",
    "remaining_epsilon": "Remaining ε", "releases": "Releases charged",
    "schema_drafts": "Schema drafts charged (dpsynth schema draft)",
}
_ACCOUNTING = (
    "Each step is measured in zero-concentrated differential privacy (zCDP); costs "
    "(rho) add up across steps and across releases, and the total is converted to "
    "(epsilon, delta) with the conversion of Canonne, Kamath and Steinke (2020). Noise "
    "comes from OpenDP's samplers on integer counts."
)
_NOT_COVERED = (
    "The schema is public: column names, category lists, bounds, bins and code groupings "
    "were written from documentation and are released as they are, not protected.",
    "The existence of the dataset, the fact that a release was made, and its settings "
    "(epsilon, delta, engine, synthetic row count) are public.",
    "Population-level inference is not prevented: conclusions about groups of people "
    "(for example a disease being common among older patients) are what the data is for, "
    "and may affect individuals who share those traits whether or not they are in the table.",
    "Small groups are noisy: counts for rare categories or small subgroups are dominated "
    "by the added noise; see the quality report before relying on them.",
    "Rows are not real patients: each synthetic row is drawn from a model fitted to noisy "
    "statistics; do not use rows to identify, contact or make decisions about anyone.",
    "The guarantee is per dataset and across releases only as recorded in the ledger; "
    "other releases of the same patients from other systems consume separate budgets.",
)


class ChargeLike(Protocol):
    """One accounted DP step (:class:`dpsynth.privacy.accountant.Charge` fits; read only)."""

    @property
    def step(self) -> str: ...
    @property
    def mechanism(self) -> str: ...
    @property
    def rho(self) -> float: ...
    @property
    def columns(self) -> tuple[str, ...]: ...
    @property
    def noise_scale(self) -> float | None: ...
    @property
    def sensitivity(self) -> float | None: ...


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _dataset_block(dataset: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Keep only the ledger's budget totals (never per-charge details like input hashes)."""
    if dataset is None:
        return None
    out: dict[str, Any] = {}
    for key in _DATASET_KEYS:
        if key in dataset:
            out[key] = dataset[key]
    if "releases" not in out:
        if "number_of_releases" in dataset:
            out["releases"] = dataset["number_of_releases"]
        elif isinstance(dataset.get("charges"), Sequence):
            out["releases"] = len(dataset["charges"])
    return out


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "—"
    return f"{x:.{digits}g}"


def _spent_rho(charges: Sequence[ChargeLike], rho: float) -> float:
    """The rho the charges spend; an internal error if it does not fit ``rho``."""
    spent = math.fsum(float(c.rho) for c in charges)
    try:
        fits = Budget(rho).covers(Budget(spent))
    except UsageError as exc:  # a negative or non-finite rho here is our bug
        raise InternalError(f"the release's budget or charges are invalid: {exc}") from None
    if not fits:
        raise InternalError(f"charges spend rho {spent:.6g}, more than the budget {rho:.6g}")
    return spent


def _steps(charges: Sequence[ChargeLike], spent_rho: float) -> list[dict[str, Any]]:
    return [{
        "index": i,
        "step": c.step,
        "mechanism": c.mechanism,
        "columns": list(c.columns),
        "rho": float(c.rho),
        "noise_scale": _num(c.noise_scale),
        "sensitivity": _num(c.sensitivity),
        "share_of_release": float(c.rho) / spent_rho if spent_rho > 0 else 0.0,
    } for i, c in enumerate(charges, start=1)]


def _statement(unit: PrivacyUnit, epsilon: float, delta: float) -> str:
    """The guarantee in plain words."""
    k = unit.max_rows
    who = "one patient" if unit.column is not None else "one person (one row)"
    return (
        f"This release is ({epsilon:.4g}, {delta:.3g})-differentially private for "
        f"{who}: adding or removing all of one {'patient' if unit.column else 'person'}'s "
        f"records (at most {k} row{'s' if k != 1 else ''}) changes the probability of any "
        f"result of this release by at most a factor of e^{epsilon:.4g} "
        f"(about {math.exp(min(epsilon, 50)):.3g}), except with probability at most "
        f"{delta:.3g}."
    )


def _neighbouring(unit: PrivacyUnit) -> str:
    if unit.column is None:
        return ("Two input tables are neighbours when one is the other with one row (one person) "
                "added or removed; the schema declares one row per person (k = 1).")
    k = unit.max_rows
    return (
        f"Two input tables are neighbours when one is the other with all rows of one "
        f"{'patient' if unit.column else 'person'} added or removed. Each patient keeps at most "
        f"k = {k} row(s) (rows beyond k are dropped at random before anything is measured), so "
        f"one patient changes any count by at most {k}."
    )


def privacy_report(
    *,
    schema: Schema,
    release_id: str,
    engine: str,
    engine_settings: Mapping[str, Any],
    epsilon: float,
    delta: float,
    rho: float,
    charges: Sequence[ChargeLike],
    dataset_summary: Mapping[str, Any] | None = None,
    dataset_id: str | None = None,
    workload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-able privacy report of one release.

    ``epsilon``/``delta`` are what the custodian requested and ``rho`` the zCDP
    budget reserved for them; ``charges`` are the accountant's steps. The
    guarantee stated is the conversion of the rho actually spent (the sum of the
    charges) at ``delta``, which never exceeds the request. ``dataset`` holds
    the ledger's totals (``total_epsilon``, ``total_delta``, ``spent_epsilon``,
    ``remaining_epsilon``, ``releases``) after this release. ``workload`` is the
    engine's description of the marginals it aimed at (``model.info["workload"]``:
    public, from the schema and the settings), listed as the report's ``workload``.
    """
    if not 0 < delta < 1:
        raise InternalError(f"delta ({delta}) must be in (0, 1)")
    spent_rho = _spent_rho(charges, rho)
    guarantee_eps = epsilon_for(spent_rho, delta)
    unit = schema.privacy_unit
    steps = _steps(charges, spent_rho)
    return {
        "format": REPORT_FORMAT,
        "release_id": release_id,
        "dataset_id": dataset_id if dataset_id is not None else schema.name,
        "schema": {"name": schema.name, "version": schema.version, "sha256": schema.sha256},
        "privacy_unit": {
            "description": unit.description,
            "column": unit.column,
            "max_rows": unit.max_rows,
            "rows_cap": unit.rows_cap,
            "represent": unit.represent,
            "rows_represent": unit.rows_represent,
        },
        "neighbouring_relation": _neighbouring(unit),
        "accounting": _ACCOUNTING,
        "engine": {"name": engine, "settings": dict(engine_settings)},
        "workload": dict(workload or {}),
        "steps": steps,
        "release": {
            "requested_epsilon": float(epsilon),
            "requested_delta": float(delta),
            "budget_rho": float(rho),
            "budget_epsilon": epsilon_for(rho, delta),
            "spent_rho": spent_rho,
            "epsilon": guarantee_eps,
            "delta": float(delta),
            "steps": len(steps),
        },
        "dataset": _dataset_block(dataset_summary),
        "statement": _statement(unit, guarantee_eps, delta),
        "not_covered": list(_NOT_COVERED),
    }


# --------------------------------------------------------------------------- HTML


def _e(x: Any) -> str:
    return html.escape(str(x))


def _guarantee_html(report: Mapping[str, Any]) -> list[str]:
    rel = report["release"]
    unit = report["privacy_unit"]
    return [
        f"<h1>Privacy report</h1><p class=\"sub\">Release <code>{_e(report['release_id'])}"
        f"</code> of dataset <code>{_e(report['dataset_id'])}</code> — schema "
        f"<code>{_e(report['schema']['name'])}</code> version "
        f"{_e(report['schema']['version'])}</p>",
        "<div class=\"banner\"><strong>Synthetic data.</strong> The rows of this release are "
        "not real patients.</div>",
        "<h2>The guarantee</h2>",
        f"<p class=\"statement\">{_e(report['statement'])}</p>",
        "<dl class=\"kv\">",
        f"<dt>Privacy unit</dt><dd>{_e(unit['description'])}</dd>",
        f"<dt>Contribution bound k</dt><dd>{_e(unit['max_rows'])} row(s) per unit</dd>",
        f"<dt>What a synthetic row represents</dt><dd>{_e(unit['rows_represent'])}</dd>",
        f"<dt>Rows per patient</dt><dd>measured under DP (step <code>{_e(UNIT_ROWS_STEP)}"
        f"</code>, sensitivity 1: one patient adds one count), clamped at "
        f"{_e(unit['rows_cap'])}</dd>" if unit.get("column") else "",
        f"<dt>Neighbouring relation</dt><dd>{_e(report['neighbouring_relation'])}</dd>",
        f"<dt>Accounting</dt><dd>{_e(report['accounting'])}</dd>",
        f"<dt>Engine</dt><dd><code>{_e(report['engine']['name'])}</code></dd>",
        "</dl>",
        "<h2>This release</h2>",
        "<table><tbody>",
        f"<tr><th>Requested (ε, δ)</th><td class=\"num\">({_fmt(rel['requested_epsilon'])}, "
        f"{_fmt(rel['requested_delta'], 3)})</td></tr>",
        f"<tr><th>Budget reserved (zCDP ρ)</th><td class=\"num\">{_fmt(rel['budget_rho'])}"
        "</td></tr>",
        f"<tr><th>Spent by the steps below (ρ)</th><td class=\"num\">{_fmt(rel['spent_rho'])}"
        "</td></tr>",
        f"<tr><th>Guarantee (ε at δ = {_fmt(rel['delta'], 3)})</th><td class=\"num\">"
        f"{_fmt(rel['epsilon'])}</td></tr>",
        "</tbody></table>",
    ]


def _settings_html(settings: Mapping[str, Any]) -> list[str]:
    if not settings:
        return []
    return ["<h3>Engine settings</h3><table><tbody>",
            *(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in sorted(settings.items())),
            "</tbody></table>"]


def _workload_html(workload: Mapping[str, Any]) -> list[str]:
    """The engine's workload: its generic part, then the analysis marginals (schema's
    ``analysis`` section) with their weights."""
    if not workload:
        return []
    parts = ["<h3>Workload</h3><table><tbody>"]
    for key, value in workload.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = "; ".join(
                f"{', '.join(v['columns'])} (weight {_fmt(v['weight'])}"
                f"{', measured first' if v.get('measured_first') else ''})" for v in value)
        elif isinstance(value, list):
            value = "; ".join(", ".join(v) if isinstance(v, list) else str(v) for v in value) or "none"
        parts.append(f"<tr><th>{_e(key.replace('_', ' '))}</th><td>{_e(value)}</td></tr>")
    parts.append("</tbody></table>")
    return parts


def _steps_html(steps: Sequence[Mapping[str, Any]]) -> list[str]:
    parts = ["<h2>Differentially private steps</h2>",
             "<table><thead><tr><th>#</th><th>Step</th><th>Mechanism</th><th>Columns</th>"
             "<th>ρ</th><th>Share</th><th>Noise scale</th><th>Sensitivity</th></tr>"
             "</thead><tbody>"]
    for s in steps:
        cols = ", ".join(s["columns"]) if s["columns"] else "—"
        parts.append(
            f"<tr><td class=\"num\">{s['index']}</td><td>{_e(s['step'])}</td>"
            f"<td>{_e(s['mechanism'])}</td><td>{_e(cols)}</td>"
            f"<td class=\"num\">{_fmt(s['rho'])}</td>"
            f"<td class=\"num\">{100 * s['share_of_release']:.1f}%</td>"
            f"<td class=\"num\">{_fmt(s['noise_scale'])}</td>"
            f"<td class=\"num\">{_fmt(s['sensitivity'])}</td></tr>")
    if not steps:
        parts.append("<tr><td colspan=\"8\">No DP step was recorded.</td></tr>")
    parts.append("</tbody></table>")
    parts.append("<p class=\"muted\">Noise scale: the standard deviation σ of the Gaussian "
                 "noise added to each count (for noisy-max selection, the scale of the "
                 "selection noise).</p>")
    return parts


def _dataset_html(ds: Mapping[str, Any] | None) -> list[str]:
    parts = ["<h2>The dataset so far</h2>"]
    if not ds:
        return [*parts, "<p>No ledger totals were recorded for this release.</p>"]
    parts.append("<table><tbody>")
    for key, label in _DATASET_LABELS.items():
        if key in ds:
            val = ds[key]
            shown = _fmt(val) if isinstance(val, float) else _e(val)
            parts.append(f"<tr><th>{label}</th><td class=\"num\">{shown}</td></tr>")
    parts.append("</tbody></table>")
    return parts


def render_privacy_html(report: Mapping[str, Any]) -> str:
    """``privacy-report.html`` from the dict made by :func:`privacy_report`."""
    parts = [
        *_guarantee_html(report),
        *_settings_html(report["engine"].get("settings") or {}),
        *_workload_html(report.get("workload") or {}),
        *_steps_html(report["steps"]),
        *_dataset_html(report.get("dataset")),
        "<h2>What the guarantee does not cover</h2><ul>",
        *(f"<li>{_e(x)}</li>" for x in report["not_covered"]),
        "</ul>",
    ]
    return html_page(f"Privacy report — {report['release_id']}", "\n".join(parts))
