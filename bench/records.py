"""Does the per-request record pipeline keep up? It must sustain >= 5,000 records/s.

Generates N wire lines (default 200,000) spread over a 60 s drill, then times each stage the
drill runs on them: ``RequestRecord.from_wire`` per line, ``Records.build``, and
``compute_series`` (100 ms windows). Each stage is timed on its own (best of ``--repeat``
runs) and the total is their sum; rates are records per second of one CPU core. The socket
transport is benchmarked elsewhere.

For comparison it also times a column-wise parse (one ``json.loads`` over all lines, then numpy
columns): the faster path that could replace ``from_wire`` + ``build`` if those ever become the
bottleneck.

    python bench/records.py [--records N] [--duration S] [--repeat R]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

from drillkit.observe.records import Records, RequestRecord
from drillkit.observe.series import compute_series

REQUIRED_RATE = 5_000.0  # records/s the pipeline must sustain
T0 = 1_700_000_000.0  # epoch seconds of the drill's t=0
GOOD = "sha256:" + "a" * 64
BAD = "sha256:" + "b" * 64

T = TypeVar("T")


def wire_lines(n: int, duration: float, seed: int) -> list[str]:
    """``n`` realistic wire lines: mostly fast 200s, some slow, failed, degraded, wrong-model."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        # Evenly offered load, with the jitter that makes arrival order differ from send order.
        sent = T0 + (i + rng.random()) * duration / n
        roll = rng.random()
        if roll < 0.01:
            record = RequestRecord(sent, 2000.0, 0, "timeout")
        elif roll < 0.02:
            record = RequestRecord(sent, rng.uniform(1, 50), 503, "http")
        else:
            record = RequestRecord(
                sent_at=sent,
                latency_ms=rng.lognormvariate(2.5, 0.6),
                status=200,
                degraded=roll < 0.05,
                model_version="v1",
                model_digest=BAD if roll > 0.9995 else GOOD,
                replica=f"replica-{rng.randint(1, 3)}",
            )
        lines.append(record.to_wire())
    return lines


def best_of(repeat: int, stage: Callable[[], T]) -> tuple[float, T]:
    """The fastest of ``repeat`` runs of ``stage`` (seconds) and its result."""
    best = float("inf")
    result: T | None = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = stage()
        best = min(best, time.perf_counter() - start)
    assert result is not None
    return best, result


def columnwise(lines: Sequence[str], *, t0: float, verified: set[str]) -> Records:
    """The proposed fast path: one JSON parse for all lines, then columns, then one sort.

    The cyclic garbage collector is paused meanwhile: the parse allocates hundreds of
    thousands of small lists, none of them cyclic, and each allocation burst would otherwise
    trigger full collections that scan all of them again (about a third of the time).
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        rows = json.loads("[" + ",".join(lines) + "]")
        columns = tuple(zip(*rows, strict=True))
    finally:
        if paused:
            gc.enable()
    sent, latency, status, _error, degraded, _version, digest, replica = columns
    t = np.array(sent, dtype=np.float64) - t0
    order = np.argsort(t, kind="stable")
    status_col = np.array(status, dtype=np.int64)[order]
    failed = (status_col == 0) | (status_col >= 500)
    degraded_col = np.array(degraded, dtype=np.bool_)[order] & ~failed
    ok = ~failed & ~degraded_col & (status_col < 400)
    wrong = np.fromiter((d not in verified for d in digest), dtype=np.bool_, count=len(rows))
    return Records(
        t=t[order],
        latency_ms=np.array(latency, dtype=np.float64)[order],
        status=status_col,
        failed=failed,
        degraded=degraded_col,
        wrong_model=wrong[order] & ok,
        replica=np.array(replica, dtype=np.str_)[order],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--duration", type=float, default=60.0, help="drill length, seconds")
    parser.add_argument("--repeat", type=int, default=3, help="runs per stage; the best counts")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    n = args.records

    print(f"generating {n:,} wire lines over a {args.duration:g} s drill ...", flush=True)
    lines = wire_lines(n, args.duration, args.seed)
    verified = {GOOD}

    parse_s, rows = best_of(args.repeat, lambda: [RequestRecord.from_wire(x) for x in lines])
    build_s, records = best_of(
        args.repeat, lambda: Records.build(rows, t0=T0, verified_digests=verified)
    )
    series_s, series = best_of(
        args.repeat, lambda: compute_series(records, start=0.0, end=args.duration, step=0.1)
    )
    fast_s, fast = best_of(args.repeat, lambda: columnwise(lines, t0=T0, verified=verified))

    # The fast path must compute the same thing, or its speed means nothing.
    for column in ("t", "latency_ms", "status", "failed", "degraded", "wrong_model", "replica"):
        assert np.array_equal(getattr(fast, column), getattr(records, column)), column
    assert sum(p.requests for p in series) == len(records)

    total_s = parse_s + build_s + series_s

    def row(stage: str, seconds: float) -> None:
        rate = n / seconds
        print(
            f"  {stage:<38} {seconds * 1000:9.1f} ms  {rate:13,.0f} records/s"
            f"  {rate / REQUIRED_RATE:8.1f}x of {REQUIRED_RATE:,.0f}/s"
        )

    print(f"records: {n:,} ({n / args.duration:,.0f}/s of drill time), best of {args.repeat}")
    row("RequestRecord.from_wire (per line)", parse_s)
    row("Records.build", build_s)
    row(f"compute_series ({len(series)} x 100 ms)", series_s)
    row("total", total_s)
    print(f"  parse share of the total: {parse_s / total_s:.0%}")
    print("proposed fast path (not used by drillkit yet):")
    row("json.loads of all lines + columns", fast_s)
    row("  + compute_series", fast_s + series_s)
    verdict = "keeps up" if n / total_s >= REQUIRED_RATE else "DOES NOT keep up"
    print(f"verdict: the record pipeline {verdict} with {REQUIRED_RATE:,.0f} records/s")


if __name__ == "__main__":
    main()
