"""The scenario file, format version 1, as frozen pydantic models (``docs/scenario.md``).

Every model forbids unknown keys. Checks that need more than one field (a target must exist in a
stack of N replicas, a fault must start inside the load window, ids must be unique, params must
suit the fault kind) run as validators too, so a :class:`Scenario` that exists is valid, however
it was made. Those checks raise :class:`~drillkit.scenario.units.FieldError` with the exact
sub-location, which :func:`first_error` turns back into a field path.

Nothing here imports heavy modules: the stack settings come from a standard-library-only
module of the preset (:mod:`drillkit.stacks.recommender.spec`).
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Sequence
from ipaddress import IPv4Address
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from drillkit.errors import InputError, TargetError
from drillkit.faults.base import ANY_SERVICE, ROLE_GATEWAY, ROLE_REPLICA, fault_kinds
from drillkit.scenario.units import (
    CountOrShareField,
    Duration,
    FieldError,
    Loc,
    PositiveDuration,
    Share,
    format_duration,
    show_value,
)
from drillkit.stacks.compose.spec import (
    CONTAINER_CHOICE,
    DETECT_FORMATS,
    PROJECT_PATTERN,
    ComposeSpec,
    DetectSpec,
    service_address,
)
from drillkit.stacks.recommender.spec import (
    APPENDFSYNC,
    CATALOG_LIMITS,
    EVENT_SERVICES,
    MAX_REPLICAS,
    MAX_ZONES,
    ROLE_BACKUP,
    ROLE_CACHE,
    ROLE_EDGE,
    ROLE_EVENT_STORE,
    ROLE_FEATURES,
    ROLE_MODEL_STORE,
    ROLE_ZONE,
    ZONE_PATTERN,
    CacheSettings,
    CatalogSpec,
    EdgeSettings,
    EventSettings,
    GatewaySettings,
    MonitoringSettings,
    RecommenderSpec,
)

__all__ = [
    "EXTENSION_PREFIX",
    "FORMAT_VERSION",
    "MAX_REPLICAS",
    "MODEL_STORE",
    "RANDOM_TARGET",
    "AbortSection",
    "CatalogSection",
    "FaultExpect",
    "FaultSpec",
    "GatewaySection",
    "LoadSection",
    "ReportSection",
    "SLOSection",
    "Scenario",
    "ScoringSection",
    "StackSection",
    "first_error",
    "format_loc",
]

FORMAT_VERSION = 1

#: Top-level keys with this prefix are ignored: a place for YAML anchors to live.
EXTENSION_PREFIX = "x-"

# The defaults of the stack's settings live with the stack; the scenario format shows them.
_CATALOG = CatalogSpec()
_GATEWAY = GatewaySettings()
_EDGE = EdgeSettings()
_CACHE = CacheSettings()
_MONITORING = MonitoringSettings()
_EVENTS = EventSettings()

#: The pseudo-target of ``corrupt_model`` meaning the store every replica loads from.
MODEL_STORE = "model-store"

#: ``target: random`` picks one replica with the drill's seeded random generator.
RANDOM_TARGET = "random"

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_ID_MAX = 64
_REPLICA_RE = re.compile(r"replica-([1-9][0-9]*)")


def _no_bool(value: object) -> object:
    # YAML `true` is a Python bool, and bool is an int: `users: true` must not mean one user.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {show_value(value)}")
    return value


Int = Annotated[int, BeforeValidator(_no_bool)]
Number = Annotated[float, BeforeValidator(_no_bool), Field(allow_inf_nan=False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CatalogSection(_Section):
    """The synthetic catalog the reference stack is trained on (see ``CatalogSpec``)."""

    items: Int = Field(
        default=_CATALOG.items,
        ge=CATALOG_LIMITS["items"][0],
        le=CATALOG_LIMITS["items"][1],
        description="Items in the catalog.",
    )
    dim: Int = Field(
        default=_CATALOG.dim,
        ge=CATALOG_LIMITS["dim"][0],
        le=CATALOG_LIMITS["dim"][1],
        description="Embedding dimension of the model.",
    )
    seed: Int = Field(
        default=_CATALOG.seed,
        ge=CATALOG_LIMITS["seed"][0],
        le=CATALOG_LIMITS["seed"][1],
        description="Seed of the data generator.",
    )


class GatewaySection(_Section):
    """Failover settings of the gateway
    (``drillkit.stacks.recommender.spec.GatewaySettings``, where the defaults live).

    A drill can turn retries or passive ejection off to show what they are worth.
    """

    check_interval: PositiveDuration = Field(
        default=_GATEWAY.check_interval, description="Time between active health checks."
    )
    check_timeout: PositiveDuration = Field(
        default=_GATEWAY.check_timeout, description="Timeout of one health check."
    )
    fall: Int = Field(
        default=_GATEWAY.fall,
        ge=1,
        le=100,
        description="Failed checks before a replica is marked down.",
    )
    rise: Int = Field(
        default=_GATEWAY.rise,
        ge=1,
        le=100,
        description="Passed checks before a replica is marked up.",
    )
    passive_ejection: bool = Field(
        default=_GATEWAY.passive_ejection, description="Mark a replica down on a failed request."
    )
    retries: Int = Field(
        default=_GATEWAY.retries, ge=0, le=MAX_REPLICAS, description="Retries on another replica."
    )
    try_timeout: PositiveDuration = Field(
        default=_GATEWAY.try_timeout, description="Timeout of one try at a replica."
    )
    deadline: PositiveDuration = Field(
        default=_GATEWAY.deadline, description="Deadline of a request over all tries."
    )
    max_outstanding: Int = Field(
        default=_GATEWAY.max_outstanding,
        ge=0,
        le=10_000,
        description="Requests in flight per replica before the gateway sheds load (answers "
        "at once from the fallback); 0: no cap, requests queue.",
    )
    fallback: bool = Field(
        default=_GATEWAY.fallback,
        description="Answer with popular items (degraded) when no replica can; off: fail (503).",
    )


class EdgeSection(_Section):
    """The edge load balancer of a zoned stack: HAProxy, one server per zone gateway
    (``drillkit.stacks.recommender.spec.EdgeSettings``, where the defaults live)."""

    check_interval: PositiveDuration = Field(
        default=_EDGE.check_interval, description="HAProxy `inter`: time between health checks."
    )
    fall: Int = Field(
        default=_EDGE.fall, ge=1, le=100, description="Failed checks to take a zone out."
    )
    rise: Int = Field(default=_EDGE.rise, ge=1, le=100, description="Passed checks to put it back.")
    health_checks: bool = Field(
        default=_EDGE.health_checks,
        description="Active checks and passive ejection; off: a dead zone is never taken out.",
    )
    retries: Int = Field(
        default=_EDGE.retries, ge=0, le=10, description="Retries, each on another zone."
    )
    timeout: PositiveDuration = Field(
        default=_EDGE.timeout, description="Longest wait for one zone's answer."
    )
    mode: Literal["active-active", "active-passive"] = Field(
        default="active-active",
        description="active-passive: the first zone serves, the others are HAProxy backups.",
    )
    config: str | None = Field(
        default=None,
        min_length=1,
        description="Your own HAProxy configuration to drill instead of drillkit's, relative "
        "to the working folder (docs/topology.md: the variables it reaches the zones by).",
    )

    @field_validator("config")
    @classmethod
    def _config_stays_inside(cls, value: str | None) -> str | None:
        # Read as root in CI and echoed in haproxy's complaints: only a file of the drill's own.
        if value is None:
            return None
        return relative_inside(value, "keep the configuration next to the scenario")


class CacheSection(_Section):
    """Each zone's Redis, which replicas use cache-aside (zoned stacks only)."""

    enabled: bool = Field(default=_CACHE.enabled, description="Off: no Redis, no cache.")
    ttl: PositiveDuration = Field(
        default=_CACHE.ttl, description="How long an answer stays cached."
    )
    budget: PositiveDuration = Field(
        default=_CACHE.budget,
        description="Longest wait on Redis before a replica answers without it.",
    )


