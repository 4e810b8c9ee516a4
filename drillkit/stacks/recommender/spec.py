"""What a reference recommender stack is made of: its catalog, its gateway's failover
settings, its replicas. The one place their defaults and limits live: the scenario format,
the CLI's options, the gateway process and the preset all read them from here.

Standard library only, so that validating a scenario imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drillkit.errors import InputError

__all__ = [
    "APPENDFSYNC",
    "CATALOG_LIMITS",
    "EDGE_MODES",
    "EVENT_SERVICES",
    "GENERATOR_VERSION",
    "MAX_REPLICAS",
    "MAX_ZONES",
    "ROLE_BACKUP",
    "ROLE_CACHE",
    "ROLE_EDGE",
    "ROLE_EVENT_STORE",
    "ROLE_FEATURES",
    "ROLE_MODEL_STORE",
    "ROLE_MONITORING",
    "ROLE_ZONE",
    "ZONE_PATTERN",
    "CacheSettings",
    "CatalogSpec",
    "EdgeSettings",
    "EventSettings",
    "GatewaySettings",
    "MonitoringSettings",
    "RecommenderSpec",
    "ServiceName",
]

#: Most replicas one stack may have.
MAX_REPLICAS = 16

#: The pseudo-target of ``corrupt_model`` meaning every copy of the model store.
ROLE_MODEL_STORE = "model-store"
#: Roles of a zoned stack's services beyond replicas and gateways: each zone's Redis, and
#: the edge load balancer (HAProxy) in front of the zones. ``zone`` is the role of the
#: pseudo-target ``zone-<name>``: every service of one zone.
ROLE_CACHE = "cache"
ROLE_EDGE = "edge"
ROLE_ZONE = "zone"
#: The stack's own monitoring: Prometheus, Alertmanager and the webhook receiver that drillkit
#: reads notifications from.
ROLE_MONITORING = "monitoring"
#: Their service names, in start order.
MONITORING_SERVICES = ("alert-receiver", "alertmanager", "prometheus")
MONITORING_MODES = ("auto", "on", "off")

#: The event path (``events.enabled``): the Redis that holds the click-event stream, and the
#: backup service that snapshots it and the model store.
ROLE_EVENT_STORE = "event-store"
ROLE_BACKUP = "backup"
#: The feature updater: click events into users' recent-activity features.
ROLE_FEATURES = "features"
EVENT_SERVICES = (ROLE_EVENT_STORE, ROLE_BACKUP, ROLE_FEATURES)
#: Redis's ``appendfsync``: fsync the append-only file before each answer, once a second, or
#: never (the kernel decides).
APPENDFSYNC = ("always", "everysec", "no")

#: Most zones one stack may have, and what a zone's name looks like (it becomes part of
#: service names: ``gateway-a``, ``replica-a1``, ``redis-a``).
MAX_ZONES = 4
ZONE_PATTERN = r"[a-z][a-z0-9]{0,7}"
_ZONE = re.compile(ZONE_PATTERN)

#: ``active-active``: the edge balances over every zone; ``active-passive``: the first zone
#: serves and the others are HAProxy ``backup`` servers, used only when it is down.
EDGE_MODES = ("active-active", "active-passive")

#: Bumped whenever the data generator changes, so cached artifacts keyed by
#: :meth:`CatalogSpec.key` are rebuilt rather than silently reused.
GENERATOR_VERSION = 1

#: Inclusive bounds of the catalog's numbers.
CATALOG_LIMITS: dict[str, tuple[int, int]] = {
    "items": (100, 2_000_000),
    "dim": (8, 1024),
    "seed": (0, 2**63 - 1),
    "users": (10, 2_000_000),
}


def _check_int(name: str, value: object, low: int, high: int, *, zero_ok: bool = False) -> int:
    # bool is an int subclass, and `items: true` in YAML must not become one item.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"catalog.{name}: expected an integer, got {value!r}")
    number = int(value)
    if zero_ok and number == 0:
        return number
    if not low <= number <= high:
        derived = " (or 0 to derive it from items)" if zero_ok else ""
        raise InputError(
            f"catalog.{name}: expected an integer from {low} to {high}{derived}, got {number}"
        )
    return number


@dataclass(frozen=True)
class CatalogSpec:
    """What synthetic catalog to generate.

    ``users`` and ``categories`` may be 0, meaning "derive from ``items``": half as many
    users as items (at most 50,000) and one category per 40 items (4 to 50). Use
    :meth:`resolved` to get the spec with those filled in. Invalid values raise
    :class:`~drillkit.errors.InputError` on construction.
    """

    items: int = 20_000
    dim: int = 64
    seed: int = 42
    users: int = 0
    categories: int = 0

    def __post_init__(self) -> None:
        for name in ("items", "dim", "seed"):
            low, high = CATALOG_LIMITS[name]
            _check_int(name, getattr(self, name), low, high)
        low, high = CATALOG_LIMITS["users"]
        _check_int("users", self.users, low, high, zero_ok=True)
        # Each category needs a handful of items or the per-category price and taste
        # structure degenerates.
        _check_int("categories", self.categories, 2, max(2, self.items // 10), zero_ok=True)

    def resolved(self) -> CatalogSpec:
        """Return this spec with ``users`` and ``categories`` derived where they are 0."""
        users = self.users or min(self.items // 2, 50_000)
        categories = self.categories or max(4, min(50, self.items // 40))
        return dataclasses.replace(self, users=users, categories=categories)

    def key(self) -> str:
        """A short, stable hex digest of the resolved spec and the generator version.

        Two specs that resolve to the same catalog share a key, so it is safe as a cache key.
        """
        fields = dataclasses.asdict(self.resolved())
        fields["generator"] = GENERATOR_VERSION
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class GatewaySettings:
    """Failover settings of the gateway; a drill may turn each off to show its effect.

    Times are seconds. See the gateway's module docstring for what each one does.
    """

    check_interval: float = 0.2
    check_timeout: float = 0.2
    fall: int = 2
    rise: int = 2
    passive_ejection: bool = True
    retries: int = 2
    try_timeout: float = 0.3
    deadline: float = 1.0
    max_outstanding: int = 32  # per replica; beyond it the gateway sheds load (0: no cap)
    fallback: bool = True  # popular-items answers (degraded) when no replica can answer

    def args(self) -> list[str]:
        """The gateway process's command-line options for these settings (the fallback
        list itself is passed separately: it is a file)."""
        out = [
            "--check-interval", str(self.check_interval),
            "--check-timeout", str(self.check_timeout),
            "--fall", str(self.fall),
            "--rise", str(self.rise),
            "--retries", str(self.retries),
            "--try-timeout", str(self.try_timeout),
            "--deadline", str(self.deadline),
            "--max-outstanding", str(self.max_outstanding),
        ]  # fmt: skip
        if not self.passive_ejection:
            out.append("--no-passive-ejection")
        return out


@dataclass(frozen=True)
class EdgeSettings:
    """The edge load balancer of a zoned stack (HAProxy), one server per zone gateway.

    ``check_interval``/``fall``/``rise`` are HAProxy's ``inter``/``fall``/``rise`` of the
    active health checks (``GET /readyz`` on each zone's gateway); ``health_checks`` off
    drops the checks and passive ejection (``observe layer7``), so a dead zone is never taken
    out. ``retries`` are HAProxy's, each on another zone (``option redispatch 1``);
    ``timeout`` bounds one try at a zone. ``config``: the user's own HAProxy configuration
    to run instead of drillkit's (checked with ``haproxy -c`` before anything starts).
    """

    check_interval: float = 0.2
    fall: int = 2
    rise: int = 2
    health_checks: bool = True
    retries: int = 2
    timeout: float = 1.0
    mode: str = "active-active"
    config: Path | None = None

    def __post_init__(self) -> None:
        if self.mode not in EDGE_MODES:
            raise InputError(
                f"edge.mode: expected one of {', '.join(EDGE_MODES)}, got {self.mode!r}"
            )


@dataclass(frozen=True)
class CacheSettings:
    """Each zone's Redis, as the replicas use it (cache-aside).

    ``ttl``: how long a user's recommendations and features stay cached (seconds);
    ``budget``: the longest a replica waits on Redis before it answers without it
    (``X-Cache: bypass``); ``enabled`` off: no Redis, every answer is computed.
    """

    enabled: bool = True
    ttl: float = 300.0
    budget: float = 0.02


@dataclass(frozen=True)
class MonitoringSettings:
    """The stack's Prometheus and Alertmanager, with intervals that suit a drill (seconds).

    ``enabled``: ``on`` runs them (exit 3 when they are not installed), ``off`` does not,
    ``auto`` runs them where they are installed (always in the docker stack image).
    ``scrape_interval``/``evaluation_interval`` are Prometheus's; ``alert_for`` is the
    ``for:`` of every shipped rule; ``rate_window`` the range of the rules that judge a ratio
    (errors, degraded answers, p99); ``group_wait``/``group_interval``/``repeat_interval``
    Alertmanager's grouping; ``resend_delay`` how often Prometheus sends a firing alert to
    Alertmanager again (how soon a restarted Alertmanager learns of it). ``p99_ms``: the
    latency rule's threshold (the scenario's SLO).
    """

    enabled: str = "auto"
    scrape_interval: float = 1.0
    evaluation_interval: float = 1.0
    alert_for: float = 2.0
    rate_window: float = 5.0
    group_wait: float = 1.0
    group_interval: float = 2.0
    repeat_interval: float = 3600.0
    resend_delay: float = 2.0
    p99_ms: float = 250.0

    def __post_init__(self) -> None:
        if self.enabled not in MONITORING_MODES:
            raise InputError(
                f"monitoring.enabled: expected one of {', '.join(MONITORING_MODES)}, "
                f"got {self.enabled!r}"
            )
        if self.rate_window < 2 * self.scrape_interval:
            raise InputError(
                f"monitoring.rate_window: {self.rate_window:g} s holds fewer than two scrapes "
                f"{self.scrape_interval:g} s apart; rate() needs two"
            )

    @property
    def on(self) -> bool:
        return self.enabled == "on"

    def delay_budget(self) -> dict[str, float]:
        """The longest a fault can take to reach a notification with these settings, term by
        term: a scrape to see it, an evaluation to put the alert in pending, ``for:`` to
        fire, an evaluation to send it, and Alertmanager's ``group_wait``."""
        return {
            "scrape_interval": self.scrape_interval,
            "evaluation_interval": 2 * self.evaluation_interval,
            "for": self.alert_for,
            "group_wait": self.group_wait,
        }


