"""A fake backend and a fault context over it: flap_node's cycles without a single process.

drillkit ships no fake backend, so this one implements the part of the backend contract
(:class:`drillkit.backends.base.Backend`) that fault kinds use, in memory. The context is
drillkit's own :class:`~drillkit.faults.context.FaultContext` with a real journal in a temp
folder; only waiting for readiness (HTTP in drillkit) and saving the stack state are replaced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drillkit.backends.base import Backend, Progress, ServiceState, StackSpec, StackState
from drillkit.errors import EnvironmentFailure, StackNotReady
from drillkit.faults.context import FaultContext

SERVICES = ["replica-1", "replica-2", "replica-3", "gateway"]


@dataclass
class _Service:
    pid: int
    alive: bool = True
    ready_at: float = 0.0
    dies_at: float | None = None  # a TERM takes a while


@dataclass
class FakeBackend(Backend):
    """Services as entries in a dict. ``startup`` is how long a restarted service takes to be
    ready, ``term_delay`` how long a TERMed one takes to go; ``before_kill`` and
    ``fail_restarts`` let a test look or break in."""

    name = "fake"

    startup: float = 0.02
    term_delay: float = 0.1
    restart_delay: float = 0.0
    fail_restarts: int = 0
    before_kill: Callable[[str], None] | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)
    services: dict[str, _Service] = field(default_factory=dict)
    _next_pid: int = 1000
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def up(self, spec: StackSpec, *, progress: Progress | None = None) -> StackState:
        raise NotImplementedError

    def down(self, state: StackState) -> None:
        self.services.clear()

    def _service(self, state: StackState, name: str) -> _Service:
        with self._lock:
            if name not in self.services:
                self._next_pid += 1
                self.services[name] = _Service(pid=self._next_pid)
                state.services[name].pid = self._next_pid
            service = self.services[name]
            if service.dies_at is not None and time.monotonic() >= service.dies_at:
                service.alive, service.dies_at = False, None
            return service

    def service_alive(self, state: StackState, name: str) -> bool:
        return self._service(state, name).alive

    def ready(self, state: StackState, name: str) -> bool:
        service = self._service(state, name)
        return service.alive and time.monotonic() >= service.ready_at

    def kill(self, state: StackState, name: str, *, signal: str = "KILL") -> None:
        if self.before_kill is not None:
            self.before_kill(name)
        self.calls.append(("kill", name))
        service = self._service(state, name)
        if not service.alive:
            return
        if signal == "KILL":
            service.alive = False
        elif service.dies_at is None:
            service.dies_at = time.monotonic() + self.term_delay

    def restart(self, state: StackState, name: str) -> None:
        self.calls.append(("restart", name))
        time.sleep(self.restart_delay)
        if self.fail_restarts > 0:
            self.fail_restarts -= 1
            raise EnvironmentFailure(f"{name} could not be started")
        with self._lock:
            self._next_pid += 1
            self.services[name] = _Service(
                pid=self._next_pid, ready_at=time.monotonic() + self.startup
            )
            state.services[name].pid = self._next_pid

    def count(self, op: str, name: str = "replica-2") -> int:
        return self.calls.count((op, name))


class FakeContext(FaultContext):
    """drillkit's FaultContext over the fake backend: readiness asks the fake, and saving the
    stack state is counted instead of written."""

    saves: int = 0

    def save_state(self) -> None:
        self.saves += 1

    def wait_ready(self, name: str, timeout: float = 90.0) -> None:
        backend = self.backend
        assert isinstance(backend, FakeBackend)
        deadline = time.monotonic() + timeout
        while not backend.ready(self.state, name):
            if not backend.service_alive(self.state, name):
                raise StackNotReady(f"{name} exited while starting again")
            if time.monotonic() > deadline:
                raise StackNotReady(f"{name} did not become ready within {timeout:.0f} s")
            time.sleep(0.005)


def fake_state() -> StackState:
    services = {
        name: ServiceState(
            name=name,
            role="gateway" if name == "gateway" else "replica",
            url=f"http://fake/{name}",
            port=0,
        )
        for name in SERVICES
    }
    return StackState(
        id="fake-stack",
        backend="fake",
        created_at=0.0,
        run_dir="",
        store="",
        gateway_url="http://fake/gateway",
        admin_token="",
        gpu=False,
        spec={},
        services=services,
    )


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.005)
