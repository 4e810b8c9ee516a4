from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from drillkit.reports import write_junit
from drillkit.reports.junit import check_line, junit_xml
from drillkit.reports.model import Status
from tests.unit.reports.test_model import sample_report


def _cases(suite: ET.Element) -> dict[str, ET.Element]:
    return {c.get("name", ""): c for c in suite.findall("testcase")}


def test_a_passing_drill_with_a_missed_check_is_green(tmp_path: Path) -> None:
    # The sample drill passes (88.23 >= 80) although kill-1.max_failed_requests missed: the
    # job is green, so the JUnit must not count a failure (it said failures="1" before).
    report = sample_report(name="kill-node")
    assert report.status == "passed" and report.exit_code == 0
    root = ET.parse(write_junit([report], tmp_path / "junit" / "drills.xml")).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == (
        str(len(report.checks) + 1), "0", "0",
    )  # fmt: skip
    (suite,) = root.findall("testsuite")
    assert suite.get("failures") == "0" and suite.findall("testcase/failure") == []
    assert suite.get("time") == "70.000" and suite.get("hostname")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props == {
        "score": "88.23", "pass_score": "80", "status": "passed", "exit_code": "0",
        "backend": "local",
    }  # fmt: skip
    cases = _cases(suite)
    verdict = cases["verdict"]
    assert verdict.get("time") == "70.000"
    assert "passed: score 88.23 >= pass score 80" in (verdict.findtext("system-out") or "")
    missed = cases["kill-1.max_failed_requests"]
    out = missed.findtext("system-out") or ""
    assert out.startswith("missed: kill-1.max_failed_requests 200, expected <= 0")
    assert "200 of 1500 requests" in out
    assert (cases["baseline.p99_ms"].findtext("system-out") or "").startswith("passed: ")


def test_one_classname_scheme_scenario_then_phase() -> None:
    (suite,) = ET.fromstring(junit_xml([sample_report(name="kill-node")])).findall("testsuite")
    cases = _cases(suite)
    assert cases["verdict"].get("classname") == "drillkit.kill-node.drill"
    assert cases["baseline.p99_ms"].get("classname") == "drillkit.kill-node.baseline"
    assert cases["kill-1.healed"].get("classname") == "drillkit.kill-node.fault:kill-1"
    assert cases["load.generator"].get("classname") == "drillkit.kill-node.drill"
    assert {c.get("classname", "").split(".")[1] for c in cases.values()} == {"kill-node"}


def test_a_failed_drill_fails_its_verdict_and_its_missed_checks() -> None:
    report = sample_report(status="failed", name="kill-node")
    report.pass_score = 95.0
    root = ET.fromstring(junit_xml([report]))
    (suite,) = root.findall("testsuite")
    missed = [c for c in report.checks if not c.passed]
    assert suite.get("failures") == str(1 + len(missed)) == root.get("failures")
    cases = _cases(suite)
    failure = cases["verdict"].find("failure")
    assert failure is not None and failure.get("type") == "failed"
    assert failure.get("message") == "score 88.23 < pass score 95"
    assert "kill-1.max_failed_requests 200, expected <= 0" in (failure.text or "")
    check = cases["kill-1.max_failed_requests"].find("failure")
    assert check is not None
    # What the terminal prints, forwards and with units: not "actual 200, target 0".
    assert check.get("message") == "kill-1.max_failed_requests 200, expected <= 0"


def test_check_messages_read_like_the_terminal_with_units() -> None:
    report = sample_report()
    ttd = next(c for c in report.checks if c.name.endswith("detect_within"))
    ttd.actual, ttd.target, ttd.passed = 0.33735, 0.001, False
    assert check_line(ttd) == f"{ttd.name} 0.34 s, expected <= 0.001 s"
    p99 = next(c for c in report.checks if c.name.endswith("p99_ms"))
    assert check_line(p99).endswith(" ms, expected <= " + f"{p99.target:.1f} ms")


