"""A small open-loop HTTP/1.1 load generator for the benchmarks.

Open loop: request i is due at ``start + i / rate`` whether or not earlier ones have answered,
and its latency is measured from that due time, so a stalled server shows up in the tail
instead of silently lowering the offered rate (no coordinated omission). Requests go over a
pool of keep-alive connections with a hand-written minimal HTTP/1.1 client on asyncio streams:
it costs a few tens of microseconds of CPU per request, which matters when the generator
shares two cores with the system under test.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Result:
    offered_rps: float
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)  # errors by cause
    degraded: int = 0
    degraded_at: list[float] = field(default_factory=list)  # seconds from start, when due
    late_starts: int = 0  # requests that could not even be sent on time (no free connection)
    cache: dict[str, int] = field(default_factory=dict)  # X-Cache answers: hit, miss, bypass

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + self.errors

    @property
    def achieved_rps(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        # Nearest rank, as in drillkit's reports: the ceil(q*n/100)-th smallest value.
        rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered) / 100) - 1))
        return ordered[rank]


# Below uvicorn's 5 s keep-alive timeout: a connection idle longer may be closed by the server
# just as it is reused, which is the client's race, not the server's failure.
IDLE_EXPIRY = 4.0


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    async def get(self, host: str, target: str) -> tuple[int, dict[bytes, bytes]]:
        self.writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            if b":" in line:
                k, _, v = line.partition(b":")
                headers[k.strip().lower()] = v.strip()
        length = int(headers.get(b"content-length", b"0"))
        if length:
            await self.reader.readexactly(length)
        return status, headers


async def run_open_loop(
    url: str,
    rate: float,
    seconds: float,
    target: Callable[[int], str],
    *,
    timeout: float = 2.0,
    max_connections: int = 256,
) -> Result:
    """Offer ``rate`` requests/s for ``seconds`` to ``url`` (paths from ``target(i)``)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    hostport = f"{host}:{port}"
    idle: list[_Conn] = []
    opened = 0
    result = Result(offered_rps=rate, seconds=seconds)
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int, due: float) -> None:
        nonlocal opened
        conn = None
        while idle:
            conn = idle.pop()
            if loop.time() - conn.idle_since <= IDLE_EXPIRY:
                break
            conn.writer.close()
            conn = None
        try:
            if conn is None:
                opened += 1
                reader, writer = await asyncio.open_connection(host, port)
                conn = _Conn(reader, writer)
            status, headers = await asyncio.wait_for(conn.get(hostport, target(i)), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            result.error(type(exc).__name__)
            if conn is not None:
                conn.writer.close()
            return
        if status >= 400:  # a 4xx is a request the target could not serve either
            result.error(f"http {status}")
        else:
            result.latencies_ms.append((loop.time() - due) * 1000.0)
            if headers.get(b"x-degraded") == b"true":
                result.degraded += 1
                result.degraded_at.append(due - start)
            cached = headers.get(b"x-cache")
            if cached is not None:
                word = cached.decode("ascii", "replace")
                result.cache[word] = result.cache.get(word, 0) + 1
        conn.idle_since = loop.time()
        idle.append(conn)

    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.01:
            result.late_starts += 1
        if len(pending) >= max_connections:
            result.error("generator full")  # it refuses to queue without bound
            continue
        task = asyncio.create_task(one(i, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending, timeout=timeout + 1)
    for task in list(pending):  # never answered: an error, not a request left out
        task.cancel()
        result.error("unfinished")
    for conn in idle:
        conn.writer.close()
    return result


async def run_closed_loop(
    url: str, concurrency: int, seconds: float, target: Callable[[int], str]
) -> Result:
    """Each of ``concurrency`` workers sends its next request when the last one answers."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    hostport = f"{host}:{port}"
    result = Result(offered_rps=0.0, seconds=seconds)
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + seconds
    counter = iter(range(10**12))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        conn = _Conn(reader, writer)
        while loop.time() < stop_at:
            sent = loop.time()
            try:
                status, _ = await asyncio.wait_for(conn.get(hostport, target(next(counter))), 2)
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                result.error(type(exc).__name__)
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                conn = _Conn(reader, writer)
                continue
            if status >= 400:
                result.error(f"http {status}")
            else:
                result.latencies_ms.append((loop.time() - sent) * 1000.0)
        writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return result
