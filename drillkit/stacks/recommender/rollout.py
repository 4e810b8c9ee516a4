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

from drillkit import safejson
from drillkit.backends.base import StackState
from drillkit.errors import ArtifactError, EnvironmentFailure, InputError, StateError
from drillkit.faults.base import ROLE_GATEWAY, ROLE_REPLICA
from drillkit.fsutil import atomic_write
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
_POLL = 0.25
_PROBE_RATE = 10.0  # golden-user probes per second on the canary pool
_REFERENCE_USERS = 200
_K = 10
#: Statuses of a rollout that has ended.
ENDED = ("promoted", "rolled_back", "aborted", "failed")

Status = Literal["running", "promoted", "rolled_back", "aborted", "failed"]


# -- figures and the verdict -------------------------------------------------------------------


@dataclass(frozen=True)
class PoolFigures:
    """One pool over one step: from the gateway's counters."""

    attempts: int
    failed: int
    p99_ms: float | None
    users_requests: int
    degraded: int

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
    )


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
        if canary.p99_ms > limit:
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


def read_rollout(state: StackState[Any]) -> dict[str, Any] | None:
    """The stack's last rollout as its controller wrote it, or None."""
    path = rollout_path(state)
    try:
        data = safejson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateError(f"{path}: unreadable rollout state: {exc}") from None
    if not isinstance(data, dict) or "status" not in data:
        raise StateError(f"{path}: not a rollout state")
    return data


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
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
        url = self.state.service(replica).url() + "/recommend"
        try:
            response = self.client.get(url, params={"user_id": user, "k": _K}, timeout=2.0)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        try:
            return [int(item["item_id"]) for item in response.json()["items"]]
        except (ValueError, KeyError, TypeError):
            return None


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

    def request_abort(self) -> None:
        with self._lock:
            self.data.setdefault("abort_requested_at", time.time())
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
        """Run every step; roll back on a failed analysis, an abort or an error. Returns the
        final record."""
        if not self.data:
            self.prepare()
        probe = self._start_probe()
        status: Status = "failed"
        try:
            status = self._steps(probe)
        except (EnvironmentFailure, httpx.HTTPError) as exc:
            self._verdict(f"error: {exc}")
            status = self._roll_back("failed")
        finally:
            self._stop_probe.set()
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

    def _steps(self, probe: _Probe) -> Status:
        stack = self.stack
        canary: list[str] = []
        n = len(stack.replicas)
        weight = 0.0
        for index, share in enumerate(self.steps):
            want = min(n, max(1, math.ceil(share * n - 1e-9)))
            joining = [r for r in stack.replicas if r not in canary][: want - len(canary)]
            if joining:
                # In the canary pool first, at the old share: stable users never reach it.
                stack.split(canary + joining, weight, self.version)
                canary += joining
                with self._lock:
                    self.data["canary"] = list(canary)
                for name in joining:
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
            deadline = time.monotonic() + self.interval
            while time.monotonic() < deadline:
                if self._aborted():
                    self._verdict("aborted by request")
                    return self._roll_back("aborted")
                time.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))
            after = stack.pools()
            ended = time.time()
            stable_before, stable_after = before.get("stable", {}), after.get("stable", {})
            stable = pool_delta(stable_before, stable_after)
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
            reasons = judge_step(figures, self.analysis) if self.analysis.enabled else []
            verdict = "fail" if reasons else "pass"
            result = {
                "step": index,
                "weight": share,
                "canary_replicas": list(canary),
                "started_at": started,
                "ended_at": ended,
                "verdict": verdict if self.analysis.enabled else "not judged",
                "reasons": reasons,
                "canary": figures.canary.as_json(),
                "stable": figures.stable.as_json(),
                "quality": quality,
                "probes": probes,
            }
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

    _baseline: PoolFigures | None = None

    def _promote(self) -> None:
        self.origin.set_current(self.version)
        self._verdict("promoted")
        self.stack.split([], 0.0, None)  # every replica serves the new version: one pool
        with self._lock:
            self.data["weight"] = 1.0
        self._event(f"promoted: CURRENT is {self.version}")

    def _roll_back(self, status: Status) -> Status:
        stack = self.stack
        canary = list(self.data.get("canary", []))
        # Users first: a share of 0 sends every user to stable with the next request.
        stack.split(canary, 0.0, self.version)
        with self._lock:
            self.data["weight"] = 0.0
        self._event("traffic on stable", replicas=canary)
        for name in canary:
            stack.serve(name, self.stable, self.stable_manifest.digest)
        stack.split([], 0.0, None)
        with self._lock:
            self.data["canary"] = []
            self.data["rolled_back_at"] = time.time()
        self._event(f"rolled back: {', '.join(canary) or 'no replica'} serving {self.stable}")
        return status

    # -- the quality probe ---------------------------------------------------------------------

    def _start_probe(self) -> _Probe:
        from drillkit.stacks.recommender.quality import load_golden

        golden, _ = load_golden(self.origin.version_dir(self.stable))
        probe = _Probe(golden)
        stack = self.stack
        users = sorted(golden)
        order = random.Random(self.seed).sample(users, min(len(users), _REFERENCE_USERS))
        stable = [r for r in stack.replicas if r not in self.data.get("canary", [])]
        for i, user in enumerate(order):
            items = stack.ask(stable[i % len(stable)], user)
            if items is not None and (hits := len(golden[user].intersection(items[:_K]))):
                probe.reference[user] = hits
        ordered = [u for u in order if u in probe.reference]
        if not ordered:
            return probe  # nothing to compare: quality is not judged

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

        threading.Thread(target=run, name="drillkit-rollout-probe", daemon=True).start()
        return probe


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
    if data is None or data.get("status") != "running":
        raise InputError(f"no rollout is running on stack {state.id}")
    if _pid_alive(data.get("pid")):
        (Path(state.run_dir) / ABORT_FILE).write_text("abort\n")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            current = read_rollout(state)
            if current is not None and current.get("status") != "running":
                return current
            time.sleep(0.1)
        raise EnvironmentFailure(
            f"the rollout's controller (pid {data.get('pid')}) did not roll back in {wait:g} s"
        )
    # The controller died: undo what the record says moved.
    stack = _Stack(state)
    try:
        canary = [r for r in data.get("canary", []) if r in stack.replicas]
        stack.split(canary, 0.0, data.get("version"))
        stable, digest = str(data["stable"]), str(data["stable_digest"])
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
