"""Events lost, recovery point and time to recover, from hand-built events and a census."""

from __future__ import annotations

import math

import pytest

from drillkit.scoring.data import (
    DataCensus,
    DataLossRun,
    EventSent,
    RestoreMark,
    data_loss_result,
    event_summary,
)


def events(times: list[float], *, acked: bool = True, producer: str = "p") -> list[EventSent]:
    return [EventSent(producer, i, t, t + 0.01, acked) for i, t in enumerate(times)]


def test_nothing_lost_means_rpo_zero_and_rto_until_writes_are_back() -> None:
    before = events([1.0, 2.0, 3.0])
    refused = [EventSent("q", 0, 5.1, 6.1, False), EventSent("q", 1, 5.5, 6.5, False)]
    back = [EventSent("q", 2, 6.2, 6.25, True), EventSent("q", 3, 7.0, 7.01, True)]
    sent = before + refused + back
    stored = frozenset((e.producer, e.seq) for e in sent if e.acked)
    result = data_loss_result(
        DataLossRun("event-store", "crash", 5.0, 20.0), -math.inf, sent, DataCensus(stored)
    )
    assert result.events_lost == 0
    assert result.rpo_s == 0.0
    assert result.acked_before == 3
    assert result.writes_failed == 2
    assert result.writes_back_at == pytest.approx(6.25)
    assert result.rto_s == pytest.approx(1.25)


def test_lost_events_set_the_recovery_point_and_a_restore_the_rto() -> None:
    sent = events([1.0, 2.0, 3.0, 4.0, 4.5])
    # The store kept the first two (the backup held them), lost the last three.
    stored = frozenset({("p", 0), ("p", 1)})
    restore = RestoreMark("events", 6.0, 6.5, "b1", backup_created_at=2.5)
    census = DataCensus(stored, restores=(restore,))
    result = data_loss_result(
        DataLossRun("event-store", "wipe", 5.0, 20.0), -math.inf, sent, census
    )
    assert result.events_lost == 3
    assert result.rpo_s == pytest.approx(5.0 - 3.01)
    assert result.restored_from == "b1"
    assert result.backup_age_s == pytest.approx(2.5)
    # No event was refused: writes were back at once, the restore decides.
    assert result.rto_s == pytest.approx(1.5)


def test_a_fault_only_loses_what_was_acknowledged_since_the_previous_one() -> None:
    sent = events([1.0, 2.0, 6.0, 7.0])
    stored = frozenset({("p", 2)})
    result = data_loss_result(
        DataLossRun("event-store", "crash", 8.0, 20.0), 5.0, sent, DataCensus(stored)
    )
    assert (result.acked_before, result.events_lost) == (2, 1)
    assert result.rpo_s == pytest.approx(8.0 - 7.01)


def test_never_recovered_and_an_unreadable_store_are_unknown_not_zero() -> None:
    sent = [*events([1.0]), EventSent("q", 0, 6.0, 6.5, False)]
    census = DataCensus(frozenset(), readable=False)
    result = data_loss_result(
        DataLossRun("event-store", "wipe", 5.0, 20.0), -math.inf, sent, census
    )
    assert result.rto_s is None
    assert result.rpo_s is None
    assert result.events_lost == 0
    summary = event_summary(sent, census)
    assert (summary.sent, summary.acked, summary.failed, summary.readable) == (2, 1, 1, False)


def test_the_model_store_is_back_when_its_restore_finished() -> None:
    census = DataCensus(frozenset(), restores=(RestoreMark("models", 10.2, 10.4, "m1", 1.0),))
    result = data_loss_result(DataLossRun("model-store", "wipe", 10.0, 25.0), -math.inf, [], census)
    assert result.rto_s == pytest.approx(0.4)
    assert result.backup_age_s == pytest.approx(9.0)
    lost = data_loss_result(
        DataLossRun("model-store", "wipe", 10.0, 25.0), -math.inf, [], DataCensus(frozenset())
    )
    assert lost.rto_s is None


def test_summary_counts_every_acknowledged_event_the_store_does_not_hold() -> None:
    sent = events([1.0, 2.0, 3.0]) + events([1.5], acked=False, producer="x")
    summary = event_summary(sent, DataCensus(frozenset({("p", 0)})))
    assert (summary.sent, summary.acked, summary.stored, summary.lost) == (4, 3, 1, 2)
