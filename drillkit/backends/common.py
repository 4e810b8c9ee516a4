"""What every backend does the same way with a plan: start its services in dependency order,
wait for their readiness checks, fail fast when one exits, and pick free ports."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drillkit.backends.base import Backend, Progress, StackState, save_state
from drillkit.errors import StackNotReady
from drillkit.fsutil import atomic_write
from drillkit.stacks.plan import (
    Arg,
    BindHost,
    Join,
    MountRef,
    PortRef,
    Program,
    ServicePlan,
    UrlRef,
)

READY_TIMEOUT = 180.0
_POLL = 0.1


def log_tail(path: str | None, lines: int = 5) -> str:
    """The last non-empty lines of a log, joined on one line."""
    if not path:
        return ""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    tail = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(tail)


def start_in_order(
    backend: Backend[Any],
    state: StackState[Any],
    *,
    start: Callable[[ServicePlan], None],
    check_running: Callable[[str], None],
    report: Progress,
    timeout: float = READY_TIMEOUT,
) -> None:
    """Start the plan's services wave by wave, then wait until each passes its readiness
    check. A service whose dependency must be *ready* starts once it is. ``start`` starts
    one service and records it in ``state`` (saved after each start, so that a half start
    can be cleaned up); ``check_running(name)`` raises when a service has exited, so a crash
    fails fast instead of waiting for the timeout."""
    deadline = time.monotonic() + timeout
    checked = [s.name for s in state.plan.services if s.ready is not None]
    ready: set[str] = set()

    def wait(names: list[str]) -> None:
        pending = [n for n in names if n not in ready]
        while pending:
            for name in list(pending):
                check_running(name)
                if backend.ready(state, name):
                    pending.remove(name)
                    ready.add(name)
                    report(f"{name} ready", len(ready) / max(1, len(checked)))
            if not pending:
                return
            if time.monotonic() > deadline:
                raise StackNotReady(
                    f"not ready after {timeout:.0f} s: {', '.join(sorted(pending))}; "
                    f"logs in {state.run_dir}/logs"
                )
            time.sleep(_POLL)

    for wave in state.plan.start_order():
        for service in wave:
            wait([d.service for d in service.depends_on if d.condition == "ready"])
            report(f"starting {service.name}", -1)
            start(service)
            save_state(state)
    wait(checked)


def service_log(state: StackState[Any], name: str) -> str:
    return str(Path(state.run_dir) / "logs" / f"{name}.log")


def resolve(
    arg: Arg,
    *,
    bind: str,
    port: Callable[[PortRef], str],
    url: Callable[[UrlRef], str],
    mount: Callable[[MountRef], str],
) -> str:
    """One program argument with its references resolved by a backend's own rules."""
    if isinstance(arg, str):
        return arg
    if isinstance(arg, Join):
        return "".join(
            resolve(part, bind=bind, port=port, url=url, mount=mount) for part in arg.parts
        )
    if isinstance(arg, BindHost):
        return bind
    if isinstance(arg, PortRef):
        return port(arg)
    if isinstance(arg, UrlRef):
        return url(arg)
    return mount(arg)


def argv(
    program: Program, args: list[str], *, python: str, executable: str | None = None
) -> list[str]:
    """The command line of a program: ``python -m MODULE ARGS`` or ``EXECUTABLE ARGS``."""
    if program.module is not None:
        return [python, "-m", program.module, *args]
    assert program.executable is not None
    return [executable or program.executable, *args]


def secret_files(state: StackState[Any], name: str) -> Path | None:
    """Write the service's secrets as files of their own (mode 0600, a folder per service):
    a secret reaches a service as a file, and its environment carries only the path
    (``<VAR>_FILE``), so neither ``/proc/PID/environ`` nor ``docker inspect`` shows it. The
    folder, or None when the service has no secret."""
    service = state.plan.service(name)
    if not service.secrets:
        return None
    folder = Path(state.run_dir) / "secrets" / name
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for secret in service.secrets.values():
        atomic_write(folder / secret, state.secret(secret).encode(), mode=0o600)
    return folder


def secret_env(state: StackState[Any], name: str, folder: str) -> dict[str, str]:
    """``{VAR}_FILE`` for each secret of the service, pointing into ``folder`` as the service
    sees it."""
    service = state.plan.service(name)
    return {
        f"{var}_FILE": f"{folder.rstrip('/')}/{secret}" for var, secret in service.secrets.items()
    }
