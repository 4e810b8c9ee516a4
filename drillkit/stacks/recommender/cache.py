"""A replica's cache tier: its zone's Redis, used cache-aside.

For each request the replica asks Redis, in one round trip (``MGET``), for the user's
recommendations and the user's features (the user tower's vector), both keyed by the served
model's digest so that a model change never serves another model's answers:

* recommendations cached: answered from them (``X-Cache: hit``);
* only the features cached: the index search runs, the user tower does not (``miss``);
* neither: the model computes both (``miss``), and both are written back in the background
  with the scenario's TTL, never delaying the answer.

Redis may be slow or gone. The replica never waits on it for longer than ``budget``
(20 ms by default): past that, and for ``cooldown`` after any failure, it answers without
the cache (``X-Cache: bypass``) and only tries Redis again when the cooldown has passed, so a
dead or hung Redis costs one budget per cooldown, not one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt

__all__ = ["CacheConfig", "CacheLookup", "ReplicaCache"]

log = logging.getLogger("drillkit.replica.cache")

Outcome = Literal["hit", "miss", "bypass"]
T = TypeVar("T")
#: Writes in flight at once; beyond that a write-back is dropped (the cache is best effort).
MAX_PENDING_WRITES = 64


@dataclass(frozen=True)
class CacheConfig:
    url: str  # redis://HOST:PORT or http://HOST:PORT (a plan's URL reference)
    ttl: float = 300.0
    budget: float = 0.02
    cooldown: float = 0.5


@dataclass(frozen=True)
class CacheLookup:
    outcome: Outcome
    recommendation: dict[str, Any] | None = None
    vector: npt.NDArray[np.float32] | None = None


async def _within(call: Awaitable[T], budget: float) -> T:
    """``call``'s result, or TimeoutError once ``budget`` has passed, whatever the call does
    with its cancellation: ``asyncio.wait_for`` waits for a cancelled call to finish, and a
    client that cleans up a broken connection on cancellation can take seconds to."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=budget)
    if not done:
        task.cancel()
        task.add_done_callback(_consume)
        raise TimeoutError(f"no answer within {budget * 1000:.0f} ms")
    return task.result()


