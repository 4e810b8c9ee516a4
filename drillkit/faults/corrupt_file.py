"""``corrupt_file``: a file in one of the target's volumes is damaged, and put back at the
heal. The generalisation of ``corrupt_model`` to any stack: a config file, an index, a
database file of a team's own service.

The file is named as the service sees it (``/data/app.db``); the backend says where that lies
on the host (:meth:`~drillkit.backends.base.Backend.host_path`: a bind mount's folder or a
volume's mount point). Before anything changes, the journal holds the undo record (with the
file's mode and owner) and a copy of the file is kept in the stack's private backup folder;
the heal writes the copy back into the same file, in place (a container that bind-mounts the
file itself sees it back), and restores its mode and owner.

Nothing found on the host is trusted: a running container controls what is in its own
volumes, and drillkit may run as root. The file is reached by walking from the mount's folder
one name at a time with ``O_NOFOLLOW`` (a symbolic link anywhere on the way is refused, and a
swap between a check and a use cannot redirect it), it must be a regular file, and every read
and write, the heal's included, goes through that one file descriptor.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from drillkit.errors import EnvironmentFailure, InputError, TargetError
from drillkit.faults.base import ANY_SERVICE, FaultKind, UndoModel, UndoRecord
from drillkit.faults.context import FaultContext
from drillkit.faults.params import CorruptFileParams
from drillkit.fsutil import contained
from drillkit.stacks.plan import NAME_PATTERN

__all__ = ["CorruptFile", "open_beneath"]

_SAVED_NAME = "original"
_CHUNK = 1 << 20


class _Undo(UndoModel):
    service: str = Field(pattern=f"^{NAME_PATTERN}$")
    path: str = Field(pattern=r"^/[^\x00]{0,1023}$")
    file: str
    saved: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    mode: int = Field(ge=0, le=0o7777)
    uid: int = Field(ge=0)
    gid: int = Field(ge=0)


@contextlib.contextmanager
def open_beneath(root: Path, relative: str, *, what: str) -> Iterator[int]:
    """A read-write descriptor of the regular file ``relative`` below the folder ``root``,
    reached one name at a time without following any symbolic link; TargetError when a link,
    a missing name or anything but a regular file is on the way."""
    parts = [p for p in relative.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise TargetError(f"{what}: expected a file below its mount, got {relative!r}")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    opened: list[int] = []
    try:
        try:
            folder = os.open(root, flags)
            opened.append(folder)
            for name in parts[:-1]:
                folder = os.open(name, flags, dir_fd=folder)
                opened.append(folder)
            # O_NONBLOCK: a FIFO put there must not hang the drill; it is refused below.
            fd = os.open(
                parts[-1],
                os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                dir_fd=folder,
            )
        except FileNotFoundError:
            raise TargetError(f"{what} does not exist") from None
        except OSError as exc:  # ELOOP, ENOTDIR: a link or a file where a folder should be
            raise TargetError(
                f"{what}: refused ({exc.strerror}: a symbolic link on its way?)"
            ) from None
        opened.append(fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TargetError(f"{what} is not a regular file")
        os.set_blocking(fd, True)
        yield fd
    finally:
        for descriptor in reversed(opened):
            with contextlib.suppress(OSError):
                os.close(descriptor)


def _digest(fd: int) -> str:
    sha = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        sha.update(chunk)
        offset += len(chunk)
    return sha.hexdigest()


def _locate(ctx: FaultContext, service: str, path: str) -> tuple[Path, str, Path]:
    """The mount's folder on the host, the file's path below it, and the file's host path."""
    root, file = ctx.backend.host_path(ctx.state, service, path)
    try:
        relative = file.relative_to(root)
    except ValueError:
        raise TargetError(f"{path} of {service} is not below its mount {root}") from None
    return root, str(relative), file


