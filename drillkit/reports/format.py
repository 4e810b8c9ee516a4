"""How figures read in every rendering of a report (terminal, HTML, JUnit): one module, so a
share, a time or a check's value reads the same wherever a person sees it."""

from __future__ import annotations

import math

from drillkit.reports.model import CheckReport

__all__ = [
    "DASH",
    "PHASE_COLUMNS",
    "format_check_value",
    "format_score",
    "ms",
    "seconds",
    "share",
]

#: What stands for a figure that does not exist.
DASH = "-"

#: The phases table's columns, in the terminal and the HTML report alike.
PHASE_COLUMNS: tuple[str, ...] = (
    "phase",
    "start",
    "end",
    "requests",
    "rps",
    "failed",
    "degraded",
    "wrong-model",
    "availability",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "quality",
)


def seconds(value: float | None, *, dash: str = DASH) -> str:
    """``12.30s``."""
    return dash if value is None else f"{value:.2f}s"


def ms(value: float | None, *, dash: str = DASH) -> str:
    """Milliseconds, one decimal."""
    return dash if value is None else f"{value:.1f}"


def share(value: float | None, digits: int = 2, *, dash: str = DASH) -> str:
    """``99.95%``."""
    return dash if value is None else f"{value * 100:.{digits}f}%"


def format_score(score: float) -> str:
    """The score with two decimals, truncated: 79.996 must not read as a passing 80.00."""
    # The epsilon undoes float error such as 0.29 * 100 == 28.999999999999996.
    return f"{math.floor(score * 100 + 1e-9) / 100:.2f}"


def format_check_value(check: CheckReport, value: float | None) -> str:
    """A check's target or actual in the unit its name implies."""
    if value is None:
        return "never" if check.name.endswith(("_within",)) else DASH
    if check.op == "==":
        return "yes" if value >= 1 else "no"
    name = check.name
    if name.endswith((".availability",)):
        return share(value, 3)
    if name.endswith((".degraded", ".quality")):
        return share(value, 2)
    if name.endswith("_ms"):
        return f"{value:.1f} ms"
    if name.endswith("_within"):
        return f"{value:.2f} s"
    if name.endswith(".max_failed_requests") and check.target < 1 and check.target != 0:
        return share(value, 3)  # a share of the fault's requests
    return f"{value:g}"
