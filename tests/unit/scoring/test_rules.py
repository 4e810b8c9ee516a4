"""Each judging rule at its boundary: the cases mutation testing showed unpinned.

Every test here names the rule it pins; each fails when that rule's comparison, constant or
result is changed (``python tests/mutation/check.py`` is how that was found and is checked).
"""

from __future__ import annotations

import math

import pytest

from drillkit.observe.records import NO_RESPONSE, Records, RequestRecord, is_failed
from drillkit.observe.series import QualityTrack, WindowStats
from drillkit.scoring import (
    SLO,
    Analysis,
    Check,
    DetectionEvent,
    DrillInput,
    Expectation,
    FaultRun,
    QualitySample,
    analyze,
)
from drillkit.scoring.analyze import (
    _at_least,
    _availability,
    _clip,
    _fault_checks,
    _holds,
    _seconds,
    detect,
    recover,
    restore,
    score_of,
)
from tests.unit.scoring.test_analyze import FULL_EXPECT, drill, kill, records

SLO_ = SLO(availability=0.99, p99_ms=250.0, quality=0.9, degraded_max=0.05)


def stats(
    *, requests: int = 100, availability: float = 1.0, p99: float = 10.0, degraded: float = 0.0
) -> WindowStats:
    failed = round(requests * (1 - availability))
    return WindowStats(
        requests, failed, round(requests * degraded), 0, availability, degraded, p99, p99, p99
    )


# -- a failed request ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "failed"),
    [(NO_RESPONSE, True), (200, False), (404, False), (499, False), (500, True), (503, True)],
)
def test_a_failed_request_is_no_response_or_a_5xx(status: int, failed: bool) -> None:
    assert is_failed(status) is failed
    column = Records.build([RequestRecord(1.0, 5.0, status)], t0=0.0, verified_digests=None)
    assert bool(column.failed[0]) is failed


# -- when the SLOs hold in a window -------------------------------------------------------------
@pytest.mark.parametrize(
    ("window", "quality", "holds"),
    [
        pytest.param(stats(), None, True, id="healthy"),
        pytest.param(stats(requests=1), None, True, id="one-request-is-enough"),
        pytest.param(stats(requests=0), None, False, id="silence-is-not-health"),
        pytest.param(stats(availability=0.99), None, True, id="availability-at-the-slo"),
        pytest.param(stats(availability=0.98), None, False, id="availability-below"),
        pytest.param(stats(p99=250.0), None, True, id="p99-at-the-slo"),
        pytest.param(stats(p99=250.1), None, False, id="p99-above"),
        pytest.param(stats(degraded=0.05), None, True, id="degraded-at-the-slo"),
        pytest.param(stats(degraded=0.06), None, False, id="degraded-above"),
        pytest.param(stats(), 0.9, True, id="quality-at-the-slo"),
        pytest.param(stats(), 0.89, False, id="quality-below"),
    ],
)
def test_the_slos_hold_at_their_bounds_and_break_past_them(
    window: WindowStats, quality: float | None, holds: bool
) -> None:
    assert _holds(window, quality, SLO_) is holds


def _steady(until: float, *, failing_before: float) -> Records:
    rows = [
        RequestRecord(i / 100, 2000.0, 0, "timeout")
        if i / 100 < failing_before
        else RequestRecord(i / 100, 10.0, 200)
        for i in range(0, int(until * 100) + 500)  # requests go on past the drill's end
    ]
    return Records.build(rows, t0=0.0, verified_digests=None)


def test_recovery_needs_all_three_windows_to_end_by_the_drills_end() -> None:
    # Failing until 57.05 s of a 60 s drill: the first clean 3 s run would start at 57.1 and
    # end at 60.1, past the end. Not recovered, though the requests after 60 s are clean.
    records = _steady(60.0, failing_before=57.05)
    found = recover(records, QualityTrack([]), injected_at=20.0, duration=60.0, slo=SLO_)
    assert found is None
    # One step earlier it fits exactly: windows [57, 58), [58, 59), [59, 60).
    records = _steady(60.0, failing_before=57.0)
    found = recover(records, QualityTrack([]), injected_at=20.0, duration=60.0, slo=SLO_)
    assert found == 57.0


def test_recovery_starts_on_the_first_step_after_the_injection() -> None:
    records = _steady(60.0, failing_before=0.0)
    track = QualityTrack([QualitySample(t / 10, 1.0) for t in range(600)])
    assert recover(records, track, injected_at=20.0, duration=60.0, slo=SLO_) == 20.0
    # Quality 0 at 21.4, 21.5 and 21.6 s: a window holding two or three of those samples is
    # below the SLO (a mean of 0.8 or 0.7); [21.6, 22.6) holds one, a mean of exactly 0.9,
    # which meets it. So the first run of three windows that hold starts at 21.6.
    dip = {214, 215, 216}
    low = QualityTrack([QualitySample(t / 10, 0.0 if t in dip else 1.0) for t in range(600)])
    assert recover(records, low, injected_at=20.0, duration=60.0, slo=SLO_) == 21.6


