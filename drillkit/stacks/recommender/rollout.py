"""Gray release with automatic rollback on the reference stack.

A rollout moves a share of the users to replicas serving a new version, step by step, and
judges each step before the next one:

1. At a step of ``w`` percent, ``ceil(w/100 * N)`` replicas (at least one) serve the new
   version. A replica joins the canary pool in the gateway *before* it reloads (stable users
   never reach it), loads the version from its own store copy (CURRENT of that copy moves;
   the origin's CURRENT does not), and only then does the gateway send ``w`` percent of the
   users to the pool: the split is by user (:func:`.gateway.user_bucket`), so a user sees one
   version for the whole step.
2. The step is held for ``interval`` and judged by the analysis, canary against stable, from the
   gateway's per-pool counters over the step (error ratio of attempts, p99 of answered
   attempts, degraded share of the pool's users) and from a quality probe that asks the canary
   replicas for golden users and counts their held-out items against what the stable version
   answered the same users when the rollout started (paired: one user's answer is compared
   with the same user's).
3. A failed analysis rolls back at once: the canary's share goes to 0 first (users are back
   on stable with the next request), then the canary replicas reload the stable version, then
   the pools are merged. The origin's CURRENT was never touched. A passed last step (100%)
   promotes: the origin's CURRENT names the new version.

The rollout's progress is a JSON file in the stack's folder (``rollout.json``, replaced
atomically at every change), which ``drillkit model rollout --status`` prints; ``--abort``
leaves a request file that the running controller acts on within a quarter second, or, when
no controller runs any more, rolls back itself.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drillkit import safejson
from drillkit.backends.base import StackState
from drillkit.errors import ArtifactError, EnvironmentFailure, InputError, StateError
from drillkit.faults.base import ROLE_GATEWAY, ROLE_REPLICA
from drillkit.fsutil import atomic_write, read_private
from drillkit.stacks.recommender.release import AnalysisSettings, parse_steps
from drillkit.stacks.recommender.store import Manifest

__all__ = [
    "ROLLOUT_FILE",
    "AnalysisSettings",
    "RolloutController",
    "StepFigures",
    "abort_rollout",
    "judge_step",
    "parse_steps",
    "publish_version",
    "read_rollout",
]

ROLLOUT_FILE = "rollout.json"
ABORT_FILE = "rollout.abort"
_POLL = 0.05  # how often a step looks for an abort request (a stat of one file)
_PROBE_RATE = 10.0  # golden-user probes per second on the canary pool
_REFERENCE_USERS = 200
_MIN_SLOW = 2  # canary answers past the p99 limit that a latency verdict needs
_REFERENCE_SECONDS = 10.0  # most time spent learning the stable version's answers
_K = 10
#: Statuses of a rollout that has ended.
ENDED = ("promoted", "rolled_back", "aborted", "stopped", "failed")

#: ``aborted``: by a person (``--abort``); ``stopped``: by the drill whose fault ended first;
#: ``failed``: an error, or a rollback that could not move every replica back.
Status = Literal["running", "promoted", "rolled_back", "aborted", "stopped", "failed"]


# -- figures and the verdict -------------------------------------------------------------------


@dataclass(frozen=True)
class PoolFigures:
    """One pool over one step: from the gateway's counters."""

    attempts: int
    failed: int
    p99_ms: float | None
    users_requests: int
    degraded: int
    # The step's latency histogram of answered attempts (bounds in seconds, counts with one
    # more for the overflow); empty when unknown.
    buckets: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()

    def slower_than(self, ms: float) -> int | None:
        """Answered attempts certainly slower than ``ms``: those in buckets whose lower bound
        is at least ``ms``; None without a histogram."""
        if not self.counts:
            return None
        lower = (0.0, *self.buckets)
        return sum(c for low, c in zip(lower, self.counts, strict=False) if low * 1000 >= ms)

    @property
    def error_ratio(self) -> float:
        return self.failed / self.attempts if self.attempts else 0.0

    @property
    def degraded_share(self) -> float:
        return self.degraded / self.users_requests if self.users_requests else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "failed": self.failed,
            "error_ratio": self.error_ratio,
            "p99_ms": self.p99_ms,
            "requests": self.users_requests,
            "degraded": self.degraded,
            "degraded_share": self.degraded_share,
        }


