"""The timeline of a drill as a matplotlib figure: load, latency, errors and quality over time.

Stacked panels share the time axis (seconds from t=0): a lane that names each fault, then
request rate, p99 latency, failed and degraded responses per second, and online quality. Each
fault's window (injection to heal, or to the end when it was never healed) is shaded in
:data:`FAULT_SHADE`; the moments the stack detected the fault and recovered from it are
vertical lines; phase boundaries are thin dotted lines, with the phase names on top. A drill
with monitoring adds an alerts lane under the faults: one row per alert, pending in
:data:`ALERT_PENDING`, firing in :data:`ALERT_FIRING`, a mark where the notification arrived.

matplotlib is heavy to import (about a second), so it is imported inside the functions:
``drillkit --help`` stays instant. Figures are built with :class:`matplotlib.figure.Figure`
directly and rendered with the Agg (PNG) and SVG canvases: no pyplot, no global backend state.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import os
import re
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from drillkit.errors import EnvironmentFailure
from drillkit.fsutil import atomic_write
from drillkit.reports.format import NO_IMPACT
from drillkit.reports.jsonfile import REPORT_MODE
from drillkit.reports.model import DataLossReport, DrillReport, RolloutReport, SeriesReport

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "FAULT_SHADE",
    "MAX_POINTS",
    "SERIES_COLOURS",
    "figure_png",
    "figure_svg",
    "timeline_figure",
    "write_png",
]

#: The (opaque) fill of a fault's window; tests look for this colour in screenshots.
FAULT_SHADE: Final = "#fcdcbf"
#: An alert's bars in the alerts lane: pending, then firing (tests look for the firing one).
ALERT_PENDING: Final = "#f5d77a"
ALERT_FIRING: Final = "#b3124a"
_NOTIFIED = "#24292f"
#: Most rows of the alerts lane; the rest are counted in its last row.
_ALERT_ROWS = 12
#: The colour of each series' line or fill.
SERIES_COLOURS: Final = {
    "rps": "#1f6feb",
    "p99_ms": "#d9480f",
    "failed": "#cf222e",
    "degraded": "#b7791f",
    "quality": "#0f766e",
}
#: Series longer than this are aggregated into this many buckets before plotting.
MAX_POINTS: Final = 3000

_RPS = SERIES_COLOURS["rps"]
_P99 = SERIES_COLOURS["p99_ms"]
_FAILED = SERIES_COLOURS["failed"]
_DEGRADED = SERIES_COLOURS["degraded"]
_QUALITY = SERIES_COLOURS["quality"]
#: Each zone's request rate (dashed, on the rate panel) and the cache hit ratio.
_ZONE_COLOURS = ("#8250df", "#bf8700", "#1b7c83", "#953800")
_CACHE = "#57606a"
_DETECTED = "#6e40c9"
_RECOVERED = "#1a7f37"
_RESTORED = "#0969da"
#: A load worker lost: the rate's drop after it is lost load, not the stack's.
_LOST_WORKER = "#bf8700"
#: The width of one character of a mark's label, as a share of the time axis (8 pt text).
_CHAR_WIDTH = 0.0062
_PHASE = "#8c959f"
_TARGET = "#57606a"
_GRID = "#eaeef2"
_TEXT = "#24292f"
_FAULT_EDGE = "#e8a66a"
#: A rollout's exposure: the time its new version answered users.
EXPOSURE = "#bc4c00"
#: A data_loss fault's last backup and its restore.
BACKUP = "#6639ba"


_DEFAULT_STEP: Final = 0.1
_WIDTH_IN: Final = 11.0
_HEIGHT_IN: Final = 8.6


@dataclass(frozen=True, slots=True)
class _Series:
    """Plot-ready columns; NaN marks a missing value (a gap in the line)."""

    t: list[float]
    rps: list[float]
    p99_ms: list[float]
    failed_ps: list[float]
    degraded_ps: list[float]
    quality: list[float]  # percent
    step: float
    zones: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # rps per zone
    cache_hit: list[float] = dataclasses.field(default_factory=list)  # percent; NaN: no lookup


def _step_of(series: Sequence[SeriesReport]) -> float:
    """The window length: the most common gap between consecutive points."""
    gaps = sorted(round(b.t - a.t, 9) for a, b in itertools.pairwise(series))
    gaps = [g for g in gaps if g > 0]
    return gaps[len(gaps) // 2] if gaps else _DEFAULT_STEP


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _columns(series: Sequence[SeriesReport], max_points: int) -> _Series:
    step = _step_of(series)
    nan = math.nan
    t = [p.t for p in series]
    rps = [p.rps for p in series]
    # An empty window reports p99 = 0; that is "no data", not "fast".
    p99 = [p.p99_ms if p.rps > 0 and p.p99_ms > 0 else nan for p in series]
    failed = [p.failed / step for p in series]
    degraded = [p.degraded / step for p in series]
    quality = [nan if p.quality is None else 100.0 * p.quality for p in series]
    names = sorted({z for p in series for z in (p.zone_rps or {})})
    zones = {z: [(p.zone_rps or {}).get(z, 0.0) for p in series] for z in names}
    cached = any(p.cache_hit_ratio is not None for p in series)
    hits = (
        [nan if p.cache_hit_ratio is None else 100.0 * p.cache_hit_ratio for p in series]
        if cached
        else []
    )
    if len(series) <= max_points:
        return _Series(t, rps, p99, failed, degraded, quality, step, zones, hits)
    # Aggregate into buckets: rates are averaged (units stay per second), p99 keeps the worst
    # window so that a spike stays visible.
    size = math.ceil(len(series) / max_points)
    chunks = range(0, len(series), size)
    return _Series(
        t=[t[i] for i in chunks],
        rps=[_mean(rps[i : i + size]) for i in chunks],
        p99_ms=[
            max((v for v in p99[i : i + size] if not math.isnan(v)), default=nan) for i in chunks
        ],
        failed_ps=[_mean(failed[i : i + size]) for i in chunks],
        degraded_ps=[_mean(degraded[i : i + size]) for i in chunks],
        quality=[_mean(quality[i : i + size]) for i in chunks],
        step=step * size,
        zones={z: [_mean(v[i : i + size]) for i in chunks] for z, v in zones.items()},
        cache_hit=[_mean(hits[i : i + size]) for i in chunks] if hits else [],
    )


def _steps(cols: _Series, values: Sequence[float]) -> tuple[list[float], list[float]]:
    """The corners of a step function, and a last point that closes the last window.

    A point that repeats the previous value draws nothing new, and flat stretches (mostly
    zeros) would otherwise fill the SVG.
    """

    def same(a: float, b: float) -> bool:
        return a == b or (math.isnan(a) and math.isnan(b))

    keep = [i for i in range(len(values)) if i == 0 or not same(values[i], values[i - 1])]
    xs = [cols.t[i] for i in keep]
    ys = [values[i] for i in keep]
    if cols.t:
        xs.append(cols.t[-1] + cols.step)
        ys.append(values[-1])
    return xs, ys


def _target(report: DrillReport, suffix: str) -> float | None:
    """The SLO target of the first check named ``<phase><suffix>`` (all phases share it)."""
    return next((c.target for c in report.checks if c.name.endswith(suffix)), None)


def _x_end(report: DrillReport, step: float) -> float:
    ends = [0.0]
    if report.series:
        ends.append(report.series[-1].t + step)
    ends += [p.end for p in report.phases]
    for f in report.faults:
        ends += [t for t in (f.injected_at, f.healed_at, f.recovered_at) if t is not None]
    return max(ends)


def _style() -> AbstractContextManager[None]:
    """drillkit's plot style, for building a figure and for saving it."""
    from matplotlib import rc_context

    return rc_context(
        {
            "font.family": "sans-serif",
            "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
            "font.size": 9,
            "axes.edgecolor": "#d0d7de",
            "axes.labelcolor": _TEXT,
            "xtick.color": "#57606a",
            "ytick.color": "#57606a",
            "svg.fonttype": "none",  # text stays text: smaller, selectable, crisp at any zoom
            "svg.hashsalt": "drillkit",  # stable ids: the same report gives the same SVG
        }
    )


