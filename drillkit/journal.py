"""The fault journal: what drillkit did to a stack and how to undo it, surviving a crash.

Before a fault changes anything, an ``apply`` entry with everything needed to undo it is
appended and fsynced; after the undo succeeds a ``heal`` entry follows. Whatever kills
drillkit in between (``kill -9``, a power cut), ``drillkit heal`` reads the journal, finds the
entries without a heal, and undoes them. Undos are idempotent, so healing twice is harmless.

The journal is an append-only JSON-lines file in the state folder; file backups that an undo
needs (the original bytes of a damaged model file) live beside it under ``backups/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drillkit import paths

JOURNAL_FILE = "journal.jsonl"


@dataclass
class JournalEntry:
    """One applied fault and its undo record."""

    id: str
    fault_id: str
    kind: str
    target: str
    stack_id: str
    applied_at: float
    undo: dict[str, Any] = field(default_factory=dict)


class Journal:
    """Append-only record of applied faults for one state folder."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or paths.state_dir()
        self.path = self.folder / JOURNAL_FILE

    @property
    def backups(self) -> Path:
        return self.folder / "backups"

    def new_backup_dir(self) -> Path:
        path = self.backups / uuid.uuid4().hex[:12]
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _append(self, entry: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
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
        self._append({"op": "apply", **entry.__dict__})
        return entry

    def update_undo(self, entry: JournalEntry, undo: dict[str, Any]) -> None:
        """Add to an entry's undo record (for what is only known once applying started)."""
        entry.undo = {**entry.undo, **undo}
        self._append({"op": "update", "id": entry.id, "undo": entry.undo})

    def record_heal(self, entry_id: str) -> None:
        self._append({"op": "heal", "id": entry_id, "healed_at": time.time()})

    def pending(self) -> list[JournalEntry]:
        """Applied and not yet healed, oldest first. A torn last line (crash mid-write) is
        ignored: its fault was not applied yet, because entries are written first."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        open_entries: dict[str, JournalEntry] = {}
        for line in lines:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            op = item.pop("op", None)
            if op == "apply":
                item.pop("healed_at", None)
                open_entries[item["id"]] = JournalEntry(**item)
            elif op == "update" and item["id"] in open_entries:
                open_entries[item["id"]].undo = item["undo"]
            elif op == "heal":
                open_entries.pop(item["id"], None)
        return sorted(open_entries.values(), key=lambda e: e.applied_at)

    def compact(self) -> None:
        """Drop the journal once nothing is pending (keeps it from growing forever)."""
        if not self.pending():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            shutil.rmtree(self.backups, ignore_errors=True)
