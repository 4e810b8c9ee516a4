"""The drill: stack up -> warmup -> t=0 -> faults on their timeline -> end of load -> heal
everything -> stack down -> analysis and reports.

Whatever ends a drill (its end, an abort condition, a harness failure, Ctrl-C or SIGTERM),
the same ``finally`` path heals every applied fault, stops the load, takes the stack down and
writes a report: nothing is left running and nothing stays injected. Faults are journaled
before they are applied, so a drillkit killed with SIGKILL leaves enough for ``drillkit heal``.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import os
import platform
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from drillkit.backends.base import Backend, Owner, StackState, get_backend
from drillkit.errors import DrillkitError, InputError
from drillkit.faults.base import FaultKind, fault_kinds, load_fault_kind
from drillkit.faults.context import FaultContext
from drillkit.fsutil import read_private
from drillkit.journal import Journal
from drillkit.load.worker import check_token
from drillkit.observe.alerts import AlertReader
from drillkit.observe.quality import QualityProbe
from drillkit.observe.records import WIRE_FIELDS, EventRecord, Records, RequestRecord, is_failed
from drillkit.observe.series import QualitySample
from drillkit.observe.watch import StackWatcher, Watcher
from drillkit.scenario.model import Scenario
from drillkit.scenario.units import CountOrShare
from drillkit.scoring.alerts import AlertExpect, AlertSpan, MonitoringInput
from drillkit.scoring.analyze import (
    SLO,
    Analysis,
    DetectionEvent,
    DrillInput,
    Expectation,
    FaultRun,
    LoadWorker,
    analyze,
)
from drillkit.scoring.data import DataCensus, DataLossRun, EventSent
from drillkit.scoring.rollout import RolloutRun, rollout_run
from drillkit.stacks.base import StackPreset, bring_up, get_preset, take_down
from drillkit.timeline import Clock, FaultRecord, FaultTimeline, WallClock

if TYPE_CHECKING:
    from drillkit.healing import HealResult
    from drillkit.load.driver import LoadPlan


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived during a drill.

    A KeyboardInterrupt, not an Exception: the signal handler raises it wherever the main
    thread is, and library code on the way (``except Exception`` in a client's retry or
    config loading) must not swallow it. In one CI run a SIGTERM 1.5 s into a docker stack
    start was lost and the drill ran to the end, exit 0; an Exception subclass, as this
    was then, is the likely way it vanished.
    """

    exit_code = 130


#: How long after a fault ends an alert of a team's own Prometheus is still given to it (its
#: rules' timing is not drillkit's to know).
EXTERNAL_GRACE_S = 30.0
#: Seconds the load generator runs past the drill window: its spawn and its run-time clock
#: start a little after drillkit's t - warmup, and the window must not end in a cliff.
LOAD_TAIL_S = 1.0

#: A wall-clock step larger than this is reported (the series' windows are 100 ms).
CLOCK_STEP_S = 0.05


class DrillState(enum.Enum):
    """Where a drill is; :attr:`DrillRunner.history` lists the states it went through."""

    CREATED = "created"
    STARTING = "starting"  # the stack is coming up
    WARMUP = "warmup"  # load runs, t=0 is ahead
    RUNNING = "running"  # t=0 passed: faults on their timeline
    HEALING = "healing"  # healing faults, stopping load, taking the stack down
    ANALYZING = "analyzing"
    DONE = "done"


#: The states a signal may stop: before HEALING. From HEALING on, a signal is deferred.
_INTERRUPTIBLE = frozenset({DrillState.STARTING, DrillState.WARMUP, DrillState.RUNNING})


@dataclass
class RunOptions:
    backend: str | None = None  # overrides the scenario's stack.backend
    seed: int = 0  # seeds "random" targets and the load's user ids
    records_path: Path | None = None  # write every request record here (gzipped JSON lines)
    prometheus: str | None = None  # read alerts from this Prometheus, not the stack's
    alertmanager: str | None = None  # and notifications from this Alertmanager


class LoadGenerator(Protocol):
    """The drill's load (:class:`drillkit.load.driver.LoadDriver`, or a fake in tests)."""

    def start(self, plan: LoadPlan, run_dir: Path | None = None) -> None: ...

    def since(self, index: int) -> tuple[list[RequestRecord], int]: ...

    def records(self) -> list[RequestRecord]: ...

    def stop(self, grace: float | None = None) -> int | None: ...


