"""The fault timeline: when each fault is injected and healed, independent of what it does.

:class:`FaultTimeline` runs one thread per fault: wait until ``t0 + at``, apply, check that it
took effect, wait ``duration``, heal. Faults may overlap. Waiting goes through a
:class:`Clock`, so the unit tests drive the timeline with a fake clock in no time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Epoch seconds."""

    def wait_until(self, when: float, stop: threading.Event) -> bool:
        """Sleep until ``when`` (epoch s); False when ``stop`` was set first."""


class WallClock:
    """Epoch seconds that advance with the monotonic clock.

    A drill schedules its faults on this clock: a step of the wall clock meanwhile (NTP
    correcting it, a virtual machine resuming) moves no fault and shortens no wait. The load
    generator stamps requests with the wall clock, so after a step the two disagree:
    :meth:`step` measures by how much, and the drill's report says so.
    """

    def __init__(self) -> None:
        self._epoch = time.time()
        self._mono = time.monotonic()

    def now(self) -> float:
        return self._epoch + (time.monotonic() - self._mono)

    def wait_until(self, when: float, stop: threading.Event) -> bool:
        while True:
            remaining = when - self.now()
            if remaining <= 0:
                return not stop.is_set()
            if stop.wait(min(remaining, 0.5)):
                return False

    def step(self) -> float:
        """How far the wall clock has moved away from this clock since it was made (s)."""
        return time.time() - self.now()


@dataclass
class FaultRecord:
    """What happened to one fault of the drill (times are epoch seconds)."""

    id: str
    kind: str
    targets: list[str]
    at: float
    duration: float | None
    injected_at: float | None = None
    healed_at: float | None = None
    evidence: str = ""
    error: str | None = None
    undo: list[dict[str, object]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # FaultKind.outcome, per target


class FaultActions(Protocol):
    """What the timeline does at each moment; the engine binds these to real fault kinds."""

    def apply(self, record: FaultRecord) -> None: ...

    def heal(self, record: FaultRecord) -> None: ...


class FaultTimeline:
    """Runs the faults of one drill on their schedule."""

    def __init__(
        self,
        records: list[FaultRecord],
        actions: FaultActions,
        clock: Clock,
        *,
        on_error: Callable[[FaultRecord, BaseException], None] | None = None,
    ) -> None:
        self.records = records
        self.actions = actions
        self.clock = clock
        self.on_error = on_error
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # One lock per fault: a slow heal (a restart waiting for ready) must not hold up
        # the heal of an overlapping fault.
        self._heal_locks = {record.id: threading.Lock() for record in records}

    def start(self, t0: float) -> None:
        for record in self.records:
            thread = threading.Thread(
                target=self._run, args=(record, t0), name=f"fault-{record.id}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _run(self, record: FaultRecord, t0: float) -> None:
        if not self.clock.wait_until(t0 + record.at, self.stop):
            return
        try:
            self.actions.apply(record)
        except BaseException as exc:  # reported by the engine; the drill goes on healing
            record.error = f"{type(exc).__name__}: {exc}"
            if self.on_error:
                self.on_error(record, exc)
            return
        if record.duration is None:
            return  # healed at the end of the drill
        if self.clock.wait_until(t0 + record.at + record.duration, self.stop):
            self.heal(record)

    def heal(self, record: FaultRecord) -> None:
        """Heal one fault once (idempotent across the timeline and the final clean-up)."""
        with self._heal_locks[record.id]:
            if record.injected_at is None or record.healed_at is not None:
                return
            try:
                self.actions.heal(record)
            except BaseException as exc:
                record.error = f"heal failed: {type(exc).__name__}: {exc}"
                if self.on_error:
                    self.on_error(record, exc)
                return
            record.healed_at = self.clock.now()

    def finish(self, join_timeout: float = 120.0) -> None:
        """Stop scheduling, wait for applies in flight, heal everything still applied."""
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=join_timeout)
        # Newest first, in the reverse order of applying: two faults that damaged one file
        # each saved what they found, and only undoing the later one first leaves the file as
        # the earlier one found it.
        applied = [r for r in self.records if r.injected_at is not None]
        for record in sorted(applied, key=lambda r: r.injected_at or 0.0, reverse=True):
            self.heal(record)
