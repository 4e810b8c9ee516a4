"""A rollout's exposure and checks from hand-built records: every figure counted exactly."""

from __future__ import annotations

import dataclasses

import pytest

from drillkit.observe.records import Records, RequestRecord
from drillkit.scoring.analyze import (
    SLO,
    Check,
    DrillInput,
    Expectation,
    FaultRun,
    analyze,
)
from drillkit.scoring.rollout import RolloutRun, RolloutStep, exposure

STABLE = "a" * 64
NEW = "b" * 64


def _records(bad_users: dict[float, int], *, until: float = 30.0) -> Records:
    """10 requests/s from users 0..49 round robin, answered by the stable version, except the
    requests at the times of ``bad_users`` (time -> user), answered by the new version."""
    rows = []
    for i in range(int(until * 10)):
        t = i / 10
        user = bad_users.get(t, i % 50)
        digest = NEW if t in bad_users else STABLE
        rows.append(RequestRecord(1000.0 + t, 5.0, 200, model_digest=digest, user=user))
    rows.append(RequestRecord(1000.0 + 12.05, 2000.0, 0, "timeout", user=3))  # failed: no answer
    return Records.build(rows, t0=1000.0, verified_digests=[STABLE, NEW])


def _run(status: str = "rolled_back", expected: str = "rolled_back", **more: object) -> RolloutRun:
    fields: dict[str, object] = {
        "version": "v3",
        "digest": NEW,
        "stable": "v2",
        "status": status,
        "verdict": "rolled back at 10%: quality 70%" if status == "rolled_back" else "promoted",
        "started_at": 10.0,
        "verdict_at": 18.0,
        "rolled_back_at": 18.5,
        "ended_at": 18.5,
        "analysis": True,
        "expected": expected,
        "defect": "quality",
        "steps": [RolloutStep(0.1, 10.2, 18.0, "fail", ["quality 70%"], quality=0.7)],
    }
    fields.update(more)
    return RolloutRun(**fields)  # type: ignore[arg-type]


def test_exposure_counts_answers_and_distinct_users_of_the_new_version() -> None:
    bad = {11.0: 7, 12.0: 7, 13.5: 9, 17.9: 11}
    result = exposure(_run(), _records(bad), end=25.0)
    assert result.exposed_requests == 4
    assert result.exposed_users == 3  # 7 twice
    # Users who asked while v3 was out (10 s to its last answer, 17.9 s): 49 of the 50 (user
    # 35 asks at 13.5 s, where the new version answered user 9 instead, and next at 18.5 s).
    assert result.users == 49
    assert result.exposed_users_share == pytest.approx(3 / 49)
    assert result.first_exposure_at == pytest.approx(11.0)
    assert result.last_exposure_at == pytest.approx(17.9)
    assert result.time_to_first_exposure_s == pytest.approx(1.0)
    assert result.time_to_verdict_s == pytest.approx(8.0)
    assert result.time_to_rollback_s == pytest.approx(7.9)
    assert result.quality_lost == pytest.approx(0.3)


def test_answers_before_the_rollout_or_after_its_window_are_not_exposure() -> None:
    result = exposure(_run(), _records({5.0: 1, 11.0: 2, 26.0: 3}), end=25.0)
    assert (result.exposed_requests, result.exposed_users) == (1, 1)


def test_a_promoted_rollout_has_no_time_to_rollback() -> None:
    result = exposure(_run(status="promoted", expected="promoted"), _records({11.0: 1}), 25.0)
    assert result.time_to_rollback_s is None
    assert result.exposed_requests == 1


def _drill(run: RolloutRun, expect: Expectation, bad: dict[float, int]) -> dict[str, Check]:
    fault = FaultRun(
        id="c",
        kind="bad_rollout",
        target="model-store",
        injected_at=10.0,
        healed_at=25.0,
        expect=expect,
        rollout=run,
    )
    analysis = analyze(
        DrillInput(
            records=_records(bad),
            quality=[],
            faults=[fault],
            events=[],
            slo=SLO(availability=0.0, p99_ms=1e6, quality=0.0, degraded_max=1.0),
            duration=30.0,
            target_rps=10.0,
            pass_score=0.0,
            generator_saturated=False,
        )
    )
    return {c.name: c for c in analysis.checks}


def test_each_rollout_check_holds_at_its_bound_and_breaks_past_it() -> None:
    bad = {11.0: 7, 12.0: 8, 17.9: 9}
    at = Expectation(rollback_within=7.9, max_users_exposed=3, max_exposed_requests=3)
    checks = _drill(_run(), at, bad)
    for name in ("c.rollout", "c.rollback_within", "c.max_users_exposed", "c.max_exposed_requests"):
        assert checks[name].passed, name
    past = Expectation(rollback_within=7.8, max_users_exposed=2, max_exposed_requests=2)
    checks = _drill(_run(), past, bad)
    for name in ("c.rollback_within", "c.max_users_exposed", "c.max_exposed_requests"):
        assert not checks[name].passed, name
    share = _drill(_run(), Expectation(max_users_exposed=0.06), bad)["c.max_users_exposed"]
    assert share.passed and share.actual == pytest.approx(3 / 50)
    share = _drill(_run(), Expectation(max_users_exposed=0.05), bad)["c.max_users_exposed"]
    assert not share.passed


@pytest.mark.parametrize(
    ("status", "expected", "holds"),
    [
        ("rolled_back", "rolled_back", True),
        ("aborted", "rolled_back", True),
        ("promoted", "rolled_back", False),  # a bad version reached everyone
        ("rolled_back", "promoted", False),  # a false rollback of a good version
        ("promoted", "promoted", True),
        ("failed", "rolled_back", False),
        ("stopped", "rolled_back", False),  # the drill's end stopped it: no verdict
        ("stopped", "promoted", False),
    ],
)
def test_the_rollout_must_end_as_expected(status: str, expected: str, holds: bool) -> None:
    checks = _drill(_run(status=status, expected=expected), Expectation(), {11.0: 1})
    check = checks["c.rollout"]
    assert check.passed is holds and check.critical


def test_a_rollout_never_rolled_back_fails_rollback_within() -> None:
    run = dataclasses.replace(_run(status="promoted"), verdict="promoted")
    check = _drill(run, Expectation(rollback_within=60.0), {11.0: 1})["c.rollback_within"]
    assert not check.passed and check.actual is None
    assert "never rolled back" in check.detail
