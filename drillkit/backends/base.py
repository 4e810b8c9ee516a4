"""The backend contract: how a stack's services are started, observed, disturbed and stopped.

A backend turns a :class:`StackSpec` into running services and a :class:`StackState` that is
saved to disk, so that a later command (``stack status``, ``stack down``, ``heal``) in another
process can find and act on the same services. Backends register under the ``drillkit.backends``
entry-point group, the same way a third-party backend would.

Required methods of a backend: :meth:`Backend.up`, :meth:`Backend.down`,
:meth:`Backend.service_alive`. The fault primitives (:meth:`Backend.kill`,
:meth:`Backend.pause`, :meth:`Backend.resume`, :meth:`Backend.restart`) are what fault kinds
build on.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from drillkit import paths
from drillkit.errors import InputError
from drillkit.fsutil import atomic_write
from drillkit.stacks.recommender.data import CatalogSpec

Progress = Callable[[str, float], None]
"""Progress callback: a message and a completed fraction in 0..1 (or -1 when unknown)."""

STATE_FILE = "stack.json"
MAX_REPLICAS = 16


@dataclass(frozen=True)
class GatewaySettings:
    """Failover settings of the gateway; a drill may turn each off to show its effect."""

    check_interval: float = 0.2
    check_timeout: float = 0.2
    fall: int = 2
    rise: int = 2
    passive_ejection: bool = True
    retries: int = 2
    try_timeout: float = 0.3
    deadline: float = 1.0
    max_outstanding: int = 32  # per replica; beyond it the gateway sheds load (0: no cap)
    fallback: bool = True  # popular-items answers (degraded) when no replica can answer

    def args(self) -> list[str]:
        out = [
            "--check-interval",
            str(self.check_interval),
            "--check-timeout",
            str(self.check_timeout),
            "--fall",
            str(self.fall),
            "--rise",
            str(self.rise),
            "--retries",
            str(self.retries),
            "--try-timeout",
            str(self.try_timeout),
            "--deadline",
            str(self.deadline),
            "--max-outstanding",
            str(self.max_outstanding),
        ]
        if not self.passive_ejection:
            out.append("--no-passive-ejection")
        return out


@dataclass(frozen=True)
class StackSpec:
    """What to bring up."""

    replicas: int = 3
    catalog: CatalogSpec = field(default_factory=CatalogSpec)
    gpu: str = "auto"  # auto | on | off
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    store: Path | None = None  # serve this store in place instead of a copy of the cache
    owner: dict[str, Any] | None = None
    """Recorded in the state from the first save: a drill's pid, so that `drillkit heal` can
    tell a stack whose drill was killed mid-start from one started by `stack up`."""

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise InputError(f"replicas: expected 1..{MAX_REPLICAS}, got {self.replicas}")
        if self.gpu not in ("auto", "on", "off"):
            raise InputError(f"gpu: expected auto, on or off, got {self.gpu!r}")

    def service_names(self) -> list[str]:
        return [*(f"replica-{i}" for i in range(1, self.replicas + 1)), "gateway"]


@dataclass
class ServiceState:
    """One running service as the backend started it."""

    name: str
    role: str  # "replica" | "gateway"
    url: str
    port: int
    pid: int | None = None
    log: str | None = None
    container: str | None = None
    link_port: int | None = None  # where the gateway reaches it (the link proxy), if proxied

    def ident(self) -> str:
        """How to find it on the host: ``pid 1234`` or ``container 0123456789ab``."""
        if self.container:
            return f"container {self.container[:12]}"
        return f"pid {self.pid}"


@dataclass
class StackState:
    """A stack that is (or was) up: everything a later command needs to find it."""

    id: str
    backend: str
    created_at: float
    run_dir: str
    store: str
    gateway_url: str
    admin_token: str
    gpu: bool
    spec: dict[str, Any]
    services: dict[str, ServiceState] = field(default_factory=dict)
    # Each replica serves its own copy of the store, as a node with a local model cache
    # would: a corrupt_model fault can then hit one replica or all of them.
    stores: dict[str, str] = field(default_factory=dict)
    proxy_url: str | None = None  # control API of the link fault proxy, when there is one
    owner: dict[str, Any] | None = None  # set when a `drillkit run` owns the stack: its pid
    image: str | None = None  # docker: the stack image the containers run
    network: str | None = None  # docker: the stack's own network
    session: str | None = None  # docker: the session label on everything created

    def replica_stores(self) -> dict[str, Path]:
        return {name: Path(root) for name, root in self.stores.items()}

    def all_stores(self) -> list[Path]:
        """The origin store and every replica's copy."""
        return [Path(self.store), *self.replica_stores().values()]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackState:
        services = {k: ServiceState(**v) for k, v in data.get("services", {}).items()}
        return cls(**{**data, "services": services})

    def replicas(self) -> list[ServiceState]:
        return [s for s in self.services.values() if s.role == "replica"]


