"""File-system helpers shared by everything that writes state a crash must not tear."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path


def atomic_write(path: str | os.PathLike[str], data: bytes, *, mode: int | None = None) -> Path:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one, whole.

    The temporary file lives in the same folder (``os.replace`` is only atomic within one
    file system) and is fsynced before the rename, so a crash cannot leave a torn file; the
    folder is created when missing. ``mode`` sets the permissions before the file appears.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Persist the rename itself; not every platform lets a folder be opened, hence best effort.
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return target


def read_private(path: str | os.PathLike[str], *, limit: int) -> bytes:
    """The bytes of a file drillkit wrote for itself, read without trusting the path: a link
    is not followed, and anything but a regular file of this user's, or one larger than
    ``limit`` bytes, is an :class:`~drillkit.errors.InputError`. FileNotFoundError when it is
    missing."""
    from drillkit.errors import InputError

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{path}: is a symbolic link; refusing to follow it") from None
        if isinstance(exc, FileNotFoundError):
            raise
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path}: is not a regular file")
        if info.st_uid != os.geteuid():
            raise InputError(f"{path}: belongs to uid {info.st_uid}, not to this user")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{path}: larger than {limit} bytes; not a file drillkit wrote")
    return data


def contained(path: str | os.PathLike[str], roots: Sequence[Path], *, what: str) -> Path:
    """``path`` if it lies inside one of ``roots`` with no symbolic link below the root; an
    :class:`~drillkit.errors.InputError` naming ``what`` otherwise. For paths read from files
    an attacker may have written (a journal's undo record): nothing outside the stack's own
    folders may be touched, whatever the record says."""
    from drillkit.errors import InputError

    candidate = Path(path)
    if not candidate.is_absolute() or ".." in candidate.parts:
        raise InputError(f"{what} {str(path)!r}: expected an absolute path without '..'")
    for root in roots:
        base = Path(root)
        if not candidate.is_relative_to(base):
            continue
        part = base
        for name in candidate.relative_to(base).parts:
            part = part / name
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISLNK(os.lstat(part).st_mode):
                    raise InputError(f"{what} {str(path)!r}: {part} is a symbolic link")
        if candidate.resolve().is_relative_to(base.resolve()):
            return candidate
    allowed = ", ".join(str(r) for r in roots) or "nothing"
    raise InputError(f"{what} {str(path)!r} lies outside the stack's folders ({allowed})")
