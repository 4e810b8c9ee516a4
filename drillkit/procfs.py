"""drillkit's one reader of Linux's ``/proc``: process state, start time, process group,
arguments and environment, for the local backend, the load driver, fault kinds and heal.

Every reader returns None (or nothing) for a process that is gone or not readable, never
raises: a process can exit between listing ``/proc`` and reading its files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Stat",
    "argv",
    "environ_has",
    "group_members",
    "live",
    "pids",
    "proc_state",
    "stat",
]

_PROC = Path("/proc")


@dataclass(frozen=True)
class Stat:
    """The fields of ``/proc/PID/stat`` drillkit uses."""

    state: str  # the kernel's one-letter state: R, S, D, T (stopped), Z (zombie), X, ...
    pgrp: int
    start_time: int  # clock ticks after boot: with the pid, names one process for good


def stat(pid: int) -> Stat | None:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        return Stat(state=fields[0], pgrp=int(fields[2]), start_time=int(fields[19]))
    except (IndexError, ValueError):
        return None


def proc_state(pid: int) -> str | None:
    """The kernel's one-letter state of a process, or None when it does not exist."""
    found = stat(pid)
    return found.state if found is not None else None


def live(pid: int) -> bool:
    """Present and not a zombie."""
    return proc_state(pid) not in (None, "Z", "X")


def pids() -> Iterator[int]:
    """Every process id, in no order."""
    try:
        entries = list(_PROC.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.isdigit():
            yield int(entry.name)


def argv(pid: int) -> list[bytes] | None:
    """The process's arguments, or None. Before a child has exec'd, they are its parent's."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.split(b"\0")[:-1] if raw.endswith(b"\0") else raw.split(b"\0")


def environ_has(pid: int, entry: bytes) -> bool:
    """Whether the process started with exactly ``NAME=VALUE`` in its environment."""
    try:
        raw = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return entry in raw.split(b"\0")


def group_members(pgid: int) -> list[int]:
    """Pids of the running processes in group ``pgid`` (zombies excluded: an orphan that
    already died is only waiting for init to reap it)."""
    if not _PROC.is_dir():  # not Linux: the kernel's view, zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    found = []
    for pid in pids():
        info = stat(pid)
        if info is not None and info.pgrp == pgid and info.state not in ("Z", "X"):
            found.append(pid)
    return found
