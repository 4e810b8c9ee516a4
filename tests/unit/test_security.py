"""Security properties: what a scenario file, an HTTP client or a model store cannot make
drillkit do.

Covered elsewhere, not repeated here:

* a replica's admin token on a real stack (none, wrong, right):
  ``tests/integration/test_local_stack.py::test_admin_reload_requires_the_token``;
* manifests signed with another key, unsigned where a key is set, metrics edited after
  signing: ``tests/unit/stacks/recommender/test_store.py::test_bad_signatures_are_refused``;
  file names in a manifest that leave the version folder:
  ``test_store.py::test_manifest_cannot_point_outside_its_folder``;
* the loader's message for ``!!python/object/apply``:
  ``tests/unit/scenario/test_loader.py::test_bad_files_name_the_line_and_field[python-tag]``;
* a real container without the stack's labels (docker-marked):
  ``tests/integration/test_docker.py::test_target_guard_refuses_a_container_without_the_stack_labels``.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from pydantic import BaseModel

from drillkit.backends.base import StackIdentity
from drillkit.backends.docker import (
    LABEL_ROLE,
    LABEL_SERVICE,
    LABEL_SESSION,
    LABEL_STACK,
    LABEL_TARGET,
    DockerBackend,
    DockerService,
    DockerStack,
)
from drillkit.errors import ArtifactError, ScenarioError, SignatureError, TargetError
from drillkit.faults.base import fault_param_models
from drillkit.scenario import Scenario, load_scenario, loads_scenario
from drillkit.stacks.plan import Link
from drillkit.stacks.recommender.replica import ReplicaConfig, create_app
from drillkit.stacks.recommender.store import (
    MANIFEST_NAME,
    OLD_KEY_ENV,
    VERIFY_KEY_ENV,
    ModelStore,
    new_signing_key,
)
from drillkit.testing import fake_plan
from tests.unit.stacks.recommender.test_store import make_store

PACKAGE = Path(__file__).resolve().parents[2] / "drillkit"
TOKEN = "s3cret-admin-token"
KEY, PUBLIC = new_signing_key()


def drillkit(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in (OLD_KEY_ENV, VERIFY_KEY_ENV)}
    full.update(DRILLKIT_HOME=str(cwd / "home"), NO_COLOR="1", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "drillkit", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("drillkit: error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr


# --- the replica's admin endpoint ----------------------------------------------------------


class Replica:
    """A replica app in-process (no lifespan: nothing loads) with its reloads counted."""

    def __init__(self, store: Path, token: str | None) -> None:
        self.app = create_app(ReplicaConfig(store=store, name="replica-1", admin_token=token))
        self.replica = self.app.state.replica
        self.reloads = 0
        real = self.replica.reload

        def counted(**kwargs: Any) -> dict[str, Any]:
            self.reloads += 1
            outcome: dict[str, Any] = real(**kwargs)
            return outcome

        self.replica.reload = counted

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://replica") as c:
                return await c.request(method, url, **kwargs)

        return asyncio.run(go())


@pytest.fixture
def replica(tmp_path: Path) -> Replica:
    return Replica(tmp_path / "store", TOKEN)


REFUSED = [
    pytest.param({}, id="no-token"),
    pytest.param({"headers": {"Authorization": "Bearer nope"}}, id="wrong-token"),
    pytest.param({"headers": {"Authorization": "Bearer "}}, id="empty-bearer"),
    pytest.param({"headers": {"Authorization": f"Bearer {TOKEN}x"}}, id="token-plus-a-char"),
    pytest.param({"headers": {"Authorization": f"Bearer {TOKEN[:-1]}"}}, id="token-prefix"),
    pytest.param({"headers": {"Authorization": f"Basic {TOKEN}"}}, id="basic-scheme"),
    pytest.param({"params": {"token": TOKEN}}, id="token-in-query"),
    pytest.param({"params": {"admin_token": TOKEN}}, id="admin-token-in-query"),
    pytest.param({"params": {"authorization": f"Bearer {TOKEN}"}}, id="bearer-in-query"),
    pytest.param({"headers": {"X-Admin-Token": TOKEN}}, id="token-in-another-header"),
    pytest.param({"data": {"token": TOKEN}}, id="token-in-form-body"),
    pytest.param({"headers": {"Authorization": b"Bearer \xff\xfe\x00"}}, id="latin1-bytes"),
    pytest.param({"headers": {"Authorization": "Bearer " + "x" * 100_000}}, id="huge-token"),
]


@pytest.mark.parametrize("kwargs", REFUSED)
def test_admin_reload_refuses_requests_without_the_token(
    replica: Replica, kwargs: dict[str, Any]
) -> None:
    response = replica.request("POST", "/admin/reload", **kwargs)
    assert response.status_code == 401
    assert response.json() == {"error": "missing or wrong admin token"}
    assert replica.reloads == 0


def test_admin_reload_with_the_token_reloads(replica: Replica) -> None:
    # The control case: the same request with the token does reach reload().
    response = replica.request(
        "POST", "/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200
    assert response.json() == {"outcome": "no-current", "serving": None}
    assert replica.reloads == 1


def test_admin_reload_is_post_only(replica: Replica) -> None:
    response = replica.request("GET", "/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 405
    assert replica.reloads == 0


@pytest.mark.parametrize("auth", ["", "Bearer ", "Bearer None", f"Bearer {TOKEN}"])
def test_admin_endpoints_are_off_without_a_configured_token(tmp_path: Path, auth: str) -> None:
    # A replica started without DRILLKIT_ADMIN_TOKEN must not treat "" or "None" as the token.
    off = Replica(tmp_path / "store", None)
    response = off.request("POST", "/admin/reload", headers={"Authorization": auth})
    assert response.status_code == 403
    assert off.reloads == 0


def test_the_token_is_compared_in_constant_time(
    replica: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for token in ("nope", TOKEN):
        replica.request("POST", "/admin/reload", headers={"Authorization": f"Bearer {token}"})
    assert len(calls) == 2
    assert all(TOKEN.encode() in call for call in calls)  # the configured token, as bytes


# --- manifests with a bad signature ----------------------------------------------------------


def _edit_manifest(store: ModelStore, version: str, edit: Callable[[dict[str, Any]], None]) -> None:
    path = store.version_dir(version) / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _signature_of(store: ModelStore, version: str) -> str:
    return str(json.loads((store.version_dir(version) / MANIFEST_NAME).read_text())["signature"])


def _rehash_payload(store: ModelStore) -> Callable[[dict[str, Any]], None]:
    # What someone without the key would do: change a file, then fix its digest and size.
    weights = store.version_dir("v2") / "weights.safetensors"
    weights.write_bytes(b"\0" * 4096)

    def edit(data: dict[str, Any]) -> None:
        data["files"]["weights.safetensors"] = {
            "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "size": 4096,
        }

    return edit


BAD_SIGNATURES: list[Any] = [
    pytest.param(
        lambda s: lambda d: d.update(signature=_signature_of(s, "v1")),
        "signature does not match",
        id="replayed-from-another-version",
    ),
    pytest.param(
        lambda s: lambda d: d.update(signature=d["signature"].upper()),
        "signature does not match",
        id="upper-case-hex",
    ),
    pytest.param(
        lambda s: lambda d: d.update(signature=d["signature"].split(":")[1]),
        "signature does not match",
        id="without-the-scheme",
    ),
    pytest.param(
        lambda s: lambda d: d.update(signature="ed25519:" + "0" * 128),
        "signature does not match",
        id="zeros",
    ),
    pytest.param(
        lambda s: lambda d: d.update(signature="hmac-sha256:" + "0" * 64),
        "signature does not match",
        id="an-hmac",
    ),
    pytest.param(
        lambda s: lambda d: d.update(signature=""), "signature does not match", id="empty"
    ),
    pytest.param(lambda s: lambda d: d.pop("signature"), "unsigned manifest", id="removed"),
    pytest.param(_rehash_payload, "signature does not match", id="payload-swapped-and-rehashed"),
    pytest.param(
        lambda s: lambda d: d["info"].update(dim=9), "signature does not match", id="info-edited"
    ),
]


@pytest.mark.parametrize(("edit", "expected"), BAD_SIGNATURES)
def test_a_manifest_with_a_bad_signature_is_refused(
    tmp_path: Path,
    edit: Callable[[ModelStore], Callable[[dict[str, Any]], None]],
    expected: str,
) -> None:
    store = make_store(tmp_path / "store", key=KEY)
    _edit_manifest(store, "v2", edit(store))
    with pytest.raises(SignatureError, match=expected):
        store.verify("v2", key=PUBLIC)
    store.verify("v1", key=PUBLIC)


@pytest.mark.parametrize("signature", ["ed25519:\u00e9", "\u2603", "ed25519:\ud800"])
def test_a_non_ascii_signature_is_refused_not_a_crash(tmp_path: Path, signature: str) -> None:
    store = make_store(tmp_path / "store", key=KEY)
    _edit_manifest(store, "v2", lambda d: d.update(signature=signature))
    with pytest.raises(ArtifactError):
        store.verify("v2", key=PUBLIC)


def test_the_replica_refuses_a_version_whose_signature_does_not_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # End to end through the replica: the public key set, CURRENT's manifest edited after
    # signing; a hot reload refuses it before loading anything (no model files are needed).
    store = make_store(tmp_path / "store", key=KEY)
    _edit_manifest(store, "v2", lambda d: d["metrics"].update(recall_at_10=0.99))
    monkeypatch.setenv(VERIFY_KEY_ENV, PUBLIC.hex())
    replica = Replica(store.root, TOKEN)
    # The alerts' refusal counter is there at 0 before any refusal, one series per stage,
    # so that Prometheus's increase() sees the first refusal (examples/alerts.yml).
    before = replica.request("GET", "/metrics").text.splitlines()
    for stage in ("integrity", "sanity"):
        assert f'drillkit_replica_model_refusals_total{{stage="{stage}"}} 0.0' in before
    response = replica.request(
        "POST", "/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["outcome"], body["version"]) == ("refused", "v2")
    assert "signature does not match" in body["error"]
    assert replica.replica.served is None  # v1 has no sanity metric: nothing is served
    assert {"version": "v2", "reason": "signature"}.items() <= replica.replica.events[0].items()
    metrics = replica.request("GET", "/metrics").text.splitlines()
    assert any(
        line.startswith("drillkit_replica_integrity_failures_total{")
        and 'version="v2"' in line
        and 'reason="signature"' in line
        and line.endswith(" 1.0")
        for line in metrics
    ), metrics
    # v2 refused, then v1 in the fallback (no sanity metric): two refusals at integrity.
    assert 'drillkit_replica_model_refusals_total{stage="integrity"} 2.0' in metrics
    assert 'drillkit_replica_model_refusals_total{stage="sanity"} 0.0' in metrics


def test_model_verify_names_a_bad_signature(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", key=KEY)
    _edit_manifest(store, "v2", lambda d: d.update(signature=_signature_of(store, "v1")))
    proc = drillkit(
        "model",
        "verify",
        "--store",
        str(store.root),
        cwd=tmp_path,
        env={VERIFY_KEY_ENV: PUBLIC.hex()},
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "FAILED  v2 (CURRENT)" in proc.stdout and "signature does not match" in proc.stdout
    assert "ok      v1" in proc.stdout


def test_model_verify_reports_a_non_ascii_signature_without_a_traceback(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", key=KEY)
    _edit_manifest(store, "v2", lambda d: d.update(signature="ed25519:\u00e9"))
    proc = drillkit(
        "model",
        "verify",
        "--store",
        str(store.root),
        cwd=tmp_path,
        env={VERIFY_KEY_ENV: PUBLIC.hex()},
    )
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1 and "FAILED  v2" in proc.stdout


# --- paths in a scenario ---------------------------------------------------------------------


def _text_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every field of ``model`` (recursively) that holds free text a file author chooses."""
    found: set[str] = set()
    for name, info in model.model_fields.items():
        key = f"{prefix}{info.alias or name}"
        stack: list[Any] = [info.annotation]
        while stack:
            annotation = stack.pop()
            if annotation is str:
                found.add(key)
            elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
                found |= _text_fields(annotation, f"{key}.")
            else:
                stack.extend(get_args(annotation))
    return found


