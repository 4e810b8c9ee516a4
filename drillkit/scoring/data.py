"""What a drill measures of the data path: acknowledged click events the store lost, the
recovery point and the time to recover, per ``data_loss`` fault and for the whole drill.

Inputs are what drillkit knows for itself: every event the load generator sent and whether
the stack acknowledged it (its own records), the events the store holds after the drill (read
back from it before the stack goes), and what the backup service says it did (its backups and
restores). Times are seconds from t=0. Definitions (``docs/report.md``):

* an event is **lost** when it was acknowledged and the store does not hold it after the
  drill;
* a fault's lost events are those acknowledged before its injection (and not already lost
  to an earlier fault) that the store lacked once it was back from the fault: what the event
  store held after its heal (and its restore, for a wipe) is read at the heal;
* **RPO** (recovery point): from the first lost event's acknowledgement to the injection: the
  span of acknowledged writes the fault took away; 0 when it took none;
* **writes back**: after the first event the stack refused, the first acknowledgement from
  which every event sent over a second was acknowledged (the injection itself when no event
  was refused): a lone refusal later on is not the fault's outage;
* **RTO**: from the injection until writes are back and, when the stack restored a backup
  for this fault, the restore finished: the store takes writes and holds what it will get
  back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "BackupMark",
    "DataCensus",
    "DataLossResult",
    "DataLossRun",
    "EventSent",
    "EventSummary",
    "RestoreMark",
    "data_loss_results",
    "event_summary",
    "stale_within",
    "writes_back",
]


@dataclass(frozen=True, slots=True)
class EventSent:
    """One click event the generator sent; times from t=0."""

    producer: str
    seq: int
    sent_at: float
    done_at: float
    acked: bool

    @property
    def key(self) -> tuple[str, int]:
        return (self.producer, self.seq)


@dataclass(frozen=True, slots=True)
class BackupMark:
    """A backup the backup service holds or held (the newest ``keep`` are listed)."""

    kind: str  # events | models
    created_at: float
    entries: int | None = None
    newest_event_at: float | None = None


@dataclass(frozen=True, slots=True)
class RestoreMark:
    """A restore the backup service ran."""

    kind: str
    started_at: float
    finished_at: float
    backup: str
    backup_created_at: float | None = None
    carried: int | None = None  # events written since the store came back, kept


@dataclass(frozen=True, slots=True)
class DataCensus:
    """What the stack holds and did, read before it went down; times from t=0."""

    stored: frozenset[tuple[str, int]]
    backups: tuple[BackupMark, ...] = ()
    restores: tuple[RestoreMark, ...] = ()
    backup_failures: int = 0
    readable: bool = True  # False: the store could not be read back; nothing is judged lost
    # When the feature updater's features were stale: (start, end), end None while it lasted,
    # and when it noticed each time.
    stale: tuple[tuple[float, float | None], ...] = ()
    stale_noticed: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class DataLossRun:
    target: str  # event-store | model-store
    mode: str
    injected_at: float
    until: float  # the end of the drill (a later fault on the same target ends it sooner)
    # What the event store held once back from this fault; None: not read (the census's
    # reading after the drill stands in).
    survivors: frozenset[tuple[str, int]] | None = None


@dataclass(frozen=True, slots=True)
class DataLossResult:
    target: str
    mode: str
    acked_before: int  # acknowledged events this fault could lose
    events_lost: int
    rpo_s: float | None  # None: the store could not be read back
    writes_failed: int
    writes_back_at: float | None
    restore_started_at: float | None
    restored_at: float | None
    restored_from: str | None
    backup_age_s: float | None  # injection minus the restored backup's creation
    rto_s: float | None  # None: never recovered in the drill
    last_backup_at: float | None  # the newest backup of the target's kind before the fault
    features_stale_s: float | None = None  # stale features from the injection to ``until``
    quality_before: float | None = None  # the quality probe's mean before the fault
    quality_during: float | None = None  # and from the injection to ``until``


@dataclass(frozen=True, slots=True)
class EventSummary:
    sent: int
    acked: int
    failed: int
    stored: int  # acknowledged events the store holds
    lost: int
    backups: tuple[BackupMark, ...]
    restores: tuple[RestoreMark, ...]
    backup_failures: int
    readable: bool
    stale: tuple[tuple[float, float | None], ...] = ()


def _lost(events: Iterable[EventSent], census: DataCensus) -> list[EventSent]:
    if not census.readable:
        return []
    return [e for e in events if e.acked and (e.producer, e.seq) not in census.stored]


def event_summary(events: Sequence[EventSent], census: DataCensus) -> EventSummary:
    acked = [e for e in events if e.acked]
    lost = _lost(acked, census)
    return EventSummary(
        sent=len(events),
        acked=len(acked),
        failed=len(events) - len(acked),
        stored=len(acked) - len(lost) if census.readable else 0,
        lost=len(lost),
        backups=census.backups,
        restores=census.restores,
        backup_failures=census.backup_failures,
        readable=census.readable,
        stale=census.stale,
    )


#: Writes are back once every event sent over this long after an acknowledgement was
#: acknowledged too: a lone refusal later on is not the fault's outage going on.
WRITES_SETTLE_S = 1.0


def data_loss_results(
    runs: Sequence[DataLossRun], events: Sequence[EventSent], census: DataCensus
) -> list[DataLossResult]:
    """The figures of each ``data_loss`` fault, in the order of ``runs``.

    An event is charged to the first event-store fault after its acknowledgement whose
    survivors (what the store held once back) lack it; without survivors (the store could not
    be read at the heal) the store as it was after the drill stands in. Each fault's window
    (for its writes and its restore) ends at the next fault on the same target.
    """
    order = sorted(range(len(runs)), key=lambda i: runs[i].injected_at)
    results: dict[int, DataLossResult] = {}
    gone: set[tuple[str, int]] = set()
    acked = sorted((e for e in events if e.acked), key=lambda e: e.done_at)
    for position, i in enumerate(order):
        run = runs[i]
        later = [runs[j].injected_at for j in order[position + 1 :] if runs[j].target == run.target]
        until = min([run.until, *later])
        if run.target != "event-store":
            results[i] = _model_store_result(run, until, census)
            continue
        held = run.survivors if run.survivors is not None else census.stored
        readable = run.survivors is not None or census.readable
        # Acknowledged by the store the fault hit: before the injection, and those in flight
        # when it came (answered in the milliseconds before the kill, received just after):
        # sent before the first write the fault refused. Anything sent later and acknowledged
        # was the store's after the fault.
        refused = next((e.sent_at for e in _during(run, until, events) if not e.acked), None)
        before = [
            e
            for e in acked
            if e.key not in gone
            and (e.done_at < run.injected_at or (refused is not None and e.sent_at < refused))
        ]
        lost = [e for e in before if e.key not in held] if readable else []
        gone.update(e.key for e in lost)
        results[i] = _event_store_result(run, until, before, lost, readable, events, census)
    return [results[i] for i in range(len(runs))]


def _restore_for(run: DataLossRun, until: float, census: DataCensus) -> RestoreMark | None:
    kind = "events" if run.target == "event-store" else "models"
    return next(
        (r for r in census.restores if r.kind == kind and run.injected_at <= r.started_at < until),
        None,
    )


def _last_backup(run: DataLossRun, census: DataCensus) -> float | None:
    kind = "events" if run.target == "event-store" else "models"
    return max(
        (
            b.created_at
            for b in census.backups
            if b.kind == kind and b.created_at <= run.injected_at
        ),
        default=None,
    )


def _model_store_result(run: DataLossRun, until: float, census: DataCensus) -> DataLossResult:
    injected = run.injected_at
    restore = _restore_for(run, until, census)
    restored_at = restore.finished_at if restore is not None else None
    return DataLossResult(
        target=run.target,
        mode=run.mode,
        acked_before=0,
        events_lost=0,
        rpo_s=0.0,
        writes_failed=0,
        writes_back_at=injected,
        restore_started_at=restore.started_at if restore is not None else None,
        restored_at=restored_at,
        restored_from=restore.backup if restore is not None else None,
        backup_age_s=_age(injected, restore),
        rto_s=None if restored_at is None else restored_at - injected,
        last_backup_at=_last_backup(run, census),
        features_stale_s=stale_within(census, injected, until),
    )


def _during(run: DataLossRun, until: float, events: Sequence[EventSent]) -> list[EventSent]:
    """The events sent in the fault's window, in send order."""
    window = (e for e in events if run.injected_at <= e.sent_at < until)
    return sorted(window, key=lambda e: e.sent_at)


