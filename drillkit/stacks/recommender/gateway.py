"""The gateway of the reference recommender stack.

It fronts N model-server replicas and keeps ``GET /recommend`` answering while replicas die:

- **Active health checks**: every ``check_interval`` each replica's ``/readyz`` is probed with
  ``check_timeout``; ``fall`` consecutive failures mark it ``down``, ``rise`` consecutive
  successes bring it back ``up``. The first round runs before the gateway accepts traffic, and
  its verdict is taken at once (``unknown`` becomes ``up`` or ``down`` after one check).
- **Passive ejection**: a real request that fails (connect error, timeout, reset, 5xx) ejects
  its replica at once (state ``ejected``); only ``rise`` good active checks readmit it.
- **Retries**: a request is retried up to ``retries`` times, each time on a different ``up``
  replica not yet tried, each attempt bounded by ``try_timeout`` and all of them together by
  ``deadline``. A 4xx from a replica is the client's fault: it is passed through, never retried.
- **Fallback**: when no replica answered (none up, every attempt failed, or the deadline ran
  out) the client gets a 200 with the popular-items list, ``"degraded": true``,
  ``"model_version": "fallback"`` and ``X-Degraded: true``. Without a fallback list it gets a
  503 JSON error instead. A degraded answer is never silent: the header, the body, the
  ``outcome="degraded"`` counter and ``X-Fallback-Reason`` all say so. With ``retries=0``
  every failed attempt therefore reaches the client as a degraded answer (or a 503): that is
  the knob a drill turns to show what retries buy.

Every ``/recommend`` answer carries ``X-Attempts`` (replicas tried); a proxied one also
``X-Replica``, ``X-Degraded: false`` and the replica's ``X-Model-Version``/``X-Model-Digest``
(and ``X-Cache`` when the replica uses a cache, ``X-Features`` when it reads users' recent
clicks) and body bytes, untouched. Each attempt tells
the replica when the gateway stops waiting (``X-Drillkit-Deadline``, unix seconds), so a
replica behind on its queue skips work nobody waits for any more. Client requests reach the
replicas over the gateway's own small keep-alive HTTP/1.1 client (:class:`_Upstream`, see
there why not httpx); so do the health checks, over a pool of their own.

**Rollouts** (gray release): ``POST /admin/rollout`` (token-protected, like a replica's
reload) names the replicas of a *canary* pool and the share of users routed to it. The split
is by user, not by request: a user whose id hashes below the share always reaches the canary
pool (while one of its replicas is up), everyone else the stable pool, so the users a bad
version can reach are a bounded, countable set. A canary user whose pool cannot answer is
retried on the stable pool; a stable user never reaches the canary pool (with no stable
replica left, the fallback answers it). While a canary pool exists, attempts are counted per
pool (outcome, latency) in ``GET /status``'s ``rollout`` section and on ``/metrics``: what a
rollout's analysis compares (outside rollouts the hot path does none of it).

Replica states: ``unknown`` -> ``up`` | ``down``; ``up`` -> ``down`` (active) | ``ejected``
(passive); ``ejected`` -> ``down`` (``fall`` failed checks confirm it) | ``up``; ``down`` ->
``up``. Only ``up`` replicas are routed to. Every change is logged at once on logger
``drillkit.gateway`` and shown, timestamped, by ``GET /status``.

This module must stay light: it never imports torch, faiss or numpy, so the gateway starts in
well under a second. Run it with::

    python -m drillkit.stacks.recommender.gateway --port 8080 \\
        --replica replica-1=http://127.0.0.1:41001 --replica replica-2=http://127.0.0.1:41002 \\
        --fallback store/versions/v2
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import enum
import errno
import functools
import hmac
import logging
import os
import re
import ssl
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from drillkit import safejson
from drillkit.errors import DrillkitError, InputError
from drillkit.stacks.recommender.events import STREAM, parse_event
from drillkit.stacks.recommender.spec import GatewaySettings

__all__ = ["GatewayConfig", "create_app", "main"]

logger = logging.getLogger("drillkit.gateway")

_K_DEFAULT = 10
_K_MAX = 1000
# Strict on purpose: int() also accepts " 7", "7_0" and non-ASCII digits; a replica may not.
_INT_RE = re.compile(r"-?[0-9]{1,18}")
# Latency buckets from 1 ms (a cache-hot proxied answer) to 2 s (twice the default deadline).
_LATENCY_BUCKETS = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0,
)  # fmt: skip
# Below this much time left an attempt cannot succeed; serving the fallback now is better.
_MIN_ATTEMPT_SECONDS = 0.002
# A shed answer after this long without one starts a new shedding episode in /status.
_SHED_EPISODE_GAP = 1.0
# Sent on every proxied attempt: the unix time at which the gateway stops waiting for it.
DEADLINE_HEADER = "X-Drillkit-Deadline"
#: The popular-items list in a model version's folder.
FALLBACK_FILE = "popular.json"
#: Largest body of POST /events; an event is about 80 bytes.
_MAX_EVENT_BODY = 1024
#: Least time between two resets of the event store's connection pool.
_EVENT_POOL_RESET_S = 0.5
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}
#: The environment variable naming the file that holds the admin token (``_FILE`` appended).
ADMIN_TOKEN_ENV = "DRILLKIT_ADMIN_TOKEN"
#: The pools of a rollout.
STABLE, CANARY = "stable", "canary"
_POOLS = (STABLE, CANARY)
_POOL_ORDER = {STABLE: (STABLE,), CANARY: (CANARY, STABLE)}
_BUCKETS = 1 << 24


# The defaults of every setting, shared with the scenario format and the CLI.
_DEFAULTS = GatewaySettings()


@dataclass
class GatewayConfig:
    """Settings of one gateway.

    Attributes:
        replicas: ``(name, base_url)`` pairs, e.g. ``("replica-1", "http://127.0.0.1:41001")``.
        check_interval: period of the active ``/readyz`` checks, seconds.
        check_timeout: timeout of one active check, seconds.
        fall: consecutive failed checks that mark an ``up`` (or ``ejected``) replica ``down``.
        rise: consecutive good checks that bring a ``down`` or ``ejected`` replica back ``up``.
        passive_ejection: eject a replica at once when a real request to it fails.
        retries: extra attempts of one request, each on a different replica.
        try_timeout: timeout of one attempt, seconds.
        deadline: total budget of one client request, retries included, seconds.
        max_outstanding: requests one replica may have in flight from this gateway; a replica
            at the cap is skipped, and when every replica is, the request is answered at once
            from the fallback (or 503) instead of queueing: load beyond what the replicas can
            serve is shed, not queued without bound. 0 means no cap. The default leaves room
            for bursts (20 load-generator users firing together at two replicas queue ~10
            each, a few ms apart) while bounding a replica's queue to ~100 ms of CPU work.
        fallback_items: popular items ``{"item_id": .., "score": ..}`` served, degraded, when
            no replica answers; empty means answer 503 instead.
        name: the gateway's name in ``/status``.
    """

    replicas: list[tuple[str, str]]
    check_interval: float = _DEFAULTS.check_interval
    check_timeout: float = _DEFAULTS.check_timeout
    fall: int = _DEFAULTS.fall
    rise: int = _DEFAULTS.rise
    passive_ejection: bool = _DEFAULTS.passive_ejection
    retries: int = _DEFAULTS.retries
    try_timeout: float = _DEFAULTS.try_timeout
    deadline: float = _DEFAULTS.deadline
    max_outstanding: int = _DEFAULTS.max_outstanding
    fallback_items: list[dict[str, object]] = field(default_factory=list)
    name: str = "gateway"
    events: str | None = None  # redis://HOST:PORT of the event store; None: no POST /events
    events_timeout: float = 1.0

    def __post_init__(self) -> None:
        if not self.replicas:
            raise InputError("gateway: replicas: at least one replica is required")
        names = [name for name, _ in self.replicas]
        if len(set(names)) != len(names):
            raise InputError(f"gateway: replicas: names must be unique, got {names}")
        for name, url in self.replicas:
            parts = urlsplit(url)
            if not name or parts.scheme not in ("http", "https") or not parts.hostname:
                raise InputError(
                    f"gateway: replicas: expected a name and an http(s) URL, got {name!r}={url!r}"
                )
        for attr in ("check_interval", "check_timeout", "try_timeout", "deadline"):
            if not getattr(self, attr) > 0:
                raise InputError(f"gateway: {attr}: must be > 0, got {getattr(self, attr)}")
        for attr in ("fall", "rise"):
            if getattr(self, attr) < 1:
                raise InputError(f"gateway: {attr}: must be >= 1, got {getattr(self, attr)}")
        if self.retries < 0:
            raise InputError(f"gateway: retries: must be >= 0, got {self.retries}")
        if self.events is not None:
            parts = urlsplit(self.events)
            if parts.scheme not in ("redis", "http") or not parts.hostname or not parts.port:
                raise InputError(
                    f"gateway: events: expected redis://HOST:PORT, got {self.events!r}"
                )
        for i, item in enumerate(self.fallback_items):
            if not isinstance(item, dict) or "item_id" not in item:
                raise InputError(f"gateway: fallback_items[{i}]: expected an object with item_id")


class _State(enum.StrEnum):
    UNKNOWN = "unknown"
    UP = "up"
    DOWN = "down"
    EJECTED = "ejected"


@dataclass(eq=False)
class _Replica:
    """What the gateway knows about one replica; mutated only on the event loop."""

    name: str
    url: str
    state: _State = _State.UNKNOWN
    since: float = field(default_factory=time.time)
    reason: str = "not checked yet"
    last_check: float | None = None
    last_check_ok: bool | None = None
    last_check_reason: str | None = None
    consecutive_ok: int = 0
    consecutive_fail: int = 0
    model_version: str | None = None
    model_digest: str | None = None
    requests: int = 0
    failures: int = 0
    ejections: int = 0
    outstanding: int = 0
    pool: str = STABLE
    # Bumped on every state change so a check that straddles one is discarded: its result
    # describes the replica before the change.
    generation: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "url": self.url,
            "state": str(self.state),
            "since": self.since,
            "reason": self.reason,
            "last_check": self.last_check,
            "last_check_ok": self.last_check_ok,
            "last_check_reason": self.last_check_reason,
            "consecutive_ok": self.consecutive_ok,
            "consecutive_fail": self.consecutive_fail,
            "model_version": self.model_version,
            "model_digest": self.model_digest,
            "requests": self.requests,
            "failures": self.failures,
            "ejections": self.ejections,
            "outstanding": self.outstanding,
            "pool": self.pool,
        }


class _AttemptFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _ProtocolError(Exception):
    """The replica's answer is not HTTP/1.1 we can read."""


