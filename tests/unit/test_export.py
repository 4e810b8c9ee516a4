"""``drillkit stack export --compose``: the reference stack as a Docker Compose project that
runs what the docker backend runs (the model artifacts are a small stand-in store here; the
real stack is exported and started by hand, see docs/export-compose.md)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from drillkit.backends.docker import SECRETS_MOUNT
from drillkit.backends.docker.image import image_plan
from drillkit.cli import app
from drillkit.errors import InputError
from drillkit.stacks import export
from drillkit.stacks.plan import Endpoint, Mount, Program, StackPlan
from drillkit.stacks.recommender.store import ModelStore
from drillkit.testing import service_plan
from tests.unit.stacks.recommender.test_store import make_store

UID_GID = f"{os.getuid()}:{os.getgid()}"
HEALTHCHECK = {"interval": "5s", "timeout": "2s", "retries": 3, "start_period": "120s"}


@pytest.fixture
def artifacts(tmp_path: Path, drillkit_home: Path, monkeypatch: pytest.MonkeyPatch) -> ModelStore:
    """A small signed-off store stands in for the trained artifacts; the image counts as
    built, so the output does not depend on this machine's Docker Engine."""
    store = make_store(tmp_path / "artifacts")
    monkeypatch.setattr("drillkit.stacks.recommender.build.ensure_artifacts", lambda *a, **k: store)
    monkeypatch.setattr(export, "missing_images", lambda images: [])
    return store


def _export(folder: Path, *args: str) -> Any:
    return CliRunner().invoke(
        app, ["stack", "export", "--compose", str(folder), "--replicas", "2", *args]
    )