def test_errored_and_interrupted_drills_are_errors_not_failures() -> None:
    root = ET.fromstring(
        junit_xml(
            [
                sample_report(status="error", error="stack never became ready", name="a"),
                sample_report(status="interrupted", name="b"),
            ]
        )
    )
    assert (root.get("failures"), root.get("errors")) == ("0", "2")
    first, second = root.findall("testsuite")
    (error,) = first.findall("testcase/error")
    assert error.get("message") == "stack never became ready" and error.get("type") == "error"
    assert {p.get("name"): p.get("value") for p in first.iter("property")}["exit_code"] == "3"
    (error,) = second.findall("testcase/error")
    assert error.get("message") == "the drill ended: interrupted"
    empty = ET.fromstring(junit_xml([]))
    assert (empty.get("tests"), empty.findall("testsuite")) == ("0", [])


@pytest.mark.parametrize("status", ["passed", "failed", "error", "interrupted"])
def test_failures_or_errors_exactly_when_the_exit_code_is_not_zero(status: Status) -> None:
    report = sample_report(status=status)
    (suite,) = ET.fromstring(junit_xml([report])).findall("testsuite")
    red = int(suite.get("failures", "0")) + int(suite.get("errors", "0"))
    assert (red > 0) == (report.exit_code != 0)


def test_the_file_validates_against_the_jenkins_junit_schema(tmp_path: Path) -> None:
    # The attributes and children Jenkins' xunit schema allows, in the order it allows them.
    report = sample_report(status="failed")
    root = ET.fromstring(junit_xml([report], hostname="ci-runner-7"))
    allowed_suite = {
        "name", "tests", "failures", "errors", "skipped", "time", "timestamp", "hostname",
    }  # fmt: skip
    for suite in root.findall("testsuite"):
        assert set(suite.attrib) <= allowed_suite and suite.get("hostname") == "ci-runner-7"
        assert next(c.tag for c in suite) == "properties"
        for case in suite.findall("testcase"):
            assert set(case.attrib) == {"classname", "name", "time"}
            tags = [c.tag for c in case]
            assert tags == sorted(tags, key=["failure", "error", "system-out"].index)


def test_markup_like_names_are_escaped(tmp_path: Path) -> None:
    report = sample_report(name='a<b>&"c"')
    path = write_junit([report], tmp_path / "j.xml")
    assert ET.parse(path).getroot().find("testsuite").get("name") == 'a<b>&"c"'  # type: ignore[union-attr]


def test_control_characters_still_make_xml_that_parses(tmp_path: Path) -> None:
    hostile = "evil\x1b[2J\x00\x07\x0b\ufffe and on"
    report = sample_report(status="error", error=hostile, name="kill-node")
    report.checks[0].detail = hostile
    path = write_junit([report], tmp_path / "drills.xml")
    root = ET.parse(path).getroot()  # would raise on a raw control character
    error = root.find("testsuite/testcase/error")
    assert error is not None
    assert error.get("message") == "evil\\x1b[2J\\x00\\x07\\x0b\\ufffe and on"


@pytest.mark.parametrize("status", ["passed", "failed", "error"])
def test_junitparser_reads_what_ci_shows(tmp_path: Path, status: Status) -> None:
    # junitparser reads files the way CI test-report actions do: its totals are what a job
    # page shows, and they must agree with the exit code.
    from junitparser import JUnitXml

    report = sample_report(status=status)
    if status == "failed":
        report.pass_score = 95.0
    parsed = JUnitXml.fromfile(str(write_junit([report], tmp_path / "r.xml")))
    (suite,) = list(parsed)
    assert suite.tests == len(report.checks) + 1
    red = suite.failures + suite.errors
    assert (red > 0) == (report.exit_code != 0)
    verdict = next(case for case in suite if case.name == "verdict")
    assert verdict.is_passed == (status == "passed")
    assert verdict.time == pytest.approx(70.0)
