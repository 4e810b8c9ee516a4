"""Network faults on the links of a stack's plan: ``cut_network`` and ``latency``.

A fault on service X acts on every link of the plan that ends at X (the reference stack: the
gateway -> replica link; a zoned stack also has replica -> Redis and edge -> zone gateway).
The backend does the cutting (:meth:`~drillkit.backends.base.Backend.cut_link`): on the local
backend each link runs through drillkit's link proxy
(:mod:`drillkit.backends.local.linkproxy`), so a link can be cut or slowed without
privileges; on the docker backend iptables and tc rules are set in the target container's
network namespace from a short-lived NET_ADMIN sidecar. ``blackhole`` really hangs
connections (packets dropped, nothing answers); ``reject`` refuses and resets them.
"""

from __future__ import annotations

from typing import ClassVar

from drillkit.errors import EnvironmentFailure, TargetError
from drillkit.faults.base import (
    ROLE_GATEWAY,
    ROLE_REPLICA,
    ROLE_SERVICE,
    FaultKind,
    UndoModel,
    UndoRecord,
)
from drillkit.faults.context import FaultContext
from drillkit.faults.params import CutNetworkParams, LatencyParams
from drillkit.stacks.plan import Link

_PROBE_TIMEOUT = 0.3
#: Services that links end at: replicas (from their gateway), and in a zoned stack each
#: zone's Redis (from its replicas) and gateway (from the edge).
#: A Compose project's services are linked to one another.
_LINKED_ROLES = frozenset({ROLE_REPLICA, ROLE_GATEWAY, "cache", ROLE_SERVICE})


class _Undo(UndoModel):
    links: tuple[str, ...]


def _chosen(ctx: FaultContext, target: str, source: str | None) -> list[Link]:
    """The links to ``target`` a fault acts on: all of them, or the one from ``source``."""
    links = ctx.links_to(target)
    if source is None:
        return links
    chosen = [link for link in links if link.source == source]
    if not chosen:
        sources = ", ".join(link.source for link in links)
        raise TargetError(f"no link from {source!r} to {target!r} (links come from {sources})")
    return chosen


def _links(ctx: FaultContext, record: UndoRecord) -> list[Link]:
    """The plan's links the record names (a name that is not one of them is ignored)."""
    names = set(_Undo.parse(record).links)
    return [link for link in ctx.state.plan.links if link.name in names]


class CutNetwork(FaultKind[CutNetworkParams]):
    name: ClassVar[str] = "cut_network"
    Params = CutNetworkParams
    description: ClassVar[str] = "traffic to the target over the stack's links is cut"
    target_roles: ClassVar[frozenset[str]] = _LINKED_ROLES
    needs: ClassVar[frozenset[str]] = frozenset({"cut_link"})

    def apply(self, ctx: FaultContext, target: str, params: CutNetworkParams) -> UndoRecord:
        if params.direction != "both":
            raise EnvironmentFailure(
                f"cut_network direction {params.direction!r}: only both ways is supported"
            )
        links = _chosen(ctx, target, params.source)
        record = ctx.begin(self.name, target, {"links": [link.name for link in links]})
        for link in links:
            ctx.backend.cut_link(ctx.state, link, mode=params.mode)
        return record

    def check_applied(
        self, ctx: FaultContext, target: str, params: CutNetworkParams, record: UndoRecord
    ) -> str:
        expected = {"blackhole": ("hung",), "reject": ("refused", "reset")}[params.mode]
        lines = []
        for link in _links(ctx, record):
            outcome, took = ctx.backend.probe_link(ctx.state, link, timeout=_PROBE_TIMEOUT)
            if outcome not in expected:
                raise EnvironmentFailure(f"link to {target} {outcome} during {params.mode}")
            lines.append(
                f"link {link.source}->{link.target}: a probe request {outcome} "
                f"({took * 1000:.0f} ms)"
            )
        return "; ".join(lines)

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        for link in _links(ctx, record):
            ctx.backend.restore_link(ctx.state, link)


class Latency(FaultKind[LatencyParams]):
    name: ClassVar[str] = "latency"
    Params = LatencyParams
    description: ClassVar[str] = "delay (and jitter) is added on the stack's links to the target"
    target_roles: ClassVar[frozenset[str]] = _LINKED_ROLES
    needs: ClassVar[frozenset[str]] = frozenset({"slow_link"})

    def apply(self, ctx: FaultContext, target: str, params: LatencyParams) -> UndoRecord:
        links = _chosen(ctx, target, params.source)
        record = ctx.begin(self.name, target, {"links": [link.name for link in links]})
        for link in links:
            ctx.backend.slow_link(ctx.state, link, delay=params.delay, jitter=params.jitter)
        return record

    def check_applied(
        self, ctx: FaultContext, target: str, params: LatencyParams, record: UndoRecord
    ) -> str:
        timeout = params.delay + params.jitter + 1.0
        lines = []
        for link in _links(ctx, record):
            outcome, took = ctx.backend.probe_link(ctx.state, link, timeout=timeout)
            if outcome != "answered" or took < params.delay - params.jitter:
                least = (params.delay - params.jitter) * 1000
                raise EnvironmentFailure(
                    f"link {link.source}->{link.target}: a probe request {outcome} in "
                    f"{took * 1000:.0f} ms, expected an answer after at least {least:.0f} ms"
                )
            lines.append(
                f"link {link.source}->{link.target}: +{params.delay * 1000:.0f} ms; a probe "
                f"request answered in {took * 1000:.0f} ms"
            )
        return "; ".join(lines)

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        for link in _links(ctx, record):
            ctx.backend.restore_link(ctx.state, link)
