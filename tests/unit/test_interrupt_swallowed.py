"""A signal whose Interrupted Python swallows still stops the drill.

The engine's signal handler raises Interrupted wherever the main thread is. When that is a
finalizer (``__del__``, a weakref callback) run by the garbage collector, Python prints
"Exception ignored in: ..." and drops the exception; in one CI run a SIGINT during a local
stack start was lost that way and the drill ran to its end. The handler also notes the
signal, and the engine raises it again at its next check point: a state change, a tick of
the watch loop, a progress report of the stack's start, or the end of the signals' block.

The finalizers here run inside ``gc.collect()`` and send the signal to this process, so the
real handler raises inside them, exactly as in that run; the drills run on the fakes of
``test_engine``.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drillkit.backends.base import Backend, Progress, StackState, load_state
from drillkit.engine import (
    DrillRunner,
    DrillState,
    Interrupted,
    _SignalNote,
    _signals_raise,
)
from drillkit.journal import Journal
from drillkit.testing import FakeBackend

from .test_engine import KILL, Load, Preset, drill, parts


@pytest.fixture(autouse=True)
def _home(drillkit_home: Path) -> None:
    """Every test gets its own state folder."""


@contextlib.contextmanager
def swallowed() -> Iterator[list[BaseException]]:
    """Collects what Python swallows meanwhile (an exception raised in a finalizer), instead
    of printing it or handing it to pytest."""
    lost: list[BaseException] = []

    def hook(unraisable: Any) -> None:
        lost.append(unraisable.exc_value)

    old = sys.unraisablehook
    sys.unraisablehook = hook
    try:
        yield lost
    finally:
        sys.unraisablehook = old


class _SignalsWhenCollected:
    """Garbage in a reference cycle whose finalizer sends ``sig`` to this process: the
    handler runs, and raises, inside the finalizer."""

    def __init__(self, sig: signal.Signals) -> None:
        self.sig = sig
        self.cycle = self

    def __del__(self) -> None:
        signal.raise_signal(self.sig)


def signal_in_a_finalizer(sig: signal.Signals = signal.SIGINT) -> None:
    _SignalsWhenCollected(sig)
    gc.collect()


def test_python_swallows_the_handlers_interrupt_and_the_check_raises_it_once() -> None:
    with swallowed() as lost, _signals_raise() as note:
        signal_in_a_finalizer(signal.SIGINT)  # returns: the Interrupted was dropped
        assert [type(e) for e in lost] == [Interrupted]
        assert note.signum == signal.SIGINT and note.at is not None
        with pytest.raises(Interrupted, match="interrupted by SIGINT"):
            note.check()
        note.check()  # once per signal
        note.check()


def test_a_signal_swallowed_after_the_last_check_point_ends_the_block() -> None:
    with (
        swallowed() as lost,
        pytest.raises(Interrupted, match="interrupted by SIGTERM"),
        _signals_raise(),
    ):
        signal_in_a_finalizer(signal.SIGTERM)
    assert len(lost) == 1


def test_an_interrupt_that_arrived_is_not_raised_again() -> None:
    note = _SignalNote()
    with pytest.raises(Interrupted, match="SIGINT"), _signals_raise(note):
        signal.raise_signal(signal.SIGINT)  # delivered, as usual
    note.clear()  # what the engine does once it has the Interrupted
    note.check()
    assert note.signum is None


def test_a_swallowed_signal_never_interrupts_the_healing(tmp_path: Path) -> None:
    runner = DrillRunner(drill(), None, parts=parts(tmp_path))
    runner._signal.note(signal.SIGINT)
    for state in (DrillState.HEALING, DrillState.ANALYZING, DrillState.DONE):
        runner._enter(state)
        runner._check_signal()
    # still pending, and a state before HEALING would raise it
    with pytest.raises(Interrupted):
        runner._enter(DrillState.WARMUP)


def test_a_signal_swallowed_while_a_fault_runs_stops_the_drill_at_the_next_tick(
    tmp_path: Path,
) -> None:
    kit = parts(tmp_path)
    load = kit.load
    backend = kit.backend
    assert isinstance(load, Load) and isinstance(backend, FakeBackend)
    phases: list[str] = []
    runner = DrillRunner(drill(KILL), None, on_tick=lambda t: phases.append(t.phase), parts=kit)
    sent = -1

    def interrupt_while_injected() -> None:
        nonlocal sent
        if ("kill", "replica-2") in backend.calls and not load.stopped:
            load.on_since = None
            sent = len(phases)
            signal_in_a_finalizer(signal.SIGINT)

    load.on_since = interrupt_while_injected
    with swallowed() as lost:
        result = runner.run()
    assert [type(e) for e in lost] == [Interrupted]  # the handler's own was lost
    assert result.status == "interrupted" and "SIGINT" in (result.error or "")
    # The tick the signal came in finishes; the next one stops the drill.
    assert phases[sent:] == ["running", "healing"]
    assert runner.history[-4:] == [
        DrillState.RUNNING,
        DrillState.HEALING,
        DrillState.ANALYZING,
        DrillState.DONE,
    ]
    assert backend.count("restart", "replica-2") == 1  # healed on the way out
    assert backend.downs == 1
    assert result.stack_id is not None
    assert Journal.for_stack(result.stack_id).pending() == [] and load_state() is None
    assert runner._signal.signum is None  # delivered, cleared


class _SettlesThroughASignal(Preset):
    """A settle that reports progress right after a finalizer swallowed a SIGINT."""

    def __init__(self) -> None:
        super().__init__()
        self.went_on = False

    def settle(self, state: StackState[Any], backend: Backend[Any], progress: Progress) -> None:
        signal_in_a_finalizer(signal.SIGINT)
        progress("waiting for the gateway", 0.5)
        self.went_on = True


def test_a_signal_swallowed_during_the_stack_start_stops_it_at_its_next_report(
    tmp_path: Path,
) -> None:
    preset = _SettlesThroughASignal()
    kit = parts(tmp_path, preset=preset)
    runner = DrillRunner(drill(KILL), None, parts=kit)
    with swallowed() as lost:
        result = runner.run()
    assert len(lost) == 1
    assert result.status == "interrupted" and "SIGINT" in (result.error or "")
    assert not preset.went_on  # stopped at the report, not at the next state
    assert runner.history == [
        DrillState.CREATED,
        DrillState.STARTING,
        DrillState.HEALING,
        DrillState.ANALYZING,
        DrillState.DONE,
    ]
    backend = kit.backend
    assert isinstance(backend, FakeBackend)
    assert backend.downs == 1 and load_state() is None
