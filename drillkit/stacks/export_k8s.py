"""A stack's plan as Kubernetes manifests: ``drillkit stack export --k8s DIR``.

The manifests run what the docker backend runs, container for container
(:func:`~drillkit.backends.docker.container_spec`: the same image, arguments, environment and
user), in a namespace of their own, for the Kubernetes 1.31+ API. ``docs/kubernetes.md`` is
the design; in short, every plan service becomes

* a **Deployment** of one pod, or a **StatefulSet** of one when it has a read-write mount
  that no other service shares (its files must outlive the pod, as a bind mount outlives a
  container), and a **Service** of the same name, so the arguments the docker backend
  resolves (``http://replica-1:8000``) reach it unchanged;
* **probes** from the plan: readiness from ``ready``, liveness (behind a startup probe that
  allows the docker healthcheck's start period) from ``live``, the timing of the docker
  healthcheck (:class:`~drillkit.backends.docker.HealthSpec`);
* an **init container** that waits for the dependencies the plan says must be *ready*, and
  one that copies what the preset prepared (each replica's model store) from the *data image*
  into the pod's volumes;
* a **security context** that passes Pod Security's ``restricted`` level: not root (the
  docker backend's user, or the image's own when that is root), no privilege escalation, every
  capability dropped, the runtime's seccomp profile, a read-only root filesystem with an
  ``emptyDir`` at ``/tmp`` for services of drillkit's stack image.

Each mount's files get there by what they are: a small read-only folder of text files (the
monitoring's rules) is a **ConfigMap**; a read-only folder with more in it (a replica's copy of
the model store) is an ``emptyDir`` filled at every pod start from the data image; a
read-write folder is a **PersistentVolumeClaim** (from the StatefulSet's claim template; a
standalone ReadWriteMany claim when several services share it), filled from the data image
the first time only. The data image is built from ``DIR/data`` by ``DIR/data.Dockerfile``
``FROM`` the stack image; identical folders are stored once.

Secrets are **Secret** objects, mounted read-only (mode 0400) at
:data:`~drillkit.backends.docker.SECRETS_MOUNT` where the docker backend mounts them, never
in an environment. **NetworkPolicies** deny everything, then allow each route the plan
implies (its links, the references in arguments, the dependencies waited on) one policy per
route, so cutting a link is deleting one object. **PodDisruptionBudgets** keep all but one
of the services a link source balances over (a gateway's replicas, the edge's zone gateways)
up through voluntary disruptions. The drill's own **ServiceAccount**, **Role** and
**RoleBinding** grant the least a drill needs (:func:`drill_rules`); the cluster-wide rights a
node fault needs are in ``cluster/node-faults.yaml``, which ``kustomization.yaml`` leaves out.

Everything is written into a temporary folder next to ``DIR`` and renamed at the end, like
``export --compose``: a failed export leaves nothing half-written behind.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from drillkit import __version__
from drillkit.backends.base import Progress
from drillkit.backends.docker import (
    LABEL_ROLE,
    LABEL_SERVICE,
    LABEL_STACK,
    LABEL_TARGET,
    SECRETS_MOUNT,
    STOP_GRACE,
    ContainerSpec,
    HealthSpec,
)
from drillkit.errors import InputError
from drillkit.fsutil import atomic_write
from drillkit.stacks.base import StackPreset
from drillkit.stacks.export_common import check_target, docker_spec, docker_view, literal, staged
from drillkit.stacks.plan import HttpCheck, Join, Readiness, ServicePlan, StackPlan, UrlRef

__all__ = [
    "DATA_DOCKERFILE",
    "KUBERNETES_VERSION",
    "KUSTOMIZATION",
    "LABEL_ZONE",
    "NAMESPACE_PATTERN",
    "NODE_FAULTS",
    "RULE_REASONS",
    "K8sExport",
    "Manifests",
    "Route",
    "drill_rules",
    "export_k8s",
    "kubernetes_manifests",
    "routes",
    "run_as",
]

#: The oldest Kubernetes API the manifests are written for (the tests validate them against
#: this one's schemas and the newest the validator ships).
KUBERNETES_VERSION = "1.31"
#: Namespaces drillkit writes to are its own: the prefix shows it, and the guard keys on it.
NAMESPACE_PATTERN = r"drillkit-[a-z0-9]([-a-z0-9]{0,52}[a-z0-9])?"
LABEL_ZONE = "drillkit.zone"
KUSTOMIZATION = "kustomization.yaml"
#: Cluster-wide rights for node faults: left out of the kustomization, applied on purpose.
NODE_FAULTS = "cluster/node-faults.yaml"
DATA = "data"
DATA_DOCKERFILE = "data.Dockerfile"
SECRETS = "secrets.yaml"
#: Where the data image holds what the pods' volumes start from.
DATA_ROOT = "/opt/drillkit-data"
#: The name of the drill's ServiceAccount, Role and RoleBinding.
DRILL = "drillkit-drill"
#: The image's own user (the Dockerfile's USER), when the docker backend's would be root.
IMAGE_USER = (65534, 65534)
#: A PersistentVolumeClaim's files live one folder down, so the service never sees the
#: filesystem's own entries (ext4's lost+found) and a first fill can be renamed into place.
CLAIM_SUBPATH = "data"
#: ConfigMaps hold at most 1 MiB; a folder well under that, of plain files, is configuration.
CONFIG_MAP_MAX = 256 << 10
_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_IANA_PORT_NAME = re.compile(r"(?=.*[a-z])(?!.*--)[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?")
_MIB = 1 << 20
_GIB = 1 << 30
#: Volumes of drillkit's own in every pod: not plan mount names.
_TMP = "drillkit-tmp"
_SECRETS = "drillkit-secrets"

Files = dict[str, list[dict[str, Any]]]


# -- what the plan implies --------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Route:
    """Traffic the stack needs: ``source`` reaches ``target`` on ``ports`` (container port
    numbers). ``link`` when the plan declares it as a :class:`~drillkit.stacks.plan.Link`:
    what a network fault cuts, so its NetworkPolicy is one the drill may delete."""

    source: str
    target: str
    ports: tuple[int, ...]
    link: bool

    @property
    def policy(self) -> str:
        # Service names hold no dot: source.target is unambiguous, as Link.name is.
        return f"{'link' if self.link else 'route'}.{self.source}.{self.target}"


def routes(plan: StackPlan) -> list[Route]:
    """Every route of ``plan``: its links, each URL one service's arguments name another by,
    and each dependency a service waits on (the init container checks it)."""
    found: dict[tuple[str, str], set[int]] = defaultdict(set)
    links = {(link.source, link.target) for link in plan.links}
    for link in plan.links:
        found[link.source, link.target].add(plan.service(link.target).port(link.port).number)
    for service in plan.services:
        for arg in service.program.args:
            for part in arg.parts if isinstance(arg, Join) else (arg,):
                if isinstance(part, UrlRef):
                    number = plan.service(part.service).port(part.port).number
                    found[service.name, part.service].add(number)
        for dep in service.depends_on:
            if dep.condition == "ready" and (ready := _ready_port(plan.service(dep.service))):
                found[service.name, dep.service].add(ready)
    return sorted(
        Route(source, target, tuple(sorted(ports)), (source, target) in links)
        for (source, target), ports in found.items()
    )


def _ready_port(service: ServicePlan) -> int | None:
    if service.ready is not None:
        return service.port(service.ready.port).number
    return service.ports[0].number if service.ports else None


def pools(plan: StackPlan) -> dict[str, list[str]]:
    """The services one link source balances over, by source: two or more link targets of
    the same role (a gateway's replicas, the edge's zone gateways)."""
    out: dict[str, list[str]] = {}
    for source in sorted({link.source for link in plan.links}):
        by_role: dict[str, list[str]] = defaultdict(list)
        for link in plan.links:
            if link.source == source:
                by_role[plan.service(link.target).role].append(link.target)
        for role, members in sorted(by_role.items()):
            if len(members) >= 2:
                name = source if len(by_role) == 1 else f"{source}.{role}"
                out[name] = sorted(set(members))
    return out


def run_as(user: str | None) -> tuple[int, int] | None:
    """The pod's uid and gid: the docker backend's ``uid:gid`` unless that is root, then the
    stack image's own non-root user; None for an image of another's (its own user)."""
    if user is None:
        return None
    uid, _, gid = user.partition(":")
    ids = (int(uid), int(gid or uid))
    return IMAGE_USER if ids[0] == 0 else ids


# -- the mounts' files ------------------------------------------------------------------------
VolumeKind = Literal["configMap", "emptyDir", "claimTemplate", "claim"]


@dataclass
class _Source:
    """A mount source folder and how its files reach the pods that mount it."""

    path: Path
    relative: str
    users: list[tuple[str, str, bool]]  # (service, mount, read_only)
    kind: VolumeKind = "emptyDir"
    size: int = 0
    digest: str | None = None  # of the files, None when there are none
    seed: str | None = None  # the folder under DATA it is filled from
    files: dict[str, bytes] = field(default_factory=dict)  # a ConfigMap's

    @property
    def name(self) -> str:
        """The ConfigMap's or standalone claim's name: the folder, as a name."""
        return re.sub(r"[^a-z0-9-]+", "-", self.relative.lower()).strip("-")[:63] or "data"


def _tree(path: Path) -> tuple[str | None, int]:
    """A digest of every folder and file under ``path`` (names and bytes) and their size;
    None for an empty folder."""
    digest = hashlib.sha256()
    size = 0
    items = sorted(path.rglob("*"))
    for item in items:
        if item.is_symlink():
            raise InputError(f"{item}: a link in a mounted folder cannot be exported")
        name = item.relative_to(path).as_posix()
        if item.is_file():
            data = item.read_bytes()
            size += len(data)
            digest.update(b"f\0" + name.encode() + b"\0" + hashlib.sha256(data).digest())
        else:
            digest.update(b"d\0" + name.encode() + b"\0")
    return (digest.hexdigest() if items else None), size


def _config_files(path: Path, size: int) -> dict[str, bytes] | None:
    """A folder's files when it fits a ConfigMap: plain files only, no subfolder, names a
    ConfigMap key allows, well under its size limit."""
    entries = list(path.iterdir())
    if size > CONFIG_MAP_MAX or not entries:
        return None
    if not all(e.is_file() and _KEY.fullmatch(e.name) for e in entries):
        return None
    return {e.name: e.read_bytes() for e in sorted(entries)}


def _sources(plan: StackPlan, data_dir: Path) -> dict[str, _Source]:
    users: dict[str, list[tuple[str, str, bool]]] = defaultdict(list)
    for service in plan.services:
        for mount in service.mounts:
            users[mount.source].append((service.name, mount.name, mount.read_only))
    sources: dict[str, _Source] = {}
    for path, mounted in users.items():
        folder = Path(path).resolve()
        if not folder.is_relative_to(data_dir) or not folder.is_dir():
            user, name, _ = mounted[0]
            raise InputError(
                f"service {user}, mount {name}: {path} is not a folder the stack's preset "
                "prepared; a Kubernetes export carries only those (its data image)"
            )
        source = _Source(folder, folder.relative_to(data_dir).as_posix(), mounted)
        source.digest, source.size = _tree(folder)
        written = not all(read_only for _, _, read_only in mounted)
        shared = len({service for service, _, _ in mounted}) > 1
        if written:
            source.kind = "claim" if shared else "claimTemplate"
        elif source.digest is not None and (files := _config_files(folder, source.size)):
            source.kind, source.files = "configMap", files
        sources[path] = source
    named: dict[tuple[VolumeKind, str], str] = {}
    for path, source in sources.items():
        if source.kind not in ("configMap", "claim"):
            continue
        if (clash := named.setdefault((source.kind, source.name), path)) != path:
            raise InputError(f"{path} and {clash} would both be {source.kind} {source.name}")
    # The data image holds each distinct folder once, under its shortest name.
    by_digest: dict[str, list[_Source]] = defaultdict(list)
    for source in sources.values():
        if source.digest is not None and source.kind != "configMap":
            by_digest[source.digest].append(source)
    for same in by_digest.values():
        seed = min(same, key=lambda s: (len(s.relative), s.relative)).relative
        for source in same:
            source.seed = seed
    return sources


def _storage(size: int, *, floor: int, factor: int, unit: int) -> str:
    """Room for ``factor`` times ``size`` bytes, at least ``floor``, in whole ``unit``s."""
    amount = max(floor, factor * size)
    return f"{math.ceil(amount / unit)}{'Gi' if unit == _GIB else 'Mi'}"


# -- pods -------------------------------------------------------------------------------------
_RESOURCES = {
    # Model servers (services that may use a GPU) hold torch, the model and its index.
    True: {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    False: {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
}
_INIT_RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}

#: Waits for each dependency the plan says must be ready: its readiness URL answering 200, or
#: its port accepting a connection. Kubernetes starts every pod at once; this keeps the
#: docker backend's order.
_WAIT = """\
import json, socket, sys, time, urllib.request
for host, port, path in json.loads(sys.argv[1]):
    while True:
        try:
            if path is None:
                socket.create_connection((host, port), timeout=2).close()
            elif urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2).status != 200:
                raise OSError("not ready")
            break
        except OSError:
            time.sleep(1)
