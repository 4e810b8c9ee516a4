"""Serving benchmark: a 3-replica local stack with the default catalog on this machine.

Prints:
  * each replica's direct throughput (closed loop, 8 connections) with p50/p99;
  * the gateway's added latency (open loop at a low rate: gateway p50/p99 minus a replica's);
  * a rate sweep against the gateway (open loop) and the highest rate held with p99 <= 50 ms,
    no errors, and at least 97% of the offered rate achieved.

Load generator: bench/loadgen.py, an open-loop asyncio HTTP/1.1 client over keep-alive
connections that measures latency from each request's due time (no coordinated omission). It
runs in this process on the same 2 cores as the stack, so its CPU use is part of the figures.

Usage: python bench/serve.py [--replicas 3] [--step-seconds 6] [--rates 100,200,...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import Result, run_closed_loop, run_open_loop

from drillkit.backends.base import StackSpec
from drillkit.backends.local import LocalBackend
from drillkit.stacks.recommender.data import CatalogSpec

P99_TARGET_MS = 50.0


def targets(n_users: int) -> object:
    rng = random.Random(1)
    users = [rng.randrange(n_users) for _ in range(4096)]
    return lambda i: f"/recommend?user_id={users[i % len(users)]}&k=10"


def row(label: str, r: Result) -> str:
    return (f"{label:<28} offered {r.offered_rps:7.0f}/s  achieved {r.achieved_rps:7.1f}/s  "
            f"p50 {r.pct(50):6.2f} ms  p99 {r.pct(99):7.2f} ms  errors {r.errors}  "
            f"degraded {r.degraded}")


async def sweep(gateway: str, rates: list[int], seconds: float, target: object) -> int:
    best = 0
    for rate in rates:
        r = await run_open_loop(gateway, rate, seconds, target)  # type: ignore[arg-type]
        held = (r.pct(99) <= P99_TARGET_MS and r.errors == 0 and r.degraded == 0
                and r.achieved_rps >= 0.97 * rate)
        print(row(f"gateway @ {rate}/s", r) + ("  held" if held else "  NOT held"), flush=True)
        if held:
            best = rate
        elif rate > best * 1.5 and best:
            break
        await asyncio.sleep(1.0)
    return best


async def measure(state_urls: dict[str, str], gateway: str, args: argparse.Namespace,
                  n_users: int) -> None:
    target = targets(n_users)
    await run_open_loop(gateway, 100, 2.0, target)  # warm up every path
    print("\n== replicas, direct (closed loop, 8 connections, 4 s each)")
    for name, url in state_urls.items():
        r = await run_closed_loop(url, 8, 4.0, target)  # type: ignore[arg-type]
        print(row(name, r), flush=True)
    print("\n== gateway added latency (open loop, 50 req/s, 6 s)")
    first = next(iter(state_urls.values()))
    direct = await run_open_loop(first, 50, 6.0, target)  # type: ignore[arg-type]
    via = await run_open_loop(gateway, 50, 6.0, target)  # type: ignore[arg-type]
    print(row("replica-1 direct", direct))
    print(row("via gateway", via))
    print(f"gateway adds p50 {via.pct(50) - direct.pct(50):+.2f} ms, "
          f"p99 {via.pct(99) - direct.pct(99):+.2f} ms")
    print(f"\n== gateway rate sweep ({args.step_seconds:.0f} s per step, open loop)")
    rates = [int(x) for x in args.rates.split(",")]
    best = await sweep(gateway, rates, args.step_seconds, target)
    print(f"\nhighest rate held with p99 <= {P99_TARGET_MS:.0f} ms: {best} req/s "
          f"(target >= 300 req/s: {'met' if best >= 300 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--step-seconds", type=float, default=6.0)
    parser.add_argument("--rates", default="100,200,300,400,500,600,700,800,1000,1200")
    args = parser.parse_args()

    os.environ.setdefault("DRILLKIT_STATE_DIR", tempfile.mkdtemp(prefix="drillkit-bench-"))
    spec = StackSpec(replicas=args.replicas, catalog=CatalogSpec().resolved(), gpu="off")
    backend = LocalBackend()
    print(f"machine: {os.cpu_count()} CPUs; catalog {spec.catalog.items} items x "
          f"{spec.catalog.dim} dims; {args.replicas} replicas; load generator: bench/loadgen.py "
          "(open-loop asyncio HTTP/1.1, same machine)")
    state = backend.up(spec, progress=lambda m, f: print(f"  {m}", file=sys.stderr))
    try:
        urls = {s.name: s.url for s in state.replicas()}
        n_users = spec.catalog.resolved().users
        asyncio.run(measure(urls, state.gateway_url, args, n_users))
    finally:
        backend.down(state)


if __name__ == "__main__":
    main()
