"""Third-party fault plugins, installed with pip into a fresh virtual environment.

The example package in examples/custom-fault (``flap_node``) must install, register through
the ``drillkit.faults`` entry point, validate and run a whole drill on the local backend, and
pass its own tests; a plugin that fails to import must cost a warning, not the command.
Everything installs offline: the venv sees this interpreter's packages (drillkit, setuptools,
pip, pytest) and pip builds without isolation and without an index.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Cli, leftovers, stack_files

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "custom-fault"
BUILTIN_KINDS = {
    "kill_node",
    "pause_node",
    "cut_network",
    "latency",
    "corrupt_model",
    "load_spike",
    "zone_outage",
    "cache_flush",
    "rollout",
    "bad_rollout",
    "data_loss",
    "backup_failure",
    "corrupt_file",
    "gpu_fault",
}


class VenvCli(Cli):
    """`python -m drillkit` with a venv's interpreter, in the environment of the `cli` fixture
    (the session's small model cache, this test's state folder)."""

    def __init__(self, python: Path, cli: Cli, cwd: Path) -> None:
        super().__init__(cli.env)
        self.python = python
        self.cwd = cwd

    def __call__(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return self.run("-m", "drillkit", *args, timeout=timeout)

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.python), *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def make_venv(path: Path) -> Path:
    """A venv that sees this interpreter's packages; its python."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    python = path / "bin" / "python"
    if sys.prefix != sys.base_prefix:
        # Run from a venv, --system-site-packages would reach the base interpreter's packages,
        # not this venv's: add this one's site folders (processing their .pth files, which is
        # where an editable drillkit lives).
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        Path(purelib, "_drillkit_parent_env.pth").write_text(
            "".join(
                f"import site; site.addsitedir({folder!r})\n" for folder in site.getsitepackages()
            )
        )
    return python


def pip_install(python: Path, source: Path) -> None:
    proc = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def copy_example(tmp_path: Path) -> Path:
    """The example, copied: pip builds in the source tree, which must stay clean."""
    copy = tmp_path / "custom-fault"
    shutil.copytree(
        EXAMPLE,
        copy,
        ignore=shutil.ignore_patterns(
            "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"
        ),
    )
    return copy


def test_the_example_plugin_installs_validates_and_drills(cli: Cli, tmp_path: Path) -> None:
    example = copy_example(tmp_path)
    scenario = example / "scenarios" / "flap-node.yaml"
    python = make_venv(tmp_path / "venv")
    pip_install(python, example)
    venv = VenvCli(python, cli, tmp_path)

    listed = venv("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "warning" not in listed.stderr.lower(), listed.stderr
    faults = json.loads(listed.stdout)["faults"]
    assert set(faults) >= BUILTIN_KINDS
    flap = faults["flap_node"]
    assert flap["source"] == "drillkit_flap_fault:FlapNode"
    assert flap["targets"] == ["replica"]
    assert set(flap["params"]) == {"down", "up", "signal"}
    assert all(param.get("description") for param in flap["params"].values())
    assert flap["params"]["signal"]["default"] == "KILL"

    validated = venv("validate", str(scenario))
    assert validated.returncode == 0, validated.stderr
    assert "flap-1" in validated.stdout

    report = tmp_path / "r.json"
    ran = venv(
        "run",
        str(scenario),
        "--ci",
        "--out",
        str(tmp_path / "reports"),
        "--json",
        str(report),
        timeout=300,
    )
    assert "Traceback" not in ran.stderr, ran.stderr
    data = json.loads(report.read_text())
    assert ran.returncode == 0, (data.get("error"), data.get("checks"))
    assert data["status"] == "passed"
    (fault,) = data["faults"]
    assert fault["kind"] == "flap_node" and fault["target"] == "replica-2"
    assert fault["injected_at"] == pytest.approx(2.0, abs=0.5)
    assert fault["healed_at"] is not None and fault["healed_at"] >= 2.0 + 9.0 - 0.5
    assert "is gone after SIGKILL" in fault["evidence"]
    assert fault["failed_requests"] == 0 and fault["wrong_model_responses"] == 0
    healed = next(c for c in data["checks"] if c["name"] == "flap-1.healed")
    assert healed["passed"]
    # It flapped: replica-2 started at least twice more after the stack came up (each
    # restart follows a kill; the last one may be heal's).
    (log,) = stack_files(cli, "logs/replica-2.log")
    assert log.read_text().count("replica-2: serving model") >= 3, log.read_text()
    assert not leftovers(cli)
    assert not stack_files(cli, "journal.jsonl")

    # The example's own unit tests, with the plugin installed (so none is skipped).
    tested = venv.run(
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(example / "tests"), timeout=120
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert " passed" in tested.stdout and "skipped" not in tested.stdout, tested.stdout


BROKEN_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "drillkit-broken-fault"
version = "0.0.1"

[project.entry-points."drillkit.faults"]
broken_kind = "broken_fault:Broken"

[tool.setuptools]
py-modules = ["broken_fault"]
"""


def test_a_plugin_that_fails_to_import_costs_a_warning(cli: Cli, tmp_path: Path) -> None:
    package = tmp_path / "broken"
    package.mkdir()
    (package / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (package / "broken_fault.py").write_text(
        'raise ImportError("this plugin is broken on purpose")\n'
    )
    python = make_venv(tmp_path / "venv")
    pip_install(python, package)
    venv = VenvCli(python, cli, tmp_path)

    listed = venv("list")
    assert listed.returncode == 0, listed.stderr
    for kind in BUILTIN_KINDS:
        assert kind in listed.stdout
    as_json = venv("list", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert set(json.loads(as_json.stdout)["faults"]) == BUILTIN_KINDS  # stdout stays JSON

    validated = venv("validate", str(ROOT / "scenarios" / "kill-node.yaml"))
    assert validated.returncode == 0, validated.stderr
    assert "ok" in validated.stdout

    for proc in (listed, as_json, validated):
        assert "warning" in proc.stderr.lower(), proc.stderr
        assert "broken_kind" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr


def test_the_example_sdist_carries_and_passes_its_own_tests(cli: Cli, tmp_path: Path) -> None:
    # What a packager does with the sdist: unpack, install, run the tests it ships. The
    # tests' conftest and the scenario they read must be in it (they were left out).
    import tarfile
    import tomllib

    example = copy_example(tmp_path)
    built = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", "dist", "."],
        cwd=example,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (sdist,) = (example / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        archive.extractall(tmp_path / "unpacked", filter="data")
    assert {"tests/conftest.py", "tests/test_flap_node.py", "scenarios/flap-node.yaml"} <= names
    (unpacked,) = (tmp_path / "unpacked").iterdir()

    meta = tomllib.loads((unpacked / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("pydantic") for dep in meta["dependencies"])  # it imports it
    assert isinstance(meta["license"], str)  # an SPDX expression, not the deprecated table

    python = make_venv(tmp_path / "venv")
    pip_install(python, unpacked)
    venv = VenvCli(python, cli, unpacked)
    tested = venv.run("-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests", timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert " passed" in tested.stdout and "skipped" not in tested.stdout, tested.stdout
