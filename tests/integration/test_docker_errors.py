"""Docker backend errors that need no Docker Engine (they run everywhere)."""

from __future__ import annotations

from .conftest import SMALL, Cli


def test_unreachable_docker_is_exit_3_naming_the_host(cli: Cli) -> None:
    cli.env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
    proc = cli("stack", "up", "--backend", "docker", *SMALL)
    assert proc.returncode == 3, proc.stderr
    assert "unix:///nonexistent/docker.sock" in proc.stderr and "--backend local" in proc.stderr
    assert "Traceback" not in proc.stderr