# -- detection and restoration --------------------------------------------------------------------
def _fault(target: str = "replica-1", injected: float | None = 20.0) -> FaultRun:
    return FaultRun("f-1", "kill_node", target, injected, 35.0)


@pytest.mark.parametrize(
    "what", ["sanity rejection v3", "integrity failure v2", "refused model v4: digest"]
)
def test_any_replica_refusing_a_model_detects_a_store_fault(what: str) -> None:
    event = DetectionEvent(21.0, "replica-2", "replica-2", what)
    assert detect(_fault(target="model-store"), [event]) == event
    # The same words about another replica do not concern a fault on replica-1.
    assert detect(_fault(), [event]) is None


def test_an_unrelated_sign_does_not_detect_a_store_fault() -> None:
    event = DetectionEvent(21.0, "gateway", "replica-2", "state up->ejected")
    assert detect(_fault(target="model-store"), [event]) is None


def test_a_target_taken_out_at_the_injection_instant_counts() -> None:
    events = [
        DetectionEvent(19.0, "gateway", "replica-3", "state up->ejected"),  # before, another
        DetectionEvent(20.0, "gateway", "replica-1", "state up->ejected"),  # at injection
        DetectionEvent(20.5, "gateway", "replica-2", "state up->ejected"),  # another target
        DetectionEvent(30.0, "gateway", "replica-1", "state ejected->up"),
    ]
    assert restore(_fault(), events) == 30.0
    assert restore(_fault(injected=None), events) is None


def test_a_target_back_in_before_the_injection_does_not_count() -> None:
    events = [
        DetectionEvent(10.0, "gateway", "replica-1", "state up->ejected"),
        DetectionEvent(19.9, "gateway", "replica-1", "state ejected->up"),
    ]
    assert restore(_fault(), events) is None


# -- checks ---------------------------------------------------------------------------------------
def test_at_least_passes_at_its_target_with_full_credit() -> None:
    at = _at_least("q", "baseline", 0.9, 0.9, weight=1.0, detail="why")
    assert at == Check("q", "baseline", ">=", 0.9, 0.9, True, 1.0, False, 1.0, "why")
    below = _at_least("q", "baseline", 0.9, 0.89, weight=1.0)
    assert below == Check("q", "baseline", ">=", 0.9, 0.89, False, 1.0, False, 0.0, "")


def test_a_fault_never_applied_is_one_critical_failed_check() -> None:
    run = FaultRun("f-1", "kill_node", "replica-1", None, None, expect=Expectation(1.0))
    (check,) = _fault_checks(run, None, None)  # type: ignore[arg-type]  # never read: not applied
    assert check == Check(
        "f-1.injected", "fault:f-1", "==", 1.0, 0.0, False, 1.0, True, 0.0,
        "the fault was never applied",
    )  # fmt: skip


# -- time -----------------------------------------------------------------------------------------
def test_seconds_are_rounded_to_the_microsecond_and_never_negative_zero() -> None:
    assert _seconds(20.3 - 20.0) == 0.3
    assert _seconds(1.23456789) == 1.234568
    zero = _seconds(-1e-9)
    assert zero == 0.0 and math.copysign(1.0, zero) == 1.0


def test_clip_keeps_times_inside_the_drill() -> None:
    assert _clip(0.5, 10.0) == 0.5
    assert _clip(-1.0, 10.0) == 0.0
    assert _clip(11.0, 10.0) == 10.0


# -- every check of a drill, as a person would work it out --------------------------------------
def _table(analysis: Analysis) -> list[tuple[object, ...]]:
    return [
        (c.name, c.phase, c.op, c.target, c.actual, c.passed, c.weight, c.critical, c.credit,
         c.detail)
        for c in analysis.checks
    ]  # fmt: skip