def test_report_dir_is_the_only_path_a_scenario_names() -> None:
    # A tripwire: a new free-text field may name a path (a store, a log, a script) and then
    # needs the same rule as report.dir below. Literals (backend, mode, file, ...) are closed.
    fields = _text_fields(Scenario)
    fields |= {
        f"faults.params[{kind}].{f}"
        for kind, model in fault_param_models().items()
        for f in _text_fields(model)
    }
    assert fields == {
        "name",
        "description",
        "faults.id",
        "faults.kind",
        "faults.target",
        "faults.expect.alerts",  # an alert name: letters, digits and _, never a path
        "report.dir",
        "stack.store",
        "stack.edge.config",  # relative and inside the working folder, as report.dir
        "stack.events.backup_dir",  # the same: a drill's backups are written there
        "stack.zones",  # ZONE_PATTERN: a lowercase letter, then up to 7 letters or digits
        "faults.params[bad_rollout].severity",  # a number and %, ms or s (a pattern)
        # A team's own Compose file and locustfile: relative paths, resolved against the
        # scenario's folder, and refused when they lead out of the working folder.
        "stack.compose",
        "load.locustfile",
        "stack.project",  # PROJECT_PATTERN
        "stack.detect.url",  # an http(s) URL, polled; never a path on this machine
        "stack.detect.service",  # a service of the project, or the report names no one
        "load.host",  # an http(s) URL the load goes to
        "load.requests.path",  # a URL path ('/...'), sent to load.host
        "load.requests.body",
        "load.requests.headers",
        "load.requests.name",
        "faults.params[cut_network].source",  # NAME_PATTERN: a service
        "faults.params[latency].source",
        "faults.params[load_spike].path",  # a URL path ('/...') of the extra GETs
        "faults.params[corrupt_file].path",  # inside the target's mounts, links refused
        # Relative, inside the working folder (scenario_file), read without following a
        # link and only when this user's (read_private).
        "load.token_file",
        "load.hosts.netns",  # a namespace's name (a pattern), one argument of `ip netns exec`
        "load.hosts.ssh",  # [USER@]HOST, never starting with '-': ssh cannot take it for an option
    }


