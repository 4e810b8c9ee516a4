"""``pause_node``: the target freezes (SIGSTOP / container pause); its sockets stay open and
nothing answers, the nastiest kind of failure for a client without deadlines."""

from __future__ import annotations

import time
from typing import ClassVar

from pydantic import Field

from drillkit.errors import EnvironmentFailure
from drillkit.faults.base import ANY_SERVICE, FaultKind, UndoModel, UndoRecord
from drillkit.faults.context import FaultContext
from drillkit.faults.params import PauseNodeParams
from drillkit.stacks.plan import NAME_PATTERN


class _Undo(UndoModel):
    service: str = Field(pattern=f"^{NAME_PATTERN}$")


class PauseNode(FaultKind[PauseNodeParams]):
    name: ClassVar[str] = "pause_node"
    Params = PauseNodeParams
    description: ClassVar[str] = "the target freezes: sockets stay open, nothing answers"
    target_roles: ClassVar[frozenset[str]] = frozenset({ANY_SERVICE})

    def apply(self, ctx: FaultContext, target: str, params: PauseNodeParams) -> UndoRecord:
        record = ctx.begin(self.name, target, {"service": target})
        ctx.backend.pause(ctx.state, target)
        return record

    def check_applied(
        self, ctx: FaultContext, target: str, params: PauseNodeParams, record: UndoRecord
    ) -> str:
        # Signal delivery is asynchronous: give the kernel a moment to stop every thread.
        deadline = time.monotonic() + 2.0
        status = ctx.backend.service_status(ctx.state, target)
        while status == "running" and time.monotonic() < deadline:
            time.sleep(0.01)
            status = ctx.backend.service_status(ctx.state, target)
        if status != "paused":
            raise EnvironmentFailure(f"{target} is {status}, not paused")
        return f"{target} ({ctx.ident(target)}) is paused"

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        target = _Undo.parse(record).service
        ctx.backend.resume(ctx.state, target)
        if ctx.backend.service_alive(ctx.state, target):
            ctx.wait_ready(target)
