"""The webhook receiver that the stack's Alertmanager notifies: it stamps each notification
with the time it arrived, which is what a drill scores as "time to notification".

- ``POST /alerts``: an Alertmanager webhook payload (JSON, at most 1 MiB); kept in memory,
  the newest :data:`KEEP` notifications.
- ``GET /notifications``: ``{"notifications": [{"received_at": EPOCH, "status": ...,
  "alerts": [{"status", "labels", "startsAt", "endsAt"}]}]}``, oldest first.
- ``GET /healthz``: 200 once it serves.
- ``GET /metrics``: ``drillkit_alert_receiver_notifications_total`` (Prometheus text format),
  so that Prometheus scrapes the receiver too and a dead one raises an alert.

Run as ``python -m drillkit.stacks.recommender.alert_receiver --host H --port P``; it serves
on the listening socket drillkit hands down where there is one (:mod:`drillkit.listen`).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

__all__ = ["KEEP", "MAX_BODY", "Notifications", "main"]

#: The most notifications kept, and the largest body accepted.
KEEP = 10_000
MAX_BODY = 1 << 20
_TEXT = 200  # longest label name or value kept


class Notifications:
    """What arrived, bounded and thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[dict[str, Any]] = []
        self._total = 0

    def add(self, payload: object, received_at: float) -> None:
        """Keep the parts of a webhook payload that a drill reads; ValueError when it is not
        one."""
        if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
            raise ValueError("expected an Alertmanager webhook payload with an alerts list")
        alerts = []
        for alert in payload["alerts"][:1000]:
            if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
                raise ValueError("every alert needs a labels object")
            alerts.append(
                {
                    "status": str(alert.get("status", ""))[:_TEXT],
                    "labels": {str(k)[:_TEXT]: str(v)[:_TEXT] for k, v in alert["labels"].items()},
                    "startsAt": str(alert.get("startsAt", ""))[:_TEXT],
                    "endsAt": str(alert.get("endsAt", ""))[:_TEXT],
                }
            )
        item = {
            "received_at": received_at,
            "status": str(payload.get("status", ""))[:_TEXT],
            "alerts": alerts,
        }
        with self._lock:
            self._items.append(item)
            self._total += 1
            del self._items[:-KEEP]

    def count(self) -> int:
        with self._lock:
            return self._total

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._items)


def _handler(store: Notifications) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "drillkit-alert-receiver"

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: one line per scrape would drown the service's log

        def _send(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._send(200, {"ok": True})
            elif self.path == "/metrics":
                text = (
                    "# HELP drillkit_alert_receiver_notifications_total Notifications received.\n"
                    "# TYPE drillkit_alert_receiver_notifications_total counter\n"
                    f"drillkit_alert_receiver_notifications_total {store.count()}\n"
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)
            elif self.path == "/notifications":
                self._send(200, {"notifications": store.all()})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            received = time.time()
            if self.path != "/alerts":
                self._send(404, {"error": "not found"})
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._send(411, {"error": "a Content-Length is required"})
                return
            if not 0 <= length <= MAX_BODY:
                self._send(413, {"error": f"at most {MAX_BODY} bytes"})
                return
            try:
                store.add(json.loads(self.rfile.read(length)), received)
            except ValueError as exc:  # json.JSONDecodeError is one
                self._send(400, {"error": str(exc)[:200]})
                return
            self._send(200, {"ok": True})

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drillkit-alert-receiver", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9095)
    args = parser.parse_args(argv)
    from drillkit.listen import http_server

    handler = _handler(Notifications())
    server = http_server(handler, host=args.host, port=args.port, program="alert-receiver")
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
