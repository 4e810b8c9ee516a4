"""``drillkit heal``: undo every fault recorded in the journal, even one a killed drillkit left."""

from __future__ import annotations

import typer

from drillkit.cli.state import terminal
from drillkit.healing import heal_all


def heal(
    stack: str | None = typer.Option(
        None, "--stack", help="Heal this stack only (default: every stack with something to heal)."
    ),
) -> None:
    """Undo every fault recorded in the journals; take down a stack whose drill was killed. A
    stack a running drill drives is left to that drill (exit 1, naming it)."""
    t = terminal()
    outcome = heal_all(stack)
    for line in outcome.lines:
        t.result(line)
    if not outcome.lines:
        t.result("nothing to heal")
    if not outcome.ok:
        raise typer.Exit(1)
