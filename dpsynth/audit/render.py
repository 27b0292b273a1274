"""Plots and the HTML page of the internal audit report (CONFIDENTIAL).

Owns what the custodian sees: :data:`BANNER`, the figures of the audit (marginal
TVD by degree, association differences, subgroup fidelity, distance to closest
record, the target model's ROC curves) and the page :func:`audit_html`. Every
plot is encoded with the CONFIDENTIAL :class:`~dpsynth.report.plotting.Watermark`
burnt into its pixels, so a plot copied out of the report still says what it is;
the page repeats the banner at its top and bottom, and when printed the top banner
is fixed to every page.

It draws figures computed on the real table by :mod:`dpsynth.audit.utility` and
:mod:`dpsynth.audit.disclosure`: it is on the private side of the boundary, and its
output is written only through :func:`dpsynth.confidential.write_confidential`.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

import numpy as np

from dpsynth.report.plotting import Watermark, png_base64

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["BANNER", "CONFIDENTIAL_MARK", "audit_html", "plots"]

BANNER = ("CONFIDENTIAL: contains statistics of the real table that are NOT differentially "
          "private. Keep with the data custodian; never publish or add to the release bundle.")
CONFIDENTIAL_MARK = Watermark("CONFIDENTIAL", "CONFIDENTIAL: real-data statistics, not DP")
"""Drawn on every plot of the audit (and on no public plot)."""
_JSON_SECTIONS = (("Associations", "correlations"), ("Train on synthetic, test on real", "tstr"),
                  ("Train on synthetic, test on real: declared analysis targets", "tstr_targets"),
                  ("Subgroup fidelity", "subgroups"))


def _png(fig: Figure) -> str:
    # the audit's plots are cropped to their content and keep matplotlib's Software tag
    return png_base64(fig, mark=CONFIDENTIAL_MARK, tight=True)


def _new_figure(size: tuple[float, float]) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    return fig, fig.add_subplot()


def _tvd_boxplot(tvds: dict[int, list[tuple[tuple[str, ...], float]]]) -> str:
    fig, ax = _new_figure((6, 3.2))
    data = [[t for _, t in tvds[k]] or [0.0] for k in sorted(tvds)]
    ax.boxplot(data)
    ax.set_xticks(range(1, len(data) + 1), [f"{k}-way" for k in sorted(tvds)])
    ax.set_ylabel("TVD (real vs synthetic)")
    ax.set_title("Marginal total-variation distance")
    return _png(fig)


def _association_heatmap(diff: np.ndarray, names: tuple[str, ...]) -> str:
    fig, ax = _new_figure((1.5 + 0.45 * len(names), 1.2 + 0.45 * len(names)))
    lim = max(0.05, float(np.abs(diff).max()))
    im = ax.imshow(diff, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    fig.colorbar(im, ax=ax, label="Cramér's V: synthetic - real")
    ax.set_title("Association differences")
    return _png(fig)


def _subgroup_scatter(pts: list[tuple[int, float, str]]) -> str:
    fig, ax = _new_figure((6, 3.2))
    for col in sorted({p[2] for p in pts}):
        xs = [max(p[0], 1) for p in pts if p[2] == col]
        ys = [p[1] for p in pts if p[2] == col]
        ax.scatter(xs, ys, label=col)
    ax.set_xscale("log")
    ax.set_xlabel("real rows in the group (log)")
    ax.set_ylabel("mean 1-way TVD inside the group")
    ax.set_title("Subgroup fidelity: small groups suffer most")
    ax.legend(fontsize=7)
    return _png(fig)


def _dcr_bars(curves: dict[str, np.ndarray], n_cols: int) -> str:
    fig, ax = _new_figure((6, 3.2))
    width = 0.8 / len(curves)
    for i, (label, v) in enumerate(curves.items()):
        h = np.bincount(v, minlength=n_cols + 1)[: n_cols + 1] / max(v.size, 1)
        ax.bar(np.arange(n_cols + 1) + i * width, h, width=width, label=label)
    ax.set_xlabel("Hamming distance to the closest record (columns that differ)")
    ax.set_ylabel("share of rows")
    ax.set_title("Distance to closest record")
    ax.legend(fontsize=7)
    return _png(fig)


def _roc_curves(roc: dict[str, Any]) -> str:
    fig, ax = _new_figure((4, 4))
    for label, (y, score) in roc.items():
        order = np.argsort(-score)
        ys = y[order]
        tpr = np.concatenate([[0], np.cumsum(ys) / max(ys.sum(), 1)])
        fpr = np.concatenate([[0], np.cumsum(~ys) / max((~ys).sum(), 1)])
        ax.plot(fpr, tpr, label=label.replace("_", " "))
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Target model tested on real rows")
    ax.legend(fontsize=7)
    return _png(fig)


def plots(tvds: dict[int, list[tuple[tuple[str, ...], float]]], corr: dict[str, Any],
          names: tuple[str, ...], subgroups: list[dict[str, Any]],
          curves: dict[str, np.ndarray], roc: dict[str, Any]) -> dict[str, str]:
    """Title -> base64 PNG of each plot that has data, every one marked CONFIDENTIAL."""
    out = {"Marginal TVD by degree": _tvd_boxplot(tvds),
           "Association differences (Cramér's V)": _association_heatmap(corr["_diff"], names)}
    pts = [(g["real_rows"], g["tvd_1way_inside"], sg["column"]) for sg in subgroups
           if sg.get("status") == "ok" for g in sg["groups"] if g["tvd_1way_inside"] is not None]
    if pts:
        out["Subgroup fidelity"] = _subgroup_scatter(pts)
    if curves:
        out["Distance to closest record"] = _dcr_bars(curves, len(names))
    if roc:
        out["Train-on-synthetic, test-on-real ROC"] = _roc_curves(roc)
    return out


def audit_html(report: dict[str, Any], plots: dict[str, str]) -> str:
    """The CONFIDENTIAL HTML page of a (stripped) audit report with its ``plots``."""
    e = html.escape
    banner = f"<p class='banner top'>{e(BANNER)}</p>"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>CONFIDENTIAL audit {e(report['release_id'])}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        ".banner{background:#b00;color:#fff;padding:1em;font-weight:bold}"
        "table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px}"
        "pre{background:#f4f4f4;padding:.5em;overflow:auto}"
        # printed, the banner is repeated at the top of every page
        "@media print{.banner.top{position:fixed;top:0;left:0;right:0;margin:0}"
        "body{margin-top:6em}.banner.bottom{display:none}}</style></head><body>",
        banner,
        f"<h1>CONFIDENTIAL internal audit: {e(report['release_id'])}</h1>",
        f"<p>Real rows: {report['real_rows']}; synthetic rows: {report['synthetic_rows']}; "
        f"created {e(report['created'])}</p>",
        *([f"<p>Utility figures weight each synthetic row by <code>"
           f"{e(report['utility_weighted_by'])}</code> (the rows stand for "
           f"{report['synthetic_rows_represented']} rows); disclosure figures use the released "
           "rows as they are.</p>"] if report.get("utility_weighted_by") else []),
        "<h2>Marginal TVD</h2><table><tr><th>degree</th><th>compared</th><th>mean</th>"
        "<th>worst marginals</th></tr>",
    ]
    for k in ("tvd_1way", "tvd_2way", "tvd_3way"):
        s = report["utility"][k]
        worst = "; ".join(f"{' x '.join(w['columns'])} ({w['tvd']:.3f})" for w in s["worst"][:5])
        mean = f"{s['mean']:.4f}" if s["mean"] is not None else "-"
        parts.append(f"<tr><td>{k[4:]}</td><td>{s['compared']}/{s['marginals']}</td>"
                     f"<td>{mean}</td><td>{e(worst)}</td></tr>")
    parts.append("</table>")
    for title, key in _JSON_SECTIONS:
        parts.append(f"<h2>{title}</h2><pre>{e(json.dumps(report['utility'][key], indent=1))}</pre>")
    parts.append("<h2>Disclosure checks</h2>")
    parts.append(f"<pre>{e(json.dumps(report['disclosure'], indent=1))}</pre>")
    parts.append("<h2>Plots</h2>")
    for title, data in plots.items():
        parts.append(f"<h3>{e(title)}</h3><img alt='{e(title)}' src='data:image/png;base64,{data}'>")
    parts.append(f"<p class='banner bottom'>{e(BANNER)}</p></body></html>")
    return "".join(parts)
