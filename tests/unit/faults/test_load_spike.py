"""``load_spike``: the generator process, and the fault kind's apply / check / heal.

A fake replica stands in for the gateway (it speaks the same ``/recommend``); what is checked
is that traffic arrives while the fault is applied, stops when it is healed, and that the
generator never outlives its bounds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drillkit.errors import EnvironmentFailure
from drillkit.faults.base import load_fault_kind
from drillkit.faults.context import FaultContext
from drillkit.faults.load_spike import LoadSpike, _pids_tagged, _progress
from drillkit.faults.params import LoadSpikeParams
from drillkit.journal import Journal
from drillkit.stacks.plan import Endpoint, Port, StackPlan
from drillkit.testing import FakeBackend, fault_context, service_plan
from tests.unit.stacks.recommender.fake_replica import FakeReplica, free_port


def context(tmp_path: Path, gateway_port: int) -> FaultContext:
    """drillkit's fault context on a fake stack whose gateway is the fake server, with a
    real journal."""
    plan = StackPlan(
        preset="fake",
        services=(service_plan("gateway", role="gateway", ports=(Port(number=gateway_port),)),),
        entry=Endpoint(service="gateway"),
    )
    backend = FakeBackend()
    state = backend.start(plan)
    state.run_dir = str(tmp_path)
    return fault_context(backend, state, tmp_path / "state", fault_id="spike-1")


class _BadUrl(FaultContext):
    def service_url(self, name: str, port: str = "http") -> str:
        return "ftp://nowhere"


@pytest.fixture
def gateway() -> Iterator[FakeReplica]:
    server = FakeReplica("gateway")
    server.start()
    yield server
    server.stop()


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_it_is_a_registered_gateway_fault() -> None:
    kind = load_fault_kind("load_spike")
    assert isinstance(kind, LoadSpike)
    assert kind.target_roles == {"gateway", "service"}  # a Compose project's entry service too


def test_apply_sends_extra_traffic_until_healed(tmp_path: Path, gateway: FakeReplica) -> None:
    ctx = context(tmp_path, gateway.port)
    kind = LoadSpike()
    params = LoadSpikeParams(rate=200)
    record = kind.apply(ctx, "gateway", params)
    try:
        # The undo record was journaled before the process existed, and its pid added after.
        (entry,) = ctx.journal.pending()
        assert entry.undo["tag"] == record["tag"] and entry.undo["pid"] == record["pid"]
        evidence = kind.check_applied(ctx, "gateway", params, record)
        hits = gateway.recommend_hits
        assert f"pid {record['pid']}" in evidence and "200 extra requests/s" in evidence
        # What the generator counted, not what it was asked: answers the gateway really gave.
        counted = re.search(r"in its first ([\d.]+) s: (\d+) sent, (\d+) answered", evidence)
        assert counted is not None, evidence
        seconds, sent, answered = float(counted[1]), int(counted[2]), int(counted[3])
        assert 0 < answered <= sent and answered <= hits, (evidence, hits)
        assert answered >= 0.5 * 200 * seconds, evidence  # an open loop at 200/s, all answered
        wait_until(lambda: gateway.recommend_hits >= 50, 10.0, "the spike's requests")
    finally:
        kind.heal(ctx, record)
    assert not _pids_tagged(record["tag"])
    hits = gateway.recommend_hits
    time.sleep(0.3)
    assert gateway.recommend_hits == hits  # it stopped
    # On SIGTERM it wrote its totals.
    summary = json.loads(Path(record["log"]).read_text().strip().splitlines()[-1])
    assert summary["sent"] >= 50 and summary["answered"] >= 50 and summary["rate"] == 200
    kind.heal(ctx, record)  # idempotent


def test_heal_needs_only_the_journal_record(tmp_path: Path, gateway: FakeReplica) -> None:
    ctx = context(tmp_path, gateway.port)
    record = LoadSpike().apply(ctx, "gateway", LoadSpikeParams(rate=50))
    wait_until(lambda: bool(_pids_tagged(record["tag"])), 5.0, "the generator to start")
    # `drillkit heal` after a crash: a new process, the record as the journal kept it.
    (entry,) = Journal(tmp_path / "state", ctx.state.id).pending()
    fresh = context(tmp_path, gateway.port)
    LoadSpike().heal(fresh, json.loads(json.dumps(entry.undo)))
    assert not _pids_tagged(record["tag"])


def test_a_generator_that_cannot_start_is_reported(tmp_path: Path) -> None:
    good = context(tmp_path, free_port())
    ctx = _BadUrl(good.backend, good.state, good.journal, fault_id="spike-1")
    kind = LoadSpike()
    params = LoadSpikeParams(rate=10)
    record = kind.apply(ctx, "gateway", params)
    with pytest.raises(EnvironmentFailure, match="exited at once.*--url must be http"):
        kind.check_applied(ctx, "gateway", params, record)
    kind.heal(ctx, record)


def test_only_the_generators_own_lines_are_read_as_progress(tmp_path: Path) -> None:
    log = tmp_path / "spike.log"
    good = {"sent": 9, "answered": 8, "degraded": 1, "errors": 1, "seconds": 0.5}
    lines = [
        "[" * 100_000,  # only the log's end is read; this is beyond it
        json.dumps(good),
        json.dumps({**good, "sent": -1}),
        json.dumps({**good, "answered": "8"}),
        json.dumps({**good, "seconds": None}),
        "[" * 1_000,
        "Traceback (most recent call last):",
    ]
    log.write_text("\n".join(lines) + "\n")
    assert _progress(log) == good
    assert _progress(tmp_path / "missing.log") is None
    log.write_text("not json\n")
    assert _progress(log) is None


def spike(*args: str, timeout: float = 30.0) -> tuple[dict[str, Any], float, str]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "drillkit.load.spike", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), time.monotonic() - started, proc.stderr


def test_the_generator_gives_up_when_the_target_refuses_connections() -> None:
    port = free_port()  # nothing listens there
    totals, elapsed, stderr = spike(
        "--url", f"http://127.0.0.1:{port}", "--rate", "50", "--give-up", "0.5"
    )
    assert totals["answered"] == 0 and totals["errors"] > 0
    assert "refused connections" in stderr
    assert elapsed < 10


def test_in_flight_requests_are_bounded_not_queued(gateway: FakeReplica) -> None:
    gateway.mode = "slow"
    gateway.slow_seconds = 0.5
    totals, _, _ = spike(
        "--url", gateway.url, "--rate", "100", "--connections", "3", "--max-seconds", "1"
    )
    # At most 3 at a time against 0.5 s answers: the rest of the 100 due were not sent.
    assert totals["sent"] <= 3 * 3 and totals["skipped"] >= 80, totals
    assert totals["sent"] + totals["skipped"] >= 95
