"""Fakes for testing what runs on top of a backend, without a process or a container.

:class:`FakeBackend` runs any :class:`~drillkit.stacks.plan.StackPlan` in memory: services
start ready, die when killed, freeze when paused, come back after ``startup`` seconds when
restarted, and the plan's links can be cut, slowed and probed. Every primitive call is
recorded in :attr:`FakeBackend.calls`. It is a real :class:`~drillkit.backends.base.Backend`,
so a fault kind runs against it through drillkit's own
:class:`~drillkit.faults.context.FaultContext` with a real journal, exactly as in a drill::

    from drillkit.testing import FakeBackend, fake_plan, fault_context

    backend = FakeBackend()
    state = backend.start(fake_plan(replicas=3))
    ctx = fault_context(backend, state, journal=tmp_path)
    record = MyFault().apply(ctx, "replica-2", MyFault.Params())
    assert backend.calls == [("kill", "replica-2")]

``examples/custom-fault`` tests its plugin this way; drillkit's own engine tests run whole
drills on it. See ``docs/plugins.md``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drillkit.backends.base import (
    Backend,
    Progress,
    ServiceState,
    StackIdentity,
    StackState,
)
from drillkit.errors import EnvironmentFailure
from drillkit.faults.context import FaultContext
from drillkit.journal import Journal
from drillkit.stacks.plan import (
    Dependency,
    Endpoint,
    HttpCheck,
    Link,
    Port,
    Program,
    ServicePlan,
    StackPlan,
)

__all__ = [
    "FAKE_STACK_ID",
    "FakeBackend",
    "FakeService",
    "FakeStack",
    "eventually",
    "fake_plan",
    "fault_context",
    "service_plan",
]


#: The id of the stack :meth:`FakeBackend.start` brings up (a real stack id's form).
FAKE_STACK_ID = "20000101-000000-0fa4e0"


class FakeService(ServiceState):
    """A service of the fake backend: a made-up pid, new at each (re)start."""

    pid: int | None = None

    def ident(self) -> str:
        return f"pid {self.pid}"


class FakeStack(StackState[FakeService]):
    pass


@dataclass
class _Process:
    pid: int
    alive: bool = True
    paused: bool = False
    ready_at: float = 0.0
    dies_at: float | None = None  # a TERM takes a while


def service_plan(name: str, role: str = "replica", **fields: Any) -> ServicePlan:
    """A minimal service: an HTTP port and a readiness check, nothing runs it but a fake."""
    fields.setdefault("program", Program(module=f"fake.{role}"))
    fields.setdefault("ports", (Port(number=8000),))
    fields.setdefault("ready", HttpCheck(path="/readyz"))
    return ServicePlan(name=name, role=role, **fields)


def fake_plan(replicas: int = 3, *, preset: str = "fake") -> StackPlan:
    """The shape of the reference stack: ``replica-1..N`` behind a ``gateway`` that reaches
    each over a link."""
    names = [f"replica-{i}" for i in range(1, replicas + 1)]
    services = [service_plan(name) for name in names]
    services.append(
        service_plan(
            "gateway",
            role="gateway",
            depends_on=tuple(Dependency(service=name) for name in names),
        )
    )
    return StackPlan(
        preset=preset,
        services=tuple(services),
        links=tuple(Link(source="gateway", target=name) for name in names),
        entry=Endpoint(service="gateway"),
    )


class FakeBackend(Backend[StackState[Any]]):
    """Services as entries in a dict.

    ``startup`` is how long a restarted service takes to be ready, ``term_delay`` how long a
    TERMed one takes to go, ``restart_delay`` how long :meth:`restart` itself blocks;
    ``fail_restarts`` makes that many restarts raise, and ``before_kill`` is called before
    each kill: ways for a test to look or break in. :attr:`saves` counts the states the
    backend would have written to disk (after each restart, as real backends do).
    """

    name = "fake"
    State = FakeStack

    def __init__(
        self,
        *,
        startup: float = 0.02,
        term_delay: float = 0.1,
        restart_delay: float = 0.0,
        fail_restarts: int = 0,
        before_kill: Callable[[str], None] | None = None,
    ) -> None:
        self.startup = startup
        self.term_delay = term_delay
        self.restart_delay = restart_delay
        self.fail_restarts = fail_restarts
        self.before_kill = before_kill
        self.calls: list[tuple[str, str]] = []
        self.processes: dict[str, _Process] = {}
        self.links: dict[str, dict[str, Any]] = {}
        self.saves = 0
        self.downs = 0
        self._next_pid = 1000
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------
    def up(
        self, plan: StackPlan, stack: StackIdentity, *, progress: Progress | None = None
    ) -> FakeStack:
        state = FakeStack(backend=self.name, plan=plan, **stack.fields())
        for wave in plan.start_order():
            for service in wave:
                state.services[service.name] = FakeService(
                    name=service.name,
                    role=service.role,
                    ports={port.name: port.number for port in service.ports},
                )
                self._spawn(state, service.name, ready_at=0.0)
                if progress is not None:
                    progress(f"{service.name} ready", -1)
        self.links = {link.name: {"mode": "pass"} for link in plan.links}
        return state

    def start(self, plan: StackPlan, *, stack_id: str = FAKE_STACK_ID) -> FakeStack:
        """:meth:`up` with a made-up identity, for tests that need a running stack now."""
        return self.up(plan, StackIdentity(id=stack_id, run_dir=Path("/nonexistent"), gpu=False))

    def _spawn(self, state: StackState[Any], name: str, *, ready_at: float) -> None:
        with self._lock:
            self._next_pid += 1
            self.processes[name] = _Process(pid=self._next_pid, ready_at=ready_at)
            state.services[name].pid = self._next_pid

    def down(self, state: StackState[Any]) -> None:
        self.downs += 1
        with self._lock:
            for process in self.processes.values():
                process.alive = False

    def _process(self, name: str) -> _Process:
        with self._lock:
            process = self.processes.get(name)
            if process is None:
                raise EnvironmentFailure(f"the fake backend runs no service {name!r}")
            if process.dies_at is not None and time.monotonic() >= process.dies_at:
                process.alive, process.dies_at = False, None
            return process

    def service_status(self, state: StackState[Any], name: str) -> str:
        process = self._process(name)
        if not process.alive:
            return "exited"
        return "paused" if process.paused else "running"

    def ready(self, state: StackState[Any], name: str, *, timeout: float = 1.0) -> bool:
        process = self._process(name)
        return process.alive and not process.paused and time.monotonic() >= process.ready_at

    # -- fault primitives ------------------------------------------------------------------
    def kill(self, state: StackState[Any], name: str, *, signal: str = "KILL") -> None:
        if self.before_kill is not None:
            self.before_kill(name)
        self.calls.append(("kill", name))
        process = self._process(name)
        if not process.alive:
            return
        if signal == "KILL":
            process.alive = False
        elif process.dies_at is None:
            process.dies_at = time.monotonic() + self.term_delay

    def pause(self, state: StackState[Any], name: str) -> None:
        self.calls.append(("pause", name))
        self._process(name).paused = True

    def resume(self, state: StackState[Any], name: str) -> None:
        self.calls.append(("resume", name))
        self._process(name).paused = False

    def restart(self, state: StackState[Any], name: str) -> None:
        self.calls.append(("restart", name))
        time.sleep(self.restart_delay)
        if self.fail_restarts > 0:
            self.fail_restarts -= 1
            raise EnvironmentFailure(f"{name} could not be started")
        self._spawn(state, name, ready_at=time.monotonic() + self.startup)
        self.saves += 1

    def cut_link(self, state: StackState[Any], link: Link, *, mode: str) -> str:
        self.calls.append(("cut_link", link.name))
        self.links[link.name] = {"mode": mode}
        return f"fake: {link.source}->{link.target} {mode}"

    def slow_link(self, state: StackState[Any], link: Link, *, delay: float, jitter: float) -> str:
        self.calls.append(("slow_link", link.name))
        self.links[link.name] = {"mode": "latency", "delay": delay}
        return f"fake: {link.source}->{link.target} +{delay * 1000:.0f} ms"

    def restore_link(self, state: StackState[Any], link: Link) -> None:
        self.calls.append(("restore_link", link.name))
        self.links[link.name] = {"mode": "pass"}

    def probe_link(
        self, state: StackState[Any], link: Link, *, timeout: float
    ) -> tuple[str, float]:
        setting = self.links.get(link.name, {"mode": "pass"})
        if not self.service_alive(state, link.target):
            return "refused", 0.0
        if setting["mode"] == "blackhole":
            return "hung", timeout
        if setting["mode"] == "reject":
            return "refused", 0.0
        if setting["mode"] == "latency":
            return "answered", float(setting["delay"])
        return "answered", 0.0

    def count(self, op: str, name: str) -> int:
        """How many times ``op`` was called on ``name``."""
        return self.calls.count((op, name))


def fault_context(
    backend: Backend[Any],
    state: StackState[Any],
    journal: Journal | Path,
    fault_id: str = "fault-1",
) -> FaultContext:
    """drillkit's own fault context over ``backend``: what a drill hands a fault kind. A
    folder for ``journal`` gets the stack's journal there (a test's ``tmp_path``)."""
    if not isinstance(journal, Journal):
        journal = Journal(Path(journal), state.id)
    return FaultContext(backend, state, journal, fault_id=fault_id)


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition never held")
        time.sleep(0.005)
