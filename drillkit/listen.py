"""Listening sockets handed down from drillkit to the services it starts.

Choosing a free port by binding it, closing it and telling the service to bind it again
leaves a moment in which any other process (a second drill on the machine, say) can take it.
Instead, the local backend binds each port of a service that accepts it (``Port.inherit``),
keeps the socket open, and hands it to the service's process at start: the service serves on
that socket, and the port is the stack's from the moment it was chosen.

The hand-off is named in the child's environment, ``DRILLKIT_LISTEN_FDS=NAME=FD[,NAME=FD...]``
(a port's name and the descriptor number it has in the child). A service reads it with
:func:`inherited`, which accepts only a listening TCP socket: an environment is not to be
trusted, and a descriptor that is anything else is an error, never used.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "LISTEN_FDS_ENV",
    "bind",
    "handoff",
    "http_server",
    "inherited",
    "serve_asgi",
    "status_handler",
]

LISTEN_FDS_ENV = "DRILLKIT_LISTEN_FDS"
_ITEM = re.compile(r"([a-z0-9][a-z0-9.-]{0,127})=([0-9]{1,7})")
BACKLOG = 1024


def bind(port: int = 0, host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket listening on ``host:port`` (``port`` 0: one the kernel picks, read back
    with ``getsockname()``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def handoff(sockets: Mapping[str, socket.socket]) -> tuple[dict[str, str], tuple[int, ...]]:
    """The environment entry and the descriptors to pass (``subprocess.Popen(pass_fds=)``,
    which keeps their numbers in the child) for ``sockets`` by port name."""
    if not sockets:
        return {}, ()
    value = ",".join(f"{name}={sock.fileno()}" for name, sock in sockets.items())
    return {LISTEN_FDS_ENV: value}, tuple(sock.fileno() for sock in sockets.values())


def inherited(name: str, environ: Mapping[str, str] | None = None) -> socket.socket | None:
    """The listening socket handed down for port ``name``, or None when there is none (then
    the service binds its port itself). ValueError for a hand-off that is malformed or names
    a descriptor that is not a listening TCP socket."""
    raw = (os.environ if environ is None else environ).get(LISTEN_FDS_ENV)
    if not raw:
        return None
    for item in raw.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise ValueError(f"{LISTEN_FDS_ENV}: {item!r} is not NAME=FD")
        if match[1] != name:
            continue
        fd = int(match[2])
        if fd < 3:
            raise ValueError(f"{LISTEN_FDS_ENV}: {name}={fd} is a standard stream")
        try:
            sock = socket.socket(fileno=fd)  # family and type read from the descriptor
        except OSError as exc:
            raise ValueError(f"{LISTEN_FDS_ENV}: {name}={fd} is not a socket ({exc})") from None
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if (
            sock.family not in (socket.AF_INET, socket.AF_INET6)
            or sock.type != socket.SOCK_STREAM
            or not listening
        ):
            sock.detach()  # not ours to close
            raise ValueError(f"{LISTEN_FDS_ENV}: {name}={fd} is not a listening TCP socket")
        return sock
    return None


def serve_asgi(app: Any, *, host: str, port: int, name: str = "http", **options: Any) -> None:
    """Serve ``app`` with uvicorn on the socket handed down for port ``name``, or on
    ``host:port`` when there is none; exits like ``uvicorn.run``."""
    import sys

    import uvicorn

    try:
        sock = inherited(name)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    config = uvicorn.Config(app, host=host, port=port, **options)
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock] if sock is not None else None)
    if not server.started:
        sys.exit(3)  # as uvicorn.run: the server never started (a port taken, say)


def http_server(handler: Any, *, host: str, port: int, program: str) -> Any:
    """A ``ThreadingHTTPServer`` for one of the stack's small standard-library services, on
    the socket drillkit handed down (:func:`inherited`) or bound to ``host``/``port``; a
    malformed hand-off exits naming ``program``."""
    from http.server import ThreadingHTTPServer

    try:
        sock = inherited("http")
    except ValueError as exc:
        raise SystemExit(f"{program}: error: {exc}") from None
    if sock is None:
        server = ThreadingHTTPServer((host, port), handler)
    else:
        server = ThreadingHTTPServer(sock.getsockname()[:2], handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock
    server.daemon_threads = True
    return server


def status_handler(status: Callable[[], Any], metrics: Callable[[], str]) -> Any:
    """A request handler class for a small service: ``GET /healthz``, ``GET /status`` (JSON
    of ``status()``), ``GET /metrics`` (``metrics()``, Prometheus text); subclasses add more
    and answer with :meth:`send_body`."""
    import json
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                self.send_body(200, b'{"ok": true}')
            elif self.path == "/status":
                self.send_body(200, json.dumps(status()).encode())
            elif self.path == "/metrics":
                self.send_body(200, metrics().encode(), "text/plain; version=0.0.4")
            else:
                self.send_body(404, b'{"error": "not found"}')

        def send_body(self, code: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
