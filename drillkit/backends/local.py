"""The local backend: every service is a child process in its own process group on 127.0.0.1.

Processes are detached (``start_new_session``) so a stack outlives the ``drillkit stack up``
that started it; the saved :class:`StackState` records each pid, and every command line
carries ``--stack-id`` so a recycled pid is never mistaken for one of ours.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from drillkit import paths
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
from drillkit.errors import ArtifactError, BackendUnavailable, StackNotReady
from drillkit.stacks.recommender.build import ensure_artifacts
from drillkit.stacks.recommender.replica import ADMIN_TOKEN_ENV
from drillkit.stacks.recommender.store import ModelStore, signing_key, verify_version

READY_TIMEOUT = 180.0
STOP_GRACE = 8.0
_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_state(pid: int) -> str | None:
    """The kernel's one-letter state of a process, or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat[stat.rindex(")") + 2]


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
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X") and _is_ours(pid, stack_id)


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
        use_gpu = self._resolve_gpu(spec.gpu)
        stack_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        run_dir = paths.state_dir() / "stacks" / stack_id
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)

        if spec.store is not None:
            store_root = Path(spec.store).resolve()
            if not ModelStore(store_root).versions():
                raise BackendUnavailable(f"{store_root}: not a model store (no versions/)")
        else:
            report("model artifacts", -1)
            cached = ensure_artifacts(
                spec.catalog, device="cuda" if use_gpu else "cpu", progress=progress
            )
            # Each stack serves its own copy, so a corrupt_model fault never touches the cache.
            store_root = run_dir / "store"
            shutil.copytree(cached.root, store_root, ignore=shutil.ignore_patterns(".*"))

        state = StackState(
            id=stack_id,
            backend=self.name,
            created_at=time.time(),
            run_dir=str(run_dir),
            store=str(store_root),
            gateway_url="",
            admin_token=secrets.token_hex(16),
            gpu=use_gpu,
            spec={
                "replicas": spec.replicas,
                "gpu": spec.gpu,
                "catalog": {
                    "items": spec.catalog.items,
                    "dim": spec.catalog.dim,
                    "seed": spec.catalog.seed,
                },
                "gateway": vars(spec.gateway),
            },
        )
        try:
            for i in range(1, spec.replicas + 1):
                name = f"replica-{i}"
                node_store = run_dir / "nodes" / name / "store"
                shutil.copytree(store_root, node_store, ignore=shutil.ignore_patterns(".*"))
                state.stores[name] = str(node_store)
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
                name="linkproxy", role="proxy", url=state.proxy_url, port=proxy_port,
                log=str(run_dir / "logs" / "linkproxy.log"))
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
            links = [arg for s in state.replicas()
                     for arg in ("--link", f"{s.name}={s.link_port}:{s.port}")]
            return [self.python, "-m", "drillkit.faults.linkproxy",
                    "--control-port", str(service.port), *links, "--stack-id", state.id]
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
        fallback = ["--fallback", str(_fallback_file(Path(state.store)))]
        if not state.spec["gateway"].get("fallback", True):
            fallback = []  # no popular-items answer: a request no replica serves fails (503)
        replicas = [arg for s in state.replicas()
                    for arg in ("--replica", f"{s.name}={_gateway_side_url(s)}")]
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
        deadline = time.monotonic() + READY_TIMEOUT
        pending = {s.name for s in state.replicas()}
        total = len(pending) + 1
        with httpx.Client(timeout=1.0) as client:
            while pending:
                for name in sorted(pending):
                    self._check_running(state, name)
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(state.services[name].url + "/readyz").status_code == 200:
                            pending.discard(name)
                            report(f"{name} ready", (total - len(pending) - 1) / total)
                if pending and time.monotonic() > deadline:
                    raise StackNotReady(
                        f"not ready after {READY_TIMEOUT:.0f} s: "
                        f"{', '.join(sorted(pending))}; logs in {state.run_dir}"
                    )
                if pending:
                    time.sleep(0.1)
            # The gateway is ready for the drill once it routes to every replica.
            want = {s.name for s in state.replicas()}
            while True:
                self._check_running(state, "gateway")
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    body = client.get(state.gateway_url + "/status").json()
                    up = {r["name"] for r in body["replicas"] if r["state"] == "up"}
                    if want <= up:
                        report("gateway routing to every replica", 1.0)
                        return
                if time.monotonic() > deadline:
                    raise StackNotReady(
                        f"gateway did not see every replica up after "
                        f"{READY_TIMEOUT:.0f} s; logs in {state.run_dir}"
                    )
                time.sleep(0.05)

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
        for pid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGCONT)  # a paused service cannot handle SIGTERM
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while live and time.monotonic() < deadline:
            live = [pid for pid in live if process_alive(pid, state.id)]
            if live:
                time.sleep(0.05)
        for pid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for pid in pids:
            _reap(pid)
        if Path(state.store).parent == Path(state.run_dir):  # our copy, not a user's store
            shutil.rmtree(state.store, ignore_errors=True)
        shutil.rmtree(Path(state.run_dir) / "nodes", ignore_errors=True)
        clear_state()

    def service_alive(self, state: StackState, name: str) -> bool:
        return process_alive(state.services[name].pid, state.id)

    def service_status(self, state: StackState, name: str) -> str:
        pid = state.services[name].pid
        if not process_alive(pid, state.id):
            return "exited"
        assert pid is not None
        return "paused" if _proc_state(pid) == "T" else "running"

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


def _gateway_side_url(service: ServiceState) -> str:
    """Where the gateway reaches a replica: through its proxied link when there is one."""
    if service.link_port is not None:
        return f"http://127.0.0.1:{service.link_port}"
    return service.url


def _gateway_args(settings: dict[str, Any]) -> list[str]:
    return GatewaySettings(**settings).args()


def _fallback_file(store_root: Path) -> Path:
    """popular.json of the newest servable version: the gateway's degraded answer."""
    store = ModelStore(store_root)
    key = signing_key()
    for version in store.serving_candidates():
        folder = store.version_dir(version)
        with contextlib.suppress(ArtifactError):
            verify_version(folder, key=key)
            return folder / "popular.json"
    raise StackNotReady(f"{store_root}: no model version verifies; cannot start the gateway")
