"""The stack's own monitoring on real processes: Debian's Prometheus and Alertmanager with the
shipped rules, drillkit's webhook receiver, and what a drill measures of them (the
``monitoring`` marker: the two packages must be installed)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from junitparser import JUnitXml

from .conftest import Cli, leftovers, stack_files

pytestmark = pytest.mark.monitoring

STACK = {"replicas": 2, "catalog": {"items": 2000, "dim": 32, "seed": 7}}
LOAD = {"rate": 60, "users": 12, "duration": "22s", "warmup": "3s", "timeout": "2s"}
KILL = {
    "id": "kill",
    "kind": "kill_node",
    "target": "replica-1",
    "at": "4s",
    "duration": "8s",
}


def _monitoring_running() -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid,stat,comm"], capture_output=True, text=True).stdout
    return {
        int(line.split()[0])
        for line in out.splitlines()[1:]
        if line.split()[2] in ("prometheus", "prometheus-aler")
        and not line.split()[1].startswith("Z")
    }


@pytest.fixture(autouse=True)
def _nothing_left(cli: Cli) -> Iterator[None]:
    before = _monitoring_running()
    yield
    assert _monitoring_running() <= before, "a drill left Prometheus or Alertmanager running"
    assert not leftovers(cli)
    assert not stack_files(cli, "journal.jsonl")


def drill(
    cli: Cli,
    tmp_path: Path,
    faults: list[dict[str, Any]],
    *,
    monitoring: dict[str, Any] | None = None,
    stack: dict[str, Any] | None = None,
    args: tuple[str, ...] = (),
    pass_score: float = 80,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    doc = {
        "version": 1,
        "name": "monitoring",
        "stack": {**STACK, **(stack or {})},
        "load": LOAD,
        "faults": faults,
        "report": {"formats": ["json"]},
        "scoring": {"pass_score": pass_score},
    }
    if monitoring is not None:
        doc["monitoring"] = monitoring
    path = tmp_path / "drill.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    report = tmp_path / "r.json"
    proc = cli("run", str(path), "--ci", "--json", str(report), *args, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, json.loads(report.read_text()) if report.exists() else {}


def test_a_killed_replica_pages_within_the_targets_and_every_format_says_so(
    cli: Cli, tmp_path: Path
) -> None:
    fault = {
        **KILL,
        "expect": {
            "alerts": ["RecommenderReplicaDown", "RecommenderTargetDown"],
            "alert_within": "5s",
        },
    }
    junit = tmp_path / "r.xml"
    proc, report = drill(
        cli,
        tmp_path,
        [fault],
        monitoring={"enabled": "on", "max_false_alerts": 0, "alerts_resolve_within": "15s"},
        args=("--junit", str(junit)),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    monitoring = report["monitoring"]
    assert monitoring["source"] == "stack" and monitoring["error"] is None
    assert monitoring["budget_s"] == 6.0
    assert monitoring["missed_faults"] == [] and monitoring["noise"] == []
    assert monitoring["still_firing"] == []
    (kill,) = report["faults"]
    # The targets: firing within 5 s of the kill, a notification within 8 s.
    assert kill["time_to_alert_s"] <= 5.0, kill
    assert kill["time_to_notify_s"] <= 8.0, kill
    assert kill["time_to_notify_s"] >= kill["time_to_alert_s"]
    assert {"RecommenderReplicaDown", "RecommenderTargetDown"} <= set(kill["alerts"])
    mine = [a for a in monitoring["alerts"] if a["fault"] == "kill"]
    assert {a["labels"].get("replica") or a["labels"]["service"] for a in mine} == {"replica-1"}
    for alert in mine:  # pending, then firing, notified, and resolved after the restart
        assert alert["pending_at"] <= alert["firing_at"] <= alert["notified_at"]
        assert alert["resolved_at"] <= kill["healed_at"] + 15
        if alert["name"] == "RecommenderTargetDown":
            # Scraped again as soon as the restarted replica answers HTTP, which may be before
            # its model is loaded and the heal (which waits for readiness) is stamped.
            assert alert["firing_at"] < alert["resolved_at"]
        else:
            assert kill["healed_at"] < alert["resolved_at"]
    checks = {c["name"]: c for c in report["checks"]}
    for name in ("kill.alerts", "kill.alert_within", "monitoring.missed_faults",
                 "monitoring.false_alerts", "monitoring.alerts_resolved"):  # fmt: skip
        assert checks[name]["passed"], checks[name]
    # JUnit, read by a JUnit parser: the monitoring checks are test cases that passed.
    cases = {case.name: case for suite in JUnitXml.fromfile(str(junit)) for case in suite}
    assert any("kill.alert_within" in name for name in cases), sorted(cases)
    assert all(case.is_passed for name, case in cases.items() if "monitoring." in name)
    # The terminal report at 100 columns: the alerts table and the budget line.
    shown = cli("report", "show", str(tmp_path / "r.json"))
    assert "alerts" in shown.stdout and "RecommenderReplicaDown" in shown.stdout
    assert "delay budget 6 s" in shown.stdout


def test_a_fault_with_user_impact_and_no_alert_is_missed_and_fails(
    cli: Cli, tmp_path: Path, bare_prometheus: str
) -> None:
    # A Prometheus with no rule for it: the gateway fails requests (no retries, no fallback),
    # users see errors, nobody is paged. The measurement must fail the drill.
    stack = {"gateway": {"retries": 0, "fallback": False, "passive_ejection": False}}
    fault = {**KILL, "params": {}, "duration": "4s"}
    # The pass score leaves no room for a failed check of weight 2: the drill fails with it.
    proc, report = drill(
        cli, tmp_path, [fault], stack=stack, args=("--prometheus", bare_prometheus), pass_score=95
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (kill,) = report["faults"]
    assert kill["failed_requests"] > 0, kill
    assert report["monitoring"]["source"] == "external"
    assert report["monitoring"]["missed_faults"] == ["kill"]
    check = {c["name"]: c for c in report["checks"]}["monitoring.missed_faults"]
    assert not check["passed"] and check["actual"] == 1.0
    assert kill.get("time_to_alert_s") is None and kill["alerts"] == []
    assert "monitoring.missed_faults" in [c["name"] for c in report["checks"] if not c["passed"]]
    # The stack ran no monitoring of its own: the team's Prometheus replaced it.
    (stack_dir,) = (Path(cli.env["DRILLKIT_STATE_DIR"]) / "stacks").iterdir()
    logs = {p.name for p in (stack_dir / "logs").iterdir()}
    assert any(name.startswith("gateway") for name in logs), logs
    assert not any(name.startswith(("prometheus", "alertmanager")) for name in logs), logs


def test_an_unreachable_prometheus_is_refused_before_anything_starts(
    cli: Cli, tmp_path: Path
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc, report = drill(cli, tmp_path, [KILL], args=("--prometheus", f"http://127.0.0.1:{port}"))
    assert proc.returncode == 2, proc.stderr
    assert f"--prometheus http://127.0.0.1:{port}: not reachable" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert report == {} and not stack_files(cli, "stack.json")


def test_monitoring_on_without_the_packages_is_exit_3_naming_them(cli: Cli, tmp_path: Path) -> None:
    # Only the interpreter's own folder on the PATH: no prometheus, no prometheus-alertmanager.
    folder = Path(sys.executable).parent
    assert not (folder / "prometheus").exists()
    bare = Cli({**cli.env, "PATH": str(folder)}, cwd=cli.cwd)
    doc = {
        "version": 1,
        "name": "needs-monitoring",
        "stack": STACK,
        "load": LOAD,
        "faults": [{**KILL, "expect": {"alerts": ["RecommenderReplicaDown"]}}],
    }
    path = tmp_path / "drill.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = bare("run", str(path), "--ci")
    assert proc.returncode == 3, proc.stderr
    assert "apt-get install prometheus" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not stack_files(cli, "stack.json")


def test_killing_alertmanager_delays_the_page_but_prometheus_still_sees_it(
    cli: Cli, tmp_path: Path
) -> None:
    # The monitoring itself is drilled: Alertmanager is down while a replica dies. Prometheus
    # still fires (and its own TargetDown on alertmanager fires too); the notification only
    # arrives once Alertmanager is back.
    faults = [
        {"id": "am", "kind": "kill_node", "target": "alertmanager", "at": "3s", "duration": "9s"},
        {**KILL, "at": "4s", "duration": "10s"},
    ]
    proc, report = drill(cli, tmp_path, faults, monitoring={"enabled": "on"})
    assert proc.returncode in (0, 1), proc.stderr
    by_id = {f["id"]: f for f in report["faults"]}
    kill, am = by_id["kill"], by_id["am"]
    assert kill["time_to_alert_s"] is not None and kill["time_to_alert_s"] <= 6.0, kill
    # No notification while Alertmanager was down: it came after its restart, once Prometheus
    # sent the alert again (monitoring.resend_delay), while it still fired.
    assert kill.get("notified_at") is not None, (kill, am)
    # The heal starts at 12 s (at + duration); its `healed_at` is stamped once Alertmanager is
    # ready again, and the resent alert may reach it while that wait ends (seen: 80 ms before).
    heal_started = 3.0 + 9.0
    assert heal_started < kill["notified_at"] <= am["healed_at"] + 8, (kill, am)
    seen = {a["labels"].get("service") for a in report["monitoring"]["alerts"]}
    assert "alertmanager" in seen, report["monitoring"]["alerts"]


@pytest.fixture
def bare_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus of the team's own, with no rules and nothing to scrape."""
    folder = tmp_path_factory.mktemp("team-prometheus")
    (folder / "prometheus.yml").write_text("global: {scrape_interval: 1s}\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    binary = shutil.which("prometheus")
    assert binary is not None
    proc = subprocess.Popen(
        [binary, f"--config.file={folder / 'prometheus.yml'}",
         f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the team's Prometheus did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