class EventsSection(_Section):
    """Click events into a store, and its backups (``events.enabled``)."""

    enabled: bool = Field(
        default=_EVENTS.enabled,
        description="On: the load sends click events (POST /events), kept in an event store "
        "(Redis stream, append-only file) and backed up by a backup service.",
    )
    share: Share = Field(
        default=_EVENTS.share, description="Share of the load's requests that are click events."
    )
    appendfsync: Literal[APPENDFSYNC] = Field(  # type: ignore[valid-type]
        default=_EVENTS.appendfsync,
        description="Redis's appendfsync: always (fsync before each acknowledgement), "
        "everysec, no.",
    )
    backup_interval: PositiveDuration = Field(
        default=_EVENTS.backup_interval,
        description="Time between two backups of the event store and the model store.",
    )
    backup_keep: Int = Field(
        default=_EVENTS.backup_keep, ge=1, le=1000, description="Backups kept of each kind."
    )
    backup_dir: str | None = Field(
        default=None,
        min_length=1,
        description="The backup location, an existing folder relative to the working folder "
        "and inside it. Default: the stack's own folder.",
    )

    @field_validator("backup_dir")
    @classmethod
    def _dir_stays_inside(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return relative_inside(value, "keep backups under the working folder")

    @field_validator("share")
    @classmethod
    def _share_below_one(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError(f"expected a share above 0% and below 100%, got {value:g}")
        return value

    def settings(self) -> EventSettings:
        return EventSettings(
            **self.model_dump(exclude={"backup_dir"}),
            backup_dir=Path(self.backup_dir) if self.backup_dir is not None else None,
        )


def _gpu_word(value: object) -> object:
    # YAML 1.1 loaders read `on`/`off` as booleans; ours does not, but a dict built elsewhere may.
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def _relative(value: str) -> str:
    """A file named relative to the scenario file's folder (a Compose file, a locustfile);
    the drill refuses it when it leads out of the working folder."""
    if "\0" in value:
        raise FieldError("a path cannot hold a NUL character")
    if PurePosixPath(value).is_absolute() or value.startswith("~"):
        raise FieldError(
            f"{value!r} is not a relative path; name it relative to the scenario file's folder"
        )
    return value


def _one_address(value: IPv4Address | None) -> IPv4Address | None:
    """An address of this host, not 0.0.0.0 (every interface: what workers could not dial,
    and what would open the drill to every network the host is on)."""
    if value is not None and (value.is_unspecified or value.is_multicast):
        raise FieldError(f"expected one address of this host, got {value}")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise FieldError(f"expected an http(s)://HOST[:PORT][/PATH] URL, got {show_value(value)}")
    return value


class DetectSection(_Section):
    """An HTTP status endpoint of a Compose project, polled during the drill for detection."""

    url: str = Field(
        description="http://SERVICE:PORT/PATH (a service's container port, reached where the "
        "project publishes it) or any http(s) URL."
    )
    format: Literal[DETECT_FORMATS] = Field(  # type: ignore[valid-type]
        default="http",
        description="haproxy: HAProxy's stats CSV (each server's state, mapped to the service "
        "owning its address); drillkit: the reference gateway's /status; http: up while the "
        "URL answers 2xx.",
    )
    service: str | None = Field(
        default=None,
        description="format http: the service the endpoint speaks for (default: the URL's).",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


#: Settings of the reference stack, which a Compose stack does not have.
_RECOMMENDER_ONLY = (
    "preset",
    "replicas",
    "gpu",
    "catalog",
    "gateway",
    "zones",
    "edge",
    "cache",
    "events",
    "store",
    "readiness",
)
_COMPOSE_ONLY = ("project", "attach", "containers", "ready_timeout", "detect")
#: Where ``drillkit worker`` may be started by drillkit: a network namespace, an ssh host.
_NETNS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_SSH_DEST = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.-]{0,63}@)?[A-Za-z0-9][A-Za-z0-9.:-]{0,252}")


class StackSection(_Section):
    """The stack to bring up."""

    preset: Literal["recommender"] = Field(default="recommender", description="The bundled stack.")
    backend: Literal["local", "docker"] = Field(
        default="local", description="Where services run; the CLI's --backend overrides it."
    )
    replicas: Int = Field(
        default=3,
        ge=1,
        le=MAX_REPLICAS,
        description="Services are replica-1..replica-N and gateway.",
    )
    gpu: Annotated[Literal["auto", "on", "off"], BeforeValidator(_gpu_word)] = Field(
        default="auto", description="on fails with exit 3 when no GPU is usable."
    )
    readiness: Literal["deep", "shallow"] = Field(
        default="deep",
        description="A replica's /readyz: deep runs one real inference on its GPU; shallow "
        "reports ready whenever a verified model is loaded, whatever the GPU does.",
    )
    catalog: CatalogSection = Field(default_factory=CatalogSection)
    gateway: GatewaySection = Field(default_factory=GatewaySection)
    zones: tuple[Annotated[str, Field(pattern=f"^{ZONE_PATTERN}$")], ...] = Field(
        default=(),
        max_length=MAX_ZONES,
        description="Failure domains, e.g. [a, b]: each gets its own gateway, `replicas` "
        "replicas and a Redis, behind an HAProxy edge. Empty: one zone, no edge, no cache.",
    )
    edge: EdgeSection = Field(default_factory=EdgeSection)
    cache: CacheSection = Field(default_factory=CacheSection)
    events: EventsSection = Field(default_factory=EventsSection)
    store: str | None = Field(
        default=None,
        min_length=1,
        description="A model store to serve in place, relative to the working folder and "
        "inside it (`drillkit model verify --store` checks it; corrupt_model faults on "
        "model-store damage and restore it). Default: a copy of the built artifacts.",
    )

    compose: str | None = Field(
        default=None,
        min_length=1,
        description="A Docker Compose file, relative to the scenario file's folder: drill "
        "that project instead of the reference stack (docs/compose.md).",
    )
    project: str | None = Field(
        default=None,
        pattern=f"^{PROJECT_PATTERN}$",
        description="compose, with attach: the running project's name; default the name "
        "Compose gives the file (its `name:`, or its folder's).",
    )
    attach: bool = Field(
        default=False,
        description="compose: drill a project that is already up, and leave it up (every "
        "fault healed).",
    )
    containers: Literal[CONTAINER_CHOICE] = Field(  # type: ignore[valid-type]
        default="one",
        description="compose: a fault on a service with several containers hits one, chosen "
        "by the drill's seed, or all.",
    )
    ready_timeout: PositiveDuration = Field(
        default=180.0,
        description="compose: longest wait for every container to run and be healthy.",
    )
    detect: tuple[DetectSection, ...] = Field(
        default=(),
        max_length=16,
        description="compose: HTTP status endpoints that show the project noticing a fault.",
    )
    listen: IPv4Address | None = Field(
        default=None,
        description="local backend: an address of this host the stack's entry listens on "
        "instead of 127.0.0.1, so that load workers on other hosts (load.hosts) reach it.",
    )

    @field_validator("listen")
    @classmethod
    def _listen_is_one_address(cls, value: IPv4Address | None) -> IPv4Address | None:
        return _one_address(value)

    @field_validator("compose")
    @classmethod
    def _compose_is_relative(cls, value: str | None) -> str | None:
        return None if value is None else _relative(value)

    @model_validator(mode="after")
    def _compose_or_recommender(self) -> StackSection:
        # By value, not by what the file wrote: a dump of a scenario validates back.
        given = {
            name
            for name in self.model_fields_set
            if getattr(self, name)
            != type(self).model_fields[name].get_default(call_default_factory=True)
        }
        if self.compose is not None:
            for name in _RECOMMENDER_ONLY:
                if name in given:
                    raise FieldError(
                        f"{name} is a setting of the reference stack, not of a Compose project",
                        (name,),
                    )
            if self.project is not None and not self.attach:
                raise FieldError(
                    "project names a project that is already up (attach: true); a project "
                    "drillkit brings up is its own, drillkit-<stack id>",
                    ("project",),
                )
        else:
            for name in _COMPOSE_ONLY:
                if name in given:
                    raise FieldError(f"{name} needs stack.compose", (name,))
        return self

    @field_validator("store")
    @classmethod
    def _store_stays_inside(cls, value: str | None) -> str | None:
        # A scenario is shared input: the faults of a drill damage (and restore) the store it
        # names, so it may name one under the working folder, not any the user can write.
        if value is None:
            return None
        return relative_inside(value, "run the drill from a folder that holds the store")

    @field_validator("zones")
    @classmethod
    def _zones(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) == 1:
            raise FieldError("a zoned stack has 2 zones or more; leave zones out for one")
        if len(set(value)) != len(value):
            raise FieldError(f"{', '.join(value)}: a zone is named twice")
        return value

    @model_validator(mode="after")
    def _zone_settings_need_zones(self) -> StackSection:
        if not self.zones:
            for name, default in (("edge", EdgeSection()), ("cache", CacheSection())):
                if getattr(self, name) != default:
                    raise FieldError(
                        f"{name} needs zones (the edge and the cache are per zone)", (name,)
                    )
        return self


_ALERT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _alert_name(value: object) -> object:
    if isinstance(value, str) and not _ALERT_NAME.fullmatch(value):
        raise ValueError(
            "expected an alert name (letters, digits and _, not starting with a digit), "
            f"got {show_value(value)}"
        )
    return value


AlertName = Annotated[str, BeforeValidator(_alert_name)]


class MonitoringSection(_Section):
    """The stack's Prometheus and Alertmanager, and what the drill expects of its alerts
    (``drillkit.stacks.recommender.spec.MonitoringSettings``, where the defaults live)."""

    enabled: Annotated[Literal["auto", "on", "off"], BeforeValidator(_gpu_word)] = Field(
        default="auto",
        description="on: run them (exit 3 when Debian's prometheus or prometheus-alertmanager "
        "is not installed); auto: where they are installed; off: no monitoring.",
    )
    scrape_interval: PositiveDuration = Field(
        default=_MONITORING.scrape_interval, description="Prometheus's scrape interval."
    )
    evaluation_interval: PositiveDuration = Field(
        default=_MONITORING.evaluation_interval, description="Prometheus's rule evaluation."
    )
    alert_for: PositiveDuration = Field(
        default=_MONITORING.alert_for, description="The `for:` of the shipped rules."
    )
    rate_window: PositiveDuration = Field(
        default=_MONITORING.rate_window,
        description="The range of the rules that judge a ratio (errors, degraded, p99).",
    )
    group_wait: PositiveDuration = Field(
        default=_MONITORING.group_wait, description="Alertmanager's group_wait."
    )
    group_interval: PositiveDuration = Field(
        default=_MONITORING.group_interval, description="Alertmanager's group_interval."
    )
    repeat_interval: PositiveDuration = Field(
        default=_MONITORING.repeat_interval, description="Alertmanager's repeat_interval."
    )
    resend_delay: PositiveDuration = Field(
        default=_MONITORING.resend_delay,
        description="How often Prometheus sends a firing alert to Alertmanager again.",
    )
    max_false_alerts: Annotated[Int, Field(ge=0)] | None = Field(
        default=None,
        description="Most alerts that may fire outside every fault's window (noise).",
    )
    alerts_resolve_within: PositiveDuration | None = Field(
        default=None,
        description="Longest an alert may keep firing after its fault is healed and "
        "recovered from.",
    )

    @model_validator(mode="after")
    def _window_holds_two_scrapes(self) -> MonitoringSection:
        if self.rate_window < 2 * self.scrape_interval:
            raise FieldError(
                f"{format_duration(self.rate_window)} holds fewer than two scrapes "
                f"{format_duration(self.scrape_interval)} apart; rate() needs two",
                ("rate_window",),
            )
        return self

    def settings(self, p99_ms: float) -> MonitoringSettings:
        return MonitoringSettings(
            **self.model_dump(exclude={"max_false_alerts", "alerts_resolve_within"}),
            p99_ms=p99_ms,
        )


class RequestSection(_Section):
    """One kind of request of ``load.requests``."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    path: str = Field(
        min_length=1, max_length=2000, description="Starts with '/': the path and query."
    )
    weight: Int = Field(default=1, ge=1, le=1000, description="Relative share of the requests.")
    body: str | None = Field(default=None, max_length=65536, description="The request body.")
    headers: dict[str, str] = Field(default_factory=dict, max_length=32)
    name: str | None = Field(
        default=None, max_length=200, description="How Locust groups it (default: the path)."
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(c in value for c in " \r\n\t"):
            raise FieldError(
                f"expected a path starting with '/', no spaces, got {show_value(value)}"
            )
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", key) or any(c in item for c in "\r\n"):
                raise FieldError(f"header {key!r}: expected a header name and a one-line value")
        return value


class WorkerHostSection(_Section):
    """Where drillkit starts load workers that join the drill's master (`drillkit worker`)."""

    netns: str | None = Field(
        default=None, description="A network namespace of this machine (`ip netns exec`; root)."
    )
    ssh: str | None = Field(
        default=None,
        description="[USER@]HOST reached by `ssh -o BatchMode=yes`, with drillkit installed.",
    )
    workers: Int = Field(default=1, ge=1, le=64, description="Worker processes there.")

    @field_validator("netns")
    @classmethod
    def _netns(cls, value: str | None) -> str | None:
        if value is not None and not _NETNS.fullmatch(value):
            raise FieldError(f"expected a network namespace's name, got {show_value(value)}")
        return value

    @field_validator("ssh")
    @classmethod
    def _ssh(cls, value: str | None) -> str | None:
        if value is not None and not _SSH_DEST.fullmatch(value):
            raise FieldError(f"expected [USER@]HOST, got {show_value(value)}")
        return value

    @model_validator(mode="after")
    def _one_place(self) -> WorkerHostSection:
        if (self.netns is None) == (self.ssh is None):
            raise FieldError("give netns or ssh (one of them)")
        return self


class LoadSection(_Section):
    """The load driven at the gateway."""

    rate: Number = Field(
        default=100.0, gt=0, description="Target requests per second over all users."
    )
    users: Int = Field(default=20, ge=1, description="Concurrent virtual users.")
    duration: PositiveDuration = Field(default=60.0, description="Load time after warmup.")
    warmup: Duration = Field(default=5.0, description="Load before t=0, excluded from scoring.")
    timeout: PositiveDuration = Field(default=2.0, description="Client timeout of one request.")
    workers: Int = Field(
        default=1,
        ge=0,
        description="Load-generator processes on this machine (0: only workers elsewhere).",
    )
    skew: Number = Field(
        default=0.0,
        ge=0,
        le=3,
        description="Zipf exponent of which users ask: 0 every user alike; about 1 a few users "
        "most of the time, as real traffic (what makes a cache worth having).",
    )
    host: str | None = Field(
        default=None,
        description="Where the load goes: http://SERVICE:PORT names a Compose service's "
        "container port (reached where the project publishes it); default the stack's entry.",
    )
    locustfile: str | None = Field(
        default=None,
        min_length=1,
        description="Your own locustfile (relative to the scenario file's folder), run "
        "unchanged but paced at `rate`, with every request recorded.",
    )
    requests: tuple[RequestSection, ...] = Field(
        default=(),
        max_length=64,
        description="Weighted HTTP requests, for a drill without a locustfile.",
    )
    bind: IPv4Address | None = Field(
        default=None,
        description="An address of this host where the drill's Locust master and record "
        "sink listen for workers on other hosts (default 127.0.0.1: this machine only).",
    )
    port: Int = Field(
        default=0,
        ge=0,
        le=65535,
        description="The drill's port for `drillkit worker --master BIND:PORT` (0: any; "
        "workers started by hand need a fixed one).",
    )
    hosts: tuple[WorkerHostSection, ...] = Field(
        default=(),
        max_length=64,
        description="Where drillkit starts load workers that join the drill (network "
        "namespaces, ssh hosts).",
    )
    remote_workers: Int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Workers started by hand (`drillkit worker --master BIND:PORT "
        "--token-file FILE`) that must join.",
    )
    join_within: PositiveDuration = Field(
        default=60.0, description="Longest wait for every worker to join (exit 3 after it)."
    )
    token_file: str | None = Field(
        default=None,
        min_length=1,
        description="A file holding the token workers prove (relative to the scenario file's "
        "folder); needed for workers started by hand, default a fresh token per drill.",
    )

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @field_validator("locustfile")
    @classmethod
    def _locustfile_is_relative(cls, value: str | None) -> str | None:
        return None if value is None else _relative(value)

    @field_validator("bind")
    @classmethod
    def _bind_is_one_address(cls, value: IPv4Address | None) -> IPv4Address | None:
        return _one_address(value)

    @field_validator("token_file")
    @classmethod
    def _token_file_is_relative(cls, value: str | None) -> str | None:
        return None if value is None else _relative(value)

    @model_validator(mode="after")
    def _one_kind_of_load(self) -> LoadSection:
        if self.locustfile is not None and self.requests:
            raise FieldError("give a locustfile or requests, not both", ("requests",))
        return self

    @property
    def distributed(self) -> bool:
        """Workers join from elsewhere: ``hosts`` or ``remote_workers``."""
        return bool(self.hosts) or self.remote_workers > 0

    @model_validator(mode="after")
    def _workers_elsewhere(self) -> LoadSection:
        if not self.distributed:
            if self.workers < 1:
                raise FieldError("expected >= 1 (or workers elsewhere: hosts)", ("workers",))
            for name in ("bind", "port", "token_file"):
                if name in self.model_fields_set and getattr(self, name):
                    raise FieldError(f"{name} needs workers elsewhere (hosts)", (name,))
            return self
        if self.bind is None:
            raise FieldError(
                "workers elsewhere need an address of this host they reach (load.bind)",
                ("bind",),
            )
        if self.locustfile is not None:
            raise FieldError(
                "workers elsewhere run drillkit's own requests (load.requests), not a locustfile",
                ("locustfile",),
            )
        if self.remote_workers and (not self.port or self.token_file is None):
            raise FieldError(
                "workers started by hand need a fixed port and a token_file to join with",
                ("port" if not self.port else "token_file",),
            )
        total = self.workers + sum(h.workers for h in self.hosts) + self.remote_workers
        if self.users < total:
            raise FieldError(f"expected >= the {total} workers (one user each)", ("users",))
        return self


