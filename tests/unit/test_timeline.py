"""The fault timeline against a fake clock: schedule, overlap, heal-once, failures."""

from __future__ import annotations

import threading
import time

import pytest

from drillkit.timeline import FaultRecord, FaultTimeline, WallClock


class FakeClock:
    """Time moves only when a thread waits, straight to what it waits for."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.lock = threading.Lock()
        self.waits: list[float] = []

    def now(self) -> float:
        with self.lock:
            return self.t

    def wait_until(self, when: float, stop: threading.Event) -> bool:
        if stop.is_set():
            return False
        with self.lock:
            self.waits.append(when)
            self.t = max(self.t, when)
        return True


class Recorder:
    def __init__(self, clock: FakeClock, fail: set[str] | None = None) -> None:
        self.clock = clock
        self.fail = fail or set()
        self.log: list[tuple[str, str, float]] = []
        self.lock = threading.Lock()

    def apply(self, record: FaultRecord) -> None:
        if record.id in self.fail:
            raise RuntimeError("target refused")
        record.injected_at = self.clock.now()
        with self.lock:
            self.log.append(("apply", record.id, record.injected_at))

    def heal(self, record: FaultRecord) -> None:
        with self.lock:
            self.log.append(("heal", record.id, self.clock.now()))


def fault(fid: str, at: float, duration: float | None) -> FaultRecord:
    return FaultRecord(id=fid, kind="kill_node", targets=["replica-1"], at=at, duration=duration)


def run(records: list[FaultRecord], fail: set[str] | None = None) -> Recorder:
    clock = FakeClock()
    actions = Recorder(clock, fail)
    timeline = FaultTimeline(records, actions, clock)
    timeline.start(t0=1000.0)
    timeline.finish()
    return actions


def test_faults_are_applied_at_their_offsets_and_healed_after_their_duration() -> None:
    records = [fault("a", 5, 10)]
    log = run(records).log
    assert [(op, fid) for op, fid, _ in log] == [("apply", "a"), ("heal", "a")]
    assert records[0].injected_at == pytest.approx(1005.0)
    assert records[0].healed_at == pytest.approx(1015.0)


def test_overlapping_faults_each_heal_once() -> None:
    records = [fault("a", 5, 20), fault("b", 10, 5), fault("c", 12, None)]
    log = run(records).log
    assert sorted(fid for op, fid, _ in log if op == "apply") == ["a", "b", "c"]
    heals = [fid for op, fid, _ in log if op == "heal"]
    assert sorted(heals) == ["a", "b", "c"]  # c has no duration: healed by finish()
    assert all(r.healed_at is not None for r in records)


def test_a_fault_that_failed_to_apply_is_reported_and_never_healed() -> None:
    records = [fault("a", 1, 2), fault("bad", 2, 2)]
    log = run(records, fail={"bad"}).log
    assert ("heal", "bad") not in [(op, fid) for op, fid, _ in log]
    bad = records[1]
    assert bad.error is not None and "target refused" in bad.error
    assert bad.injected_at is None and bad.healed_at is None
    assert records[0].healed_at is not None


def test_stopping_before_a_fault_is_due_applies_nothing() -> None:
    clock = FakeClock()
    actions = Recorder(clock)
    timeline = FaultTimeline([fault("late", 50, 5)], actions, clock)
    timeline.stop.set()  # interrupted before t0 + 50
    timeline.start(t0=1000.0)
    timeline.finish()
    assert actions.log == []


def test_heal_is_idempotent() -> None:
    clock = FakeClock()
    actions = Recorder(clock)
    record = fault("a", 0, None)
    timeline = FaultTimeline([record], actions, clock)
    timeline.start(t0=1000.0)
    timeline.finish()
    timeline.heal(record)
    timeline.finish()
    assert [op for op, _, _ in actions.log].count("heal") == 1


def test_the_wall_clock_schedules_on_monotonic_time_and_measures_a_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = WallClock()
    start = clock.now()
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600.0)  # NTP jumps an hour ahead
    assert clock.now() - start < 1.0  # the schedule did not move
    stop = threading.Event()
    began = time.monotonic()
    assert clock.wait_until(clock.now() + 0.05, stop)  # a 50 ms wait is still 50 ms
    assert time.monotonic() - began < 1.0
    assert clock.step() == pytest.approx(3600.0, abs=0.5)


def test_finish_heals_what_is_still_applied_newest_first() -> None:
    # Two open-ended corruptions of one file: undoing the older first would restore a backup
    # and then the newer fault's backup, which holds the older damage.
    records = [fault("first", 1, None), fault("second", 3, None), fault("third", 2, None)]
    log = run(records).log
    assert [fid for op, fid, _ in log if op == "heal"] == ["second", "third", "first"]
