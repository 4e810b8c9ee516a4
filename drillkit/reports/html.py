"""A drill report as one self-contained HTML page, with its timeline also written as a PNG.

The page needs nothing but itself: styles are inline, the timeline is an inline ``<svg>``
(see :mod:`drillkit.reports.plot`), and there are no scripts, fonts or images to fetch, so it
can be attached to a ticket or opened from a CI artifact offline. Every string that comes from
the report (scenario names, targets, evidence, errors) is HTML-escaped.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from drillkit.fsutil import atomic_write
from drillkit.reports.format import (
    ALERT_COLUMNS,
    NO_IMPACT,
    PHASE_COLUMNS,
    ROLLOUT_STEP_COLUMNS,
    alert_rows,
    data_lines,
    format_check_value,
    format_score,
    monitoring_lines,
    ms,
    rollout_lines,
    rollout_step_rows,
    seconds,
    share,
    zone_table,
)
from drillkit.reports.jsonfile import REPORT_MODE
from drillkit.reports.model import CheckReport, DrillReport, lost_load_note
from drillkit.reports.plot import figure_svg, timeline_figure, write_png

__all__ = ["render_html", "score_breakdown", "write_html"]

_DASH: Final = "\u2013"
_STATUS_CLASS: Final = {
    "passed": "ok",
    "failed": "bad",
    "error": "bad",
    "interrupted": "warn",
}


class _Html(str):
    """Markup that is already safe; any other ``str`` put in a cell is escaped."""


def _e(value: object) -> _Html:
    return _Html(html.escape(str(value), quote=True))


def _cell(value: object) -> str:
    return value if isinstance(value, _Html) else _e(value)


def write_html(report: DrillReport, path: str | os.PathLike[str]) -> list[Path]:
    """Write ``report`` as a self-contained HTML page at ``path``, and its timeline as a PNG.

    The PNG goes beside the page (``path.with_suffix(".png")``, or ``<stem>.timeline.png``
    when that is ``path`` itself). Both files are written
    atomically; returns ``[html_path, png_path]``. Raises
    :class:`~drillkit.errors.EnvironmentFailure` when matplotlib is not installed.
    """
    target = Path(path)
    png = target.with_suffix(".png")
    if png == target:  # --html report.png must not have the plot overwrite the page
        png = target.with_name(f"{target.stem}.timeline.png")
    figure = timeline_figure(report)
    page = render_html(report, svg=figure_svg(figure), png_name=png.name)
    written_png = write_png(figure, png)
    written_html = atomic_write(target, page.encode("utf-8"), mode=REPORT_MODE)
    return [written_html, written_png]


# -- formatting ---------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return seconds(value, dash=_DASH)


def _ms(value: float | None) -> str:
    return ms(value, dash=_DASH)


def _share(value: float | None, digits: int = 2) -> str:
    return share(value, digits, dash=_DASH)


def _num(value: float) -> str:
    """A weight, credit or sum: short, exact when it is a round number."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    row_classes: Iterable[str] | None = None,
    numeric_from: int = 1,
    text_columns: Sequence[int] = (),
    foot: Sequence[object] | None = None,
) -> str:
    """A table; columns from ``numeric_from`` are right-aligned except ``text_columns``."""

    def align(i: int) -> str:
        return ' class="num"' if i >= numeric_from and i not in text_columns else ""

    head = "".join(f"<th{align(i)}>{_e(h)}</th>" for i, h in enumerate(headers))
    classes = iter(row_classes or ())
    body = []
    for row in rows:
        css = next(classes, "")
        cells = "".join(f"<td{align(i)}>{_cell(v)}</td>" for i, v in enumerate(row))
        body.append(f'<tr class="{css}">{cells}</tr>' if css else f"<tr>{cells}</tr>")
    tfoot = ""
    if foot is not None:
        cells = "".join(f"<td{align(i)}>{_cell(v)}</td>" for i, v in enumerate(foot))
        tfoot = f"<tfoot><tr>{cells}</tr></tfoot>"
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody>{tfoot}</table></div>"
    )


