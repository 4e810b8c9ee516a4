"""JUnit XML, so that CI systems show each drill as a test suite and each check as a test.

Layout (one file for all drills of a run)::

    <testsuites name="drillkit" tests=.. failures=.. errors=..>
      <testsuite name="<scenario>" tests=.. failures=.. errors=.. skipped="0" time=.. timestamp=..>
        <properties> score, pass_score, status, backend </properties>
        <testcase classname="drillkit.<scenario>.<phase>" name="<check>" time="0">
          <failure message="actual X, target Y" type="check">...</failure>   (failed checks)
        </testcase>
        <testcase classname="drillkit.<scenario>" name="drill" time="..">
          <error message="..." type="error|interrupted"/>    (only for such drills)
        </testcase>
      </testsuite>
    </testsuites>
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from drillkit.reports.format import format_score
from drillkit.reports.jsonfile import REPORT_MODE, atomic_write
from drillkit.reports.model import CheckReport, DrillReport
from drillkit.text import xml_safe

__all__ = ["junit_xml", "write_junit"]


def _number(value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:g}"


def _failure_text(check: CheckReport) -> str:
    lines = [
        f"check {check.name} ({check.phase}) failed: "
        f"actual {_number(check.actual)} {check.op or 'vs'} target {_number(check.target)}",
        f"weight {check.weight:g}, credit {check.earned:g}"
        + (", critical: fails the drill" if check.critical else ""),
    ]
    if check.detail:
        lines.append(check.detail)
    return "\n".join(lines)


def _suite(report: DrillReport) -> ET.Element:
    name = report.scenario.name
    failed = [c for c in report.checks if not c.passed]
    errored = report.status in ("error", "interrupted")
    seconds = max(0.0, (report.finished_at - report.started_at).total_seconds())
    suite = ET.Element(
        "testsuite",
        {
            "name": name,
            "tests": str(len(report.checks) + (1 if errored else 0)),
            "failures": str(len(failed)),
            "errors": "1" if errored else "0",
            "skipped": "0",
            "time": f"{seconds:.3f}",
            "timestamp": report.started_at.isoformat(),
        },
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in (
        ("score", format_score(report.score)),
        ("pass_score", f"{report.pass_score:g}"),
        ("status", report.status),
        ("backend", report.backend),
    ):
        ET.SubElement(properties, "property", {"name": key, "value": value})
    for check in report.checks:
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"drillkit.{name}.{check.phase}", "name": check.name, "time": "0"},
        )
        if not check.passed:
            failure = ET.SubElement(
                case,
                "failure",
                {
                    "message": f"actual {_number(check.actual)}, target {_number(check.target)}",
                    "type": "critical" if check.critical else "check",
                },
            )
            failure.text = _failure_text(check)
    if errored:
        case = ET.SubElement(
            suite, "testcase", {"classname": f"drillkit.{name}", "name": "drill", "time": "0"}
        )
        error = ET.SubElement(
            case,
            "error",
            {"message": report.error or f"the drill ended: {report.status}", "type": report.status},
        )
        error.text = f"status {report.status}; the checks above cover the part that ran"
    return suite


def junit_xml(reports: Sequence[DrillReport]) -> bytes:
    """The JUnit XML document of ``reports``, one test suite per drill."""
    suites = [_suite(report) for report in reports]
    root = ET.Element(
        "testsuites",
        {
            "name": "drillkit",
            "tests": str(sum(int(s.get("tests", "0")) for s in suites)),
            "failures": str(sum(int(s.get("failures", "0")) for s in suites)),
            "errors": str(sum(int(s.get("errors", "0")) for s in suites)),
        },
    )
    root.extend(suites)
    # Messages carry text from outside (evidence, errors, a report read back): a control
    # character would make the whole file unparseable for the CI that reads it.
    for element in root.iter():
        element.attrib = {key: xml_safe(value) for key, value in element.attrib.items()}
        if element.text:
            element.text = xml_safe(element.text)
    ET.indent(root)
    document: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return document + b"\n"


def write_junit(reports: Sequence[DrillReport], path: str | os.PathLike[str]) -> Path:
    """Write the JUnit XML of ``reports`` to ``path`` atomically; returns the path."""
    return atomic_write(path, junit_xml(reports), mode=REPORT_MODE)
