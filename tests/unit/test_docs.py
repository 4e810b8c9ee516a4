"""The reference in docs/ says what the code does: schemas regenerated, every field, command and
exit code documented, the plugin guide's code runs, and the layers keep their arrows."""

from __future__ import annotations

import ast
import json
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import BaseModel

from drillkit import errors
from drillkit.cli import app
from drillkit.reports.model import DrillReport
from drillkit.reports.model import json_schema as report_schema
from drillkit.scenario import Scenario, json_schema

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field path of a model: ``stack.gateway.retries``, ``faults[].expect.detect_within``."""
    out = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        out.append(prefix + key)
        for arg in [field.annotation, *typing.get_args(field.annotation)]:
            inner = [arg, *typing.get_args(arg)]
            sub = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
            if sub is not None:
                many = typing.get_origin(arg) in (tuple, list)
                out += _paths(sub, f"{prefix}{key}{'[]' if many else ''}.")
                break
    return out


@pytest.mark.parametrize(
    ("path", "schema"),
    [
        pytest.param("scenario.schema.json", json_schema, id="scenario"),
        pytest.param("report.schema.json", report_schema, id="report"),
    ],
)
def test_the_schema_files_are_current(path: str, schema: Any) -> None:
    assert json.loads((DOCS / path).read_text()) == schema(), (
        f"docs/{path} is stale: regenerate it (docs/README.md says how)"
    )


def test_every_scenario_field_is_documented() -> None:
    text = (DOCS / "scenario.md").read_text()
    sections = {"stack", "stack.catalog", "stack.gateway", "stack.edge", "stack.cache"}
    sections.add("stack.events")
    sections |= {"load", "slo", "faults"}
    sections |= {"faults[].expect", "abort", "scoring", "report", "monitoring"}
    missing = [p for p in _paths(Scenario) if p not in sections and f"`{p}`" not in text]
    assert missing == []


def test_every_report_field_is_documented() -> None:
    text = (DOCS / "report.md").read_text()
    paths = _paths(DrillReport)
    leaves = [p for p in paths if not any(q.startswith((p + ".", p + "[]")) for q in paths)]
    for path in leaves:
        head, _, last = path.rpartition(".")
        # Fields of a group are listed as `group.a`, `.b`, `.c` in one row.
        assert f"`{path}`" in text or (head and f"`.{last}`" in text), path


def _commands(group: typer.Typer, prefix: str = "drillkit") -> list[str]:
    names = []
    for info in group.registered_commands:
        name = info.name or (info.callback.__name__ if info.callback else "")
        names.append(f"{prefix} {name.rstrip('_').replace('_', '-')}")
    for sub in group.registered_groups:
        assert sub.typer_instance is not None
        names += _commands(sub.typer_instance, f"{prefix} {sub.name}")
    return names


def test_every_command_and_exit_code_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    missing = [c for c in _commands(app) if f"`{c}" not in text]
    assert missing == []
    codes = {
        cls.exit_code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.DrillkitError)
    }
    table = {int(m) for m in re.findall(r"^\| (\d+) \|", text, re.M)}
    assert codes | {0, 130} == table


def test_the_plugin_guides_code_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "plugins.md").read_text(), re.S)
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, "docs/plugins.md", "exec"), namespace)
    namespace["test_freeze_heals"](tmp_path)


LAYERED = ("backends", "faults", "engine.py", "scoring")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_engine_backends_faults_and_scoring_do_not_know_the_recommender() -> None:
    package = ROOT / "drillkit"
    files = [p for part in LAYERED for p in sorted((package / part).rglob("*.py"))]
    files += [package / "engine.py"] if (package / "engine.py").is_file() else []
    assert len(files) > 10
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in _imports(path) if "recommender" in m)
        for path in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_code_cites_only_the_repository() -> None:
    outside = re.compile(r"contracts\.md|brief\.md|anchors\.md|\.\./shared")
    cited = [
        str(p.relative_to(ROOT))
        for folder in ("drillkit", "tests", "bench", "examples", "docs")
        for p in (ROOT / folder).rglob("*")
        if p.is_file()
        and p.suffix in (".py", ".md", ".yaml", ".yml")
        and outside.search(p.read_text(errors="replace"))
        and p.name != "test_docs.py"
    ]
    assert cited == []
