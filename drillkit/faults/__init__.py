"""Fault kinds: the plugin contract, the registry and the built-in kinds' parameters.

Importing this package is cheap: it pulls in neither a backend nor any fault implementation.
"""

from __future__ import annotations

from drillkit.faults.base import (
    ENTRY_POINT_GROUP,
    FaultKind,
    FaultKindInfo,
    FaultPluginWarning,
    fault_kinds,
    fault_param_models,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "FaultKind",
    "FaultKindInfo",
    "FaultPluginWarning",
    "fault_kinds",
    "fault_param_models",
]
