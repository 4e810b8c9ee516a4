"""Fault kinds of the data path: ``data_loss`` (the event store crashes, loses its files or
finds one damaged; the model store is lost) and ``backup_failure`` (the backup job fails,
unseen).

``data_loss`` on ``event-store``:

* ``crash``: SIGKILL; the heal starts it again from its own files (the append-only file);
* ``wipe``: SIGKILL and every file of the store deleted; the heal starts it again, empty, and
  the backup service's restore procedure finds it without its marker and restores the newest
  backup that verifies;
* ``corrupt``: SIGKILL and the end of the newest append-only file cut mid-command (a torn
  last write); the heal starts it again and Redis loads the file up to the last whole command
  (``aof-load-truncated``).

``data_loss`` on ``model-store`` (``wipe`` only): the stack's copy of the model store is
emptied while replicas keep serving the model they hold in memory; the backup service
restores it from the newest models backup. The heal puts back the files it set aside should
the stack not have restored them.

What a drill measures of them (events lost, recovery point, time to recover) is
:mod:`drillkit.scoring.data`'s.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from drillkit.errors import EnvironmentFailure, TargetError
from drillkit.faults.base import FaultKind, UndoModel, UndoRecord
from drillkit.faults.params import FaultParams
from drillkit.stacks.recommender.spec import ROLE_BACKUP, ROLE_EVENT_STORE, ROLE_MODEL_STORE

if TYPE_CHECKING:
    from drillkit.faults.context import FaultContext
    from drillkit.journal import Journal

__all__ = ["BackupFailure", "BackupFailureParams", "DataLoss", "DataLossParams"]

#: What a backup location's staging folder is replaced with while the backup job is broken.
_BROKEN = b"drillkit backup_failure: the backup job cannot write here\n"
_SET_ASIDE = ".drillkit-lost-"


class DataLossParams(FaultParams):
    """``mode``: ``crash``, ``wipe`` or ``corrupt`` (the event store); ``wipe`` (the model
    store). ``cut_bytes``: how much of the append-only file's end ``corrupt`` cuts."""

    mode: Literal["crash", "wipe", "corrupt"] = "crash"
    cut_bytes: int = Field(default=300, ge=1, le=1 << 30)

    @model_validator(mode="after")
    def _cut_is_for_corrupt(self) -> DataLossParams:
        if self.mode != "corrupt" and "cut_bytes" in self.model_fields_set:
            raise ValueError("cut_bytes: only for mode: corrupt")
        return self


class _Undo(UndoModel):
    target: Literal["event-store", "model-store"]
    mode: Literal["crash", "wipe", "corrupt"]
    # A folder name beside the store, never a path (a journal is read as root).
    set_aside: str | None = Field(
        default=None, pattern=rf"^{re.escape(_SET_ASIDE)}[a-z0-9_-]{{1,80}}$"
    )


def _data_dir(ctx: FaultContext) -> Path:
    return Path(ctx.state.plan.service(ROLE_EVENT_STORE).mount("data").source)


def _newest_aof(folder: Path) -> Path | None:
    """The append-only file Redis writes to now: the incremental part with the highest
    number (Redis 7's multi-part layout), or a single ``*.aof``."""
    parts = sorted(
        (p for p in folder.rglob("*.incr.aof") if p.is_file() and not p.is_symlink()),
        key=lambda p: int(p.name.split(".")[-3]) if p.name.split(".")[-3].isdigit() else -1,
    )
    if parts:
        return parts[-1]
    single = [p for p in folder.rglob("*.aof") if p.is_file() and not p.is_symlink()]
    return single[-1] if single else None


