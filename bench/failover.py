"""Failover figures per scenario and backend: median and spread over repeated drills.

Each run is the real command line, `drillkit run SCENARIO --backend B --json R`, on a bundled
scenario (or a shortened copy with --short: the same faults and expectations, the timeline
scaled so that a drill takes about 20 s). Runs are interleaved across backends so that drift
on a shared machine hits both alike. For each fault the table gives the median and the range
(min..max) of time to detect, time to recover, failed and degraded responses, and how many
runs passed. With the stack's monitoring (Prometheus and Alertmanager installed, or the docker
image), it also gives the time to the first firing alert (`alert`) and to its notification
(`notified`), and checks kill-node's against the targets: an alert within 5 s of the kill,
a notification within 8 s. Rollout scenarios (bad-canary-quality, bad-canary-latency,
good-canary) get a table of their own: how each rollout ended, time to the verdict and to
rollback, the share of users and the answers the new version reached, and the quality users
got; bad-canary-quality is checked against its target (rolled back within two analysis
intervals, at most 15% of users exposed).

When the run holds both `kill-node` and `zone-outage`, it prints their detection side by side:
drillkit's gateway detecting a killed replica against HAProxy at the edge detecting a killed
zone gateway (`inter 200ms fall 2`), measured in the same run, and their ratio.

Usage: python bench/failover.py [--runs N] [--backends local,docker]
                                [--scenarios kill-node,pause-node,...] [--short]
(default: every scenario in scenarios/, 3 runs, both backends)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
DEFAULT = ",".join(sorted(p.stem for p in SCENARIOS.glob("*.yaml")))  # every bundled one
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def drillkit(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drillkit", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1200,
    )


def _scale(value: Any, factor: float) -> Any:
    match = _DURATION.match(str(value))
    return f"{float(match[1]) * factor:g}s" if match else value


def shortened(path: Path, folder: Path, seconds: float) -> Path:
    """A copy of the scenario whose load and fault timeline are scaled to ``seconds``."""
    doc = yaml.safe_load(path.read_text())
    duration = float(_DURATION.match(str(doc["load"]["duration"]))[1])  # type: ignore[index]
    factor = min(1.0, seconds / duration)
    doc["load"]["duration"] = f"{duration * factor:g}s"
    doc["load"]["warmup"] = "3s"
    for fault in doc.get("faults") or []:
        fault["at"] = _scale(fault["at"], factor)
        if "duration" in fault:
            fault["duration"] = _scale(fault["duration"], factor)
        params = fault.get("params") or {}
        if "interval" in params:  # a rollout's steps scale with its window
            params["interval"] = _scale(params["interval"], factor)
    doc.pop("report", None)
    out = folder / path.name
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    return out


def _fmt(values: list[float], unit: str = "") -> str:
    if not values:
        return "-"
    digits = 2 if unit else 0
    med = statistics.median(values)
    low, high = min(values), max(values)
    if low == high:
        return f"{med:.{digits}f}{unit}"
    return f"{med:.{digits}f}{unit} ({low:.{digits}f}..{high:.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="local,docker")
    parser.add_argument("--scenarios", default=DEFAULT)
    parser.add_argument(
        "--short", action="store_true", help="scale each scenario's timeline to about 20 s of load"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="drillkit-failover-"))
    env = {**os.environ, "DRILLKIT_STATE_DIR": str(work / "state")}
    backends = args.backends.split(",")
    paths = []
    for name in args.scenarios.split(","):
        path = SCENARIOS / f"{name}.yaml"
        if not path.is_file():
            sys.exit(f"no bundled scenario {name!r} in {SCENARIOS}")
        paths.append(shortened(path, work, 20.0) if args.short else path)
    for backend in backends:  # untimed: artifacts (and the image) in place
        built = drillkit("stack", "build", "--backend", backend, env=env, cwd=work)
        if built.returncode != 0:
            sys.exit(f"build for {backend} failed: {built.stderr.strip()[-500:]}")

    # (scenario, backend, fault id) -> metric -> values
    figures: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    passed: dict[tuple[str, str], int] = defaultdict(int)
    rollouts: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    refused: dict[tuple[str, str], str] = {}  # runs with no report: the first error line
    started = time.monotonic()
    total = args.runs * len(paths) * len(backends)
    done = 0
    for run in range(args.runs):
        for path in paths:
            for backend in backends:
                report = work / f"r-{run}-{path.stem}-{backend}.json"
                proc = drillkit(
                    "run",
                    str(path),
                    "--ci",
                    "--backend",
                    backend,
                    "--json",
                    str(report),
                    "--seed",
                    str(run),
                    env=env,
                    cwd=work,
                )
                done += 1
                print(
                    f"[{done}/{total} {time.monotonic() - started:5.0f} s] {path.stem} on "
                    f"{backend}: exit {proc.returncode}",
                    file=sys.stderr,
                )
                if not report.exists():
                    print(proc.stderr[-800:], file=sys.stderr)
                    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
                    refused.setdefault(
                        (path.stem, backend), f"exit {proc.returncode}: {(lines or ['?'])[0]}"
                    )
                    continue
                data = json.loads(report.read_text())
                passed[(path.stem, backend)] += data["status"] == "passed"
                for fault in data["faults"]:
                    cell = figures[(path.stem, backend, fault["id"])]
                    for key in ("ttd_s", "rto_s"):
                        if fault[key] is not None:
                            cell[key].append(fault[key])
                        else:
                            cell[key + "_never"].append(1)
                    for key in ("time_to_alert_s", "time_to_notify_s"):
                        if fault.get(key) is not None:
                            cell[key].append(fault[key])
                    cell["failed"].append(fault["failed_requests"])
                    cell["degraded"].append(fault["degraded_responses"])
                    rollout = fault.get("rollout")
                    if rollout is not None:
                        rollouts[(path.stem, backend, fault["id"])].append(
                            {**rollout, "interval": _interval(path, fault["id"])}
                        )

    print(
        f"\nfailover figures: {args.runs} runs per scenario and backend"
        f"{' (timelines shortened to ~20 s of load)' if args.short else ''}; "
        "median (min..max)\n"
    )
    width = max([len("scenario"), *(len(p.stem) for p in paths)])
    header = (
        f"{'scenario':<{width}} {'backend':<8} {'fault':<10} {'ttd':<22} {'rto':<22} "
        f"{'alert':<22} {'notified':<22} {'failed':<16} {'degraded':<16} passed"
    )
    print(header)
    print("-" * len(header))
    for (scenario, backend, fault), cell in sorted(figures.items()):
        never = ""
        if cell.get("ttd_s_never") or cell.get("rto_s_never"):
            never = (
                f"  never detected {len(cell.get('ttd_s_never', []))}, "
                f"never recovered {len(cell.get('rto_s_never', []))}"
            )
        print(
            f"{scenario:<{width}} {backend:<8} {fault:<10} {_fmt(cell['ttd_s'], ' s'):<22} "
            f"{_fmt(cell['rto_s'], ' s'):<22} {_fmt(cell['time_to_alert_s'], ' s'):<22} "
            f"{_fmt(cell['time_to_notify_s'], ' s'):<22} {_fmt(cell['failed']):<16} "
            f"{_fmt(cell['degraded']):<16} {passed[(scenario, backend)]}/{args.runs}{never}"
        )
    for (scenario, backend), why in sorted(refused.items()):
        print(f"{scenario:<{width}} {backend:<8} not run: {why}")
    for backend in backends:
        gateway = figures.get(("kill-node", backend, "kill-1"), {}).get("ttd_s", [])
        edge = figures.get(("zone-outage", backend, "zone-a-down"), {}).get("ttd_s", [])
        if gateway and edge:
            g, e = statistics.median(gateway), statistics.median(edge)
            verdict = "faster" if g < e else "NOT faster"
            print(
                f"\ndetection on {backend}: drillkit's gateway, a killed replica "
                f"{_fmt(gateway, ' s')}; HAProxy at the edge, a killed zone {_fmt(edge, ' s')}; "
                f"edge/gateway {e / g:.2f}x: the gateway is {verdict}"
            )
    for backend in backends:
        cell = figures.get(("kill-node", backend, "kill-1"), {})
        alert, told = cell.get("time_to_alert_s", []), cell.get("time_to_notify_s", [])
        if alert and told:
            a, n = statistics.median(alert), statistics.median(told)
            print(
                f"\nmonitoring on {backend}, kill-node: first alert {_fmt(alert, ' s')} after the "
                f"kill (target 5 s: {'met' if a <= 5 else 'MISSED'}), notification "
                f"{_fmt(told, ' s')} (target 8 s: {'met' if n <= 8 else 'MISSED'})"
            )
    _rollout_table(rollouts)
    print(f"\n{total} drills in {time.monotonic() - started:.0f} s; reports in {work}")


def _interval(path: Path, fault_id: str) -> float:
    doc = yaml.safe_load(path.read_text())
    fault = next(f for f in doc["faults"] if f.get("id") == fault_id)
    match = _DURATION.match(str((fault.get("params") or {}).get("interval", "10s")))
    return float(match[1]) if match else 10.0


def _rollout_table(rollouts: dict[tuple[str, str, str], list[dict[str, Any]]]) -> None:
    """Rollouts: how each ended, time to verdict and to rollback, users exposed; and the
    target of a 30% quality defect at a 10% first step: rolled back within two analysis
    intervals, at most 15% of users exposed."""
    if not rollouts:
        return
    print("\nrollouts: median (min..max)")
    header = (
        f"{'scenario':<20} {'backend':<8} {'ended':<24} {'verdict':<22} {'rollback':<22} "
        f"{'users exposed':<22} {'answers':<14} {'quality':<18}"
    )
    print(header)
    print("-" * len(header))
    for (scenario, backend, _), runs in sorted(rollouts.items()):
        ended = ", ".join(f"{k} {v}" for k, v in sorted(_count(r["status"] for r in runs).items()))
        shares = _known(runs, "exposed_users_share", 100.0)
        print(
            f"{scenario:<20} {backend:<8} {ended:<24} "
            f"{_fmt(_known(runs, 'time_to_verdict_s'), ' s'):<22} "
            f"{_fmt(_known(runs, 'time_to_rollback_s'), ' s'):<22} "
            f"{_fmt(shares, ' %'):<22} {_fmt(_known(runs, 'exposed_requests')):<14} "
            f"{_fmt(_known(runs, 'quality', 100.0), ' %'):<18}"
        )
        if scenario == "bad-canary-quality":
            interval = runs[0]["interval"]
            back = [r["time_to_rollback_s"] for r in runs]
            within = all(b is not None and b <= 2 * interval for b in back)
            few = all(s <= 15.0 for s in shares) and len(shares) == len(runs)
            print(
                f"  target on {backend}: rolled back within two intervals ({2 * interval:g} s): "
                f"{'met' if within else 'MISSED'}; at most 15% of users exposed: "
                f"{'met' if few else 'MISSED'}"
            )


def _known(runs: list[dict[str, Any]], key: str, scale: float = 1.0) -> list[float]:
    return [scale * r[key] for r in runs if r.get(key) is not None]


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for value in values:
        out[str(value)] += 1
    return dict(out)


if __name__ == "__main__":
    main()
