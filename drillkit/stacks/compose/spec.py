"""What a scenario's ``stack: {compose: ...}`` asks for: a Docker Compose project as the stack.

Light (the standard library and the plan's name patterns): the scenario model imports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from drillkit.stacks.plan import PROJECT_PATTERN

__all__ = [
    "CONTAINER_CHOICE",
    "DETECT_FORMATS",
    "PROJECT_PATTERN",
    "ROLE_LABEL",
    "ComposeSpec",
    "DetectSpec",
    "ServiceAddress",
    "service_address",
]

#: How a fault picks among the containers of a service scaled to several: one chosen by the
#: drill's seed, or every one of them.
CONTAINER_CHOICE = ("one", "all")
#: What an HTTP status endpoint answers: HAProxy's stats CSV (each server's state), the
#: reference gateway's ``/status`` JSON, or any URL that is up while it answers 2xx.
DETECT_FORMATS = ("haproxy", "drillkit", "http")
#: A label a Compose service may carry to give itself a role fault kinds know (``replica``,
#: ``gateway``): the reference stack exported as Compose carries it.
ROLE_LABEL = "drillkit.role"


@dataclass(frozen=True)
class ServiceAddress:
    """``http://SERVICE:PORT/path``: a service's container port, which drillkit reaches on
    the host port Compose published it on."""

    service: str
    port: int
    path: str


def service_address(url: str) -> ServiceAddress | None:
    """The service and container port a URL names when its host is a plain name (no dot,
    not ``localhost``): a Compose service; None for an address of the host itself."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host or "." in host or ":" in host or host == "localhost":
        return None
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", host):
        return None
    path = parts.path or ""
    if parts.query:
        path += "?" + parts.query
    return ServiceAddress(host, parts.port or (443 if parts.scheme == "https" else 80), path)


@dataclass(frozen=True)
class DetectSpec:
    """One HTTP status endpoint the project exposes, polled for detection."""

    url: str
    format: str = "http"
    service: str | None = None
    """``http`` format: the service the endpoint's health speaks for."""


@dataclass(frozen=True)
class ComposeSpec:
    """A Compose project as a drill's stack."""

    file: Path
    """The Compose file, absolute."""
    project: str | None = None
    """The project name; default ``drillkit-<stack id>`` (bring up) or, with ``attach``,
    what Compose itself would choose (the file's folder name)."""
    attach: bool = False
    """Drill a project that is already up, and leave it up afterwards."""
    containers: str = "one"
    seed: int = 0
    ready_timeout: float = 180.0
    detect: tuple[DetectSpec, ...] = ()
    entry: ServiceAddress | None = None
    """Where the drill's load goes, when ``load.host`` names a service."""