@dataclass
class DrillParts:
    """The collaborators of one drill. :meth:`for_scenario` builds the real ones; tests hand
    in fakes (``drillkit.testing.FakeBackend``, a fake load, a fake clock)."""

    backend: Backend[Any]
    preset: StackPreset[Any]
    load: LoadGenerator
    watcher: Watcher
    probe: QualityProbe | None
    clock: Clock = field(default_factory=WallClock)
    kinds: Callable[[str], FaultKind[Any]] = load_fault_kind
    journal: Journal | None = None
    """None: the stack's own journal, in its folder, once the stack is up."""

    @classmethod
    def for_scenario(cls, scenario: Scenario, options: RunOptions) -> DrillParts:
        from drillkit.load.driver import LoadDriver

        compose = scenario.stack.compose is not None
        preset = get_preset("compose" if compose else scenario.stack.preset)
        return cls(
            backend=get_backend(backend_for(scenario, options.backend)),
            preset=preset,
            load=LoadDriver(),
            watcher=StackWatcher(preset),
            probe=preset.quality_probe(options.seed),
        )


@dataclass
class Tick:
    """A snapshot for the live view, once or twice a second."""

    phase: str  # "starting", "warmup", "running", "healing", "stopping"
    t: float | None  # seconds from t=0 (negative in warmup)
    duration: float
    rps: float
    p99_ms: float
    failed: int
    degraded: int
    requests: int
    replica_states: dict[str, str]
    faults: list[FaultRecord]
    message: str = ""


@dataclass
class DrillResult:
    """Everything a report is made from."""

    scenario: Scenario
    scenario_path: str
    scenario_sha256: str
    backend: str
    status: str  # passed | failed | error | interrupted
    started_at: str
    finished_at: str
    gpu: bool
    analysis: Analysis | None
    faults: list[FaultRecord]
    error: str | None = None
    heal_failures: list[HealResult] = field(default_factory=list)
    """Faults still applied after the drill's final heal: the drill cannot pass."""
    stack_id: str | None = None
    """The stack the drill brought up (its folder keeps the logs), if it got that far."""
    notes: list[str] = field(default_factory=list)
    """What a reader of the figures should know (a wall-clock step during the drill)."""


def interrupted_result(
    scenario: Scenario, path: Path | None, backend: str, started: float, reason: str
) -> DrillResult:
    """The result of a drill interrupted before the runner could account for it itself."""
    return DrillResult(
        scenario=scenario,
        scenario_path=str(path or "<string>"),
        scenario_sha256=scenario_digest(path, scenario),
        backend=backend,
        status="interrupted",
        started_at=_iso(started),
        finished_at=_iso(time.time()),
        gpu=False,
        analysis=None,
        faults=[],
        error=reason,
    )


