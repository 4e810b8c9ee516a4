"""Stack plans: what a plan refuses, the order services start in, how each backend resolves a
program's references, and the plan the recommender preset writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from drillkit.backends.base import StackIdentity
from drillkit.backends.docker import DockerBackend, DockerService, DockerStack
from drillkit.backends.local import LocalBackend, LocalService, LocalStack, ProxyState
from drillkit.stacks.plan import (
    BindHost,
    Dependency,
    Endpoint,
    Join,
    Link,
    Mount,
    MountRef,
    Port,
    PortRef,
    Program,
    StackPlan,
    TcpCheck,
    UrlRef,
)
from drillkit.stacks.recommender.preset import RecommenderPreset, origin_store, replica_store
from drillkit.stacks.recommender.spec import GatewaySettings, RecommenderSpec
from drillkit.stacks.recommender.store import ModelStore
from drillkit.testing import service_plan

ARGS = (
    "--host",
    BindHost(),
    "--port",
    PortRef(),
    "--peer",
    Join(parts=("db=", UrlRef(service="db", path="/v1"))),
    "--cache",
    UrlRef(service="cache", port="redis"),
    "--data",
    MountRef(mount="data", path="sub/file"),
)


def two_tier() -> StackPlan:
    app = service_plan(
        "app",
        role="app",
        program=Program(module="my.app", args=ARGS),
        mounts=(Mount(name="data", source="/srv/data", target="/data"),),
        depends_on=(Dependency(service="db", condition="ready"), Dependency(service="cache")),
        secrets={"TOKEN": "token"},
    )
    db = service_plan("db", role="db", ports=(Port(number=5000),))
    cache = service_plan(
        "cache",
        role="cache",
        ports=(Port(name="redis", number=6379),),
        ready=TcpCheck(port="redis"),
    )
    return StackPlan(
        preset="test",
        services=(app, db, cache),
        links=(Link(source="app", target="db"),),
        entry=Endpoint(service="app"),
        secrets={"token": "t0ken"},
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"services": ("dup",)}, "duplicate service names", id="duplicate"),
        pytest.param({"args": (PortRef(port="grpc"),)}, "has no port 'grpc'", id="port"),
        pytest.param({"args": (UrlRef(service="nope"),)}, "no service 'nope'", id="url"),
        pytest.param({"args": (MountRef(mount="logs"),)}, "no mount 'logs'", id="mount"),
        pytest.param({"secrets": {"X": "missing"}}, "unknown secret 'missing'", id="secret"),
        pytest.param({"secrets": {"X=1": "token"}}, "not an environment variable", id="var"),
        pytest.param(
            {"plan_secrets": {"token": "t", "../x": "v"}}, "secret '../x'", id="secret-name"
        ),
        pytest.param({"cycle": True}, "cycle", id="cycle"),
        pytest.param({"link": Link(source="app", target="db", port="x")}, "no port 'x'", id="link"),
        pytest.param({"entry": Endpoint(service="gone")}, "entry: no service", id="entry"),
        pytest.param({"live": TcpCheck(port="grpc")}, "liveness: service 'app'", id="live"),
    ],
)
def test_a_plan_refuses_what_does_not_fit(change: dict[str, Any], message: str) -> None:
    plan = two_tier()
    services = list(plan.services)
    app = services[0]
    if "services" in change:
        services.append(services[1])
    if "args" in change:
        services[0] = app.model_copy(update={"program": Program(module="m", args=change["args"])})
    if "secrets" in change:
        services[0] = app.model_copy(update={"secrets": change["secrets"]})
    if "live" in change:
        services[0] = app.model_copy(update={"live": change["live"]})
    if "cycle" in change:
        db = services[1]
        services[1] = db.model_copy(update={"depends_on": (Dependency(service="app"),)})
    fields = plan.model_dump()
    fields["services"] = [s.model_dump() for s in services]
    if "link" in change:
        fields["links"] = [change["link"].model_dump()]
    if "entry" in change:
        fields["entry"] = change["entry"].model_dump()
    if "plan_secrets" in change:
        fields["secrets"] = change["plan_secrets"]
    with pytest.raises(ValidationError, match=message):
        StackPlan.model_validate(fields)


def test_names_must_be_plain() -> None:
    with pytest.raises(ValidationError, match="service 'App_1'"):
        service_plan("App_1")
    with pytest.raises(ValidationError, match="either a module or an executable"):
        Program(module="m", executable="e")


def test_start_order_puts_dependencies_first_keeping_plan_order() -> None:
    waves = [[s.name for s in wave] for wave in two_tier().start_order()]
    assert waves == [["db", "cache"], ["app"]]


def test_a_plan_round_trips_through_json_with_its_references() -> None:
    plan = two_tier()
    again = StackPlan.model_validate_json(plan.model_dump_json())
    assert again == plan
    assert again.services[0].program.args == ARGS
    assert json.loads(json.dumps(plan.redacted()))["secrets"] == {"token": "<hidden>"}


def _identity() -> dict[str, Any]:
    return StackIdentity(id="s1", run_dir=Path("/run"), gpu=False).fields()


def test_the_local_backend_resolves_references_to_loopback_and_the_link_proxy() -> None:
    plan = two_tier()
    state = LocalStack(backend="local", plan=plan, **_identity())
    state.services = {
        "app": LocalService(name="app", role="app", ports={"http": 41001}),
        "db": LocalService(name="db", role="db", ports={"http": 41002}),
        "cache": LocalService(name="cache", role="cache", ports={"redis": 41003}),
    }
    state.proxy = ProxyState(control_port=1, links={"app.db": 42000}, log="/l")
    command = LocalBackend(python="/py").command(state, "app")
    assert command == [
        "/py", "-m", "my.app",
        "--host", "127.0.0.1",
        "--port", "41001",
        "--peer", "db=http://127.0.0.1:42000/v1",  # over the link: through the proxy
        "--cache", "http://127.0.0.1:41003",  # no link: straight to the service
        "--data", "/srv/data/sub/file",
    ]  # fmt: skip


def test_the_docker_backend_resolves_references_to_service_names_and_mounts() -> None:
    plan = two_tier()
    state = DockerStack(
        backend="docker",
        plan=plan,
        image="drillkit/stack:test",
        network="drillkit-20260101-000000-aaaaaa",
        session="x",
        **_identity(),
    )
    state.services = {s.name: DockerService(name=s.name, role=s.role) for s in plan.services}
    command = DockerBackend().command(state, "app")
    assert command == [
        "python3", "-m", "my.app",
        "--host", "0.0.0.0",
        "--port", "8000",
        "--peer", "db=http://db:5000/v1",
        "--cache", "http://cache:6379",
        "--data", "/data/sub/file",
    ]  # fmt: skip


def _store(root: Path) -> ModelStore:
    """A store whose one version has what the preset reads: a popular-items list."""
    store = ModelStore(root)

    def write(folder: Path) -> list[str]:
        (folder / "popular.json").write_text('[{"item_id": 1, "score": 1.0}]')
        return ["popular.json"]

    store.add_version(write, metrics={"recall_at_10": 0.1}, info={})
    return store


def test_the_recommender_plan(tmp_path: Path, drillkit_home: Path) -> None:
    origin = _store(tmp_path / "mine")
    spec = RecommenderSpec(replicas=2, store=origin.root, gateway=GatewaySettings(retries=0))
    data = tmp_path / "stack" / "data"
    plan = RecommenderPreset().plan(spec, data_dir=data, gpu=False, progress=lambda m, f: None)
    assert plan.names() == ["replica-1", "replica-2", "gateway"]
    assert [s.role for s in plan.services] == ["replica", "replica", "gateway"]
    assert [link.name for link in plan.links] == ["gateway.replica-1", "gateway.replica-2"]
    assert plan.entry == Endpoint(service="gateway")
    gateway = plan.service("gateway")
    assert {d.service for d in gateway.depends_on} == {"replica-1", "replica-2"}
    # The admin token goes to the replicas (reload) and the gateway (rollout split) only.
    assert gateway.secrets == {"DRILLKIT_ADMIN_TOKEN": "admin-token"}
    assert plan.service("replica-1").secrets == {"DRILLKIT_ADMIN_TOKEN": "admin-token"}
    assert "--retries" in gateway.program.args and "0" in gateway.program.args
    # Each replica its own copy; a store the user named is served in place, never copied over.
    state = LocalStack(backend="local", plan=plan, **_identity())
    assert origin_store(state) == origin.root
    copies = [replica_store(state, name) for name in ("replica-1", "replica-2")]
    assert all(c.is_relative_to(data.resolve()) and ModelStore(c).current() for c in copies)
    assert len(set(copies)) == 2
    assert RecommenderSpec.from_json(plan.settings) == spec
