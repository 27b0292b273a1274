"""Build every report of a release from its public :class:`~dpsynth.record.ReleaseRecord`.

One entry point, :func:`build_reports`: the privacy report (JSON and HTML), the
quality report (against the noisy measurements) and the datasheet. The bundle
layout (:mod:`dpsynth.bundle`) decides where each goes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from dpsynth.record import ReleaseRecord
from dpsynth.report.datasheet import datasheet_markdown
from dpsynth.report.privacy import privacy_report, render_privacy_html
from dpsynth.report.quality import quality_report_html
from dpsynth.report.unit import unit_section_html

__all__ = ["Reports", "build_reports"]


@dataclass(frozen=True)
class Reports:
    """The rendered reports of one release."""

    privacy: dict[str, Any]
    privacy_html: str
    quality_html: str
    datasheet: str


def build_reports(record: ReleaseRecord) -> Reports:
    """All reports of ``record`` (post-processing only)."""
    privacy = privacy_report(
        schema=record.schema, release_id=record.release_id, engine=record.engine,
        engine_settings=dict(record.engine_settings), epsilon=record.budget.epsilon,
        delta=record.budget.delta, rho=record.rho.rho, charges=list(record.charges),
        dataset_summary=dict(record.dataset), workload=record.model.info.get("workload"))
    quality = quality_report_html(
        record.schema, [_Measured(m) for m in record.model.measurements], record.codes,
        record.domain.names, record.domain.sizes, float(record.model.total), record.rules,
        unit_section=unit_section_html(record.schema, record.unit_rows))
    datasheet = datasheet_markdown(record.schema, {
        "release_id": record.release_id, "engine": record.engine,
        "epsilon": record.budget.epsilon, "delta": record.budget.delta, "rows": record.rows,
        "dpsynth_version": record.dpsynth_version, "created": record.created,
        "rules": record.rules, "unit_rows": record.unit_rows})
    return Reports(privacy, render_privacy_html(privacy), quality, datasheet)


def settings_dict(settings: Any) -> dict[str, Any]:
    """An engine's frozen settings as a JSON-able mapping (empty if not a dataclass)."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return dataclasses.asdict(settings)
    return {}


class _Measured:
    """Adapter: a noisy marginal as the quality report reads it, over the full domain.

    Engines may measure over merged categories (MST merges rare ones, a public map
    derived from noisy 1-way counts); such a group's noisy count is shared equally
    among its categories and its noise scale kept (a conservative interval).
    """

    def __init__(self, m: Any) -> None:
        self.columns = tuple(m.columns)
        noisy = np.asarray(m.counts, dtype=float).reshape(m.shape)
        for axis, g in enumerate(getattr(m, "groups", None) or ()):
            if g is not None:
                g = np.asarray(g)
                share = np.bincount(g)[g].astype(float)
                shape = [1] * noisy.ndim
                shape[axis] = g.size
                noisy = noisy.take(g, axis=axis) / share.reshape(shape)
        self.noisy = noisy
        self.sigma = float(m.sigma)
