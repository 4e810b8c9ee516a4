"""``drillkit heal``: undo every fault recorded in the journal, even one a killed drillkit left."""

from __future__ import annotations

import typer

from drillkit.cli.state import terminal
from drillkit.healing import heal_all


def heal() -> None:
    """Undo every fault recorded in the journal; take down a stack whose drill was killed."""
    t = terminal()
    outcome = heal_all()
    for line in outcome.lines:
        t.result(line)
    if not outcome.lines:
        t.result("nothing to heal")
    if outcome.failures:
        raise typer.Exit(1)