def _compose(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((folder / "compose.yaml").read_text())
    return data


def _sources(service: dict[str, Any]) -> list[str]:
    return [volume.split(":")[0] for volume in service.get("volumes", [])]


def test_the_export_is_the_docker_backends_stack_as_compose(
    artifacts: ModelStore, tmp_path: Path
) -> None:
    folder = tmp_path / "out" / "project"
    result = _export(folder)
    assert result.exit_code == 0, result.output
    compose = _compose(folder)
    assert compose["version"] == "2.4"
    services = compose["services"]
    assert list(services) == [
        "replica-1", "replica-2", "gateway", "alert-receiver", "alertmanager", "prometheus",
    ]  # fmt: skip
    tag = image_plan(gpu=False).tag
    assert {s["image"] for s in services.values()} == {tag}
    replica = services["replica-1"]
    assert replica["command"] == [
        "python3", "-m", "drillkit.stacks.recommender.replica",
        "--store", "/store", "--name", "replica-1", "--host", "0.0.0.0", "--port", "8000",
        "--device", "cpu", "--readiness", "deep",
    ]  # fmt: skip
    gateway = services["gateway"]
    assert "replica-2=http://replica-2:8000" in gateway["command"]
    assert replica["ports"] == ["127.0.0.1::8000"] and gateway["ports"] == ["127.0.0.1::8080"]
    assert services["prometheus"]["ports"] == ["127.0.0.1::9090"]
    assert all(s["user"] == UID_GID for s in services.values())
    assert all(s["stop_grace_period"] == "8s" for s in services.values())
    assert all(s["hostname"] == name for name, s in services.items())
    for name, service in services.items():
        role = {"replica-1": "replica", "replica-2": "replica", "gateway": "gateway"}
        assert service["labels"] == {
            "drillkit.exported": "true",
            "drillkit.role": role.get(name, "monitoring"),
        }
        check = service["healthcheck"]
        assert check["test"][:3] == ["CMD", "python3", "-c"]
        assert {k: v for k, v in check.items() if k != "test"} == HEALTHCHECK
    assert "http://127.0.0.1:8000/readyz" in replica["healthcheck"]["test"][3]
    # Started after the replicas, as the plan says; ready (healthy) where it says so.
    assert gateway["depends_on"] == {
        "replica-1": {"condition": "service_started"},
        "replica-2": {"condition": "service_started"},
    }
    assert services["alertmanager"]["depends_on"] == {
        "alert-receiver": {"condition": "service_healthy"}
    }
    # Every mount a relative bind mount of a folder inside the project.
    assert replica["volumes"] == [
        "./data/nodes/replica-1/store:/store:ro",
        f"./secrets/replica-1:{SECRETS_MOUNT}:ro",
    ]
    assert "./data/monitoring/prometheus:/prom" in services["prometheus"]["volumes"]
    for service in services.values():
        for source in _sources(service):
            assert source.startswith("./") and (folder / source).is_dir(), source
    for name in ("replica-1", "replica-2"):
        copy = ModelStore(folder / "data" / "nodes" / name / "store")
        assert copy.current() == artifacts.current() and copy.root != artifacts.root
    text = (folder / "compose.yaml").read_text()
    assert str(tmp_path) not in text  # the folder can be moved
    # Nothing but the project next to it: the temporary folder became the project.
    assert [p.name for p in folder.parent.iterdir()] == ["project"]
    assert f"docker-compose -f {folder / 'compose.yaml'} up -d" in result.stdout
    assert "warning" not in result.output


def test_secrets_are_files_of_their_own_that_compose_yaml_does_not_hold(
    artifacts: ModelStore, tmp_path: Path
) -> None:
    folder = tmp_path / "project"
    assert _export(folder).exit_code == 0
    services = _compose(folder)["services"]
    tokens = set()
    for name in ("replica-1", "replica-2", "gateway"):
        secret = folder / "secrets" / name / "admin-token"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
        tokens.add(secret.read_text())
        env = services[name]["environment"]
        assert env["DRILLKIT_ADMIN_TOKEN_FILE"] == f"{SECRETS_MOUNT}/admin-token"
        assert env["PYTHONUNBUFFERED"] == "1"
    assert len(tokens) == 1 and len(token := tokens.pop()) == 32
    assert token not in (folder / "compose.yaml").read_text()
    assert not (folder / "secrets" / "prometheus").exists()  # no secret, no folder
    assert "secrets" not in str(_sources(services["prometheus"]))


def test_the_event_path_waits_for_a_started_event_store(
    artifacts: ModelStore, tmp_path: Path
) -> None:
    folder = tmp_path / "project"
    result = _export(folder, "--events")
    assert result.exit_code == 0, result.output
    services = _compose(folder)["services"]
    store = services["event-store"]
    # Redis is ready when it accepts a connection: no HTTP healthcheck, so "started".
    assert "healthcheck" not in store
    assert services["replica-1"]["depends_on"] == {"event-store": {"condition": "service_started"}}
    assert store["volumes"] == ["./data/event-store:/data"]
    assert "./data/store:/models" in services["backup"]["volumes"]
    assert "--events" in services["gateway"]["command"]


def test_a_folder_that_is_not_empty_is_refused_and_left_alone(
    artifacts: ModelStore, tmp_path: Path
) -> None:
    folder = tmp_path / "work" / "project"
    folder.mkdir(parents=True)
    (folder / "mine.txt").write_text("keep me")
    result = _export(folder)
    assert isinstance(result.exception, InputError) and result.exception.exit_code == 2
    assert "not empty" in str(result.exception) and "--force" in str(result.exception)
    assert [p.name for p in folder.iterdir()] == ["mine.txt"]
    assert [p.name for p in folder.parent.iterdir()] == ["project"]
    # --force replaces it whole; an empty folder needs no --force.
    assert _export(folder, "--force").exit_code == 0
    assert sorted(p.name for p in folder.iterdir()) == ["compose.yaml", "data", "secrets"]
    assert [p.name for p in folder.parent.iterdir()] == ["project"]  # the old one is gone
    empty = tmp_path / "work" / "empty"
    empty.mkdir()
    assert _export(empty).exit_code == 0 and (empty / "compose.yaml").is_file()


def test_the_refusal_is_exit_2_and_one_line(tmp_path: Path, drillkit_home: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "x").write_text("")
    env = {**os.environ, "DRILLKIT_HOME": str(drillkit_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "drillkit", "stack", "export", "--compose", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"drillkit: error: {folder} exists and is not empty; name a new folder or add --force"
    ]
    assert [p.name for p in folder.iterdir()] == ["x"]


def test_a_failed_export_leaves_nothing_behind(
    artifacts: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from drillkit.stacks.recommender.preset import RecommenderPreset

    real = RecommenderPreset.plan

    def half(self: RecommenderPreset, *args: Any, **kwargs: Any) -> StackPlan:
        real(self, *args, **kwargs)  # the store copies are written, then it fails
        raise InputError("planned failure")

    monkeypatch.setattr(RecommenderPreset, "plan", half)
    work = tmp_path / "work"
    work.mkdir()
    result = _export(work / "project")
    assert isinstance(result.exception, InputError)
    assert list(work.iterdir()) == []


def test_a_missing_image_is_a_warning_naming_the_build(
    artifacts: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "missing_images", lambda images: list(images))
    result = _export(tmp_path / "project")
    assert result.exit_code == 0, result.output
    tag = image_plan(gpu=False).tag
    assert f"image {tag} is not built" in result.stderr
    assert "drillkit stack build --backend docker" in result.stderr
    assert (tmp_path / "project" / "compose.yaml").is_file()


def test_compose_reads_values_literally(tmp_path: Path) -> None:
    plan = StackPlan(
        preset="p",
        services=(
            service_plan(
                "app",
                program=Program(executable="/bin/echo", args=("$HOME",), image="other:1"),
                env={"PRICE": "$5"},
                mounts=(Mount(name="m", source="/srv/outside", target="/m"),),
            ),
        ),
        entry=Endpoint(service="app"),
    )
    compose, folders = export.compose_project(plan, tmp_path, stack_image="drillkit/stack:x")
    app_service = compose["services"]["app"]
    assert app_service["command"] == ["/bin/echo", "$$HOME"]
    assert app_service["environment"]["PRICE"] == "$$5"
    # Another image: no drillkit user or Python healthcheck; a mount outside stays absolute.
    assert app_service["image"] == "other:1"
    assert "user" not in app_service and "healthcheck" not in app_service
    assert app_service["volumes"] == ["/srv/outside:/m:ro"]
    assert folders == []


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="no docker-compose on PATH")
def test_docker_compose_accepts_the_project(artifacts: ModelStore, tmp_path: Path) -> None:
    folder = tmp_path / "project"
    assert _export(folder, "--events").exit_code == 0
    proc = subprocess.run(
        ["docker-compose", "-f", str(folder / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
