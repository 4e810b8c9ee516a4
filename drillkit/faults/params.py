"""Parameter models of the built-in fault kinds, one per kind.

These are what ``params:`` of a fault in a scenario validates against. They live apart from
the fault implementations so that validating a scenario never imports a backend (and with it
numpy, docker or torch). Every model forbids unknown keys and is frozen.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drillkit.scenario.units import (
    Duration,
    FieldError,
    PositiveDuration,
    format_duration,
)

__all__ = [
    "CorruptFileParams",
    "CutNetworkParams",
    "FaultParams",
    "KillNodeParams",
    "LatencyParams",
    "LoadSpikeParams",
    "PauseNodeParams",
]

#: The largest delay the latency fault may add; beyond it every client request times out anyway,
#: which is what ``cut_network`` is for.
MAX_DELAY_S = 30.0


class FaultParams(BaseModel):
    """Base of the built-in params models: unknown keys are errors and values are frozen.

    A third-party fault kind may use any pydantic model; this base is a convenience.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class KillNodeParams(FaultParams):
    """``kill_node``: which signal ends the target."""

    signal: Literal["KILL", "TERM"] = Field(
        default="KILL", description="KILL: die at once; TERM: a graceful stop."
    )

    @field_validator("signal", mode="before")
    @classmethod
    def _normalise_signal(cls, value: object) -> object:
        # People write SIGKILL, kill and KILL interchangeably; all mean the same signal.
        if isinstance(value, str):
            name = value.strip().upper()
            return name.removeprefix("SIG")
        return value


class PauseNodeParams(FaultParams):
    """``pause_node`` takes no parameters."""


class CutNetworkParams(FaultParams):
    """``cut_network``: how the traffic between the gateway and the target is cut."""

    mode: Literal["blackhole", "reject"] = Field(
        default="blackhole",
        description="blackhole: packets are dropped and connections hang; reject: refused/reset.",
    )
    direction: Literal["both", "to_target", "from_target"] = Field(
        default="both", description="Which direction of traffic is cut."
    )
    source: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="Cut only the link from this service; default every link to the target "
        "(from everyone: in a Compose project, every other service).",
    )


class LatencyParams(FaultParams):
    """``latency``: the delay (and jitter) added to traffic between the gateway and the target."""

    delay: PositiveDuration = Field(
        default=0.2, description="Added delay, above 0 and at most 30s."
    )
    jitter: Duration = Field(
        default=0.0, description="Random variation of the delay, at most the delay."
    )
    source: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="Slow only the link from this service; default every link to the target.",
    )

    @field_validator("delay")
    @classmethod
    def _delay_in_range(cls, value: float) -> float:
        if value > MAX_DELAY_S:
            raise ValueError(
                f"expected a delay of at most {format_duration(MAX_DELAY_S)}, "
                f"got {format_duration(value)} (to make the target unreachable use cut_network)"
            )
        return value

    @model_validator(mode="after")
    def _jitter_within_delay(self) -> LatencyParams:
        if self.jitter > self.delay:
            raise FieldError(
                f"expected a jitter of at most the delay ({format_duration(self.delay)}), "
                f"got {format_duration(self.jitter)}",
                ("jitter",),
            )
        return self


class LoadSpikeParams(FaultParams):
    """``load_spike``: extra traffic on top of the drill's load, for the fault's duration."""

    rate: Annotated[float, Field(gt=0, le=100_000)] = Field(
        description="Extra requests per second, offered whatever the answers (an open loop).",
        json_schema_extra={"unit": "req/s"},
    )
    connections: Annotated[int, Field(ge=1, le=4096, strict=True)] = Field(
        default=256,
        description="Most extra requests in flight; a request due beyond it is not sent.",
        json_schema_extra={"unit": "requests"},
    )
    path: str | None = Field(
        default=None,
        pattern=r"^/[^\s]{0,1999}$",
        description="What each extra request asks for (GET); default the reference stack's "
        "/recommend, with a random user.",
    )


class CorruptFileParams(FaultParams):
    """``corrupt_file``: a file in one of the target's volumes is damaged until the heal."""

    path: str = Field(
        pattern=r"^/[^\x00]{0,1023}$",
        description="The file as the service sees it (an absolute path inside a volume or "
        "bind mount of its container).",
    )
    mode: Literal["bitflip", "truncate", "zero"] = Field(
        default="bitflip",
        description="bitflip: flip one bit in each of `bytes` bytes spread over the file; "
        "truncate: cut it to `keep` of its size; zero: overwrite `bytes` bytes from the middle "
        "with zeros.",
    )
    bytes: Annotated[int, Field(ge=1, le=1 << 20, strict=True)] = Field(
        default=64, description="bitflip and zero: how many bytes are damaged."
    )
    keep: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.5, description="truncate: the share of the file kept."
    )

    @field_validator("path")
    @classmethod
    def _no_parent(cls, value: str) -> str:
        if ".." in value.split("/"):
            raise FieldError(f"{value!r}: expected a path without '..'")
        return value