"""


def _container_security(*, read_only_root: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    if read_only_root:
        out["readOnlyRootFilesystem"] = True
    return out


def _probe(check: Readiness, service: ServicePlan, timing: HealthSpec, failures: int) -> Any:
    port = service.port(check.port).number
    handler: dict[str, Any] = (
        {"httpGet": {"path": check.path, "port": port}}
        if isinstance(check, HttpCheck)
        else {"tcpSocket": {"port": port}}
    )
    return handler | {
        "periodSeconds": timing.interval,
        "timeoutSeconds": timing.timeout,
        "failureThreshold": failures,
    }


def _probes(service: ServicePlan, container: ContainerSpec) -> dict[str, Any]:
    """Readiness from ``ready``; liveness from ``live``, after a startup probe that allows
    the docker healthcheck's start period (a replica loading torch and its model)."""
    timing = container.healthcheck or HealthSpec(test=())
    out: dict[str, Any] = {}
    if service.live is not None:
        start = max(1, math.ceil(timing.start_period / timing.interval))
        out["startupProbe"] = _probe(service.live, service, timing, start)
        out["livenessProbe"] = _probe(service.live, service, timing, timing.retries)
    if service.ready is not None:
        out["readinessProbe"] = _probe(service.ready, service, timing, timing.retries)
    return out


