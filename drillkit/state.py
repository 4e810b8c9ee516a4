"""Where stacks live on disk, and who may act on one.

Every stack has its own folder, ``<state folder>/stacks/<stack id>/``, holding everything that
is about it alone: its saved state (``stack.json``), its fault journal and the backups that
journal needs, its logs, the data prepared for it, and a lock. Two drills on one machine
therefore never share a file: each heals only its own faults, and compacting one journal
cannot drop another's entries.

The lock (``flock`` on ``lock``) is held by the process that drives the stack: a drill for its
whole life, ``stack up`` while it starts the stack. ``drillkit heal`` and ``stack down`` take
it before they act, so they never pull a stack from under a running drill; the kernel drops it
when its holder dies, which is how ``heal`` knows a drill was killed.

drillkit runs as root in many CI jobs, so nothing read here is trusted: a stack id must have
the form drillkit gives it (it becomes part of paths and process matches), and a state folder
owned by another user, or writable by anyone but its owner, is refused (exit 3) rather than
used: whoever can write it could make drillkit act on their behalf.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import stat
from pathlib import Path

from drillkit import paths
from drillkit.errors import EnvironmentFailure, InputError, StateError

__all__ = [
    "STACK_ENV",
    "STACK_ID_PATTERN",
    "check_id",
    "held_here",
    "hold",
    "holder",
    "prune",
    "release",
    "root",
    "stack_dir",
    "stack_ids",
]

#: ``YYYYmmdd-HHMMSS-xxxxxx``: what :func:`drillkit.stacks.base.new_stack_id` makes.
STACK_ID_PATTERN = r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}"
_STACK_ID = re.compile(STACK_ID_PATTERN)
#: In the environment of every process drillkit starts for a stack (services, the link
#: proxy, the load generator, a load spike): how `stack down` and `heal` recognise the
#: stack's processes, together with a recorded pid and start time, never by a command line.
STACK_ENV = "DRILLKIT_STACK_ID"
STATE_FILE = "stack.json"
JOURNAL_FILE = "journal.jsonl"
LOCK_FILE = "lock"
#: Folders of stacks that are gone (their logs) kept for a look afterwards.
KEEP_FINISHED = 20
#: A stack folder holding one of these is not finished: a stack runs, or a fault needs healing.
_BUSY = (STATE_FILE, JOURNAL_FILE)

_held: dict[str, int] = {}  # stack id -> the fd of the lock this process holds


def check_id(stack_id: object) -> str:
    """``stack_id`` if it has the form drillkit gives stack ids, else InputError."""
    if not isinstance(stack_id, str) or not _STACK_ID.fullmatch(stack_id):
        raise InputError(f"{stack_id!r} is not a stack id (expected YYYYmmdd-HHMMSS-xxxxxx)")
    return stack_id


def _check_folder(path: Path) -> None:
    """Refuse a folder another user owns or others may write: exit 3."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise EnvironmentFailure(f"{path}: the state folder is not a plain folder; refusing it")
    if info.st_uid != os.geteuid():
        raise EnvironmentFailure(
            f"{path}: the state folder belongs to uid {info.st_uid}, not to this user "
            f"({os.geteuid()}); refusing to act on what another user may have written"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise EnvironmentFailure(
            f"{path}: the state folder is writable by others (mode "
            f"{stat.S_IMODE(info.st_mode):03o}); run `chmod go-w {path}` or move it "
            "(DRILLKIT_STATE_DIR)"
        )


def root() -> Path:
    """The state folder, made (mode 0700) when missing, checked when present."""
    folder = paths.state_dir()
    if not folder.exists():
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
    _check_folder(folder)
    return folder


def stacks_dir() -> Path:
    folder = root() / "stacks"
    if not folder.exists():
        folder.mkdir(mode=0o700, exist_ok=True)
    _check_folder(folder)
    return folder


def stack_dir(stack_id: str) -> Path:
    """The folder of stack ``stack_id`` (a valid id), whether or not it exists yet."""
    return stacks_dir() / check_id(stack_id)


def stack_ids(*, with_file: str = STATE_FILE) -> list[str]:
    """The stacks whose folder holds ``with_file`` (by default a saved state), oldest first."""
    folder = stacks_dir()
    found = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if (
            _STACK_ID.fullmatch(entry.name)
            and entry.is_dir(follow_symlinks=False)
            and os.path.lexists(os.path.join(entry.path, with_file))
        ):
            found.append(entry.name)
    return found


def _lock_path(stack_id: str) -> Path:
    folder = stack_dir(stack_id)
    folder.mkdir(mode=0o700, exist_ok=True)
    _check_folder(folder)  # not a link to elsewhere, this user's, not writable by others
    return folder / LOCK_FILE


def hold(stack_id: str) -> None:
    """Take the stack's lock for this process (until :func:`release` or exit); StateError
    (exit 2) naming the holder when another process has it."""
    if stack_id in _held:
        return
    fd = os.open(_lock_path(stack_id), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        who = holder(stack_id)
        raise StateError(
            f"stack {stack_id} is in use by another drillkit (pid {who}); stop that one first"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[stack_id] = fd


def release(stack_id: str) -> None:
    """Let the stack's lock go (a no-op when this process does not hold it)."""
    fd = _held.pop(stack_id, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def held_here(stack_id: str) -> bool:
    """Whether this process holds the stack's lock."""
    return stack_id in _held


def holder(stack_id: str) -> int | None:
    """The pid of the process holding the stack's lock, or None when nobody does (this
    process counts as nobody: it may act on what it holds)."""
    if stack_id in _held:
        return None
    path = stack_dir(stack_id) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def prune(keep: int = KEEP_FINISHED) -> list[str]:
    """Remove the folders of finished stacks (no saved state, no journal, nobody holding the
    lock) but the newest ``keep``; return the ids removed. Only folders named like a stack id,
    directly under the stacks folder, and never through a symlink."""
    folder = stacks_dir()
    finished = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if not (_STACK_ID.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)):
            continue
        if entry.name in _held or any(os.path.lexists(os.path.join(entry.path, f)) for f in _BUSY):
            continue
        finished.append(entry.name)
    removed = []
    for stack_id in finished[: max(0, len(finished) - keep)]:
        path = folder / stack_id
        try:
            fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # someone acts on it right now
            if any(os.path.lexists(path / f) for f in _BUSY):
                continue
            shutil.rmtree(path, ignore_errors=True)  # symlink-safe: removes links, not targets
            removed.append(stack_id)
        finally:
            os.close(fd)
    return removed