def write_records(
    path: Path, rows: list[RequestRecord], t0: float, events: Sequence[EventRecord] = ()
) -> Path:
    """Every request of a drill as gzipped JSON lines: a header naming t0 and the fields,
    then one array per request (the wire form of :mod:`drillkit.observe.records`), then one
    ``E[...]`` line per click event the generator sent."""
    import gzip

    from drillkit.fsutil import atomic_write

    header = json.dumps({"records_version": 1, "t0": t0, "fields": WIRE_FIELDS})
    lines = [header, *(row.to_wire() for row in rows), *(e.to_wire() for e in events)]
    body = "\n".join(lines) + "\n"
    return atomic_write(path, gzip.compress(body.encode("utf-8"), compresslevel=5), mode=0o644)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class _SignalNote:
    """The last SIGINT or SIGTERM that :func:`_signals_raise` turned into Interrupted, kept
    until the engine has that Interrupted in hand.

    The handler raises wherever the main thread is, and that can be a finalizer: ``__del__``
    or a weakref callback run by the garbage collector. Python swallows an exception raised
    there (it prints "Exception ignored in: ..." and goes on), so the interrupt would be lost
    and the drill run to its end; in one CI run a SIGINT 1.5 s into a local stack start did
    exactly that. The handler therefore notes the signal too, and :meth:`check` raises it
    again at the engine's next check point.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.at: float | None = None  # time.monotonic() when it arrived
        self.raised = False  # check() raised it already: once per signal is enough

    def note(self, signum: int) -> None:
        self.signum = signum
        self.at = time.monotonic()
        self.raised = False

    def clear(self) -> None:
        """The Interrupted reached the engine: nothing is pending."""
        self.signum = None
        self.at = None
        self.raised = False

    def check(self) -> None:
        """Raise Interrupted for a noted signal whose own Interrupted never reached the engine,
        once per signal, in the main thread only (the one a signal is for)."""
        if self.signum is None or self.raised:
            return
        if threading.current_thread() is not threading.main_thread():
            return
        self.raised = True
        late = time.monotonic() - (self.at if self.at is not None else time.monotonic())
        raise Interrupted(
            f"interrupted by {signal.Signals(self.signum).name} (acted on {late:.1f} s after "
            "it arrived: its first Interrupted was swallowed, likely by a finalizer)"
        )


@contextlib.contextmanager
def _signals_raise(note: _SignalNote | None = None) -> Iterator[_SignalNote]:
    """SIGINT and SIGTERM raise Interrupted in the main thread for the duration, and are
    noted in ``note`` (a new one if none is given), which is yielded.

    The caller calls ``note.check()`` where it can stop and ``note.clear()`` once it has
    caught the Interrupted: see :class:`_SignalNote`. A noted signal that no check point
    raised by the end of the block is raised as the block ends.
    """
    note = note if note is not None else _SignalNote()

    def handler(signum: int, frame: FrameType | None) -> None:
        note.note(signum)  # first: the raise below may land in a finalizer and be lost
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}")

    if threading.current_thread() is not threading.main_thread():
        yield note
        return
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield note
        # The block ended without an Interrupted; one swallowed since its last check point
        # (while the drill's last tick ran) still ends the drill as interrupted.
        note.check()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """SIGINT and SIGTERM are noted, not acted on, for the duration (in the main thread).

    While cleaning up, a second Ctrl-C must not cut the clean-up short; while a report is
    written, a signal must not leave it half done. The caller decides what a noted signal
    means once the work is finished.
    """
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _Actions:
    """Binds the timeline to fault kinds, a backend and the journal."""

    def __init__(
        self,
        backend: Backend[Any],
        state: StackState[Any],
        journal: Journal,
        clock: Clock,
        kinds: Callable[[str], FaultKind[Any]],
    ) -> None:
        self.backend = backend
        self.state = state
        self.journal = journal
        self.clock = clock
        self.load_kind = kinds
        self.kinds: dict[str, FaultKind[Any]] = {}
        self.params: dict[str, Any] = {}
        self.contexts: dict[str, FaultContext] = {}

    def register(self, record: FaultRecord, params: Any) -> None:
        self.kinds[record.id] = self.load_kind(record.kind)
        self.params[record.id] = params

    def apply(self, record: FaultRecord) -> None:
        kind = self.kinds[record.id]
        ctx = FaultContext(self.backend, self.state, self.journal, fault_id=record.id)
        self.contexts[record.id] = ctx
        evidence = []
        for target in record.targets:
            # The change happens inside apply(); a stack that notices within milliseconds
            # (a replica refusing a reloaded file) must not be timed before the injection.
            started = self.clock.now()
            undo = kind.apply(ctx, target, self.params[record.id])
            if record.injected_at is None:
                record.injected_at = started
            record.undo.append({"target": target, **undo})
            evidence.append(kind.check_applied(ctx, target, self.params[record.id], undo))
        record.evidence = "; ".join(evidence)

    def heal(self, record: FaultRecord) -> None:
        kind = self.kinds[record.id]
        ctx = self.contexts[record.id]
        for undo in reversed(record.undo):
            kind.heal(ctx, undo)
            if "journal_id" in undo:
                self.journal.record_heal(str(undo["journal_id"]))
            details = kind.outcome(ctx, undo)
            if details:
                record.details = details


def scenario_digest(path: Path | None, scenario: Scenario) -> str:
    if path is not None and path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return hashlib.sha256(scenario.model_dump_json().encode()).hexdigest()


def backend_for(scenario: Scenario, option: str | None) -> str:
    """The backend a drill runs on: the CLI's ``--backend``, else the scenario's; a Compose
    project always runs on the ``compose`` backend (``--backend docker`` is accepted)."""
    if scenario.stack.compose is None:
        return option or scenario.stack.backend
    if option not in (None, "docker", "compose"):
        raise InputError(
            f"--backend {option}: stack.compose names a Compose project, which runs on Docker "
            "(the compose backend); leave --backend out"
        )
    return "compose"


def plan_faults(
    scenario: Scenario, seed: int, services: list[str] | None = None
) -> list[FaultRecord]:
    """Resolve targets (``random`` picks with a seeded RNG) into the drill's fault records.
    ``services``: the stack's services when the scenario alone does not say (a Compose
    project's, which Compose reads from its file)."""
    rng = random.Random(seed)
    if services is None:
        services = (
            scenario.service_names()
            if scenario.stack.compose is None
            else [t for f in scenario.faults for t in f.target_names()]
        )
    return [
        FaultRecord(
            id=f.id,
            kind=f.kind,
            targets=f.resolved_targets(services, rng),
            at=f.at,
            duration=f.duration,
        )
        for f in scenario.faults
    ]


