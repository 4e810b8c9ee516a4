"""From what a drill observed to its verdict: phases, detection, recovery, checks and the score.

The definitions are those of ``docs/report.md``; this module is their one implementation.
Inputs are small frozen dataclasses (the engine maps the scenario's models onto them) so that
scoring can be tested with hand-built records and no stack.

Checks and their weights (a check earns credit 0..1; ``score = 100 * sum(w * credit) / sum(w)``):

==============================  ======  ========  =====================================
check                           weight  critical  what holds
==============================  ======  ========  =====================================
``<phase>.availability``        1       no        availability >= slo.availability
``<phase>.p99_ms``              1       no        p99 <= slo.p99_ms
``<phase>.degraded``            1       no        degraded share <= slo.degraded_max
``<phase>.quality``             1       no        mean quality share >= slo.quality
``<id>.detect_within``          2       no        ttd_s <= expect.detect_within
``<id>.recover_within``         2       no        rto_s <= expect.recover_within
``<id>.recovered``              2       no        the fault recovered at all (only when
                                                  ``recover_within`` is not set)
``<id>.max_failed_requests``    2       no        failed requests (count or share) <= max
``<id>.max_wrong_model_...``    2       no        wrong-model responses <= max
``<id>.cache_recover_within``   2       no        the cache hit ratio is back to 90 % of
                                                  its value before the fault within this
                                                  long of the heal (``cache_recovery``)
``<id>.rollout``                2       yes       a rollout ended as it should: a bad version
                                                  rolled back, a good one promoted
``<id>.quality``                2       no        the drill's quality probe over a rollout's
                                                  window >= slo.quality
``<id>.rollback_within``        2       no        rollout start to its last answer by the
                                                  new version <= expect.rollback_within
``<id>.max_users_exposed``      2       no        distinct users answered by the new version
                                                  (count or share) <= max
``<id>.max_exposed_requests``   2       no        answers by the new version <= max
``<id>.max_events_lost``        2       yes       acknowledged events a data_loss fault lost
                                                  <= expect.max_events_lost
``<id>.rpo_within``             2       yes       its recovery point <= expect.rpo_within
``<id>.rto_within``             2       no        its time to recover <= expect.rto_within
``<id>.healed``                 1       yes       the fault was healed
``<id>.injected``               1       yes       the fault was applied (only emitted, as a
                                                  failure, for a fault that never was)
``wrong_model_responses``       1       yes       no wrong-model response in the drill
``load.generator``              1       no        the load generator held its rate
==============================  ======  ========  =====================================

SLO checks run for the ``baseline`` and ``after`` phases only (and only when the phase had
requests): during a ``fault:`` phase the SLOs are expected to break for a while, which the
recovery figures and the fault's own expectations judge instead.

Credit: 1 when a check holds. A lower-is-better figure that misses earns
``max(0, 1 - (actual - target) / target)`` (0 when the target is 0); availability earns the
same on its complement (unavailability ``1 - a`` against ``1 - target``). Booleans and other
higher-is-better misses earn 0, as does a figure that does not exist (never detected).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from drillkit.observe.records import Records
from drillkit.observe.series import (
    QualitySample,
    QualityTrack,
    SeriesPoint,
    WindowStats,
    compute_series,
    window_stats,
)
from drillkit.scoring.alerts import MonitoringInput, MonitoringResult, judge
from drillkit.scoring.data import (
    DataCensus,
    DataLossResult,
    DataLossRun,
    EventSent,
    EventSummary,
    data_loss_results,
    event_summary,
)
from drillkit.scoring.rollout import RolloutResult, RolloutRun, exposure

__all__ = [
    "SLO",
    "Analysis",
    "Check",
    "DetectionEvent",
    "DrillInput",
    "Expectation",
    "FaultResult",
    "FaultRun",
    "PhaseStats",
    "QualitySample",
    "analyze",
    "detect",
    "recover",
    "score_of",
]

#: Recovery needs this many consecutive healthy windows of ``RECOVERY_WINDOW_S`` seconds.
RECOVERY_WINDOWS = 3
RECOVERY_WINDOW_S = 1.0
#: Candidate recovery starts are tried this often after injection.
RECOVERY_STEP_S = 0.1
#: Step of the report's time series.
SERIES_STEP_S = 0.1

WEIGHT_SLO = 1.0
WEIGHT_EXPECT = 2.0
WEIGHT_CRITICAL = 1.0
WEIGHT_LOAD = 1.0

#: The phase named by checks that concern the whole drill rather than one phase.
DRILL_PHASE = "drill"
#: A fault target meaning the shared model store: every replica loads from it.
MODEL_STORE = "model-store"

_EPS = 1e-9  # float slack for "ends by duration" comparisons

Op = Literal["<=", ">=", "=="]


# -- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SLO:
    """The steady-state hypothesis: shares are 0..1, latency in milliseconds."""

    availability: float
    p99_ms: float
    quality: float
    degraded_max: float


@dataclass(frozen=True, slots=True)
class Expectation:
    """What one fault's phase must show; None leaves a figure unchecked.

    ``max_failed_requests``: an ``int`` is a count of failed requests, a ``float`` a share
    (0..1) of the fault phase's requests; a float is never a count, so that a share of 100 %
    (``1.0``) keeps its meaning.
    """

    detect_within: float | None = None
    recover_within: float | None = None
    max_failed_requests: int | float | None = None
    max_wrong_model_responses: int | None = None
    cache_recover_within: float | None = None
    rollback_within: float | None = None
    max_users_exposed: int | float | None = None  # an int: users; a float: a share of users
    max_exposed_requests: int | None = None
    max_events_lost: int | None = None
    rpo_within: float | None = None
    rto_within: float | None = None

    def __post_init__(self) -> None:
        bound = self.max_failed_requests
        if isinstance(bound, float) and not 0.0 <= bound <= 1.0:
            raise ValueError(f"max_failed_requests as a share must be 0..1, got {bound}")
        if isinstance(bound, int) and bound < 0:
            raise ValueError(f"max_failed_requests as a count must be >= 0, got {bound}")


@dataclass(frozen=True, slots=True)
class FaultRun:
    """One fault as it was run; times in seconds from t=0."""

    id: str
    kind: str
    target: str  # a service name, several joined by ",", or "model-store"
    injected_at: float | None  # None: never applied
    healed_at: float | None  # None: never healed
    evidence: str = ""  # what the fault did, in words ("SIGKILL pid 4242")
    expect: Expectation = field(default_factory=Expectation)
    rollout: RolloutRun | None = None  # what a rollout fault's controller recorded
    data: DataLossRun | None = None  # a data_loss fault: its target and mode

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.target.split(",") if name.strip())


@dataclass(frozen=True, slots=True)
class DetectionEvent:
    """A sign that the stack itself noticed something, e.g. the gateway ejecting a replica."""

    t: float
    source: str  # who noticed: "gateway", "replica-2"
    subject: str  # what it concerns: a service name or "model-store"
    what: str  # "state up->ejected", "integrity failure v2", "sanity rejection v3"


@dataclass(frozen=True, slots=True)
class LoadWorker:
    """A load-generator process as the record sink saw it; ``lost_at`` from t=0 (None: it
    ran to the end)."""

    name: str
    host: str
    address: str  # where it connected from
    records: int
    clock_offset_ms: float  # how far its clock was ahead, as corrected in its records
    rtt_ms: float | None
    lost_at: float | None = None


@dataclass(frozen=True, slots=True)
class DrillInput:
    """Everything :func:`analyze` needs; ``records`` are relative to t=0 (end of warmup)."""

    records: Records
    quality: Sequence[QualitySample]
    faults: Sequence[FaultRun]
    events: Sequence[DetectionEvent]
    slo: SLO
    duration: float
    target_rps: float
    pass_score: float
    generator_saturated: bool
    monitoring: MonitoringInput | None = None  # None: no monitoring in this drill
    # The click events the generator sent and what the store held after the drill; None: the
    # stack has no event path.
    events_sent: Sequence[EventSent] | None = None
    census: DataCensus | None = None
    workers: Sequence[LoadWorker] = ()


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PhaseStats:
    """Figures of one phase ``[start, end)``."""

    name: str
    start: float
    end: float
    requests: int
    failed: int
    degraded: int
    wrong_model: int
    availability: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    rps: float
    quality: float | None  # mean quality share; None when no probe ran in the phase
    zones: dict[str, int] | None = None  # requests each zone answered; None: no edge
    cache_hit_ratio: float | None = None  # cache hits / lookups; None: no cache lookup


@dataclass(frozen=True, slots=True)
class FaultResult:
    """One fault's timeline and the figures of its phase."""

    id: str
    kind: str
    target: str
    injected_at: float | None
    healed_at: float | None
    detected_at: float | None
    recovered_at: float | None
    ttd_s: float | None
    rto_s: float | None
    requests: int
    failed_requests: int
    degraded_responses: int
    wrong_model_responses: int
    p99_ms: float
    evidence: str
    detected_by: str | None  # "<source>: <what>" of the detecting event
    # Whether the SLOs broke at all (False: they held from the injection on, and rto_s is 0
    # because there was nothing to recover from); None when the fault was never applied.
    slo_impact: bool | None = None
    # When the target was back in service (routed again after the stack took it out), apart
    # from the SLOs' recovery; None when it was never taken out, or never came back.
    restored_at: float | None = None
    # The cache's hit ratio before the injection, and when after the heal it was back to
    # CACHE_RECOVERED_SHARE of it (see cache_recovery); None without a cache tier, or never.
    cache_hit_before: float | None = None
    cache_recovered_at: float | None = None
    # What monitoring did (None without monitoring): the first firing alert given to this
    # fault and its first notification, seconds from t=0 and from the injection, and the
    # names of the alerts given to it.
    alert_at: float | None = None
    notified_at: float | None = None
    time_to_alert_s: float | None = None
    time_to_notify_s: float | None = None
    alerts: list[str] | None = None
    # A rollout's steps, verdict and exposure (None: the fault is not a rollout).
    rollout: RolloutResult | None = None
    # A data_loss fault's events lost, recovery point and time to recover (None: not one).
    data: DataLossResult | None = None