def test_the_reference_drill_judged_check_by_check() -> None:
    # 100 req/s for 60 s; 200 failures in [20, 22); kill-1 from 20 s to 35 s, ejected at 20.3;
    # quality 0.95 throughout. Baseline [0, 20): 2,000 requests; fault [20, 35): 1,500;
    # after [35, 60): 2,500. Weights: 8 SLO checks x 1, 4 expectations x 2, 3 drill checks x 1
    # = 19; credit 8 + 3 x 2 + 3 = 17 (max_failed_requests 0 failed): 100 x 17 / 19.
    quality = [QualitySample(t / 2, 0.95) for t in range(120)]
    analysis = drill(faults=[kill(**FULL_EXPECT)], quality=quality)
    assert _table(analysis) == [
        ("baseline.availability", "baseline", ">=", 0.999, 1.0, True, 1.0, False, 1.0, ""),
        ("baseline.p99_ms", "baseline", "<=", 250.0, 10.0, True, 1.0, False, 1.0, ""),
        ("baseline.degraded", "baseline", "<=", 0.05, 0.0, True, 1.0, False, 1.0,
         "0 of 2000 responses"),
        ("baseline.quality", "baseline", ">=", 0.9, 0.95, True, 1.0, False, 1.0, ""),
        ("after.availability", "after", ">=", 0.999, 1.0, True, 1.0, False, 1.0, ""),
        ("after.p99_ms", "after", "<=", 250.0, 10.0, True, 1.0, False, 1.0, ""),
        ("after.degraded", "after", "<=", 0.05, 0.0, True, 1.0, False, 1.0,
         "0 of 2500 responses"),
        ("after.quality", "after", ">=", 0.9, pytest.approx(0.95), True, 1.0, False, 1.0, ""),
        ("kill-1.detect_within", "fault:kill-1", "<=", 1.0, 0.3, True, 2.0, False, 1.0,
         "gateway: state up->ejected"),
        ("kill-1.recover_within", "fault:kill-1", "<=", 5.0, 2.0, True, 2.0, False, 1.0, ""),
        ("kill-1.max_failed_requests", "fault:kill-1", "<=", 0.0, 200.0, False, 2.0, False, 0.0,
         "200 of 1500 requests"),
        ("kill-1.max_wrong_model_responses", "fault:kill-1", "<=", 0.0, 0.0, True, 2.0, False,
         1.0, ""),
        ("kill-1.healed", "fault:kill-1", "==", 1.0, 1.0, True, 1.0, True, 1.0, ""),
        ("wrong_model_responses", "drill", "<=", 0.0, 0.0, True, 1.0, True, 1.0,
         "0 of 6000 responses"),
        ("load.generator", "drill", "==", 1.0, 1.0, True, 1.0, False, 1.0,
         "achieved 100.0 of 100 rps"),
    ]  # fmt: skip
    assert analysis.score == pytest.approx(100 * 17 / 19) and analysis.passed
    assert (analysis.achieved_rps, analysis.requests) == (100.0, 6000)


def test_a_fault_never_detected_recovered_or_healed_judged_check_by_check() -> None:
    # Every request from 20 s on fails and the fault is never healed: its phase runs to 60 s
    # (4,000 requests, all failed); no after phase. Weights 3 + 8 + 3 = 14, credit 3 + 2 + 2.
    analysis = drill(
        records(failed=((20.0, 60.0),)), faults=[kill(healed_at=None, **FULL_EXPECT)], events=()
    )
    assert _table(analysis)[3:] == [
        ("kill-1.detect_within", "fault:kill-1", "<=", 1.0, None, False, 2.0, False, 0.0,
         "never detected"),
        ("kill-1.recover_within", "fault:kill-1", "<=", 5.0, None, False, 2.0, False, 0.0,
         "never recovered"),
        ("kill-1.max_failed_requests", "fault:kill-1", "<=", 0.0, 4000.0, False, 2.0, False, 0.0,
         "4000 of 4000 requests"),
        ("kill-1.max_wrong_model_responses", "fault:kill-1", "<=", 0.0, 0.0, True, 2.0, False,
         1.0, ""),
        ("kill-1.healed", "fault:kill-1", "==", 1.0, 0.0, False, 1.0, True, 0.0,
         "the fault was never undone"),
        ("wrong_model_responses", "drill", "<=", 0.0, 0.0, True, 1.0, True, 1.0,
         "0 of 6000 responses"),
        ("load.generator", "drill", "==", 1.0, 1.0, True, 1.0, False, 1.0,
         "achieved 100.0 of 100 rps"),
    ]  # fmt: skip
    assert analysis.score == 50.0 and not analysis.passed
    (fault,) = analysis.faults
    assert (fault.healed_at, fault.detected_at, fault.recovered_at) == (None, None, None)
    assert (fault.requests, fault.failed_requests, fault.slo_impact) == (4000, 4000, True)


def test_a_saturated_generator_says_so_in_its_check() -> None:
    analysis = drill(records(failed=()), saturated=True)
    (load,) = [c for c in analysis.checks if c.name == "load.generator"]
    assert (load.actual, load.passed, load.critical, load.detail) == (
        0.0, False, False, "achieved 100.0 of 100 rps, generator saturated"
    )  # fmt: skip