class SLOSection(_Section):
    """The steady-state hypothesis, checked per phase."""

    availability: Share = Field(default=0.999, description="Non-failed responses / all responses.")
    p99_ms: Number = Field(
        default=250.0, gt=0, description="99th percentile latency in milliseconds."
    )
    quality: Share = Field(
        default=0.9, description="Online recall@k as a share of offline recall@k."
    )
    degraded_max: Share = Field(default=0.05, description="Largest share of fallback responses.")


class FaultExpect(_Section):
    """What a fault's phase must show; every figure is optional."""

    detect_within: PositiveDuration | None = Field(
        default=None, description="Largest time to detect."
    )
    recover_within: PositiveDuration | None = Field(
        default=None, description="Largest time to recover."
    )
    max_failed_requests: CountOrShareField | None = Field(
        default=None, description='A count, or a share like "0.1%".'
    )
    max_wrong_model_responses: Annotated[Int, Field(ge=0)] | None = Field(
        default=None, description="Largest number of wrong-model responses."
    )
    cache_recover_within: PositiveDuration | None = Field(
        default=None,
        description="Largest time from the heal until the cache hit ratio is back to 90% of "
        "its value before the fault (a stack with a cache tier).",
    )
    alerts: tuple[AlertName, ...] = Field(
        default=(),
        max_length=32,
        description="Alerts that must fire during the fault (names of the shipped rules, "
        "`drillkit monitoring rules`, or of your own Prometheus's).",
    )
    alert_within: PositiveDuration | None = Field(
        default=None,
        description="Largest time from the injection to the first firing alert (the first "
        "of `alerts` when they are given).",
    )
    rollback_within: PositiveDuration | None = Field(
        default=None,
        description="A rollout: largest time from its start to the last answer by the new "
        "version (it must have been rolled back).",
    )
    max_users_exposed: CountOrShareField | None = Field(
        default=None,
        description="A rollout: most users answered by the new version, a count or a share "
        'like "15%" of the users who sent requests while it was out.',
    )
    max_exposed_requests: Annotated[Int, Field(ge=0)] | None = Field(
        default=None, description="A rollout: most answers by the new version."
    )
    max_events_lost: Annotated[Int, Field(ge=0)] | None = Field(
        default=None,
        description="data_loss: most acknowledged click events the store lost (events.enabled).",
    )
    rpo_within: Duration | None = Field(
        default=None,
        description="data_loss: largest recovery point, the span of acknowledged events lost "
        "before the fault (0 when none was).",
    )
    rto_within: PositiveDuration | None = Field(
        default=None,
        description="data_loss: largest time from the fault until the store takes writes "
        "again and holds what it will recover (a restore finished).",
    )


