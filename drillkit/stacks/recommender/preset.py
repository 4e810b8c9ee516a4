"""The reference recommender as a stack preset: ``replicas`` model servers behind one gateway.

The plan: each replica serves its own copy of the model store (a node's local model cache),
mounted as ``store``, so a ``corrupt_model`` fault can hit one replica or all of them; the
gateway reaches each replica over a declared link (what ``cut_network`` and ``latency`` act
on) and answers from the store's popular-items list (mounted as ``origin``) when none can.
The admin token that guards a replica's ``POST /admin/reload`` and the gateway's
``POST /admin/rollout`` is the plan's one secret, given to those two roles only; services verify
signed versions with the public key alone.

For a drill the preset says where the stack shows that it noticed a fault (the gateway's
``/status``, each replica's ``/info``), how to score what it serves (golden users' recall,
:mod:`drillkit.stacks.recommender.quality`), and which model digests are the verified ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drillkit.backends.base import Backend, Progress, StackState
from drillkit.errors import (
    ArtifactError,
    BackendUnavailable,
    EnvironmentFailure,
    InputError,
    StackNotReady,
)
from drillkit.faults.base import ROLE_GATEWAY, ROLE_REPLICA
from drillkit.observe.quality import QualityProbe
from drillkit.observe.watch import WatchSource
from drillkit.stacks.base import StackPreset, Workload
from drillkit.stacks.plan import (
    BindHost,
    Dependency,
    Endpoint,
    HttpCheck,
    Join,
    Link,
    Mount,
    MountRef,
    Port,
    PortRef,
    Program,
    ServicePlan,
    StackPlan,
    TcpCheck,
    UrlRef,
)
from drillkit.stacks.recommender.spec import (
    MONITORING_SERVICES,
    ROLE_BACKUP,
    ROLE_CACHE,
    ROLE_EDGE,
    ROLE_EVENT_STORE,
    ROLE_FEATURES,
    ROLE_MODEL_STORE,
    ROLE_MONITORING,
    ROLE_ZONE,
    RecommenderSpec,
)

__all__ = [
    "ADMIN_TOKEN",
    "RecommenderPreset",
    "admin_post",
    "admin_reload",
    "all_stores",
    "origin_store",
    "redis_of",
    "replica_store",
    "spec_of",
]

#: The name of the plan's one secret: what a replica's POST /admin/reload asks for.
ADMIN_TOKEN = "admin-token"
#: Ports inside a container; the local backend picks free ones instead.
REPLICA_PORT = 8000
GATEWAY_PORT = 8080
REDIS_PORT = 6379
EDGE_ADMIN_PORT = 8405
PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
RECEIVER_PORT = 9095
BACKUP_PORT = 9100
FEATURES_PORT = 9101
#: Port names: a zone's Redis, and the edge's admin listener (/stats, /metrics).
REDIS_PORT_NAME = "redis"
EDGE_ADMIN_PORT_NAME = "admin"
#: Redis as a cache and nothing more: no persistence, bounded memory, least recently used
#: keys evicted first.
REDIS_MAXMEMORY = "256mb"
SETTLE_TIMEOUT = 180.0


class RecommenderPreset(StackPreset[RecommenderSpec]):
    name = "recommender"
    description = "model-server replicas (torch two-tower + faiss) behind a failover gateway"

    def resolve(self, spec: RecommenderSpec, backend: str) -> RecommenderSpec:
        """``monitoring.enabled: auto`` made ``on`` or ``off``: on in the docker stack image
        (it carries Prometheus and Alertmanager), on locally where both are installed."""
        if spec.monitoring.enabled != "auto":
            return spec
        from drillkit.stacks.recommender.monitoring import installed

        on = backend == "docker" or installed()
        monitoring = dataclasses.replace(spec.monitoring, enabled="on" if on else "off")
        return dataclasses.replace(spec, monitoring=monitoring)

    def decide_monitoring(
        self, spec: RecommenderSpec, backend: str, *, required: bool, external: bool
    ) -> tuple[RecommenderSpec, str | None]:
        from drillkit.stacks.recommender.monitoring import alertmanager_binary, prometheus_binary

        if external:
            off = dataclasses.replace(spec.monitoring, enabled="off")
            return dataclasses.replace(spec, monitoring=off), None
        resolved = self.resolve(spec, backend)
        if resolved.monitoring.on:
            return resolved, None
        if required:
            prometheus_binary()  # exit 3 naming the package
            alertmanager_binary()
        if spec.monitoring.enabled == "auto":
            return resolved, (
                "monitoring off: Prometheus and Alertmanager are not installed here "
                "(apt-get install prometheus prometheus-alertmanager), so no alert was judged"
            )
        return resolved, None

    def alert_sources(self, state: StackState[Any]) -> tuple[str, str] | None:
        names = set(state.names_with_role(ROLE_MONITORING))
        if not {"prometheus", "alert-receiver"} <= names:
            return None
        return state.service("prometheus").url(), state.service("alert-receiver").url()

    def alert_timing(self, spec: RecommenderSpec) -> tuple[dict[str, float], float]:
        budget = spec.monitoring.delay_budget()
        # An alert of a ratio rule may fire a rate window after the fault's end.
        return budget, sum(budget.values()) + spec.monitoring.rate_window

    def preflight(self, spec: RecommenderSpec, backend: str = "local") -> None:
        """A zoned stack's HAProxy and Redis are installed, a user's edge configuration
        passes ``haproxy -c``, and with monitoring on, Prometheus and Alertmanager are
        installed (locally; the docker image has them) and the rules pass ``promtool``; with
        events on, redis-server is installed and the backup location exists."""
        if spec.events.enabled:
            if backend != "docker":
                redis_binary("the event store is Redis", ", or set stack.events.enabled: false")
            location = spec.events.backup_dir
            if location is not None:
                if not location.is_dir():
                    raise InputError(f"stack.events.backup_dir: {location}: no such folder")
                inside_working_folder(location)
        if spec.monitoring.on:
            from drillkit.stacks.recommender.monitoring import (
                alertmanager_binary,
                check_rules,
                prometheus_binary,
                render_rules,
            )

            if backend != "docker":
                prometheus_binary()
                alertmanager_binary()
            with tempfile.TemporaryDirectory(prefix="drillkit-rules-") as folder:
                rules = Path(folder) / "rules.yml"
                rules.write_text(render_rules(spec.monitoring))
                check_rules(rules)
        if not spec.zoned:
            return
        from drillkit.stacks.recommender.edge import check_config, haproxy_binary

        haproxy_binary()
        if spec.cache.enabled:
            redis_binary()
        if spec.edge.config is not None:
            check_config(spec.edge.config.resolve(), spec.zones)

    def gpu_wanted(self, spec: RecommenderSpec) -> str:
        return spec.gpu

    def plan(
        self, spec: RecommenderSpec, *, data_dir: Path, gpu: bool, progress: Progress
    ) -> StackPlan:
        from drillkit.stacks.recommender.build import ensure_artifacts
        from drillkit.stacks.recommender.gateway import ADMIN_TOKEN_ENV
        from drillkit.stacks.recommender.store import VERIFY_KEY_ENV, ModelStore, verify_key

        data_dir = data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        if spec.store is not None:
            origin = spec.store.resolve()
            if not ModelStore(origin).versions():
                raise BackendUnavailable(f"{origin}: not a model store (no versions/)")
        else:
            progress("model artifacts", -1)
            device = "cuda" if gpu else "cpu"
            cached = ensure_artifacts(spec.catalog, device=device, progress=progress)
            # The stack serves its own copy, so a corrupt_model fault never touches the cache.
            origin = data_dir / "store"
            shutil.copytree(cached.root, origin, ignore=shutil.ignore_patterns(".*"))
        plan_secrets = {ADMIN_TOKEN: secrets.token_hex(16)}
        replica_secrets = {ADMIN_TOKEN_ENV: ADMIN_TOKEN}
        # Replicas and the gateway (its fallback list) verify signed manifests with the public
        # key: no service holds anything that could sign a version.
        verifying: dict[str, str] = {}
        if (public := verify_key()) is not None:
            verifying[VERIFY_KEY_ENV] = public.hex()
        env = dict(verifying)
        if os.environ.get("DRILLKIT_REPLICA_THREADS"):
            env["DRILLKIT_REPLICA_THREADS"] = os.environ["DRILLKIT_REPLICA_THREADS"]

        fallback_args: tuple[Any, ...] = ()
        fallback_mounts: tuple[Mount, ...] = ()
        if spec.gateway.fallback:
            relative = fallback_version(origin).relative_to(origin)
            fallback_args = ("--fallback", MountRef(mount="origin", path=str(relative)))
            fallback_mounts = (Mount(name="origin", source=str(origin), target="/origin"),)

        def replica(name: str, zone: str | None) -> ServicePlan:
            node_store = data_dir / "nodes" / name / "store"
            shutil.copytree(origin, node_store, ignore=shutil.ignore_patterns(".*"))
            cache: tuple[Any, ...] = ()
            depends: tuple[Dependency, ...] = ()
            if zone is not None and spec.cache.enabled:
                redis = f"redis-{zone}"
                cache = (
                    "--cache",
                    UrlRef(service=redis, port=REDIS_PORT_NAME),
                    "--cache-ttl",
                    str(spec.cache.ttl),
                    "--cache-budget",
                    str(spec.cache.budget),
                )
                depends = (Dependency(service=redis, condition="ready"),)
            if spec.events.enabled:
                cache += ("--features", UrlRef(service=ROLE_EVENT_STORE, port=REDIS_PORT_NAME))
                depends += (Dependency(service=ROLE_EVENT_STORE, condition="ready"),)
            return ServicePlan(
                name=name,
                role=ROLE_REPLICA,
                zone=zone,
                program=Program(
                    module="drillkit.stacks.recommender.replica",
                    args=(
                        "--store",
                        MountRef(mount="store"),
                        "--name",
                        name,
                        "--host",
                        BindHost(),
                        "--port",
                        PortRef(),
                        "--device",
                        "cuda" if gpu else "cpu",
                        "--readiness",
                        spec.readiness,
                        *cache,
                    ),
                ),
                env=env,
                secrets=replica_secrets,
                ports=(Port(number=REPLICA_PORT, inherit=True),),
                # Ready once a verified model is loaded (and, with deep readiness, its GPU
                # runs an inference); alive as long as it answers.
                ready=HttpCheck(path="/readyz"),
                live=HttpCheck(path="/healthz"),
                mounts=(Mount(name="store", source=str(node_store), target="/store"),),
                depends_on=depends,
                gpu=True,
            )

        def gateway(name: str, zone: str | None, replicas: list[str]) -> ServicePlan:
            upstreams = [
                arg
                for replica_name in replicas
                for arg in (
                    "--replica",
                    Join(parts=(f"{replica_name}=", UrlRef(service=replica_name))),
                )
            ]
            return ServicePlan(
                name=name,
                role=ROLE_GATEWAY,
                zone=zone,
                program=Program(
                    module="drillkit.stacks.recommender.gateway",
                    args=(
                        "--host",
                        BindHost(),
                        "--port",
                        PortRef(),
                        "--name",
                        name,
                        *fallback_args,
                        *upstreams,
                        *spec.gateway.args(),
                        *events_args,
                    ),
                ),
                ports=(Port(number=GATEWAY_PORT, inherit=True),),
                # Ready while it routes to a replica; alive as long as it answers.
                ready=HttpCheck(path="/readyz"),
                live=HttpCheck(path="/healthz"),
                mounts=fallback_mounts,
                env=verifying,
                # Click events (POST /events) go to the event store.
                # The token of POST /admin/rollout: the split of a gray release.
                secrets=replica_secrets,
                depends_on=(
                    *(Dependency(service=r) for r in replicas),
                    *(
                        (Dependency(service=ROLE_EVENT_STORE, condition="ready"),)
                        if spec.events.enabled
                        else ()
                    ),
                ),
            )

        events_args: tuple[Any, ...] = ()
        services: list[ServicePlan] = []
        links: list[Link] = []
        if spec.events.enabled:
            events_args = ("--events", UrlRef(service=ROLE_EVENT_STORE, port=REDIS_PORT_NAME))
            services.append(event_store_service(spec, data_dir))
        if not spec.zoned:
            replicas = [s.name for s in spec.services() if s.role == ROLE_REPLICA]
            services += [replica(name, None) for name in replicas]
            services.append(gateway("gateway", None, replicas))
            links += [Link(source="gateway", target=name) for name in replicas]
        else:
            services += self._zones(spec, replica, gateway, links, data_dir)
        if spec.events.enabled:
            services.append(backup_service(spec, data_dir, origin))
            services.append(features_service())
        if spec.monitoring.on:
            services += monitoring_services(spec, services, data_dir)
        return StackPlan(
            preset=self.name,
            services=tuple(services),
            links=tuple(links),
            entry=Endpoint(service=spec.entry()),
            secrets=plan_secrets,
            settings={**spec.to_json(), "origin": str(origin)},
            data=str(data_dir),
        )

    def _zones(
        self,
        spec: RecommenderSpec,
        replica: Callable[[str, str | None], ServicePlan],
        gateway: Callable[[str, str | None, list[str]], ServicePlan],
        links: list[Link],
        data_dir: Path,
    ) -> list[ServicePlan]:
        """Each zone's Redis, replicas and gateway, and the HAProxy edge in front of them;
        ``links`` gets every link faults may cut: gateway -> replica, replica -> Redis and
        edge -> gateway."""
        services: list[ServicePlan] = []
        for zone in spec.zones:
            members = [s for s in spec.services() if s.zone == zone]
            replicas = [s.name for s in members if s.role == ROLE_REPLICA]
            if spec.cache.enabled:
                redis = f"redis-{zone}"
                services.append(redis_service(redis, zone))
                links += [Link(source=r, target=redis, port=REDIS_PORT_NAME) for r in replicas]
            services += [replica(name, zone) for name in replicas]
            services.append(gateway(f"gateway-{zone}", zone, replicas))
            links += [Link(source=f"gateway-{zone}", target=name) for name in replicas]
            links.append(Link(source="edge", target=f"gateway-{zone}"))
        edge = spec.edge
        own = edge.config is not None
        workdir = data_dir / "edge"
        workdir.mkdir(parents=True, exist_ok=True)
        mounts: tuple[Mount, ...] = (
            Mount(name="edge", source=str(workdir), target="/edge", read_only=False),
        )
        if edge.config is not None:
            config = edge.config.resolve()  # checked with haproxy -c by plan()
            mounts += (Mount(name="edge-config", source=str(config.parent), target="/edge-config"),)
            settings: tuple[Any, ...] = (
                "--config",
                MountRef(mount="edge-config", path=config.name),
            )
        else:
            settings = (
                "--check-interval",
                str(edge.check_interval),
                "--fall",
                str(edge.fall),
                "--rise",
                str(edge.rise),
                "--retries",
                str(edge.retries),
                "--timeout",
                str(edge.timeout),
                "--mode",
                edge.mode,
                *(() if edge.health_checks else ("--no-health-checks",)),
            )
        zones = [
            arg
            for zone in spec.zones
            for arg in ("--zone", Join(parts=(f"{zone}=", UrlRef(service=f"gateway-{zone}"))))
        ]
        services.append(
            ServicePlan(
                name="edge",
                role=ROLE_EDGE,
                program=Program(
                    module="drillkit.stacks.recommender.edge",
                    args=(
                        "--listen",
                        Join(parts=(BindHost(), ":", PortRef())),
                        "--admin",
                        Join(parts=(BindHost(), ":", PortRef(port=EDGE_ADMIN_PORT_NAME))),
                        *zones,
                        "--workdir",
                        MountRef(mount="edge"),
                        *settings,
                    ),
                ),
                # A user's configuration binds its own listeners from the environment; only
                # drillkit's takes the sockets handed down.
                ports=(
                    Port(number=GATEWAY_PORT, inherit=not own),
                    Port(name=EDGE_ADMIN_PORT_NAME, number=EDGE_ADMIN_PORT, inherit=not own),
                ),
                ready=HttpCheck(path="/stats;csv", port=EDGE_ADMIN_PORT_NAME),
                live=HttpCheck(path="/stats;csv", port=EDGE_ADMIN_PORT_NAME),
                mounts=mounts,
                depends_on=tuple(
                    Dependency(service=f"gateway-{zone}", condition="ready") for zone in spec.zones
                ),
            )
        )
        return services

    def settle(self, state: StackState[Any], backend: Backend[Any], progress: Progress) -> None:
        """The stack is ready for a drill once each gateway routes to every replica of its
        zone and, in a zoned stack, the edge routes to every zone."""
        import httpx

        from drillkit.stacks.recommender.watch import edge_zones

        plan = state.plan
        gateways = {
            gateway.name: {s.name for s in plan.with_role(ROLE_REPLICA) if s.zone == gateway.zone}
            for gateway in plan.with_role(ROLE_GATEWAY)
        }
        edge = plan.with_role(ROLE_EDGE)
        zones = {f"{g.zone}" for g in plan.with_role(ROLE_GATEWAY) if g.zone is not None}
        deadline = time.monotonic() + SETTLE_TIMEOUT
        waiting = "every replica"
        with httpx.Client(timeout=1.0) as client:
            while True:
                for name in [*gateways, *(s.name for s in edge)]:
                    if not backend.service_alive(state, name):
                        raise StackNotReady(f"{name} exited; logs in {state.run_dir}/logs")
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                    for name, want in list(gateways.items()):
                        body = client.get(state.service(name).url() + "/status").json()
                        up = {r["name"] for r in body["replicas"] if r["state"] == "up"}
                        if want <= up:
                            del gateways[name]
                    if not gateways and edge:
                        waiting = "every zone at the edge"
                        url = state.service("edge").url(EDGE_ADMIN_PORT_NAME) + "/stats;csv"
                        seen = edge_zones(client.get(url).text)
                        if {z for z, row in seen.items() if row["state"] == "up"} >= zones:
                            edge = []
                    if not gateways and not edge:
                        progress("routing to " + ("every zone" if zones else waiting), 1.0)
                        return
                if time.monotonic() > deadline:
                    raise StackNotReady(
                        f"the stack was not routing to {waiting} after {SETTLE_TIMEOUT:.0f} s; "
                        f"logs in {state.run_dir}/logs"
                    )
                time.sleep(0.05)

    def workload(self, state: StackState[Any]) -> Workload:
        spec = spec_of(state)
        catalog = spec.catalog.resolved()
        share = spec.events.share if spec.events.enabled else 0.0
        return Workload(users=catalog.users, k=10, items=catalog.items, event_share=share)

    def watch_sources(self, state: StackState[Any]) -> list[WatchSource]:
        from drillkit.stacks.recommender.watch import EdgeStatus, GatewayStatus, ReplicaInfo

        sources: list[WatchSource] = [
            GatewayStatus(state.service(name).url(), name)
            for name in state.names_with_role(ROLE_GATEWAY)
        ]
        caches = set(state.names_with_role(ROLE_CACHE))
        for replica in state.plan.with_role(ROLE_REPLICA):
            cache = f"redis-{replica.zone}"
            url = state.service(replica.name).url()
            sources.append(ReplicaInfo(replica.name, url, cache if cache in caches else None))
        for name in state.names_with_role(ROLE_EDGE):
            sources.append(EdgeStatus(state.service(name).url(EDGE_ADMIN_PORT_NAME)))
        return sources

    def quality_probe(self, seed: int) -> QualityProbe | None:
        return _GoldenUsers(seed)

    def verified_digests(self, state: StackState[Any]) -> frozenset[str]:
        """Digests of every version that verifies in the stack's stores as it comes up."""
        from drillkit.stacks.recommender.store import ModelStore, verify_key

        digests: set[str] = set()
        key = verify_key()
        for root in all_stores(state):
            for check in ModelStore(root).check_all(key=key):
                if check.manifest is not None:
                    digests.add(check.manifest.digest)
        return frozenset(digests)

    def data_census(self, state: StackState[Any], t0: float) -> Any:
        """The events the event store holds (read back whole), the backups the backup
        location holds and the restores the backup service ran (its ``/status``)."""
        if ROLE_EVENT_STORE not in state.services:
            return None
        import httpx
        import redis

        from drillkit.scoring.data import BackupMark, DataCensus, RestoreMark
        from drillkit.stacks.recommender.backup import list_backups
        from drillkit.stacks.recommender.events import stored_events

        client = redis_of(state, ROLE_EVENT_STORE)
        readable = True
        stored: set[tuple[str, int]] = set()
        try:
            stored = {(producer, seq) for producer, seq, _ in stored_events(client)}
        except redis.RedisError:
            readable = False
        finally:
            client.close()
        status: dict[str, Any] = {}
        backup_url = state.service(ROLE_BACKUP).url()
        with contextlib.suppress(httpx.HTTPError):
            # A last backup, so that the backup location holds what the store held at the end.
            headers = {"Authorization": f"Bearer {state.secret(ADMIN_TOKEN)}"}
            httpx.post(backup_url + "/backup", headers=headers, timeout=30.0)
        with contextlib.suppress(httpx.HTTPError, ValueError):
            found = httpx.get(backup_url + "/status", timeout=5.0).json()
            status = found if isinstance(found, dict) else {}
        seen: dict[tuple[str, float], BackupMark] = {}
        for backup in list_backups(Path(state.plan.service(ROLE_BACKUP).mount("backups").source)):
            at = None if backup.newest_event_at is None else backup.newest_event_at - t0
            mark = BackupMark(backup.kind, backup.created_at - t0, backup.entries, at)
            seen[(mark.kind, mark.created_at)] = mark
        for kind, info in (status.get("last") or {}).items():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                mark = BackupMark(str(kind), float(info["created_at"]) - t0, info.get("entries"))
                seen.setdefault((mark.kind, mark.created_at), mark)
        restores = []
        for item in status.get("restores") or []:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                created = item.get("backup_created_at")
                restores.append(
                    RestoreMark(
                        kind=str(item["kind"]),
                        started_at=float(item["started_at"]) - t0,
                        finished_at=float(item["finished_at"]) - t0,
                        backup=str(item["backup"])[:100],
                        backup_created_at=None if created is None else float(created) - t0,
                        carried=item.get("carried"),
                    )
                )
        failures = status.get("failures") or {}
        stale: list[tuple[float, float | None]] = []
        noticed: list[float] = []
        with contextlib.suppress(httpx.HTTPError, ValueError, TypeError, KeyError):
            features = httpx.get(state.service(ROLE_FEATURES).url() + "/status", timeout=5.0)
            for began, ended, spotted in features.json()["stale"][:1000]:
                stale.append((float(began) - t0, None if ended is None else float(ended) - t0))
                noticed.append(float(spotted) - t0)
        return DataCensus(
            stored=frozenset(stored),
            backups=tuple(sorted(seen.values(), key=lambda b: b.created_at)),
            restores=tuple(restores),
            backup_failures=sum(int(v) for v in failures.values() if isinstance(v, int)),
            readable=readable,
            stale=tuple(stale),
            stale_noticed=tuple(noticed),
        )

    def extra_targets(self, state: StackState[Any]) -> dict[str, str]:
        zones = {s.zone for s in state.plan.services if s.zone is not None}
        return {ROLE_MODEL_STORE: ROLE_MODEL_STORE, **{f"zone-{z}": ROLE_ZONE for z in zones}}

    def describe(self, state: StackState[Any]) -> dict[str, Any]:
        from drillkit.stacks.recommender.store import ModelStore

        origin = origin_store(state)
        out: dict[str, Any] = {
            "store": str(origin),
            "stores": {
                name: str(replica_store(state, name))
                for name in state.names_with_role(ROLE_REPLICA)
            },
            "current_version": ModelStore(origin).current(),
        }
        if state.names_with_role(ROLE_EDGE):
            out["zones"] = describe_zones(state)
        from drillkit.errors import StateError
        from drillkit.stacks.recommender.rollout import read_rollout

        with contextlib.suppress(StateError):
            rollout = read_rollout(state)
            if rollout is not None:
                out["rollout"] = {
                    key: rollout.get(key)
                    for key in ("version", "stable", "status", "weight", "canary", "verdict")
                }
        return out


