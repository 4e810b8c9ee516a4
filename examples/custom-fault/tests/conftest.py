"""Fixtures over the fakes in fakes.py: a fake backend, a real journal in a temp folder, and
fault contexts on one fake stack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import drillkit_flap_fault
import pytest
from fakes import FakeBackend, FakeContext, fake_state

from drillkit.journal import Journal


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "state")


@pytest.fixture
def make_ctx(backend: FakeBackend, journal: Journal) -> Callable[..., FakeContext]:
    """A new context on the same stack, as a new process would build one from disk."""
    state = fake_state()

    def make(**overrides: Any) -> FakeContext:
        return FakeContext(
            overrides.get("backend", backend),
            state,
            journal,
            fault_id=overrides.get("fault_id", "flap-1"),
        )

    return make


@pytest.fixture(autouse=True)
def _no_flapper_outlives_its_test() -> Iterator[None]:
    yield
    with drillkit_flap_fault._flappers_lock:
        left = list(drillkit_flap_fault._flappers.values())
        drillkit_flap_fault._flappers.clear()
    for flapper in left:
        flapper.stop()
