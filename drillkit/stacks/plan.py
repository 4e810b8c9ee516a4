"""A stack as a plan: the services to run, how to reach and check them, and the links that
network faults may cut or slow.

A *preset* (the reference recommender, :mod:`drillkit.stacks.recommender.preset`) writes a
:class:`StackPlan`; a *backend* (:mod:`drillkit.backends`) runs any plan, as local processes
or as containers, and knows nothing of what the services are. A new service is one more
:class:`ServicePlan`, written once for every backend.

Values that only the backend knows (the port a service listens on, how one service reaches
another, where a mount appears) are written into a program's arguments as references and
resolved when the service starts:

======================  ===========================================  ======================
reference               local backend                                docker backend
======================  ===========================================  ======================
:class:`BindHost`       ``127.0.0.1``                                ``0.0.0.0``
:class:`PortRef`        the port drillkit picked on 127.0.0.1        the port in the plan
:class:`UrlRef`         ``http://127.0.0.1:P`` (through the link     ``http://NAME:PORT``
                        proxy when a :class:`Link` is declared)      (service-name DNS)
:class:`MountRef`       the mount's folder on the host               the mount's target
======================  ===========================================  ======================

Plans are frozen pydantic models: a plan is validated when it is made (every reference
names a service, port or mount that exists; dependencies form no cycle) and saved whole in a
stack's state, so a later command in another process sees exactly what was started.
See ``docs/architecture.md`` for where plans sit between presets, backends and faults.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

__all__ = [
    "NAME_PATTERN",
    "PROJECT_PATTERN",
    "Arg",
    "BindHost",
    "Dependency",
    "Endpoint",
    "HttpCheck",
    "Join",
    "Link",
    "Mount",
    "MountRef",
    "Port",
    "PortRef",
    "Program",
    "Readiness",
    "ServicePlan",
    "StackPlan",
    "TcpCheck",
    "UrlRef",
]

#: Service, port and mount names: what a fault's ``target`` and a container's name are made of.
NAME_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"
#: Compose's own rule for project names (lowercase letters, digits, '-' and '_').
PROJECT_PATTERN = r"[a-z0-9][a-z0-9_-]{0,62}"
_NAME = re.compile(NAME_PATTERN)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_ENV_VAR = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")


def _check_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"{what} {value!r}: expected lowercase letters, digits and '-', "
            "starting with a letter or digit, at most 63 characters"
        )
    return value


# -- references in a program's arguments ------------------------------------------------------
class BindHost(_Frozen):
    """The address a service listens on."""

    ref: Literal["bind"] = "bind"


class PortRef(_Frozen):
    """The port named ``port`` of ``service`` (of the service itself when ``service`` is None)
    as that service listens on it."""

    ref: Literal["port"] = "port"
    port: str = "http"
    service: str | None = None


class UrlRef(_Frozen):
    """How the service whose arguments hold this reaches ``service``'s ``port``:
    ``http://HOST:PORT`` plus ``path``."""

    ref: Literal["url"] = "url"
    service: str
    port: str = "http"
    path: str = ""


class MountRef(_Frozen):
    """Where mount ``mount`` of the service appears to it, plus ``path`` inside it."""

    ref: Literal["mount"] = "mount"
    mount: str
    path: str = ""

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"path {value!r}: expected a relative path inside the mount")
        return value


Ref = Annotated[BindHost | PortRef | UrlRef | MountRef, Field(discriminator="ref")]


class Join(_Frozen):
    """One argument made of text and references, e.g. ``replica-1=`` and a :class:`UrlRef`."""

    ref: Literal["join"] = "join"
    parts: tuple[str | Ref, ...]


Arg = str | Ref | Join
"""One argument of a program: literal text, a reference the backend resolves, or a join."""


# -- parts of a service -----------------------------------------------------------------------
class Port(_Frozen):
    """A port the service listens on. ``number`` is the port inside a container (the local
    backend picks a free one on 127.0.0.1 instead); either way drillkit reaches it from the
    host at ``127.0.0.1`` on the port recorded in the stack's state.

    ``inherit``: the program can serve on a listening socket drillkit hands it
    (:mod:`drillkit.listen`); the local backend then binds the port itself and passes the
    socket down, so no other process can take the port between choosing and serving it.
    """

    name: str = "http"
    number: int = Field(ge=1, le=65535)
    inherit: bool = False

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value, "port")


