"""The docker backend: every service of a plan is a container on the stack's own network.

One bridge network per stack; services reach each other by service name
(``http://replica-1:8000``, Compose-style DNS aliases), and every port of a plan is published
on 127.0.0.1 for the load generator and drillkit's own probes. A plan's mounts are bind
mounts (read-only unless the plan says otherwise): a replica's copy of the model store at
``/store`` is damaged on the host side of the mount exactly as a failing disk under a node
would damage it. Services run drillkit's stack image unless their program names another.

Everything drillkit creates carries labels (:data:`LABEL_STACK`, :data:`LABEL_SESSION`,
:data:`LABEL_SERVICE`, and :data:`LABEL_TARGET` on the services the plan marks as fault
targets); teardown finds containers and networks by label, and every fault primitive refuses
a container that does not carry this stack's labels (:class:`~drillkit.errors.TargetError`,
exit 2).

Network faults on a link run a short-lived sidecar from the stack image in the link target's
network namespace with ``NET_ADMIN``: iptables rules in chains of drillkit's own for cuts, a
netem qdisc for latency, both aimed at the link source's address. Undo deletes those chains
and the qdisc, so it is idempotent, and a container that was restarted in between has a fresh
namespace with nothing to undo.

Images are never pulled: containers are created from an image that :func:`require_image`
found, never through ``containers.run`` (which pulls on a miss).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import ipaddress
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field

from drillkit import safejson
from drillkit.backends.base import (
    Backend,
    Progress,
    ServiceState,
    StackIdentity,
    StackState,
    save_state,
)
from drillkit.backends.common import (
    argv,
    resolve,
    secret_env,
    secret_files,
    service_log,
    start_in_order,
)
from drillkit.backends.docker.image import docker_client, image_plan, require_image
from drillkit.errors import BackendUnavailable, EnvironmentFailure, StackNotReady, TargetError
from drillkit.netprobe import free_port
from drillkit.stacks.plan import HttpCheck, Link, MountRef, StackPlan, UrlRef

__all__ = [
    "LABEL_ROLE",
    "LABEL_SERVICE",
    "LABEL_SESSION",
    "LABEL_STACK",
    "LABEL_TARGET",
    "SECRETS_MOUNT",
    "STOP_GRACE",
    "ContainerSpec",
    "DockerBackend",
    "DockerService",
    "DockerStack",
    "HealthSpec",
    "container_command",
    "container_spec",
]

LABEL_STACK = "drillkit.stack"
LABEL_SESSION = "drillkit.session"
LABEL_SERVICE = "drillkit.service"
LABEL_ROLE = "drillkit.role"
LABEL_TARGET = "drillkit.target"

REPLICA_PORT = 8000
GATEWAY_PORT = 8080
STOP_GRACE = 8
SIDECAR_TIMEOUT = 60
#: Where a container finds its secrets, one file each.
SECRETS_MOUNT = "/run/drillkit/secrets"

#: One id per drillkit process (or inherited from DRILLKIT_SESSION): every container and
#: network of a run carries it, so `docker ps --filter label=drillkit.session=...` finds them.
SESSION_ID = os.environ.get("DRILLKIT_SESSION") or secrets.token_hex(6)

_CHAINS = (("INPUT", "DRILLKIT-IN"), ("OUTPUT", "DRILLKIT-OUT"))
_SECONDS_NS = 1_000_000_000


def _restore_script() -> str:
    """Remove every rule and qdisc drillkit may have set in a namespace; never fails."""
    lines = []
    for parent, chain in _CHAINS:
        lines += [
            f"while iptables -w -D {parent} -j {chain} 2>/dev/null; do :; done",
            f"iptables -w -F {chain} 2>/dev/null",
            f"iptables -w -X {chain} 2>/dev/null",
        ]
    lines += ["tc qdisc del dev eth0 root 2>/dev/null", "true"]
    return "\n".join(lines)


def _cut_script(mode: str, peers: list[str]) -> str:
    """iptables rules cutting ``peers`` off: dropped both ways, or refused and reset. Rules
    add up: cutting a second link to the same service keeps the first one's."""
    lines = ["set -e"]
    for parent, chain in _CHAINS:
        lines += [
            f"iptables -w -N {chain} 2>/dev/null || true",
            f"iptables -w -C {parent} -j {chain} 2>/dev/null || iptables -w -I {parent} -j {chain}",
        ]
    for peer in peers:
        if mode == "blackhole":
            lines += [
                f"iptables -w -A DRILLKIT-IN -s {peer} -j DROP",
                f"iptables -w -A DRILLKIT-OUT -d {peer} -j DROP",
            ]
        else:
            # Inbound only: the resets this sends go out through OUTPUT and must not be dropped.
            lines += [
                f"iptables -w -A DRILLKIT-IN -s {peer} -p tcp -j REJECT --reject-with tcp-reset",
                f"iptables -w -A DRILLKIT-IN -s {peer} -j REJECT",
            ]
    lines.append("iptables -w -S DRILLKIT-IN")
    return "\n".join(lines)


