"""A tiny stdlib-only web service: the `web` role of the compose-app example.

    GET /            {"service": "web", "host": <container hostname>, ...}
    GET /items/<n>   an item computed from n (deterministic, a few microseconds of work)
    GET /healthz     200 "ok"

Listens on 0.0.0.0:$PORT (default 8000). SIGTERM (docker stop) and SIGINT stop the server
cleanly: it stops accepting connections, closes its socket and exits 0 within ~0.2 s.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = socket.gethostname()
STARTED = time.time()


def item(n: int) -> dict[str, object]:
    digest = hashlib.sha256(str(n).encode()).hexdigest()
    return {
        "id": n,
        "name": f"item-{n}",
        "price": round((n * 37 % 1000) / 10 + 0.99, 2),
        "tags": [t for t, d in (("even", 2), ("fizz", 3), ("buzz", 5)) if n % d == 0],
        "sku": digest[:12],
        "host": HOST,
    }


class Handler(BaseHTTPRequestHandler):
    server_version = "compose-app-web/1"
    protocol_version = "HTTP/1.1"  # keep-alive; every answer has a Content-Length
    timeout = 60  # an idle keep-alive connection is closed after a minute

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, object]) -> None:
        self._send(status, json.dumps(payload).encode() + b"\n")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        elif path == "/":
            uptime = round(time.time() - STARTED, 1)
            self._json(200, {"service": "web", "host": HOST, "uptime_s": uptime})
        elif path.startswith("/items/"):
            raw = path[len("/items/") :]
            try:
                n = int(raw)
                if n < 0:
                    raise ValueError
            except ValueError:
                self._json(400, {"error": f"not an item number: {raw!r}"})
                return
            self._json(200, item(n))
        else:
            self._json(404, {"error": "not found", "path": path})

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("WEB_ACCESS_LOG") == "1":
            super().log_message(format, *args)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # listen backlog (socketserver's default is 5)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # HAProxy closes its health-check connections with a reset as soon as it has read the
        # status line: not worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    server = Server(("0.0.0.0", port), Handler)

    def stop(signum: int, _frame: Any) -> None:
        print(f"web {HOST}: signal {signum}, shutting down", flush=True)
        # shutdown() waits for serve_forever() to return: call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"web {HOST}: listening on :{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    print(f"web {HOST}: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
