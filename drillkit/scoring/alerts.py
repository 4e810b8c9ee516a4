"""Did monitoring notice? Alerts judged against the faults a drill injected and what users saw.

Each alert is given to a fault whose window holds the moment it fired: from the injection
to the end of the fault (healed and recovered from) plus ``grace``, the delay that the
monitoring's own timing allows (a scrape, two evaluations, ``for:``, Alertmanager's
``group_wait`` and the rules' rate window). Where windows overlap, a fault whose target the
alert's labels name (``replica="replica-2"``, ``service``, ``zone="a"`` for ``zone-a``) wins,
then the latest injected. From there, per fault: the time to the first
firing alert and to its first notification, and the alerts seen; per drill:

- **missed faults**: a fault with user impact (failed, degraded or wrong-model responses in
  its phase) and no alert: nobody was paged;
- **noise**: alerts that fired outside every fault's window;
- **still firing**: alerts that had not resolved ``resolve_within`` after their fault ended,
  or at the end of the drill.

Checks (weights as in :mod:`drillkit.scoring.analyze`):

==============================  ======  ===================================================
``<id>.alerts``                 2       every alert of ``expect.alerts`` fired in the window
``<id>.alert_within``           2       time to the first (expected) alert <= the bound
``monitoring.missed_faults``    2       no fault with user impact went without an alert
``monitoring.false_alerts``     1       noise <= ``max_false_alerts`` (when set)
``monitoring.alerts_resolved``  1       no alert still firing ``alerts_resolve_within``
                                        after its fault (when set)
==============================  ======  ===================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "AlertExpect",
    "AlertSpan",
    "FaultAlerts",
    "MonitoringInput",
    "MonitoringResult",
    "judge",
]

WEIGHT_EXPECT = 2.0
WEIGHT_DRILL = 1.0
PHASE = "drill"


@dataclass(frozen=True, slots=True)
class AlertSpan:
    """One alert's life; seconds from t=0, None when it did not happen (in the drill)."""

    name: str
    labels: dict[str, str]
    pending_at: float | None
    firing_at: float | None
    resolved_at: float | None
    notified_at: float | None
    fault: str | None = None  # the fault it is given to; None: noise or before any fault


@dataclass(frozen=True, slots=True)
class AlertExpect:
    alerts: tuple[str, ...] = ()
    alert_within: float | None = None


@dataclass(frozen=True, slots=True)
class MonitoringInput:
    """What :func:`judge` needs besides the faults' results."""

    source: str  # "stack" (drillkit's Prometheus) or "external" (--prometheus)
    alerts: Sequence[AlertSpan]
    budget: dict[str, float]  # the delay budget, term by term (empty for external)
    grace: float  # how long after a fault ends an alert is still its own
    expects: dict[str, AlertExpect] = field(default_factory=dict)
    max_false_alerts: int | None = None
    resolve_within: float | None = None
    error: str | None = None  # why the alerts could not be read (then nothing is judged)


@dataclass(frozen=True, slots=True)
class FaultAlerts:
    """One fault as monitoring saw it; times in seconds from t=0."""

    alert_at: float | None
    notified_at: float | None
    time_to_alert_s: float | None
    time_to_notify_s: float | None
    alerts: list[str]


@dataclass(frozen=True, slots=True)
class MonitoringResult:
    source: str
    budget: dict[str, float]
    budget_s: float
    alerts: list[AlertSpan]
    missed_faults: list[str]
    noise: list[str]  # names of the alerts that fired outside every window
    still_firing: list[str]
    error: str | None = None


