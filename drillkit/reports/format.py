"""How figures read in every rendering of a report (terminal, HTML, JUnit): one module, so a
share, a time or a check's value reads the same wherever a person sees it."""

from __future__ import annotations

import math
from collections.abc import Callable

from drillkit.reports.model import CheckReport, DrillReport, FaultReport, PhaseReport

__all__ = [
    "ALERT_COLUMNS",
    "CHECK_COLUMNS",
    "DASH",
    "FAULT_COLUMNS",
    "NO_IMPACT",
    "PHASE_COLUMNS",
    "ROLLOUT_STEP_COLUMNS",
    "alert_about",
    "alert_rows",
    "check_row",
    "data_lines",
    "fault_row",
    "format_check_value",
    "format_score",
    "monitoring_lines",
    "ms",
    "phase_row",
    "rollout_lines",
    "rollout_step_rows",
    "seconds",
    "share",
]

#: What stands for a figure that does not exist.
DASH = "-"
#: A fault's recovery when the SLOs never broke: nothing to recover from (its rto is 0).
NO_IMPACT = "no SLO impact"

#: The phases table's columns, in the terminal and the HTML report alike.
PHASE_COLUMNS: tuple[str, ...] = (
    "phase",
    "start",
    "end",
    "requests",
    "rps",
    "failed",
    "degraded",
    "wrong-model",
    "availability",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "quality",
)

#: The faults table's columns, in the terminal and in Markdown.
FAULT_COLUMNS: tuple[str, ...] = (
    *("fault", "kind", "target", "injected", "detected", "ttd", "recovered", "rto"),
    *("restored", "failed", "degraded", "wrong-model", "evidence"),
)

#: The checks table's columns, in the terminal and in Markdown.
CHECK_COLUMNS: tuple[str, ...] = (
    *("check", "phase", "target", "actual", "pass", "weight", "credit", "detail"),
)


def seconds(value: float | None, *, dash: str = DASH) -> str:
    """``12.30s``."""
    return dash if value is None else f"{value:.2f}s"


def ms(value: float | None, *, dash: str = DASH) -> str:
    """Milliseconds, one decimal."""
    return dash if value is None else f"{value:.1f}"


def share(value: float | None, digits: int = 2, *, dash: str = DASH) -> str:
    """``99.95%``."""
    return dash if value is None else f"{value * 100:.{digits}f}%"


def format_score(score: float) -> str:
    """The score with two decimals, truncated: 79.996 must not read as a passing 80.00."""
    # The epsilon undoes float error such as 0.29 * 100 == 28.999999999999996.
    return f"{math.floor(score * 100 + 1e-9) / 100:.2f}"


def format_check_value(check: CheckReport, value: float | None) -> str:
    """A check's target or actual in the unit its name implies."""
    if value is None:
        return "never" if check.name.endswith(("_within",)) else DASH
    if check.op == "==":
        return "yes" if value >= 1 else "no"
    name = check.name
    if name.endswith((".availability",)):
        return share(value, 3)
    if name.endswith((".degraded", ".quality")):
        return share(value, 2)
    if name.endswith("_ms"):
        return f"{value:.1f} ms"
    if name.endswith("_within"):
        # Two decimals, but never rounded to nothing: a 1 ms target reads 0.001 s, not 0.00 s.
        return f"{value:.2f} s" if value == 0 or abs(value) >= 0.1 else f"{value:.2g} s"
    if name.endswith(".max_failed_requests") and check.target < 1 and check.target != 0:
        return share(value, 3)  # a share of the fault's requests
    if name.endswith(".max_users_exposed") and check.target < 1 and check.target != 0:
        return share(value, 1)  # a share of the users
    return f"{value:g}"


def phase_row(p: PhaseReport) -> list[str]:
    """A phase's cells, in :data:`PHASE_COLUMNS` order."""
    return [
        p.name,
        seconds(p.start),
        seconds(p.end),
        str(p.requests),
        f"{p.rps:.1f}",
        str(p.failed),
        str(p.degraded),
        str(p.wrong_model),
        share(p.availability, 3),
        ms(p.p50_ms),
        ms(p.p95_ms),
        ms(p.p99_ms),
        share(p.quality, 1),
    ]


def zone_table(report: DrillReport) -> tuple[list[str], list[list[str]]] | None:
    """Which zone served what, and the cache hit ratio, per phase: the headers and the rows;
    None for a stack without zones or a cache."""
    zones = sorted({z for p in report.phases for z in (p.zones or {})})
    cached = any(p.cache_hit_ratio is not None for p in report.phases)
    if not zones and not cached:
        return None
    headers = ["phase", *(f"zone {z}" for z in zones), *(["cache hits"] if cached else [])]
    rows = []
    for p in report.phases:
        answered = sum((p.zones or {}).values())
        cells = [p.name]
        for zone in zones:
            n = (p.zones or {}).get(zone, 0)
            cells.append(f"{n} ({n / answered:.0%})" if answered else "0")
        if cached:
            cells.append("-" if p.cache_hit_ratio is None else f"{p.cache_hit_ratio:.1%}")
        rows.append(cells)
    return headers, rows


