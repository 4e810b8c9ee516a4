"""examples/runbook.md and examples/alerts.yml stay true to the command line."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from drillkit.cli import app

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
RUNBOOK = (EXAMPLES / "runbook.md").read_text()


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", RUNBOOK, flags=re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("drillkit ")]


def _parse(argv: list[str]) -> Any:
    """Resolve and parse a command line as the CLI would, without running it (unknown
    commands and options raise)."""
    command: Any = get_command(app)
    ctx = command.make_context("drillkit", argv)
    while hasattr(command, "resolve_command"):  # a group (Typer's own click core)
        name, command, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        ctx = command.make_context(name, rest, parent=ctx)
    return command


@pytest.mark.parametrize(
    "argv",
    [["status", "--bogus"], ["model", "rollbak"], ["fault", "inject"]],
    ids=["option", "command", "missing"],
)
def test_the_parser_refuses_what_the_cli_refuses(argv: list[str]) -> None:
    with pytest.raises(Exception, match="No such|Missing"):
        _parse(argv)


@pytest.mark.parametrize("line", [c for c in _commands() if "--install-completion" not in c])
def test_every_runbook_command_parses(line: str) -> None:
    _parse(shlex.split(line)[1:])


def test_completion_installs_with_typers_option() -> None:
    assert "drillkit --install-completion" in _commands()
    root = get_command(app)
    assert "--install-completion" in {o for p in root.params for o in p.opts}


def test_every_alert_has_a_runbook_section() -> None:
    rules = [
        r
        for g in yaml.safe_load((EXAMPLES / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    ]
    sections = set(re.findall(r"^## (\w+)$", RUNBOOK, flags=re.M))
    for rule in rules:
        assert rule["alert"] in sections
        assert rule["annotations"]["runbook"].endswith("#" + rule["alert"].lower())
