"""The Compose CLI the machine has: ``docker compose`` (the v2 plugin) or ``docker-compose``
(v1), run with a project name and file, its output read back.

drillkit never parses a Compose file itself: ``config`` gives the project as Compose resolves
it (variables interpolated, ``extends`` and defaults applied), so what drillkit plans is what
Compose runs. Two variables are set in the CLI's environment when the images exist, so that a
project can build offline on drillkit's own images: ``DRILLKIT_BASE_IMAGE`` (the Debian base
``drillkit stack build`` makes) and ``DRILLKIT_STACK_IMAGE`` (the stack image itself).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from drillkit.errors import EnvironmentFailure, InputError

__all__ = ["ComposeCli", "compose_cli", "last_line"]

_CONFIG_TIMEOUT = 60.0
_NO_CLI = (
    "no Docker Compose CLI found (neither `docker compose` nor `docker-compose`): install the "
    "Compose plugin (Debian/Ubuntu: apt install docker-compose-plugin, or Docker's own "
    "packages) or docker-compose (apt install docker-compose)"
)


def last_line(text: str) -> str:
    """The last non-empty line of a tool's output, for a one-line error."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


@dataclass(frozen=True)
class ComposeCli:
    """One Compose CLI: ``argv`` runs it (``["docker", "compose"]`` or ``["docker-compose"]``)."""

    argv: tuple[str, ...]
    version: str

    def command(self, file: Path, project: str, *args: str) -> list[str]:
        return [*self.argv, "-f", str(file), "-p", project, *args]

    def run(
        self,
        file: Path,
        project: str,
        *args: str,
        timeout: float,
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one command in the Compose file's folder (where its relative paths point);
        its output is appended to ``log`` when given."""
        try:
            done = subprocess.run(
                self.command(file, project, *args),
                cwd=file.parent,
                env=env or compose_env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise EnvironmentFailure(
                f"`{' '.join(self.argv)} {args[0]}` for project {project} did not finish "
                f"within {timeout:.0f} s"
            ) from None
        if log is not None:
            with log.open("a", encoding="utf-8") as out:
                out.write(f"$ {' '.join(self.command(file, project, *args))}\n")
                out.write(done.stdout + done.stderr)
        return done

    def config(self, file: Path, project: str) -> dict[str, Any]:
        """The project as Compose resolves it; InputError (exit 2) with Compose's own message
        when Compose rejects the file."""
        done = self.run(file, project, "config", timeout=_CONFIG_TIMEOUT)
        if done.returncode != 0:
            raise InputError(f"{file}: Compose rejects it: {last_line(done.stderr or done.stdout)}")
        try:
            data = yaml.safe_load(done.stdout)
        except yaml.YAMLError as exc:
            raise EnvironmentFailure(f"{file}: `config` printed no YAML: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
            raise InputError(f"{file}: Compose finds no services in it")
        return data


def compose_env() -> dict[str, str]:
    """The CLI's environment: ours, plus drillkit's image names where those images exist."""
    env = dict(os.environ)
    env.update(_image_vars())
    return env


@functools.cache
def _image_vars() -> dict[str, str]:
    from drillkit.backends.docker.image import (
        OFFLINE_BASE,
        docker_client,
        image_plan,
        image_present,
    )

    try:
        client = docker_client()
    except EnvironmentFailure:
        return {}  # no Engine: the Compose CLI will say so itself
    candidates = (("DRILLKIT_BASE_IMAGE", OFFLINE_BASE), ("DRILLKIT_STACK_IMAGE", image_plan().tag))
    return {var: tag for var, tag in candidates if image_present(client, tag)}


@functools.cache
def compose_cli() -> ComposeCli:
    """The Compose CLI of this machine, the v2 plugin first; EnvironmentFailure (exit 3)
    naming how to install one when there is none."""
    candidates: list[tuple[str, ...]] = []
    if docker := shutil.which("docker"):
        candidates.append((docker, "compose"))
    if legacy := shutil.which("docker-compose"):
        candidates.append((legacy,))
    for argv in candidates:
        try:
            done = subprocess.run(
                [*argv, "version", "--short"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip():
            return ComposeCli(argv=argv, version=done.stdout.strip().splitlines()[0])
    raise EnvironmentFailure(_NO_CLI)