def _import_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise EnvironmentFailure(
            "plots need matplotlib, a dependency of drillkit that is missing here: "
            "pip install 'matplotlib>=3.8'"
        ) from None


def timeline_figure(report: DrillReport, *, max_points: int = MAX_POINTS) -> Figure:
    """The drill's timeline; a figure that says "no data" when the series is empty.

    On top, an events lane names each fault over its window and marks when it was detected
    and recovered from; below it the five panels. Raises
    :class:`~drillkit.errors.EnvironmentFailure` when matplotlib is not installed.
    """
    _import_matplotlib()
    from matplotlib.figure import Figure

    with _style():
        if not report.series:
            return _no_data_figure(report)
        cols = _columns(report.series, max_points)
        x_end = _x_end(report, cols.step)
        lanes = max(1, sum(1 for f in report.faults if f.injected_at is not None))
        lane_height = 0.3 + 0.32 * lanes
        fig = Figure(figsize=(_WIDTH_IN, _HEIGHT_IN + 0.6 * lane_height), layout="constrained")
        alert_rows = _alert_rows(report)
        ratios = [lane_height, 1.15, 1.15, 0.8, 0.8, 0.9]
        if alert_rows is not None:  # a drill with monitoring: its alerts get a lane
            ratios.insert(1, 0.35 + 0.22 * max(1, len(alert_rows)))
            fig.set_figheight(fig.get_figheight() + 0.25 * max(1, len(alert_rows)))
        if cols.cache_hit:  # a stack with a cache tier: its hit ratio gets a panel
            ratios.append(0.8)
        axes = list(
            fig.subplots(len(ratios), 1, sharex=True, gridspec_kw={"height_ratios": ratios})
        )
        alerts_ax = axes.pop(1) if alert_rows is not None else None
        events_ax, rps_ax, p99_ax, failed_ax, degraded_ax, quality_ax = axes[:6]
        for ax in axes:
            _decorate(ax, report, x_end)

        # Per-window counts alias with the load's pacing (16 users each firing every 200 ms
        # fill every other 100 ms window): the rate is drawn as a centred 1 s mean.
        rate = _rolling_mean(cols.rps, max(1, round(1.0 / cols.step)))
        rps_ax.plot(*_steps(cols, rate), color=_RPS, linewidth=1.4, drawstyle="steps-post")
        width = max(1, round(1.0 / cols.step))
        for index, values in enumerate(cols.zones.values()):
            colour = _ZONE_COLOURS[index % len(_ZONE_COLOURS)]
            rps_ax.plot(
                *_steps(cols, _rolling_mean(values, width)),
                color=colour,
                linewidth=1.0,
                linestyle="--",
                drawstyle="steps-post",
            )
        _note(rps_ax, "1 s mean" if cols.step < 1.0 else "")
        _target_line(rps_ax, report.load.target_rps)
        rps_ax.set_ylabel("requests / s")
        rps_ax.set_ylim(bottom=0, top=_top(cols.rps, report.load.target_rps))
        _lost_workers(rps_ax, report)

        _latency(p99_ax, cols, _target(report, ".p99_ms"))

        for ax, values, colour, label in (
            (failed_ax, cols.failed_ps, _FAILED, "failed / s"),
            (degraded_ax, cols.degraded_ps, _DEGRADED, "degraded / s"),
        ):
            ax.fill_between(*_steps(cols, values), step="post", color=colour, linewidth=0)
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0, top=_top(values, None, floor=1.0))

        quality_target = _target(report, ".quality")
        if any(not math.isnan(q) for q in cols.quality):
            quality_ax.plot(
                cols.t, cols.quality, color=_QUALITY, linewidth=0, marker="o", markersize=2.2
            )
            _connect(quality_ax, cols.t, cols.quality)
        else:
            quality_ax.text(
                0.5,
                0.5,
                "no quality probes in this drill",
                transform=quality_ax.transAxes,
                ha="center",
                va="center",
                color="#57606a",
            )
        if quality_target is not None:
            _target_line(quality_ax, 100 * quality_target)
        quality_ax.set_ylabel("quality, %")
        quality_ax.set_ylim(_quality_floor(cols.quality, quality_target), 102)
        last = quality_ax
        if cols.cache_hit:
            # A window of 100 ms holds a handful of lookups: the ratio is drawn as a 1 s mean.
            last = axes[6]
            hits = _rolling_nanmean(cols.cache_hit, width)
            last.plot(*_steps(cols, hits), color=_CACHE, linewidth=1.2, drawstyle="steps-post")
            last.set_ylabel("cache hits, %")
            last.set_ylim(0, 102)
        last.set_xlabel("seconds from t=0 (end of warmup)")
        last.set_xlim(0, x_end)

        _events(events_ax, report, x_end, lanes)
        if alerts_ax is not None and alert_rows is not None:
            _decorate(alerts_ax, report, x_end)
            _alerts(alerts_ax, alert_rows, x_end)
        _label_phases(events_ax, report, x_end)
        _legend(fig, report)
        for ax in [*axes, *([alerts_ax] if alerts_ax is not None else [])]:
            ax.yaxis.set_label_coords(-0.045, 0.5)  # one column of panel names
        return fig


