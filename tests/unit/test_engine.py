"""The drill engine on fakes: its state machine, faults on their timeline, interrupts, aborts,
and healing, with no process started.

Every collaborator of :class:`~drillkit.engine.DrillRunner` is a fake here: drillkit's own
:class:`~drillkit.testing.FakeBackend`, a preset that plans the reference stack's shape, a
load that makes one record per request from what the fake backend says is running, a
watcher, a probe, and a clock that runs 20 times faster than the wall clock. A 3-second
drill takes a fraction of a second.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from drillkit.backends.base import Backend, Progress, StackState, load_state, load_states
from drillkit.engine import DrillParts, DrillRunner, DrillState, RunOptions
from drillkit.errors import EnvironmentFailure, StackNotReady
from drillkit.faults.base import FaultKind, UndoRecord, load_fault_kind
from drillkit.faults.context import FaultContext
from drillkit.faults.params import KillNodeParams
from drillkit.journal import Journal
from drillkit.load.driver import LoadPlan
from drillkit.observe.records import RequestRecord
from drillkit.observe.watch import StackEvent
from drillkit.scenario import Scenario, loads_scenario
from drillkit.stacks.base import StackPreset, Workload
from drillkit.stacks.plan import StackPlan
from drillkit.stacks.recommender.spec import RecommenderSpec
from drillkit.testing import FakeBackend, fake_plan

SPEED = 20.0
DIGEST = "verified-digest"


class FastClock:
    """Epoch seconds running ``SPEED`` times faster than the wall clock."""

    def __init__(self) -> None:
        self.start = time.time()
        self.mono = time.monotonic()

    def now(self) -> float:
        return self.start + (time.monotonic() - self.mono) * SPEED

    def wait_until(self, when: float, stop: threading.Event) -> bool:
        while True:
            remaining = (when - self.now()) / SPEED
            if remaining <= 0:
                return not stop.is_set()
            if stop.wait(min(remaining, 0.05)):
                return False


class Preset(StackPreset[RecommenderSpec]):
    name = "fake"

    def __init__(self, fail_settle: bool = False) -> None:
        self.fail_settle = fail_settle

    def plan(
        self, spec: RecommenderSpec, *, data_dir: Path, gpu: bool, progress: Progress
    ) -> StackPlan:
        return fake_plan(replicas=spec.replicas)

    def settle(self, state: StackState[Any], backend: Backend[Any], progress: Progress) -> None:
        if self.fail_settle:
            raise StackNotReady("the gateway never saw every replica")

    def workload(self, state: StackState[Any]) -> Workload:
        return Workload(users=100)

    def verified_digests(self, state: StackState[Any]) -> frozenset[str]:
        return frozenset({DIGEST})


class Load:
    """One request every 1/rate s of the clock, failed while the gateway is down or paused;
    ``on_since`` lets a test act from the engine's own loop."""

    def __init__(self, clock: FastClock, backend: FakeBackend) -> None:
        self.clock = clock
        self.backend = backend
        self.rows: list[RequestRecord] = []
        self.plan: LoadPlan | None = None
        self.next_at = 0.0
        self.ends_at = 0.0
        self.stopped = False
        self.state: Any = None
        self.on_since: Any = None

    def start(self, plan: LoadPlan, run_dir: Path | None = None) -> None:
        self.plan = plan
        self.next_at = self.clock.now()
        # Like Locust: it ends by itself run_seconds after it started.
        self.ends_at = self.next_at + plan.run_seconds

    def _generate(self) -> None:
        assert self.plan is not None
        now = self.clock.now()
        up = self.backend.processes["gateway"]
        serving = up.alive and not up.paused
        while not self.stopped and self.next_at <= min(now, self.ends_at):
            status = 200 if serving else 0
            self.rows.append(RequestRecord(self.next_at, 5.0, status, model_digest=DIGEST))
            self.next_at += 1.0 / self.plan.rate

    def since(self, index: int) -> tuple[list[RequestRecord], int]:
        if self.on_since is not None:
            self.on_since()
        self._generate()
        return self.rows[index:], len(self.rows)

    def records(self) -> list[RequestRecord]:
        return list(self.rows)

    def stop(self, grace: float | None = None) -> int | None:
        self._generate()
        self.stopped = True
        return 0


class Watcher:
    """Sees a service go down at the engine's next look (every tick), as a health checker
    would, until stopped."""

    def __init__(self, backend: FakeBackend, clock: FastClock) -> None:
        self.backend = backend
        self.clock = clock
        self.started = self.stopped = False
        self.events: list[StackEvent] = []
        self.down: set[str] = set()

    def start(self, state: Any) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def snapshot(self) -> tuple[dict[str, str], list[StackEvent]]:
        if self.started and not self.stopped:
            for name, process in self.backend.processes.items():
                if not process.alive and name not in self.down:
                    self.down.add(name)
                    self.events.append(StackEvent(self.clock.now(), "gateway", name, "up->down"))
                elif process.alive:
                    self.down.discard(name)
        return {}, list(self.events)


