"""drillkit's command line. Commands are thin: parse, call the library, render."""

from __future__ import annotations

import signal
import sys
import warnings

import typer

from drillkit import __version__
from drillkit.cli import (
    backup,
    drill,
    fault,
    heal,
    model,
    monitoring,
    report,
    run,
    stack,
    status,
    worker,
)
from drillkit.cli.console import Terminal
from drillkit.cli.state import set_terminal, terminal
from drillkit.errors import DrillkitError

app = typer.Typer(
    name="drillkit",
    help="Disaster-recovery drills for GPU recommender services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)
app.add_typer(stack.app, name="stack")
app.add_typer(model.app, name="model")
app.add_typer(fault.app, name="fault")
app.add_typer(report.app, name="report")
app.add_typer(monitoring.app, name="monitoring")
app.add_typer(backup.app, name="backup")
app.command()(run.run)
app.command()(status.status)
app.command()(drill.validate)
app.command(name="schema")(drill.schema)
app.command(name="list")(drill.list_)
app.command()(heal.heal)
app.command()(worker.worker)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"drillkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only results and errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More detail."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose contradict each other")
    set_terminal(Terminal(quiet=quiet, verbose=verbose))


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    # A broken fault plugin (or any library's warning) is one line, not a source excerpt.
    terminal().warn(str(message))


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Console-script entry point: expected errors become one line and an exit code."""
    warnings.showwarning = _show_warning
    # SIGTERM (a CI job cancelled, `kill`) is an interrupt like Ctrl-C: every command unwinds
    # through its clean-up instead of dying where it stands.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except DrillkitError as exc:
        terminal().error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        terminal().error("interrupted")
        sys.exit(130)