@dataclass(frozen=True)
class StepFigures:
    canary: PoolFigures
    stable: PoolFigures
    quality: float | None  # canary recall as a share of the stable version's
    probes: int


def pool_delta(before: dict[str, Any], after: dict[str, Any]) -> PoolFigures:
    """A pool's figures between two of the gateway's ``rollout.pools`` snapshots."""

    def d(key: str) -> int:
        return int(after.get(key, 0)) - int(before.get(key, 0))

    buckets = [float(b) for b in after.get("latency_buckets", [])]
    counts = [
        int(a) - int(b)
        for a, b in zip(
            after.get("latency_counts", []),
            before.get("latency_counts", [0] * (len(buckets) + 1)),
            strict=False,
        )
    ]
    return PoolFigures(
        attempts=d("attempts_ok") + d("attempts_failed"),
        failed=d("attempts_failed"),
        p99_ms=_quantile(buckets, counts, 0.99),
        users_requests=d("requests_ok") + d("requests_degraded") + d("requests_error"),
        degraded=d("requests_degraded") + d("requests_error"),
        buckets=tuple(buckets),
        counts=tuple(counts),
    )


def counters_reset(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether any pool counter went down between two snapshots (a restarted gateway)."""
    for pool in ("stable", "canary"):
        old, new = before.get(pool, {}), after.get(pool, {})
        for key in ("attempts_ok", "attempts_failed", "requests_ok", "requests_degraded"):
            if int(new.get(key, 0)) < int(old.get(key, 0)):
                return True
    return False


def _quantile(buckets: list[float], counts: list[int], q: float) -> float | None:
    """The ``q`` quantile of a histogram, in ms: the upper bound of the bucket it falls in
    (the overflow bucket reads as twice the largest bound)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        seen += count
        if seen >= rank:
            bound = buckets[i] if i < len(buckets) else 2 * buckets[-1]
            return bound * 1000.0
    return 2 * buckets[-1] * 1000.0


def judge_step(figures: StepFigures, settings: AnalysisSettings) -> list[str]:
    """Why the step fails (empty: it passes). Every rule compares the canary with the stable
    pool over the same step, except quality, which is paired per user."""
    reasons: list[str] = []
    canary, stable = figures.canary, figures.stable
    if canary.attempts < settings.min_answers:
        reasons.append(f"only {canary.attempts} canary attempts (< {settings.min_answers})")
        return reasons
    if canary.error_ratio - stable.error_ratio > settings.max_error_increase:
        reasons.append(
            f"error ratio {canary.error_ratio:.1%} vs stable {stable.error_ratio:.1%} "
            f"(max +{settings.max_error_increase:.1%})"
        )
    if canary.p99_ms is not None and stable.p99_ms is not None:
        limit = max(stable.p99_ms * settings.max_p99_ratio, stable.p99_ms + settings.p99_slack_ms)
        slow = canary.slower_than(limit)
        # Over a few dozen canary answers the p99 is the slowest one: one hiccup of a busy
        # host is not a regression, so at least two answers must be past the limit.
        if canary.p99_ms > limit and (slow is None or slow >= _MIN_SLOW):
            reasons.append(
                f"p99 {canary.p99_ms:.0f} ms vs stable {stable.p99_ms:.0f} ms (max {limit:.0f})"
            )
    if canary.degraded_share - stable.degraded_share > settings.max_degraded_increase:
        reasons.append(
            f"degraded {canary.degraded_share:.1%} vs stable {stable.degraded_share:.1%} "
            f"(max +{settings.max_degraded_increase:.1%})"
        )
    if figures.quality is not None and figures.quality < settings.min_quality:
        reasons.append(
            f"quality {figures.quality:.0%} of stable on {figures.probes} golden users "
            f"(min {settings.min_quality:.0%})"
        )
    return reasons


# -- the state file ---------------------------------------------------------------------------


def rollout_path(state: StackState[Any]) -> Path:
    return Path(state.run_dir) / ROLLOUT_FILE


_VERSION = r"^v[1-9][0-9]{0,8}$"
_MAX_RECORD = 4 << 20


class _StepRecord(BaseModel):
    """What ``--status`` and a drill read of one step (more keys are kept, unread)."""

    model_config = ConfigDict(extra="allow")

    weight: float = Field(ge=0, le=1)
    started_at: float
    ended_at: float
    verdict: str = Field(max_length=64)
    reasons: list[str] = Field(default_factory=list, max_length=16)
    quality: float | None = None
    canary: dict[str, float | int | None] = Field(default_factory=dict)
    stable: dict[str, float | int | None] = Field(default_factory=dict)


class _Record(BaseModel):
    """rollout.json as read back: every field the commands act on, checked (a record is a
    file on disk, possibly not drillkit's)."""

    model_config = ConfigDict(extra="allow")

    version: str = Field(pattern=_VERSION)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    stable: str = Field(pattern=_VERSION)
    stable_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    status: Literal["running", "promoted", "rolled_back", "aborted", "stopped", "failed"]
    pid: int = Field(strict=True, ge=1)
    started_at: float
    weight: float = Field(ge=0, le=1)
    canary: list[str] = Field(max_length=64)
    step_results: list[_StepRecord] = Field(default_factory=list, max_length=64)
    verdict: str | None = None


def read_rollout(state: StackState[Any]) -> dict[str, Any] | None:
    """The stack's last rollout as its controller wrote it, or None. Read as drillkit's own
    file (no link followed, this user's, bounded) and checked field by field: StateError,
    one line, for anything else."""
    path = rollout_path(state)
    try:
        data = safejson.loads(read_private(path, limit=_MAX_RECORD))
    except FileNotFoundError:
        return None
    except (InputError, OSError, ValueError) as exc:
        raise StateError(f"{path}: unreadable rollout state: {exc}") from None
    try:
        record = _Record.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise StateError(f"{path}: not a rollout record: {where}: {first['msg']}") from None
    return record.model_dump()


def _pid_alive(pid: object) -> bool:
    if type(pid) is not int or pid <= 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_rollout(state: StackState[Any]) -> dict[str, Any] | None:
    """The rollout in progress on this stack (its controller alive), or None."""
    data = read_rollout(state)
    if data is None or data.get("status") != "running":
        return None
    if not _pid_alive(data.get("pid")):
        return None
    return data


# -- the stack's pieces -----------------------------------------------------------------------


class _Stack:
    """The gateway's rollout endpoint and the replicas' stores, for one stack."""

    def __init__(self, state: StackState[Any], timeout: float = 30.0) -> None:
        from drillkit.stacks.recommender.preset import ADMIN_TOKEN

        self.state = state
        gateways = state.names_with_role(ROLE_GATEWAY)
        if len(gateways) != 1:
            raise InputError(
                f"stack {state.id} has {len(gateways)} gateways (zones): rollouts run on "
                "one-zone stacks"
            )
        self.gateway = gateways[0]
        self.replicas = state.names_with_role(ROLE_REPLICA)

        self.headers = {"Authorization": f"Bearer {state.secret(ADMIN_TOKEN)}"}
        self.client = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def split(self, canary: Sequence[str], weight: float, version: str | None) -> dict[str, Any]:
        url = self.state.service(self.gateway).url() + "/admin/rollout"
        body = {"canary": list(canary), "weight": weight, "version": version}
        try:
            response = self.client.post(url, json=body, headers=self.headers)
        except httpx.HTTPError as exc:
            raise EnvironmentFailure(f"{self.gateway}: rollout split failed: {exc}") from None
        if response.status_code != 200:
            raise EnvironmentFailure(
                f"{self.gateway}: rollout split answered {response.status_code}: "
                f"{response.text[:200]}"
            )
        result: dict[str, Any] = response.json()
        return result

    def canary(self) -> list[str]:
        """The replicas of the gateway's canary pool now."""
        url = self.state.service(self.gateway).url() + "/status"
        try:
            names = self.client.get(url).json()["rollout"]["canary"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise EnvironmentFailure(f"{self.gateway}: no rollout state: {exc}") from None
        return [n for n in names if isinstance(n, str) and n in self.replicas]

    def pools(self) -> dict[str, Any]:
        url = self.state.service(self.gateway).url() + "/status"
        try:
            response = self.client.get(url)
            pools: dict[str, Any] = response.json()["rollout"]["pools"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise EnvironmentFailure(f"{self.gateway}: no rollout counters: {exc}") from None
        return pools

    def serve(self, replica: str, version: str, digest: str) -> None:
        """Point ``replica``'s store copy at ``version`` and have it load that now; raises
        EnvironmentFailure when it refuses the version."""
        from drillkit.stacks.recommender.preset import admin_reload, replica_store
        from drillkit.stacks.recommender.store import ModelStore

        ModelStore(replica_store(self.state, replica)).set_current(version)
        outcome = admin_reload(self.state, replica)
        if outcome.get("serving") != version:
            raise EnvironmentFailure(
                f"{replica}: did not load {version}: {outcome.get('outcome')} "
                f"{outcome.get('error', '')}".strip()
            )
        url = self.state.service(replica).url() + "/readyz"
        with contextlib.suppress(httpx.HTTPError, ValueError):
            ready = self.client.get(url).json()
            if ready.get("model_digest") not in (None, digest):
                raise EnvironmentFailure(f"{replica}: serves {ready.get('model_digest')}")

    def ask(self, replica: str, user: int) -> list[int] | None:
        """``replica``'s top 10 for ``user``, as the drill's quality probe asks it."""
        from drillkit.stacks.recommender.quality import top_items

        url = self.state.service(replica).url() + "/recommend"
        return top_items(self.client, url, user, timeout=2.0)


# -- the controller ---------------------------------------------------------------------------


@dataclass
class _Probe:
    """Golden users asked of the canary pool, scored against the stable version's answers."""

    golden: dict[int, frozenset[int]]
    reference: dict[int, int] = field(default_factory=dict)  # user -> stable hits
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, hits, ref)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def quality(self, start: float, end: float) -> tuple[float | None, int]:
        with self.lock:
            window = [(h, r) for t, h, r in self.samples if start <= t < end]
        reference = sum(r for _, r in window)
        if not reference:
            return None, len(window)
        return sum(h for h, _ in window) / reference, len(window)


# Errors a rollout ends on as `failed` (after rolling back); anything else is re-raised.
_EXPECTED = (EnvironmentFailure, httpx.HTTPError, InputError, OSError, ValueError)


class RolloutController:
    """Runs one rollout on a running stack; :meth:`run` blocks until it ends."""

    def __init__(
        self,
        state: StackState[Any],
        version: str,
        *,
        steps: Sequence[float] = (0.1, 0.5, 1.0),
        interval: float = 10.0,
        analysis: AnalysisSettings | None = None,
        on_event: Callable[[str], None] | None = None,
        seed: int = 0,
    ) -> None:
        from drillkit.stacks.recommender.preset import origin_store
        from drillkit.stacks.recommender.store import ModelStore, verify_key

        if not interval > 0:
            raise InputError(f"interval: expected a duration above 0, got {interval}")
        self.steps = parse_steps(list(s * 100 for s in steps))
        self.state = state
        self.interval = float(interval)
        self.analysis = analysis or AnalysisSettings()
        self.on_event = on_event or (lambda message: None)
        self.seed = seed
        origin = ModelStore(origin_store(state))
        if version not in origin.versions():
            raise InputError(
                f"{version}: no such version in the stack's store {origin.root} "
                f"(have: {', '.join(origin.versions()) or 'none'})"
            )
        stable = origin.current()
        if stable is None:
            raise EnvironmentFailure(f"{origin.root}: no CURRENT version")
        if version == stable:
            raise InputError(f"{version}: already the served version (CURRENT)")
        key = verify_key()
        try:
            self.manifest = origin.verify(version, key=key)
        except ArtifactError as exc:
            raise InputError(f"{version}: does not verify: {exc}") from None
        self.stable_manifest = origin.verify(stable, key=key)
        self.origin = origin
        self.version = version
        self.stable = stable
        self._abort = threading.Event()
        self._abort_by: Literal["request", "heal"] = "request"
        self._stop_probe = threading.Event()
        self.data: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- the record ---------------------------------------------------------------------------

    def _write(self) -> None:
        _save(self.state, self.data)

    def _event(self, what: str, **fields: Any) -> None:
        now = time.time()
        with self._lock:
            self.data.setdefault("events", []).append({"t": now, "what": what, **fields})
            self._write()
        self.on_event(what)

    def request_abort(self, *, by: Literal["request", "heal"] = "request") -> None:
        with self._lock:
            self.data.setdefault("abort_requested_at", time.time())
        self._abort_by = by
        self._abort.set()

    def _aborted(self) -> bool:
        if self._abort.is_set():
            return True
        abort_file = Path(self.state.run_dir) / ABORT_FILE
        with contextlib.suppress(OSError):
            requested = abort_file.stat().st_mtime
            abort_file.unlink()
            with self._lock:
                self.data["abort_requested_at"] = requested
            self._abort.set()
        return self._abort.is_set()

    # -- the run -----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Refuse a second rollout, copy the version into every replica's store, verify it
        there, and write the record; nothing has moved yet when this raises."""
        from drillkit.stacks.recommender.preset import replica_store
        from drillkit.stacks.recommender.store import ModelStore, verify_key

        if (other := running_rollout(self.state)) is not None:
            raise StateError(
                f"a rollout of {other.get('version')} is running on stack {self.state.id} "
                f"(pid {other.get('pid')}); wait for it or `drillkit model rollout --abort`"
            )
        self.stack = _Stack(self.state)
        if len(self.stack.replicas) < 2:
            self.stack.close()
            raise InputError(
                f"stack {self.state.id} has {len(self.stack.replicas)} replica: a rollout "
                "needs two or more (a canary pool and a stable one)"
            )
        key = verify_key()
        for name in self.stack.replicas:
            store = ModelStore(replica_store(self.state, name))
            target = store.version_dir(self.version)
            if not target.exists():
                _copy_version(self.origin.version_dir(self.version), target)
            if store.verify(self.version, key=key).digest != self.manifest.digest:
                raise EnvironmentFailure(f"{target}: differs from the origin's {self.version}")
        with contextlib.suppress(OSError):
            (Path(self.state.run_dir) / ABORT_FILE).unlink()
        self.data = {
            "version": self.version,
            "digest": self.manifest.digest,
            "stable": self.stable,
            "stable_digest": self.stable_manifest.digest,
            "steps": list(self.steps),
            "interval": self.interval,
            "analysis": self.analysis.model_dump(),
            "status": "running",
            "pid": os.getpid(),
            "started_at": time.time(),
            "ended_at": None,
            "weight": 0.0,
            "canary": [],
            "step_results": [],
            "verdict": None,
            "verdict_at": None,
            "rolled_back_at": None,
            "events": [],
        }
        self._write()

    def run(self) -> dict[str, Any]:
        """Run every step; roll back on a failed analysis, an abort or an error (an interrupt
        too, re-raised once users are back on stable). Returns the final record."""
        if not self.data:
            self.prepare()
        status: Status = "failed"
        probe: threading.Thread | None = None
        try:
            probe_state, probe = self._start_probe()
            status = self._steps(probe_state)
        except BaseException as exc:
            # Whatever stopped the steps, users go back to stable before anything else.
            self._verdict(f"error: {type(exc).__name__}: {exc}")
            status = self._roll_back("failed")
            if not isinstance(exc, _EXPECTED):
                raise  # an interrupt (or a bug) once the rollback is done
        finally:
            self._stop_probe.set()
            if probe is not None:
                probe.join(timeout=5.0)  # before its client closes
            with self._lock:
                self.data["status"] = status
                self.data["ended_at"] = time.time()
                self._write()
            self.stack.close()
        return self.data

    def _verdict(self, text: str) -> None:
        with self._lock:
            if self.data.get("verdict") is None:
                self.data["verdict"] = text
                self.data["verdict_at"] = time.time()

    def _set_canary(self, canary: list[str]) -> None:
        """Name the canary replicas on disk before the gateway hears of them: a controller
        killed in between leaves a record that `--abort` can undo whole."""
        with self._lock:
            self.data["canary"] = list(canary)
            self._write()

    def _hold(self, seconds: float) -> bool:
        """Wait out a step; True when an abort came first."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._aborted():
                return True
            time.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))
        return self._aborted()

    def _steps(self, probe: _Probe) -> Status:
        stack = self.stack
        canary: list[str] = []
        n = len(stack.replicas)
        weight = 0.0
        for index, share in enumerate(self.steps):
            # Below 100% one replica at least stays stable: stable users keep a pool of their
            # own (they are never sent to the canary's).
            cap = n if share >= 1.0 else n - 1
            want = min(cap, max(1, math.ceil(share * n - 1e-9)))
            joining = [r for r in stack.replicas if r not in canary][: want - len(canary)]
            if joining and share >= 1.0:
                # The last step: every user to the canary pool first, then the rest of the
                # replicas join it (they serve no one while they reload).
                stack.split(canary, share, self.version)
                weight = share
            if joining:
                # In the canary pool before they reload: stable users never reach them.
                self._set_canary(canary + joining)
                stack.split(canary + joining, weight, self.version)
                canary += joining
                for name in joining:
                    if self._aborted():
                        self._verdict(self._abort_reason())
                        return self._roll_back(self._abort_status())
                    stack.serve(name, self.version, self.manifest.digest)
                self._event(f"{', '.join(joining)} serving {self.version}", replicas=joining)
            weight = share
            before = stack.pools()
            stack.split(canary, weight, self.version)
            started = time.time()
            with self._lock:
                self.data["weight"] = weight
            self._event(
                f"step {index + 1}/{len(self.steps)}: {share:.0%} of users on {self.version}",
                step=index,
                weight=share,
            )
            if self._hold(self.interval):
                self._verdict(self._abort_reason())
                return self._roll_back(self._abort_status())
            after = stack.pools()
            ended = time.time()
            window = (before, after, started, ended)
            result, reasons = self._judge(index, share, canary, window, probe)
            with self._lock:
                self.data["step_results"].append(result)
            self._event(
                f"step {index + 1} {result['verdict']}"
                + (f": {'; '.join(reasons)}" if reasons else ""),
                step=index,
            )
            if reasons:
                self._verdict(f"rolled back at {share:.0%}: {'; '.join(reasons)}")
                return self._roll_back("rolled_back")
        self._promote()
        return "promoted"

    def _judge(
        self,
        index: int,
        share: float,
        canary: list[str],
        window: tuple[dict[str, Any], dict[str, Any], float, float],
        probe: _Probe,
    ) -> tuple[dict[str, Any], list[str]]:
        """A step's record and why it fails, from the gateway's counters before and after it
        (and when) and the quality probe's samples in between."""
        before, after, started, ended = window
        stable = pool_delta(before.get("stable", {}), after.get("stable", {}))
        if stable.attempts == 0:
            # Every replica is canary: the stable pool of the earlier steps is the baseline.
            stable = self._baseline or stable
        else:
            self._baseline = stable
        quality, probes = probe.quality(started, ended)
        figures = StepFigures(
            canary=pool_delta(before.get("canary", {}), after.get("canary", {})),
            stable=stable,
            quality=quality,
            probes=probes,
        )
        reasons: list[str] = []
        if self.analysis.enabled:
            if counters_reset(before, after):
                reasons = [
                    "the gateway's counters went back (restarted?): the step cannot be judged"
                ]
            else:
                reasons = judge_step(figures, self.analysis)
        result = {
            "step": index,
            "weight": share,
            "canary_replicas": list(canary),
            "started_at": started,
            "ended_at": ended,
            "verdict": ("fail" if reasons else "pass") if self.analysis.enabled else "not judged",
            "reasons": reasons,
            "canary": figures.canary.as_json(),
            "stable": figures.stable.as_json(),
            "quality": quality,
            "probes": probes,
        }
        return result, reasons

    _baseline: PoolFigures | None = None

    def _abort_reason(self) -> str:
        if self._abort_by == "heal":
            return "stopped by the drill (its fault ended) before any verdict"
        return "aborted by request"

    def _abort_status(self) -> Status:
        return "stopped" if self._abort_by == "heal" else "aborted"

    def _promote(self) -> None:
        self.origin.set_current(self.version)
        self._verdict("promoted")
        self.stack.split([], 0.0, None)  # every replica serves the new version: one pool
        with self._lock:
            self.data["weight"] = 1.0
            self.data["canary"] = []
        self._event(f"promoted: CURRENT is {self.version}")

    def _roll_back(self, status: Status) -> Status:
        """Users first (a share of 0), then every canary replica back on the stable version
        (each tried, whatever the others do), then one pool; the status is ``failed`` when a
        replica could not be moved back (the record keeps the canary list for `--abort`)."""
        stack = self.stack
        canary = list(self.data.get("canary", []))
        errors: list[str] = []
        try:
            stack.split(canary, 0.0, self.version)
        except EnvironmentFailure as exc:
            errors.append(str(exc))
        with self._lock:
            self.data["weight"] = 0.0
        self._event("traffic on stable", replicas=canary)
        moved: list[str] = []
        for name in canary:
            try:
                stack.serve(name, self.stable, self.stable_manifest.digest)
                moved.append(name)
            except (EnvironmentFailure, httpx.HTTPError, InputError, OSError, ValueError) as exc:
                errors.append(f"{name}: {exc}")
        left = [name for name in canary if name not in moved]
        if not left:
            try:
                stack.split([], 0.0, None)
            except EnvironmentFailure as exc:
                errors.append(str(exc))
        with self._lock:
            self.data["canary"] = left
            self.data["rolled_back_at"] = time.time()
            if errors:
                self.data["rollback_errors"] = errors
        if errors:
            self._event(f"rollback incomplete: {'; '.join(errors)}")
            return "failed"
        self._event(f"rolled back: {', '.join(canary) or 'no replica'} serving {self.stable}")
        return status

    # -- the quality probe ---------------------------------------------------------------------

    def _start_probe(self) -> tuple[_Probe, threading.Thread | None]:
        """The stable version's hits on golden users (asked of stable replicas, bounded in
        time and stopped by an abort), then a thread probing the canary pool."""
        from drillkit.stacks.recommender.quality import load_golden

        golden, _ = load_golden(self.origin.version_dir(self.stable))
        probe = _Probe(golden)
        stack = self.stack
        users = sorted(golden)
        order = random.Random(self.seed).sample(users, min(len(users), _REFERENCE_USERS))
        stable = [r for r in stack.replicas if r not in self.data.get("canary", [])]
        budget = time.monotonic() + _REFERENCE_SECONDS
        for i, user in enumerate(order):
            if time.monotonic() > budget or self._aborted():
                break
            items = stack.ask(stable[i % len(stable)], user)
            if items is not None and (hits := len(golden[user].intersection(items[:_K]))):
                probe.reference[user] = hits
        ordered = [u for u in order if u in probe.reference]
        if not ordered:
            return probe, None  # nothing to compare: quality is not judged

        def run() -> None:
            i = 0
            next_at = time.monotonic()
            while not self._stop_probe.wait(max(0.0, next_at - time.monotonic())):
                next_at = max(next_at + 1.0 / _PROBE_RATE, time.monotonic())
                with self._lock:
                    canary = list(self.data.get("canary", []))
                    live = self.data.get("weight", 0.0) > 0 and self.data.get("status") == "running"
                if not canary or not live:
                    continue
                user = ordered[i % len(ordered)]
                replica = canary[i % len(canary)]
                i += 1
                sent = time.time()
                items = stack.ask(replica, user)
                if items is None:
                    continue
                hits = len(probe.golden[user].intersection(items[:_K]))
                with probe.lock:
                    probe.samples.append((sent, hits, probe.reference[user]))

        thread = threading.Thread(target=run, name="drillkit-rollout-probe", daemon=True)
        thread.start()
        return probe, thread


