"""The on-call path on a live stack: status, fault inject, heal, model commands."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from .conftest import Cli, leftovers
from .test_local_stack import up, wait_for


def _status(cli: Cli) -> dict[str, Any]:
    proc = cli("status", "--json", "--interval", "0.5")
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def _replica(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in status["services"] if s["name"] == name)


def test_inject_status_heal(cli: Cli) -> None:
    state = up(cli, "--replicas", "3")
    gateway = state["gateway_url"]
    before = _status(cli)
    assert before["ready_replicas"] == 3 and before["open_faults"] == []
    assert {_replica(before, f"replica-{i}")["model_version"] for i in (1, 2, 3)} == {"v2"}

    inject = cli("fault", "inject", "kill_node", "--target", "replica-2")
    assert inject.returncode == 0, inject.stderr
    assert "replica-2" in inject.stdout and "is gone" in inject.stdout

    # Traffic while the replica is down: the rate and shares come from the gateway's counters.
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=2) as client:
            user = 0
            while not stop.is_set():
                client.get(f"{gateway}/recommend", params={"user_id": user, "k": 5})
                user += 1

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        wait_for(
            lambda: _replica(_status(cli), "replica-2")["gateway_state"] != "up",
            what="the gateway to see replica-2 down",
        )
        during = _status(cli)
    finally:
        stop.set()
        worker.join()
    victim = _replica(during, "replica-2")
    assert (victim["alive"], victim["ready"]) == (False, False)
    assert during["ready_replicas"] == 2
    assert during["rate"] is not None and during["rate"] > 0
    assert during["error_share"] == 0.0
    [fault] = during["open_faults"]
    assert (fault["kind"], fault["target"]) == ("kill_node", "replica-2")

    table = cli("status")
    assert table.returncode == 0, table.stderr
    assert "2/3 replicas ready" in table.stdout and "open faults" in table.stdout

    heal = cli("heal")
    assert heal.returncode == 0, heal.stderr
    assert "kill_node on replica-2" in heal.stdout and "healed" in heal.stdout
    after = _status(cli)
    assert after["ready_replicas"] == 3 and after["open_faults"] == []
    assert _replica(after, "replica-2")["gateway_state"] == "up"
    assert cli("heal").stdout.strip() == "nothing to heal"

    # The model commands act on the running stack's stores.
    verify = cli("model", "verify")
    assert verify.returncode == 0, verify.stderr
    watch = cli("status", "--watch", "--count", "2", "--interval", "0.3")
    assert watch.returncode == 0, watch.stderr
    assert watch.stdout.count("3/3 replicas ready") == 2

    assert cli("stack", "down").returncode == 0
    assert not leftovers(cli)


def test_inject_for_a_duration_heals_by_itself(cli: Cli) -> None:
    up(cli, "--replicas", "2")
    proc = cli("fault", "inject", "pause_node", "--target", "replica-1", "--duration", "1")
    assert proc.returncode == 0, proc.stderr
    assert "healed pause_node on replica-1" in proc.stdout
    status = _status(cli)
    assert status["open_faults"] == [] and status["ready_replicas"] == 2
