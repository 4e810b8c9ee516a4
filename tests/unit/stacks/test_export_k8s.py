"""``drillkit stack export --k8s``: the reference stack as Kubernetes manifests, validated
offline against the API's own schemas (kubernetes-validate, strict: an unknown field is an
error) for the oldest Kubernetes the manifests are written for and the newest the validator
ships, and checked for what they do: a workload and a Service per plan service, probes from
the plan, NetworkPolicies that let through exactly the stack's traffic, the least RBAC a
drill needs, secrets as files only. The model artifacts are a small stand-in store here."""

from __future__ import annotations

import base64
import copy
import http.server
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from drillkit.backends.docker import SECRETS_MOUNT
from drillkit.backends.docker.image import image_plan
from drillkit.cli import app
from drillkit.errors import InputError
from drillkit.faults.base import fault_kinds
from drillkit.stacks import export, export_k8s
from drillkit.stacks.export_common import docker_spec
from drillkit.stacks.plan import Endpoint, HttpCheck, Mount, Program, StackPlan, TcpCheck
from drillkit.stacks.recommender.preset import RecommenderPreset
from drillkit.stacks.recommender.spec import EventSettings, RecommenderSpec
from drillkit.stacks.recommender.store import ModelStore
from drillkit.testing import service_plan
from tests.unit.stacks.recommender.test_store import make_store

ROOT = Path(__file__).resolve().parents[3]
NAMESPACE = "drillkit-recommender"
#: The oldest API the manifests target, and the newest whose schemas the validator ships.
VERSIONS = (export_k8s.KUBERNETES_VERSION, kubernetes_validate.latest_version())
#: The docker healthcheck's timing (HealthSpec): every 5 s, 2 s timeout, 3 failures, 120 s
#: start period.
TIMING = {"periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3}

Docs = dict[str, list[dict[str, Any]]]


@pytest.fixture
def artifacts(tmp_path: Path, drillkit_home: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    """A small store stands in for the trained artifacts; the image counts as built, so the
    output does not depend on this machine's Docker Engine."""
    store = make_store(tmp_path / "artifacts")
    monkeypatch.setattr("drillkit.stacks.recommender.build.ensure_artifacts", lambda *a, **k: store)
    monkeypatch.setattr(export, "missing_images", lambda images: [])
    return store


@dataclass(frozen=True)
class Exported:
    folder: Path
    docs: Docs
    plan: StackPlan
    output: str

    def all(self) -> list[dict[str, Any]]:
        return [doc for docs in self.docs.values() for doc in docs]

    def of(self, kind: str) -> dict[str, dict[str, Any]]:
        return {d["metadata"]["name"]: d for d in self.all() if d["kind"] == kind}

    def workloads(self) -> dict[str, dict[str, Any]]:
        return {d["metadata"]["name"]: d for d in self.docs["workloads.yaml"]}

    def pods(self) -> dict[str, dict[str, Any]]:
        """Each service's pod template labels."""
        return {n: w["spec"]["template"]["metadata"]["labels"] for n, w in self.workloads().items()}


def _load(folder: Path) -> Docs:
    return {
        str(path.relative_to(folder)): [d for d in yaml.safe_load_all(path.read_text()) if d]
        for path in sorted(folder.rglob("*.yaml"))
        if path.name != export_k8s.KUSTOMIZATION and "data" not in path.relative_to(folder).parts
    }


def _spec(replicas: int, zones: tuple[str, ...] = (), events: bool = False) -> RecommenderSpec:
    return RecommenderSpec(
        replicas=replicas, zones=zones, gpu="off", events=EventSettings(enabled=events)
    )


def _export(
    tmp_path: Path, replicas: int = 1, zones: str = "", events: bool = False, *extra: str
) -> Exported:
    folder = tmp_path / "k8s"
    args = ["stack", "export", "--k8s", str(folder), "--replicas", str(replicas), *extra]
    args += ["--zones", zones] if zones else []
    args += ["--events"] if events else []
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # The same plan, made again: its services, checks, ports and links are what was exported.
    spec = _spec(replicas, tuple(filter(None, zones.split(","))), events)
    preset = RecommenderPreset()
    plan = preset.plan(
        docker_spec(preset, spec),
        data_dir=tmp_path / "again",
        gpu=False,
        progress=lambda message, fraction: None,
    )
    return Exported(folder, _load(folder), plan, result.output)


STACKS = [
    pytest.param((1, "", False), id="1-replica"),
    pytest.param((3, "", False), id="3-replicas"),
    pytest.param((3, "", True), id="3-replicas-events"),
    pytest.param((2, "a,b", False), id="zones", marks=pytest.mark.zones),
]


@pytest.fixture(params=STACKS)
def exported(request: pytest.FixtureRequest, artifacts: ModelStore, tmp_path: Path) -> Exported:
    replicas, zones, events = request.param
    return _export(tmp_path, replicas, zones, events)


# -- the schemas ----------------------------------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
def test_every_document_is_valid_for_the_kubernetes_api(exported: Exported, version: str) -> None:
    checked = 0
    for name, docs in exported.docs.items():
        for doc in docs:
            where = f"{name}: {doc['kind']} {doc['metadata']['name']}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{where}: {path}: {exc.message}")
            checked += 1
    assert checked == len(exported.all()) > 20


def _deployment(tmp_path: Path) -> dict[str, Any]:
    doc = export_k8s.kubernetes_manifests(
        _plan_with_a_foreign_image(tmp_path), tmp_path, namespace=NAMESPACE, stack_image="s:1"
    ).files["workloads.yaml"][0]
    return doc


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: _container(d).update(readinesProbe={}), id="typo-in-a-container"),
        pytest.param(lambda d: d["spec"].update(replica=1), id="typo-in-the-spec"),
        pytest.param(lambda d: d["spec"].update(replicas="one"), id="wrong-type"),
        pytest.param(lambda d: d["spec"].pop("selector"), id="required-field-missing"),
        pytest.param(
            lambda d: _container(d)["securityContext"].update(runAsNonroot=True), id="wrong-case"
        ),
    ],
)
def test_the_validator_is_strict(tmp_path: Path, damage: Any) -> None:
    doc = _deployment(tmp_path)
    for version in VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)  # as written: valid
    broken = copy.deepcopy(doc)
    damage(broken)
    for version in VERSIONS:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, version, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl on PATH")
