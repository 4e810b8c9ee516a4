"""examples/alerts.yml checked by the tool that reads it: promtool, with a unit test per rule."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.promtool


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool is not None
    return subprocess.run(
        [promtool, *args], cwd=EXAMPLES, capture_output=True, text=True, timeout=120
    )


def test_the_rules_load_in_prometheus() -> None:
    result = _promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_passes_its_promtool_unit_tests() -> None:
    result = _promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_has_a_case_that_fires() -> None:
    rules = {
        r["alert"]
        for g in yaml.safe_load((EXAMPLES / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }
    cases = yaml.safe_load((EXAMPLES / "alerts.test.yml").read_text())["tests"]
    fired = {
        check["alertname"]
        for case in cases
        for check in case.get("alert_rule_test", [])
        if check.get("exp_alerts")
    }
    quiet = {
        check["alertname"]
        for case in cases
        for check in case.get("alert_rule_test", [])
        if not check.get("exp_alerts")
    }
    assert rules <= fired, f"no case where these fire: {sorted(rules - fired)}"
    assert {"RecommenderGatewayDown", "RecommenderModelRefused"} <= rules
    assert len(quiet) >= len(rules) - 1  # and, but for the absent-target case, one that doesn't


@pytest.mark.parametrize("broken", [("> 0.25", "> 0.9"), ("for: 1m", "for: 10m")])
def test_the_unit_tests_catch_a_broken_rule(tmp_path: Path, broken: tuple[str, str]) -> None:
    # A rule made wrong must make promtool fail: the cases are not vacuous.
    rules = (EXAMPLES / "alerts.yml").read_text()
    assert broken[0] in rules
    (tmp_path / "alerts.yml").write_text(rules.replace(broken[0], broken[1]))
    shutil.copy(EXAMPLES / "alerts.test.yml", tmp_path / "alerts.test.yml")
    promtool = shutil.which("promtool")
    assert promtool is not None
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
