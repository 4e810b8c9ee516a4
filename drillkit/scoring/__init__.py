"""Scoring: a drill's phases, detection and recovery times, checks and score."""

from __future__ import annotations

from drillkit.scoring.analyze import (
    SLO,
    Analysis,
    Check,
    DetectionEvent,
    DrillInput,
    Expectation,
    FaultResult,
    FaultRun,
    PhaseStats,
    QualitySample,
    analyze,
)

__all__ = [
    "SLO",
    "Analysis",
    "Check",
    "DetectionEvent",
    "DrillInput",
    "Expectation",
    "FaultResult",
    "FaultRun",
    "PhaseStats",
    "QualitySample",
    "analyze",
]
