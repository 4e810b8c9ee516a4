"""A Compose project in a scenario: the format's checks, the project read through Compose's
own ``config`` output, and the targets checked against it before anything starts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drillkit.engine import backend_for, plan_faults
from drillkit.errors import InputError, ScenarioError, TargetError
from drillkit.scenario.loader import loads_scenario
from drillkit.scenario.model import Scenario
from drillkit.stacks.compose import _container_port, compose_services
from drillkit.stacks.compose.spec import ComposeSpec, service_address

BASE = """
version: 1
name: app-drill
stack:
  compose: compose.yaml
load:
  host: http://lb:8080
  duration: 10
"""


def _scenario(extra: str = "", base: str = BASE) -> Scenario:
    return loads_scenario(base + extra, "drill.yaml")


def test_a_compose_stack_resolves_against_the_scenario_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    scenario = _scenario("faults:\n  - {kind: kill_node, target: web, at: 2}\n")
    assert scenario.backend_name == "compose"
    spec = scenario.drill_spec(tmp_path, seed=7)
    assert isinstance(spec, ComposeSpec)
    assert spec.file == (tmp_path / "compose.yaml").resolve()
    assert spec.seed == 7 and spec.containers == "one" and not spec.attach
    assert spec.entry is not None and (spec.entry.service, spec.entry.port) == ("lb", 8080)
    # The project's services are not known yet: the targets as written.
    assert plan_faults(scenario, 0)[0].targets == ["web"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  replicas: 5\n", "stack.replicas: replicas is a setting of the reference stack"),
        ("  zones: [a, b]\n", "stack.zones: zones is a setting of the reference stack"),
        ("  containers: some\n", "stack.containers: expected 'one' or 'all'"),
        ("  detect: [{url: 'ftp://lb/x'}]\n", "stack.detect[0].url: expected an http(s)://"),
        ("  project: My_App\n", "stack.project"),
    ],
)
def test_settings_that_do_not_fit_a_compose_stack_are_refused(extra: str, message: str) -> None:
    text = BASE.replace("  compose: compose.yaml\n", "  compose: compose.yaml\n" + extra)
    with pytest.raises(ScenarioError, match=re.escape(message)):
        _scenario(base=text)


def test_compose_settings_need_a_compose_file() -> None:
    with pytest.raises(ScenarioError, match=r"stack.attach: attach needs stack.compose"):
        loads_scenario("version: 1\nname: x\nstack:\n  attach: true\n", "x.yaml")


@pytest.mark.parametrize(
    ("load", "message"),
    [
        ("  locustfile: a.py\n  requests: [{path: /}]\n", "give a locustfile or requests"),
        ("  requests: [{path: nope}]\n", "expected a path starting with '/'"),
        ("  requests: [{path: /, weight: 0}]\n", "expected a number at least 1"),
        ("  requests: [{path: /, headers: {'X-A': \"a\\r\\nB: c\"}}]\n", "one-line value"),
        ("  host: lb:8080\n", "expected an http(s)://"),
    ],
)
def test_the_load_of_a_foreign_stack_is_checked(load: str, message: str) -> None:
    text = BASE.replace("  host: http://lb:8080\n", load)
    with pytest.raises(ScenarioError, match=re.escape(message)):
        _scenario(base=text)


def test_targets_are_checked_against_the_project_once_compose_has_read_it() -> None:
    scenario = _scenario(
        "faults:\n  - {kind: kill_node, target: wbe, at: 2}\n"
        "  - {kind: cut_network, target: web, at: 3, params: {source: lb}}\n"
    )
    known = {"lb": "service", "web": "service"}
    with pytest.raises(TargetError, match=r"kill_node-1: target 'wbe' .*did you mean 'web'"):
        scenario.check_targets(known)
    scenario = _scenario("faults:\n  - {kind: corrupt_model, target: web, at: 2}\n")
    with pytest.raises(TargetError, match="corrupt_model cannot target 'web'"):
        scenario.check_targets(known)


def test_the_backend_of_a_compose_stack_is_compose() -> None:
    scenario = _scenario()
    assert backend_for(scenario, None) == backend_for(scenario, "docker") == "compose"
    with pytest.raises(InputError, match="--backend local: stack.compose"):
        backend_for(scenario, "local")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://lb:8404/stats;csv", ("lb", 8404, "/stats;csv")),
        ("http://web/healthz?deep=1", ("web", 80, "/healthz?deep=1")),
        ("http://127.0.0.1:8080/", None),
        ("http://localhost:8080/", None),
        ("https://api.example.com/", None),
    ],
)
def test_a_url_names_a_service_when_its_host_is_a_plain_name(
    url: str, expected: tuple[str, int, str] | None
) -> None:
    found = service_address(url)
    assert (found and (found.service, found.port, found.path)) == expected


@pytest.mark.parametrize(
    ("entry", "port"),
    [
        ("127.0.0.1::8080/tcp", 8080),
        ("8000", 8000),
        ("9000:9001", 9001),
        ("127.0.0.1:5353:53/udp", None),
        ({"target": 8404, "published": 18404, "protocol": "tcp"}, 8404),
        ({"target": 53, "protocol": "udp"}, None),
        ("8000-8005", None),
    ],
)
def test_container_ports_are_read_from_every_form_compose_prints(
    entry: object, port: int | None
) -> None:
    assert _container_port(entry) == port


def test_services_are_planned_with_their_ports_and_roles() -> None:
    config = {
        "services": {
            "web": {"expose": ["8000"], "ports": ["127.0.0.1::8000/tcp"], "scale": 2},
            "gateway": {"ports": [{"target": 8080}], "labels": ["drillkit.role=gateway"]},
            "worker": {},
        }
    }
    plans = {s.name: s for s in compose_services(config, Path("compose.yaml"))}
    assert plans["web"].role == "service" and [p.number for p in plans["web"].ports] == [8000]
    assert plans["gateway"].role == "gateway" and plans["gateway"].ports[0].name == "http"
    assert plans["worker"].ports == ()
    with pytest.raises(InputError, match="service 'Bad_Name'"):
        compose_services({"services": {"Bad_Name": {}}}, Path("compose.yaml"))


def test_a_shared_scenario_cannot_run_a_project_or_locustfile_from_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The files a scenario names are run: one beside it or below the working folder, not
    # any file of the machine (CI runs drills as root).
    work = tmp_path / "work"
    (work / "drills").mkdir(parents=True)
    monkeypatch.chdir(work)
    text = BASE.replace("compose.yaml", "../../elsewhere/compose.yaml")
    with pytest.raises(InputError, match="stack.compose: .* outside the working folder"):
        _scenario(base=text).drill_spec(work / "drills")
    assert _scenario().drill_spec(work / "drills").file == work / "drills" / "compose.yaml"
    for field in ("compose: /etc/compose.yaml", "compose: ~/compose.yaml"):
        with pytest.raises(ScenarioError, match="is not a relative path"):
            _scenario(base=BASE.replace("compose: compose.yaml", field))
    with pytest.raises(ScenarioError, match="load.locustfile: .* is not a relative path"):
        _scenario("  locustfile: /root/locustfile.py\n")


def test_network_and_spike_targets_are_checked_against_the_projects_ports() -> None:
    known = {"lb": "service", "web": "service", "db": "service"}
    linked, published = frozenset({"lb", "web"}), frozenset({"lb"})
    cases = [
        ("{kind: cut_network, target: db, at: 2}", "db exposes no port"),
        ("{kind: latency, target: web, at: 2, params: {source: web}}", "not another service"),
        ("{kind: cut_network, target: web, at: 2, params: {source: cache}}", "'cache' is not"),
        ("{kind: load_spike, target: web, at: 2, params: {rate: 10}}", "publishes no port"),
    ]
    for fault, message in cases:
        scenario = _scenario(f"faults:\n  - {fault}\n")
        with pytest.raises(TargetError, match=message):
            scenario.check_targets(known, linked=linked, published=published)
    fine = _scenario("faults:\n  - {kind: cut_network, target: web, at: 2, params: {source: lb}}\n")
    fine.check_targets(known, linked=linked, published=published)


def test_two_network_faults_on_one_service_at_once_are_refused() -> None:
    # Healing one removes every rule drillkit set in that namespace: the other would end early.
    overlapping = (
        "faults:\n"
        "  - {kind: cut_network, target: web, at: 2, duration: 5}\n"
        "  - {kind: latency, target: web, at: 4, duration: 2}\n"
    )
    with pytest.raises(ScenarioError, match=r"faults\[1\].at: latency on web overlaps"):
        _scenario(overlapping)
    _scenario(overlapping.replace("at: 4", "at: 7"))  # one after the other
    _scenario(overlapping.replace("target: web, at: 4", "target: lb, at: 4"))


def test_a_project_name_is_for_attaching_only() -> None:
    with pytest.raises(ScenarioError, match="stack.project: project names a project that is"):
        _scenario(
            base=BASE.replace(
                "  compose: compose.yaml\n", "  compose: compose.yaml\n  project: shop\n"
            )
        )
    attached = BASE.replace(
        "  compose: compose.yaml\n", "  compose: compose.yaml\n  project: shop\n  attach: true\n"
    )
    assert _scenario(base=attached).stack.project == "shop"


@pytest.mark.parametrize("mode", ["host", "none", "container:abc", "service:db"])
def test_a_service_without_a_namespace_of_its_own_is_no_network_target(mode: str) -> None:
    from drillkit.backends.compose import ComposeBackend

    class Container:
        def __init__(self, network_mode: str) -> None:
            self.attrs = {"HostConfig": {"NetworkMode": network_mode}}

    with pytest.raises(TargetError, match="no network namespace of its own"):
        ComposeBackend._own_namespace(Container(mode), "web")
    ComposeBackend._own_namespace(Container("shop_default"), "web")
