"""A controllable TCP fault proxy for the gateway -> replica links (drillkit's own Toxiproxy).

On the local backend every gateway -> replica link goes through one proxy process per stack,
so that a drill can cut or slow a single link without root privileges::

    python -m drillkit.backends.local.linkproxy --control-port 7000 \\
        --link replica-1=7001:8001 --link replica-2=7002:8002 [--stack-id ID]

``--link NAME=LISTEN_PORT:[UPSTREAM_HOST:]UPSTREAM_PORT`` listens on 127.0.0.1:LISTEN_PORT
(``--listen-host`` changes the address) and forwards bytes both ways to the upstream (default
host 127.0.0.1). Once every socket is bound the proxy prints one JSON line on stdout
(``{"event": "ready", ...}``); it exits 3 when a port cannot be bound, and 0 on SIGTERM/SIGINT.

Each link has a mode, switched at runtime through a small HTTP/1.1 control API on
127.0.0.1:CONTROL_PORT (JSON bodies; errors are ``{"error": "..."}`` with 400/404/405)::

    GET  /health                {"ok": true, "pid": .., "stack_id": .., "links": [names]}
    GET  /links                 {"links": {name: state}}
    GET  /links/<name>          state
    PUT  /links/<name>          {"mode", "delay_ms", "jitter_ms", "direction"} -> state
    POST /reset                 every link back to pass -> {"links": {name: state}}

A state is ``{"name", "listen", "upstream", "mode", "params", "since", "counters"}``; ``since``
is the epoch time of the last change of mode or parameters (or of the start; re-applying the
current mode changes nothing). The counters: ``connections_open``, ``connections_total``
(accepted), ``connections_refused`` (reset on arrival by reject), ``connections_blackholed``
(accepted into a blackhole), ``connections_reset`` (existing ones reset by reject or on leaving
blackhole), ``upstream_connect_failures``, and ``bytes_to_target`` / ``bytes_from_target``
(forwarded) / ``bytes_dropped`` (discarded by blackhole). The modes:

``pass``
    Forward.
``blackhole``
    Packets dropped, connections hang. A new connection is accepted (the client's connect
    succeeds) but nothing is forwarded or answered; existing connections stop forwarding in
    both directions (what they read is discarded), FINs included, and stay open. Leaving
    blackhole resets every hung connection (the gateway reconnects: the bytes dropped meanwhile
    make a hung connection useless), new ones forward normally.
``reject``
    New connections are reset at once (SO_LINGER 0, close): the client sees "connection reset"
    within a millisecond, as from a killed process. Existing connections are reset too.
``latency``
    Every chunk forwarded in ``direction`` (``both``, ``to_target``, ``from_target``) is held
    for ``delay_ms`` ± ``jitter_ms`` (uniform), in order per connection. With ``both`` a
    request/response round trip grows by twice ``delay_ms``, as with netem on both hosts.

A PUT returns once the mode is in effect for existing connections: resets have completed and
no chunk is forwarded under the old mode afterwards.

:class:`LinkProxyClient` drives the control API with the standard library only, for any
drillkit process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import os
import random
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import quote, unquote, urlsplit

from drillkit import safejson
from drillkit.backends.local import CONTROL_PORT_NAME
from drillkit.errors import EnvironmentFailure
from drillkit.listen import inherited

__all__ = [
    "DIRECTIONS",
    "MODES",
    "LinkMode",
    "LinkProxyClient",
    "LinkSpec",
    "main",
    "proxy_command",
    "serve",
]

MODES: Final = ("pass", "blackhole", "reject", "latency")
DIRECTIONS: Final = ("both", "to_target", "from_target")
MAX_DELAY_MS: Final = 60_000.0

# Localhost connects take microseconds; one that takes seconds means the replica's accept queue
# is full or it is frozen, and the gateway's own try timeout fires long before this one.
_CONNECT_TIMEOUT: Final = 10.0
# Latency queues this large pause the sender, so a slowed link cannot grow memory without bound.
_QUEUE_HIGH: Final = 1 << 20
_QUEUE_LOW: Final = 1 << 18
# libuv timers have millisecond resolution: a timer may fire up to 1 ms before its due time.
_TIMER_SLACK: Final = 0.001
_CONTROL_TIMEOUT: Final = 10.0
_MAX_CONTROL_HEAD: Final = 16 * 1024

_MAX_CONTROL_BODY: Final = 64 * 1024
# How long a PUT waits for the connections it reset to be gone before it answers anyway.
_SETTLE_TIMEOUT: Final = 2.0

# What ends a direction; queued behind its data so that a FIN never overtakes a chunk.
_EOF: Final = 1
_CLOSE: Final = 2
_RESET: Final = 3

_LINGER_ZERO: Final = struct.pack("ii", 1, 0)
_jitter = random.Random()


# -- configuration ----------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkSpec:
    """One proxied link: ``name`` listens on ``listen_port`` and forwards to the upstream."""

    name: str
    listen_port: int
    upstream_port: int
    upstream_host: str = "127.0.0.1"

    @classmethod
    def parse(cls, text: str) -> LinkSpec:
        """Parse ``NAME=LISTEN_PORT:[UPSTREAM_HOST:]UPSTREAM_PORT``; raise ValueError."""
        name, sep, ports = text.partition("=")
        parts = ports.split(":")
        if not sep or not name or len(parts) not in (2, 3) or not all(parts):
            raise ValueError(
                f"bad link {text!r}: expected NAME=LISTEN_PORT:[UPSTREAM_HOST:]UPSTREAM_PORT, "
                "e.g. replica-1=7001:8001"
            )
        if not all(c.isalnum() or c in "-_." for c in name):
            raise ValueError(f"bad link name {name!r}: use letters, digits, '-', '_' or '.'")
        try:
            listen, upstream = int(parts[0]), int(parts[-1])
        except ValueError:
            raise ValueError(f"bad link {text!r}: ports must be integers") from None
        if not (0 <= listen <= 65535 and 1 <= upstream <= 65535):
            raise ValueError(f"bad link {text!r}: ports must be in 1..65535 (listen may be 0)")
        host = parts[1] if len(parts) == 3 else "127.0.0.1"
        return cls(name, listen, upstream, host)

    def __str__(self) -> str:
        return f"{self.name}={self.listen_port}:{self.upstream_host}:{self.upstream_port}"


def proxy_command(
    control_port: int,
    links: Sequence[LinkSpec],
    stack_id: str | None = None,
    token_file: Path | None = None,
) -> list[str]:
    """The command line that starts a proxy for ``links`` with this interpreter."""
    argv = [
        sys.executable,
        "-m",
        "drillkit.backends.local.linkproxy",
        "--control-port",
        str(control_port),
    ]
    for link in links:
        argv += ["--link", str(link)]
    if stack_id is not None:
        argv += ["--stack-id", stack_id]
    if token_file is not None:
        argv += ["--token-file", str(token_file)]
    return argv


@dataclass(frozen=True)
class LinkMode:
    """A link's mode and its parameters (the body of ``PUT /links/<name>``)."""

    mode: str = "pass"
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    direction: str = "both"

    @classmethod
    def from_json(cls, body: object) -> LinkMode:
        """Validate a decoded PUT body; raise ValueError with a message for the caller."""
        if not isinstance(body, dict):
            raise ValueError('body must be a JSON object like {"mode": "blackhole"}')
        allowed = ("mode", "delay_ms", "jitter_ms", "direction")
        for key in body:
            if key not in allowed:
                raise ValueError(f"unknown field {key!r}; expected {', '.join(allowed)}")
        mode = body.get("mode")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if mode != "latency":
            extra = [key for key in allowed[1:] if key in body]
            if extra:
                raise ValueError(f"{extra[0]}: applies only to mode latency")
            return cls(mode)
        if "delay_ms" not in body:
            raise ValueError("delay_ms: required for mode latency")
        delay = _milliseconds(body, "delay_ms")
        jitter = _milliseconds(body, "jitter_ms") if "jitter_ms" in body else 0.0
        direction = body.get("direction", "both")
        if direction not in DIRECTIONS:
            raise ValueError(
                f"direction: expected one of {', '.join(DIRECTIONS)}, got {direction!r}"
            )
        return cls("latency", delay, jitter, direction)

    def params(self) -> dict[str, Any]:
        """The mode's parameters as the control API reports them."""
        if self.mode != "latency":
            return {}
        return {"delay_ms": self.delay_ms, "jitter_ms": self.jitter_ms, "direction": self.direction}

    def delays(self, to_target: bool) -> bool:
        """Whether chunks travelling this way are held back."""
        if self.mode != "latency":
            return False
        return self.direction == "both" or self.direction == (
            "to_target" if to_target else "from_target"
        )

    def sample_delay(self) -> float:
        """One chunk's delay in seconds: delay_ms ± jitter_ms, never negative."""
        if self.jitter_ms:
            ms = _jitter.uniform(self.delay_ms - self.jitter_ms, self.delay_ms + self.jitter_ms)
            return max(0.0, ms) / 1000.0
        return self.delay_ms / 1000.0