def describe_zones(state: StackState[Any], *, timeout: float = 1.0) -> list[dict[str, Any]]:
    """Each zone as ``stack status`` shows it: the edge's view of it (HAProxy's stats), its
    Redis (answering, how many keys) and its replicas' cache hit ratio since they started."""
    import httpx
    import redis

    from drillkit.stacks.recommender.watch import edge_zones

    zones = sorted({s.zone for s in state.plan.services if s.zone is not None})
    edge: dict[str, dict[str, str]] = {}
    with httpx.Client(timeout=timeout) as client:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            url = state.service("edge").url(EDGE_ADMIN_PORT_NAME) + "/stats;csv"
            edge = edge_zones(client.get(url).text)
        out = []
        for zone in zones:
            seen = edge.get(zone, {})
            row: dict[str, Any] = {
                "zone": zone,
                "edge_state": seen.get("state"),
                "edge_status": seen.get("status"),
                "edge_check": seen.get("check"),
                "redis": None,
                "keys": None,
                "hit_ratio": None,
            }
            name = f"redis-{zone}"
            if name in state.services:
                client_redis = redis_of(state, name, timeout=timeout)
                try:
                    row["keys"] = int(client_redis.dbsize())
                    row["redis"] = "up"
                except redis.RedisError:
                    row["redis"] = "down"
                finally:
                    client_redis.close()
            hits = lookups = 0
            for replica in state.plan.with_role(ROLE_REPLICA):
                if replica.zone != zone:
                    continue
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                    cache = client.get(state.service(replica.name).url() + "/info").json()["cache"]
                    hits += int(cache["hit"])
                    lookups += int(cache["hit"]) + int(cache["miss"]) + int(cache["bypass"])
            row["hit_ratio"] = hits / lookups if lookups else None
            out.append(row)
    return out


