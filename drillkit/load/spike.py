"""The traffic of a ``load_spike`` fault: an open-loop generator on top of the drill's load.

Requests are due on a fixed schedule whatever the answers (an open loop), so a stack that
slows down meets the full offered rate, as it would from real users who do not wait for each
other. At most ``--connections`` requests are in flight; a request due when all of them are
busy is not sent and is counted as ``skipped`` (the generator never queues without bound).
Answers are not recorded: the drill measures the spike's effect on its own, steady traffic.

It stops by itself: after ``--max-seconds``, on SIGTERM or SIGINT, or when the target has
refused connections for ``--give-up`` seconds (the stack is gone). Every half second it prints
one JSON line of the totals so far (``"final": false``), and one last on exit (``"final":
true``). Run as ``python -m drillkit.load.spike --url URL --rate R``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

# A keep-alive connection idle longer than this is not reused: uvicorn closes them at 5 s.
_IDLE_EXPIRY = 4.0
_REQUEST_TIMEOUT = 5.0
PROGRESS_EVERY = 0.5  # seconds between progress lines


@dataclass
class Totals:
    sent: int = 0
    answered: int = 0
    degraded: int = 0
    errors: int = 0
    skipped: int = 0


class _Conn:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0


class Spike:
    def __init__(
        self,
        url: str,
        rate: float,
        connections: int,
        n_users: int,
        seed: int,
        path: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise SystemExit(f"drillkit spike: --url must be http://HOST:PORT, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.rate = rate
        self.connections = connections
        self.n_users = n_users
        self.rng = random.Random(seed)
        if path is not None and (not path.startswith("/") or any(c.isspace() for c in path)):
            raise SystemExit(f"drillkit spike: --path must start with '/', got {path!r}")
        self.path = path
        self.totals = Totals()
        self.refused_since: float | None = None
        self._idle: list[_Conn] = []
        self._in_flight = 0
        self._head = f" HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode()

    async def _connection(self) -> _Conn:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if now - conn.idle_since <= _IDLE_EXPIRY and not conn.writer.is_closing():
                return conn
            conn.writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Conn(reader, writer)

    async def _one(self, user: int) -> None:
        totals = self.totals
        conn: _Conn | None = None
        try:
            conn = await self._connection()
            path = self.path or f"/recommend?user_id={user}&k=10"
            target = f"GET {path}".encode()
            conn.writer.write(target + self._head)
            async with asyncio.timeout(_REQUEST_TIMEOUT):
                head = await conn.reader.readuntil(b"\r\n\r\n")
                length = 0
                degraded = False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"x-degraded":
                        degraded = value.strip() == b"true"
                if length:
                    await conn.reader.readexactly(length)
            self.refused_since = None
            if head[9:10] in (b"4", b"5"):
                totals.errors += 1
            else:
                totals.answered += 1
                totals.degraded += degraded
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        except ConnectionRefusedError:
            totals.errors += 1
            if self.refused_since is None:
                self.refused_since = time.monotonic()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            totals.errors += 1
            if conn is not None:
                conn.writer.close()
        finally:
            self._in_flight -= 1

    def report(self, seconds: float, *, final: bool) -> None:
        """One JSON line of the totals so far."""
        line = {**asdict(self.totals), "seconds": round(seconds, 3), "rate": self.rate}
        print(json.dumps({**line, "final": final}), flush=True)

    async def run(self, max_seconds: float, give_up: float, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_report = start + PROGRESS_EVERY
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while not stop.is_set():
            now = loop.time()
            if now >= next_report:
                self.report(now - start, final=False)
                next_report += PROGRESS_EVERY
            due = start + i / self.rate
            if due - start > max_seconds:
                break
            delay = min(due, next_report) - now
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            i += 1
            if self.refused_since is not None and time.monotonic() - self.refused_since > give_up:
                print(
                    f"drillkit spike: {self.host}:{self.port} refused connections for "
                    f"{give_up:g} s; stopping",
                    file=sys.stderr,
                )
                break
            if self._in_flight >= self.connections:
                self.totals.skipped += 1
                continue
            self._in_flight += 1
            self.totals.sent += 1
            task = asyncio.create_task(self._one(self.rng.randrange(self.n_users)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in self._idle:
            conn.writer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drillkit-spike", description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="the gateway, http://HOST:PORT")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--connections", type=int, default=256, help="most in flight")
    parser.add_argument("--users", type=int, default=10_000, help="user ids drawn from 0..N-1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--give-up", type=float, default=5.0)
    parser.add_argument("--tag", default="", help="identifies this process (fault journal)")
    parser.add_argument("--stack-id", default="", help="recorded for process identification")
    parser.add_argument("--path", default=None, help="what to GET (default /recommend?...)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.connections < 1 or args.users < 1 or args.max_seconds <= 0:
        parser.error("--rate, --connections, --users and --max-seconds must be positive")

    spike = Spike(args.url, args.rate, args.connections, args.users, args.seed, args.path)
    started = time.monotonic()

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await spike.run(args.max_seconds, args.give_up, stop)

    asyncio.run(go())
    spike.report(time.monotonic() - started, final=True)


if __name__ == "__main__":
    main()
