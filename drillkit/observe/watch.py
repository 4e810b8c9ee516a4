"""Watch the stack notice faults: the gateway's view of each replica, the gateway's episodes
of load shedding, and each replica's own reports of refused model versions, polled at 10 Hz.

Events carry the time the *stack* gives (the gateway's ``since`` of a state change, the
replica's time of a refused load), not the time of the poll, so detection is measured to the
stack's own clock rather than to the polling interval.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from drillkit.backends.base import StackState


@dataclass(frozen=True)
class StackEvent:
    """Something the stack showed: a replica state change, the gateway starting to shed load,
    or a refused model version."""

    t: float  # epoch seconds
    source: str  # "gateway" or a replica name
    subject: str  # the replica it is about, or "gateway"
    what: str


class StackWatcher:
    """Polls the gateway's /status and every replica's /info on a background thread."""

    def __init__(self, state: StackState, *, interval: float = 0.1) -> None:
        self.state = state
        self.interval = interval
        self.events: list[StackEvent] = []
        self.replica_states: dict[str, str] = {}
        self.serving: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-watcher", daemon=True)
        self._last_refusal: dict[str, float] = {}
        self._shed_since: float | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def snapshot(self) -> tuple[dict[str, str], list[StackEvent]]:
        with self._lock:
            return dict(self.replica_states), list(self.events)

    def _add(self, event: StackEvent) -> None:
        with self._lock:
            self.events.append(event)

    def _run(self) -> None:
        replicas = self.state.replicas()
        with httpx.Client(timeout=max(self.interval * 2, 0.25)) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    self._poll_gateway(client)
                for replica in replicas:
                    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                        self._poll_replica(client, replica.name, replica.url)
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _poll_gateway(self, client: httpx.Client) -> None:
        body: dict[str, Any] = client.get(self.state.gateway_url + "/status").json()
        for replica in body["replicas"]:
            name, new = replica["name"], replica["state"]
            with self._lock:
                old = self.replica_states.get(name)
                self.replica_states[name] = new
            if old is not None and old != new:
                since = float(replica.get("since") or time.time())
                reason = replica.get("reason") or ""
                self._add(StackEvent(since, "gateway", name, f"{old}->{new} {reason}".strip()))
        shedding = body.get("shedding") or {}
        episode = shedding.get("since")
        if episode is not None and episode != self._shed_since:
            # A new episode: every replica was at its in-flight cap and answers were shed.
            self._shed_since = episode
            self._add(
                StackEvent(
                    float(episode),
                    "gateway",
                    "gateway",
                    f"shedding load ({shedding.get('total')} shed so far)",
                )
            )

    def _poll_replica(self, client: httpx.Client, name: str, url: str) -> None:
        info: dict[str, Any] = client.get(url + "/info", timeout=0.25).json()
        serving = info.get("serving") or {}
        with self._lock:
            self.serving[name] = serving.get("version")
        for event in info.get("events") or []:
            if event.get("outcome") != "refused":
                continue
            when = float(event["time"])
            if when > self._last_refusal.get(name, 0.0):
                self._last_refusal[name] = when
                self._add(
                    StackEvent(
                        when,
                        name,
                        name,
                        f"refused model {event.get('version')} ({event.get('reason')})",
                    )
                )