def test_kubectl_builds_the_kustomization(artifacts: ModelStore, tmp_path: Path) -> None:
    # `kubectl create --dry-run=client -f DIR` would need an API server for discovery;
    # `kubectl kustomize` reads every file offline, as `kubectl apply -k` will.
    found = _export(tmp_path, 3)
    proc = subprocess.run(
        ["kubectl", "kustomize", str(found.folder)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    rendered = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(proc.stdout) if d}
    applied = {
        (d["kind"], d["metadata"]["name"])
        for name, docs in found.docs.items()
        for d in docs
        if name != export_k8s.NODE_FAULTS
    }
    assert rendered == applied
    # The cluster-wide rights are not applied with the stack.
    assert not any(kind.startswith("Cluster") for kind, _ in rendered)


# -- what the objects do ----------------------------------------------------------------------
def test_every_plan_service_is_a_workload_and_a_service(exported: Exported) -> None:
    plan = exported.plan
    workloads = exported.workloads()
    services = exported.of("Service")
    assert list(workloads) == plan.names()
    assert sorted(services) == sorted(plan.names())
    pods = exported.pods()
    for service in plan.services:
        workload = workloads[service.name]
        others = {m.source for o in plan.services if o.name != service.name for m in o.mounts}
        # Files of its own that it writes: they must outlive the pod.
        keeps = any(not m.read_only and m.source not in others for m in service.mounts)
        expected = "StatefulSet" if keeps else "Deployment"
        assert workload["kind"] == expected, service.name
        assert workload["metadata"]["namespace"] == NAMESPACE
        assert workload["spec"]["replicas"] == 1
        labels = pods[service.name]
        assert labels["drillkit.role"] == service.role
        assert labels["app.kubernetes.io/component"] == service.role
        assert labels["app.kubernetes.io/name"] == service.name
        assert labels.get("drillkit.zone") == service.zone
        assert labels["drillkit.target"] == "true"
        # The workload's and the Service's selectors pick this pod and no other.
        for selector in (
            workload["spec"]["selector"]["matchLabels"],
            services[service.name]["spec"]["selector"],
        ):
            assert [n for n, pod in pods.items() if selector.items() <= pod.items()] == [
                service.name
            ]
        ports = services[service.name]["spec"]["ports"]
        assert [(p["name"], p["port"], p["targetPort"]) for p in ports] == [
            (p.name, p.number, p.number) for p in service.ports
        ]
        container = _container(workload)
        assert [p["containerPort"] for p in container["ports"]] == [p.number for p in service.ports]
        assert container["image"] == image_plan(gpu=False).tag
        assert container["args"][:3] == ["python3", "-m", service.program.module]
    # Link targets are judged by their link source, as under Docker.
    targets = {link.target for link in plan.links}
    for name, svc in services.items():
        assert svc["spec"].get("publishNotReadyAddresses", False) == (name in targets)


def _handler(check: HttpCheck | TcpCheck, port: int) -> dict[str, Any]:
    if isinstance(check, HttpCheck):
        return {"httpGet": {"path": check.path, "port": port}}
    return {"tcpSocket": {"port": port}}


def test_the_probes_are_the_plans_checks(exported: Exported) -> None:
    workloads = exported.workloads()
    for service in exported.plan.services:
        container = _container(workloads[service.name])
        assert service.ready is not None
        number = service.port(service.ready.port).number
        assert container["readinessProbe"] == _handler(service.ready, number) | TIMING
        if service.live is None:
            assert "livenessProbe" not in container and "startupProbe" not in container
            continue
        number = service.port(service.live.port).number
        assert container["livenessProbe"] == _handler(service.live, number) | TIMING
        # The docker healthcheck's 120 s start period, in 5 s periods, before liveness counts.
        start = TIMING | {"failureThreshold": 24}
        assert container["startupProbe"] == _handler(service.live, number) | start
    replica = _container(workloads[exported.plan.with_role("replica")[0].name])
    assert replica["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert replica["livenessProbe"]["httpGet"]["path"] == "/healthz"


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    return all(
        expr["operator"] == "In" and labels.get(expr["key"]) in expr["values"]
        for expr in selector.get("matchExpressions", [])
    )


def _lets_through(
    rules: list[dict[str, Any]], peer_key: str, peer: dict[str, str] | None, port: int
) -> bool:
    """Whether a rule lets ``port`` through from (or to) a pod labelled ``peer`` (None: a
    client outside the namespace)."""
    for rule in rules:
        ports = rule.get("ports")
        if ports is not None and not any(
            p["port"] == port and p["protocol"] == "TCP" for p in ports
        ):
            continue
        peers = rule.get(peer_key)
        if peers is None:
            return True
        if peer is not None and any(_selects(p.get("podSelector", {}), peer) for p in peers):
            return True
    return False


def _traffic(
    policies: list[dict[str, Any]], pods: dict[str, dict[str, str]], ports: Any
) -> set[Any]:
    """Every (source, target, port) between the stack's pods that the policies let through
    both ways (the target's ingress and the source's egress), as a CNI enforces them."""

    def allowed(direction: str, pod: dict[str, str], key: str, peer: Any, port: int) -> bool:
        chosen = [
            p["spec"]
            for p in policies
            if direction in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod)
        ]
        assert chosen, "every pod is isolated by default-deny"
        return any(_lets_through(s.get(direction.lower(), []), key, peer, port) for s in chosen)

    return {
        (source, target, port)
        for source, src in pods.items()
        for target, dst in pods.items()
        for port in ports[target]
        if allowed("Ingress", dst, "from", src, port) and allowed("Egress", src, "to", dst, port)
    }


def _expected_traffic(plan: StackPlan) -> set[tuple[str, str, int]]:
    """What the reference stack sends where, written out from its design, not from the
    exporter's routes(): each link, Prometheus scraping every HTTP service, Alertmanager
    notifying the receiver, and the event path."""
    port = {s.name: s.ports[0].number for s in plan.services}
    out = {(link.source, link.target, port[link.target]) for link in plan.links}
    for service in plan.services:
        if service.role not in ("cache", "event-store"):
            scraped = 8405 if service.role == "edge" else port[service.name]
            out.add(("prometheus", service.name, scraped))
    out |= {("alertmanager", "alert-receiver", 9095), ("prometheus", "alertmanager", 9093)}
    if "event-store" in port:
        users = [s.name for s in plan.services if s.role in ("replica", "gateway")]
        out |= {(name, "event-store", 6379) for name in [*users, "backup", "features"]}
    return out


def test_network_policies_let_through_exactly_the_stacks_traffic(exported: Exported) -> None:
    policies = exported.docs["network-policies.yaml"]
    pods = exported.pods()
    ports = {s.name: [p.number for p in s.ports] for s in exported.plan.services}
    expected = _expected_traffic(exported.plan)
    assert _traffic(policies, pods, ports) == expected
    deny = exported.of("NetworkPolicy")["default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    # From outside the namespace: the entry's port only.
    entry = exported.plan.entry
    outside = {
        (target, port)
        for target, labels in pods.items()
        for port in ports[target]
        if any(
            _lets_through(p["spec"].get("ingress", []), "from", None, port)
            for p in policies
            if _selects(p["spec"]["podSelector"], labels)
        )
    }
    assert outside == {(entry.service, exported.plan.service(entry.service).ports[0].number)}
    # A cut is one policy deleted: each link's own, and it stops that link and nothing else.
    role = exported.of("Role")["drillkit-drill"]
    deletable = next(r for r in role["rules"] if r["verbs"] == ["delete"])["resourceNames"]
    assert sorted(deletable) == sorted(f"link.{link.name}" for link in exported.plan.links)
    for link in exported.plan.links:
        rest = [p for p in policies if p["metadata"]["name"] != f"link.{link.name}"]
        cut = {(s, t, p) for s, t, p in expected if (s, t) == (link.source, link.target)}
        assert _traffic(rest, pods, ports) == expected - cut, link.name


def test_the_drill_role_holds_the_least_rights(exported: Exported) -> None:
    plan = exported.plan
    zoned = sorted(s.name for s in plan.services if s.zone is not None)
    rules = exported.of("Role")["drillkit-drill"]["rules"]
    expected = [
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
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["admin-token"],
            "verbs": ["get"],
        },
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["list", "watch"],
        },
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["create"]},
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["networkpolicies"],
            "resourceNames": sorted(f"link.{link.name}" for link in plan.links),
            "verbs": ["delete"],
        },
    ]
    if zoned:  # the zone's workloads, by name, and nothing else
        expected.append(
            {
                "apiGroups": ["apps"],
                "resources": ["deployments/scale"],
                "resourceNames": zoned,
                "verbs": ["get", "patch"],
            }
        )
    assert rules == expected
    binding = exported.of("RoleBinding")["drillkit-drill"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "drillkit-drill",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "drillkit-drill", "namespace": NAMESPACE}
    ]
    # Node faults: a file of their own, out of the kustomization; nodes cluster-wide, the
    # evictions in the namespace only.
    optional = exported.docs[export_k8s.NODE_FAULTS]
    kinds = {d["kind"]: d for d in optional}
    assert kinds["ClusterRole"]["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}
    ]
    assert kinds["Role"]["metadata"]["namespace"] == NAMESPACE
    assert kinds["Role"]["rules"] == [
        {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]}
    ]
    kustomization = yaml.safe_load((exported.folder / export_k8s.KUSTOMIZATION).read_text())
    assert export_k8s.NODE_FAULTS not in kustomization["resources"]
    assert sorted(kustomization["resources"]) == sorted(
        name for name in exported.docs if name != export_k8s.NODE_FAULTS
    )
    # The stack's own pods never hold a token for the API.
    for workload in exported.workloads().values():
        assert workload["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def _pod_specs(exported: Exported) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, workload in exported.workloads().items():
        yield name, workload["spec"]["template"]["spec"]


def test_every_pod_passes_pod_security_restricted(exported: Exported) -> None:
    namespace = exported.of("Namespace")[NAMESPACE]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for name, pod in _pod_specs(exported):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, name
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert security["fsGroup"] == security["runAsGroup"]
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
        assert all("hostPath" not in volume for volume in pod.get("volumes", []))
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            context = container["securityContext"]
            assert context == {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": True,
            }, (name, container["name"])
            assert container["resources"]["requests"] and container["resources"]["limits"]
        # Python's temporary files go to an emptyDir, the root filesystem being read-only.
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["/tmp"] == "drillkit-tmp"


def test_secrets_are_read_only_files_and_in_no_environment(exported: Exported) -> None:
    secret = exported.of("Secret")["admin-token"]
    token = base64.b64decode(secret["data"]["admin-token"]).decode()
    assert len(token) == 32
    path = exported.folder / "secrets.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for other in exported.folder.rglob("*"):
        if other.is_file() and other != path:
            assert token not in other.read_text(errors="replace"), other
    holders = {s.name for s in exported.plan.services if s.secrets}
    roles = {s.name for s in exported.plan.services if s.role in ("gateway", "replica")}
    assert holders >= roles and roles
    for name, pod in _pod_specs(exported):
        container = pod["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        assert all(set(e) == {"name", "value"} for e in env.values())  # no secretKeyRef
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        if name not in holders:
            assert "drillkit-secrets" not in volumes
            continue
        assert env["DRILLKIT_ADMIN_TOKEN_FILE"]["value"] == f"{SECRETS_MOUNT}/admin-token"
        assert volumes["drillkit-secrets"]["projected"] == {
            "sources": [
                {
                    "secret": {
                        "name": "admin-token",
                        "items": [{"key": "admin-token", "path": "admin-token"}],
                    }
                }
            ],
            "defaultMode": 0o400,
        }
        mount = next(m for m in container["volumeMounts"] if m["name"] == "drillkit-secrets")
        assert mount == {"name": "drillkit-secrets", "mountPath": SECRETS_MOUNT, "readOnly": True}


def test_pools_keep_all_but_one_member_through_a_disruption(exported: Exported) -> None:
    budgets = exported.of("PodDisruptionBudget")
    pods = exported.pods()
    expected = {}
    for source in {link.source for link in exported.plan.links}:
        members = sorted(link.target for link in exported.plan.links if link.source == source)
        if len(members) >= 2:
            expected[f"pool.{source}"] = members
    assert sorted(budgets) == sorted(expected)
    for name, budget in budgets.items():
        assert budget["spec"]["maxUnavailable"] == 1
        chosen = sorted(n for n, pod in pods.items() if _selects(budget["spec"]["selector"], pod))
        assert chosen == expected[name]


def test_the_model_store_reaches_each_replica_from_the_data_image(
    artifacts: ModelStore, tmp_path: Path
) -> None:
    found = _export(tmp_path, 3)
    folder = found.folder
    # One copy of the store in the image, whatever the number of replicas.
    assert sorted(p.name for p in (folder / "data").iterdir()) == ["store"]
    store = ModelStore(folder / "data" / "store")
    assert store.current() == artifacts.current()
    for item in (folder / "data").rglob("*"):
        mode = stat.S_IMODE(item.stat().st_mode)
        assert mode == (0o755 if item.is_dir() else 0o644), item  # the pods' user reads it
    dockerfile = (folder / export_k8s.DATA_DOCKERFILE).read_text()
    data_image = re.search(r"docker build .* -t (\S+) \.$", dockerfile, re.M)
    assert data_image is not None
    assert f"\nFROM {image_plan(gpu=False).tag}\nCOPY data/ /opt/drillkit-data/\n" in dockerfile
    assert (folder / ".dockerignore").read_text() == "*\n!data\n"
    for replica in found.plan.with_role("replica"):
        pod = found.workloads()[replica.name]["spec"]["template"]["spec"]
        seed = pod["initContainers"][0]
        assert seed["image"] == data_image.group(1)
        assert "cp -R /opt/drillkit-data/store/. /seed/store/" in seed["command"][2]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes["store"]  # the pod's own copy, as a node's local cache
        store_mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "store")
        assert store_mount == {"name": "store", "mountPath": "/store", "readOnly": True}
    # The monitoring's rules: small, read-only, a ConfigMap.
    rules = found.of("ConfigMap")["monitoring-rules"]["data"]["rules.yml"]
    assert "groups:" in rules
    assert f"wrote {folder / 'data'}" in found.output
    assert f"docker build -f {folder / export_k8s.DATA_DOCKERFILE}" in found.output
    assert f"kubectl apply -k {folder}" in found.output


def _run_seed(script: str, data: Path, seed: Path) -> None:
    local = script.replace("/opt/drillkit-data", str(data)).replace("/seed/", f"{seed}/")
    proc = subprocess.run(["sh", "-c", local], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_a_claim_is_filled_once_and_keeps_what_the_service_wrote(
    artifacts: ModelStore, tmp_path: Path
) -> None:
    found = _export(tmp_path, 1, events=True)
    claims = found.of("PersistentVolumeClaim")
    # The origin store, read by the gateway and restored into by the backup service.
    assert claims["store"]["spec"]["accessModes"] == ["ReadWriteMany"]
    pods = dict(_pod_specs(found))
    for name, mount in (("gateway", "origin"), ("backup", "models")):
        volumes = {v["name"]: v for v in pods[name]["volumes"]}
        assert volumes[mount] == {"name": mount, "persistentVolumeClaim": {"claimName": "store"}}
        entry = next(m for m in pods[name]["containers"][0]["volumeMounts"] if m["name"] == mount)
        assert entry["subPath"] == "data"
    # The event store keeps its append-only file on a claim of its own.
    assert found.workloads()["event-store"]["kind"] == "StatefulSet"
    # The gateway's seed script, run here: a first start fills the claim, a later one (or a
    # second pod) leaves what is there alone.
    script = pods["gateway"]["initContainers"][0]["command"][2]
    volume = tmp_path / "claim"
    (volume / "origin").mkdir(parents=True)
    _run_seed(script, found.folder / "data", volume)
    filled = volume / "origin" / "data"
    assert ModelStore(filled).current() == artifacts.current()
    (filled / "CURRENT").write_text("v1")  # what the service wrote since
    _run_seed(script, found.folder / "data", volume)
    assert (filled / "CURRENT").read_text() == "v1"
    assert sorted(p.name for p in (volume / "origin").iterdir()) == ["data"]  # no leftovers


def test_the_wait_container_waits_for_readiness(tmp_path: Path) -> None:
    ready = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if ready.is_set() and self.path == "/readyz" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        checks = json.dumps([["127.0.0.1", port, "/readyz"], ["127.0.0.1", port, None]])
        child = subprocess.Popen([sys.executable, "-c", export_k8s._WAIT, checks])
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=2.5)  # not ready yet: still waiting
        ready.set()
        assert child.wait(timeout=10) == 0
    finally:
        server.shutdown()
        server.server_close()


# -- the command ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([], "name exactly one of --compose DIR and --k8s DIR", id="neither"),
        pytest.param(["--compose", "a", "--k8s", "b"], "name exactly one", id="both"),
        pytest.param(["--compose", "a", "--namespace", "drillkit-x"], "goes with --k8s", id="ns"),
        pytest.param(["--k8s", "b", "--namespace", "prod"], "expected drillkit-", id="bad-ns"),
        pytest.param(["--k8s", "b", "--namespace", "drillkit-A"], "expected drillkit-", id="case"),
    ],
)
def test_wrong_options_are_exit_2(
    args: list[str],
    message: str,
    tmp_path: Path,
    drillkit_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["stack", "export", *args])
    assert isinstance(result.exception, InputError), result.output
    assert result.exception.exit_code == 2 and message in str(result.exception)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_namespace_option_names_every_namespaced_object(
    artifacts: ModelStore, tmp_path: Path
) -> None:
    found = _export(tmp_path, 1, "", False, "--namespace", "drillkit-team-a")
    assert list(found.of("Namespace")) == ["drillkit-team-a"]
    for doc in found.all():
        if doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "drillkit-team-a", doc["metadata"]["name"]
    assert list(found.of("ClusterRole")) == ["drillkit-team-a-node-faults"]