def monitoring_services(
    spec: RecommenderSpec, services: list[ServicePlan], data_dir: Path
) -> list[ServicePlan]:
    """The webhook receiver, Alertmanager and Prometheus, scraping ``services`` (every HTTP
    service of the stack: replicas, gateways, the edge's admin listener) and the monitoring
    services themselves."""
    from drillkit.stacks.recommender.monitoring import render_rules

    settings = spec.monitoring
    root = data_dir / "monitoring"
    for folder in ("rules", "prometheus", "alertmanager"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "rules" / "rules.yml").write_text(render_rules(settings))
    # The whole timing as one argument: a new setting needs no flag of its own.
    timing = ("--settings", json.dumps(dataclasses.asdict(settings), sort_keys=True))

    def listen(port: str = "http") -> Join:
        return Join(parts=(BindHost(), ":", PortRef(port=port)))

    def target(service: str, role: str, zone: str | None, port: str = "http") -> Join:
        head = f"drillkit-{role}/{service}" + (f"/{zone}" if zone else "") + "="
        return Join(parts=(head, UrlRef(service=service, port=port, path="/metrics")))

    targets: list[Any] = []
    for service in services:
        if service.role in (ROLE_CACHE, ROLE_EVENT_STORE):
            continue  # Redis speaks no HTTP; its clients' counters show it down
        port = EDGE_ADMIN_PORT_NAME if service.role == ROLE_EDGE else "http"
        targets += ["--target", target(service.name, service.role, service.zone, port)]
    for name in MONITORING_SERVICES:
        targets += ["--target", target(name, ROLE_MONITORING, None)]
    module = "drillkit.stacks.recommender.monitoring"
    return [
        ServicePlan(
            name="alert-receiver",
            role=ROLE_MONITORING,
            program=Program(
                module="drillkit.stacks.recommender.alert_receiver",
                args=("--host", BindHost(), "--port", PortRef()),
            ),
            ports=(Port(number=RECEIVER_PORT, inherit=True),),
            ready=HttpCheck(path="/healthz"),
            live=HttpCheck(path="/healthz"),
        ),
        ServicePlan(
            name="alertmanager",
            role=ROLE_MONITORING,
            program=Program(
                module=module,
                args=(
                    "alertmanager",
                    "--listen",
                    listen(),
                    "--workdir",
                    MountRef(mount="work"),
                    "--webhook",
                    UrlRef(service="alert-receiver", path="/alerts"),
                    *timing,
                ),
            ),
            ports=(Port(number=ALERTMANAGER_PORT),),
            ready=HttpCheck(path="/-/ready"),
            live=HttpCheck(path="/-/healthy"),
            mounts=(
                Mount(
                    name="work", source=str(root / "alertmanager"), target="/am", read_only=False
                ),
            ),
            depends_on=(Dependency(service="alert-receiver", condition="ready"),),
        ),
        ServicePlan(
            name="prometheus",
            role=ROLE_MONITORING,
            program=Program(
                module=module,
                args=(
                    "prometheus",
                    "--listen",
                    listen(),
                    "--workdir",
                    MountRef(mount="work"),
                    "--rules",
                    MountRef(mount="rules", path="rules.yml"),
                    "--alertmanager",
                    UrlRef(service="alertmanager"),
                    *targets,
                    *timing,
                ),
            ),
            ports=(Port(number=PROMETHEUS_PORT),),
            ready=HttpCheck(path="/-/ready"),
            live=HttpCheck(path="/-/healthy"),
            mounts=(
                Mount(
                    name="work", source=str(root / "prometheus"), target="/prom", read_only=False
                ),
                Mount(name="rules", source=str(root / "rules"), target="/prom-rules"),
            ),
            depends_on=(Dependency(service="alertmanager", condition="ready"),),
        ),
    ]


