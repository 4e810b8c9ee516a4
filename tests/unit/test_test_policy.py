"""The suite's own policy for missing tools: a docker test on a machine that cannot build the
stack image skips with the reason and the fix (or fails when CI requires Docker)."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import BUILD_HINT, image_build_blocker


def _which(found: set[str]) -> Any:
    return lambda name: f"/usr/sbin/{name}" if name in found else None


def test_no_debootstrap_names_the_package_and_the_build_command() -> None:
    why = image_build_blocker(base_present=False, which=_which(set()), euid=0)
    assert why is not None
    assert "apt-get install debootstrap" in why and BUILD_HINT in why
    assert "\n" not in why  # one line, as a skip reason


def test_debootstrap_without_root_says_to_build_as_root() -> None:
    why = image_build_blocker(base_present=False, which=_which({"debootstrap"}), euid=1000)
    assert why is not None and f"sudo {BUILD_HINT}" in why


def test_nothing_blocks_with_debootstrap_as_root_or_a_base_already_there() -> None:
    assert image_build_blocker(base_present=False, which=_which({"debootstrap"}), euid=0) is None
    assert image_build_blocker(base_present=True, which=_which(set()), euid=1000) is None
