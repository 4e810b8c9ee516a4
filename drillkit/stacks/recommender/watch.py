"""Where the reference recommender shows that it noticed a fault: the gateway's ``/status``
(each replica's state as its health checks see it, with the moment it changed; episodes of
load shedding) and each replica's ``/info`` (model versions it refused to load, and when)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from drillkit.observe.watch import StackEvent

__all__ = ["GatewayStatus", "ReplicaInfo"]


class GatewayStatus:
    """The gateway's view of its replicas, and its load shedding."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._states: dict[str, str] = {}
        self._shed_since: float | None = None

    def poll(self, client: httpx.Client) -> tuple[list[StackEvent], dict[str, str]]:
        body: dict[str, Any] = client.get(self.url + "/status").json()
        events = []
        for replica in body["replicas"]:
            name, new = replica["name"], replica["state"]
            old = self._states.get(name)
            self._states[name] = new
            if old is not None and old != new:
                since = float(replica.get("since") or time.time())
                reason = replica.get("reason") or ""
                events.append(StackEvent(since, "gateway", name, f"{old}->{new} {reason}".strip()))
        shedding = body.get("shedding") or {}
        episode = shedding.get("since")
        if episode is not None and episode != self._shed_since:
            # A new episode: every replica was at its in-flight cap and answers were shed.
            self._shed_since = episode
            total = shedding.get("total")
            events.append(
                StackEvent(
                    float(episode), "gateway", "gateway", f"shedding load ({total} shed so far)"
                )
            )
        return events, dict(self._states)


class ReplicaInfo:
    """A replica's own reports of model versions it refused."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self._last_refusal = 0.0

    def poll(self, client: httpx.Client) -> tuple[list[StackEvent], dict[str, str]]:
        info: dict[str, Any] = client.get(self.url + "/info", timeout=0.25).json()
        events = []
        for event in info.get("events") or []:
            if event.get("outcome") != "refused":
                continue
            when = float(event["time"])
            if when > self._last_refusal:
                self._last_refusal = when
                what = f"refused model {event.get('version')} ({event.get('reason')})"
                events.append(StackEvent(when, self.name, self.name, what))
        return events, {}
