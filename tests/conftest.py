"""Shared fixtures and the skip policy for resource-marked tests.

A test marked ``docker``, ``gpu``, ``browser``, ``promtool``, ``zones``, ``monitoring`` or
``compose`` runs whenever the resource exists. When it does not, the test is skipped with the
reason, unless ``DRILLKIT_REQUIRE_DOCKER=1`` / ``DRILLKIT_REQUIRE_GPU=1`` /
``DRILLKIT_REQUIRE_BROWSER=1`` / ``DRILLKIT_REQUIRE_PROMTOOL=1`` / ``DRILLKIT_REQUIRE_ZONES=1`` /
``DRILLKIT_REQUIRE_MONITORING=1`` / ``DRILLKIT_REQUIRE_COMPOSE=1`` says the resource must be
there (CI sets them when it is): then the skip becomes a failure. ``zones`` is Debian's haproxy
and redis-server, what a zoned stack's edge and cache tier run; ``monitoring`` Debian's
prometheus and prometheus-alertmanager, the stack's monitoring; ``compose`` a Compose CLI
(``docker compose`` or ``docker-compose``) beside a reachable Docker Engine; ``netns`` root and
network namespaces (load workers on their own addresses, as other hosts).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _docker_reachable() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _gpu_usable() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


#: Headless browsers the ``browser`` marker looks for, in order.
BROWSERS = ("chromium", "chromium-browser")


def _find_browser() -> str | None:
    """A Chromium that starts (``--version``), or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path is None:
            continue
        try:
            probe = subprocess.run([path, "--version"], capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return path
    return None


def _browser_usable() -> bool:
    return _find_browser() is not None


def _compose_usable() -> bool:
    if not _docker_reachable():
        return False
    from drillkit.backends.compose_cli import compose_cli
    from drillkit.errors import EnvironmentFailure

    try:
        compose_cli()
    except EnvironmentFailure:
        return False
    return True


_PROBES = {
    "docker": (_docker_reachable, "DRILLKIT_REQUIRE_DOCKER"),
    "gpu": (_gpu_usable, "DRILLKIT_REQUIRE_GPU"),
    "browser": (_browser_usable, "DRILLKIT_REQUIRE_BROWSER"),
    "promtool": (lambda: shutil.which("promtool") is not None, "DRILLKIT_REQUIRE_PROMTOOL"),
    "zones": (
        lambda: all(shutil.which(tool) for tool in ("haproxy", "redis-server")),
        "DRILLKIT_REQUIRE_ZONES",
    ),
    "monitoring": (
        lambda: all(shutil.which(tool) for tool in ("prometheus", "prometheus-alertmanager")),
        "DRILLKIT_REQUIRE_MONITORING",
    ),
    "compose": (_compose_usable, "DRILLKIT_REQUIRE_COMPOSE"),
    "netns": (lambda: _netns_usable(), "DRILLKIT_REQUIRE_NETNS"),
}


def _netns_usable() -> bool:
    """Root, `ip`, and a network namespace can be made (and removed) here."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    name = f"dk-probe-{os.getpid()}"
    try:
        made = subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
    return made.returncode == 0


_found: dict[str, bool] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, (probe, require_env) in _PROBES.items():
        if item.get_closest_marker(marker) is None:
            continue
        if marker not in _found:
            _found[marker] = probe()
        if _found[marker]:
            continue
        if os.environ.get(require_env) == "1":
            pytest.fail(f"{marker} is required ({require_env}=1) but not usable here")
        pytest.skip(f"no usable {marker} on this machine")


@pytest.fixture
def drillkit_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An isolated DRILLKIT_HOME (state and cache) for one test."""
    home = tmp_path / "home"
    monkeypatch.setenv("DRILLKIT_HOME", str(home))
    for var in ("DRILLKIT_MODEL_KEY", "DRILLKIT_SIGNING_KEY_FILE", "DRILLKIT_VERIFY_KEY"):
        monkeypatch.delenv(var, raising=False)
    yield home


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a headless-capable Chromium; use with the ``browser`` marker."""
    path = _find_browser()
    if path is None:  # the marker's policy already skipped or failed a marked test
        pytest.fail(f"none of {', '.join(BROWSERS)} is usable; mark the test `browser`")
    return path