@dataclass(frozen=True, slots=True)
class Check:
    """One judged figure. ``actual`` is None when the figure does not exist (never detected)."""

    name: str
    phase: str
    op: Op
    target: float
    actual: float | None
    passed: bool
    weight: float
    critical: bool
    credit: float  # 0..1, what this check adds to the score, before its weight
    detail: str = ""  # a human explanation, e.g. "3 of 1500 requests"


@dataclass(frozen=True, slots=True)
class Analysis:
    """The verdict of one drill and every figure behind it."""

    phases: list[PhaseStats]
    faults: list[FaultResult]
    checks: list[Check]
    score: float
    pass_score: float
    passed: bool
    series: list[SeriesPoint]
    duration: float
    target_rps: float
    achieved_rps: float
    requests: int
    generator_saturated: bool
    monitoring: MonitoringResult | None = None
    events: EventSummary | None = None  # None: the stack has no event path
    workers: list[LoadWorker] = field(default_factory=list)
    lost_requests: int = 0  # requests a lost worker did not offer (not the stack's doing)

    @property
    def critical_failures(self) -> list[Check]:
        return [c for c in self.checks if c.critical and not c.passed]


# -- detection and recovery ---------------------------------------------------------------------


def _concerns(event: DetectionEvent, targets: Sequence[str]) -> bool:
    if event.subject in targets:
        return True
    # An edge load balancer's server for zone X is zone X's gateway.
    if event.subject.startswith("zone-") and f"gateway-{event.subject[5:]}" in targets:
        return True
    if MODEL_STORE in targets:
        # Any replica that rejects an artifact noticed a damaged store.
        what = event.what.lower()
        return (
            event.subject == MODEL_STORE
            or "integrity" in what
            or "sanity" in what
            or what.startswith("refused model")
        )
    return False


