"""``drillkit validate``, ``drillkit list``: scenarios and what drillkit can do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from drillkit.cli.state import terminal

SCENARIOS_DIR = Path(__file__).resolve().parents[1] / "scenarios"
DEFAULT_SCENARIO = "kill-node"


def bundled_scenarios() -> list[Path]:
    """The scenarios shipped with drillkit (``scenarios/`` in a checkout)."""
    return sorted(SCENARIOS_DIR.glob("*.yaml")) if SCENARIOS_DIR.is_dir() else []


def resolve_scenario(arg: Path) -> Path:
    """A scenario file, or a scenario's name: ``kill-node`` is ``./scenarios/kill-node.yaml``
    when the current folder has one (a project's own drills), else the bundled one."""
    if arg.exists() or arg.suffix in (".yaml", ".yml") or "/" in str(arg):
        return arg
    for folder in (Path("scenarios"), SCENARIOS_DIR):
        candidate = folder / f"{arg}.yaml"
        if candidate.is_file():
            return candidate
    return arg


def validate(
    scenarios: list[Path] = typer.Argument(..., help="Scenario files to check."),
) -> None:
    """Check scenarios (schema and semantics) without starting anything."""
    from drillkit.scenario import load_scenario

    t = terminal()
    for path in (resolve_scenario(p) for p in scenarios):
        scenario = load_scenario(path)
        faults = ", ".join(f"{f.id}@{f.at:g}s" for f in scenario.faults) or "no faults"
        stack = scenario.stack
        size = f"{stack.replicas} replicas"
        if stack.zones:
            size = f"zones {', '.join(stack.zones)} x {size} behind an HAProxy edge"
        if stack.compose is not None:
            size = f"Compose project {stack.compose}"
        t.result(
            f"ok  {path}: {scenario.name} ({size}, "
            f"{scenario.load.rate:g} req/s for {scenario.load.duration:g} s; {faults})"
        )


def schema() -> None:
    """Print the scenario format's JSON Schema (for editors)."""
    from drillkit.scenario import json_schema

    terminal().json(json_schema())


def _scenario_summary(path: Path) -> dict[str, str]:
    """Name, one-line description and file of a bundled scenario (read, not validated)."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        doc = None
    doc = doc if isinstance(doc, dict) else {}
    description = " ".join(str(doc.get("description") or "").split())
    return {
        "name": str(doc.get("name") or path.stem),
        "description": description,
        "path": str(path),
    }


def _param_text(name: str, schema: dict[str, object]) -> str:
    from drillkit.scenario.units import format_duration

    unit = schema.get("unit")
    if "default" not in schema:
        return f"{name} (required{f', {unit}' if unit else ''})"
    default = schema["default"]
    if unit == "s" and isinstance(default, int | float):
        return f"{name}={format_duration(float(default))}"
    return f"{name}={json.dumps(default)}" + (f" {unit}" if unit else "")


def list_(json_out: bool = typer.Option(False, "--json")) -> None:
    """Bundled scenarios, fault kinds (with their params), backends and stack presets."""
    from drillkit.backends.base import backend_names
    from drillkit.faults.base import ANY_SERVICE, fault_kinds
    from drillkit.stacks.base import preset_names

    kinds = fault_kinds()
    scenarios = [_scenario_summary(p) for p in bundled_scenarios()]
    faults: dict[str, dict[str, Any]] = {
        name: {
            "description": info.description,
            "targets": sorted("any service" if r == ANY_SERVICE else r for r in info.target_roles),
            # Each param's JSON Schema; durations and the params that declare one carry
            # their `unit`.
            "params": info.params.model_json_schema().get("properties", {}),
            "source": info.source,
        }
        for name, info in sorted(kinds.items())
    }
    backends = backend_names()
    stacks = preset_names()
    t = terminal()
    if json_out:
        t.json({"scenarios": scenarios, "faults": faults, "backends": backends, "stacks": stacks})
        return
    t.table(
        "bundled scenarios (drillkit run NAME)",
        ["name", "what it drills"],
        [(s["name"], s["description"]) for s in scenarios],
    )
    rows = []
    for name, info in faults.items():
        params = ", ".join(_param_text(k, v) for k, v in info["params"].items())
        rows.append((name, ", ".join(info["targets"]), params or "-", info["description"]))
    t.table("fault kinds", ["kind", "targets", "params (defaults)", "what it does"], rows)
    t.result("backends: " + ", ".join(backends))
    t.result("stack presets: " + ", ".join(stacks))
