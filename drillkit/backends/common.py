"""What every backend does the same way: the stack's id and folders, the model-store copies,
the saved state, and waiting until the stack serves."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from drillkit import paths
from drillkit.backends.base import Progress, StackSpec, StackState
from drillkit.errors import ArtifactError, BackendUnavailable, StackNotReady
from drillkit.stacks.recommender.build import ensure_artifacts
from drillkit.stacks.recommender.store import ModelStore, signing_key, verify_version

READY_TIMEOUT = 180.0


def new_stack(spec: StackSpec, backend: str, *, gpu: bool, report: Progress) -> StackState:
    """A fresh stack id and run folder, with the origin model store in place."""
    stack_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    run_dir = paths.state_dir() / "stacks" / stack_id
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    if spec.store is not None:
        store_root = Path(spec.store).resolve()
        if not ModelStore(store_root).versions():
            raise BackendUnavailable(f"{store_root}: not a model store (no versions/)")
    else:
        report("model artifacts", -1)
        cached = ensure_artifacts(spec.catalog, device="cuda" if gpu else "cpu", progress=report)
        # Each stack serves its own copy, so a corrupt_model fault never touches the cache.
        store_root = run_dir / "store"
        shutil.copytree(cached.root, store_root, ignore=shutil.ignore_patterns(".*"))
    return StackState(
        id=stack_id,
        backend=backend,
        created_at=time.time(),
        run_dir=str(run_dir),
        store=str(store_root),
        gateway_url="",
        admin_token=secrets.token_hex(16),
        gpu=gpu,
        owner=dict(spec.owner) if spec.owner else None,
        spec={
            "replicas": spec.replicas,
            "gpu": spec.gpu,
            "catalog": {
                "items": spec.catalog.items,
                "dim": spec.catalog.dim,
                "seed": spec.catalog.seed,
            },
            "gateway": vars(spec.gateway),
        },
    )


def replica_store(state: StackState, name: str) -> Path:
    """Copy the origin store for one replica, as a node's local model cache."""
    node_store = Path(state.run_dir) / "nodes" / name / "store"
    shutil.copytree(state.store, node_store, ignore=shutil.ignore_patterns(".*"))
    state.stores[name] = str(node_store)
    return node_store


def remove_copies(state: StackState) -> None:
    """Delete the stack's own store copies (never a user's ``--store``)."""
    if Path(state.store).parent == Path(state.run_dir):
        shutil.rmtree(state.store, ignore_errors=True)
    shutil.rmtree(Path(state.run_dir) / "nodes", ignore_errors=True)


def fallback_file(store_root: Path) -> Path:
    """popular.json of the newest servable version: the gateway's degraded answer."""
    store = ModelStore(store_root)
    key = signing_key()
    for version in store.serving_candidates():
        folder = store.version_dir(version)
        with contextlib.suppress(ArtifactError):
            verify_version(folder, key=key)
            return folder / "popular.json"
    raise StackNotReady(f"{store_root}: no model version verifies; cannot start the gateway")


def wait_until_ready(
    state: StackState,
    check_running: Callable[[str], None],
    report: Progress,
    *,
    timeout: float = READY_TIMEOUT,
) -> None:
    """Wait until every replica answers /readyz and the gateway routes to all of them.

    ``check_running(name)`` raises when a service has exited, so a crash fails fast.
    """
    deadline = time.monotonic() + timeout
    pending = {s.name for s in state.replicas()}
    total = len(pending) + 1
    with httpx.Client(timeout=1.0) as client:
        while pending:
            for name in sorted(pending):
                check_running(name)
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(state.services[name].url + "/readyz").status_code == 200:
                        pending.discard(name)
                        report(f"{name} ready", (total - len(pending) - 1) / total)
            if pending and time.monotonic() > deadline:
                raise StackNotReady(
                    f"not ready after {timeout:.0f} s: "
                    f"{', '.join(sorted(pending))}; logs in {state.run_dir}"
                )
            if pending:
                time.sleep(0.1)
        # The gateway is ready for the drill once it routes to every replica.
        want = {s.name for s in state.replicas()}
        while True:
            check_running("gateway")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                body = client.get(state.gateway_url + "/status").json()
                up = {r["name"] for r in body["replicas"] if r["state"] == "up"}
                if want <= up:
                    report("gateway routing to every replica", 1.0)
                    return
            if time.monotonic() > deadline:
                raise StackNotReady(
                    f"gateway did not see every replica up after {timeout:.0f} s; "
                    f"logs in {state.run_dir}"
                )
            time.sleep(0.05)