def detect(fault: FaultRun, events: Sequence[DetectionEvent]) -> DetectionEvent | None:
    """The first event between injection and heal that concerns one of the fault's targets."""
    if fault.injected_at is None:
        return None
    injected = fault.injected_at
    targets = fault.targets
    # A sign after the heal concerns whatever happened next, not this fault.
    until = fault.healed_at if fault.healed_at is not None else float("inf")
    candidates = [e for e in events if injected <= e.t <= until and _concerns(e, targets)]
    return min(candidates, key=lambda e: e.t, default=None)


_TAKEN_OUT = re.compile(r"\bup->")
_BACK_IN = re.compile(r"->up\b")


def restore(fault: FaultRun, events: Sequence[DetectionEvent]) -> float | None:
    """When a target the stack took out of service after the injection (a state change away
    from ``up``, such as the gateway ejecting it) was routed again (a change back to ``up``).

    This is the service's recovery, which may come long after the SLOs' (other replicas
    carried the load) or before it. None when no target was taken out, or none came back.
    """
    if fault.injected_at is None:
        return None
    out = False
    for event in sorted(events, key=lambda e: e.t):
        if event.t < fault.injected_at or event.subject not in fault.targets:
            continue
        if not out:
            out = bool(_TAKEN_OUT.search(event.what))
        elif _BACK_IN.search(event.what):
            return event.t
    return None


def _holds(stats: WindowStats, quality: float | None, slo: SLO) -> bool:
    return (
        stats.requests >= 1
        and stats.availability >= slo.availability
        and stats.p99_ms <= slo.p99_ms
        and stats.degraded_share <= slo.degraded_max
        and (quality is None or quality >= slo.quality)
    )


