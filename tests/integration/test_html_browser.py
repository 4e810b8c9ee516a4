"""The HTML report in a real browser: headless Chromium renders the page and the timeline.

The screenshot is kept (``$DRILLKIT_TEST_ARTIFACTS`` when set, else the test's tmp dir) so a
person can look at it; the test checks that the inline SVG plot was actually drawn: the fault
window's shade and the series' line colours must be on screen. Two negative controls (the page
without its SVG, and with the SVG element broken) prove that the check can fail.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from drillkit.reports.html import render_html, write_html
from drillkit.reports.model import DrillReport
from drillkit.reports.plot import (
    ALERT_FIRING,
    FAULT_SHADE,
    SERIES_COLOURS,
    figure_svg,
    timeline_figure,
)
from tests.unit.reports.test_html import colour_share, read_png, realistic_report

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1400, 2400


def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: a folder the test run keeps when CI names one."""
    where = os.environ.get("DRILLKIT_TEST_ARTIFACTS")
    folder = Path(where) / "html-report" if where else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(chromium: str, page: Path, out: Path, home: Path) -> NDArray[np.uint8]:
    """Render ``page`` headless into ``out`` (PNG) and return its pixels."""
    home.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={home / 'profile'}",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--screenshot={out}",
        page.resolve().as_uri(),
    ]
    env = {**os.environ, "HOME": str(home)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and out.exists(), f"chromium failed:\n{done.stderr[-3000:]}"
    print(f"screenshot: {out}")
    return read_png(out)


def plot_problems(image: NDArray[np.uint8]) -> list[str]:
    """What is wrong with the rendered timeline; empty when it was drawn."""
    problems = []
    if np.all(image == image[0, 0]):
        return ["the screenshot is one flat colour"]
    shade = colour_share(image, FAULT_SHADE, tolerance=2)
    shaded = np.argwhere(np.all(np.abs(image.astype(np.int16) - _rgb(FAULT_SHADE)) <= 2, axis=-1))
    # The fault is 15 s of a 60 s drill across five panels: thousands of pixels.
    if shade * image.shape[0] * image.shape[1] < 20_000:
        return [f"the fault window's shade {FAULT_SHADE} is (almost) absent"]
    top, left = shaded.min(axis=0)
    bottom, right = shaded.max(axis=0)
    if bottom - top < 400 or right - left < 100:
        problems.append(f"the shaded window is only {right - left}x{bottom - top} px")
    # The plot: the rows the shading spans, across the page.
    plot = image[top : bottom + 1]
    ink = float(np.any(plot < 245, axis=-1).mean())
    if ink < 0.1:
        problems.append(f"only {ink:.0%} of the plot area is not white")
    colours = len(np.unique(plot.reshape(-1, 3), axis=0))
    if colours < 50:
        problems.append(f"only {colours} distinct colours in the plot area")
    for name in ("rps", "p99_ms", "failed", "quality"):
        colour = SERIES_COLOURS[name]
        pixels = colour_share(plot, colour, tolerance=20) * plot.shape[0] * plot.shape[1]
        if pixels < 150:
            problems.append(f"the {name} series ({colour}) is missing: {pixels:.0f} px")
    return problems


def _rgb(hex_colour: str) -> NDArray[np.int16]:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)


@pytest.fixture(scope="module")
def report() -> DrillReport:
    return realistic_report()  # 600 series points, a 15 s fault window, quality probes


def test_report_renders_in_a_browser(chromium: str, report: DrillReport, tmp_path: Path) -> None:
    out = artifacts(tmp_path)
    page, png = write_html(report, out / "kill-node.html")
    image = screenshot(chromium, page, out / "kill-node.screenshot.png", tmp_path / "home")
    assert image.shape[:2] == (HEIGHT, WIDTH)
    assert plot_problems(image) == []
    # The PNG written beside the page shows the same plot.
    assert colour_share(read_png(png), FAULT_SHADE, tolerance=2) > 0.05


@pytest.mark.parametrize("how", ["missing", "broken"], ids=["svg-missing", "svg-broken"])
def test_the_check_fails_without_a_working_svg(
    chromium: str, report: DrillReport, tmp_path: Path, how: str
) -> None:
    svg = ""
    if how == "broken":
        # No longer an <svg> element: the browser draws none of it as graphics.
        svg = figure_svg(timeline_figure(report)).replace("<svg", "<svg-broken", 1)
    page = tmp_path / "page.html"
    page.write_text(render_html(report, svg=svg), "utf-8")
    image = screenshot(chromium, page, tmp_path / "shot.png", tmp_path / "home")
    assert plot_problems(image) != []


def test_alerts_are_drawn_on_the_timeline(chromium: str, tmp_path: Path) -> None:
    # A drill with monitoring: the alerts lane shows each alert's firing span in
    # ALERT_FIRING; the same drill without monitoring (the control) has none of that colour.
    out = artifacts(tmp_path)
    seen = {}
    for monitoring in (True, False):
        name = "kill-node-alerts" if monitoring else "kill-node-no-monitoring"
        page, _ = write_html(realistic_report(monitoring=monitoring), out / f"{name}.html")
        image = screenshot(chromium, page, out / f"{name}.screenshot.png", tmp_path / "home")
        assert plot_problems(image) == []
        seen[monitoring] = colour_share(image, ALERT_FIRING, tolerance=3) * image.size / 3
        html = page.read_text()
        assert ("<h2>Alerts</h2>" in html) is monitoring
    # Two firing spans (14 s and 4 s of a 60 s axis), 6 px thick: hundreds of pixels.
    assert seen[True] > 1500, seen
    assert seen[False] == 0, seen
