"""Undo what the journal says is still applied, from any process, after any crash."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from drillkit.backends.base import Backend, Progress, StackSpec, StackState, get_backend, load_state
from drillkit.errors import DrillkitError
from drillkit.faults.context import FaultContext, load_fault_kind
from drillkit.journal import Journal

# Faults that outlive the processes of a stack: they must be undone even after `stack down`.
PERSISTENT_KINDS = {"corrupt_model"}


class _GoneBackend(Backend):
    """Stands in for the backend of a stack that no longer exists: nothing is running."""

    name = "gone"

    def up(self, spec: StackSpec, *, progress: Progress | None = None) -> StackState:
        raise NotImplementedError

    def down(self, state: StackState) -> None:
        return None

    def service_alive(self, state: StackState, name: str) -> bool:
        return False


def _placeholder_state(stack_id: str) -> StackState:
    return StackState(
        id=stack_id,
        backend="gone",
        created_at=0.0,
        run_dir="",
        store="",
        gateway_url="",
        admin_token="",
        gpu=False,
        spec={},
    )


@dataclass
class HealOutcome:
    lines: list[str] = field(default_factory=list)
    failures: int = 0


def _orphaned(state: StackState) -> bool:
    """A stack owned by a `drillkit run` whose process is gone (killed with SIGKILL)."""
    owner = state.owner or {}
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read()
    except OSError:
        return True
    return b"drillkit" not in cmdline


def heal_all(journal: Journal | None = None) -> HealOutcome:
    journal = journal or Journal()
    outcome = HealOutcome()
    state = load_state()
    backend = get_backend(state.backend) if state is not None else None
    orphan = state is not None and _orphaned(state)
    stack_gone = (
        state is None
        or orphan
        or (
            backend is not None
            and not any(backend.service_alive(state, name) for name in state.services)
        )
    )
    if state is not None and orphan and backend is not None:
        # Its drill is dead: bring nothing back to life, just take the stack down first.
        backend.down(state)
        scenario = (state.owner or {}).get("scenario")
        outcome.lines.append(f"stack {state.id} of a killed drill ({scenario}) taken down")
    for entry in journal.pending():
        record: dict[str, Any] = {**entry.undo, "journal_id": entry.id}
        label = f"{entry.kind} on {entry.target} (fault {entry.fault_id})"
        try:
            if stack_gone and entry.kind not in PERSISTENT_KINDS:
                outcome.lines.append(f"{label}: gone with its stack")
            else:
                kind = load_fault_kind(entry.kind)
                if stack_gone or state is None or backend is None:
                    ctx = FaultContext(
                        _GoneBackend(),
                        _placeholder_state(entry.stack_id),
                        journal,
                        fault_id=entry.fault_id,
                    )
                else:
                    ctx = FaultContext(backend, state, journal, fault_id=entry.fault_id)
                kind.heal(ctx, record)
                outcome.lines.append(f"{label}: healed")
            journal.record_heal(entry.id)
        except DrillkitError as exc:
            outcome.failures += 1
            outcome.lines.append(f"{label}: NOT healed: {exc}")
    journal.compact()
    return outcome


__all__ = ["HealOutcome", "heal_all"]
