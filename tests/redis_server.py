"""A throwaway redis-server (Debian's) on a free loopback port, for the tests that need a real
one: the cache tier, the event store's backups and restores."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["redis_server"]


@contextmanager
def redis_server(*options: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """Its port and process, once it accepts connections; killed (resumed first, should a
    test have paused it) on the way out."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed (apt-get install redis-server)"
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *options],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        yield port, proc
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()