def _consume(task: asyncio.Future[Any]) -> None:
    """Read an abandoned call's outcome, so that asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


class ReplicaCache:
    """The replica's client of its zone's Redis; all methods are for the event loop."""

    def __init__(self, config: CacheConfig) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        parts = urlsplit(config.url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"cache URL {config.url!r}: expected redis://HOST:PORT")
        self.config = config
        self.address = f"{parts.hostname}:{parts.port}"
        self._redis = redis.asyncio.Redis(
            host=parts.hostname,
            port=parts.port,
            socket_timeout=config.budget,
            socket_connect_timeout=config.budget,
            # No retries: the budget is the replica's, not the client's.
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            single_connection_client=False,
        )
        self._skip_until = 0.0
        self._pending: set[asyncio.Task[None]] = set()
        self.counts: dict[str, int] = {"hit": 0, "miss": 0, "bypass": 0}
        self.last_error: str | None = None
        self.down_since: float | None = None

    @staticmethod
    def keys(digest: str, user_id: int, k: int) -> tuple[str, str]:
        short = digest[:16]
        return f"rec:{short}:{user_id}:{k}", f"feat:{short}:{user_id}"

    def _failed(self, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + self.config.cooldown
        self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        if self.down_since is None:
            self.down_since = time.time()
            log.warning("cache %s unavailable, answering without it: %s", self.address, exc)

    async def lookup(self, digest: str, user_id: int, k: int) -> CacheLookup:
        """What the cache holds for this request, within the budget."""
        if time.monotonic() < self._skip_until:
            self.counts["bypass"] += 1
            return CacheLookup("bypass")
        rec_key, feat_key = self.keys(digest, user_id, k)
        try:
            found: list[Any] = await _within(
                self._redis.mget(rec_key, feat_key), self.config.budget
            )
            rec, feat = found
        except Exception as exc:  # a timeout, a refused connection, any client error
            self._failed(exc)
            self.counts["bypass"] += 1
            return CacheLookup("bypass")
        if self.down_since is not None:
            log.warning("cache %s answering again", self.address)
        self.down_since = None
        if rec is not None:
            with contextlib.suppress(ValueError, TypeError):
                self.counts["hit"] += 1
                return CacheLookup("hit", recommendation=json.loads(rec))
        vector = None
        if isinstance(feat, bytes) and len(feat) % 4 == 0:
            vector = np.frombuffer(feat, dtype=np.float32)
        self.counts["miss"] += 1
        return CacheLookup("miss", vector=vector)

    def store(
        self,
        digest: str,
        user_id: int,
        k: int,
        recommendation: dict[str, Any],
        vector: npt.NDArray[np.float32] | None,
    ) -> None:
        """Write back in the background; dropped when Redis is failing or too many writes
        are already in flight."""
        if time.monotonic() < self._skip_until or len(self._pending) >= MAX_PENDING_WRITES:
            return
        rec_key, feat_key = self.keys(digest, user_id, k)
        payload = json.dumps(recommendation, separators=(",", ":"))
        task = asyncio.get_running_loop().create_task(
            self._write(rec_key, payload, feat_key, vector)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(
        self, rec_key: str, payload: str, feat_key: str, vector: npt.NDArray[np.float32] | None
    ) -> None:
        ttl = max(1, round(self.config.ttl * 1000))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(rec_key, payload, px=ttl)
                if vector is not None:
                    pipe.set(feat_key, vector.astype(np.float32).tobytes(), px=ttl)
                await _within(pipe.execute(), self.config.budget * 5)
        except Exception as exc:  # best effort: a failed write only marks Redis failing
            self._failed(exc)

    def status(self) -> dict[str, Any]:
        lookups = sum(self.counts.values())
        return {
            "address": self.address,
            "state": "down" if self.down_since is not None else "up",
            "down_since": self.down_since,
            "last_error": self.last_error,
            "ttl": self.config.ttl,
            "budget": self.config.budget,
            **self.counts,
            "hit_ratio": self.counts["hit"] / lookups if lookups else None,
        }

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        with contextlib.suppress(Exception):
            await self._redis.aclose()


class RecentActivity:
    """The replica's reader of users' recent clicks (the feature updater's ``recent:<user>``
    lists in the event store), with the cache's rules: never wait longer than ``budget``, and
    after a failure answer without the features for ``cooldown``."""

    def __init__(self, url: str, *, budget: float = 0.02, cooldown: float = 0.5) -> None:
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"features URL {url!r}: expected redis://HOST:PORT")
        self.address = f"{parts.hostname}:{parts.port}"
        self.budget = budget
        self.cooldown = cooldown
        self._redis = redis.asyncio.Redis(
            host=parts.hostname,
            port=parts.port,
            socket_timeout=budget,
            socket_connect_timeout=budget,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._skip_until = 0.0
        self.counts: dict[str, int] = {"fresh": 0, "none": 0, "bypass": 0}
        self.last_error: str | None = None

    async def recent(self, user_id: int) -> tuple[str, frozenset[int]]:
        """``("fresh", items)``, ``("none", {})`` for a user with no clicks, or
        ``("bypass", {})`` when the store is slow or down."""
        from drillkit.stacks.recommender.features import recent_key

        if time.monotonic() < self._skip_until:
            self.counts["bypass"] += 1
            return "bypass", frozenset()
        try:
            found: list[Any] = await _within(
                self._redis.lrange(recent_key(user_id), 0, -1), self.budget
            )
            items = frozenset(int(x) for x in found)
        except Exception as exc:  # a timeout, a refused connection, a malformed entry
            self._skip_until = time.monotonic() + self.cooldown
            self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            self.counts["bypass"] += 1
            return "bypass", frozenset()
        outcome = "fresh" if items else "none"
        self.counts[outcome] += 1
        return outcome, items

    def status(self) -> dict[str, Any]:
        return {"address": self.address, "last_error": self.last_error, **self.counts}

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._redis.aclose()
