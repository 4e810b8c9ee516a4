"""A rollout's exposure: who got answers from the new version, for how long, and whether the
rollout ended the way it should have.

The rollout's own record (its steps, the analysis verdict, when it rolled back) says what the
release machinery did; the per-request records say what users got. Every answer carries the
digest of the version that computed it and the user it was for, so:

- *first exposure*: the first answer by the new version; *last exposure*: the last one (time
  to rollback is from the rollout's start to it, for a rollout that was rolled back);
- *exposed requests*: answers by the new version; *exposed users*: distinct users among them,
  also as a share of the distinct users who sent a request while the new version was out
  (from the rollout's start to its last answer);
- *quality lost*: one minus the canary's recall on golden users as a share of the stable
  version's, measured by the analysis over the steps that exposed users (what the version
  costs each user it reaches); *quality*: the drill's own probe through the gateway over the
  rollout's window (what all users got: the loss times the share that was exposed).

A bad version must be rolled back and a good one promoted: the other outcome fails the
``<id>.rollout`` check, so a false rollback is a failed drill too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from drillkit.observe.records import Records

__all__ = ["RolloutResult", "RolloutRun", "RolloutStep", "exposure", "rollout_run"]

Outcome = Literal["promoted", "rolled_back"]


@dataclass(frozen=True, slots=True)
class RolloutStep:
    """One step as the analysis judged it; times in seconds from t=0."""

    weight: float
    started_at: float
    ended_at: float
    verdict: str  # pass, fail, not judged
    reasons: list[str] = field(default_factory=list)
    quality: float | None = None
    canary_error_ratio: float | None = None
    stable_error_ratio: float | None = None
    canary_p99_ms: float | None = None
    stable_p99_ms: float | None = None
    canary_degraded_share: float | None = None
    stable_degraded_share: float | None = None


@dataclass(frozen=True, slots=True)
class RolloutRun:
    """A rollout as its controller recorded it; times in seconds from t=0."""

    version: str
    digest: str
    stable: str
    status: str  # promoted, rolled_back, aborted (a person), stopped (the drill), failed
    verdict: str | None
    started_at: float
    verdict_at: float | None
    rolled_back_at: float | None
    ended_at: float | None
    analysis: bool
    expected: Outcome
    defect: str = "none"
    steps: list[RolloutStep] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RolloutResult:
    """What the report shows of a rollout (``faults[].rollout``)."""

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
    time_to_rollback_s: float | None  # to the last answer by the new version; rolled back only
    exposed_requests: int
    exposed_users: int
    users: int
    exposed_users_share: float | None
    quality_lost: float | None
    # What users got: the drill's quality probe (through the gateway) from the rollout's
    # start to its fault's end; None without a probe.
    quality: float | None
    steps: list[RolloutStep]


def rollout_run(data: dict[str, Any], t0: float, *, expected: Outcome, defect: str) -> RolloutRun:
    """The controller's record (epoch times) as a :class:`RolloutRun` relative to ``t0``."""

    def rel(value: Any) -> float | None:
        return None if value is None else float(value) - t0

    steps = []
    for step in data.get("step_results", []):
        canary, stable = step.get("canary", {}), step.get("stable", {})
        steps.append(
            RolloutStep(
                weight=float(step["weight"]),
                started_at=float(step["started_at"]) - t0,
                ended_at=float(step["ended_at"]) - t0,
                verdict=str(step["verdict"]),
                reasons=[str(r) for r in step.get("reasons", [])],
                quality=step.get("quality"),
                canary_error_ratio=canary.get("error_ratio"),
                stable_error_ratio=stable.get("error_ratio"),
                canary_p99_ms=canary.get("p99_ms"),
                stable_p99_ms=stable.get("p99_ms"),
                canary_degraded_share=canary.get("degraded_share"),
                stable_degraded_share=stable.get("degraded_share"),
            )
        )
    started = rel(data["started_at"])
    assert started is not None
    return RolloutRun(
        version=str(data["version"]),
        digest=str(data["digest"]),
        stable=str(data["stable"]),
        status=str(data["status"]),
        verdict=data.get("verdict"),
        started_at=started,
        verdict_at=rel(data.get("verdict_at")),
        rolled_back_at=rel(data.get("rolled_back_at")),
        ended_at=rel(data.get("ended_at")),
        analysis=bool(data.get("analysis", {}).get("enabled", True)),
        expected=expected,
        defect=defect,
        steps=steps,
    )


def exposure(
    run: RolloutRun, records: Records, end: float, quality: float | None = None
) -> RolloutResult:
    """The rollout's figures from the drill's records; ``end`` closes the rollout's window
    (its fault's heal, or the drill's end); ``quality`` is the drill probe's mean over it."""
    lo, hi = np.searchsorted(records.t, [run.started_at, end], side="left")
    t = records.t[lo:hi]
    users = records.user[lo:hi] if records.user is not None else None
    if records.digest is not None:
        exposed = (records.digest[lo:hi] == run.digest) & ~records.failed[lo:hi]
    else:
        exposed = np.zeros(t.shape[0], dtype=np.bool_)
    count = int(exposed.sum())
    first = float(t[exposed][0]) if count else None
    last = float(t[exposed][-1]) if count else None
    exposed_users = all_users = 0
    share = None
    if users is not None:
        known = users >= 0
        # The share is of the users who asked while the new version was out: from the start
        # to its last answer (or the rollout's end), not of everyone until the heal.
        out_until = last if last is not None else run.ended_at
        asked = known & (t <= out_until) if out_until is not None else known
        all_users = int(np.unique(users[asked]).size)
        exposed_users = int(np.unique(users[exposed & known]).size)
        share = exposed_users / all_users if all_users else None
    judged = [s.quality for s in run.steps if s.quality is not None]
    quality_lost = max(0.0, 1.0 - sum(judged) / len(judged)) if judged else None
    rolled_back = run.status in ("rolled_back", "aborted")
    return RolloutResult(
        version=run.version,
        digest=run.digest,
        stable=run.stable,
        defect=run.defect,
        status=run.status,
        expected=run.expected,
        verdict=run.verdict,
        analysis=run.analysis,
        started_at=run.started_at,
        verdict_at=run.verdict_at,
        first_exposure_at=first,
        last_exposure_at=last,
        time_to_first_exposure_s=None if first is None else first - run.started_at,
        time_to_verdict_s=None if run.verdict_at is None else run.verdict_at - run.started_at,
        time_to_rollback_s=(
            None
            if not rolled_back
            else (last if last is not None else run.started_at) - run.started_at
        ),
        exposed_requests=count,
        exposed_users=exposed_users,
        users=all_users,
        exposed_users_share=share,
        quality_lost=quality_lost,
        quality=quality,
        steps=list(run.steps),
    )