_AlertRow = tuple[str, list[tuple[float | None, float | None, float | None, float | None]]]


def _alert_rows(report: DrillReport) -> list[_AlertRow] | None:
    """``(label, [(pending, firing, resolved, notified), ...])`` per alert and what it is
    about; None without monitoring."""
    from drillkit.reports.format import alert_about

    if report.monitoring is None:
        return None
    rows: dict[str, list[tuple[float | None, float | None, float | None, float | None]]] = {}
    for a in report.monitoring.alerts:
        if a.resolved_at is not None and a.resolved_at <= 0:
            continue  # over before t=0 (the stack's start): not part of the drill
        label = f"{a.name} · {alert_about(a.labels)}"
        rows.setdefault(label, []).append((a.pending_at, a.firing_at, a.resolved_at, a.notified_at))
    out = list(rows.items())
    if len(out) > _ALERT_ROWS:
        rest = len(out) - (_ALERT_ROWS - 1)
        out = [*out[: _ALERT_ROWS - 1], (f"+ {rest} more alerts (see the table)", [])]
    return out


def _alerts(ax: Axes, rows: list[_AlertRow], x_end: float) -> None:
    """The alerts lane: per alert, its pending and firing spans and the notification mark."""
    ax.set_ylim(max(1, len(rows)), 0)
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    ax.grid(False)
    ax.set_ylabel("alerts")
    if not rows:
        ax.text(0.5, 0.5, "no alert fired", transform=ax.transAxes, ha="center", va="center",
                color="#57606a")  # fmt: skip
        return
    for lane, (label, spans) in enumerate(rows):
        y = lane + 0.5
        for pending, firing, resolved, notified in spans:
            end = resolved if resolved is not None else x_end
            if pending is not None:
                stop = firing if firing is not None else end
                ax.plot([max(pending, 0), max(stop, 0)], [y, y], color=ALERT_PENDING,
                        linewidth=6, solid_capstyle="butt", zorder=3)  # fmt: skip
            if firing is not None:
                ax.plot([max(firing, 0), max(end, 0)], [y, y], color=ALERT_FIRING,
                        linewidth=6, solid_capstyle="butt", zorder=4)  # fmt: skip
            if notified is not None and notified >= 0:
                ax.plot([notified], [y], marker="|", color=_NOTIFIED, markersize=11, zorder=5)
        ax.text(0.003 * x_end, y - 0.42, label, ha="left", va="top", fontsize=7.5,
                color=_TEXT, zorder=6, parse_math=False)  # fmt: skip


