"""Charts of the public quality report, written directly as inline SVG (no matplotlib).

Owns :func:`bar_chart_svg` (the one-way marginals: synthetic share next to the noisy
measured share with its 95% interval) and :func:`heatmap_svg` (a two-way marginal: the
noisy measured and synthetic shares side by side on one colour scale). Each chart is one
``<svg role="img">`` element with a ``<title>`` and a ``<desc>`` (referenced by
``aria-labelledby``), text labels as SVG text, and a ``<title>`` tooltip on every bar
group with the level's full label and exact shares. A heatmap's cells are a tiny PNG
(one pixel per cell, encoded here with :mod:`zlib`) embedded as a ``data:`` URI and
scaled up without smoothing; labels, axes and the colour bar are SVG.

Writing SVG text takes milliseconds per chart, where drawing and encoding a matplotlib
PNG took about half a second (issue 15): the report is the same information, sharper,
and smaller. Text widths are estimated (about 0.6 em per character), not measured.

Pure string and numpy work on what it is given: it reads nothing, imports nothing
private, and every label is escaped.
"""

from __future__ import annotations

import base64
import html
import math
import struct
import zlib
from collections.abc import Sequence

import numpy as np

__all__ = ["MEAS_COLOR", "SYN_COLOR", "bar_chart_svg", "heatmap_svg", "png_rgb"]

SYN_COLOR = "#2b6cb0"
MEAS_COLOR = "#e08a00"
_INK = "#333333"
_GRID = "#e3e6eb"
_AXIS = "#999999"
_FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif\""
#: Approximate advance of one character, in em (sans-serif, mixed case and digits).
_CHAR_EM = 0.6
#: matplotlib's viridis at 17 evenly spaced points (interpolated linearly in between).
_VIRIDIS = ("440154", "48186a", "472d7b", "424086", "3b528b", "33638d", "2c728e", "26828e",
            "21918c", "1fa088", "28ae80", "3fbc73", "5ec962", "84d44b", "addc30", "d8e219",
            "fde725")


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _short(label: str, limit: int) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _text_width(text: str, size: float) -> float:
    return len(text) * size * _CHAR_EM


