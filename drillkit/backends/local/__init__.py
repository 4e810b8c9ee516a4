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
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from drillkit import procfs
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
    free_port,
    log_tail,
    resolve,
    service_log,
    start_in_order,
)
from drillkit.errors import EnvironmentFailure, StackNotReady
from drillkit.stacks.plan import Link, MountRef, StackPlan, UrlRef

__all__ = ["STACK_ENV", "LocalBackend", "LocalService", "LocalStack", "ProxyState"]

STOP_GRACE = 8.0
#: Every process of a stack starts with this variable set to the stack's id.
STACK_ENV = "DRILLKIT_STACK_ID"
_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
_PROXY_MODULE = "drillkit.backends.local.linkproxy"


class LocalService(ServiceState):
    """A service as a process: its pid and the kernel's start time of that pid."""

    pid: int | None = None
    started: int | None = None

    def ident(self) -> str:
        return f"pid {self.pid}"


class ProxyState(BaseModel):
    """The stack's link proxy: its control API and the port each link listens on."""

    model_config = ConfigDict(extra="forbid")

    control_url: str
    control_port: int
    links: dict[str, int]
    pid: int | None = None
    started: int | None = None
    log: str


class LocalStack(StackState[LocalService]):
    proxy: ProxyState | None = None


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


def strays(stack_id: str, known: set[int]) -> list[int]:
    """Live processes of the stack that the state does not know: started by a drillkit
    killed before it could record them (mid-start, mid-restart), found by the stack id in
    their environment; or a dead drill's load generator, a ``python -m`` process whose
    arguments name the stack's run folder."""
    marker = f"{STACK_ENV}={stack_id}".encode()
    found = []
    for pid in procfs.pids():
        if pid in known or pid == os.getpid() or not procfs.live(pid):
            continue
        if procfs.environ_has(pid, marker) or _python_module_naming(pid, stack_id):
            found.append(pid)
    return found


def _python_module_naming(pid: int, stack_id: str) -> bool:
    # Everything drillkit starts is `python -m <module> ...`; a `tail -f` of a stack's log,
    # whose arguments also name the stack, is not drillkit's to stop.
    argv = procfs.argv(pid) or []
    return (
        len(argv) > 2
        and Path(os.fsdecode(argv[0])).name.startswith("python")
        and argv[1] == b"-m"
        and any(stack_id.encode() in arg for arg in argv[2:])
    )


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

    def gpu_available(self) -> bool:
        import torch  # only when a GPU may be wanted; imports take a second or two

        return bool(torch.cuda.is_available())

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
                    ports={port.name: free_port() for port in service.ports},
                    log=service_log(state, service.name),
                )
            if plan.links:
                # The services reach each other over the links through the proxy, so that
                # one link can be cut or slowed (network faults) without privileges.
                control = free_port()
                state.proxy = ProxyState(
                    control_url=f"http://127.0.0.1:{control}",
                    control_port=control,
                    links={link.name: free_port() for link in plan.links},
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
                from drillkit.backends.local.linkproxy import LinkProxyClient

                LinkProxyClient(state.proxy.control_url).wait_ready(timeout=10.0)
        except BaseException:
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
                port = state.service(ref.service).ports[ref.port]
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
        env = {**os.environ, **service.env, STACK_ENV: state.id, "PYTHONUNBUFFERED": "1"}
        env.update({var: state.secret(secret) for var, secret in service.secrets.items()})
        return env

    def _popen(self, command: list[str], log: str, env: dict[str, str]) -> tuple[int, int | None]:
        try:
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
        except OSError as exc:
            raise StackNotReady(f"cannot start {command[0]}: {exc}") from None
        info = procfs.stat(proc.pid)
        return proc.pid, info.start_time if info is not None else None

    def _spawn(self, state: LocalStack, name: str) -> None:
        service = state.services[name]
        assert service.log is not None
        env = self._environment(state, name)
        service.pid, service.started = self._popen(self.command(state, name), service.log, env)

    def _spawn_proxy(self, state: LocalStack) -> None:
        proxy = state.proxy
        assert proxy is not None
        argv = [self.python, "-m", _PROXY_MODULE, "--control-port", str(proxy.control_port)]
        for link in state.plan.links:
            target = state.service(link.target).ports[link.port]
            argv += ["--link", f"{link.name}={proxy.links[link.name]}:{target}"]
        argv += ["--stack-id", state.id]
        env = {**os.environ, STACK_ENV: state.id, "PYTHONUNBUFFERED": "1"}
        proxy.pid, proxy.started = self._popen(argv, proxy.log, env)

    def _check_running(self, state: LocalStack, name: str) -> None:
        service = state.services[name]
        if not process_alive(service.pid, service.started):
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
        live = [pid for pid, started in known if pid is not None and process_alive(pid, started)]
        live += strays(state.id, {pid for pid, _ in known if pid is not None})
        for pid in live:
            _signal_group(pid, signal.SIGCONT)  # a paused service cannot handle SIGTERM
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while live and time.monotonic() < deadline:
            live = [pid for pid in live if process_alive(pid, None)]
            if live:
                time.sleep(0.05)
        for pid in live:
            _signal_group(pid, signal.SIGKILL)
        for known_pid, _ in known:
            if known_pid is not None:
                _reap(known_pid)

    def service_status(self, state: LocalStack, name: str) -> str:
        service = state.services.get(name)
        if service is None or not process_alive(service.pid, service.started):
            return "exited"
        assert service.pid is not None
        return "paused" if procfs.proc_state(service.pid) == "T" else "running"

    # -- fault primitives ------------------------------------------------------------------
    def _live_pid(self, state: LocalStack, name: str) -> int | None:
        service = state.service(name)
        return service.pid if process_alive(service.pid, service.started) else None

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
            while process_alive(service.pid, service.started) and time.monotonic() < deadline:
                time.sleep(0.02)
        self._spawn(state, name)
        save_state(state)

    # -- network links: through drillkit's link proxy --------------------------------------
    def _proxy(self, state: LocalStack) -> Any:
        if state.proxy is None:
            raise EnvironmentFailure(f"stack {state.id} has no link proxy; its plan has no links")
        from drillkit.backends.local.linkproxy import LinkProxyClient

        return LinkProxyClient(state.proxy.control_url)

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
        if proxy is not None and process_alive(proxy.pid, proxy.started):
            self._proxy(state).set_mode(link.name, "pass")

    def probe_link(self, state: LocalStack, link: Link, *, timeout: float) -> tuple[str, float]:
        if state.proxy is None or link.name not in state.proxy.links:
            raise EnvironmentFailure(f"link {link.name} is not proxied in stack {state.id}")
        return probe_tcp("127.0.0.1", state.proxy.links[link.name], timeout=timeout)
