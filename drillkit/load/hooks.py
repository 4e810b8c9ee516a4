"""drillkit's recording attached to a Locust process: what every locustfile drillkit runs
shares (its own :mod:`drillkit.load.locustfile`, :mod:`drillkit.load.requests_user`, or a
team's own locustfile, loaded beside :mod:`drillkit.load.attach`).

This module runs ONLY inside the Locust child process that
:class:`drillkit.load.driver.LoadDriver` starts. Never import it from drillkit's own process or
from a test: importing locust monkey-patches the whole interpreter with gevent.

What it does, per process that generates load (the single local runner, or each worker
under ``--processes``):

- With ``DRILLKIT_PACE=1`` (a locustfile that is not drillkit's), every user class's
  ``wait_time`` becomes ``constant_throughput(rate / users)``, so all users together offer the
  scenario's ``rate`` requests/s whatever pacing the file had.
- A listener on ``events.request`` turns every completed request into one wire record
  (the format of :mod:`drillkit.observe.records`) and hands it to a writer that
  buffers lines and sends them to the sink in batches (every 50 ms, or sooner at 256 lines)
  from its own greenlet, so a slow sink never stalls a request.
- At the end (Locust's ``quit`` event) the writer flushes, sends a trailer
  ``{"sent": N, "dropped": D, "pid": P}`` and closes. After a write error it drops records,
  counts them, and logs the count.

Settings come from the environment (the driver sets them): ``DRILLKIT_SINK`` (host:port) and
``DRILLKIT_SINK_TOKEN`` (what proves to the sink that the records are this drill's),
``DRILLKIT_RATE``, ``DRILLKIT_USERS``, ``DRILLKIT_N_USERS``, ``DRILLKIT_K``,
``DRILLKIT_TIMEOUT`` (seconds), ``DRILLKIT_SEED``, and optionally ``DRILLKIT_COLD_SHARE``
(default 0.01) and ``DRILLKIT_EMIT_RECORDS`` (default 1; 0 measures bare Locust).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import itertools
import json
import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import gevent  # type: ignore[import-untyped]
from gevent.event import Event  # type: ignore[import-untyped]
from locust import events
from locust.rpc import Message
from locust.runners import MasterRunner, WorkerRunner
from locust.user.wait_time import constant_throughput

from drillkit.load.sink import prove
from drillkit.observe.records import CACHE_OUTCOMES, MAX_TEXT, event_line, wire_line, wire_tail

logger = logging.getLogger("drillkit.load")

_FLUSH_SECONDS = 0.05
_FLUSH_LINES = 256
# A sink that stops reading must not grow the generator without bound: beyond this many
# pending lines, records are dropped (and counted).
_MAX_PENDING = 1 << 20
_SEND_TIMEOUT = 10.0
_HEARTBEAT_SECONDS = 1.0
_MAX_CONTROL = 4096
_CONNECT_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL}
)


@dataclass(frozen=True)
class _Settings:
    sink: tuple[str, int]
    sink_token: str
    rate: float
    users: int
    n_users: int
    k: int
    timeout: float
    seed: int
    cold_share: float
    skew: float
    emit: bool
    event_share: float
    n_items: int


def _settings(env: dict[str, str] | os._Environ[str]) -> _Settings:
    def need(name: str) -> str:
        value = env.get(name)
        if not value:
            raise SystemExit(f"drillkit locustfile: {name} is not set (run it through LoadDriver)")
        return value

    try:
        host, _, port = need("DRILLKIT_SINK").rpartition(":")
        settings = _Settings(
            sink=(host, int(port)),
            sink_token=need("DRILLKIT_SINK_TOKEN"),
            rate=float(need("DRILLKIT_RATE")),
            users=int(need("DRILLKIT_USERS")),
            n_users=int(need("DRILLKIT_N_USERS")),
            k=int(env.get("DRILLKIT_K", "10")),
            timeout=float(need("DRILLKIT_TIMEOUT")),
            seed=int(env.get("DRILLKIT_SEED", "0")),
            cold_share=float(env.get("DRILLKIT_COLD_SHARE", "0.01")),
            skew=float(env.get("DRILLKIT_USER_SKEW", "0")),
            emit=env.get("DRILLKIT_EMIT_RECORDS", "1") != "0",
            event_share=float(env.get("DRILLKIT_EVENT_SHARE", "0")),
            n_items=int(env.get("DRILLKIT_N_ITEMS", "1")),
        )
    except ValueError as exc:
        raise SystemExit(f"drillkit locustfile: bad setting: {exc}") from None
    if (
        settings.rate <= 0
        or settings.users < 1
        or settings.n_users < 1
        or settings.timeout <= 0
        or not 0 <= settings.skew <= 3
        or not 0 <= settings.event_share < 1
        or settings.n_items < 1
    ):
        raise SystemExit(f"drillkit locustfile: settings out of range: {settings}")
    return settings


SETTINGS = _settings(os.environ)


def _zipf_cumulative(n: int, skew: float) -> list[float] | None:
    """Cumulative weights of users ``0..n-1`` under Zipf(``skew``): user ``u`` asks with
    weight ``1 / (u + 1) ** skew``; None for uniform (skew 0)."""
    if skew <= 0:
        return None
    return list(itertools.accumulate(1.0 / (u + 1) ** skew for u in range(n)))


CUMULATIVE = _zipf_cumulative(SETTINGS.n_users, SETTINGS.skew)


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


class _Writer:
    """Buffers wire lines and sends them to the sink from one greenlet.

    Only the flusher greenlet writes to the socket, so batches never interleave.
    """

    def __init__(self, address: tuple[str, int], token: str, name: str) -> None:
        self.lines: list[str] = []
        self.sent = 0
        self.dropped = 0
        self.failed = False
        self._closing = False
        self._wake = Event()
        self._quiet = 0.0
        self._sock = socket.create_connection(address, timeout=_SEND_TIMEOUT)
        # Prove to the sink that this is the drill's own generator (and that the sink is the
        # drill's), without the token crossing the network; the hello that follows has the
        # sink measure this host's clock (see drillkit.load.sink).
        prove(self._sock, token)
        hello = {"hello": {"name": name, "host": socket.gethostname(), "pid": os.getpid()}}
        self._sock.sendall(_line(hello))
        self.offset = self._clock()
        self._greenlet = gevent.spawn(self._loop)

    def _clock(self) -> float:
        """Answer the sink's pings until it says ready; the offset it will correct."""
        reader = self._sock.makefile("rb")
        try:
            while True:
                raw = reader.readline(_MAX_CONTROL)
                if not raw:
                    raise OSError("the record sink closed the connection (the wrong token?)")
                message = json.loads(raw)
                if "ping" in message:
                    self._sock.sendall(_line({"pong": message["ping"], "t": time.time()}))
                elif "ready" in message:
                    return float(message["ready"]["offset"])
        except (ValueError, KeyError, TypeError) as exc:
            raise OSError(f"the record sink answered something else: {exc}") from None
        finally:
            reader.close()

    def add(self, line: str) -> None:
        lines = self.lines
        if len(lines) >= _MAX_PENDING:
            self.dropped += 1
            return
        lines.append(line)
        if len(lines) >= _FLUSH_LINES:
            self._wake.set()

    def _loop(self) -> None:
        while not self._closing:
            self._wake.wait(_FLUSH_SECONDS)
            self._wake.clear()
            self._flush()
        self._flush()
        self._finish()

    def _flush(self) -> None:
        if not self.lines:
            self._quiet += _FLUSH_SECONDS
            if self._quiet >= _HEARTBEAT_SECONDS and not self.failed:
                # An empty line: alive, nothing to say (the sink takes silence for a loss).
                self._quiet = 0.0
                try:
                    self._sock.sendall(b"\n")
                except OSError as exc:
                    self.failed = True
                    logger.error("drillkit: record sink write failed: %s", exc)
            return
        self._quiet = 0.0
        batch, self.lines = self.lines, []
        if self.failed:
            self.dropped += len(batch)
            return
        batch.append("")  # a final newline
        try:
            self._sock.sendall("\n".join(batch).encode())
        except OSError as exc:
            self.failed = True
            self.dropped += len(batch) - 1
            logger.error("drillkit: record sink write failed, dropping records from now: %s", exc)
        else:
            self.sent += len(batch) - 1

    def _finish(self) -> None:
        if not self.failed:
            trailer = {"sent": self.sent, "dropped": self.dropped, "pid": os.getpid()}
            try:
                self._sock.sendall(json.dumps(trailer).encode() + b"\n")
            except OSError:
                self.failed = True
        with contextlib.suppress(OSError):
            self._sock.close()
        if self.dropped:
            logger.warning("drillkit: %d record(s) dropped, %d sent", self.dropped, self.sent)

    def close(self) -> None:
        """Flush everything, send the trailer, close. Idempotent."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._greenlet.join(timeout=_SEND_TIMEOUT + 5.0)


_writer: _Writer | None = None
_tails: dict[tuple[str, bool, str, str, str, str, str], str] = {}
_MAX_TAILS = 4096
_user_serial = itertools.count()
#: This generator process's own: producer ids never repeat across drills (a reused backup
#: location may hold another drill's events).
RUN_ID = os.urandom(6).hex()


def _error_class(exception: BaseException, status: int) -> str:
    # geventhttpclient wraps a timeout (which it would retry) in RetriesExceeded(original=...)
    cause = getattr(exception, "original", None) or exception
    if isinstance(cause, (TimeoutError, gevent.Timeout)):
        return "timeout"
    if isinstance(cause, ConnectionRefusedError | socket.gaierror):
        return "connect"
    if isinstance(cause, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return "reset"
    name = type(cause).__name__
    if name in ("HTTPConnectionClosed", "EmptyResponse"):
        return "reset"
    if isinstance(cause, OSError) and cause.errno in _CONNECT_ERRNOS:
        return "connect"
    if status >= 400:
        return "http"
    return "other"


def _on_request(
    request_type: str,
    name: str,
    response_time: float,
    response_length: int,
    response: Any,
    context: dict[str, Any],
    exception: BaseException | None,
    start_time: float,
    url: str | None = None,
    **_: Any,
) -> None:
    # This runs once per request and decides the generator's ceiling: keep it lean.
    status = response.status_code if response is not None else 0
    event = context.get("event")
    if event is not None:  # a click event: its own line, apart from the requests
        if exception is not None and _error_class(exception, status) != "http":
            status = 0  # no usable answer: not acknowledged
        writer = _writer
        if writer is not None:
            writer.add(event_line(event[0], event[1], start_time, response_time, status))
        return
    error = ""
    if exception is not None:
        error = _error_class(exception, status)
        if error != "http":
            status = 0  # no usable answer (e.g. the body never came), whatever the status line
    elif not status:
        error = "other"
    if status:
        get = response.headers.get
        key = (
            error,
            get("x-degraded") == "true",
            (get("x-model-version") or "")[:MAX_TEXT],
            (get("x-model-digest") or "")[:MAX_TEXT],
            (get("x-replica") or "")[:MAX_TEXT],
            (get("x-zone") or "")[:MAX_TEXT],
            get("x-cache") if get("x-cache") in CACHE_OUTCOMES else "",
        )
    else:
        key = (error, False, "", "", "", "", "")
    # The tail of a line (error, degraded, version, digest, replica, zone, cache) takes a few
    # values in a whole drill: encode each once. Floats and ints print as json would.
    tail = _tails.get(key)
    if tail is None:
        if len(_tails) >= _MAX_TAILS:
            _tails.clear()
        tail = wire_tail(*key)
        _tails[key] = tail
    line = wire_line(start_time, response_time, status, tail, context.get("user", -1))
    writer = _writer
    if writer is not None:
        writer.add(line)


def _check_host(host: str | None) -> None:
    parts = urlsplit(host or "")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SystemExit(f"drillkit locustfile: --host must be http(s)://HOST[:PORT], got {host!r}")
    try:
        _ = parts.port
    except ValueError as exc:
        raise SystemExit(f"drillkit locustfile: bad --host {host!r}: {exc}") from None


#: The custom message in which a worker proves to its master that it holds the drill's token.
HELLO = "drillkit_hello"
#: How long a worker that joined the master has to prove it, before it is sent away (it gets
#: no users meanwhile, so this can be generous: a master busy spreading users answers late).
PROVE_SECONDS = 10.0
#: What a frame that is not a Locust message raises while it is read.
_MALFORMED = (TypeError, ValueError, IndexError, KeyError, AttributeError)


def proof(client_id: str) -> str:
    """What a worker sends its master: the token's HMAC of the worker's Locust client id (the
    token itself never crosses Locust's unauthenticated channel)."""
    key = SETTINGS.sink_token.encode()
    return hmac.new(key, client_id.encode(), hashlib.sha256).hexdigest()


class _Gate:
    """The master's side of Locust's channel, which has no authentication of its own: a
    worker joins only once it proves the drill's token.

    - A frame that is not a well-formed message, or whose sender id is not the connection's
      own, is dropped (one malformed frame would otherwise end the master's listener).
    - A worker's ``client_ready`` is acknowledged (the worker waits for that before it can say
      anything else) but held: it reaches Locust, which then counts the worker and gives it
      users, only after the worker's :data:`HELLO` with the right proof for that connection.
    - Anything else from a worker that has not proved itself is dropped; one that has not done
      so within :data:`PROVE_SECONDS`, or sends a wrong proof, is told to quit.

    Locust's own structures (its workers, its dispatcher) are never touched from here."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner
        self.proven: set[str] = set()
        self.held: dict[str, tuple[Any, float]] = {}  # connection id -> (client_ready, since)
        self._recv = runner.server.recv_from_client
        self._handle = runner.handle_message
        runner.server.recv_from_client = self._recv_checked
        runner.handle_message = self._handle_checked
        # Locust tells its own workers when it quits; one held here is not one of them yet.
        self._quit = runner.quit
        runner.quit = self._quit_all
        gevent.spawn(self._watch)

    def _quit_all(self) -> None:
        for client_id in list(self.held):
            self._send_away(client_id, "the master quits")
        self._quit()  # which waits a moment for its messages to go out

    def _recv_checked(self) -> tuple[str, Any]:
        while True:
            try:
                client_id, msg = self._recv()
                kind, node = msg.type, msg.node_id
            except _MALFORMED as exc:
                logger.warning("drillkit: a malformed message to the master, dropped: %r", exc)
                continue
            if isinstance(kind, str) and isinstance(node, str) and node == client_id:
                return client_id, msg
            logger.warning("drillkit: a message whose sender is not its connection, dropped")

    def _handle_checked(self, client_id: str, msg: Any) -> None:
        if client_id in self.proven:
            if msg.type != HELLO:
                self._handle(client_id, msg)
            return
        if msg.type == "client_ready":
            self.held.setdefault(client_id, (msg, time.monotonic()))
            index = self.runner.get_worker_index(client_id)
            self._send(Message("ack", {"index": index}, client_id))  # type: ignore[no-untyped-call]
        elif msg.type == HELLO and client_id in self.held:
            data = msg.data if isinstance(msg.data, dict) else {}
            given = data.get("proof")
            if isinstance(given, str) and hmac.compare_digest(given, proof(client_id)):
                self.proven.add(client_id)
                ready, _ = self.held.pop(client_id)
                self._handle(client_id, ready)  # now Locust counts it
            else:
                self._send_away(client_id, "a wrong proof")

    def _watch(self) -> None:
        while True:
            gevent.sleep(0.25)
            now = time.monotonic()
            for client_id, (_, since) in list(self.held.items()):
                if now - since > PROVE_SECONDS:
                    self._send_away(client_id, "no proof")

    def _send(self, message: Any) -> None:
        with contextlib.suppress(Exception):  # a connection that went away
            self.runner.server.send_to_client(message)

    def _send_away(self, client_id: str, why: str) -> None:
        self.held.pop(client_id, None)
        logger.error(
            "drillkit: worker %s did not prove the drill's token (%s); sent away", client_id, why
        )
        self._send(Message("quit", None, client_id))  # type: ignore[no-untyped-call]


def _guard_worker(runner: Any) -> None:
    """A worker that joined from elsewhere takes from its master only the load its drill
    offered: the host of the offer (``DRILLKIT_HOST``), at most the drill's users, and no
    changes to its user classes."""
    start = runner.start_worker
    host = os.environ.get("DRILLKIT_HOST")

    def start_checked(user_classes_count: dict[str, int], **kwargs: Any) -> None:
        if host is not None and runner.environment.host != host:
            logger.error(
                "drillkit: the master asked for load on %r, not the drill's %r; refused",
                runner.environment.host,
                host,
            )
            runner.environment.host = host
        counts = {k: v for k, v in user_classes_count.items() if isinstance(v, int) and v >= 0}
        if sum(counts.values()) > SETTINGS.users:
            logger.error("drillkit: the master asked for more users than the drill has; refused")
            return
        start(counts, **kwargs)

    runner.start_worker = start_checked
    runner.environment.update_user_class = lambda *_args, **_kw: None


def _on_init(environment: Any, runner: Any = None, **_: Any) -> None:
    global _writer
    if not isinstance(runner, WorkerRunner) or environment.host is not None:
        # In the master too (its workers would exit, it would wait); a worker that joins
        # from elsewhere (`drillkit worker`) is told the host by its master at the start.
        _check_host(environment.host)
    if os.environ.get("DRILLKIT_PACE") == "1":
        pace = constant_throughput(SETTINGS.rate / SETTINGS.users)
        for user_class in environment.user_classes or []:
            user_class.wait_time = pace
    if isinstance(runner, MasterRunner):
        _Gate(runner)
        return  # the master sends no requests
    if isinstance(runner, WorkerRunner):
        runner.send_message(HELLO, {"proof": proof(runner.client_id)})
        _guard_worker(runner)
    name = os.environ.get("DRILLKIT_WORKER_NAME") or f"{socket.gethostname()}:{os.getpid()}"
    try:
        _writer = _Writer(SETTINGS.sink, SETTINGS.sink_token, name)
    except OSError as exc:
        raise SystemExit(f"drillkit locustfile: cannot reach the record sink: {exc}") from None
    if SETTINGS.emit:
        events.request.add_listener(_on_request)  # type: ignore[no-untyped-call]


def _on_quit(**_: Any) -> None:
    if _writer is not None:
        _writer.close()


# EventHook.add_listener is unannotated in locust; the listeners above are typed.
events.init.add_listener(_on_init)  # type: ignore[no-untyped-call]
events.quit.add_listener(_on_quit)  # type: ignore[no-untyped-call]


def user_rng(environment: Any) -> random.Random:
    """A generator seeded per (seed, process, user), so a drill replays the same choices."""
    index = getattr(environment.runner, "worker_index", 0)
    return random.Random(f"{SETTINGS.seed}:{index}:{next(_user_serial)}")