def fault_row(f: FaultReport) -> list[str]:
    """A fault's cells, in :data:`FAULT_COLUMNS` order; a fault the SLOs never felt reads
    "no SLO impact", not a recovery at +0.00s."""
    return [
        f.id,
        f.kind,
        f.target,
        seconds(f.injected_at),
        seconds(f.detected_at),
        seconds(f.ttd_s),
        NO_IMPACT if f.slo_impact is False else seconds(f.recovered_at),
        DASH if f.slo_impact is False else seconds(f.rto_s),
        seconds(f.restored_at),
        f"{f.failed_requests}/{f.requests}",
        str(f.degraded_responses),
        str(f.wrong_model_responses),
        f.evidence,
    ]


def check_row(c: CheckReport) -> list[str]:
    """A check's cells, in :data:`CHECK_COLUMNS` order."""
    return [
        c.name + (" (critical)" if c.critical else ""),
        c.phase,
        f"{c.op or ''} {format_check_value(c, c.target)}".strip(),
        format_check_value(c, c.actual),
        "PASS" if c.passed else "FAIL",
        f"{c.weight:g}",
        f"{c.earned:.3f}".rstrip("0").rstrip("."),
        c.detail,
    ]


#: The alerts table's columns, in the terminal and the HTML report alike.
ALERT_COLUMNS: tuple[str, ...] = (
    *("alert", "about", "fault", "pending", "firing", "notified", "resolved"),
)

#: The labels that say what an alert is about, most telling first.
_ABOUT_LABELS = ("replica", "service", "zone", "server", "instance")
#: The delay budget's terms as a person reads them.
_BUDGET_TERMS = {
    "scrape_interval": "a scrape",
    "evaluation_interval": "two evaluations",
    "for": "for:",
    "group_wait": "group_wait",
}


def alert_about(labels: dict[str, str]) -> str:
    """What an alert is about, from its labels: ``replica-1``, ``gateway``, ``zone a``."""
    for key in _ABOUT_LABELS:
        if labels.get(key):
            return f"zone {labels[key]}" if key in ("zone", "server") else labels[key]
    return DASH


def alert_rows(report: DrillReport) -> list[list[str]]:
    """One row per alert of the drill (empty without monitoring)."""
    if report.monitoring is None:
        return []
    return [
        [
            a.name,
            alert_about(a.labels),
            a.fault or ("none (noise)" if a.firing_at is not None and a.firing_at >= 0 else DASH),
            seconds(a.pending_at),
            seconds(a.firing_at),
            seconds(a.notified_at),
            seconds(a.resolved_at, dash="still firing" if a.firing_at is not None else DASH),
        ]
        for a in report.monitoring.alerts
    ]  # fmt: skip


def monitoring_lines(report: DrillReport) -> list[str]:
    """What monitoring did, in sentences: its source and delay budget, each fault's first
    alert and notification, missed faults, noise and alerts still firing."""
    m = report.monitoring
    if m is None:
        return []
    if m.source == "stack":
        terms = " + ".join(f"{_BUDGET_TERMS.get(k, k)} {v:g} s" for k, v in m.budget.items())
        lines = [
            f"the stack's Prometheus and Alertmanager; delay budget {m.budget_s:g} s = {terms}"
        ]
    else:
        lines = ["your own Prometheus (--prometheus); its rules' timing is its own"]
    if m.error:
        lines.append(f"the alerts could not be read: {m.error}")
        return lines
    for f in report.faults:
        if f.injected_at is None:
            continue
        if f.time_to_alert_s is None:
            lines.append(f"{f.id}: no alert")
            continue
        told = (
            f", notified after {seconds(f.time_to_notify_s)}"
            if f.time_to_notify_s is not None
            else ", no notification"
        )
        lines.append(
            f"{f.id}: first alert after {seconds(f.time_to_alert_s)}{told} "
            f"({', '.join(f.alerts or [])})"
        )
    lines.append("missed faults (user impact, no alert): " + (", ".join(m.missed_faults) or "none"))
    lines.append("noise (alerts outside every fault): " + (", ".join(m.noise) or "none"))
    lines.append("still firing: " + (", ".join(m.still_firing) or "none"))
    return lines


#: Each judged step of a rollout; the figure columns read "canary/stable".
ROLLOUT_STEP_COLUMNS = ["fault", "step", "at", "verdict", "errors", "p99 ms", "degraded", "quality"]