def redis_binary(
    why: str = "a zoned stack's cache tier is Redis", instead: str = ", or set cache.enabled: false"
) -> str:
    """redis-server's path; exit 3 naming the package when it is not installed."""
    from drillkit.stacks.recommender.edge import required_program

    return required_program("redis-server", why, "redis-server", instead)


#: redis-server's options: a cache only (nothing saved to disk), bounded memory, least
#: recently used keys evicted first.
_REDIS_OPTIONS = (
    "--protected-mode", "no",
    "--save", "",
    "--appendonly", "no",
    "--maxmemory", REDIS_MAXMEMORY,
    "--maxmemory-policy", "allkeys-lru",
    "--loglevel", "warning",
)  # fmt: skip


def redis_service(name: str, zone: str) -> ServicePlan:
    """A zone's Redis, listening for its replicas."""
    return ServicePlan(
        name=name,
        role=ROLE_CACHE,
        zone=zone,
        program=Program(
            # redis-server under a parent that keeps the stack's mark (see the module).
            module="drillkit.stacks.recommender.redis_server",
            args=("--port", PortRef(port=REDIS_PORT_NAME), "--bind", BindHost(), *_REDIS_OPTIONS),
        ),
        ports=(Port(name=REDIS_PORT_NAME, number=REDIS_PORT),),
        ready=TcpCheck(port=REDIS_PORT_NAME),
    )