def _milliseconds(body: dict[str, Any], key: str) -> float:
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: expected a number of milliseconds, got {value!r}")
    if not 0 <= value <= MAX_DELAY_MS:
        raise ValueError(f"{key}: expected 0..{MAX_DELAY_MS:.0f}, got {value!r}")
    return float(value)


# -- the data path ----------------------------------------------------------------------------
def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _reset_transport(transport: asyncio.BaseTransport) -> None:
    """Close with a RST, as the kernel does for a killed process's connections."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    cast(asyncio.Transport, transport).abort()


class _Side:
    """One socket of a pipe, with the reasons its reading is paused."""

    __slots__ = ("gone", "paused", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.paused: set[str] = set()
        self.gone = False

    def pause(self, reason: str) -> None:
        if not self.paused and not self.gone and not self.transport.is_closing():
            self.transport.pause_reading()
        self.paused.add(reason)

    def resume(self, reason: str | None = None) -> None:
        if not self.paused:
            return
        if reason is None:
            self.paused.clear()
        else:
            self.paused.discard(reason)
        if not self.paused and not self.gone and not self.transport.is_closing():
            self.transport.resume_reading()


class _Direction:
    """One way through a pipe: writes at once, or through a queue drained by a timer.

    The queue keeps order: a chunk's due time is never earlier than the one before it, so a
    jittered delay slows a connection down but never reorders its bytes.
    """

    __slots__ = ("dst", "last_due", "pipe", "queue", "queued", "src", "timer", "to_target")

    def __init__(self, pipe: _Pipe, to_target: bool) -> None:
        self.pipe = pipe
        self.to_target = to_target
        self.src: _Side | None = None
        self.dst: _Side | None = None
        self.queue: deque[tuple[float, bytes | int]] = deque()
        self.queued = 0
        self.last_due = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def push(self, item: bytes | int) -> None:
        pipe = self.pipe
        mode = pipe.link.mode
        if mode.delays(self.to_target):
            due = max(pipe.loop.time() + mode.sample_delay(), self.last_due)
        elif not self.queue and self.dst is not None:
            self._deliver(item)
            return
        else:
            due = max(pipe.loop.time(), self.last_due)
        self.last_due = due
        self.queue.append((due, item))
        if isinstance(item, bytes):
            self.queued += len(item)
            if self.queued > _QUEUE_HIGH and self.src is not None:
                self.src.pause("queue")
        self._schedule()

    def _schedule(self) -> None:
        pipe = self.pipe
        if self.timer is not None or not self.queue or self.dst is None:
            return
        if not (pipe.closed or pipe.hung):  # a torn-down pipe's queue is never delivered
            self.timer = pipe.loop.call_at(self.queue[0][0], self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        pipe = self.pipe
        limit = pipe.loop.time() + _TIMER_SLACK
        queue = self.queue
        while queue and queue[0][0] <= limit and not (pipe.closed or pipe.hung):
            self._deliver(self._pop())
        self._schedule()

    def _pop(self) -> bytes | int:
        item = self.queue.popleft()[1]
        if isinstance(item, bytes):
            self.queued -= len(item)
            if self.queued < _QUEUE_LOW and self.src is not None:
                self.src.resume("queue")
        if not self.queue:
            self.last_due = 0.0
        return item

    def attach(self, dst: _Side) -> None:
        """The upstream connected: deliver what waited for it, then write directly."""
        self.dst = dst
        if self.queue:
            self._on_timer()

    def flush(self) -> None:
        """Deliver everything queued now (the direction is no longer delayed)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.dst is None:
            return
        while self.queue and not (self.pipe.closed or self.pipe.hung):
            self._deliver(self._pop())

    def drop(self) -> int:
        """Discard everything queued; return the bytes dropped."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        dropped = self.queued
        self.queue.clear()
        self.queued = 0
        self.last_due = 0.0
        return dropped

    def _deliver(self, item: bytes | int) -> None:
        dst = self.dst
        if dst is None or dst.gone:
            return
        if isinstance(item, bytes):
            dst.transport.write(item)
            if self.to_target:
                self.pipe.link.bytes_to_target += len(item)
            else:
                self.pipe.link.bytes_from_target += len(item)
        else:
            self.pipe.end(dst, item)


class _SideProtocol(asyncio.Protocol):
    """Either socket of a pipe. The client side is created by the link's server and builds the
    pipe when the connection arrives; the upstream side is created by the pipe."""

    __slots__ = ("is_client", "link", "pipe")

    def __init__(self, link: _Link, pipe: _Pipe | None = None) -> None:
        self.link = link
        self.pipe = pipe
        self.is_client = pipe is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.pipe is None:
            self.pipe = self.link.accept(cast(asyncio.Transport, transport))
        else:
            self.pipe.attach_upstream(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        pipe = self.pipe
        if pipe is None:
            return
        if pipe.hung:
            pipe.link.bytes_dropped += len(data)
        elif self.is_client:
            pipe.to_target.push(data)
        else:
            pipe.from_target.push(data)

    def eof_received(self) -> bool:
        pipe = self.pipe
        if pipe is not None and not pipe.hung and not pipe.closed:
            (pipe.to_target if self.is_client else pipe.from_target).push(_EOF)
        # Keep the socket open for writing: the other direction may still be carrying data.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pipe is not None:
            self.pipe.lost(self.is_client, exc)

    def pause_writing(self) -> None:
        # This socket's send buffer is full: stop reading from the one that feeds it.
        if self.pipe is not None:
            feeder = (self.pipe.from_target if self.is_client else self.pipe.to_target).src
            if feeder is not None:
                feeder.pause("backpressure")

    def resume_writing(self) -> None:
        if self.pipe is not None:
            feeder = (self.pipe.from_target if self.is_client else self.pipe.to_target).src
            if feeder is not None:
                feeder.resume("backpressure")


class _Pipe:
    """One client connection and its upstream connection."""

    __slots__ = (
        "client",
        "closed",
        "connecting",
        "done",
        "eofs",
        "from_target",
        "hung",
        "link",
        "live",
        "loop",
        "task",
        "to_target",
        "upstream",
    )

    def __init__(self, link: _Link, client: asyncio.Transport) -> None:
        self.link = link
        self.loop = link.loop
        self.client = _Side(client)
        self.upstream: _Side | None = None
        self.to_target = _Direction(self, to_target=True)
        self.from_target = _Direction(self, to_target=False)
        self.to_target.src = self.client
        self.from_target.dst = self.client
        self.hung = False  # blackholed: never forwards again
        self.closed = False  # being torn down by us
        self.connecting = False
        self.live = 1  # sockets whose connection_lost has not arrived yet
        self.eofs = 0  # FINs delivered; at 2 both directions are finished
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.task: asyncio.Task[None] | None = None

    # -- lifecycle
    def connect(self) -> None:
        self.connecting = True
        self.task = self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        spec = self.link.spec
        try:
            await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: _SideProtocol(self.link, self), spec.upstream_host, spec.upstream_port
                ),
                _CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError):
            self.connecting = False
            self.link.upstream_connect_failures += 1
            if not (self.closed or self.hung):
                # A refused upstream must look refused through the proxy too, not like a hang.
                self.reset()
            self._maybe_done()

    def attach_upstream(self, transport: asyncio.Transport) -> None:
        self.connecting = False
        self.live += 1
        side = _Side(transport)
        self.upstream = side
        if self.closed or self.hung:
            # Cut while connecting: the upstream never hears from this client.
            side.gone = True
            transport.abort()
            return
        _set_nodelay(transport)
        self.from_target.src = side
        self.to_target.attach(side)

    def lost(self, is_client: bool, exc: Exception | None) -> None:
        side = self.client if is_client else self.upstream
        if side is not None:
            side.gone = True
        self.live -= 1
        if not (self.closed or self.hung):
            # Pass the end on after what is still queued towards the other socket: a reset
            # (a killed replica) stays a reset, an orderly close stays one.
            (self.from_target if not is_client else self.to_target).push(
                _RESET if exc is not None else _CLOSE
            )
        self._maybe_done()

    def end(self, dst: _Side, kind: int) -> None:
        """A queued end-of-direction reached ``dst``."""
        transport = dst.transport
        if kind == _EOF:
            if transport.can_write_eof():
                transport.write_eof()
            self.eofs += 1
            if self.eofs == 2:
                self.close()
        elif kind == _CLOSE:
            self.closed = True
            transport.close()
        else:
            self.closed = True
            _reset_transport(transport)

    def _maybe_done(self) -> None:
        if self.live == 0 and not self.connecting and not self.done.done():
            self.to_target.drop()
            self.from_target.drop()
            self.link.pipes.discard(self)
            self.done.set_result(None)

    def _sides(self) -> list[_Side]:
        return [s for s in (self.client, self.upstream) if s is not None and not s.gone]

    # -- what a mode change does to an existing connection
    def close(self) -> None:
        self.closed = True
        for side in self._sides():
            side.transport.close()

    def reset(self) -> None:
        self.closed = True
        self.to_target.drop()
        self.from_target.drop()
        for side in self._sides():
            _reset_transport(side.transport)

    def hang(self) -> None:
        if self.hung or self.closed:
            return
        self.hung = True
        self.link.bytes_dropped += self.to_target.drop() + self.from_target.drop()
        # Keep reading so that what arrives is discarded, as a dropping network would.
        for side in self._sides():
            side.resume()

    def retime(self, mode: LinkMode) -> None:
        if self.hung or self.closed:
            return
        for direction in (self.to_target, self.from_target):
            if not mode.delays(direction.to_target):
                direction.flush()


class _Link:
    """A listening port, its connections, its mode and its counters."""

    def __init__(self, spec: LinkSpec, loop: asyncio.AbstractEventLoop, listen_host: str) -> None:
        self.spec = spec
        self.loop = loop
        self.listen_host = listen_host
        self.listen_port = spec.listen_port
        self.mode = LinkMode()
        self.since = time.time()
        self.pipes: set[_Pipe] = set()
        self.server: asyncio.AbstractServer | None = None
        self.connections_total = 0
        self.connections_refused = 0
        self.connections_blackholed = 0
        self.connections_reset = 0
        self.upstream_connect_failures = 0
        self.bytes_to_target = 0
        self.bytes_from_target = 0
        self.bytes_dropped = 0

    async def start(self) -> None:
        sock = inherited(self.spec.name)  # handed down by drillkit: the port is already ours
        if sock is not None:
            self.server = await self.loop.create_server(
                lambda: _SideProtocol(self), sock=sock, backlog=1024
            )
        else:
            self.server = await self.loop.create_server(
                lambda: _SideProtocol(self), self.listen_host, self.spec.listen_port, backlog=1024
            )
        self.listen_port = int(self.server.sockets[0].getsockname()[1])

    def accept(self, transport: asyncio.Transport) -> _Pipe | None:
        self.connections_total += 1
        mode = self.mode.mode
        if mode == "reject":
            self.connections_refused += 1
            _reset_transport(transport)
            return None
        pipe = _Pipe(self, transport)
        self.pipes.add(pipe)
        if mode == "blackhole":
            self.connections_blackholed += 1
            pipe.hung = True
        else:
            _set_nodelay(transport)
            pipe.connect()
        return pipe

    def set_mode(self, mode: LinkMode) -> list[asyncio.Future[None]]:
        """Apply ``mode`` to the link and its connections; return the closings to wait for."""
        old, self.mode = self.mode, mode
        if mode == old:
            return []
        self.since = time.time()
        closing: list[asyncio.Future[None]] = []
        for pipe in list(self.pipes):
            if mode.mode == "reject":
                if not pipe.closed:
                    self.connections_reset += 1
                pipe.reset()
                closing.append(pipe.done)
            elif mode.mode == "blackhole":
                pipe.hang()
            elif pipe.hung:
                self.connections_reset += 1
                pipe.reset()
                closing.append(pipe.done)
            elif old.mode == "latency":
                pipe.retime(mode)
        return closing

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.close()
        for pipe in list(self.pipes):
            pipe.closed = True
            for side in pipe._sides():
                side.transport.abort()

    def state(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "name": spec.name,
            "listen": f"{self.listen_host}:{self.listen_port}",
            "upstream": f"{spec.upstream_host}:{spec.upstream_port}",
            "mode": self.mode.mode,
            "params": self.mode.params(),
            "since": self.since,
            "counters": {
                "connections_open": len(self.pipes),
                "connections_total": self.connections_total,
                "connections_refused": self.connections_refused,
                "connections_blackholed": self.connections_blackholed,
                "connections_reset": self.connections_reset,
                "upstream_connect_failures": self.upstream_connect_failures,
                "bytes_to_target": self.bytes_to_target,
                "bytes_from_target": self.bytes_from_target,
                "bytes_dropped": self.bytes_dropped,
            },
        }


# -- the control API ----------------------------------------------------------------------------
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    500: "Internal Server Error",
}


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Proxy:
    def __init__(
        self,
        specs: Sequence[LinkSpec],
        control_port: int,
        stack_id: str | None,
        listen_host: str,
        token: str | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.links = {spec.name: _Link(spec, self.loop, listen_host) for spec in specs}
        self.control_port = control_port
        self.stack_id = stack_id
        self.token = token
        self.control: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        for link in self.links.values():
            await link.start()
        sock = inherited(CONTROL_PORT_NAME)
        if sock is not None:
            self.control = await asyncio.start_server(
                self._handle, sock=sock, limit=_MAX_CONTROL_HEAD
            )
        else:
            self.control = await asyncio.start_server(
                self._handle, "127.0.0.1", self.control_port, limit=_MAX_CONTROL_HEAD
            )
        self.control_port = int(self.control.sockets[0].getsockname()[1])

    def shutdown(self) -> None:
        if self.control is not None:
            self.control.close()
        for link in self.links.values():
            link.shutdown()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, payload = await asyncio.wait_for(self._serve_one(reader), _CONTROL_TIMEOUT)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            writer.close()
            return
        except _HTTPError as exc:
            status, payload = exc.status, {"error": str(exc)}
        except Exception as exc:  # a bug in one request must not take every link down
            status, payload = 500, {"error": f"internal error: {exc!r}"}
        body = json.dumps(payload).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(ConnectionError):
            writer.write(head + body)
            await writer.drain()
        writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader) -> tuple[int, Any]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise _HTTPError(413, "request head too large") from None
        lines = head.decode("latin-1").split("\r\n")
        request = lines[0].split(" ")
        if len(request) != 3 or not request[2].startswith("HTTP/1."):
            raise _HTTPError(400, f"malformed request line {lines[0][:100]!r}")
        method, target = request[0], request[1]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        if self.token is not None:
            # Any process on the host can reach 127.0.0.1: only the stack's drillkit, which
            # holds the token (a private file of its stack), may cut a link.
            given = headers.get("authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, f"Bearer {self.token}".encode()):
                raise _HTTPError(401, "a valid Authorization: Bearer token is required")
        if "transfer-encoding" in headers:
            raise _HTTPError(400, "chunked bodies are not supported: send Content-Length")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise _HTTPError(400, "Content-Length is not an integer") from None
        if not 0 <= length <= _MAX_CONTROL_BODY:
            raise _HTTPError(413, f"body too large (at most {_MAX_CONTROL_BODY} bytes)")
        body = await reader.readexactly(length) if length else b""
        path = target.split("?", 1)[0].rstrip("/") or "/"
        return await self._route(method, path, body)

    async def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path == "/health":
            _allow(method, "GET")
            return 200, {
                "ok": True,
                "pid": os.getpid(),
                "stack_id": self.stack_id,
                "links": list(self.links),
            }
        if path == "/links":
            _allow(method, "GET")
            return 200, {"links": {name: link.state() for name, link in self.links.items()}}
        if path == "/reset":
            _allow(method, "POST")
            await self._apply({link: LinkMode() for link in self.links.values()})
            return 200, {"links": {name: link.state() for name, link in self.links.items()}}
        if path.startswith("/links/"):
            name = unquote(path[len("/links/") :])
            link = self.links.get(name)
            if link is None:
                known = ", ".join(self.links) or "none"
                raise _HTTPError(404, f"unknown link {name!r} (links: {known})")
            _allow(method, "GET", "PUT")
            if method == "PUT":
                try:
                    decoded = safejson.loads(body or b"null")
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise _HTTPError(400, f"body is not valid JSON: {exc}") from None
                try:
                    mode = LinkMode.from_json(decoded)
                except ValueError as exc:
                    raise _HTTPError(400, str(exc)) from None
                await self._apply({link: mode})
            return 200, link.state()
        raise _HTTPError(404, f"no such endpoint {path!r}")

    async def _apply(self, modes: dict[_Link, LinkMode]) -> None:
        closing: list[asyncio.Future[None]] = []
        for link, mode in modes.items():
            closing += link.set_mode(mode)
        if closing:
            # Answer once the resets are done, so a caller's next request meets the new mode.
            await asyncio.wait(closing, timeout=_SETTLE_TIMEOUT)


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise _HTTPError(405, f"method {method} not allowed here (use {' or '.join(allowed)})")


# -- the process --------------------------------------------------------------------------------
async def serve(
    links: Sequence[LinkSpec],
    control_port: int,
    *,
    stack_id: str | None = None,
    listen_host: str = "127.0.0.1",
    stop: asyncio.Event | None = None,
    token: str | None = None,
) -> None:
    """Run the proxy until ``stop`` is set, or SIGTERM/SIGINT when ``stop`` is None. With a
    ``token``, every control request must carry ``Authorization: Bearer <token>``.

    Prints the ready line once every socket is bound; raises OSError when one cannot be.
    """
    proxy = _Proxy(links, control_port, stack_id, listen_host, token)
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            proxy.loop.add_signal_handler(signum, stop.set)
    try:
        await proxy.start()
        ready = {
            "event": "ready",
            "pid": os.getpid(),
            "control_url": f"http://127.0.0.1:{proxy.control_port}",
            "links": {name: link.listen_port for name, link in proxy.links.items()},
        }
        with contextlib.suppress(OSError, ValueError):  # no one may be reading stdout
            print(json.dumps(ready), flush=True)
        await stop.wait()
    finally:
        proxy.shutdown()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m drillkit.backends.local.linkproxy",
        description="TCP fault proxy for gateway -> replica links (pass, blackhole, reject, "
        "latency), controlled over HTTP on 127.0.0.1:CONTROL_PORT.",
    )
    parser.add_argument("--control-port", type=int, required=True, help="control API port")
    parser.add_argument(
        "--link",
        action="append",
        default=[],
        metavar="NAME=LISTEN_PORT:[UPSTREAM_HOST:]UPSTREAM_PORT",
        help="a link to proxy (repeatable), e.g. replica-1=7001:8001",
    )
    parser.add_argument("--listen-host", default="127.0.0.1", help="address the links bind")
    parser.add_argument("--stack-id", help="the owning stack (reported by /health)")
    parser.add_argument(
        "--token-file",
        type=Path,
        help="a file holding the token every control request must present (Bearer)",
    )
    parser.add_argument(
        "--no-uvloop", action="store_true", help="use asyncio's own loop even if uvloop exists"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m drillkit.backends.local.linkproxy``; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    specs: list[LinkSpec] = []
    for text in args.link:
        try:
            specs.append(LinkSpec.parse(text))
        except ValueError as exc:
            parser.error(str(exc))
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        parser.error(f"duplicate link names in {names}")
    ports = [spec.listen_port for spec in specs if spec.listen_port] + [args.control_port]
    if len(set(ports)) != len(ports):
        parser.error("every link and the control API need their own port")

    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    token = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            parser.error(f"--token-file: {exc}")
        if not token:
            parser.error("--token-file: the file is empty")
    coro = serve(
        specs,
        args.control_port,
        stack_id=args.stack_id,
        listen_host=args.listen_host,
        token=token,
    )
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(coro)
    except (OSError, ValueError) as exc:  # ValueError: a malformed socket hand-off
        print(f"linkproxy: error: cannot listen: {exc}", file=sys.stderr)
        return EnvironmentFailure.exit_code
    except KeyboardInterrupt:
        pass
    return 0


# -- the client ---------------------------------------------------------------------------------
class LinkProxyClient:
    """Drive a running proxy's control API (standard library only).

    Every failure, from an unreachable proxy to a rejected mode, raises
    :class:`~drillkit.errors.EnvironmentFailure` with the proxy's own message.
    """

    def __init__(self, control_url: str, *, timeout: float = 5.0, token: str | None = None) -> None:
        parts = urlsplit(control_url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme != "http" or not parts.hostname or port is None:
            raise EnvironmentFailure(
                f"bad link proxy URL {control_url!r}: expected http://HOST:PORT"
            )
        self.url = control_url.rstrip("/")
        self._host = parts.hostname
        self._port = port
        self._timeout = timeout
        self._token = token

    def health(self) -> dict[str, Any]:
        """The proxy's pid, stack id and link names."""
        return cast(dict[str, Any], self._request("GET", "/health"))

    def links(self) -> dict[str, dict[str, Any]]:
        """Every link's state by name: mode, params, since, counters."""
        return cast(dict[str, dict[str, Any]], self._request("GET", "/links")["links"])

    def link(self, name: str) -> dict[str, Any]:
        """One link's state."""
        return cast(dict[str, Any], self._request("GET", f"/links/{quote(name, safe='')}"))

    def set_mode(self, name: str, mode: str, **params: Any) -> dict[str, Any]:
        """Switch link ``name`` to ``mode`` (``delay_ms``, ``jitter_ms``, ``direction`` for
        latency); returns the new state once it is in effect."""
        body = {"mode": mode, **params}
        return cast(dict[str, Any], self._request("PUT", f"/links/{quote(name, safe='')}", body))

    def reset(self) -> dict[str, dict[str, Any]]:
        """Every link back to pass; returns every link's state."""
        return cast(dict[str, dict[str, Any]], self._request("POST", "/reset")["links"])

    def wait_ready(self, timeout: float = 5.0) -> dict[str, Any]:
        """Poll /health until the proxy answers; raise EnvironmentFailure after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.health()
            except EnvironmentFailure:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.02)

    def _request(self, method: str, path: str, body: object = None) -> Any:
        import http.client

        what = f"link proxy {self.url}: {method} {path}"
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise EnvironmentFailure(f"{what} failed: {exc or type(exc).__name__}") from exc
        finally:
            conn.close()
        try:
            decoded = safejson.loads(raw)
        except ValueError:
            raise EnvironmentFailure(
                f"{what} answered {response.status} with a body that is not JSON"
            ) from None
        if response.status != 200:
            message = decoded.get("error") if isinstance(decoded, dict) else None
            detail = message if isinstance(message, str) else repr(raw[:200])
            raise EnvironmentFailure(f"{what} answered {response.status}: {detail}")
        return decoded


if __name__ == "__main__":
    sys.exit(main())
