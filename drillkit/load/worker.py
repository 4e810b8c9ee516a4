"""``drillkit worker``: a Locust worker on another host that joins a drill's load.

The drill's address (``load.bind:load.port``) is its record sink. A worker connects there,
proves the drill's token and asks to join (see :mod:`drillkit.load.sink`); the drill answers
where its Locust master listens and the settings its load runs with. The worker then starts
``python -m locust --worker`` with those settings, whose records stream back to the same sink
(with this host's clock measured and corrected). It keeps the join connection open: when the
drill ends (or dies), the connection closes and the worker stops its Locust process, so that
nothing is left running on this host.

The drill can only choose among drillkit's own locustfiles and set drillkit's own settings
(:data:`SETTINGS`); a worker never runs code or a program a drill names. Locust itself is
never imported here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from drillkit.errors import EnvironmentFailure, InputError
from drillkit.load.sink import prove
from drillkit.state import STACK_ENV

__all__ = ["SETTINGS", "JoinOffer", "parse_master", "run_worker"]

#: What a drill may set in a worker's Locust process: drillkit's load settings, nothing else.
SETTINGS = frozenset(
    {
        "DRILLKIT_RATE",
        "DRILLKIT_USERS",
        "DRILLKIT_N_USERS",
        "DRILLKIT_K",
        "DRILLKIT_TIMEOUT",
        "DRILLKIT_SEED",
        "DRILLKIT_COLD_SHARE",
        "DRILLKIT_USER_SKEW",
        "DRILLKIT_EMIT_RECORDS",
        "DRILLKIT_EVENT_SHARE",
        "DRILLKIT_N_ITEMS",
    }
)
#: The locustfiles a drill may ask for, by name.
LOCUSTFILES = {
    "drillkit": Path(__file__).with_name("locustfile.py"),
    "requests": Path(__file__).with_name("requests_user.py"),
}
_VALUE = re.compile(r"[0-9A-Za-z.+-]{1,40}")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:@/-]{0,299}")
_MAX_OFFER = 1 << 20
_RETRY_SECONDS = 0.5
# After the drill's connection closes, how long Locust may take to quit by itself (its
# master tells it to) before it is stopped.
_QUIT_GRACE = 10.0


@dataclass(frozen=True)
class JoinOffer:
    """What a drill tells a worker that joins, checked."""

    master_port: int
    host: str
    locustfile: Path
    settings: dict[str, str]
    requests: str | None
    stop_timeout: int

    @classmethod
    def parse(cls, data: object) -> JoinOffer:
        """Raise ValueError when ``data`` is not an offer drillkit would make."""
        if not isinstance(data, dict):
            raise ValueError("not an object")
        port = data.get("master_port")
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"master_port: {port!r}")
        host = data.get("host")
        parts = urlsplit(host) if isinstance(host, str) and len(host) <= 2000 else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"host: {host!r} is not an http(s) URL")
        locustfile = LOCUSTFILES.get(str(data.get("locustfile")))
        if locustfile is None:
            raise ValueError(f"locustfile: {data.get('locustfile')!r} is not one of drillkit's")
        settings = data.get("settings")
        if not isinstance(settings, dict):
            raise ValueError("settings: not an object")
        for key, value in settings.items():
            if key not in SETTINGS or not isinstance(value, str) or not _VALUE.fullmatch(value):
                raise ValueError(f"settings: {key!r} is not one a drill may set")
        requests = data.get("requests")
        if requests is not None and not isinstance(requests, str):
            raise ValueError("requests: not a string")
        stop = data.get("stop_timeout")
        if not isinstance(stop, int) or not 1 <= stop <= 3600:
            raise ValueError(f"stop_timeout: {stop!r}")
        return cls(port, str(host), locustfile, dict(settings), requests, stop)


#: The longest token workers prove.
MAX_TOKEN = 256


def check_token(text: str, where: str) -> str:
    """The token in ``text`` (one line, stripped); InputError naming ``where`` otherwise."""
    token = text.strip()
    if not token or len(token) > MAX_TOKEN or not token.isascii() or not token.isprintable():
        raise InputError(f"{where}: expected one line of 1..{MAX_TOKEN} characters")
    return token


def parse_master(value: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); InputError otherwise."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InputError(f"--master: expected HOST:PORT, got {value!r}")
    return host, int(port)


def _connect(address: tuple[str, int], wait: float) -> socket.socket:
    deadline = time.monotonic() + wait
    while True:
        try:
            return socket.create_connection(address, timeout=min(5.0, max(wait, 0.1)))
        except OSError as exc:
            if time.monotonic() >= deadline:
                reason = exc.strerror or str(exc)
                raise EnvironmentFailure(
                    f"drillkit worker: cannot reach the drill at {address[0]}:{address[1]} "
                    f"within {wait:g} s: {reason}"
                ) from None
            time.sleep(_RETRY_SECONDS)


def join(
    address: tuple[str, int], token: str, name: str, wait: float
) -> tuple[socket.socket, JoinOffer]:
    """Prove the token to the drill at ``address`` and read what to run."""
    where = f"{address[0]}:{address[1]}"
    sock = _connect(address, wait)
    try:
        sock.settimeout(max(wait, 5.0))
        prove(sock, token)
        hello = {"hello": {"role": "join", "name": name, "host": socket.gethostname()}}
        sock.sendall(json.dumps(hello).encode() + b"\n")
        reader = sock.makefile("rb")
        try:
            raw = reader.readline(_MAX_OFFER)
        finally:
            reader.close()
    except OSError as exc:
        sock.close()
        raise EnvironmentFailure(f"drillkit worker: the drill at {where}: {exc}") from None
    if not raw:
        sock.close()
        raise EnvironmentFailure(
            f"drillkit worker: the drill at {where} refused this worker (the wrong token?)"
        )
    try:
        message = json.loads(raw)
        if isinstance(message, dict) and "error" in message:
            said = "".join(c for c in str(message["error"])[:200] if c.isprintable())
            raise EnvironmentFailure(f"drillkit worker: the drill at {where}: {said}")
        offer = JoinOffer.parse(message.get("join") if isinstance(message, dict) else None)
    except ValueError as exc:
        sock.close()
        raise EnvironmentFailure(
            f"drillkit worker: {where} answered something a drill does not: {exc}"
        ) from None
    except EnvironmentFailure:
        sock.close()
        raise
    sock.settimeout(None)
    # A drill host that vanishes without closing the connection is noticed in about 11 s.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
    return sock, offer


def worker_command(offer: JoinOffer, master_host: str) -> list[str]:
    return [
        sys.executable, "-m", "locust",
        "-f", str(offer.locustfile),
        "--worker",
        "--master-host", master_host,
        "--master-port", str(offer.master_port),
        "--loglevel", "WARNING",
    ]  # fmt: skip


def worker_environment(
    offer: JoinOffer, address: tuple[str, int], token: str, name: str, folder: Path
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "DRILLKIT_"))}
    if STACK_ENV in os.environ:
        env[STACK_ENV] = os.environ[STACK_ENV]  # the stack's mark: `drillkit heal` finds it
    package_root = str(Path(__file__).parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.update(offer.settings)
    env.update(
        DRILLKIT_SINK=f"{address[0]}:{address[1]}",
        DRILLKIT_SINK_TOKEN=token,
        DRILLKIT_WORKER_NAME=name,
        DRILLKIT_HOST=offer.host,  # the only host its master may point it at
        PYTHONUNBUFFERED="1",
    )
    if offer.requests is not None:
        requests = folder / "requests.json"
        requests.write_text(offer.requests, encoding="utf-8")
        env["DRILLKIT_REQUESTS_FILE"] = str(requests)
    return env


def run_worker(master: str, token: str, name: str, *, wait: float = 30.0) -> int:
    """Join the drill at ``master`` and run its load until the drill ends; Locust's exit code.

    EnvironmentFailure (exit 3) when the drill cannot be reached within ``wait`` seconds or
    refuses the token. SIGTERM/SIGINT stop the Locust process first.
    """
    if not token:
        raise InputError("drillkit worker: the drill's token is empty")
    if not _NAME.fullmatch(name):
        raise InputError(f"--name: expected letters, digits and ._:@/-, got {name!r}")
    address = parse_master(master)
    sock, offer = join(address, token, name, wait)
    with sock, tempfile.TemporaryDirectory(prefix="drillkit-worker-") as folder:
        env = worker_environment(offer, address, token, name, Path(folder))
        proc = subprocess.Popen(
            worker_command(offer, address[0]), env=env, stdin=subprocess.DEVNULL, cwd=folder
        )
        drill_gone = threading.Event()

        def watch() -> None:
            with contextlib.suppress(OSError):
                while sock.recv(4096):
                    pass
            drill_gone.set()

        threading.Thread(target=watch, name="drillkit-worker-drill", daemon=True).start()

        def forward(signum: int, _frame: Any) -> None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while proc.poll() is None and not drill_gone.wait(0.2):
                pass
            if proc.poll() is None:
                # The drill is over (or gone): its master tells Locust to quit; make sure.
                try:
                    return proc.wait(offer.stop_timeout + _QUIT_GRACE)
                except subprocess.TimeoutExpired:
                    proc.terminate()
                    try:
                        return proc.wait(5.0)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        return proc.wait()
            return proc.returncode
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
