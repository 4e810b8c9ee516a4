"""``drillkit run`` around the drill: what it prints and exits with when writing the reports
fails (the drill itself is a canned result here; the real ones run in tests/integration)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from drillkit import engine
from drillkit.cli import app
from drillkit.scenario import load_scenario
from tests.unit.scoring.test_analyze import FULL_EXPECT, drill, kill

SCENARIO = Path(__file__).resolve().parents[3] / "drillkit" / "scenarios" / "kill-node.yaml"


@pytest.fixture
def canned(monkeypatch: pytest.MonkeyPatch, drillkit_home: Path) -> None:
    """Every DrillRunner returns a passed drill at once."""

    def run(self: engine.DrillRunner) -> engine.DrillResult:
        return engine.DrillResult(
            scenario=load_scenario(SCENARIO),
            scenario_path=str(SCENARIO),
            scenario_sha256="ab" * 32,
            backend="local",
            status="passed",
            started_at="2026-12-03T07:00:00.000+00:00",
            finished_at="2026-12-03T07:01:10.000+00:00",
            gpu=False,
            analysis=drill(faults=[kill(**FULL_EXPECT)]),
            faults=[],
        )

    monkeypatch.setattr(engine.DrillRunner, "__init__", lambda self, *a, **k: None)
    monkeypatch.setattr(engine.DrillRunner, "run", run)


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, ["run", str(SCENARIO), *args])


def test_reports_that_cannot_be_written_are_exit_3_after_the_verdict(
    canned: None, tmp_path: Path
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    result = _run("--out", str(blocked / "reports"), "--ci")
    assert result.exit_code == 3, result.output
    out = result.stdout
    assert "drill kill-node" in out and "score" in out  # the verdict is printed all the same
    assert "cannot write reports to" in result.stderr and "Traceback" not in result.output


def test_a_drill_whose_reports_are_written_exits_with_its_verdict(
    canned: None, tmp_path: Path
) -> None:
    result = _run("--out", str(tmp_path / "reports"), "--ci")
    assert result.exit_code in (0, 1), result.output
    assert (tmp_path / "reports" / "last.json").is_file()


def test_junit_inside_the_report_folder_is_the_only_xml_there(canned: None, tmp_path: Path) -> None:
    # As both CI examples call it: `--out reports --junit reports/NAME.xml` must leave one
    # JUnit file in reports/, or a `reports/*.xml` glob counts every check twice.
    reports = tmp_path / "reports"
    result = _run("--out", str(reports), "--ci", "--junit", str(reports / "kill-node.xml"))
    assert result.exit_code in (0, 1), result.output
    assert [p.name for p in reports.glob("*.xml")] == ["kill-node.xml"]


def test_junit_elsewhere_keeps_the_dated_copy_in_the_report_folder(
    canned: None, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    result = _run("--out", str(reports), "--ci", "--junit", str(tmp_path / "junit.xml"))
    assert result.exit_code in (0, 1), result.output
    assert len(list(reports.glob("kill-node-*.xml"))) == 1
    assert (tmp_path / "junit.xml").is_file()


def test_several_drills_with_junit_inside_the_folder_write_one_xml(
    canned: None, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    junit = str(reports / "all.xml")
    result = CliRunner().invoke(
        app,
        ["run", str(SCENARIO), str(SCENARIO), "--out", str(reports), "--ci", "--junit", junit],
    )
    assert result.exit_code in (0, 1), result.output
    assert [p.name for p in reports.glob("*.xml")] == ["all.xml"]