class HttpCheck(_Frozen):
    """Ready when ``GET path`` on ``port`` answers 200."""

    check: Literal["http"] = "http"
    path: str = "/readyz"
    port: str = "http"


class TcpCheck(_Frozen):
    """Ready when ``port`` accepts a connection."""

    check: Literal["tcp"] = "tcp"
    port: str = "http"


Readiness = Annotated[HttpCheck | TcpCheck, Field(discriminator="check")]


class Mount(_Frozen):
    """A folder of the host made visible to the service: ``source`` (absolute, on the host)
    at ``target`` (absolute, inside a container). Mounts are how a replica gets its own copy
    of a model store; the local backend passes ``source`` itself."""

    name: str
    source: str
    target: str
    read_only: bool = True

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value, "mount")

    @field_validator("source", "target")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r}: expected an absolute path")
        return value


class Program(_Frozen):
    """What a service runs: a Python module (``python -m MODULE``) with the interpreter
    drillkit runs on (local) or the stack image's (docker), or an executable found on the
    ``PATH`` (local) or in the image (docker). ``image`` names another image than drillkit's
    stack image for the docker backend."""

    module: str | None = None
    executable: str | None = None
    args: tuple[Arg, ...] = ()
    image: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Program:
        if (self.module is None) == (self.executable is None):
            raise ValueError("a program is either a module or an executable, exactly one")
        return self


class Dependency(_Frozen):
    """Start after ``service`` has been started, or after it is ready."""

    service: str
    condition: Literal["started", "ready"] = "started"


class ServicePlan(_Frozen):
    """One service of a stack.

    ``role`` is what fault kinds match (``replica``, ``gateway``, ...); ``zone`` groups
    services of one failure domain. ``env`` is the service's environment; ``secrets`` maps an
    environment variable to the name of one of the plan's secrets, which are kept out of
    everything drillkit prints. ``target`` marks a service faults may act on (the docker
    backend labels it so, and refuses to touch a container without the label).

    ``ready`` says when the service can take traffic; ``live`` when it still answers at all,
    which is not the same: a replica whose model does not verify is alive and not ready.
    drillkit's own backends wait on ``ready`` and never restart a service by themselves;
    ``live`` is for orchestrators that do (a Kubernetes liveness probe,
    :mod:`drillkit.stacks.export_k8s`), so that they restart a hung service and leave an
    unready one alone.
    """

    name: str
    role: str
    zone: str | None = None
    program: Program
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)
    ports: tuple[Port, ...] = ()
    ready: Readiness | None = None
    live: Readiness | None = None
    mounts: tuple[Mount, ...] = ()
    depends_on: tuple[Dependency, ...] = ()
    gpu: bool = False
    target: bool = True

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value, "service")

    def port(self, name: str) -> Port:
        for port in self.ports:
            if port.name == name:
                return port
        raise KeyError(f"service {self.name} has no port {name!r}")

    def mount(self, name: str) -> Mount:
        for mount in self.mounts:
            if mount.name == name:
                return mount
        raise KeyError(f"service {self.name} has no mount {name!r}")


class Link(_Frozen):
    """Traffic from ``source`` to ``target``'s ``port``, which network faults may cut or
    slow. A reference from ``source`` to ``target`` (:class:`UrlRef`) goes over the link."""

    source: str
    target: str
    port: str = "http"

    @property
    def name(self) -> str:
        """``source.target``: unambiguous, since service names hold no dot."""
        return f"{self.source}.{self.target}"


class Endpoint(_Frozen):
    """A service's port, e.g. the one clients send requests to."""

    service: str
    port: str = "http"


