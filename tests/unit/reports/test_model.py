from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drillkit.errors import InputError
from drillkit.reports import DrillReport, Environment, ScenarioRef, read_report, write_report
from drillkit.reports.format import format_score
from drillkit.reports.model import Status
from tests.unit.scoring.test_analyze import FULL_EXPECT, drill, kill

STARTED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
FINISHED = datetime(2024, 5, 1, 12, 1, 10, tzinfo=UTC)


def sample_report(
    status: Status | None = None, error: str | None = None, name: str = "kill-node"
) -> DrillReport:
    """The reference drill of the scoring tests: kill-1 with one failed expectation."""
    analysis = drill(faults=[kill(**FULL_EXPECT)])
    return DrillReport.from_analysis(
        analysis,
        scenario=ScenarioRef(name=name, path=f"scenarios/{name}.yaml", sha256="ab" * 32),
        backend="local",
        environment=Environment(gpu=False, python="3.11.7", host_cpus=2),
        started_at=STARTED,
        finished_at=FINISHED,
        status=status,
        error=error,
    )


CONTRACT_KEYS = {
    "schema_version", "drillkit_version", "scenario", "backend", "environment", "status",
    "started_at", "finished_at", "score", "pass_score", "load", "phases", "faults", "checks",
    "series",
}  # fmt: skip


def test_report_from_analysis() -> None:
    report = sample_report()
    assert report.schema_version == 1
    assert report.status == "passed" and report.exit_code == 0
    assert report.score == pytest.approx(100 * 15 / 17)
    assert report.load.requests == 6000 and report.load.achieved_rps == 100.0
    assert [p.name for p in report.phases] == ["baseline", "fault:kill-1", "after"]
    fault = report.faults[0]
    assert (fault.ttd_s, fault.rto_s, fault.failed_requests) == (0.3, 2.0, 200)
    assert fault.detected_by == "gateway: state up->ejected"
    failed = [c for c in report.checks if not c.passed]
    assert [(c.name, c.credit, c.op) for c in failed] == [("kill-1.max_failed_requests", 0.0, "<=")]
    assert len(report.series) == 600


def test_json_has_the_contract_shape() -> None:
    data = json.loads(sample_report().model_dump_json())
    assert set(data) - {"error", "notes"} == CONTRACT_KEYS  # extensions
    assert data["schema_version"] == 1
    assert data["started_at"].startswith("2024-05-01T12:00:00")
    assert set(data["scenario"]) == {"name", "path", "sha256"}
    assert set(data["environment"]) == {"gpu", "python", "host_cpus"}
    assert set(data["load"]) == {"target_rps", "achieved_rps", "requests", "generator_saturated"}
    assert set(data["phases"][0]) == {
        "name", "start", "end", "requests", "failed", "degraded", "wrong_model", "availability",
        "p50_ms", "p95_ms", "p99_ms", "rps", "quality",
    }  # fmt: skip
    assert data["phases"][0]["quality"] is None
    assert set(data["faults"][0]) == {
        "id", "kind", "target", "injected_at", "healed_at", "detected_at", "recovered_at",
        "ttd_s", "rto_s", "requests", "failed_requests", "degraded_responses",
        "wrong_model_responses", "p99_ms", "evidence", "detected_by", "slo_impact", "restored_at",
    }  # fmt: skip
    assert set(data["checks"][0]) == {
        "name", "phase", "target", "actual", "passed", "weight", "critical", "credit", "op",
        "detail",
    }  # fmt: skip
    # Without probes the series carries no quality at all, not nulls.
    assert set(data["series"][0]) == {"t", "rps", "failed", "degraded", "p50_ms", "p99_ms"}
    assert data["series"][200]["failed"] == 10


def test_series_quality_is_written_when_known() -> None:
    from drillkit.scoring import QualitySample

    analysis = drill(faults=[kill()], quality=[QualitySample(20.05, 0.5)])
    report = DrillReport.from_analysis(
        analysis,
        scenario=ScenarioRef(name="q", path="q.yaml", sha256=""),
        backend="local",
        environment=Environment.detect(gpu=False),
        started_at=STARTED,
        finished_at=FINISHED,
    )
    series = json.loads(report.model_dump_json())["series"]
    assert [s.get("quality") for s in series[199:202]] == [None, 0.5, None]
    assert "quality" in series[200] and "quality" not in series[199]
    assert report.environment.host_cpus >= 1


