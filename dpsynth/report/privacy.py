"""The privacy report of a release: what was protected, how, and what the guarantee means.

Owns ``privacy-report.json`` (:func:`privacy_report`) and ``privacy-report.html``
(:func:`render_privacy_html`): the privacy unit and contribution bound k, the
neighbouring relation, every DP step with its zCDP cost (rho) and noise scale,
the totals for this release and for the dataset so far (from the ledger), the
(epsilon, delta) statement in plain words, and what the guarantee does not cover.
Also owns the shared page shell of the HTML reports (:func:`html_page`).

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

from dpsynth.errors import InternalError
from dpsynth.privacy.accountant import epsilon_for
from dpsynth.schema import Schema

__all__ = ["REPORT_FORMAT", "ChargeLike", "html_page", "privacy_report", "render_privacy_html"]

REPORT_FORMAT = "dpsynth.privacy-report/v1"
_DATASET_KEYS = ("dataset_id", "total_epsilon", "total_delta", "spent_epsilon",
                 "remaining_epsilon", "releases")


class ChargeLike(Protocol):
    """One accounted DP step (:class:`dpsynth.privacy.accountant.Charge` fits)."""

    step: str
    mechanism: str
    rho: float
    columns: tuple[str, ...]
    noise_scale: float | None
    sensitivity: float | None


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
) -> dict[str, Any]:
    """The JSON-able privacy report of one release.

    ``epsilon``/``delta`` are what the custodian requested and ``rho`` the zCDP
    budget reserved for them; ``charges`` are the accountant's steps. The
    guarantee stated is the conversion of the rho actually spent (the sum of the
    charges) at ``delta``, which never exceeds the request. ``dataset`` holds
    the ledger's totals (``total_epsilon``, ``total_delta``, ``spent_epsilon``,
    ``remaining_epsilon``, ``releases``) after this release.
    """
    if not 0 < delta < 1:
        raise InternalError(f"delta ({delta}) must be in (0, 1)")
    spent_rho = math.fsum(float(c.rho) for c in charges)
    if spent_rho > rho * (1 + 1e-9) + 1e-15:
        raise InternalError(f"charges spend rho {spent_rho:.6g}, more than the budget {rho:.6g}")
    guarantee_eps = epsilon_for(spent_rho, delta)
    budget_eps = epsilon_for(rho, delta)
    unit = schema.privacy_unit
    k = unit.max_rows
    who = "one patient" if unit.column is not None else "one person (one row)"
    steps = []
    for i, c in enumerate(charges, start=1):
        steps.append({
            "index": i,
            "step": c.step,
            "mechanism": c.mechanism,
            "columns": list(c.columns),
            "rho": float(c.rho),
            "noise_scale": _num(c.noise_scale),
            "sensitivity": _num(c.sensitivity),
            "share_of_release": float(c.rho) / spent_rho if spent_rho > 0 else 0.0,
        })
    statement = (
        f"This release is ({guarantee_eps:.4g}, {delta:.3g})-differentially private for "
        f"{who}: adding or removing all of one {'patient' if unit.column else 'person'}'s "
        f"records (at most {k} row{'s' if k != 1 else ''}) changes the probability of any "
        f"result of this release by at most a factor of e^{guarantee_eps:.4g} "
        f"(about {math.exp(min(guarantee_eps, 50)):.3g}), except with probability at most "
        f"{delta:.3g}."
    )
    neighbouring = (
        f"Two input tables are neighbours when one is the other with all rows of one "
        f"{'patient' if unit.column else 'person'} added or removed. Each patient keeps at most "
        f"k = {k} row(s) (rows beyond k are dropped at random before anything is measured), so "
        f"one patient changes any count by at most {k}."
        if unit.column is not None else
        "Two input tables are neighbours when one is the other with one row (one person) "
        "added or removed; the schema declares one row per person (k = 1)."
    )
    not_covered = [
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
    ]
    return {
        "format": REPORT_FORMAT,
        "release_id": release_id,
        "dataset_id": dataset_id if dataset_id is not None else schema.name,
        "schema": {"name": schema.name, "version": schema.version, "sha256": schema.sha256},
        "privacy_unit": {
            "description": unit.description,
            "column": unit.column,
            "max_rows": k,
        },
        "neighbouring_relation": neighbouring,
        "accounting": (
            "Each step is measured in zero-concentrated differential privacy (zCDP); costs "
            "(rho) add up across steps and across releases, and the total is converted to "
            "(epsilon, delta) with the conversion of Canonne, Kamath and Steinke (2020). Noise "
            "comes from OpenDP's samplers on integer counts."
        ),
        "engine": {"name": engine, "settings": dict(engine_settings)},
        "steps": steps,
        "release": {
            "requested_epsilon": float(epsilon),
            "requested_delta": float(delta),
            "budget_rho": float(rho),
            "budget_epsilon": budget_eps,
            "spent_rho": spent_rho,
            "epsilon": guarantee_eps,
            "delta": float(delta),
            "steps": len(steps),
        },
        "dataset": _dataset_block(dataset_summary),
        "statement": statement,
        "not_covered": not_covered,
    }


# --------------------------------------------------------------------------- HTML

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 0; background: #f6f7f9; color: #1d2330; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; background: #fff;
       min-height: 100vh; box-shadow: 0 0 12px rgba(0,0,0,.06); }
h1 { font-size: 1.6rem; margin: .2em 0 .1em; }
h2 { font-size: 1.2rem; margin-top: 1.8em; border-bottom: 2px solid #e3e6eb; padding-bottom: .2em; }
h3 { font-size: 1rem; margin: 1.2em 0 .4em; }
.sub { color: #5a6473; margin-top: 0; }
.banner { background: #fff4e0; border-left: 5px solid #e08a00; padding: 10px 14px;
          margin: 14px 0; }
.statement { background: #eaf3ff; border-left: 5px solid #2b6cb0; padding: 12px 16px;
             font-size: 1.05rem; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: .9rem; }
th, td { border: 1px solid #d9dde3; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f2f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.thin td { background: #fff0f0; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; }
dl.kv dt { font-weight: 600; color: #3a4352; }
dl.kv dd { margin: 0; }
.plots { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; border: 1px solid #e3e6eb; padding: 6px; background: #fff; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { font-size: .8rem; color: #5a6473; }
code { background: #f0f2f5; padding: 0 3px; border-radius: 3px; }
.muted { color: #6b7483; font-size: .85rem; }
.swatch { display: inline-block; width: .8em; height: .8em; vertical-align: middle;
          border-radius: 2px; }
details { margin: 4px 0; }
summary { cursor: pointer; }
"""


