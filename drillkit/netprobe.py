"""Probes of a TCP or HTTP endpoint and free ports, with the standard library only: drillkit
runs them on the host and, for a link's view from inside a container, in the stack image."""

from __future__ import annotations

import http.client
import socket
import time

__all__ = ["free_port", "http_ok", "probe_tcp"]


def probe_tcp(host: str, port: int, *, timeout: float, http: bool = True) -> tuple[str, float]:
    """Connect to ``host:port`` (and, with ``http``, send one request) and say what happened:
    ``answered``, ``hung``, ``refused``, ``reset`` or ``unreachable``, with the seconds it
    took."""
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if not http:
                return "answered", time.monotonic() - started
            sock.settimeout(max(0.01, timeout - (time.monotonic() - started)))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            data = sock.recv(64)
            outcome = "answered" if data else "reset"
    except TimeoutError:
        outcome = "hung"
    except ConnectionRefusedError:
        outcome = "refused"
    except (ConnectionResetError, BrokenPipeError):
        outcome = "reset"
    except OSError:  # no route to host, name not known: the address went silent
        outcome = "unreachable"
    return outcome, time.monotonic() - started


def http_ok(host: str, port: int, path: str, *, timeout: float) -> bool:
    """Whether ``GET path`` answers 200 within ``timeout``."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