def _pair(a: float | None, b: float | None, fmt: Callable[[float | None], str]) -> str:
    return f"{fmt(a)}/{fmt(b)}"


def _ms0(value: float | None) -> str:
    return DASH if value is None else f"{value:.0f}"


def _pct1(value: float | None) -> str:
    return share(value, 1)


def rollout_step_rows(report: DrillReport) -> list[list[str]]:
    """One row per judged step of every rollout of the drill (canary/stable figures)."""
    rows = []
    for f in report.faults:
        if f.rollout is None:
            continue
        for step in f.rollout.steps:
            rows.append(
                [
                    f.id,
                    f"{step.weight:.0%}",
                    seconds(step.started_at),
                    step.verdict,
                    _pair(step.canary_error_ratio, step.stable_error_ratio, _pct1),
                    _pair(step.canary_p99_ms, step.stable_p99_ms, _ms0),
                    _pair(step.canary_degraded_share, step.stable_degraded_share, _pct1),
                    share(step.quality, 0),
                ]
            )
    return rows


def rollout_lines(report: DrillReport) -> list[str]:
    """Each rollout in sentences: how it ended against how it should have, and its exposure
    (first answer by the new version, the verdict, the last answer; answers and users)."""
    lines = []
    for f in report.faults:
        r = f.rollout
        if r is None:
            continue
        what = "a healthy version" if r.defect == "none" else f"defect {r.defect}"
        ended = r.status.replace("_", " ")
        if r.verdict and r.verdict != "promoted":
            ended = r.verdict if r.status == "rolled_back" else f"{ended}: {r.verdict}"
        lines.append(
            f"{f.id}: {r.version} ({what}) {ended}; expected {r.expected.replace('_', ' ')}"
            + ("" if r.analysis else "; analysis off")
        )
        last = None if r.last_exposure_at is None else r.last_exposure_at - r.started_at
        users = (
            f"{r.exposed_users} of {r.users} users ({share(r.exposed_users_share, 1)})"
            if r.users
            else "users unknown (records carry no user ids)"
        )
        lines.append(
            f"{f.id}: exposure: first answer by {r.version} after "
            f"{seconds(r.time_to_first_exposure_s)}, verdict after {seconds(r.time_to_verdict_s)}, "
            f"last answer after {seconds(last)}; {r.exposed_requests} answers to {users}"
            + (f"; quality lost {share(r.quality_lost, 0)}" if r.quality_lost is not None else "")
        )
    return lines


def data_lines(report: DrillReport) -> list[str]:
    """The drill's click events and each data_loss fault in sentences: what was acknowledged,
    what the store lost, the recovery point, when writes came back and the restore."""
    e = report.events
    if e is None:
        return []
    lines = []
    if e.readable:
        lines.append(
            f"events: {e.sent} sent, {e.acked} acknowledged, {e.failed} not; "
            f"{e.lost} acknowledged event(s) lost"
        )
    else:
        lines.append(
            f"events: {e.sent} sent, {e.acked} acknowledged; the store could not be read back"
        )
    event_backups = [b for b in e.backups if b.kind == "events"]
    newest = seconds(event_backups[-1].created_at) if event_backups else DASH
    lines.append(
        f"backups: {len(event_backups)} of the event store kept (newest at {newest}), "
        f"{sum(1 for b in e.backups if b.kind == 'models')} of the model store; "
        f"{e.backup_failures} failed"
    )
    for f in report.faults:
        d = f.data
        if d is None:
            continue
        since = (
            DASH
            if d.last_backup_at is None or f.injected_at is None
            else seconds(f.injected_at - d.last_backup_at)
        )
        restored = (
            f"restored {d.restored_from} ({seconds(d.backup_age_s)} old) in "
            f"{seconds((d.restored_at or 0) - (d.restore_started_at or 0))}"
            if d.restored_from
            else "no restore"
        )
        writes = (
            DASH
            if d.writes_back_at is None or f.injected_at is None
            else seconds(d.writes_back_at - f.injected_at)
        )
        if d.target == "event-store":
            lost = (
                f"{d.events_lost} of {d.acked_before} acknowledged event(s) lost, "
                f"RPO {seconds(d.rpo_s)}"
            )
            back = f"writes back after {writes} ({d.writes_failed} refused); "
        else:
            lost, back = "replicas served from memory", ""
        quality = (
            f"; quality {share(d.quality_during, 1)} (before: {share(d.quality_before, 1)})"
            if d.quality_during is not None
            else ""
        )
        stale = f"; features stale {seconds(d.features_stale_s)}" if d.features_stale_s else ""
        lines.append(f"{f.id}: {d.target} {d.mode}: {lost}; last backup {since} before the fault")
        lines.append(f"{f.id}: {back}{restored}; RTO {seconds(d.rto_s)}{stale}{quality}")
    return lines
