"""The alert rules the stack ships, checked by the tools that read them: promtool's unit tests
(tests/promtool/stack-rules.test.yml, a firing and a quiet case per rule), ``promtool check``
on every rule file and Prometheus configuration drillkit renders, ``amtool check-config`` on
Alertmanager's."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from drillkit.cli import app
from drillkit.stacks.recommender.monitoring import (
    RULES,
    Target,
    prom_duration,
    render_alertmanager_config,
    render_prometheus_config,
    render_rules,
)
from drillkit.stacks.recommender.spec import MonitoringSettings

pytestmark = pytest.mark.promtool

CASES = Path(__file__).resolve().parents[1] / "promtool" / "stack-rules.test.yml"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    tool = shutil.which(args[0])
    assert tool is not None, f"{args[0]} is not installed"
    return subprocess.run([tool, *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=120)


def _cases_dir(tmp_path: Path, rules: str) -> Path:
    (tmp_path / "rules.yml").write_text(rules)
    shutil.copy(CASES, tmp_path / CASES.name)
    return tmp_path


def test_the_shipped_rules_pass_their_promtool_unit_tests(tmp_path: Path) -> None:
    folder = _cases_dir(tmp_path, render_rules(MonitoringSettings()))
    result = _run("promtool", "test", "rules", CASES.name, cwd=folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_shipped_rule_has_a_case_that_fires_and_one_that_does_not() -> None:
    cases = yaml.safe_load(CASES.read_text())["tests"]
    checks = [check for case in cases for check in case.get("alert_rule_test", [])]
    fired = {c["alertname"] for c in checks if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in checks if not c.get("exp_alerts")}
    names = {rule.name for rule in RULES}
    assert names <= fired, f"no case where these fire: {sorted(names - fired)}"
    assert names <= quiet, f"no case where these stay quiet: {sorted(names - quiet)}"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("> 0.005", "> 0.2"),  # the error ratio threshold
        ("== 0", "== 2"),  # replica down / target down never matches
        ("for: 2s", "for: 30s"),
        ('state="DOWN"', 'state="MAINT"'),
        ("XID_ERRORS > 0", "XID_ERRORS >= 0"),  # Xid 0 is no error
        ("< 0.05", "< 0.02"),  # the free frame buffer threshold
        ("REASONS / 8) % 2", "REASONS / 1) % 2"),  # the idle bit is no throttle
        ("REASONS / 128) % 2", "REASONS / 256) % 2"),  # power brake, not display clock
        ("_VOL_TOTAL[20s]) > 0 or", "_VOL_TOTAL[20s]) +"),  # a GPU with one ECC count only
    ],
)
def test_the_cases_catch_a_broken_rule(tmp_path: Path, old: str, new: str) -> None:
    rules = render_rules(MonitoringSettings())
    assert old in rules
    folder = _cases_dir(tmp_path, rules.replace(old, new, 1))
    result = _run("promtool", "test", "rules", CASES.name, cwd=folder)
    assert result.returncode != 0, result.stdout


@pytest.mark.parametrize(
    "settings",
    [
        MonitoringSettings(),
        MonitoringSettings(scrape_interval=0.5, evaluation_interval=0.25, alert_for=1.5,
                           rate_window=1.25, p99_ms=80),
        MonitoringSettings(scrape_interval=15, evaluation_interval=15, alert_for=60,
                           rate_window=300, group_wait=30, repeat_interval=4 * 3600),
    ],
)  # fmt: skip
def test_everything_drillkit_renders_passes_promtool_and_amtool(
    tmp_path: Path, settings: MonitoringSettings
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(render_rules(settings))
    result = _run("promtool", "check", "rules", str(rules), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    targets = [
        Target("drillkit-replica", "replica-a1", "a", "127.0.0.1:41000"),
        Target("drillkit-gateway", "gateway-a", "a", "127.0.0.1:41001"),
        Target("drillkit-edge", "edge", None, "127.0.0.1:41002"),
        Target("drillkit-monitoring", "prometheus", None, "127.0.0.1:41003"),
    ]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        render_prometheus_config(
            settings, targets, rules=str(rules), alertmanager="127.0.0.1:41004"
        )
    )
    result = _run("promtool", "check", "config", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    am = tmp_path / "alertmanager.yml"
    am.write_text(render_alertmanager_config(settings, webhook="http://127.0.0.1:41005/alerts"))
    if shutil.which("amtool") is not None:
        result = _run("amtool", "check-config", str(am), cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr


def test_monitoring_rules_prints_the_shipped_rules(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["monitoring", "rules"])
    assert result.exit_code == 0, result.output
    assert result.output == render_rules(MonitoringSettings())
    production = CliRunner().invoke(
        app, ["monitoring", "rules", "--for", "1m", "--rate-window", "5m", "--p99-ms", "300"]
    )
    assert production.exit_code == 0, production.output
    assert "for: 1m" in production.output and "[5m]" in production.output
    assert "> 0.3" in production.output
    (tmp_path / "rules.yml").write_text(production.output)
    result_check = _run("promtool", "check", "rules", "rules.yml", cwd=tmp_path)
    assert result_check.returncode == 0, result_check.stdout + result_check.stderr


def test_monitoring_rules_refuses_a_bad_duration() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "drillkit", "monitoring", "rules", "--for", "soon"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "'soon'" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1.0, "1s"),
        (0.25, "250ms"),
        (1.5, "1500ms"),
        (3600.0, "1h"),
        (300.0, "5m"),
        (90.0, "90s"),
        (1e-6, "1ms"),
    ],
)
def test_durations_read_as_prometheus_reads_them(seconds: float, text: str) -> None:
    assert prom_duration(seconds) == text


def test_every_shipped_rule_has_a_runbook_section() -> None:
    runbook = (Path(__file__).resolve().parents[2] / "examples" / "runbook.md").read_text()
    missing = [rule.name for rule in RULES if f"\n## {rule.name}\n" not in runbook]
    assert missing == []


def test_a_rule_file_promtool_rejects_is_one_line_naming_it(tmp_path: Path) -> None:
    from drillkit.errors import InputError
    from drillkit.stacks.recommender.monitoring import check_rules

    bad = tmp_path / "rules.yml"
    bad.write_text(render_rules(MonitoringSettings()).replace("== 0", "== ", 1))
    with pytest.raises(InputError) as caught:
        check_rules(bad)
    message = str(caught.value)
    assert message.startswith(f"{bad}: promtool rejects the rules: ") and "\n" not in message
    good = tmp_path / "good.yml"
    good.write_text(render_rules(MonitoringSettings()))
    check_rules(good)  # no error
