"""Public reports: privacy report (JSON + HTML), quality report, datasheet; headless rendering."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dpsynth.domain import Domain
from dpsynth.privacy.accountant import Charge, epsilon_for, rho_for
from dpsynth.report import (
    datasheet_markdown,
    privacy_report,
    quality_report_html,
    render_privacy_html,
)
from dpsynth.schema import Schema, load_schema

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass(frozen=True)
class FakeMeasurement:
    columns: tuple[str, ...]
    noisy: np.ndarray
    sigma: float


@pytest.fixture(scope="module")
def schema() -> Schema:
    return load_schema(SCHEMAS / "diabetes130.yaml")


def _privacy(schema: Schema) -> dict[str, Any]:
    eps, delta = 1.0, 1e-6
    rho = rho_for(eps, delta)
    charges = [
        Charge("measure 1-way", "discrete gaussian", rho * 0.3, ("race",), 12.5, 1.0),
        Charge("select", "noisy max (gumbel)", rho * 0.2, (), 3.0, 1.0),
        Charge("measure 2-way", "discrete gaussian", rho * 0.45, ("age", "gender"), 14.0, 1.0),
    ]
    dataset = {"total_epsilon": 3.0, "total_delta": 1e-5, "spent_epsilon": 1.9,
               "remaining_epsilon": 1.1, "releases": 2,
               "charges": [{"input_hash": "SECRET-HASH"}]}
    return privacy_report(schema=schema, release_id="rel-42", engine="mst",
                          engine_settings={"degree": 2, "max_cells": 10000}, epsilon=eps,
                          delta=delta, rho=rho, charges=charges, dataset_summary=dataset)


def test_privacy_report_fields(schema: Schema) -> None:
    r = _privacy(schema)
    for key in ("release_id", "privacy_unit", "neighbouring_relation", "steps", "release",
                "dataset", "statement", "not_covered", "engine"):
        assert key in r
    assert r["privacy_unit"]["max_rows"] == schema.privacy_unit.max_rows
    assert len(r["steps"]) == 3 and r["steps"][2]["noise_scale"] == 14.0
    spent = sum(s["rho"] for s in r["steps"])
    assert r["release"]["spent_rho"] == pytest.approx(spent)
    eps = epsilon_for(spent, 1e-6)
    assert r["release"]["epsilon"] == pytest.approx(eps)
    assert r["release"]["epsilon"] <= 1.0 + 1e-9
    assert f"({eps:.4g}, 1e-06)-differentially private" in r["statement"]
    assert r["release"]["budget_epsilon"] == pytest.approx(1.0, rel=1e-6)
    assert r["dataset"] == {"total_epsilon": 3.0, "total_delta": 1e-5, "spent_epsilon": 1.9,
                            "remaining_epsilon": 1.1, "releases": 2}
    text = json.dumps(r)
    assert "SECRET-HASH" not in text
    covered = " ".join(r["not_covered"]).lower()
    for word in ("schema", "existence", "population", "small groups", "not real patients"):
        assert word in covered


def test_privacy_report_rejects_overspend(schema: Schema) -> None:
    from dpsynth.errors import InternalError

    with pytest.raises(InternalError):
        privacy_report(schema=schema, release_id="r", engine="mst", engine_settings={},
                       epsilon=1.0, delta=1e-6, rho=0.01,
                       charges=[Charge("m", "g", 0.02)])


def _quality(schema: Schema, n: int = 3000) -> str:
    d = Domain.from_schema(schema)
    rng = np.random.default_rng(1)
    # skewed synthetic codes so the plots show something
    codes = np.stack([np.minimum(rng.geometric(0.35, n) - 1, k - 1) for k in d.sizes], axis=1)
    total = n * 1.02
    meas = []
    for cols in [(c,) for c in d.names] + [("age", "gender"), ("race", "age"),
                                           ("A1Cresult", "readmitted")]:
        idx = [d.names.index(c) for c in cols]
        shape = tuple(d.sizes[i] for i in idx)
        flat = np.ravel_multi_index(tuple(codes[:, i] for i in idx), shape)
        counts = np.bincount(flat, minlength=int(np.prod(shape))).reshape(shape)
        sigma = 15.0
        meas.append(FakeMeasurement(cols, counts * 1.02 + rng.normal(0, sigma, shape), sigma))
    return quality_report_html(schema, meas, codes, d.names, d.sizes, total)


@pytest.fixture(scope="module")
def quality_html(schema: Schema) -> str:
    return _quality(schema)


def test_quality_report_content(quality_html: str, schema: Schema) -> None:
    # charts are inline SVG, each with a title and a description (no matplotlib PNGs)
    charts = re.findall(r'<svg [^>]*role="img"[^>]*aria-labelledby="([^"]+)"', quality_html)
    assert len(charts) >= len(schema.measured_columns) + 1
    for ids in charts:
        t, d = ids.split()
        assert f'<title id="{t}">' in quality_html and f'<desc id="{d}">' in quality_html
    assert "One-way marginal of race" in quality_html and "noisy measured" in quality_html
    # a heatmap's cells: a valid PNG with one pixel per cell
    from PIL import Image

    cells = re.findall(r'href="data:image/png;base64,([A-Za-z0-9+/=]+)"', quality_html)
    assert cells
    sizes = {Image.open(io.BytesIO(base64.b64decode(b))).size for b in cells}
    assert (10, 6) in sizes  # race (6 levels) x age (10 levels)
    assert "<img" not in quality_html
    assert '<table id="marginals">' in quality_html
    assert "age × gender" in quality_html
    assert "Declared subgroups" in quality_html and "Relative noise" in quality_html
    assert "<script" not in quality_html and "http://" not in quality_html
    # TVD table sorted in decreasing order
    table = quality_html.split('<table id="marginals">')[1].split("</table>")[0]
    tvds = [float(x) for x in re.findall(r'<td class="num">([0-9.]+)</td><td class="num">'
                                         r'[0-9.na]+</td></tr>', table)]
    assert tvds and tvds == sorted(tvds, reverse=True)


def test_datasheet(schema: Schema) -> None:
    md = datasheet_markdown(schema, {"release_id": "rel-42", "engine": "mst", "epsilon": 1.0,
                                     "delta": 1e-6, "rows": 1234, "dpsynth_version": "0.1.0"})
    for heading in ("## Purpose", "## Origin", "## How it was made", "## Privacy statement",
                    "## Known limits", "## How to cite"):
        assert heading in md
    assert "not real patients" in md
    assert "uniformly inside" in md and "groups" in md and "cross-column rules" in md
    assert "Strack" in md  # the citation from the schema
    assert "encounter_id" in md and "Withheld" in md


# --------------------------------------------------------------------------- headless Chromium


class _Chromium:
    """Minimal Chrome DevTools Protocol client over --remote-debugging-pipe (stdlib only)."""

    def __init__(self, exe: str, profile: str) -> None:
        to_r, self._to_w = os.pipe()      # we write commands, chromium reads fd 3
        self._from_r, from_w = os.pipe()  # chromium writes fd 4, we read
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--hide-scrollbars", "--mute-audio",
                f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]

        def child() -> None:
            # copy first: dup2 onto the same number (a fresh process gets fds 3-6 here) is a
            # no-op that keeps close-on-exec, and chromium would start without its pipe
            r, w = os.dup(to_r), os.dup(from_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, close_fds=False,
                                     preexec_fn=child)
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_w)
        os.close(self._from_r)

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            ready, _, _ = select.select([self._from_r], [], [], left)
            if ready:
                chunk = os.read(self._from_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the pipe")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)  # type: ignore[no-any-return]

    def send(self, method: str, params: dict[str, Any] | None = None,
             session: str | None = None, timeout: float = 30) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})  # type: ignore[no-any-return]
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read(deadline))


def _render(exe: str, page: Path, shot: Path, max_height: int = 5000) -> dict[str, Any]:
    """Open ``page``; return console errors, image sizes; save a full-page screenshot."""
    with tempfile.TemporaryDirectory() as profile:
        b = _Chromium(exe, profile)
        try:
            target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            sid = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                b.send(f"{domain}.enable", session=sid)
            b.send("Emulation.setDeviceMetricsOverride",
                   {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False},
                   session=sid)
            b.send("Page.navigate", {"url": page.as_uri()}, session=sid)
            b.wait_event("Page.loadEventFired")
            images = b.send("Runtime.evaluate", {
                "expression": "Array.from(document.images).map(i => [i.complete, "
                              "i.naturalWidth, i.naturalHeight, i.getBoundingClientRect().width])",
                "returnByValue": True}, session=sid)["result"]["value"]
            # inline SVG charts: laid-out size, and the bounding box of what they draw
            svgs = b.send("Runtime.evaluate", {
                "expression": "Array.from(document.querySelectorAll('svg')).map(s => {"
                              "const r = s.getBoundingClientRect(), b = s.getBBox(); "
                              "return [r.width, r.height, b.width, b.height, "
                              "s.querySelectorAll('rect, text, image').length]; })",
                "returnByValue": True}, session=sid)["result"]["value"]
            # the PNGs inside SVG <image> elements decode
            rasters = b.send("Runtime.evaluate", {
                "expression": "Promise.all(Array.from(document.querySelectorAll('svg image'))"
                              ".map(e => new Promise(ok => { const i = new Image(); "
                              "i.onload = () => ok([i.naturalWidth, i.naturalHeight]); "
                              "i.onerror = () => ok([0, 0]); i.src = e.getAttribute('href'); })))",
                "awaitPromise": True, "returnByValue": True}, session=sid)["result"]["value"]
            height = b.send("Runtime.evaluate", {
                "expression": "document.documentElement.scrollHeight",
                "returnByValue": True}, session=sid)["result"]["value"]
            shot_h = min(int(height), max_height)
            data = b.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": 1200, "height": shot_h, "scale": 1}},
                session=sid)["data"]
            shot.write_bytes(base64.b64decode(data))
        finally:
            b.close()
    errors = []
    for e in b.events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            errors.append(str(p.get("exceptionDetails", {}).get("text")))
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(str(p.get("args")))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append(str(p["entry"].get("text")))
    return {"errors": errors, "images": images, "svgs": svgs, "rasters": rasters,
            "height": height}


def _browser() -> str:
    if CHROMIUM is None:
        if os.environ.get("DPSYNTH_REQUIRE_BROWSER"):
            pytest.fail("chromium is required (DPSYNTH_REQUIRE_BROWSER is set) but not found")
        pytest.skip("chromium not installed")
    return CHROMIUM


@pytest.mark.browser
def test_reports_render_in_chromium(schema: Schema, quality_html: str, tmp_path: Path) -> None:
    exe = _browser()
    pages = {
        "privacy": render_privacy_html(_privacy(schema)),
        "quality": quality_html,
    }
    for name, text in pages.items():
        page = tmp_path / f"{name}-report.html"
        page.write_text(text, encoding="utf-8")
        out = _render(exe, page, Path(f"/tmp/report-{name}.png"))
        assert out["errors"] == [], (name, out["errors"])
        assert out["height"] > 300
        for complete, w, h, shown in out["images"]:
            assert complete and w > 0 and h > 0 and shown > 0
        if name == "quality":
            assert len(out["svgs"]) >= len(schema.measured_columns) + 1
            for width, height, box_w, box_h, marks in out["svgs"]:
                assert width > 100 and height > 100, out["svgs"]
                assert box_w > 100 and box_h > 100 and marks > 5, out["svgs"]
            assert out["rasters"] and all(w > 0 and h > 0 for w, h in out["rasters"])


@pytest.mark.browser
def test_render_harness_sees_errors_and_broken_images(tmp_path: Path) -> None:
    """The rendering check is not vacuous: console errors and broken images are caught."""
    exe = _browser()
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><body><p>x</p><img src=\"data:image/png;base64,AAAA\">"
                    "<script>console.error('boom')</script></body></html>")
    out = _render(exe, page, tmp_path / "bad.png", max_height=400)
    assert any("boom" in e for e in out["errors"])
    assert out["images"][0][1] == 0  # naturalWidth of a broken image
    svg = tmp_path / "bad-svg.html"
    svg.write_text("<!DOCTYPE html><html><body><svg width=\"200\" height=\"200\"><image "
                   "href=\"data:image/png;base64,AAAA\" width=\"10\" height=\"10\"/></svg>"
                   "<svg width=\"200\" height=\"200\"></svg></body></html>")
    out = _render(exe, svg, tmp_path / "bad-svg.png", max_height=400)
    assert out["rasters"] == [[0, 0]]  # a broken PNG inside an SVG
    assert out["svgs"][1][2:] == [0, 0, 0]  # an SVG that draws nothing has an empty box


def test_chart_svg_escapes_labels_and_marks_ticks() -> None:
    from dpsynth.report.charts import _nice_ticks, _tick_label, bar_chart_svg, heatmap_svg

    ticks = _nice_ticks(0.0, 0.11)
    assert [_tick_label(t, ticks[1] - ticks[0]) for t in ticks][:3] == ["0.0%", "2.5%", "5.0%"]
    svg = bar_chart_svg("t1", "col<x>", ["<b>&", "ok"], np.array([0.4, 0.6]),
                        np.array([0.45, 0.55]), 0.02)
    assert "<b>" not in svg and "&lt;b&gt;&amp;" in svg and "col&lt;x&gt;" in svg
    assert svg.startswith('<svg class="chart" role="img"') and svg.count("<rect") >= 4
    hm = heatmap_svg("t2", ("a", "b"), (["x", "y"], ["u", "v", "w"]),
                     [("noisy measured", np.full((2, 3), 0.1)), ("synthetic", np.eye(2, 3))], 1.0)
    assert hm.count("data:image/png;base64,") == 3  # two panels and the colour bar
