"""Reports as GitHub-flavoured Markdown, for a CI job's summary (``$GITHUB_STEP_SUMMARY``, a
merge request note): the terminal's box-drawing tables read there as one paragraph of
``┃`` and ``━``. Every table here is a GFM pipe table; every cell is escaped, since scenario
names, targets and evidence come from outside.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from drillkit.reports.format import (
    CHECK_COLUMNS,
    DASH,
    FAULT_COLUMNS,
    PHASE_COLUMNS,
    ROLLOUT_STEP_COLUMNS,
    check_row,
    data_lines,
    fault_row,
    format_score,
    phase_row,
    rollout_lines,
    rollout_step_rows,
)
from drillkit.reports.model import DrillReport, lost_load_note
from drillkit.text import printable

__all__ = ["Raw", "cell", "report_markdown", "table"]

# What Markdown would read as markup inside a table cell. `|` ends the cell; the others would
# turn a fault's evidence into emphasis, code, links, strikethrough or HTML.
_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


class Raw(str):
    """Markdown written here (emphasis on a verdict), put in a cell as it is."""

    __slots__ = ()


def cell(value: object) -> str:
    """One table cell: printable, on one line, with Markdown's special characters escaped."""
    if isinstance(value, Raw):
        return str(value)
    text = printable(str(value)).replace("\r", " ").replace("\n", " ")
    return _SPECIAL.sub(r"\\\1", text) if text else " "


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    right_from: int = 1,
    text: Sequence[str] = (),
) -> str:
    """A GFM pipe table; columns from ``right_from`` on (the figures) are right-aligned, but
    for the free-text columns named in ``text``."""
    align = ["---" if i < right_from or name in text else "--:" for i, name in enumerate(headers)]
    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def report_markdown(report: DrillReport) -> str:
    """A drill's report: the verdict, the phases, the faults, the checks and the score."""
    passed = report.score >= report.pass_score
    load = report.load
    parts = [
        f"### drill {cell(report.scenario.name)}: {report.status.upper()}, score "
        f"{format_score(report.score)} ({'>=' if passed else '<'} pass score "
        f"{report.pass_score:g})",
        f"backend {cell(report.backend)}; {load.requests} requests, {load.achieved_rps:.1f} of "
        f"{load.target_rps:g} rps"
        + (" (generator saturated)" if load.generator_saturated else "")
        + cell(lost_load_note(load)),
    ]
    if report.error:
        parts.append(f"**{report.status}:** {cell(report.error)}")
    parts += [f"> note: {cell(note)}" for note in report.notes]
    parts.append("#### phases")
    parts.append(table(PHASE_COLUMNS, [phase_row(p) for p in report.phases]))
    if report.faults:
        parts.append("#### faults")
        rows = [[*fault_row(f), f.detected_by or DASH] for f in report.faults]
        columns = [*FAULT_COLUMNS, "detected by"]
        parts.append(table(columns, rows, right_from=3, text=("evidence", "detected by")))
        steps = rollout_step_rows(report)
        if steps:
            parts.append("#### rollouts (errors, p99, degraded: canary/stable)")
            parts.append(table(ROLLOUT_STEP_COLUMNS, steps, right_from=4))
            parts += [cell(line) for line in rollout_lines(report)]
    if report.events is not None:
        parts.append("#### data")
        parts += [cell(line) for line in data_lines(report)]
    parts.append("#### checks")
    checks: list[list[object]] = []
    for c in report.checks:
        row: list[object] = list(check_row(c))
        if not c.passed:
            row[CHECK_COLUMNS.index("pass")] = Raw("**FAIL**")
        checks.append(row)
    parts.append(table(CHECK_COLUMNS, checks, right_from=2, text=("detail",)))
    earned = sum(c.weight * c.earned for c in report.checks)
    total = sum(c.weight for c in report.checks)
    parts.append(
        f"score = 100 x sum(w\\*credit)/sum(w) = 100 x {earned:.4g}/{total:g} = "
        f"**{format_score(report.score)}**"
    )
    return "\n\n".join(parts) + "\n"
