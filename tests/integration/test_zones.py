"""Zoned stacks on real processes: HAProxy in front of two zones, a Redis per zone, and the
drills that lose them (Debian's haproxy and redis-server: the ``zones`` marker)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Cli, leftovers, stack_files

pytestmark = pytest.mark.zones

STACK = {"zones": ["a", "b"], "replicas": 1, "catalog": {"items": 2000, "dim": 32, "seed": 7}}
LOAD = {"rate": 80, "users": 16, "duration": "12s", "warmup": "2s", "timeout": "2s", "skew": 1.0}


def _tools_running() -> set[int]:
    """Pids of haproxy and redis-server processes (their titles hide whose they are)."""
    out = subprocess.run(["ps", "-eo", "pid,stat,comm"], capture_output=True, text=True).stdout
    return {
        int(line.split()[0])
        for line in out.splitlines()[1:]
        if line.split()[2] in ("haproxy", "redis-server") and not line.split()[1].startswith("Z")
    }


@pytest.fixture(autouse=True)
def _nothing_left(cli: Cli) -> Any:
    before = _tools_running()
    yield
    assert _tools_running() <= before, "a drill left haproxy or redis-server running"
    assert not leftovers(cli)
    assert not stack_files(cli, "journal.jsonl")


def drill(
    cli: Cli, tmp_path: Path, faults: list[dict[str, Any]], *, stack: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    doc = {
        "version": 1,
        "name": "zones",
        "stack": {**STACK, **(stack or {})},
        "load": LOAD,
        "faults": faults,
        "report": {"formats": ["json"]},
    }
    path = tmp_path / "zones.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    report = tmp_path / "r.json"
    proc = cli("run", str(path), "--ci", "--json", str(report), timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(report.read_text()) if report.exists() else {}


ZONE_KILL = {
    "id": "zone-a",
    "kind": "zone_outage",
    "target": "zone-a",
    "at": "3s",
    "duration": "6s",
    "params": {"mode": "kill"},
    "expect": {"detect_within": "1s", "max_failed_requests": 0},
}


def test_a_killed_zone_is_taken_out_by_the_edge_and_costs_no_request(
    cli: Cli, tmp_path: Path
) -> None:
    code, report = drill(cli, tmp_path, [ZONE_KILL])
    assert code == 0, report
    (fault,) = report["faults"]
    assert fault["failed_requests"] == 0
    assert fault["detected_by"].startswith("edge: up->down"), fault
    assert fault["ttd_s"] <= 1.0
    assert fault["restored_at"] is not None and fault["restored_at"] > fault["healed_at"]
    assert "redis-a, replica-a1, gateway-a gone after SIGKILL" in fault["evidence"]
    # Which zone served what: zone b took the load while zone a was down.
    phases = {p["name"]: p for p in report["phases"]}
    baseline, down = phases["baseline"]["zones"], phases["fault:zone-a"]["zones"]
    assert min(baseline.values()) >= 0.4 * sum(baseline.values()), baseline
    assert down["b"] >= 0.7 * sum(down.values()), down
    series = [p for p in report["series"] if p.get("zone_rps")]
    assert len(series) >= 100
    # Between the injection plus detection and the heal, zone a answered nothing.
    quiet = [p["zone_rps"].get("a", 0.0) for p in series if 4.5 <= p["t"] < 8.5]
    assert quiet and max(quiet) == 0.0, quiet
    assert any(p.get("cache_hit_ratio") is not None for p in series)


def test_without_the_edges_health_checks_and_retries_the_same_drill_fails(
    cli: Cli, tmp_path: Path
) -> None:
    naked = {"edge": {"health_checks": False, "retries": 0}}
    code, report = drill(cli, tmp_path, [ZONE_KILL], stack=naked)
    assert code == 1, report
    (fault,) = report["faults"]
    assert fault["failed_requests"] > 0
    assert fault["detected_by"] is None  # nothing takes the zone out
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert {"zone-a.max_failed_requests", "zone-a.detect_within"} <= failed


@pytest.mark.parametrize(
    ("mode", "evidence", "within"),
    [
        # HAProxy's checks (fall 2 x 200 ms, each timing out at 200 ms), then the next poll
        # of its stats: about 0.8 s, and a loaded machine adds to it.
        ("cut", r"edge->gateway-a hung", 1.5),
        # The gateway first sees its replica go (fall 2 x 200 ms), then the edge its gateway.
        ("isolate", r"gateway-a->replica-a1 hung", 2.0),
    ],
)
def test_a_zone_cut_off_is_taken_out_by_the_edge(
    cli: Cli, tmp_path: Path, mode: str, evidence: str, within: float
) -> None:
    fault = {**ZONE_KILL, "params": {"mode": mode}, "expect": {"max_failed_requests": 0}}
    code, report = drill(cli, tmp_path, [fault])
    (result,) = report["faults"]
    assert evidence in result["evidence"], result
    assert result["detected_by"] is not None and result["detected_by"].startswith("edge:"), result
    assert result["ttd_s"] <= within
    assert result["failed_requests"] == 0, report["checks"]
    assert code == 0, report


def test_a_dead_redis_costs_no_request_and_the_cache_refills(cli: Cli, tmp_path: Path) -> None:
    fault = {
        "id": "redis-a",
        "kind": "kill_node",
        "target": "redis-a",
        "at": "3s",
        "duration": "4s",
        "expect": {"max_failed_requests": 0, "cache_recover_within": "5s"},
    }
    code, report = drill(cli, tmp_path, [fault])
    assert code == 0, report
    (result,) = report["faults"]
    assert result["failed_requests"] == 0 and result["degraded_responses"] == 0
    phases = {p["name"]: p for p in report["phases"]}
    # Zone b's cache kept hitting; zone a answered without its cache (bypass, not a hit).
    assert phases["fault:redis-a"]["cache_hit_ratio"] < phases["baseline"]["cache_hit_ratio"]
    assert result["cache_hit_before"] > 0.2
    assert result["cache_recovered_at"] is not None
    assert result["cache_recovered_at"] - result["healed_at"] <= 5.0


def test_a_flushed_cache_is_cold_and_refills(cli: Cli, tmp_path: Path) -> None:
    fault = {
        "id": "flush",
        "kind": "cache_flush",
        "target": ["redis-a", "redis-b"],
        "at": "4s",
        "duration": "1s",
        "expect": {"max_failed_requests": 0, "cache_recover_within": "6s"},
    }
    code, report = drill(cli, tmp_path, [fault])
    assert code == 0, report
    (result,) = report["faults"]
    assert "keys flushed" in result["evidence"], result
    # Right after the flush, hits fall: the 1 s after it hit less than the 1 s before.
    series = report["series"]

    def hits(start: float, end: float) -> float:
        ratios = [
            p["cache_hit_ratio"]
            for p in series
            if start <= p["t"] < end and p.get("cache_hit_ratio") is not None
        ]
        return float(sum(ratios) / len(ratios))

    assert hits(4.0, 5.0) < hits(3.0, 4.0), series


def test_a_users_own_edge_config_is_checked_and_drilled(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "edge.cfg").write_text(
        "defaults\n  mode http\n  timeout connect 500ms\n  timeout client 10s\n"
        "  timeout server 1s\n  retries 2\n  option redispatch 1\n"
        "  retry-on conn-failure empty-response response-timeout 503\n"
        'frontend recommend\n  bind "${DRILLKIT_EDGE_LISTEN}"\n  default_backend zones\n'
        "backend zones\n  option httpchk GET /readyz\n"
        "  http-response set-header X-Zone %[srv_name]\n"
        '  server a "${DRILLKIT_ZONE_A}" check inter 200ms fall 2 rise 2\n'
        '  server b "${DRILLKIT_ZONE_B}" check inter 200ms fall 2 rise 2\n'
        'frontend admin\n  bind "${DRILLKIT_EDGE_ADMIN}"\n  stats enable\n  stats uri /stats\n'
    )
    code, report = drill(cli, tmp_path, [ZONE_KILL], stack={"edge": {"config": "edge.cfg"}})
    assert code == 0, report
    assert report["faults"][0]["detected_by"].startswith("edge:")
    (tmp_path / "edge.cfg").write_text("frontend f\n  bind :1\n  frobnicate yes\n")
    proc = cli("run", str(tmp_path / "zones.yaml"), "--ci", timeout=120)
    assert proc.returncode == 2, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert "haproxy -c refused it" in line and "frobnicate" in line
    assert not stack_files(cli, "state.json")


@pytest.mark.docker
@pytest.mark.parametrize("mode", ["kill", "cut"])
def test_a_zone_lost_on_docker_is_taken_out_by_the_edge(
    cli: Cli, stack_image: str, tmp_path: Path, mode: str
) -> None:
    from .test_docker import docker_leftovers

    fault = {**ZONE_KILL, "params": {"mode": mode}}
    code, report = drill(cli, tmp_path, [fault], stack={"backend": "docker"})
    assert report["backend"] == "docker"
    (result,) = report["faults"]
    assert result["detected_by"] is not None and result["detected_by"].startswith("edge:"), result
    # A cut on docker takes effect only once the NET_ADMIN sidecar has set its iptables rules
    # (half a second or more after the injection is dated), as for the one-zone cut tests.
    assert result["ttd_s"] <= (1.0 if mode == "kill" else 2.0), result
    assert result["failed_requests"] == 0, result
    evidence = "gone after SIGKILL" if mode == "kill" else "edge->gateway-a"
    assert evidence in result["evidence"], result
    assert code == 0, report
    assert not docker_leftovers(cli)