class _Fault(Protocol):
    """What :func:`judge` reads of a fault's result (``analyze.FaultResult``)."""

    @property
    def id(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def injected_at(self) -> float | None: ...
    @property
    def healed_at(self) -> float | None: ...
    @property
    def recovered_at(self) -> float | None: ...
    @property
    def failed_requests(self) -> int: ...
    @property
    def degraded_responses(self) -> int: ...
    @property
    def wrong_model_responses(self) -> int: ...


def _end(fault: _Fault, duration: float) -> float:
    return max(
        duration if fault.healed_at is None else fault.healed_at,
        fault.recovered_at if fault.recovered_at is not None else 0.0,
    )


def _names(labels: dict[str, str], target: str) -> bool:
    """Whether an alert's labels name one of the fault's targets."""
    values = set(labels.values())
    for name in (t.strip() for t in target.split(",")):
        if name in values:
            return True
        zone = name.removeprefix("zone-")
        if zone != name and zone in (labels.get("zone"), labels.get("server")):
            return True
    return False


def judge(
    inp: MonitoringInput, faults: Sequence[_Fault], duration: float
) -> tuple[MonitoringResult, dict[str, FaultAlerts], list[tuple[str, dict[str, object]]]]:
    """The monitoring result, each fault's alerts, and the checks as ``(kind, fields)``
    pairs that :mod:`drillkit.scoring.analyze` turns into its ``Check`` values."""
    windows = [
        (f.id, f.target, f.injected_at, _end(f, duration) + inp.grace)
        for f in faults
        if f.injected_at is not None
    ]
    spans: list[AlertSpan] = []
    for alert in inp.alerts:
        owner = None
        if alert.firing_at is not None:
            at = alert.firing_at
            holding = [w for w in windows if w[2] <= at <= w[3]]
            named = [w for w in holding if _names(alert.labels, w[1])]
            if holding:
                owner = max(named or holding, key=lambda w: w[2])[0]
        spans.append(
            AlertSpan(
                alert.name,
                alert.labels,
                alert.pending_at,
                alert.firing_at,
                alert.resolved_at,
                alert.notified_at,
                owner,
            )
        )
    per_fault: dict[str, FaultAlerts] = {}
    checks: list[tuple[str, dict[str, object]]] = []
    missed: list[str] = []
    still: list[str] = []
    for fault in faults:
        mine = [s for s in spans if s.fault == fault.id and s.firing_at is not None]
        expect = inp.expects.get(fault.id, AlertExpect())
        judged = [s for s in mine if s.name in expect.alerts] if expect.alerts else mine
        first = min((s.firing_at for s in judged if s.firing_at is not None), default=None)
        notes = [s.notified_at for s in judged if s.notified_at is not None]
        notified = min(notes, default=None)
        injected = fault.injected_at
        per_fault[fault.id] = FaultAlerts(
            alert_at=first,
            notified_at=notified,
            time_to_alert_s=(
                None if first is None or injected is None else round(first - injected, 3)
            ),
            time_to_notify_s=(
                None if notified is None or injected is None else round(notified - injected, 3)
            ),
            alerts=sorted({s.name for s in mine}),
        )
        impact = fault.failed_requests + fault.degraded_responses + fault.wrong_model_responses
        if injected is not None and impact > 0 and not mine:
            missed.append(fault.id)
        if inp.resolve_within is not None and injected is not None:
            bound = _end(fault, duration) + inp.resolve_within
            for s in mine:
                if s.resolved_at is None or s.resolved_at > bound:
                    still.append(s.name)
        if inp.error is not None:
            continue
        if expect.alerts:
            fired = {s.name for s in mine}
            lacking = [name for name in expect.alerts if name not in fired]
            checks.append(
                (
                    "boolean",
                    {
                        "name": f"{fault.id}.alerts",
                        "phase": f"fault:{fault.id}",
                        "holds": not lacking,
                        "weight": WEIGHT_EXPECT,
                        "detail": ("fired: " + ", ".join(sorted(fired)) if fired else "none fired")
                        + (f"; missing: {', '.join(lacking)}" if lacking else ""),
                    },
                )
            )
        if expect.alert_within is not None:
            took = per_fault[fault.id].time_to_alert_s
            checks.append(
                (
                    "at_most",
                    {
                        "name": f"{fault.id}.alert_within",
                        "phase": f"fault:{fault.id}",
                        "target": expect.alert_within,
                        "actual": took,
                        "weight": WEIGHT_EXPECT,
                        "detail": "no alert fired"
                        if took is None
                        else f"first alert after {took:g} s",
                    },
                )
            )
    still += [s.name for s in spans if s.resolved_at is None and s.firing_at is not None]
    still = sorted(set(still))
    noise = [
        s.name for s in spans if s.firing_at is not None and s.fault is None and s.firing_at >= 0.0
    ]
    if inp.error is None:
        checks.append(
            (
                "at_most",
                {
                    "name": "monitoring.missed_faults",
                    "phase": PHASE,
                    "target": 0.0,
                    "actual": float(len(missed)),
                    "weight": WEIGHT_EXPECT,
                    "detail": ("faults with user impact and no alert: " + ", ".join(missed))
                    if missed
                    else "every fault with user impact raised an alert",
                },
            )
        )
        if inp.max_false_alerts is not None:
            checks.append(
                (
                    "at_most",
                    {
                        "name": "monitoring.false_alerts",
                        "phase": PHASE,
                        "target": float(inp.max_false_alerts),
                        "actual": float(len(noise)),
                        "weight": WEIGHT_DRILL,
                        "detail": ", ".join(noise) if noise else "no alert outside the faults",
                    },
                )
            )
        if inp.resolve_within is not None:
            checks.append(
                (
                    "boolean",
                    {
                        "name": "monitoring.alerts_resolved",
                        "phase": PHASE,
                        "holds": not still,
                        "weight": WEIGHT_DRILL,
                        "detail": ("still firing: " + ", ".join(still))
                        if still
                        else f"every alert resolved within {inp.resolve_within:g} s",
                    },
                )
            )
    result = MonitoringResult(
        source=inp.source,
        budget=dict(inp.budget),
        budget_s=round(sum(inp.budget.values()), 3),
        alerts=spans,
        missed_faults=missed,
        noise=noise,
        still_firing=still,
        error=inp.error,
    )
    return result, per_fault, checks