def recover(
    records: Records,
    quality: QualityTrack,
    *,
    injected_at: float,
    duration: float,
    slo: SLO,
) -> float | None:
    """Start of the first run of 3 consecutive 1 s windows after injection where all SLOs hold.

    Candidate starts are ``injected_at + k * 0.1``; all three windows must end by
    ``duration``. None when there is no such run.
    """
    # Window m starts at injected_at + m * step; run k is windows k, k + 10, k + 20.
    stride = round(RECOVERY_WINDOW_S / RECOVERY_STEP_S)
    span = RECOVERY_WINDOWS * RECOVERY_WINDOW_S
    candidates = int(np.floor((duration - injected_at - span) / RECOVERY_STEP_S + _EPS)) + 1
    if candidates <= 0:
        return None
    memo: dict[int, bool] = {}

    def start_of(m: int) -> float:
        return round(injected_at + m * RECOVERY_STEP_S, 9)

    def holds(m: int) -> bool:
        if m not in memo:
            # Window m ends where window m + stride starts, so the three windows tile exactly.
            start, end = start_of(m), start_of(m + stride)
            stats = window_stats(records.window(start, end))
            memo[m] = _holds(stats, quality.mean(start, end), slo)
        return memo[m]

    for k in range(candidates):
        if all(holds(k + j * stride) for j in range(RECOVERY_WINDOWS)):
            return start_of(k)
    return None


# -- checks -------------------------------------------------------------------------------------


def _partial(actual: float, target: float) -> float:
    if target <= 0:
        return 0.0
    return max(0.0, 1.0 - (actual - target) / target)


def _at_most(
    name: str,
    phase: str,
    target: float,
    actual: float | None,
    *,
    weight: float,
    critical: bool = False,
    detail: str = "",
) -> Check:
    passed = actual is not None and actual <= target
    credit = 1.0 if passed else (0.0 if actual is None else _partial(actual, target))
    return Check(name, phase, "<=", target, actual, passed, weight, critical, credit, detail)


def _at_least(
    name: str, phase: str, target: float, actual: float, *, weight: float, detail: str = ""
) -> Check:
    passed = actual >= target
    return Check(
        name, phase, ">=", target, actual, passed, weight, False, 1.0 if passed else 0.0, detail
    )


def _availability(name: str, phase: str, target: float, actual: float, weight: float) -> Check:
    passed = actual >= target
    credit = 1.0 if passed else _partial(1.0 - actual, 1.0 - target)
    return Check(name, phase, ">=", target, actual, passed, weight, False, credit)


def _boolean(
    name: str, phase: str, holds: bool, *, weight: float, critical: bool, detail: str = ""
) -> Check:
    credit = 1.0 if holds else 0.0
    return Check(name, phase, "==", 1.0, credit, holds, weight, critical, credit, detail)


def _slo_checks(phase: PhaseStats, slo: SLO) -> list[Check]:
    if phase.requests == 0:
        return []  # nothing to judge; a silent generator is load.generator's business
    name = phase.name
    checks = [
        _availability(
            f"{name}.availability", name, slo.availability, phase.availability, WEIGHT_SLO
        ),
        _at_most(f"{name}.p99_ms", name, slo.p99_ms, phase.p99_ms, weight=WEIGHT_SLO),
        _at_most(
            f"{name}.degraded",
            name,
            slo.degraded_max,
            phase.degraded / phase.requests,
            weight=WEIGHT_SLO,
            detail=f"{phase.degraded} of {phase.requests} responses",
        ),
    ]
    if phase.quality is not None:
        checks.append(
            _at_least(f"{name}.quality", name, slo.quality, phase.quality, weight=WEIGHT_SLO)
        )
    return checks


