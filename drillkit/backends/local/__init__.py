"""The local backend: every service of a plan is a child process in its own process group,
listening on 127.0.0.1.

Processes are detached (``start_new_session``) so a stack outlives the ``drillkit stack up``
that started it. The saved state records each process as its pid *and* start time, so a
recycled pid is never mistaken for one of ours; every process also carries
``DRILLKIT_STACK_ID=<id>`` in its environment, by which ``stack down`` finds one that a
killed drillkit started but never recorded.

When the plan has links, the services reach each other over them through drillkit's link
proxy (:mod:`drillkit.backends.local.linkproxy`), one process per stack that this backend
starts first, so that a network fault can cut or slow one link without privileges.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from drillkit import listen, procfs
from drillkit.backends.base import (
    Backend,
    Progress,
    ServiceState,
    StackIdentity,
    StackState,
    probe_tcp,
    save_state,
)
from drillkit.backends.common import (
    argv,
    log_tail,
    resolve,
    secret_env,
    secret_files,
    service_log,
    start_in_order,
)
from drillkit.errors import EnvironmentFailure, InputError, StackNotReady
from drillkit.fsutil import atomic_write, read_private
from drillkit.netprobe import free_port
from drillkit.stacks.plan import Link, MountRef, StackPlan, UrlRef
from drillkit.state import STACK_ENV

__all__ = [
    "STACK_ENV",
    "LocalBackend",
    "LocalService",
    "LocalStack",
    "ProxyState",
    "owned",
    "process_alive",
]

STOP_GRACE = 8.0
PROXY_TOKEN_FILE = "linkproxy.token"
_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
_PROXY_MODULE = "drillkit.backends.local.linkproxy"
_PROXY = "linkproxy"  # the proxy's name among a stack's processes
#: The name of the link proxy's control API socket when it is handed down (each link's is
#: the link's name). Here, not in the proxy's module, which `python -m` runs after this one.
CONTROL_PORT_NAME = "control"
#: How long a restart waits for its service's old port to be free again.
REBIND_WAIT = 2.0


Pid = Annotated[int, Field(gt=1, le=2**22)]
Port = Annotated[int, Field(ge=1, le=65535)]


def _import_torch() -> Any:
    """torch, imported with SIGINT and SIGTERM held until it is done.

    A KeyboardInterrupt raised inside torch's import (while its extension modules load) can
    abort the whole process (SIGABRT, no clean-up, no report): a SIGTERM 0.45 s into a drill
    did so in CI. A signal that arrives meanwhile is noted and raised again once the import is
    finished, where drillkit's own handler turns it into an orderly interrupt.
    """
    if threading.current_thread() is not threading.main_thread():
        import torch

        return torch
    noted: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    old = {signum: signal.signal(signum, lambda n, f: noted.append(n)) for signum in held}
    try:
        import torch
    finally:
        for signum, handler in old.items():
            signal.signal(signum, handler)
    if noted:
        signal.raise_signal(noted[0])
    return torch


class LocalService(ServiceState):
    """A service as a process: its pid and the kernel's start time of that pid."""

    pid: Pid | None = None
    started: int | None = Field(default=None, ge=0)

    def ident(self) -> str:
        return f"pid {self.pid}"


class ProxyState(BaseModel):
    """The stack's link proxy: its control API and the port each link listens on."""

    model_config = ConfigDict(extra="forbid")

    control_port: Port
    links: dict[str, Port]
    pid: Pid | None = None
    started: int | None = Field(default=None, ge=0)
    log: str

    @property
    def control_url(self) -> str:
        """Always on loopback: a state file cannot point drillkit's requests elsewhere."""
        return f"http://127.0.0.1:{self.control_port}"


class LocalStack(StackState[LocalService]):
    proxy: ProxyState | None = None

    def written_files(self) -> list[str]:
        return [*super().written_files(), *([self.proxy.log] if self.proxy else [])]


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def process_alive(pid: int | None, started: int | None) -> bool:
    """The process ``pid`` that started at ``started`` is present and not a zombie."""
    if pid is None:
        return False
    _reap(pid)
    info = procfs.stat(pid)
    if info is None or info.state in ("Z", "X"):
        return False
    return started is None or info.start_time == started


def owned(pid: int | None, started: int | None, stack_id: str) -> bool:
    """Whether ``pid`` is a live process this stack started: the kernel's start time is the
    one recorded, and the process began with the stack's id in its environment (drillkit sets
    it on everything it starts). A pid and a start time read from a state file are not
    enough on their own: the file may have been written to make drillkit act on a bystander."""
    return (
        started is not None
        and process_alive(pid, started)
        and procfs.environ_has(pid or 0, f"{STACK_ENV}={stack_id}".encode())
    )


