"""The compose backend: a plan of the ``compose`` preset, run by the Compose CLI.

``up`` runs ``compose up -d --build`` for project ``drillkit-<stack id>`` (building images that
have a ``build:``, from cache when nothing changed) and waits until every container of every
service runs and, where the service has a Docker healthcheck, is healthy; ``down`` runs
``compose down -v`` after copying each container's log into the stack's folder. With
``attach`` the project is already up: drillkit neither starts nor stops it, and only undoes
its own faults.

The target guard: a fault acts only on a container carrying this project's Compose labels
(``com.docker.compose.project`` and ``com.docker.compose.service``) that ``up`` recorded;
anything else is refused (:class:`~drillkit.errors.TargetError`, exit 2). A service scaled
to several containers is hit in one container, chosen by the drill's seed, or in all of them
(``stack.containers``).

Network faults act as on the docker backend, from a short-lived NET_ADMIN sidecar of
drillkit's stack image in the target container's network namespace (so the project's images
need no tools of drillkit's): a cut drops or rejects what comes from the source service's
containers, a latency fault delays what goes back to them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import re
import time
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from drillkit import safejson
from drillkit.backends.base import (
    Backend,
    Progress,
    ServiceState,
    StackIdentity,
    StackState,
    save_state,
)
from drillkit.backends.common import service_log
from drillkit.backends.compose_cli import compose_cli, last_line
from drillkit.backends.docker import (
    _NO_NETEM,
    LABEL_ROLE,
    LABEL_SESSION,
    LABEL_STACK,
    SESSION_ID,
    EngineClient,
    _cut_script,
    _latency_script,
    _restore_script,
    _translate_daemon_errors,
    netem_available,
    run_privileged,
    run_sidecar,
)
from drillkit.backends.docker.image import image_plan, image_present
from drillkit.errors import (
    BackendUnavailable,
    EnvironmentFailure,
    InputError,
    StackNotReady,
    TargetError,
)
from drillkit.stacks.plan import PROJECT_PATTERN, Link, StackPlan

__all__ = [
    "LABEL_PROJECT",
    "LABEL_SERVICE",
    "ComposeBackend",
    "ComposeService",
    "ComposeStack",
    "default_project",
]

LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
LABEL_NUMBER = "com.docker.compose.container-number"
LABEL_ONEOFF = "com.docker.compose.oneoff"

_UP_TIMEOUT = 1200.0  # builds included
_DOWN_TIMEOUT = 300.0
_POLL = 0.25
_CONTAINER_ID = r"^[0-9a-f]{64}$"
_NO_SIDECAR = (
    "network faults on a Compose stack run a sidecar of drillkit's stack image in the "
    "target's network namespace, and that image is not built: run "
    "`drillkit stack build --backend docker`"
)


def default_project(file: Path) -> str:
    """The project name Compose itself gives a file: its folder's name, normalised (v2 also
    drops what does not start with a letter or digit)."""
    name = re.sub(r"[^-_a-z0-9]", "", file.resolve().parent.name.lower()).lstrip("-_")
    return name[:63] or "default"


class ComposeService(ServiceState):
    """A Compose service: its containers when the drill began, and the fault targets among
    them (one chosen by the seed, or all)."""

    containers: list[str] = Field(default_factory=list)
    targets: list[str] = Field(default_factory=list)

    def ident(self) -> str:
        shown = ", ".join(c[:12] for c in self.targets) or "?"
        return f"container {shown}" if len(self.targets) < 2 else f"containers {shown}"


class ComposeStack(StackState[ComposeService]):
    """A Compose project's stack. Nothing in a saved state is trusted: the Compose CLI is
    found again on the machine (never run from a path the state names), and a project
    drillkit brought up can only be ``drillkit-<its stack id>``, so ``stack down`` cannot be
    made to take another project down."""

    project: str = Field(pattern=f"^{PROJECT_PATTERN}$")
    file: str = Field(pattern=r"^/")
    attach: bool = False
    sidecar_image: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9._/-]*:[A-Za-z0-9._-]+$"
    )
    """drillkit's stack image, which network faults' sidecars run; None: not built."""
    session: str = Field(pattern=r"^[0-9A-Za-z_.-]{1,64}$")

    @model_validator(mode="after")
    def _own_project(self) -> ComposeStack:
        if not self.attach and self.project != f"drillkit-{self.id}":
            raise ValueError(
                f"project {self.project!r}: a project drillkit brought up is drillkit-{self.id}"
            )
        return self


@_translate_daemon_errors
class ComposeBackend(EngineClient, Backend[ComposeStack]):
    """A Compose project's containers."""

    name = "compose"
    State = ComposeStack

    # -- lifecycle -------------------------------------------------------------------------
    def up(
        self, plan: StackPlan, stack: StackIdentity, *, progress: Progress | None = None
    ) -> ComposeStack:
        report = progress or (lambda message, fraction: None)
        settings = plan.settings
        file = Path(str(settings["file"]))
        attach = bool(settings.get("attach"))
        project = str(settings.get("project") or "") or (
            default_project(file) if attach else f"drillkit-{stack.id}"
        )
        cli = compose_cli()
        sidecar = image_plan(gpu=False).tag
        try:
            state = self._new_state(plan, stack, project, file, attach, sidecar)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InputError(f"Compose project {project!r}: {first['msg']}") from None
        logs = Path(state.run_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for service in plan.services:
            state.services[service.name] = ComposeService(
                name=service.name, role=service.role, log=service_log(state, service.name)
            )
        save_state(state)  # saved before anything starts: `stack down` can clean up
        timeout = float(settings.get("ready_timeout") or 180.0)  # type: ignore[arg-type]
        try:
            if not attach:
                report(f"compose up -d (project {project})", -1)
                done = cli.run(
                    file,
                    project,
                    "up",
                    "-d",
                    "--build",
                    timeout=_UP_TIMEOUT,
                    log=logs / "compose.log",
                )
                if done.returncode != 0:
                    raise EnvironmentFailure(
                        f"`compose up` of {file} failed: {last_line(done.stderr or done.stdout)}"
                    )
            self._wait_ready(state, timeout, report)
        except BaseException:
            self.down(state)
            raise
        save_state(state)
        return state

    def _new_state(
        self,
        plan: StackPlan,
        stack: StackIdentity,
        project: str,
        file: Path,
        attach: bool,
        sidecar: str,
    ) -> ComposeStack:
        return ComposeStack(
            backend=self.name,
            plan=plan,
            project=project,
            file=str(file),
            attach=attach,
            sidecar_image=sidecar if image_present(self.client, sidecar) else None,
            session=SESSION_ID,
            **stack.fields(),
        )

    def _wait_ready(self, state: ComposeStack, timeout: float, report: Progress) -> None:
        deadline = time.monotonic() + timeout
        pending = list(state.services)
        while True:
            for name in list(pending):
                containers = self._project_containers(state, name)
                if not containers:
                    if state.attach:
                        ps = f"{' '.join(compose_cli().argv)} -p {state.project} ps"
                        raise EnvironmentFailure(
                            f"attach: project {state.project} has no container of service "
                            f"{name}; is it up (`{ps}`)?"
                        )
                    continue
                # A one-shot job (a migration, an init) that finished with 0 is done, not dead.
                dead = [
                    c
                    for c in containers
                    if c.status == "dead"
                    or (c.status == "exited" and (c.attrs.get("State") or {}).get("ExitCode") != 0)
                ]
                if dead:
                    tail = dead[0].logs(tail=5).decode(errors="replace").strip()
                    raise StackNotReady(
                        f"{name}: container {dead[0].name} exited: "
                        f"{' | '.join(tail.splitlines()) or 'no output'}"
                    )
                if all(self._container_ready(state, name, c) for c in containers):
                    self._record(state, name, containers)
                    pending.remove(name)
                    report(f"{name} ready", 1 - len(pending) / max(1, len(state.services)))
            if not pending:
                return
            if time.monotonic() > deadline:
                raise StackNotReady(
                    f"not ready after {timeout:.0f} s: {', '.join(sorted(pending))} (running "
                    "and healthy where a healthcheck is set); "
                    f"`{' '.join(compose_cli().argv)} -p {state.project} ps` shows why"
                )
            time.sleep(_POLL)

    def _record(self, state: ComposeStack, name: str, containers: list[Any]) -> None:
        """Remember the service's containers, pick its targets, find its published ports."""
        service = state.services[name]
        service.containers = [c.id for c in containers]
        mode = str(state.plan.settings.get("containers") or "one")
        if mode == "all" or len(containers) == 1:
            chosen = containers
        else:
            rng = random.Random(f"{state.plan.settings.get('seed', 0)}:{name}")
            chosen = [rng.choice(containers)]
        service.targets = [c.id for c in chosen]
        plan = state.plan.service(name)
        ports = chosen[0].attrs.get("NetworkSettings", {}).get("Ports") or {}
        for port in plan.ports:
            bindings = ports.get(f"{port.number}/tcp") or []
            for binding in bindings:
                host = str(binding.get("HostIp") or "")
                if host in ("", "0.0.0.0", "127.0.0.1", "::") and binding.get("HostPort"):
                    service.ports[port.name] = int(binding["HostPort"])
                    break

    def _project_containers(self, state: ComposeStack, name: str) -> list[Any]:
        """The service's containers (not one-off ``run`` ones), by container number."""
        found = self.client.containers.list(
            all=True,
            filters={"label": [f"{LABEL_PROJECT}={state.project}", f"{LABEL_SERVICE}={name}"]},
            ignore_removed=True,
        )
        found = [c for c in found if (c.labels or {}).get(LABEL_ONEOFF, "False") != "True"]
        return sorted(found, key=lambda c: int((c.labels or {}).get(LABEL_NUMBER) or 0))

    def _has_health(self, state: ComposeStack, name: str) -> bool:
        health = state.plan.settings.get("health") or {}
        return bool(isinstance(health, dict) and health.get(name))

    def _container_ready(self, state: ComposeStack, name: str, container: Any) -> bool:
        # `container` was just listed or fetched (list and get inspect it): no reload.
        if container.status == "exited" and container.attrs["State"].get("ExitCode") == 0:
            return not state.plan.service(name).ports  # a finished job, not a server
        if container.status != "running":
            return False
        if not self._has_health(state, name):
            return True
        health = (container.attrs.get("State") or {}).get("Health") or {}
        return health.get("Status") == "healthy"

    def down(self, state: ComposeStack) -> None:
        from docker.errors import APIError, NotFound

        client = self.client
        # drillkit's own sidecars first, whatever else happens.
        for container in client.containers.list(
            all=True, filters={"label": f"{LABEL_STACK}={state.id}"}, ignore_removed=True
        ):
            with contextlib.suppress(NotFound):
                container.remove(force=True)
        if state.attach:
            return  # the project is the user's: it stays up
        for name, service in state.services.items():
            for container in self._project_containers(state, name)[:1]:
                if service.log:
                    with contextlib.suppress(APIError, OSError):
                        Path(service.log).write_bytes(container.logs())
        logs = Path(state.run_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        file = Path(state.file)
        if file.is_file():
            compose_cli().run(
                file,
                state.project,
                "down",
                "-v",
                "--remove-orphans",
                "--timeout",
                "3",
                timeout=_DOWN_TIMEOUT,
                log=logs / "compose.log",
            )
        # Whatever `down` left (a file gone since, a CLI that failed): by the project's label.
        label = f"{LABEL_PROJECT}={state.project}"
        for container in client.containers.list(
            all=True, filters={"label": label}, ignore_removed=True
        ):
            with contextlib.suppress(NotFound):
                container.remove(force=True, v=True)
        for network in client.networks.list(filters={"label": label}):
            with contextlib.suppress(NotFound, APIError):
                network.remove()
        for volume in client.volumes.list(filters={"label": label}):
            with contextlib.suppress(NotFound, APIError):
                volume.remove(force=True)

    # -- the target guard -------------------------------------------------------------------
    def targets(self, state: ComposeStack, name: str) -> list[Any]:
        """The containers a fault on service ``name`` acts on, each checked to carry this
        project's Compose labels for that service."""
        from docker.errors import NotFound

        service = state.services.get(name)
        if service is None or not service.targets:
            raise TargetError(f"{name!r} is not a service of Compose project {state.project}")
        found = []
        for ident in service.targets:
            if not re.fullmatch(_CONTAINER_ID, ident):
                raise TargetError(f"{name}: {ident[:20]!r} is not a container id")
            try:
                container = self.client.containers.get(ident)
            except NotFound:
                raise EnvironmentFailure(
                    f"container {ident[:12]} of {name} is gone (recreated outside the drill?)"
                ) from None
            labels = container.labels or {}
            if labels.get(LABEL_PROJECT) != state.project or labels.get(LABEL_SERVICE) != name:
                raise TargetError(
                    f"container {container.name} ({ident[:12]}) is not service {name} of "
                    f"Compose project {state.project} (labels {LABEL_PROJECT}, {LABEL_SERVICE} "
                    "differ); refusing to touch it"
                )
            found.append(container)
        return found

    def service_status(self, state: ComposeStack, name: str) -> str:
        try:
            containers = self.targets(state, name)
        except EnvironmentFailure:
            return "exited"
        statuses = {c.status for c in containers}
        if statuses == {"paused"}:
            return "paused"
        return "running" if statuses & {"running", "restarting", "paused"} else "exited"

    def ready(self, state: ComposeStack, name: str, *, timeout: float = 1.0) -> bool:
        try:
            containers = self.targets(state, name)
        except EnvironmentFailure:
            return False
        return all(self._container_ready(state, name, c) for c in containers)

    # -- fault primitives ------------------------------------------------------------------
    def kill(self, state: ComposeStack, name: str, *, signal: str = "KILL") -> None:
        from docker.errors import APIError

        for container in self.targets(state, name):
            with contextlib.suppress(APIError):  # not running: already dead
                if container.status == "paused":
                    container.unpause()
                container.kill(signal=f"SIG{signal}")

    def pause(self, state: ComposeStack, name: str) -> None:
        for container in self.targets(state, name):
            container.pause()

    def resume(self, state: ComposeStack, name: str) -> None:
        from docker.errors import APIError

        for container in self.targets(state, name):
            with contextlib.suppress(APIError):  # "is not paused": nothing to undo
                container.unpause()

    def restart(self, state: ComposeStack, name: str) -> None:
        from docker.errors import APIError

        for container in self.targets(state, name):
            if container.status in ("running", "paused", "restarting"):
                with contextlib.suppress(APIError):
                    if container.status == "paused":
                        container.unpause()
                    container.kill()
                container.wait(timeout=10)
            container.start()
        save_state(state)

    def host_path(self, state: ComposeStack, name: str, path: str) -> tuple[Path, Path]:
        """The host side of ``path`` inside service ``name``'s (first target) container:
        the mount it lies in (its source on the host) and the file there."""
        container = self.targets(state, name)[0]
        best: tuple[str, str] | None = None
        for mount in container.attrs.get("Mounts") or []:
            target = str(mount.get("Destination") or "").rstrip("/")
            source = str(mount.get("Source") or "")
            if not target or not source:
                continue
            if (path == target or path.startswith(target + "/")) and (
                best is None or len(target) > len(best[0])
            ):
                best = (target, source)
        if best is None:
            raise TargetError(
                f"{path} in {name} lies in no volume or bind mount of its container; "
                "corrupt_file changes files of a service's volumes only"
            )
        target, source = best
        return Path(source), Path(source) / path[len(target) :].lstrip("/")

    # -- network links ---------------------------------------------------------------------
    def _addresses(self, state: ComposeStack, name: str) -> list[str]:
        """Every address of every container of service ``name`` on the project's networks;
        EnvironmentFailure when it has none (all stopped, or no network of its own)."""
        addresses = []
        for container in self._project_containers(state, name):
            for network in (container.attrs["NetworkSettings"].get("Networks") or {}).values():
                if address := (network or {}).get("IPAddress"):
                    addresses.append(str(ipaddress.ip_address(address)))  # into a script
        if not addresses:
            raise EnvironmentFailure(f"{name} has no address on the project's networks")
        return addresses

    @staticmethod
    def _own_namespace(container: Any, name: str) -> None:
        """Refuse a container that shares another's network namespace: a sidecar joining it
        would set rules on the host (``network_mode: host``) or on another service."""
        mode = str((container.attrs.get("HostConfig") or {}).get("NetworkMode") or "")
        if mode in ("host", "none") or mode.startswith(("container:", "service:")):
            raise TargetError(
                f"{name} runs with network_mode {mode!r}: it has no network namespace of its "
                "own, and drillkit changes no other's; network faults need a bridge network"
            )

    def _sidecar(self, state: ComposeStack, container: Any, name: str, script: str) -> str:
        if state.sidecar_image is None:
            raise BackendUnavailable(_NO_SIDECAR)
        self._own_namespace(container, name)  # fetched by targets() just before
        if container.status not in ("running", "paused"):
            raise EnvironmentFailure(f"{name} is {container.status}: its network cannot be changed")
        labels = {LABEL_STACK: state.id, LABEL_SESSION: state.session, LABEL_ROLE: "sidecar"}
        return run_sidecar(
            self.client, state.sidecar_image, container, name, script, labels, state.id
        )

    def cut_link(self, state: ComposeStack, link: Link, *, mode: str) -> str:
        peers = self._addresses(state, link.source)
        for container in self.targets(state, link.target):
            self._sidecar(state, container, link.target, _cut_script(mode, peers))
        action = "DROP" if mode == "blackhole" else "REJECT"
        return f"iptables in {link.target}'s namespace: {action} {link.source} ({', '.join(peers)})"

    def slow_link(self, state: ComposeStack, link: Link, *, delay: float, jitter: float) -> str:
        peers = self._addresses(state, link.source)
        script = _latency_script(peers, delay * 1000, jitter * 1000)
        for container in self.targets(state, link.target):
            self._sidecar(state, container, link.target, script)
        return f"netem in {link.target}'s namespace: +{delay * 1000:.0f} ms towards {link.source}"

    def restore_link(self, state: ComposeStack, link: Link) -> None:
        for container in self.targets(state, link.target):
            # A paused container keeps its namespace and the rules in it: undo them too. A
            # stopped one's namespace is gone already.
            if container.status in ("running", "paused"):
                self._sidecar(state, container, link.target, _restore_script())

    def probe_link(self, state: ComposeStack, link: Link, *, timeout: float) -> tuple[str, float]:
        """One request as the source sends it: from a sidecar in the namespace of the
        source's first container, to the target's (first target) container address."""
        if state.sidecar_image is None:
            raise BackendUnavailable(_NO_SIDECAR)
        running = [c for c in self._project_containers(state, link.source) if c.status == "running"]
        if not running:
            raise EnvironmentFailure(f"no container of {link.source} runs: nothing to probe from")
        source = running[0]
        self._own_namespace(source, link.source)
        target = self.targets(state, link.target)[0]
        networks = target.attrs["NetworkSettings"].get("Networks") or {}
        shared = [
            (net or {}).get("IPAddress")
            for key, net in networks.items()
            if key in (source.attrs["NetworkSettings"].get("Networks") or {})
        ]
        if not any(shared):
            raise EnvironmentFailure(f"{link.source} and {link.target} share no network")
        address = str(ipaddress.ip_address(next(a for a in shared if a)))
        number = state.plan.service(link.target).port(link.port).number
        code = (
            "import json; from drillkit.netprobe import probe_tcp; "
            f"print(json.dumps(probe_tcp({address!r}, {number}, timeout={timeout!r})))"
        )
        _, output = run_privileged(
            self.client,
            state.sidecar_image,
            ["python3", "-c", code],
            network_mode=f"container:{source.id}",
            labels={LABEL_STACK: state.id, LABEL_SESSION: state.session, LABEL_ROLE: "sidecar"},
        )
        try:
            outcome, took = safejson.loads(output.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise EnvironmentFailure(f"probe from {link.source} failed: {output[-200:]}") from None
        return str(outcome), float(took)

    def check_capabilities(self, needs: set[str]) -> None:
        if needs & {"cut_link", "slow_link", "probe_link"} and not image_present(
            self.client, image_plan(gpu=False).tag
        ):
            raise BackendUnavailable(_NO_SIDECAR)
        if "slow_link" in needs and not netem_available(self.client):
            raise BackendUnavailable(_NO_NETEM)