def _fault_checks(fault: FaultRun, result: FaultResult, slo: SLO) -> list[Check]:
    phase = f"fault:{fault.id}"
    if fault.injected_at is None:
        # The drill did not test what it set out to test: that must not pass.
        return [
            _boolean(
                f"{fault.id}.injected",
                phase,
                False,
                weight=WEIGHT_CRITICAL,
                critical=True,
                detail="the fault was never applied",
            )
        ]
    expect = fault.expect
    checks: list[Check] = []
    if expect.detect_within is not None:
        checks.append(
            _at_most(
                f"{fault.id}.detect_within",
                phase,
                expect.detect_within,
                result.ttd_s,
                weight=WEIGHT_EXPECT,
                detail=result.detected_by or "never detected",
            )
        )
    if expect.recover_within is not None:
        checks.append(
            _at_most(
                f"{fault.id}.recover_within",
                phase,
                expect.recover_within,
                result.rto_s,
                weight=WEIGHT_EXPECT,
                detail="" if result.rto_s is not None else "never recovered",
            )
        )
    else:
        # Without an explicit bound, recovering at all is still what a DR drill is about.
        checks.append(
            _boolean(
                f"{fault.id}.recovered",
                phase,
                result.rto_s is not None,
                weight=WEIGHT_EXPECT,
                critical=False,
                detail="" if result.rto_s is not None else "never recovered",
            )
        )
    if expect.max_failed_requests is not None:
        bound = expect.max_failed_requests
        detail = f"{result.failed_requests} of {result.requests} requests"
        if isinstance(bound, float):
            share = result.failed_requests / result.requests if result.requests else 0.0
            checks.append(
                _at_most(
                    f"{fault.id}.max_failed_requests",
                    phase,
                    bound,
                    share,
                    weight=WEIGHT_EXPECT,
                    detail=detail,
                )
            )
        else:
            checks.append(
                _at_most(
                    f"{fault.id}.max_failed_requests",
                    phase,
                    float(bound),
                    float(result.failed_requests),
                    weight=WEIGHT_EXPECT,
                    detail=detail,
                )
            )
    if expect.cache_recover_within is not None:
        before, back = result.cache_hit_before, result.cache_recovered_at
        took = None if back is None or fault.healed_at is None else back - fault.healed_at
        detail = "no cache lookups before the fault"
        if before is not None:
            floor = CACHE_RECOVERED_SHARE * before
            detail = f"hit ratio {before:.1%} before; never back to {floor:.1%}"
            if took is not None:
                detail = (
                    f"hit ratio {before:.1%} before; back to >= {floor:.1%} "
                    f"{took:.2f} s after the heal"
                )
        checks.append(
            _at_most(
                f"{fault.id}.cache_recover_within",
                phase,
                expect.cache_recover_within,
                took,
                weight=WEIGHT_EXPECT,
                detail=detail,
            )
        )
    if expect.max_wrong_model_responses is not None:
        checks.append(
            _at_most(
                f"{fault.id}.max_wrong_model_responses",
                phase,
                float(expect.max_wrong_model_responses),
                float(result.wrong_model_responses),
                weight=WEIGHT_EXPECT,
            )
        )
    if result.rollout is not None:
        checks += _rollout_checks(fault, result.rollout, slo)
    if result.data is not None:
        checks += _data_checks(fault, result.data)
    checks.append(
        _boolean(
            f"{fault.id}.healed",
            phase,
            fault.healed_at is not None,
            weight=WEIGHT_CRITICAL,
            critical=True,
            detail="" if fault.healed_at is not None else "the fault was never undone",
        )
    )
    return checks


def _data_checks(fault: FaultRun, data: DataLossResult) -> list[Check]:
    """A data_loss fault's expectations: events lost, recovery point, time to recover. Data
    lost beyond its objective fails the drill whatever the score (critical checks)."""
    expect, phase = fault.expect, f"fault:{fault.id}"
    checks: list[Check] = []
    if expect.max_events_lost is not None:
        checks.append(
            _at_most(
                f"{fault.id}.max_events_lost",
                phase,
                float(expect.max_events_lost),
                float(data.events_lost) if data.rpo_s is not None else None,
                weight=WEIGHT_EXPECT,
                critical=True,
                detail=f"{data.events_lost} of {data.acked_before} acknowledged events"
                if data.rpo_s is not None
                else "the event store could not be read back",
            )
        )
    if expect.rpo_within is not None:
        age = (
            f"; restored a backup {data.backup_age_s:.1f} s old"
            if data.backup_age_s is not None
            else ""
        )
        checks.append(
            _at_most(
                f"{fault.id}.rpo_within",
                phase,
                expect.rpo_within,
                data.rpo_s,
                weight=WEIGHT_EXPECT,
                critical=True,
                detail=f"{data.events_lost} acknowledged events lost{age}",
            )
        )
    if expect.rto_within is not None:
        parts = []
        if data.writes_back_at is not None and fault.injected_at is not None:
            parts.append(f"writes back {data.writes_back_at - fault.injected_at:.2f} s after")
        if data.restored_at is not None and fault.injected_at is not None:
            parts.append(f"restore done {data.restored_at - fault.injected_at:.2f} s after")
        checks.append(
            _at_most(
                f"{fault.id}.rto_within",
                phase,
                expect.rto_within,
                data.rto_s,
                weight=WEIGHT_EXPECT,
                detail="; ".join(parts) if parts else "never recovered in the drill",
            )
        )
    return checks


