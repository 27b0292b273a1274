"""The page shell shared by the public HTML reports (privacy and quality).

Owns :func:`html_page`: one self-contained document (inline CSS, a Content-Security-
Policy that allows only inline styles and ``data:`` images; no scripts, fonts or
remote resources) and the stylesheet every public report uses. It holds no report
content and imports nothing private.
"""

from __future__ import annotations

import html

__all__ = ["html_page"]

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
.plots { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
figure { margin: 0; border: 1px solid #e3e6eb; padding: 6px; background: #fff; }
figure img, figure svg { display: block; max-width: 100%; height: auto; }
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
