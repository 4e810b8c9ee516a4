"""Drill overhead: wall time of `drillkit run` minus the scenario's warmup + duration.

Runs a bundled scenario (default kill-node) with cached artifacts (built first if needed, not
timed) and prints the overhead split into its parts as the drill's own line log shows them:
stack start, the timed load window, healing, teardown and report writing.
Target (issue 3): overhead at most 15 s.

Usage: python bench/overhead.py [scenario] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from drillkit.cli.drill import resolve_scenario
from drillkit.scenario import load_scenario
from drillkit.stacks.recommender.build import ensure_artifacts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", nargs="?", default="kill-node")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()

    path = resolve_scenario(Path(args.scenario))
    scenario = load_scenario(path)
    ensure_artifacts(scenario.stack_spec().catalog)  # cached artifacts: not part of overhead
    budget = scenario.load.warmup + scenario.load.duration
    print(
        f"scenario {scenario.name}: warmup {scenario.load.warmup:g} s + duration "
        f"{scenario.load.duration:g} s = {budget:g} s of load"
    )
    overheads: list[float] = []
    failed: list[str] = []
    for i in range(args.runs):
        out = Path(tempfile.mkdtemp(prefix="drillkit-overhead-"))
        env = {**os.environ, "DRILLKIT_STATE_DIR": str(out / "state")}
        started = time.monotonic()
        marks: list[tuple[float, str]] = []
        proc = subprocess.Popen(
            [sys.executable, "-m", "drillkit", "run", str(path), "--ci", "--out", str(out)],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stderr is not None
        for line in proc.stderr:
            marks.append((time.monotonic() - started, line.rstrip()))
        proc.wait()
        wall = time.monotonic() - started
        overhead = wall - budget
        if proc.returncode != 0:
            # A drill that failed, aborted or broke measures no overhead (one that stopped
            # early even has a negative one): say so, and fail the benchmark.
            failed.append(f"run {i + 1}: the drill exited {proc.returncode}")
            print(f"run {i + 1}: exit {proc.returncode}: NOT measured; its last lines:")
            for _, line in marks[-8:]:
                print(f"  {line[:110]}")
            continue
        overheads.append(overhead)
        print(
            f"run {i + 1}: exit {proc.returncode}, wall {wall:.1f} s, overhead "
            f"{overhead:.1f} s (target <= 15 s: {'met' if overhead <= 15 else 'NOT met'})"
        )
        for t, line in marks:
            if any(
                key in line
                for key in ("ready", "routing", "healing", "reports:", "injected", "healed")
            ):
                print(f"  {t:6.1f} s  {line[:110]}")
    if len(overheads) > 1:
        print(f"overhead: min {min(overheads):.1f} s, max {max(overheads):.1f} s")
    if failed:
        sys.exit("benchmark failed: " + "; ".join(failed))


if __name__ == "__main__":
    main()
