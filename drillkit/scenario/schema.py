"""JSON Schema of the scenario format, for editors (YAML language servers) and other tools.

``python -m drillkit.scenario.schema > drillkit-scenario.schema.json`` writes it; point an
editor's YAML schema setting at that file to get completion and checks while writing a drill.
"""

from __future__ import annotations

import json
from typing import Any

from drillkit.faults.base import fault_param_models
from drillkit.scenario.model import FORMAT_VERSION, Scenario

__all__ = ["SCHEMA_DIALECT", "json_schema"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a scenario file, format version 1.

    ``params`` of a fault is checked per ``kind`` (an ``if``/``then`` branch for every
    registered kind, third-party ones included). Checks that need the whole document (targets
    that exist, ``at`` inside the load window) are left to ``drillkit validate``.
    """
    schema = Scenario.model_json_schema(by_alias=True)
    defs: dict[str, Any] = schema.setdefault("$defs", {})
    branches: list[dict[str, Any]] = []
    for kind, model in sorted(fault_param_models().items()):
        params = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
        defs.update(params.pop("$defs", {}))
        branches.append(
            {
                "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
                "then": {"properties": {"params": params}},
            }
        )
    fault = defs["FaultSpec"]
    fault["allOf"] = branches
    fault["properties"]["kind"]["examples"] = sorted(fault_param_models())
    return {
        "$schema": SCHEMA_DIALECT,
        **schema,
        "title": f"drillkit scenario, format version {FORMAT_VERSION}",
    }


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2))
