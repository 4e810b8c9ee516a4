"""The reference recommender as a stack preset: ``replicas`` model servers behind one gateway.

The plan: each replica serves its own copy of the model store (a node's local model cache),
mounted as ``store``, so a ``corrupt_model`` fault can hit one replica or all of them; the
gateway reaches each replica over a declared link (what ``cut_network`` and ``latency`` act
on) and answers from the store's popular-items list (mounted as ``origin``) when none can.
The admin token that guards a replica's ``POST /admin/reload`` is the plan's one secret, given
to the replicas only; services verify signed versions with the public key alone.

For a drill the preset says where the stack shows that it noticed a fault (the gateway's
``/status``, each replica's ``/info``), how to score what it serves (golden users' recall,
:mod:`drillkit.stacks.recommender.quality`), and which model digests are the verified ones.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from drillkit.backends.base import Backend, Progress, StackState
from drillkit.errors import ArtifactError, BackendUnavailable, EnvironmentFailure, StackNotReady
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
    UrlRef,
)
from drillkit.stacks.recommender.spec import ROLE_MODEL_STORE, RecommenderSpec

__all__ = [
    "ADMIN_TOKEN",
    "RecommenderPreset",
    "admin_reload",
    "all_stores",
    "origin_store",
    "replica_store",
    "spec_of",
]

#: The name of the plan's one secret: what a replica's POST /admin/reload asks for.
ADMIN_TOKEN = "admin-token"
#: Ports inside a container; the local backend picks free ones instead.
REPLICA_PORT = 8000
GATEWAY_PORT = 8080
SETTLE_TIMEOUT = 180.0


class RecommenderPreset(StackPreset[RecommenderSpec]):
    name = "recommender"
    description = "model-server replicas (torch two-tower + faiss) behind a failover gateway"

    def gpu_wanted(self, spec: RecommenderSpec) -> str:
        return spec.gpu

    def plan(
        self, spec: RecommenderSpec, *, data_dir: Path, gpu: bool, progress: Progress
    ) -> StackPlan:
        from drillkit.stacks.recommender.build import ensure_artifacts
        from drillkit.stacks.recommender.replica import ADMIN_TOKEN_ENV
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

        services = []
        for name in spec.service_names()[:-1]:
            node_store = data_dir / "nodes" / name / "store"
            shutil.copytree(origin, node_store, ignore=shutil.ignore_patterns(".*"))
            services.append(
                ServicePlan(
                    name=name,
                    role=ROLE_REPLICA,
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
                        ),
                    ),
                    env=env,
                    secrets=replica_secrets,
                    ports=(Port(number=REPLICA_PORT, inherit=True),),
                    ready=HttpCheck(path="/readyz"),
                    mounts=(Mount(name="store", source=str(node_store), target="/store"),),
                    gpu=True,
                )
            )
        replicas = [s.name for s in services]
        fallback: tuple[Any, ...] = ()
        mounts: tuple[Mount, ...] = ()
        if spec.gateway.fallback:
            relative = fallback_version(origin).relative_to(origin)
            fallback = ("--fallback", MountRef(mount="origin", path=str(relative)))
            mounts = (Mount(name="origin", source=str(origin), target="/origin"),)
        upstreams = [
            arg
            for name in replicas
            for arg in ("--replica", Join(parts=(f"{name}=", UrlRef(service=name))))
        ]
        services.append(
            ServicePlan(
                name="gateway",
                role=ROLE_GATEWAY,
                program=Program(
                    module="drillkit.stacks.recommender.gateway",
                    args=(
                        "--host",
                        BindHost(),
                        "--port",
                        PortRef(),
                        *fallback,
                        *upstreams,
                        *spec.gateway.args(),
                    ),
                ),
                ports=(Port(number=GATEWAY_PORT, inherit=True),),
                ready=HttpCheck(path="/readyz"),
                mounts=mounts,
                env=verifying,
                depends_on=tuple(Dependency(service=name) for name in replicas),
            )
        )
        return StackPlan(
            preset=self.name,
            services=tuple(services),
            links=tuple(Link(source="gateway", target=name) for name in replicas),
            entry=Endpoint(service="gateway"),
            secrets=plan_secrets,
            settings={**spec.to_json(), "origin": str(origin)},
            data=str(data_dir),
        )

    def settle(self, state: StackState[Any], backend: Backend[Any], progress: Progress) -> None:
        """The gateway is ready for a drill once it routes to every replica."""
        import httpx

        want = set(state.names_with_role(ROLE_REPLICA))
        deadline = time.monotonic() + SETTLE_TIMEOUT
        with httpx.Client(timeout=1.0) as client:
            while True:
                if not backend.service_alive(state, "gateway"):
                    raise StackNotReady(f"the gateway exited; logs in {state.run_dir}/logs")
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                    body = client.get(state.entry_url + "/status").json()
                    up = {r["name"] for r in body["replicas"] if r["state"] == "up"}
                    if want <= up:
                        progress("gateway routing to every replica", 1.0)
                        return
                if time.monotonic() > deadline:
                    raise StackNotReady(
                        f"gateway did not see every replica up after {SETTLE_TIMEOUT:.0f} s; "
                        f"logs in {state.run_dir}/logs"
                    )
                time.sleep(0.05)

    def workload(self, state: StackState[Any]) -> Workload:
        return Workload(users=spec_of(state).catalog.resolved().users, k=10)

    def watch_sources(self, state: StackState[Any]) -> list[WatchSource]:
        from drillkit.stacks.recommender.watch import GatewayStatus, ReplicaInfo

        sources: list[WatchSource] = [GatewayStatus(state.service("gateway").url())]
        for name in state.names_with_role(ROLE_REPLICA):
            sources.append(ReplicaInfo(name, state.service(name).url()))
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

    def extra_targets(self, state: StackState[Any]) -> dict[str, str]:
        return {ROLE_MODEL_STORE: ROLE_MODEL_STORE}

    def describe(self, state: StackState[Any]) -> dict[str, Any]:
        from drillkit.stacks.recommender.store import ModelStore

        origin = origin_store(state)
        return {
            "store": str(origin),
            "stores": {
                name: str(replica_store(state, name))
                for name in state.names_with_role(ROLE_REPLICA)
            },
            "current_version": ModelStore(origin).current(),
        }


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


def admin_reload(state: StackState[Any], replica: str) -> dict[str, Any]:
    """Ask a replica to re-verify and reload CURRENT now (token-protected endpoint)."""
    import httpx

    headers = {"Authorization": f"Bearer {state.secret(ADMIN_TOKEN)}"}
    url = state.service(replica).url() + "/admin/reload"
    try:
        response = httpx.post(url, headers=headers, timeout=60.0)
    except httpx.HTTPError as exc:
        raise EnvironmentFailure(f"{replica}: admin reload failed: {exc}") from exc
    if response.status_code != 200:
        raise EnvironmentFailure(f"{replica}: admin reload answered {response.status_code}")
    result: dict[str, Any] = response.json()
    return result


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
