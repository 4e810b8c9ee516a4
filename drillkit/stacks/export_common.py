"""What every ``drillkit stack export`` shares, whatever it writes (a Compose project,
Kubernetes manifests): the rules for the target folder, the write into a temporary folder that
is renamed at the end, the stack planned the docker backend's way, and each service's
container as the docker backend would create it.

An export runs what ``drillkit stack up --backend docker`` runs, so both formats start from
:func:`~drillkit.backends.docker.container_spec`: the same image, command, environment, user
and healthcheck, never a second spelling of them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drillkit.backends.base import ServiceState, StackState
from drillkit.backends.docker import ContainerSpec, container_spec
from drillkit.errors import InputError
from drillkit.stacks.base import StackPreset
from drillkit.stacks.plan import StackPlan

__all__ = [
    "check_target",
    "docker_spec",
    "docker_view",
    "literal",
    "staged",
]


def literal(value: str) -> str:
    """``value`` as Compose and Kubernetes read it literally: both expand ``$`` (Compose's
    ``${VAR}``, Kubernetes' ``$(VAR)`` in args and env) and both read ``$$`` as one ``$``."""
    return value.replace("$", "$$")


def check_target(directory: Path, *, force: bool) -> None:
    """InputError (exit 2) when ``directory`` is not a folder, or is one that is not empty
    and ``force`` is not set."""
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise InputError(f"{directory} exists and is not a folder; name a new folder")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise InputError(f"{directory} exists and is not empty; name a new folder or add --force")


def _move_into_place(tmp: Path, directory: Path) -> None:
    """``tmp`` renamed to ``directory``; an existing ``directory`` is replaced only once the
    new one is in place."""
    if not directory.exists():
        os.rename(tmp, directory)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old.", dir=directory.parent))
    os.rename(directory, aside)  # onto an empty folder: allowed
    try:
        os.rename(tmp, directory)
    except BaseException:
        os.rename(aside, directory)
        raise
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staged(directory: Path, *, force: bool) -> Iterator[Path]:
    """A temporary folder next to ``directory`` to write the export into; renamed to
    ``directory`` when the block ends, removed whole when it raises, so a failed export
    leaves nothing half-written behind. ``directory`` is checked again before the rename:
    nobody may have filled it in the meantime."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent)).resolve()
    try:
        # Containers run as this user (see container_spec): it owns every file here.
        os.chmod(tmp, 0o755)
        yield tmp
        check_target(directory, force=force)
        _move_into_place(tmp, directory)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise


def docker_spec(preset: StackPreset[Any], spec: Any) -> Any:
    """``spec`` resolved for the docker backend and checked as ``stack up --backend docker``
    checks it, before anything is written."""
    spec = preset.resolve(spec, "docker")
    preset.preflight(spec, "docker")
    return spec


def docker_view(
    plan: StackPlan, root: Path, *, stack_image: str
) -> tuple[StackState[ServiceState], dict[str, ContainerSpec]]:
    """A stack state whose run folder is ``root`` (where the backend's helpers write secret
    files), and every service's container as the docker backend creates it."""
    state = StackState[ServiceState](
        id="export", backend="docker", created_at=time.time(), run_dir=str(root), plan=plan
    )
    specs = {s.name: container_spec(state, s.name, stack_image=stack_image) for s in plan.services}
    return state, specs
