"""The docker backend: every service is a container of the stack image on its own network.

One bridge network per stack; replicas are reached by the gateway under their service names
(``http://replica-1:8000``); the gateway and each replica publish their port on 127.0.0.1 for
the load generator and drillkit's own probes. Each replica mounts its own copy of the model
store read-only at ``/store``, so a corrupt_model fault damages the files on the host side of
the mount exactly as a failing disk under a node would.

Everything drillkit creates carries labels (:data:`LABEL_STACK`, :data:`LABEL_SESSION`,
:data:`LABEL_SERVICE`, and :data:`LABEL_TARGET` on the services a fault may hit); teardown
finds containers and networks by label, and every fault primitive refuses a container that
does not carry this stack's labels (:class:`~drillkit.errors.TargetError`, exit 2).

Network faults run a short-lived sidecar from the same image in the target's network
namespace with ``NET_ADMIN``: iptables rules in chains of drillkit's own for cuts, a netem
qdisc for latency. Undo deletes those chains and the qdisc, so it is idempotent, and a
container that was restarted in between has a fresh namespace with nothing to undo.

Images are never pulled: containers are created from an image that :func:`require_image`
found, never through ``containers.run`` (which pulls on a miss).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from drillkit.backends.base import (
    Backend,
    GatewaySettings,
    Progress,
    ServiceState,
    StackSpec,
    StackState,
    clear_state,
    save_state,
)
from drillkit.backends.common import (
    fallback_file,
    new_stack,
    remove_copies,
    replica_store,
    wait_until_ready,
)
from drillkit.backends.image import docker_client, plan, require_image
from drillkit.backends.local import free_port
from drillkit.errors import BackendUnavailable, EnvironmentFailure, StackNotReady, TargetError
from drillkit.stacks.recommender.replica import ADMIN_TOKEN_ENV
from drillkit.stacks.recommender.store import KEY_ENV

LABEL_STACK = "drillkit.stack"
LABEL_SESSION = "drillkit.session"
LABEL_SERVICE = "drillkit.service"
LABEL_ROLE = "drillkit.role"
LABEL_TARGET = "drillkit.target"

REPLICA_PORT = 8000
GATEWAY_PORT = 8080
STOP_GRACE = 8
SIDECAR_TIMEOUT = 60

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


def _cut_script(mode: str, peer: str) -> str:
    """iptables rules cutting ``peer`` off: dropped both ways, or refused and reset."""
    lines = ["set -e"]
    for parent, chain in _CHAINS:
        lines += [
            f"iptables -w -N {chain} 2>/dev/null || iptables -w -F {chain}",
            f"iptables -w -C {parent} -j {chain} 2>/dev/null || iptables -w -I {parent} -j {chain}",
        ]
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


def _latency_script(peer: str, delay_ms: float, jitter_ms: float) -> str:
    """netem on the egress towards ``peer`` only: one added delay per round trip."""
    jitter = f" {jitter_ms:.0f}ms" if jitter_ms > 0 else ""
    return "\n".join(
        [
            "set -e",
            "tc qdisc del dev eth0 root 2>/dev/null || true",
            "tc qdisc add dev eth0 root handle 1: prio",
            f"tc qdisc add dev eth0 parent 1:3 handle 30: netem delay {delay_ms:.0f}ms{jitter}",
            f"tc filter add dev eth0 protocol ip parent 1:0 prio 3 u32 match ip dst {peer}/32 "
            "flowid 1:3",
            "tc qdisc show dev eth0",
        ]
    )


_DOWN_SWEEPS = 5
_DOWN_SWEEP_PAUSE = 0.5


class DockerBackend(Backend):
    """Services as containers of the drillkit stack image."""

    name = "docker"

    def __init__(self) -> None:
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    # -- lifecycle -------------------------------------------------------------------------
    def up(self, spec: StackSpec, *, progress: Progress | None = None) -> StackState:
        report = progress or (lambda message, fraction: None)
        image = plan(gpu=False).tag
        require_image(self.client, image)
        gpu = self._resolve_gpu(spec.gpu)
        state = new_stack(spec, self.name, gpu=gpu, report=report)
        state.image = image
        state.session = SESSION_ID
        state.network = f"drillkit-{state.id}"
        try:
            self.client.networks.create(
                state.network, driver="bridge", labels=self._labels(state, "network", "net")
            )
            save_state(state)  # saved as we go: `stack down` can clean up a half start
            for i in range(1, spec.replicas + 1):
                name = f"replica-{i}"
                replica_store(state, name)
                port = free_port()
                state.services[name] = ServiceState(
                    name=name,
                    role="replica",
                    url=f"http://127.0.0.1:{port}",
                    port=port,
                    log=str(Path(state.run_dir) / "logs" / f"{name}.log"),
                )
            gw_port = free_port()
            state.gateway_url = f"http://127.0.0.1:{gw_port}"
            state.services["gateway"] = ServiceState(
                name="gateway",
                role="gateway",
                url=state.gateway_url,
                port=gw_port,
                log=str(Path(state.run_dir) / "logs" / "gateway.log"),
            )
            for name in state.services:
                report(f"starting container {name}", -1)
                self._create(state, name).start()
                save_state(state)
            wait_until_ready(state, lambda name: self._check_running(state, name), report)
        except BaseException:
            self.down(state)
            raise
        return state

    def _resolve_gpu(self, gpu: str) -> bool:
        if gpu == "off":
            return False
        runtimes = self.client.info().get("Runtimes") or {}
        available = "nvidia" in runtimes
        if gpu == "on" and not available:
            raise BackendUnavailable(
                "gpu: on, but the Docker Engine has no NVIDIA runtime (runtimes: "
                f"{', '.join(sorted(runtimes)) or 'none'}); install the NVIDIA Container "
                "Toolkit, or use gpu: off"
            )
        return available

    def _labels(self, state: StackState, service: str, role: str) -> dict[str, str]:
        labels = {
            LABEL_STACK: state.id,
            LABEL_SESSION: state.session or SESSION_ID,
            LABEL_SERVICE: service,
            LABEL_ROLE: role,
        }
        if role in ("replica", "gateway"):
            labels[LABEL_TARGET] = "true"
        return labels

    def _create(self, state: StackState, name: str) -> Any:
        from docker.types import DeviceRequest, Healthcheck

        service = state.services[name]
        env = {ADMIN_TOKEN_ENV: state.admin_token, "PYTHONUNBUFFERED": "1"}
        for var in (KEY_ENV, "DRILLKIT_REPLICA_THREADS"):
            if os.environ.get(var):
                env[var] = os.environ[var]
        if service.role == "replica":
            port = REPLICA_PORT
            command = [
                "python3",
                "-m",
                "drillkit.stacks.recommender.replica",
                "--store",
                "/store",
                "--name",
                name,
                "--host",
                "0.0.0.0",
                "--port",
                str(port),
                "--device",
                "cuda" if state.gpu else "cpu",
                "--stack-id",
                state.id,
            ]
            volumes = {state.stores[name]: {"bind": "/store", "mode": "ro"}}
            probe = "/readyz"
        else:
            port = GATEWAY_PORT
            settings = GatewaySettings(**state.spec["gateway"])
            fallback: list[str] = []
            if settings.fallback:
                relative = fallback_file(Path(state.store)).relative_to(state.store)
                fallback = ["--fallback", f"/origin/{relative}"]
            replicas = [
                arg
                for s in state.replicas()
                for arg in ("--replica", f"{s.name}=http://{s.name}:{REPLICA_PORT}")
            ]
            command = [
                "python3",
                "-m",
                "drillkit.stacks.recommender.gateway",
                "--host",
                "0.0.0.0",
                "--port",
                str(port),
                *fallback,
                *replicas,
                *settings.args(),
                "--stack-id",
                state.id,
            ]
            volumes = {state.store: {"bind": "/origin", "mode": "ro"}}
            probe = "/healthz"
        check = (
            "import sys, urllib.request; "
            f"sys.exit(urllib.request.urlopen('http://127.0.0.1:{port}{probe}', "
            "timeout=2).status != 200)"
        )
        kwargs: dict[str, Any] = {}
        if state.gpu and service.role == "replica":
            kwargs["device_requests"] = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
        container = self.client.containers.create(
            state.image,
            command=command,
            name=f"drillkit-{state.id}-{name}",
            hostname=name,
            labels=self._labels(state, name, service.role),
            environment=env,
            volumes=volumes,
            ports={f"{port}/tcp": ("127.0.0.1", service.port)},
            network=state.network,
            healthcheck=Healthcheck(
                test=["CMD", "python3", "-c", check],
                interval=5 * _SECONDS_NS,
                timeout=2 * _SECONDS_NS,
                retries=3,
                start_period=120 * _SECONDS_NS,
            ),
            stop_signal="SIGTERM",
            # The owner of the store copies, so the read-only mounts are readable whatever
            # their modes; nothing in the container runs as root but the network sidecar.
            user=f"{os.getuid()}:{os.getgid()}",
            **kwargs,
        )
        # Service-name DNS on the stack network, as in Compose.
        network = self.client.networks.get(state.network)
        network.disconnect(container)
        network.connect(container, aliases=[name])
        service.container = container.id
        return container

    def _check_running(self, state: StackState, name: str) -> None:
        container = self._container(state, name)
        if container is None or container.status in ("exited", "dead"):
            logs = ""
            if container is not None:
                logs = container.logs(tail=5).decode(errors="replace").strip()
            raise StackNotReady(
                f"{name} exited during start-up: {' | '.join(logs.splitlines()) or 'no output'}"
            )

    def down(self, state: StackState) -> None:
        from docker.errors import APIError, NotFound

        client = self.client
        # An interrupt can land while a create request is in flight: the daemon still makes
        # the container after the client gave up on the answer. Sweep again after a pause
        # until a sweep finds nothing.
        for sweep in range(_DOWN_SWEEPS):
            if sweep:
                time.sleep(_DOWN_SWEEP_PAUSE)
            found = client.containers.list(all=True, filters={"label": f"{LABEL_STACK}={state.id}"})
            if not found and sweep:
                break
            for container in found:
                service = container.labels.get(LABEL_SERVICE, "")
                known = state.services.get(service)
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
        remove_copies(state)
        clear_state()

    def _container(self, state: StackState, name: str) -> Any:
        from docker.errors import NotFound

        service = state.services.get(name)
        if service is None or not service.container:
            return None
        try:
            return self.client.containers.get(service.container)
        except NotFound:
            return None

    def service_alive(self, state: StackState, name: str) -> bool:
        return self.service_status(state, name) != "exited"

    def service_status(self, state: StackState, name: str) -> str:
        container = self._container(state, name)
        if container is None:
            return "exited"
        if container.status == "paused":
            return "paused"
        return "running" if container.status in ("running", "restarting") else "exited"

    # -- the target guard -------------------------------------------------------------------
    def target(self, state: StackState, name: str) -> Any:
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
    def kill(self, state: StackState, name: str, *, signal: str = "KILL") -> None:
        from docker.errors import APIError

        container = self.target(state, name)
        with contextlib.suppress(APIError):  # not running: already dead
            if container.status == "paused":
                container.unpause()
            container.kill(signal=f"SIG{signal}")

    def pause(self, state: StackState, name: str) -> None:
        self.target(state, name).pause()

    def resume(self, state: StackState, name: str) -> None:
        from docker.errors import APIError

        container = self.target(state, name)
        with contextlib.suppress(APIError):  # "is not paused": nothing to undo
            container.unpause()

    def restart(self, state: StackState, name: str) -> None:
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
    def _peer_ip(self, state: StackState) -> str:
        """The gateway's address on the stack network: the other end of every link."""
        gateway = self.target(state, "gateway")
        networks = gateway.attrs["NetworkSettings"]["Networks"]
        address = (networks.get(state.network) or {}).get("IPAddress")
        if not address:
            raise EnvironmentFailure("the gateway has no address on the stack network")
        return str(ipaddress.ip_address(address))  # goes into a shell script: an address only

    def _sidecar(self, state: StackState, name: str, script: str) -> str:
        """Run ``script`` as root with NET_ADMIN in the network namespace of ``name``."""
        container = self.target(state, name)
        if container.status != "running":
            raise EnvironmentFailure(f"{name} is {container.status}: its network cannot be changed")
        code, output = self._run_privileged(
            state.image or "",
            ["sh", "-c", script],
            network_mode=f"container:{container.id}",
            labels=self._labels(state, f"netfault-{name}", "sidecar"),
            name=f"drillkit-{state.id}-netfault-{name}-{secrets.token_hex(3)}",
        )
        if code != 0:
            raise EnvironmentFailure(
                f"{name}: network sidecar failed: {' | '.join(output.splitlines()[-3:])}"
            )
        return output

    def cut_link(self, state: StackState, name: str, *, mode: str) -> str:
        peer = self._peer_ip(state)
        self._sidecar(state, name, _cut_script(mode, peer))
        action = "DROP" if mode == "blackhole" else "REJECT"
        return f"iptables in {name}'s namespace: {action} to and from the gateway ({peer})"

    def slow_link(self, state: StackState, name: str, *, delay: float, jitter: float) -> str:
        peer = self._peer_ip(state)
        try:
            self._sidecar(state, name, _latency_script(peer, delay * 1000, jitter * 1000))
        except EnvironmentFailure as exc:
            if "qdisc kind is unknown" in str(exc):
                raise BackendUnavailable(_NO_NETEM) from None
            raise
        return f"netem in {name}'s namespace: +{delay * 1000:.0f} ms towards {peer}"

    def restore_link(self, state: StackState, name: str) -> None:
        if self.service_status(state, name) != "running":
            return  # stopped: its namespace, rules and all, is gone; a new start gets a new one
        self._sidecar(state, name, _restore_script())

    def probe_link(self, state: StackState, name: str, *, timeout: float) -> tuple[str, float]:
        gateway = self.target(state, "gateway")
        code = (
            "import json; from drillkit.backends.base import probe_tcp; "
            f"print(json.dumps(probe_tcp({name!r}, {REPLICA_PORT}, timeout={timeout!r})))"
        )
        result = gateway.exec_run(["python3", "-c", code])
        try:
            outcome, took = json.loads(result.output.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise EnvironmentFailure(
                f"probe from the gateway failed: {result.output.decode(errors='replace')[-200:]}"
            ) from None
        return str(outcome), float(took)

    def check_faults(self, kinds: set[str]) -> None:
        if "latency" in kinds and not self._netem_available():
            raise BackendUnavailable(_NO_NETEM)

    def _netem_available(self) -> bool:
        """Whether the host kernel has the netem qdisc (tried in a throwaway namespace)."""
        code, _ = self._run_privileged(
            plan(gpu=False).tag,
            ["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
            network_mode="none",
            labels={LABEL_SESSION: SESSION_ID, LABEL_ROLE: "sidecar"},
        )
        return code == 0

    def _run_privileged(
        self,
        image: str,
        command: list[str],
        *,
        network_mode: str,
        labels: dict[str, str],
        name: str | None = None,
    ) -> tuple[int, str]:
        """Run a one-shot root container with NET_ADMIN; its exit code and output. The
        container is removed whatever happens; the image is never pulled."""
        require_image(self.client, image)
        container = self.client.containers.create(
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
