"""The JSON report, schema version 1 (``docs/report.md``), as pydantic models.

Every field of the contract is required. drillkit adds a few *extension* fields, all optional
with a default, so that a report that carries only the contract's fields still reads:

- ``faults[].evidence`` (what the fault did, in words) and ``faults[].detected_by`` (the
  ``"<source>: <what>"`` of the event that counted as detection, or null);
- ``checks[].credit`` (0..1, what the check earned before its weight), ``checks[].op``
  (``<=``, ``>=``, or ``==`` for yes/no checks, whose target and actual are 1 or 0) and
  ``checks[].detail`` (a human explanation);
- ``series[].quality`` (mean quality share of the window's probes), written only when known;
- ``faults[].cache_hit_before`` (the cache hit ratio before the fault) and
  ``faults[].cache_recovered_at`` (when it was back to 90 % of it), for a stack with a cache;
- ``phases[].zones`` (requests each zone answered) and ``phases[].cache_hit_ratio``;
- ``series[].zone_rps`` (requests per second answered by each zone, from the edge's
  ``X-Zone``) and ``series[].cache_hit_ratio`` (cache hits / lookups, from ``X-Cache``),
  written only for a stack with zones or a cache tier;
- ``faults[].alert_at``, ``faults[].notified_at``, ``faults[].time_to_alert_s``,
  ``faults[].time_to_notify_s`` and ``faults[].alerts`` (what monitoring did about the
  fault), and ``monitoring`` (every alert of the drill, the delay budget, missed faults,
  noise, alerts still firing), written only for a drill with monitoring;
- ``faults[].rollout`` (a rollout's steps, analysis verdict and exposure: answers and users
  reached by the new version, time to first exposure, to the verdict and to rollback),
  written only for a ``rollout`` or ``bad_rollout`` fault;
- ``faults[].data`` (a ``data_loss`` fault: acknowledged events lost, recovery point, time
  until writes are back, the restore and its backup's age, time to recover) and ``events``
  (the drill's click events: sent, acknowledged, lost; the backups and restores), written
  only for a stack with an event path;
- ``error`` (one line: why a drill ended in status ``error`` or ``interrupted``);
- ``notes`` (what a reader of the figures should know, such as a wall-clock step).

No other field is accepted: an unknown key is a typo or a report from a different schema.
"""

from __future__ import annotations

import os
import platform
from datetime import datetime
from typing import Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializationInfo, SerializerFunctionWrapHandler
from pydantic import model_serializer as _model_serializer

from drillkit import __version__
from drillkit.scoring.analyze import Analysis

__all__ = [
    "SCHEMA_VERSION",
    "AlertReport",
    "CheckReport",
    "DataLossReport",
    "DrillReport",
    "Environment",
    "EventsReport",
    "FaultReport",
    "LoadSummary",
    "LoadWorkerReport",
    "MonitoringReport",
    "PhaseReport",
    "RolloutReport",
    "RolloutStepReport",
    "ScenarioRef",
    "SeriesReport",
    "Status",
    "json_schema",
]

SCHEMA_VERSION: Final = 1

Status = Literal["passed", "failed", "error", "interrupted"]

