"""The local backend: every service is a child process in its own process group on 127.0.0.1.

Processes are detached (``start_new_session``) so a stack outlives the ``drillkit stack up``
that started it; the saved :class:`StackState` records each pid, and every command line
carries ``--stack-id`` so a recycled pid is never mistaken for one of ours.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
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
    probe_tcp,
    save_state,
)
from drillkit.backends.common import (
    fallback_file,
    new_stack,
    remove_copies,
    replica_store,
    wait_until_ready,
)
from drillkit.errors import BackendUnavailable, EnvironmentFailure, StackNotReady
from drillkit.procfs import proc_state
from drillkit.stacks.recommender.replica import ADMIN_TOKEN_ENV

STOP_GRACE = 8.0
_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _is_ours(pid: int, stack_id: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return stack_id.encode() in cmdline


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def process_alive(pid: int | None, stack_id: str) -> bool:
    """Alive means present, not a zombie, and carrying our stack id."""
    if pid is None:
        return False
    _reap(pid)
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X") and _is_ours(pid, stack_id)


def strays(stack_id: str, known: set[int]) -> list[int]:
    """Processes carrying the stack id that the state does not know: started by a drillkit
    killed before it could save their pid (mid-start, mid-restart), or a dead drill's load
    generator, whose arguments name the stack's run folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in known or pid == os.getpid():
            continue
        if (
            _is_ours(pid, stack_id)
            and _is_python_module(pid)
            and proc_state(pid) not in (None, "Z", "X")
        ):
            found.append(pid)
    return found


def _is_python_module(pid: int) -> bool:
    # Everything drillkit starts is `python -m <module> ...`; a `tail -f` of a stack's log,
    # whose arguments also name the stack, is not drillkit's to stop.
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        len(argv) > 2 and Path(os.fsdecode(argv[0])).name.startswith("python") and argv[1] == b"-m"
    )


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group ``pid`` leads (a service and its children), else ``pid``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def log_tail(path: str | None, lines: int = 5) -> str:
    if not path:
        return ""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    tail = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(tail)