def _parse_target(value: object) -> object:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("expected a service name, a list of names or 'random', got ''")
        return value.strip()
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("expected at least one service name, got an empty list")
        names: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise FieldError(f"expected a service name, got {show_value(item)}", (index,))
            name = item.strip()
            if name == RANDOM_TARGET:
                raise FieldError("'random' cannot be part of a list of targets", (index,))
            if name in names:
                raise FieldError(f"{name!r} is listed twice", (index,))
            names.append(name)
        return tuple(names)
    raise ValueError(
        f"expected a service name, a list of names or 'random', got {show_value(value)}"
    )


Target = Annotated[
    str | tuple[str, ...],
    BeforeValidator(_parse_target),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string"}, "minItems": 1},
            ],
            "description": 'A service name, a list of names, or "random" (seeded).',
        }
    ),
]


def _none_is_default(value: object) -> object:
    # `params:` or `expect:` with nothing after it reads as null; it means "the defaults".
    return {} if value is None else value


class FaultSpec(_Section):
    """One fault on the drill's timeline."""

    id: str = Field(
        default="",
        description='Unique id; default "<kind>-<index>", the index 1-based among all faults.',
        json_schema_extra={"pattern": f"^({_ID_RE.pattern})?$", "maxLength": _ID_MAX},
    )
    kind: str = Field(description="A registered fault kind, e.g. kill_node.")
    target: Target
    at: Duration = Field(description="Offset of the injection from t=0 (the end of warmup).")
    duration: PositiveDuration | None = Field(
        default=None,
        description="Time until the fault is healed; omitted: heal at the end of the drill.",
    )
    params: Annotated[SerializeAsAny[BaseModel], WithJsonSchema({"type": "object"})] = Field(
        default_factory=dict,
        validate_default=True,
        description="Kind-specific parameters, validated by the kind's own model.",
    )
    expect: Annotated[FaultExpect, BeforeValidator(_none_is_default)] = Field(
        default_factory=FaultExpect
    )

    @field_validator("id", mode="before")
    @classmethod
    def _check_id(cls, value: object) -> object:
        if isinstance(value, str) and not (_ID_RE.fullmatch(value) and len(value) <= _ID_MAX):
            # Ids become check names (`kill-1.detect_within`) and JUnit test names: no dots,
            # no spaces, nothing long.
            raise ValueError(
                f"expected up to {_ID_MAX} letters, digits, '_' and '-', starting with a letter "
                f"or digit, got {show_value(value)}"
            )
        return value

    @field_validator("kind", mode="before")
    @classmethod
    def _check_kind(cls, value: object) -> object:
        if not isinstance(value, str):
            return value  # the str validator says what is wrong
        kinds = fault_kinds()
        if value not in kinds:
            close = difflib.get_close_matches(value, list(kinds), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"unknown fault kind {value!r} ({hint}known kinds: {', '.join(sorted(kinds))})"
            )
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _check_params(cls, value: object, info: ValidationInfo) -> object:
        kind = info.data.get("kind")
        if kind is None:
            return {}  # the kind is wrong; that error is the one worth reporting
        model = fault_kinds()[kind].params
        if isinstance(value, model):
            return value
        try:
            return model.model_validate(_none_is_default(value))
        except ValidationError as exc:
            loc, message = first_error(exc, model)
            raise FieldError(message, loc) from None

    def target_names(self) -> list[str]:
        """The targets as written (``random`` included)."""
        return [self.target] if isinstance(self.target, str) else list(self.target)

    def kind_needs_links(self) -> bool:
        """Whether the kind cuts or slows the stack's links (``cut_network``, ``latency``)."""
        info = fault_kinds().get(self.kind)
        return info is not None and bool(info.cls.needs & {"cut_link", "slow_link"})

    def resolved_targets(self, service_names: Sequence[str], rng: random.Random) -> list[str]:
        """The services this fault hits, with ``random`` resolved to one replica by ``rng``.

        ``service_names`` is the stack's services (:meth:`Scenario.service_names`). A name that
        is neither one of them nor ``model-store`` raises :class:`~drillkit.errors.TargetError`.
        """
        if self.target == RANDOM_TARGET:
            replicas = [name for name in service_names if name.startswith("replica-")]
            if not replicas:
                raise TargetError(f"fault {self.id or self.kind}: no replica to pick at random")
            return [rng.choice(replicas)]
        names = [self.target] if isinstance(self.target, str) else list(self.target)
        for name in names:
            zone = name.startswith("zone-") and f"gateway-{name[5:]}" in service_names
            if name not in service_names and name != MODEL_STORE and not zone:
                raise TargetError(
                    f"fault {self.id or self.kind}: target {name!r} is not a service of this "
                    f"stack ({', '.join(service_names)})"
                )
        return names