def strays(stack_id: str, known: set[int]) -> list[int]:
    """Live processes of the stack that the state does not know: started by a drillkit
    killed before it could record them (mid-start, mid-restart), or a dead drill's load
    generator; each found by the stack's mark in its environment, which drillkit sets on
    everything it starts for the stack (a command line that quotes the stack's id or folder
    proves nothing: anyone can write one)."""
    marker = f"{STACK_ENV}={stack_id}".encode()
    found = []
    for pid in procfs.pids():
        if pid in known or pid == os.getpid() or not procfs.live(pid):
            continue
        if procfs.environ_has(pid, marker):
            found.append(pid)
    return found


def _inheritable_environ() -> dict[str, str]:
    """drillkit's environment as a child's starting point, less what drillkit sets itself
    for each process (a stack's mark, a socket hand-off): never passed on from outside."""
    return {k: v for k, v in os.environ.items() if k not in (STACK_ENV, listen.LISTEN_FDS_ENV)}


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group ``pid`` leads (a service and its children), else ``pid``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


class LocalBackend(Backend[LocalStack]):
    """Services as local processes."""

    name = "local"
    State = LocalStack

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        # Sockets bound for a process not started yet, by (stack id, service): each is handed
        # to its process at start (`Port.inherit`), so nothing else can take the port.
        self._bound: dict[tuple[str, str], dict[str, socket.socket]] = {}

    def _port(self, state: LocalStack, owner: str, name: str, *, inherit: bool) -> int:
        """A port for ``owner``'s port ``name``: bound now and kept for the process when it
        can take a socket, else only chosen (the program binds it itself)."""
        host = _host(state, owner, name)
        if not inherit:
            if host != "127.0.0.1":
                raise InputError(
                    f"stack.listen: {owner}'s port {name} is bound by its own program, on "
                    "127.0.0.1; it cannot listen elsewhere"
                )
            return free_port()
        try:
            sock = listen.bind(host=host)
        except OSError as exc:
            if host == "127.0.0.1":
                raise
            raise EnvironmentFailure(
                f"stack.listen: cannot listen on {host}: {exc.strerror or exc} (an address of "
                "this host is expected)"
            ) from None
        self._bound.setdefault((state.id, owner), {})[name] = sock
        return int(sock.getsockname()[1])

    def _sockets(
        self, state: LocalStack, owner: str, ports: dict[str, int], inherit: set[str]
    ) -> dict[str, socket.socket]:
        """The sockets to hand ``owner``'s process: those bound at start-up, or, for a
        restart, its recorded ports bound again (StackNotReady when one was taken meanwhile)."""
        bound = self._bound.pop((state.id, owner), None)
        if bound is not None:
            return bound
        sockets: dict[str, socket.socket] = {}
        deadline = time.monotonic() + REBIND_WAIT
        try:
            for name in sorted(inherit):
                while True:
                    try:
                        sockets[name] = listen.bind(ports[name], _host(state, owner, name))
                        break
                    except OSError as exc:  # the old process may still be closing it
                        if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                            raise
                        time.sleep(0.02)
        except OSError as exc:
            for sock in sockets.values():
                sock.close()
            raise StackNotReady(
                f"{owner}: port {ports[name]} ({name}) cannot be bound again: {exc.strerror}; "
                "another process took it"
            ) from None
        return sockets

    def _forget_sockets(self, state: LocalStack) -> None:
        for key in [key for key in self._bound if key[0] == state.id]:
            for sock in self._bound.pop(key).values():
                sock.close()

    def gpu_available(self) -> bool:
        # Only when a GPU may be wanted: the import takes a second or two.
        return bool(_import_torch().cuda.is_available())

    def no_gpu_reason(self) -> str:
        return "torch sees no usable CUDA device"

    # -- lifecycle -------------------------------------------------------------------------
    def up(
        self, plan: StackPlan, stack: StackIdentity, *, progress: Progress | None = None
    ) -> LocalStack:
        report = progress or (lambda message, fraction: None)
        state = LocalStack(backend=self.name, plan=plan, **stack.fields())
        (Path(state.run_dir) / "logs").mkdir(parents=True, exist_ok=True)
        try:
            for service in plan.services:
                state.services[service.name] = LocalService(
                    name=service.name,
                    role=service.role,
                    ports={
                        port.name: self._port(state, service.name, port.name, inherit=port.inherit)
                        for port in service.ports
                    },
                    log=service_log(state, service.name),
                )
            if plan.listen is not None:
                entry = state.services[plan.entry.service]
                entry.hosts[plan.entry.port] = IPv4Address(plan.listen)
                for link in plan.links:
                    if (link.target, link.port) == (plan.entry.service, plan.entry.port):
                        # The link proxy reaches its targets on 127.0.0.1.
                        raise InputError(
                            f"stack.listen: {link.source} reaches the entry over a link; "
                            "this stack's entry cannot listen elsewhere"
                        )
            if plan.links:
                # The services reach each other over the links through the proxy, so that
                # one link can be cut or slowed (network faults) without privileges.
                state.proxy = ProxyState(
                    control_port=self._port(state, _PROXY, CONTROL_PORT_NAME, inherit=True),
                    links={
                        link.name: self._port(state, _PROXY, link.name, inherit=True)
                        for link in plan.links
                    },
                    log=service_log(state, "linkproxy"),
                )
                report("starting the link proxy", -1)
                self._spawn_proxy(state)
                save_state(state)
            start_in_order(
                self,
                state,
                start=lambda service: self._spawn(state, service.name),
                check_running=lambda name: self._check_running(state, name),
                report=report,
            )
            if state.proxy is not None:
                self._proxy(state).wait_ready(timeout=10.0)
        except BaseException:
            self._forget_sockets(state)
            self.down(state)
            raise
        return state

    def command(self, state: LocalStack, name: str) -> list[str]:
        """The command line of service ``name``, every reference resolved: loopback, the
        ports picked for each service, the link proxy for a URL over a declared link."""
        plan = state.plan.service(name)

        def url(ref: UrlRef) -> str:
            link = state.plan.link(name, ref.service)
            if link is not None and link.port == ref.port and state.proxy is not None:
                port = state.proxy.links[link.name]
            else:
                target = state.service(ref.service)
                return f"http://{target.host(ref.port)}:{target.ports[ref.port]}{ref.path}"
            return f"http://127.0.0.1:{port}{ref.path}"

        def mount(ref: MountRef) -> str:
            source = plan.mount(ref.mount).source
            return str(Path(source) / ref.path) if ref.path else source

        args = [
            resolve(
                arg,
                bind="127.0.0.1",
                port=lambda ref: str(state.service(ref.service or name).ports[ref.port]),
                url=url,
                mount=mount,
            )
            for arg in plan.program.args
        ]
        found = shutil.which(plan.program.executable) if plan.program.executable else None
        return argv(plan.program, args, python=self.python, executable=found)

    def _environment(self, state: LocalStack, name: str) -> dict[str, str]:
        service = state.plan.service(name)
        env = {**_inheritable_environ(), **service.env}
        env.update({STACK_ENV: state.id, "PYTHONUNBUFFERED": "1"})
        folder = secret_files(state, name)
        if folder is not None:
            env.update(secret_env(state, name, str(folder)))
        return env

    def _popen(
        self,
        command: list[str],
        log: str,
        env: dict[str, str],
        sockets: dict[str, socket.socket] | None = None,
    ) -> tuple[int, int | None]:
        """Start ``command``, handing it ``sockets`` (closed here once it has them)."""
        extra, fds = listen.handoff(sockets or {})
        try:
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**env, **extra},
                    start_new_session=True,
                    close_fds=True,
                    pass_fds=fds,
                )
        except OSError as exc:
            raise StackNotReady(f"cannot start {command[0]}: {exc}") from None
        finally:
            for sock in (sockets or {}).values():
                sock.close()
        info = procfs.stat(proc.pid)
        return proc.pid, info.start_time if info is not None else None

    def _spawn(self, state: LocalStack, name: str) -> None:
        service = state.services[name]
        assert service.log is not None
        env = self._environment(state, name)
        inherit = {port.name for port in state.plan.service(name).ports if port.inherit}
        sockets = self._sockets(state, name, service.ports, inherit)
        command = self.command(state, name)
        service.pid, service.started = self._popen(command, service.log, env, sockets)

    def _spawn_proxy(self, state: LocalStack) -> None:
        proxy = state.proxy
        assert proxy is not None
        argv = [self.python, "-m", _PROXY_MODULE, "--control-port", str(proxy.control_port)]
        for link in state.plan.links:
            target = state.service(link.target).ports[link.port]
            argv += ["--link", f"{link.name}={proxy.links[link.name]}:{target}"]
        # Its control API answers only the holder of this token: a private file of the stack.
        token = Path(state.run_dir) / PROXY_TOKEN_FILE
        atomic_write(token, secrets.token_hex(16).encode(), mode=0o600)
        argv += ["--stack-id", state.id, "--token-file", str(token)]
        env = {**_inheritable_environ(), STACK_ENV: state.id, "PYTHONUNBUFFERED": "1"}
        ports = {CONTROL_PORT_NAME: proxy.control_port, **proxy.links}
        sockets = self._sockets(state, _PROXY, ports, set(ports))
        proxy.pid, proxy.started = self._popen(argv, proxy.log, env, sockets)

    def _check_running(self, state: LocalStack, name: str) -> None:
        service = state.services[name]
        if not owned(service.pid, service.started, state.id):
            raise StackNotReady(
                f"{name} exited during start-up: "
                f"{log_tail(service.log) or 'no output'} (log: {service.log})"
            )

    def down(self, state: LocalStack) -> None:
        known: list[tuple[int | None, int | None]] = [
            (s.pid, s.started) for s in state.services.values()
        ]
        if state.proxy is not None:
            known.append((state.proxy.pid, state.proxy.started))
        live: list[tuple[int, int]] = [
            (pid, started)
            for pid, started in known
            if pid is not None and started is not None and owned(pid, started, state.id)
        ]
        for stray in strays(state.id, {pid for pid, _ in known if pid is not None}):
            info = procfs.stat(stray)
            if info is not None:
                live.append((stray, info.start_time))
        for pid, _ in live:
            _signal_group(pid, signal.SIGCONT)  # a paused service cannot handle SIGTERM
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while live and time.monotonic() < deadline:
            # The start time again: a pid the kernel gave to another process is not signalled.
            live = [(pid, started) for pid, started in live if process_alive(pid, started)]
            if live:
                time.sleep(0.05)
        for pid, _ in live:
            _signal_group(pid, signal.SIGKILL)
        for known_pid, _ in known:
            if known_pid is not None:
                _reap(known_pid)

    def service_status(self, state: LocalStack, name: str) -> str:
        service = state.services.get(name)
        if service is None or not owned(service.pid, service.started, state.id):
            return "exited"
        assert service.pid is not None
        return "paused" if procfs.proc_state(service.pid) == "T" else "running"

    # -- fault primitives ------------------------------------------------------------------
    def _live_pid(self, state: LocalStack, name: str) -> int | None:
        service = state.service(name)
        return service.pid if owned(service.pid, service.started, state.id) else None

    def kill(self, state: LocalStack, name: str, *, signal: str = "KILL") -> None:
        pid = self._live_pid(state, name)
        if pid is not None:
            os.killpg(pid, _SIGNALS[signal])

    def pause(self, state: LocalStack, name: str) -> None:
        pid = self._live_pid(state, name)
        if pid is not None:
            os.killpg(pid, signal.SIGSTOP)

    def resume(self, state: LocalStack, name: str) -> None:
        pid = self._live_pid(state, name)
        if pid is not None:
            os.killpg(pid, signal.SIGCONT)

    def restart(self, state: LocalStack, name: str) -> None:
        service = state.service(name)
        pid = self._live_pid(state, name)
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_GRACE
            # Its start time, not its environment: a dying process loses its memory (and with
            # it what /proc shows of its environment) before it closes its sockets.
            while process_alive(pid, service.started) and time.monotonic() < deadline:
                time.sleep(0.02)
        self._spawn(state, name)
        save_state(state)

    # -- network links: through drillkit's link proxy --------------------------------------
    def _proxy(self, state: LocalStack) -> Any:
        if state.proxy is None:
            raise EnvironmentFailure(f"stack {state.id} has no link proxy; its plan has no links")
        from drillkit.backends.local.linkproxy import LinkProxyClient

        return LinkProxyClient(state.proxy.control_url, token=_proxy_token(state))

    def cut_link(self, state: LocalStack, link: Link, *, mode: str) -> str:
        self._proxy(state).set_mode(link.name, mode)
        return f"link proxy: {link.source}->{link.target} set to {mode}"

    def slow_link(self, state: LocalStack, link: Link, *, delay: float, jitter: float) -> str:
        # Delaying the request direction only adds `delay` once per round trip.
        self._proxy(state).set_mode(
            link.name,
            "latency",
            delay_ms=delay * 1000,
            jitter_ms=jitter * 1000,
            direction="to_target",
        )
        return f"link proxy: {link.source}->{link.target} +{delay * 1000:.0f} ms"

    def restore_link(self, state: LocalStack, link: Link) -> None:
        proxy = state.proxy
        if proxy is not None and owned(proxy.pid, proxy.started, state.id):
            self._proxy(state).set_mode(link.name, "pass")

    def probe_link(self, state: LocalStack, link: Link, *, timeout: float) -> tuple[str, float]:
        if state.proxy is None or link.name not in state.proxy.links:
            raise EnvironmentFailure(f"link {link.name} is not proxied in stack {state.id}")
        return probe_tcp("127.0.0.1", state.proxy.links[link.name], timeout=timeout)


def _proxy_token(state: LocalStack) -> str:
    path = Path(state.run_dir) / PROXY_TOKEN_FILE
    return read_private(path, limit=256).decode("ascii", "replace").strip()


def _host(state: LocalStack, owner: str, port: str) -> str:
    """Where ``owner``'s port listens: the plan's ``listen`` address for the entry port."""
    entry = state.plan.entry
    if state.plan.listen is not None and (owner, port) == (entry.service, entry.port):
        return state.plan.listen
    return "127.0.0.1"
