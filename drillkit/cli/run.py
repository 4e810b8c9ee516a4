"""``drillkit run``: scenario files in, scored recovery reports out."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from drillkit import __version__
from drillkit.cli.state import terminal
from drillkit.errors import EnvironmentFailure

if TYPE_CHECKING:
    from drillkit.engine import DrillResult
    from drillkit.reports.model import DrillReport
    from drillkit.scenario.model import Scenario


def run(
    scenarios: list[Path] = typer.Argument(
        None,
        help="Scenario files (or bundled names like kill-node), run one after another; "
        "default: the bundled kill-node drill.",
    ),
    backend: str | None = typer.Option(
        None,
        "--backend",
        "-b",
        help="local | docker (overrides the scenario; a Compose project runs on Docker).",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Report folder (default: the scenario's report.dir)."
    ),
    json_path: Path | None = typer.Option(
        None,
        "--json",
        help="Write the JSON report here (with several drills: NAME-<scenario>.json).",
    ),
    junit_path: Path | None = typer.Option(
        None, "--junit", help="Write JUnit XML here (one file for all the drills)."
    ),
    html_path: Path | None = typer.Option(
        None, "--html", help="Write the HTML report here, and its timeline as a PNG beside it."
    ),
    records: Path | None = typer.Option(
        None,
        "--records",
        help="Also write every request (gzipped JSON lines) here, for your own analysis.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seeds random targets and the load."),
    prometheus: str | None = typer.Option(
        None,
        "--prometheus",
        help="Read alerts from this Prometheus (its URL) instead of the stack's own.",
    ),
    alertmanager: str | None = typer.Option(
        None,
        "--alertmanager",
        help="With --prometheus: date notifications by when alerts reached this Alertmanager.",
    ),
    ci: bool = typer.Option(False, "--ci", help="No live view; line logs; JUnit by default."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate and print the timeline; start nothing."
    ),
) -> None:
    """Run drills: bring the stack up, drive load, inject faults, heal, score."""
    from drillkit.cli.drill import DEFAULT_SCENARIO, resolve_scenario
    from drillkit.engine import DrillRunner, RunOptions, plan_faults
    from drillkit.scenario import load_scenario

    t = terminal()
    paths = [resolve_scenario(p) for p in (scenarios or [Path(DEFAULT_SCENARIO)])]
    # Validate everything first: a bad file among several starts nothing.
    loaded = [(path, load_scenario(path)) for path in paths]
    if dry_run:
        for path, scenario in loaded:
            from drillkit.engine import backend_for

            what = (
                f"Compose project {scenario.stack.compose}"
                if scenario.stack.compose is not None
                else f"{scenario.stack.replicas} replicas"
            )
            t.result(
                f"{path}: {scenario.name}: stack {what} on "
                f"{backend_for(scenario, backend)}; load {scenario.load.rate:g} req/s, "
                f"warmup {scenario.load.warmup:g} s, duration {scenario.load.duration:g} s"
            )
            for record in plan_faults(scenario, seed):
                heal = (
                    f"heal at {record.at + record.duration:g} s"
                    if record.duration
                    else "heal at end"
                )
                t.result(
                    f"  t={record.at:>6.1f} s  {record.id}: {record.kind} on "
                    f"{', '.join(record.targets)}; {heal}"
                )
        return
    reports: list[DrillReport] = []
    worst = 0
    from drillkit.engine import Interrupted, interrupted_result, signals_deferred

    for path, scenario in loaded:
        options = RunOptions(
            backend=backend,
            seed=seed,
            records_path=_per_drill(records, scenario.name, len(loaded) > 1),
            prometheus=prometheus,
            alertmanager=alertmanager,
        )
        from drillkit.engine import backend_for

        chosen = backend_for(scenario, backend)
        t.debug(
            f"{path}: scenario {scenario.name}, backend {chosen}, seed {seed}, "
            f"reports to {out or scenario.report.dir}"
        )
        from drillkit.cli.live import LiveView

        started = time.time()
        try:
            with LiveView(t, scenario, plain=ci) as view:
                runner = DrillRunner(
                    scenario, path, options, on_tick=view.tick, on_progress=view.progress
                )
                result = runner.run()
        except (KeyboardInterrupt, Interrupted):
            # Before the runner took charge of signals, or after it let go: nothing of this
            # drill is running (the runner cleans up whatever it started), say so in a report.
            result = interrupted_result(
                scenario, path, chosen, started, "interrupted before the drill started"
            )
        # The report is written whole whatever arrives meanwhile; a signal then ends the run.
        with signals_deferred() as late:
            report = _report(result)
            reports.append(report)
            from drillkit.reports.terminal import render_report

            # The verdict first: a full disk must not swallow it.
            render_report(report, t)
            if result.error:
                t.error(result.error)
            folder = out or Path(scenario.report.dir)
            many = len(loaded) > 1
            code = report.exit_code
            try:
                _write(
                    report,
                    scenario,
                    folder,
                    _per_drill(json_path, scenario.name, many),
                    None if many else junit_path,
                    _per_drill(html_path, scenario.name, many),
                    ci,
                    junit_path,
                )
            except EnvironmentFailure as exc:
                t.error(str(exc))
                code = max(code, EnvironmentFailure.exit_code, key=_severity)
        worst = max(worst, 130 if late else code, key=_severity)
        if worst == 130:
            skipped = [s.name for _, s in loaded[len(reports) :]]
            if skipped:
                t.warn(f"not run after the interrupt: {', '.join(skipped)}")
            break
    if len(loaded) > 1 and junit_path is not None:
        from drillkit.reports.junit import write_junit

        write_junit(reports, junit_path)
    if worst:
        raise typer.Exit(worst)


def _per_drill(path: Path | None, name: str, many: bool) -> Path | None:
    # Several drills, one --json/--html: each gets its own file, named after its scenario.
    if path is None or not many:
        return path
    return path.with_name(f"{path.stem}-{name}{path.suffix}")


def _inside(path: Path | None, folder: Path) -> bool:
    """Whether ``path`` lies in ``folder`` (or below it), compared as absolute paths."""
    if path is None:
        return False
    return path.resolve().is_relative_to(folder.resolve())


def _severity(code: int) -> int:
    # Interrupted beats harness failure beats a failed drill beats success.
    return {0: 0, 1: 1, 3: 2, 2: 2, 130: 3}.get(code, 2)


def _report(result: DrillResult) -> DrillReport:
    from drillkit.engine import environment
    from drillkit.reports.model import DrillReport, Environment, ScenarioRef

    ref = ScenarioRef(
        name=result.scenario.name, path=result.scenario_path, sha256=result.scenario_sha256
    )
    env = Environment(**environment(result.gpu))
    started = datetime.fromisoformat(result.started_at)
    finished = datetime.fromisoformat(result.finished_at)
    if result.analysis is None:  # the drill never got to t=0
        from drillkit.reports.model import LoadSummary

        load = LoadSummary(
            target_rps=result.scenario.load.rate,
            achieved_rps=0.0,
            requests=0,
            generator_saturated=False,
        )
        return DrillReport(
            drillkit_version=__version__,
            scenario=ref,
            backend=result.backend,
            environment=env,
            status=result.status,  # type: ignore[arg-type]
            started_at=started,
            finished_at=finished,
            score=0.0,
            pass_score=result.scenario.scoring.pass_score,
            load=load,
            phases=[],
            faults=[],
            checks=[],
            series=[],
            error=result.error,
        )
    return DrillReport.from_analysis(
        result.analysis,
        scenario=ref,
        backend=result.backend,
        environment=env,
        started_at=started,
        finished_at=finished,
        status=result.status,  # type: ignore[arg-type]
        error=result.error,
        notes=result.notes,
    )


def _write(
    report: DrillReport,
    scenario: Scenario,
    folder: Path,
    json_path: Path | None,
    junit_path: Path | None,
    html_path: Path | None,
    ci: bool,
    run_junit: Path | None = None,
) -> None:
    """Write the reports of one drill. ``junit_path`` is this drill's own JUnit file (None
    with several drills); ``run_junit`` the run's ``--junit`` either way: inside ``folder`` it
    replaces the dated JUnit copy."""
    from drillkit.reports.history import append_history, entry_for
    from drillkit.reports.jsonfile import write_report
    from drillkit.reports.junit import write_junit

    t = terminal()
    formats = set(scenario.report.formats)
    stamp = report.started_at.strftime("%Y%m%dT%H%M%S")
    base = folder / f"{scenario.name}-{stamp}"
    written: list[Path] = []
    try:
        # The dated JSON copy is what the history points at, so it is always written.
        dated = write_report(report, base.with_suffix(".json"))
        written += [dated, write_report(report, folder / "last.json")]
        if json_path is not None:
            written.append(write_report(report, json_path))
        # A --junit file inside the report folder is the run's JUnit there: a second, dated
        # copy would make a `reports/*.xml` glob count every check twice.
        if ("junit" in formats or ci) and not _inside(run_junit, folder):
            written.append(write_junit([report], base.with_suffix(".xml")))
        if junit_path is not None:
            written.append(write_junit([report], junit_path))
        if "html" in formats or html_path is not None:
            from drillkit.reports.html import write_html

            with t.progress("report") as update:
                update("plotting the timeline", -1)
                if "html" in formats:
                    written += write_html(report, base.with_suffix(".html"))
                if html_path is not None:
                    written += write_html(report, html_path)
        written.append(append_history(folder, entry_for(report, dated, folder)))
    except OSError as exc:
        raise EnvironmentFailure(
            f"cannot write reports to {folder}: {exc.strerror or exc} (the verdict above "
            "stands; the files are not there)"
        ) from exc
    t.info("reports: " + ", ".join(str(p) for p in written))