def _rollout_checks(fault: FaultRun, rollout: RolloutResult, slo: SLO) -> list[Check]:
    phase = f"fault:{fault.id}"
    expect = fault.expect
    # A person's abort is a rollback; a rollout the drill stopped at its fault's end (or one
    # that failed) never reached a verdict.
    ended = "rolled_back" if rollout.status in ("rolled_back", "aborted") else rollout.status
    verdict = f"{rollout.status}: {rollout.verdict}" if rollout.verdict else rollout.status
    checks = [
        _boolean(
            f"{fault.id}.rollout",
            phase,
            ended == rollout.expected,
            weight=WEIGHT_EXPECT,
            critical=True,
            detail=f"{rollout.version} {verdict}; expected {rollout.expected.replace('_', ' ')}",
        )
    ]
    if rollout.quality is not None:
        # What users got while the version was out, whatever the fault phase's recovery says:
        # a bad version promoted keeps quality down long after the SLOs first held again.
        checks.append(
            _at_least(
                f"{fault.id}.quality",
                phase,
                slo.quality,
                rollout.quality,
                weight=WEIGHT_EXPECT,
                detail="mean of the drill's quality probe from the rollout's start to the heal",
            )
        )
    if expect.rollback_within is not None:
        last = rollout.last_exposure_at
        checks.append(
            _at_most(
                f"{fault.id}.rollback_within",
                phase,
                expect.rollback_within,
                rollout.time_to_rollback_s,
                weight=WEIGHT_EXPECT,
                detail=(
                    f"never rolled back ({rollout.status})"
                    if rollout.time_to_rollback_s is None
                    else "no answer by the new version"
                    if last is None
                    else f"last answer by {rollout.version} at {last:.2f} s"
                ),
            )
        )
    bound = expect.max_users_exposed
    if bound is not None:
        detail = f"{rollout.exposed_users} of {rollout.users} users"
        if isinstance(bound, float):
            checks.append(
                _at_most(
                    f"{fault.id}.max_users_exposed",
                    phase,
                    bound,
                    rollout.exposed_users_share,
                    weight=WEIGHT_EXPECT,
                    detail=detail if rollout.users else "requests carry no user ids",
                )
            )
        else:
            checks.append(
                _at_most(
                    f"{fault.id}.max_users_exposed",
                    phase,
                    float(bound),
                    float(rollout.exposed_users) if rollout.users else None,
                    weight=WEIGHT_EXPECT,
                    detail=detail if rollout.users else "requests carry no user ids",
                )
            )
    if expect.max_exposed_requests is not None:
        checks.append(
            _at_most(
                f"{fault.id}.max_exposed_requests",
                phase,
                float(expect.max_exposed_requests),
                float(rollout.exposed_requests),
                weight=WEIGHT_EXPECT,
                detail=f"answers by {rollout.version}",
            )
        )
    return checks


def score_of(checks: Sequence[Check]) -> float:
    """``100 * sum(weight * credit) / sum(weight)``; 100.0 when nothing was checked."""
    total = sum(c.weight for c in checks)
    if total <= 0:
        return 100.0
    return 100.0 * sum(c.weight * c.credit for c in checks) / total


# -- the cache tier -------------------------------------------------------------------------------

#: A cache has recovered when its hit ratio is back to this share of its value before the fault.
CACHE_RECOVERED_SHARE = 0.9
#: Hit ratios are taken over windows this long, sliding by CACHE_STEP, with at least
#: CACHE_MIN_LOOKUPS lookups (fewer say nothing).
CACHE_WINDOW = 2.0
CACHE_STEP = 0.1
CACHE_MIN_LOOKUPS = 20
#: "Before the fault" is this long before the injection (or from t=0).
CACHE_BEFORE = 10.0


def cache_recovery(
    records: Records, injected: float | None, healed: float | None, duration: float
) -> tuple[float | None, float | None]:
    """The cache hit ratio over the ``CACHE_BEFORE`` s before the injection, and the end of
    the first ``CACHE_WINDOW`` window from the heal on whose hit ratio is back to
    ``CACHE_RECOVERED_SHARE`` of it (None: no cache lookups, or never back)."""
    if records.cache is None or injected is None:
        return None, None

    def ratio(start: float, end: float) -> tuple[float | None, int]:
        window = records.window(start, end)
        assert window.cache is not None
        lookups = int(np.count_nonzero(window.cache != ""))
        if not lookups:
            return None, 0
        return int(np.count_nonzero(window.cache == "hit")) / lookups, lookups

    before, _ = ratio(max(0.0, injected - CACHE_BEFORE), injected)
    if before is None or healed is None:
        return before, None
    floor = CACHE_RECOVERED_SHARE * before
    start = healed
    while start + CACHE_WINDOW <= duration + 1e-9:
        now, lookups = ratio(start, start + CACHE_WINDOW)
        if now is not None and lookups >= CACHE_MIN_LOOKUPS and now >= floor:
            return before, round(start + CACHE_WINDOW, 9)
        start += CACHE_STEP
    return before, None


# -- phases -------------------------------------------------------------------------------------


