"""Public reports of a release: privacy accounting, quality against the noisy measurements,
and the datasheet.

Modules:

- :mod:`dpsynth.report.privacy` — ``privacy-report.json`` / ``.html``: unit, neighbouring
  relation, each DP step, totals for the release and the dataset, the (epsilon, delta)
  statement and what it does not cover.
- :mod:`dpsynth.report.quality` — ``quality-report.html``: synthetic marginals vs the
  *noisy* measured marginals, with intervals from the noise scale, and subgroups.
- :mod:`dpsynth.report.datasheet` — ``DATASHEET.md`` for the synthetic dataset.

Shared helpers (also used by the CONFIDENTIAL audit, :mod:`dpsynth.audit`):

- :mod:`dpsynth.report.metrics` — the one total variation distance of the package.
- :mod:`dpsynth.report.plotting` — a matplotlib Figure as a base64 PNG, unmarked unless
  the caller passes a watermark (the audit marks every plot CONFIDENTIAL).
- :mod:`dpsynth.report.charts` — the quality report's bar charts and heatmaps, written
  directly as inline SVG (no matplotlib).
- :mod:`dpsynth.report.page` — the page shell (CSS, document) of the public HTML reports.

Everything here is post-processing of DP outputs (docs/privacy-model.md): these modules never
receive the private table, exact counts or the true row count, and must not import
``dpsynth.io``, ``dpsynth.privacy.session`` or ``dpsynth.audit`` (the boundary test
checks). The internal audit report (utility against the real table) is not part of this
package's public outputs.
"""

from dpsynth.report.datasheet import datasheet_markdown
from dpsynth.report.privacy import privacy_report, render_privacy_html
from dpsynth.report.quality import quality_report_html

__all__ = ["datasheet_markdown", "privacy_report", "quality_report_html", "render_privacy_html"]