class StackPlan(_Frozen):
    """Everything a backend needs to run a stack, and nothing about what it is for.

    ``entry`` is where the drill's load goes; ``settings`` is the preset's own description
    of the stack (parsed back by the preset's hooks and fault kinds); ``data`` is the folder
    of files prepared for this stack alone (store copies), removed when the stack goes down.
    """

    preset: str
    services: tuple[ServicePlan, ...]
    links: tuple[Link, ...] = ()
    entry: Endpoint
    secrets: dict[str, str] = Field(default_factory=dict)
    settings: dict[str, JsonValue] = Field(default_factory=dict)
    data: str | None = None
    listen: str | None = None
    """An address of the host where the entry port listens instead of 127.0.0.1, so that load
    generators on other hosts reach it (the local backend; ``stack.listen``)."""

    @model_validator(mode="after")
    def _consistent(self) -> StackPlan:
        services = {s.name: s for s in self.services}
        if len(services) != len(self.services):
            names = [s.name for s in self.services]
            raise ValueError(f"duplicate service names in {names}")

        def port_of(service: str, port: str, where: str) -> None:
            if service not in services:
                raise ValueError(f"{where}: no service {service!r}")
            if port not in {p.name for p in services[service].ports}:
                raise ValueError(f"{where}: service {service!r} has no port {port!r}")

        for service in self.services:
            where = f"service {service.name}"
            mounts = {m.name for m in service.mounts}
            refs = [
                part
                for arg in service.program.args
                for part in (arg.parts if isinstance(arg, Join) else (arg,))
            ]
            for arg in refs:
                if isinstance(arg, PortRef):
                    port_of(arg.service or service.name, arg.port, where)
                elif isinstance(arg, UrlRef):
                    port_of(arg.service, arg.port, where)
                elif isinstance(arg, MountRef) and arg.mount not in mounts:
                    raise ValueError(f"{where}: no mount {arg.mount!r}")
            for var, secret in service.secrets.items():
                if not _ENV_VAR.fullmatch(var):
                    raise ValueError(f"{where}: {var!r} is not an environment variable name")
                if secret not in self.secrets:
                    raise ValueError(f"{where}: {var} names an unknown secret {secret!r}")
            if service.ready is not None:
                port_of(service.name, service.ready.port, f"{where} readiness")
            if service.live is not None:
                port_of(service.name, service.live.port, f"{where} liveness")
            for dep in service.depends_on:
                if dep.service not in services or dep.service == service.name:
                    raise ValueError(f"{where}: depends on unknown service {dep.service!r}")
        for link in self.links:
            port_of(link.target, link.port, f"link {link.name}")
            if link.source not in services:
                raise ValueError(f"link {link.name}: no service {link.source!r}")
        port_of(self.entry.service, self.entry.port, "entry")
        for secret in self.secrets:  # each becomes a file of that name
            _check_name(secret, "secret")
        self.start_order()  # raises on a cycle
        return self

    # -- reading a plan ----------------------------------------------------------------------
    def service(self, name: str) -> ServicePlan:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def names(self) -> list[str]:
        return [s.name for s in self.services]

    def with_role(self, role: str) -> list[ServicePlan]:
        return [s for s in self.services if s.role == role]

    def link(self, source: str, target: str) -> Link | None:
        for link in self.links:
            if link.source == source and link.target == target:
                return link
        return None

    def links_to(self, target: str) -> list[Link]:
        """The links ending at ``target``: what a network fault on it cuts or slows."""
        return [link for link in self.links if link.target == target]

    def start_order(self) -> list[list[ServicePlan]]:
        """The services in waves: each wave depends only on earlier ones. Plan order is kept
        within a wave."""
        done: set[str] = set()
        waves: list[list[ServicePlan]] = []
        pending = list(self.services)
        while pending:
            wave = [s for s in pending if all(d.service in done for d in s.depends_on)]
            if not wave:
                cycle = ", ".join(s.name for s in pending)
                raise ValueError(f"dependencies form a cycle among {cycle}")
            waves.append(wave)
            done.update(s.name for s in wave)
            pending = [s for s in pending if s.name not in done]
        return waves

    def redacted(self) -> dict[str, Any]:
        """The plan as JSON data with every secret's value hidden, for printing."""
        data = self.model_dump(mode="json")
        data["secrets"] = dict.fromkeys(self.secrets, "<hidden>")
        return data