def _quality_floor(quality: Sequence[float], target: float | None) -> float:
    """Room below the lowest value and the target, in steps of 10 points, from 0 at worst."""
    lowest = min([q for q in quality if not math.isnan(q)] + [100.0 * (target or 1.0)])
    return max(0.0, 10.0 * math.floor(lowest / 10.0) - 10.0)


def _target_line(ax: Axes, y: float) -> None:
    # Under the series: a series that sits on its target must stay visible.
    ax.axhline(y, color=_TARGET, linewidth=0.8, linestyle="--", zorder=1.5)


def _top(values: Sequence[float], target: float | None, *, floor: float = 0.0) -> float:
    finite = [v for v in values if not math.isnan(v)]
    peak = max([*finite, target or 0.0, floor])
    return peak * 1.18 if peak > 0 else 1.0


def _latency(ax: Axes, cols: _Series, target: float | None) -> None:
    """p99 per window; logarithmic when a spike would flatten the steady state to a line."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.plot(*_steps(cols, cols.p99_ms), color=_P99, linewidth=1.4, drawstyle="steps-post")
    if target is not None:
        _target_line(ax, target)
    ax.set_ylabel("p99 latency, ms")
    finite = sorted(v for v in cols.p99_ms if not math.isnan(v) and v > 0)
    if not finite:
        ax.set_ylim(0, _top([], target, floor=1.0))
        return
    median, peak = finite[len(finite) // 2], max(finite[-1], target or 0.0)
    if peak / median < 10:
        ax.set_ylim(0, _top(finite, target))
        return
    ax.set_yscale("log")
    ax.set_ylim(min(finite[0], target or finite[0]) / 1.6, peak * 1.8)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    # Within about a decade matplotlib labels the minor ticks too ("4x10^2" over "3x10^2"):
    # the major ones are enough.
    ax.yaxis.set_minor_formatter(NullFormatter())
    _note(ax, "log scale")


def _lost_workers(ax: Axes, report: DrillReport) -> None:
    """Where a load worker was lost: the drop in the rate that follows is lost load, not
    the stack's doing, and the chart says so where it happens."""
    for worker in report.load.workers or []:
        if worker.lost_at is None or worker.lost_at < 0:
            continue
        ax.axvline(worker.lost_at, color=_LOST_WORKER, linewidth=1.0, linestyle="-.", zorder=3)
        ax.text(
            worker.lost_at,
            0.04,
            f" load worker {worker.name} lost",
            transform=ax.get_xaxis_transform(),
            ha="left",
            va="bottom",
            fontsize=7,
            color=_LOST_WORKER,
            parse_math=False,  # a worker names itself: "$" is a dollar, not TeX
        )


