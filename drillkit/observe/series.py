"""Figures over time windows, computed exactly from the per-request :class:`Records`.

Every figure here is exact (no histograms, no sampling): a drill has at most a few hundred
thousand requests, and the report's numbers must be reproducible from the raw records.

Conventions used everywhere in drillkit (phases, recovery, series, reports):

- A window is half-open, ``[start, end)``, over the request's *send* time.
- Percentiles use the **nearest-rank** definition: the p-th percentile of ``n`` latencies is the
  ``ceil(p / 100 * n)``-th smallest (1-based), so it is always a latency that was observed and
  at least p % of the requests were at or below it. The rank is computed in integer arithmetic
  so that, say, p99 of 100 values is exactly the 99th value. Every request counts, failed ones
  included (a timeout is a 2 s latency as the client saw it).
- An empty window has percentiles of ``0.0`` (the report's JSON has numbers there, not null),
  availability ``1.0`` (no request failed) and a degraded share of ``0.0``. Code that must not
  treat an empty window as healthy (recovery) checks ``requests >= 1`` itself.
- Window edges are ``start + i * step`` rounded to the nanosecond, so that decimal boundaries
  such as 0.3 s are the float ``0.3`` and not ``0.30000000000000004``: a request sent at exactly
  0.3 s falls in the window that starts there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drillkit.observe.records import FloatArray, IntArray, Records

__all__ = [
    "QualitySample",
    "QualityTrack",
    "SeriesPoint",
    "WindowStats",
    "compute_series",
    "nearest_rank_index",
    "percentile",
    "window_edges",
    "window_stats",
]

# Edges are rounded to this many decimals (1 ns); see the module docstring.
_EDGE_DECIMALS = 9


@dataclass(frozen=True, slots=True)
class QualitySample:
    """One golden-user probe: online recall@k as a share of the manifest's offline recall@k."""

    t: float
    share: float


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """Figures of one window ``[t, t + step)``; percentiles are 0.0 for an empty window."""

    t: float
    requests: int
    rps: float
    failed: int
    degraded: int
    wrong_model: int
    p50_ms: float
    p99_ms: float
    quality: float | None = None  # mean quality share of the window's probes; None: no probe
    zone_rps: dict[str, float] | None = None  # requests per second answered by each zone
    cache_hit_ratio: float | None = None  # hits / cache lookups; None: no lookup in the window


@dataclass(frozen=True, slots=True)
class WindowStats:
    """Counts, shares and latency percentiles of a set of records (see the module docstring)."""

    requests: int
    failed: int
    degraded: int
    wrong_model: int
    availability: float  # non-failed / all; 1.0 when there are no requests
    degraded_share: float  # degraded / all; 0.0 when there are no requests
    p50_ms: float
    p95_ms: float
    p99_ms: float


