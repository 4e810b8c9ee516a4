"""Undo what the journal says is still applied, from any process, after any crash.

``drillkit heal`` and the end of every drill come here. A stack whose drill was killed
(its owner's process is gone) is taken down first and nothing of it is brought back to life;
a fault whose damage outlives its stack (:attr:`~drillkit.faults.base.FaultKind.outlives_stack`,
files on disk) is undone even when no stack runs. What could not be healed is returned as
data, one :class:`HealResult` per fault, for the caller to report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from drillkit import state as state_files
from drillkit.backends.base import Backend, StackState, get_backend, read_state
from drillkit.errors import DrillkitError, EnvironmentFailure, InputError
from drillkit.faults.base import FaultKind, load_fault_kind
from drillkit.faults.context import FaultContext
from drillkit.journal import JOURNAL_FILE, Journal, JournalEntry
from drillkit.stacks.base import take_down

__all__ = ["HealOutcome", "HealResult", "heal_all", "heal_stack"]


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
    busy: list[str] = field(default_factory=list)  # stacks a running drill drives
    errors: int = 0  # notes that are failures: a refused state, a journal line set aside

    @property
    def failures(self) -> list[HealResult]:
        return [r for r in self.results if r.outcome == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failures and not self.errors and not self.busy

    @property
    def lines(self) -> list[str]:
        return [*self.notes, *self.busy, *(r.line() for r in self.results)]

    def extend(self, other: HealOutcome) -> None:
        self.results += other.results
        self.notes += other.notes
        self.busy += other.busy
        self.errors += other.errors


def heal_all(stack_id: str | None = None) -> HealOutcome:
    """``drillkit heal``: heal every stack with something to heal (or the one named), each
    under its lock; a stack a running drill drives is left to that drill, and said so."""
    outcome = HealOutcome()
    ids = (
        [state_files.check_id(stack_id)]
        if stack_id
        else sorted(
            set(state_files.stack_ids()) | set(state_files.stack_ids(with_file=JOURNAL_FILE))
        )
    )
    for sid in ids:
        try:
            who = state_files.holder(sid)
            if who is not None:
                outcome.busy.append(
                    f"stack {sid} is in use by a running drillkit (pid {who}), which heals its "
                    f"own faults when it ends; stop it (Ctrl-C, or kill -TERM {who}) to heal now"
                )
                continue
            state_files.hold(sid)  # refuses a folder that is a link, or not this user's
        except DrillkitError as exc:  # one stack's folder must not stop the others' heal
            outcome.notes.append(f"stack {sid}: {exc}")
            outcome.errors += 1
            continue
        try:
            # The lock was free: a drill that owned the stack is gone (killed with SIGKILL).
            outcome.extend(heal_stack(sid, owner_gone=True))
        finally:
            state_files.release(sid)
    return outcome


def heal_stack(
    stack_id: str,
    *,
    journal: Journal | None = None,
    state: StackState[Any] | None = None,
    backend: Backend[Any] | None = None,
    kinds: Callable[[str], FaultKind[Any]] = load_fault_kind,
    owner_gone: bool = False,
) -> HealOutcome:
    """Heal every pending fault of one stack, newest first; take the stack down first when
    the drill that owned it is gone (``owner_gone``: its lock was free, so the process that
    held it for the drill's whole life has died). ``journal``, ``state``, ``backend`` and
    ``kinds`` are a drill's own;
    by default the stack's journal and saved state, the backend it names and the registered
    fault kinds. Every step runs in its own guard: what fails is reported and the rest still
    runs."""
    outcome = HealOutcome()
    journal = journal or Journal.for_stack(stack_id)
    if state is None:
        try:
            state = read_state(stack_id)
        except DrillkitError as exc:
            outcome.notes.append(f"stack {stack_id}: its saved state is refused: {exc}")
            outcome.errors += 1
    if backend is None and state is not None:
        try:
            backend = get_backend(state.backend)
        except DrillkitError as exc:
            outcome.notes.append(f"stack {stack_id}: {exc}")
            outcome.errors += 1
    orphan = state is not None and owner_gone and state.owner is not None
    unreachable: str | None = None  # why the stack's backend cannot be asked or acted on
    taken_down = False
    if state is not None and orphan and backend is not None:
        # Its drill is dead: bring nothing back to life, just take the stack down first.
        try:
            take_down(state, backend)
            taken_down = True
            scenario = state.owner.scenario if state.owner else "?"
            outcome.notes.append(f"stack {state.id} of a killed drill ({scenario}) taken down")
        except Exception as exc:  # any failure here is reported; healing goes on
            unreachable = _why(exc)
            outcome.notes.append(f"stack {state.id}: NOT taken down: {unreachable}")
            outcome.errors += 1
    alive = False
    if state is not None and backend is not None and not taken_down and unreachable is None:
        try:
            alive = any(backend.service_alive(state, name) for name in state.services)
        except Exception as exc:  # a Docker daemon that stopped answering
            unreachable = _why(exc)
    stack_gone = state is None or backend is None or taken_down or not (alive or unreachable)
    for entry in journal.pending():
        record: dict[str, Any] = {**entry.undo, "journal_id": entry.id}
        try:
            try:
                kind: FaultKind[Any] | None = kinds(entry.kind)
            except InputError:
                kind = None  # a plugin no longer installed
            if stack_gone or unreachable is not None:
                if kind is not None and kind.outlives_stack:
                    kind.heal_without_stack(journal, record)  # what lies outside the stack
                elif unreachable is not None:
                    # The stack may still run: keep the entry for a later `drillkit heal`.
                    raise EnvironmentFailure(f"cannot reach the stack: {unreachable}")
                else:
                    outcome.results.append(HealResult.of(entry, "gone"))
                    journal.record_heal(entry.id)
                    continue
            else:
                assert state is not None and backend is not None
                if kind is None:
                    raise InputError(f"fault kind {entry.kind!r} is not installed")
                ctx = FaultContext(backend, state, journal, fault_id=entry.fault_id)
                kind.heal(ctx, record)
            outcome.results.append(HealResult.of(entry, "healed"))
            journal.record_heal(entry.id)
        except Exception as exc:  # one fault's heal must not stop the others'
            outcome.results.append(HealResult.of(entry, "failed", _why(exc)))
    for rejected in journal.rejected:
        outcome.notes.append(
            f"stack {stack_id}: journal line {rejected.line} set aside, not acted on: "
            f"{rejected.reason}"
        )
        outcome.errors += 1
    with contextlib.suppress(OSError):
        journal.compact()
    return outcome


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, DrillkitError) else f"{type(exc).__name__}: {exc}"