def event_store_service(spec: RecommenderSpec, data_dir: Path) -> ServicePlan:
    """The Redis that holds the click-event stream, in its own append-only file."""
    from drillkit.stacks.recommender.events import event_store_options

    folder = data_dir / ROLE_EVENT_STORE
    folder.mkdir(parents=True, exist_ok=True)
    return ServicePlan(
        name=ROLE_EVENT_STORE,
        role=ROLE_EVENT_STORE,
        program=Program(
            module="drillkit.stacks.recommender.redis_server",
            args=(
                "--port",
                PortRef(port=REDIS_PORT_NAME),
                "--bind",
                BindHost(),
                "--dir",
                MountRef(mount="data"),
                *event_store_options(spec.events.appendfsync),
            ),
        ),
        ports=(Port(name=REDIS_PORT_NAME, number=REDIS_PORT),),
        ready=TcpCheck(port=REDIS_PORT_NAME),
        mounts=(Mount(name="data", source=str(folder), target="/data", read_only=False),),
    )


def backup_location(spec: RecommenderSpec, data_dir: Path) -> Path:
    """Where the backup service writes: the scenario's ``events.backup_dir``, or the stack's
    own folder."""
    if spec.events.backup_dir is not None:
        return inside_working_folder(spec.events.backup_dir)
    folder = data_dir / "backups"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def inside_working_folder(path: Path) -> Path:
    """``path`` resolved, once it is inside the working folder resolved too: a scenario may
    name a folder there and nothing else, not through a link either (the backup service
    writes and prunes there as root)."""
    resolved = path.resolve()
    if not resolved.is_relative_to(Path.cwd().resolve()):
        raise InputError(
            f"stack.events.backup_dir: {path} leads out of the working folder (to {resolved})"
        )
    return resolved