SAFE_DIRS = [
    "reports",
    "out/reports",
    "./reports",
    "reports/nightly-2024",
    "reports..old",
    "a/.../b",
]


@pytest.mark.parametrize("folder", SAFE_DIRS)
def test_a_relative_report_dir_inside_the_working_folder_is_accepted(folder: str) -> None:
    text = f"version: 1\nname: x\nreport: {{dir: {json.dumps(folder)}}}\n"
    assert loads_scenario(text, "drill.yaml").report.dir == folder


ESCAPING_DIRS = [
    pytest.param("..", id="parent"),
    pytest.param("../reports", id="dot-dot"),
    pytest.param("reports/../../elsewhere", id="dot-dot-inside"),
    pytest.param("./../../../../home/user/.ssh", id="deep-dot-dot"),
    pytest.param("/tmp/reports", id="absolute"),
    pytest.param("//server/share", id="double-slash"),
    pytest.param("/", id="root"),
    pytest.param("a\\0b", id="nul"),  # YAML "\0" escape: NUL, ValueError at mkdir after the drill
    # "~" is not expanded; a folder literally named "~" is never what was meant.
    pytest.param("~/reports", id="home"),
]


@pytest.mark.parametrize("folder", ESCAPING_DIRS)
def test_a_report_dir_that_leaves_the_working_folder_is_refused(folder: str) -> None:
    text = f'version: 1\nname: x\nreport:\n  dir: "{folder}"\n'
    with pytest.raises(ScenarioError) as caught:
        loads_scenario(text, "drill.yaml")
    assert str(caught.value).startswith("drill.yaml:4: report.dir: ")


