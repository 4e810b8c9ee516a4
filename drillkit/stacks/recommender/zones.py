"""Fault kinds of a zoned stack: ``zone_outage`` (a whole zone lost) and ``cache_flush``.

``zone_outage`` targets ``zone-<name>``:

``kill``
    every service of the zone dies at once (SIGKILL / container kill): its gateway, its
    replicas and its Redis, as when a data centre loses power. Healing restarts them in start
    order and waits for each to be ready.
``cut``
    the edge can no longer reach the zone (its links edge -> gateway cut): the zone still
    runs, the edge's health checks and requests to it hang (``blackhole``) or are refused
    (``reject``).
``isolate``
    the zone's replicas lose their gateway (the links gateway -> replica cut): the gateway
    runs, has no replica left, and must tell the edge so through its readiness.

``cache_flush`` empties a zone's Redis (``FLUSHALL``): nothing breaks, the load that follows
meets a cold cache. It cannot be undone; the cache refills itself as requests are served, and
the report's cache hit ratio shows how fast.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Literal

from pydantic import Field

from drillkit.errors import EnvironmentFailure, TargetError
from drillkit.faults.base import FaultKind, UndoModel, UndoRecord
from drillkit.faults.context import FaultContext
from drillkit.faults.params import FaultParams
from drillkit.stacks.plan import NAME_PATTERN, Link, ServicePlan
from drillkit.stacks.recommender.spec import ROLE_CACHE, ROLE_ZONE

__all__ = ["CacheFlush", "CacheFlushParams", "ZoneOutage", "ZoneOutageParams"]

_PROBE_TIMEOUT = 0.3
_GONE_WAIT = 2.0


class ZoneOutageParams(FaultParams):
    """``zone_outage``: how the zone is lost."""

    mode: Literal["kill", "cut", "isolate"] = Field(
        default="kill",
        description="kill: every service of the zone dies; cut: the edge cannot reach it; "
        "isolate: its replicas lose their gateway.",
    )
    cut: Literal["blackhole", "reject"] = Field(
        default="blackhole",
        description="For cut and isolate: connections hang (blackhole) or are refused (reject).",
    )


class _ZoneUndo(UndoModel):
    mode: Literal["kill", "cut", "isolate"]
    services: tuple[str, ...] = ()
    links: tuple[str, ...] = ()

    def checked_services(self) -> tuple[str, ...]:
        import re

        for name in self.services:
            if not re.fullmatch(NAME_PATTERN, name):
                raise TargetError(f"undo record refused: {name!r} is not a service name")
        return self.services


def zone_services(ctx: FaultContext, target: str) -> list[ServicePlan]:
    """The services of zone ``zone-<name>`` in start order; TargetError for no such zone."""
    zone = target.removeprefix("zone-")
    members = [s for s in ctx.state.plan.services if s.zone == zone]
    if not target.startswith("zone-") or not members:
        zones = sorted({s.zone for s in ctx.state.plan.services if s.zone})
        known = ", ".join(f"zone-{z}" for z in zones) or "none: the stack has one zone"
        raise TargetError(f"{target!r} is not a zone of stack {ctx.state.id} (zones: {known})")
    order = [s.name for wave in ctx.state.plan.start_order() for s in wave]
    return sorted(members, key=lambda s: order.index(s.name))


def _zone_links(ctx: FaultContext, target: str, mode: str) -> list[Link]:
    names = {s.name for s in zone_services(ctx, target)}
    gateway = f"gateway-{target.removeprefix('zone-')}"
    if mode == "cut":  # the edge's links into the zone
        links = [lk for lk in ctx.state.plan.links if lk.target in names and lk.source not in names]
    else:  # isolate: the zone's gateway to its replicas
        links = [lk for lk in ctx.state.plan.links if lk.source == gateway and lk.target in names]
    if not links:
        raise TargetError(f"no link to cut for {mode} of {target} in stack {ctx.state.id}")
    return links


class ZoneOutage(FaultKind[ZoneOutageParams]):
    name: ClassVar[str] = "zone_outage"
    Params = ZoneOutageParams
    description: ClassVar[str] = (
        "a whole zone is lost: killed, cut off from the edge, or its replicas cut off"
    )
    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_ZONE})
    needs: ClassVar[frozenset[str]] = frozenset({"cut_link"})

    def apply(self, ctx: FaultContext, target: str, params: ZoneOutageParams) -> UndoRecord:
        if params.mode == "kill":
            services = [s.name for s in zone_services(ctx, target)]
            record = ctx.begin(self.name, target, {"mode": "kill", "services": services})
            # All at once, as a power loss: one by one, a zone's gateway would outlive its
            # replicas (a container kill takes a while) and answer from its fallback.
            with ThreadPoolExecutor(max_workers=len(services)) as pool:
                for done in [
                    pool.submit(ctx.backend.kill, ctx.state, name, signal="KILL")
                    for name in reversed(services)  # the zone's entry first
                ]:
                    done.result()
            return record
        links = _zone_links(ctx, target, params.mode)
        record = ctx.begin(
            self.name, target, {"mode": params.mode, "links": [lk.name for lk in links]}
        )
        for link in links:
            ctx.backend.cut_link(ctx.state, link, mode=params.cut)
        return record

    def check_applied(
        self, ctx: FaultContext, target: str, params: ZoneOutageParams, record: UndoRecord
    ) -> str:
        undo = _ZoneUndo.parse(record)
        if undo.mode == "kill":
            services = undo.checked_services()
            deadline = time.monotonic() + _GONE_WAIT
            alive = list(services)
            while alive and time.monotonic() < deadline:
                alive = [n for n in alive if ctx.backend.service_alive(ctx.state, n)]
                if alive:
                    time.sleep(0.01)
            if alive:
                raise EnvironmentFailure(f"{', '.join(alive)} still running after SIGKILL")
            return f"{target}: {', '.join(services)} gone after SIGKILL"
        expected = {"blackhole": ("hung",), "reject": ("refused", "reset")}[params.cut]
        lines = []
        for link in _links(ctx, undo):
            outcome, took = ctx.backend.probe_link(ctx.state, link, timeout=_PROBE_TIMEOUT)
            if outcome not in expected:
                raise EnvironmentFailure(f"link {link.source}->{link.target} {outcome}")
            lines.append(f"{link.source}->{link.target} {outcome} ({took * 1000:.0f} ms)")
        return f"{target} {params.mode}: " + "; ".join(lines)

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        undo = _ZoneUndo.parse(record)
        if undo.mode != "kill":
            for link in _links(ctx, undo):
                ctx.backend.restore_link(ctx.state, link)
            return
        known = set(ctx.state.plan.names())
        order = [s.name for wave in ctx.state.plan.start_order() for s in wave]
        services = [n for n in order if n in set(undo.checked_services()) & known]
        for name in services:
            if not ctx.backend.service_alive(ctx.state, name):
                ctx.backend.restart(ctx.state, name)
            ctx.wait_ready(name)


def _links(ctx: FaultContext, undo: _ZoneUndo) -> list[Link]:
    names = set(undo.links)
    return [link for link in ctx.state.plan.links if link.name in names]


class CacheFlushParams(FaultParams):
    """``cache_flush`` takes no parameters."""


class CacheFlush(FaultKind[CacheFlushParams]):
    name: ClassVar[str] = "cache_flush"
    Params = CacheFlushParams
    description: ClassVar[str] = (
        "a zone's Redis is emptied: the load that follows meets a cold cache"
    )
    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_CACHE})

    def _client(self, ctx: FaultContext, target: str) -> Any:
        from drillkit.stacks.recommender.preset import redis_of

        return redis_of(ctx.state, target, timeout=2.0)

    def apply(self, ctx: FaultContext, target: str, params: CacheFlushParams) -> UndoRecord:
        import redis

        record = ctx.begin(self.name, target, {"service": target})
        client = self._client(ctx, target)
        try:
            before = int(client.dbsize())
            client.flushall()
        except redis.RedisError as exc:
            raise EnvironmentFailure(f"{target}: FLUSHALL failed: {exc}") from None
        finally:
            client.close()
        return ctx.amend(record, keys=before)

    def check_applied(
        self, ctx: FaultContext, target: str, params: CacheFlushParams, record: UndoRecord
    ) -> str:
        import redis

        client = self._client(ctx, target)
        try:
            now = int(client.dbsize())
        except redis.RedisError as exc:
            raise EnvironmentFailure(f"{target}: DBSIZE failed: {exc}") from None
        finally:
            client.close()
        before = int(record.get("keys", 0))
        if before and now >= before:
            raise EnvironmentFailure(f"{target}: {now} keys after the flush, {before} before")
        return f"{target}: {before} keys flushed; {now} written back since"

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        """Nothing to undo: the cache refills itself as requests are served."""