def nearest_rank_index(n: int | IntArray, q: int) -> int | IntArray:
    """0-based index of the nearest-rank ``q``-th percentile among ``n`` sorted values.

    ``q`` is a whole percent (1..100); ``n`` may be an array of counts. For ``n == 0`` the
    index is 0, which the caller must not use.
    """
    if not 1 <= q <= 100:
        raise ValueError(f"percentile must be 1..100, got {q}")
    if isinstance(n, np.ndarray):
        # ceil(n * q / 100) with integers only: (a + b - 1) // b.
        return np.maximum((n * q + 99) // 100, 1) - 1
    return max((n * q + 99) // 100, 1) - 1


def percentile(values: npt.ArrayLike, q: int) -> float:
    """The nearest-rank ``q``-th percentile of ``values``; 0.0 when there are none."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return 0.0
    index = int(nearest_rank_index(int(data.size), q))
    # A partition is enough to place the k-th smallest value exactly.
    return float(np.partition(data, index)[index])


def window_stats(records: Records) -> WindowStats:
    """Counts, availability, degraded share and p50/p95/p99 of ``records``."""
    n = len(records)
    if n == 0:
        return WindowStats(0, 0, 0, 0, 1.0, 0.0, 0.0, 0.0, 0.0)
    failed = int(np.count_nonzero(records.failed))
    degraded = int(np.count_nonzero(records.degraded))
    wrong = int(np.count_nonzero(records.wrong_model))
    ordered = np.sort(records.latency_ms)
    p50, p95, p99 = (float(ordered[int(nearest_rank_index(n, q))]) for q in (50, 95, 99))
    return WindowStats(
        requests=n,
        failed=failed,
        degraded=degraded,
        wrong_model=wrong,
        availability=(n - failed) / n,
        degraded_share=degraded / n,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
    )


def window_edges(start: float, end: float, step: float) -> FloatArray:
    """Edges ``start, start + step, ..., end`` of consecutive windows covering ``[start, end)``.

    The last window is cut short at ``end`` when ``end - start`` is not a whole number of
    steps (within a nanosecond); with ``end <= start`` there are no windows (one edge).
    """
    if step <= 0:
        raise ValueError(f"step must be > 0, got {step}")
    if end <= start:
        return np.array([start], dtype=np.float64)
    # The tolerance keeps 60 s / 0.1 s at 600 windows despite float error in the division.
    count = max(1, math.ceil((end - start) / step - 1e-9))
    edges = np.round(start + np.arange(count + 1, dtype=np.float64) * step, _EDGE_DECIMALS)
    edges[-1] = end
    return edges


def compute_series(
    records: Records,
    *,
    start: float,
    end: float,
    step: float = 0.1,
    quality: Sequence[QualitySample] = (),
) -> list[SeriesPoint]:
    """One :class:`SeriesPoint` per window of ``step`` seconds from ``start`` to ``end``.

    ``rps`` is the window's requests divided by its length (the last window may be shorter,
    see :func:`window_edges`). ``quality`` samples, if any, give each window the mean share of
    the probes taken in it. Vectorised: the cost is a sort of the records, not a loop over them.
    """
    edges = window_edges(start, end, step)
    windows = len(edges) - 1
    if windows == 0:
        return []
    # Records are sorted by t, so each window is a contiguous slice [bounds[i], bounds[i+1]).
    bounds = np.searchsorted(records.t, edges, side="left")
    first, last = int(bounds[0]), int(bounds[-1])
    counts = np.diff(bounds).astype(np.int64)
    lo = bounds[:-1] - first

    def per_window(flags: npt.NDArray[np.bool_]) -> IntArray:
        cumulative = np.concatenate(([0], np.cumsum(flags[first:last], dtype=np.int64)))
        return cumulative[bounds[1:] - first] - cumulative[lo]

    failed = per_window(records.failed)
    degraded = per_window(records.degraded)
    wrong = per_window(records.wrong_model)

    # Sort latencies within each window: primary key the window, secondary the latency.
    latency = records.latency_ms[first:last]
    window_of = np.repeat(np.arange(windows, dtype=np.int64), counts)
    ordered = latency[np.lexsort((latency, window_of))]
    nonempty = counts > 0

    def pct(q: int) -> FloatArray:
        out = np.zeros(windows, dtype=np.float64)
        index = lo + np.asarray(nearest_rank_index(counts, q))
        out[nonempty] = ordered[index[nonempty]]
        return out

    p50, p99 = pct(50), pct(99)
    widths = np.diff(edges)
    rps = counts / widths
    means = QualityTrack(quality).means(edges)
    zone_rps: list[dict[str, float] | None] = [None] * windows
    if records.zone is not None:
        zones = sorted(set(records.zone[first:last].tolist()) - {""})
        per_zone = {zone: per_window(records.zone == zone) / widths for zone in zones}
        zone_rps = [{zone: float(per_zone[zone][i]) for zone in zones} for i in range(windows)]
    hit_ratio: list[float | None] = [None] * windows
    if records.cache is not None:
        hits = per_window(records.cache == "hit")
        lookups = per_window(records.cache != "")
        hit_ratio = [float(hits[i] / lookups[i]) if lookups[i] else None for i in range(windows)]

    return [
        SeriesPoint(
            t=float(edges[i]),
            requests=int(counts[i]),
            rps=float(rps[i]),
            failed=int(failed[i]),
            degraded=int(degraded[i]),
            wrong_model=int(wrong[i]),
            p50_ms=float(p50[i]),
            p99_ms=float(p99[i]),
            quality=means[i],
            zone_rps=zone_rps[i],
            cache_hit_ratio=hit_ratio[i],
        )
        for i in range(windows)
    ]


class QualityTrack:
    """Quality samples sorted by time, for the mean share over any window."""

    def __init__(self, samples: Sequence[QualitySample]) -> None:
        t = np.array([s.t for s in samples], dtype=np.float64)
        share = np.array([s.share for s in samples], dtype=np.float64)
        order = np.argsort(t, kind="stable")
        self.t: FloatArray = t[order]
        self.share: FloatArray = share[order]

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def mean(self, start: float, end: float) -> float | None:
        """Mean share of the samples taken in ``[start, end)``; None when there are none."""
        lo, hi = np.searchsorted(self.t, [start, end], side="left")
        if hi <= lo:
            return None
        return float(np.mean(self.share[lo:hi]))

    def means(self, edges: FloatArray) -> list[float | None]:
        """:meth:`mean` of each window between consecutive ``edges``."""
        windows = len(edges) - 1
        if len(self) == 0:
            return [None] * windows
        bounds = np.searchsorted(self.t, edges, side="left")
        # One slice per window (not per sample): the mean of each is exact, as in mean().
        return [
            float(np.mean(self.share[bounds[i] : bounds[i + 1]]))
            if bounds[i + 1] > bounds[i]
            else None
            for i in range(windows)
        ]
