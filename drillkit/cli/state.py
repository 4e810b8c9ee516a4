"""The process-wide terminal, set by the root callback (``--quiet`` / ``--verbose``)."""

from __future__ import annotations

from drillkit.cli.console import Terminal

_terminal = Terminal()


def set_terminal(value: Terminal) -> None:
    global _terminal
    _terminal = value


def terminal() -> Terminal:
    return _terminal
