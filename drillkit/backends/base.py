"""The backend contract: how the services of a :class:`~drillkit.stacks.plan.StackPlan` are
started, observed, disturbed and stopped.

A backend runs any plan and knows nothing of what its services are: it resolves the plan's
references (ports, URLs between services, mounts), starts the services in dependency order,
waits for each readiness check, and returns a :class:`StackState` that is saved to disk, so
that a later command (``stack status``, ``stack down``, ``heal``) in another process finds and
acts on the same services. Each backend has its own typed state (:attr:`Backend.State`: a
:class:`StackState` subclass whose services are its own :class:`ServiceState` subclass), so
a process id or a container id is a field of the backend that set it, not a loose key.

Backends register under the ``drillkit.backends`` entry-point group, the built-in ones
exactly as a third-party backend would. Required methods: :meth:`Backend.up`,
:meth:`Backend.down`, :meth:`Backend.service_status`. The fault primitives
(:meth:`~Backend.kill`, :meth:`~Backend.pause`, :meth:`~Backend.resume`,
:meth:`~Backend.restart`, and for the plan's links :meth:`~Backend.cut_link`,
:meth:`~Backend.slow_link`, :meth:`~Backend.restore_link`, :meth:`~Backend.probe_link`) are
what fault kinds build on. ``docs/plugins.md`` shows how to write one.
"""

from __future__ import annotations

import contextlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drillkit import safejson
from drillkit import state as state_files
from drillkit.errors import InputError
from drillkit.fsutil import atomic_write, contained, read_private
from drillkit.netprobe import http_ok, probe_tcp
from drillkit.stacks.plan import NAME_PATTERN, HttpCheck, Link, StackPlan, TcpCheck

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backend",
    "Owner",
    "Progress",
    "ServiceState",
    "StackIdentity",
    "StackState",
    "backend_names",
    "clear_state",
    "get_backend",
    "load_state",
    "load_states",
    "probe_tcp",
    "read_state",
    "save_state",
    "state_path",
]

ENTRY_POINT_GROUP = "drillkit.backends"

Progress = Callable[[str, float], None]
"""Progress callback: a message and a completed fraction in 0..1 (or -1 when unknown)."""

#: A saved state is a few kilobytes; anything much larger is not drillkit's.
MAX_STATE_BYTES = 4 << 20


class Owner(BaseModel):
    """The ``drillkit run`` that owns a stack: when its process is gone, `drillkit heal`
    takes the stack down instead of healing it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pid: int
    scenario: str


class ServiceState(BaseModel):
    """One service as its backend started it. Backends subclass it with what they need to
    find the service again (a pid, a container id)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=f"^{NAME_PATTERN}$")
    role: str
    ports: dict[str, Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=dict)
    """Where drillkit reaches each named port from the host, on 127.0.0.1 (or ``hosts``)."""
    hosts: dict[str, IPv4Address] = Field(default_factory=dict)
    """A port that listens on another address of the host than 127.0.0.1 (``stack.listen``)."""
    log: str | None = None

    def host(self, port: str) -> str:
        """The address drillkit reaches a named port at."""
        address = self.hosts.get(port)
        return str(address) if address is not None else "127.0.0.1"

    def url(self, port: str = "http") -> str:
        """``http://127.0.0.1:PORT`` of a named port, as drillkit reaches it."""
        try:
            return f"http://{self.host(port)}:{self.ports[port]}"
        except KeyError:
            raise InputError(f"service {self.name} has no port {port!r}") from None

    def ident(self) -> str:
        """How to find the service on the host, for evidence lines (``pid 1234``)."""
        return self.name


S = TypeVar("S", bound=ServiceState)


class StackState(BaseModel, Generic[S]):
    """A stack that is (or was) up: its plan and everything a later command needs."""

    model_config = ConfigDict(extra="forbid")

    id: str
    backend: str
    created_at: float
    run_dir: str
    plan: StackPlan
    gpu: bool = False
    owner: Owner | None = None
    services: dict[str, S] = Field(default_factory=dict)

    @property
    def entry_url(self) -> str:
        """Where clients send requests (the plan's entry endpoint)."""
        entry = self.plan.entry
        return self.service(entry.service).url(entry.port)

    def service(self, name: str) -> S:
        try:
            return self.services[name]
        except KeyError:
            raise InputError(f"no service {name!r} in stack {self.id}") from None

    def secret(self, name: str) -> str:
        return self.plan.secrets[name]

    def written_files(self) -> list[str]:
        """Files the backend writes to while the stack runs (service logs); each must lie in
        the stack's folder, whatever a state file says. Backends with more extend it."""
        return [s.log for s in self.services.values() if s.log is not None]

    def role_of(self, name: str) -> str | None:
        service = self.services.get(name)
        return service.role if service is not None else None

    def names_with_role(self, role: str) -> list[str]:
        return [s.name for s in self.plan.with_role(role)]

    def public_json(self) -> dict[str, Any]:
        """The state as JSON data with the plan's secrets hidden, for printing; with the
        entry URL (``gateway_url``, its name in format v1) and each service's ``url``."""
        data = self.model_dump(mode="json")
        data["plan"] = self.plan.redacted()
        data["gateway_url"] = self.entry_url
        for name, service in self.services.items():
            if "http" in service.ports:
                data["services"][name]["url"] = service.url()
        return data