class _StaleConnection(Exception):
    """A pooled connection was closed by the replica while idle; nothing was received."""


class _ConnectFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class _UpstreamResponse:
    status_code: int
    headers: dict[str, str]  # names lower-cased
    content: bytes


@dataclass(slots=True, eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def close(self) -> None:
        self.writer.close()


class _Upstream:
    """Keep-alive HTTP/1.1 GETs to one replica over asyncio streams.

    Why not httpx here: measured on the 2-core target, an ``httpx.AsyncClient`` GET costs
    0.8 ms of CPU alone and 2 ms at 16 concurrent requests (httpcore's pool rescans every
    connection per request under an anyio lock; encode/httpx#3215), which caps the gateway
    near 400 requests/s on a whole core. This client costs ~0.1 ms. It only needs what a
    replica sends: status line, headers, a Content-Length or chunked body.

    Idle connections are reused last-in first-out and dropped after ``idle_expiry`` (below
    uvicorn's 5 s keep-alive, so the replica rarely closes one under us); when it does, the
    request is resent once on a fresh connection, which is safe because it is a GET.
    """

    def __init__(self, base_url: str, *, max_idle: int = 256, idle_expiry: float = 4.0) -> None:
        parts = urlsplit(base_url)
        assert parts.hostname is not None  # GatewayConfig checked it
        self._host = parts.hostname
        self._tls = parts.scheme == "https"
        self._port = parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        default_port = self._port == (443 if self._tls else 80)
        host_header = self._host if default_port else f"{self._host}:{self._port}"
        self._head_tail = (
            f" HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: drillkit-gateway\r\n"
            "Accept: application/json\r\n"
        ).encode("latin-1")
        self._idle: list[_Connection] = []
        self._max_idle = max_idle
        self._idle_expiry = idle_expiry

    async def get(self, target: str, *, expires: float | None = None) -> _UpstreamResponse:
        """GET ``target`` (path and query); the caller bounds it with a timeout.

        ``expires`` (unix seconds) is sent as ``X-Drillkit-Deadline``: the moment the caller
        gives up, after which the replica should not spend work on the request.
        """
        request = b"GET " + self._prefix.encode() + target.encode("latin-1") + self._head_tail
        if expires is not None:
            request += f"{DEADLINE_HEADER}: {expires:.3f}\r\n".encode()
        request += b"\r\n"
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if (
                now - conn.idle_since > self._idle_expiry
                or conn.reader.at_eof()
                or conn.writer.is_closing()
            ):
                conn.close()
                continue
            try:
                return await self._exchange(conn, request, reused=True)
            except _StaleConnection:
                # The replica closed it, so it probably closed (or restarted past) the others.
                self.close()
                break
        return await self._exchange(await self._connect(), request, reused=False)

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self._host, self._port, ssl=_tls_context() if self._tls else None
            )
        except ConnectionRefusedError:
            raise _ConnectFailed("connect refused") from None
        except OSError as exc:
            reason = "unreachable" if exc.errno in _UNREACHABLE else "connect error"
            raise _ConnectFailed(reason) from None
        return _Connection(reader, writer)

    async def _exchange(
        self, conn: _Connection, request: bytes, *, reused: bool
    ) -> _UpstreamResponse:
        reusable = False
        try:
            conn.writer.write(request)
            try:
                head = await conn.reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if reused and not exc.partial:
                    raise _StaleConnection from None
                raise
            except ConnectionResetError:
                if reused:
                    raise _StaleConnection from None
                raise
            except asyncio.LimitOverrunError:
                raise _ProtocolError("response head too large") from None
            status, headers, keep = _parse_head(head)
            length = headers.get("content-length")
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = await _read_chunked(conn.reader)
            elif length is not None:
                if not length.isdigit():
                    raise _ProtocolError("bad content-length")
                body = await conn.reader.readexactly(int(length))
            elif status in (204, 304):
                body = b""
            else:
                keep = False
                body = await conn.reader.read()
            reusable = keep
            return _UpstreamResponse(status, headers, body)
        finally:
            # Reuse only after a complete answer: on an error, a timeout or a cancellation the
            # connection may sit mid-response.
            if reusable and len(self._idle) < self._max_idle and not conn.writer.is_closing():
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        """Close the idle connections; in-flight ones close when their request ends."""
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def _parse_head(head: bytes) -> tuple[int, dict[str, str], bool]:
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
        raise _ProtocolError(f"bad status line {lines[0][:40]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise _ProtocolError("bad header line")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return int(rest[:3]), headers, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _ProtocolError("bad chunk size") from None
        if size == 0:
            # Trailers, if any, end with an empty line.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def user_bucket(user_id: int) -> float:
    """Where a user falls in ``[0, 1)`` for a rollout's split: the user reaches the canary
    pool while this is below the canary's share. A multiplicative hash of the id, so that
    consecutive ids spread evenly and a user keeps one bucket for the whole rollout."""
    return (((user_id * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> 40) / _BUCKETS


@dataclass
class _PoolStats:
    """Attempts to one pool's replicas and the client outcomes of its users, since start."""

    attempts_ok: int = 0
    attempts_failed: int = 0  # no answer, or a 5xx
    requests_ok: int = 0
    requests_degraded: int = 0
    requests_error: int = 0
    # Latency of answered attempts: counts per bucket of _LATENCY_BUCKETS, then the overflow.
    latency_counts: list[int] = field(default_factory=lambda: [0] * (len(_LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0

    def observe(self, seconds: float) -> None:
        self.latency_counts[bisect.bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def as_json(self) -> dict[str, object]:
        return {
            "attempts_ok": self.attempts_ok,
            "attempts_failed": self.attempts_failed,
            "requests_ok": self.requests_ok,
            "requests_degraded": self.requests_degraded,
            "requests_error": self.requests_error,
            "latency_buckets": list(_LATENCY_BUCKETS),
            "latency_counts": list(self.latency_counts),
            "latency_sum": self.latency_sum,
        }


@functools.cache
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class _Metrics:
    def __init__(self, replicas: list[_Replica]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "drillkit_gateway_requests",
            "Client requests to /recommend, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.ok = self.requests.labels(outcome="ok")
        self.degraded = self.requests.labels(outcome="degraded")
        self.client_error = self.requests.labels(outcome="client_error")
        self.error = self.requests.labels(outcome="error")
        self.seconds = Histogram(
            "drillkit_gateway_request_seconds",
            "Time to answer /recommend, retries and fallback included.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.replica_up = Gauge(
            "drillkit_gateway_replica_up",
            "1 when the replica is routable (state up), else 0.",
            ["replica"],
            registry=r,
        )
        self.retries = Counter(
            "drillkit_gateway_retries", "Attempts beyond the first one.", registry=r
        )
        self.shed = Counter(
            "drillkit_gateway_shed",
            "Requests answered from the fallback at once because every replica was at its "
            "in-flight cap (load shedding).",
            registry=r,
        )
        self.fallbacks = Counter(
            "drillkit_gateway_fallbacks",
            "Requests answered without a replica (degraded or 503).",
            registry=r,
        )
        self.ejections = Counter(
            "drillkit_gateway_ejections",
            "Passive ejections of a replica after a failed request.",
            ["replica", "reason"],
            registry=r,
        )
        self.state_changes = Counter(
            "drillkit_gateway_replica_state_changes",
            "Replica state changes, by new state.",
            ["replica", "state"],
            registry=r,
        )
        self.canary_weight = Gauge(
            "drillkit_gateway_canary_weight",
            "Share of users routed to the canary pool of a rollout (0: no rollout).",
            registry=r,
        )
        self.pool_attempts = Counter(
            "drillkit_gateway_pool_attempts",
            "Attempts on a pool's replicas, by outcome (ok, failed).",
            ["pool", "outcome"],
            registry=r,
        )
        self.pool_seconds = Histogram(
            "drillkit_gateway_pool_attempt_seconds",
            "Time of answered attempts, by pool.",
            ["pool"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.pool_ok = {p: self.pool_attempts.labels(pool=p, outcome="ok") for p in _POOLS}
        self.pool_failed = {p: self.pool_attempts.labels(pool=p, outcome="failed") for p in _POOLS}
        self.pool_latency = {p: self.pool_seconds.labels(pool=p) for p in _POOLS}
        self.events = Counter(
            "drillkit_gateway_events",
            "Click events to POST /events, by outcome (stored, refused: a bad body, failed: "
            "the event store did not store it).",
            ["outcome"],
            registry=r,
        )
        self.events_stored = self.events.labels(outcome="stored")
        self.events_refused = self.events.labels(outcome="refused")
        self.events_failed = self.events.labels(outcome="failed")
        for rep in replicas:
            self.replica_up.labels(replica=rep.name).set(0)


class _Gateway:
    """The routing core; one per app, living on the app's event loop."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.replicas = [_Replica(name, url.rstrip("/")) for name, url in config.replicas]
        self.metrics = _Metrics(self.replicas)
        self._up: list[_Replica] = []
        # The routable replicas of each pool; both empty pools but stable when no rollout runs.
        self._up_pool: dict[str, list[_Replica]] = {STABLE: [], CANARY: []}
        self._rr_pool = {STABLE: 0, CANARY: 0}
        self._pools = {STABLE: _PoolStats(), CANARY: _PoolStats()}
        self._weight = 0.0  # share of users sent to the canary pool
        # Per-pool figures are kept only while a canary pool exists: no cost outside rollouts.
        self._counting = False
        self._rollout: dict[str, object] = {"version": None, "since": None, "changes": 0}
        self.admin_token: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._upstreams = {r.name: _Upstream(r.url) for r in self.replicas}
        # Checks have their own connections, apart from client traffic, so a flood of requests
        # cannot starve them and make a healthy replica look dead. (They used httpx, whose
        # pool wedged for good after an overload cancelled many checks mid-request: every
        # later check timed out waiting for a connection, so a drained, healthy replica stayed
        # down.) A cancelled check just closes its connection.
        self._checkers = {r.name: _Upstream(r.url, max_idle=1) for r in self.replicas}
        # Shedding episodes, for /status: the first shed after a quiet second starts one.
        self._shed_total = 0
        self._shed_since: float | None = None
        self._shed_last = 0.0
        self._events: object | None = None  # redis.asyncio.Redis of the event store
        self._events_reset = 0.0
        self._background: set[asyncio.Task[None]] = set()

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self.config.events is not None:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            parts = urlsplit(self.config.events)
            self._events = redis.asyncio.Redis(
                host=parts.hostname or "127.0.0.1",
                port=parts.port or 6379,
                socket_timeout=self.config.events_timeout,
                socket_connect_timeout=self.config.events_timeout,
                retry=Retry(NoBackoff(), 0),  # a failed write is the client's to retry
                health_check_interval=0,
            )
        await asyncio.gather(*(self._check(r) for r in self.replicas))
        self._tasks = [
            asyncio.create_task(self._check_loop(r), name=f"check-{r.name}") for r in self.replicas
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for upstream in (*self._upstreams.values(), *self._checkers.values()):
            upstream.close()
        if self._events is not None:
            with contextlib.suppress(Exception):
                await self._events.aclose()  # type: ignore[attr-defined]
        logger.info("gateway %s stopped: health checks cancelled, clients closed", self.config.name)

    # -- state ------------------------------------------------------------------------------

    def _set_state(self, r: _Replica, new: _State, reason: str, now: float | None = None) -> None:
        old = r.state
        r.state = new
        r.since = time.time() if now is None else now
        r.reason = reason
        r.generation += 1
        if new is not _State.UP:
            r.consecutive_ok = 0
            # Whatever comes back may be a restarted process: start it on fresh connections.
            self._upstreams[r.name].close()
        self._routable()
        self.metrics.replica_up.labels(replica=r.name).set(1 if new is _State.UP else 0)
        self.metrics.state_changes.labels(replica=r.name, state=str(new)).inc()
        level = logging.INFO if new is _State.UP else logging.WARNING
        logger.log(level, "replica %s: %s -> %s (%s) at %.3f", r.name, old, new, reason, r.since)

    def _routable(self) -> None:
        self._up = [x for x in self.replicas if x.state is _State.UP]
        for pool in (STABLE, CANARY):
            self._up_pool[pool] = [x for x in self._up if x.pool == pool]

    def set_rollout(self, canary: list[str], weight: float, version: str | None) -> None:
        """Route ``weight`` of the users to the replicas ``canary`` (empty: no rollout)."""
        known = {r.name for r in self.replicas}
        unknown = sorted(set(canary) - known)
        if unknown:
            raise InputError(f"canary: unknown replicas {unknown}; the gateway has {sorted(known)}")
        if not 0.0 <= weight <= 1.0:
            raise InputError(f"weight: expected a share in 0..1, got {weight}")
        if weight > 0 and not canary:
            raise InputError("weight: a share above 0 needs canary replicas")
        for r in self.replicas:
            r.pool = CANARY if r.name in canary else STABLE
        self._weight = weight
        self._counting = bool(canary)
        self._routable()
        self.metrics.canary_weight.set(weight)
        changes = int(str(self._rollout["changes"])) + 1
        self._rollout = {
            "version": version if canary else None,
            "since": time.time(),
            "changes": changes,
        }
        logger.warning(
            "rollout: %s of users to canary %s (version %s)", weight, sorted(canary), version
        )

    def rollout_json(self) -> dict[str, object]:
        return {
            **self._rollout,
            "weight": self._weight,
            "canary": [r.name for r in self.replicas if r.pool == CANARY],
            "pools": {pool: stats.as_json() for pool, stats in self._pools.items()},
        }

    def _record_check(self, r: _Replica, ok: bool, reason: str, body: dict[str, object]) -> None:
        now = r.last_check = time.time()
        r.last_check_ok = ok
        r.last_check_reason = reason
        rise, fall = self.config.rise, self.config.fall
        if ok:
            r.consecutive_ok += 1
            r.consecutive_fail = 0
            raw_version, raw_digest = body.get("model_version"), body.get("model_digest")
            version = None if raw_version is None else str(raw_version)
            digest = None if raw_digest is None else str(raw_digest)
            if r.model_version is not None and (version, digest) != (
                r.model_version,
                r.model_digest,
            ):
                logger.info(
                    "replica %s: model %s (%s) -> %s (%s)",
                    r.name,
                    r.model_version,
                    r.model_digest,
                    version,
                    digest,
                )
            r.model_version, r.model_digest = version, digest
            if r.state is _State.UNKNOWN:
                self._set_state(r, _State.UP, "first check ok", now)
            elif r.state is not _State.UP and r.consecutive_ok >= rise:
                self._set_state(r, _State.UP, f"{r.consecutive_ok} good checks", now)
        else:
            r.consecutive_fail += 1
            r.consecutive_ok = 0
            if r.state is _State.UNKNOWN or (
                r.state in (_State.UP, _State.EJECTED) and r.consecutive_fail >= fall
            ):
                self._set_state(r, _State.DOWN, reason, now)

    def _eject(self, r: _Replica, reason: str) -> None:
        # Only an up replica can be ejected: requests already in flight when it went down
        # report the same fault again and must not count twice.
        if r.state is not _State.UP:
            return
        r.ejections += 1
        r.consecutive_fail = 0
        self.metrics.ejections.labels(replica=r.name, reason=reason).inc()
        self._set_state(r, _State.EJECTED, reason)

    # -- active checks ----------------------------------------------------------------------

    async def _probe(self, r: _Replica) -> tuple[bool, str, dict[str, object]]:
        try:
            async with asyncio.timeout(self.config.check_timeout):
                resp = await self._checkers[r.name].get("/readyz")
        except _ConnectFailed as exc:
            return False, exc.reason, {}
        except TimeoutError:
            return False, "timeout", {}
        except (asyncio.IncompleteReadError, ConnectionError):
            return False, "check error: connection reset", {}
        except _ProtocolError:
            return False, "check error: protocol error", {}
        except OSError as exc:
            return False, f"check error: {type(exc).__name__}", {}
        if resp.status_code != 200:
            return False, f"readyz {resp.status_code}", {}
        try:
            body = safejson.loads(resp.content)
        except ValueError:
            return False, "readyz not json", {}
        if not isinstance(body, dict) or body.get("ready") is not True:
            return False, "readyz not ready", {}
        return True, "readyz ok", body

    async def _check(self, r: _Replica) -> None:
        generation = r.generation
        ok, reason, body = await self._probe(r)
        if r.generation != generation:
            return
        self._record_check(r, ok, reason, body)

    async def _check_loop(self, r: _Replica) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.check_interval
        next_at = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            # Fixed-rate ticks, skipping any missed while a check hung up to its timeout.
            next_at = max(next_at + interval, loop.time())
            try:
                await self._check(r)
            except Exception:  # a check loop must outlive any bug in one check
                logger.exception("replica %s: health check crashed", r.name)

    # -- routing ----------------------------------------------------------------------------

    def _pick(self, tried: list[_Replica], pool: str) -> _Replica | Literal["full"] | None:
        """The next routable replica not tried yet, round robin, from ``pool``; a canary user
        falls back to the stable pool, never the other way: a stable user reaches the new
        version under no failure (no replica of its own: the fallback answers). ``"full"``
        when the only ones left are at their ``max_outstanding`` cap."""
        full = False
        for name in _POOL_ORDER[pool]:
            up = self._up_pool[name]
            n = len(up)
            if n == 0:
                continue
            start = self._rr_pool[name] % n
            self._rr_pool[name] = (start + 1) % n
            cap = self.config.max_outstanding
            for i in range(n):
                r = up[(start + i) % n]
                if r in tried:
                    continue
                if cap and r.outstanding >= cap:
                    full = True
                    continue
                return r
        return "full" if full else None

    def _note_shed(self) -> None:
        self.metrics.shed.inc()
        now = time.time()
        if now - self._shed_last > _SHED_EPISODE_GAP:
            self._shed_since = now
        self._shed_last = now
        self._shed_total += 1

    async def _attempt(self, r: _Replica, target: str, timeout: float) -> _UpstreamResponse:
        # The replica drops a request whose deadline passed while it sat in its queue: under
        # overload, work on attempts this gateway abandoned would delay every later request.
        expires = time.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._upstreams[r.name].get(target, expires=expires)
        except _ConnectFailed as exc:
            raise _AttemptFailed(exc.reason) from None
        except TimeoutError:
            raise _AttemptFailed("timeout") from None
        except (asyncio.IncompleteReadError, ConnectionError):
            raise _AttemptFailed("connection reset") from None
        except _ProtocolError:
            raise _AttemptFailed("protocol error") from None
        except OSError:
            raise _AttemptFailed("io error") from None

    async def recommend(self, request: Request) -> Response:
        started = time.perf_counter()
        try:
            response = await self._recommend(request, started)
        finally:
            self.metrics.seconds.observe(time.perf_counter() - started)
        return response

    async def _recommend(self, request: Request, started: float) -> Response:
        query = request.query_params
        raw_user, raw_k = query.get("user_id"), query.get("k")
        if raw_user is None or not _INT_RE.fullmatch(raw_user):
            self.metrics.client_error.inc()
            return _error(400, "user_id: required, an integer")
        if raw_k is None:
            k = _K_DEFAULT
        elif not _INT_RE.fullmatch(raw_k) or not 1 <= int(raw_k) <= _K_MAX:
            self.metrics.client_error.inc()
            return _error(400, f"k: expected an integer in 1..{_K_MAX}")
        else:
            k = int(raw_k)
        user_id = int(raw_user)
        path = f"/recommend?user_id={user_id}&k={k}"

        config = self.config
        deadline = started + config.deadline
        tried: list[_Replica] = []
        last = ""
        pool = CANARY if self._weight and user_bucket(user_id) < self._weight else STABLE
        while True:
            if len(tried) > config.retries:
                why = f"retries exhausted, last {last}"
                break
            r = self._pick(tried, pool)
            if r == "full":
                self._note_shed()
                why = "overloaded: every replica at its in-flight cap"
                break
            if r is None:
                why = f"no other replica up, last {last}" if tried else "no replica up"
                break
            remaining = deadline - time.perf_counter()
            if remaining < _MIN_ATTEMPT_SECONDS:
                why = f"deadline exceeded, last {last}"
                break
            if tried:
                self.metrics.retries.inc()
            tried.append(r)
            r.requests += 1
            r.outstanding += 1
            counting = self._counting
            attempt_started = time.perf_counter() if counting else 0.0
            try:
                resp = await self._attempt(r, path, min(config.try_timeout, remaining))
                if resp.status_code >= 500:
                    raise _AttemptFailed("5xx")
            except _AttemptFailed as failed:
                r.failures += 1
                if counting:
                    self._pools[r.pool].attempts_failed += 1
                    self.metrics.pool_failed[r.pool].inc()
                last = f"{r.name}: {failed.reason}"
                if config.passive_ejection:
                    self._eject(r, failed.reason)
                continue
            finally:
                r.outstanding -= 1
            if counting:  # per-pool figures only while a rollout has a canary pool
                took = time.perf_counter() - attempt_started
                stats = self._pools[r.pool]
                stats.attempts_ok += 1
                stats.observe(took)
                self.metrics.pool_ok[r.pool].inc()
                self.metrics.pool_latency[r.pool].observe(took)
            if resp.status_code >= 400:
                self.metrics.client_error.inc()
            else:
                self.metrics.ok.inc()
                if counting:
                    self._pools[pool].requests_ok += 1
            # Pass the replica's bytes through untouched: re-encoding JSON would cost more
            # than the whole proxy hop.
            headers = {"X-Replica": r.name, "X-Degraded": "false", "X-Attempts": str(len(tried))}
            if counting:
                headers["X-Pool"] = r.pool
            for name, key in (
                ("X-Model-Version", "x-model-version"),
                ("X-Model-Digest", "x-model-digest"),
                ("X-Cache", "x-cache"),
                ("X-Features", "x-features"),
            ):
                value = resp.headers.get(key)
                if value is not None:
                    headers[name] = value
            return Response(
                resp.content,
                status_code=resp.status_code,
                headers=headers,
                media_type=resp.headers.get("content-type", "application/json"),
            )
        return self._fallback(user_id, k, why, len(tried), pool)

    def _fallback(self, user_id: int, k: int, why: str, attempts: int, pool: str) -> Response:
        self.metrics.fallbacks.inc()
        headers = {
            "X-Degraded": "true",
            "X-Model-Version": "fallback",
            "X-Fallback-Reason": why,
            "X-Attempts": str(attempts),
        }
        if not self.config.fallback_items:
            self.metrics.error.inc()
            if self._counting:
                self._pools[pool].requests_error += 1
            return JSONResponse(
                {"error": f"no replica answered ({why}) and no fallback list is configured"},
                status_code=503,
                headers=headers,
            )
        self.metrics.degraded.inc()
        if self._counting:
            self._pools[pool].requests_degraded += 1
        body = {
            "user_id": user_id,
            "items": self.config.fallback_items[:k],
            "model_version": "fallback",
            "degraded": True,
            "cold_start": False,
        }
        return JSONResponse(body, headers=headers)

    # -- other endpoints --------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(self, request: Request) -> Response:
        up = len(self._up)
        return JSONResponse(
            {"ready": up > 0, "replicas_up": up, "replicas": len(self.replicas)},
            status_code=200 if up else 503,
        )

    async def status(self, request: Request) -> Response:
        # Not dataclasses.asdict: it would deep-copy the whole fallback list at every poll.
        settings: dict[str, object] = {
            f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)
        }
        settings["fallback_items"] = len(self.config.fallback_items)
        settings["replicas"] = [list(pair) for pair in self.config.replicas]
        return JSONResponse(
            {
                "gateway": self.config.name,
                "time": time.time(),
                "config": settings,
                "replicas": [r.as_json() for r in self.replicas],
                "shedding": {
                    "total": self._shed_total,
                    "since": self._shed_since,
                    "last": self._shed_last or None,
                },
                "rollout": self.rollout_json(),
            }
        )

    async def admin_rollout(self, request: Request) -> Response:
        """``POST /admin/rollout`` ``{"canary": [names], "weight": share, "version": v}``."""
        token = self.admin_token
        if not token:
            return _error(403, "admin endpoints are disabled (no token set)")
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return _error(401, "missing or wrong admin token")
        try:
            body = safejson.loads(await request.body())
        except ValueError:
            return _error(400, "expected a JSON object")
        if not isinstance(body, dict) or set(body) - {"canary", "weight", "version"}:
            return _error(400, "expected an object with canary, weight and version")
        canary, weight, version = body.get("canary", []), body.get("weight", 0), body.get("version")
        if (
            not isinstance(canary, list)
            or not all(isinstance(name, str) for name in canary)
            or type(weight) not in (int, float)
            or not (version is None or isinstance(version, str))
        ):
            return _error(400, "canary: a list of names, weight: a number, version: a string")
        try:
            self.set_rollout(canary, float(weight), version)
        except InputError as exc:
            return _error(400, str(exc))
        return JSONResponse(self.rollout_json())

    async def post_event(self, request: Request) -> Response:
        """``POST /events`` ``{"producer", "seq", "user", "item"}``: 200 ``{"id": ...}`` once the
        event store stored the event (the acknowledgement), 400 for a bad body, 503 when the
        store did not answer within ``events_timeout`` or refused."""
        store = self._events
        if store is None:
            return _error(404, "this stack has no event store (events.enabled is off)")
        try:
            body = await _small_body(request, _MAX_EVENT_BODY)
            event = parse_event(safejson.loads(body))
        except ValueError as exc:
            self.metrics.events_refused.inc()
            return _error(400, str(exc))
        try:
            entry = await asyncio.wait_for(
                store.xadd(STREAM, event.fields()),  # type: ignore[attr-defined]
                self.config.events_timeout,
            )
        except Exception as exc:  # refused, timed out, a store out of memory: not stored
            self.metrics.events_failed.inc()
            from redis.exceptions import ConnectionError as LostConnection
            from redis.exceptions import TimeoutError as LateAnswer

            if isinstance(exc, LostConnection | LateAnswer | TimeoutError | OSError):
                self._drop_event_connections()
            return _error(503, f"event store: {type(exc).__name__}: {exc}"[:200])
        self.metrics.events_stored.inc()
        entry_id = entry.decode() if isinstance(entry, bytes) else str(entry)
        return JSONResponse({"id": entry_id})

    def _drop_event_connections(self) -> None:
        """Close every pooled connection to the event store, at most twice a second: after a
        store restarts elsewhere (a container's new address, a host gone), each idle pooled
        connection would otherwise fail one more request, a timeout each, before it goes."""
        now = time.monotonic()
        if self._events is None or now - self._events_reset < _EVENT_POOL_RESET_S:
            return
        self._events_reset = now
        pool = self._events.connection_pool  # type: ignore[attr-defined]
        task = asyncio.get_running_loop().create_task(pool.disconnect(inuse_connections=False))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(
            generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


async def _small_body(request: Request, limit: int) -> bytes:
    """The request's body, read no further than ``limit`` bytes (an unauthenticated endpoint
    must not buffer whatever a client sends); ValueError beyond it."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ValueError(f"a body above {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ValueError(f"a body above {limit} bytes")
    return bytes(body)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def create_app(config: GatewayConfig, *, admin_token: str | None = None) -> Starlette:
    """Build the gateway app for ``config``.

    Health checks start, and the first round completes, in the app's lifespan startup; they
    stop and the HTTP clients close in its shutdown. ``app.state.gateway`` holds the routing
    core (internal; read ``GET /status`` instead).
    """
    gateway = _Gateway(config)
    gateway.admin_token = admin_token

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = Starlette(
        routes=[
            Route("/recommend", gateway.recommend, methods=["GET"]),
            Route("/healthz", gateway.healthz, methods=["GET"]),
            Route("/readyz", gateway.readyz, methods=["GET"]),
            Route("/status", gateway.status, methods=["GET"]),
            Route("/metrics", gateway.metrics_endpoint, methods=["GET"]),
            Route("/admin/rollout", gateway.admin_rollout, methods=["POST"]),
            Route("/events", gateway.post_event, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app


def _load_fallback(version_dir: Path) -> list[dict[str, object]]:
    """The popular-items list of a model version: ``popular.json``, read once and checked
    against the version's manifest (and signature) before a byte of it is served."""
    from drillkit.stacks.recommender.store import read_verified, verify_key

    _, files = read_verified(version_dir, [FALLBACK_FILE], key=verify_key())
    path = version_dir / FALLBACK_FILE
    try:
        data = safejson.loads(files[FALLBACK_FILE].decode("utf-8"))
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON: {exc}") from None
    if isinstance(data, dict):
        data = data.get("items")
    if not isinstance(data, list) or not all(
        isinstance(item, dict) and "item_id" in item for item in data
    ):
        raise InputError(f"{path}: expected a list of objects with item_id (or {{'items': [..]}})")
    return data


def admin_token() -> str | None:
    """The token admin endpoints ask for, from the file ``DRILLKIT_ADMIN_TOKEN_FILE`` names
    (a secret never travels in the environment, where ``docker inspect`` and
    ``/proc/PID/environ`` would show it); None: admin endpoints answer 403."""
    path = os.environ.get(ADMIN_TOKEN_ENV + "_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError as exc:
        raise SystemExit(f"error: {ADMIN_TOKEN_ENV}_FILE={path}: {exc.strerror}") from None


def _replica_arg(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected NAME=http://HOST:PORT, got {text!r}")
    return name, url


def _parser() -> argparse.ArgumentParser:
    defaults = argparse.Namespace(**{f.name: f.default for f in dataclasses.fields(GatewayConfig)})
    p = argparse.ArgumentParser(
        prog="python -m drillkit.stacks.recommender.gateway",
        description="Gateway of the drillkit reference recommender stack.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--name", default=defaults.name)
    p.add_argument(
        "--replica",
        type=_replica_arg,
        action="append",
        required=True,
        metavar="NAME=URL",
        help="a model-server replica; repeat for each",
    )
    p.add_argument(
        "--fallback",
        type=Path,
        metavar="VERSION_DIR",
        help="a model version folder: its verified popular.json is served when degraded",
    )
    p.add_argument("--check-interval", type=float, default=defaults.check_interval)
    p.add_argument("--check-timeout", type=float, default=defaults.check_timeout)
    p.add_argument("--fall", type=int, default=defaults.fall)
    p.add_argument("--rise", type=int, default=defaults.rise)
    p.add_argument("--retries", type=int, default=defaults.retries)
    p.add_argument("--try-timeout", type=float, default=defaults.try_timeout)
    p.add_argument("--deadline", type=float, default=defaults.deadline)
    p.add_argument(
        "--max-outstanding",
        type=int,
        default=defaults.max_outstanding,
        help="requests in flight per replica before load is shed (0: no cap)",
    )
    p.add_argument("--no-passive-ejection", action="store_true")
    p.add_argument(
        "--events",
        metavar="redis://HOST:PORT",
        help="the event store: POST /events appends to its stream",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--stack-id", default="", help="recorded for process identification")
    return p


def main(argv: list[str] | None = None) -> None:
    """Run the gateway until SIGINT/SIGTERM.

    uvicorn shuts down gracefully (in-flight requests finish, health checks stop, clients
    close), then re-raises the signal, so the exit status is that of the signal (-15 as seen by
    a parent for SIGTERM).
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    # httpx logs every request at INFO: at hundreds of requests/s that is the bottleneck.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = GatewayConfig(
            replicas=args.replica,
            check_interval=args.check_interval,
            check_timeout=args.check_timeout,
            fall=args.fall,
            rise=args.rise,
            passive_ejection=not args.no_passive_ejection,
            retries=args.retries,
            try_timeout=args.try_timeout,
            deadline=args.deadline,
            max_outstanding=args.max_outstanding,
            fallback_items=_load_fallback(args.fallback) if args.fallback else [],
            name=args.name,
            events=args.events,
        )
    except DrillkitError as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None

    from drillkit.listen import serve_asgi  # only the server process needs uvicorn

    serve_asgi(
        create_app(config, admin_token=admin_token()),
        host=args.host,
        port=args.port,
        loop="auto",
        http="auto",
        access_log=False,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