class AbortSection(_Section):
    """Stop the drill early (heal, exit 1) when errors stay too high for too long.

    ``error_rate_above: 100%`` never triggers, which turns the guard off.
    """

    error_rate_above: Share = Field(
        default=0.5, description="Share of failed requests that aborts."
    )
    for_: PositiveDuration = Field(default=5.0, alias="for", description="How long it must hold.")


class ScoringSection(_Section):
    """How the score is judged."""

    pass_score: Number = Field(
        default=80.0, ge=0, le=100, description="Lowest passing score, 0..100."
    )


ReportFormat = Literal["terminal", "json", "junit", "html"]


def scenario_file(base: Path | None, name: str, field: str) -> Path:
    """A file a scenario names (``stack.compose``, ``load.locustfile``), relative to the
    scenario file's folder ``base``: absolute, and inside the working folder. A scenario is
    shared input and these files are run (a project, a locustfile): it may name one beside it
    or below the folder a person runs drills from, not any file of the machine."""
    here = Path.cwd().resolve()
    path = ((base or here) / name).resolve()
    if not path.is_relative_to(here):
        raise InputError(
            f"{field}: {name} leads to {path}, outside the working folder {here}; run the "
            "drill from a folder that holds it"
        )
    return path


def relative_inside(value: str, elsewhere: str) -> str:
    """``value`` if it is a relative path that stays inside the working folder; a FieldError
    that ends with ``elsewhere`` (how to name another place) if not."""
    if "\0" in value:
        raise FieldError("a path cannot hold a NUL character")
    if PurePosixPath(value).is_absolute() or value.startswith("~"):
        raise FieldError(f"{value!r} is not a relative path; {elsewhere}")
    if ".." in PurePosixPath(value).parts:
        raise FieldError(f"{value!r} leaves the working folder; {elsewhere}")
    return value


