"""``kill_node``: the target dies at once (SIGKILL), or stops gracefully (SIGTERM)."""

from __future__ import annotations

import time
from typing import ClassVar

from pydantic import Field

from drillkit.errors import EnvironmentFailure
from drillkit.faults.base import ANY_SERVICE, FaultKind, UndoModel, UndoRecord
from drillkit.faults.context import FaultContext
from drillkit.faults.params import KillNodeParams
from drillkit.stacks.plan import NAME_PATTERN

# A graceful stop lets in-flight requests finish; uvicorn gives them 5 s.
_STOP_WAIT = 10.0


class _Undo(UndoModel):
    service: str = Field(pattern=f"^{NAME_PATTERN}$")


class KillNode(FaultKind[KillNodeParams]):
    name: ClassVar[str] = "kill_node"
    Params = KillNodeParams
    description: ClassVar[str] = "the target dies at once (KILL) or stops gracefully (TERM)"
    target_roles: ClassVar[frozenset[str]] = frozenset({ANY_SERVICE})

    def apply(self, ctx: FaultContext, target: str, params: KillNodeParams) -> UndoRecord:
        record = ctx.begin(self.name, target, {"service": target, "signal": params.signal})
        ctx.backend.kill(ctx.state, target, signal=params.signal)
        return record

    def check_applied(
        self, ctx: FaultContext, target: str, params: KillNodeParams, record: UndoRecord
    ) -> str:
        deadline = time.monotonic() + (0.0 if params.signal == "KILL" else _STOP_WAIT) + 2.0
        while ctx.backend.service_alive(ctx.state, target):
            if time.monotonic() > deadline:
                raise EnvironmentFailure(f"{target} is still running after SIG{params.signal}")
            time.sleep(0.01)
        return f"{target} ({ctx.ident(target)}) is gone after SIG{params.signal}"

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        target = _Undo.parse(record).service
        if not ctx.backend.service_alive(ctx.state, target):
            ctx.backend.restart(ctx.state, target)
        ctx.wait_ready(target)