def _seed_script(targets: list[tuple[_Source, str]]) -> str:
    """Copy each seed into its volume: an ``emptyDir`` every time (it is new with the pod), a
    claim once (it keeps what the service wrote), into a fresh folder renamed into place so
    that two pods filling one shared claim cannot mix their copies."""
    lines = ["set -eu"]
    for source, volume in targets:
        origin = f"{DATA_ROOT}/{source.seed}/."
        mount = f"/seed/{volume}"
        if source.kind == "emptyDir":
            lines.append(f"cp -R {origin} {mount}/")
            continue
        final = f"{mount}/{CLAIM_SUBPATH}"
        lines += [
            f"if [ ! -e {final} ]; then",
            f'  t="$(mktemp -d {mount}/.seed.XXXXXX)"',
            f'  cp -R {origin} "$t"/',
            f'  mv -T "$t" {final} 2>/dev/null || rm -rf "$t"',
            "fi",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Context:
    plan: StackPlan
    namespace: str
    stack_image: str
    data_image: str
    specs: dict[str, ContainerSpec]
    sources: dict[str, _Source]

    def labels(self, service: ServicePlan) -> dict[str, str]:
        labels = {
            "app.kubernetes.io/name": service.name,
            "app.kubernetes.io/instance": self.namespace,
            "app.kubernetes.io/component": service.role,
            "app.kubernetes.io/part-of": f"drillkit-{self.plan.preset}",
            "app.kubernetes.io/managed-by": "drillkit",
            LABEL_STACK: self.namespace,
            LABEL_SERVICE: service.name,
            LABEL_ROLE: service.role,
        }
        if service.zone is not None:
            labels[LABEL_ZONE] = service.zone
        if service.target:
            labels[LABEL_TARGET] = "true"
        return labels

    def selector(self, name: str) -> dict[str, str]:
        return {"app.kubernetes.io/instance": self.namespace, "app.kubernetes.io/name": name}

    def meta(self, name: str, **labels: str) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": {"app.kubernetes.io/managed-by": "drillkit", **labels},
        }

    def own_image(self, service: ServicePlan) -> bool:
        return self.specs[service.name].image == self.stack_image


