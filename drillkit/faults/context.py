"""What a fault kind gets to work with: the backend, the stack's state, the journal.

Fault kinds stay backend-agnostic by going through :class:`FaultContext`: processes and
containers through the backend's primitives, the stack's layout (services, their roles,
links, mounts, secrets) through its plan in ``ctx.state.plan``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from drillkit.backends.base import Backend, ServiceState, StackState
from drillkit.errors import StackNotReady, TargetError
from drillkit.faults.base import UndoRecord
from drillkit.journal import Journal, JournalEntry
from drillkit.stacks.plan import Link

__all__ = ["FaultContext"]


@dataclass
class FaultContext:
    """Handed to every :class:`~drillkit.faults.base.FaultKind` method."""

    backend: Backend[Any]
    state: StackState[Any]
    journal: Journal
    fault_id: str = "manual"
    entries: list[JournalEntry] = field(default_factory=list)

    def begin(self, kind: str, target: str, undo: UndoRecord) -> UndoRecord:
        """Journal the undo record (fsynced) before the fault changes anything."""
        entry = self.journal.record_apply(
            fault_id=self.fault_id, kind=kind, target=target, stack_id=self.state.id, undo=undo
        )
        self.entries.append(entry)
        return {**undo, "journal_id": entry.id}

    def amend(self, record: UndoRecord, **more: Any) -> UndoRecord:
        """Add facts learnt while applying (a backup's path, a new version) to the journal."""
        for entry in self.entries:
            if entry.id == record.get("journal_id"):
                self.journal.update_undo(entry, more)
        return {**record, **more}

    # -- services ---------------------------------------------------------------------------
    def service_url(self, name: str, port: str = "http") -> str:
        """Where drillkit reaches a service's port from the host."""
        service: ServiceState = self.state.service(name)
        return service.url(port)

    def ident(self, name: str) -> str:
        """How to find a service on the host (``pid 1234``, ``container 0123456789ab``)."""
        service: ServiceState = self.state.service(name)
        return service.ident()

    def links_to(self, target: str) -> list[Link]:
        """The plan's links that end at ``target``; TargetError when there is none."""
        links = self.state.plan.links_to(target)
        if not links:
            raise TargetError(f"no network link of stack {self.state.id} ends at {target!r}")
        return links

    def wait_ready(self, name: str, timeout: float = 90.0) -> None:
        """Wait until a service passes its readiness check again."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.backend.ready(self.state, name):
                return
            if not self.backend.service_alive(self.state, name):
                raise StackNotReady(f"{name} exited while starting again")
            time.sleep(0.1)
        raise StackNotReady(f"{name} did not become ready within {timeout:.0f} s")
