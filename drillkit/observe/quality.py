"""The seam between a drill and a probe of what the stack serves.

Availability and latency come from the load records; they cannot see a stack that answers
fast and wrong. A preset that can judge its answers (the reference recommender scores golden
users' recall: :mod:`drillkit.stacks.recommender.quality`) hands the drill a
:class:`QualityProbe` (:meth:`drillkit.stacks.base.StackPreset.quality_probe`); its samples
become the ``quality`` of every phase and window of the report.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["QualityProbe"]


class QualityProbe(Protocol):
    """A probe of answer quality during a drill."""

    def prepare(self, state: Any) -> None:
        """Learn what a good answer is from the running stack (during warmup, before any
        fault): a reference to score against."""
        ...

    def start(self) -> None:
        """Start probing on a thread of its own."""
        ...

    def stop(self) -> None:
        """Stop probing; idempotent."""
        ...

    def samples(self) -> list[tuple[float, float]]:
        """``(epoch send time, share)``: 1.0 is as good as the verified model offline."""
        ...
