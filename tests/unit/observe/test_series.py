from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drillkit.observe.records import Records, RequestRecord
from drillkit.observe.series import (
    QualitySample,
    QualityTrack,
    SeriesPoint,
    WindowStats,
    compute_series,
    nearest_rank_index,
    percentile,
    window_edges,
    window_stats,
)

GOOD = "sha256:good"


def build(rows: list[RequestRecord]) -> Records:
    return Records.build(rows, t0=0.0, verified_digests=[GOOD])


def ok(t: float, latency: float = 10.0) -> RequestRecord:
    return RequestRecord(t, latency, 200, model_digest=GOOD)


# -- a pure-Python reference ------------------------------------------------------------------


def ref_percentile(values: list[float], q: int) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = math.ceil(len(ordered) * q / 100)  # nearest rank, 1-based
    return ordered[max(rank, 1) - 1]


def ref_edges(start: float, end: float, step: float) -> list[float]:
    if end <= start:
        return [start]
    n = max(1, math.ceil((end - start) / step - 1e-9))
    return [round(start + i * step, 9) for i in range(n)] + [end]


@dataclass
class Row:
    t: float
    latency: float
    status: int
    degraded: bool
    digest: str


def ref_series(rows: list[Row], start: float, end: float, step: float) -> list[SeriesPoint]:
    edges = ref_edges(start, end, step)
    points = []
    for lo, hi in itertools.pairwise(edges):
        inside = [r for r in rows if lo <= r.t < hi]
        failed = [r.status == 0 or r.status >= 500 for r in inside]
        degraded = [r.degraded and not f for r, f in zip(inside, failed, strict=True)]
        wrong = [
            not f and not d and r.status < 400 and r.digest != GOOD
            for r, f, d in zip(inside, failed, degraded, strict=True)
        ]
        latencies = [r.latency for r in inside]
        points.append(
            SeriesPoint(
                t=lo,
                requests=len(inside),
                rps=len(inside) / (hi - lo),
                failed=sum(failed),
                degraded=sum(degraded),
                wrong_model=sum(wrong),
                p50_ms=ref_percentile(latencies, 50),
                p99_ms=ref_percentile(latencies, 99),
            )
        )
    return points


# Send times both arbitrary and exactly on 0.1 s boundaries, where off-by-one errors live.
times = st.one_of(
    st.floats(min_value=-1.0, max_value=8.0, allow_nan=False),
    st.integers(min_value=-10, max_value=80).map(lambda k: round(k * 0.1, 9)),
)
rows_strategy = st.lists(
    st.builds(
        Row,
        t=times,
        latency=st.floats(min_value=0.0, max_value=5000.0, allow_nan=False),
        status=st.sampled_from([200, 200, 200, 404, 500, 503, 0]),
        degraded=st.booleans(),
        digest=st.sampled_from([GOOD, GOOD, "sha256:bad", ""]),
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(
    rows=rows_strategy,
    start=st.sampled_from([0.0, -0.5, 0.3, 1.0]),
    length=st.sampled_from([0.0, 0.1, 1.0, 3.05, 6.0]),
    step=st.sampled_from([0.1, 0.25, 1.0]),
)
def test_series_matches_brute_force(
    rows: list[Row], start: float, length: float, step: float
) -> None:
    records = build(
        [RequestRecord(r.t, r.latency, r.status, "", r.degraded, "", r.digest) for r in rows]
    )
    got = compute_series(records, start=start, end=start + length, step=step)
    want = ref_series(rows, start, start + length, step)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g.t, g.requests, g.failed, g.degraded, g.wrong_model) == (
            w.t,
            w.requests,
            w.failed,
            w.degraded,
            w.wrong_model,
        )
        # Percentiles pick an observed value, so they compare exactly.
        assert (g.p50_ms, g.p99_ms) == (w.p50_ms, w.p99_ms)
        assert g.rps == pytest.approx(w.rps)


@settings(max_examples=100, deadline=None)
@given(rows=rows_strategy)
def test_window_stats_matches_brute_force(rows: list[Row]) -> None:
    records = build(
        [RequestRecord(r.t, r.latency, r.status, "", r.degraded, "", r.digest) for r in rows]
    )
    stats = window_stats(records)
    latencies = [r.latency for r in rows]
    failed = sum(r.status == 0 or r.status >= 500 for r in rows)
    assert stats.requests == len(rows)
    assert stats.failed == failed
    assert stats.availability == (1.0 if not rows else (len(rows) - failed) / len(rows))
    assert stats.degraded == int(np.count_nonzero(records.degraded))
    for q, got in ((50, stats.p50_ms), (95, stats.p95_ms), (99, stats.p99_ms)):
        assert got == ref_percentile(latencies, q)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        pytest.param(list(range(1, 101)), 99, 99, id="p99-of-100"),
        pytest.param(list(range(1, 101)), 50, 50, id="p50-of-100"),
        pytest.param(list(range(1, 101)), 100, 100, id="p100-is-max"),
        pytest.param(list(range(1, 11)), 95, 10, id="p95-of-10-rounds-up"),
        pytest.param(list(range(1, 11)), 50, 5, id="p50-of-10"),
        pytest.param([7.0], 99, 7.0, id="single"),
        pytest.param([3, 1, 2], 1, 1, id="unsorted-p1-is-min"),
        pytest.param([], 99, 0.0, id="empty-is-zero"),
    ],
)
def test_nearest_rank_percentile(values: list[float], q: int, expected: float) -> None:
    assert percentile(values, q) == expected