class Probe:
    def __init__(self, prepare_seconds: float = 0.0) -> None:
        self.calls: list[str] = []
        self.prepare_seconds = prepare_seconds  # of the drill's clock

    def prepare(self, state: Any) -> None:
        self.calls.append("prepare")
        time.sleep(self.prepare_seconds / SPEED)

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def samples(self) -> list[tuple[float, float]]:
        return []


def drill(faults: str = "", *, abort: str = "") -> Scenario:
    return loads_scenario(
        "version: 1\n"
        "name: engine\n"
        "stack: {replicas: 3, gpu: off}\n"
        "load: {rate: 50, users: 5, duration: 6s, warmup: 1s, timeout: 1s}\n"
        "slo: {quality: 0%}\n" + (f"faults:\n{faults}" if faults else "") + abort
    )


KILL = "- {id: kill-1, kind: kill_node, target: replica-2, at: 1s, duration: 1s}\n"


def parts(tmp_path: Path, **overrides: Any) -> DrillParts:
    clock = FastClock()
    backend = overrides.pop("backend", FakeBackend(startup=0.0))
    fields: dict[str, Any] = {
        "backend": backend,
        "preset": Preset(),
        "load": Load(clock, backend),
        "watcher": Watcher(backend, clock),
        "probe": Probe(),
        "clock": clock,
    }
    fields.update(overrides)
    return DrillParts(**fields)


FULL_RUN = [
    DrillState.CREATED,
    DrillState.STARTING,
    DrillState.WARMUP,
    DrillState.RUNNING,
    DrillState.HEALING,
    DrillState.ANALYZING,
    DrillState.DONE,
]


@pytest.fixture(autouse=True)
def _home(drillkit_home: Path) -> None:
    """Every test gets its own state folder."""


def test_a_drill_goes_through_every_state_and_leaves_nothing(tmp_path: Path) -> None:
    kit = parts(tmp_path)
    runner = DrillRunner(drill(KILL), None, parts=kit)
    started = time.monotonic()
    result = runner.run()
    assert time.monotonic() - started < 3.0  # a 7-second drill on a 20x clock
    assert runner.history == FULL_RUN
    assert result.status == "passed", result.error
    assert result.heal_failures == []
    backend = kit.backend
    assert isinstance(backend, FakeBackend)
    # killed at its time, restarted when healed, and the whole stack down at the end
    assert backend.calls == [("kill", "replica-2"), ("restart", "replica-2")]
    assert backend.downs == 1 and not any(p.alive for p in backend.processes.values())
    (fault,) = result.faults
    assert fault.injected_at is not None and fault.healed_at is not None
    # Healed at its time, not at the end of the 6 s drill (the clock runs 20x: 0.05 s of
    # wall time, journal writes included, is a whole second here).
    assert fault.healed_at - fault.injected_at == pytest.approx(1.0, abs=1.0)
    assert "replica-2 (pid" in fault.evidence
    assert result.stack_id is not None
    assert Journal.for_stack(result.stack_id).pending() == [] and load_state() is None
    assert isinstance(kit.probe, Probe) and kit.probe.calls == ["prepare", "start", "stop"]
    assert isinstance(kit.watcher, Watcher) and kit.watcher.started and kit.watcher.stopped
    assert result.analysis is not None
    (run,) = result.analysis.faults
    assert run.detected_at is not None and run.ttd_s is not None
    assert run.ttd_s < 2.0  # the engine looks every 0.25 s of its clock


def test_an_interrupt_heals_the_fault_it_lands_in(tmp_path: Path) -> None:
    kit = parts(tmp_path)
    load = kit.load
    assert isinstance(load, Load)
    runner = DrillRunner(drill(KILL), None, parts=kit)

    def interrupt_while_injected() -> None:
        backend = kit.backend
        assert isinstance(backend, FakeBackend)
        if ("kill", "replica-2") in backend.calls and not load.stopped:
            load.on_since = None
            signal.raise_signal(signal.SIGINT)  # delivered to this, the main thread

    load.on_since = interrupt_while_injected
    result = runner.run()
    assert result.status == "interrupted" and "SIGINT" in (result.error or "")
    assert runner.history[-4:] == [
        DrillState.RUNNING,
        DrillState.HEALING,
        DrillState.ANALYZING,
        DrillState.DONE,
    ]
    backend = kit.backend
    assert isinstance(backend, FakeBackend)
    assert backend.count("restart", "replica-2") == 1  # healed on the way out
    assert backend.downs == 1
    assert result.stack_id is not None
    assert Journal.for_stack(result.stack_id).pending() == [] and load_state() is None


