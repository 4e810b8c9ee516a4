"""GPU failure modes (``gpu_fault``) in whole drills on the CPU: the replicas' simulated device,
the stack's Prometheus with the shipped DCGM rules, and what a readiness check's depth costs.

Short timelines on the small catalog; the bundled ``scenarios/gpu-*.yaml`` run the same faults
at full length.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cli, leftovers, stack_files
from .test_drills import _start_drill, run_drill, scenario

PLAIN_GATEWAY = {"retries": 0, "passive_ejection": False, "fallback": False}
LOST = {
    "id": "lost",
    "kind": "gpu_fault",
    "target": "replica-1",
    "at": "3s",
    "duration": "6s",
    "params": {"mode": "device_lost"},
    "expect": {"detect_within": "1s", "max_failed_requests": "3%"},
}


def _fault(report: dict[str, Any], fault_id: str) -> dict[str, Any]:
    return next(f for f in report["faults"] if f["id"] == fault_id)


def _phase(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in report["phases"] if p["name"] == name)


@pytest.mark.monitoring
def test_each_gpu_failure_fires_its_dcgm_rule_and_no_request_fails(
    cli: Cli, tmp_path: Path
) -> None:
    # One drill, four replicas, each failing its own way at once: every shipped GPU rule must
    # fire about its replica, and the gateway's retries keep every answer whole.
    rules = {
        "oom": "RecommenderGpuMemoryFull",
        "device_lost": "RecommenderGpuXidError",
        "throttle": "RecommenderGpuThrottled",
        "ecc": "RecommenderGpuEccErrors",
    }
    faults = [
        {
            "id": mode.replace("_", "-"),
            "kind": "gpu_fault",
            "target": f"replica-{i}",
            "at": "3s",
            "duration": "8s",
            "params": {"mode": mode},
            "expect": {"max_failed_requests": 0, "alerts": [rule], "alert_within": "8s"},
        }
        for i, (mode, rule) in enumerate(rules.items(), start=1)
    ]
    path = scenario(
        tmp_path,
        "gpu-all",
        faults,
        stack={"replicas": 4},
        load={"rate": 60, "users": 12, "duration": "16s", "warmup": "2s", "timeout": "2s"},
        monitoring={"enabled": "on"},
        scoring={"pass_score": 90},
    )
    code, report = run_drill(cli, path, tmp_path)
    assert code == 0, json.dumps(report.get("checks"), indent=1)
    for mode, rule in rules.items():
        fault = _fault(report, mode.replace("_", "-"))
        assert rule in fault["alerts"], fault
        assert fault["failed_requests"] == 0
        assert fault["evidence"].startswith(f"replica-{list(rules).index(mode) + 1} (cpu,")
    fired = {a["name"]: a for a in report["monitoring"]["alerts"] if a["name"] in rules.values()}
    assert {a["labels"]["service"] for a in fired.values()} == {
        "replica-1",
        "replica-2",
        "replica-3",
        "replica-4",
    }
    # In-band, the replicas saw three of them; ECC errors that get past the correction are
    # silent: only the quality of the answers shows them.
    assert "inference failed: out of memory" in _fault(report, "oom")["detected_by"]
    # A lost device is seen by a request routed to replica-2 (its inference fails) or by the
    # replica's watcher reading the Xid off the device, whichever comes first: both are real
    # signals, a few hundred milliseconds apart.
    lost_by = _fault(report, "device-lost")["detected_by"]
    assert lost_by in ("replica-2: inference failed: device lost", "replica-2: GPU Xid 79"), lost_by
    # A throttled replica's watcher reads the clocks within its poll; its slow answers may
    # get it ejected by the gateway first (it carries the traffic of the two failing ones).
    # Either way its own log says what it saw; the ECC replica's says nothing.
    throttle_by = _fault(report, "throttle")["detected_by"]
    assert throttle_by.startswith(("replica-3: GPU clocks throttled", "gateway: ")), throttle_by
    ecc_by = _fault(report, "ecc")["detected_by"]
    assert ecc_by is None or ecc_by.startswith("gateway: "), ecc_by
    (throttled,) = stack_files(cli, "logs/replica-3.log")
    assert "replica-3: GPU clocks throttled" in throttled.read_text()
    (ecc,) = stack_files(cli, "logs/replica-4.log")
    said = ecc.read_text()
    assert not [w for w in ("inference failed", "Xid", "clocks throttled") if w in said], said
    assert _phase(report, "fault:ecc")["quality"] < 0.9 * _phase(report, "baseline")["quality"]
    assert not leftovers(cli)


def _drill_at_once(cli: Cli, tmp_path: Path, stacks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    procs: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    for name, stack in stacks.items():
        folder = tmp_path / name
        folder.mkdir()
        path = scenario(
            folder,
            name,
            [LOST],
            stack=stack,
            monitoring={"enabled": "off"},
            scoring={"pass_score": 90},
        )
        procs[name] = (_start_drill(cli, path, folder / "r.json"), folder / "r.json")
    reports = {}
    for name, (proc, report) in procs.items():
        _, err = proc.communicate(timeout=400)
        assert "Traceback" not in err, err
        reports[name] = {"code": proc.returncode, **json.loads(report.read_text())}
    return reports


def test_a_lost_gpu_fails_requests_only_where_readiness_is_shallow(
    cli: Cli, tmp_path: Path
) -> None:
    # The same plain load balancer (no retries, no passive ejection, no fallback): only the
    # replicas' readiness checks can take a replica whose GPU is gone out of rotation.
    reports = _drill_at_once(
        cli,
        tmp_path,
        {
            "deep": {"readiness": "deep", "gateway": PLAIN_GATEWAY},
            "shallow": {"readiness": "shallow", "gateway": PLAIN_GATEWAY},
        },
    )
    deep, shallow = reports["deep"], reports["shallow"]
    assert deep["code"] == 0, deep["checks"]
    lost = _fault(deep, "lost")
    assert lost["failed_requests"] <= 0.03 * lost["requests"]
    assert lost["restored_at"] is not None  # the gateway took it out, and back after the reset
    # Shallow: the replica knew (its own log), its checks stayed green, a third of the
    # requests failed until the GPU was reset, and the drill says so.
    assert shallow["code"] == 1
    lost = _fault(shallow, "lost")
    assert lost["failed_requests"] >= 0.2 * lost["requests"], lost
    assert lost["restored_at"] is None
    failed = {c["name"] for c in shallow["checks"] if not c["passed"]}
    assert "lost.max_failed_requests" in failed
    assert not leftovers(cli)
    assert not stack_files(cli, "journal.jsonl")


@pytest.mark.docker
def test_a_lost_gpu_on_the_docker_backend(cli: Cli, tmp_path: Path, stack_image: str) -> None:
    path = scenario(
        tmp_path,
        "gpu-docker",
        [LOST],
        stack={"backend": "docker", "gateway": PLAIN_GATEWAY},
        monitoring={"enabled": "off"},
        scoring={"pass_score": 90},
    )
    code, report = run_drill(cli, path, tmp_path)
    assert code == 0, report.get("checks")
    lost = _fault(report, "lost")
    assert lost["ttd_s"] is not None and lost["ttd_s"] <= 1.0
    assert lost["failed_requests"] <= 0.03 * lost["requests"]
    assert lost["restored_at"] is not None
    assert not leftovers(cli)
