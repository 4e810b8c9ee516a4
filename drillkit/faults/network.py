"""Network faults on the gateway -> replica link: ``cut_network`` and ``latency``.

On the local backend each link runs through drillkit's link proxy
(:mod:`drillkit.faults.linkproxy`), so a link can be cut or slowed without privileges and
without touching any other traffic. ``blackhole`` really hangs connections (packets dropped,
nothing answers); ``reject`` refuses and resets them.
"""

from __future__ import annotations

import socket
import time
from typing import Any, ClassVar

from drillkit.errors import EnvironmentFailure
from drillkit.faults.base import ROLE_REPLICA, FaultKind
from drillkit.faults.params import CutNetworkParams, LatencyParams

_PROBE_TIMEOUT = 0.3


def probe_link(port: int) -> tuple[str, float]:
    """Send one HTTP request through a link and say what happened: ``answered``, ``hung``,
    ``refused`` or ``reset``, with the time it took."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=_PROBE_TIMEOUT) as sock:
            sock.settimeout(_PROBE_TIMEOUT)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            data = sock.recv(64)
            outcome = "answered" if data else "reset"
    except TimeoutError:
        outcome = "hung"
    except ConnectionRefusedError:
        outcome = "refused"
    except (ConnectionResetError, BrokenPipeError):
        outcome = "reset"
    return outcome, time.monotonic() - started


def _link_port(ctx: Any, target: str) -> int:
    port = ctx.state.services[target].link_port
    if port is None:
        raise EnvironmentFailure(f"{target} has no proxied link in stack {ctx.state.id}")
    return int(port)


class CutNetwork(FaultKind[CutNetworkParams]):
    name: ClassVar[str] = "cut_network"
    Params = CutNetworkParams
    description: ClassVar[str] = "traffic between the gateway and the target is cut"
    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_REPLICA})

    def apply(self, ctx: Any, target: str, params: CutNetworkParams) -> dict[str, Any]:
        if params.direction != "both":
            raise EnvironmentFailure(
                f"cut_network direction {params.direction!r}: the link proxy cuts both ways only"
            )
        record = ctx.begin(self.name, target, {"link": target})
        ctx.proxy().set_mode(target, params.mode)
        return dict(record)

    def check_applied(
        self, ctx: Any, target: str, params: CutNetworkParams, record: dict[str, Any]
    ) -> str:
        outcome, took = probe_link(_link_port(ctx, target))
        expected = {"blackhole": ("hung",), "reject": ("refused", "reset")}[params.mode]
        if outcome not in expected:
            raise EnvironmentFailure(f"link to {target} {outcome} during {params.mode}")
        return f"link gateway->{target}: a probe request {outcome} ({took * 1000:.0f} ms)"

    def heal(self, ctx: Any, record: dict[str, Any]) -> None:
        ctx.proxy().set_mode(record["link"], "pass")


class Latency(FaultKind[LatencyParams]):
    name: ClassVar[str] = "latency"
    Params = LatencyParams
    description: ClassVar[str] = "delay (and jitter) is added between the gateway and the target"
    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_REPLICA})

    def apply(self, ctx: Any, target: str, params: LatencyParams) -> dict[str, Any]:
        record = ctx.begin(self.name, target, {"link": target})
        # Delaying the request direction only adds `delay` once per round trip.
        ctx.proxy().set_mode(
            target,
            "latency",
            delay_ms=params.delay * 1000,
            jitter_ms=params.jitter * 1000,
            direction="to_target",
        )
        return dict(record)

    def check_applied(
        self, ctx: Any, target: str, params: LatencyParams, record: dict[str, Any]
    ) -> str:
        link = ctx.proxy().links()[target]
        if link.get("mode") != "latency":
            raise EnvironmentFailure(f"link to {target} is in mode {link.get('mode')}")
        if params.delay < _PROBE_TIMEOUT:
            outcome, took = probe_link(_link_port(ctx, target))
            return (
                f"link gateway->{target}: +{params.delay * 1000:.0f} ms; a probe request "
                f"{outcome} in {took * 1000:.0f} ms"
            )
        return f"link gateway->{target}: +{params.delay * 1000:.0f} ms set on the proxy"

    def heal(self, ctx: Any, record: dict[str, Any]) -> None:
        ctx.proxy().set_mode(record["link"], "pass")
