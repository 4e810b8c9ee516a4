"""Data that must survive, on real stacks: click events into the event store, its backups,
and what a crash, a wipe, a torn file or a lost model store cost, counted independently of
drillkit's own census.

The drills use short timelines and a backup every few seconds; the bundled scenarios run the
same faults at the pace of a real backup schedule (``drillkit run event-store-wipe``).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from junitparser import JUnitXml

from drillkit.observe.records import EventRecord
from tests.redis_server import redis_server

from .conftest import Cli, leftovers
from .test_drills import scenario

pytestmark = pytest.mark.zones  # redis-server: the event store is Debian's Redis

LOAD = {"rate": 60, "users": 12, "duration": "20s", "warmup": "2s", "timeout": "2s"}
EVENTS = {"enabled": True, "share": "30%", "backup_interval": "3s", "backup_dir": "backups"}


def fault(
    fault_id: str, target: str, at: str, params: dict[str, Any], **expect: Any
) -> dict[str, Any]:
    return {
        "id": fault_id,
        "kind": "data_loss",
        "target": target,
        "at": at,
        "duration": "1s",
        "params": params,
        "expect": expect,
    }


def drill(
    cli: Cli,
    tmp_path: Path,
    faults: list[dict[str, Any]],
    *,
    backend: str = "local",
    events: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any], Path]:
    (tmp_path / "backups").mkdir(exist_ok=True)
    path = scenario(
        tmp_path,
        "data-loss",
        faults,
        stack={"backend": backend, "replicas": 2, "events": {**EVENTS, **(events or {})}},
        load=LOAD,
        report={"formats": ["json", "junit"]},
        monitoring={"enabled": "off"},
    )
    records = tmp_path / "records.jsonl.gz"
    report = tmp_path / "r.json"
    proc = cli(
        "run", str(path), "--ci", "--json", str(report), "--records", str(records),
        "--junit", str(tmp_path / "r.xml"), timeout=400,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert report.exists(), proc.stderr[-2000:]
    return proc.returncode, json.loads(report.read_text()), records


def sent_events(records: Path) -> list[EventRecord]:
    lines = gzip.decompress(records.read_bytes()).decode().splitlines()
    return [EventRecord.from_wire(line) for line in lines if line.startswith("E[")]


def stored_in_backup(backup_dir: Path) -> set[tuple[str, int]]:
    """The events of the newest events backup (the one the backup service took as the stack
    stopped), read by restoring it into a throwaway redis-server: apart from drillkit's own
    census, which reads the live store."""
    import redis

    newest = sorted((backup_dir / "events").iterdir())[-1]
    payload = (newest / "stream.dump").read_bytes()
    with redis_server("--appendonly", "no") as (port, _):
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        try:
            client.restore("s", 0, payload)
            found: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange("s")  # type: ignore[assignment]
            return {(fields[b"p"].decode(), int(fields[b"s"])) for _, fields in found}
        finally:
            client.close()


def checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_a_wipe_loses_what_came_after_the_backup_and_the_count_is_exact(
    cli: Cli, tmp_path: Path
) -> None:
    code, report, records = drill(
        cli,
        tmp_path,
        [fault("wipe-1", "event-store", "10s", {"mode": "wipe"}, rpo_within="4s", rto_within="5s")],
    )
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    assert code == 0 and report["status"] == "passed", failed
    data = report["faults"][0]["data"]
    # The generator's own records against the store as it was when the stack stopped.
    sent = sent_events(records)
    acked = {(e.producer, e.seq) for e in sent if e.acked}
    lost = acked - stored_in_backup(tmp_path / "backups")
    assert report["events"]["lost"] == len(lost) == data["events_lost"]
    assert report["events"]["sent"] == len(sent)
    # Restored from a backup at most one interval (3 s) old: the RPO is bounded by it. The
    # backups keep their own schedule, so one may have run in the instant between the fault's
    # timestamp and the wipe (a slightly negative age): then nothing acknowledged is lost.
    assert data["restored_from"] and -0.5 < data["backup_age_s"] <= 3.5
    assert data["rpo_s"] <= max(0.0, data["backup_age_s"]) + 0.2
    if data["backup_age_s"] > 0.5:  # events (about 18/s) were acknowledged after it: lost
        assert data["events_lost"] > 0 and data["rpo_s"] > 0, data
    assert data["rto_s"] is not None and data["rto_s"] < 5
    # The fault was detected by the stack (a restore, the feature updater), not guessed.
    assert report["faults"][0]["detected_by"]
    cases = {case.name for suite in JUnitXml.fromfile(str(tmp_path / "r.xml")) for case in suite}
    assert {"wipe-1.rpo_within", "wipe-1.rto_within"} <= cases
    assert not leftovers(cli)


def test_a_broken_backup_job_makes_the_wipe_fail_its_recovery_point(
    cli: Cli, tmp_path: Path
) -> None:
    broken = {"id": "no-backups", "kind": "backup_failure", "target": "backup", "at": "0s"}
    wipe = fault("wipe-1", "event-store", "12s", {"mode": "wipe"}, rpo_within="4s")
    code, report, _ = drill(cli, tmp_path, [broken, wipe])
    assert code == 1 and report["status"] == "failed"
    rpo = checks(report)["wipe-1.rpo_within"]
    assert not rpo["passed"] and rpo["actual"] > 10
    assert report["events"]["backup_failures"] >= 3
    assert not leftovers(cli)


def test_a_crash_loses_nothing_acknowledged_and_a_torn_file_loses_its_tail(
    cli: Cli, tmp_path: Path
) -> None:
    crash = fault(
        "crash-1", "event-store", "5s", {"mode": "crash"}, max_events_lost=0, rto_within="5s"
    )
    torn = fault("torn-1", "event-store", "12s", {"mode": "corrupt", "cut_bytes": 4096})
    code, report, _ = drill(cli, tmp_path, [crash, torn], events={"appendfsync": "everysec"})
    by_id = {f["id"]: f["data"] for f in report["faults"]}
    assert by_id["crash-1"]["events_lost"] == 0, by_id
    assert by_id["crash-1"]["writes_failed"] > 0 and by_id["crash-1"]["rto_s"] < 5
    assert by_id["torn-1"]["events_lost"] > 0
    assert by_id["torn-1"]["rpo_s"] > 0
    assert code == 0, [c["name"] for c in report["checks"] if not c["passed"]]
    assert not leftovers(cli)


def test_a_lost_model_store_is_restored_while_replicas_serve(cli: Cli, tmp_path: Path) -> None:
    lost = fault(
        "store-lost", "model-store", "5s", {"mode": "wipe"},
        rto_within="3s", max_failed_requests=0, max_wrong_model_responses=0,
    )  # fmt: skip
    code, report, _ = drill(cli, tmp_path, [lost])
    data = report["faults"][0]["data"]
    assert code == 0, [c["name"] for c in report["checks"] if not c["passed"]]
    assert data["restored_from"] and data["rto_s"] < 3
    assert report["faults"][0]["failed_requests"] == 0
    assert not leftovers(cli)


@pytest.mark.docker
def test_the_data_faults_on_docker(cli: Cli, tmp_path: Path, stack_image: str) -> None:
    from .test_docker import docker_leftovers

    faults = [
        fault("crash-1", "event-store", "4s", {"mode": "crash"}, max_events_lost=0),
        fault("wipe-1", "event-store", "10s", {"mode": "wipe"}, rpo_within="4s", rto_within="5s"),
        fault("store-lost", "model-store", "15s", {"mode": "wipe"}, rto_within="3s"),
    ]
    code, report, records = drill(cli, tmp_path, faults, backend="docker")
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    assert report["backend"] == "docker"
    assert code == 0 and report["status"] == "passed", failed
    acked = {(e.producer, e.seq) for e in sent_events(records) if e.acked}
    lost = acked - stored_in_backup(tmp_path / "backups")
    assert report["events"]["lost"] == len(lost) > 0
    assert not docker_leftovers(cli)
