"""A team's own Docker Compose project drilled end to end: the example app's drills (with and
without its load balancer's health checks), a project that stays up (``attach``), and the
reference stack exported as a Compose project, drilled as a foreign stack and compared with
the native docker backend."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import SMALL, Cli

pytestmark = [pytest.mark.docker, pytest.mark.compose]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "compose-app"


def _docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=True)
    return done.stdout


def project_leftovers(prefix: str = "drillkit-") -> list[str]:
    """Containers, networks and volumes of Compose projects named ``prefix...``."""
    found = []
    for what in (["ps", "-a"], ["network", "ls"], ["volume", "ls"]):
        out = _docker(*what, "--format", '{{.Label "com.docker.compose.project"}} {{.ID}}')
        found += [f"{what[0]} {line}" for line in out.splitlines() if line.startswith(prefix)]
    sidecars = _docker("ps", "-a", "-q", "--filter", "label=drillkit.role=sidecar")
    return found + [f"sidecar {line}" for line in sidecars.split()]


def run_drill(cli: Cli, scenario: Path, tmp_path: Path, *more: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / f"{scenario.stem}.json"
    proc = cli("run", str(scenario), "--ci", "--json", str(report), *more, timeout=600)
    assert report.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.returncode, json.loads(report.read_text())


def checks(report: dict[str, Any]) -> dict[str, bool]:
    return {c["name"]: c["passed"] for c in report["checks"]}


@pytest.fixture
def example(tmp_path: Path, stack_image: str) -> Path:
    """A copy of the example app (its base image is drillkit's, built with the stack image)."""
    copy = tmp_path / "compose-app"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("reports"))
    return copy


def test_the_example_kill_web_drill_passes_and_leaves_nothing(
    cli: Cli, tmp_path: Path, example: Path
) -> None:
    code, report = run_drill(cli, example / "scenarios" / "kill-web.yaml", tmp_path)
    assert code == 0, report.get("error")
    assert report["backend"] == "compose" and report["status"] == "passed"
    (fault,) = report["faults"]
    # HAProxy's health checks noticed, mapped to the service owning the server's address.
    assert fault["detected_by"].startswith("lb: up->down"), fault["detected_by"]
    assert fault["ttd_s"] is not None and fault["ttd_s"] <= 2.0
    assert fault["failed_requests"] <= 0.02 * fault["requests"]
    assert report["load"]["requests"] > 0.9 * 40 * 30
    assert project_leftovers() == []


def test_without_its_health_checks_the_same_drill_fails(
    cli: Cli, tmp_path: Path, example: Path
) -> None:
    config = example / "app" / "haproxy.cfg"
    text = config.read_text()
    config.write_text(text.replace(" check ", " ").replace(" check\n", "\n"))
    assert " check" not in config.read_text().split("server-template", 1)[1].splitlines()[0]
    code, report = run_drill(cli, example / "scenarios" / "kill-web.yaml", tmp_path)
    assert code == 1, report.get("error")
    failed = [name for name, passed in checks(report).items() if not passed]
    # HAProxy keeps sending a share of the users to the dead container.
    assert "kill-web.max_failed_requests" in failed, failed
    (fault,) = report["faults"]
    assert fault["failed_requests"] > 0.1 * fault["requests"]
    assert project_leftovers() == []


def _containers(project: str) -> dict[str, tuple[str, str]]:
    out = _docker(
        "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
        "--format", "{{.ID}} {{.Names}} {{.State}}",
    )  # fmt: skip
    return {line.split()[1]: (line.split()[0], line.split()[2]) for line in out.splitlines()}


def test_attach_drills_a_running_project_and_leaves_it_as_it_was(
    cli: Cli, tmp_path: Path, example: Path
) -> None:
    project = f"dkattach{tmp_path.name[-6:].lower().replace('_', '')}"
    compose = ["docker-compose", "-f", str(example / "compose.yaml"), "-p", project]
    env = {**cli.env, "DRILLKIT_BASE_IMAGE": "drillkit/base:bookworm"}
    subprocess.run([*compose, "up", "-d"], env=env, check=True, capture_output=True, timeout=600)
    try:
        scenario = tmp_path / "attach.yaml"
        scenario.write_text(
            f"""
version: 1
name: compose-app-attach
stack:
  compose: compose-app/compose.yaml
  project: {project}
  attach: true
  containers: all
  ready_timeout: 60s
  detect: [{{url: "http://lb:8404/stats;csv", format: haproxy}}]
load:
  host: http://lb:8080
  requests: [{{path: /, weight: 3}}, {{path: /items/7}}]
  rate: 30
  users: 8
  warmup: 2s
  duration: 16s
slo: {{availability: 95%, p99_ms: 1000}}
abort: {{error_rate_above: 100%}}  # every request fails while web is cut off: keep going
faults:
  - {{kind: cut_network, target: web, at: 3s, duration: 4s, params: {{mode: reject, source: lb}}}}
  - {{kind: pause_node, target: lb, at: 10s, duration: 2s}}
"""
        )
        before = _containers(project)
        assert len(before) == 3
        _, report = run_drill(cli, scenario, tmp_path)
        assert report["status"] in ("passed", "failed"), report.get("error")
        cut, pause = report["faults"]
        assert "link lb->web: a probe request refused" in cut["evidence"]
        assert cut["failed_requests"] > 0
        assert pause["evidence"].endswith("is paused")
        # Every container as it was: same ids, running; no rule of drillkit's left in them.
        assert _containers(project) == before
        for name in before:
            if "_web_" in name or "-web-" in name:
                rules = _docker(
                    "run", "--rm", "--network", f"container:{name}", "--cap-add", "NET_ADMIN",
                    "--user", "0:0", "--entrypoint", "iptables", cli_image(), "-S",
                )  # fmt: skip
                assert "DRILLKIT" not in rules, rules
        # drillkit's own sidecars are gone; the project itself stays up.
        assert [line for line in project_leftovers(project) if line.startswith("sidecar")] == []
    finally:
        subprocess.run([*compose, "down", "-v"], env=env, capture_output=True, timeout=300)


