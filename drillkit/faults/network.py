"""Network faults on the gateway -> replica link: ``cut_network`` and ``latency``.

The backend does the cutting (:meth:`~drillkit.backends.base.Backend.cut_link`): on the local
backend each link runs through drillkit's link proxy (:mod:`drillkit.faults.linkproxy`), so a
link can be cut or slowed without privileges; on the docker backend iptables and tc rules are
set in the target container's network namespace from a short-lived NET_ADMIN sidecar.
``blackhole`` really hangs connections (packets dropped, nothing answers); ``reject`` refuses
and resets them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from drillkit.errors import EnvironmentFailure
from drillkit.faults.base import ROLE_REPLICA, FaultKind
from drillkit.faults.params import CutNetworkParams, LatencyParams

_PROBE_TIMEOUT = 0.3


class CutNetwork(FaultKind[CutNetworkParams]):
    name: ClassVar[str] = "cut_network"
    Params = CutNetworkParams
    description: ClassVar[str] = "traffic between the gateway and the target is cut"
    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_REPLICA})

    def apply(self, ctx: Any, target: str, params: CutNetworkParams) -> dict[str, Any]:
        if params.direction != "both":
            raise EnvironmentFailure(
                f"cut_network direction {params.direction!r}: only both ways is supported"
            )
        record = ctx.begin(self.name, target, {"link": target})
        ctx.backend.cut_link(ctx.state, target, mode=params.mode)
        return dict(record)

    def check_applied(
        self, ctx: Any, target: str, params: CutNetworkParams, record: dict[str, Any]
    ) -> str:
        outcome, took = ctx.backend.probe_link(ctx.state, target, timeout=_PROBE_TIMEOUT)
        expected = {"blackhole": ("hung",), "reject": ("refused", "reset")}[params.mode]
        if outcome not in expected:
            raise EnvironmentFailure(f"link to {target} {outcome} during {params.mode}")
        return f"link gateway->{target}: a probe request {outcome} ({took * 1000:.0f} ms)"

    def heal(self, ctx: Any, record: dict[str, Any]) -> None:
        ctx.backend.restore_link(ctx.state, record["link"])


class Latency(FaultKind[LatencyParams]):
    name: ClassVar[str] = "latency"
    Params = LatencyParams
    description: ClassVar[str] = "delay (and jitter) is added between the gateway and the target"
    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_REPLICA})

    def apply(self, ctx: Any, target: str, params: LatencyParams) -> dict[str, Any]:
        record = ctx.begin(self.name, target, {"link": target})
        ctx.backend.slow_link(ctx.state, target, delay=params.delay, jitter=params.jitter)
        return dict(record)

    def check_applied(
        self, ctx: Any, target: str, params: LatencyParams, record: dict[str, Any]
    ) -> str:
        timeout = params.delay + params.jitter + 1.0
        outcome, took = ctx.backend.probe_link(ctx.state, target, timeout=timeout)
        if outcome != "answered" or took < params.delay - params.jitter:
            raise EnvironmentFailure(
                f"link gateway->{target}: a probe request {outcome} in {took * 1000:.0f} ms, "
                f"expected an answer after at least {(params.delay - params.jitter) * 1000:.0f} ms"
            )
        return (
            f"link gateway->{target}: +{params.delay * 1000:.0f} ms; a probe request "
            f"answered in {took * 1000:.0f} ms"
        )

    def heal(self, ctx: Any, record: dict[str, Any]) -> None:
        ctx.backend.restore_link(ctx.state, record["link"])
