"""The scheduled-drill examples under examples/ci: they lint, and their commands, run verbatim
on the local backend, do what the comments promise (reports, history, compare, trend)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from .conftest import Cli, leftovers
from .test_drills import KILL, scenario

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "ci"
BUNDLED = {p.stem for p in (ROOT / "scenarios").glob("*.yaml")}
_EXPR = re.compile(r"\$\{\{\s*([^}]+?)\s*\}\}")


def test_the_examples_pass_yamllint() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "yamllint",
            "--strict",
            "-c",
            str(ROOT / ".yamllint.yaml"),
            str(EXAMPLES),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _github() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    return doc


def _gitlab() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())
    return doc


def test_github_workflow_is_a_scheduled_matrix_that_uploads_reports() -> None:
    doc: dict[Any, Any] = _github()
    triggers = doc["on"] if "on" in doc else doc[True]  # YAML 1.1 reads a bare `on` as true
    assert triggers["schedule"][0]["cron"].count(" ") == 4
    job = doc["jobs"]["drill"]
    scenarios = job["strategy"]["matrix"]["scenario"]
    assert scenarios and set(scenarios) <= BUNDLED
    upload = [
        s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")
    ]
    assert upload and upload[0]["if"] == "always()" and upload[0]["with"]["path"] == "reports/"


def test_gitlab_job_is_a_scheduled_matrix_with_artifacts() -> None:
    job = _gitlab()["drill"]
    assert any("schedule" in rule["if"] for rule in job["rules"])
    scenarios = job["parallel"]["matrix"][0]["SCENARIO"]
    assert scenarios and set(scenarios) <= BUNDLED
    assert job["artifacts"]["when"] == "always" and "reports/" in job["artifacts"]["paths"]
    assert job["artifacts"]["reports"]["junit"] == "reports/*.xml"


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # `drillkit` on PATH is the one of this interpreter, as `pip install` would place it.
    path = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env={**env, "PATH": path},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _github_job(workdir: Path, env: dict[str, str]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run the workflow's shell steps the way a runner would: in order, skipping a step without
    `if: always()` once one failed; `uses:` steps (checkout, caches) are the runner's."""
    outcomes: dict[str, subprocess.CompletedProcess[str]] = {}
    failed = False
    for step in _github()["jobs"]["drill"]["steps"]:
        if "run" not in step or step["name"] == "Install drillkit":
            continue
        if failed and step.get("if") != "always()":
            continue
        proc = _bash(step["run"], workdir, env)
        outcomes[step["name"]] = proc
        failed = failed or proc.returncode != 0
    return outcomes


def _project(workdir: Path) -> str:
    """A project checkout with its own drill in scenarios/, named as a CI matrix names it."""
    (workdir / "scenarios").mkdir(parents=True)
    scenario(workdir / "scenarios", "ci-kill", [KILL])
    return "ci-kill"


def _job_env(cli: Cli, workdir: Path, drill: str) -> dict[str, str]:
    return {
        **cli.env,
        "SCENARIO": drill,
        "GITHUB_STEP_SUMMARY": str(workdir / "summary"),
        "GITHUB_SHA": "0123456789abcdef",
    }


def test_github_job_commands_run_verbatim(cli: Cli, tmp_path: Path) -> None:
    workdir = tmp_path / "workspace"
    workdir.mkdir()
    drill = _project(workdir)
    env = _job_env(cli, workdir, drill)
    # Two scheduled runs; the runner's cache carries drill-history/ from one to the next.
    first = _github_job(workdir, env)
    for name, proc in first.items():
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"
    assert "no previous run" in first["Compare with the previous run"].stdout
    second = _github_job(workdir, env)
    assert second["Run the drill"].returncode == 0, second["Run the drill"].stderr
    compared = second["Compare with the previous run"]
    # Two honest runs may differ by more than the tolerance; what matters is that the gate
    # judged the pair and its exit code says what it printed.
    assert compared.returncode in (0, 1), compared.stderr
    assert ("no regressions" in compared.stdout) == (compared.returncode == 0)

    reports = workdir / "reports"
    assert (reports / "ci-kill.html").is_file() and (reports / "ci-kill.png").is_file()
    assert (reports / "ci-kill.xml").is_file()
    history = [
        json.loads(line)
        for line in (workdir / "drill-history" / "history.jsonl").read_text().splitlines()
    ]
    assert [h["scenario"] for h in history] == ["ci-kill", "ci-kill"]
    assert history[-1]["commit"] == "0123456789abcdef"
    assert "ci-kill: 2 runs" in (workdir / "summary").read_text()
    assert not leftovers(cli)


def test_gitlab_script_runs_verbatim(cli: Cli, tmp_path: Path) -> None:
    workdir = tmp_path / "project"
    workdir.mkdir()
    drill = _project(workdir)
    job = _gitlab()["drill"]
    script = "\n".join(job["script"])
    proc = _bash(script, workdir, _job_env(cli, workdir, drill))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ci-kill: 1 run," in proc.stdout
    assert (workdir / "drill-history" / "last.json").is_file()
    assert sorted(p.suffix for p in (workdir / "reports").glob("ci-kill.*")) == [
        ".html",
        ".png",
        ".xml",
    ]
    assert not leftovers(cli)


def test_the_matrix_scenarios_validate(cli: Cli) -> None:
    names = set(_github()["jobs"]["drill"]["strategy"]["matrix"]["scenario"])
    names |= set(_gitlab()["drill"]["parallel"]["matrix"][0]["SCENARIO"])
    proc = cli("validate", *sorted(names))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ok  ") == len(names)