def _pod(ctx: _Context, service: ServicePlan) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The pod template of ``service`` and the claim templates its StatefulSet needs."""
    container = ctx.specs[service.name]
    own = ctx.own_image(service)
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    claims: list[dict[str, Any]] = []
    seeds: list[tuple[_Source, str]] = []
    for mount in sorted(service.mounts, key=lambda m: m.target):
        source = ctx.sources[mount.source]
        entry: dict[str, Any] = {"name": mount.name, "mountPath": mount.target}
        if mount.read_only:
            entry["readOnly"] = True
        if source.kind == "configMap":
            volumes.append(
                {"name": mount.name, "configMap": {"name": source.name, "defaultMode": 0o444}}
            )
        elif source.kind == "emptyDir":
            room = _storage(source.size, floor=64 * _MIB, factor=2, unit=_MIB)
            volumes.append({"name": mount.name, "emptyDir": {"sizeLimit": room}})
        elif source.kind == "claim":
            claim = {"claimName": source.name}
            volumes.append({"name": mount.name, "persistentVolumeClaim": claim})
            entry["subPath"] = CLAIM_SUBPATH
        else:
            room = _storage(source.size, floor=_GIB, factor=4, unit=_GIB)
            claims.append(
                {
                    "metadata": {"name": mount.name},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": room}},
                    },
                }
            )
            entry["subPath"] = CLAIM_SUBPATH
        mounts.append(entry)
        if source.seed is not None:
            seeds.append((source, mount.name))
    secrets = sorted(set(service.secrets.values()))
    if secrets:
        projected = [
            {"secret": {"name": name, "items": [{"key": name, "path": name}]}} for name in secrets
        ]
        volumes.append(
            {"name": _SECRETS, "projected": {"sources": projected, "defaultMode": 0o400}}
        )
        mounts.append({"name": _SECRETS, "mountPath": SECRETS_MOUNT, "readOnly": True})
    if own:
        volumes.append({"name": _TMP, "emptyDir": {"sizeLimit": "256Mi"}})
        mounts.append({"name": _TMP, "mountPath": "/tmp"})
    main: dict[str, Any] = {
        "name": service.name,
        "image": container.image,
        "imagePullPolicy": "IfNotPresent",
        "args": [literal(arg) for arg in container.command],
        "env": [
            {"name": key, "value": literal(value)}
            for key, value in sorted(container.environment.items())
        ],
    }
    if service.ports:
        main["ports"] = [
            {"containerPort": port.number, "protocol": "TCP"}
            | ({"name": port.name} if _IANA_PORT_NAME.fullmatch(port.name) else {})
            for port in service.ports
        ]
    main |= _probes(service, container)
    main["resources"] = _RESOURCES[service.gpu]
    main["securityContext"] = _container_security(read_only_root=own)
    if mounts:
        main["volumeMounts"] = mounts
    init: list[dict[str, Any]] = []
    if seeds:
        init.append(
            {
                "name": "seed",
                "image": ctx.data_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", literal(_seed_script(seeds))],
                "resources": _INIT_RESOURCES,
                "securityContext": _container_security(read_only_root=True),
                "volumeMounts": [
                    {"name": volume, "mountPath": f"/seed/{volume}"} for _, volume in seeds
                ],
            }
        )
    waits = [
        _wait_target(ctx.plan.service(dep.service))
        for dep in service.depends_on
        if dep.condition == "ready"
    ]
    if any(waits):
        init.append(
            {
                "name": "wait",
                "image": ctx.stack_image,
                "imagePullPolicy": "IfNotPresent",
                "command": [
                    "python3",
                    "-c",
                    literal(_WAIT),
                    literal(json.dumps([w for w in waits if w])),
                ],
                "resources": _INIT_RESOURCES,
                "securityContext": _container_security(read_only_root=True),
            }
        )
    user = run_as(container.user)
    security: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if user is not None:
        security |= {
            "runAsUser": user[0],
            "runAsGroup": user[1],
            # Volumes (claims, Secret files) are made readable and writable by this group.
            "fsGroup": user[1],
            "fsGroupChangePolicy": "OnRootMismatch",
        }
    spec: dict[str, Any] = {
        # The stack's pods never call the Kubernetes API: no token in them.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # The pause container is PID 1, so an ephemeral container can signal the service
        # (SIGSTOP for pause_node): the kernel ignores SIGSTOP sent to a namespace's init.
        "shareProcessNamespace": True,
        "terminationGracePeriodSeconds": STOP_GRACE,
        "securityContext": security,
    }
    if init:
        spec["initContainers"] = init
    spec["containers"] = [main]
    if volumes:
        spec["volumes"] = volumes
    return {"metadata": {"labels": ctx.labels(service)}, "spec": spec}, claims


def _wait_target(service: ServicePlan) -> tuple[str, int, str | None] | None:
    if isinstance(service.ready, HttpCheck):
        return service.name, service.port(service.ready.port).number, service.ready.path
    port = _ready_port(service)
    return None if port is None else (service.name, port, None)


def _workload(ctx: _Context, service: ServicePlan) -> dict[str, Any]:
    template, claims = _pod(ctx, service)
    spec: dict[str, Any] = {
        "replicas": 1,
        "selector": {"matchLabels": ctx.selector(service.name)},
    }
    if claims:
        spec["serviceName"] = service.name
    spec["template"] = template
    if claims:
        spec["volumeClaimTemplates"] = claims
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet" if claims else "Deployment",
        "metadata": ctx.meta(service.name, **ctx.labels(service)),
        "spec": spec,
    }


def _service(ctx: _Context, service: ServicePlan, *, checked_by_caller: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "selector": ctx.selector(service.name),
        "ports": [
            {"name": port.name, "port": port.number, "targetPort": port.number, "protocol": "TCP"}
            for port in service.ports
        ],
    }
    if checked_by_caller:
        # Its link source health-checks it itself (as it does under Docker): Kubernetes must
        # not hide an unready pod from the component that is judging it.
        spec["publishNotReadyAddresses"] = True
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ctx.meta(service.name, **ctx.labels(service)),
        "spec": spec,
    }


# -- the namespace, its policies and its rights -----------------------------------------------
def _network_policies(ctx: _Context) -> list[dict[str, Any]]:
    plan = ctx.plan

    def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
        meta = ctx.meta(name)
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": meta,
            "spec": spec,
        }

    def ports(numbers: Iterable[int], protocol: str = "TCP") -> list[dict[str, Any]]:
        return [{"protocol": protocol, "port": number} for number in numbers]

    out = [
        policy("default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        policy(
            "allow-dns",
            {
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [
                            {
                                "namespaceSelector": {},
                                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                            }
                        ],
                        "ports": ports([53], "UDP") + ports([53]),
                    }
                ],
            },
        ),
    ]
    entry = plan.service(plan.entry.service)
    out.append(
        policy(
            "allow-entry",
            {
                "podSelector": {"matchLabels": ctx.selector(entry.name)},
                "policyTypes": ["Ingress"],
                # From anywhere: this is where clients (and the drill's load) come in.
                "ingress": [{"ports": ports([entry.port(plan.entry.port).number])}],
            },
        )
    )
    found = routes(plan)
    for route in found:
        out.append(
            policy(
                route.policy,
                {
                    "podSelector": {"matchLabels": ctx.selector(route.target)},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [{"podSelector": {"matchLabels": ctx.selector(route.source)}}],
                            "ports": ports(route.ports),
                        }
                    ],
                },
            )
        )
    for source in sorted({route.source for route in found}):
        out.append(
            policy(
                f"egress.{source}",
                {
                    "podSelector": {"matchLabels": ctx.selector(source)},
                    "policyTypes": ["Egress"],
                    "egress": [
                        {
                            "to": [{"podSelector": {"matchLabels": ctx.selector(route.target)}}],
                            "ports": ports(route.ports),
                        }
                        for route in found
                        if route.source == source
                    ],
                },
            )
        )
    return out


#: Why the drill's Role holds each of its rules (written into rbac.yaml and the docs).
RULE_REASONS = {
    "pods": "find targets by label, watch readiness (detection), delete one (kill_node)",
    "pods/ephemeralcontainers": "a fault container in a pod: signals (pause_node), files "
    "(corrupt_model, corrupt_file, data_loss), iptables and tc (latency, a reject cut)",
    "pods/attach": "write into a fault container's standard input: the files of a version "
    "a rollout publishes",
    "pods/log": "read a fault container's output: what it changed, and a file's bytes kept "
    "for the heal",
    "pods/portforward": "reach the gateway's /status, each replica's /info, Redis and "
    "Prometheus from where drillkit runs",
    "events": "when the kubelet killed, restarted or failed a probe (detection timeline)",
    "secrets": "the admin token the drill's reloads, rollouts and backups present",
    "endpointslices": "when a Service stopped and started routing to a pod (detection)",
    "networkpolicies": "a cut link is its policy deleted; the heal creates it again",
    "deployments/scale": "a zone outage scales the zone's workloads to zero; the heal scales "
    "them back",
    "statefulsets/scale": "as deployments/scale, for the zone's StatefulSets",
}


def drill_rules(plan: StackPlan, workloads: dict[str, str]) -> list[dict[str, Any]]:
    """The least a drill needs, as Role rules: names where Kubernetes can restrict a verb
    to them (RBAC cannot restrict ``create``, ``list`` or ``watch`` by name). ``workloads``
    gives each service's workload kind (Deployment or StatefulSet)."""
    rules: list[dict[str, Any]] = [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
        {
            "apiGroups": [""],
            "resources": ["pods/ephemeralcontainers"],
            "verbs": ["patch", "update"],
        },
        {"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
    ]
    if plan.secrets:
        rules.append(
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": sorted(plan.secrets),
                "verbs": ["get"],
            }
        )
    rules.append(
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["list", "watch"],
        }
    )
    links = [route.policy for route in routes(plan) if route.link]
    if links:
        rules += [
            {
                "apiGroups": ["networking.k8s.io"],
                "resources": ["networkpolicies"],
                "verbs": ["create"],
            },
            {
                "apiGroups": ["networking.k8s.io"],
                "resources": ["networkpolicies"],
                "resourceNames": links,
                "verbs": ["delete"],
            },
        ]
    zoned: dict[str, list[str]] = defaultdict(list)
    for service in plan.services:
        if service.zone is not None:
            zoned[workloads[service.name]].append(service.name)
    for kind, names in sorted(zoned.items()):
        rules.append(
            {
                "apiGroups": ["apps"],
                "resources": [f"{kind.lower()}s/scale"],
                "resourceNames": sorted(names),
                "verbs": ["get", "patch"],
            }
        )
    return rules