@dataclass(frozen=True)
class EventSettings:
    """Click events into a store, and the backups that keep it (seconds).

    ``enabled``: the load sends ``share`` of its requests as click events (``POST /events``),
    which the gateways append to one Redis stream (the ``event-store`` service) persisted in
    its append-only file with ``appendfsync``; a ``backup`` service snapshots the stream and
    the model store every ``backup_interval``, keeping the newest ``backup_keep``, and
    restores them when it finds them lost.
    """

    enabled: bool = False
    share: float = 0.2
    appendfsync: str = "everysec"
    backup_interval: float = 30.0
    backup_keep: int = 5
    backup_dir: Path | None = None  # default: the stack's own folder

    def __post_init__(self) -> None:
        if self.appendfsync not in APPENDFSYNC:
            raise InputError(
                f"events.appendfsync: expected one of {', '.join(APPENDFSYNC)}, "
                f"got {self.appendfsync!r}"
            )
        if not 0.0 < self.share < 1.0:
            raise InputError(
                f"events.share: expected a share above 0 and below 1, got {self.share}"
            )
        if not self.backup_interval > 0:
            raise InputError(
                f"events.backup_interval: expected a positive duration, got {self.backup_interval}"
            )
        if isinstance(self.backup_keep, bool) or not 1 <= self.backup_keep <= 1000:
            raise InputError(f"events.backup_keep: expected 1..1000, got {self.backup_keep}")


