"""The scheduled-drill examples under examples/ci: they lint, and their commands, run verbatim
on the local backend, do what the comments promise (reports, history, compare, trend)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
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


@pytest.mark.parametrize(
    ("name", "schema"),
    [("github-actions.yml", "vendor.github-workflows"), ("gitlab-ci.yml", "vendor.gitlab-ci")],
)
def test_the_examples_match_the_official_schemas(name: str, schema: str) -> None:
    # check-jsonschema's bundled copies of GitHub's workflow schema and GitLab's CI schema.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            schema,
            str(EXAMPLES / name),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_examples_install_a_pinned_drillkit_never_the_bare_pypi_name() -> None:
    github = _github()
    assert github["permissions"] == {"contents": "read"}
    assert github["defaults"]["run"]["shell"] == "bash"  # pipefail for `drillkit ... | tee`
    steps = github["jobs"]["drill"]["steps"]
    (install,) = [s for s in steps if s.get("name") == "Install drillkit"]
    spec = github["env"]["DRILLKIT_PIP_SPEC"]
    assert spec.startswith("drillkit @ git+https://github.com/") and "vars.DRILLKIT_REF" in spec
    assert "download.pytorch.org/whl/cpu" in github["env"]["TORCH_INDEX_URL"]
    assert '--index-url "$TORCH_INDEX_URL"' in install["run"]
    uses = [str(s.get("uses", "")) for s in github["jobs"]["drill"]["steps"]]
    assert any(u.startswith("mikepenz/action-junit-report") for u in uses)  # JUnit in the summary
    gitlab = "\n".join(_gitlab()["drill"]["before_script"])
    assert "git+${DRILLKIT_REPOSITORY_URL}@${DRILLKIT_REF}" in gitlab
    assert "$TORCH_INDEX_URL" in gitlab
    for text in (yaml.safe_dump(github), gitlab):
        assert 'pip install "$DRILLKIT_PIP_SPEC"' in text or "git+" in text
        assert "pip install drillkit\n" not in text and 'pip install "drillkit"' not in text


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
    assert "no previous run" in first["Compare with the last good run"].stdout
    second = _github_job(workdir, env)
    assert second["Run the drill"].returncode == 0, second["Run the drill"].stderr
    compared = second["Compare with the last good run"]
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
    summary = (workdir / "summary").read_text()
    assert "ci-kill: 2 runs" in summary
    # The summary is GitHub-flavoured Markdown: tables, never box drawing.
    assert "### drill ci-kill" in summary and "| started |" in summary
    assert not set("┃━╇") & set(summary)
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


def _step(name: str) -> str:
    (step,) = [s for s in _github()["jobs"]["drill"]["steps"] if s.get("name") == name]
    return str(step["run"])


def test_a_regression_never_becomes_the_next_baseline(cli: Cli, tmp_path: Path) -> None:
    # The last good night had rto 2.0 s; tonight's run passed but its rto grew to 2.6 s: the
    # gate fails the job, and drill-history keeps the good night as the baseline, so that
    # tomorrow is compared with it again rather than with the regression.
    from drillkit.reports.jsonfile import write_report
    from tests.unit.cli.test_report_cli import _rto
    from tests.unit.reports.test_model import sample_report

    work = tmp_path / "w"
    good = write_report(_rto(sample_report(), 2.0), work / "drill-history" / "last.json")
    baseline = good.read_text()
    write_report(_rto(sample_report(), 2.6), work / "reports" / "last.json")
    env = _job_env(cli, work, "kill-node")
    compared = _bash(_step("Compare with the last good run"), work, env)
    assert compared.returncode == 1, compared.stdout + compared.stderr
    assert "**1 regression**" in (work / "summary").read_text()
    kept = _bash(_step("Keep the history for the next run"), work, env)
    assert kept.returncode == 0, kept.stderr
    assert (work / "drill-history" / "last.json").read_text() == baseline

    (work / "reports" / ".regressed").unlink()
    better = write_report(_rto(sample_report(), 1.5), work / "reports" / "last.json")
    assert _bash(_step("Compare with the last good run"), work, env).returncode == 0
    assert _bash(_step("Keep the history for the next run"), work, env).returncode == 0
    # A good night that did not regress is the new baseline.
    assert (work / "drill-history" / "last.json").read_text() == better.read_text()
