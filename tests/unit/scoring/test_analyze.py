"""Scoring on hand-built drills whose figures can be worked out on paper.

The reference drill: 100 requests/s (one every 10 ms, 10 ms each) for 60 s; every request sent
in [20, 22) fails (2 s timeouts). ``kill-1`` is injected at 20 s, the gateway ejects the replica
at 20.3 s, and the fault is healed at 35 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from drillkit.observe.records import Records, RequestRecord
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
from drillkit.scoring.analyze import detect

GOOD = "sha256:good"
SLO_DEFAULT = SLO(availability=0.999, p99_ms=250.0, quality=0.9, degraded_max=0.05)
Span = tuple[float, float]


def inside(t: float, spans: Sequence[Span]) -> bool:
    return any(a <= t < b for a, b in spans)


def records(
    *,
    rps: int = 100,
    duration: float = 60.0,
    failed: Sequence[Span] = ((20.0, 22.0),),
    slow: Sequence[Span] = (),
    degraded: Sequence[Span] = (),
    wrong: Sequence[Span] = (),
    silent: Sequence[Span] = (),
) -> Records:
    """Evenly spaced requests; each span gives its requests one property."""
    rows = []
    for i in range(-5 * rps, int(duration * rps) + 5 * rps):  # warmup and stragglers too
        t = i / rps
        if inside(t, silent):
            continue
        if inside(t, failed):
            rows.append(RequestRecord(t, 2000.0, 0, "timeout"))
        elif inside(t, degraded):
            rows.append(RequestRecord(t, 5.0, 200, degraded=True, model_digest=""))
        else:
            latency = 300.0 if inside(t, slow) else 10.0
            digest = "sha256:bad" if inside(t, wrong) else GOOD
            rows.append(RequestRecord(t, latency, 200, model_digest=digest))
    return Records.build(rows, t0=0.0, verified_digests=[GOOD])


def kill(
    id: str = "kill-1",
    *,
    target: str = "replica-1",
    injected_at: float | None = 20.0,
    healed_at: float | None = 35.0,
    **expect: float | int | None,
) -> FaultRun:
    return FaultRun(
        id=id,
        kind="kill_node",
        target=target,
        injected_at=injected_at,
        healed_at=healed_at,
        evidence="SIGKILL pid 4242",
        expect=Expectation(**expect),  # type: ignore[arg-type]
    )


EJECTED = DetectionEvent(20.3, "gateway", "replica-1", "state up->ejected")


def drill(
    recs: Records | None = None,
    *,
    faults: Sequence[FaultRun] = (),
    events: Sequence[DetectionEvent] = (EJECTED,),
    quality: Sequence[QualitySample] = (),
    pass_score: float = 80.0,
    saturated: bool = False,
) -> Analysis:
    return analyze(
        DrillInput(
            records=records() if recs is None else recs,
            quality=list(quality),
            faults=list(faults),
            events=list(events),
            slo=SLO_DEFAULT,
            duration=60.0,
            target_rps=100.0,
            pass_score=pass_score,
            generator_saturated=saturated,
        )
    )


def by_name(analysis: Analysis) -> dict[str, Check]:
    return {c.name: c for c in analysis.checks}


FULL_EXPECT: dict[str, Any] = {
    "detect_within": 1.0,
    "recover_within": 5.0,
    "max_failed_requests": 0,
    "max_wrong_model_responses": 0,
}


def test_reference_drill_by_hand() -> None:
    result = drill(faults=[kill(**FULL_EXPECT)])

    (fault,) = result.faults
    assert fault.detected_at == 20.3
    assert fault.ttd_s == 0.3
    assert fault.detected_by == "gateway: state up->ejected"
    # 21.9 would include ten failures in [21.9, 22.9); from 22.0 three clean seconds follow.
    assert fault.recovered_at == 22.0
    assert fault.rto_s == 2.0
    assert (fault.requests, fault.failed_requests, fault.wrong_model_responses) == (1500, 200, 0)
    assert fault.p99_ms == 2000.0
    assert fault.evidence == "SIGKILL pid 4242"

    phases = {p.name: p for p in result.phases}
    assert list(phases) == ["baseline", "fault:kill-1", "after"]
    base, during, after = phases.values()
    assert (base.start, base.end, base.requests, base.failed) == (0.0, 20.0, 2000, 0)
    assert (base.availability, base.p50_ms, base.p99_ms, base.rps) == (1.0, 10.0, 10.0, 100.0)
    assert base.quality is None
    assert (during.start, during.end, during.requests, during.failed) == (20.0, 35.0, 1500, 200)
    assert during.availability == pytest.approx(1300 / 1500)
    assert (after.start, after.end, after.requests, after.failed) == (35.0, 60.0, 2500, 0)

    checks = by_name(result)
    assert list(checks) == [
        "baseline.availability",
        "baseline.p99_ms",
        "baseline.degraded",
        "after.availability",
        "after.p99_ms",
        "after.degraded",
        "kill-1.detect_within",
        "kill-1.recover_within",
        "kill-1.max_failed_requests",
        "kill-1.max_wrong_model_responses",
        "kill-1.healed",
        "wrong_model_responses",
        "load.generator",
    ]
    failing = [c.name for c in result.checks if not c.passed]
    assert failing == ["kill-1.max_failed_requests"]
    assert checks["kill-1.max_failed_requests"].actual == 200
    assert checks["kill-1.max_failed_requests"].credit == 0.0  # target 0: no partial credit
    assert checks["kill-1.healed"].critical
    # Weights: 6 SLO checks x1 + 4 expectations x2 + healed, wrong-model, load x1 = 17;
    # only the failed-requests expectation (weight 2) earns nothing.
    assert result.score == pytest.approx(100 * 15 / 17)
    assert result.passed
    assert (result.requests, result.achieved_rps) == (6000, 100.0)
    assert len(result.series) == 600
    assert result.series[200].failed == 10 and result.series[220].failed == 0


@pytest.mark.parametrize(
    ("bound", "passed", "credit"),
    [
        pytest.param(0, False, 0.0, id="count-0"),
        pytest.param(150, False, 1 - 50 / 150, id="count-partial"),
        pytest.param(100, False, 0.0, id="count-double-is-zero"),
        pytest.param(200, True, 1.0, id="count-met"),
        pytest.param(1.0, True, 1.0, id="share-100-percent-is-not-a-count-of-1"),
        pytest.param(0.0, False, 0.0, id="share-0"),
        pytest.param(0.1, False, 1 - (200 / 1500 - 0.1) / 0.1, id="share-partial"),
        pytest.param(0.2, True, 1.0, id="share-met"),
    ],
)
def test_max_failed_requests_count_or_share(bound: float, passed: bool, credit: float) -> None:
    check = by_name(drill(faults=[kill(max_failed_requests=bound)]))["kill-1.max_failed_requests"]
    assert check.passed is passed
    assert check.credit == pytest.approx(credit)
    assert check.target == bound


@pytest.mark.parametrize("bound", [1.5, -0.1, -1], ids=["share-above-1", "negative-share", "neg"])
def test_max_failed_requests_is_validated(bound: float) -> None:
    with pytest.raises(ValueError, match="max_failed_requests"):
        Expectation(max_failed_requests=bound)


def test_quality_dip_delays_recovery() -> None:
    # One probe a second; the probes at 20..24 s see half the offline recall.
    samples = [QualitySample(float(t), 0.5 if 20 <= t <= 24 else 0.95) for t in range(60)]
    result = drill(faults=[kill()], quality=samples)
    # The first window without a bad probe or a failure starts just after the probe at 24 s.
    assert result.faults[0].recovered_at == pytest.approx(24.1)
    phases = {p.name: p for p in result.phases}
    assert phases["baseline"].quality == pytest.approx(0.95)
    assert phases["fault:kill-1"].quality == pytest.approx((5 * 0.5 + 10 * 0.95) / 15)
    checks = by_name(result)
    assert checks["baseline.quality"].passed and checks["after.quality"].passed
    assert result.series[200].quality == 0.5 and result.series[201].quality is None


def test_degraded_and_empty_windows_do_not_hold() -> None:
    recs = records(failed=(), degraded=[(20.0, 23.0)], silent=[(23.0, 30.0)])
    result = drill(recs, faults=[kill()])
    # Degraded answers until 23 s, then no requests until 30 s: neither is healthy. The first
    # healthy window is [29.1, 30.1): one request is enough for a window to count.
    assert result.faults[0].recovered_at == 29.1


def test_never_detected_and_never_recovered() -> None:
    recs = records(failed=[(20.0, 61.0)])
    result = drill(recs, faults=[kill(**FULL_EXPECT)], events=[])
    fault = result.faults[0]
    assert (fault.detected_at, fault.ttd_s, fault.recovered_at, fault.rto_s) == (None,) * 4
    assert fault.detected_by is None
    checks = by_name(result)
    for name in ("kill-1.detect_within", "kill-1.recover_within"):
        assert not checks[name].passed
        assert checks[name].actual is None
        assert checks[name].credit == 0.0
    # The fault phase lasts to the end of the drill, so there is no "after" phase.
    assert [p.name for p in result.phases] == ["baseline", "fault:kill-1"]
    assert result.phases[1].end == 60.0
    assert not result.passed


def test_recovery_windows_must_end_by_duration() -> None:
    # Clean from 57.5 s: only 2.5 s remain, less than three full windows.
    result = drill(records(failed=[(20.0, 57.5)]), faults=[kill()])
    assert result.faults[0].recovered_at is None
    assert not by_name(result)["kill-1.recovered"].passed
    # Clean from exactly 57 s: the last run ends at 60 s and counts.
    assert drill(records(failed=[(20.0, 57.0)]), faults=[kill()]).faults[0].recovered_at == 57.0


def test_recovered_check_without_recover_within() -> None:
    checks = by_name(drill(faults=[kill()]))
    assert "kill-1.recover_within" not in checks
    assert checks["kill-1.recovered"].passed
    assert checks["kill-1.recovered"].weight == 2


def test_events_before_injection_or_about_others_do_not_count() -> None:
    events = [
        DetectionEvent(19.0, "gateway", "replica-1", "state up->ejected"),  # before injection
        DetectionEvent(20.1, "gateway", "replica-2", "state up->ejected"),  # another target
        DetectionEvent(20.8, "gateway", "replica-1", "state up->ejected"),
        DetectionEvent(20.5, "replica-1", "replica-1", "integrity failure v2"),  # unsorted
    ]
    fault = drill(faults=[kill()], events=events).faults[0]
    assert fault.detected_at == 20.5
    assert fault.detected_by == "replica-1: integrity failure v2"


@pytest.mark.parametrize(
    ("target", "detected"),
    [
        pytest.param("model-store", 20.4, id="model-store-any-replica-integrity"),
        pytest.param("replica-3,replica-2", 20.2, id="several-targets"),
    ],
)
def test_detection_targets(target: str, detected: float) -> None:
    events = [
        DetectionEvent(20.2, "gateway", "replica-2", "state up->ejected"),
        DetectionEvent(20.4, "replica-1", "replica-1", "integrity failure v2"),
    ]
    result = drill(faults=[kill(target=target)], events=events)
    assert result.faults[0].detected_at == detected


def test_model_store_detected_by_sanity_event_about_the_store() -> None:
    events = [DetectionEvent(21.0, "replica-2", "model-store", "sanity rejection v3")]
    fault = drill(faults=[kill(target="model-store")], events=events).faults[0]
    assert fault.ttd_s == 1.0


def test_overlapping_faults() -> None:
    recs = records(failed=[(20.0, 22.0), (25.0, 26.0)])
    events = [
        DetectionEvent(20.5, "gateway", "replica-1", "state up->ejected"),
        DetectionEvent(25.2, "gateway", "replica-2", "state up->ejected"),
    ]
    faults = [
        kill("a", target="replica-1", injected_at=20.0, healed_at=30.0, recover_within=3.0),
        kill("b", target="replica-2", injected_at=25.0, healed_at=40.0, recover_within=3.0),
    ]
    result = drill(recs, faults=faults, events=events)
    a, b = result.faults
    # ttd is rounded to the microsecond: 25.2 - 25.0 reads 0.2.
    assert (a.ttd_s, a.recovered_at) == (0.5, 22.0)
    assert (b.ttd_s, b.recovered_at) == (0.2, 26.0)
    spans = [(p.name, p.start, p.end) for p in result.phases]
    assert spans == [
        ("baseline", 0.0, 20.0),
        ("fault:a", 20.0, 30.0),
        ("fault:b", 25.0, 40.0),
        ("after", 40.0, 60.0),
    ]
    # Both phases see the failures of [25, 26): overlapping phases share requests.
    assert (a.failed_requests, b.failed_requests) == (300, 100)
    assert all(c.passed for c in result.checks)
    assert result.score == 100.0


def test_recovery_after_heal_extends_the_phase() -> None:
    result = drill(records(failed=[(20.0, 40.0)]), faults=[kill(healed_at=30.0)])
    assert result.faults[0].recovered_at == 40.0
    assert [(p.name, p.start, p.end) for p in result.phases][1:] == [
        ("fault:kill-1", 20.0, 40.0),
        ("after", 40.0, 60.0),
    ]


def test_no_faults() -> None:
    result = drill(records(failed=()), events=[])
    assert [(p.name, p.start, p.end) for p in result.phases] == [("baseline", 0.0, 60.0)]
    assert result.faults == []
    assert result.score == 100.0 and result.passed


def test_never_healed_is_critical_whatever_the_score() -> None:
    result = drill(faults=[kill(healed_at=None)])
    checks = by_name(result)
    assert not checks["kill-1.healed"].passed
    assert checks["kill-1.healed"].critical
    # Never healed: the phase runs to the end, so no "after". Weights: 3 baseline SLOs,
    # recovered 2, healed, wrong-model, load = 8, of which healed's 1 is lost.
    assert result.score == pytest.approx(100 * 7 / 8)
    assert result.score >= result.pass_score
    assert not result.passed
    assert [c.name for c in result.critical_failures] == ["kill-1.healed"]


def test_one_wrong_model_response_fails_a_high_scoring_drill() -> None:
    recs = records(failed=(), wrong=[(30.0, 30.01)])
    result = drill(recs, events=[], pass_score=50.0)
    check = by_name(result)["wrong_model_responses"]
    assert (check.actual, check.target, check.passed, check.credit) == (1.0, 0.0, False, 0.0)
    assert result.score == pytest.approx(100 * 4 / 5)
    assert result.score >= result.pass_score
    assert not result.passed


def test_never_injected_fault_fails_critically() -> None:
    result = drill(faults=[kill(injected_at=None, healed_at=None, detect_within=1.0)])
    checks = by_name(result)
    assert checks["kill-1.injected"].critical and not checks["kill-1.injected"].passed
    assert "kill-1.detect_within" not in checks
    assert [p.name for p in result.phases] == ["baseline"]
    assert result.faults[0].ttd_s is None and result.faults[0].requests == 0
    assert not result.passed


@pytest.mark.parametrize(
    ("kwargs", "check", "credit"),
    [
        # p99 of 300 ms against 250 ms: 1 - 50 / 250.
        pytest.param({"slow": [(10.0, 12.0)]}, "baseline.p99_ms", 0.8, id="p99"),
        # 9 of 6000 failed: unavailability 0.0015 against 0.001 -> 1 - 0.5.
        pytest.param({"failed": [(30.0, 30.09)]}, "baseline.availability", 0.5, id="avail"),
        # 360 of 6000 degraded (6 %) against 5 %: 1 - 0.01 / 0.05.
        pytest.param({"degraded": [(0.0, 3.6)]}, "baseline.degraded", 0.8, id="degraded"),
    ],
)
def test_partial_credit(kwargs: dict[str, list[Span]], check: str, credit: float) -> None:
    spans: dict[str, list[Span]] = {"failed": [], **kwargs}
    result = drill(records(**spans), events=[])  # type: ignore[arg-type]
    checks = by_name(result)
    assert not checks[check].passed
    assert checks[check].credit == pytest.approx(credit)
    # Five checks of weight 1 (3 SLOs, wrong-model, load): four hold.
    assert result.score == pytest.approx(100 * (4 + credit) / 5)


def test_quality_miss_earns_nothing() -> None:
    samples = [QualitySample(float(t), 0.8) for t in range(60)]
    check = by_name(drill(records(failed=()), events=[], quality=samples))["baseline.quality"]
    assert (check.passed, check.credit, check.op) == (False, 0.0, ">=")


def test_saturated_generator_fails_its_check() -> None:
    result = drill(records(failed=()), events=[], saturated=True)
    check = by_name(result)["load.generator"]
    assert not check.passed and not check.critical
    assert "saturated" in check.detail
    assert result.score == pytest.approx(80.0)


def test_drill_interrupted_before_its_fault() -> None:
    # Stopped after 5 s: the fault due at 20 s never ran, and nothing breaks on the short span.
    inp = DrillInput(
        records=records(failed=()),
        quality=[],
        faults=[kill(injected_at=None, healed_at=None)],
        events=[],
        slo=SLO_DEFAULT,
        duration=5.0,
        target_rps=100.0,
        pass_score=80.0,
        generator_saturated=False,
    )
    result = analyze(inp)
    assert [(p.name, p.start, p.end, p.requests) for p in result.phases] == [
        ("baseline", 0.0, 5.0, 500)
    ]
    assert len(result.series) == 50
    assert not result.passed  # the fault never ran: kill-1.injected failed


def test_zero_length_drill() -> None:
    inp = DrillInput(records(failed=()), [], [], [], SLO_DEFAULT, 0.0, 100.0, 80.0, False)
    result = analyze(inp)
    assert result.series == [] and result.achieved_rps == 0.0
    assert [c.name for c in result.checks] == ["wrong_model_responses", "load.generator"]


def test_a_sign_after_the_heal_does_not_detect_the_fault() -> None:
    late = DetectionEvent(40.0, "gateway", "replica-1", "up->ejected timeout")
    assert detect(kill(injected_at=20.0, healed_at=35.0), [late]) is None
    assert detect(kill(injected_at=20.0, healed_at=None), [late]) == late


def test_any_refused_model_detects_a_model_store_fault() -> None:
    event = DetectionEvent(20.2, "replica-3", "replica-3", "refused model v3 (manifest)")
    fault = kill(target="model-store", injected_at=20.0, healed_at=30.0)
    assert detect(fault, [event]) == event


# --- SLO impact and the service's own recovery -------------------------------------------------


def test_a_fault_the_slos_never_felt_says_so_and_when_the_target_came_back() -> None:
    # Other replicas carried the load: nothing failed, so the SLOs recovered "at once" (rto 0)
    # although replica-1 was back in service only at 49.7 s, after its restart.
    events = [
        EJECTED,
        DetectionEvent(36.0, "gateway", "replica-1", "ejected->down"),
        DetectionEvent(49.7, "gateway", "replica-1", "down->up"),
        DetectionEvent(50.5, "gateway", "replica-2", "up->ejected"),  # another target
    ]
    result = drill(records(failed=()), faults=[kill(**FULL_EXPECT)], events=events)
    (fault,) = result.faults
    assert fault.rto_s == 0.0 and fault.recovered_at == 20.0
    assert fault.slo_impact is False
    assert fault.restored_at == 49.7


def test_a_fault_that_broke_the_slos_has_impact() -> None:
    result = drill(faults=[kill(**FULL_EXPECT)])  # 2 s of failures from the injection
    (fault,) = result.faults
    assert fault.slo_impact is True and fault.rto_s == 2.0
    assert fault.restored_at is None  # the target never came back up in the events


def test_restoration_needs_the_target_taken_out_first_and_no_fault_no_figures() -> None:
    back_only = [DetectionEvent(25.0, "gateway", "replica-1", "down->up")]
    (fault,) = drill(faults=[kill()], events=back_only).faults
    assert fault.restored_at is None  # never taken out after the injection
    before = [
        DetectionEvent(10.0, "gateway", "replica-1", "up->ejected"),  # before the injection
        DetectionEvent(15.0, "gateway", "replica-1", "ejected->up"),
    ]
    (fault,) = drill(faults=[kill()], events=before).faults
    assert fault.restored_at is None
    (never,) = drill(faults=[kill(injected_at=None, healed_at=None)]).faults
    assert never.slo_impact is None and never.restored_at is None


# --- the recovery rule, pinned --------------------------------------------------------------
# Each case kills one way of getting the rule wrong: fewer than three windows, a dropped SLO,
# a boundary moved by one comparison.


def _fast_errors(spans: Sequence[Span], *, rps: int = 100, duration: float = 60.0) -> Records:
    """Requests every 1/rps s; in ``spans`` they fail at once (1 ms 503s: only availability
    is broken, never latency)."""
    rows = []
    for i in range(int(duration * rps)):
        t = i / rps
        if inside(t, spans):
            rows.append(RequestRecord(t, 1.0, 503, "http 503"))
        else:
            rows.append(RequestRecord(t, 10.0, 200, model_digest=GOOD))
    return Records.build(rows, t0=0.0, verified_digests=[GOOD])


def test_recovery_needs_all_three_windows_healthy() -> None:
    # [22, 25) would do for two windows or one; the third holds failures at 24.5: 25.0.
    result = drill(records(failed=((20.0, 22.0), (24.5, 25.0))), faults=[kill()])
    assert result.faults[0].recovered_at == 25.0


def test_recovery_waits_for_availability_alone() -> None:
    # Fast 503s break availability and nothing else: recovery at their end, not at injection.
    result = drill(_fast_errors([(20.0, 22.0)]), faults=[kill()])
    (fault,) = result.faults
    assert fault.recovered_at == 22.0 and fault.slo_impact is True


def test_recovery_waits_for_latency_alone() -> None:
    # 300 ms answers break p99 (SLO 250 ms) and nothing else.
    result = drill(records(failed=(), slow=((20.0, 22.0),)), faults=[kill()])
    assert result.faults[0].recovered_at == 22.0


def test_a_p99_exactly_at_the_slo_holds() -> None:
    rows = [
        RequestRecord(i / 100, 250.0 if 20.0 <= i / 100 < 22.0 else 10.0, 200, model_digest=GOOD)
        for i in range(6000)
    ]
    result = drill(Records.build(rows, t0=0.0, verified_digests=[GOOD]), faults=[kill()])
    assert result.faults[0].recovered_at == 20.0  # p99 <= slo holds; < would wait to 22.0


def test_an_event_at_the_injection_or_the_heal_counts_as_detection() -> None:
    at_injection = DetectionEvent(20.0, "gateway", "replica-1", "up->ejected")
    (fault,) = drill(faults=[kill()], events=[at_injection]).faults
    assert fault.detected_at == 20.0 and fault.ttd_s == 0.0
    at_heal = DetectionEvent(35.0, "gateway", "replica-1", "up->ejected")
    (fault,) = drill(faults=[kill()], events=[at_heal]).faults
    assert fault.detected_at == 35.0
    after_heal = DetectionEvent(35.1, "gateway", "replica-1", "up->ejected")
    (fault,) = drill(faults=[kill()], events=[after_heal]).faults
    assert fault.detected_at is None


def test_a_score_exactly_at_the_pass_score_passes() -> None:
    score = drill(faults=[kill(**FULL_EXPECT)]).score
    assert drill(faults=[kill(**FULL_EXPECT)], pass_score=score).passed
    assert not drill(faults=[kill(**FULL_EXPECT)], pass_score=score + 1e-9).passed
