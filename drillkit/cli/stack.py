"""``drillkit stack``: bring the reference stack up, look at it, take it down."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import typer

from drillkit import state as state_files
from drillkit.backends.base import Backend, StackState, get_backend, load_state, load_states
from drillkit.cli.state import terminal
from drillkit.errors import InputError, NoStackError, StateError
from drillkit.stacks.base import bring_up, get_preset, take_down
from drillkit.stacks.recommender.spec import (
    MAX_REPLICAS,
    CatalogSpec,
    EventSettings,
    GatewaySettings,
    RecommenderSpec,
)

app = typer.Typer(
    help="Bring the reference recommender stack up, inspect it, tear it down.", no_args_is_help=True
)

_CATALOG = CatalogSpec()
_GATEWAY = GatewaySettings()
_EVENTS = EventSettings()
BACKEND = typer.Option("local", "--backend", "-b", help="Where services run: local | docker.")
ITEMS = typer.Option(_CATALOG.items, "--items", help="Catalog size (items).")
DIM = typer.Option(_CATALOG.dim, "--dim", help="Embedding dimensions.")
SEED = typer.Option(_CATALOG.seed, "--seed", help="Seed of the synthetic catalog.")


STACK = typer.Option(
    None,
    "--stack",
    help="The stack to act on when several are up (`drillkit stack status` lists them).",
)


def active_stack(stack_id: str | None = None) -> tuple[StackState[Any], Backend[Any]]:
    """The stack named (or the only one up) and its backend; NoStackError (exit 3) when none
    is up, InputError naming them when several are and none is named."""
    state = load_state(stack_id)
    if state is None:
        where = f"no stack {stack_id} is up" if stack_id else "no stack is up"
        raise NoStackError(f"{where}; start one with `drillkit stack up`")
    return state, get_backend(state.backend)


def _owner(state: StackState[Any]) -> str:
    if state.owner is None:
        return "stack up"
    return f"drill {state.owner.scenario} (pid {state.owner.pid})"


@app.command()
def up(
    backend: str = BACKEND,
    replicas: int = typer.Option(
        3, "--replicas", "-n", help=f"Model-server replicas (1..{MAX_REPLICAS})."
    ),
    items: int = ITEMS,
    dim: int = DIM,
    seed: int = SEED,
    gpu: str = typer.Option("auto", "--gpu", help="auto | on | off."),
    store: Path | None = typer.Option(
        None,
        "--store",
        help="Serve this model store in place instead of a private copy of the built artifacts.",
    ),
    check_interval: float = typer.Option(
        _GATEWAY.check_interval, help="Gateway active health-check period (s)."
    ),
    retries: int = typer.Option(_GATEWAY.retries, help="Gateway retries on another replica."),
    passive_ejection: bool = typer.Option(
        _GATEWAY.passive_ejection, help="Eject a replica on a failed request."
    ),
    deadline: float = typer.Option(
        _GATEWAY.deadline, help="Gateway budget per client request (s)."
    ),
    max_outstanding: int = typer.Option(
        _GATEWAY.max_outstanding,
        min=0,
        help="Requests in flight per replica before the gateway sheds load (0: no cap).",
    ),
    fallback: bool = typer.Option(
        _GATEWAY.fallback, help="Popular-items answers when no replica can."
    ),
    zones: str = typer.Option(
        "",
        "--zones",
        help="Zones, comma-separated (e.g. a,b): each gets a gateway, --replicas replicas and "
        "a Redis, behind an HAProxy edge.",
    ),
    events: bool = typer.Option(
        False,
        "--events",
        help="The event path: an event store (POST /events), its backups and the feature updater.",
    ),
    appendfsync: str = typer.Option(
        _EVENTS.appendfsync, "--appendfsync", help="The event store's: always | everysec | no."
    ),
    backup_interval: float = typer.Option(
        _EVENTS.backup_interval, "--backup-interval", help="Seconds between two backups."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the stack state as JSON."),
) -> None:
    """Start the stack detached; returns once every service is ready."""
    t = terminal()
    spec = RecommenderSpec(
        zones=tuple(zone.strip() for zone in zones.split(",") if zone.strip()),
        replicas=replicas,
        catalog=CatalogSpec(items=items, dim=dim, seed=seed).resolved(),
        gpu=gpu,
        store=store,
        gateway=dataclasses.replace(
            _GATEWAY,
            check_interval=check_interval,
            retries=retries,
            passive_ejection=passive_ejection,
            deadline=deadline,
            max_outstanding=max_outstanding,
            fallback=fallback,
        ),
        events=EventSettings(
            enabled=events, appendfsync=appendfsync, backup_interval=backup_interval
        ),
    )
    chosen = get_backend(backend)
    for existing in load_states():
        if existing.owner is not None:
            continue  # a drill's own stack: drills and a detached stack live side by side
        old_backend = get_backend(existing.backend)
        if any(old_backend.service_alive(existing, name) for name in existing.services):
            raise StateError(
                f"stack {existing.id} is already up at {existing.entry_url}; "
                "run `drillkit stack down` first"
            )
        t.warn(f"stack {existing.id} was left half-running; cleaning it up")
        state_files.hold(existing.id)  # not while another drillkit works on it
        take_down(existing, old_backend)
    with t.progress("stack up") as update:
        state = bring_up(get_preset("recommender"), spec, chosen, progress=update)
    for service in state.services.values():
        urls = ", ".join(f"{name} {service.url(name)}" for name in service.ports)
        t.debug(f"{service.name}: {service.role} at {urls} ({service.ident()}), log {service.log}")
    if json_out:
        t.json(state.public_json() | get_preset(state.plan.preset).describe(state))
        return
    t.info(
        f"stack {state.id} is up: {len(state.names_with_role('replica'))} replicas "
        f"({'GPU' if state.gpu else 'CPU'}), logs in {state.run_dir}/logs"
    )
    t.result(state.entry_url)


@app.command()
def status(
    stack: str | None = STACK,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show each service: alive, ready, model version, and the gateway's view of it. With
    several stacks up and none named, list the stacks."""
    from drillkit.observe.status import stack_status

    t = terminal()
    if stack is None and len(states := load_states()) > 1:
        if json_out:
            t.json({"stacks": [_summary(s) for s in states]})
            return
        t.table(
            f"{len(states)} stacks are up (name one with --stack)",
            ["stack", "backend", "started by", "gateway"],
            [(s.id, s.backend, _owner(s), s.entry_url) for s in states],
        )
        return
    state, backend = active_stack(stack)
    snapshot = stack_status(state, backend)
    if json_out:
        t.json(snapshot)
        return
    rows = []
    styles: list[str | None] = []
    for s in snapshot["services"]:
        rows.append(
            (
                s["name"],
                "yes" if s["alive"] else "no",
                "yes" if s["ready"] else "no",
                s.get("gateway_state") or "-",
                s["model_version"] or "-",
                s["url"],
            )
        )
        styles.append(None if s["ready"] else "red")
    t.table(
        f"stack {snapshot['stack']} ({snapshot['backend']}), model store CURRENT = "
        f"{snapshot['current_version']}",
        ["service", "alive", "ready", "gateway sees", "model", "url"],
        rows,
        styles,
    )
    t.result(
        f"{snapshot['ready_replicas']}/{snapshot['replicas']} replicas ready; "
        f"gateway {snapshot['gateway_url']}"
    )


