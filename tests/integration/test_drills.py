"""Whole drills on real processes: `drillkit run` with short scenarios on a small catalog."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import Cli, leftovers, saved_state_path, stack_files

STACK = {"replicas": 3, "catalog": {"items": 2000, "dim": 32, "seed": 7}}
RATE = 80
LOAD = {"rate": RATE, "users": 16, "duration": "12s", "warmup": "2s", "timeout": "2s"}


def scenario(
    tmp_path: Path,
    name: str,
    faults: list[dict[str, Any]],
    *,
    stack: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    doc = {
        "version": 1,
        "name": name,
        "stack": {**STACK, **(stack or {})},
        "load": LOAD,
        "faults": faults,
        "report": {"formats": ["json"]},
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_drill(cli: Cli, path: Path, tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / "r.json"
    proc = cli("run", str(path), "--ci", "--json", str(report), *args, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, data


KILL = {
    "id": "kill-1",
    "kind": "kill_node",
    "target": "replica-1",
    "at": "3s",
    "duration": "5s",
    "expect": {"detect_within": "1s", "max_failed_requests": 0, "max_wrong_model_responses": 0},
}


def test_kill_node_drill_passes_with_exact_figures(cli: Cli, tmp_path: Path) -> None:
    code, report = run_drill(cli, scenario(tmp_path, "kill", [KILL]), tmp_path)
    assert code == 0, report
    assert report["schema_version"] == 1 and report["status"] == "passed"
    (fault,) = report["faults"]
    assert fault["ttd_s"] is not None and fault["ttd_s"] <= 1.0
    assert fault["failed_requests"] == 0
    assert fault["injected_at"] == pytest.approx(3.0, abs=0.5)
    assert "is gone" in fault["evidence"]
    assert [p["name"] for p in report["phases"]][:2] == ["baseline", "fault:kill-1"]
    assert len(report["series"]) >= 100  # 100 ms windows over 12 s
    in_series = sum(round(p["rps"] * 0.1) for p in report["series"])
    assert in_series == sum(p["requests"] for p in report["phases"])  # one fault: a partition
    # The load covers the window to its end: no traffic cliff in the last second (it ended
    # 1.1-1.4 s early when t=0 was taken after the reference probe).
    last_second = sum(round(p["rps"] * 0.1) for p in report["series"] if p["t"] >= 12.0 - 1.0)
    assert last_second >= 0.9 * RATE, report["series"][-12:]
    assert report["phases"][-1]["rps"] >= 0.9 * RATE
    assert not leftovers(cli)


def test_the_measurement_can_fail(cli: Cli, tmp_path: Path) -> None:
    naked = {"gateway": {"retries": 0, "passive_ejection": False, "fallback": False}}
    # One failed check of weight 2 must fail the drill, among the checks of a drill with
    # monitoring (which adds monitoring.missed_faults) or without it.
    path = scenario(tmp_path, "kill-naked", [KILL], stack=naked, scoring={"pass_score": 95})
    code, report = run_drill(cli, path, tmp_path)
    assert code == 1, report
    assert report["status"] == "failed"
    assert report["faults"][0]["failed_requests"] > 0
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert "kill-1.max_failed_requests" in failed


@pytest.mark.parametrize(
    ("fault", "evidence", "detected_by"),
    [
        pytest.param(
            {"kind": "pause_node", "target": "replica-2"}, "paused", "gateway", id="pause"
        ),
        pytest.param(
            {"kind": "cut_network", "target": "replica-3", "params": {"mode": "blackhole"}},
            r"a probe request hung",
            "gateway",
            id="blackhole",
        ),
        pytest.param(
            {"kind": "cut_network", "target": "replica-3", "params": {"mode": "reject"}},
            r"a probe request (refused|reset)",
            "gateway",
            id="reject",
        ),
        pytest.param(
            {"kind": "latency", "target": "replica-1", "params": {"delay": "100ms"}},
            r"\+100 ms",
            None,
            id="latency",
        ),
        pytest.param(
            {"kind": "corrupt_model", "target": "replica-2", "params": {"mode": "bitflip"}},
            "sha256",
            "replica-2",
            id="bitflip-reload",
        ),
        pytest.param(
            {
                "kind": "corrupt_model",
                "target": "replica-1",
                "params": {"mode": "truncate", "apply": "restart"},
            },
            "truncate",
            r"(gateway|replica-1): ",
            id="truncate-restart",
        ),  # the restart itself is usually seen first, by the gateway
        pytest.param(
            {"kind": "corrupt_model", "target": "model-store", "params": {"mode": "poison"}},
            "poisoned",
            "replica-",
            id="poison-store",
        ),
        pytest.param(
            {"kind": "load_spike", "target": "gateway", "params": {"rate": 300}},
            r"300 extra requests/s offered .*; in its first [\d.]+ s: \d+ sent, [1-9]\d* answered",
            None,
            id="load-spike",
        ),
    ],
)
def test_every_fault_kind_takes_effect_and_heals(
    cli: Cli, tmp_path: Path, fault: dict[str, Any], evidence: str, detected_by: str | None
) -> None:
    spec = {
        "id": "f-1",
        "at": "3s",
        "duration": "5s",
        "expect": {"max_wrong_model_responses": 0},
        **fault,
    }
    code, report = run_drill(cli, scenario(tmp_path, "one-fault", [spec]), tmp_path)
    assert code in (0, 1), report
    (result,) = report["faults"]
    assert re.search(evidence, result["evidence"]), result["evidence"]
    assert result["healed_at"] is not None
    if fault["kind"] == "load_spike":  # the extra traffic was answered, not only offered
        counted = re.search(r"first ([\d.]+) s: \d+ sent, (\d+) answered", result["evidence"])
        assert counted is not None and int(counted[2]) >= 0.5 * 300 * float(counted[1])
    if detected_by is not None:  # the stack itself noticed, while the fault lasted
        assert result["detected_by"] is not None and re.match(detected_by, result["detected_by"]), (
            result
        )
        assert result["ttd_s"] is not None and result["ttd_s"] <= 2.0
    assert result["wrong_model_responses"] == 0
    assert not leftovers(cli)
    assert not stack_files(cli, "journal.jsonl")


def read_records(path: Path) -> tuple[float, list[dict[str, Any]]]:
    """t0 and the rows of a ``--records`` file, by the field names its header gives."""
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    header = json.loads(lines[0])
    return header["t0"], [
        dict(zip(header["fields"], json.loads(line), strict=True)) for line in lines[1:]
    ]


def test_answers_of_a_model_nobody_released_are_counted_exactly(cli: Cli, tmp_path: Path) -> None:
    # The positive control of the wrong-model counter: replica-2 really serves a version
    # published outside the release (unsigned; this stack checks no signature). The report
    # must count its answers exactly as the records show them, phase by phase.
    fault = {
        "id": "rogue-1",
        "kind": "corrupt_model",
        "target": "replica-2",
        "at": "3s",
        "duration": "5s",
        "params": {"mode": "unreleased"},
        "expect": {"max_wrong_model_responses": 0},
    }
    records = tmp_path / "records.jsonl.gz"
    path = scenario(tmp_path, "rogue", [fault])
    code, report = run_drill(cli, path, tmp_path, "--records", str(records))
    assert code == 1, report  # the expectation of no wrong-model answer failed
    (result,) = report["faults"]
    assert "unreleased, unsigned version v3" in result["evidence"], result["evidence"]
    rogue = re.search(r"digest ([0-9a-f]{12})", result["evidence"])
    assert rogue is not None
    t0, rows = read_records(records)
    # Released: what the stack served before the fault; anything else answered is wrong.
    released = {r["model_digest"] for r in rows if r["sent_at"] - t0 < 3.0}
    released.discard("")
    assert len(released) == 1, released

    def wrong(row: dict[str, Any]) -> bool:
        answered = 200 <= row["status"] < 400 and not row["degraded"]
        return answered and row["model_digest"] not in released

    for phase in report["phases"]:
        expected = [
            r for r in rows if phase["start"] <= r["sent_at"] - t0 < phase["end"] and wrong(r)
        ]
        assert phase["wrong_model"] == len(expected), (phase, len(expected))
    served = [r for r in rows if wrong(r)]
    assert served, "replica-2 never served the unreleased version"
    assert {r["model_digest"][:12] for r in served} == {rogue.group(1)}
    assert {r["replica"] for r in served} == {"replica-2"}
    assert result["wrong_model_responses"] == sum(
        1 for r in served if result["injected_at"] <= r["sent_at"] - t0 < result["healed_at"]
    )
    assert result["wrong_model_responses"] > 0
    failed = {c["name"] for c in report["checks"] if not c["passed"]}
    assert {"rogue-1.max_wrong_model_responses", "wrong_model_responses"} <= failed
    assert not leftovers(cli)


def test_two_crossing_corruptions_of_one_store_end_with_it_verifying(
    cli: Cli, tmp_path: Path
) -> None:
    # c-2 damages the file while c-1's damage is still there, and c-1 heals first: c-2's
    # heal must not put c-1's damage back. The drill serves the user's store in place.
    cached = Path(cli.env["DRILLKIT_CACHE_DIR"]) / "artifacts"
    source = next(p for p in cached.iterdir() if p.is_dir() and not p.name.startswith("."))
    store = tmp_path / "store"
    shutil.copytree(source, store)
    faults = [
        {"id": "c-1", "kind": "corrupt_model", "target": "model-store", "at": "3s",
         "duration": "3s", "params": {"mode": "bitflip", "flips": 8}},
        {"id": "c-2", "kind": "corrupt_model", "target": "model-store", "at": "4s",
         "duration": "4s", "params": {"mode": "bitflip", "flips": 64}},
    ]  # fmt: skip
    for fault in faults:
        fault["expect"] = {"max_failed_requests": 0, "max_wrong_model_responses": 0}
    assert cli.cwd == tmp_path  # the store is named relative to the working folder
    path = scenario(tmp_path, "crossing", faults, stack={"store": "store"})
    code, report = run_drill(cli, path, tmp_path)
    assert code == 0, report
    assert [f["healed_at"] is not None for f in report["faults"]] == [True, True]
    verify = cli("model", "verify", "--store", str(store))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert not leftovers(cli)
    assert not stack_files(cli, "journal.jsonl")


def test_a_load_spike_is_shed_detected_and_recovered(cli: Cli, tmp_path: Path) -> None:
    # One replica, so the spike exceeds what it can serve and the gateway must shed.
    spike = {
        "id": "spike-1",
        "kind": "load_spike",
        "target": "gateway",
        "at": "3s",
        "duration": "4s",
        "params": {"rate": 3000},
        "expect": {"recover_within": "8s", "max_wrong_model_responses": 0},
    }
    # Long enough after the heal (at 7 s) for the 3 clean seconds that recover_within's 8 s allow.
    path = scenario(
        tmp_path, "spike", [spike], stack={"replicas": 1}, load={**LOAD, "duration": "14s"}
    )
    code, report = run_drill(cli, path, tmp_path)
    assert code in (0, 1), report
    (fault,) = report["faults"]
    assert "3000 extra requests/s" in fault["evidence"]
    # The overload was shed (degraded answers at once), not queued: the gateway says how many
    # it shed. Whose requests they were is down to interleaving (the steady users', or the
    # spike's after the first 0.5 s its evidence covers): on a quick stack it may be only the
    # spike's, and only a few.
    shedding = re.match(r"gateway: shedding load \((\d+) shed so far\)", fault["detected_by"] or "")
    assert shedding is not None and int(shedding[1]) > 0, fault
    # Normal again once the spike is over (the SLOs hold for 3 s in a row: rto).
    assert fault["rto_s"] is not None and fault["rto_s"] <= 8.0, fault
    after = next(p for p in report["phases"] if p["name"] == "after")
    assert after["failed"] == 0 and after["degraded"] <= 0.05 * after["requests"], after
    assert not leftovers(cli)
    assert not [
        p
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and b"drillkit.load.spike" in _cmdline(p)
    ]


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""


def _start_drill(cli: Cli, path: Path, report: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "drillkit", "run", str(path), "--ci", "--json", str(report)],
        env=cli.env,
        cwd=cli.cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_side_by_side(cli: Cli, tmp_path: Path, stacks: list[dict[str, Any]]) -> list[Any]:
    """Start one drill per stack at the same moment (each a kill_node and a load spike of its
    own), wait for all; their reports, in order."""
    spike = {"id": "spike-1", "kind": "load_spike", "target": "gateway", "at": "4s",
             "duration": "3s", "params": {"rate": 40}}  # fmt: skip
    kill = {k: v for k, v in KILL.items() if k != "expect"}
    procs = []
    for i, stack in enumerate(stacks):
        folder = tmp_path / f"drill-{i}"
        folder.mkdir()
        path = scenario(folder, f"side-{i}", [kill, spike], stack=stack)
        procs.append((_start_drill(cli, path, folder / "r.json"), folder / "r.json"))
    reports = []
    for proc, report in procs:
        out, err = proc.communicate(timeout=400)
        assert "Traceback" not in err, err
        assert proc.returncode == 0, (out, err)
        reports.append(json.loads(report.read_text()))
    return reports


def test_two_drills_at_once_each_heal_only_their_own(cli: Cli, tmp_path: Path) -> None:
    reports = run_side_by_side(cli, tmp_path, [{"replicas": 2}, {"replicas": 2}])
    for data in reports:
        assert data["status"] == "passed"
        assert all(c["passed"] for c in data["checks"] if c["name"].endswith(".healed"))
        kill = next(f for f in data["faults"] if f["id"] == "kill-1")
        assert kill["healed_at"] is not None, kill
    # Each drill's faults were its own stack's: the pids it killed differ.
    evidence = [next(f for f in d["faults"] if f["id"] == "kill-1")["evidence"] for d in reports]
    assert evidence[0] != evidence[1]
    assert not leftovers(cli)
    assert not stack_files(cli, "journal.jsonl") and not stack_files(cli, "stack.json")


def _wait_for_injection(cli: Cli, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(j.read_text().strip() for j in stack_files(cli, "journal.jsonl")):
            time.sleep(0.5)  # let the fault land
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("the fault was never injected")


def test_sigint_during_a_fault_heals_and_reports(cli: Cli, tmp_path: Path) -> None:
    corrupt = {
        "id": "bad-1",
        "kind": "corrupt_model",
        "target": "model-store",
        "at": "3s",
        "duration": "6s",
        "params": {"mode": "bitflip"},
    }
    report = tmp_path / "r.json"
    proc = _start_drill(
        cli, scenario(tmp_path, "interrupted", [KILL | {"at": "3s"}, corrupt]), report
    )
    _wait_for_injection(cli, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    data = json.loads(report.read_text())
    assert data["status"] == "interrupted"
    assert not leftovers(cli)
    assert not stack_files(cli, "journal.jsonl")
    assert cli("model", "verify").returncode == 0


def test_kill_9_during_corrupt_model_then_heal(cli: Cli, tmp_path: Path) -> None:
    corrupt = {
        "id": "bad-1",
        "kind": "corrupt_model",
        "target": "model-store",
        "at": "3s",
        "duration": "8s",
        "params": {"mode": "zero"},
    }
    proc = _start_drill(cli, scenario(tmp_path, "crashed", [corrupt]), tmp_path / "r.json")
    _wait_for_injection(cli, proc)
    proc.kill()
    proc.communicate(timeout=30)
    state = json.loads(saved_state_path(cli).read_text())
    plan = state["plan"]  # the origin store, and each replica's copy (its `store` mount)
    copies = [m["source"] for s in plan["services"] for m in s["mounts"] if m["name"] == "store"]
    stores = [plan["settings"]["origin"], *copies]
    healed = cli("heal")
    assert healed.returncode == 0, healed.stderr
    assert "taken down" in healed.stdout and "healed" in healed.stdout
    # The locust child belongs to the dead drill; it ends at its own run time.
    deadline = time.monotonic() + 30
    while leftovers(cli) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not leftovers(cli)
    assert cli("stack", "status").returncode == 3
    for root in stores:  # gone with the stack, or verified clean
        if Path(root).exists():
            assert cli("model", "verify", "--store", root).returncode == 0
    assert cli("model", "verify").returncode == 0
    assert cli("heal").stdout.strip() == "nothing to heal"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("version: 1\nname: x\nload: {rate: -5}\n", id="negative-rate"),
        pytest.param(
            "version: 1\nname: x\nfaults:\n  - {kind: kill_node, target: replica-9, at: 1s}\n",
            id="missing-target",
        ),
        pytest.param("version: 1\nname: x\nload: {durration: 5s}\n", id="unknown-key"),
        pytest.param("version: [1\n", id="malformed"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_scenarios_exit_2_with_one_line_and_start_nothing(
    cli: Cli, tmp_path: Path, content: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    for command in (["validate", str(path)], ["run", str(path)]):
        proc = cli(*command)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"drillkit: error: {path}:")
        assert "Traceback" not in proc.stderr
    assert not stack_files(cli, "stack.json")
    assert os.listdir(tmp_path) == ["bad.yaml"]


def test_abort_condition_stops_the_drill_early_and_heals(cli: Cli, tmp_path: Path) -> None:
    every = {
        "id": "kill-all",
        "kind": "kill_node",
        "target": ["replica-1", "replica-2", "replica-3"],
        "at": "2s",
        "duration": "8s",
    }
    naked = {"gateway": {"retries": 0, "passive_ejection": False, "fallback": False}}
    path = scenario(
        tmp_path, "abort", [every], stack=naked, abort={"error_rate_above": "50%", "for": "1s"}
    )
    started = time.monotonic()
    code, report = run_drill(cli, path, tmp_path)
    assert code == 1, report
    assert report["status"] == "failed"
    assert report["faults"][0]["healed_at"] is not None
    assert report["faults"][0]["failed_requests"] > 0
    # Aborted about a second after the errors began, not at the end of the 12 s load.
    assert time.monotonic() - started < 60
    assert not leftovers(cli)


def test_a_generator_that_cannot_hold_its_rate_is_exit_3(cli: Cli, tmp_path: Path) -> None:
    doc = {
        "version": 1,
        "name": "saturated",
        "stack": STACK,
        "load": {"rate": 3000, "users": 2, "duration": "6s", "warmup": "1s"},
        "report": {"formats": ["json"]},
    }
    path = tmp_path / "saturated.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, report = run_drill(cli, path, tmp_path)
    assert code == 3, report
    assert report["status"] == "error"
    # Exit 3 for this reason, and no other: the drill ran, and its baseline shows the shortfall.
    assert report["load"]["generator_saturated"] is True, report
    assert "could not hold 90% of its target rate" in (report.get("error") or ""), report
    baseline = report["phases"][0]
    assert baseline["rps"] < 0.9 * 3000, baseline
    assert not leftovers(cli)
