"""Gray release on real stacks: bad versions rolled back before they reach many users, a good
one promoted, an unwatched rollout failing the drill, and a rollout by hand aborted under load.

The drills use short timelines (5 s steps); the bundled scenarios run the same rollouts at
the pace a person reads (``drillkit run bad-canary-quality``).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from junitparser import JUnitXml

from drillkit.stacks.recommender.spec import GatewaySettings

from .conftest import Cli, leftovers
from .test_drills import scenario
from .test_local_stack import up

LOAD = {"rate": 80, "users": 16, "duration": "24s", "warmup": "2s", "timeout": "2s"}
SLO = {"availability": "99.9%", "p99_ms": 250, "quality": "90%", "degraded_max": "5%"}
INTERVAL = 5.0


def rollout(
    kind: str, params: dict[str, Any], expect: dict[str, Any], *, interval: float = INTERVAL
) -> dict[str, Any]:
    return {
        "id": "canary-1",
        "kind": kind,
        "target": "model-store",
        "at": "3s",
        "duration": "19s",
        "params": {"steps": [10, 50, 100], "interval": f"{interval:g}s", **params},
        "expect": expect,
    }


BAD_EXPECT = {
    "rollback_within": f"{2 * INTERVAL:g}s",
    "max_users_exposed": "15%",
    "max_failed_requests": 0,
    "max_wrong_model_responses": 0,
}


def drill(
    cli: Cli, tmp_path: Path, fault: dict[str, Any], *, backend: str = "local"
) -> tuple[int, dict[str, Any], Path]:
    path = scenario(
        tmp_path,
        f"rollout-{fault['kind'].replace('_', '-')}",
        [fault],
        stack={"backend": backend},
        load=LOAD,
        slo=SLO,
        report={"formats": ["json", "junit"]},
        scoring={"pass_score": 90},
    )
    records = tmp_path / "records.jsonl.gz"
    report = tmp_path / "r.json"
    proc = cli("run", str(path), "--ci", "--json", str(report), "--records", str(records))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert report.exists(), proc.stderr[-2000:]
    return proc.returncode, json.loads(report.read_text()), records


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def exposed_in_records(records: Path, digest: str, start: float, end: float) -> Counter[int]:
    """Answers by ``digest`` per user, counted from the generator's own records."""
    lines = gzip.decompress(records.read_bytes()).decode().splitlines()
    header = json.loads(lines[0])
    t0, fields = header["t0"], header["fields"]
    at = {name: fields.index(name) for name in ("sent_at", "status", "model_digest", "user")}
    users: Counter[int] = Counter()
    for line in lines[1:]:
        row = json.loads(line)
        t = row[at["sent_at"]] - t0
        if start <= t < end and row[at["model_digest"]] == digest and 0 < row[at["status"]] < 500:
            users[row[at["user"]]] += 1
    return users


@pytest.mark.parametrize(
    ("defect", "severity", "rule"),
    [
        pytest.param("quality", "30%", "quality", id="quality"),
        pytest.param("latency", "150ms", "p99", id="latency"),
    ],
)
def test_a_bad_canary_is_rolled_back_at_its_first_step(
    cli: Cli, tmp_path: Path, defect: str, severity: str, rule: str
) -> None:
    fault = rollout("bad_rollout", {"defect": defect, "severity": severity}, BAD_EXPECT)
    code, report, records = drill(cli, tmp_path, fault)
    by_name = checks(report)
    failed = [name for name, c in by_name.items() if not c["passed"]]
    assert code == 0 and report["status"] == "passed", failed
    (f,) = report["faults"]
    r = f["rollout"]
    assert (r["status"], r["expected"], r["defect"]) == ("rolled_back", "rolled_back", defect)
    (step,) = r["steps"]  # judged at 10%, never at 50%
    # The defect's own rule among the reasons (a slow canary may also time out an attempt).
    assert step["verdict"] == "fail" and any(r.startswith(rule) for r in step["reasons"]), step
    assert r["time_to_verdict_s"] < 2 * INTERVAL and r["time_to_rollback_s"] < 2 * INTERVAL
    assert 0 < r["exposed_users_share"] <= 0.15
    # The report's exposure is the generator's own records, counted here independently.
    end = f["healed_at"]
    users = exposed_in_records(records, r["digest"], r["started_at"], end)
    assert (r["exposed_requests"], r["exposed_users"]) == (sum(users.values()), len(users))
    # Detection is the analysis's verdict; the rollout's checks are in the JUnit report too.
    assert f["detected_by"].startswith("rollout: rollout analysis: rolled back at 10%")
    junit = JUnitXml.fromfile(str(next((tmp_path / "reports").glob("*.xml"))))
    names = {case.name for suite in junit for case in suite}
    assert {"canary-1.rollout", "canary-1.max_users_exposed", "canary-1.rollback_within"} <= names
    assert not leftovers(cli)