def _f(x: float) -> str:
    """A coordinate: one decimal, no trailing zeros."""
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (lo <= 0 <= hi is not required)."""
    span = hi - lo
    if not span > 0 or not math.isfinite(span):
        return [lo]
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _tick_label(v: float, step: float) -> str:
    """``v`` as a percentage with as many decimals as the tick step needs (2.5% steps: 1)."""
    pct = 100 * step
    digits = 0
    while digits < 4 and pct > 0 and abs(round(pct, digits) - pct) > 1e-9 * max(pct, 1):
        digits += 1
    return f"{100 * v:.{digits}f}%"


def _svg_open(ident: str, width: float, height: float, title: str, desc: str) -> str:
    return (f"<svg class=\"chart\" role=\"img\" "
            f"width=\"{_f(width)}\" height=\"{_f(height)}\" "
            f"viewBox=\"0 0 {_f(width)} {_f(height)}\" aria-labelledby=\"{ident}-t {ident}-d\" "
            f"{_FONT} font-size=\"10\" fill=\"{_INK}\">"
            f"<title id=\"{ident}-t\">{_esc(title)}</title>"
            f"<desc id=\"{ident}-d\">{_esc(desc)}</desc>")


def _legend(x: float, y: float) -> str:
    """Two swatches: synthetic, noisy measured with its interval."""
    return (f"<g font-size=\"9\"><rect x=\"{_f(x)}\" y=\"{_f(y - 7)}\" width=\"8\" height=\"8\" "
            f"fill=\"{SYN_COLOR}\"/><text x=\"{_f(x + 11)}\" y=\"{_f(y)}\">synthetic</text>"
            f"<rect x=\"{_f(x + 62)}\" y=\"{_f(y - 7)}\" width=\"8\" height=\"8\" "
            f"fill=\"{MEAS_COLOR}\"/><text x=\"{_f(x + 73)}\" y=\"{_f(y)}\">noisy measured "
            "(95% interval)</text></g>")


def bar_chart_svg(ident: str, name: str, labels: Sequence[str], syn: np.ndarray,
                  meas: np.ndarray, half: float, *, note: str = "") -> str:
    """The one-way marginal of column ``name``: per level, the synthetic share ``syn`` and
    the noisy measured share ``meas`` with the interval ``± half``.

    ``ident`` must be unique in the page (it names the title and description)."""
    n = len(labels)
    syn = np.asarray(syn, dtype=float)
    meas = np.asarray(meas, dtype=float)
    width = 324.0 if n <= 12 else min(666.0, 84.0 + 20.0 * n)
    tick_size = 9.0
    short = [_short(lb, 14) for lb in labels]
    horizontal = n <= 3 and max((len(s) for s in short), default=0) <= 10
    longest = max((_text_width(s, tick_size) for s in short), default=0.0)
    if n > 40:
        bottom = 24.0
    elif horizontal:
        bottom = 22.0
    else:
        bottom = 14 + 0.71 * longest
    top, right = 36.0, 8.0
    left = 48.0
    height = 208.0 + bottom
    plot_w = width - left - right
    step = plot_w / max(n, 1)
    if n <= 40 and not horizontal:  # the first rotated label reaches left of its bar
        left = max(left, 0.71 * longest - step / 2 + 16)
        plot_w = width - left - right
        step = plot_w / max(n, 1)
    plot_h = height - top - bottom
    lows = meas - half
    highs = meas + half
    y_lo = min(0.0, float(np.min(lows, initial=0.0)), float(np.min(syn, initial=0.0)))
    y_hi = max(float(np.max(highs, initial=0.0)), float(np.max(syn, initial=0.0)), 1e-9)
    ticks = _nice_ticks(y_lo, y_hi)
    y_lo, y_hi = min(y_lo, ticks[0]), max(y_hi, ticks[-1])
    t_step = ticks[1] - ticks[0] if len(ticks) > 1 else y_hi

    def y(v: float) -> float:
        return top + plot_h * (y_hi - v) / (y_hi - y_lo)

    desc = (f"Bar chart of the {n} levels of {name}{note}: synthetic share (blue) and noisy "
            f"measured share (orange) with its 95% interval (± {_pct(half)}); the tables "
            "below give every value.")
    out = [_svg_open(ident, width, height, f"One-way marginal of {name}", desc),
           f"<text x=\"{_f(left)}\" y=\"13\" font-size=\"11\" font-weight=\"600\">"
           f"{_esc(name)}</text>", _legend(left, 27)]
    # grid and y axis
    out.append(f"<g font-size=\"{tick_size:g}\" text-anchor=\"end\">")
    for t in ticks:
        yy = _f(y(t))
        out.append(f"<line x1=\"{_f(left)}\" x2=\"{_f(width - right)}\" y1=\"{yy}\" y2=\"{yy}\" "
                   f"stroke=\"{_GRID}\"/><text x=\"{_f(left - 4)}\" y=\"{yy}\" dy=\"3\">"
                   f"{_tick_label(t, t_step)}</text>")
    out.append("</g>")
    out.append(f"<text transform=\"translate(11 {_f(top + plot_h / 2)}) rotate(-90)\" "
               "text-anchor=\"middle\" font-size=\"9\">share</text>")
    # bars, one group per level (tooltip: the full label and the values)
    bw = 0.4 * step
    cap = 0.12 * step if n <= 30 else 0.0
    y0 = y(0.0)
    out.append("<g>")
    for i in range(n):
        cx = left + step * (i + 0.5)
        s, m = float(syn[i]), float(meas[i])
        tip = (f"{labels[i]}: synthetic {_pct(s)}, measured {_pct(m)} "
               f"({_pct(m - half)} … {_pct(m + half)})")
        out.append(f"<g><title>{_esc(tip)}</title>")
        for x0, v, color in ((cx - bw, s, SYN_COLOR), (cx, m, MEAS_COLOR)):
            yv = y(v)
            out.append(f"<rect x=\"{_f(x0)}\" y=\"{_f(min(yv, y0))}\" width=\"{_f(bw)}\" "
                       f"height=\"{_f(max(abs(y0 - yv), 0.5))}\" fill=\"{color}\"/>")
        ex, ya, yb = _f(cx + bw / 2), _f(y(m + half)), _f(y(m - half))
        err = f"M{ex} {ya}V{yb}"
        if cap:
            c0, c1 = _f(cx + bw / 2 - cap), _f(2 * cap)
            err += f"M{c0} {ya}h{c1}M{c0} {yb}h{c1}"
        out.append(f"<path d=\"{err}\" stroke=\"{_INK}\" stroke-width=\"0.8\" fill=\"none\"/>"
                   "</g>")
    out.append("</g>")
    out.append(f"<line x1=\"{_f(left)}\" x2=\"{_f(width - right)}\" y1=\"{_f(y0)}\" "
               f"y2=\"{_f(y0)}\" stroke=\"{_AXIS}\"/>")
    # x labels
    base = top + plot_h
    if n > 40:
        out.append(f"<text x=\"{_f(left + plot_w / 2)}\" y=\"{_f(base + 16)}\" font-size=\"9\" "
                   f"text-anchor=\"middle\">{n} levels (see the tables below)</text>")
    else:
        out.append(f"<g font-size=\"{tick_size:g}\" text-anchor=\""
                   f"{'middle' if horizontal else 'end'}\">")
        for i, s_lb in enumerate(short):
            tx = _f(left + step * (i + 0.5))
            if horizontal:
                out.append(f"<text x=\"{tx}\" y=\"{_f(base + 14)}\">{_esc(s_lb)}</text>")
            else:
                ty = _f(base + 10)
                out.append(f"<text x=\"{tx}\" y=\"{ty}\" transform=\"rotate(-45 {tx} {ty})\">"
                           f"{_esc(s_lb)}</text>")
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------- heatmaps


def _viridis(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB (viridis, linear between 17 anchors)."""
    anchors = np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in _VIRIDIS], dtype=float)
    pos = np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0) * (len(anchors) - 1)
    i = np.minimum(pos.astype(int), len(anchors) - 2)
    frac = (pos - i)[..., None]
    rgb = anchors[i] * (1 - frac) + anchors[i + 1] * frac
    return np.rint(rgb).astype(np.uint8)