def html_page(title: str, body: str) -> str:
    """A self-contained HTML document (inline CSS; no scripts, fonts or remote resources)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _e(x: Any) -> str:
    return html.escape(str(x))


def render_privacy_html(report: Mapping[str, Any]) -> str:
    """``privacy-report.html`` from the dict made by :func:`privacy_report`."""
    rel = report["release"]
    unit = report["privacy_unit"]
    parts = [
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
    settings = report["engine"].get("settings") or {}
    if settings:
        parts.append("<h3>Engine settings</h3><table><tbody>")
        for k, v in sorted(settings.items()):
            parts.append(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>")
        parts.append("</tbody></table>")
    parts.append("<h2>Differentially private steps</h2>")
    parts.append("<table><thead><tr><th>#</th><th>Step</th><th>Mechanism</th><th>Columns</th>"
                 "<th>ρ</th><th>Share</th><th>Noise scale</th><th>Sensitivity</th></tr>"
                 "</thead><tbody>")
    for s in report["steps"]:
        cols = ", ".join(s["columns"]) if s["columns"] else "—"
        parts.append(
            f"<tr><td class=\"num\">{s['index']}</td><td>{_e(s['step'])}</td>"
            f"<td>{_e(s['mechanism'])}</td><td>{_e(cols)}</td>"
            f"<td class=\"num\">{_fmt(s['rho'])}</td>"
            f"<td class=\"num\">{100 * s['share_of_release']:.1f}%</td>"
            f"<td class=\"num\">{_fmt(s['noise_scale'])}</td>"
            f"<td class=\"num\">{_fmt(s['sensitivity'])}</td></tr>")
    if not report["steps"]:
        parts.append("<tr><td colspan=\"8\">No DP step was recorded.</td></tr>")
    parts.append("</tbody></table>")
    parts.append("<p class=\"muted\">Noise scale: the standard deviation σ of the Gaussian "
                 "noise added to each count (for noisy-max selection, the scale of the "
                 "selection noise).</p>")
    ds = report.get("dataset")
    parts.append("<h2>The dataset so far</h2>")
    if ds:
        parts.append("<table><tbody>")
        labels = {
            "total_epsilon": "Total budget ε", "total_delta": "Total budget δ",
            "spent_epsilon": "Spent ε (all releases, this one included)",
            "remaining_epsilon": "Remaining ε", "releases": "Releases charged",
        }
        for key, label in labels.items():
            if key in ds:
                val = ds[key]
                shown = _fmt(val) if isinstance(val, float) else _e(val)
                parts.append(f"<tr><th>{label}</th><td class=\"num\">{shown}</td></tr>")
        parts.append("</tbody></table>")
    else:
        parts.append("<p>No ledger totals were recorded for this release.</p>")
    parts.append("<h2>What the guarantee does not cover</h2><ul>")
    parts.extend(f"<li>{_e(x)}</li>" for x in report["not_covered"])
    parts.append("</ul>")
    return html_page(f"Privacy report — {report['release_id']}", "\n".join(parts))