def _damage(fd: int, params: CorruptFileParams, seed: str, what: str) -> int:
    """Damage the file in place; how many bytes changed (or were cut)."""
    size = os.fstat(fd).st_size
    if params.mode == "truncate":
        keep = int(size * params.keep)
        os.ftruncate(fd, keep)
        return size - keep
    if size == 0:
        raise EnvironmentFailure(f"{what} is empty: there is nothing to {params.mode}")
    count = min(params.bytes, size)
    if params.mode == "zero":
        os.pwrite(fd, b"\0" * count, max(0, size // 2 - count // 2))
        return count
    rng = random.Random(seed)
    for offset in sorted(rng.sample(range(size), count)):
        byte = os.pread(fd, 1, offset)[0]
        os.pwrite(fd, bytes([byte ^ (1 << rng.randrange(8))]), offset)
    return count


class CorruptFile(FaultKind[CorruptFileParams]):
    name: ClassVar[str] = "corrupt_file"
    Params = CorruptFileParams
    description: ClassVar[str] = "a file in the target's volume is damaged until the heal"
    target_roles: ClassVar[frozenset[str]] = frozenset({ANY_SERVICE})
    needs: ClassVar[frozenset[str]] = frozenset({"host_path"})

    def apply(self, ctx: FaultContext, target: str, params: CorruptFileParams) -> UndoRecord:
        root, relative, file = _locate(ctx, target, params.path)
        what = f"{params.path} of {target}"
        with open_beneath(root, relative, what=what) as fd:
            info = os.fstat(fd)
            folder = ctx.journal.new_backup_dir()
            saved = folder / _SAVED_NAME
            undo = {
                "service": target,
                "path": params.path,
                "file": str(file),
                "saved": str(saved),
                "sha256": _digest(fd),
                "mode": stat.S_IMODE(info.st_mode),
                "uid": info.st_uid,
                "gid": info.st_gid,
            }
            record = ctx.begin(self.name, target, undo)
            with open(saved, "xb") as copy:  # the private backup folder is drillkit's own
                offset = 0
                while chunk := os.pread(fd, _CHUNK, offset):
                    copy.write(chunk)
                    offset += len(chunk)
                copy.flush()
                os.fsync(copy.fileno())
            changed = _damage(fd, params, f"{ctx.fault_id}:{params.path}", what)
            os.fsync(fd)
        return ctx.amend(record, changed=changed)

    def check_applied(
        self, ctx: FaultContext, target: str, params: CorruptFileParams, record: UndoRecord
    ) -> str:
        undo = _Undo.parse(record)
        root, relative, file = _locate(ctx, target, undo.path)
        with open_beneath(root, relative, what=f"{undo.path} of {target}") as fd:
            if _digest(fd) == undo.sha256:
                raise EnvironmentFailure(
                    f"{undo.path} of {target} is unchanged after {params.mode}"
                )
        changed = record.get("changed")
        what = "bytes cut" if params.mode == "truncate" else "bytes damaged"
        return f"{undo.path} of {target} ({file} on the host): {params.mode}, {changed} {what}"

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        undo = _Undo.parse(record)
        saved = contained(undo.saved, [ctx.journal.backups], what="saved copy")
        if not saved.exists():
            return  # healed before (the copy goes once it is back), or never applied
        # Found again through the backend, never taken from the record alone.
        root, relative, file = _locate(ctx, undo.service, undo.path)
        if str(file) != undo.file:
            raise InputError(
                f"undo record refused: {undo.path} of {undo.service} is {file} now, not {undo.file}"
            )
        with open_beneath(root, relative, what=f"{undo.path} of {undo.service}") as fd:
            # In place, through the descriptor: the same inode a container may have mounted.
            os.ftruncate(fd, 0)
            offset = 0
            with open(saved, "rb") as copy:
                while chunk := copy.read(_CHUNK):
                    os.pwrite(fd, chunk, offset)
                    offset += len(chunk)
            os.fsync(fd)
            os.fchmod(fd, undo.mode)
            if os.geteuid() == 0:
                os.fchown(fd, undo.uid, undo.gid)
            if _digest(fd) != undo.sha256:
                raise EnvironmentFailure(
                    f"{undo.path} of {undo.service}: the copy put back differs"
                )
        saved.unlink()
        with contextlib.suppress(OSError):
            saved.parent.rmdir()