@dataclass(frozen=True)
class ServiceName:
    """A service of a recommender stack as a scenario sees it: its name, role and zone."""

    name: str
    role: str
    zone: str | None = None


@dataclass(frozen=True)
class RecommenderSpec:
    """A reference recommender stack: ``replicas`` model servers behind one gateway, or, with
    ``zones``, ``replicas`` per zone behind each zone's gateway and an edge load balancer in
    front of the zones, with a Redis cache per zone."""

    replicas: int = 3
    catalog: CatalogSpec = field(default_factory=CatalogSpec)
    gpu: str = "auto"  # auto | on | off
    readiness: str = "deep"  # a replica's /readyz: deep (one inference) | shallow
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    store: Path | None = None  # serve this store instead of a copy of the built artifacts
    zones: tuple[str, ...] = ()  # empty: one zone, the first wave's stack, unchanged
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)
    events: EventSettings = field(default_factory=EventSettings)

    def __post_init__(self) -> None:
        if isinstance(self.replicas, bool) or not 1 <= self.replicas <= MAX_REPLICAS:
            raise InputError(f"replicas: expected 1..{MAX_REPLICAS}, got {self.replicas}")
        if self.gpu not in ("auto", "on", "off"):
            raise InputError(f"gpu: expected auto, on or off, got {self.gpu!r}")
        if self.readiness not in ("deep", "shallow"):
            raise InputError(f"readiness: expected deep or shallow, got {self.readiness!r}")
        if self.zones:
            if not 2 <= len(self.zones) <= MAX_ZONES:
                raise InputError(f"zones: expected 2..{MAX_ZONES} zones, got {len(self.zones)}")
            for zone in self.zones:
                if not _ZONE.fullmatch(zone):
                    raise InputError(
                        f"zones: {zone!r}: expected a lowercase letter, then up to 7 letters "
                        "or digits"
                    )
            if len(set(self.zones)) != len(self.zones):
                raise InputError(f"zones: {', '.join(self.zones)}: a zone is named twice")

    @property
    def zoned(self) -> bool:
        return bool(self.zones)

    def services(self) -> list[ServiceName]:
        """Every service in start order; with events on, the event store first; a zoned
        stack's zone by zone (its Redis, replicas, gateway), then the edge; then the backup
        service and the feature updater; then, with monitoring on, the monitoring services."""
        monitoring = [
            ServiceName(name, ROLE_MONITORING) for name in MONITORING_SERVICES
        ] if self.monitoring.on else []  # fmt: skip
        store = [ServiceName(ROLE_EVENT_STORE, ROLE_EVENT_STORE)] if self.events.enabled else []
        backup = [
            ServiceName(ROLE_BACKUP, ROLE_BACKUP), ServiceName(ROLE_FEATURES, ROLE_FEATURES)
        ] if self.events.enabled else []  # fmt: skip
        if not self.zones:
            return [
                *store,
                *(ServiceName(f"replica-{i}", "replica") for i in range(1, self.replicas + 1)),
                ServiceName("gateway", "gateway"),
                *backup,
                *monitoring,
            ]
        out: list[ServiceName] = [*store]
        for zone in self.zones:
            if self.cache.enabled:
                out.append(ServiceName(f"redis-{zone}", ROLE_CACHE, zone))
            out += [
                ServiceName(f"replica-{zone}{i}", "replica", zone)
                for i in range(1, self.replicas + 1)
            ]
            out.append(ServiceName(f"gateway-{zone}", "gateway", zone))
        out.append(ServiceName("edge", ROLE_EDGE))
        return out + backup + monitoring

    def service_names(self) -> list[str]:
        return [s.name for s in self.services()]

    def entry(self) -> str:
        """The service the drill's load goes to."""
        return "edge" if self.zones else "gateway"

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["store"] = str(self.store) if self.store is not None else None
        data["zones"] = list(self.zones)
        data["edge"]["config"] = str(self.edge.config) if self.edge.config else None
        backup_dir = self.events.backup_dir
        data["events"]["backup_dir"] = str(backup_dir) if backup_dir is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RecommenderSpec:
        edge = dict(data.get("edge") or {})
        if edge.get("config"):
            edge["config"] = Path(edge["config"])
        return cls(
            replicas=int(data["replicas"]),
            catalog=CatalogSpec(**data["catalog"]),
            gpu=str(data["gpu"]),
            readiness=str(data.get("readiness") or "deep"),  # absent in older saved states
            gateway=GatewaySettings(**data["gateway"]),
            store=Path(data["store"]) if data.get("store") else None,
            zones=tuple(data.get("zones") or ()),
            edge=EdgeSettings(**edge),
            cache=CacheSettings(**(data.get("cache") or {})),
            monitoring=MonitoringSettings(**(data.get("monitoring") or {"enabled": "off"})),
            events=EventSettings(
                **{
                    **(data.get("events") or {}),
                    "backup_dir": Path(data["events"]["backup_dir"])
                    if (data.get("events") or {}).get("backup_dir")
                    else None,
                }
            ),
        )
