"""Events lost, recovery point and time to recover, from hand-built events and a census."""

from __future__ import annotations

import pytest

from drillkit.scoring.data import (
    DataCensus,
    DataLossRun,
    EventSent,
    RestoreMark,
    data_loss_results,
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
    result = data_loss_results(
        [DataLossRun("event-store", "crash", 5.0, 20.0)], sent, DataCensus(stored)
    )[0]
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
    result = data_loss_results([DataLossRun("event-store", "wipe", 5.0, 20.0)], sent, census)[0]
    assert result.events_lost == 3
    assert result.rpo_s == pytest.approx(5.0 - 3.01)
    assert result.restored_from == "b1"
    assert result.backup_age_s == pytest.approx(2.5)
    # No event was refused: writes were back at once, the restore decides.
    assert result.rto_s == pytest.approx(1.5)


def test_an_acknowledgement_in_flight_at_the_kill_is_the_faults_loss() -> None:
    # Sent just before the kill, answered by the store in its last milliseconds, received
    # just after drillkit stamped the injection; then writes fail until the store is back.
    before = events([1.0, 2.0])
    in_flight = [EventSent("f", 0, 4.995, 5.004, True), EventSent("f", 1, 5.001, 5.006, True)]
    refused = [EventSent("q", 0, 5.1, 6.1, False)]
    back = [EventSent("q", 1, 6.2, 6.25, True), EventSent("q", 2, 7.0, 7.01, True)]
    sent = before + in_flight + refused + back
    stored = frozenset({("p", 0), ("p", 1), ("q", 1), ("q", 2)})  # the two in flight are gone
    census = DataCensus(stored)
    result = data_loss_results([DataLossRun("event-store", "wipe", 5.0, 20.0)], sent, census)[0]
    assert result.events_lost == 2
    assert result.acked_before == 4
    assert result.rpo_s == 0.0  # acknowledged at (or after) the fault: nothing before it lost
    assert event_summary(sent, census).lost == result.events_lost


def test_what_the_store_acknowledged_after_the_fault_is_not_the_faults_loss() -> None:
    # A crash: the survivors are read at the heal; the restarted store acknowledges a first
    # event just after (sent after the first refusal), before writes count as back. It is
    # not in the survivors, yet the fault did not lose it.
    sent = [*events([1.0, 2.0]), EventSent("q", 0, 5.1, 6.1, False)]
    sent += [EventSent("q", 1, 6.5, 6.51, True), EventSent("q", 2, 6.6, 6.7, False)]
    sent += [EventSent("r", i, 7.0 + i * 0.1, 7.0 + i * 0.1 + 0.01, True) for i in range(20)]
    survivors = frozenset({("p", 0), ("p", 1)})  # read at the heal, before ("q", 1)
    stored = frozenset((e.producer, e.seq) for e in sent if e.acked)
    run = DataLossRun("event-store", "crash", 5.0, 20.0, survivors=survivors)
    result = data_loss_results([run], sent, DataCensus(stored))[0]
    assert result.events_lost == 0 and result.acked_before == 2


def test_each_fault_is_charged_with_what_its_own_recovery_lacked() -> None:
    # 1 event/s from 0 s; a backup at 1.5 s holds events 0 and 1. A crash at 10 s loses
    # nothing (its survivors hold everything); a wipe at 20 s restores the old backup and loses
    # every event acknowledged from 2 s to 20 s: the wipe's, not the crash's.
    sent = events([float(t) for t in range(30)])
    everything = frozenset(e.key for e in sent)
    after_wipe = frozenset(e.key for e in sent if e.sent_at < 2 or e.sent_at >= 20)
    crash = DataLossRun("event-store", "crash", 10.0, 30.0, survivors=everything)
    wipe = DataLossRun("event-store", "wipe", 20.0, 30.0, survivors=after_wipe)
    census = DataCensus(after_wipe)
    first, second = data_loss_results([crash, wipe], sent, census)
    assert (first.events_lost, first.rpo_s) == (0, 0.0)
    assert second.events_lost == 18  # events 2..19
    assert second.rpo_s == pytest.approx(20.0 - 2.01)
    # An event lost to one fault is not lost again to the next.
    third = DataLossRun("event-store", "crash", 25.0, 30.0, survivors=after_wipe)
    *_, last = data_loss_results([crash, wipe, third], sent, census)
    assert last.events_lost == 0


def test_a_model_store_fault_does_not_cut_the_event_store_fault_short() -> None:
    sent = [*events([1.0, 2.0]), EventSent("q", 0, 10.2, 11.2, False)]
    sent += [EventSent("q", i, 10.0 + i * 0.5, 10.0 + i * 0.5 + 0.01, True) for i in range(3, 9)]
    restore = RestoreMark("events", 10.5, 10.6, "b", 0.5)
    census = DataCensus(frozenset(e.key for e in sent if e.acked), restores=(restore,))
    events_fault = DataLossRun("event-store", "wipe", 10.0, 30.0)
    models_fault = DataLossRun("model-store", "wipe", 10.0, 30.0)
    store, models = data_loss_results([events_fault, models_fault], sent, census)
    assert store.restored_from == "b" and store.rto_s is not None
    assert models.restored_from is None and models.rto_s is None


def test_a_lone_refusal_later_is_not_the_outage_going_on() -> None:
    refused = [EventSent("q", i, 10.0 + i * 0.1, 10.5, False) for i in range(5)]
    back = [EventSent("r", i, 11.0 + i * 0.1, 11.0 + i * 0.1 + 0.01, True) for i in range(140)]
    late = [EventSent("s", 0, 25.0, 26.0, False)]
    sent = sorted([*refused, *back, *late], key=lambda e: e.sent_at)
    census = DataCensus(frozenset(e.key for e in sent if e.acked))
    (result,) = data_loss_results([DataLossRun("event-store", "crash", 10.0, 30.0)], sent, census)
    assert result.writes_back_at == pytest.approx(11.01)
    assert result.rto_s == pytest.approx(1.01)
    assert result.writes_failed == 5


def test_never_recovered_and_an_unreadable_store_are_unknown_not_zero() -> None:
    sent = [*events([1.0]), EventSent("q", 0, 6.0, 6.5, False)]
    census = DataCensus(frozenset(), readable=False)
    result = data_loss_results([DataLossRun("event-store", "wipe", 5.0, 20.0)], sent, census)[0]
    assert result.rto_s is None
    assert result.rpo_s is None
    assert result.events_lost == 0
    summary = event_summary(sent, census)
    assert (summary.sent, summary.acked, summary.failed, summary.readable) == (2, 1, 1, False)


def test_the_model_store_is_back_when_its_restore_finished() -> None:
    census = DataCensus(frozenset(), restores=(RestoreMark("models", 10.2, 10.4, "m1", 1.0),))
    result = data_loss_results([DataLossRun("model-store", "wipe", 10.0, 25.0)], [], census)[0]
    assert result.rto_s == pytest.approx(0.4)
    assert result.backup_age_s == pytest.approx(9.0)
    lost = data_loss_results(
        [DataLossRun("model-store", "wipe", 10.0, 25.0)], [], DataCensus(frozenset())
    )[0]
    assert lost.rto_s is None


def test_summary_counts_every_acknowledged_event_the_store_does_not_hold() -> None:
    sent = events([1.0, 2.0, 3.0]) + events([1.5], acked=False, producer="x")
    summary = event_summary(sent, DataCensus(frozenset({("p", 0)})))
    assert (summary.sent, summary.acked, summary.stored, summary.lost) == (4, 3, 1, 2)


@pytest.mark.parametrize(("rpo_within", "passed"), [(3.0, True), (1.0, False)])
def test_data_beyond_its_recovery_point_fails_the_drill_whatever_the_score(
    rpo_within: float, passed: bool
) -> None:
    from drillkit.observe.records import Records, RequestRecord
    from drillkit.scoring.analyze import SLO, DrillInput, Expectation, FaultRun, analyze

    rows = [RequestRecord(1000.0 + i / 10, 5.0, 200) for i in range(300)]
    sent = events([1.0, 2.0, 3.0, 4.0])
    census = DataCensus(frozenset({("p", 0), ("p", 1)}))  # lost those at 3 and 4: RPO ~2 s
    fault = FaultRun(
        id="w",
        kind="data_loss",
        target="event-store",
        injected_at=5.0,
        healed_at=6.0,
        expect=Expectation(rpo_within=rpo_within, max_events_lost=5, rto_within=1.0),
        data=DataLossRun("event-store", "wipe", 5.0, 30.0),
    )
    analysis = analyze(
        DrillInput(
            records=Records.build(rows, t0=1000.0, verified_digests=None),
            quality=[],
            faults=[fault],
            events=[],
            slo=SLO(availability=0.0, p99_ms=1e6, quality=0.0, degraded_max=1.0),
            duration=30.0,
            target_rps=10.0,
            pass_score=0.0,
            generator_saturated=False,
            events_sent=sent,
            census=census,
        )
    )
    checks = {c.name: c for c in analysis.checks}
    assert checks["w.rpo_within"].actual == pytest.approx(5.0 - 3.01)
    assert checks["w.rpo_within"].passed is passed and checks["w.rpo_within"].critical
    assert checks["w.max_events_lost"].passed and checks["w.max_events_lost"].actual == 2
    assert analysis.passed is passed  # pass_score 0: only the critical check decides
    assert analysis.events is not None and analysis.events.lost == 2
