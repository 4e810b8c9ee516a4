"""A drill report for people: header, phases, faults, checks, and how the score was reached.

Everything goes through :class:`~drillkit.cli.console.Terminal` (``terminal.out``), the one
place that owns the console. Cells are :class:`rich.text.Text`, never markup strings: scenario
names, targets and evidence come from user input and may contain ``[brackets]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from drillkit.reports.format import (
    PHASE_COLUMNS,
    format_check_value,
    format_score,
    ms,
    seconds,
    share,
)
from drillkit.reports.model import DrillReport
from drillkit.text import printable

if TYPE_CHECKING:
    # Only for the annotation: the CLI package imports this module, not the other way round.
    from drillkit.cli.console import Terminal

__all__ = ["render_report", "score_line"]

_STATUS_STYLE = {
    "passed": "bold green",
    "failed": "bold red",
    "error": "bold red",
    "interrupted": "bold yellow",
}


def _table(title: str, columns: Sequence[str], *, right_from: int = 1) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for i, column in enumerate(columns):
        table.add_column(column, justify="right" if i >= right_from else "left")
    return table


def _row(table: Table, cells: Sequence[str], style: str | None = None) -> None:
    table.add_row(*(Text(printable(cell)) for cell in cells), style=style)


def _header(report: DrillReport) -> Text:
    passed_score = report.score >= report.pass_score
    header = Text()
    header.append("drill ", style="bold")
    header.append(printable(report.scenario.name), style="bold")
    header.append(f"  backend {printable(report.backend)}  ")
    header.append(report.status.upper(), style=_STATUS_STYLE.get(report.status, "bold"))
    header.append("  score ")
    header.append(format_score(report.score), style="bold green" if passed_score else "bold red")
    header.append(f" / pass {report.pass_score:g}")
    load = report.load
    header.append(
        f"\n{load.requests} requests, {load.achieved_rps:.1f} of {load.target_rps:g} rps"
        + (" (generator saturated)" if load.generator_saturated else "")
        + f"; {printable(report.scenario.path)}",
        style="dim",
    )
    return header


def _phases(report: DrillReport) -> Table:
    table = _table("phases", PHASE_COLUMNS)
    for p in report.phases:
        _row(
            table,
            [
                p.name,
                seconds(p.start),
                seconds(p.end),
                str(p.requests),
                f"{p.rps:.1f}",
                str(p.failed),
                str(p.degraded),
                str(p.wrong_model),
                share(p.availability, 3),
                ms(p.p50_ms),
                ms(p.p95_ms),
                ms(p.p99_ms),
                share(p.quality, 1),
            ],
        )
    return table


def _faults(report: DrillReport) -> Table:
    table = _table(
        "faults",
        [
            "fault",
            "kind",
            "target",
            "injected",
            "detected",
            "ttd",
            "recovered",
            "rto",
            "failed",
            "degraded",
            "wrong-model",
            "evidence",
        ],
        right_from=3,
    )
    for f in report.faults:
        _row(
            table,
            [
                f.id,
                f.kind,
                f.target,
                seconds(f.injected_at),
                seconds(f.detected_at),
                seconds(f.ttd_s),
                seconds(f.recovered_at),
                seconds(f.rto_s),
                f"{f.failed_requests}/{f.requests}",
                str(f.degraded_responses),
                str(f.wrong_model_responses),
                f.evidence,
            ],
        )
    # Free text reads better left-aligned.
    table.columns[-1].justify = "left"
    return table


def _checks(report: DrillReport) -> Table:
    table = _table(
        "checks",
        ["check", "phase", "target", "actual", "pass", "weight", "credit", "detail"],
        right_from=2,
    )
    for c in report.checks:
        name = c.name + (" (critical)" if c.critical else "")
        op = c.op or ""
        _row(
            table,
            [
                name,
                c.phase,
                f"{op} {format_check_value(c, c.target)}".strip(),
                format_check_value(c, c.actual),
                "PASS" if c.passed else "FAIL",
                f"{c.weight:g}",
                f"{c.earned:.3f}".rstrip("0").rstrip("."),
                c.detail,
            ],
            style=None if c.passed else ("bold red" if c.critical else "red"),
        )
    table.columns[-1].justify = "left"
    return table


def score_line(report: DrillReport) -> Text:
    """``score = 100 x sum(w*credit)/sum(w) = 100 x a/b = s``, from the checks themselves."""
    earned = sum(c.weight * c.earned for c in report.checks)
    total = sum(c.weight for c in report.checks)
    line = Text(f"score = 100 x sum(w*credit)/sum(w) = 100 x {earned:.4g}/{total:g} = ")
    passed_score = report.score >= report.pass_score
    line.append(format_score(report.score), style="bold green" if passed_score else "bold red")
    line.append(f" ({'>=' if passed_score else '<'} pass score {report.pass_score:g})")
    critical = [printable(c.name) for c in report.checks if c.critical and not c.passed]
    if critical:
        line.append(f"; critical check failed: {', '.join(critical)}", style="bold red")
    return line


def render_report(report: DrillReport, terminal: Terminal) -> None:
    """Print ``report`` on ``terminal.out``; with ``--quiet``, only its verdict line."""
    out = terminal.out
    if terminal.quiet:
        verdict = Text(f"{printable(report.scenario.name)}: {report.status}, ")
        verdict.append_text(score_line(report))
        out.print(verdict)
        return
    out.print(_header(report))
    if report.error:
        out.print(Text(f"{report.status}: {printable(report.error)}", style="bold red"))
    for note in report.notes:
        out.print(Text(f"note: {printable(note)}", style="yellow"))
    out.print()
    out.print(_phases(report))
    if report.faults:
        out.print()
        out.print(_faults(report))
        # Who noticed does not fit the table; it is what an on-call engineer asks next.
        for f in report.faults:
            if f.detected_by:
                line = f"{f.id}: detected by {f.detected_by}"
                out.print(Text(printable(line), style="dim"))
    out.print()
    out.print(_checks(report))
    out.print()
    out.print(score_line(report))
