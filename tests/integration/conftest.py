"""Integration fixtures: a real, small model store built once per session, and a helper that
runs the real `drillkit` command line in a subprocess with an isolated state folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Small enough to build in seconds, big enough for recall to mean something.
SMALL = ["--items", "2000", "--dim", "32", "--seed", "7"]


@dataclass
class Cli:
    env: dict[str, str]
    cwd: Path | None = None
    """The working folder (a test's own): reports land in its reports/."""

    def __call__(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "drillkit", *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def json(self, *args: str) -> Any:
        proc = self(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cache")
    env = {
        **os.environ,
        "DRILLKIT_CACHE_DIR": str(path),
        "DRILLKIT_STATE_DIR": str(tmp_path_factory.mktemp("build-state")),
    }
    env.pop("DRILLKIT_MODEL_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "drillkit", "stack", "build", *SMALL],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.fixture
def cli(cache_dir: Path, tmp_path: Path) -> Iterator[Cli]:
    env = {
        **os.environ,
        "DRILLKIT_CACHE_DIR": str(cache_dir),
        "DRILLKIT_STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("DRILLKIT_MODEL_KEY", None)
    env.pop("DRILLKIT_HOME", None)
    runner = Cli(env, cwd=tmp_path)
    yield runner
    runner("stack", "down", timeout=60)  # whatever the test did, nothing is left running


def leftovers(cli: Cli) -> list[str]:
    """Processes of this test's drills still running: their command lines name the test's
    state folder (run folders, stores) or one of its stack ids."""
    state = Path(cli.env["DRILLKIT_STATE_DIR"])
    stacks = state / "stacks"
    marks = [str(state), *(p.name for p in stacks.iterdir())] if stacks.is_dir() else [str(state)]
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [
        line
        for line in out.splitlines()
        if "ps -eo" not in line and any(mark in line for mark in marks)
    ]