@pytest.mark.parametrize("folder", ESCAPING_DIRS)
def test_a_store_that_leaves_the_working_folder_is_refused(folder: str) -> None:
    # Its drill's faults damage (and restore) the store a scenario names: a shared scenario
    # must not aim them at any store the user running it can write.
    text = f'version: 1\nname: x\nstack:\n  store: "{folder}"\n'
    with pytest.raises(ScenarioError) as caught:
        loads_scenario(text, "drill.yaml")
    assert str(caught.value).startswith("drill.yaml:4: stack.store: ")


@pytest.mark.parametrize("folder", ESCAPING_DIRS)
def test_a_backup_location_that_leaves_the_working_folder_is_refused(folder: str) -> None:
    # The backup service writes (and prunes) backups there: a shared scenario must not point
    # it at any folder of the user running it.
    text = f'version: 1\nname: x\nstack:\n  events:\n    backup_dir: "{folder}"\n'
    with pytest.raises(ScenarioError) as caught:
        loads_scenario(text, "drill.yaml")
    assert str(caught.value).startswith("drill.yaml:5: stack.events.backup_dir: ")


def test_a_store_inside_the_working_folder_is_accepted() -> None:
    text = "version: 1\nname: x\nstack: {store: models/store}\n"
    assert loads_scenario(text, "drill.yaml").stack.store == "models/store"


