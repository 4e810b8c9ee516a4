"""``corrupt_file``: a file in one of the target's volumes is damaged, and put back at the
heal. The generalisation of ``corrupt_model`` to any stack: a config file, an index, a
database file of a team's own service.

The file is named as the service sees it (``/data/app.db``); the backend says where that lies
on the host (:meth:`~drillkit.backends.base.Backend.host_path`: a bind mount's folder or a
volume's mount point). Before anything changes, the journal holds the undo record and a copy
of the file is kept in the stack's private backup folder; the heal writes the copy back under
a temporary name and renames it over the damaged one, with the original's mode and owner.

What is found on the host is not trusted: the file must be a regular file with no symbolic
link between the mount's folder and it (a container can put links in its own volumes, and
drillkit may run as root), and the heal finds the file again through the backend rather than
believing the record.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import stat
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from drillkit.errors import EnvironmentFailure, InputError, TargetError
from drillkit.faults.base import ANY_SERVICE, FaultKind, UndoModel, UndoRecord
from drillkit.faults.context import FaultContext
from drillkit.faults.params import CorruptFileParams
from drillkit.fsutil import contained
from drillkit.stacks.plan import NAME_PATTERN

__all__ = ["CorruptFile"]

_SAVED_NAME = "original"


class _Undo(UndoModel):
    service: str = Field(pattern=f"^{NAME_PATTERN}$")
    path: str = Field(pattern=r"^/[^\x00]{0,1023}$")
    file: str
    saved: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _the_file(ctx: FaultContext, service: str, path: str) -> Path:
    """The host file behind ``path`` in ``service``: a regular file inside its mount's folder
    with no link on the way; TargetError otherwise."""
    root, file = ctx.backend.host_path(ctx.state, service, path)
    try:
        contained(file, [root], what=f"{path} of {service}")
    except InputError as exc:
        raise TargetError(str(exc)) from None
    try:
        mode = os.lstat(file).st_mode
    except FileNotFoundError:
        raise TargetError(f"{path} of {service} does not exist ({file} on the host)") from None
    if not stat.S_ISREG(mode):
        raise TargetError(f"{path} of {service} is not a regular file")
    return file


def _damage(file: Path, params: CorruptFileParams, seed: str) -> int:
    """Damage the file in place; how many bytes changed (or were cut)."""
    size = file.stat().st_size
    flags = os.O_RDWR | os.O_NOFOLLOW
    fd = os.open(file, flags)
    try:
        if params.mode == "truncate":
            keep = int(size * params.keep)
            os.ftruncate(fd, keep)
            return size - keep
        if size == 0:
            raise EnvironmentFailure(f"{file} is empty: there is nothing to {params.mode}")
        count = min(params.bytes, size)
        if params.mode == "zero":
            start = max(0, size // 2 - count // 2)
            os.pwrite(fd, b"\0" * count, start)
            return count
        rng = random.Random(seed)
        for offset in sorted(rng.sample(range(size), count)):
            byte = os.pread(fd, 1, offset)[0]
            os.pwrite(fd, bytes([byte ^ (1 << rng.randrange(8))]), offset)
        return count
    finally:
        os.fsync(fd)
        os.close(fd)


class CorruptFile(FaultKind[CorruptFileParams]):
    name: ClassVar[str] = "corrupt_file"
    Params = CorruptFileParams
    description: ClassVar[str] = "a file in the target's volume is damaged until the heal"
    target_roles: ClassVar[frozenset[str]] = frozenset({ANY_SERVICE})
    needs: ClassVar[frozenset[str]] = frozenset({"host_path"})

    def apply(self, ctx: FaultContext, target: str, params: CorruptFileParams) -> UndoRecord:
        file = _the_file(ctx, target, params.path)
        folder = ctx.journal.new_backup_dir()
        saved = folder / _SAVED_NAME
        undo = {
            "service": target,
            "path": params.path,
            "file": str(file),
            "saved": str(saved),
            "sha256": _digest(file),
        }
        record = ctx.begin(self.name, target, undo)
        shutil.copy2(file, saved, follow_symlinks=False)
        changed = _damage(file, params, f"{ctx.fault_id}:{params.path}")
        return ctx.amend(record, changed=changed)

    def check_applied(
        self, ctx: FaultContext, target: str, params: CorruptFileParams, record: UndoRecord
    ) -> str:
        undo = _Undo.parse(record)
        file = Path(undo.file)
        if _digest(file) == undo.sha256:
            raise EnvironmentFailure(f"{undo.path} of {target} is unchanged after {params.mode}")
        changed = record.get("changed")
        what = "bytes cut" if params.mode == "truncate" else "bytes damaged"
        return f"{undo.path} of {target} ({file} on the host): {params.mode}, {changed} {what}"

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        undo = _Undo.parse(record)
        saved = contained(undo.saved, [ctx.journal.backups], what="saved copy")
        if not saved.exists():
            return  # healed before (the copy goes once it is back), or never applied
        # Found again through the backend, never taken from the record alone.
        file = _the_file(ctx, undo.service, undo.path)
        if str(file) != undo.file:
            raise InputError(
                f"undo record refused: {undo.path} of {undo.service} is {file} now, not {undo.file}"
            )
        info = os.lstat(saved)
        temporary = file.with_name(f".{file.name}.drillkit-restore")
        shutil.copyfile(saved, temporary, follow_symlinks=False)
        os.chmod(temporary, stat.S_IMODE(info.st_mode))
        if os.geteuid() == 0:
            os.chown(temporary, info.st_uid, info.st_gid)
        os.replace(temporary, file)
        if _digest(file) != undo.sha256:
            raise EnvironmentFailure(f"{undo.path} of {undo.service}: the copy put back differs")
        shutil.rmtree(saved.parent, ignore_errors=True)
