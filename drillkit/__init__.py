"""drillkit: disaster-recovery drills for GPU recommender services."""

from __future__ import annotations

from drillkit.errors import DrillkitError

__version__ = "0.1.0"

__all__ = ["DrillkitError", "__version__"]