def test_a_fault_whose_phase_holds_no_request_fails_no_share() -> None:
    # Silent from 20 s to 35 s: no request, so no failure and no share of failures.
    analysis = drill(
        records(failed=(), silent=((20.0, 35.0),)), faults=[kill(max_failed_requests=0.5)]
    )
    (fault,) = analysis.faults
    assert (fault.requests, fault.failed_requests) == (0, 0)
    (check,) = [c for c in analysis.checks if c.name == "kill-1.max_failed_requests"]
    assert (check.actual, check.passed, check.detail) == (0.0, True, "0 of 0 requests")
    phase = next(p for p in analysis.phases if p.name == "fault:kill-1")
    assert (phase.rps, phase.p99_ms, phase.availability) == (0.0, 0.0, 1.0)


def test_a_fault_never_applied_has_no_figures() -> None:
    analysis = drill(faults=[kill(injected_at=None, healed_at=None)])
    (fault,) = analysis.faults
    assert (fault.requests, fault.failed_requests, fault.degraded_responses) == (0, 0, 0)
    assert (fault.wrong_model_responses, fault.p99_ms, fault.slo_impact) == (0, 0.0, None)


def test_a_healed_at_is_reported_as_given() -> None:
    (fault,) = drill(faults=[kill(healed_at=35.0)]).faults
    assert fault.healed_at == 35.0


def test_a_drill_with_no_check_weight_scores_full() -> None:
    assert score_of([]) == 100.0
    half = Check("x", "drill", "<=", 0.0, 1.0, False, 0.5, False, 0.0)
    assert score_of([half]) == 0.0


def test_phase_rate_is_requests_over_its_length() -> None:
    analysis = drill(records(failed=()), faults=[kill(injected_at=20.0, healed_at=20.5)])
    phase = next(p for p in analysis.phases if p.name == "fault:kill-1")
    assert (phase.start, phase.end, phase.requests, phase.rps) == (20.0, 20.5, 50, 100.0)
    assert len(analysis.series) == 600  # 100 ms windows over 60 s


def test_availability_at_its_target_passes_with_full_credit() -> None:
    check = _availability("a", "baseline", 0.999, 0.999, 1.0)
    assert check == Check("a", "baseline", ">=", 0.999, 0.999, True, 1.0, False, 1.0)


def test_without_recover_within_the_fault_must_still_recover() -> None:
    # The `recovered` check: judged when no recover_within is given, not critical.
    never = drill(records(failed=((20.0, 60.0),)), faults=[kill()], events=())
    (check,) = [c for c in never.checks if c.name == "kill-1.recovered"]
    assert (check.op, check.actual, check.passed, check.critical, check.detail) == (
        "==", 0.0, False, False, "never recovered"
    )  # fmt: skip
    recovered = drill(faults=[kill()])
    (check,) = [c for c in recovered.checks if c.name == "kill-1.recovered"]
    assert (check.actual, check.passed, check.critical, check.detail) == (1.0, True, False, "")


def test_a_faults_degraded_and_wrong_model_answers_are_its_own() -> None:
    recs = records(failed=(), degraded=((21.0, 22.0),), wrong=((25.0, 25.5),))
    (fault,) = drill(recs, faults=[kill()]).faults
    assert (fault.degraded_responses, fault.wrong_model_responses) == (100, 50)


def test_a_zero_length_fault_phase_has_no_rate() -> None:
    analysis = drill(records(failed=()), faults=[kill(injected_at=20.0, healed_at=20.0)])
    phase = next(p for p in analysis.phases if p.name == "fault:kill-1")
    assert (phase.start, phase.end, phase.requests, phase.rps) == (20.0, 20.0, 0, 0.0)


def test_a_drill_shorter_than_a_second_reports_its_rate() -> None:
    rows = [RequestRecord(i / 100, 5.0, 200) for i in range(50)]
    analysis = analyze(
        DrillInput(
            records=Records.build(rows, t0=0.0, verified_digests=None), quality=[], faults=[],
            events=[], slo=SLO_, duration=0.5, target_rps=100.0, pass_score=80.0,
            generator_saturated=False,
        )
    )  # fmt: skip
    assert (analysis.requests, analysis.achieved_rps) == (50, 100.0)


def test_recovery_with_exactly_one_candidate_start() -> None:
    # Injected 3 s before the end: the only run of three windows starts at the injection.
    records = _steady(60.0, failing_before=0.0)
    assert recover(records, QualityTrack([]), injected_at=57.0, duration=60.0, slo=SLO_) == 57.0
    assert recover(records, QualityTrack([]), injected_at=57.1, duration=60.0, slo=SLO_) is None