class DrillRunner:
    """Runs one scenario end to end with the collaborators it is given.

    The state machine: CREATED -> STARTING -> WARMUP -> RUNNING -> HEALING -> ANALYZING ->
    DONE. Whatever ends a drill early (an abort condition, a harness failure, a signal), the
    HEALING step runs: every fault is healed, the load stopped, the stack taken down.
    """

    def __init__(
        self,
        scenario: Scenario,
        scenario_path: Path | None,
        options: RunOptions | None = None,
        on_tick: Callable[[Tick], None] | None = None,
        on_progress: Callable[[str, float], None] | None = None,
        *,
        parts: DrillParts | None = None,
    ) -> None:
        self.scenario = scenario
        self.path = scenario_path
        self.options = options or RunOptions()
        self.on_tick = on_tick or (lambda tick: None)
        self.on_progress = on_progress or (lambda message, fraction: None)
        self.parts = parts or DrillParts.for_scenario(scenario, self.options)
        self.backend_name = backend_for(scenario, self.options.backend)
        # A Compose file and a locustfile are named relative to the scenario file's folder.
        self.base = Path(scenario_path).resolve().parent if scenario_path is not None else None
        self.verified: frozenset[str] | None = None
        self.state = DrillState.CREATED
        self._observed: tuple[str, list[Any], str | None] | None = None
        self.history: list[DrillState] = [self.state]
        self._signal = _SignalNote()

    def _enter(self, state: DrillState) -> None:
        if state in _INTERRUPTIBLE:
            # A state change is a check point: a signal whose Interrupted was swallowed
            # stops the drill here. Never on the way to HEALING and after: healing must
            # not be cut short (a second signal then is deferred, see signals_deferred).
            self._signal.check()
        self.state = state
        self.history.append(state)

    def _check_signal(self) -> None:
        """A check point inside a state (a tick of the watch loop, a step of the stack's
        start): raise a signal whose Interrupted was swallowed, see :class:`_SignalNote`."""
        if self.state in _INTERRUPTIBLE:
            self._signal.check()

    def _progress(self, message: str, fraction: float) -> None:
        # The stack's start reports each step, the waits for readiness included: each
        # report is a check point, so a lost signal does not wait for the whole start.
        self._check_signal()
        self.on_progress(message, fraction)

    def run(self) -> DrillResult:
        scenario = self.scenario
        parts = self.parts
        clock = parts.clock
        started = time.time()
        spec, monitoring_note = self._monitoring_spec()
        # What the stack needs from the machine and the user's files, before anything starts.
        parts.preset.preflight(spec, self.backend_name)
        services = None
        known = parts.preset.targets(spec)
        if known is not None:
            linked, published = parts.preset.target_links(spec) or (None, None)
            scenario.check_targets(known, linked=linked, published=published)
            services = list(known)
        if scenario.load.locustfile is not None:
            from drillkit.load.driver import check_locustfile

            check_locustfile(self._path(scenario.load.locustfile))
        records = plan_faults(scenario, self.options.seed, services)
        kinds = fault_kinds()
        needs: set[str] = set()
        for record in records:
            info = kinds.get(record.kind)
            needs |= set(info.cls.needs) if info is not None else set()
        parts.backend.check_capabilities(needs)
        status = "error"
        error: str | None = None
        heal_failures: list[HealResult] = []
        teardown: list[str] = []  # clean-up steps that failed
        journal: Journal | None = parts.journal
        analysis: Analysis | None = None
        state: StackState[Any] | None = None
        timeline: FaultTimeline | None = None
        load_started = watching = probing = False
        t0: float | None = None
        alerts: AlertReader | None = None
        self._observed = None
        self._census: DataCensus | None = None
        self._state: StackState[Any] | None = None
        try:
            with _signals_raise(self._signal):
                self._enter(DrillState.STARTING)
                message = f"bringing up the stack ({self.backend_name})"
                self.on_tick(self._tick("starting", None, records, message=message))
                listen = scenario.stack.listen
                state = bring_up(
                    parts.preset,
                    spec,
                    parts.backend,
                    owner=Owner(pid=os.getpid(), scenario=scenario.name),
                    progress=self._progress,
                    listen=str(listen) if listen is not None else None,
                )
                self._state = state
                # Its own journal, in its own folder: this drill heals its faults only.
                journal = journal or Journal.for_stack(state.id)
                # The released, verified versions; a response from anything else is wrong.
                self.verified = parts.preset.verified_digests(state)
                actions = _Actions(parts.backend, state, journal, clock, parts.kinds)
                for record in records:
                    actions.register(record, scenario.fault(record.id).params)
                parts.watcher.start(state)
                watching = True
                alerts = self._alert_reader(state)
                if alerts is not None:
                    alerts.start()
                if parts.probe is not None:
                    # Before the load: the reference is learnt from an idle stack, and the
                    # time it takes does not eat into the load's window.
                    parts.probe.prepare(state)
                self._enter(DrillState.WARMUP)
                parts.load.start(self._load_plan(state), Path(state.run_dir))
                load_started = True
                # t=0 counts from the moment every load process is connected, the clock the
                # generator's own run time counts from: the load covers the whole window.
                t0 = clock.now() + scenario.load.warmup
                timeline = FaultTimeline(records, actions, clock)
                timeline.start(t0)
                if parts.probe is not None:
                    parts.probe.start()
                    probing = True
                status = self._watch(records, t0)
        except Interrupted as exc:
            self._signal.clear()  # it arrived: no check point is to raise it again
            status = "interrupted"
            error = str(exc)
        except DrillkitError as exc:
            status = "error"
            error = str(exc)
        finally:
            with signals_deferred():
                self._enter(DrillState.HEALING)
                message = "healing faults, stopping load, taking the stack down"
                self.on_tick(self._tick("healing", None, records, message=message))
                # Each step in its own guard: one that fails (a Docker daemon gone) must not
                # keep the others from running; what failed is reported and fails the drill.

                def step(what: str, action: Callable[[], object]) -> None:
                    try:
                        action()
                    except Exception as exc:
                        teardown.append(f"{what} failed: {type(exc).__name__}: {exc}")

                if timeline is not None:
                    step("healing on the timeline", timeline.finish)
                if state is not None and journal is not None:
                    # Whatever the timeline could not heal (a fault whose apply failed half
                    # way) is still in the journal: undo it before the stack goes.
                    from drillkit.healing import heal_stack

                    healed = heal_stack(
                        state.id,
                        journal=journal,
                        state=state,
                        backend=parts.backend,
                        kinds=parts.kinds,
                    )
                    heal_failures = healed.failures
                    teardown += healed.notes if healed.errors else []
                if probing and parts.probe is not None:
                    step("stopping the quality probe", parts.probe.stop)
                if load_started:
                    step("stopping the load", parts.load.stop)
                if watching:
                    step("stopping the watcher", parts.watcher.stop)
                if alerts is not None:
                    reader = alerts
                    step("reading the alerts", lambda: self._read_alerts(reader, t0))
                if state is not None and t0 is not None and load_started:
                    up, start = state, t0
                    step("reading the event store", lambda: self._read_census(up, start))
                if state is not None:
                    running = state
                    step("taking the stack down", lambda: take_down(running, parts.backend))
        if heal_failures or teardown:
            error = "; ".join([*(r.line() for r in heal_failures), *teardown])
        # A signal while the records are analysed must not lose them: note it, finish.
        with signals_deferred() as late:
            self._enter(DrillState.ANALYZING)
            if t0 is not None and load_started:
                analysis = self._analyze(records, t0)
        if late and status != "interrupted":
            status = "interrupted"
            error = (
                f"interrupted by {signal.Signals(late[0]).name} while the drill was "
                "being analysed; the figures are complete"
            )
        if analysis is not None:
            if status == "running":
                status = "passed" if analysis.passed and not heal_failures else "failed"
                if teardown:
                    status = "error"  # the drill ran, but drillkit could not clean up after it
                if analysis.generator_saturated:
                    status = "error"
                    error = (
                        "the load generator could not hold 90% of its target rate in "
                        "the baseline; the drill is invalid"
                    )
                    lost = [w for w in analysis.workers if w.lost_at is not None]
                    if lost:
                        error += (
                            " (a load worker was lost: "
                            + ", ".join(f"{w.name} at {w.lost_at:.1f} s" for w in lost)
                            + ")"
                        )
            elif status == "aborted":
                status = "failed"
        elif status == "running":
            status = "error"
        notes: list[str] = [monitoring_note] if monitoring_note else []
        measure = getattr(clock, "step", None)  # a WallClock measures; a test's fake may not
        if callable(measure) and abs(drift := float(measure())) > CLOCK_STEP_S:
            notes.append(
                f"the wall clock stepped by {drift:+.2f} s during the drill: faults ran on "
                "drillkit's monotonic clock, requests are stamped with the wall clock, so "
                "times that compare the two may be off by that much"
            )
        self._enter(DrillState.DONE)
        return DrillResult(
            scenario=scenario,
            scenario_path=str(self.path or "<string>"),
            scenario_sha256=scenario_digest(self.path, scenario),
            backend=self.backend_name,
            status=status,
            started_at=_iso(started),
            finished_at=_iso(time.time()),
            gpu=bool(state.gpu) if state is not None else False,
            analysis=analysis,
            faults=records,
            error=error,
            heal_failures=heal_failures,
            stack_id=state.id if state is not None else None,
            notes=notes,
        )

    # -- pieces -----------------------------------------------------------------------------
    def _monitoring_spec(self) -> tuple[Any, str | None]:
        """The stack's spec with its monitoring decided, and a note when it is off for a
        reason worth saying. A team's own Prometheus (``--prometheus``) replaces the stack's."""
        from drillkit.observe.alerts import check_reachable

        options = self.options
        if options.alertmanager and not options.prometheus:
            raise InputError("--alertmanager needs --prometheus: alerts are read from Prometheus")
        if options.prometheus:
            check_reachable(options.prometheus, "prometheus", "/api/v1/status/buildinfo")
            if options.alertmanager:
                check_reachable(options.alertmanager, "alertmanager", "/api/v2/status")
        return self.parts.preset.decide_monitoring(
            self._spec(),
            self.backend_name,
            required=self.scenario.needs_monitoring() and not options.prometheus,
            external=bool(options.prometheus),
        )

    def _spec(self) -> Any:
        return self.scenario.drill_spec(self.base, self.options.seed)

    def _path(self, name: str, field: str = "load.locustfile") -> Path:
        """A file the scenario names, relative to its own folder, inside the working folder."""
        from drillkit.scenario.model import scenario_file

        return scenario_file(self.base, name, field)

    def _token(self) -> str | None:
        """The token of ``load.token_file`` (None: a fresh one per drill)."""
        name = self.scenario.load.token_file
        if name is None:
            return None
        path = self._path(name, "load.token_file")
        try:
            token = read_private(path, limit=4096).decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"load.token_file: cannot read {path}: {exc}") from None
        return check_token(token, f"load.token_file: {path}")

    def _alert_reader(self, state: StackState[Any]) -> AlertReader | None:
        if self.options.prometheus:
            return AlertReader(
                prometheus=self.options.prometheus,
                alertmanager=self.options.alertmanager,
                source="external",
            )
        sources = self.parts.preset.alert_sources(state)
        if sources is None:
            return None
        prometheus, receiver = sources
        return AlertReader(prometheus=prometheus, receiver=receiver)

    def _read_alerts(self, reader: AlertReader, t0: float | None) -> None:
        reader.stop()
        if t0 is None:
            return
        start = t0 - self.scenario.load.warmup
        try:
            self._observed = (reader.source, reader.collect(start, time.time()), None)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            self._observed = (reader.source, [], f"{type(exc).__name__}: {exc}")

    def _monitoring_input(self, t0: float) -> MonitoringInput | None:
        observed = self._observed
        if observed is None:
            return None
        source, seen, error = observed
        budget: dict[str, float] = {}
        grace = EXTERNAL_GRACE_S
        if source == "stack":
            budget, grace = self.parts.preset.alert_timing(self._spec())

        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - t0, 3)

        watch = self.scenario.monitoring
        return MonitoringInput(
            source=source,
            alerts=[
                AlertSpan(
                    a.name,
                    a.labels,
                    rel(a.pending_at),
                    rel(a.firing_at),
                    rel(a.resolved_at),
                    rel(a.notified_at),
                )
                for a in seen
            ],
            budget=budget,
            grace=grace,
            expects={
                f.id: AlertExpect(tuple(f.expect.alerts), f.expect.alert_within)
                for f in self.scenario.faults
            },
            max_false_alerts=watch.max_false_alerts,
            resolve_within=watch.alerts_resolve_within,
            error=error,
        )

    def _load_plan(self, state: StackState[Any]) -> LoadPlan:
        from drillkit.load.driver import LoadPlan, WorkerHost

        load = self.scenario.load
        workload = self.parts.preset.workload(state)
        host = state.entry_url
        if load.host is not None:
            from drillkit.stacks.compose.watch import resolve_url

            host = resolve_url(state, load.host)
        requests = None
        if load.requests:
            requests = json.dumps([r.model_dump(exclude_none=True) for r in load.requests])
        hosts = tuple(
            WorkerHost("netns" if h.netns else "ssh", h.netns or h.ssh or "", h.workers)
            for h in load.hosts
        )
        return LoadPlan(
            bind=str(load.bind) if load.bind is not None else "127.0.0.1",
            port=load.port,
            hosts=hosts,
            expect_remote=load.remote_workers,
            join_within=load.join_within,
            token=self._token(),
            host=host,
            locustfile=self._path(load.locustfile) if load.locustfile is not None else None,
            requests=requests,
            rate=load.rate,
            users=load.users,
            # The generator runs a little past the window (it is stopped at the window's end
            # and its stragglers are not scored), so that the last second has the planned rate.
            run_seconds=load.warmup + load.duration + LOAD_TAIL_S,
            timeout=load.timeout,
            workers=load.workers,
            n_users=workload.users,
            k=workload.k,
            n_items=workload.items,
            event_share=workload.event_share,
            seed=self.options.seed,
            skew=load.skew,
            stack_id=state.id,
        )

    def _read_census(self, state: StackState[Any], t0: float) -> None:
        self._census = self.parts.preset.data_census(state, t0)

    def _watch(self, records: list[FaultRecord], t0: float) -> str:
        load = self.scenario.load
        clock = self.parts.clock
        end = t0 + load.duration
        abort = self.scenario.abort
        seen = 0
        recent: list[tuple[float, bool]] = []
        latencies: list[tuple[float, float]] = []
        never = threading.Event()
        while True:
            self._check_signal()  # each tick is a check point (the load's calls, a GC)
            now = clock.now()
            if now >= end + load.timeout + 0.5:
                return "running"
            if now >= t0 and self.state is DrillState.WARMUP:
                self._enter(DrillState.RUNNING)
            new, seen = self.parts.load.since(seen)
            for r in new:
                recent.append((r.sent_at, is_failed(r.status)))
                latencies.append((r.sent_at, r.latency_ms))
            horizon = now - max(abort.for_, 1.0)
            recent = [x for x in recent if x[0] >= horizon]
            latencies = [x for x in latencies if x[0] >= now - 1.0]
            if now > t0 + abort.for_ and recent and abort.error_rate_above < 1.0:
                window = [f for t, f in recent if t >= now - abort.for_]
                if window and sum(window) / len(window) > abort.error_rate_above:
                    message = (
                        f"abort: error rate above {abort.error_rate_above:.0%} for {abort.for_:g} s"
                    )
                    self.on_tick(self._tick("stopping", now - t0, records, message=message))
                    return "aborted"
            last_second = sorted(lat for t, lat in latencies)
            states, _ = self.parts.watcher.snapshot()
            tick = self._tick(
                "warmup" if now < t0 else "running",
                now - t0,
                records,
                rps=float(len(last_second)),
                p99=last_second[int(0.99 * (len(last_second) - 1))] if last_second else 0.0,
                failed=sum(1 for t, f in recent if f and t >= now - 1.0),
                requests=seen,
                states=states,
            )
            self.on_tick(tick)
            clock.wait_until(now + 0.25, never)

    def _tick(
        self,
        phase: str,
        t: float | None,
        records: list[FaultRecord],
        *,
        rps: float = 0.0,
        p99: float = 0.0,
        failed: int = 0,
        requests: int = 0,
        states: dict[str, str] | None = None,
        message: str = "",
    ) -> Tick:
        return Tick(
            phase=phase,
            t=t,
            duration=self.scenario.load.duration,
            rps=rps,
            p99_ms=p99,
            failed=failed,
            degraded=0,
            requests=requests,
            replica_states=states or {},
            faults=records,
            message=message,
        )

    def _analyze(self, records: list[FaultRecord], t0: float) -> Analysis:
        scenario = self.scenario
        parts = self.parts
        rows = parts.load.records()
        read_events = getattr(parts.load, "events", None)
        sent_events = read_events() if callable(read_events) else []
        if self.options.records_path is not None:
            write_records(self.options.records_path, rows, t0, sent_events)
        verified = self.verified
        released = [d for r in records for d in r.details.get("released_digests", [])]
        if verified is not None and released:
            # A version a rollout released during the drill is a verified one, good or bad:
            # what it did to users is the rollout's exposure, not a wrong-model response.
            verified = verified | frozenset(str(d) for d in released)
        recs = Records.build(rows, t0=t0, verified_digests=verified)
        samples = parts.probe.samples() if parts.probe is not None else []
        quality = [QualitySample(t - t0, share) for t, share in samples]
        _, events = parts.watcher.snapshot()
        detection = [DetectionEvent(e.t - t0, e.source, e.subject, e.what) for e in events]
        if scenario.stack.compose is not None and self._observed is not None:
            # Without drillkit's gateway, a team's own alerts are a way the stack noticed.
            targets = {t for r in records for t in r.targets}
            project = getattr(self._state, "project", None)
            for alert in self._observed[1]:
                if alert.firing_at is None:
                    continue
                owner = alert.labels.get("container_label_com_docker_compose_project")
                if owner is not None and owner != project:
                    continue  # another project's service of the same name
                for subject in alert_subjects(alert.labels, targets):
                    what = f"alert {alert.name} firing"
                    detection.append(
                        DetectionEvent(alert.firing_at - t0, "prometheus", subject, what)
                    )
        runs = []
        for record in records:
            expect = scenario.fault(record.id).expect
            rollout = _rollout_of(record, t0)
            data = record.details.get("data_loss")
            loss = (
                DataLossRun(
                    target=str(data.get("target")),
                    mode=str(data.get("mode")),
                    injected_at=record.injected_at - t0,
                    until=scenario.load.duration,
                    survivors=_survivors(data.get("survivors")),
                )
                if isinstance(data, dict) and record.injected_at is not None
                else None
            )
            if (
                rollout is not None
                and rollout.verdict_at is not None
                and rollout.status in ("rolled_back", "aborted")
            ):
                # The analysis failing a step (or a person aborting) is how the stack noticed.
                what = f"rollout analysis: {rollout.verdict}"
                subject = ",".join(record.targets)
                detection.append(DetectionEvent(rollout.verdict_at, "rollout", subject, what))
            runs.append(
                FaultRun(
                    id=record.id,
                    kind=record.kind,
                    target=",".join(record.targets),
                    injected_at=None if record.injected_at is None else record.injected_at - t0,
                    healed_at=None if record.healed_at is None else record.healed_at - t0,
                    evidence=record.evidence or (record.error or ""),
                    expect=Expectation(
                        detect_within=expect.detect_within,
                        recover_within=expect.recover_within,
                        max_failed_requests=_count_or_share(expect.max_failed_requests),
                        max_wrong_model_responses=expect.max_wrong_model_responses,
                        cache_recover_within=expect.cache_recover_within,
                        rollback_within=expect.rollback_within,
                        max_users_exposed=_count_or_share(expect.max_users_exposed),
                        max_exposed_requests=expect.max_exposed_requests,
                        max_events_lost=expect.max_events_lost,
                        rpo_within=expect.rpo_within,
                        rto_within=expect.rto_within,
                    ),
                    rollout=rollout,
                    data=loss,
                )
            )
        events_sent = None
        if self._census is not None:
            events_sent = [
                EventSent(e.producer, e.seq, e.sent_at - t0, e.done_at - t0, e.acked)
                for e in sent_events
            ]
        census = self._census
        if census is not None:
            # The stack noticing its data gone: the backup service starting a restore, the
            # feature updater finding the event store unreachable or emptied.
            for restore in census.restores:
                subject = "event-store" if restore.kind == "events" else "model-store"
                what = f"restore of {restore.kind} backup {restore.backup}"
                detection.append(DetectionEvent(restore.started_at, "backup", subject, what))
            for seen in census.stale_noticed:
                what = "features stale: the event store unreachable, emptied or behind"
                detection.append(DetectionEvent(seen, "features", "event-store", what))
        detection.sort(key=lambda e: e.t)
        slo = scenario.slo
        # With click events on, that share of the load's requests are events, not requests.
        events_on = scenario.stack.events.enabled
        share = scenario.stack.events.share if events_on else 0.0
        request_rate = scenario.load.rate * (1.0 - share)
        return analyze(
            DrillInput(
                records=recs,
                quality=quality,
                faults=runs,
                events=detection,
                slo=SLO(
                    availability=slo.availability,
                    p99_ms=slo.p99_ms,
                    quality=slo.quality,
                    degraded_max=slo.degraded_max,
                ),
                duration=scenario.load.duration,
                target_rps=request_rate,
                pass_score=scenario.scoring.pass_score,
                generator_saturated=_saturated(recs, records, request_rate),
                monitoring=self._monitoring_input(t0),
                events_sent=events_sent,
                census=self._census,
                workers=self._workers(t0),
            )
        )

    def _workers(self, t0: float) -> list[LoadWorker]:
        """The load processes, when the load had several (or any elsewhere)."""
        load = self.scenario.load
        read = getattr(self.parts.load, "sink_stats", None)
        if not callable(read) or (load.workers <= 1 and not load.distributed):
            return []
        return [
            LoadWorker(
                name=w.name,
                host=w.host,
                address=w.peer,
                records=w.records,
                clock_offset_ms=round(w.offset * 1000.0, 3),
                rtt_ms=round(w.rtt * 1000.0, 3) if w.rtt is not None else None,
                lost_at=round(w.lost_at - t0, 3) if w.lost_at is not None else None,
            )
            for w in read().workers
        ]


