"""Turning matplotlib figures into PNGs for self-contained HTML reports.

Owns :func:`png_base64` (a Figure drawn on matplotlib's Agg canvas directly, no
pyplot and no global backend change, encoded as base64 for a ``data:`` URI) and
:class:`Watermark`, the text a figure can carry burnt into its pixels.

Public plots (quality report) are encoded with ``mark=None``: no watermark. The
CONFIDENTIAL audit passes its own :class:`Watermark`, so a plot copied out of its
report still says what it is; nothing here adds a mark by default. This module
computes nothing and imports nothing private.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DPI", "Watermark", "png_base64"]

#: Resolution of every embedded plot.
DPI = 90


@dataclass(frozen=True)
class Watermark:
    """Text drawn onto a figure before it is encoded."""

    word: str
    """Large, faint, diagonal across the middle of the figure."""
    caption: str
    """Small and bold in the top-left corner."""
    color: str = "#b00"

    def draw(self, fig: Figure) -> None:
        fig.text(0.5, 0.5, self.word, ha="center", va="center", rotation=30, fontsize=40,
                 color=self.color, alpha=0.15, weight="bold")
        fig.text(0.01, 0.99, self.caption, ha="left", va="top", fontsize=10, color=self.color,
                 weight="bold")


def png_base64(fig: Figure, *, mark: Watermark | None = None, tight: bool = False) -> str:
    """``fig`` as a base64 PNG at :data:`DPI`, without matplotlib's ``Software`` chunk.

    ``mark``: a watermark drawn first (None: none). ``tight``: crop to the drawn
    content (``bbox_inches="tight"``) instead of the figure size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    if mark is not None:
        mark.draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight" if tight else None,
                metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")