class ReportSection(_Section):
    """Which reports are written, and where."""

    formats: tuple[ReportFormat, ...] = Field(
        default=("terminal", "json"), description="Any of terminal, json, junit, html."
    )
    dir: str = Field(
        default="reports",
        min_length=1,
        description="Folder the reports go to, relative to the working folder and "
        "inside it; `drillkit run --out DIR` names any other.",
    )

    @field_validator("dir")
    @classmethod
    def _dir_stays_inside(cls, value: str) -> str:
        # A scenario is shared input: it may choose a subfolder for its reports, not make
        # drillkit write wherever the user running it can (the CLI's --out can).
        return relative_inside(value, "to write elsewhere, use `drillkit run --out DIR`")

    @field_validator("formats")
    @classmethod
    def _unique_formats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, name in enumerate(value):
            if name in value[:index]:
                raise FieldError(f"{name!r} is listed twice", (index,))
        return value


_SECTIONS = ("stack", "load", "slo", "faults", "abort", "scoring", "report", "monitoring")


class Scenario(_Section):
    """A drill: the stack, the load, the SLOs, the faults and how the run is judged.

    Unknown keys are errors everywhere, except top-level keys starting with ``x-``, which are
    ignored so that shared values can be anchored there and merged in (``<<: *slow``). A
    section given as null (``faults:`` with nothing after it) takes its defaults.
    """

    version: Literal[1] = Field(description="Format version; the only known one is 1.")
    name: str = Field(
        max_length=100,
        description="Lowercase letters, digits and '-'.",
        json_schema_extra={"pattern": f"^{_NAME_RE.pattern}$"},
    )
    description: str = ""
    stack: StackSection = Field(default_factory=StackSection)
    load: LoadSection = Field(default_factory=LoadSection)
    slo: SLOSection = Field(default_factory=SLOSection)
    faults: tuple[FaultSpec, ...] = ()
    abort: AbortSection = Field(default_factory=AbortSection)
    scoring: ScoringSection = Field(default_factory=ScoringSection)
    report: ReportSection = Field(default_factory=ReportSection)
    monitoring: MonitoringSection = Field(default_factory=MonitoringSection)

    @model_validator(mode="before")
    @classmethod
    def _drop_empty_sections_and_extensions(cls, data: object) -> object:
        # `faults:` with nothing after it reads as null and means "none"; likewise for sections.
        # Top-level `x-...` keys are a place to keep YAML anchors (`x-slow: &slow {...}`), as in
        # docker compose files.
        if isinstance(data, dict):
            return {
                k: v
                for k, v in data.items()
                if not (k in _SECTIONS and v is None)
                and not (isinstance(k, str) and k.startswith(EXTENSION_PREFIX))
            }
        return data

    @field_validator("version", mode="before")
    @classmethod
    def _check_version(cls, value: object) -> object:
        # Only the integer 1: `1.0` or `"1"` hint at a different format, and bool is an int.
        if type(value) is not int or value != FORMAT_VERSION:
            raise ValueError(
                f"unsupported format version {show_value(value)}: "
                f"this drillkit reads version {FORMAT_VERSION}"
            )
        return FORMAT_VERSION

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: object) -> object:
        if isinstance(value, str) and not _NAME_RE.fullmatch(value):
            raise ValueError(
                "expected lowercase letters, digits and '-', starting with a letter or digit, "
                f"got {show_value(value)}"
            )
        return value

    @field_validator("faults")
    @classmethod
    def _default_ids(cls, faults: tuple[FaultSpec, ...]) -> tuple[FaultSpec, ...]:
        return tuple(
            fault if fault.id else fault.model_copy(update={"id": f"{fault.kind}-{index}"})
            for index, fault in enumerate(faults, start=1)
        )

    @model_validator(mode="after")
    def _check_faults(self) -> Scenario:
        # A Compose project's services are known once Compose has read its file: the drill
        # checks those targets before anything starts (check_targets).
        compose = self.stack.compose is not None
        known = {} if compose else self.target_roles()
        seen: dict[str, int] = {}
        for index, fault in enumerate(self.faults):
            here: Loc = ("faults", index)
            if self.monitoring.enabled == "off" and (
                fault.expect.alerts or fault.expect.alert_within is not None
            ):
                raise FieldError(
                    "alert expectations need monitoring (monitoring.enabled is off)",
                    (*here, "expect", "alerts" if fault.expect.alerts else "alert_within"),
                )
            if fault.id in seen:
                raise FieldError(
                    f"duplicate fault id {fault.id!r} (also faults[{seen[fault.id]}])",
                    (*here, "id"),
                )
            seen[fault.id] = index
            for earlier in self.faults[:index]:
                why = _exclusive(earlier, fault)
                if why and _overlap(earlier, fault, self.load.duration):
                    shared = set(earlier.target_names()) & set(fault.target_names())
                    if shared:
                        raise FieldError(
                            f"{fault.kind} on {', '.join(sorted(shared))} overlaps "
                            f"{earlier.id} on it: {why}",
                            (*here, "at"),
                        )
            if fault.at >= self.load.duration:
                raise FieldError(
                    f"at {format_duration(fault.at)} is not inside the load window "
                    f"[0, {format_duration(self.load.duration)}) set by load.duration",
                    (*here, "at"),
                )
            if compose:
                continue
            roles = fault_kinds()[fault.kind].target_roles
            if ANY_SERVICE in roles:  # every service of this stack, whatever its role
                services = set(known.values()) - {ROLE_MODEL_STORE, ROLE_ZONE}
                roles = (roles - {ANY_SERVICE}) | services
            if fault.target == RANDOM_TARGET:
                if ROLE_REPLICA not in roles:
                    raise FieldError(
                        f"{fault.kind} cannot target a replica, so 'random' has nothing to pick",
                        (*here, "target"),
                    )
                continue
            names = [fault.target] if isinstance(fault.target, str) else list(fault.target)
            links = fault_kinds()[fault.kind].cls.needs & {"cut_link", "slow_link"}
            for position, name in enumerate(names):
                sub: Loc = (*here, "target")
                if not isinstance(fault.target, str):
                    sub = (*sub, position)
                _check_target(fault.kind, roles, name, known, sub)
                if links and name == "gateway":  # one zone: no link ends at the gateway
                    raise FieldError(
                        f"{fault.kind} cannot target the gateway of a one-zone stack (no link "
                        "ends at it; a zoned stack's edge -> gateway links can be cut)",
                        sub,
                    )
        return self

    def check_targets(
        self,
        known: dict[str, str],
        *,
        linked: frozenset[str] | None = None,
        published: frozenset[str] | None = None,
    ) -> None:
        """Check every fault's targets against ``known`` (a Compose project's services, with
        their roles, once Compose has read the file), and, when given, that a network fault's
        target has links to it (``linked``), its ``source`` is another service, and a load
        spike's target is reachable from the host (``published``): TargetError (exit 2)
        naming the fault, before anything starts."""
        kinds = fault_kinds()
        for fault in self.faults:
            needs = kinds[fault.kind].cls.needs
            source = getattr(fault.params, "source", None)
            for name in fault.target_names():
                links = needs & {"cut_link", "slow_link"}
                if linked is not None and links and name in known and name not in linked:
                    raise TargetError(
                        f"fault {fault.id}: {name} exposes no port, so no link ends at it "
                        "for a network fault (give it `expose:` or `ports:`)"
                    )
                if source is not None and (source not in known or source == name):
                    raise TargetError(
                        f"fault {fault.id}: params.source {source!r} is not another service "
                        f"of the project ({', '.join(known)})"
                    )
                spike = published is not None and fault.kind == "load_spike"
                if spike and name in known and name not in (published or frozenset()):
                    raise TargetError(
                        f"fault {fault.id}: {name} publishes no port on the host for the "
                        "spike's generator"
                    )
        for fault in self.faults:
            roles = kinds[fault.kind].target_roles
            if ANY_SERVICE in roles:
                roles = (roles - {ANY_SERVICE}) | set(known.values())
            for name in fault.target_names():
                if name not in known:
                    hint = _did_you_mean(name, list(known))
                    raise TargetError(
                        f"fault {fault.id}: target {name!r} is not a service of the Compose "
                        f"project{hint} (services: {', '.join(known)})"
                    )
                try:
                    _check_target(fault.kind, frozenset(roles), name, known, ())
                except FieldError as exc:
                    raise TargetError(f"fault {fault.id}: {exc}") from None

    @property
    def backend_name(self) -> str:
        """The backend the scenario asks for: ``compose`` for a Compose project."""
        return "compose" if self.stack.compose is not None else self.stack.backend

    def drill_spec(self, base: Path | None = None, seed: int = 0) -> Any:
        """What the stack's preset brings up: a :class:`ComposeSpec` for a Compose project
        (its file resolved against ``base``, the scenario file's folder), else the
        reference stack's spec."""
        stack = self.stack
        if stack.compose is None:
            return self.stack_spec()
        host = self.load.host
        return ComposeSpec(
            file=scenario_file(base, stack.compose, "stack.compose"),
            project=stack.project,
            attach=stack.attach,
            containers=stack.containers,
            seed=seed,
            ready_timeout=stack.ready_timeout,
            detect=tuple(DetectSpec(d.url, d.format, d.service) for d in stack.detect),
            entry=service_address(host) if host is not None else None,
        )

    def service_names(self) -> list[str]:
        """The stack's services: ``replica-1`` .. ``replica-N``, then ``gateway``; a zoned
        stack's zone by zone (``redis-a``, ``replica-a1`` .., ``gateway-a``), then ``edge``."""
        return self.stack_spec().service_names()

    def target_roles(self) -> dict[str, str]:
        """Every name a fault may target, with its role: the services, each zone of a zoned
        stack (``zone-a``: every service of zone a) and ``model-store``."""
        spec = self.stack_spec()
        roles = {service.name: service.role for service in spec.services()}
        roles.update({f"zone-{zone}": ROLE_ZONE for zone in spec.zones})
        roles[MODEL_STORE] = ROLE_MODEL_STORE
        return roles

    def stack_spec(self) -> RecommenderSpec:
        """What the ``recommender`` preset brings up for this scenario's ``stack:``."""
        stack = self.stack
        if stack.compose is not None:
            raise InputError(
                f"stack.compose: {stack.compose} is a Compose project, not the reference stack"
            )
        return RecommenderSpec(
            replicas=stack.replicas,
            catalog=CatalogSpec(
                items=stack.catalog.items, dim=stack.catalog.dim, seed=stack.catalog.seed
            ),
            gpu=stack.gpu,
            readiness=stack.readiness,
            gateway=GatewaySettings(**stack.gateway.model_dump()),
            store=Path(stack.store) if stack.store is not None else None,
            zones=tuple(stack.zones),
            edge=EdgeSettings(
                **{
                    **stack.edge.model_dump(exclude={"config"}),
                    "config": Path(stack.edge.config) if stack.edge.config else None,
                }
            ),
            cache=CacheSettings(**stack.cache.model_dump()),
            monitoring=self.monitoring.settings(self.slo.p99_ms),
            events=stack.events.settings(),
        )

    def needs_monitoring(self) -> bool:
        """Whether the drill judges alerts: a fault expects some, or monitoring's own
        drill-wide checks are set."""
        watch = self.monitoring
        return (
            watch.max_false_alerts is not None
            or watch.alerts_resolve_within is not None
            or any(f.expect.alerts or f.expect.alert_within is not None for f in self.faults)
        )

    def fault(self, fault_id: str) -> FaultSpec:
        """The fault with this id; :class:`KeyError` when there is none."""
        for fault in self.faults:
            if fault.id == fault_id:
                return fault
        raise KeyError(fault_id)