# -- sections -----------------------------------------------------------------------------------


def _header(report: DrillReport) -> str:
    status = report.status
    css = _STATUS_CLASS[status]
    score_css = "ok" if report.score >= report.pass_score else "bad"
    started, finished = report.started_at, report.finished_at
    took = (finished - started).total_seconds()
    env = report.environment
    hardware = "GPU" if env.gpu else "CPU only"
    meta = [
        ("backend", report.backend),
        ("environment", f"{hardware}, Python {env.python}, {env.host_cpus} CPUs"),
        ("started", started.isoformat(timespec="seconds")),
        ("finished", f"{finished.isoformat(timespec='seconds')} ({took:.0f}s)"),
        ("scenario", report.scenario.path),
        ("sha256", report.scenario.sha256[:16]),
        ("drillkit", report.drillkit_version),
    ]
    items = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in meta)
    error = ""
    if report.error:
        error = f'<p class="callout {css}"><b>{_e(status)}:</b> {_e(report.error)}</p>'
    for note in report.notes:
        error += f'<p class="callout warn"><b>note:</b> {_e(note)}</p>'
    title = (
        '<div><p class="kicker">disaster-recovery drill</p>'
        f"<h1>{_e(report.scenario.name)}</h1></div>"
    )
    verdict = (
        f'<div class="verdict"><span class="badge {css}">{_e(status)}</span>'
        f'<span class="score {score_css}">{_e(format_score(report.score))}</span>'
        f'<span class="pass">score, pass at {_e(f"{report.pass_score:g}")}</span></div>'
    )
    return (
        f'<header><div class="title">{title}{verdict}</div>'
        f'<dl class="meta">{items}</dl>{error}</header>'
    )


def _kpis(report: DrillReport) -> str:
    load = report.load
    failed = sum(p.failed for p in report.phases)
    wrong = sum(p.wrong_model for p in report.phases)
    applied = [f for f in report.faults if f.injected_at is not None]

    def worst(values: list[float | None]) -> tuple[str, str]:
        if not values:
            return _DASH, ""
        if any(v is None for v in values):
            return "never", "bad"
        return f"{max(v for v in values if v is not None):.2f}s", ""

    # A healthy rollout has nothing to detect: it is meant to go unnoticed.
    expected = [f for f in applied if f.rollout is None or f.rollout.expected != "promoted"]
    ttd, ttd_css = worst([f.ttd_s for f in expected])
    # A fault the SLOs never noticed has nothing to recover from: its rto of 0 is not a
    # "time to recover" for a replica that came back half a minute later.
    impacted = [f for f in applied if f.slo_impact is not False]
    rto, rto_css = worst([f.rto_s for f in impacted])
    rto_note = "slowest of the faults"
    if applied and not impacted:
        rto, rto_note = NO_IMPACT, "the SLOs held through every fault"
    restored = [
        f.restored_at - f.injected_at
        for f in applied
        if f.restored_at is not None and f.injected_at is not None
    ]
    if restored:
        rto_note += f"; target back in service after {max(restored):.2f}s"
    saturated = (" (generator saturated)" if load.generator_saturated else "") + lost_load_note(
        load
    )
    failed_share = _share(failed / load.requests, 3) if load.requests else _DASH
    cards = [
        (
            "requests",
            f"{load.requests:,}",
            f"{load.achieved_rps:.1f} of {load.target_rps:g} rps{saturated}",
            "bad" if load.generator_saturated or load.lost_requests else "",
        ),
        ("failed", f"{failed:,}", f"{failed_share} of requests", "bad" if failed else ""),
        ("wrong-model", f"{wrong:,}", "responses from an unverified model", "bad" if wrong else ""),
        ("time to detect", ttd, "slowest of the faults", ttd_css),
        ("time to recover", rto, rto_note, rto_css),
    ]
    html_cards = "".join(
        f'<div class="kpi {css}"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div>'
        f'<div class="s">{_e(s)}</div></div>'
        for k, v, s, css in cards
    )
    return f'<section class="kpis">{html_cards}</section>'