def _phase(
    name: str, start: float, end: float, records: Records, quality: QualityTrack
) -> PhaseStats:
    window = records.window(start, end)
    stats = window_stats(window)
    length = end - start
    zones: dict[str, int] | None = None
    if window.zone is not None:
        names, counts = np.unique(window.zone[window.zone != ""], return_counts=True)
        zones = {str(n): int(c) for n, c in zip(names, counts, strict=True)}
    hit_ratio: float | None = None
    if window.cache is not None and (lookups := int(np.count_nonzero(window.cache != ""))):
        hit_ratio = int(np.count_nonzero(window.cache == "hit")) / lookups
    return PhaseStats(
        name=name,
        start=start,
        end=end,
        requests=stats.requests,
        failed=stats.failed,
        degraded=stats.degraded,
        wrong_model=stats.wrong_model,
        availability=stats.availability,
        p50_ms=stats.p50_ms,
        p95_ms=stats.p95_ms,
        p99_ms=stats.p99_ms,
        rps=stats.requests / length if length > 0 else 0.0,
        quality=quality.mean(start, end),
        zones=zones,
        cache_hit_ratio=hit_ratio,
    )


def _fault_result(
    fault: FaultRun,
    detected: DetectionEvent | None,
    recovered: float | None,
    phase: PhaseStats | None,
    *,
    clipped_injection: float | None = None,
    restored: float | None = None,
) -> FaultResult:
    injected = fault.injected_at
    impact: bool | None = None
    if clipped_injection is not None:
        # The first candidate run starts at the injection: the SLOs never broke.
        impact = recovered is None or recovered > clipped_injection + _EPS
    return FaultResult(
        id=fault.id,
        kind=fault.kind,
        target=fault.target,
        injected_at=injected,
        healed_at=fault.healed_at,
        detected_at=None if detected is None else detected.t,
        recovered_at=recovered,
        ttd_s=None if detected is None or injected is None else _seconds(detected.t - injected),
        rto_s=None if recovered is None or injected is None else _seconds(recovered - injected),
        requests=0 if phase is None else phase.requests,
        failed_requests=0 if phase is None else phase.failed,
        degraded_responses=0 if phase is None else phase.degraded,
        wrong_model_responses=0 if phase is None else phase.wrong_model,
        p99_ms=0.0 if phase is None else phase.p99_ms,
        evidence=fault.evidence,
        detected_by=None if detected is None else f"{detected.source}: {detected.what}",
        slo_impact=impact,
        restored_at=restored,
    )


def _seconds(t: float) -> float:
    # Clocks are at best microsecond-precise: 20.3 - 20.0 reads 0.3, not 0.30000000000000071.
    return round(t, 6) + 0.0  # + 0.0 turns a rounded -0.0 into 0.0


def _clip(t: float, duration: float) -> float:
    return min(max(t, 0.0), duration)


# -- the whole drill ----------------------------------------------------------------------------