def _summary(state: StackState[Any]) -> dict[str, Any]:
    return {
        "stack": state.id,
        "backend": state.backend,
        "started_by": _owner(state),
        "gateway_url": state.entry_url,
    }


@app.command()
def down(stack: str | None = STACK) -> None:
    """Stop every service of the stack; nothing is left running."""
    state = load_state(stack)
    t = terminal()
    if state is None:
        t.info(f"no stack {stack} is up" if stack else "no stack is up")
        return
    state_files.hold(state.id)  # refused while a drill (or another command) drives it
    take_down(state)
    t.result(f"stack {state.id} is down")


@app.command()
def export(
    compose: Path | None = typer.Option(
        None, "--compose", help="Write the stack as a Docker Compose project in this folder."
    ),
    k8s: Path | None = typer.Option(
        None, "--k8s", help="Write the stack as Kubernetes manifests in this folder."
    ),
    namespace: str | None = typer.Option(
        None,
        "--namespace",
        help="--k8s: the namespace, drillkit-<name> (default: drillkit-recommender).",
    ),
    replicas: int = typer.Option(
        3, "--replicas", "-n", help=f"Model-server replicas (1..{MAX_REPLICAS})."
    ),
    items: int = ITEMS,
    dim: int = DIM,
    seed: int = SEED,
    zones: str = typer.Option(
        "", "--zones", help="Zones, comma-separated (e.g. a,b), as for `stack up`."
    ),
    events: bool = typer.Option(False, "--events", help="The event path, as for `stack up`."),
    force: bool = typer.Option(False, "--force", help="Replace a folder that is not empty."),
) -> None:
    """Write the reference stack as a Docker Compose project (--compose: compose.yaml, the
    model store copies and secrets it mounts) or as Kubernetes manifests (--k8s), running what
    `stack up --backend docker` would run."""
    if (compose is None) == (k8s is None):
        raise InputError("name exactly one of --compose DIR and --k8s DIR")
    if namespace is not None and k8s is None:
        raise InputError("--namespace goes with --k8s")
    catalog = CatalogSpec(items=items, dim=dim, seed=seed).resolved()
    names = tuple(filter(None, (zone.strip() for zone in zones.split(","))))
    spec = RecommenderSpec(
        replicas=replicas,
        catalog=catalog,
        zones=names,
        gpu="off",
        events=EventSettings(enabled=events),
    )
    if compose is not None:
        _export_compose(spec, compose, force=force)
    elif k8s is not None:
        _export_k8s(spec, k8s, namespace=namespace, force=force)