_ROLE_WORDS = {
    ROLE_REPLICA: "a replica",
    ROLE_GATEWAY: "a zone's gateway",
    ROLE_CACHE: "a cache (Redis)",
    ROLE_EVENT_STORE: "the event store",
    ROLE_BACKUP: "the backup service",
    ROLE_FEATURES: "the feature updater",
    ROLE_EDGE: "the edge",
    ROLE_ZONE: "a zone",
    ROLE_MODEL_STORE: MODEL_STORE,
}


def _span(names: list[str]) -> str:
    """``replica-1..replica-3`` for a run of names, the names themselves otherwise."""
    if len(names) > 2 and all(_REPLICA_RE.fullmatch(n) for n in names):
        return f"{names[0]}..{names[-1]}"
    return ", ".join(names)


def _exclusive(a: FaultSpec, b: FaultSpec) -> str | None:
    """Why faults ``a`` and ``b`` may not hold one target at the same time, or None when
    they may."""
    if a.kind_needs_links() and b.kind_needs_links():
        return "one network fault at a time per service (healing one undoes the other's rules)"
    kinds = {a.kind, b.kind}
    if kinds == {"gpu_fault"}:
        return "one GPU fault at a time per replica (healing one resets the device)"
    if kinds == {"gpu_fault", "pause_node"}:
        # A paused replica cannot take its GPU's condition or reset, and the pause's heal
        # waits for a readiness the GPU fault denies.
        return "a paused replica's GPU cannot fail or be reset"
    return None


