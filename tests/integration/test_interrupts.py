"""Interrupts and crashes at random moments of a drill, on each backend.

SIGINT or SIGTERM at any moment (stack start, warmup, a fault, healing, teardown, analysis)
must end the drill with exit 130, a report marked interrupted, nothing left running or
injected, and a model store that verifies. A SIGKILL at any moment leaves things behind by
necessity; `drillkit heal` must then take all of it away.

The moments are drawn from a seeded generator, so a failure names a moment that can be
replayed (`pytest -k sigterm-7.31s`).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cli, leftovers, stack_files
from .test_docker import image  # noqa: F401  (the stack image, for the docker cases)
from .test_drills import scenario

# Two faults over a 10 s drill: a killed replica, then a corrupted model store.
FAULTS: list[dict[str, Any]] = [
    {"id": "kill-1", "kind": "kill_node", "target": "replica-1", "at": "2s", "duration": "4s"},
    {
        "id": "bad-1",
        "kind": "corrupt_model",
        "target": "model-store",
        "at": "5s",
        "duration": "4s",
        "params": {"mode": "bitflip"},
    },
]
LOAD = {"rate": 40, "users": 8, "duration": "10s", "warmup": "2s", "timeout": "2s"}
# From the drill's first log line: stack start (about 5 s), warmup, 10 s of load, teardown.
SPAN = {"local": 16.0, "docker": 18.0}
MOMENTS_PER_BACKEND = 10
CRASHES_PER_BACKEND = 4


def _moments(backend: str, count: int, signals: list[signal.Signals], seed: int) -> list[Any]:
    rng = random.Random(seed)
    params = []
    for i in range(count):
        sig = signals[i % len(signals)]
        at = round(rng.uniform(0.0, SPAN[backend]), 2)
        marks = [pytest.mark.docker] if backend == "docker" else []
        params.append(
            pytest.param(backend, sig, at, marks=marks, id=f"{backend}-{sig.name.lower()}-{at}s")
        )
    return params


INTERRUPTS = [
    m
    for b, seed in (("local", 1), ("docker", 2))
    for m in _moments(b, MOMENTS_PER_BACKEND, [signal.SIGINT, signal.SIGTERM], seed)
]
CRASHES = [
    m
    for b, seed in (("local", 3), ("docker", 4))
    for m in _moments(b, CRASHES_PER_BACKEND, [signal.SIGKILL], seed)
]


class _Drill:
    """`drillkit run` in a child process, with its stderr collected as it comes."""

    def __init__(self, cli: Cli, path: Path, report: Path, backend: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "drillkit",
                "run",
                str(path),
                "--ci",
                "--backend",
                backend,
                "--json",
                str(report),
            ],
            env=cli.env,
            cwd=cli.cwd,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self.started = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            self.started.set()
        self.started.set()

    def signal_at(self, sig: signal.Signals, at: float) -> None:
        """Send ``sig`` ``at`` seconds after the drill's first log line."""
        assert self.started.wait(60), "the drill printed nothing for 60 s"
        time.sleep(at)
        assert self.proc.poll() is None, (
            f"the drill ended (exit {self.proc.returncode}) before the moment:\n"
            + "".join(self.lines[-20:])
        )
        self.proc.send_signal(sig)

    def finish(self, timeout: float) -> tuple[int, str]:
        self.proc.wait(timeout=timeout)
        self._reader.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.read()
        return self.proc.returncode, "".join(self.lines)


def _nothing_left(cli: Cli, backend: str) -> None:
    journals = stack_files(cli, "journal.jsonl")
    assert not journals, [j.read_text() for j in journals]
    assert not stack_files(cli, "stack.json")
    assert not leftovers(cli)
    if backend == "docker":
        from .test_docker import docker_leftovers

        assert not docker_leftovers(cli)
    verify = cli("model", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.parametrize(("backend", "sig", "at"), INTERRUPTS)
def test_an_interrupt_at_any_moment_heals_and_reports(
    cli: Cli,
    tmp_path: Path,
    backend: str,
    sig: signal.Signals,
    at: float,
    request: pytest.FixtureRequest,
) -> None:
    if backend == "docker":
        request.getfixturevalue("image")
    report = tmp_path / "r.json"
    drill = _Drill(cli, scenario(tmp_path, "interrupted", FAULTS, load=LOAD), report, backend)
    drill.signal_at(sig, at)
    code, err = drill.finish(timeout=180)
    assert code == 130, err[-3000:]
    assert "Traceback" not in err, err
    data = json.loads(report.read_text())
    assert data["status"] == "interrupted" and data["error"], data.get("error")
    for fault in data["faults"]:  # whatever was injected was healed before the exit
        assert fault["injected_at"] is None or fault["healed_at"] is not None, fault
    _nothing_left(cli, backend)


@pytest.mark.parametrize(("backend", "sig", "at"), CRASHES)
def test_kill_9_at_any_moment_then_heal_leaves_nothing(
    cli: Cli,
    tmp_path: Path,
    backend: str,
    sig: signal.Signals,
    at: float,
    request: pytest.FixtureRequest,
) -> None:
    if backend == "docker":
        request.getfixturevalue("image")
    drill = _Drill(
        cli, scenario(tmp_path, "crashed", FAULTS, load=LOAD), tmp_path / "r.json", backend
    )
    drill.signal_at(sig, at)
    code, err = drill.finish(timeout=60)
    assert code == -signal.SIGKILL, err[-3000:]
    healed = cli("heal")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    # The load generator was the dead drill's child; it stops at its own run time.
    deadline = time.monotonic() + 30
    while leftovers(cli) and time.monotonic() < deadline:
        time.sleep(0.5)
    _nothing_left(cli, backend)
    assert cli("heal").stdout.strip() == "nothing to heal"
