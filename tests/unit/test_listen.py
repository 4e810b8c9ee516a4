"""Listening sockets handed from the local backend to its services: the port is the stack's
from the moment it is chosen; a hand-off named in the environment is checked, never trusted."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from drillkit import listen
from drillkit.backends.base import StackIdentity
from drillkit.backends.local import LocalBackend
from drillkit.stacks.plan import (
    Endpoint,
    HttpCheck,
    Port,
    PortRef,
    Program,
    ServicePlan,
    StackPlan,
)
from drillkit.testing import eventually

#: A service that serves on the socket drillkit hands it, and says so in its log.
SERVER = """
import http.server, socketserver, sys
from drillkit.listen import inherited

sock = inherited("http")

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

class Server(socketserver.TCPServer):
    allow_reuse_address = True

if sock is None:
    server = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    print("bound it myself", flush=True)
else:
    server = Server(sock.getsockname(), Handler, bind_and_activate=False)
    server.socket = sock
    print("inherited", sock.getsockname()[1], flush=True)
server.serve_forever()
"""


def test_inherited_accepts_a_listening_tcp_socket_only(tmp_path: Path) -> None:
    assert listen.inherited("http", {}) is None
    server = listen.bind()
    env, fds = listen.handoff({"http": server})
    assert fds == (server.fileno(),)
    got = listen.inherited("http", env)
    assert got is not None and got.getsockname() == server.getsockname()
    got.detach()  # the same descriptor as `server`
    assert listen.inherited("other", env) is None

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    idle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # not listening
    with (tmp_path / "f").open("w") as plain:
        bad = {
            f"http={udp.fileno()}": "not a listening TCP socket",
            f"http={idle.fileno()}": "not a listening TCP socket",
            f"http={plain.fileno()}": "is not a socket",
            "http=1": "standard stream",
            "http=99999": "is not a socket",
            "http": "is not NAME=FD",
            "http=3;rm": "is not NAME=FD",
        }
        for value, message in bad.items():
            with pytest.raises(ValueError, match=message):
                listen.inherited("http", {listen.LISTEN_FDS_ENV: value})
    for sock in (server, udp, idle):
        sock.close()


def test_the_local_backend_hands_each_service_its_socket(
    drillkit_home: Path, tmp_path: Path
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "handed.py").write_text(SERVER)
    root = str(Path(listen.__file__).parents[1])
    web = ServicePlan(
        name="web",
        role="web",
        program=Program(module="handed", args=(PortRef(),)),
        env={"PYTHONPATH": os.pathsep.join([str(code), root])},
        ports=(Port(number=8000, inherit=True),),
        ready=HttpCheck(path="/"),
    )
    plan = StackPlan(preset="test", services=(web,), entry=Endpoint(service="web"))
    stack_id = "20260101-000000-abcdef"
    from drillkit import state as state_files

    identity = StackIdentity(
        id=stack_id, run_dir=state_files.stack_dir(stack_id), gpu=False, created_at=1.0
    )
    backend = LocalBackend()
    state = backend.up(plan, identity)
    try:
        port = state.services["web"].ports["http"]
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "ok"
        backend.restart(state, "web")  # the same port, bound again and handed down again
        eventually(lambda: backend.ready(state, "web"), timeout=10)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text == "ok"
        log = Path(state.services["web"].log or "").read_text()
        assert log.count(f"inherited {port}") == 2 and "myself" not in log
    finally:
        backend.down(state)


def test_a_port_taken_while_a_service_was_down_is_named(
    drillkit_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import drillkit.backends.local as local

    monkeypatch.setattr(local, "REBIND_WAIT", 0.1)
    # Restarting a service binds its recorded port again; a squatter makes that a clear
    # error rather than a service that silently serves nothing.
    squatter = listen.bind()
    port = squatter.getsockname()[1]
    ports = {"http": port}
    backend = LocalBackend()
    from drillkit.backends.local import LocalService, LocalStack
    from drillkit.errors import StackNotReady
    from drillkit.testing import fake_plan

    state = LocalStack(
        backend="local",
        plan=fake_plan(replicas=1),
        **StackIdentity(
            id="20260101-000000-abcdef", run_dir=tmp_path, gpu=False, created_at=1.0
        ).fields(),
        services={"replica-1": LocalService(name="replica-1", role="replica", ports=ports)},
    )
    try:
        with pytest.raises(StackNotReady, match=f"port {port} .* another process took it"):
            backend._sockets(state, "replica-1", ports, {"http"})
    finally:
        squatter.close()


def test_a_service_without_a_hand_off_binds_its_port_itself(tmp_path: Path) -> None:
    (tmp_path / "handed.py").write_text(SERVER)
    free = listen.bind()
    port = free.getsockname()[1]
    free.close()
    env = {k: v for k, v in os.environ.items() if k != listen.LISTEN_FDS_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(Path(listen.__file__).parents[1])])
    proc = subprocess.Popen(
        [sys.executable, "-m", "handed", str(port)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "bound it myself"
    finally:
        proc.kill()
        proc.wait()