def backup_service(spec: RecommenderSpec, data_dir: Path, origin: Path) -> ServicePlan:
    """The backup service: snapshots of the event store and the model store ``origin``."""
    from drillkit.stacks.recommender.gateway import ADMIN_TOKEN_ENV

    backups = backup_location(spec, data_dir)
    return ServicePlan(
        name=ROLE_BACKUP,
        role=ROLE_BACKUP,
        program=Program(
            module="drillkit.stacks.recommender.backup",
            args=(
                "--host",
                BindHost(),
                "--port",
                PortRef(),
                "--events",
                UrlRef(service=ROLE_EVENT_STORE, port=REDIS_PORT_NAME),
                "--models",
                MountRef(mount="models"),
                "--backups",
                MountRef(mount="backups"),
                "--interval",
                str(spec.events.backup_interval),
                "--keep",
                str(spec.events.backup_keep),
                "--store-id",
                secrets.token_hex(8),
            ),
        ),
        ports=(Port(number=BACKUP_PORT, inherit=True),),
        ready=HttpCheck(path="/healthz"),
        live=HttpCheck(path="/healthz"),
        # The token of POST /backup: a backup taken now (a drill's last, before it ends).
        secrets={ADMIN_TOKEN_ENV: ADMIN_TOKEN},
        mounts=(
            Mount(name="backups", source=str(backups), target="/backups", read_only=False),
            Mount(name="models", source=str(origin), target="/models", read_only=False),
        ),
        depends_on=(Dependency(service=ROLE_EVENT_STORE, condition="ready"),),
    )