def _rbac(ctx: _Context, workloads: dict[str, str]) -> list[dict[str, Any]]:
    subject = {"kind": "ServiceAccount", "name": DRILL, "namespace": ctx.namespace}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": ctx.meta(DRILL)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": ctx.meta(DRILL),
            "rules": drill_rules(ctx.plan, workloads),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": ctx.meta(DRILL),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": DRILL},
            "subjects": [subject],
        },
    ]


def _node_faults(ctx: _Context) -> list[dict[str, Any]]:
    """Cordon a node (nodes: cluster-wide, so a ClusterRole) and evict the drill's own pods
    from it (pods/eviction, which honours the PodDisruptionBudgets: in the namespace only, so
    a drill never evicts another team's pods)."""
    name = f"{ctx.namespace}-node-faults"
    subject = {"kind": "ServiceAccount", "name": DRILL, "namespace": ctx.namespace}
    labels = {"app.kubernetes.io/managed-by": "drillkit", LABEL_STACK: ctx.namespace}
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": labels},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [subject],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": ctx.meta(f"{DRILL}-drain"),
            "rules": [{"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": ctx.meta(f"{DRILL}-drain"),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": f"{DRILL}-drain",
            },
            "subjects": [subject],
        },
    ]


def _check_plan(plan: StackPlan) -> None:
    for service in plan.services:
        if not service.name[0].isalpha():
            raise InputError(
                f"service {service.name}: a Kubernetes Service name starts with a letter"
            )
        for mount in service.mounts:
            if mount.name in (_TMP, _SECRETS):
                raise InputError(f"service {service.name}: mount name {mount.name} is drillkit's")