def _note(ax: Axes, text: str) -> None:
    """A small grey remark in a panel's top-left corner (how to read it)."""
    if text:
        ax.text(
            0.003,
            0.96,
            text,
            transform=ax.transAxes,
            ha="left",
            va="top",
            fontsize=7,
            color="#8c959f",
        )


def _rolling_nanmean(values: Sequence[float], width: int) -> list[float]:
    """The centred mean over ``width`` points of those that are not NaN (NaN when none is)."""
    half = width // 2
    out = []
    for i in range(len(values)):
        near = values[max(0, i - half) : min(len(values), i - half + width)]
        out.append(_mean(near))
    return out


def _rolling_mean(values: Sequence[float], width: int) -> list[float]:
    """The centred mean over ``width`` points (fewer at the ends)."""
    if width <= 1:
        return list(values)
    sums = list(itertools.accumulate(values, initial=0.0))
    half = width // 2
    out = []
    for i in range(len(values)):
        lo, hi = max(0, i - half), min(len(values), i - half + width)
        out.append((sums[hi] - sums[lo]) / (hi - lo))
    return out


def _connect(ax: Axes, t: Sequence[float], values: Sequence[float]) -> None:
    """A thin line through the known points only: probes are sparse, gaps are not drops."""
    known = [(x, v) for x, v in zip(t, values, strict=True) if not math.isnan(v)]
    if len(known) > 1:
        xs, vs = zip(*known, strict=True)
        ax.plot(xs, vs, color=_QUALITY, linewidth=0.8, alpha=0.7)