def _wait_dead(ctx: FaultContext, name: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while ctx.backend.service_alive(ctx.state, name):
        if time.monotonic() > deadline:
            raise EnvironmentFailure(f"{name} is still running after SIGKILL")
        time.sleep(0.01)


class DataLoss(FaultKind[DataLossParams]):
    name: ClassVar[str] = "data_loss"
    Params = DataLossParams
    description: ClassVar[str] = (
        "the event store crashes, loses its files or finds one damaged; or the model store "
        "is lost (restored from backup)"
    )
    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_EVENT_STORE, ROLE_MODEL_STORE})

    def apply(self, ctx: FaultContext, target: str, params: DataLossParams) -> UndoRecord:
        if target == ROLE_MODEL_STORE:
            return self._lose_models(ctx, params)
        if target != ROLE_EVENT_STORE:
            raise TargetError(f"data_loss: {target!r} is neither event-store nor model-store")
        folder = _data_dir(ctx)
        record = ctx.begin(self.name, target, {"target": target, "mode": params.mode})
        ctx.backend.kill(ctx.state, target, signal="KILL")
        _wait_dead(ctx, target)
        damage: dict[str, Any] = {}
        if params.mode == "wipe":
            removed = 0
            for entry in list(folder.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    removed += sum(1 for p in entry.rglob("*") if p.is_file())
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                    removed += 1
            damage = {"files_deleted": removed}
        elif params.mode == "corrupt":
            aof = _newest_aof(folder)
            if aof is None:
                raise EnvironmentFailure(f"{folder}: no append-only file to damage")
            size = aof.stat().st_size
            keep = max(0, size - params.cut_bytes)
            with aof.open("r+b") as f:
                f.truncate(keep)
                os.fsync(f.fileno())
            damage = {"file": aof.name, "bytes_before": size, "bytes_after": keep}
        return ctx.amend(record, **damage)

    def _lose_models(self, ctx: FaultContext, params: DataLossParams) -> UndoRecord:
        from drillkit.stacks.recommender.preset import origin_store, spec_of

        if params.mode != "wipe":
            raise TargetError(f"data_loss on model-store: mode {params.mode!r}; only wipe is")
        if spec_of(ctx.state).store is not None:
            raise TargetError(
                "data_loss on model-store empties the stack's own copy of the store; this "
                "stack serves stack.store in place, which a drill does not delete"
            )
        origin = origin_store(ctx.state)
        aside_name = f"{_SET_ASIDE}{ctx.fault_id.lower()}"[:90]
        aside = origin.parent / aside_name
        record = ctx.begin(
            self.name, ROLE_MODEL_STORE, {"target": ROLE_MODEL_STORE, "mode": "wipe",
                                          "set_aside": aside_name}
        )  # fmt: skip
        aside.mkdir(exist_ok=True)
        moved = 0
        for entry in list(origin.iterdir()):
            os.rename(entry, aside / entry.name)
            moved += 1
        return ctx.amend(record, files_deleted=moved)

    def check_applied(
        self, ctx: FaultContext, target: str, params: DataLossParams, record: UndoRecord
    ) -> str:
        if target == ROLE_MODEL_STORE:
            from drillkit.stacks.recommender.backup import models_present
            from drillkit.stacks.recommender.preset import origin_store

            if models_present(origin_store(ctx.state)) and not record.get("files_deleted"):
                raise EnvironmentFailure("the model store still holds its files")
            return f"model store emptied ({record.get('files_deleted', 0)} entries set aside)"
        if ctx.backend.service_alive(ctx.state, target):
            raise EnvironmentFailure(f"{target} is still running")
        what = {
            "crash": "killed; restarts from its own files",
            "wipe": f"killed, {record.get('files_deleted', 0)} file(s) deleted",
            "corrupt": f"killed, {record.get('file')} cut from {record.get('bytes_before')} "
            f"to {record.get('bytes_after')} bytes",
        }[params.mode]
        return f"{target} ({ctx.ident(target)}) {what}"

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        undo = _Undo.parse(record)
        if undo.target == ROLE_EVENT_STORE:
            if not ctx.backend.service_alive(ctx.state, ROLE_EVENT_STORE):
                ctx.backend.restart(ctx.state, ROLE_EVENT_STORE)
            ctx.wait_ready(ROLE_EVENT_STORE)
            return
        from drillkit.stacks.recommender.backup import models_present
        from drillkit.stacks.recommender.preset import origin_store

        origin = origin_store(ctx.state)
        if undo.set_aside is None:
            return
        aside = origin.parent / undo.set_aside
        if aside.is_symlink() or not aside.is_dir():
            return
        # Give the stack's own restore a moment (what a drill measures); then put the store
        # back exactly as it was: a backup may be older than what was set aside (a version
        # published since the last backup), which must not be lost to the drill.
        deadline = time.monotonic() + 5.0
        while not models_present(origin) and time.monotonic() < deadline:
            time.sleep(0.1)
        put_back(aside, origin)

    def heal_without_stack(self, journal: Journal, record: UndoRecord) -> None:
        """The event store's files go with its stack; a model store set aside beside the
        stack's own copy goes with it too (its folder is the stack's): nothing to do."""
        _Undo.parse(record)

    def outcome(self, ctx: FaultContext, record: UndoRecord) -> dict[str, Any] | None:
        undo = _Undo.parse(record)
        details: dict[str, Any] = {"target": undo.target, "mode": undo.mode}
        if undo.target == ROLE_EVENT_STORE:
            # What the store holds once it is back (restored, where it was wiped): the events
            # this fault took are those acknowledged before it and missing here.
            survivors = _survivors(ctx)
            if survivors is not None:
                details["survivors"] = survivors
        return {"data_loss": details}


def put_back(aside: Path, origin: Path) -> None:
    """Make ``origin`` hold exactly what was set aside in ``aside`` (same filesystem), then
    remove ``aside``."""
    trash = origin.parent / f"{aside.name}.restored"
    shutil.rmtree(trash, ignore_errors=True)
    trash.mkdir()
    origin.mkdir(parents=True, exist_ok=True)
    for entry in list(origin.iterdir()):
        os.rename(entry, trash / entry.name)
    for entry in list(aside.iterdir()):
        os.rename(entry, origin / entry.name)
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(aside, ignore_errors=True)


#: How long the heal of an event-store fault waits for the store to hold its marker again
#: (set by the backup service once it restored a wiped store, or marked a new one).
_MARKED_WITHIN = 20.0


def _survivors(ctx: FaultContext) -> list[list[Any]] | None:
    """Every ``[producer, seq]`` the event store holds once it is marked again; None when it
    cannot be read."""
    import redis

    from drillkit.stacks.recommender.events import MARKER, stored_events
    from drillkit.stacks.recommender.preset import redis_of

    client = redis_of(ctx.state, ROLE_EVENT_STORE)
    try:
        deadline = time.monotonic() + _MARKED_WITHIN
        while client.get(MARKER) is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return [[producer, seq] for producer, seq, _ in stored_events(client)]
    except redis.RedisError:
        return None
    finally:
        client.close()


class BackupFailureParams(FaultParams):
    """``backup_failure`` takes no parameters."""


class BackupFailure(FaultKind[BackupFailureParams]):
    name: ClassVar[str] = "backup_failure"
    Params = BackupFailureParams
    description: ClassVar[str] = (
        "the backup job fails (its staging folder becomes a file): no new backup until healed"
    )
    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_BACKUP})
    # The backup location may be the user's own folder (stack.events.backup_dir), which
    # outlives the stack: the broken staging folder must not stay there.
    outlives_stack: ClassVar[bool] = True

    def _staging(self, ctx: FaultContext, target: str) -> Path:
        from drillkit.stacks.recommender.backup import STAGING

        return Path(ctx.state.plan.service(target).mount("backups").source) / STAGING

    def apply(self, ctx: FaultContext, target: str, params: BackupFailureParams) -> UndoRecord:
        staging = self._staging(ctx, target)
        record = ctx.begin(self.name, target, {"service": target, "staging": str(staging)})
        if staging.is_dir() and not staging.is_symlink():
            shutil.rmtree(staging)  # it holds only backups being written
        elif staging.exists() or staging.is_symlink():
            staging.unlink()
        staging.write_bytes(_BROKEN)
        return record

    def check_applied(
        self, ctx: FaultContext, target: str, params: BackupFailureParams, record: UndoRecord
    ) -> str:
        staging = self._staging(ctx, target)
        if not staging.is_file():
            raise EnvironmentFailure(f"{staging}: still a folder")
        return f"{target}: {staging} is a file; every backup fails until healed"

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        staging = self._staging(ctx, ROLE_BACKUP)
        _unbreak(staging)
        staging.mkdir(parents=True, exist_ok=True)

    def heal_without_stack(self, journal: Journal, record: UndoRecord) -> None:
        """Remove the file that stands in for the staging folder. The path comes from a
        journal (read as root): only a regular file named ``staging`` that holds exactly what
        this kind wrote is removed."""
        from drillkit.stacks.recommender.backup import STAGING

        path = _StagingUndo.parse(record).staging
        staging = Path(path)
        if staging.name == STAGING and staging.is_absolute():
            _unbreak(staging)


class _StagingUndo(UndoModel):
    staging: str = Field(min_length=1, max_length=4096)


def _unbreak(staging: Path) -> None:
    if (
        staging.is_file()
        and not staging.is_symlink()
        and staging.stat().st_size == len(_BROKEN)
        and staging.read_bytes() == _BROKEN
    ):
        staging.unlink()
