"""The one module that talks to the terminal (rich).

Results go to stdout (so ``--json`` output can be piped), everything for the human (progress,
warnings, errors) goes to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from drillkit.text import printable

Row = Sequence[object]


class Terminal:
    def __init__(self, *, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet = quiet
        self.verbose = verbose
        # emoji=False: a scenario key spelled ':smile:' must be printed as written.
        self.out = Console(highlight=False, soft_wrap=True, emoji=False)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
        # Piped or in CI, rich assumes 80 columns, which crushes the report tables.
        if not self.out.is_terminal:
            self.out.width = 160
        if not self.err.is_terminal:
            self.err.width = 160

    # Every message may carry text from outside (file names, scenario fields, a service's own
    # words): no markup interpretation, and no control character reaches the terminal.

    def error(self, message: str) -> None:
        self.err.print(f"drillkit: error: {printable(message)}", markup=False, style="bold red")

    def warn(self, message: str) -> None:
        self.err.print(f"drillkit: warning: {printable(message)}", markup=False, style="yellow")

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(printable(message), markup=False)

    def result(self, message: str, style: str | None = None) -> None:
        self.out.print(printable(message), markup=False, style=style)

    def document(self, text: str) -> None:
        """A whole document for another tool (Markdown), written as it is: no wrapping, no
        styling. Its parts from outside were made printable by whoever wrote it."""
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def debug(self, message: str) -> None:
        """Detail for ``--verbose``: commands, paths, timings."""
        if self.verbose and not self.quiet:
            self.err.print(printable(message), markup=False, style="dim")

    def table(
        self,
        title: str,
        columns: Sequence[str],
        rows: Sequence[Row],
        styles: Sequence[str | None] | None = None,
    ) -> None:
        self.out.print(make_table(title, columns, rows, styles))

    @contextmanager
    def watch(self) -> Iterator[Callable[[Sequence[Table | str]], None]]:
        """A screen redrawn in place; yields ``show(parts)`` (tables and lines).

        Off a terminal every ``show`` prints the parts again, one block per refresh, so a
        piped ``--watch`` still makes a readable log.
        """

        if not self.out.is_terminal:
            yield self.parts
            return
        with Live(console=self.out, auto_refresh=False, screen=False) as live:
            yield lambda parts: live.update(_group(parts), refresh=True)

    def parts(self, parts: Sequence[Table | str]) -> None:
        """Print tables and plain lines (no markup) to stdout."""
        self.out.print(_group(parts))

    @contextmanager
    def progress(self, title: str) -> Iterator[Callable[[str, float], None]]:
        """A live progress line; yields ``update(message, fraction)`` (fraction < 0: unknown).

        Off a terminal (CI) each new step is one log line; ``--verbose`` also keeps every
        step, with the seconds since the start, above the live bar; ``--quiet`` shows none.
        """
        started = time.monotonic()
        last: list[str] = []

        def step_line(message: str) -> str | None:
            message = printable(message)
            if last and last[-1] == message:
                return None
            last.append(message)
            stamp = f" (+{time.monotonic() - started:.1f} s)" if self.verbose else ""
            return f"{title}: {message}{stamp}"

        if self.quiet or not self.err.is_terminal:

            def plain(message: str, fraction: float) -> None:
                # Line logs for CI: one line per new step, not per percent.
                line = step_line(message)
                if line is not None and not self.quiet:
                    self.err.print(line, markup=False)

            yield plain
            return
        with Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[title]}[/]"),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=self.err,
            transient=True,
        ) as bar:
            task = bar.add_task("", total=None, title=title)

            def update(message: str, fraction: float) -> None:
                line = step_line(message)
                if line is not None and self.verbose:
                    bar.console.print(line, markup=False, style="dim")
                bar.update(
                    task,
                    description=escape(printable(message)),
                    total=None if fraction < 0 else 1.0,
                    completed=max(fraction, 0.0),
                )

            yield update


def make_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Row],
    styles: Sequence[str | None] | None = None,
) -> Table:
    table = Table(
        title=Text(printable(title)), title_justify="left", show_edge=False, pad_edge=False
    )
    for column in columns:
        table.add_column(column)
    for i, row in enumerate(rows):
        # Text, not str: a cell's [brackets] (user input, error messages) are not markup.
        table.add_row(
            *(Text(printable(str(cell))) for cell in row),
            style=styles[i] if styles is not None else None,
        )
    return table


def _group(parts: Sequence[Table | str]) -> RenderableType:
    return Group(*(p if isinstance(p, Table) else Text(printable(p)) for p in parts))
