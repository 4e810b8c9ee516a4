"""Reports of a drill: the JSON report v1 (the source of truth), JUnit XML and the terminal."""

from __future__ import annotations

from drillkit.reports.jsonfile import read_report, write_report
from drillkit.reports.junit import write_junit
from drillkit.reports.model import (
    CheckReport,
    DrillReport,
    Environment,
    FaultReport,
    LoadSummary,
    PhaseReport,
    ScenarioRef,
    SeriesReport,
)

__all__ = [
    "CheckReport",
    "DrillReport",
    "Environment",
    "FaultReport",
    "LoadSummary",
    "PhaseReport",
    "ScenarioRef",
    "SeriesReport",
    "read_report",
    "write_junit",
    "write_report",
]
