"""What a fault kind gets to work with: the backend, the stack, the journal, and helpers.

Fault kinds stay backend-agnostic by going through :class:`FaultContext`: processes,
containers and network links through the backend's primitives, model files through the
replica's store folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from drillkit.backends.base import Backend, StackState, save_state
from drillkit.errors import EnvironmentFailure, InputError, StackNotReady
from drillkit.faults.base import ENTRY_POINT_GROUP, FaultKind
from drillkit.journal import Journal, JournalEntry
from drillkit.plugins import load_plugin
from drillkit.stacks.recommender.store import ModelStore

_BUILTIN_KINDS = {
    "kill_node": "drillkit.faults.kill_node:KillNode",
    "pause_node": "drillkit.faults.pause_node:PauseNode",
    "cut_network": "drillkit.faults.network:CutNetwork",
    "latency": "drillkit.faults.network:Latency",
    "corrupt_model": "drillkit.faults.corrupt_model:CorruptModel",
    "load_spike": "drillkit.faults.load_spike:LoadSpike",
}


def load_fault_kind(name: str) -> FaultKind[Any]:
    """Instantiate the fault kind registered under ``name`` (entry points, then built-ins)."""
    cls = load_plugin(ENTRY_POINT_GROUP, name, _BUILTIN_KINDS, what="fault kind")
    kind = cls() if isinstance(cls, type) else None
    if not isinstance(kind, FaultKind):
        raise InputError(f"fault kind {name!r} is not a drillkit.faults.base.FaultKind")
    return kind


@dataclass
class FaultContext:
    """Handed to every FaultKind method."""

    backend: Backend
    state: StackState
    journal: Journal
    fault_id: str = "manual"
    entries: list[JournalEntry] = field(default_factory=list)

    def begin(self, kind: str, target: str, undo: dict[str, Any]) -> dict[str, Any]:
        """Journal the undo record (fsynced) before the fault changes anything."""
        entry = self.journal.record_apply(
            fault_id=self.fault_id, kind=kind, target=target, stack_id=self.state.id, undo=undo
        )
        self.entries.append(entry)
        return {**undo, "journal_id": entry.id}

    def amend(self, record: dict[str, Any], **more: Any) -> dict[str, Any]:
        """Add facts learnt while applying (a backup's path, a new version) to the journal."""
        for entry in self.entries:
            if entry.id == record.get("journal_id"):
                self.journal.update_undo(entry, more)
        return {**record, **more}

    def save_state(self) -> None:
        save_state(self.state)

    # -- services ---------------------------------------------------------------------------
    def service_url(self, name: str) -> str:
        try:
            return self.state.services[name].url
        except KeyError:
            raise InputError(f"no service {name!r} in stack {self.state.id}") from None

    def wait_ready(self, name: str, timeout: float = 90.0) -> None:
        """Wait until a service answers /readyz with 200."""
        deadline = time.monotonic() + timeout
        url = self.service_url(name) + "/readyz"
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if not self.backend.service_alive(self.state, name):
                    raise StackNotReady(f"{name} exited while starting again")
                time.sleep(0.1)
        raise StackNotReady(f"{name} did not become ready within {timeout:.0f} s")

    def admin_reload(self, name: str) -> dict[str, Any]:
        """Ask a replica to re-verify and reload CURRENT now (token-protected endpoint)."""
        headers = {"Authorization": f"Bearer {self.state.admin_token}"}
        try:
            response = httpx.post(
                self.service_url(name) + "/admin/reload", headers=headers, timeout=60.0
            )
        except httpx.HTTPError as exc:
            raise EnvironmentFailure(f"{name}: admin reload failed: {exc}") from exc
        if response.status_code != 200:
            raise EnvironmentFailure(f"{name}: admin reload answered {response.status_code}")
        result: dict[str, Any] = response.json()
        return result

    # -- model stores ----------------------------------------------------------------------
    def replica_names(self) -> list[str]:
        return [s.name for s in self.state.replicas()]

    def store_of(self, replica: str) -> ModelStore:
        root = self.state.stores.get(replica)
        return ModelStore(Path(root) if root else Path(self.state.store))