@dataclass(frozen=True)
class StackIdentity:
    """What :func:`drillkit.stacks.base.bring_up` decided before a backend starts a stack."""

    id: str
    run_dir: Path
    gpu: bool
    owner: Owner | None = None
    created_at: float = 0.0

    def fields(self) -> dict[str, Any]:
        """The :class:`StackState` fields it sets."""
        return {
            "id": self.id,
            "run_dir": str(self.run_dir),
            "gpu": self.gpu,
            "owner": self.owner,
            "created_at": self.created_at or time.time(),
        }


T = TypeVar("T", bound=StackState[Any])


class Backend(ABC, Generic[T]):
    """Runs the services of a stack plan somewhere."""

    name: ClassVar[str]
    State: ClassVar[type[StackState[Any]]]
    """The backend's typed stack state, used to read a saved state back."""

    # -- lifecycle --------------------------------------------------------------------------
    def gpu_available(self) -> bool:
        """Whether services that want a GPU (:attr:`ServicePlan.gpu`) can get one here."""
        return False

    def no_gpu_reason(self) -> str:
        """Why :meth:`gpu_available` is false, and what to do about it."""
        return f"the {self.name} backend gives services no GPU"

    @abstractmethod
    def up(self, plan: StackPlan, stack: StackIdentity, *, progress: Progress | None = None) -> T:
        """Start every service in dependency order and return once each passed its readiness
        check. The state is saved as services start, so that ``stack down`` can clean up a
        half start; on failure leave nothing running and raise an EnvironmentFailure."""

    @abstractmethod
    def down(self, state: T) -> None:
        """Stop every service of the stack and remove what the backend created; idempotent.
        Files of the stack (its run folder, the plan's data) are not the backend's."""

    @abstractmethod
    def service_status(self, state: T, name: str) -> str:
        """``running``, ``paused`` or ``exited``."""

    def service_alive(self, state: T, name: str) -> bool:
        """Whether the service's process or container runs (not necessarily ready)."""
        return self.service_status(state, name) != "exited"

    def ready(self, state: T, name: str, *, timeout: float = 1.0) -> bool:
        """Whether the service passes its plan's readiness check now, from the host; one
        without a check is ready while it runs."""
        check = state.plan.service(name).ready
        service = state.services.get(name)
        if service is None:
            return False
        if check is None:
            return self.service_alive(state, name)
        port = service.ports.get(check.port)
        if port is None:
            return False
        host = service.host(check.port)
        if isinstance(check, TcpCheck):
            return probe_tcp(host, port, timeout=timeout, http=False)[0] == "answered"
        assert isinstance(check, HttpCheck)
        return http_ok(host, port, check.path, timeout=timeout)

    def check_capabilities(self, needs: set[str]) -> None:
        """Raise BackendUnavailable before anything starts when one of the primitives a
        drill's fault kinds need (:attr:`FaultKind.needs`, e.g. ``slow_link``) cannot work
        here: the docker backend's ``slow_link`` needs the kernel's netem."""
        return None

    # -- fault primitives -------------------------------------------------------------------
    def kill(self, state: T, name: str, *, signal: str = "KILL") -> None:
        raise NotImplementedError(f"{self.name} backend cannot kill services")

    def pause(self, state: T, name: str) -> None:
        raise NotImplementedError(f"{self.name} backend cannot pause services")

    def resume(self, state: T, name: str) -> None:
        raise NotImplementedError(f"{self.name} backend cannot resume services")

    def restart(self, state: T, name: str) -> None:
        """Start a service again (killing it first if it runs); the new process or container
        is recorded in the saved state."""
        raise NotImplementedError(f"{self.name} backend cannot restart services")

    def host_path(self, state: T, name: str, path: str) -> tuple[Path, Path]:
        """Where ``path``, as service ``name`` sees it, lies on the host: the mount it is in
        (its folder on the host) and the file there. This default reads the plan's mounts
        (the local and docker backends), and only those inside the stack's own folder (its
        copies of a store): a saved state is not trusted to name any folder of the machine.
        TargetError when no such mount holds ``path``."""
        from drillkit.errors import TargetError

        best = None
        for mount in state.plan.service(name).mounts:
            target = mount.target.rstrip("/")
            if (path == target or path.startswith(target + "/")) and (
                best is None or len(target) > len(best.target.rstrip("/"))
            ):
                best = mount
        if best is None:
            raise TargetError(f"{path} in {name} lies in none of its mounts")
        if not Path(best.source).resolve().is_relative_to(Path(state.run_dir).resolve()):
            raise TargetError(
                f"{path} in {name} lies in {best.source}, which is not the stack's own copy "
                f"(its folder is {state.run_dir}); corrupt_model damages a store in place"
            )
        rest = path[len(best.target.rstrip("/")) :].lstrip("/")
        return Path(best.source), Path(best.source) / rest

    # Network links of the plan. Each cut or slow returns a line of evidence.
    def cut_link(self, state: T, link: Link, *, mode: str) -> str:
        """Cut ``link``: ``blackhole`` (packets dropped, connections hang) or ``reject``
        (refused or reset)."""
        raise NotImplementedError(f"{self.name} backend cannot cut network links")

    def slow_link(self, state: T, link: Link, *, delay: float, jitter: float) -> str:
        """Add ``delay`` seconds (+- ``jitter``) to each round trip on ``link``."""
        raise NotImplementedError(f"{self.name} backend cannot slow network links")

    def restore_link(self, state: T, link: Link) -> None:
        """Undo :meth:`cut_link` / :meth:`slow_link`; idempotent, also when nothing is set."""
        raise NotImplementedError(f"{self.name} backend cannot restore network links")

    def probe_link(self, state: T, link: Link, *, timeout: float) -> tuple[str, float]:
        """One HTTP request over ``link`` as its source sends it: ``answered``, ``hung``,
        ``refused``, ``reset`` or ``unreachable``, and the seconds it took."""
        raise NotImplementedError(f"{self.name} backend cannot probe network links")