def test_a_folder_that_is_not_empty_is_refused_one_line(
    tmp_path: Path, drillkit_home: Path
) -> None:
    folder = tmp_path / "k8s"
    folder.mkdir()
    (folder / "mine.yaml").write_text("keep me")
    env = {**os.environ, "DRILLKIT_HOME": str(drillkit_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "drillkit", "stack", "export", "--k8s", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"drillkit: error: {folder} exists and is not empty; name a new folder or add --force"
    ]
    assert [p.name for p in folder.iterdir()] == ["mine.yaml"]


def test_force_replaces_the_folder_and_a_failure_leaves_nothing(
    artifacts: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "k8s"
    folder.mkdir()
    (folder / "old.yaml").write_text("")
    result = CliRunner().invoke(app, ["stack", "export", "--k8s", str(folder), "--force"])
    assert result.exit_code == 0, result.output
    assert not (folder / "old.yaml").exists() and (folder / "workloads.yaml").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise InputError("planned failure")

    monkeypatch.setattr(export_k8s, "kubernetes_manifests", failing)
    other = tmp_path / "other"
    result = CliRunner().invoke(app, ["stack", "export", "--k8s", str(other)])
    assert isinstance(result.exception, InputError)
    assert not other.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# -- plans beyond the reference stack ---------------------------------------------------------
def _plan_with_a_foreign_image(data: Path) -> StackPlan:
    return StackPlan(
        preset="p",
        services=(
            service_plan(
                "app",
                program=Program(executable="/bin/echo", args=("$(HOME)", "$x"), image="other:1"),
                env={"PRICE": "$(5)"},
            ),
        ),
        entry=Endpoint(service="app"),
    )


def test_values_are_literal_and_a_foreign_image_keeps_its_own_user(tmp_path: Path) -> None:
    doc = _deployment(tmp_path)
    container = _container(doc)
    # Kubernetes expands $(VAR) in args and env: $$ is a literal $.
    assert container["args"] == ["/bin/echo", "$$(HOME)", "$$x"]
    assert {e["name"]: e["value"] for e in container["env"]}["PRICE"] == "$$(5)"
    pod = doc["spec"]["template"]["spec"]
    # Not drillkit's image: its own user (still not root), its own root filesystem.
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert "readOnlyRootFilesystem" not in container["securityContext"]
    assert "volumes" not in pod


def test_a_mount_of_a_folder_the_preset_did_not_prepare_is_refused(tmp_path: Path) -> None:
    plan = StackPlan(
        preset="p",
        services=(service_plan("app", mounts=(Mount(name="m", source="/srv/x", target="/m"),)),),
        entry=Endpoint(service="app"),
    )
    with pytest.raises(InputError, match="service app, mount m: /srv/x is not a folder"):
        export_k8s.kubernetes_manifests(plan, tmp_path, namespace=NAMESPACE, stack_image="s:1")


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        pytest.param("1000:1001", (1000, 1001), id="a-user"),
        pytest.param("0:0", export_k8s.IMAGE_USER, id="root-becomes-the-images-user"),
        pytest.param(None, None, id="another-image"),
    ],
)
def test_pods_run_as_the_docker_backends_user_unless_root(
    user: str | None, expected: tuple[int, int] | None
) -> None:
    assert export_k8s.run_as(user) == expected


# -- the design document ----------------------------------------------------------------------
def test_the_design_names_every_fault_kind_and_every_right() -> None:
    text = (ROOT / "docs" / "kubernetes.md").read_text()
    kinds = sorted(name for name, info in fault_kinds().items() if info.builtin)
    assert len(kinds) >= 13
    missing = [kind for kind in kinds if f"`{kind}`" not in text]
    assert missing == [], "docs/kubernetes.md: add each fault kind's Kubernetes mapping"
    for resource in export_k8s.RULE_REASONS:
        assert f"`{resource}`" in text, resource