def _overlap(a: FaultSpec, b: FaultSpec, duration: float) -> bool:
    """Whether two faults are applied at the same time (no duration: until the end)."""
    a_end = a.at + a.duration if a.duration is not None else duration
    b_end = b.at + b.duration if b.duration is not None else duration
    return a.at < b_end and b.at < a_end


def _check_target(
    kind: str, roles: frozenset[str], name: str, known: dict[str, str], loc: Loc
) -> None:
    role = known.get(name)
    if role is None:
        services = [n for n, r in known.items() if r != ROLE_MODEL_STORE]
        replicas = [n for n in services if known[n] == ROLE_REPLICA]
        others = [n for n in services if known[n] != ROLE_REPLICA]
        extra = f", or {MODEL_STORE}" if ROLE_MODEL_STORE in roles else ""
        # replica-9 in a stack of 3 is a miscount, not a typo: a did-you-mean would mislead.
        close = [] if _REPLICA_RE.fullmatch(name) else difflib.get_close_matches(name, services)
        hint = f"did you mean {close[0]!r}? " if close else ""
        what = f"{_span(replicas)} and {', '.join(others)}"
        if name.startswith("zone-") and not any(r == ROLE_ZONE for r in known.values()):
            what += "; zones are targets of a zoned stack only (stack.zones)"
        if name in EVENT_SERVICES and ROLE_EVENT_STORE not in known.values():
            what += f"; {name} is a service of a stack with stack.events.enabled: true"
        raise FieldError(f"unknown target {name!r} ({hint}this stack has {what}{extra})", loc)
    if role not in roles:
        words = dict(_ROLE_WORDS)
        if list(known.values()).count(ROLE_GATEWAY) == 1:
            words[ROLE_GATEWAY] = "the gateway"
        order = [*words, *sorted(roles - words.keys())]
        allowed = " or ".join(words.get(r, r) for r in order if r in roles)
        raise FieldError(f"{kind} cannot target {name!r} (it targets {allowed})", loc)


# --- turning pydantic errors into one readable message -------------------------------------


_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def format_loc(loc: Loc) -> str:
    """``("faults", 0, "params", "signal")`` -> ``faults[0].params.signal``.

    A key that is not a plain word (a typo with a space or a newline in it) is quoted, so the
    path stays on one line and unambiguous: ``load['dur ation']``.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY_RE.fullmatch(part):
            out += f"[{part!r}]"
        else:
            out += f".{part}" if out else part
    return out


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    model = root
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a tuple: _submodel already stepped into the item type
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        sub = _submodel(field.annotation) if field is not None else None
        if sub is None:
            return None
        model = sub
    return model


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "text",
    "string_unicode": "text",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}
_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def _describe(error: ErrorDetails, root: type[BaseModel]) -> tuple[Loc, str]:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    got = show_value(error.get("input"))
    if kind in ("value_error", "assertion_error"):
        cause = ctx.get("error")
        if isinstance(cause, FieldError):
            return (*loc, *cause.loc), str(cause)
        return loc, str(cause) if cause is not None else error["msg"]
    if kind == "extra_forbidden" and loc:
        key = str(loc[-1])
        model = _model_at(root, loc[:-1])
        keys = _keys_of(model) if model is not None else []
        hint = _did_you_mean(key, keys)
        if not hint and keys:
            hint = f" (expected one of: {', '.join(keys)})"
        return loc, f"unknown key {key!r}{hint}"
    if kind == "missing":
        return loc, "required key is missing"
    if kind in _EXPECTED:
        return loc, f"expected {_EXPECTED[kind]}, got {got}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        hint = ""
        if isinstance(error.get("input"), str):
            hint = _did_you_mean(str(error.get("input")), re.findall(r"'([^']*)'", expected))
        return loc, f"expected {expected}, got {got}{hint}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        bound = ctx.get(key)
        # An int bound as written (2000000, not 2e+06); a float as short as it goes.
        shown = f"{bound:g}" if isinstance(bound, float) else str(bound)
        return loc, f"expected a number {words} {shown}, got {got}"
    if kind == "too_short":
        return loc, f"expected at least {ctx.get('min_length')} item(s), got {got}"
    if kind == "string_too_short":
        return loc, f"expected at least {ctx.get('min_length')} character(s), got {got}"
    if kind == "too_long":
        return loc, f"expected at most {ctx.get('max_length')} items"
    if kind == "string_too_long":
        return loc, f"expected at most {ctx.get('max_length')} characters, got {got}"
    message = error["msg"]
    return loc, message[:1].lower() + message[1:]


def first_error(exc: ValidationError, root: type[BaseModel]) -> tuple[Loc, str]:
    """The first error of ``exc`` as (location, message) for a person, not a programmer.

    ``root`` is the model that was validated; it is needed to suggest a close key name for an
    unknown key. The location includes a :class:`FieldError`'s own sub-location.
    """
    errors = exc.errors()
    if not errors:
        return (), str(exc)
    return _describe(errors[0], root)