def _decorate(ax: Axes, report: DrillReport, x_end: float) -> None:
    ax.grid(axis="y", color=_GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for f in report.faults:
        if f.injected_at is None:
            continue
        end = f.healed_at if f.healed_at is not None else x_end
        ax.axvspan(f.injected_at, end, facecolor=FAULT_SHADE, edgecolor="none", zorder=0)
        ax.axvline(f.injected_at, color=_FAULT_EDGE, linewidth=0.9, zorder=0.5)
        if f.healed_at is not None:
            ax.axvline(f.healed_at, color=_FAULT_EDGE, linewidth=0.9, zorder=0.5)
        if f.detected_at is not None:
            ax.axvline(f.detected_at, color=_DETECTED, linewidth=1.1, linestyle="--", zorder=3)
        if f.recovered_at is not None and f.slo_impact is not False:
            ax.axvline(f.recovered_at, color=_RECOVERED, linewidth=1.1, zorder=3)
    for t in _phase_bounds(report, x_end):
        ax.axvline(t, color=_PHASE, linewidth=0.7, linestyle=":", zorder=0.6)


def _phase_bounds(report: DrillReport, x_end: float) -> list[float]:
    bounds = {round(t, 6) for p in report.phases for t in (p.start, p.end)}
    return sorted(t for t in bounds if 0 < t < x_end)


def _label_phases(ax: Axes, report: DrillReport, x_end: float) -> None:
    """Phase names above the top panel, centred on their span."""
    from matplotlib.transforms import blended_transform_factory

    where = blended_transform_factory(ax.transData, ax.transAxes)
    for p in report.phases:
        if p.end - p.start < 0.04 * x_end:
            continue  # too narrow for a name; the dotted bounds still show it
        ax.text(
            (p.start + p.end) / 2,
            1.04,
            p.name,
            transform=where,
            ha="center",
            va="bottom",
            fontsize=8,
            color="#57606a",
            clip_on=False,
            parse_math=False,  # names come from the scenario: "$" is a dollar, not TeX
        )


def _events(ax: Axes, report: DrillReport, x_end: float, lanes: int) -> None:
    """One lane per applied fault: its name over its window, then detected/recovered marks.

    The earlier of the two marks is labelled to its left and the later to its right, so that
    marks a second apart do not print over each other.
    """
    ax.set_ylim(lanes, 0)
    ax.set_yticks([])
    ax.spines["left"].set_visible(False)
    ax.grid(False)
    ax.set_ylabel("faults")
    applied = [f for f in report.faults if f.injected_at is not None]
    if not applied:
        ax.text(
            0.5,
            0.5,
            "no fault was applied",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="#57606a",
        )
    pad = 0.004 * x_end
    for lane, f in enumerate(applied):
        assert f.injected_at is not None
        end = f.healed_at if f.healed_at is not None else x_end
        healthy = f.rollout is not None and f.rollout.expected == "promoted"
        never = [
            word
            for word, at in (
                ("healed", f.healed_at),
                ("detected", f.detected_at if not healthy else 0.0),  # nothing to detect
                ("recovered", f.recovered_at),
            )
            if at is None
        ]
        healed = f"  (never {', never '.join(never)})" if never else ""
        if f.slo_impact is False:
            # Not "recovered +0.00s" before "detected": the SLOs never broke.
            healed += f"  \u00b7 {NO_IMPACT}"
        right_side = f.injected_at > 0.7 * x_end
        ax.text(
            end - pad if right_side else f.injected_at + pad,
            lane + 0.3,
            f"{f.id} \u00b7 {f.kind} \u2192 {f.target}{healed}",
            ha="right" if right_side else "left",
            va="center",
            fontsize=8.5,
            fontweight="bold",
            color=_TEXT,
            zorder=5,
            parse_math=False,
            bbox={
                "boxstyle": "round,pad=0.25",
                "facecolor": "white",
                "edgecolor": _FAULT_EDGE,
                "linewidth": 0.7,
            },
        )
        if f.rollout is not None:
            _rollout(ax, f.rollout, lane, x_end)
        if f.data is not None:
            _data_loss(ax, f.data, lane, x_end)
        recovered = f.recovered_at if f.slo_impact is not False else None
        marks = [
            (at, colour, word)
            for at, colour, word in (
                (f.detected_at, _DETECTED, "detected"),
                (recovered, _RECOVERED, "recovered"),
                (f.restored_at, _RESTORED, "back in service"),
            )
            if at is not None
        ]
        marks.sort(key=lambda m: m[0])
        free_from = -float("inf")  # where the last label placed to the right ends
        for i, (at, colour, word) in enumerate(marks):
            ax.plot([at], [lane + 0.72], marker="v", color=colour, markersize=6, zorder=6)
            left = i == 0 and len(marks) >= 2
            text = f"{word} +{at - f.injected_at:.2f}s"
            y = lane + 0.72
            if not left:
                # A label that would run into the previous one goes a little lower.
                if at < free_from:
                    y = lane + 0.95
                free_from = at + _CHAR_WIDTH * x_end * (len(text) + 2)
            ax.text(
                at - 1.6 * pad if left else at + 1.6 * pad,
                y,
                text,
                ha="right" if left else "left",
                va="center",
                fontsize=8,
                color=colour,
                zorder=5,
                # Hide the vertical lines behind the words, in the colour around them.
                bbox={
                    "boxstyle": "square,pad=0.1",
                    "edgecolor": "none",
                    "facecolor": FAULT_SHADE if not left and at < end else "white",
                },
            )


def _rollout(ax: Axes, rollout: RolloutReport, lane: int, x_end: float) -> None:
    """A rollout on its fault's lane: a bar while its new version answered users, a tick
    labelled with the share of users at each step, and the promotion."""
    first, last = rollout.first_exposure_at, rollout.last_exposure_at
    if first is not None and last is not None:
        ax.plot(
            [first, max(last, first + 0.002 * x_end)],
            [lane + 0.55, lane + 0.55],
            color=EXPOSURE,
            linewidth=4,
            solid_capstyle="butt",
            zorder=4,
        )
    for step in rollout.steps:
        ax.plot([step.started_at], [lane + 0.55], marker="|", color=_TEXT, markersize=9, zorder=5)
        ax.text(  # under the bar: the fault's name sits above it
            step.started_at,
            lane + 0.62,
            f" {step.weight:.0%}{' failed' if step.verdict == 'fail' else ''}",
            ha="left",
            va="top",
            fontsize=7,
            color=_TEXT,
            zorder=5,
            parse_math=False,
        )
    if rollout.status == "promoted" and rollout.verdict_at is not None:
        ax.plot([rollout.verdict_at], [lane + 0.72], marker="v", color=_RECOVERED, zorder=6)
        ax.text(
            rollout.verdict_at,
            lane + 0.72,
            " promoted",
            ha="left",
            va="center",
            fontsize=8,
            color=_RECOVERED,
            zorder=5,
        )


def _data_loss(ax: Axes, data: DataLossReport, lane: int, x_end: float) -> None:
    """A data_loss fault on its lane: the newest backup before it (a diamond, what a wipe
    can be restored to), and the restore (a bar from its start to its end)."""
    if data.last_backup_at is not None and data.last_backup_at >= 0:
        ax.plot([data.last_backup_at], [lane + 0.55], marker="D", color=BACKUP, markersize=5,
                zorder=5)  # fmt: skip
        ax.text(
            data.last_backup_at,
            lane + 0.62,
            " last backup",
            ha="left",
            va="top",
            fontsize=7,
            color=BACKUP,
            zorder=5,
        )
    start, end = data.restore_started_at, data.restored_at
    if start is not None and end is not None:
        ax.plot(
            [start, max(end, start + 0.004 * x_end)],
            [lane + 0.55, lane + 0.55],
            color=BACKUP,
            linewidth=4,
            solid_capstyle="butt",
            zorder=4,
        )
        ax.text(
            end,
            lane + 0.45,
            " restored",
            ha="left",
            va="bottom",
            fontsize=7,
            color=BACKUP,
            zorder=5,
        )


def _legend(fig: Figure, report: DrillReport) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles: list[Artist] = [
        Line2D([], [], color=_TARGET, linestyle="--", linewidth=0.8, label="target / SLO"),
        Line2D([], [], color=_PHASE, linestyle=":", linewidth=0.9, label="phase boundary"),
    ]
    if any(f.injected_at is not None for f in report.faults):
        handles.insert(
            0,
            Patch(
                facecolor=FAULT_SHADE,
                edgecolor=_FAULT_EDGE,
                label="fault active (injected → healed)",
            ),
        )
        handles.insert(1, Line2D([], [], color=_DETECTED, linestyle="--", label="detected"))
        at = 2
        if any(f.recovered_at is not None and f.slo_impact is not False for f in report.faults):
            handles.insert(at, Line2D([], [], color=_RECOVERED, label="recovered"))
            at += 1
        if any(f.restored_at is not None for f in report.faults):
            handles.insert(
                at,
                Line2D(
                    [], [], color=_RESTORED, marker="v", linestyle="none", label="back in service"
                ),
            )
    if any(f.rollout is not None for f in report.faults):
        handles.append(
            Line2D([], [], color=EXPOSURE, linewidth=4, label="new version answering (rollout)")
        )
    if report.monitoring is not None:
        handles.append(Line2D([], [], color=ALERT_PENDING, linewidth=5, label="alert pending"))
        handles.append(Line2D([], [], color=ALERT_FIRING, linewidth=5, label="alert firing"))
        handles.append(
            Line2D([], [], color=_NOTIFIED, marker="|", linestyle="none", label="notified")
        )
    zones = sorted({z for p in report.series for z in (p.zone_rps or {})})
    for index, zone in enumerate(zones):
        colour = _ZONE_COLOURS[index % len(_ZONE_COLOURS)]
        handles.append(Line2D([], [], color=colour, linestyle="--", label=f"zone {zone} rps"))
    if any(p.cache_hit_ratio is not None for p in report.series):
        handles.append(Line2D([], [], color=_CACHE, label="cache hit ratio"))
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), 5),
        frameon=False,
        fontsize=8,
    )


