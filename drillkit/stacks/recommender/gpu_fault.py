"""``gpu_fault``: a replica's GPU fails the way GPUs fail in serving.

``params.mode`` picks the failure (what each does on the device is in
:mod:`drillkit.stacks.recommender.gpu`):

- ``oom``: the device's memory is full; inferences raise CUDA out of memory;
- ``device_lost``: the GPU fell off the bus (Xid 79); every inference fails while the process
  and ``/healthz`` stay up, so only a deep readiness check sees it;
- ``throttle``: clocks held down, each inference ``factor`` times slower;
- ``ecc``: memory errors get past the correction: answers stay 200 and their scores are
  perturbed, visible only to the quality probe (and to ECC counters, where exported).

The fault reaches the replica's device through its token-protected ``POST /admin/gpu`` (the
admin token is the plan's one secret). The heal is a GPU reset through the same endpoint; a
replica restarted meanwhile comes up on a reset device anyway, so a replica that is down is
left alone; a record naming anything but a replica of the stack is never sent the token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from drillkit.errors import EnvironmentFailure
from drillkit.faults.base import ROLE_REPLICA, FaultKind, UndoModel, UndoRecord
from drillkit.faults.params import FaultParams
from drillkit.scenario.units import FieldError
from drillkit.stacks.plan import NAME_PATTERN
from drillkit.stacks.recommender.gpu import (
    DEFAULT_FACTOR,
    DEFAULT_NOISE,
    MAX_FACTOR,
    MAX_NOISE,
    XID_FALLEN_OFF_BUS,
)

if TYPE_CHECKING:
    from drillkit.faults.context import FaultContext

__all__ = ["GpuFault", "GpuFaultParams", "admin_gpu"]

_Mode = Literal["oom", "device_lost", "throttle", "ecc"]


class GpuFaultParams(FaultParams):
    """``gpu_fault``: how the replica's GPU fails."""

    mode: _Mode = Field(
        description=(
            "oom: the device's memory is full, inferences raise CUDA out of memory; "
            "device_lost: the GPU fell off the bus (Xid 79), every inference fails while the "
            "process and /healthz stay up; throttle: clocks held down, inference `factor` "
            "times slower; ecc: memory errors get past the correction and perturb the scores "
            "silently."
        )
    )
    factor: Annotated[float, Field(ge=1.0, le=MAX_FACTOR)] = Field(
        default=DEFAULT_FACTOR,
        description="mode throttle: how many times longer each inference takes.",
        json_schema_extra={"unit": "times"},
    )
    noise: Annotated[float, Field(gt=0.0, le=MAX_NOISE)] = Field(
        default=DEFAULT_NOISE,
        description="mode ecc: the error on each user vector, in units of the vector's own "
        "spread (1: as large as the signal).",
        json_schema_extra={"unit": "spreads"},
    )

    @model_validator(mode="after")
    def _options_match_mode(self) -> GpuFaultParams:
        # A parameter the mode ignores is almost always a mistake in the drill; only a value
        # other than the default counts, so that a dumped model validates again.
        if self.factor != DEFAULT_FACTOR and self.mode != "throttle":
            raise FieldError(
                f"factor only applies to mode: throttle (mode is {self.mode})", ("factor",)
            )
        if self.noise != DEFAULT_NOISE and self.mode != "ecc":
            raise FieldError(f"noise only applies to mode: ecc (mode is {self.mode})", ("noise",))
        return self

    def body(self) -> dict[str, Any]:
        """What ``POST /admin/gpu`` takes."""
        return {"mode": self.mode, "factor": self.factor, "noise": self.noise}


class _Undo(UndoModel):
    replica: str = Field(pattern=f"^{NAME_PATTERN}$")
    mode: _Mode


def admin_gpu(state: Any, replica: str, body: dict[str, Any]) -> dict[str, Any]:
    """Set (or, with ``{"mode": None}``, reset) a replica's GPU condition through its
    token-protected endpoint; the replica's device status comes back."""
    from drillkit.stacks.recommender.preset import admin_post

    return admin_post(state, replica, "/admin/gpu", body, timeout=30.0)


class GpuFault(FaultKind[GpuFaultParams]):
    name: ClassVar[str] = "gpu_fault"
    Params = GpuFaultParams
    description: ClassVar[str] = (
        "the target's GPU fails: out of memory, lost (Xid 79), throttled or corrupting (ECC)"
    )
    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_REPLICA})

    def apply(self, ctx: FaultContext, target: str, params: GpuFaultParams) -> UndoRecord:
        status = ctx.backend.service_status(ctx.state, target)
        if status != "running":
            raise EnvironmentFailure(f"{target} is {status}: its GPU cannot fail now")
        record = ctx.begin(self.name, target, {"replica": target, "mode": params.mode})
        admin_gpu(ctx.state, target, params.body())
        return record

    def check_applied(
        self, ctx: FaultContext, target: str, params: GpuFaultParams, record: UndoRecord
    ) -> str:
        import httpx

        try:
            info = httpx.get(ctx.state.service(target).url() + "/info", timeout=5.0).json()
        except (httpx.HTTPError, ValueError) as exc:
            raise EnvironmentFailure(f"{target}: /info unreadable: {exc}") from exc
        gpu = info.get("gpu") if isinstance(info, dict) else None
        condition = gpu.get("condition") if isinstance(gpu, dict) else None
        if not isinstance(condition, dict) or condition.get("mode") != params.mode:
            raise EnvironmentFailure(f"{target}: its GPU does not report mode {params.mode}")
        assert isinstance(gpu, dict)
        fields = gpu.get("fields") or {}
        source = "simulated device" if gpu.get("source") == "simulated" else "NVML"
        what = {
            "oom": f"memory full ({fields.get('DCGM_FI_DEV_FB_FREE', 0):.0f} MiB free)",
            "device_lost": f"device lost (Xid {XID_FALLEN_OFF_BUS}); /healthz still answers",
            "throttle": f"clocks throttled, x{params.factor:g} service time "
            f"(SM {fields.get('DCGM_FI_DEV_SM_CLOCK', 0):.0f} MHz)",
            "ecc": f"ECC errors perturb its vectors (noise {params.noise:g})",
        }[params.mode]
        return f"{target} ({gpu.get('device')}, {source}): {what}"

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        target = _Undo.parse(record).replica
        # Only a replica of this stack gets the admin token, whatever the record names; one
        # that is down comes back on a reset device anyway.
        if target not in ctx.state.names_with_role(ROLE_REPLICA):
            return
        if ctx.backend.service_status(ctx.state, target) == "running":
            admin_gpu(ctx.state, target, {"mode": None})
