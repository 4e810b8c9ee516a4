"""A team's own Docker Compose project as a drill's stack (``stack: {compose: FILE}``).

The ``compose`` preset reads the project as the Compose CLI resolves it (``config``) and
writes it as a :class:`~drillkit.stacks.plan.StackPlan`: one service per Compose service
(role ``service``, or the one its ``drillkit.role`` label names), the ports it publishes or
exposes, and a link between every two services, which network faults cut or slow. The
``compose`` backend (:mod:`drillkit.backends.compose`) runs that plan with the Compose CLI and
acts on the project's containers, and only on those (their Compose labels are checked before
each fault). Detection comes from what the project exposes (:mod:`.watch`): Docker's
healthcheck transitions, and the HTTP status endpoints the scenario names.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from drillkit.backends.base import Backend, Progress, StackState
from drillkit.backends.compose_cli import compose_cli
from drillkit.errors import InputError
from drillkit.faults.base import ROLE_SERVICE
from drillkit.stacks.base import StackPreset
from drillkit.stacks.compose.spec import ROLE_LABEL, ComposeSpec, service_address
from drillkit.stacks.plan import NAME_PATTERN, Endpoint, Link, Port, Program, ServicePlan, StackPlan

__all__ = ["ROLE_SERVICE", "ComposePreset", "compose_services"]

_NAME = re.compile(NAME_PATTERN)
#: The project name used to ask Compose about a file before a project exists.
_CHECK_PROJECT = "drillkit-check"
_ROLE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def _container_port(entry: object) -> int | None:
    """The container port of one ``ports``/``expose`` entry as ``config`` prints it: a
    string (``127.0.0.1::8080/tcp``, ``8080``) or a long-syntax mapping; None for a range
    or a UDP port."""
    if isinstance(entry, dict):
        if str(entry.get("protocol") or "tcp") != "tcp":
            return None
        target = entry.get("target")
        return int(target) if isinstance(target, int | str) and str(target).isdigit() else None
    text = str(entry)
    text, _, protocol = text.partition("/")
    if protocol and protocol != "tcp":
        return None
    last = text.rsplit(":", 1)[-1]
    return int(last) if last.isdigit() and 0 < int(last) < 65536 else None


def compose_services(config: dict[str, Any], file: Path) -> list[ServicePlan]:
    """The project's services as plan services, in Compose's order (sorted by name)."""
    plans = []
    for name in sorted(config["services"]):
        service = config["services"][name] or {}
        if not _NAME.fullmatch(name):
            raise InputError(
                f"{file}: service {name!r}: drillkit names services with lowercase letters, "
                "digits and '-' (fault targets and labels); rename it"
            )
        numbers: list[int] = []
        for entry in [*(service.get("ports") or []), *(service.get("expose") or [])]:
            number = _container_port(entry)
            if number is not None and number not in numbers:
                numbers.append(number)
        labels = service.get("labels") or {}
        if isinstance(labels, list):  # the list form, KEY=VALUE
            labels = dict(str(item).partition("=")[::2] for item in labels)
        role = str(labels.get(ROLE_LABEL) or ROLE_SERVICE)
        if not _ROLE.fullmatch(role):
            raise InputError(f"{file}: service {name}: label {ROLE_LABEL}={role!r} is not a role")
        plans.append(
            ServicePlan(
                name=name,
                role=role,
                # The project runs its own programs; the plan records what Compose starts.
                program=Program(executable=name, image=str(service.get("image") or "") or None),
                ports=tuple(
                    Port(name="http" if index == 0 else f"port-{number}", number=number)
                    for index, number in enumerate(numbers)
                ),
            )
        )
    return plans


def _published(config: dict[str, Any], name: str) -> set[int]:
    service = config["services"].get(name) or {}
    return {
        number
        for entry in service.get("ports") or []
        if (number := _container_port(entry)) is not None
    }


def _port_name(service: ServicePlan, number: int) -> str | None:
    return next((p.name for p in service.ports if p.number == number), None)


class ComposePreset(StackPreset[ComposeSpec]):
    """A Docker Compose project, brought up by drillkit or already running (``attach``)."""

    name: ClassVar[str] = "compose"
    description: ClassVar[str] = "a Docker Compose project of your own"

    def __init__(self) -> None:
        self._configs: dict[tuple[Path, str, float], dict[str, Any]] = {}

    def config(self, spec: ComposeSpec) -> dict[str, Any]:
        """The project as Compose resolves it; read once per version of the file."""
        key = (
            spec.file,
            spec.project or "",
            spec.file.stat().st_mtime if spec.file.exists() else 0.0,
        )
        if key not in self._configs:
            self._configs[key] = compose_cli().config(spec.file, spec.project or _CHECK_PROJECT)
        return self._configs[key]

    def preflight(self, spec: ComposeSpec, backend: str = "compose") -> None:
        if not spec.file.is_file():
            raise InputError(f"stack.compose: {spec.file} is not a file")
        self._checked(spec, self.config(spec))

    def _checked(self, spec: ComposeSpec, config: dict[str, Any]) -> list[ServicePlan]:
        services = compose_services(config, spec.file)
        names = [s.name for s in services]
        known = ", ".join(names)
        if spec.entry is not None:
            if spec.entry.service not in names:
                raise InputError(
                    f"load.host: {spec.entry.service!r} is not a service of the project ({known})"
                )
            if spec.entry.port not in _published(config, spec.entry.service):
                raise InputError(
                    f"load.host: service {spec.entry.service} does not publish port "
                    f"{spec.entry.port} on the host (its `ports:`), so the load cannot reach it"
                )
        for index, detect in enumerate(spec.detect):
            where = f"stack.detect[{index}]"
            address = service_address(detect.url)
            if address is not None:
                if address.service not in names:
                    raise InputError(
                        f"{where}.url: {address.service!r} is not a service of the project "
                        f"({known})"
                    )
                if address.port not in _published(config, address.service):
                    raise InputError(
                        f"{where}.url: service {address.service} does not publish port "
                        f"{address.port} on the host"
                    )
            if detect.service is not None and detect.service not in names:
                raise InputError(
                    f"{where}.service: {detect.service!r} is not a service of the project ({known})"
                )
        return services

    def targets(self, spec: ComposeSpec) -> dict[str, str]:
        """Every service of the project, with its role: what faults may target."""
        return {s.name: s.role for s in compose_services(self.config(spec), spec.file)}

    def target_links(self, spec: ComposeSpec) -> tuple[frozenset[str], frozenset[str]]:
        config = self.config(spec)
        services = compose_services(config, spec.file)
        linked = frozenset(s.name for s in services if s.ports and len(services) > 1)
        published = frozenset(s.name for s in services if _published(config, s.name))
        return linked, published

    def plan(
        self, spec: ComposeSpec, *, data_dir: Path, gpu: bool, progress: Progress
    ) -> StackPlan:
        progress(f"reading the Compose project {spec.file}", -1)
        config = self.config(spec)
        services = self._checked(spec, config)
        entry = None
        if spec.entry is not None:
            service = next(s for s in services if s.name == spec.entry.service)
            port = _port_name(service, spec.entry.port)
            entry = Endpoint(service=service.name, port=port or "http")
        else:
            publishers = [s.name for s in services if _published(config, s.name)]
            if len(publishers) > 1:
                raise InputError(
                    f"{spec.file}: {', '.join(publishers)} publish ports: say where the load "
                    "goes with load.host (http://SERVICE:PORT)"
                )
            for service in services:
                published = sorted(_published(config, service.name))
                if published:
                    port = _port_name(service, published[0]) or "http"
                    entry = Endpoint(service=service.name, port=port)
                    break
        if entry is None:
            raise InputError(
                f"{spec.file}: no service publishes a port on the host (`ports:`), so the "
                "drill's load cannot reach the project"
            )
        # Every service can reach every other one on the project's networks; a network fault
        # cuts or slows what comes from one of them, or from all.
        links = tuple(
            Link(source=source.name, target=target.name, port=target.ports[0].name)
            for target in services
            if target.ports
            for source in services
            if source.name != target.name
        )
        health = {
            name: bool((config["services"][name] or {}).get("healthcheck"))
            and not (config["services"][name]["healthcheck"].get("disable"))
            for name in config["services"]
        }
        return StackPlan(
            preset=self.name,
            services=tuple(services),
            links=links,
            entry=entry,
            settings={
                "file": str(spec.file),
                # Attached without a name: the one Compose gives the file (`name:` in v2).
                "project": spec.project
                or (str(config["name"]) if spec.attach and config.get("name") else None),
                "attach": spec.attach,
                "containers": spec.containers,
                "seed": spec.seed,
                "ready_timeout": spec.ready_timeout,
                "health": health,  # type: ignore[dict-item]
                "published": {
                    name: [int(n) for n in sorted(_published(config, name))]
                    for name in config["services"]
                },
                "detect": [
                    {"url": d.url, "format": d.format, "service": d.service} for d in spec.detect
                ],
            },
        )

    def settle(self, state: StackState[Any], backend: Backend[Any], progress: Progress) -> None:
        return None

    def watch_sources(self, state: StackState[Any]) -> list[Any]:
        from drillkit.backends.compose import ComposeStack
        from drillkit.stacks.compose.watch import sources

        return sources(state) if isinstance(state, ComposeStack) else []
