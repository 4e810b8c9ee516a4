"""The one module that talks to the terminal (rich).

Results go to stdout (so ``--json`` output can be piped), everything for the human (progress,
warnings, errors) goes to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

Row = Sequence[object]


class Terminal:
    def __init__(self, *, quiet: bool = False, verbose: bool = False) -> None:
        self.quiet = quiet
        self.verbose = verbose
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        # Piped or in CI, rich assumes 80 columns, which crushes the report tables.
        if not self.out.is_terminal:
            self.out.width = 160
        if not self.err.is_terminal:
            self.err.width = 160

    def error(self, message: str) -> None:
        # One line, no markup interpretation: messages may contain [brackets] from user input.
        self.err.print(f"drillkit: error: {message}", markup=False, style="bold red")

    def warn(self, message: str) -> None:
        self.err.print(f"drillkit: warning: {message}", markup=False, style="yellow")

    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message, markup=False)

    def result(self, message: str, style: str | None = None) -> None:
        self.out.print(message, markup=False, style=style)

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def table(
        self,
        title: str,
        columns: Sequence[str],
        rows: Sequence[Row],
        styles: Sequence[str | None] | None = None,
    ) -> None:
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        for column in columns:
            table.add_column(column)
        for i, row in enumerate(rows):
            table.add_row(
                *(str(cell) for cell in row), style=styles[i] if styles is not None else None
            )
        self.out.print(table)

    @contextmanager
    def progress(self, title: str) -> Iterator[Callable[[str, float], None]]:
        """A live progress line; yields ``update(message, fraction)`` (fraction < 0: unknown)."""
        if self.quiet or not self.err.is_terminal:
            last: list[str] = []

            def plain(message: str, fraction: float) -> None:
                # Line logs for CI: one line per new step, not per percent.
                if not self.quiet and (not last or last[-1] != message):
                    last.append(message)
                    self.err.print(f"{title}: {message}", markup=False)

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
                bar.update(
                    task,
                    description=message,
                    total=None if fraction < 0 else 1.0,
                    completed=max(fraction, 0.0),
                )

            yield update
