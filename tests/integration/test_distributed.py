"""Load from other hosts: workers in network namespaces on their own addresses, joined to the
drill's master and sink over a bridge made for the test, a drill with one of them killed; and
the ssh launcher through a stand-in ``ssh`` that runs the command here."""

from __future__ import annotations

import importlib.metadata
import json
import os
import random
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from drillkit.load.driver import LOCUSTFILE, LoadDriver, LoadPlan, WorkerHost

pytestmark = pytest.mark.timeout(420)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, list[str]]]:
    """A bridge on this host (its address: what the drill binds) and two namespaces on it,
    each with an address of its own: (bridge address, [namespace names])."""
    tag = f"{os.getpid() % 1000:03d}{random.randrange(100):02d}"
    net = 100 + random.randrange(150)
    bridge, host = f"dkt{tag}", f"10.213.{net}.1"
    names = [f"dkt{tag}-{n}" for n in ("a", "b")]
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{host}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for i, name in enumerate(names, start=2):
            _ip("netns", "add", name)
            _ip("link", "add", f"{name}-h", "type", "veth", "peer", "name", "eth0", "netns", name)
            _ip("link", "set", f"{name}-h", "master", bridge, "up")
            _ip("-n", name, "addr", "add", f"10.213.{net}.{i}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "link", "set", "lo", "up")
        yield host, names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=30)


def _netns_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.netns
def test_workers_in_namespaces_drive_a_drill_and_a_killed_one_is_lost_load(
    namespaces: tuple[str, list[str]], tmp_path: Path, drillkit_home: Path
) -> None:
    host, (ns_a, ns_b) = namespaces
    scenario = tmp_path / "netns.yaml"
    scenario.write_text(
        f"""
version: 1
name: kill-node-netns
stack: {{backend: local, replicas: 3, listen: {host}, catalog: {{items: 2000, dim: 32, seed: 7}}}}
load:
  {{rate: 60, users: 12, duration: 18s, warmup: 3s, timeout: 2s, workers: 0, bind: {host},
   join_within: 60s, hosts: [{{netns: {ns_a}}}, {{netns: {ns_b}}}]}}
faults:
  - {{id: kill-1, kind: kill_node, target: replica-1, at: 4s, duration: 4s,
     expect: {{detect_within: 2s, max_failed_requests: 0}}}}
"""
    )
    killed: list[float] = []

    def kill_worker_a() -> None:
        # Its Locust worker starts once the stack is up; the drill's t=0 comes about the
        # warmup later. Killed at about t=10 s: after the fault's phase, inside the window.
        deadline = time.monotonic() + 240
        while len(_netns_pids(ns_a)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3 + 12)
        for pid in _netns_pids(ns_a):
            os.kill(pid, signal.SIGKILL)
        killed.append(time.time())

    killer = threading.Thread(target=kill_worker_a, daemon=True)
    killer.start()
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "drillkit", "--quiet", "run", str(scenario), "--ci", "--out",
         str(out), "--json", str(out / "r.json")],
        capture_output=True, text=True, timeout=400, check=False,
    )  # fmt: skip
    killer.join(5)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert killed
    report: dict[str, Any] = json.loads((out / "r.json").read_text())
    assert report["status"] == "passed"
    workers = {w["name"]: w for w in report["load"]["workers"]}
    net = host.rsplit(".", 1)[0]
    assert workers[f"{ns_a}-1"]["address"] == f"{net}.2"
    assert workers[f"{ns_b}-1"]["address"] == f"{net}.3"
    lost = workers[f"{ns_a}-1"]["lost_at"]
    assert lost is not None and 5.0 < lost < 18.0, workers
    assert workers[f"{ns_b}-1"]["lost_at"] is None
    # Every record arrived: the report's requests are the workers' own counts in the window.
    assert sum(w["records"] for w in workers.values()) >= report["load"]["requests"]
    assert report["load"]["lost_requests"] > 0
    checks = {c["name"]: c for c in report["checks"]}
    assert not checks["load.generator"]["passed"]
    assert "lost load, not the stack's failures" in checks["load.generator"]["detail"]
    # The stack's own figures are not charged with it.
    assert checks["kill-1.max_failed_requests"]["passed"]
    assert checks["kill-1.detect_within"]["passed"]
    # The stack's own monitoring scrapes the entry where it listens: no alert outside the fault.
    alerts = report["monitoring"]["alerts"]
    assert alerts and all(a["fault"] == "kill-1" for a in alerts), alerts
    assert not _netns_pids(ns_a) and not _netns_pids(ns_b)  # nothing left on either "host"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(drillkit_home) not in ps  # the drill's master and launchers: its run folder


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _plan(server: ThreadingHTTPServer, *, run_seconds: float, **more: Any) -> LoadPlan:
    """40 req/s of GET / at ``server`` from one local worker and what ``more`` adds."""
    return LoadPlan(
        host=f"http://127.0.0.1:{server.server_port}",
        rate=40,
        users=4,
        run_seconds=run_seconds,
        timeout=1,
        n_users=10,
        workers=1,
        requests=json.dumps([{"path": "/"}]),
        join_within=60,
        **more,
    )


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        pass


