"""The receiving end of the per-request records: a local TCP server in drillkit's own process.

Each Locust process connects once, proves it is the drill's own with a first line
``DRILLKIT-SINK <token>`` (a random token the driver hands its child), and streams
newline-delimited wire records (see :mod:`drillkit.observe.records`). Any other process on the
host that connects is cut off at its first line: it can neither forge records (and so the
score) nor grow the sink's memory. Lines are bounded in length, connections in number, and
every record's fields in range. A connection may end with one *trailer*, a JSON object
``{"sent": N, "dropped": D, "pid": P}``, in which the generator says how many records it
wrote and how many it had to drop (a write error, or a sink that stopped reading); the sink
sums them so a caller can tell a complete record set from a lossy one.

A generator that says who it is, with a control line ``{"hello": {"name": ..., "host": ...,
"role": "records"}}`` after the token, gets its clock measured before it sends a record: the
sink sends ``{"ping": T1}`` (its wall clock), the generator answers ``{"pong": T1, "t": TW}``
(its own), the sink notes when the answer came (T2); of :data:`CLOCK_ROUNDS` rounds the one
with the shortest round trip gives the offset ``TW - (T1 + T2) / 2``, known within half that
round trip. When the offset is larger than that uncertainty (another host whose clock is off),
every record of that connection is moved onto the sink's clock; otherwise the clocks agree as
far as can be measured and records are kept as stamped. The sink then answers
``{"ready": {"offset": O, "rtt": R}}``; :attr:`SinkStats.ready` counts such connections.
A generator that said hello sends an empty line at least once a second: one that ends its
stream without a trailer, or falls silent for :data:`LOST_SILENCE` seconds, while the sink
runs, is *lost* (killed, or its host cut off); :attr:`SinkStats.workers` says which and when.
A ``"role": "join"`` connection is a ``drillkit worker`` on another host asking what to run: the
sink answers one ``{"join": ...}`` line (what :meth:`RecordSink.offer` set) and keeps the
connection open until it stops, so that the worker ends with the drill.

The server runs on one background thread around :mod:`selectors`. It never blocks the
generator for long: it reads whatever is available on every ready connection, splits it at
newlines (keeping a partial last line for the next read) and parses outside the lock that
guards the shared list. Parsing costs a few microseconds per record, so one thread keeps up
with tens of thousands of records per second; the figure is measured by
``bench/load_pipeline.py``.

This module must not import locust: it runs in drillkit's process, which gevent's monkey
patching would break.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import re
import secrets
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field, replace

from drillkit import safejson
from drillkit.errors import EnvironmentFailure
from drillkit.observe.records import EventRecord, RequestRecord

__all__ = ["RecordSink", "SinkStats", "WorkerInfo"]

logger = logging.getLogger("drillkit.load.sink")

_READ_SIZE = 1 << 18
# How long the selector sleeps when nothing happens: it bounds how late stop() is noticed.
_POLL_SECONDS = 0.05
#: The first line of every connection: this prefix and the sink's token (loopback) ...
AUTH_PREFIX = b"DRILLKIT-SINK "
#: ... or this prefix and a nonce, for a proof that never sends the token (:func:`prove`).
HMAC_PREFIX = b"DRILLKIT-SINK-HMAC "
_NONCE = re.compile(rb"[0-9a-f]{32}")
#: A record line is about 150 bytes; a line this long is not one of ours.
MAX_LINE = 4096
#: One connection per load-generator process, and room to spare (by default; a drill with
#: workers elsewhere allows two per worker: its records and its join).
MAX_CONNECTIONS = 64
#: Rounds of the clock handshake; the one with the shortest round trip gives the offset.
CLOCK_ROUNDS = 5
#: A generator that said hello and sent nothing for this long is lost.
LOST_SILENCE = 5.0
_TEXT = 128
#: What a control line (not a trailer) holds.
_CONTROL_KEYS = frozenset({"hello", "pong", "ping", "ready", "join", "challenge"})
_CHALLENGE_MAX = 512
# An unproven connection is closed after this long.
_AUTH_SECONDS = 5.0
#: Connections that have not proven the token yet, in all and from one address.
MAX_UNPROVEN = 64
MAX_UNPROVEN_PER_ADDRESS = 4
#: The largest clock offset taken from a worker: beyond it the host's clock is broken.
MAX_OFFSET = 86400.0


@dataclass
class SinkStats:
    """Counters of a sink; a snapshot, safe to keep."""

    records: int = 0
    events: int = 0  # click-event lines (``E[...]``), apart from the request records
    connections: int = 0  # proven to be the drill's generator (the first line), so far
    open_connections: int = 0
    malformed: int = 0  # lines that were neither a record nor a trailer
    refused: int = 0  # connections closed unheard: no token, a wrong one, too many, too long
    trailers: int = 0  # connections that ended with a trailer
    reported_sent: int = 0  # sum of the trailers' "sent"
    reported_dropped: int = 0  # sum of the trailers' "dropped"
    senders: dict[int, int] = field(default_factory=dict)  # trailer pid -> records it sent
    ready: int = 0  # generators that said hello and whose clock was measured
    joined: int = 0  # `drillkit worker` processes that asked what to run
    workers: list[WorkerInfo] = field(default_factory=list)  # generators that said hello


@dataclass
class WorkerInfo:
    """A load-generator process that said who it is; a snapshot."""

    name: str
    host: str
    peer: str  # the address it connected from
    offset: float = 0.0  # seconds its clock is ahead of the sink's, as corrected (0: agree)
    measured_offset: float | None = None  # what the clock handshake measured
    rtt: float | None = None  # the shortest round trip of the handshake, seconds
    pid: int = 0  # its process id on its own host (as it said)
    records: int = 0  # request records received from it
    events: int = 0  # click-event lines received from it
    sent: int | None = None  # what its trailer said it sent (records and events); None: no trailer
    dropped: int = 0  # what its trailer said it dropped
    finished: bool = False  # ended its stream with a trailer
    ended: bool = False  # its connection ended
    lost_at: float | None = None  # sink wall time it was found lost (ended or fell silent)


@dataclass
class _Conn:
    sock: socket.socket
    peer: str = "?"
    pending: bytearray = field(default_factory=bytearray)
    trusted: bool = False
    opened: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)
    worker: WorkerInfo | None = None  # a generator that said hello
    join: bool = False
    ping: float | None = None  # the sink time of the ping awaiting its answer
    samples: list[tuple[float, float]] = field(default_factory=list)  # (rtt, offset)
    challenge: tuple[bytes, bytes] | None = None  # (their nonce, ours) while proving
    trailer: bool = False  # its one trailer came
    broken: str | None = None  # why it is to be closed (it said something impossible)
    shift: float = 0.0  # subtracted from every time this connection sends


class RecordSink:
    """A TCP server on 127.0.0.1 that collects :class:`RequestRecord` lines from any number
    of connections.

    Use ``port = sink.start()``, hand ``127.0.0.1:<port>`` to the generator, read with
    :meth:`records` or :meth:`since`, and call :meth:`stop` (which drains what the generator
    already wrote) when done.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        *,
        token: str | None = None,
        port: int = 0,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._host = host
        self._max_connections = max_connections
        self._want_port = port
        self.token = token or secrets.token_hex(16)
        self._auth_line = AUTH_PREFIX + self.token.encode()
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._events: list[EventRecord] = []
        self._stats = SinkStats()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conns: dict[int, _Conn] = {}
        self._port = 0
        self._error: BaseException | None = None
        self._drain_deadline = 0.0
        self._offer: bytes | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> int:
        """Bind the port (an ephemeral one by default), start the reader thread and return
        the port."""
        if self._thread is not None:
            raise RuntimeError("RecordSink.start() called twice")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if self._want_port:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self._host, self._want_port))
            listener.listen(128)
        except OSError as exc:
            listener.close()
            where = f"{self._host}:{self._want_port}" if self._want_port else self._host
            raise EnvironmentFailure(f"record sink: cannot listen on {where}: {exc}") from None
        listener.setblocking(False)
        self._listener = listener
        self._port = int(listener.getsockname()[1])
        self._thread = threading.Thread(target=self._run, name="drillkit-record-sink", daemon=True)
        self._thread.start()
        return self._port

    @property
    def port(self) -> int:
        """The bound port (0 before :meth:`start`)."""
        return self._port

    @property
    def address(self) -> str:
        """``host:port`` as the generator expects it in ``DRILLKIT_SINK``."""
        return f"{self._host}:{self._port}"

    def offer(self, join: dict[str, object]) -> None:
        """What a ``drillkit worker`` that proves the token and asks to join is told."""
        self._offer = json.dumps({"join": join}).encode() + b"\n"

    def stop(self, drain_timeout: float = 2.0) -> None:
        """Stop accepting, read what the connections already hold, close everything.

        Idempotent. Data a generator wrote before it closed its socket is never lost; a
        generator still writing after ``drain_timeout`` is cut off.
        """
        thread = self._thread
        if thread is None or self._stopping.is_set():
            if thread is not None:
                thread.join()
            return
        self._drain_deadline = time.monotonic() + drain_timeout
        self._stopping.set()
        thread.join()

    def wait_closed(self, timeout: float) -> bool:
        """Wait until every accepted connection reached its end; False on timeout.

        After the generator exited, this makes :meth:`records` complete without stopping.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._stats.open_connections == 0:
                    return True
            time.sleep(0.01)
        return False

    # -- reading --------------------------------------------------------------------------

    def records(self) -> list[RequestRecord]:
        """A snapshot of every record received so far, in arrival order."""
        with self._lock:
            return list(self._records)

    def since(self, index: int) -> tuple[list[RequestRecord], int]:
        """Records received after the first ``index``, and the index to pass next time."""
        with self._lock:
            new = self._records[index:]
            return new, index + len(new)

    def events(self) -> list[EventRecord]:
        """A snapshot of every click-event record received so far, in arrival order."""
        with self._lock:
            return list(self._events)

    @property
    def count(self) -> int:
        """How many records were received."""
        with self._lock:
            return len(self._records)

    def stats(self) -> SinkStats:
        """A copy of the counters."""
        with self._lock:
            return replace(
                self._stats,
                senders=dict(self._stats.senders),
                workers=[replace(w) for w in self._stats.workers],
            )

    @property
    def error(self) -> BaseException | None:
        """The exception that ended the reader thread, if one did."""
        return self._error

    # -- the reader thread ----------------------------------------------------------------

    def _run(self) -> None:
        assert self._listener is not None
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ, None)
        try:
            while not self._stopping.is_set():
                for key, _ in selector.select(_POLL_SECONDS):
                    if key.data is None:
                        self._accept(selector)
                    else:
                        self._read(selector, key.data)
                self._drop_silent(selector)
            selector.unregister(self._listener)
            self._listener.close()
            # Final drain: whatever the generators wrote before closing is still in the
            # kernel's buffers; read until each connection ends or the deadline passes.
            while self._conns and time.monotonic() < self._drain_deadline:
                for key, _ in selector.select(_POLL_SECONDS):
                    self._read(selector, key.data)
        except BaseException as exc:  # pragma: no cover - reported through .error
            self._error = exc
            logger.exception("record sink failed")
        finally:
            for conn in list(self._conns.values()):
                self._close(selector, conn)
            selector.close()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.warning("record sink: accept failed: %s", exc)
                return
            peer = _peer(sock)
            # Connections not proven yet get a budget of their own, and a small one per
            # address: a host that opens many and says nothing cannot crowd the workers out
            # (the oldest of its unproven ones makes room for the newest).
            unproven = [c for c in self._conns.values() if not c.trusted]
            # (Not for this machine's own processes: a drill's local ones connect at once.)
            from_peer = [] if _loopback(peer) else [c for c in unproven if c.peer == peer]
            for crowd, limit in ((from_peer, MAX_UNPROVEN_PER_ADDRESS), (unproven, MAX_UNPROVEN)):
                if len(crowd) >= limit:
                    self._refuse(selector, min(crowd, key=lambda c: c.opened))
            if len(self._conns) - len(unproven) >= self._max_connections:
                sock.close()
                with self._lock:
                    self._stats.refused += 1
                continue
            sock.setblocking(False)
            conn = _Conn(sock, peer=peer)
            self._conns[sock.fileno()] = conn
            selector.register(sock, selectors.EVENT_READ, conn)
            with self._lock:
                self._stats.open_connections += 1

    def _read(self, selector: selectors.BaseSelector, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            # The end of the stream: a last line without its newline still counts.
            if conn.pending and conn.trusted:
                self._ingest([bytes(conn.pending)], conn)
            conn.pending.clear()
            if conn.trusted:
                worker = conn.worker
                if worker is not None:
                    with self._lock:
                        worker.ended = True
                        if not worker.finished and not self._stopping.is_set():
                            worker.lost_at = worker.lost_at or time.time()
                self._close(selector, conn)
            else:
                self._refuse(selector, conn)
            return
        conn.seen = time.monotonic()
        if conn.worker is not None and conn.worker.lost_at is not None and not conn.worker.ended:
            with self._lock:
                conn.worker.lost_at = None  # silent for a while, and back
        end = data.rfind(b"\n")
        if end < 0:
            conn.pending += data
            if len(conn.pending) > MAX_LINE:
                self._refuse(selector, conn)
            return
        if conn.pending:
            conn.pending += data[: end + 1]
            chunk = bytes(conn.pending)
            conn.pending.clear()
        else:
            chunk = data[: end + 1]
        conn.pending += data[end + 1 :]
        if len(conn.pending) > MAX_LINE:
            self._refuse(selector, conn)
            return
        lines = chunk.split(b"\n")
        if not conn.trusted:
            after = self._authenticate(conn, lines)
            if after is None:
                self._refuse(selector, conn)
                return
            if not conn.trusted:
                return  # the challenge is out; its answer comes next
            lines = after
        self._ingest(lines, conn)
        if conn.broken is not None:
            logger.warning("record sink: %s from %s; connection closed", conn.broken, conn.peer)
            self._refuse(selector, conn)

    def _authenticate(self, conn: _Conn, lines: list[bytes]) -> list[bytes] | None:
        """The lines after a proof of the token (None: no proof; refuse the connection).

        Two forms: ``DRILLKIT-SINK <token>`` (on loopback, drillkit's local tests), or the
        challenge of :func:`prove` that never sends the token: the generator's nonce, the
        sink's nonce and the sink's own proof, then the generator's proof."""
        if conn.challenge is None:
            first, rest = lines[0], lines[1:]
            if first.startswith(HMAC_PREFIX):
                theirs = first[len(HMAC_PREFIX) :]
                if not _NONCE.fullmatch(theirs):
                    return None
                ours = secrets.token_hex(16).encode()
                conn.challenge = (theirs, ours)
                answer = {
                    "challenge": ours.decode(),
                    "proof": _mac(self.token, b"sink", theirs, ours),
                }
                if not self._send(conn, json.dumps(answer).encode() + b"\n"):
                    return None
                if not rest or rest == [b""]:
                    return rest
                return self._authenticate(conn, rest)
            # The token itself, only from this machine: it never crosses a network.
            if not _loopback(conn.peer) or not hmac.compare_digest(first, self._auth_line):
                return None
            self._trust(conn)
            return rest
        theirs, ours = conn.challenge
        expected = _mac(self.token, b"worker", theirs, ours).encode()
        if not hmac.compare_digest(lines[0], expected):
            return None
        self._trust(conn)
        return lines[1:]

    def _trust(self, conn: _Conn) -> None:
        conn.trusted = True
        with self._lock:
            self._stats.connections += 1

    def _refuse(self, selector: selectors.BaseSelector, conn: _Conn) -> None:
        """Close a connection that is not the drill's generator's, unheard."""
        conn.pending.clear()
        self._close(selector, conn)
        with self._lock:
            self._stats.refused += 1

    def _drop_silent(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        for conn in list(self._conns.values()):
            if not conn.trusted and now - conn.opened > _AUTH_SECONDS:
                self._refuse(selector, conn)
            worker = conn.worker
            if worker is not None and worker.lost_at is None and now - conn.seen > LOST_SILENCE:
                with self._lock:
                    worker.lost_at = time.time() - (now - conn.seen)

    def _send(self, conn: _Conn, line: bytes) -> bool:
        """Answer a generator (a few bytes on a fresh connection: the kernel takes them)."""
        try:
            conn.sock.sendall(line)
        except OSError:
            return False
        return True

    def _control(self, conn: _Conn, message: dict[str, object]) -> bool:
        """Act on a hello or a pong; False when ``message`` is neither."""
        hello = message.get("hello")
        if "hello" in message and (not isinstance(hello, dict) or conn.worker or conn.join):
            return False  # a second hello, or not one
        if isinstance(hello, dict):
            if hello.get("role") == "join":
                conn.join = True
                with self._lock:
                    self._stats.joined += 1
                offer = self._offer or b'{"error": "this drill takes no workers from elsewhere"}\n'
                self._send(conn, offer)
                return True
            peer = conn.peer
            worker = WorkerInfo(
                name=_text(hello.get("name")) or f"pid {_as_int(hello.get('pid'))}",
                host=_text(hello.get("host")),
                peer=peer,
                pid=_as_int(hello.get("pid")),
            )
            conn.worker = worker
            with self._lock:
                self._stats.workers.append(worker)
            conn.ping = time.time()
            self._send(conn, json.dumps({"ping": conn.ping}).encode() + b"\n")
            return True
        if "pong" in message:
            if conn.ping is None or conn.worker is None:
                return False  # no ping is out

            now = time.time()
            theirs = message.get("t")
            if message.get("pong") != conn.ping or not isinstance(theirs, float):
                return True  # not the answer to this ping: ignored
            offset = theirs - (conn.ping + now) / 2
            if not math.isfinite(offset) or abs(offset) > MAX_OFFSET:
                conn.broken = f"a clock {offset:g} s off"
                return True
            conn.samples.append((now - conn.ping, offset))
            if len(conn.samples) < CLOCK_ROUNDS:
                conn.ping = time.time()
                self._send(conn, json.dumps({"ping": conn.ping}).encode() + b"\n")
                return True
            conn.ping = None
            rtt, offset = min(conn.samples)
            # Within half a round trip the clocks agree as far as can be told: no correction.
            conn.shift = offset if abs(offset) > rtt / 2 else 0.0
            worker = conn.worker
            with self._lock:
                worker.rtt, worker.measured_offset, worker.offset = rtt, offset, conn.shift
                self._stats.ready += 1
            ready = {"ready": {"offset": conn.shift, "rtt": rtt}}
            self._send(conn, json.dumps(ready).encode() + b"\n")
            return True
        return False

    def _ingest(self, lines: list[bytes], conn: _Conn) -> None:
        parsed: list[RequestRecord] = []
        events: list[EventRecord] = []
        malformed = 0
        trailers: list[dict[str, object]] = []
        from_wire = RequestRecord.from_wire
        for line in lines:
            if not line:
                continue
            if len(line) > MAX_LINE:
                malformed += 1
                continue
            if line[0] == 0x7B:  # "{": a trailer, not a record
                try:
                    trailer = safejson.loads(line)
                except ValueError:
                    malformed += 1
                    continue
                if not isinstance(trailer, dict):
                    malformed += 1
                elif _CONTROL_KEYS.isdisjoint(trailer):
                    # A trailer: one per connection, with the counts it is for.
                    if conn.trailer or not isinstance(trailer.get("sent"), int):
                        malformed += 1
                    else:
                        conn.trailer = True
                        trailers.append(trailer)
                elif not self._control(conn, trailer):
                    malformed += 1
                continue
            try:
                if line[0] == 0x45:  # "E": a click event
                    events.append(EventRecord.from_wire(line))
                else:
                    parsed.append(from_wire(line))
            except (ValueError, TypeError, UnicodeDecodeError):
                malformed += 1
        if conn.shift and (parsed or events):
            # Onto the sink's clock (see the module's docstring).
            shift = conn.shift
            parsed = [replace(r, sent_at=r.sent_at - shift) for r in parsed]
            events = [replace(e, sent_at=e.sent_at - shift) for e in events]
        with self._lock:
            self._records.extend(parsed)
            self._events.extend(events)
            worker = conn.worker
            if worker is not None:
                worker.records += len(parsed)
                worker.events += len(events)
                for trailer in trailers:
                    worker.sent = (worker.sent or 0) + _as_int(trailer.get("sent"))
                    worker.dropped += _as_int(trailer.get("dropped"))
                worker.finished = worker.finished or bool(trailers)
            stats = self._stats
            stats.records += len(parsed)
            stats.events += len(events)
            stats.malformed += malformed
            for trailer in trailers:
                stats.trailers += 1
                stats.reported_sent += _as_int(trailer.get("sent"))
                stats.reported_dropped += _as_int(trailer.get("dropped"))
                pid = _as_int(trailer.get("pid"))
                stats.senders[pid] = stats.senders.get(pid, 0) + _as_int(trailer.get("sent"))
        if malformed:
            logger.warning("record sink: %d malformed line(s) ignored", malformed)

    def _close(self, selector: selectors.BaseSelector, conn: _Conn) -> None:
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(conn.sock)
        with contextlib.suppress(OSError):
            self._conns.pop(conn.sock.fileno(), None)
        conn.sock.close()
        with self._lock:
            self._stats.open_connections -= 1


def _mac(token: str, who: bytes, theirs: bytes, ours: bytes) -> str:
    message = who + b":" + theirs + b":" + ours
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def prove(sock: socket.socket, token: str) -> None:
    """Prove to the sink at the other end of ``sock`` that this process holds the drill's
    token, and check that the sink holds it too, without the token crossing the network: a
    host that listens on the way learns nothing it can use, one that poses as the drill at
    its address cannot answer. OSError when the sink refuses or cannot prove itself.

    The exchange: ``DRILLKIT-SINK-HMAC <ours>`` -> ``{"challenge": C, "proof": HMAC(token,
    "sink:<ours>:C")}`` -> ``HMAC(token, "worker:<ours>:C")``.
    """
    ours = secrets.token_hex(16).encode()
    sock.sendall(HMAC_PREFIX + ours + b"\n")
    line = b""
    while not line.endswith(b"\n"):  # one byte at a time: nothing after it is read here
        byte = sock.recv(1)
        if not byte:
            raise OSError("the drill closed the connection")
        line += byte
        if len(line) > _CHALLENGE_MAX:
            raise OSError("the drill's answer is too long")
    try:
        answer = json.loads(line)
        challenge = str(answer["challenge"]).encode()
        proof = str(answer["proof"])
    except (ValueError, KeyError, TypeError):
        raise OSError("the drill answered something else than a challenge") from None
    if not _NONCE.fullmatch(challenge) or not hmac.compare_digest(
        proof, _mac(token, b"sink", ours, challenge)
    ):
        raise OSError(
            "it does not hold this process's token (a wrong token, or not the drill there)"
        )
    sock.sendall(_mac(token, b"worker", ours, challenge).encode() + b"\n")


def _peer(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return "?"


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _text(value: object) -> str:
    """A name a generator gave, printable and bounded."""
    if not isinstance(value, str):
        return ""
    return "".join(c for c in value if c.isprintable())[:_TEXT]


def _as_int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