def _latency_script(peers: list[str], delay_ms: float, jitter_ms: float) -> str:
    """netem on the egress towards ``peers`` only: one added delay per round trip. A second
    link slowed on the same service adds its peers to the same netem band."""
    jitter = f" {jitter_ms:.0f}ms" if jitter_ms > 0 else ""
    lines = [
        "set -e",
        "if ! tc qdisc show dev eth0 | grep -q netem; then",
        "  tc qdisc del dev eth0 root 2>/dev/null || true",
        "  tc qdisc add dev eth0 root handle 1: prio",
        f"  tc qdisc add dev eth0 parent 1:3 handle 30: netem delay {delay_ms:.0f}ms{jitter}",
        "fi",
    ]
    lines += [
        f"tc filter add dev eth0 protocol ip parent 1:0 prio 3 u32 match ip dst {peer}/32 "
        "flowid 1:3"
        for peer in peers
    ]
    lines.append("tc qdisc show dev eth0")
    return "\n".join(lines)


_DOWN_SWEEPS = 5
_DOWN_SWEEP_PAUSE = 0.5


T = TypeVar("T")
#: What the Docker Engine says when a published host port is taken, and how often to choose
#: another.
_PORT_TAKEN = ("port is already allocated", "address already in use")
_PORT_TRIES = 5
B = TypeVar("B")


@dataclass(frozen=True)
class HealthSpec:
    """A container's healthcheck: ``test`` (Docker's ``CMD`` form) and its timing in
    seconds."""

    test: tuple[str, ...]
    interval: int = 5
    timeout: int = 2
    retries: int = 3
    start_period: int = 120


@dataclass(frozen=True)
class ContainerSpec:
    """What a service's container runs, whoever creates it: the docker backend through the
    Engine's API, ``drillkit stack export --compose`` as a Compose service."""

    image: str
    command: list[str]
    environment: dict[str, str]
    user: str | None
    healthcheck: HealthSpec | None


def container_command(plan: StackPlan, name: str) -> list[str]:
    """The command of service ``name``'s container, every reference resolved: all
    interfaces, the plan's ports, service names on the stack network (Compose's service DNS
    gives the same names), mount targets."""
    service = plan.service(name)

    def url(ref: UrlRef) -> str:
        return f"http://{ref.service}:{plan.service(ref.service).port(ref.port).number}{ref.path}"

    def mount(ref: MountRef) -> str:
        target = service.mount(ref.mount).target
        return f"{target.rstrip('/')}/{ref.path}" if ref.path else target

    args = [
        resolve(
            arg,
            bind="0.0.0.0",
            port=lambda ref: str(plan.service(ref.service or name).port(ref.port).number),
            url=url,
            mount=mount,
        )
        for arg in service.program.args
    ]
    return argv(service.program, args, python="python3")