def _no_data_figure(report: DrillReport) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_WIDTH_IN, 1.6))
    why = (
        "the drill was interrupted before t=0"
        if report.status in ("interrupted", "error")
        else "the report has no series"
    )
    fig.text(
        0.5,
        0.5,
        f"no data: {why}, so there is no timeline to plot",
        ha="center",
        va="center",
        fontsize=12,
        color="#57606a",
    )
    return fig


def figure_svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element to inline in HTML (no XML prolog, no DOCTYPE).

    Text stays text (``svg.fonttype = none``): smaller, selectable, and crisp at any zoom.
    """
    buffer = io.StringIO()
    with _style():
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    start = text.find("<svg")
    if start < 0:  # pragma: no cover - matplotlib always writes one
        raise RuntimeError("matplotlib produced no <svg> element")
    svg = text[start:]
    # Let the page size it: the viewBox keeps the aspect ratio.
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r"<svg\1", svg, count=1)


def figure_png(fig: Figure, *, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (Agg)."""
    buffer = io.BytesIO()
    with _style():
        fig.savefig(buffer, format="png", dpi=dpi, facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


def write_png(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 110) -> Path:
    """Write the figure as a PNG to ``path``, atomically; returns the path."""
    return atomic_write(path, figure_png(fig, dpi=dpi), mode=REPORT_MODE)