def test_an_abort_condition_stops_the_drill_and_fails_it(tmp_path: Path) -> None:
    kill_gateway = "- {id: gw, kind: kill_node, target: gateway, at: 1s}\n"
    runner = DrillRunner(
        drill(kill_gateway, abort="abort: {error_rate_above: 50%, for: 500ms}\n"),
        None,
        parts=parts(tmp_path),
    )
    started = time.monotonic()
    result = runner.run()
    assert result.status == "failed"
    assert result.analysis is not None and result.analysis.faults[0].failed_requests > 0
    assert time.monotonic() - started < 3.0


class _HealFails(FaultKind[KillNodeParams]):
    name: ClassVar[str] = "kill_node"
    Params = KillNodeParams

    def apply(self, ctx: FaultContext, target: str, params: KillNodeParams) -> UndoRecord:
        return ctx.begin(self.name, target, {"service": target})

    def check_applied(
        self, ctx: FaultContext, target: str, params: KillNodeParams, record: UndoRecord
    ) -> str:
        return "applied"

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        raise EnvironmentFailure(f"{record['service']} will not come back")


def test_a_fault_that_cannot_be_healed_is_reported_as_data(tmp_path: Path) -> None:
    kit = parts(tmp_path, kinds=lambda name: _HealFails())
    result = DrillRunner(drill(KILL), None, parts=kit).run()
    assert result.status == "failed"
    (failure,) = result.heal_failures
    assert (failure.fault_id, failure.kind, failure.target) == ("kill-1", "kill_node", "replica-2")
    assert failure.outcome == "failed" and failure.error == "replica-2 will not come back"
    assert result.error == failure.line()
    assert result.faults[0].error is not None and "will not come back" in result.faults[0].error
    # Still pending: `drillkit heal` can try again once the cause is fixed.
    assert result.stack_id is not None
    assert [e.fault_id for e in Journal.for_stack(result.stack_id).pending()] == ["kill-1"]


def test_a_stack_that_never_settles_is_taken_down(tmp_path: Path) -> None:
    kit = parts(tmp_path, preset=Preset(fail_settle=True))
    runner = DrillRunner(drill(KILL), None, parts=kit)
    result = runner.run()
    assert result.status == "error" and "never saw every replica" in (result.error or "")
    assert runner.history == [
        DrillState.CREATED,
        DrillState.STARTING,
        DrillState.HEALING,
        DrillState.ANALYZING,
        DrillState.DONE,
    ]
    backend = kit.backend
    assert isinstance(backend, FakeBackend)
    assert backend.downs == 1 and backend.calls == []
    assert isinstance(kit.load, Load) and kit.load.plan is None  # no load was started
    assert load_state() is None


def test_two_drills_at_once_each_heal_only_their_own(tmp_path: Path) -> None:
    kits = [parts(tmp_path / "a"), parts(tmp_path / "b")]
    results: list[Any] = [None, None]

    def drive(i: int) -> None:
        results[i] = DrillRunner(drill(KILL), None, parts=kits[i]).run()

    other = threading.Thread(target=drive, args=(1,))
    other.start()
    drive(0)
    other.join(timeout=30)
    assert [r.status for r in results] == ["passed", "passed"], [r.error for r in results]
    ids = {r.stack_id for r in results}
    assert len(ids) == 2  # two stacks, two folders, two journals, two locks
    for kit in kits:
        backend = kit.backend
        assert isinstance(backend, FakeBackend)
        # each restarted its own replica once: neither healed the other's fault
        assert backend.calls == [("kill", "replica-2"), ("restart", "replica-2")]
    assert load_states() == []


def test_the_real_kill_node_runs_on_the_fake_backend(tmp_path: Path) -> None:
    kill = load_fault_kind("kill_node")
    assert type(kill).__name__ == "KillNode"
    kit = parts(tmp_path, backend=FakeBackend(startup=0.0))
    result = DrillRunner(drill(KILL), None, RunOptions(seed=3), parts=kit).run()
    assert result.status == "passed", result.error


def test_the_load_covers_the_whole_window_however_long_the_probe_prepares(
    tmp_path: Path,
) -> None:
    # The reference probe takes 1.2 s to learn; the load generator, like Locust, ends by
    # itself run_seconds after it started. The window's last second must still carry the
    # planned 50 req/s (before, t=0 was taken after the probe and the load ended 1.2 s early:
    # a traffic cliff that reads as an outage).
    kit = parts(tmp_path, probe=Probe(prepare_seconds=1.2))
    result = DrillRunner(drill(), None, parts=kit).run()
    assert result.status == "passed", result.error
    assert result.analysis is not None
    duration = 6.0
    last_second = [p for p in result.analysis.series if p.t >= duration - 1.0 - 1e-9]
    assert sum(p.requests for p in last_second) == pytest.approx(50, abs=2)
    assert result.analysis.phases[-1].rps == pytest.approx(50, rel=0.05)