def _warn_missing_stack_image(images: list[str]) -> None:
    from drillkit.backends.docker.image import image_plan
    from drillkit.stacks.export import missing_images

    t = terminal()
    missing = missing_images(images)
    if missing is None:
        t.warn(
            f"could not reach the Docker Engine to check for image {image_plan(gpu=False).tag}; "
            "build it with `drillkit stack build --backend docker`"
        )
    for image in missing or []:
        t.warn(f"image {image} is not built; run `drillkit stack build --backend docker`")


def _export_compose(spec: RecommenderSpec, folder: Path, *, force: bool) -> None:
    from drillkit.stacks.export import export_compose

    t = terminal()
    with t.progress("export") as update:
        result = export_compose(
            get_preset("recommender"), spec, folder, force=force, progress=update
        )
    t.result(
        f"wrote {result.compose}: {len(result.services)} services, {', '.join(result.services)}"
    )
    t.result(f"wrote {result.data}: what they mount (each replica's copy of the model store, ...)")
    for secrets in result.secret_folders:
        t.result(f"wrote {secrets}: secrets, mode 0600")
    _warn_missing_stack_image(result.images)
    t.result(f"run it: {result.up_command()}")


def _export_k8s(spec: RecommenderSpec, folder: Path, *, namespace: str | None, force: bool) -> None:
    from drillkit.stacks.export_k8s import export_k8s

    t = terminal()
    with t.progress("export") as update:
        result = export_k8s(
            get_preset("recommender"),
            spec,
            folder,
            namespace=namespace,
            force=force,
            progress=update,
        )
    t.result(
        f"wrote {result.directory}: {len(result.services)} services in namespace "
        f"{result.namespace}, {', '.join(result.services)}"
    )
    for path, what in result.files:
        t.result(f"wrote {path}: {what}")
    t.result(f"wrote {result.data}: what the pods' volumes start from (the data image)")
    _warn_missing_stack_image([result.stack_image])
    t.result(f"build the data image: {result.build_command()}")
    t.result(
        f"the cluster must be able to pull {result.stack_image} and {result.data_image} "
        "(kind load docker-image, or push them and `kustomize edit set image`)"
    )
    t.result(f"run it: {result.apply_command()}")


@app.command()
def build(
    backend: str = typer.Option(
        "local",
        "--backend",
        "-b",
        help="local: the model store only; docker: the stack image too.",
    ),
    items: int = ITEMS,
    dim: int = DIM,
    seed: int = SEED,
    rebuild: bool = typer.Option(False, "--rebuild", help="Build again even when cached."),
    gpu: str = typer.Option("auto", "--gpu", help="Train on: auto | on | off."),
    base_image: str | None = typer.Option(
        None,
        "--base-image",
        help="docker: build FROM this image with PyPI (a registry is needed). Default: an "
        "offline base from debootstrap, packages from a local wheelhouse.",
    ),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Generate the catalog, train the model and build the model store (cached); with
    --backend docker, build the stack image as well (never pulled)."""
    from drillkit.stacks.recommender.build import BUILD_INFO, ensure_artifacts

    t = terminal()
    if backend not in ("local", "docker"):
        get_backend(backend)  # a plugin backend name is fine; an unknown one is exit 2
    spec = CatalogSpec(items=items, dim=dim, seed=seed).resolved()
    device = {"on": "cuda", "off": "cpu"}.get(gpu, "auto")
    image: dict[str, object] = {}
    if backend == "docker":
        from drillkit.backends.docker.image import build_image, check_base_image_name

        with t.progress("image") as update:
            started = time.monotonic()
            tag, built = build_image(
                base_image=check_base_image_name(base_image) if base_image else None,
                rebuild=rebuild,
                progress=update,
            )
        image = {
            "image": tag,
            "image_built": built,
            "image_seconds": round(time.monotonic() - started, 1),
        }
        t.info(
            f"image {tag} " + (f"built in {image['image_seconds']} s" if built else "is up to date")
        )
    with t.progress("build") as update:
        store = ensure_artifacts(spec, device=device, rebuild=rebuild, progress=update)
    info = json.loads((store.root / BUILD_INFO).read_text()) | image
    checks = store.check_all()
    summary = {
        "store": str(store.root),
        "current": store.current(),
        **info,
        "metrics": {c.version: c.manifest.metrics for c in checks if c.manifest},
    }
    if json_out:
        t.json(summary)
        return
    rows = []
    for c in checks:
        m = c.manifest.metrics if c.manifest else {}
        idx = c.manifest.info.get("index_backend", "?") if c.manifest else "?"
        rows.append(
            (
                c.version + (" (CURRENT)" if c.current else ""),
                f"{m.get('recall_at_10', float('nan')):.4f}",
                f"{m.get('popularity_recall_at_10', float('nan')):.4f}",
                idx,
            )
        )
    t.table(
        f"model store {store.root}", ["version", "recall@10", "popularity recall@10", "index"], rows
    )