def features_service() -> ServicePlan:
    """The feature updater: the event stream into users' recent-activity lists."""
    return ServicePlan(
        name=ROLE_FEATURES,
        role=ROLE_FEATURES,
        program=Program(
            module="drillkit.stacks.recommender.features",
            args=(
                "--host",
                BindHost(),
                "--port",
                PortRef(),
                "--events",
                UrlRef(service=ROLE_EVENT_STORE, port=REDIS_PORT_NAME),
            ),
        ),
        ports=(Port(number=FEATURES_PORT, inherit=True),),
        ready=HttpCheck(path="/healthz"),
        live=HttpCheck(path="/healthz"),
        depends_on=(Dependency(service=ROLE_EVENT_STORE, condition="ready"),),
    )


class _GoldenUsers:
    """The drill's quality probe: golden users through the gateway, scored against what a
    replica serving the verified model answers them during warmup."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.probe: Any = None

    def prepare(self, state: Any) -> None:
        from drillkit.stacks.recommender.quality import GoldenUserProbe
        from drillkit.stacks.recommender.store import ModelStore

        store = ModelStore(origin_store(state))
        current = store.current()
        if current is None:
            return
        reference = state.service(state.names_with_role(ROLE_REPLICA)[0]).url()
        self.probe = GoldenUserProbe(
            state.entry_url, store.version_dir(current), seed=self.seed, reference_url=reference
        )
        self.probe.learn_reference()

    def start(self) -> None:
        if self.probe is not None:
            self.probe.start()

    def stop(self) -> None:
        if self.probe is not None:
            self.probe.stop()

    def samples(self) -> list[tuple[float, float]]:
        return list(self.probe.samples()) if self.probe is not None else []


# -- the stack's model stores, for fault kinds and commands -------------------------------------
def spec_of(state: StackState[Any]) -> RecommenderSpec:
    if state.plan.preset != RecommenderPreset.name:
        raise EnvironmentFailure(f"stack {state.id} is not a recommender stack")
    return RecommenderSpec.from_json(state.plan.settings)


def origin_store(state: StackState[Any]) -> Path:
    """The store the stack was made from (the gateway's fallback list comes from it)."""
    return Path(str(state.plan.settings["origin"]))


def replica_store(state: StackState[Any], replica: str) -> Path:
    """The copy of the store replica ``replica`` serves, on the host."""
    return Path(state.plan.service(replica).mount("store").source)


def all_stores(state: StackState[Any]) -> list[Path]:
    """The origin store and every replica's copy."""
    replicas = state.names_with_role(ROLE_REPLICA)
    return [origin_store(state), *(replica_store(state, name) for name in replicas)]


def admin_post(
    state: StackState[Any],
    replica: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """POST to one of a replica's token-protected admin endpoints (``/admin/reload``,
    ``/admin/gpu``) with the plan's admin token; its JSON answer, or EnvironmentFailure."""
    import httpx

    headers = {"Authorization": f"Bearer {state.secret(ADMIN_TOKEN)}"}
    url = state.service(replica).url() + path
    try:
        response = httpx.post(url, headers=headers, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        raise EnvironmentFailure(f"{replica}: POST {path} failed: {exc}") from exc
    if response.status_code != 200:
        raise EnvironmentFailure(
            f"{replica}: POST {path} answered {response.status_code}: {response.text[:200]}"
        )
    result: dict[str, Any] = response.json()
    return result


def admin_reload(state: StackState[Any], replica: str) -> dict[str, Any]:
    """Ask a replica to re-verify and reload CURRENT now (token-protected endpoint)."""
    return admin_post(state, replica, "/admin/reload")


def redis_of(state: StackState[Any], service: str, *, timeout: float = 10.0) -> Any:
    """A ``redis.Redis`` reaching one of the stack's Redis services (a zone's cache, the event
    store) from the host, through its published port."""
    import redis

    port = state.service(service).ports[REDIS_PORT_NAME]
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=timeout)


def fallback_version(store_root: Path) -> Path:
    """The newest servable version's folder: the gateway's degraded answer is its
    popular.json, which the gateway verifies against that version's manifest."""
    from drillkit.stacks.recommender.store import ModelStore, verify_key, verify_version

    store = ModelStore(store_root)
    key = verify_key()
    for version in store.serving_candidates():
        folder = store.version_dir(version)
        with contextlib.suppress(ArtifactError):
            verify_version(folder, key=key)
            return folder
    raise StackNotReady(f"{store_root}: no model version verifies; cannot start the gateway")
