"""Where a Compose project shows that it noticed a fault, without drillkit's gateway.

- :class:`DockerHealth`: Docker's own healthcheck transitions (``health_status`` events of
  the project's containers, dated by the Engine to the nanosecond), read from the Engine's
  event stream on a thread of its own.
- :class:`HaproxyStatus`: a load balancer's view of its servers from HAProxy's stats CSV;
  each server is mapped to the Compose service whose container holds its address.
- :class:`HttpHealth`: any URL the scenario names, up while it answers 2xx.
- the reference gateway's ``/status`` (``format: drillkit``, for the reference stack exported
  as a Compose project), read as the recommender preset reads it.

Events are worded ``up->down (...)`` and ``down->up (...)``, as the recommender's sources
word theirs, so that a report reads the same whoever noticed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx

from drillkit.errors import InputError
from drillkit.observe.watch import StackEvent
from drillkit.stacks.compose.spec import service_address

if TYPE_CHECKING:
    from drillkit.backends.base import StackState
    from drillkit.backends.compose import ComposeStack

__all__ = ["DockerHealth", "HaproxyStatus", "HttpHealth", "resolve_url", "sources"]

_HEALTH_PREFIX = "health_status: "


def resolve_url(state: StackState[Any], url: str) -> str:
    """A URL naming a Compose service (``http://lb:8404/stats;csv``) as drillkit reaches it
    from the host: that service's published port on 127.0.0.1; any other URL as it is."""
    address = service_address(url)
    if address is None or address.service not in state.services:
        return url
    service = state.services[address.service]
    plan = state.plan.service(address.service)
    for port in plan.ports:
        if port.number == address.port and port.name in service.ports:
            return f"http://127.0.0.1:{service.ports[port.name]}{address.path}"
    raise InputError(
        f"{url}: service {address.service} publishes no port {address.port} on 127.0.0.1 or "
        "every interface, where drillkit reaches it"
    )


class DockerHealth:
    """Healthcheck transitions of the project's containers, from the Engine's events."""

    source = "docker-health"

    def __init__(self, state: ComposeStack) -> None:
        from drillkit.backends.compose import LABEL_PROJECT, LABEL_SERVICE

        self._label_service = LABEL_SERVICE
        self._filters = {"type": "container", "label": f"{LABEL_PROJECT}={state.project}"}
        self._pending: list[StackEvent] = []
        self._states: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stream: Any = None
        self._closed = False
        self._thread = threading.Thread(target=self._read, name="docker-health", daemon=True)
        self._since = time.time()
        self._thread.start()

    def _read(self) -> None:
        from drillkit.backends.docker.image import docker_client

        with contextlib.suppress(Exception):  # the Engine going away ends the stream
            stream = docker_client().events(
                decode=True, filters=self._filters, since=int(self._since)
            )
            with self._lock:
                self._stream = stream
                closed = self._closed
            if closed:  # closed while the stream was being opened
                stream.close()
                return
            for event in stream:
                self._take(event)

    def _take(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        if not action.startswith(_HEALTH_PREFIX):
            return
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        service = str(attributes.get(self._label_service) or "")
        if not service:
            return
        container = str(attributes.get("name") or (event.get("id") or "")[:12])
        health = action[len(_HEALTH_PREFIX) :].strip()
        new = "up" if health == "healthy" else "down"
        when = int(event.get("timeNano") or 0) / 1e9 or float(event.get("time") or time.time())
        with self._lock:
            old = self._states.get(container, "up")
            self._states[container] = new
            if old != new:
                what = f"{old}->{new} (docker healthcheck of {container}: {health})"
                self._pending.append(StackEvent(when, self.source, service, what))

    def poll(self, client: httpx.Client) -> tuple[list[StackEvent], dict[str, str]]:
        with self._lock:
            events, self._pending = self._pending, []
            return events, {}

    def close(self) -> None:
        with self._lock:
            self._closed = True
            stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        self._thread.join(timeout=2)


class HaproxyStatus:
    """HAProxy's view of its servers: each server's state changes, dated by the poll that saw
    them (HAProxy dates changes to the second only), the subject the Compose service whose
    container has the server's address."""

    def __init__(self, url: str, state: ComposeStack, name: str) -> None:
        self.url = url
        self.state = state
        self.owners = _owners(state)  # container address -> Compose service
        self._owners_at = time.monotonic()
        self.name = name
        self._states: dict[str, str] = {}

    def _owner(self, address: str) -> str | None:
        # A container started again may have a new address: look again, once a second.
        if address not in self.owners and time.monotonic() - self._owners_at > 1.0:
            self.owners = _owners(self.state)
            self._owners_at = time.monotonic()
        return self.owners.get(address)

    def poll(self, client: httpx.Client) -> tuple[list[StackEvent], dict[str, str]]:
        from drillkit.stacks.recommender.watch import haproxy_servers

        seen = time.time()
        response = client.get(self.url)
        response.raise_for_status()
        events = []
        states: dict[str, str] = {}
        for row in haproxy_servers(response.text):
            key = f"{row['backend']}/{row['name']}"
            address = row["addr"].rsplit(":", 1)[0]
            subject = self._owner(address) or row["name"]
            new = row["state"]
            old = self._states.get(key)
            self._states[key] = new
            states[f"{subject}@{row['name']}"] = new
            if old is not None and old != new:
                why = f"({self.name} server {row['name']}: {row['status']} {row['check']})"
                events.append(StackEvent(seen, self.name, subject, f"{old}->{new} {why}"))
        return events, states


class HttpHealth:
    """A URL that is up while it answers 2xx: the subject is the service it speaks for."""

    def __init__(self, url: str, subject: str, name: str) -> None:
        self.url = url
        self.subject = subject
        self.name = name
        self._state: str | None = None

    def poll(self, client: httpx.Client) -> tuple[list[StackEvent], dict[str, str]]:
        seen = time.time()
        try:
            status = client.get(self.url, timeout=0.5).status_code
            new, why = ("up", f"{status}") if 200 <= status < 300 else ("down", f"{status}")
        except httpx.HTTPError as exc:
            new, why = "down", type(exc).__name__
        old, self._state = self._state, new
        events = []
        if old is not None and old != new:
            what = f"{old}->{new} ({self.name} answered {why})"
            events.append(StackEvent(seen, self.name, self.subject, what))
        return events, {self.subject: new}


_BACKEND: list[Any] = []


def _owners(state: ComposeStack) -> dict[str, str]:
    """Each container address of the project, with its service."""
    from drillkit.backends.compose import ComposeBackend

    if not _BACKEND:  # one Docker client for every look, not one per refresh
        _BACKEND.append(ComposeBackend())
    backend = _BACKEND[0]
    owners: dict[str, str] = {}
    for name in state.services:
        with contextlib.suppress(Exception):
            for address in backend._addresses(state, name):
                owners[address] = name
    return owners


def sources(state: ComposeStack) -> list[Any]:
    """The watch sources of a Compose stack: Docker's healthchecks where a service has one,
    and each status endpoint the scenario names."""
    found: list[Any] = []
    detect = state.plan.settings.get("detect") or []
    for item in detect if isinstance(detect, list) else []:
        if not isinstance(item, dict):
            continue
        url = resolve_url(state, str(item["url"]))
        fmt = str(item.get("format") or "http")
        address = service_address(str(item["url"]))
        name = address.service if address is not None else "status"
        if fmt == "haproxy":
            found.append(HaproxyStatus(url, state, name))
        elif fmt == "drillkit":
            from drillkit.stacks.recommender.watch import GatewayStatus

            found.append(GatewayStatus(url.removesuffix("/status"), name))
        else:
            subject = str(item.get("service") or name)
            found.append(HttpHealth(url, subject, name))
    # Last: the one with a thread of its own, once nothing above can fail.
    health = state.plan.settings.get("health") or {}
    if isinstance(health, dict) and any(health.values()):
        found.append(DockerHealth(state))
    return found
