"""Undo what the journal says is still applied, from any process, after any crash.

``drillkit heal`` and the end of every drill come here. A stack whose drill was killed
(its owner's process is gone) is taken down first and nothing of it is brought back to life;
a fault whose damage outlives its stack (:attr:`~drillkit.faults.base.FaultKind.outlives_stack`,
files on disk) is undone even when no stack runs. What could not be healed is returned as
data, one :class:`HealResult` per fault, for the caller to report.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from drillkit import procfs
from drillkit.backends.base import Backend, StackState, get_backend, load_state
from drillkit.errors import DrillkitError, InputError
from drillkit.faults.base import FaultKind, load_fault_kind
from drillkit.faults.context import FaultContext
from drillkit.journal import Journal, JournalEntry
from drillkit.stacks.base import take_down

__all__ = ["HealOutcome", "HealResult", "heal_all"]


@dataclass(frozen=True)
class HealResult:
    """What became of one journaled fault."""

    fault_id: str
    kind: str
    target: str
    outcome: Literal["healed", "gone", "failed"]
    error: str | None = None

    @classmethod
    def of(cls, entry: JournalEntry, outcome: Literal["healed", "gone", "failed"],
           error: str | None = None) -> HealResult:  # fmt: skip
        return cls(entry.fault_id, entry.kind, entry.target, outcome, error)

    def line(self) -> str:
        label = f"{self.kind} on {self.target} (fault {self.fault_id})"
        if self.outcome == "gone":
            return f"{label}: gone with its stack"
        if self.outcome == "failed":
            return f"{label}: NOT healed: {self.error}"
        return f"{label}: healed"


@dataclass
class HealOutcome:
    results: list[HealResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a killed drill's stack taken down

    @property
    def failures(self) -> list[HealResult]:
        return [r for r in self.results if r.outcome == "failed"]

    @property
    def lines(self) -> list[str]:
        return [*self.notes, *(r.line() for r in self.results)]


def _orphaned(state: StackState[Any]) -> bool:
    """A stack owned by a `drillkit run` whose process is gone (killed with SIGKILL)."""
    if state.owner is None or state.owner.pid == os.getpid():
        return False
    argv = procfs.argv(state.owner.pid)
    return argv is None or not any(b"drillkit" in arg for arg in argv)


def heal_all(
    journal: Journal | None = None,
    *,
    state: StackState[Any] | None = None,
    backend: Backend[Any] | None = None,
    kinds: Callable[[str], FaultKind[Any]] = load_fault_kind,
) -> HealOutcome:
    """Heal every pending fault of the journal; take down a stack whose drill is gone.

    ``state``, ``backend`` and ``kinds`` (name -> fault kind) are a drill's own; by default
    the saved state, the backend it names and the registered fault kinds.
    """
    journal = journal or Journal()
    outcome = HealOutcome()
    if state is None:
        state = load_state()
    if backend is None and state is not None:
        backend = get_backend(state.backend)
    orphan = state is not None and _orphaned(state)
    if state is not None and orphan and backend is not None:
        # Its drill is dead: bring nothing back to life, just take the stack down first.
        take_down(state, backend)
        scenario = state.owner.scenario if state.owner else "?"
        outcome.notes.append(f"stack {state.id} of a killed drill ({scenario}) taken down")
    stack_gone = (
        state is None
        or backend is None
        or orphan
        or not any(backend.service_alive(state, name) for name in state.services)
    )
    for entry in journal.pending():
        record: dict[str, Any] = {**entry.undo, "journal_id": entry.id}
        try:
            try:
                kind: FaultKind[Any] | None = kinds(entry.kind)
            except InputError:
                kind = None  # a plugin no longer installed
            if stack_gone:
                if kind is None or not kind.outlives_stack:
                    outcome.results.append(HealResult.of(entry, "gone"))
                    journal.record_heal(entry.id)
                    continue
                kind.heal_without_stack(journal, record)
            else:
                assert state is not None and backend is not None
                if kind is None:
                    raise InputError(f"fault kind {entry.kind!r} is not installed")
                ctx = FaultContext(backend, state, journal, fault_id=entry.fault_id)
                kind.heal(ctx, record)
            outcome.results.append(HealResult.of(entry, "healed"))
            journal.record_heal(entry.id)
        except DrillkitError as exc:
            outcome.results.append(HealResult.of(entry, "failed", str(exc)))
    journal.compact()
    return outcome