def png_rgb(rgb: np.ndarray) -> bytes:
    """A height x width x 3 uint8 array as a PNG file (8-bit RGB, no metadata)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, 3 * w)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 9)) + chunk(b"IEND", b""))


def _raster(x: float, y: float, w: float, h: float, rgb: np.ndarray) -> str:
    b64 = base64.b64encode(png_rgb(rgb)).decode("ascii")
    return (f"<image x=\"{_f(x)}\" y=\"{_f(y)}\" width=\"{_f(w)}\" height=\"{_f(h)}\" "
            "preserveAspectRatio=\"none\" image-rendering=\"optimizeSpeed\" "
            f"style=\"image-rendering:pixelated\" href=\"data:image/png;base64,{b64}\"/>")


def heatmap_svg(ident: str, names: tuple[str, str], labels: tuple[Sequence[str], Sequence[str]],
                panels: Sequence[tuple[str, np.ndarray]], vmax: float) -> str:
    """Heatmaps of one two-way marginal over the same cells, side by side on one colour
    scale from 0 to ``vmax`` (values below 0 show as 0): ``panels`` are (title, shares of
    shape rows x columns); ``names`` the row and column variables."""
    rows, cols = panels[0][1].shape
    vmax = vmax if vmax > 0 else 1.0
    tick = 8.0
    row_lb = [_short(lb, 14) for lb in labels[0]] if rows <= 24 else []
    col_lb = [_short(lb, 10) for lb in labels[1]] if cols <= 24 else []
    cell_w = max(min(20.0, max(4.0, 380.0 / cols)), 72.0 / cols)  # room for the title
    cell_h = min(18.0, max(4.0, 360.0 / rows))
    pw, ph = cell_w * cols, cell_h * rows
    left = 18 + (max((_text_width(s, tick) for s in row_lb), default=0.0) + 6 if row_lb else 4)
    top, gap = 18.0, 18.0
    x_ext = 0.71 * max((_text_width(s, tick) for s in col_lb), default=0.0) + 8 if col_lb else 4
    bottom = x_ext + 18
    bar_x = left + len(panels) * pw + (len(panels) - 1) * gap + 14
    width = bar_x + 12 + 40 + 14
    height = top + ph + bottom
    desc = (f"Heatmaps of the two-way marginal of {names[0]} (rows, {rows} levels) and "
            f"{names[1]} (columns, {cols} levels): " + ", ".join(t for t, _ in panels)
            + f" shares, on one colour scale from 0% (dark purple) to {_pct(vmax)} (yellow).")
    out = [_svg_open(ident, width, height, f"Two-way marginal of {names[0]} and {names[1]}",
                     desc)]
    for k, (title, data) in enumerate(panels):
        x0 = left + k * (pw + gap)
        out.append(f"<text x=\"{_f(x0 + pw / 2)}\" y=\"12\" text-anchor=\"middle\" "
                   f"font-size=\"9\">{_esc(title)}</text>")
        out.append(_raster(x0, top, pw, ph, _viridis(np.asarray(data, dtype=float) / vmax)))
        out.append(f"<rect x=\"{_f(x0)}\" y=\"{_f(top)}\" width=\"{_f(pw)}\" height=\"{_f(ph)}\""
                   f" fill=\"none\" stroke=\"{_AXIS}\" stroke-width=\"0.5\"/>")
        if col_lb:
            out.append(f"<g font-size=\"{tick:g}\" text-anchor=\"end\">")
            for j, lb in enumerate(col_lb):
                cx, yy = _f(x0 + cell_w * (j + 0.5)), _f(top + ph + 9)
                out.append(f"<text x=\"{cx}\" y=\"{yy}\" transform=\"rotate(-45 {cx} {yy})\">"
                           f"{_esc(lb)}</text>")
            out.append("</g>")
        out.append(f"<text x=\"{_f(x0 + pw / 2)}\" y=\"{_f(height - 5)}\" text-anchor=\"middle\""
                   f" font-size=\"9\">{_esc(names[1])}</text>")
    if row_lb:
        out.append(f"<g font-size=\"{tick:g}\" text-anchor=\"end\">")
        for i, lb in enumerate(row_lb):
            out.append(f"<text x=\"{_f(left - 4)}\" y=\"{_f(top + cell_h * (i + 0.5))}\" "
                       f"dy=\"3\">{_esc(lb)}</text>")
        out.append("</g>")
    out.append(f"<text transform=\"translate(10 {_f(top + ph / 2)}) rotate(-90)\" "
               f"text-anchor=\"middle\" font-size=\"9\">{_esc(names[0])}</text>")
    # colour bar: a 1 x 64 raster, top = vmax
    ramp = _viridis(np.linspace(1.0, 0.0, 64)).reshape(64, 1, 3)
    out.append(_raster(bar_x, top, 12, ph, ramp))
    ticks = [t for t in _nice_ticks(0.0, vmax, 4) if 0 <= t <= vmax * (1 + 1e-9)]
    t_step = ticks[1] - ticks[0] if len(ticks) > 1 else vmax
    out.append(f"<g font-size=\"{tick:g}\">")
    for t in ticks:
        yy = _f(top + ph * (1 - t / vmax))
        out.append(f"<line x1=\"{_f(bar_x + 12)}\" x2=\"{_f(bar_x + 15)}\" y1=\"{yy}\" "
                   f"y2=\"{yy}\" stroke=\"{_INK}\"/><text x=\"{_f(bar_x + 17)}\" y=\"{yy}\" "
                   f"dy=\"3\">{_tick_label(t, t_step)}</text>")
    out.append("</g>")
    out.append(f"<text transform=\"translate({_f(width - 5)} {_f(top + ph / 2)}) rotate(-90)\" "
               "text-anchor=\"middle\" font-size=\"9\">share</text>")
    out.append("</svg>")
    return "".join(out)
