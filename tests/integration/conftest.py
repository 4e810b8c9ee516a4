"""Integration fixtures: a real, small model store built once per session, and a helper that
runs the real `drillkit` command line in a subprocess with an isolated state folder."""

from __future__ import annotations

import json
import os
import shutil
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
    for var in ("DRILLKIT_MODEL_KEY", "DRILLKIT_SIGNING_KEY_FILE", "DRILLKIT_VERIFY_KEY"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, "-m", "drillkit", "stack", "build", *SMALL],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return path


#: How a person gets the stack image the docker tests use (what a skip or failure says).
BUILD_HINT = "drillkit stack build --backend docker " + " ".join(SMALL)


def image_build_blocker(
    *, base_present: bool, which: Any = shutil.which, euid: int | None = None
) -> str | None:
    """Why the stack image cannot be built offline on this machine, or None when it can: the
    offline base comes from debootstrap, which must be installed and run as root."""
    if base_present:
        return None
    if which("debootstrap") is None:
        return (
            "the stack image is not built and its offline base needs debootstrap, which is "
            f"not installed: run `apt-get install debootstrap`, then `{BUILD_HINT}` as root"
        )
    if (os.geteuid() if euid is None else euid) != 0:
        return (
            "the stack image is not built and its offline base needs debootstrap as root: "
            f"run `sudo {BUILD_HINT}`"
        )
    return None


@pytest.fixture(scope="session")
def stack_image(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tag of the docker stack image: found built, or built offline now. Where it cannot
    be built, the docker tests skip with the reason and the command that fixes it, unless CI
    requires Docker (DRILLKIT_REQUIRE_DOCKER=1): then they fail."""
    from drillkit.backends.docker.image import (
        OFFLINE_BASE,
        docker_client,
        image_plan,
        image_present,
    )

    client = docker_client()
    tag = image_plan(gpu=False).tag
    if image_present(client, tag):
        return tag
    blocker = image_build_blocker(base_present=image_present(client, OFFLINE_BASE))
    if blocker is not None:
        if os.environ.get("DRILLKIT_REQUIRE_DOCKER") == "1":
            pytest.fail(f"DRILLKIT_REQUIRE_DOCKER=1 but {blocker}")
        pytest.skip(blocker)
    env = {
        **os.environ,
        "DRILLKIT_CACHE_DIR": str(cache_dir),
        "DRILLKIT_STATE_DIR": str(tmp_path_factory.mktemp("image-state")),
    }
    command = [sys.executable, "-m", "drillkit", "stack", "build", "--backend", "docker"]
    proc = subprocess.run(
        [*command, *SMALL, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return str(json.loads(proc.stdout)["image"])


@pytest.fixture
def cli(cache_dir: Path, tmp_path: Path) -> Iterator[Cli]:
    env = {
        **os.environ,
        "DRILLKIT_CACHE_DIR": str(cache_dir),
        "DRILLKIT_STATE_DIR": str(tmp_path / "state"),
    }
    for var in ("DRILLKIT_MODEL_KEY", "DRILLKIT_SIGNING_KEY_FILE", "DRILLKIT_VERIFY_KEY"):
        env.pop(var, None)
    env.pop("DRILLKIT_HOME", None)
    runner = Cli(env, cwd=tmp_path)
    yield runner
    for saved in stack_files(runner, "stack.json"):  # whatever the test did, nothing is left
        runner("stack", "down", "--stack", saved.parent.name, timeout=60)


def stack_files(cli: Cli, name: str) -> list[Path]:
    """``name`` (``stack.json``, ``journal.jsonl``) in each of the test's stack folders."""
    return sorted((Path(cli.env["DRILLKIT_STATE_DIR"]) / "stacks").glob(f"*/{name}"))


def saved_state_path(cli: Cli) -> Path:
    """The saved state of the test's one stack."""
    (path,) = stack_files(cli, "stack.json")
    return path


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