def container_spec(state: StackState[Any], name: str, *, stack_image: str) -> ContainerSpec:
    """Image, command, environment, user and healthcheck of service ``name``'s container.
    The environment names each secret's file under :data:`SECRETS_MOUNT` (``<VAR>_FILE``);
    writing the files is :func:`~drillkit.backends.common.secret_files`'s."""
    service = state.plan.service(name)
    image = service.program.image or stack_image
    own = image == stack_image
    health = None
    if own and isinstance(service.ready, HttpCheck):
        # The stack image has Python: `docker ps` shows health as drillkit checks it.
        number = service.port(service.ready.port).number
        check = (
            "import sys, urllib.request; "
            f"sys.exit(urllib.request.urlopen('http://127.0.0.1:{number}{service.ready.path}', "
            "timeout=2).status != 200)"
        )
        health = HealthSpec(test=("CMD", "python3", "-c", check))
    return ContainerSpec(
        image=image,
        command=container_command(state.plan, name),
        environment={
            **service.env,
            "PYTHONUNBUFFERED": "1",
            **secret_env(state, name, SECRETS_MOUNT),
        },
        # The owner of the mounted copies, so read-only mounts are readable whatever their
        # modes; nothing in drillkit's image runs as root but the network sidecar.
        user=f"{os.getuid()}:{os.getgid()}" if own else None,
        healthcheck=health,
    )


class DockerService(ServiceState):
    """A service as a container."""

    container: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    def ident(self) -> str:
        return f"container {(self.container or '?')[:12]}"


class DockerStack(StackState[DockerService]):
    image: str = Field(pattern=r"^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9._-]+$")
    """drillkit's stack image, which services without an image of their own run."""
    network: str = Field(pattern=r"^drillkit-[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")
    session: str = Field(pattern=r"^[0-9A-Za-z_.-]{1,64}$")
    """The session label on everything this stack created."""


class EngineClient:
    """A backend's connection to the Docker Engine, made on first use."""

    def __init__(self) -> None:
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client


def daemon_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the Docker Engine or the connection to it (the daemon
    stopped, its socket stopped answering, an API error), not from drillkit."""
    import sys

    kinds: list[type[BaseException]] = []
    if (errors := sys.modules.get("docker.errors")) is not None:
        kinds.append(errors.DockerException)
    if (requests := sys.modules.get("requests.exceptions")) is not None:
        kinds.append(requests.RequestException)
    return isinstance(exc, (ConnectionError, *kinds))


def _at_the_boundary(method: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            if not daemon_error(exc):
                raise
            host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise BackendUnavailable(
                f"the Docker Engine at {host} failed during {method.__name__}: {reason}"
            ) from exc

    return guarded


def _translate_daemon_errors(cls: type[B]) -> type[B]:
    """Every public method of ``cls``: what the Docker SDK raises when the daemon fails
    (``DockerException``, a ``requests`` connection error) leaves the backend as
    :class:`BackendUnavailable` (exit 3) naming the daemon, so that callers (the engine's
    guarded steps, heal) handle it like any other environment failure."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.isfunction(member):
            setattr(cls, name, _at_the_boundary(member))
    return cls