def cli_image() -> str:
    from drillkit.backends.docker.image import image_plan

    return image_plan(gpu=False).tag


EXPORTED = """
version: 1
name: {name}
stack: {stack}
load: {{rate: 60, users: 12, duration: 36s, warmup: 5s, timeout: 2s{host}}}
slo: {{availability: 99.9%, p99_ms: 500, quality: 0%, degraded_max: 5%}}
faults:
  - {{id: kill-1, kind: kill_node, target: replica-1, at: 4s, duration: 8s,
     expect: {{detect_within: 2s, recover_within: 5s, max_failed_requests: 0.5%}}}}
  - {{id: pause-1, kind: pause_node, target: replica-2, at: 14s, duration: 6s,
     expect: {{detect_within: 2s, recover_within: 5s, max_failed_requests: 1%}}}}
  - {{id: cut-1, kind: cut_network, target: replica-3, at: 24s, duration: 6s,
     params: {{mode: blackhole{source}}},
     expect: {{detect_within: 2s, recover_within: 5s, max_failed_requests: 1%}}}}
"""


# Two drills of about 100 s each: kept out of .ci/run's time budget (`pytest -m slow`).
@pytest.mark.slow
def test_the_reference_stack_exported_as_compose_drills_like_the_native_backend(
    cli: Cli, tmp_path: Path, stack_image: str
) -> None:
    exported = tmp_path / "exported"
    proc = cli("stack", "export", "--compose", str(exported), "--replicas", "3", *SMALL)
    assert proc.returncode == 0, proc.stderr
    native = tmp_path / "native.yaml"
    native.write_text(
        EXPORTED.format(
            name="native", stack="{preset: recommender, backend: docker, replicas: 3, "
            "catalog: {items: 2000, dim: 32, seed: 7}}", host="", source=""
        )
    )  # fmt: skip
    foreign = tmp_path / "foreign.yaml"
    foreign.write_text(
        EXPORTED.format(
            name="foreign",
            stack="{compose: exported/compose.yaml, detect: [{url: 'http://gateway:8080/status', "
            "format: drillkit}]}",
            host=", host: 'http://gateway:8080'",
            source=", source: gateway",
        )
    )
    _, mine = run_drill(cli, native, tmp_path)
    _, theirs = run_drill(cli, foreign, tmp_path)
    assert theirs["backend"] == "compose"
    for ours, other in zip(mine["faults"], theirs["faults"], strict=True):
        assert other["detected_by"], other  # the gateway's /status, read as a status endpoint
        assert other["detected_by"].startswith("gateway: ")
        # Within the usual spread of one drill to the next on this machine.
        assert abs(other["ttd_s"] - ours["ttd_s"]) <= 1.0, (ours, other)
        assert other["failed_requests"] <= max(3, 3 * ours["failed_requests"]), (ours, other)
    assert mine["status"] == "passed" and theirs["status"] == "passed", (
        checks(mine),
        checks(theirs),
    )
    assert project_leftovers() == []


def test_bad_input_is_one_line_before_anything_starts(
    cli: Cli, tmp_path: Path, example: Path
) -> None:
    scenarios = example / "scenarios"
    kill = (scenarios / "kill-web.yaml").read_text()
    (example / "broken.yaml").write_text("services:\n  web:\n    image: x\n    ports: oops\n")
    (example / "badlocust.py").write_text("import no_such_library_here\n")
    cases = {
        "broken": (kill.replace("../compose.yaml", "../broken.yaml"), "Compose rejects it: "),
        "typo": (kill.replace("target: web", "target: wbe"), "did you mean 'web'?"),
        "badlocust": (
            kill.replace("../locustfile.py", "../badlocust.py"),
            "fails to load: ModuleNotFoundError: No module named 'no_such_library_here'",
        ),
    }
    for name, (text, message) in cases.items():
        (scenarios / f"{name}.yaml").write_text(text)
        proc = cli("run", str(scenarios / f"{name}.yaml"), "--ci")
        assert proc.returncode == 2, (name, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    # No Compose CLI on the PATH: exit 3 naming how to install one.
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {**cli.env, "PATH": str(bare)}
    proc = subprocess.run(
        [sys.executable, "-m", "drillkit", "run", str(scenarios / "kill-web.yaml"), "--ci"],
        env=env, cwd=cli.cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "no Docker Compose CLI found" in proc.stderr and "apt install" in proc.stderr
    assert project_leftovers() == []