class LocalBackend(Backend):
    """Services as local processes."""

    name = "local"

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    # -- lifecycle -------------------------------------------------------------------------
    def up(self, spec: StackSpec, *, progress: Progress | None = None) -> StackState:
        report = progress or (lambda message, fraction: None)
        state = new_stack(spec, self.name, gpu=self._resolve_gpu(spec.gpu), report=report)
        run_dir = Path(state.run_dir)
        try:
            for i in range(1, spec.replicas + 1):
                name = f"replica-{i}"
                replica_store(state, name)
                port = free_port()
                state.services[name] = ServiceState(
                    name=name,
                    role="replica",
                    url=f"http://127.0.0.1:{port}",
                    port=port,
                    log=str(run_dir / "logs" / f"{name}.log"),
                    link_port=free_port(),
                )
            # The gateway reaches each replica through drillkit's link proxy, so one link can
            # be cut or slowed (network faults) without privileges or touching other traffic.
            proxy_port = free_port()
            state.proxy_url = f"http://127.0.0.1:{proxy_port}"
            state.services["linkproxy"] = ServiceState(
                name="linkproxy",
                role="proxy",
                url=state.proxy_url,
                port=proxy_port,
                log=str(run_dir / "logs" / "linkproxy.log"),
            )
            gw_port = free_port()
            state.gateway_url = f"http://127.0.0.1:{gw_port}"
            state.services["gateway"] = ServiceState(
                name="gateway",
                role="gateway",
                url=state.gateway_url,
                port=gw_port,
                log=str(run_dir / "logs" / "gateway.log"),
            )
            for name in state.services:
                report(f"starting {name}", -1)
                self._spawn(state, name)
                save_state(state)  # saved as we go: `stack down` can clean up a half start
            self._wait_ready(state, report)
        except BaseException:
            self.down(state)
            raise
        return state

    def _resolve_gpu(self, gpu: str) -> bool:
        if gpu == "off":
            return False
        import torch  # only when a GPU may be wanted; imports take a second or two

        available = bool(torch.cuda.is_available())
        if gpu == "on" and not available:
            raise BackendUnavailable("gpu: on, but torch sees no usable CUDA device")
        return available

    def _command(self, state: StackState, name: str) -> list[str]:
        service = state.services[name]
        if service.role == "proxy":
            links = [
                arg
                for s in state.replicas()
                for arg in ("--link", f"{s.name}={s.link_port}:{s.port}")
            ]
            return [
                self.python,
                "-m",
                "drillkit.faults.linkproxy",
                "--control-port",
                str(service.port),
                *links,
                "--stack-id",
                state.id,
            ]
        if service.role == "replica":
            return [
                self.python,
                "-m",
                "drillkit.stacks.recommender.replica",
                "--store",
                state.stores.get(name, state.store),  # the replica's own copy
                "--name",
                name,
                "--host",
                "127.0.0.1",
                "--port",
                str(service.port),
                "--device",
                "cuda" if state.gpu else "cpu",
                "--stack-id",
                state.id,
            ]
        settings = _gateway_args(state.spec["gateway"])
        fallback = ["--fallback", str(fallback_file(Path(state.store)))]
        if not state.spec["gateway"].get("fallback", True):
            fallback = []  # no popular-items answer: a request no replica serves fails (503)
        replicas = [
            arg
            for s in state.replicas()
            for arg in ("--replica", f"{s.name}={_gateway_side_url(s)}")
        ]
        return [
            self.python,
            "-m",
            "drillkit.stacks.recommender.gateway",
            "--host",
            "127.0.0.1",
            "--port",
            str(service.port),
            *fallback,
            *replicas,
            *settings,
            "--stack-id",
            state.id,
        ]

    def _spawn(self, state: StackState, name: str) -> None:
        service = state.services[name]
        env = {**os.environ, ADMIN_TOKEN_ENV: state.admin_token, "PYTHONUNBUFFERED": "1"}
        assert service.log is not None
        with open(service.log, "ab") as log:
            proc = subprocess.Popen(
                self._command(state, name),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        service.pid = proc.pid

    def _wait_ready(self, state: StackState, report: Progress) -> None:
        wait_until_ready(state, lambda name: self._check_running(state, name), report)

    def _check_running(self, state: StackState, name: str) -> None:
        service = state.services[name]
        if not process_alive(service.pid, state.id):
            raise StackNotReady(
                f"{name} exited during start-up: "
                f"{log_tail(service.log) or 'no output'} (log: {service.log})"
            )

    def down(self, state: StackState) -> None:
        pids = [s.pid for s in state.services.values() if s.pid is not None]
        live = [pid for pid in pids if process_alive(pid, state.id)]
        live += strays(state.id, set(pids))
        for pid in live:
            _signal_group(pid, signal.SIGCONT)  # a paused service cannot handle SIGTERM
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while live and time.monotonic() < deadline:
            live = [pid for pid in live if process_alive(pid, state.id)]
            if live:
                time.sleep(0.05)
        for pid in live:
            _signal_group(pid, signal.SIGKILL)
        for pid in pids:
            _reap(pid)
        remove_copies(state)
        clear_state()

    def service_alive(self, state: StackState, name: str) -> bool:
        return process_alive(state.services[name].pid, state.id)

    def service_status(self, state: StackState, name: str) -> str:
        pid = state.services[name].pid
        if not process_alive(pid, state.id):
            return "exited"
        assert pid is not None
        return "paused" if proc_state(pid) == "T" else "running"

    # -- fault primitives ------------------------------------------------------------------
    def kill(self, state: StackState, name: str, *, signal: str = "KILL") -> None:
        pid = state.services[name].pid
        if pid is not None and process_alive(pid, state.id):
            os.killpg(pid, _SIGNALS[signal])

    def pause(self, state: StackState, name: str) -> None:
        pid = state.services[name].pid
        if pid is not None and process_alive(pid, state.id):
            os.killpg(pid, signal.SIGSTOP)

    def resume(self, state: StackState, name: str) -> None:
        pid = state.services[name].pid
        if pid is not None and process_alive(pid, state.id):
            os.killpg(pid, signal.SIGCONT)

    def restart(self, state: StackState, name: str) -> None:
        service = state.services[name]
        if process_alive(service.pid, state.id):
            assert service.pid is not None
            os.killpg(service.pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_GRACE
            while process_alive(service.pid, state.id) and time.monotonic() < deadline:
                time.sleep(0.02)
        self._spawn(state, name)
        save_state(state)

    # -- network links: through drillkit's link proxy --------------------------------------
    def _proxy(self, state: StackState) -> Any:
        if not state.proxy_url:
            raise EnvironmentFailure(f"stack {state.id} has no link proxy; network faults need one")
        from drillkit.faults.linkproxy import LinkProxyClient

        return LinkProxyClient(state.proxy_url)

    def cut_link(self, state: StackState, name: str, *, mode: str) -> str:
        self._proxy(state).set_mode(name, mode)
        return f"link proxy: gateway->{name} set to {mode}"

    def slow_link(self, state: StackState, name: str, *, delay: float, jitter: float) -> str:
        # Delaying the request direction only adds `delay` once per round trip.
        self._proxy(state).set_mode(
            name,
            "latency",
            delay_ms=delay * 1000,
            jitter_ms=jitter * 1000,
            direction="to_target",
        )
        return f"link proxy: gateway->{name} +{delay * 1000:.0f} ms"

    def restore_link(self, state: StackState, name: str) -> None:
        proxy = state.services.get("linkproxy")
        if proxy is not None and process_alive(proxy.pid, state.id):
            self._proxy(state).set_mode(name, "pass")

    def probe_link(self, state: StackState, name: str, *, timeout: float) -> tuple[str, float]:
        port = state.services[name].link_port
        if port is None:
            raise EnvironmentFailure(f"{name} has no proxied link in stack {state.id}")
        return probe_tcp("127.0.0.1", int(port), timeout=timeout)


def _gateway_side_url(service: ServiceState) -> str:
    """Where the gateway reaches a replica: through its proxied link when there is one."""
    if service.link_port is not None:
        return f"http://127.0.0.1:{service.link_port}"
    return service.url


def _gateway_args(settings: dict[str, Any]) -> list[str]:
    return GatewaySettings(**settings).args()
