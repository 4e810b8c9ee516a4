"""The docker backend against the real Docker Engine: the stack image, the containers, every
fault on them, the target guard, and cleanup after drills, interrupts and crashes.

Marked ``docker``: skipped without a reachable engine, and a failure when CI says one must be
there (DRILLKIT_REQUIRE_DOCKER=1). The image is built offline by the first test that needs it
(``drillkit stack build --backend docker``), or found already built; where it cannot be built
(no debootstrap) the tests skip saying how to fix it, or fail when CI requires Docker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import SMALL, Cli, leftovers, saved_state_path, stack_files
from .test_drills import (
    KILL,
    _start_drill,
    _wait_for_injection,
    run_drill,
    run_side_by_side,
    scenario,
)

pytestmark = pytest.mark.docker

STACK = {"backend": "docker", "replicas": 3, "catalog": {"items": 2000, "dim": 32, "seed": 7}}


@pytest.fixture
def image(stack_image: str) -> str:
    """The stack image (see conftest.stack_image: built when missing, or a skip saying how)."""
    return stack_image


def docker_leftovers(cli: Cli) -> list[str]:
    """Containers and networks of this test's stacks that still exist."""
    stacks = Path(cli.env["DRILLKIT_STATE_DIR"]) / "stacks"
    found = []
    for stack in (p.name for p in stacks.iterdir()) if stacks.is_dir() else []:
        for what in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
            out = subprocess.run(
                ["docker", *what, "-q", "--filter", f"label=drillkit.stack={stack}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            found += [f"{what[0]} {line}" for line in out.split()]
    return found


def netns_rules(container: str) -> str:
    """iptables rules and qdiscs in a container's network namespace, read from a sidecar."""
    image = subprocess.run(
        ["docker", "inspect", "-f", "{{.Config.Image}}", container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            f"container:{container}",
            "--cap-add",
            "NET_ADMIN",
            "--user",
            "0:0",
            "--label",
            "drillkit.role=test-probe",
            image,
            "sh",
            "-c",
            "iptables -S; tc qdisc show dev eth0",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def up(cli: Cli) -> dict[str, Any]:
    """The stack as `stack up --json` prints it (the saved state, secrets hidden)."""
    proc = cli("stack", "up", "--backend", "docker", *SMALL, "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr
    state: dict[str, Any] = json.loads(proc.stdout)
    return state


def test_stack_up_serves_and_down_leaves_nothing(cli: Cli, image: str) -> None:
    state = up(cli)
    status = cli.json("stack", "status")
    assert status["backend"] == "docker" and status["ready_replicas"] == 3
    response = httpx.get(state["gateway_url"] + "/recommend", params={"user_id": 1, "k": 10})
    assert response.status_code == 200
    assert response.headers["x-model-version"] == "v2" and len(response.json()["items"]) == 10
    for name, service in state["services"].items():
        labels = json.loads(
            subprocess.run(
                ["docker", "inspect", "-f", "{{json .Config.Labels}}", service["container"]],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert labels["drillkit.stack"] == state["id"]
        assert labels["drillkit.service"] == name and labels["drillkit.target"] == "true"
        assert labels["drillkit.session"] == state["session"]
    # The admin token is in no container's configuration (`docker inspect`), only in a file
    # mounted read-only into the replicas and gateway that need it.
    token = json.loads(saved_state_path(cli).read_text())["plan"]["secrets"]["admin-token"]
    for name, service in state["services"].items():
        config = subprocess.run(
            ["docker", "inspect", service["container"]], capture_output=True, text=True, check=True
        ).stdout
        assert token not in config, name
        env = json.loads(config)[0]["Config"]["Env"]
        assert ("DRILLKIT_ADMIN_TOKEN_FILE=/run/drillkit/secrets/admin-token" in env) == (
            service["role"] in ("replica", "gateway")
        ), (name, env)
    # The image carries the stack's monitoring: auto turned it on.
    assert {"prometheus", "alertmanager", "alert-receiver"} <= set(state["services"])
    assert cli("stack", "down").returncode == 0
    assert not docker_leftovers(cli)


def test_faults_on_containers_take_effect_and_heal_clean(cli: Cli, image: str) -> None:
    state = up(cli)
    containers = {name: s["container"] for name, s in state["services"].items()}
    cases = [
        (["kill_node", "--target", "replica-1"], "is gone after SIGKILL"),
        (["pause_node", "--target", "replica-2"], "is paused"),
        (["cut_network", "--target", "replica-3", "--param", "mode=blackhole"], "hung"),
        (["cut_network", "--target", "replica-3", "--param", "mode=reject"], "probe request re"),
        (["corrupt_model", "--target", "replica-2", "--param", "mode=bitflip"], "sha256"),
    ]
    for args, evidence in cases:
        injected = cli("fault", "inject", *args)
        assert injected.returncode == 0, injected.stderr
        assert evidence in injected.stdout, injected.stdout
        if args[0] == "cut_network":
            assert "DRILLKIT-IN" in netns_rules(containers["replica-3"])
        healed = cli("heal")
        assert healed.returncode == 0 and "healed" in healed.stdout, healed.stdout
        status = cli.json("stack", "status")
        assert status["ready_replicas"] == 3, (args, status)
    rules = netns_rules(containers["replica-3"])
    assert "DRILLKIT" not in rules and "netem" not in rules
    assert cli("model", "verify").returncode == 0
    # The killed replica was started again: the same container, with its labels.
    assert cli.json("stack", "status")["services"][0]["alive"]


def test_latency_uses_netem_or_says_why_not(cli: Cli, image: str) -> None:
    state = up(cli)
    injected = cli("fault", "inject", "latency", "--target", "replica-1", "--param", "delay=150ms")
    kernel_has_netem = (
        subprocess.run(
            [
                "docker",
                "run",
                "--rm",
                "--network",
                "none",
                "--cap-add",
                "NET_ADMIN",
                "--user",
                "0:0",
                image,
                "tc",
                "qdisc",
                "add",
                "dev",
                "lo",
                "root",
                "netem",
                "delay",
                "1ms",
            ],
            capture_output=True,
        ).returncode
        == 0
    )
    if kernel_has_netem:
        assert injected.returncode == 0, injected.stderr
        assert "answered in" in injected.stdout
        assert "netem" in netns_rules(state["services"]["replica-1"]["container"])
    else:
        assert injected.returncode == 3
        assert "netem" in injected.stderr and "--backend local" in injected.stderr
    assert cli("heal").returncode == 0
    assert "netem" not in netns_rules(state["services"]["replica-1"]["container"])


def test_target_guard_refuses_a_container_without_the_stack_labels(cli: Cli, image: str) -> None:
    up(cli)
    stranger = subprocess.run(
        ["docker", "create", "--label", "drillkit.role=test-stranger", image, "sleep", "120"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    try:
        subprocess.run(["docker", "start", stranger], check=True, capture_output=True)
        path = saved_state_path(cli)
        state = json.loads(path.read_text())
        real = state["services"]["replica-2"]["container"]
        state["services"]["replica-2"]["container"] = stranger
        path.write_text(json.dumps(state))
        for kind in ("kill_node", "pause_node", "cut_network"):
            refused = cli("fault", "inject", kind, "--target", "replica-2")
            assert refused.returncode == 2, refused.stderr
            assert "not a drill target" in refused.stderr and "Traceback" not in refused.stderr
        running = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Status}}", stranger],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert running == "running"
        state["services"]["replica-2"]["container"] = real
        path.write_text(json.dumps(state))
    finally:
        subprocess.run(["docker", "rm", "-f", stranger], capture_output=True)
    assert cli("heal").returncode == 0


def test_kill_node_drill_on_docker(cli: Cli, image: str, tmp_path: Path) -> None:
    code, report = run_drill(cli, scenario(tmp_path, "kill", [KILL], stack=STACK), tmp_path)
    assert code == 0, report
    assert report["backend"] == "docker" and report["environment"]["gpu"] is False
    (fault,) = report["faults"]
    assert fault["failed_requests"] == 0 and fault["ttd_s"] is not None
    assert "container" in fault["evidence"]
    # The image carries Prometheus and Alertmanager: monitoring is on, and it paged.
    monitoring = report["monitoring"]
    assert monitoring["source"] == "stack" and monitoring["error"] is None, monitoring
    assert fault["time_to_alert_s"] is not None and fault["time_to_alert_s"] <= 5.0, fault
    assert fault["time_to_notify_s"] is not None and fault["time_to_notify_s"] <= 8.0, fault
    assert "RecommenderReplicaDown" in fault["alerts"], fault
    assert not docker_leftovers(cli)


CUT = {
    "id": "cut-1",
    "kind": "cut_network",
    "target": "replica-2",
    "at": "3s",
    "duration": "8s",
    "params": {"mode": "blackhole"},
}


def test_sigint_mid_fault_on_docker_leaves_nothing(cli: Cli, image: str, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    proc = _start_drill(cli, scenario(tmp_path, "interrupted", [CUT], stack=STACK), report)
    _wait_for_injection(cli, proc, timeout=180)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err
    assert json.loads(report.read_text())["status"] == "interrupted"
    assert not docker_leftovers(cli)
    assert not stack_files(cli, "journal.jsonl")


def test_kill_9_mid_fault_then_heal_on_docker(cli: Cli, image: str, tmp_path: Path) -> None:
    corrupt = {
        "id": "bad-1",
        "kind": "corrupt_model",
        "target": "replica-1",
        "at": "3s",
        "duration": "8s",
        "params": {"mode": "zero"},
    }
    proc = _start_drill(
        cli, scenario(tmp_path, "crashed", [CUT, corrupt], stack=STACK), tmp_path / "r.json"
    )
    _wait_for_injection(cli, proc, timeout=180)
    proc.kill()
    proc.communicate(timeout=30)
    assert docker_leftovers(cli)  # the crash left the stack behind...
    healed = cli("heal")
    assert healed.returncode == 0, healed.stderr
    assert "taken down" in healed.stdout
    assert not docker_leftovers(cli)  # ...and heal took all of it away
    assert cli("model", "verify").returncode == 0
    assert cli("heal").stdout.strip() == "nothing to heal"


class SocketRelay:
    """A Unix socket that relays every connection to the Docker Engine's own until
    :meth:`cut`: then the listener and every open connection close, and the daemon, as
    drillkit sees it through ``DOCKER_HOST``, stops answering mid-drill."""

    def __init__(self, path: Path, upstream: str) -> None:
        self.path, self.upstream = path, upstream
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(64)
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # cut
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.upstream)
            with self.lock:
                self.open += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        self.listener.close()
        self.path.unlink(missing_ok=True)
        with self.lock:
            for conn in self.open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()


def test_a_daemon_that_stops_answering_mid_drill_is_exit_3_with_a_report(
    cli: Cli, image: str, tmp_path: Path
) -> None:
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        pytest.skip(f"DOCKER_HOST={host}: the relay needs the Engine's Unix socket")
    relay = SocketRelay(tmp_path / "docker.sock", host.removeprefix("unix://"))
    relayed = Cli({**cli.env, "DOCKER_HOST": f"unix://{relay.path}"}, cwd=cli.cwd)
    report = tmp_path / "r.json"
    pause = {"id": "pause-1", "kind": "pause_node", "target": "replica-2", "at": "3s",
             "duration": "6s"}  # fmt: skip
    proc = _start_drill(relayed, scenario(tmp_path, "vanishing", [pause], stack=STACK), report)
    try:
        _wait_for_injection(cli, proc, timeout=180)
        relay.cut()  # replica-2 stays paused: nothing can reach the daemon to resume it
        out, err = proc.communicate(timeout=300)
    finally:
        relay.cut()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, (out, err)
    assert "Traceback" not in err
    data = json.loads(report.read_text())  # the report is still written
    assert data["status"] == "error"
    assert "failed during" in (data["error"] or "") and str(relay.path) in data["error"]
    assert docker_leftovers(cli)  # the daemon could not be asked to take the stack down...
    healed = cli("heal")  # ...which heal does, once it answers again
    assert healed.returncode == 0, healed.stderr
    assert "taken down" in healed.stdout
    assert not docker_leftovers(cli)
    assert not stack_files(cli, "stack.json")
    assert cli("heal").stdout.strip() == "nothing to heal"


def test_a_docker_drill_and_a_local_drill_at_once(cli: Cli, image: str, tmp_path: Path) -> None:
    reports = run_side_by_side(cli, tmp_path, [STACK, {"replicas": 2}])
    assert [r["backend"] for r in reports] == ["docker", "local"]
    assert all(r["status"] == "passed" for r in reports)
    assert not docker_leftovers(cli) and not leftovers(cli)
    assert not stack_files(cli, "journal.jsonl") and not stack_files(cli, "stack.json")


def test_bad_docker_environment_is_exit_3_with_the_reason(cli: Cli, image: str) -> None:
    gpu = cli("stack", "up", "--backend", "docker", *SMALL, "--gpu", "on")
    assert gpu.returncode == 3 and "NVIDIA runtime" in gpu.stderr, gpu.stderr
    assert not docker_leftovers(cli)


def test_a_missing_image_names_the_build_command(image: str) -> None:
    from drillkit.backends.docker.image import docker_client, require_image
    from drillkit.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable, match="drillkit stack build --backend docker"):
        require_image(docker_client(), "drillkit/stack:never-built")
