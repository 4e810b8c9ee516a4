"""What a drill measures of the data path: acknowledged click events the store lost, the
recovery point and the time to recover, per ``data_loss`` fault and for the whole drill.

Inputs are what drillkit knows for itself: every event the load generator sent and whether
the stack acknowledged it (its own records), the events the store holds after the drill (read
back from it before the stack goes), and what the backup service says it did (its backups and
restores). Times are seconds from t=0. Definitions (``docs/report.md``):

* an event is **lost** when it was acknowledged and the store does not hold it after the
  drill;
* a fault's lost events are those acknowledged from the previous ``data_loss`` fault's
  injection (or the start) to this one's; later ones count for the next fault;
* **RPO** (recovery point): from the first lost event's acknowledgement to the injection: the
  span of acknowledged writes the fault took away; 0 when it took none;
* **writes back**: the first acknowledgement of an event sent after the last one the stack
  failed to acknowledge, from the injection to the next fault (the injection itself when no
  event failed);
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
    "data_loss_result",
    "event_summary",
    "stale_within",
]


@dataclass(frozen=True, slots=True)
class EventSent:
    """One click event the generator sent; times from t=0."""

    producer: str
    seq: int
    sent_at: float
    done_at: float
    acked: bool


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
    until: float  # the next data_loss fault's injection, or the end of the drill


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


def data_loss_result(
    run: DataLossRun, previous: float, events: Sequence[EventSent], census: DataCensus
) -> DataLossResult:
    """The figures of one ``data_loss`` fault; ``previous``: the previous such fault's
    injection (``-inf`` for the first)."""
    kind = "events" if run.target == "event-store" else "models"
    injected = run.injected_at
    last_backup = max(
        (b.created_at for b in census.backups if b.kind == kind and b.created_at <= injected),
        default=None,
    )
    restore = next(
        (r for r in census.restores if r.kind == kind and injected <= r.started_at < run.until),
        None,
    )
    restored_at = restore.finished_at if restore is not None else None
    if run.target != "event-store":
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
            last_backup_at=last_backup,
            features_stale_s=stale_within(census, injected, run.until),
        )
    before = [e for e in events if e.acked and previous <= e.done_at < injected]
    lost = _lost(before, census)
    rpo = injected - min(e.done_at for e in lost) if lost else 0.0
    during = sorted(
        (e for e in events if injected <= e.sent_at < run.until), key=lambda e: e.sent_at
    )
    failed = [e for e in during if not e.acked]
    if failed:
        last_fail = failed[-1].sent_at
        back = next((e.done_at for e in during if e.acked and e.sent_at > last_fail), None)
    else:
        back = injected
    if back is None:
        rto = None
    elif restore is not None and restored_at is not None:
        rto = max(back, restored_at) - injected
    else:
        rto = back - injected
    return DataLossResult(
        target=run.target,
        mode=run.mode,
        acked_before=len(before),
        events_lost=len(lost),
        rpo_s=rpo if census.readable else None,
        writes_failed=len(failed),
        writes_back_at=back,
        restore_started_at=restore.started_at if restore is not None else None,
        restored_at=restored_at,
        restored_from=restore.backup if restore is not None else None,
        backup_age_s=_age(injected, restore),
        rto_s=rto,
        last_backup_at=last_backup,
        features_stale_s=stale_within(census, injected, run.until),
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