def test_nearest_rank_index_rejects_bad_percentiles() -> None:
    with pytest.raises(ValueError, match="1..100"):
        nearest_rank_index(10, 0)
    assert np.asarray(nearest_rank_index(np.array([0, 1, 100, 101]), 99)).tolist() == [0, 0, 98, 99]


def test_window_edges_are_exact_decimals() -> None:
    edges = window_edges(0.0, 1.0, 0.1)
    assert len(edges) == 11
    assert edges[3] == 0.3  # not 0.30000000000000004
    assert edges[-1] == 1.0
    assert list(window_edges(0.0, 1.05, 0.1))[-2:] == [1.0, 1.05]  # a short last window
    assert list(window_edges(2.0, 2.0, 0.1)) == [2.0]
    assert len(window_edges(0.0, 60.0, 0.1)) == 601
    with pytest.raises(ValueError, match="step"):
        window_edges(0.0, 1.0, 0.0)


def test_window_boundaries() -> None:
    records = build([ok(0.0, 1), ok(0.29999999, 2), ok(0.3, 3), ok(0.4, 4), ok(0.5, 5)])
    series = compute_series(records, start=0.0, end=0.5, step=0.1)
    assert [p.t for p in series] == [0.0, 0.1, 0.2, 0.3, 0.4]
    # [0, 0.1) has the record at 0.0; 0.3 starts its own window; 0.5 (== end) is outside.
    assert [p.requests for p in series] == [1, 0, 1, 1, 1]
    assert [p.p50_ms for p in series] == [1, 0, 2, 3, 4]
    assert series[0].rps == pytest.approx(10.0)


def test_empty_windows_and_empty_records() -> None:
    series = compute_series(build([]), start=0.0, end=1.0, step=0.25)
    assert len(series) == 4
    assert all(p.requests == 0 and p.rps == 0 and p.p99_ms == 0.0 for p in series)
    assert all(p.quality is None for p in series)
    assert compute_series(build([]), start=1.0, end=1.0) == []
    empty = window_stats(build([]))
    assert (empty.requests, empty.availability, empty.degraded_share, empty.p99_ms) == (
        0,
        1.0,
        0.0,
        0.0,
    )


