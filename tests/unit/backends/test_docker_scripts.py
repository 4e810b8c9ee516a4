"""The docker backend's pure parts: the sidecar scripts and the image plan (no engine)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from drillkit.backends.docker import _cut_script, _latency_script, _restore_script, image


@pytest.mark.parametrize("mode", ["blackhole", "reject"])
def test_cut_scripts_only_touch_drillkit_chains(mode: str) -> None:
    script = _cut_script(mode, ["172.18.0.5"])
    for line in script.splitlines()[1:]:
        if line.startswith("iptables") and " -A " in line:
            assert " -A DRILLKIT-" in line, line  # rules go in our chains, never elsewhere
    assert "-s 172.18.0.5" in script


def test_reject_does_not_drop_its_own_resets() -> None:
    # A REJECT's reset leaves through OUTPUT: an OUTPUT rule on the peer would swallow it.
    assert "-A DRILLKIT-OUT" not in _cut_script("reject", ["10.0.0.2"])
    assert "-A DRILLKIT-OUT -d 10.0.0.2 -j DROP" in _cut_script("blackhole", ["10.0.0.2"])


def test_a_second_cut_keeps_the_first_ones_rules() -> None:
    # Two links end at one service (every service of a Compose project reaches every other):
    # cutting the second must not flush the chain the first one filled.
    script = _cut_script("blackhole", ["10.0.0.2", "10.0.0.3"])
    assert " -F " not in script
    assert "-s 10.0.0.2" in script and "-s 10.0.0.3" in script


def test_latency_script_shapes_only_traffic_to_the_peer() -> None:
    script = _latency_script(["10.1.2.3"], 120, 10)
    assert "netem delay 120ms 10ms" in script
    assert "match ip dst 10.1.2.3/32" in script


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_restore_script_succeeds_when_nothing_is_set() -> None:
    # Without iptables or tc (or privileges) every command fails: the undo still succeeds,
    # which is what makes it idempotent.
    empty_path = {"PATH": "/nonexistent"}
    proc = subprocess.run(["/bin/sh", "-c", _restore_script()], env=empty_path, capture_output=True)
    assert proc.returncode == 0


def test_image_tag_follows_requirements_and_base() -> None:
    offline = image.image_plan()
    assert offline.offline and offline.base_image == image.OFFLINE_BASE
    assert offline.tag.startswith(f"{image.IMAGE_REPOSITORY}:")
    public = image.image_plan(base_image="python:3.11-slim-bookworm")
    assert not public.offline and public.tag != offline.tag
    gpu = image.image_plan(gpu=True)
    assert "faiss-gpu-cu12==" in gpu.requirements and gpu.tag != offline.tag


def test_requirements_are_pinned_to_what_is_installed() -> None:
    lines = image.requirements().splitlines()
    assert any(line.startswith("torch==") for line in lines)
    assert any(line.startswith("faiss-cpu==") for line in lines)
    assert not any(line.startswith(("locust", "typer", "docker")) for line in lines)