def _timeline(report: DrillReport, svg: str, png_name: str) -> str:
    note = ""
    if report.series:  # an empty series gets a figure that says "no data" and why
        saved = f" Also saved as <code>{_e(png_name)}</code>." if png_name else ""
        note = (
            '<p class="note">Shaded: a fault is active (injected until healed). Dashed violet: '
            "the stack detected the fault; green: recovery, the start of three 1-second windows "
            "in which every SLO holds again. Failed and degraded are responses per second; "
            f"dashed grey lines are the targets.{saved}</p>"
        )
    return f'<section><h2>Timeline</h2><figure class="plot">{svg}</figure>{note}</section>'


def _phases(report: DrillReport) -> str:
    if not report.phases:
        return '<section><h2>Phases</h2><p class="nodata">No phases.</p></section>'
    headers = list(PHASE_COLUMNS)
    rows = [
        [
            p.name,
            _seconds(p.start),
            _seconds(p.end),
            f"{p.requests:,}",
            f"{p.rps:.1f}",
            p.failed,
            p.degraded,
            p.wrong_model,
            _share(p.availability, 3),
            _ms(p.p50_ms),
            _ms(p.p95_ms),
            _ms(p.p99_ms),
            _share(p.quality, 1),
        ]
        for p in report.phases
    ]
    zones = ""
    found = zone_table(report)
    if found is not None:  # which zone served what, and the cache's hit ratio, per phase
        zones = f"<h3>Zones and cache</h3>{_table(*found)}"
    return f"<section><h2>Phases</h2>{_table(headers, rows)}{zones}</section>"


def _never(value: float | None, applied: bool) -> object:
    """A time, or a red "never" for something that should have happened and did not."""
    if value is None and applied:
        return _Html('<span class="badtext">never</span>')
    return _seconds(value)


def _faults(report: DrillReport) -> str:
    if not report.faults:
        return '<section><h2>Faults</h2><p class="nodata">The drill has no faults.</p></section>'
    headers = [
        "fault",
        "kind",
        "target",
        "injected",
        "healed",
        "detected",
        "ttd",
        "recovered",
        "rto",
        "restored",
        "failed",
        "degraded",
        "wrong-model",
        "evidence",
    ]
    failing = {c.phase for c in report.checks if not c.passed}
    rows = []
    classes = []
    for f in report.faults:
        applied = f.injected_at is not None
        evidence = _e(f.evidence or _DASH)
        if f.detected_by:
            evidence = _Html(
                f'{evidence}<br><span class="dim">detected by {_e(f.detected_by)}</span>'
            )
        rows.append(
            [
                _Html(f"<b>{_e(f.id)}</b>"),
                f.kind,
                f.target,
                _never(f.injected_at, True),
                _never(f.healed_at, applied),
                _never(f.detected_at, applied),
                _seconds(f.ttd_s),
                NO_IMPACT if f.slo_impact is False else _never(f.recovered_at, applied),
                _DASH if f.slo_impact is False else _seconds(f.rto_s),
                _seconds(f.restored_at),
                f"{f.failed_requests:,}/{f.requests:,}",
                f"{f.degraded_responses:,}",
                f"{f.wrong_model_responses:,}",
                evidence,
            ]
        )
        classes.append("fail" if f"fault:{f.id}" in failing else "")
    table = _table(headers, rows, row_classes=classes, numeric_from=3, text_columns=(13,))
    return f"<section><h2>Faults</h2>{table}</section>"


def _rollouts(report: DrillReport) -> str:
    """Every rollout's steps as the analysis judged them, and its exposure; nothing without
    a rollout."""
    rows = rollout_step_rows(report)
    if not rows:
        return ""
    table = _table(ROLLOUT_STEP_COLUMNS, rows, numeric_from=4)
    lines = "".join(f"<li>{_e(line)}</li>" for line in rollout_lines(report))
    note = '<p class="dim">errors, p99 and degraded: canary/stable over the step.</p>'
    return f"<section><h2>Rollouts</h2>{table}{note}<ul>{lines}</ul></section>"