def writes_back(during: Sequence[EventSent], injected: float) -> float | None:
    """When writes were back: the acknowledgement of the first event, after the first refused
    one, from which every event sent over :data:`WRITES_SETTLE_S` was acknowledged; the
    injection itself when none was refused; None when they never came back."""
    first_fail = next((k for k, e in enumerate(during) if not e.acked), None)
    if first_fail is None:
        return injected
    for k in range(first_fail + 1, len(during)):
        e = during[k]
        if not e.acked:
            continue
        if _acked_until(during, k, e.sent_at + WRITES_SETTLE_S):
            return e.done_at
    return None


def _acked_until(during: Sequence[EventSent], start: int, until: float) -> bool:
    """Whether every event of ``during`` (in send order) from ``start`` on, sent up to
    ``until``, was acknowledged; stops at the first one sent later."""
    for event in during[start:]:
        if event.sent_at > until:
            return True
        if not event.acked:
            return False
    return True


def _event_store_result(
    run: DataLossRun,
    until: float,
    before: list[EventSent],
    lost: list[EventSent],
    readable: bool,
    events: Sequence[EventSent],
    census: DataCensus,
) -> DataLossResult:
    injected = run.injected_at
    restore = _restore_for(run, until, census)
    restored_at = restore.finished_at if restore is not None else None
    rpo = max(0.0, injected - min(e.done_at for e in lost)) if lost else 0.0
    during = _during(run, until, events)
    back = writes_back(during, injected)
    if back is None:
        rto = None
    elif restored_at is not None:
        rto = max(back, restored_at) - injected
    else:
        rto = back - injected
    settled = back if back is not None else until
    return DataLossResult(
        target=run.target,
        mode=run.mode,
        acked_before=len(before),
        events_lost=len(lost),
        rpo_s=rpo if readable else None,
        writes_failed=sum(1 for e in during if not e.acked and e.sent_at < settled),
        writes_back_at=back,
        restore_started_at=restore.started_at if restore is not None else None,
        restored_at=restored_at,
        restored_from=restore.backup if restore is not None else None,
        backup_age_s=_age(injected, restore),
        rto_s=rto,
        last_backup_at=_last_backup(run, census),
        features_stale_s=stale_within(census, injected, until),
    )


def stale_within(census: DataCensus, start: float, end: float) -> float:
    """Seconds of ``[start, end)`` during which the features were stale."""
    total = 0.0
    for began, ended in census.stale:
        stop = end if ended is None else min(ended, end)
        total += max(0.0, stop - max(began, start))
    return total


def _age(injected: float, restore: RestoreMark | None) -> float | None:
    if restore is None or restore.backup_created_at is None:
        return None
    return injected - restore.backup_created_at
