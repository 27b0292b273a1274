"""The public quality report: the synthetic table against the *noisy* measurements.

Owns ``quality-report.html`` (:func:`quality_report_html`): for every measured
marginal, the synthetic share of each cell next to the noisy measured share with
a 95% interval from the noise scale (share ± 1.96·σ / N̂, where N̂ is the noisy
total estimate), the total variation distance (TVD) between the two per
marginal, bar charts of the 1-way marginals, heatmaps of a few 2-way marginals,
and the declared subgroups with their relative noise (σ / noisy count) so
researchers see where the data is thin, and with their per-group fidelity: inside
each group, the TVD of the synthetic rows against every noisy measurement that holds
the subgroup column (and against each analysis target's, when the schema declares
``analysis.targets``), with an approximate 95% interval from the noise scale
(:func:`within_group_tvd`).

Must not: receive or compute anything on the real table (exact counts, the true
row count, utility against the real data belong to the internal audit report).
Its inputs are DP measurements (public once released) and synthetic codes,
so everything here is post-processing. The HTML is self-contained: inline CSS,
charts as inline SVG (a heatmap's cells a small PNG ``data:`` URI inside it), no scripts,
fonts or remote resources (page shell: :mod:`dpsynth.report.page`; charts, written
directly without matplotlib: :mod:`dpsynth.report.charts`; TVD:
:mod:`dpsynth.report.metrics`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dpsynth.domain import level_labels
from dpsynth.errors import InternalError
from dpsynth.report.charts import MEAS_COLOR, SYN_COLOR, bar_chart_svg, heatmap_svg
from dpsynth.report.metrics import distribution, tvd
from dpsynth.report.page import html_page
from dpsynth.schema import Column, Schema

__all__ = ["MAX_HEATMAPS", "MAX_ONE_WAY_PLOTS", "MeasurementLike", "quality_report_html",
           "within_group_tvd"]

#: At most this many 1-way bar charts (one per released column, in schema order).
MAX_ONE_WAY_PLOTS = 60
#: At most this many 2-way heatmaps (the measured pairs with the largest TVD).
MAX_HEATMAPS = 4
#: Heatmaps are drawn only for marginals up to this many cells.
_MAX_HEATMAP_CELLS = 2500
#: Per-cell rows shown in the detail tables of a marginal.
_MAX_DETAIL_ROWS = 40
#: A subgroup whose relative noise exceeds this is flagged as thin.
THIN_RELATIVE_NOISE = 0.10
_Z95 = 1.96
#: One-sided 95% quantile of the normal distribution (the noise's L1 bound).
_Z95_ONE_SIDED = 1.645
_SYN_COLOR = SYN_COLOR
_MEAS_COLOR = MEAS_COLOR


class MeasurementLike(Protocol):
    """A noisy marginal: ``columns``, noisy counts (``noisy`` or ``counts``), ``sigma`` (read only)."""

    @property
    def columns(self) -> tuple[str, ...]: ...
    @property
    def sigma(self) -> float: ...


@dataclass(frozen=True)
class _Marginal:
    columns: tuple[str, ...]
    shape: tuple[int, ...]
    noisy: np.ndarray  # noisy counts, shape ``shape``
    sigma: float  # per-cell noise std
    synthetic: np.ndarray  # synthetic counts, shape ``shape``
    derived: bool = False  # summed from a larger measurement

    @property
    def cells(self) -> int:
        return int(np.prod(self.shape))

    @property
    def tvd(self) -> float:
        """TVD between the synthetic shares and the measured distribution."""
        return tvd(distribution(self.synthetic), distribution(self.noisy))


@dataclass(frozen=True)
class _Page:
    """What every section of the page needs to know."""

    columns: tuple[str, ...]
    by_name: dict[str, Column]
    n_syn: int  # synthetic rows
    total: float  # the DP estimate of the table's size

    def share(self, count: float) -> float:
        return count / self.total if self.total > 0 else float("nan")

    def half_width(self, sigma: float) -> float:
        """Half the 95% interval of a measured share."""
        return _Z95 * sigma / self.total if self.total > 0 else float("nan")


def _noisy_array(m: Any) -> np.ndarray:
    arr = getattr(m, "noisy", None)
    if arr is None:
        arr = getattr(m, "counts", None)
    if arr is None:
        raise InternalError("a measurement has neither .noisy nor .counts")
    return np.asarray(arr, dtype=float)


def _synthetic_counts(codes: np.ndarray, idx: list[int], shape: tuple[int, ...]) -> np.ndarray:
    if codes.shape[0] == 0:
        return np.zeros(shape)
    flat = np.ravel_multi_index(tuple(codes[:, j] for j in idx), shape)
    return np.bincount(flat, minlength=int(np.prod(shape))).reshape(shape).astype(float)


def _noise_floor(cells: int, sigma: float, total: float) -> float:
    """Expected TVD of the measured shares from the truth due to noise alone (approx.)."""
    if total <= 0:
        return float("nan")
    return min(1.0, 0.5 * cells * sigma * math.sqrt(2 / math.pi) / total)


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _fmt_share(x: float) -> str:
    return f"{100 * x:.2f}%"


def _rel_noise(sigma: float, count: float) -> tuple[str, float]:
    if count <= 0:
        return "≥ 100% (count at or below noise)", math.inf
    r = sigma / count
    return (f"{100 * r:.1f}%" if r < 10 else "> 1000%"), r


# --------------------------------------------------------------------------- marginals


def _marginals(measurements: Sequence[Any], codes: np.ndarray, columns: tuple[str, ...],
               sizes: tuple[int, ...]) -> list[_Marginal]:
    """Each measurement next to the synthetic counts of the same cells."""
    pos = {c: i for i, c in enumerate(columns)}
    out: list[_Marginal] = []
    for m in measurements:
        cols = tuple(m.columns)
        if any(c not in pos for c in cols):
            raise InternalError("a measurement names a column that is not released")
        shape = tuple(sizes[pos[c]] for c in cols)
        noisy = _noisy_array(m).reshape(shape)
        out.append(_Marginal(cols, shape, noisy, float(m.sigma),
                             _synthetic_counts(codes, [pos[c] for c in cols], shape)))
    return out


def _one_way_views(marginals: list[_Marginal], columns: tuple[str, ...]) -> dict[str, _Marginal]:
    """One 1-way view per released column: measured directly, or summed (post-processing)
    from the smallest measurement that contains it (noise std grows with sqrt(cells summed))."""
    one_way: dict[str, _Marginal] = {m.columns[0]: m for m in marginals if len(m.columns) == 1}
    for c in columns:
        if c in one_way:
            continue
        holders = [m for m in marginals if c in m.columns]
        if not holders:
            continue
        src = min(holders, key=lambda m: m.cells)
        axis = src.columns.index(c)
        others = tuple(i for i in range(len(src.shape)) if i != axis)
        summed = src.cells // src.shape[axis]
        one_way[c] = _Marginal((c,), (src.shape[axis],), src.noisy.sum(axis=others),
                               src.sigma * math.sqrt(summed),
                               src.synthetic.sum(axis=others), derived=True)
    return one_way


# --------------------------------------------------------------------------- sections


def _intro(schema: Schema, p: _Page, n_measurements: int) -> list[str]:
    return [
        "<h1>Quality report</h1>",
        f"<p class=\"sub\">Schema <code>{html.escape(schema.name)}</code> version "
        f"{html.escape(schema.version)} — {p.n_syn:,} synthetic rows, {len(p.columns)} columns, "
        f"{n_measurements} noisy measurements</p>",
        "<div class=\"banner\"><strong>Synthetic data.</strong> Rows are not real patients. "
        "Everything on this page compares the synthetic table with the <em>noisy</em> "
        "(differentially private) measurements the model was fitted to; nothing here was "
        "computed on the real table.</div>",
        "<h2>How to read this report</h2>",
        "<ul><li><strong>Synthetic share</strong>: fraction of synthetic rows in a cell.</li>"
        "<li><strong>Measured share</strong>: noisy count / estimated total "
        f"(N̂ ≈ {p.total:,.0f}); it may be negative for empty cells. The 95% interval is "
        "± 1.96·σ / N̂, from the Gaussian noise std σ of that measurement.</li>"
        "<li><strong>TVD</strong>: total variation distance between the synthetic "
        "distribution and the measured one (negative counts set to 0, then normalised); "
        "0 is identical, 1 disjoint. The <em>noise floor</em> is the TVD expected from the "
        "measurement noise alone: a TVD near the floor is as close as the noise allows.</li>"
        "<li><strong>Relative noise</strong> of a group: σ / noisy count. Above "
        f"{100 * THIN_RELATIVE_NOISE:.0f}% the group is thin (highlighted): treat its figures "
        "with care; near or above 100% they are mostly noise."
        "</li></ul>",
    ]


def _rules_section(rules: Mapping[str, Any] | None) -> list[str]:
    """Every declared rule: warnings first (with how many rows break them), then
    the enforced ones with the share of generated rows redrawn because of them."""
    if not rules or not (rules.get("enforced") or rules.get("warnings")):
        return []
    parts = ["<h2>Rules</h2>",
             "<p>Error rules are enforced: rows breaking one are redrawn, so none is broken "
             "in the synthetic table. Warning rules are only counted.</p>",
             "<table><thead><tr><th>Rule</th><th>Severity</th><th>Condition</th>"
             "<th>Synthetic rows breaking it</th><th>Draws redrawn</th></tr></thead><tbody>"]
    for w in rules.get("warnings") or []:
        cls = ' class="thin"' if w["violating_rows"] else ""
        parts.append(f"<tr{cls}><td>{html.escape(w['name'])}</td><td>warning</td>"
                     f"<td><code>{html.escape(w['require'])}</code></td>"
                     f"<td>{w['violating_rows']} ({100 * w['violating_share']:.1f}%)</td>"
                     "<td>—</td></tr>")
    for e in rules.get("enforced") or []:
        parts.append(f"<tr><td>{html.escape(e['name'])}</td><td>error</td>"
                     f"<td><code>{html.escape(e.get('require') or e.get('description') or '')}"
                     "</code></td><td>0</td>"
                     f"<td>{e['rejected_draws']} ({100 * e['rejected_share']:.1f}%)</td></tr>")
    parts.append("</tbody></table>")
    return parts


def _tvd_table(ranked: list[_Marginal], total: float) -> list[str]:
    parts = ["<h2>Measured marginals</h2>",
             "<table id=\"marginals\"><thead><tr><th>Columns</th><th>Cells</th>"
             "<th>σ (per cell)</th><th>95% interval ± (share)</th><th>TVD</th>"
             "<th>Noise floor</th></tr></thead><tbody>"]
    for m in ranked:
        parts.append(
            f"<tr><td>{html.escape(' × '.join(m.columns))}</td>"
            f"<td class=\"num\">{m.cells:,}</td><td class=\"num\">{m.sigma:.3g}</td>"
            f"<td class=\"num\">{_fmt_share(_Z95 * m.sigma / total) if total > 0 else '—'}</td>"
            f"<td class=\"num\">{m.tvd:.4f}</td>"
            f"<td class=\"num\">{_noise_floor(m.cells, m.sigma, total):.4f}</td></tr>")
    if not ranked:
        parts.append("<tr><td colspan=\"6\">No measurements were recorded.</td></tr>")
    parts.append("</tbody></table>")
    return parts


def _one_way_plots(p: _Page, one_way: dict[str, _Marginal]) -> list[str]:
    parts = ["<h2>One-way marginals</h2>",
             f"<p class=\"muted\"><span class=\"swatch\" style=\"background:{_SYN_COLOR}\">"
             "</span> synthetic share &nbsp; <span class=\"swatch\" "
             f"style=\"background:{_MEAS_COLOR}\"></span> noisy measured share with its 95% "
             "interval. Columns marked “summed” come from a larger measurement (noise adds "
             "up over the summed cells).</p><div class=\"plots\">"]
    plotted = 0
    for c in p.columns:
        if c not in one_way or plotted >= MAX_ONE_WAY_PLOTS:
            continue
        m = one_way[c]
        labels = (level_labels(p.by_name[c]) if c in p.by_name
                  else [str(i) for i in range(m.cells)])
        syn = m.synthetic / max(p.n_syn, 1)
        meas = m.noisy / p.total if p.total > 0 else np.zeros(m.shape)
        half = _Z95 * m.sigma / p.total if p.total > 0 else 0.0
        note = " (summed)" if m.derived else ""
        svg = bar_chart_svg(f"q1-{plotted}", c, labels, syn, meas, half, note=note)
        parts.append(_figure(svg, f"{c}{note}: TVD {m.tvd:.3f}"))
        plotted += 1
    parts.append("</div>")
    if len(one_way) > plotted:
        parts.append(f"<p class=\"muted\">{len(one_way) - plotted} more one-way marginals are "
                     "not plotted (limit reached).</p>")
    return parts


def _heatmaps(p: _Page, ranked: list[_Marginal]) -> list[str]:
    pairs = [m for m in ranked if len(m.columns) == 2 and m.cells <= _MAX_HEATMAP_CELLS]
    if not pairs:
        return []
    parts = ["<h2>Two-way marginals with the largest TVD</h2><div class=\"plots\">"]
    for k, m in enumerate(pairs[:MAX_HEATMAPS]):
        labels2 = tuple(level_labels(p.by_name[c]) for c in m.columns)
        syn = m.synthetic / max(m.synthetic.sum(), 1.0)
        meas = m.noisy / p.total if p.total > 0 else m.noisy
        vmax = float(max(syn.max(initial=0.0), meas.max(initial=0.0), 1e-12))
        svg = heatmap_svg(f"q2-{k}", (m.columns[0], m.columns[1]), (labels2[0], labels2[1]),
                          [("noisy measured", meas), ("synthetic", syn)], vmax)
        parts.append(_figure(svg, f"{m.columns[0]} × {m.columns[1]}: TVD {m.tvd:.3f}"))
    parts.append("</div>")
    return parts


def _subgroup_table(p: _Page, name: str, m: _Marginal) -> list[str]:
    parts = [f"<h3>{html.escape(name)}</h3>",
             "<table class=\"subgroup\"><thead><tr><th>Group</th>"
             "<th>Synthetic share</th><th>Measured share (95% interval)</th>"
             "<th>Noisy count</th><th>Relative noise</th></tr></thead><tbody>"]
    half = p.half_width(m.sigma)
    for i, lb in enumerate(level_labels(p.by_name[name])[: m.cells]):
        cnt = float(m.noisy[i])
        text, r = _rel_noise(m.sigma, cnt)
        share = p.share(cnt)
        cls = " class=\"thin\"" if r > THIN_RELATIVE_NOISE else ""
        parts.append(
            f"<tr{cls}><td>{html.escape(lb)}</td>"
            f"<td class=\"num\">{_fmt_share(m.synthetic[i] / max(p.n_syn, 1))}</td>"
            f"<td class=\"num\">{_fmt_share(share)} "
            f"({_fmt_share(share - half)} … {_fmt_share(share + half)})</td>"
            f"<td class=\"num\">{cnt:,.0f} ± {_Z95 * m.sigma:,.0f}</td>"
            f"<td class=\"num\">{text}</td></tr>")
    parts.append("</tbody></table>")
    return parts


def within_group_tvd(m: _Marginal, axis: int, group: int) -> tuple[float, float, float] | None:
    """TVD, inside one group (code ``group`` on ``axis``), of the synthetic rows against the
    noisy measurement over the other axes, with a half-width ``h``: ``(tvd, h, noisy group
    count)``, or None when the noisy group count is not positive.

    By the triangle inequality the TVD against the noise-free counts lies within the TVD
    against the noisy ones ± the noise's own TVD, ``0.5 · Σ|e_i| / N̂_g`` over the group's
    ``c`` cells; ``h`` is that sum's 95% bound for Gaussian noise of std σ (mean
    ``c·σ·√(2/π)``, std ``σ·√(c·(1 - 2/π))``). Approximate: it ignores the clipping of
    negative counts and the noise in the group total ``N̂_g`` itself.
    """
    noisy = np.take(m.noisy, group, axis=axis)
    syn = np.take(m.synthetic, group, axis=axis)
    n_g = float(noisy.sum())
    if n_g <= 0:
        return None
    cells = noisy.size
    l1 = m.sigma * (cells * math.sqrt(2 / math.pi) + _Z95_ONE_SIDED * math.sqrt(cells * (1 - 2 / math.pi)))
    return tvd(distribution(syn), distribution(noisy)), min(1.0, 0.5 * l1 / n_g), n_g


def _interval(t: float, h: float) -> str:
    return f"{t:.3f} ({max(0.0, t - h):.3f} … {min(1.0, t + h):.3f})"


def _group_fidelity_table(schema: Schema, p: _Page, name: str, marginals: list[_Marginal]) -> list[str]:
    """Per group of subgroup ``name``: mean within-group TVD over the measurements holding
    it, and the within-group TVD of each analysis target measured jointly with it."""
    holders = [m for m in marginals if name in m.columns and len(m.columns) > 1]
    if not holders:
        return [f"<p class=\"muted\">No measurement holds {html.escape(name)} with another "
                "column: there is nothing to compare inside its groups.</p>"]
    targets = [t for t in schema.analysis.targets if t != name]
    by_target = {t: [m for m in holders if t in m.columns] for t in targets}
    targets = [t for t in targets if by_target[t]]
    head = "".join(f"<th>{html.escape(t)} inside the group (95% interval)</th>" for t in targets)
    parts = [f"<p>Inside each group of {html.escape(name)}: the TVD of the synthetic rows "
             f"against the {len(holders)} noisy measurements that hold {html.escape(name)} with "
             "other columns (mean, with the mean of their approximate 95% intervals for the TVD "
             "against the noise-free counts).</p>",
             f"<table class=\"subgroup\"><thead><tr><th>Group</th><th>Mean TVD inside the "
             f"group (95% interval)</th>{head}</tr></thead><tbody>"]
    labels = level_labels(p.by_name[name])
    for g, lb in enumerate(labels):
        res = [within_group_tvd(m, m.columns.index(name), g) for m in holders
               if g < m.shape[m.columns.index(name)]]
        ok = [r for r in res if r is not None]
        if not ok:
            parts.append(f"<tr class=\"thin\"><td>{html.escape(lb)}</td><td colspan=\"{1 + len(targets)}\">"
                         "noisy group count at or below zero: mostly noise</td></tr>")
            continue
        mean_t, mean_h = float(np.mean([r[0] for r in ok])), float(np.mean([r[1] for r in ok]))
        row = [f"<td>{html.escape(lb)}</td>", f"<td class=\"num\">{_interval(mean_t, mean_h)}</td>"]
        for t in targets:
            m = min(by_target[t], key=lambda x: x.cells)
            r = within_group_tvd(m, m.columns.index(name), g)
            row.append(f"<td class=\"num\">{_interval(r[0], r[1]) if r else '—'}</td>")
        cls = " class=\"thin\"" if mean_h > 0.5 else ""
        parts.append(f"<tr{cls}>{''.join(row)}</tr>")
    parts.append("</tbody></table>")
    return parts


def _subgroups(schema: Schema, p: _Page, one_way: dict[str, _Marginal],
               marginals: list[_Marginal]) -> list[str]:
    parts = ["<h2>Declared subgroups</h2>"]
    subgroups = [s for s in schema.subgroups if s in one_way]
    if not subgroups:
        parts.append("<p>The schema declares no subgroup with a measurement.</p>")
    for s in subgroups:
        parts.extend(_subgroup_table(p, s, one_way[s]))
        parts.extend(_group_fidelity_table(schema, p, s, marginals))
    return parts


def _details(p: _Page, one_way: dict[str, _Marginal]) -> list[str]:
    """Per-cell tables of the 1-way marginals (folded)."""
    parts = ["<h2>One-way marginals in detail</h2>"]
    for c in p.columns:
        if c not in one_way:
            continue
        m = one_way[c]
        half = p.half_width(m.sigma)
        parts.append(f"<details><summary>{html.escape(c)} ({m.cells} levels)</summary>"
                     "<table><thead><tr><th>Level</th><th>Synthetic share</th>"
                     "<th>Measured share</th><th>95% interval</th></tr></thead><tbody>")
        for i, lb in enumerate(level_labels(p.by_name[c])[: min(m.cells, _MAX_DETAIL_ROWS)]):
            share = p.share(float(m.noisy[i]))
            parts.append(
                f"<tr><td>{html.escape(lb)}</td>"
                f"<td class=\"num\">{_fmt_share(m.synthetic[i] / max(p.n_syn, 1))}</td>"
                f"<td class=\"num\">{_fmt_share(share)}</td>"
                f"<td class=\"num\">{_fmt_share(share - half)} … {_fmt_share(share + half)}"
                "</td></tr>")
        if m.cells > _MAX_DETAIL_ROWS:
            parts.append(f"<tr><td colspan=\"4\">… {m.cells - _MAX_DETAIL_ROWS} more levels"
                         "</td></tr>")
        parts.append("</tbody></table></details>")
    return parts


def quality_report_html(
    schema: Schema,
    measurements: Sequence[Any],
    synthetic_codes: np.ndarray,
    columns: tuple[str, ...],
    sizes: tuple[int, ...],
    total_estimate: float,
    rules: Mapping[str, Any] | None = None,
    unit_section: Sequence[str] = (),
) -> str:
    """``quality-report.html``: synthetic codes vs the noisy measurements.

    ``synthetic_codes`` is rows x ``columns`` integer codes with domain ``sizes``;
    ``measurements`` are DP marginals (``.columns``, ``.noisy`` or ``.counts``,
    ``.sigma``); ``total_estimate`` is the DP estimate of the table's size, used
    to turn noisy counts into shares. ``rules`` is what generation did with the
    schema's rules (:meth:`dpsynth.generate.Generated.rules_json`). ``unit_section``:
    the HTML of "What the rows represent" (:func:`dpsynth.report.unit.unit_section_html`).
    """
    codes = np.asarray(synthetic_codes)
    if codes.ndim != 2 or codes.shape[1] != len(columns) or len(columns) != len(sizes):
        raise InternalError("synthetic codes, columns and sizes do not agree")
    marginals = _marginals(measurements, codes, columns, sizes)
    one_way = _one_way_views(marginals, columns)
    p = _Page(columns, {c.name: c for c in (*schema.columns, *schema.model_columns)},
              int(codes.shape[0]),
              float(total_estimate))
    ranked = sorted(marginals, key=lambda m: -m.tvd)
    parts = [
        *_intro(schema, p, len(marginals)),
        *unit_section,
        *_rules_section(rules),
        *_tvd_table(ranked, p.total),
        *_one_way_plots(p, one_way),
        *_heatmaps(p, ranked),
        *_subgroups(schema, p, one_way, marginals),
        *_details(p, one_way),
    ]
    return html_page(f"Quality report — {schema.name}", "\n".join(parts))
