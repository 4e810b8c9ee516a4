"""The fault journal: what drillkit did to a stack and how to undo it, surviving a crash.

Before a fault changes anything, an ``apply`` entry with everything needed to undo it is
appended and fsynced; after the undo succeeds a ``heal`` entry follows. Whatever kills
drillkit in between (``kill -9``, a power cut), ``drillkit heal`` reads the journal, finds the
entries without a heal, and undoes them. Undos are idempotent, so healing twice is harmless.

Each stack has its own journal, an append-only JSON-lines file in its folder
(``<state folder>/stacks/<id>/journal.jsonl``), with the file backups an undo needs (the
original bytes of a damaged model file) beside it under ``backups/``. A drill therefore only
ever heals its own faults.

Nothing read back is trusted: every line is parsed into :class:`JournalEntry` and checked
(the id forms, the stack's own id, sizes), and a line that is not what drillkit writes is set
aside as :attr:`Journal.rejected`, reported and never acted on. What an undo record itself
may name (paths, processes) is checked by its fault kind before anything is touched.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from drillkit import safejson
from drillkit.state import JOURNAL_FILE, STACK_ID_PATTERN

__all__ = ["JOURNAL_FILE", "Journal", "JournalEntry", "Rejected"]

BACKUPS = "backups"
#: No line drillkit writes comes near this; a longer one is not drillkit's.
MAX_LINE = 256 * 1024
MAX_LINES = 100_000
_UNDO: TypeAdapter[dict[str, JsonValue]] = TypeAdapter(dict[str, JsonValue])


class JournalEntry(BaseModel):
    """One applied fault and its undo record."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[0-9a-f]{16}$")
    fault_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    kind: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    target: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    stack_id: str = Field(pattern=f"^{STACK_ID_PATTERN}$")
    applied_at: float
    undo: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("applied_at")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("not a finite time")
        return value


@dataclass(frozen=True)
class Rejected:
    """A journal line that is not what drillkit writes: never acted on, always reported."""

    line: int
    reason: str


class Journal:
    """Append-only record of the faults applied to one stack."""

    def __init__(self, folder: Path, stack_id: str) -> None:
        self.folder = Path(folder)
        self.stack_id = stack_id
        self.path = self.folder / JOURNAL_FILE
        self.rejected: list[Rejected] = []

    @classmethod
    def for_stack(cls, stack_id: str) -> Journal:
        """The journal of stack ``stack_id``, in its folder."""
        from drillkit.state import stack_dir

        return cls(stack_dir(stack_id), stack_id)

    @property
    def backups(self) -> Path:
        return self.folder / BACKUPS

    def new_backup_dir(self) -> Path:
        # Every level private: the copies are of model files that may not be the user's to show.
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.backups.mkdir(exist_ok=True, mode=0o700)
        path = self.backups / uuid.uuid4().hex[:12]
        path.mkdir(mode=0o700)
        return path

    def _append(self, entry: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
        fd = os.open(self.path, flags, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def record_apply(
        self, *, fault_id: str, kind: str, target: str, stack_id: str, undo: dict[str, Any]
    ) -> JournalEntry:
        """Journal a fault BEFORE it is applied."""
        entry = JournalEntry(
            id=uuid.uuid4().hex[:16],
            fault_id=fault_id,
            kind=kind,
            target=target,
            stack_id=stack_id,
            applied_at=time.time(),
            undo=undo,
        )
        self._append({"op": "apply", **entry.model_dump(mode="json")})
        return entry

    def update_undo(self, entry: JournalEntry, undo: dict[str, Any]) -> None:
        """Add to an entry's undo record (for what is only known once applying started)."""
        entry.undo = {**entry.undo, **undo}
        self._append({"op": "update", "id": entry.id, "undo": entry.undo})

    def record_heal(self, entry_id: str) -> None:
        self._append({"op": "heal", "id": entry_id, "healed_at": time.time()})

    def _lines(self) -> list[bytes]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return []
        except OSError as exc:  # a link (ELOOP), a folder, no permission: not drillkit's file
            self.rejected.append(Rejected(0, f"{self.path} cannot be read safely: {exc}"))
            return []
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder, a FIFO: not drillkit's file
            os.close(fd)
            self.rejected.append(Rejected(0, f"{self.path} is not a regular file"))
            return []
        with os.fdopen(fd, "rb") as handle:
            return handle.read(MAX_LINE * 64).splitlines()[:MAX_LINES]

    def pending(self) -> list[JournalEntry]:
        """Applied and not yet healed, newest first: undoing in the reverse order of doing
        puts back what the first fault found, not what the second one did.

        A torn last line (a crash mid-write) is ignored: its fault was not applied yet,
        because entries are written first. Any other line that is not what drillkit writes
        is set aside in :attr:`rejected`.
        """
        self.rejected = []
        open_entries: dict[str, JournalEntry] = {}
        lines = self._lines()
        for number, line in enumerate(lines, start=1):
            reason = self._read(line, open_entries)
            if reason is not None and not (number == len(lines) and reason == "not JSON"):
                self.rejected.append(Rejected(number, reason))
        # Later lines first among equal times (a coarse clock): the journal's own order is
        # the order of applying.
        newest_line_first = list(open_entries.values())[::-1]
        return sorted(newest_line_first, key=lambda e: e.applied_at, reverse=True)

    def _read(self, line: bytes, open_entries: dict[str, JournalEntry]) -> str | None:
        """Apply one line to ``open_entries``; why it was set aside, or None."""
        if len(line) > MAX_LINE:
            return "longer than any line drillkit writes"
        try:
            item = safejson.loads(line)
        except (ValueError, UnicodeDecodeError):
            return "not JSON"
        if not isinstance(item, dict):
            return "not an object"
        op = item.pop("op", None)
        if op == "apply":
            item.pop("healed_at", None)
            try:
                entry = JournalEntry.model_validate(item)
            except ValidationError as exc:
                first = exc.errors()[0]
                return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
            if entry.stack_id != self.stack_id:
                return f"names stack {entry.stack_id}, not this journal's {self.stack_id}"
            open_entries[entry.id] = entry
        elif op == "update":
            entry_id, undo = item.get("id"), item.get("undo")
            if not isinstance(entry_id, str) or not isinstance(undo, dict):
                return "an update without an id and an undo record"
            if entry_id in open_entries:
                try:
                    open_entries[entry_id].undo = _UNDO.validate_python(undo)
                except ValidationError:
                    return "an undo record that is not JSON data"
        elif op == "heal":
            entry_id = item.get("id")
            if not isinstance(entry_id, str):
                return "a heal without an id"
            open_entries.pop(entry_id, None)
        else:
            return f"unknown op {op!r}"
        return None

    def compact(self) -> None:
        """Drop the journal once nothing is pending (keeps it from growing forever)."""
        if not self.pending() and not self.rejected:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            shutil.rmtree(self.backups, ignore_errors=True)