SSH_STAND_IN = """#!/bin/sh
# Stands in for ssh: drops the options and the destination, runs the command here, as sshd
# would on the other host (`drillkit` there is this checkout's).
echo "$@" > "$(dirname "$0")/argv"
while [ "$1" != "--" ]; do shift; done
shift
[ "$1" = drillkit ] && shift && exec {python} -m drillkit "$@"
exec "$@"
"""


def test_the_ssh_launcher_starts_a_worker_with_the_token_on_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text(SSH_STAND_IN.format(python=sys.executable))
    ssh.chmod(ssh.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    plan = _plan(server, run_seconds=4, hosts=(WorkerHost("ssh", "loadgen@gen-1", 1),))
    driver = LoadDriver(tmp_path / "run")
    try:
        driver.start(plan)
        assert driver.wait(60) == 0
    finally:
        driver.stop()
        server.shutdown()
    argv = (bin_dir / "argv").read_text().split()
    assert argv[:5] == ["-o", "BatchMode=yes", "-T", "loadgen@gen-1", "--"]
    assert "--token-stdin" in argv and driver.plan is not None
    assert not any(driver._sink.token in arg for arg in argv)  # never on a command line
    stats = driver.sink_stats()
    counts = {w.name: w.records for w in stats.workers}
    assert set(counts) == {"local-1", "loadgen@gen-1-1"} and all(counts.values()), counts
    assert sum(counts.values()) == driver.count == stats.reported_sent  # every record arrived
    assert all(w.sent == w.records and w.finished for w in stats.workers)  # from each worker
    assert driver.records_complete


ROGUE = """
from locust import HttpUser, task

class RequestsUser(HttpUser):  # the name drillkit's master dispatches users of
    @task
    def get(self):
        self.client.get("/")
"""


def test_a_worker_that_cannot_prove_the_token_is_sent_away_from_the_master(
    tmp_path: Path,
) -> None:
    # Locust's own channel has no authentication: a plain Locust worker that reaches the
    # master's port joins it. drillkit's master sends it away, its users go to the drill's.
    (tmp_path / "rogue.py").write_text(ROGUE)
    (tmp_path / "token").write_text("s3cret\n")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    plan = _plan(
        server,
        run_seconds=14,  # past the master's 10 s for a proof
        expect_remote=1,
        token="s3cret",
        port=_free_port(),
    )
    driver = LoadDriver(tmp_path / "run")
    rogue: list[subprocess.Popen[bytes]] = []

    def join_as_rogue() -> None:
        deadline = time.monotonic() + 30
        while driver.master_port is None and time.monotonic() < deadline:
            time.sleep(0.05)
        rogue.append(
            subprocess.Popen(
                [sys.executable, "-m", "locust", "-f", str(tmp_path / "rogue.py"), "--worker",
                 "--master-host", "127.0.0.1", "--master-port", str(driver.master_port)],
                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip

    joiner = threading.Thread(target=join_as_rogue, daemon=True)
    joiner.start()
    # The drill's own second worker, started by hand with the token; it keeps trying to
    # reach the drill's port until the drill listens there.
    honest = subprocess.Popen(
        [sys.executable, "-m", "drillkit", "worker", "--master", f"127.0.0.1:{plan.port}",
         "--wait", "60", "--token-file", str(tmp_path / "token"), "--name", "honest"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        driver.start(plan)
        assert driver.wait(60) == 0
    finally:
        driver.stop()
        server.shutdown()
        joiner.join(5)
        honest.wait(30)
    assert rogue, "the rogue worker never started"
    assert rogue[0].wait(30) == 0  # told to quit by the master
    log = (tmp_path / "run" / "locust.log").read_text()
    # Within its 10 s, or when the drill ended first (a slow start on a busy machine).
    assert re.search(
        r"did not prove the drill's token \((no proof|the master quits)\); sent away", log
    )
    stats = driver.sink_stats()
    assert {w.name for w in stats.workers} == {"local-1", "honest"}
    assert driver.records_complete and driver.count == stats.reported_sent


def _master(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    """drillkit's Locust master waiting for one worker, as a distributed drill starts it."""
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[2]),
        "DRILLKIT_SINK": "127.0.0.1:9",
        "DRILLKIT_SINK_TOKEN": "s3cret",
        "DRILLKIT_RATE": "1",
        "DRILLKIT_USERS": "4",
        "DRILLKIT_N_USERS": "1",
        "DRILLKIT_TIMEOUT": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--master", "--headless",
         "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
         "--expect-workers", "1", "-u", "4", "-r", "4", "--run-time", "30s",
         "--enable-rebalancing", "--host", "http://127.0.0.1:9", "--loglevel", "INFO"],
        env=env, stdout=(tmp_path / "master.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_the_master_gives_no_users_to_a_worker_without_the_proof(tmp_path: Path) -> None:
    # Locust's channel (ZeroMQ, msgpack) spoken by hand: a worker that says it is another
    # one, one that sends a frame that is not a message, one that never proves the token.
    import msgpack  # type: ignore[import-untyped]
    import zmq

    version = importlib.metadata.version("locust")
    port = _free_port()
    master = _master(tmp_path, port)
    context = zmq.Context()
    got: dict[str, list[str]] = {}
    try:
        time.sleep(3)  # the master is listening
        rogues = {}
        for name in ("liar", "garbler", "silent"):
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.IDENTITY, name.encode())
            sock.connect(f"tcp://127.0.0.1:{port}")
            node = "someone-else" if name == "liar" else name
            sock.send(msgpack.dumps(("client_ready", version, node)))
            if name == "garbler":
                sock.send(msgpack.dumps(("oops",)))  # not a (type, data, node id) message
            rogues[name] = sock
            got[name] = []
        deadline = time.monotonic() + 14
        while time.monotonic() < deadline:
            for name, sock in rogues.items():
                if sock.poll(50):
                    kind = msgpack.loads(sock.recv(), raw=False, strict_map_key=False)[0]
                    got[name].append(kind)
                    if kind == "ack":  # as a worker does: heartbeats from now on
                        sock.send(msgpack.dumps(("heartbeat", {"state": "ready"}, name)))
        assert master.poll() is None, "the master died"  # the garbled frame did not end it
    finally:
        master.terminate()
        master.wait(30)
        context.destroy(linger=0)
    for name, kinds in got.items():
        assert "spawn" not in kinds, (name, kinds)  # no users, ever
    assert got["silent"][:1] == ["ack"] and "quit" in got["silent"]
    log = (tmp_path / "master.log").read_text()
    assert "a message whose sender is not its connection, dropped" in log
    assert "a malformed message to the master, dropped" in log
    assert "worker silent did not prove the drill's token (no proof); sent away" in log
    assert "0 of 1 connected" in log  # none of them counted as a worker