def _copy_version(source: Path, target: Path) -> None:
    """A version folder copied whole into another store: into a hidden folder, then one
    rename (a reader sees the version complete or not at all)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True, symlinks=False)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def abort_rollout(state: StackState[Any], *, wait: float = 30.0) -> dict[str, Any]:
    """Ask the running rollout to roll back and wait for it; when its controller is gone,
    roll back here. Returns the final record; InputError when no rollout runs."""
    data = read_rollout(state)
    stuck = data is not None and data["status"] == "failed" and bool(data["canary"])
    if data is None or (data["status"] != "running" and not stuck):
        raise InputError(f"no rollout is running on stack {state.id}")
    if data["status"] == "running" and _pid_alive(data["pid"]):
        atomic_write(Path(state.run_dir) / ABORT_FILE, b"abort\n")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            current = read_rollout(state)
            if current is not None and current.get("status") != "running":
                return current
            time.sleep(0.1)
        raise EnvironmentFailure(
            f"the rollout's controller (pid {data.get('pid')}) did not roll back in {wait:g} s"
        )
    # The controller died, or its rollback stopped half way: undo what the record says moved,
    # back to the version the origin store still names (the record's `stable` must agree).
    from drillkit.stacks.recommender.preset import origin_store
    from drillkit.stacks.recommender.store import ModelStore, verify_key

    stable = ModelStore(origin_store(state)).current()
    if stable is None or stable != data["stable"]:
        raise StateError(
            f"{rollout_path(state)}: names {data['stable']} as stable, the store's CURRENT is "
            f"{stable}; roll back with `drillkit model rollback` instead"
        )
    digest = ModelStore(origin_store(state)).verify(stable, key=verify_key()).digest
    stack = _Stack(state)
    try:
        canary = [r for r in data["canary"] if r in stack.replicas] or stack.canary()
        stack.split(canary, 0.0, data["version"])
        for name in canary:
            stack.serve(name, stable, digest)
        stack.split([], 0.0, None)
    finally:
        stack.close()
    now = time.time()
    data.update(
        status="aborted",
        ended_at=now,
        weight=0.0,
        canary=[],
        rolled_back_at=now,
        verdict=data.get("verdict") or "aborted by request (controller gone)",
        verdict_at=data.get("verdict_at") or now,
    )
    _save(state, data)
    return data


def _save(state: StackState[Any], data: dict[str, Any]) -> None:
    atomic_write(rollout_path(state), json.dumps(data, indent=2).encode())


def publish_version(
    state: StackState[Any], defect: str, severity: float, *, seed: int = 0, note: str = ""
) -> Manifest:
    """A new version built from the stack's CURRENT with ``defect``, added to the origin store
    (signed when a signing key is set; CURRENT unchanged), ready for a rollout."""
    from drillkit.stacks.recommender.defects import DEFECTS, defect_info, defect_writer
    from drillkit.stacks.recommender.preset import origin_store
    from drillkit.stacks.recommender.store import ModelStore, read_manifest, signing_key

    origin = ModelStore(origin_store(state))
    current = origin.current()
    if current is None:
        raise EnvironmentFailure(f"{origin.root}: no CURRENT version to build from")
    source = origin.version_dir(current)
    manifest = read_manifest(source)
    text = note or f"built by drillkit from {current}, defect {defect}"
    if defect not in DEFECTS:
        raise InputError(f"defect: expected one of {', '.join(DEFECTS)}, got {defect!r}")
    return origin.add_version(
        defect_writer(source, defect, severity, seed),
        metrics=manifest.metrics,
        info=defect_info(manifest, defect, severity, text),
        key=signing_key(),
        make_current=False,
    )


def split_all_stable(state: StackState[Any]) -> None:
    """Merge the gateway's pools (no canary, no split): what a heal leaves behind."""
    stack = _Stack(state)
    try:
        stack.split([], 0.0, None)
    finally:
        stack.close()


def no_share(state: StackState[Any]) -> None:
    """Send no user to the gateway's canary pool, keeping its replicas in it (the first step of
    undoing a rollout whose controller is gone)."""
    stack = _Stack(state)
    try:
        stack.split(stack.canary(), 0.0, None)
    finally:
        stack.close()