def _data(report: DrillReport) -> str:
    """The drill's click events, backups and each data_loss fault; nothing without events."""
    if report.events is None:
        return ""
    lines = "".join(f"<li>{_e(line)}</li>" for line in data_lines(report))
    return f"<section><h2>Data</h2><ul>{lines}</ul></section>"


def _monitoring(report: DrillReport) -> str:
    """Every alert of the drill and what monitoring did; nothing without monitoring."""
    if report.monitoring is None:
        return ""
    rows = alert_rows(report)
    table = (
        _table(ALERT_COLUMNS, rows, numeric_from=3)
        if rows
        else '<p class="nodata">No alert fired.</p>'
    )
    lines = "".join(f"<li>{_e(line)}</li>" for line in monitoring_lines(report))
    return f"<section><h2>Alerts</h2>{table}<ul>{lines}</ul></section>"


def _check_class(check: CheckReport) -> str:
    return "" if check.passed else ("fail critical" if check.critical else "fail")


def _checks(report: DrillReport) -> str:
    if not report.checks:
        return '<section><h2>Checks</h2><p class="nodata">No checks.</p></section>'
    headers = [
        "check",
        "phase",
        "target",
        "actual",
        "result",
        "weight",
        "critical",
        "credit",
        "detail",
    ]
    passed = _Html('<span class="pill ok">pass</span>')
    failed = _Html('<span class="pill bad">fail</span>')
    rows = [
        [
            c.name,
            c.phase,
            f"{c.op or ''} {format_check_value(c, c.target)}".strip(),
            format_check_value(c, c.actual),
            passed if c.passed else failed,
            _num(c.weight),
            "critical" if c.critical else "",
            _num(c.earned),
            c.detail,
        ]
        for c in report.checks
    ]
    classes = [_check_class(c) for c in report.checks]
    table = _table(headers, rows, row_classes=classes, numeric_from=2, text_columns=(4, 6, 8))
    return f"<section><h2>Checks</h2>{table}</section>"


def _credit_reason(check: CheckReport) -> str:
    """How the check earned its credit, with its numbers (the rules of scoring/analyze.py)."""
    if check.passed:
        return "holds \u2192 1"
    actual, target = check.actual, check.target
    if check.credit is None:
        return "fails \u2192 0 (the report carries no partial credit)"
    if actual is None:
        return "the figure does not exist (it never happened) \u2192 0"
    shown = f"{format_check_value(check, actual)} against {format_check_value(check, target)}"
    if check.op == "==":
        return f"{shown}: a yes/no check earns no partial credit \u2192 0"
    if check.op == "<=":
        if target <= 0:
            return f"{shown}: with a target of 0 there is no partial credit \u2192 0"
        raw = 1 - (actual - target) / target
        return (
            f"max(0, 1 \u2212 ({actual:g} \u2212 {target:g}) / {target:g}) = {_num(max(0.0, raw))}"
        )
    if check.op == ">=" and check.name.endswith(".availability"):
        miss, allowed = 1 - actual, 1 - target
        if allowed <= 0:
            return f"{shown}: with a target of 100% there is no partial credit \u2192 0"
        raw = 1 - (miss - allowed) / allowed
        return (
            f"on unavailability: max(0, 1 \u2212 ({miss:.6g} \u2212 {allowed:.6g}) "
            f"/ {allowed:.6g}) = {_num(max(0.0, raw))}"
        )
    return f"{shown}: a higher-is-better figure earns no partial credit \u2192 0"


def score_breakdown(report: DrillReport) -> tuple[float, float, float]:
    """``(sum of weight x credit, sum of weights, score)`` recomputed from the report's checks.

    The score is ``100 * sum(w * credit) / sum(w)``, or 100 when there is nothing to check
    (``drillkit.scoring.analyze.score_of``); it equals ``report.score`` for a report drillkit
    wrote.
    """
    earned = sum(c.weight * c.earned for c in report.checks)
    total = sum(c.weight for c in report.checks)
    return earned, total, (100.0 * earned / total if total > 0 else 100.0)