def test_short_last_window_rps() -> None:
    records = build([ok(1.0), ok(1.01), ok(1.04)])
    series = compute_series(records, start=0.0, end=1.05, step=0.1)
    assert len(series) == 11
    assert series[-1].requests == 3
    assert series[-1].rps == pytest.approx(3 / 0.05)


def test_quality_per_window() -> None:
    samples = [
        QualitySample(0.55, 0.5),
        QualitySample(0.05, 1.0),
        QualitySample(0.15, 0.8),
        QualitySample(0.1, 0.6),
    ]
    series = compute_series(build([]), start=0.0, end=0.6, step=0.1, quality=samples)
    assert [p.quality for p in series] == [
        1.0,
        pytest.approx(0.7),
        None,
        None,
        None,
        0.5,
    ]
    track = QualityTrack(samples)
    assert track.mean(0.0, 0.2) == pytest.approx(0.8)
    assert track.mean(0.2, 0.5) is None
    assert len(track) == 4


def test_nearest_rank_index_rejects_percentiles_above_100() -> None:
    with pytest.raises(ValueError, match="1..100"):
        nearest_rank_index(10, 101)
    assert nearest_rank_index(10, 100) == 9


def test_a_full_window_has_its_own_p50_and_p99() -> None:
    # 200 requests in the first 0.1 s window (the default step), latencies 1..200 ms: the
    # nearest-rank p99 is the 198th value, not the maximum; p50 the 100th.
    rows = [RequestRecord(i / 2000, float(200 - i), 200) for i in range(200)]
    series = compute_series(build(rows), start=0.0, end=0.2)
    assert [p.t for p in series] == [0.0, 0.1]
    first = series[0]
    assert (first.requests, first.p50_ms, first.p99_ms) == (200, 100.0, 198.0)
    assert first.rps == 2000.0


def test_window_stats_shares() -> None:
    rows = [RequestRecord(i / 10, 5.0, 200, degraded=i < 2) for i in range(10)]
    stats = window_stats(build(rows))
    assert (stats.requests, stats.degraded, stats.degraded_share) == (10, 2, 0.2)
    empty = window_stats(build([]))
    assert empty == WindowStats(0, 0, 0, 0, 1.0, 0.0, 0.0, 0.0, 0.0)


def test_window_stats_percentiles_of_a_hundred() -> None:
    rows = [RequestRecord(i / 100, float(i + 1), 200) for i in range(100)]
    stats = window_stats(build(rows))
    assert (stats.p50_ms, stats.p95_ms, stats.p99_ms) == (50.0, 95.0, 99.0)


def test_zone_rates_and_the_cache_hit_ratio_are_exact_per_window() -> None:
    rows = [
        RequestRecord(0.01, 5.0, 200, model_digest=GOOD, zone="a", cache="hit"),
        RequestRecord(0.02, 5.0, 200, model_digest=GOOD, zone="b", cache="miss"),
        RequestRecord(0.03, 5.0, 200, model_digest=GOOD, zone="b", cache="bypass"),
        RequestRecord(0.04, 5.0, 200, model_digest=GOOD, zone="b", cache="hit"),
        RequestRecord(0.15, 5.0, 0, "timeout"),  # no answer: no zone, no lookup
    ]
    first, second = compute_series(build(rows), start=0.0, end=0.2, step=0.1)
    assert first.zone_rps is not None
    assert first.zone_rps["a"] == pytest.approx(10.0) and first.zone_rps["b"] == pytest.approx(30.0)
    assert first.cache_hit_ratio == pytest.approx(2 / 4)
    assert second.zone_rps == {"a": 0.0, "b": 0.0}
    assert second.cache_hit_ratio is None  # nothing looked the cache up


def test_a_stack_without_zones_or_cache_has_neither_series() -> None:
    (point,) = compute_series(build([ok(0.05)]), start=0.0, end=0.1, step=0.1)
    assert point.zone_rps is None and point.cache_hit_ratio is None