def test_a_good_canary_is_promoted_step_by_step(cli: Cli, tmp_path: Path) -> None:
    expect = {"max_failed_requests": 0, "max_wrong_model_responses": 0}
    # Steps of 4 s: promoted with room to spare before the heal, on a busy machine too.
    fault = rollout("rollout", {}, expect, interval=4.0)
    code, report, _ = drill(cli, tmp_path, fault)
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    assert code == 0 and report["status"] == "passed", failed
    r = report["faults"][0]["rollout"]
    assert r["status"] == "promoted" and [s["verdict"] for s in r["steps"]] == ["pass"] * 3
    assert [s["weight"] for s in r["steps"]] == [0.1, 0.5, 1.0]
    # Answers by the new version are counted as exposure, never as wrong-model responses.
    assert r["exposed_requests"] > 0 and report["faults"][0]["wrong_model_responses"] == 0
    assert not leftovers(cli)


def test_an_unwatched_bad_canary_fails_the_drill(cli: Cli, tmp_path: Path) -> None:
    """The measurement can fail: with the analysis off, the bad version is promoted and the
    drill says so, by the rollout's outcome, its exposure and what users got."""
    params = {"defect": "quality", "severity": "30%", "analysis": {"enabled": False}}
    # Steps of 3 s: the bad version serves everyone for the last 10 s before the heal.
    fault = rollout("bad_rollout", params, BAD_EXPECT, interval=3.0)
    code, report, _ = drill(cli, tmp_path, fault)
    assert code == 1 and report["status"] == "failed"
    by_name = checks(report)
    for name in ("canary-1.rollout", "canary-1.max_users_exposed", "canary-1.rollback_within"):
        assert not by_name[name]["passed"], name
    assert not by_name["canary-1.quality"]["passed"]  # users' quality fell below the SLO
    r = report["faults"][0]["rollout"]
    assert r["status"] == "promoted" and r["exposed_users_share"] > 0.3
    assert [s["verdict"] for s in r["steps"]] == ["not judged"] * 3
    assert not leftovers(cli)


@pytest.mark.docker
def test_a_bad_canary_is_rolled_back_on_docker(cli: Cli, tmp_path: Path, stack_image: str) -> None:
    from .test_docker import docker_leftovers

    fault = rollout("bad_rollout", {"defect": "quality", "severity": "30%"}, BAD_EXPECT)
    code, report, _ = drill(cli, tmp_path, fault, backend="docker")
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    assert report["backend"] == "docker"
    assert code == 0 and report["status"] == "passed", failed
    assert report["faults"][0]["rollout"]["status"] == "rolled_back"
    assert not docker_leftovers(cli)


# -- by hand ------------------------------------------------------------------------------------


