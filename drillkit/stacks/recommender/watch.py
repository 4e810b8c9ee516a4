"""Where the reference recommender shows that it noticed a fault: the gateway's ``/status``
(each replica's state as its health checks see it, with the moment it changed; episodes of
load shedding), each replica's ``/info`` (model versions it refused to load, and when) and, in
a zoned stack, the edge's HAProxy stats (each zone as HAProxy's health checks see it)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from drillkit.observe.watch import StackEvent

__all__ = ["EdgeStatus", "GatewayStatus", "ReplicaInfo", "edge_zones", "haproxy_servers"]


class GatewayStatus:
    """The gateway's view of its replicas, and its load shedding."""

    def __init__(self, url: str, name: str = "gateway") -> None:
        self.url = url
        self.name = name
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
                what = f"{old}->{new} {reason}".strip()
                events.append(StackEvent(since, self.name, name, what))
        shedding = body.get("shedding") or {}
        episode = shedding.get("since")
        if episode is not None and episode != self._shed_since:
            # A new episode: every replica was at its in-flight cap and answers were shed.
            self._shed_since = episode
            total = shedding.get("total")
            events.append(
                StackEvent(
                    float(episode), self.name, self.name, f"shedding load ({total} shed so far)"
                )
            )
        return events, dict(self._states)


class ReplicaInfo:
    """A replica's own reports of model versions it refused, of its GPU (an inference the
    device failed, an Xid, clocks throttled) and, in a zoned stack, of its zone's Redis going
    away (``cache``: that Redis's service name) and coming back."""

    def __init__(self, name: str, url: str, cache: str | None = None) -> None:
        self.name = name
        self.url = url
        self.cache = cache
        # The last event seen, by the replica's process and the event's number there: a
        # restarted replica numbers its events from 1 again.
        self._pid: object = None
        self._last_seq = 0
        self._cache_down: float | None = None

    def poll(self, client: httpx.Client) -> tuple[list[StackEvent], dict[str, str]]:
        info: dict[str, Any] = client.get(self.url + "/info", timeout=0.25).json()
        events = []
        if info.get("pid") != self._pid:
            self._pid, self._last_seq = info.get("pid"), 0
        for event in info.get("events") or []:
            outcome = event.get("outcome")
            seq = event.get("seq")
            if type(seq) is not int or seq <= self._last_seq:
                continue
            self._last_seq = seq
            if outcome in ("refused", "device"):
                when = float(event["time"])
                if outcome == "refused":
                    what = f"refused model {event.get('version')} ({event.get('reason')})"
                else:  # its GPU: a failed inference, an Xid, a throttle
                    what = str(event.get("what") or "GPU event")[:120]
                events.append(StackEvent(when, self.name, self.name, what))
        cache = info.get("cache")
        if self.cache is not None and isinstance(cache, dict):
            since = cache.get("down_since")
            if since is not None and since != self._cache_down:
                why = str(cache.get("last_error") or "")[:80]
                what = f"up->down (answering without it: {why})".strip()
                events.append(StackEvent(float(since), self.name, self.cache, what))
            elif since is None and self._cache_down is not None:
                events.append(StackEvent(time.time(), self.name, self.cache, "down->up"))
            self._cache_down = None if since is None else float(since)
        return events, {}


#: HAProxy's server status words (stats CSV ``status``) as drillkit's states; a transition
#: ("UP 1/2": one failed check of ``fall``) still counts as the state it leaves.
def _edge_state(status: str) -> str:
    word = status.split(" ")[0].upper()
    if word in ("UP", "NOLB", "NO"):  # "no check": health checks off, always routed
        return "up"
    if word == "MAINT":
        return "maint"
    return "down"


def haproxy_servers(text: str) -> list[dict[str, str]]:
    """Every server of every backend in HAProxy's stats CSV (``/stats;csv``): its backend,
    name, address, state (``up``/``down``/``maint``), HAProxy's own status word, its last
    check's result and its sessions so far."""
    import csv

    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError("not HAProxy stats CSV")
    reader = csv.DictReader([lines[0][2:], *lines[1:]])
    out: list[dict[str, str]] = []
    for row in reader:
        name = row.get("svname") or ""
        if name in ("FRONTEND", "BACKEND"):
            continue
        status = row.get("status") or ""
        out.append(
            {
                "backend": row.get("pxname") or "",
                "name": name,
                "addr": row.get("addr") or "",
                "state": _edge_state(status),
                "status": status,
                "check": row.get("check_status") or "",
                "sessions": row.get("stot") or "0",
            }
        )
    return out


def edge_zones(text: str, backend: str = "zones") -> dict[str, dict[str, str]]:
    """Each server of HAProxy's ``backend`` (:func:`haproxy_servers`), by name."""
    return {row["name"]: row for row in haproxy_servers(text) if row["backend"] == backend}


class EdgeStatus:
    """The edge load balancer's (HAProxy's) view of the zones, from its stats CSV.

    HAProxy dates a change only to the second (``lastchg``), so an event is dated by the
    poll that saw it (the watcher polls every 100 ms): the edge's detection is measured to
    within one polling interval. The subject is ``zone-<name>``, the target a zone fault
    names.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._states: dict[str, str] = {}

    def poll(self, client: httpx.Client) -> tuple[list[StackEvent], dict[str, str]]:
        seen = time.time()
        response = client.get(self.url + "/stats;csv")
        response.raise_for_status()
        zones = edge_zones(response.text)
        events = []
        for zone, row in zones.items():
            subject = f"zone-{zone}"
            old, new = self._states.get(subject), row["state"]
            self._states[subject] = new
            if old is not None and old != new:
                why = f"({row['check']})" if row["check"] else ""
                events.append(StackEvent(seen, "edge", subject, f"{old}->{new} {why}".strip()))
        return events, dict(self._states)