def _score(report: DrillReport) -> str:
    earned, total, score = score_breakdown(report)
    rows = [
        [c.name, _num(c.weight), _num(c.earned), _credit_reason(c), _num(c.weight * c.earned)]
        for c in report.checks
    ]
    classes = [_check_class(c) for c in report.checks]
    table = ""
    if rows:
        foot = [
            _Html("<b>sum</b>"),
            _Html(f"<b>Σw = {_e(_num(total))}</b>"),
            "",
            "",
            _Html(f"<b>Σw·s = {_e(_num(earned))}</b>"),
        ]
        table = _table(
            ["check", "weight w", "credit s", "how the credit was earned", "w · s"],
            rows,
            row_classes=classes,
            numeric_from=1,
            text_columns=(3,),
            foot=foot,
        )
    if total > 0:
        sum_line = (
            f"score = 100 \u00d7 Σ(w·s) / Σw = 100 \u00d7 {_num(earned)} / {_num(total)} "
            f"= <b>{_e(format_score(score))}</b>"
        )
    else:
        sum_line = "nothing was checked, so the score is 100 by definition"
    matches = math.isclose(score, report.score, rel_tol=1e-9, abs_tol=1e-6)
    agreement = (
        f'<p class="check ok">✓ equals the report\'s score, {_e(format_score(report.score))}.</p>'
        if matches
        else f'<p class="callout bad">The checks add up to {_e(format_score(score))}, but the '
        f"report says {_e(format_score(report.score))}: the report was edited or written by "
        "another tool.</p>"
    )
    critical = [c for c in report.checks if c.critical and not c.passed]
    score_ok = report.score >= report.pass_score
    verdict_parts = [
        f"{_e(format_score(report.score))} {'≥' if score_ok else '&lt;'} pass score "
        f"{_e(f'{report.pass_score:g}')}"
    ]
    if critical:
        names = ", ".join(f"<code>{_e(c.name)}</code>" for c in critical)
        verdict_parts.append(
            f'<span class="badtext">critical check failed: {names}; the drill fails '
            "whatever the score</span>"
        )
    else:
        verdict_parts.append("no critical check failed")
    passed = score_ok and not critical
    verdict = f"{'; '.join(verdict_parts)} → <b>{'passed' if passed else 'failed'}</b>"
    if report.status in ("error", "interrupted"):
        verdict += (
            f" (but the drill did not run to its end: status <b>{_e(report.status)}</b>; the "
            "score covers what ran)"
        )
    return (
        "<section><h2>How the score was computed</h2>"
        "<p>Each check has a weight <i>w</i> and earns a credit <i>s</i> between 0 and 1: 1 when "
        "it holds; when a lower-is-better figure misses its target, partial credit "
        "<code>max(0, 1 \u2212 (actual \u2212 target) / target)</code> (availability is judged "
        "the same way on its complement, unavailability); 0 for a yes/no check, a higher-is-better "
        "figure, or a figure that does not exist. "
        "<code>score = 100 \u00d7 Σ(w·s) / Σw</code>. Checks marked critical (a wrong-model "
        "response, a fault never healed or never injected) fail the drill whatever the score."
        "</p>"
        f'{table}<p class="formula">{sum_line}</p>{agreement}'
        f'<p class="verdict-line">{verdict}</p></section>'
    )


