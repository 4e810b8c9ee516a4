"""JSON Schema of the scenario format, for editors (YAML language servers) and other tools.

``python -m drillkit.scenario.schema > drillkit-scenario.schema.json`` writes it; point an
editor's YAML schema setting at that file to get completion and checks while writing a drill.
"""

from __future__ import annotations

import json
from typing import Any

from drillkit.faults.base import fault_param_models
from drillkit.scenario.model import EXTENSION_PREFIX, FORMAT_VERSION, Scenario

__all__ = ["SCHEMA_DIALECT", "json_schema"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_NULLABLE_SECTIONS = (
    "stack", "load", "slo", "faults", "abort", "scoring", "report", "monitoring",
)  # fmt: skip


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
    # Top-level `x-...` keys are ignored by the loader (a home for YAML anchors).
    schema["patternProperties"] = {f"^{EXTENSION_PREFIX}": {}}
    fault = defs["FaultSpec"]
    # An empty section (`faults:` with nothing after it) is null in YAML and means the defaults.
    for properties, names in (
        (schema["properties"], _NULLABLE_SECTIONS),
        (fault["properties"], ("params", "expect")),
    ):
        for name in names:
            properties[name] = {"anyOf": [properties[name], {"type": "null"}]}
    fault["allOf"] = branches
    # The kinds installed where the schema is written (third-party ones included): an editor
    # flags `kil_node` as `validate` does.
    fault["properties"]["kind"]["enum"] = sorted(fault_param_models())
    return {
        "$schema": SCHEMA_DIALECT,
        **schema,
        "title": f"drillkit scenario, format version {FORMAT_VERSION}",
    }


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2))