def test_write_and_read_round_trip(tmp_path: Path) -> None:
    report = sample_report()
    path = write_report(report, tmp_path / "out" / "report.json")
    assert path.read_text().endswith("}\n")
    assert read_report(path) == report
    # Replacing an existing report leaves no temporary file behind.
    write_report(sample_report(status="interrupted", error="SIGINT"), path)
    assert read_report(path).status == "interrupted"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]


def test_failed_write_keeps_the_old_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_report(sample_report(), tmp_path / "report.json")
    before = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_report(sample_report(status="error", error="boom"), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def _contract_example() -> dict[str, Any]:
    """The example of docs/report.md, with real values where it has placeholders."""
    return {
        "schema_version": 1,
        "drillkit_version": "0.1.0",
        "scenario": {"name": "kill-node", "path": "kill-node.yaml", "sha256": "00"},
        "backend": "local",
        "environment": {"gpu": False, "python": "3.11.7", "host_cpus": 2},
        "status": "passed",
        "started_at": "2024-05-01T12:00:00+00:00",
        "finished_at": "2024-05-01T12:01:00+00:00",
        "score": 93.5, "pass_score": 80,
        "load": {"target_rps": 100, "achieved_rps": 99.2, "requests": 5950,
                 "generator_saturated": False},
        "phases": [{"name": "baseline", "start": 0.0, "end": 20.0, "requests": 0, "failed": 0,
                    "degraded": 0, "wrong_model": 0, "availability": 1.0,
                    "p50_ms": 0, "p95_ms": 0, "p99_ms": 0, "rps": 0, "quality": 1.0}],
        "faults": [{"id": "kill-1", "kind": "kill_node", "target": "replica-1",
                    "injected_at": 20.0, "healed_at": 35.0, "detected_at": 20.3,
                    "recovered_at": 20.3, "ttd_s": 0.3, "rto_s": 0.3, "requests": 0,
                    "failed_requests": 0, "degraded_responses": 0,
                    "wrong_model_responses": 0, "p99_ms": 0}],
        "checks": [{"name": "kill-1.detect_within", "phase": "fault:kill-1", "target": 1.0,
                    "actual": 0.3, "passed": True, "weight": 1, "critical": False}],
        "series": [{"t": 0.0, "rps": 0, "failed": 0, "degraded": 0, "p50_ms": 0, "p99_ms": 0}],
    }  # fmt: skip


def test_contract_example_reads(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_contract_example()))
    report = read_report(path)
    assert report.checks[0].credit is None and report.checks[0].earned == 1.0
    assert report.faults[0].evidence == ""


def _with(**changes: Any) -> dict[str, Any]:
    data = _contract_example()
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(None, "no such report", id="missing"),
        pytest.param(b"{\n  oops", r"r.json:2: not valid JSON", id="invalid-json"),
        pytest.param(b"\xff\xfe", "not UTF-8", id="binary"),
        pytest.param(b"[1, 2]", "expected a JSON object, got list", id="not-an-object"),
        pytest.param(json.dumps({"a": 1}).encode(), "schema_version is missing", id="no-version"),
        pytest.param(
            json.dumps(_with(schema_version=2)).encode(),
            "schema version 2 is not supported; this drillkit reads version 1",
            id="version-2",
        ),
        pytest.param(
            json.dumps(_with(schema_version=True)).encode(), "version true", id="version-true"
        ),
        pytest.param(
            json.dumps(_with(status="green")).encode(), "status: Input should be", id="status"
        ),
        pytest.param(
            json.dumps(_with(checks=[{"name": "x"}])).encode(),
            r"checks\[0\]\.phase: Field required \(and \d+ more\)",
            id="missing-fields",
        ),
        pytest.param(
            json.dumps(_with(colour="red")).encode(), "colour: Extra inputs", id="unknown-key"
        ),
    ],
)
def test_read_errors_name_the_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "r.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message) as info:
        read_report(path)
    assert str(info.value).startswith(str(path))
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [("passed", 0), ("failed", 1), ("error", 3), ("interrupted", 130)],
)
def test_exit_codes(status: Status, code: int) -> None:
    assert sample_report(status=status).exit_code == code


@pytest.mark.parametrize(
    ("score", "shown"),
    [(79.996, "79.99"), (80.0, "80.00"), (0.29, "0.29"), (100.0, "100.00"), (88.2352, "88.23")],
)
def test_format_score_truncates(score: float, shown: str) -> None:
    assert format_score(score) == shown