def test_a_report_dir_with_a_lone_surrogate_is_refused() -> None:
    # os.makedirs could not encode it, after a whole drill: refused when the file is read.
    with pytest.raises(ScenarioError, match=r"^drill.yaml:3: report.dir: .*lone UTF-16 surrogate"):
        loads_scenario('version: 1\nname: x\nreport: {dir: "a\\ud800"}\n', "drill.yaml")


def test_run_refuses_an_escaping_report_dir_before_starting(tmp_path: Path) -> None:
    path = tmp_path / "drill.yaml"
    path.write_text("version: 1\nname: x\nreport: {dir: ../escape}\n")
    proc = drillkit("run", str(path), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{path}:3: report.dir: " in one_error_line(proc)


# --- YAML tags that would build objects ------------------------------------------------------

# {touch}: a shell command creating the marker file; {argv}: the same as an argument list.
TAG_PAYLOADS = [
    pytest.param("description: !!python/object/apply:os.system [{touch}]\n", id="apply-os-system"),
    pytest.param(
        "description: !!python/object/apply:subprocess.call [{argv}]\n", id="apply-subprocess-call"
    ),
    pytest.param("description: !!python/object/new:subprocess.Popen [{argv}]\n", id="new-popen"),
    pytest.param("description: !!python/name:os.system ''\n", id="python-name"),
    pytest.param("description: !!python/module:os ''\n", id="python-module"),
    pytest.param(
        "x-payload: !!python/object/apply:os.system [{touch}]\n", id="in-an-ignored-extension-key"
    ),
    pytest.param(
        "x-a: &p !!python/object/apply:os.system [{touch}]\ndescription: *p\n",
        id="behind-an-anchor",
    ),
    pytest.param("? !!python/name:os.system ''\n: 1\n", id="as-a-key"),
    pytest.param(
        "faults:\n- kind: kill_node\n  target: replica-1\n  at: 1s\n  params: "
        "!!python/object/apply:os.system [{touch}]\n",
        id="as-fault-params",
    ),
    pytest.param(
        "description: !<tag:yaml.org,2002:python/object/apply:os.system> [{touch}]\n",
        id="verbatim-tag",
    ),
    pytest.param("description: !touch {touch}\n", id="custom-local-tag"),
    pytest.param("description: !e!os.system {touch}\n", id="custom-tag-directive"),
]


def _document(body: str, marker: Path) -> str:
    body = body.replace("{touch}", json.dumps(f"touch {marker}")).replace(
        "{argv}", json.dumps(["touch", str(marker)])
    )
    head = "%TAG !e! tag:yaml.org,2002:python/object/apply:\n---\n" if "!e!" in body else ""
    return f"{head}version: 1\nname: x\n{body}"


def test_the_loader_is_a_safe_loader() -> None:
    import yaml

    from drillkit.scenario.loader import _Loader

    assert issubclass(_Loader, yaml.SafeLoader)
    assert not issubclass(_Loader, yaml.FullLoader | yaml.UnsafeLoader | yaml.Loader)


@pytest.mark.parametrize("body", TAG_PAYLOADS)
def test_object_building_yaml_tags_are_refused(tmp_path: Path, body: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "drill.yaml"
    path.write_text(_document(body, marker))
    with pytest.raises(ScenarioError, match="unsupported YAML tag") as caught:
        load_scenario(path)
    assert caught.value.line is not None
    assert str(caught.value).startswith(f"{path}:{caught.value.line}: ")
    assert not marker.exists()


@pytest.mark.parametrize("command", [["validate"], ["run", "--dry-run"]])
def test_the_cli_refuses_object_tags_and_runs_nothing(tmp_path: Path, command: list[str]) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "drill.yaml"
    path.write_text(_document(str(TAG_PAYLOADS[0].values[0]), marker))
    proc = drillkit(*command, str(path), cwd=tmp_path)
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert line.startswith(
        f"drillkit: error: {path}:3: description: unsupported YAML tag "
        "!!python/object/apply:os.system"
    )
    assert not marker.exists()


# --- no scenario value reaches a shell -------------------------------------------------------

_SHELL_CALLS = {
    ("os", "system"),
    ("os", "popen"),
    ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
    ("asyncio", "create_subprocess_shell"),
    ("pty", "spawn"),
}
_SPAWNS = {"run", "Popen", "call", "check_call", "check_output"}
#: The one place a shell runs: network faults in a sidecar container, scripts made of
#: drillkit's own constants, a mode from a Literal and an address parsed by ipaddress.
# The network sidecar: drillkit's own scripts (addresses checked as addresses), for its
# containers and a Compose project's alike.
_SH_C_ALLOWED = {("backends/docker/__init__.py", "run_sidecar")}


class _CallFinder(ast.NodeVisitor):
    """Every call in a module, with the innermost function around it."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.function = "<module>"
        self.found: list[tuple[str, str, ast.Call]] = []

    def _enter(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        outer, self.function = self.function, node.name
        self.generic_visit(node)
        self.function = outer

    visit_FunctionDef = _enter
    visit_AsyncFunctionDef = _enter

    def visit_Call(self, node: ast.Call) -> None:
        self.found.append((self.where, self.function, node))
        self.generic_visit(node)


def _calls() -> list[tuple[str, str, ast.Call]]:
    found: list[tuple[str, str, ast.Call]] = []
    for source in sorted(PACKAGE.rglob("*.py")):
        finder = _CallFinder(str(source.relative_to(PACKAGE)))
        finder.visit(ast.parse(source.read_text(), str(source)))
        found += finder.found
    return found


def test_no_shell_in_process_calls() -> None:
    problems: list[str] = []
    spawns = 0
    for where, function, call in _calls():
        at = f"{where}:{call.lineno} ({function})"
        target = call.func
        dotted = (
            (target.value.id, target.attr)
            if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name))
            else None
        )
        if dotted in _SHELL_CALLS or (
            dotted and dotted[0] == "os" and dotted[1].startswith(("exec", "spawn"))
        ):
            problems.append(f"{at}: {'.'.join(dotted)}")
        for keyword in call.keywords:
            if keyword.arg == "shell" and not (
                isinstance(keyword.value, ast.Constant) and keyword.value.value is False
            ):
                problems.append(f"{at}: shell=")
        if dotted and dotted[0] == "subprocess" and dotted[1] in _SPAWNS and call.args:
            spawns += 1
            argv = call.args[0]
            if isinstance(argv, ast.Constant | ast.JoinedStr | ast.BinOp):
                problems.append(f"{at}: a command line as one string")
        for arg in call.args:
            head = (
                [e.value for e in arg.elts[:2] if isinstance(e, ast.Constant)]
                if isinstance(arg, ast.List)
                else []
            )
            if head in (["sh", "-c"], ["bash", "-c"]) and (where, function) not in _SH_C_ALLOWED:
                problems.append(f"{at}: sh -c")
    assert problems == [], problems
    assert spawns >= 4  # the scan sees the local backend, Locust and image builds


SHELL_VALUES = [
    "$(touch pwned)",
    "`touch pwned`",
    "x; touch pwned",
    "x && touch pwned",
    "x | touch pwned",
    "x\ntouch pwned",
    "$(touch {marker})",
    "'; touch {marker}; '",
]


@pytest.mark.parametrize("command", [["validate"], ["run", "--dry-run"]])
def test_shell_metacharacters_in_scenario_values_run_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    marker = tmp_path / "elsewhere" / "pwned"
    marker.parent.mkdir()
    values = [v.replace("{marker}", str(marker)) for v in SHELL_VALUES]
    doc = {
        "version": 1,
        "name": "shell-meta",
        "description": " ".join(values),
        "x-payload": values,
        "faults": [
            {"kind": "kill_node", "target": "replica-1", "at": "1s"},
            {"kind": "latency", "target": "replica-2", "at": "2s", "params": {"delay": "50ms"}},
        ],
        "report": {"dir": "reports/$(touch pwned)/`touch pwned`;touch pwned"},
    }
    path = tmp_path / "drill.yaml"
    path.write_text(json.dumps(doc))
    proc = drillkit(*command, str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "pwned").exists() and not marker.exists()
    assert not (tmp_path / "reports").exists()  # validate and --dry-run write nothing


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param("name: x;touch pwned\n", "name", id="name"),
        pytest.param(
            "name: x\nfaults:\n- {id: '$(touch pwned)', kind: kill_node, "
            "target: replica-1, at: 1}\n",
            "faults[0].id",
            id="fault-id",
        ),
        pytest.param(
            "name: x\nfaults:\n- {kind: kill_node, target: 'replica-1;touch pwned', at: 1}\n",
            "faults[0].target",
            id="target",
        ),
        pytest.param(
            "name: x\nfaults:\n- {kind: kill_node, target: [replica-1, '`touch`'], at: 1}\n",
            "faults[0].target[1]",
            id="target-in-a-list",
        ),
        pytest.param(
            "name: x\nfaults:\n- {kind: 'kill_node;id', target: replica-1, at: 1}\n",
            "faults[0].kind",
            id="kind",
        ),
        pytest.param(
            "name: x\nfaults:\n- {kind: kill_node, target: replica-1, at: 1, "
            "params: {signal: 'KILL;id'}}\n",
            "faults[0].params.signal",
            id="signal",
        ),
        pytest.param(
            "name: x\nfaults:\n- {kind: corrupt_model, target: replica-1, at: 1, "
            "params: {file: '../../etc/passwd'}}\n",
            "faults[0].params.file",
            id="corrupt-file",
        ),
        pytest.param("name: x\nstack: {backend: 'local;id'}\n", "stack.backend", id="backend"),
        pytest.param(
            "name: x\nreport: {formats: ['json;id']}\n", "report.formats[0]", id="report-format"
        ),
    ],
)
def test_names_that_reach_commands_refuse_shell_metacharacters(body: str, field: str) -> None:
    # Everything that becomes part of a command line, a file name or a container name is a
    # closed set or a strict pattern; only description and report.dir are free text.
    with pytest.raises(ScenarioError) as caught:
        loads_scenario("version: 1\n" + body, "drill.yaml")
    assert caught.value.field == field


# --- the docker target guard -----------------------------------------------------------------


class FakeContainer:
    def __init__(self, labels: dict[str, str] | None, name: str = "stranger") -> None:
        self.labels = labels
        self.name = name
        self.id = "f" * 64
        self.status = "running"
        self.touched: list[str] = []

    def __getattr__(self, action: str) -> Callable[..., None]:
        # kill, pause, unpause, start, wait, exec_run, ...: any action is recorded.
        def act(*args: object, **kwargs: object) -> None:
            self.touched.append(action)

        return act


class FakeDockerClient:
    def __init__(self, container: FakeContainer) -> None:
        self.container = container

        class Containers:
            @staticmethod
            def get(ident: str) -> FakeContainer:
                return container

        self.containers = Containers()


ST1 = "20260101-000000-0000f1"


def _container_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _state() -> DockerStack:
    plan = fake_plan(replicas=2)
    return DockerStack(
        backend="docker",
        plan=plan,
        **StackIdentity(id=ST1, run_dir=Path("/nonexistent"), gpu=False).fields(),
        services={
            s.name: DockerService(
                name=s.name, role=s.role, ports={"http": 2}, container=_container_id(s.name)
            )
            for s in plan.services
        },
        image="drillkit/stack:test",
        network=f"drillkit-{ST1}",
        session="sess",
    )


def _labels(
    stack: str = ST1,
    service: str = "replica-2",
    target: str | None = "true",
) -> dict[str, str]:
    labels = {
        LABEL_STACK: stack,
        LABEL_SESSION: "sess",
        LABEL_SERVICE: service,
        LABEL_ROLE: "replica",
    }
    if target is not None:
        labels[LABEL_TARGET] = target
    return labels


def _backend(container: FakeContainer) -> DockerBackend:
    backend = DockerBackend()
    backend._client = FakeDockerClient(container)
    return backend


LINK = Link(source="gateway", target="replica-2")
GUARDED: list[Any] = [
    pytest.param(lambda b, s: b.kill(s, "replica-2"), id="kill"),
    pytest.param(lambda b, s: b.pause(s, "replica-2"), id="pause"),
    pytest.param(lambda b, s: b.resume(s, "replica-2"), id="resume"),
    pytest.param(lambda b, s: b.restart(s, "replica-2"), id="restart"),
    pytest.param(lambda b, s: b.cut_link(s, LINK, mode="blackhole"), id="cut-link"),
    pytest.param(lambda b, s: b.slow_link(s, LINK, delay=0.1, jitter=0.0), id="slow-link"),
]
STRANGERS = [
    pytest.param(None, id="no-labels"),
    pytest.param({"com.example": "x"}, id="foreign-labels"),
    pytest.param(_labels(stack="other"), id="another-stacks-labels"),
    pytest.param(_labels(target=None), id="not-a-target"),
    pytest.param(_labels(target="false"), id="target-false"),
    pytest.param(_labels(service="replica-1"), id="another-services-container"),
    pytest.param(
        {LABEL_SESSION: "sess", LABEL_ROLE: "sidecar", LABEL_STACK: ST1},
        id="the-stacks-own-sidecar",
    ),
]


@pytest.mark.parametrize("action", GUARDED)
@pytest.mark.parametrize("labels", STRANGERS)
def test_the_docker_guard_refuses_a_container_without_this_stacks_labels(
    labels: dict[str, str] | None, action: Callable[[DockerBackend, DockerStack], object]
) -> None:
    container = FakeContainer(labels)
    with pytest.raises(TargetError, match=f"not a drill target of stack {ST1}") as caught:
        action(_backend(container), _state())
    assert caught.value.exit_code == 2
    assert container.touched == []


def test_the_docker_guard_lets_the_stacks_own_target_through() -> None:
    container = FakeContainer(_labels(), name=f"drillkit-{ST1}-replica-2")
    _backend(container).kill(_state(), "replica-2")
    assert container.touched == ["kill"]


def test_the_docker_guard_refuses_a_name_that_is_not_a_service() -> None:
    container = FakeContainer(_labels())
    with pytest.raises(TargetError, match=f"'replica-9' is not a service of stack {ST1}"):
        _backend(container).kill(_state(), "replica-9")
    assert container.touched == []