class Load:
    """Steady requests through the gateway on a thread: what each answer's version was."""

    def __init__(self, url: str, rate: float = 60.0) -> None:
        self.url, self.interval = url, 1.0 / rate
        self.answers: list[tuple[float, int, str]] = []  # (sent, status, version)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        user = 0
        with httpx.Client(timeout=2.0) as client:
            while not self.stop.wait(self.interval):
                user = (user + 7919) % 2000
                sent = time.time()
                try:
                    got = client.get(self.url + "/recommend", params={"user_id": user})
                    self.answers.append((sent, got.status_code, got.headers["X-Model-Version"]))
                except httpx.HTTPError:
                    self.answers.append((sent, 0, ""))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def test_a_rollout_by_hand_is_aborted_back_to_stable_without_a_failed_request(cli: Cli) -> None:
    state = up(cli, "--replicas", "3")
    published = cli("model", "publish", "--defect", "none")
    assert published.returncode == 0, published.stderr
    version = published.stdout.split()[1]  # "published v3 (digest ...)"
    store = Path(state["plan"]["settings"]["origin"])
    current_before = (store / "CURRENT").read_text()

    # A version whose file was damaged after it was published does not verify.
    damaged = cli("model", "publish", "--defect", "none").stdout.split()[1]
    weights = store / "versions" / damaged / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    # Bad input first: one line each, exit 2, nothing changed.
    for args, message in (
        (["v99"], "v99: no such version"),
        ([damaged], f"{damaged}: does not verify"),
        ([version, "--steps", "50,10,100"], "steps: must increase"),
        ([version, "--steps", "10,50"], "the last step must be 100"),
        ([version, "--interval", "0s"], "--interval"),
    ):
        bad = cli("model", "rollout", *args)
        assert bad.returncode == 2, (args, bad.stderr)
        assert message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "no rollout" in cli("model", "rollout", "--status").stdout

    load = Load(state["gateway_url"])
    runner = subprocess.Popen(
        [sys.executable, "-m", "drillkit", "model", "rollout", version, "--interval", "60s"],
        env=cli.env,
        cwd=cli.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shown = cli("model", "rollout", "--status", "--json")
            if shown.returncode == 0 and '"weight": 0.1' in shown.stdout:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the rollout never reached its first step")
        time.sleep(2.0)
        second = cli("model", "rollout", version)
        assert second.returncode == 2 and "a rollout of" in second.stderr, second.stderr
        started = time.time()
        aborted = cli("model", "rollout", "--abort", "--json")
        assert aborted.returncode == 0, aborted.stderr
        record = json.loads(aborted.stdout)
        assert record["status"] == "aborted" and record["verdict"] == "aborted by request"
        runner.communicate(timeout=60)
        assert runner.returncode == 1  # not promoted
        time.sleep(1.0)
    finally:
        if runner.poll() is None:
            runner.kill()
        load.close()
    canary = [t for t, _, v in load.answers if v == version]
    assert canary, "no user reached the canary before the abort"
    # Users are back on stable with the next request once the abort reached the controller
    # (the canary's share goes to 0 first): within one health-check interval of the request.
    requested = record["abort_requested_at"]
    assert started - 0.01 <= requested
    assert max(canary) < requested + GatewaySettings().check_interval
    assert all(status == 200 for _, status, _ in load.answers)
    assert (store / "CURRENT").read_text() == current_before  # the origin never moved
    status = cli("model", "rollout", "--status").stdout
    assert f"rollout of {version}" in status and "aborted" in status
    assert cli("stack", "down").returncode == 0
    assert not leftovers(cli)


def test_kill_9_during_a_rollout_then_heal(cli: Cli, tmp_path: Path) -> None:
    """drillkit killed mid-rollout: `drillkit heal` puts every store's CURRENT back, removes
    the published version, merges the gateway's pools and takes the stack down."""
    from .conftest import saved_state_path
    from .test_drills import _start_drill, _wait_for_injection

    fault = rollout("bad_rollout", {"defect": "quality"}, {}, interval=30.0)
    path = scenario(tmp_path, "crashed-rollout", [fault], load=LOAD)
    proc = _start_drill(cli, path, tmp_path / "r.json")
    _wait_for_injection(cli, proc)
    state = json.loads(saved_state_path(cli).read_text())
    deadline = time.monotonic() + 60
    rollout_file = saved_state_path(cli).parent / "rollout.json"
    while time.monotonic() < deadline:  # killed while the canary serves users
        if rollout_file.exists() and json.loads(rollout_file.read_text())["weight"] > 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the rollout never reached its first step")
    proc.kill()
    proc.communicate(timeout=30)
    plan = state["plan"]
    copies = [m["source"] for s in plan["services"] for m in s["mounts"] if m["name"] == "store"]
    stores = [Path(plan["settings"]["origin"]), *(Path(c) for c in copies)]
    version = json.loads(rollout_file.read_text())["version"]
    assert all((root / "versions" / version).is_dir() for root in stores)
    healed = cli("heal")
    assert healed.returncode == 0, healed.stderr
    assert "healed" in healed.stdout and "taken down" in healed.stdout
    deadline = time.monotonic() + 30
    while leftovers(cli) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not leftovers(cli)
    for root in stores:  # gone with the stack, or back as they were
        if root.exists():
            assert not (root / "versions" / version).exists()
            assert (root / "CURRENT").read_text().strip() != version
    assert cli("heal").stdout.strip() == "nothing to heal"
