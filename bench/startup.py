"""Stack start-up: time from `drillkit stack up` to every replica ready, per backend.

Each run is the real command line (`drillkit stack up --backend B`, then `stack down`). Two
conditions: *cached*, the model artifacts already built (the usual case after the first
drill), and *cold*, an empty artifact cache, so that `stack up` also generates the catalog
and trains and indexes the model (the first drill on a machine). For docker the stack image
is built first, untimed, in both (its own cold build is a one-off: see the README). The
figure is the wall time of `stack up`, which returns only once every replica answers /readyz
and the gateway routes to all of them.
Target (issue 4): docker at most 30 s for 3 replicas; printed next to the local backend,
measured in the same run.

Usage: python bench/startup.py [--runs N] [--cold-runs N] [--replicas N]
                              [--backends local,docker]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

TARGET_S = 30.0


def drillkit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drillkit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--backends", default="local,docker")
    parser.add_argument(
        "--cold-runs", type=int, default=1, help="runs with an empty artifact cache (0: skip)"
    )
    args = parser.parse_args()

    env = {**os.environ, "DRILLKIT_STATE_DIR": tempfile.mkdtemp(prefix="drillkit-startup-")}
    backends = args.backends.split(",")
    for backend in backends:  # untimed: artifacts (and the image) in place
        built = drillkit("stack", "build", "--backend", backend, env=env)
        if built.returncode != 0:
            sys.exit(f"build for {backend} failed: {built.stderr.strip()}")
    results: dict[str, list[float]] = {b: [] for b in backends}
    cold: dict[str, list[float]] = {b: [] for b in backends}

    def timed_up(backend: str, run_env: dict[str, str]) -> float:
        started = time.monotonic()
        proc = drillkit(
            "stack", "up", "--backend", backend, "--replicas", str(args.replicas), env=run_env
        )
        took = time.monotonic() - started
        drillkit("stack", "down", env=run_env)
        if proc.returncode != 0:
            sys.exit(f"stack up --backend {backend} failed: {proc.stderr.strip()}")
        return took

    for i in range(args.runs):
        for backend in backends:  # interleaved, so drift hits both alike
            took = timed_up(backend, env)
            results[backend].append(took)
            print(f"run {i + 1}: {backend:<7} cached, ready in {took:6.2f} s", flush=True)
    for i in range(args.cold_runs):
        for backend in backends:
            cold_env = {**env, "DRILLKIT_CACHE_DIR": tempfile.mkdtemp(prefix="drillkit-cold-")}
            took = timed_up(backend, cold_env)
            cold[backend].append(took)
            print(f"run {i + 1}: {backend:<7} cold, ready in {took:6.2f} s", flush=True)

    print(
        f"\nstack ready, {args.replicas} replicas (wall time of `drillkit stack up`; "
        f"{args.runs} cached and {args.cold_runs} cold runs each)"
    )
    print(f"{'backend':<8} {'artifacts':<10} {'median s':>9} {'min s':>7} {'max s':>7}")
    for label, table in (("cached", results), ("cold", cold)):
        for backend, times in table.items():
            if times:
                print(
                    f"{backend:<8} {label:<10} {statistics.median(times):9.2f} "
                    f"{min(times):7.2f} {max(times):7.2f}"
                )
    if "docker" in results and "local" in results:
        ratio = statistics.median(results["docker"]) / statistics.median(results["local"])
        print(f"docker / local: {ratio:.2f}x")
    if "docker" in results:
        median = statistics.median(results["docker"])
        verdict = "meets" if median <= TARGET_S else "MISSES"
        print(f"docker median {median:.2f} s {verdict} the {TARGET_S:.0f} s target")


if __name__ == "__main__":
    main()
