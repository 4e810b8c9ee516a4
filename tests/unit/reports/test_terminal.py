from __future__ import annotations

import pytest
from rich.console import Console

from drillkit.cli.console import Terminal
from drillkit.reports.format import format_check_value
from drillkit.reports.model import CheckReport, DrillReport
from drillkit.reports.terminal import render_report
from tests.unit.reports.test_model import sample_report


def render(report: DrillReport) -> str:
    terminal = Terminal()
    terminal.out = Console(record=True, width=140, color_system=None)
    terminal.err = Console(record=True, width=140, color_system=None)
    render_report(report, terminal)
    assert terminal.err.export_text() == ""  # results go to stdout only
    return terminal.out.export_text()


def test_report_rendering() -> None:
    text = render(sample_report())
    assert "drill kill-node" in text
    assert "backend local" in text
    assert "PASSED" in text
    assert "score 88.23 / pass 80" in text  # truncated, never rounded up
    # phases
    for phase in ("baseline", "fault:kill-1", "after"):
        assert phase in text
    assert "86.667%" in text  # availability of the fault phase: 1300/1500
    # faults
    assert "kill_node" in text and "replica-1" in text
    assert "20.30s" in text
    assert "kill-1: detected by gateway: state up->ejected" in text
    assert "0.30s" in text and "22.00s" in text and "200/1500" in text
    assert "SIGKILL pid 4242" in text
    # checks
    assert "kill-1.healed (critical)" in text
    assert "<= 1.00 s" in text
    assert "FAIL" in text and "PASS" in text
    assert "200 of 1500 requests" in text
    assert "score = 100 x sum(w*credit)/sum(w) = 100 x 15/17 = 88.23 (>= pass score 80)" in text


def test_failed_checks_are_red_and_critical_failures_named() -> None:
    report = sample_report()
    report.checks[-2] = report.checks[-2].model_copy(
        update={"passed": False, "credit": 0.0, "actual": 3.0}
    )
    terminal = Terminal()
    terminal.out = Console(record=True, width=140, force_terminal=True, color_system="truecolor")
    render_report(report, terminal)
    styled = terminal.out.export_text(styles=True, clear=False)
    assert "\x1b[1;31mwrong_model_responses (critical)" in styled
    assert "\x1b[31mkill-1.max_failed_requests" in styled
    assert "critical check failed: wrong_model_responses" in terminal.out.export_text()


def test_user_text_is_not_markup_and_errors_are_shown() -> None:
    report = sample_report(status="interrupted", error="SIGINT at [t=12s]")
    report.faults[0] = report.faults[0].model_copy(update={"evidence": "[red]kill -9[/red]"})
    text = render(report)
    assert "[red]kill -9[/red]" in text
    assert "interrupted: SIGINT at [t=12s]" in text
    assert "INTERRUPTED" in text


def test_never_detected_fault_renders_dashes() -> None:
    report = sample_report()
    report.faults[0] = report.faults[0].model_copy(
        update={"detected_at": None, "ttd_s": None, "detected_by": None}
    )
    line = next(row for row in render(report).splitlines() if "kill_node" in row)
    assert " - " in line


@pytest.mark.parametrize(
    ("name", "op", "target", "value", "shown"),
    [
        pytest.param("after.availability", ">=", 0.999, 0.99855, "99.855%", id="availability"),
        pytest.param("after.degraded", "<=", 0.05, 0.06, "6.00%", id="degraded"),
        pytest.param("after.p99_ms", "<=", 250, 312.25, "312.2 ms", id="p99"),
        pytest.param("a.detect_within", "<=", 1, None, "never", id="never-detected"),
        pytest.param("a.recover_within", "<=", 5, 2, "2.00 s", id="seconds"),
        pytest.param("a.max_failed_requests", "<=", 0.001, 0.002, "0.200%", id="share"),
        pytest.param("a.max_failed_requests", "<=", 0, 3, "3", id="count"),
        pytest.param("a.healed", "==", 1, 0, "no", id="boolean"),
    ],
)
def test_check_values_in_their_unit(
    name: str, op: str, target: float, value: float | None, shown: str
) -> None:
    check = CheckReport(
        name=name, phase="after", target=target, actual=value, passed=False, weight=1,
        critical=False, op=op,  # type: ignore[arg-type]
    )  # fmt: skip
    assert format_check_value(check, value) == shown


def test_escape_sequences_in_a_report_are_shown_not_obeyed() -> None:
    # A report read back from a file, or evidence a service wrote: nothing in it may retitle,
    # clear or recolour the terminal.
    hostile = "pwned\x1b]0;owned\x07\x1b[2J\x9b31m"
    report = sample_report(status="error", error=hostile)
    report.faults[0].detected_by = hostile
    text = render(report)
    assert "\x1b]" not in text and "\x1b[2J" not in text and "\x9b" not in text
    assert "pwned\\x1b]0;owned\\x07\\x1b[2J\\x9b31m" in text


@pytest.mark.parametrize("width", [80, 100, 120])
def test_narrow_terminals_cut_no_figure(width: int) -> None:
    # Below ~150 columns rich used to shrink every column and cut figures (`10.0…`, `100…`).
    # Now numeric columns keep their width, text folds, and wide tables split into parts.
    report = sample_report()
    terminal = Terminal()
    terminal.out = Console(record=True, width=width, color_system=None)
    terminal.err = Console(record=True, width=width, color_system=None)
    render_report(report, terminal)
    text = terminal.out.export_text()
    assert "…" not in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    for figure in ("86.667%", "20.30s", "22.00s", "200/1500", "88.23", "<= 1.00 s", "FAIL"):
        assert figure in text, figure
    for phase in report.phases:
        assert text.count(phase.name) >= 2  # every part repeats the row's name
    assert "phases (continued)" in text


def test_no_slo_impact_and_the_service_back_are_shown_apart() -> None:
    report = sample_report()
    fault = report.faults[0]
    assert fault.injected_at is not None
    report.faults[0] = fault.model_copy(
        update={
            "recovered_at": fault.injected_at,
            "rto_s": 0.0,
            "slo_impact": False,
            "restored_at": fault.injected_at + 9.5,
        }
    )
    text = render(report)
    assert "no SLO impact" in text
    assert f"{fault.injected_at + 9.5:.2f}s" in text  # the restored column
    row = next(line for line in text.splitlines() if line.startswith("kill-1 "))
    # No "recovered 0.00s" / "rto 0.00s" for what had nothing to recover from.
    assert " 0.00s" not in row and "no SLO impact │   - │" in row