#: The process exit code of each status (``docs/cli.md``).
EXIT_CODES: dict[str, int] = {"passed": 0, "failed": 1, "error": 3, "interrupted": 130}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Extended(_Model):
    """A model with extension fields that are written only when known: each one named in
    ``_omit_when_none`` is left out of the JSON while it is None."""

    _omit_when_none: ClassVar[tuple[str, ...]] = ()

    @_model_serializer(mode="wrap")
    def _drop_unknown(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in self._omit_when_none:
            if data.get(key) is None:
                data.pop(key, None)
        return data


class ScenarioRef(_Model):
    """The scenario file the drill ran."""

    name: str
    path: str
    sha256: str


class Environment(_Model):
    """Where the drill ran."""

    gpu: bool
    python: str
    host_cpus: int

    @classmethod
    def detect(cls, *, gpu: bool) -> Environment:
        """This machine; ``gpu`` says whether the stack used one (the caller knows)."""
        return cls(gpu=gpu, python=platform.python_version(), host_cpus=os.cpu_count() or 1)


class LoadWorkerReport(_Model):
    """One load-generator process, as the drill's record sink saw it."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    name: str
    host: str
    address: str = Field(description="The address it connected to the drill from.")
    records: int = Field(ge=0)
    clock_offset_ms: float = Field(
        description="How far its clock was ahead of the drill's, corrected in its records "
        "(0: the same within the measurement)."
    )
    rtt_ms: float | None = Field(description="Round trip of the clock measurement.")
    lost_at: float | None = Field(
        default=None, description="Seconds from t=0 it was lost (ended or fell silent)."
    )


class LoadSummary(_Extended):
    """What the load generator was asked for and what it achieved over the scored time."""

    _omit_when_none = ("workers", "lost_requests")

    target_rps: float
    achieved_rps: float
    requests: int
    generator_saturated: bool
    workers: list[LoadWorkerReport] | None = Field(
        default=None, description="Each load process (a drill whose load had workers)."
    )
    lost_requests: int | None = Field(
        default=None,
        ge=0,
        description="Requests a lost load worker did not offer (with ``workers``).",
    )


def lost_load_note(load: LoadSummary) -> str:
    """What a report says after its rates when a load worker was lost ("" otherwise)."""
    lost = [w for w in load.workers or [] if w.lost_at is not None]
    if not lost:
        return ""
    who = ", ".join(f"{w.name} at {w.lost_at:.1f}s" for w in lost)
    return f"; load worker lost ({who}): {load.lost_requests} requests not offered"


class PhaseReport(_Extended):
    """Figures of one phase ``[start, end)``; see :class:`drillkit.scoring.PhaseStats`."""

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
    quality: float | None
    # extensions, written only for a stack with zones or a cache tier
    zones: dict[str, int] | None = None
    cache_hit_ratio: float | None = None

    _omit_when_none: ClassVar[tuple[str, ...]] = ("zones", "cache_hit_ratio")


class RolloutStepReport(_Model):
    """One step of a rollout as its analysis judged it (times from t=0)."""

    weight: float
    started_at: float
    ended_at: float
    verdict: str
    reasons: list[str]
    quality: float | None
    canary_error_ratio: float | None
    stable_error_ratio: float | None
    canary_p99_ms: float | None
    stable_p99_ms: float | None
    canary_degraded_share: float | None
    stable_degraded_share: float | None


class RolloutReport(_Model):
    """A rollout: how it ended and whom the new version reached (times from t=0)."""

    version: str
    digest: str
    stable: str
    defect: str
    status: str
    expected: str
    verdict: str | None
    analysis: bool
    started_at: float
    verdict_at: float | None
    first_exposure_at: float | None
    last_exposure_at: float | None
    time_to_first_exposure_s: float | None
    time_to_verdict_s: float | None
    time_to_rollback_s: float | None
    exposed_requests: int
    exposed_users: int
    users: int
    exposed_users_share: float | None
    quality_lost: float | None
    quality: float | None
    steps: list[RolloutStepReport]


class DataLossReport(_Model):
    """What a ``data_loss`` fault took and how the stack got it back (times from t=0)."""

    target: str
    mode: str
    acked_before: int
    events_lost: int
    rpo_s: float | None
    writes_failed: int
    writes_back_at: float | None
    restore_started_at: float | None
    restored_at: float | None
    restored_from: str | None
    backup_age_s: float | None
    rto_s: float | None
    last_backup_at: float | None
    features_stale_s: float | None = None
    quality_before: float | None = None
    quality_during: float | None = None


class BackupMarkReport(_Model):
    kind: str
    created_at: float
    entries: int | None = None
    newest_event_at: float | None = None


class RestoreMarkReport(_Model):
    kind: str
    started_at: float
    finished_at: float
    backup: str
    backup_created_at: float | None = None
    carried: int | None = None


class EventsReport(_Model):
    """The drill's click events and the backups that keep them (``docs/report.md``)."""

    sent: int
    acked: int
    failed: int
    stored: int
    lost: int
    backups: list[BackupMarkReport]
    restores: list[RestoreMarkReport]
    backup_failures: int
    readable: bool
    stale: list[tuple[float, float | None]] = []


class FaultReport(_Extended):
    """One fault's timeline; times are seconds from t=0, null when it never happened."""

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
    # extensions
    evidence: str = ""
    detected_by: str | None = None
    slo_impact: bool | None = None
    restored_at: float | None = None
    cache_hit_before: float | None = None
    cache_recovered_at: float | None = None
    alert_at: float | None = None
    notified_at: float | None = None
    time_to_alert_s: float | None = None
    time_to_notify_s: float | None = None
    alerts: list[str] | None = None
    rollout: RolloutReport | None = None
    data: DataLossReport | None = None

    _omit_when_none: ClassVar[tuple[str, ...]] = (
        "data",
        "cache_hit_before",
        "cache_recovered_at",
        "alert_at",
        "notified_at",
        "time_to_alert_s",
        "time_to_notify_s",
        "alerts",
        "rollout",
    )


class CheckReport(_Model):
    """One judged figure; ``actual`` is null when the figure does not exist."""

    name: str
    phase: str
    target: float
    actual: float | None
    passed: bool
    weight: float
    critical: bool
    # extensions
    credit: float | None = None
    op: Literal["<=", ">=", "=="] | None = None
    detail: str = ""

    @property
    def earned(self) -> float:
        """The credit, or 1/0 from ``passed`` for a report that does not carry it."""
        if self.credit is not None:
            return self.credit
        return 1.0 if self.passed else 0.0


class SeriesReport(_Extended):
    """One time window of the series (100 ms unless the report says otherwise)."""

    t: float
    rps: float
    failed: int
    degraded: int
    p50_ms: float
    p99_ms: float
    # extensions, each written only when known
    quality: float | None = None
    zone_rps: dict[str, float] | None = None
    cache_hit_ratio: float | None = None

    _omit_when_none: ClassVar[tuple[str, ...]] = ("quality", "zone_rps", "cache_hit_ratio")


class AlertReport(_Model):
    """One alert of the drill; seconds from t=0, null when it did not happen."""

    name: str
    labels: dict[str, str]
    pending_at: float | None
    firing_at: float | None
    resolved_at: float | None  # null: still firing when the drill ended
    notified_at: float | None
    fault: str | None  # the fault it was given to; null: outside every fault's window


class MonitoringReport(_Model):
    """What monitoring did during the drill (``docs/report.md``, "Monitoring")."""

    source: Literal["stack", "external"]
    budget: dict[str, float]
    budget_s: float
    alerts: list[AlertReport]
    missed_faults: list[str]
    noise: list[str]
    still_firing: list[str]
    error: str | None = None


class DrillReport(_Extended):
    """A drill's report, as written to JSON and read back by ``drillkit report show``."""

    schema_version: Literal[1] = SCHEMA_VERSION
    drillkit_version: str
    scenario: ScenarioRef
    backend: str
    environment: Environment
    status: Status
    started_at: datetime
    finished_at: datetime
    score: float
    pass_score: float
    load: LoadSummary
    phases: list[PhaseReport]
    faults: list[FaultReport]
    checks: list[CheckReport]
    series: list[SeriesReport]
    # extensions
    error: str | None = None
    notes: list[str] = []
    """What a reader of the figures should know (a wall-clock step during the drill)."""
    monitoring: MonitoringReport | None = None
    events: EventsReport | None = None

    _omit_when_none: ClassVar[tuple[str, ...]] = ("monitoring", "events")

    @property
    def exit_code(self) -> int:
        """The exit code this drill's status calls for (``docs/cli.md``)."""
        return EXIT_CODES[self.status]

    @classmethod
    def from_analysis(
        cls,
        analysis: Analysis,
        *,
        scenario: ScenarioRef,
        backend: str,
        environment: Environment,
        started_at: datetime,
        finished_at: datetime,
        status: Status | None = None,
        error: str | None = None,
        notes: list[str] | None = None,
        drillkit_version: str = __version__,
    ) -> DrillReport:
        """The report of an analysed drill.

        ``status`` defaults to ``passed``/``failed`` from the analysis; pass ``error`` or
        ``interrupted`` (with ``error`` saying why) for a drill that did not run to its end.
        """
        return cls(
            drillkit_version=drillkit_version,
            scenario=scenario,
            backend=backend,
            environment=environment,
            status=status or ("passed" if analysis.passed else "failed"),
            started_at=started_at,
            finished_at=finished_at,
            score=analysis.score,
            pass_score=analysis.pass_score,
            # The report models mirror the analysis dataclasses field by field (extension
            # fields included); pydantic reads the attributes it declares and ignores the rest.
            load=LoadSummary(
                target_rps=analysis.target_rps,
                achieved_rps=analysis.achieved_rps,
                requests=analysis.requests,
                generator_saturated=analysis.generator_saturated,
                workers=[LoadWorkerReport.model_validate(w) for w in analysis.workers] or None,
                lost_requests=analysis.lost_requests if analysis.workers else None,
            ),
            phases=[PhaseReport.model_validate(p, from_attributes=True) for p in analysis.phases],
            faults=[FaultReport.model_validate(f, from_attributes=True) for f in analysis.faults],
            checks=[CheckReport.model_validate(c, from_attributes=True) for c in analysis.checks],
            series=[SeriesReport.model_validate(s, from_attributes=True) for s in analysis.series],
            error=error,
            notes=notes or [],
            monitoring=(
                None
                if analysis.monitoring is None
                else MonitoringReport.model_validate(analysis.monitoring, from_attributes=True)
            ),
            events=(
                None
                if analysis.events is None
                else EventsReport.model_validate(analysis.events, from_attributes=True)
            ),
        )


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a report, schema version 1 (``docs/report.schema.json``)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **DrillReport.model_json_schema(),
        "title": f"drillkit report, schema version {SCHEMA_VERSION}",
    }