@dataclass(frozen=True)
class Manifests:
    """A plan as Kubernetes objects, by the file each goes in, and what the data image must
    hold: each seed folder (a name under ``DIR/data``) and the prepared folder it copies."""

    files: Files
    data_image: str
    seeds: dict[str, Path]


def kubernetes_manifests(
    plan: StackPlan, data_dir: Path, *, namespace: str, stack_image: str
) -> Manifests:
    """The manifests of ``plan`` in ``namespace``; ``data_dir`` is where the preset prepared
    the plan's files. InputError for what Kubernetes cannot run as planned (a mount of a
    folder the preset did not prepare, a service name that is no Service name)."""
    _check_plan(plan)
    data_dir = data_dir.resolve()
    _, specs = docker_view(plan, data_dir, stack_image=stack_image)
    sources = _sources(plan, data_dir)
    data_image = _data_tag(sources, stack_image)
    ctx = _Context(plan, namespace, stack_image, data_image, specs, sources)
    files: Files = defaultdict(list)
    files["namespace.yaml"].append(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "drillkit",
                    LABEL_STACK: namespace,
                    # Every pod of the stack passes `restricted`; see docs/kubernetes.md for
                    # the faults that need an ephemeral container with NET_ADMIN.
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            },
        }
    )
    workloads: dict[str, str] = {}
    links_to = {link.target for link in plan.links}
    for service in plan.services:
        workload = _workload(ctx, service)
        workloads[service.name] = workload["kind"]
        files["workloads.yaml"].append(workload)
        if service.ports:
            checked = service.name in links_to
            files["services.yaml"].append(_service(ctx, service, checked_by_caller=checked))
    files["rbac.yaml"] = _rbac(ctx, workloads)
    for secret in sorted({s for service in plan.services for s in service.secrets.values()}):
        files[SECRETS].append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": ctx.meta(secret),
                "type": "Opaque",
                "data": {secret: base64.b64encode(plan.secrets[secret].encode()).decode()},
            }
        )
    for source in sorted(sources.values(), key=lambda s: s.name):
        if source.kind == "configMap":
            text, binary = {}, {}
            for key, data in source.files.items():
                try:
                    text[key] = data.decode()
                except UnicodeDecodeError:
                    binary[key] = base64.b64encode(data).decode()
            config: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": ctx.meta(source.name),
            }
            if text:
                config["data"] = text
            if binary:
                config["binaryData"] = binary
            files["config.yaml"].append(config)
        elif source.kind == "claim":
            files["storage.yaml"].append(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": ctx.meta(source.name),
                    "spec": {
                        # Several pods, maybe on several nodes, and one of them writes.
                        "accessModes": ["ReadWriteMany"],
                        "resources": {
                            "requests": {
                                "storage": _storage(source.size, floor=_GIB, factor=4, unit=_GIB)
                            }
                        },
                    },
                }
            )
    for name, members in pools(plan).items():
        files["disruption-budgets.yaml"].append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": ctx.meta(f"pool.{name}"),
                "spec": {
                    "maxUnavailable": 1,
                    "selector": {
                        "matchLabels": {"app.kubernetes.io/instance": namespace},
                        "matchExpressions": [
                            {"key": LABEL_SERVICE, "operator": "In", "values": members}
                        ],
                    },
                },
            }
        )
    files["network-policies.yaml"] = _network_policies(ctx)
    files[NODE_FAULTS] = _node_faults(ctx)
    seeds = {s.seed: s.path for s in sources.values() if s.seed is not None}
    return Manifests(dict(files), data_image, dict(sorted(seeds.items())))


