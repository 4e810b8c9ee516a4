"""Soak: a 10-minute drill. drillkit's own memory stays flat (at most 50 MB of growth after
its first minute), and the report's figures agree with the raw per-request records.

Slow: `pytest -m slow tests/integration/test_soak.py` (DRILLKIT_SOAK_SECONDS shortens it).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cli, leftovers
from .test_drills import scenario

SECONDS = float(os.environ.get("DRILLKIT_SOAK_SECONDS", "600"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SECONDS + 900)]
GROWTH_LIMIT_MB = 50.0


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _faults(seconds: float) -> list[dict[str, Any]]:
    # Spread over the drill: a kill, a pause and a corrupted store, each healed.
    def at(share: float) -> str:
        return f"{seconds * share:.0f}s"

    length = f"{max(3.0, seconds * 0.05):.0f}s"
    return [
        {
            "id": "kill-1",
            "kind": "kill_node",
            "target": "replica-1",
            "at": at(0.2),
            "duration": length,
        },
        {
            "id": "pause-1",
            "kind": "pause_node",
            "target": "replica-2",
            "at": at(0.5),
            "duration": length,
        },
        {
            "id": "bad-1",
            "kind": "corrupt_model",
            "target": "model-store",
            "at": at(0.75),
            "duration": length,
            "params": {"mode": "bitflip"},
        },
    ]


def test_a_long_drill_keeps_memory_flat_and_figures_true(cli: Cli, tmp_path: Path) -> None:
    load: dict[str, Any] = {
        "rate": 50,
        "users": 10,
        "duration": f"{SECONDS:.0f}s",
        "warmup": "3s",
        "timeout": "2s",
    }
    path = scenario(tmp_path, "soak", _faults(SECONDS), load=load)
    report_path, records_path = tmp_path / "r.json", tmp_path / "records.jsonl.gz"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drillkit",
            "run",
            str(path),
            "--ci",
            "--json",
            str(report_path),
            "--records",
            str(records_path),
        ],
        env=cli.env,
        cwd=cli.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    samples: list[tuple[float, float]] = []

    def sample() -> None:
        started = time.monotonic()
        while proc.poll() is None:
            rss = _rss_mb(proc.pid)
            if rss is not None:
                samples.append((time.monotonic() - started, rss))
            time.sleep(2.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate(timeout=SECONDS + 600)
    sampler.join(10)
    assert proc.returncode == 0, err[-3000:]

    # Memory: from the end of the first minute (imports, stack start, first records) on.
    settled = min(60.0, SECONDS / 5)
    baseline = next(rss for t, rss in samples if t >= settled)
    peak = max(rss for t, rss in samples if t >= settled)
    growth = peak - baseline
    print(
        f"\ndrillkit RSS: {baseline:.0f} MB at {settled:.0f} s, peak {peak:.0f} MB after it "
        f"(+{growth:.1f} MB) over {SECONDS:.0f} s, {len(samples)} samples"
    )
    assert growth <= GROWTH_LIMIT_MB, samples

    # Figures: recount each phase from the raw records and compare.
    report = json.loads(report_path.read_text())
    lines = gzip.decompress(records_path.read_bytes()).decode().splitlines()
    header = json.loads(lines[0])
    t0, fields = header["t0"], header["fields"]
    rows = [dict(zip(fields, json.loads(line), strict=True)) for line in lines[1:]]
    assert len(rows) >= 0.9 * load["rate"] * (SECONDS + 3)
    for phase in report["phases"]:
        inside = [r for r in rows if phase["start"] <= r["sent_at"] - t0 < phase["end"]]
        failed = sum(1 for r in inside if r["status"] == 0 or r["status"] >= 500)
        degraded = sum(
            1 for r in inside if r["degraded"] and not (r["status"] == 0 or r["status"] >= 500)
        )
        assert (phase["requests"], phase["failed"]) == (len(inside), failed), phase["name"]
        assert phase["degraded"] == degraded, phase["name"]
    measured = [r for r in rows if 0 <= r["sent_at"] - t0 < SECONDS]
    assert report["load"]["requests"] == len(measured)
    series_total = sum(round(w["rps"] * 0.1) for w in report["series"])
    assert series_total == len(measured)
    assert not leftovers(cli)
