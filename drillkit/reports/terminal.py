"""A drill report for people: header, phases, faults, checks, and how the score was reached.

Everything goes through :class:`~drillkit.cli.console.Terminal` (``terminal.out``), the one
place that owns the console. Cells are :class:`rich.text.Text`, never markup strings: scenario
names, targets and evidence come from user input and may contain ``[brackets]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from drillkit.reports.format import (
    ALERT_COLUMNS,
    CHECK_COLUMNS,
    FAULT_COLUMNS,
    PHASE_COLUMNS,
    ROLLOUT_STEP_COLUMNS,
    alert_rows,
    check_row,
    data_lines,
    fault_row,
    format_score,
    monitoring_lines,
    phase_row,
    rollout_lines,
    rollout_step_rows,
    zone_table,
)
from drillkit.reports.model import DrillReport, lost_load_note
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


#: Columns of free text (evidence, a check's detail) fold to lines of at least this width.
_FOLD_MIN = 20
#: What separates two columns (no outer edge, no edge padding): " │ ".
_GAP = 3


class _Grid:
    """A report table that fits the terminal without cutting a figure.

    rich shrinks every column of a table wider than the terminal and cuts what no longer fits
    (``10.0…``, ``100…``): a figure an engineer cannot read. Here, numeric columns keep their
    full width; free-text columns (``fold``) wrap; and when the columns still do not fit, the
    table is split into parts that each repeat the first column (the row's name), so every
    part reads on its own at 80 to 100 columns.
    """

    def __init__(
        self, title: str, columns: Sequence[str], *, right_from: int = 1, fold: Sequence[str] = ()
    ) -> None:
        self.title = title
        self.columns = list(columns)
        self.right_from = right_from
        self.fold = {self.columns.index(name) for name in fold}
        self.rows: list[tuple[list[str], str | None]] = []

    def add_row(self, cells: Sequence[str], style: str | None = None) -> None:
        self.rows.append(([printable(cell) for cell in cells], style))

    def _width(self, i: int) -> int:
        cells = [len(cells[i]) for cells, _ in self.rows]
        natural = max([len(self.columns[i]), *cells])
        return min(natural, _FOLD_MIN) if i in self.fold else natural

    def parts(self, width: int, widths: Sequence[int]) -> list[list[int]]:
        """Column indexes of each part: the first column, then as many as fit, in order."""
        parts: list[list[int]] = []
        current = [0]
        used = widths[0]
        for i in range(1, len(self.columns)):
            if len(current) > 1 and used + _GAP + widths[i] > width:
                parts.append(current)
                current, used = [0], widths[0]
            current.append(i)
            used += _GAP + widths[i]
        parts.append(current)
        return parts

    def tables(self, width: int) -> list[Table]:
        widths = [self._width(i) for i in range(len(self.columns))]
        parts = self.parts(width, widths)
        tables = []
        for n, part in enumerate(parts):
            title = self.title if n == 0 else f"{self.title} (continued)"
            table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
            for i in part:
                name = self.columns[i]
                if i in self.fold:
                    table.add_column(name, justify="left", overflow="fold")
                else:
                    table.add_column(
                        name,
                        justify="right" if i >= self.right_from else "left",
                        no_wrap=True,
                        min_width=widths[i],
                    )
            for cells, style in self.rows:
                table.add_row(*(Text(cells[i]) for i in part), style=style)
            tables.append(table)
        return tables

    def print(self, out: Console) -> None:
        for n, table in enumerate(self.tables(out.width)):
            if n:
                out.print()
            out.print(table)


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
        + lost_load_note(load)
        + f"; {printable(report.scenario.path)}",
        style="dim",
    )
    return header


def _phases(report: DrillReport) -> _Grid:
    table = _Grid("phases", PHASE_COLUMNS)
    for p in report.phases:
        table.add_row(phase_row(p))
    return table


def _zones(report: DrillReport) -> _Grid | None:
    """Which zone served what, and the cache hit ratio, per phase (zoned stacks only)."""
    found = zone_table(report)
    if found is None:
        return None
    headers, rows = found
    table = _Grid("zones", headers)
    for row in rows:
        table.add_row(row)
    return table


def _faults(report: DrillReport) -> _Grid:
    table = _Grid("faults", FAULT_COLUMNS, right_from=3, fold=["evidence"])
    for f in report.faults:
        table.add_row(fault_row(f))
    return table


def _checks(report: DrillReport) -> _Grid:
    table = _Grid("checks", CHECK_COLUMNS, right_from=2, fold=["detail"])
    for c in report.checks:
        style = None if c.passed else ("bold red" if c.critical else "red")
        table.add_row(check_row(c), style=style)
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
    _phases(report).print(out)
    zones = _zones(report)
    if zones is not None:
        out.print()
        zones.print(out)
    if report.faults:
        out.print()
        _faults(report).print(out)
        # Who noticed does not fit the table; it is what an on-call engineer asks next.
        for f in report.faults:
            if f.detected_by:
                line = f"{f.id}: detected by {f.detected_by}"
                out.print(Text(printable(line), style="dim"))
        steps = rollout_step_rows(report)
        if steps:
            out.print()
            grid = _Grid("rollout steps (canary/stable)", ROLLOUT_STEP_COLUMNS, right_from=4)
            for row in steps:
                grid.add_row(row)
            grid.print(out)
        for line in rollout_lines(report):
            out.print(Text(printable(line)))
    if report.events is not None:
        out.print()
        out.print(Text("data", style="bold"))
        for line in data_lines(report):
            out.print(Text(printable(line)))
    if report.monitoring is not None:
        out.print()
        rows = alert_rows(report)
        if rows:
            table = _Grid("alerts", ALERT_COLUMNS, right_from=3)
            for row in rows:
                table.add_row(row)
            table.print(out)
        else:
            out.print(Text("alerts: none fired", style="bold"))
        for line in monitoring_lines(report):
            out.print(Text(printable(line), style="dim"))
    out.print()
    _checks(report).print(out)
    out.print()
    out.print(score_line(report))