@_translate_daemon_errors
class DockerBackend(EngineClient, Backend[DockerStack]):
    """Services as containers."""

    name = "docker"
    State = DockerStack

    def gpu_available(self) -> bool:
        return "nvidia" in (self.client.info().get("Runtimes") or {})

    def no_gpu_reason(self) -> str:
        runtimes = self.client.info().get("Runtimes") or {}
        return (
            "the Docker Engine has no NVIDIA runtime (runtimes: "
            f"{', '.join(sorted(runtimes)) or 'none'}); install the NVIDIA Container "
            "Toolkit, or use gpu: off"
        )

    # -- lifecycle -------------------------------------------------------------------------
    def up(
        self, plan: StackPlan, stack: StackIdentity, *, progress: Progress | None = None
    ) -> DockerStack:
        report = progress or (lambda message, fraction: None)
        image = image_plan(gpu=False).tag
        for needed in {image, *(s.program.image for s in plan.services if s.program.image)}:
            require_image(self.client, needed)
        state = DockerStack(
            backend=self.name,
            plan=plan,
            image=image,
            network=f"drillkit-{stack.id}",
            session=SESSION_ID,
            **stack.fields(),
        )
        (Path(state.run_dir) / "logs").mkdir(parents=True, exist_ok=True)
        try:
            self.client.networks.create(
                state.network, driver="bridge", labels=self._labels(state, "network", "net")
            )
            save_state(state)  # saved as we go: `stack down` can clean up a half start
            for service in plan.services:
                state.services[service.name] = DockerService(
                    name=service.name,
                    role=service.role,
                    ports={port.name: free_port() for port in service.ports},
                    log=service_log(state, service.name),
                )
            start_in_order(
                self,
                state,
                start=lambda service: self._start(state, service.name),
                check_running=lambda name: self._check_running(state, name),
                report=report,
            )
        except BaseException:
            self.down(state)
            raise
        return state

    def _labels(
        self, state: DockerStack, service: str, role: str, *, target: bool = False
    ) -> dict[str, str]:
        labels = {
            LABEL_STACK: state.id,
            LABEL_SESSION: state.session,
            LABEL_SERVICE: service,
            LABEL_ROLE: role,
        }
        if target:
            labels[LABEL_TARGET] = "true"
        return labels

    def command(self, state: DockerStack, name: str) -> list[str]:
        """The container's command, every reference resolved (:func:`container_command`)."""
        return container_command(state.plan, name)

    def _create(self, state: DockerStack, name: str) -> Any:
        from docker.types import DeviceRequest, Healthcheck

        plan = state.plan.service(name)
        service = state.services[name]
        spec = container_spec(state, name, stack_image=state.image)
        volumes = {
            m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in plan.mounts
        }
        folder = secret_files(state, name)
        if folder is not None:  # files the container reads, never values `docker inspect` shows
            volumes[str(folder)] = {"bind": SECRETS_MOUNT, "mode": "ro"}
        kwargs: dict[str, Any] = {}
        if state.gpu and plan.gpu:
            kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        if spec.healthcheck is not None:
            check = spec.healthcheck
            kwargs["healthcheck"] = Healthcheck(
                test=list(check.test),
                interval=check.interval * _SECONDS_NS,
                timeout=check.timeout * _SECONDS_NS,
                retries=check.retries,
                start_period=check.start_period * _SECONDS_NS,
            )
        if spec.user is not None:
            kwargs["user"] = spec.user
        container = self.client.containers.create(
            spec.image,
            command=spec.command,
            name=f"drillkit-{state.id}-{name}",
            hostname=name,
            labels=self._labels(state, name, plan.role, target=plan.target),
            environment=spec.environment,
            volumes=volumes,
            ports={
                f"{port.number}/tcp": ("127.0.0.1", service.ports[port.name]) for port in plan.ports
            },
            network=state.network,
            stop_signal="SIGTERM",
            **kwargs,
        )
        # Service-name DNS on the stack network, as in Compose.
        network = self.client.networks.get(state.network)
        network.disconnect(container)
        network.connect(container, aliases=[name])
        service.container = container.id
        return container

    def _start(self, state: DockerStack, name: str) -> None:
        """Create and start the service's container. Docker binds the published host ports
        itself when the container starts; one taken by another process since drillkit chose
        it is chosen again (at most ``_PORT_TRIES`` times) rather than failing the stack."""
        from docker.errors import APIError

        service = state.services[name]
        for attempt in range(1, _PORT_TRIES + 1):
            container = self._create(state, name)
            try:
                container.start()
                return
            except APIError as exc:
                taken = any(m in str(exc) for m in _PORT_TAKEN)
                if not taken or attempt == _PORT_TRIES:
                    raise
            container.remove(force=True)
            service.container = None
            service.ports = {port: free_port() for port in service.ports}
            save_state(state)

    def _check_running(self, state: DockerStack, name: str) -> None:
        container = self._container(state, name)
        if container is None or container.status in ("exited", "dead"):
            logs = ""
            if container is not None:
                logs = container.logs(tail=5).decode(errors="replace").strip()
            raise StackNotReady(
                f"{name} exited during start-up: {' | '.join(logs.splitlines()) or 'no output'}"
            )

    def down(self, state: DockerStack) -> None:
        from docker.errors import APIError, NotFound

        client = self.client
        # An interrupt can land while a create request is in flight: the daemon still makes
        # the container after the client gave up on the answer. Sweep again after a pause
        # until a sweep finds nothing.
        for sweep in range(_DOWN_SWEEPS):
            if sweep:
                time.sleep(_DOWN_SWEEP_PAUSE)
            # docker-py inspects each container it lists: one removed in between (a sidecar
            # that ends, a remove of the previous sweep) is skipped, not a 404 that fails down.
            found = client.containers.list(
                all=True, filters={"label": f"{LABEL_STACK}={state.id}"}, ignore_removed=True
            )
            if not found and sweep:
                break
            for container in found:
                known = state.services.get(container.labels.get(LABEL_SERVICE, ""))
                if (
                    known is not None
                    and known.log
                    and container.labels.get(LABEL_ROLE) != "sidecar"
                ):
                    with contextlib.suppress(APIError, OSError):
                        Path(known.log).write_bytes(container.logs())
                with contextlib.suppress(NotFound):
                    container.remove(force=True, v=True)
        for network in client.networks.list(filters={"label": f"{LABEL_STACK}={state.id}"}):
            with contextlib.suppress(NotFound):
                network.remove()
        for volume in client.volumes.list(filters={"label": f"{LABEL_STACK}={state.id}"}):
            with contextlib.suppress(NotFound):
                volume.remove(force=True)

    def _container(self, state: DockerStack, name: str) -> Any:
        from docker.errors import NotFound

        service = state.services.get(name)
        if service is None or not service.container:
            return None
        try:
            return self.client.containers.get(service.container)
        except NotFound:
            return None

    def service_status(self, state: DockerStack, name: str) -> str:
        container = self._container(state, name)
        if container is None:
            return "exited"
        if container.status == "paused":
            return "paused"
        return "running" if container.status in ("running", "restarting") else "exited"

    # -- the target guard -------------------------------------------------------------------
    def target(self, state: DockerStack, name: str) -> Any:
        """The container of service ``name``, only if it carries this stack's target labels."""
        service = state.services.get(name)
        if service is None or not service.container:
            raise TargetError(f"{name!r} is not a service of stack {state.id}")
        container = self._container(state, name)
        if container is None:
            raise EnvironmentFailure(f"container {service.container[:12]} of {name} is gone")
        labels = container.labels or {}
        if (
            labels.get(LABEL_STACK) != state.id
            or labels.get(LABEL_TARGET) != "true"
            or labels.get(LABEL_SERVICE) != name
        ):
            raise TargetError(
                f"container {container.name} ({container.id[:12]}) is not a drill target of "
                f"stack {state.id} (labels {LABEL_STACK}, {LABEL_SERVICE}={name}, "
                f"{LABEL_TARGET}=true missing); refusing to touch it"
            )
        return container

    # -- fault primitives ------------------------------------------------------------------
    def kill(self, state: DockerStack, name: str, *, signal: str = "KILL") -> None:
        from docker.errors import APIError

        container = self.target(state, name)
        with contextlib.suppress(APIError):  # not running: already dead
            if container.status == "paused":
                container.unpause()
            container.kill(signal=f"SIG{signal}")

    def pause(self, state: DockerStack, name: str) -> None:
        self.target(state, name).pause()

    def resume(self, state: DockerStack, name: str) -> None:
        from docker.errors import APIError

        container = self.target(state, name)
        with contextlib.suppress(APIError):  # "is not paused": nothing to undo
            container.unpause()

    def restart(self, state: DockerStack, name: str) -> None:
        from docker.errors import APIError

        container = self.target(state, name)
        if container.status in ("running", "paused", "restarting"):
            with contextlib.suppress(APIError):
                if container.status == "paused":
                    container.unpause()
                container.kill()
            container.wait(timeout=STOP_GRACE)
        container.start()
        save_state(state)

    # -- network links: rules in the target's namespace, set from a sidecar ---------------
    def _address(self, state: DockerStack, name: str) -> str:
        """The address of service ``name`` on the stack network."""
        container = self.target(state, name)
        networks = container.attrs["NetworkSettings"]["Networks"]
        address = (networks.get(state.network) or {}).get("IPAddress")
        if not address:
            raise EnvironmentFailure(f"{name} has no address on the stack network")
        return str(ipaddress.ip_address(address))  # goes into a shell script: an address only

    def _sidecar(self, state: DockerStack, name: str, script: str) -> str:
        """Run ``script`` as root with NET_ADMIN in the network namespace of ``name``."""
        container = self.target(state, name)
        # A paused container keeps its namespace: a sidecar can join it (a cut healed while
        # its target is paused must still be undone).
        if container.status not in ("running", "paused"):
            raise EnvironmentFailure(f"{name} is {container.status}: its network cannot be changed")
        labels = self._labels(state, f"netfault-{name}", "sidecar")
        return run_sidecar(self.client, state.image, container, name, script, labels, state.id)

    def cut_link(self, state: DockerStack, link: Link, *, mode: str) -> str:
        peer = self._address(state, link.source)
        self._sidecar(state, link.target, _cut_script(mode, [peer]))
        action = "DROP" if mode == "blackhole" else "REJECT"
        return f"iptables in {link.target}'s namespace: {action} to and from {link.source} ({peer})"

    def slow_link(self, state: DockerStack, link: Link, *, delay: float, jitter: float) -> str:
        peer = self._address(state, link.source)
        self._sidecar(state, link.target, _latency_script([peer], delay * 1000, jitter * 1000))
        return f"netem in {link.target}'s namespace: +{delay * 1000:.0f} ms towards {peer}"

    def restore_link(self, state: DockerStack, link: Link) -> None:
        if self.service_status(state, link.target) == "exited":
            return  # stopped: its namespace, rules and all, is gone; a new start gets a new one
        self._sidecar(state, link.target, _restore_script())

    def probe_link(self, state: DockerStack, link: Link, *, timeout: float) -> tuple[str, float]:
        source = self.target(state, link.source)
        number = state.plan.service(link.target).port(link.port).number
        code = (
            "import json; from drillkit.netprobe import probe_tcp; "
            f"print(json.dumps(probe_tcp({link.target!r}, {number}, timeout={timeout!r})))"
        )
        result = source.exec_run(["python3", "-c", code])
        try:
            outcome, took = safejson.loads(result.output.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise EnvironmentFailure(
                f"probe from {link.source} failed: {result.output.decode(errors='replace')[-200:]}"
            ) from None
        return str(outcome), float(took)

    def check_capabilities(self, needs: set[str]) -> None:
        if "slow_link" in needs and not netem_available(self.client):
            raise BackendUnavailable(_NO_NETEM)


def netem_available(client: Any) -> bool:
    """Whether the host kernel has the netem qdisc (tried in a throwaway namespace)."""
    code, _ = run_privileged(
        client,
        image_plan(gpu=False).tag,
        ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
        network_mode="none",
        labels={LABEL_SESSION: SESSION_ID, LABEL_ROLE: "sidecar"},
    )
    return code == 0


def run_sidecar(
    client: Any,
    image: str,
    container: Any,
    name: str,
    script: str,
    labels: dict[str, str],
    stack_id: str,
) -> str:
    """Run ``script`` as root with NET_ADMIN in ``container``'s network namespace (service
    ``name`` of stack ``stack_id``); its output, or EnvironmentFailure with its last lines."""
    code, output = run_privileged(
        client,
        image,
        ["sh", "-c", script],
        network_mode=f"container:{container.id}",
        labels=labels,
        name=f"drillkit-{stack_id}-netfault-{name}-{secrets.token_hex(3)}",
    )
    if code != 0:
        if "qdisc kind is unknown" in output:
            raise BackendUnavailable(_NO_NETEM)
        raise EnvironmentFailure(
            f"{name}: network sidecar failed: {' | '.join(output.splitlines()[-3:])}"
        )
    return output


def run_privileged(
    client: Any,
    image: str,
    command: list[str],
    *,
    network_mode: str,
    labels: dict[str, str],
    name: str | None = None,
) -> tuple[int, str]:
    """Run a one-shot root container with NET_ADMIN; its exit code and output. The container
    is removed whatever happens; the image is never pulled."""
    require_image(client, image)
    container = client.containers.create(
        image,
        command=command,
        name=name,
        labels=labels,
        network_mode=network_mode,
        cap_add=["NET_ADMIN"],
        user="0:0",
        healthcheck={"test": ["NONE"]},
    )
    try:
        container.start()
        code = int(container.wait(timeout=SIDECAR_TIMEOUT).get("StatusCode", -1))
        output = str(container.logs().decode(errors="replace")).strip()
    finally:
        with contextlib.suppress(Exception):
            container.remove(force=True)
    return code, output


_NO_NETEM = (
    "the latency fault on the docker backend needs the kernel's netem qdisc (sch_netem), "
    "which this host's kernel lacks; run it with --backend local"
)
