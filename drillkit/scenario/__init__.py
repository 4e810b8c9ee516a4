"""Scenario files: the YAML format of a drill, loaded into validated, frozen models.

>>> from drillkit.scenario import loads_scenario
>>> loads_scenario("version: 1\\nname: smoke\\n").load.duration
60.0

Importing this package is cheap (pydantic and PyYAML, nothing heavier), so ``drillkit
validate`` starts at once.
"""

from __future__ import annotations

from drillkit.scenario.loader import load_scenario, loads_scenario
from drillkit.scenario.model import FaultSpec, Scenario
from drillkit.scenario.schema import json_schema

__all__ = ["FaultSpec", "Scenario", "json_schema", "load_scenario", "loads_scenario"]
