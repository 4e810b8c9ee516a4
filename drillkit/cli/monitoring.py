"""``drillkit monitoring``: the stack's alert rules, for a team to load into its own Prometheus."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from drillkit.cli.state import terminal


def parse_duration_option(text: str) -> float:
    """A duration option (``30s``, ``1m``, ``1.5``): seconds; exit 2 with one line when bad."""
    from drillkit.errors import InputError
    from drillkit.scenario.units import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise InputError(f"{text!r}: {exc}") from None
    if seconds <= 0:
        raise InputError(f"{text!r}: expected a duration above 0")
    return seconds


app = typer.Typer(help="The stack's monitoring: the alert rules it ships.", no_args_is_help=True)


@app.command()
def rules(
    scenario: Path | None = typer.Option(
        None,
        "--scenario",
        help="Time the rules as this scenario's monitoring: section does (a file or a bundled "
        "name); default: drillkit's drill timing.",
    ),
    alert_for: str | None = typer.Option(
        None, "--for", help="The rules' `for:` (e.g. 1m for production; default 2s)."
    ),
    rate_window: str | None = typer.Option(
        None, "--rate-window", help="The ratio rules' range (e.g. 5m; default 5s)."
    ),
    p99_ms: float | None = typer.Option(
        None, "--p99-ms", min=1, help="The latency rule's p99 threshold (default 250)."
    ),
) -> None:
    """Print the shipped alert rules (a Prometheus rule file) on stdout."""
    from drillkit.stacks.recommender.monitoring import render_rules
    from drillkit.stacks.recommender.spec import MonitoringSettings

    settings = MonitoringSettings()
    if scenario is not None:
        from drillkit.cli.drill import resolve_scenario
        from drillkit.scenario import load_scenario

        loaded = load_scenario(resolve_scenario(scenario))
        settings = loaded.stack_spec().monitoring
    if alert_for is not None or rate_window is not None or p99_ms is not None:
        settings = dataclasses.replace(
            settings,
            alert_for=settings.alert_for if alert_for is None else parse_duration_option(alert_for),
            rate_window=(
                settings.rate_window if rate_window is None else parse_duration_option(rate_window)
            ),
            p99_ms=settings.p99_ms if p99_ms is None else p99_ms,
        )
    terminal().document(render_rules(settings))
