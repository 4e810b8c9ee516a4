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
    Share,
    format_duration,
    show_value,
)

__all__ = [
    "BUILTIN_PARAMS",
    "CorruptModelParams",
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


class LatencyParams(FaultParams):
    """``latency``: the delay (and jitter) added to traffic between the gateway and the target."""

    delay: PositiveDuration = Field(
        default=0.2, description="Added delay, above 0 and at most 30s."
    )
    jitter: Duration = Field(
        default=0.0, description="Random variation of the delay, at most the delay."
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


class CorruptModelParams(FaultParams):
    """``corrupt_model``: how the model artifact is damaged and how the damage is picked up."""

    mode: Literal["bitflip", "truncate", "zero", "poison"] = Field(
        default="bitflip",
        description=(
            "bitflip: flip random bits; truncate: cut the file short; zero: overwrite with zeros; "
            "poison: replace weights with NaN/garbage and re-sign the manifest."
        ),
    )
    file: Literal["weights", "index", "tables"] = Field(
        default="weights", description="Which file of the model version is damaged."
    )
    apply: Literal["reload", "restart"] = Field(
        default="reload", description="reload: hot-reload the model; restart: restart the target."
    )
    flips: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] = Field(
        default=16, description="Bits flipped (mode: bitflip)."
    )
    fraction: Share = Field(
        default=0.5, description="Share of the file kept (mode: truncate), below 1."
    )

    @field_validator("fraction")
    @classmethod
    def _fraction_below_one(cls, value: float) -> float:
        if value >= 1:
            raise ValueError(
                f"expected a share below 100% (keeping the whole file damages nothing), "
                f"got {show_value(value)}"
            )
        return value

    @model_validator(mode="after")
    def _options_match_mode(self) -> CorruptModelParams:
        # A parameter that the chosen mode ignores is almost always a mistake in the drill. Only
        # a value other than the default counts, so that a dumped model validates again.
        defaults = type(self).model_fields
        if self.flips != defaults["flips"].default and self.mode != "bitflip":
            raise FieldError(
                f"flips only applies to mode: bitflip (mode is {self.mode})", ("flips",)
            )
        if self.fraction != defaults["fraction"].default and self.mode != "truncate":
            raise FieldError(
                f"fraction only applies to mode: truncate (mode is {self.mode})", ("fraction",)
            )
        return self


class LoadSpikeParams(FaultParams):
    """``load_spike``: extra traffic on top of the drill's load, for the fault's duration."""

    rate: Annotated[float, Field(gt=0, le=100_000)] = Field(
        description="Extra requests per second, offered whatever the answers (an open loop)."
    )
    connections: Annotated[int, Field(ge=1, le=4096, strict=True)] = Field(
        default=256,
        description="Most extra requests in flight; a request due beyond it is not sent.",
    )


#: Built-in fault kinds and their params models; the registry in
#: :mod:`drillkit.faults.base` falls back to this table when a built-in's entry point is missing.
BUILTIN_PARAMS: dict[str, type[BaseModel]] = {
    "kill_node": KillNodeParams,
    "pause_node": PauseNodeParams,
    "cut_network": CutNetworkParams,
    "latency": LatencyParams,
    "corrupt_model": CorruptModelParams,
    "load_spike": LoadSpikeParams,
}
