"""A stack's plan as a Docker Compose project: ``drillkit stack export --compose DIR``.

The project runs what the docker backend would run, container for container: the same image
(drillkit's stack image, tagged by the digest of the source it was built from), the same
command with every reference resolved the docker backend's way (service names as hosts, which
Compose's service DNS answers), the same environment, user and healthcheck
(:func:`drillkit.backends.docker.container_spec`), every plan port published on 127.0.0.1 on
a port Docker picks. What the preset prepares for the stack (each replica's copy of the model
store, the monitoring's rules, ...) is written under ``DIR/data`` and mounted from there by
relative paths, and each service's secrets are files under ``DIR/secrets/<service>/`` (mode
0600), mounted read-only where the docker backend mounts them; so the folder can be moved
and ``docker-compose -f DIR/compose.yaml up -d`` starts the stack anywhere the image is.

The project is written into a temporary folder next to ``DIR`` and renamed at the end:
a failed export leaves nothing half-written behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from drillkit import __version__
from drillkit.backends.base import Progress
from drillkit.backends.common import secret_files
from drillkit.backends.docker import LABEL_ROLE, SECRETS_MOUNT, STOP_GRACE, ContainerSpec
from drillkit.errors import DrillkitError
from drillkit.stacks.base import StackPreset
from drillkit.stacks.export_common import check_target, docker_spec, docker_view, literal, staged
from drillkit.stacks.plan import ServicePlan, StackPlan

__all__ = [
    "COMPOSE_FILE",
    "COMPOSE_VERSION",
    "LABEL_EXPORTED",
    "ExportResult",
    "compose_project",
    "export_compose",
    "missing_images",
]

COMPOSE_FILE = "compose.yaml"
#: The file format: docker-compose 1.29 (v1) reads it, and so does `docker compose` (v2).
COMPOSE_VERSION = "2.4"
#: On every exported service, with :data:`~drillkit.backends.docker.LABEL_ROLE`.
LABEL_EXPORTED = "drillkit.exported"
#: What the preset prepares for the stack, and the services' secrets, inside the project.
DATA = "data"
SECRETS = "secrets"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_compose` wrote."""

    directory: Path
    compose: Path
    services: list[str]
    secret_folders: list[Path] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.directory / DATA

    def up_command(self) -> str:
        return f"docker-compose -f {self.compose} up -d"


def _source(path: str, root: Path) -> str:
    """A mount's source: ``./...`` inside the project, else the absolute path as it is."""
    source = Path(path).resolve()
    if source.is_relative_to(root):
        return "./" + source.relative_to(root).as_posix() if source != root else "."
    return path


def _service(
    service: ServicePlan,
    container: ContainerSpec,
    specs: dict[str, ContainerSpec],
    secrets: Path | None,
    root: Path,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "image": container.image,
        "command": [literal(arg) for arg in container.command],
        "hostname": service.name,
    }
    if container.user is not None:
        out["user"] = container.user
    out["environment"] = {k: literal(v) for k, v in sorted(container.environment.items())}
    if service.ports:
        out["ports"] = [f"127.0.0.1::{port.number}" for port in service.ports]
    volumes = [
        f"{_source(m.source, root)}:{m.target}" + (":ro" if m.read_only else "")
        for m in sorted(service.mounts, key=lambda m: m.target)
    ]
    if secrets is not None:
        volumes.append(f"{_source(str(secrets), root)}:{SECRETS_MOUNT}:ro")
    if volumes:
        out["volumes"] = volumes
    if (check := container.healthcheck) is not None:
        out["healthcheck"] = {
            "test": [literal(part) for part in check.test],
            "interval": f"{check.interval}s",
            "timeout": f"{check.timeout}s",
            "retries": check.retries,
            "start_period": f"{check.start_period}s",
        }
    if service.depends_on:
        out["depends_on"] = {
            dep.service: {
                "condition": "service_healthy"
                if dep.condition == "ready" and specs[dep.service].healthcheck is not None
                else "service_started"
            }
            for dep in sorted(service.depends_on, key=lambda d: d.service)
        }
    out["stop_signal"] = "SIGTERM"
    out["stop_grace_period"] = f"{STOP_GRACE}s"
    out["labels"] = {LABEL_EXPORTED: "true", LABEL_ROLE: service.role}
    return out


def compose_project(
    plan: StackPlan, root: Path, *, stack_image: str
) -> tuple[dict[str, Any], list[Path]]:
    """The Compose file of ``plan`` for a project in ``root`` (mount sources under it become
    relative), and the secret folders written under ``root/secrets``: one per service that
    has secrets, a file per secret (mode 0600)."""
    root = root.resolve()
    # The backend's own helpers read a stack state: this one's folder is the project.
    state, specs = docker_view(plan, root, stack_image=stack_image)
    services: dict[str, Any] = {}
    folders: list[Path] = []
    for service in plan.services:
        folder = secret_files(state, service.name)
        if folder is not None:
            folders.append(folder)
        services[service.name] = _service(service, specs[service.name], specs, folder, root)
    return {"version": COMPOSE_VERSION, "services": services}, folders


def missing_images(images: list[str]) -> list[str] | None:
    """The images of ``images`` the Docker Engine does not have; None when no engine
    answers (nothing could be checked)."""
    from drillkit.backends.docker.image import docker_client, image_present

    try:
        client = docker_client()
        return [image for image in images if not image_present(client, image)]
    except DrillkitError:
        return None
    except Exception as exc:  # the engine failing mid-way: as good as none
        from drillkit.backends.docker import daemon_error

        if daemon_error(exc):
            return None
        raise


def export_compose(
    preset: StackPreset[Any],
    spec: Any,
    directory: Path,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    """Write ``preset``'s stack for ``spec`` as a Compose project in ``directory``: an
    InputError (exit 2, nothing written) when ``directory`` exists and is not empty, unless
    ``force`` (then it is replaced whole)."""
    from drillkit.backends.docker.image import image_plan

    report = progress or (lambda message, fraction: None)
    directory = Path(os.path.abspath(directory))
    check_target(directory, force=force)
    spec = docker_spec(preset, spec)
    with staged(directory, force=force) as tmp:
        plan = preset.plan(spec, data_dir=tmp / DATA, gpu=False, progress=report)
        stack_image = image_plan(gpu=False).tag
        compose, folders = compose_project(plan, tmp, stack_image=stack_image)
        header = (
            f"# A {plan.preset} stack exported by drillkit {__version__} "
            "(`drillkit stack export --compose`).\n"
            f"# Run it: docker-compose -f {COMPOSE_FILE} up -d\n"
        )
        text = header + yaml.safe_dump(compose, sort_keys=False, width=1_000_000)
        (tmp / COMPOSE_FILE).write_text(text)
        report("written", 1.0)
    images = sorted({str(s["image"]) for s in compose["services"].values()})
    return ExportResult(
        directory=directory,
        compose=directory / COMPOSE_FILE,
        services=list(compose["services"]),
        secret_folders=[directory / f.relative_to(tmp) for f in folders],
        images=images,
    )