# -- the saved state ---------------------------------------------------------------------------
def state_path(stack_id: str) -> Path:
    return state_files.stack_dir(stack_id) / state_files.STATE_FILE


def save_state(state: StackState[Any]) -> None:
    """Write a stack's state atomically into its folder, readable by the owner only (it holds
    the plan's secrets)."""
    data = state.model_dump_json(indent=2).encode()
    atomic_write(state_path(state_files.check_id(state.id)), data, mode=0o600)


def load_state(stack_id: str | None = None) -> StackState[Any] | None:
    """The stack ``stack_id``, or the only stack that is up when none is named (None when
    there is none; InputError naming them when several are up)."""
    if stack_id is None:
        ids = state_files.stack_ids()
        if not ids:
            return None
        if len(ids) > 1:
            raise InputError(
                f"{len(ids)} stacks are up ({', '.join(ids)}): name one with --stack ID"
            )
        stack_id = ids[0]
    return read_state(state_files.check_id(stack_id))


def load_states() -> list[StackState[Any]]:
    """Every stack whose state is saved, oldest first."""
    found = []
    for stack_id in state_files.stack_ids():
        state = read_state(stack_id)
        if state is not None:
            found.append(state)
    return found


def read_state(stack_id: str) -> StackState[Any] | None:
    """Parse and check a saved state: nothing in it is trusted. It must name this stack, its
    run folder must be this stack's folder and the plan's data must lie inside it; the file
    must be a regular file of this user's (links are not followed). InputError (exit 2) for
    a file that is not what drillkit writes."""
    path = state_path(stack_id)
    try:
        raw = read_private(path, limit=MAX_STATE_BYTES)
    except FileNotFoundError:
        return None
    try:
        data = safejson.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: stack state is not valid JSON ({exc}); remove it") from None
    backend = data.get("backend") if isinstance(data, dict) else None
    if not isinstance(backend, str):
        raise InputError(f"{path}: stack state names no backend; remove it")
    model = backend_class(backend).State
    try:
        state = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InputError(
            f"{path}: stack state is malformed ({where}: {first['msg']}); remove it"
        ) from None
    folder = path.parent.resolve()
    if state.id != stack_id:
        raise InputError(f"{path}: the state names stack {state.id!r}, not {stack_id}")
    if Path(state.run_dir).resolve() != folder:
        raise InputError(f"{path}: run_dir {state.run_dir!r} is not this stack's folder {folder}")
    if state.plan.data is not None and not Path(state.plan.data).resolve().is_relative_to(folder):
        raise InputError(f"{path}: plan.data {state.plan.data!r} lies outside {folder}")
    for written in state.written_files():
        try:
            contained(written, [folder], what="log")
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None
    return state


def clear_state(stack_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(stack_id).unlink()


# -- the registry ------------------------------------------------------------------------------
def backend_names() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def backend_class(name: str) -> type[Backend[Any]]:
    """The backend class registered as ``name`` under ``drillkit.backends``."""
    from drillkit.plugins import load_plugin

    cls = load_plugin(ENTRY_POINT_GROUP, name, what="backend")
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise InputError(f"backend {name!r} does not implement drillkit.backends.base.Backend")
    return cls


def get_backend(name: str) -> Backend[Any]:
    """Instantiate a backend by name from the ``drillkit.backends`` entry points."""
    return backend_class(name)()