_CSS: Final = """
:root { --ok:#1a7f37; --ok-bg:#dafbe1; --bad:#cf222e; --bad-bg:#ffebe9; --warn:#9a6700;
  --warn-bg:#fff8c5; --fg:#1f2328; --dim:#59636e; --line:#d1d9e0; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Roboto, Arial, sans-serif; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 28px 40px; }
header, section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: 18px 22px; margin-bottom: 16px; }
h1 { font-size: 26px; margin: 0; }
h2 { font-size: 17px; margin: 0 0 12px; }
.kicker { margin: 0 0 2px; color: var(--dim); text-transform: uppercase; font-size: 11px;
  letter-spacing: .08em; }
.title { display: flex; justify-content: space-between; align-items: center; gap: 16px; }
.verdict { display: flex; align-items: baseline; gap: 12px; }
.badge { font-weight: 700; text-transform: uppercase; letter-spacing: .05em; padding: 4px 12px;
  border-radius: 999px; font-size: 14px; }
.badge.ok { background: var(--ok-bg); color: var(--ok); border: 1px solid var(--ok); }
.badge.bad { background: var(--bad-bg); color: var(--bad); border: 1px solid var(--bad); }
.badge.warn { background: var(--warn-bg); color: var(--warn); border: 1px solid var(--warn); }
.score { font-size: 34px; font-weight: 700; font-variant-numeric: tabular-nums; }
.score.ok { color: var(--ok); } .score.bad { color: var(--bad); }
.pass { color: var(--dim); }
.meta { display: grid; grid-template-columns: repeat(auto-fill, minmax(230px, 1fr));
  gap: 6px 24px; margin: 14px 0 0; }
.meta dt { color: var(--dim); font-size: 11px; text-transform: uppercase; letter-spacing: .05em; }
.meta dd { margin: 0; overflow-wrap: anywhere; }
.callout { margin: 14px 0 0; padding: 8px 12px; border-radius: 6px; border: 1px solid; }
.callout.bad { background: var(--bad-bg); border-color: var(--bad); color: #82071e; }
.callout.warn { background: var(--warn-bg); border-color: var(--warn); color: #7d4e00; }
.callout.ok { background: var(--ok-bg); border-color: var(--ok); }
.kpis { display: grid; grid-template-columns: repeat(5, 1fr); gap: 12px; background: none;
  border: 0; padding: 0; }
.kpi { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
.kpi .k { color: var(--dim); font-size: 12px; }
.kpi .v { font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; }
.kpi .s { color: var(--dim); font-size: 12px; }
.kpi.bad { border-color: var(--bad); } .kpi.bad .v { color: var(--bad); }
.plot { margin: 0; }
.plot svg { display: block; width: 100%; height: auto; }
.note { color: var(--dim); font-size: 12.5px; margin: 8px 0 0; }
.nodata { color: var(--dim); font-style: italic; font-size: 15px; padding: 12px 0; margin: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 5px 9px; border-bottom: 1px solid #eaeef2; text-align: left;
  vertical-align: top; }
th { color: var(--dim); font-weight: 600; font-size: 12px; border-bottom: 1px solid var(--line);
  white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:hover { background: #f6f8fa; }
tr.fail td { background: #fff5f5; }
tr.fail.critical td { background: var(--bad-bg); font-weight: 600; }
tfoot td { border-top: 2px solid var(--line); border-bottom: 0; }
.pill { font-size: 11px; font-weight: 700; text-transform: uppercase; padding: 1px 8px;
  border-radius: 999px; }
.pill.ok { background: var(--ok-bg); color: var(--ok); }
.pill.bad { background: var(--bad); color: #fff; }
.badtext { color: var(--bad); font-weight: 600; }
.dim { color: var(--dim); font-size: 12px; }
code { font: 12.5px ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  background: #eff2f5; padding: 1px 5px; border-radius: 4px; }
.formula { font-size: 16px; margin: 14px 0 4px; font-variant-numeric: tabular-nums; }
.check.ok { color: var(--ok); margin: 4px 0; }
.verdict-line { margin: 6px 0 0; }
footer { color: var(--dim); font-size: 12px; text-align: center; }
@media print { body { background: #fff; } section, header { break-inside: avoid; } }
"""


def render_html(report: DrillReport, *, svg: str, png_name: str = "") -> str:
    """The page for ``report`` with ``svg`` (an inline ``<svg>`` element) as its timeline."""
    title = f"{report.scenario.name}: {report.status}, score {format_score(report.score)}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f"{_header(report)}{_kpis(report)}{_timeline(report, svg, png_name)}{_faults(report)}"
        f"{_rollouts(report)}{_data(report)}{_monitoring(report)}"
        f"{_phases(report)}{_checks(report)}{_score(report)}"
        f"<footer>drillkit {_e(report.drillkit_version)} · report schema "
        f"v{report.schema_version}</footer>"
        "</main></body></html>\n"
    )
