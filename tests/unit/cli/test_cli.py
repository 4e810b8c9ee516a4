"""The command line as a user meets it: one-line errors, exit codes, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.stacks.recommender.test_store import flip_byte, make_store


def drillkit(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DRILLKIT_HOME": str(home)}
    for var in ("DRILLKIT_MODEL_KEY", "DRILLKIT_SIGNING_KEY_FILE", "DRILLKIT_VERIFY_KEY"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "drillkit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_is_fast_and_lists_commands(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = drillkit("--help", home=tmp_path)
    assert proc.returncode == 0
    assert "stack" in proc.stdout and "model" in proc.stdout
    # Heavy modules are imported lazily: no torch, faiss or docker for --help.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, drillkit.cli; "
            "print(sorted(m for m in ('torch', 'faiss', 'docker', 'locust') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == "[]"
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        pytest.param(["stack", "status"], 3, "no stack is up", id="status-without-stack"),
        pytest.param(["model", "verify"], 2, "no model store", id="verify-without-store"),
        pytest.param(
            ["model", "verify", "--store", "/nonexistent"],
            2,
            "not a model store",
            id="verify-bad-store",
        ),
        pytest.param(
            ["stack", "up", "--replicas", "0"], 2, "replicas: expected 1..16", id="zero-replicas"
        ),
        pytest.param(["stack", "up", "--backend", "nope"], 2, "unknown backend", id="bad-backend"),
        pytest.param(["status"], 3, "start one with `drillkit stack up`", id="runbook-status"),
        pytest.param(
            ["fault", "inject", "kill_node", "--target", "replica-2"],
            3,
            "start one with `drillkit stack up`",
            id="inject-without-stack",
        ),
        pytest.param(
            ["report", "trend", "/nonexistent"], 2, "no history yet", id="trend-no-history"
        ),
        pytest.param(
            ["report", "show", "/nonexistent.json"], 2, "no such report", id="show-missing"
        ),
    ],
)
def test_expected_errors_are_one_line(
    tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    proc = drillkit(*args, home=tmp_path)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.startswith("drillkit: error: ")
    assert needle in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr


def test_model_verify_and_rollback_on_a_store(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", versions=3)
    ok = drillkit("model", "verify", "--store", str(store.root), "--json", home=tmp_path)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] is True
    (only,) = report["stores"]
    assert only["current"] == "v3"
    assert [v["version"] for v in only["versions"]] == ["v1", "v2", "v3"]

    flip_byte(store.version_dir("v3") / "weights.safetensors")
    bad = drillkit("model", "verify", "--store", str(store.root), home=tmp_path)
    assert bad.returncode == 1
    assert "FAILED  v3 (CURRENT)" in bad.stdout
    assert "weights.safetensors: SHA-256 mismatch" in bad.stdout

    back = drillkit("model", "rollback", "--store", str(store.root), home=tmp_path)
    assert back.returncode == 0, back.stderr
    assert "CURRENT v3 -> v2" in back.stdout
    assert store.current() == "v2"
    refused = drillkit("model", "rollback", "--to", "v3", "--store", str(store.root), home=tmp_path)
    assert refused.returncode == 1
    assert "v3" in refused.stderr and "SHA-256 mismatch" in refused.stderr


def test_scenario_names_prefer_the_projects_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from drillkit.cli.drill import SCENARIOS_DIR, resolve_scenario

    monkeypatch.chdir(tmp_path)
    assert resolve_scenario(Path("kill-node")) == SCENARIOS_DIR / "kill-node.yaml"
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "kill-node.yaml").write_text("version: 1\n")
    assert resolve_scenario(Path("kill-node")) == Path("scenarios/kill-node.yaml")
    assert resolve_scenario(Path("nope")) == Path("nope")


def test_with_several_stacks_up_commands_name_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from drillkit.backends.base import save_state
    from drillkit.backends.local import LocalService
    from tests.unit.test_heal import local_state

    home = tmp_path / "home"
    monkeypatch.setenv("DRILLKIT_HOME", str(home))
    ids = ["20260101-000000-aaaaaa", "20260101-000001-bbbbbb"]
    for stack_id in ids:
        gateway = LocalService(name="gateway", role="gateway", ports={"http": 1})
        save_state(local_state(gateway, stack_id=stack_id))
    listed = drillkit("stack", "status", "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    assert [s["stack"] for s in json.loads(listed.stdout)["stacks"]] == ids
    plain = drillkit("stack", "status", home=home)
    assert "2 stacks are up" in plain.stdout and all(i in plain.stdout for i in ids)
    for command in (["status"], ["fault", "inject", "kill_node", "--target", "replica-1"]):
        ambiguous = drillkit(*command, home=home)
        assert ambiguous.returncode == 2, ambiguous.stderr
        assert "2 stacks are up" in ambiguous.stderr and "--stack ID" in ambiguous.stderr
        assert "Traceback" not in ambiguous.stderr
    bad = drillkit("heal", "--stack", "../x", home=home)
    assert bad.returncode == 2 and "is not a stack id" in bad.stderr
    one = drillkit("stack", "down", "--stack", ids[0], home=home)
    assert one.returncode == 0, one.stderr
    from drillkit.backends.base import state_path

    assert not state_path(ids[0]).exists() and state_path(ids[1]).exists()  # only the one named


def test_heal_reports_what_it_set_aside_and_exits_1(tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = home / "state" / "stacks" / "20260101-000000-aaaaaa"
    folder.mkdir(parents=True)
    for path in (home, home / "state", home / "state" / "stacks", folder):
        path.chmod(0o700)
    (folder / "journal.jsonl").write_text('{"op": "apply", "undo": 1e999}\n{"op": "x"}\n')
    proc = drillkit("heal", home=home)
    assert proc.returncode == 1, proc.stderr
    assert "journal line 1 set aside" in proc.stdout and "Traceback" not in proc.stderr


def test_list_names_and_describes_scenarios_and_gives_param_units(tmp_path: Path) -> None:
    as_json = drillkit("list", "--json", home=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    by_name = {s["name"]: s for s in data["scenarios"]}
    assert "kill-node" in by_name and by_name["kill-node"]["description"].startswith("SIGKILL")
    assert all(s["description"] and s["path"].endswith(".yaml") for s in data["scenarios"])
    latency = data["faults"]["latency"]["params"]
    assert latency["delay"]["unit"] == "s" and latency["jitter"]["unit"] == "s"
    assert data["faults"]["load_spike"]["params"]["rate"]["unit"] == "req/s"

    text = drillkit("list", home=tmp_path)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert "kill-node" in out and "SIGKILL one replica under load" in out
    assert "/scenarios/" not in out  # names, not absolute paths
    assert "delay=200ms" in out and "rate (required, req/s)" in out
