"""``drillkit report``: saved reports re-rendered, the history's trends, and a CI gate."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import typer

from drillkit.cli.state import terminal
from drillkit.errors import InputError

app = typer.Typer(
    help="Saved reports: show one, trends over the history, compare two.", no_args_is_help=True
)

OUT = typer.Option(Path("reports"), "--out", help="The report folder (`run --out`).")
_SPARKS = "▁▂▃▄▅▆▇█"


FORMATS = ("text", "markdown", "json")


def _format_option() -> Any:
    return typer.Option(
        "text",
        "--format",
        "-f",
        help="text (for a terminal), markdown (GitHub-flavoured, for a CI job summary such as "
        "$GITHUB_STEP_SUMMARY) or json.",
    )


def _chosen(fmt: str, json_out: bool) -> str:
    """The output format; `--json` is kept as `--format json`."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    return "json" if json_out else fmt


def _resolve(arg: str, out: Path) -> Path:
    # `last` is the most recent drill's report in the folder (`run` writes last.json).
    return out / "last.json" if arg == "last" else Path(arg)


@app.command()
def show(
    report: str = typer.Argument("last", help="A JSON report, or `last`."),
    out: Path = OUT,
    html: Path | None = typer.Option(
        None, "--html", help="Also write the HTML report here (and its timeline PNG beside it)."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    fmt: str = _format_option(),
) -> None:
    """Re-render a saved JSON report (exit code: the drill's own)."""
    from drillkit.reports.jsonfile import read_report
    from drillkit.reports.model import EXIT_CODES
    from drillkit.reports.terminal import render_report

    t = terminal()
    chosen = _chosen(fmt, json_out)
    loaded = read_report(_resolve(report, out))
    if chosen == "json":
        t.json(loaded.model_dump(mode="json"))
    elif chosen == "markdown":
        from drillkit.reports.markdown import report_markdown

        t.document(report_markdown(loaded))
    else:
        render_report(loaded, t)
    if html is not None:
        from drillkit.reports.html import write_html

        t.info("wrote " + ", ".join(str(p) for p in write_html(loaded, html)))
    code = EXIT_CODES.get(loaded.status, 3)
    if code:
        raise typer.Exit(code)


@app.command()
def trend(
    history: Path = typer.Argument(
        Path("reports"), help="The report folder holding history.jsonl, or the file itself."
    ),
    scenario: list[str] = typer.Option(
        [], "--scenario", "-s", help="Only these scenarios (names, or scenario files)."
    ),
    last: int = typer.Option(10, "--last", "-n", min=1, help="Runs per scenario to list."),
    json_out: bool = typer.Option(False, "--json", help="Print the entries as JSON."),
    fmt: str = _format_option(),
) -> None:
    """Score, time to detect and time to recover per scenario over time."""
    from drillkit.reports import markdown
    from drillkit.reports.history import read_history

    t = terminal()
    chosen = _chosen(fmt, json_out)
    loaded = read_history(history)
    for problem in loaded.skipped:
        t.warn(f"skipped {problem}")
    known = loaded.scenarios()
    scenario = [_scenario_name(s) if s not in known else s for s in scenario]
    unknown = [s for s in scenario if s not in known]
    if unknown:
        raise InputError(
            f"--scenario {unknown[0]}: not in {loaded.path} "
            f"(it has {', '.join(known) or 'no runs'})"
        )
    groups = [
        (name, runs) for name, runs in loaded.by_scenario() if not scenario or name in scenario
    ]
    if chosen == "json":
        t.json({name: [e.model_dump(mode="json") for e in runs[-last:]] for name, runs in groups})
        return
    if not groups:
        if chosen == "markdown":
            t.document(f"{markdown.cell(loaded.path)}: no runs yet")
        else:
            t.result(f"{loaded.path}: no runs yet")
        return
    documents = []
    for name, runs in groups:
        shown = runs[-last:]
        rows = []
        previous = runs[-last - 1].score if len(runs) > last else None
        for entry in shown:
            delta = "" if previous is None else f"{entry.score - previous:+.1f}"
            previous = entry.score
            rows.append(
                (
                    entry.started_at.astimezone().strftime("%Y-%m-%d %H:%M"),
                    entry.backend,
                    entry.status,
                    f"{entry.score:.1f}",
                    delta,
                    _secs(entry.ttd_s, entry.undetected),
                    _secs(entry.rto_s, entry.unrecovered),
                    "-" if entry.quality is None else f"{entry.quality:.1%}",
                    entry.failed,
                    entry.degraded,
                    ", ".join(entry.checks_failed) or "-",
                    (entry.commit or "")[:10] or "-",
                )
            )
        styles = [None if e.status == "passed" else "red" for e in shown]
        scores = [e.score for e in runs]
        runs_text = f"{len(runs)} run{'s' if len(runs) != 1 else ''}"
        title = (
            f"{name}: {runs_text}, score {_spark(scores[-40:])} "
            f"(median {statistics.median(scores):.1f}, last {scores[-1]:.1f})"
        )
        if chosen == "markdown":
            documents.append(
                f"### {markdown.cell(title)}\n\n"
                + markdown.table(
                    _TREND_COLUMNS, rows, right_from=3, text=("failed checks", "commit")
                )
            )
        else:
            t.table(title, _TREND_COLUMNS, rows, styles)
    if documents:
        t.document("\n\n".join(documents))


_TREND_COLUMNS = [
    "started",
    "backend",
    "status",
    "score",
    "Δ",
    "ttd",
    "rto",
    "quality",
    "failed",
    "degraded",
    "failed checks",
    "commit",
]


def _scenario_name(arg: str) -> str:
    """A scenario's name from its file (or bundled name); the argument itself otherwise."""
    from drillkit.cli.drill import resolve_scenario

    path = resolve_scenario(Path(arg))
    if not path.is_file():
        return arg
    from drillkit.scenario import load_scenario

    return load_scenario(path).name


def _secs(value: float | None, missing: int) -> str:
    text = "-" if value is None else f"{value:.2f} s"
    return f"{text} ({missing} never)" if missing else text


def _spark(values: list[float]) -> str:
    low, high = min(values), max(values)
    span = high - low
    return "".join(
        _SPARKS[round((v - low) / span * (len(_SPARKS) - 1)) if span else -1] for v in values
    )


@app.command()
def compare(
    baseline: str = typer.Argument(..., help="The reference JSON report (or `last`)."),
    candidate: str = typer.Argument(..., help="The JSON report to judge (or `last`)."),
    out: Path = OUT,
    tolerance: float = typer.Option(
        20.0, "--tolerance", min=0.0, help="ttd/rto growth (%) that counts as a regression."
    ),
    min_seconds: float = typer.Option(
        0.1, "--min-seconds", min=0.0, help="ttd/rto growth below this many seconds is noise."
    ),
    quality_drop: float = typer.Option(
        1.0, "--quality-drop", min=0.0, help="Quality drop (percentage points) that counts."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    fmt: str = _format_option(),
) -> None:
    """List regressions from BASELINE to CANDIDATE; exit 1 when there is one."""
    from drillkit.reports import markdown
    from drillkit.reports.compare import Thresholds, compare_files

    t = terminal()
    chosen = _chosen(fmt, json_out)
    result = compare_files(
        _resolve(baseline, out),
        _resolve(candidate, out),
        Thresholds(
            tolerance=tolerance / 100, min_seconds=min_seconds, quality_drop=quality_drop / 100
        ),
    )
    count = len(result.regressions)
    verdict = f"{count} regression{'s' if count != 1 else ''}" if count else "no regressions"
    if chosen == "json":
        t.json(result.as_json())
    elif chosen == "markdown":
        shown = [c for c in result.changes if c.verdict != "same" or t.verbose]
        lines = [
            f"### {markdown.cell(result.scenario)}: {markdown.cell(result.baseline)} -> "
            f"{markdown.cell(result.candidate)}"
        ]
        lines += [f"> {markdown.cell(note)}" for note in result.notes]
        if shown:
            lines.append(
                markdown.table(
                    ["what", "before", "after", "verdict", "why"],
                    [
                        (c.what, c.before, c.after, markdown.Raw(f"**{c.verdict}**"), c.why)
                        if c.verdict == "regression"
                        else (c.what, c.before, c.after, c.verdict, c.why)
                        for c in shown
                    ],
                )
            )
        lines.append(f"**{verdict}**" if count else verdict)
        t.document("\n\n".join(lines))
    else:
        for note in result.notes:
            t.warn(note)
        shown = [c for c in result.changes if c.verdict != "same" or t.verbose]
        styles = [{"regression": "bold red", "improvement": "green"}.get(c.verdict) for c in shown]
        if shown:
            t.table(
                f"{result.scenario}: {result.baseline} -> {result.candidate}",
                ["what", "before", "after", "verdict", "why"],
                [(c.what, c.before, c.after, c.verdict, c.why) for c in shown],
                styles,
            )
        t.result(verdict, style="bold red" if count else "green")
    if result.regressions:
        raise typer.Exit(1)


@app.command()
def schema() -> None:
    """Print the JSON report's JSON Schema (docs/report.schema.json)."""
    from drillkit.reports.model import json_schema

    terminal().json(json_schema())
