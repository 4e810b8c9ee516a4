from __future__ import annotations

import json
from pathlib import Path

import pytest

from drillkit.errors import InputError
from drillkit.reports.compare import Thresholds, compare_files, compare_reports
from drillkit.reports.jsonfile import write_report
from drillkit.reports.model import DrillReport
from tests.unit.reports.test_model import sample_report


def _with_fault(report: DrillReport, **changes: object) -> DrillReport:
    fault = report.faults[0].model_copy(update=changes)
    return report.model_copy(update={"faults": [fault]})


def _verdicts(a: DrillReport, b: DrillReport) -> dict[str, str]:
    return {c.what: c.verdict for c in compare_reports(a, b, Thresholds()).changes}


def test_equal_reports_have_no_regressions() -> None:
    result = compare_reports(sample_report(), sample_report(), Thresholds())
    assert result.regressions == []
    assert {c.verdict for c in result.changes} == {"same"}


@pytest.mark.parametrize(
    ("field", "before", "after", "verdict"),
    [
        ("rto_s", 2.0, 2.5, "regression"),  # +25%
        ("rto_s", 2.0, 2.3, "same"),  # +15%: within 20%
        ("ttd_s", 0.3, 0.5, "regression"),  # +67% and +0.2 s
        ("ttd_s", 0.10, 0.15, "same"),  # +50% but under the 0.1 s resolution
        ("rto_s", 2.0, None, "regression"),  # never recovers now
        ("rto_s", None, 2.0, "improvement"),
        ("rto_s", 3.0, 2.0, "improvement"),
    ],
    ids=["rto-25pct", "rto-15pct", "ttd-worse", "ttd-noise", "rto-never", "rto-now", "rto-better"],
)
def test_timing_changes(
    field: str, before: float | None, after: float | None, verdict: str
) -> None:
    a = _with_fault(sample_report(), **{field: before})
    b = _with_fault(sample_report(), **{field: after})
    assert _verdicts(a, b)[f"fault kill-1 {field[:3]}"] == verdict


def test_newly_failing_check_and_quality_drop_are_regressions() -> None:
    a, b = sample_report(), sample_report()
    passed = next(c for c in a.checks if c.passed)
    b = b.model_copy(
        update={
            "checks": [
                c.model_copy(update={"passed": False}) if c.name == passed.name else c
                for c in b.checks
            ]
        }
    )
    phases_a = [p.model_copy(update={"quality": 0.95}) for p in a.phases]
    phases_b = [
        p.model_copy(update={"quality": 0.90 if p.name == "baseline" else 0.95}) for p in b.phases
    ]
    result = compare_reports(
        a.model_copy(update={"phases": phases_a}),
        b.model_copy(update={"phases": phases_b}),
        Thresholds(),
    )
    regressed = {c.what for c in result.regressions}
    assert regressed == {f"check {passed.name}", "phase baseline quality"}


def test_a_drill_that_stops_passing_regresses() -> None:
    verdicts = _verdicts(sample_report(status="passed"), sample_report(status="failed"))
    assert verdicts["status"] == "regression"


def test_files_of_other_scenarios_or_schemas_are_refused(tmp_path: Path) -> None:
    a = write_report(sample_report(), tmp_path / "a.json")
    other = write_report(sample_report(name="pause-node"), tmp_path / "b.json")
    with pytest.raises(InputError, match="scenario 'pause-node' is not"):
        compare_files(a, other, Thresholds())
    data = json.loads(a.read_text())
    data["schema_version"] = 2
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps(data))
    with pytest.raises(InputError, match="different schema versions"):
        compare_files(a, v2, Thresholds())
