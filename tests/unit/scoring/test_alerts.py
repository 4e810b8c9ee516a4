"""Alerts judged against faults: attribution to a fault's window, time to alert and to
notification, missed faults, noise, alerts still firing, and the checks each one makes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from drillkit.scoring.alerts import AlertExpect, AlertSpan, MonitoringInput, judge


@dataclass(frozen=True)
class Fault:
    id: str = "kill"
    target: str = "replica-1"
    injected_at: float | None = 10.0
    healed_at: float | None = 20.0
    recovered_at: float | None = 12.0
    failed_requests: int = 3
    degraded_responses: int = 0
    wrong_model_responses: int = 0


def span(name: str, firing: float | None, resolved: float | None = None, **kw: object) -> AlertSpan:
    return AlertSpan(
        name=name,
        labels={"alertname": name, **{str(k): str(v) for k, v in kw.items()}},
        pending_at=None if firing is None else firing - 2.0,
        firing_at=firing,
        resolved_at=resolved,
        notified_at=None if firing is None else firing + 0.8,
    )


def inp(*alerts: AlertSpan, **kw: object) -> MonitoringInput:
    base: dict[str, object] = {
        "source": "stack",
        "alerts": list(alerts),
        "budget": {"scrape_interval": 1.0, "evaluation_interval": 2.0, "for": 2.0},
        "grace": 10.0,
    }
    base.update(kw)
    return MonitoringInput(**base)  # type: ignore[arg-type]


def checks_by_name(checks: list[tuple[str, dict[str, object]]]) -> dict[str, dict[str, object]]:
    return {str(fields["name"]): fields for _, fields in checks}


def test_an_alert_in_the_fault_window_is_the_faults_own() -> None:
    result, per_fault, checks = judge(
        inp(span("ReplicaDown", 13.5, 22.0), expects={"kill": AlertExpect(("ReplicaDown",), 5)}),
        [Fault()],
        60.0,
    )
    seen = per_fault["kill"]
    assert seen.time_to_alert_s == 3.5 and seen.time_to_notify_s == pytest.approx(4.3)
    assert seen.alerts == ["ReplicaDown"]
    assert result.missed_faults == [] and result.noise == [] and result.still_firing == []
    assert result.budget_s == 5.0
    by = checks_by_name(checks)
    assert by["kill.alerts"]["holds"] is True
    assert by["kill.alert_within"]["actual"] == 3.5
    assert by["monitoring.missed_faults"]["actual"] == 0.0


def test_a_fault_with_impact_and_no_alert_is_missed_and_its_checks_fail() -> None:
    result, per_fault, checks = judge(
        inp(expects={"kill": AlertExpect(("ReplicaDown",), 5)}), [Fault()], 60.0
    )
    assert result.missed_faults == ["kill"]
    assert per_fault["kill"].time_to_alert_s is None
    by = checks_by_name(checks)
    assert by["monitoring.missed_faults"]["actual"] == 1.0
    assert by["kill.alerts"]["holds"] is False
    assert "missing: ReplicaDown" in str(by["kill.alerts"]["detail"])
    assert by["kill.alert_within"]["actual"] is None


def test_a_fault_without_user_impact_needs_no_alert() -> None:
    quiet = Fault(failed_requests=0)
    result, _, _ = judge(inp(), [quiet], 60.0)
    assert result.missed_faults == []


def test_an_alert_outside_every_window_is_noise_and_one_not_resolved_is_still_firing() -> None:
    result, _, checks = judge(
        inp(
            span("Slow", 5.0, 7.0),  # before the fault: noise
            span("ReplicaDown", 12.0, None),  # the fault's, never resolved
            span("Errors", 45.0, 50.0),  # after the fault's end (20) + grace (10): noise
            span("Old", -3.0, 0.0),  # the stack's start, before t=0: not scored
            max_false_alerts=1,
            resolve_within=5.0,
        ),
        [Fault()],
        60.0,
    )
    assert result.noise == ["Slow", "Errors"]
    assert result.still_firing == ["ReplicaDown"]
    by = checks_by_name(checks)
    assert by["monitoring.false_alerts"]["actual"] == 2.0
    assert by["monitoring.alerts_resolved"]["holds"] is False


def test_an_alert_resolved_too_long_after_its_fault_counts_as_still_firing() -> None:
    result, _, _ = judge(inp(span("ReplicaDown", 12.0, 40.0), resolve_within=5.0), [Fault()], 60.0)
    assert result.still_firing == ["ReplicaDown"]
    late, _, _ = judge(inp(span("ReplicaDown", 12.0, 24.0), resolve_within=5.0), [Fault()], 60.0)
    assert late.still_firing == []


def test_the_expected_alert_times_the_fault_not_an_earlier_other_one() -> None:
    _, per_fault, checks = judge(
        inp(
            span("Slow", 11.0, 15.0),
            span("ReplicaDown", 16.0, 22.0),
            expects={"kill": AlertExpect(("ReplicaDown",), 5.0)},
        ),
        [Fault()],
        60.0,
    )
    assert per_fault["kill"].time_to_alert_s == 6.0
    assert per_fault["kill"].alerts == ["ReplicaDown", "Slow"]
    assert checks_by_name(checks)["kill.alert_within"]["actual"] == 6.0


def test_alerts_that_could_not_be_read_are_reported_not_judged() -> None:
    result, _, checks = judge(inp(error="ConnectError: refused"), [Fault()], 60.0)
    assert result.error == "ConnectError: refused"
    assert checks == []


def test_overlapping_faults_get_the_alerts_that_name_their_targets() -> None:
    kill = Fault(id="kill", target="replica-1", injected_at=8.0, healed_at=20.0)
    flip = Fault(id="flip", target="replica-3", injected_at=26.0, healed_at=36.0)
    zone = Fault(id="zone", target="zone-a", injected_at=27.0, healed_at=30.0)
    _, per_fault, _ = judge(
        inp(
            span("ModelRefused", 26.5, 40.0, service="replica-3"),  # in kill's window too
            span("ReplicaDown", 22.0, 24.0, replica="replica-1"),
            span("ZoneDown", 29.0, 31.0, server="a"),
            span("Slow", 28.0, 29.0, service="gateway"),  # names none: the latest injected
        ),
        [kill, flip, zone],
        60.0,
    )
    assert per_fault["kill"].alerts == ["ReplicaDown"]
    assert per_fault["flip"].alerts == ["ModelRefused"]
    assert per_fault["zone"].alerts == ["Slow", "ZoneDown"]
