"""Small readings of Linux's /proc shared by the local backend and fault kinds."""

from __future__ import annotations

from pathlib import Path


def proc_state(pid: int) -> str | None:
    """The kernel's one-letter state of a process, or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat[stat.rindex(")") + 2]
