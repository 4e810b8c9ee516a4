"""Fixtures over drillkit's fakes (:mod:`drillkit.testing`): a fake backend running the
reference stack's shape, a real journal in a temp folder, and fault contexts on that stack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import drillkit_flap_fault
import pytest

from drillkit.faults.context import FaultContext
from drillkit.journal import Journal
from drillkit.testing import FakeBackend, FakeStack, fake_plan, fault_context


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def stack(backend: FakeBackend) -> FakeStack:
    return backend.start(fake_plan(replicas=3))


@pytest.fixture
def journal(tmp_path: Path, stack: FakeStack) -> Journal:
    return Journal(tmp_path / "state", stack.id)


@pytest.fixture
def make_ctx(
    backend: FakeBackend, stack: FakeStack, journal: Journal
) -> Callable[..., FaultContext]:
    """A new context on the same stack, as a new process would build one from disk."""

    def make(**overrides: Any) -> FaultContext:
        return fault_context(
            overrides.get("backend", backend),
            stack,
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
