"""JUnit XML, so that CI systems show each drill as a test suite whose verdict agrees with the
exit code.

Layout (one file for all drills of a run)::

    <testsuites name="drillkit" tests=.. failures=.. errors=.. time=..>
      <testsuite name="<scenario>" tests=.. failures=.. errors=.. skipped="0" time=..
                 timestamp=.. hostname=..>
        <properties> score, pass_score, status, exit_code, backend </properties>
        <testcase classname="drillkit.<scenario>.drill" name="verdict" time="<drill seconds>">
          <failure type="failed" message="score 72.50 < pass score 80"/>   (a failed drill)
          <error type="error|interrupted" message="..."/>                   (a broken drill)
          <system-out> the score line and every missed check </system-out>
        </testcase>
        <testcase classname="drillkit.<scenario>.<phase>" name="<check>" time="0">
          <failure type="check|critical" message="ttd_within 0.34 s, expected <= 0.001 s"/>
          <system-out> the same line, weight and credit, and the evidence </system-out>
        </testcase>
      </testsuite>
    </testsuites>

The rule a CI reader can rely on: a suite has failures or errors exactly when the drill's exit
code is not 0. The verdict case fails exactly when the drill does. A check that missed in a
drill that still passed (the score stayed above the pass score, no critical check missed) is
not a failure, since the job is green: it says ``missed`` in its ``system-out``. In a failed
drill every missed check is a failure, so the report shows which ones cost the drill.
"""

from __future__ import annotations

import os
import socket
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from drillkit.reports.format import format_check_value, format_score
from drillkit.reports.jsonfile import REPORT_MODE, atomic_write
from drillkit.reports.model import CheckReport, DrillReport
from drillkit.text import xml_safe

__all__ = ["check_line", "junit_xml", "verdict_line", "write_junit"]


def check_line(check: CheckReport) -> str:
    """``ttd_within 0.34 s, expected <= 0.001 s``: what the terminal's checks table says."""
    target = f"{check.op or ''} {format_check_value(check, check.target)}".strip()
    return f"{check.name} {format_check_value(check, check.actual)}, expected {target}"


def verdict_line(report: DrillReport) -> str:
    """Why the drill has its status, in one line."""
    score = f"score {format_score(report.score)}"
    critical = [c.name for c in report.checks if c.critical and not c.passed]
    if report.status in ("error", "interrupted"):
        return report.error or f"the drill ended: {report.status}"
    if report.status == "passed":
        return f"{score} >= pass score {report.pass_score:g}"
    if critical:
        return f"{score}; critical check missed: {', '.join(critical)}"
    return f"{score} < pass score {report.pass_score:g}"


def _check_out(check: CheckReport) -> str:
    lines = [
        ("passed: " if check.passed else "missed: ") + check_line(check),
        f"phase {check.phase}; weight {check.weight:g}, credit {check.earned:g}"
        + (", critical: a miss fails the drill" if check.critical else ""),
    ]
    if check.detail:
        lines.append(check.detail)
    return "\n".join(lines)


def _suite(report: DrillReport, hostname: str) -> ET.Element:
    name = report.scenario.name
    failed_drill = report.status == "failed"
    errored = report.status in ("error", "interrupted")
    missed = [c for c in report.checks if not c.passed]
    failures = (1 + len(missed)) if failed_drill else 0
    seconds = max(0.0, (report.finished_at - report.started_at).total_seconds())
    suite = ET.Element(
        "testsuite",
        {
            "name": name,
            "tests": str(len(report.checks) + 1),
            "failures": str(failures),
            "errors": "1" if errored else "0",
            "skipped": "0",
            "time": f"{seconds:.3f}",
            "timestamp": report.started_at.isoformat(),
            "hostname": hostname,
        },
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in (
        ("score", format_score(report.score)),
        ("pass_score", f"{report.pass_score:g}"),
        ("status", report.status),
        ("exit_code", str(report.exit_code)),
        ("backend", report.backend),
    ):
        ET.SubElement(properties, "property", {"name": key, "value": value})

    verdict = ET.SubElement(
        suite,
        "testcase",
        {"classname": f"drillkit.{name}.drill", "name": "verdict", "time": f"{seconds:.3f}"},
    )
    if failed_drill:
        failure = ET.SubElement(
            verdict, "failure", {"message": verdict_line(report), "type": "failed"}
        )
        failure.text = "\n".join(["missed checks:"] + [f"  {check_line(c)}" for c in missed])
    elif errored:
        error = ET.SubElement(
            verdict, "error", {"message": verdict_line(report), "type": report.status}
        )
        error.text = f"status {report.status}; the checks cover the part of the drill that ran"
    out = [f"{report.status}: {verdict_line(report)}"]
    if missed:
        out += ["missed checks:"] + [f"  {check_line(c)}" for c in missed]
    ET.SubElement(verdict, "system-out").text = "\n".join(out)

    for check in report.checks:
        case = ET.SubElement(
            suite,
            "testcase",
            {"classname": f"drillkit.{name}.{check.phase}", "name": check.name, "time": "0"},
        )
        if failed_drill and not check.passed:
            failure = ET.SubElement(
                case,
                "failure",
                {"message": check_line(check), "type": "critical" if check.critical else "check"},
            )
            failure.text = _check_out(check)
        ET.SubElement(case, "system-out").text = _check_out(check)
    return suite


def junit_xml(reports: Sequence[DrillReport], *, hostname: str | None = None) -> bytes:
    """The JUnit XML document of ``reports``, one test suite per drill; ``hostname`` defaults
    to this machine's name (where the drills ran: the file is written at the end of the run)."""
    host = hostname if hostname is not None else socket.gethostname()
    suites = [_suite(report, host) for report in reports]
    root = ET.Element(
        "testsuites",
        {
            "name": "drillkit",
            "tests": str(sum(int(s.get("tests", "0")) for s in suites)),
            "failures": str(sum(int(s.get("failures", "0")) for s in suites)),
            "errors": str(sum(int(s.get("errors", "0")) for s in suites)),
            "time": f"{sum(float(s.get('time', '0')) for s in suites):.3f}",
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
