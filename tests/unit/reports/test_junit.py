from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from drillkit.reports import write_junit
from drillkit.reports.junit import junit_xml
from tests.unit.reports.test_model import sample_report


def test_one_suite_per_drill_one_case_per_check(tmp_path: Path) -> None:
    passed = sample_report(name="kill-node")
    broken = sample_report(status="error", error="stack never became ready", name="pause-node")
    path = write_junit([passed, broken], tmp_path / "junit" / "drills.xml")
    root = ET.parse(path).getroot()

    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["kill-node", "pause-node"]
    checks = len(passed.checks)
    failed = sum(not c.passed for c in passed.checks)
    assert failed == 1
    # Totals add up across suites; the errored drill has one extra "drill" case.
    assert root.get("tests") == str(2 * checks + 1)
    assert root.get("failures") == str(2 * failed)
    assert root.get("errors") == "1"

    first, second = suites
    assert (first.get("tests"), first.get("failures"), first.get("errors")) == (
        str(checks), "1", "0",
    )  # fmt: skip
    assert first.get("time") == "70.000"
    props = {p.get("name"): p.get("value") for p in first.iter("property")}
    assert props == {"score": "88.23", "pass_score": "80", "status": "passed", "backend": "local"}

    cases = first.findall("testcase")
    assert len(cases) == checks
    assert {c.get("time") for c in cases} == {"0"}
    by_name = {c.get("name"): c for c in cases}
    assert by_name["baseline.p99_ms"].get("classname") == "drillkit.kill-node.baseline"
    assert by_name["kill-1.healed"].get("classname") == "drillkit.kill-node.fault:kill-1"
    assert by_name["load.generator"].get("classname") == "drillkit.kill-node.drill"
    failures = first.findall("testcase/failure")
    assert len(failures) == 1
    assert failures[0].get("message") == "actual 200, target 0"
    assert "kill-1.max_failed_requests" in (failures[0].text or "")
    assert "200 of 1500 requests" in (failures[0].text or "")
    assert first.findall("testcase/error") == []

    (error,) = second.findall("testcase/error")
    assert error.get("message") == "stack never became ready"
    assert error.get("type") == "error"
    assert second.get("errors") == "1"
    assert {p.get("name"): p.get("value") for p in second.iter("property")}["status"] == "error"


def test_interrupted_without_message_and_empty_list() -> None:
    root = ET.fromstring(junit_xml([sample_report(status="interrupted")]))
    (error,) = root.findall("testsuite/testcase/error")
    assert error.get("message") == "the drill ended: interrupted"
    empty = ET.fromstring(junit_xml([]))
    assert (empty.get("tests"), empty.findall("testsuite")) == ("0", [])


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