def analyze(inp: DrillInput) -> Analysis:
    """Phases, fault results, checks and the score of one drill (``docs/report.md``)."""
    duration = inp.duration
    records = inp.records.window(0.0, duration)  # warmup and stragglers are not scored
    quality = QualityTrack(inp.quality)

    faults: list[FaultResult] = []
    fault_phases: list[PhaseStats] = []
    fault_ends: list[float] = []
    data_results: dict[str, DataLossResult] = {}
    if inp.census is not None and inp.events_sent is not None:
        lossy = [f for f in inp.faults if f.data is not None]
        runs = [f.data for f in lossy if f.data is not None]
        found = data_loss_results(runs, inp.events_sent, inp.census)
        data_results = {f.id: result for f, result in zip(lossy, found, strict=True)}
    checks_by_fault: list[list[Check]] = []
    for fault in inp.faults:
        detected = detect(fault, inp.events)
        recovered: float | None = None
        phase: PhaseStats | None = None
        injected: float | None = None
        if fault.injected_at is not None:
            injected = _clip(fault.injected_at, duration)
            recovered = recover(
                records, quality, injected_at=injected, duration=duration, slo=inp.slo
            )
            # The phase lasts until the fault is both healed and recovered from.
            healed_end = duration if fault.healed_at is None else fault.healed_at
            recovered_end = duration if recovered is None else recovered
            end = _clip(max(healed_end, recovered_end), duration)
            phase = _phase(f"fault:{fault.id}", injected, end, records, quality)
            fault_phases.append(phase)
            fault_ends.append(end)
        result = _fault_result(
            fault,
            detected,
            recovered,
            phase,
            clipped_injection=injected,
            restored=restore(fault, inp.events),
        )
        before, back = cache_recovery(records, fault.injected_at, fault.healed_at, duration)
        result = dataclasses.replace(result, cache_hit_before=before, cache_recovered_at=back)
        if fault.rollout is not None:
            window_end = duration if fault.healed_at is None else min(fault.healed_at, duration)
            during = quality.mean(fault.rollout.started_at, window_end)
            result = dataclasses.replace(
                result, rollout=exposure(fault.rollout, records, window_end, during)
            )
        data = data_results.get(fault.id)
        if fault.data is not None and data is not None:
            start = fault.data.injected_at
            # While the store was being recovered (to the end of the drill if it never was).
            end = start + data.rto_s if data.rto_s else fault.data.until
            data = dataclasses.replace(
                data,
                quality_before=quality.mean(0.0, start),
                quality_during=quality.mean(start, max(end, start + SERIES_STEP_S)),
            )
            result = dataclasses.replace(result, data=data)
        faults.append(result)
        checks_by_fault.append(_fault_checks(fault, result, inp.slo))

    injections = [_clip(f.injected_at, duration) for f in inp.faults if f.injected_at is not None]
    baseline = _phase("baseline", 0.0, min(injections, default=duration), records, quality)
    phases = [baseline, *fault_phases]
    checks = _slo_checks(baseline, inp.slo)
    after_start = max(fault_ends, default=duration)
    if after_start < duration:
        after = _phase("after", after_start, duration, records, quality)
        phases.append(after)
        checks += _slo_checks(after, inp.slo)
    for fault_checks in checks_by_fault:
        checks += fault_checks
    monitoring: MonitoringResult | None = None
    if inp.monitoring is not None:
        monitoring, seen, judged = judge(inp.monitoring, faults, duration)
        faults = [
            dataclasses.replace(f, **dataclasses.asdict(seen[f.id])) if f.id in seen else f
            for f in faults
        ]
        checks += [_monitoring_check(kind, fields) for kind, fields in judged]

    total = window_stats(records)
    achieved = total.requests / duration if duration > 0 else 0.0
    checks.append(
        _at_most(
            "wrong_model_responses",
            DRILL_PHASE,
            0.0,
            float(total.wrong_model),
            weight=WEIGHT_CRITICAL,
            critical=True,
            detail=f"{total.wrong_model} of {total.requests} responses",
        )
    )
    lost, lost_note = lost_load(records, inp.workers, inp.target_rps, duration)
    checks.append(
        _boolean(
            "load.generator",
            DRILL_PHASE,
            not inp.generator_saturated and not lost,
            weight=WEIGHT_LOAD,
            critical=False,
            detail=f"achieved {achieved:.1f} of {inp.target_rps:g} rps"
            + (", generator saturated" if inp.generator_saturated else "")
            + lost_note,
        )
    )

    score = score_of(checks)
    passed = score >= inp.pass_score and not any(c.critical and not c.passed for c in checks)
    series = compute_series(
        records, start=0.0, end=duration, step=SERIES_STEP_S, quality=inp.quality
    )
    return Analysis(
        phases=phases,
        faults=faults,
        checks=checks,
        score=score,
        pass_score=inp.pass_score,
        passed=passed,
        series=series,
        duration=duration,
        target_rps=inp.target_rps,
        achieved_rps=achieved,
        requests=total.requests,
        generator_saturated=inp.generator_saturated,
        workers=list(inp.workers),
        lost_requests=lost,
        monitoring=monitoring,
        events=(
            event_summary(inp.events_sent, inp.census)
            if inp.events_sent is not None and inp.census is not None
            else None
        ),
    )


def lost_load(
    records: Records, workers: Sequence[LoadWorker], target_rps: float, duration: float
) -> tuple[int, str]:
    """The requests not offered after the first load worker was lost inside the window, and
    the load check's words for it ("" when none was lost): the offered rate from then on
    against the target. Locust moves a lost worker's users to the others once it misses its
    heartbeats, so the shortfall is what the load lacked, not what the stack failed."""
    lost = sorted((w.lost_at, w.name) for w in workers if w.lost_at is not None)
    lost = [(t, name) for t, name in lost if t < duration]
    if not lost:
        return 0, ""
    start = max(0.0, lost[0][0])
    sent = len(records.window(start, duration))
    missing = max(0, round(target_rps * (duration - start)) - sent)
    expected = target_rps * duration
    who = ", ".join(f"{name} at {t:.1f} s" for t, name in lost)
    share = f" ({missing / expected:.1%} of the load)" if expected > 0 else ""
    return missing, (
        f"; load worker lost: {who}; {missing} requests not offered{share}, "
        "lost load, not the stack's failures"
    )


def _monitoring_check(kind: str, fields: dict[str, object]) -> Check:
    name, phase, detail = str(fields["name"]), str(fields["phase"]), str(fields["detail"])
    weight = float(fields["weight"])  # type: ignore[arg-type]
    if kind == "boolean":
        return _boolean(name, phase, bool(fields["holds"]), weight=weight, critical=False,
                        detail=detail)  # fmt: skip
    actual = fields["actual"]
    return _at_most(
        name,
        phase,
        float(fields["target"]),  # type: ignore[arg-type]
        None if actual is None else float(actual),  # type: ignore[arg-type]
        weight=weight,
        detail=detail,
    )