def _data_tag(sources: dict[str, _Source], stack_image: str) -> str:
    """The data image's tag: a digest of what it holds and what it is built on."""
    digest = hashlib.sha256(stack_image.encode())
    for seed, tree in sorted({(s.seed, s.digest) for s in sources.values() if s.seed}):
        digest.update(f"\0{seed}\0{tree}".encode())
    return f"drillkit/stack-data:{__version__}-{digest.hexdigest()[:16]}"


# -- writing it -------------------------------------------------------------------------------
#: The order `kubectl apply -k` is given them in (kustomize sorts by kind anyway).
_ORDER = (
    "namespace.yaml",
    "rbac.yaml",
    SECRETS,
    "config.yaml",
    "storage.yaml",
    "workloads.yaml",
    "services.yaml",
    "disruption-budgets.yaml",
    "network-policies.yaml",
)
_WHAT = {
    "namespace.yaml": "the namespace",
    "rbac.yaml": "the drill's ServiceAccount, Role and RoleBinding (least rights)",
    SECRETS: "the services' secrets (keep this file private: mode 0600)",
    "config.yaml": "small read-only folders as ConfigMaps",
    "storage.yaml": "claims several services share",
    "workloads.yaml": "a Deployment, or a StatefulSet when it keeps files, per service",
    "services.yaml": "a Service per service, named as the plan names it",
    "disruption-budgets.yaml": "one at a time through voluntary disruptions, per pool",
    "network-policies.yaml": "deny all, then one policy per route the plan implies",
    NODE_FAULTS: "optional: cordon and drain rights for node faults (not in kustomization.yaml)",
}