def state_path() -> Path:
    return paths.state_dir() / STATE_FILE


def save_state(state: StackState) -> None:
    """Write the active stack's state atomically, readable by the owner only (it holds the
    admin token)."""
    atomic_write(state_path(), json.dumps(state.to_json(), indent=2).encode(), mode=0o600)


def load_state() -> StackState | None:
    """The active stack, or None. A state file that cannot be parsed is an InputError."""
    path = state_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: stack state is not valid JSON ({exc}); remove it") from None
    try:
        return StackState.from_json(data)
    except TypeError as exc:
        raise InputError(f"{path}: stack state is malformed ({exc}); remove it") from None


def clear_state() -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path().unlink()


class Backend(ABC):
    """Runs the services of a stack somewhere."""

    name: ClassVar[str]

    @abstractmethod
    def up(self, spec: StackSpec, *, progress: Progress | None = None) -> StackState:
        """Start every service and return once all are ready; on failure leave nothing
        running and raise an EnvironmentFailure."""

    @abstractmethod
    def down(self, state: StackState) -> None:
        """Stop every service of the stack; idempotent."""

    @abstractmethod
    def service_alive(self, state: StackState, name: str) -> bool:
        """Whether the service's process or container is running (not necessarily ready)."""

    def service_status(self, state: StackState, name: str) -> str:
        """``running``, ``paused`` or ``exited``."""
        return "running" if self.service_alive(state, name) else "exited"

    def kill(self, state: StackState, name: str, *, signal: str = "KILL") -> None:
        raise NotImplementedError(f"{self.name} backend cannot kill services")

    def pause(self, state: StackState, name: str) -> None:
        raise NotImplementedError(f"{self.name} backend cannot pause services")

    def resume(self, state: StackState, name: str) -> None:
        raise NotImplementedError(f"{self.name} backend cannot resume services")

    def restart(self, state: StackState, name: str) -> None:
        raise NotImplementedError(f"{self.name} backend cannot restart services")

    def check_faults(self, kinds: set[str]) -> None:
        """Raise BackendUnavailable before anything starts when a fault kind cannot work on
        this backend here (the docker backend's latency needs the kernel's netem)."""
        return None

    # Network links between the gateway and a replica. Each returns a line of evidence.
    def cut_link(self, state: StackState, name: str, *, mode: str) -> str:
        """Cut the gateway <-> ``name`` link: ``blackhole`` (packets dropped, connections
        hang) or ``reject`` (refused or reset)."""
        raise NotImplementedError(f"{self.name} backend cannot cut network links")

    def slow_link(self, state: StackState, name: str, *, delay: float, jitter: float) -> str:
        """Add ``delay`` seconds (+- ``jitter``) to each round trip on the link."""
        raise NotImplementedError(f"{self.name} backend cannot slow network links")

    def restore_link(self, state: StackState, name: str) -> None:
        """Undo :meth:`cut_link` / :meth:`slow_link`; idempotent, also when nothing is set."""
        raise NotImplementedError(f"{self.name} backend cannot restore network links")

    def probe_link(self, state: StackState, name: str, *, timeout: float) -> tuple[str, float]:
        """One HTTP request over the link as the gateway sends it: ``answered``, ``hung``,
        ``refused`` or ``reset``, and the seconds it took."""
        raise NotImplementedError(f"{self.name} backend cannot probe network links")


def probe_tcp(host: str, port: int, *, timeout: float) -> tuple[str, float]:
    """Send one HTTP request to ``host:port`` and say what happened, with the time it took."""
    import socket
    import time

    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(max(0.01, timeout - (time.monotonic() - started)))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            data = sock.recv(64)
            outcome = "answered" if data else "reset"
    except TimeoutError:
        outcome = "hung"
    except ConnectionRefusedError:
        outcome = "refused"
    except (ConnectionResetError, BrokenPipeError):
        outcome = "reset"
    except OSError:  # no route to host, name not known: the address went silent
        outcome = "unreachable"
    return outcome, time.monotonic() - started


_BUILTIN = {
    "local": "drillkit.backends.local:LocalBackend",
    "docker": "drillkit.backends.docker:DockerBackend",
}


def backend_names() -> list[str]:
    names = set(_BUILTIN)
    names.update(ep.name for ep in entry_points(group="drillkit.backends"))
    return sorted(names)


def get_backend(name: str) -> Backend:
    """Instantiate a backend by name from the ``drillkit.backends`` entry points."""
    from drillkit.plugins import load_plugin

    cls = load_plugin("drillkit.backends", name, _BUILTIN, what="backend")
    backend = cls() if isinstance(cls, type) else None
    if not isinstance(backend, Backend):
        raise InputError(f"backend {name!r} does not implement drillkit.backends.base.Backend")
    return backend