#: Labels by which an alert names the service it is about (cAdvisor names a Compose
#: service's containers by the Compose label).
_SUBJECT_LABELS = (
    "service",
    "compose_service",
    "container_label_com_docker_compose_service",
    "job",
    "instance",
)


def alert_subjects(labels: dict[str, str], targets: set[str]) -> list[str]:
    """The fault targets an alert's labels name (an ``instance`` by its host part)."""
    found = []
    for key in _SUBJECT_LABELS:
        value = str(labels.get(key) or "")
        if key == "instance":
            value = value.rsplit(":", 1)[0]
        if value in targets and value not in found:
            found.append(value)
    return found


def _survivors(data: object) -> frozenset[tuple[str, int]] | None:
    """The ``[producer, seq]`` pairs a data_loss fault read from the store at its heal."""
    if not isinstance(data, list):
        return None
    return frozenset(
        (pair[0], pair[1])
        for pair in data
        if isinstance(pair, list)
        and len(pair) == 2
        and isinstance(pair[0], str)
        and isinstance(pair[1], int)
    )


def _rollout_of(record: FaultRecord, t0: float) -> RolloutRun | None:
    """The rollout a fault ran (its kind's outcome), relative to ``t0``; None for others."""
    data = record.details.get("rollout")
    if not isinstance(data, dict):
        return None
    expected = record.details.get("expected")
    return rollout_run(
        data,
        t0,
        expected="rolled_back" if expected == "rolled_back" else "promoted",
        defect=str(record.details.get("defect", "none")),
    )


def _count_or_share(value: CountOrShare | None) -> int | float | None:
    if value is None:
        return None
    if value.share is not None:
        return float(value.share)
    return value.count


def _saturated(recs: Records, records: list[FaultRecord], rate: float) -> bool:
    """The generator could not hold 90% of its rate in the baseline (before the first fault)."""
    first = min((r.at for r in records), default=None)
    end = first if first is not None and first > 0 else float(recs.t[-1]) if len(recs) else 0.0
    if end <= 1.0:
        return False
    baseline = recs.window(0.0, end)
    return len(baseline) < 0.9 * rate * end


def environment(gpu: bool) -> dict[str, Any]:
    return {"gpu": gpu, "python": platform.python_version(), "host_cpus": os.cpu_count() or 1}


__all__ = [
    "DrillParts",
    "DrillResult",
    "DrillRunner",
    "DrillState",
    "Interrupted",
    "LoadGenerator",
    "RunOptions",
    "Tick",
]