def _dump(header: str, documents: list[dict[str, Any]]) -> str:
    body = yaml.safe_dump_all(documents, sort_keys=False, width=1_000_000)
    return header + body


@dataclass(frozen=True)
class K8sExport:
    """What :func:`export_k8s` wrote."""

    directory: Path
    namespace: str
    services: list[str]
    files: list[tuple[Path, str]]
    """Each file written and what it holds."""
    optional: Path
    stack_image: str
    data_image: str

    @property
    def data(self) -> Path:
        return self.directory / DATA

    def build_command(self) -> str:
        return (
            f"docker build -f {self.directory / DATA_DOCKERFILE} -t {self.data_image} "
            f"{self.directory}"
        )

    def apply_command(self) -> str:
        return f"kubectl apply -k {self.directory}"


def _write_data(tmp: Path, manifests: Manifests, stack_image: str) -> None:
    """``tmp/data``: each distinct seed once, readable by anyone (the init containers run as
    the service's user; the image's files are root's), and the Dockerfile of the image."""
    data_image = manifests.data_image
    for seed, origin in manifests.seeds.items():
        target = tmp / DATA / seed
        shutil.copytree(origin, target, symlinks=False)
        for item in [target, *target.rglob("*")]:
            os.chmod(item, 0o755 if item.is_dir() else 0o644)
    (tmp / DATA).mkdir(exist_ok=True)
    (tmp / DATA_DOCKERFILE).write_text(
        "# What the stack's pods start from (each replica's copy of the model store, ...): init\n"
        "# containers copy it into their volumes. Build it where the stack image is, and tag\n"
        "# it as the manifests name it:\n"
        f"#   docker build -f {DATA_DOCKERFILE} -t {data_image} .\n"
        f"FROM {stack_image}\n"
        f"COPY {DATA}/ {DATA_ROOT}/\n"
    )
    (tmp / ".dockerignore").write_text(f"*\n!{DATA}\n")


def export_k8s(
    preset: StackPreset[Any],
    spec: Any,
    directory: Path,
    *,
    namespace: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> K8sExport:
    """Write ``preset``'s stack for ``spec`` as Kubernetes manifests in ``directory``
    (namespace ``drillkit-<preset>`` unless named): an InputError (exit 2, nothing written)
    when ``directory`` exists and is not empty, unless ``force`` (then it is replaced whole),
    or when ``namespace`` is not a ``drillkit-`` name."""
    from drillkit.backends.docker.image import image_plan

    report = progress or (lambda message, fraction: None)
    namespace = namespace or f"drillkit-{preset.name}"
    if not re.fullmatch(NAMESPACE_PATTERN, namespace):
        raise InputError(
            f"--namespace {namespace!r}: expected drillkit- and then lowercase letters, digits "
            "and '-' (at most 63 characters, ending with a letter or digit)"
        )
    directory = Path(os.path.abspath(directory))
    check_target(directory, force=force)
    spec = docker_spec(preset, spec)
    with staged(directory, force=force) as tmp:
        scratch = tmp / ".plan"
        plan = preset.plan(spec, data_dir=scratch, gpu=False, progress=report)
        stack_image = image_plan(gpu=False).tag
        manifests = kubernetes_manifests(
            plan, scratch, namespace=namespace, stack_image=stack_image
        )
        files = manifests.files
        _write_data(tmp, manifests, stack_image)
        shutil.rmtree(scratch)
        written: list[tuple[Path, str]] = []
        for name in [*_ORDER, NODE_FAULTS]:
            if name not in files:
                continue
            path = tmp / name
            what = _WHAT[name]
            header = (
                f"# {what[:1].upper()}{what[1:]}.\n"
                f"# The {plan.preset} stack, written by drillkit {__version__} "
                "(`drillkit stack export --k8s`); docs/kubernetes.md explains each object.\n"
            )
            if name == "rbac.yaml":
                header += "# Why the Role holds each rule:\n" + "".join(
                    f"#   {', '.join(rule['resources'])} ({', '.join(rule['verbs'])}): "
                    f"{RULE_REASONS[rule['resources'][0]]}\n"
                    for rule in files[name][1]["rules"]
                )
            # The secrets' file is private from the start: it holds their values.
            atomic_write(
                path, _dump(header, files[name]).encode(), mode=0o600 if name == SECRETS else 0o644
            )
            written.append((directory / name, _WHAT[name]))
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [name for name in _ORDER if name in files],
        }
        (tmp / KUSTOMIZATION).write_text(
            "# kubectl apply -k .  (the node-fault rights are apart: "
            f"kubectl apply -f {NODE_FAULTS})\n" + yaml.safe_dump(kustomization, sort_keys=False)
        )
        report("written", 1.0)
    return K8sExport(
        directory=directory,
        namespace=namespace,
        services=plan.names(),
        files=[*written, (directory / KUSTOMIZATION, "what `kubectl apply -k` applies")],
        optional=directory / NODE_FAULTS,
        stack_image=stack_image,
        data_image=manifests.data_image,
    )
