"""The reference stack as real local processes, driven through the real command line."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from drillkit.backends.local import owned
from drillkit.stacks.recommender.store import ModelStore

from .conftest import SMALL, Cli, saved_state_path


def wait_for(condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")


def up(cli: Cli, *args: str) -> dict[str, Any]:
    proc = cli("stack", "up", *SMALL, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    state: dict[str, Any] = json.loads(proc.stdout)
    return state


def processes(state: dict[str, Any]) -> list[tuple[int, int]]:
    return [(s["pid"], s["started"]) for s in state["services"].values()]


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_up_serve_status_down(cli: Cli) -> None:
    proc = cli("stack", "up", *SMALL, "--replicas", "3")
    assert proc.returncode == 0, proc.stderr
    url = proc.stdout.strip().splitlines()[-1]
    assert url.startswith("http://127.0.0.1:")

    response = httpx.get(f"{url}/recommend", params={"user_id": 1, "k": 10})
    assert response.status_code == 200
    body = response.json()
    assert len(body["items"]) == 10
    assert body["model_version"] == "v2" == response.headers["X-Model-Version"]
    assert len(response.headers["X-Model-Digest"]) == 64
    assert response.headers["X-Replica"].startswith("replica-")
    assert response.headers["X-Degraded"] == "false"

    status = cli.json("stack", "status")
    assert status["replicas"] == 3
    assert status["ready_replicas"] == 3
    assert {s["gateway_state"] for s in status["services"] if s["role"] == "replica"} == {"up"}
    stack_id = status["stack"]
    saved = json.loads(saved_state_path(cli).read_text())["services"]
    service_pids = [(s["pid"], s["started"]) for s in saved.values()]
    assert all(owned(pid, started, stack_id) for pid, started in service_pids)

    again = cli("stack", "up", *SMALL)
    assert again.returncode == 2
    assert "already up" in again.stderr
    assert "Traceback" not in again.stderr

    down = cli("stack", "down")
    assert down.returncode == 0, down.stderr
    assert not any(owned(pid, started, stack_id) for pid, started in service_pids)
    assert cli("stack", "status").returncode == 3


@pytest.mark.parametrize("replicas", ["0", "17"], ids=["zero", "too-many"])
def test_bad_replica_count_is_exit_2_with_one_line(cli: Cli, replicas: str) -> None:
    proc = cli("stack", "up", *SMALL, "--replicas", replicas)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "replicas" in proc.stderr


def test_bad_requests_and_cold_start(cli: Cli) -> None:
    state = up(cli, "--replicas", "1")
    urls = [state["gateway_url"], state["services"]["replica-1"]["url"]]
    bad: list[dict[str, str | int]] = [
        {},
        {"user_id": "abc"},
        {"user_id": 1, "k": 0},
        {"user_id": 1, "k": 5000},
        {"user_id": 1, "k": "x"},
    ]
    for url in urls:
        for params in bad:
            r = httpx.get(f"{url}/recommend", params=params)
            assert r.status_code in (400, 422), (url, params, r.status_code)
            assert "error" in r.json()
        cold = httpx.get(f"{url}/recommend", params={"user_id": 10**9, "k": 5}).json()
        assert cold["cold_start"] is True
        assert len(cold["items"]) == 5


def test_admin_reload_requires_the_token(cli: Cli) -> None:
    state = up(cli, "--replicas", "1")
    url = state["services"]["replica-1"]["url"]
    assert httpx.post(f"{url}/admin/reload").status_code == 401
    bad = httpx.post(f"{url}/admin/reload", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    saved = json.loads(saved_state_path(cli).read_text())
    token = saved["plan"]["secrets"]["admin-token"]
    assert state["plan"]["secrets"]["admin-token"] == "<hidden>"  # never printed
    ok = httpx.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200
    assert ok.json()["serving"] == "v2"
    # The token reaches the replica as a file of its own (0600), never through an
    # environment; the monitoring, which needs no secret, has no such file.
    for name, service in saved["services"].items():
        environ = Path(f"/proc/{service['pid']}/environ").read_bytes()
        assert token.encode() not in environ, name
        files = [v for v in environ.split(b"\0") if v.startswith(b"DRILLKIT_ADMIN_TOKEN_FILE=")]
        if service["role"] not in ("replica", "gateway"):
            assert files == [], name
        else:
            (entry,) = files
            path = Path(entry.split(b"=", 1)[1].decode())
            assert path.read_text() == token and path.stat().st_mode & 0o077 == 0


def test_flipped_byte_is_reported_and_never_served(cli: Cli, tmp_path: Path) -> None:
    cached = Path(cli.env["DRILLKIT_CACHE_DIR"]) / "artifacts"
    source = next(p for p in cached.iterdir() if p.is_dir() and not p.name.startswith("."))
    store_root = tmp_path / "store"
    shutil.copytree(source, store_root)
    store = ModelStore(store_root)
    bad_digest = store.verify("v2").digest
    flip_byte(store.version_dir("v2") / "weights.safetensors")

    verify = cli("model", "verify", "--store", str(store_root))
    assert verify.returncode == 1
    assert "weights.safetensors" in verify.stdout
    assert "v1" in verify.stdout

    state = up(cli, "--replicas", "2", "--store", str(store_root))
    digests = set()
    for user in range(60):
        r = httpx.get(f"{state['gateway_url']}/recommend", params={"user_id": user, "k": 10})
        assert r.status_code == 200
        assert r.json()["model_version"] == "v1"
        digests.add(r.headers["X-Model-Digest"])
    assert digests == {store.verify("v1").digest}
    assert bad_digest not in digests
    metrics = httpx.get(state["services"]["replica-1"]["url"] + "/metrics").text
    assert (
        'drillkit_replica_integrity_failures_total{reason="integrity",version="v2"} 1.0' in metrics
    )


def test_rollback_and_poisoned_rollout_hot_reload(cli: Cli) -> None:
    state = up(cli, "--replicas", "2")
    gateway = state["gateway_url"]
    store = ModelStore(Path(state["store"]))

    def versions_served() -> set[str]:
        return {
            httpx.get(f"{gateway}/recommend", params={"user_id": u, "k": 5}).json()["model_version"]
            for u in range(20)
        }

    assert versions_served() == {"v2"}
    rollback = cli("model", "rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert "origin: CURRENT v2 -> v1" in rollback.stdout
    assert "replica-2: CURRENT v2 -> v1" in rollback.stdout
    wait_for(lambda: versions_served() == {"v1"}, what="replicas to hot-reload v1")

    # A validly signed but broken release: weights replaced with NaN, manifest rebuilt.
    from safetensors.numpy import load_file, save_file

    def poisoned(folder: Path) -> list[str]:
        source = store.version_dir("v2")
        for name in os.listdir(source):
            if name != "manifest.json":
                shutil.copy(source / name, folder / name)
        weights = load_file(str(folder / "weights.safetensors"))
        save_file(
            {k: (v * float("nan")).astype(v.dtype) for k, v in weights.items()},
            str(folder / "weights.safetensors"),
        )
        return [n for n in os.listdir(folder) if n != "manifest.json"]

    manifest = store.verify("v2")
    for root in [state["store"], *state["stores"].values()]:  # published to every node
        node_store = ModelStore(Path(root))
        node_store.add_version(poisoned, metrics=manifest.metrics, info=manifest.info)
        assert node_store.current() == "v3"
    replica = state["services"]["replica-1"]["url"]
    wait_for(
        lambda: (
            'drillkit_replica_sanity_rejections_total{version="v3"} 1.0'
            in httpx.get(replica + "/metrics").text
        ),
        what="sanity gate to reject v3",
    )
    assert versions_served() == {"v1"}
    info = httpx.get(replica + "/info").json()
    assert info["last_event"]["outcome"] == "refused"
    assert info["serving"]["version"] == "v1"


def test_killed_replica_is_routed_around(cli: Cli) -> None:
    state = up(cli, "--replicas", "3")
    gateway = state["gateway_url"]
    victim = state["services"]["replica-2"]["pid"]
    os.killpg(victim, 9)
    failures = 0
    for user in range(100):
        r = httpx.get(f"{gateway}/recommend", params={"user_id": user, "k": 10})
        failures += r.status_code >= 500 or r.json()["degraded"]
        assert r.headers.get("X-Replica") != "replica-2"
    assert failures == 0

    def seen_down() -> bool:
        view = httpx.get(f"{gateway}/status").json()["replicas"]
        return any(r["name"] == "replica-2" and r["state"] != "up" for r in view)

    wait_for(seen_down, timeout=5, what="gateway to mark replica-2 down")
    status = cli.json("stack", "status")
    assert status["ready_replicas"] == 2
    down = cli("stack", "down")
    assert down.returncode == 0
    assert not any(owned(pid, started, state["id"]) for pid, started in processes(state))


def test_two_overlapping_corruptions_of_one_store_heal_to_a_clean_store(cli: Cli) -> None:
    # The second corruption's backup holds the first one's damage: undone oldest first, the
    # file would end with that damage. `heal` undoes newest first; the store verifies.
    up(cli, "--replicas", "2")
    for flips in ("8", "64"):
        inject = cli(
            "fault", "inject", "corrupt_model", "--target", "model-store",
            "-p", "mode=bitflip", "-p", f"flips={flips}",
        )  # fmt: skip
        assert inject.returncode == 0, inject.stderr
    assert cli("model", "verify").returncode != 0  # damaged twice over
    healed = cli("heal")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    verified = cli("model", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert cli("stack", "down").returncode == 0
