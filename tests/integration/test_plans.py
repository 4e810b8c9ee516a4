"""Any plan runs on both backends: a service that is not part of the recommender (Python's
own ``http.server``, serving a mounted folder) is planned by a preset written here, started,
killed by the real ``kill_node`` fault, healed and taken down, with no backend code that knows
what it is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from drillkit.backends.base import Backend, Progress, get_backend, load_state
from drillkit.faults.base import load_fault_kind
from drillkit.faults.context import FaultContext
from drillkit.faults.params import KillNodeParams
from drillkit.journal import Journal
from drillkit.stacks.base import StackPreset, bring_up, take_down
from drillkit.stacks.plan import (
    BindHost,
    Endpoint,
    HttpCheck,
    Mount,
    MountRef,
    Port,
    PortRef,
    Program,
    ServicePlan,
    StackPlan,
)


class StaticSite(StackPreset[str]):
    """One web server: ``python -m http.server`` over a folder with one page in it."""

    name = "static-site"

    def plan(self, spec: str, *, data_dir: Path, gpu: bool, progress: Progress) -> StackPlan:
        site = data_dir.resolve() / "site"
        site.mkdir(parents=True)
        (site / "index.html").write_text(spec)
        site.chmod(0o755)
        web = ServicePlan(
            name="web",
            role="web",
            program=Program(
                module="http.server",
                args=(PortRef(), "--bind", BindHost(), "--directory", MountRef(mount="site")),
            ),
            ports=(Port(number=8000),),
            ready=HttpCheck(path="/index.html"),
            mounts=(Mount(name="site", source=str(site), target="/site"),),
        )
        return StackPlan(
            preset=self.name, services=(web,), entry=Endpoint(service="web"), data=str(data_dir)
        )


@pytest.fixture(
    params=["local", pytest.param("docker", marks=pytest.mark.docker)],
)
def backend(request: pytest.FixtureRequest, drillkit_home: Path) -> Iterator[Backend[Any]]:
    chosen = get_backend(request.param)
    if request.param == "docker":
        request.getfixturevalue("stack_image")  # built, or a skip saying how
    yield chosen
    state = load_state()
    if state is not None:  # whatever the test did, nothing is left running
        take_down(state, chosen)


def test_a_service_of_its_own_runs_dies_and_heals(backend: Backend[Any], tmp_path: Path) -> None:
    state = bring_up(StaticSite(), "<p>drill me</p>", backend)
    page = state.entry_url + "/index.html"
    assert httpx.get(page, timeout=5).text == "<p>drill me</p>"
    assert state.role_of("web") == "web"
    assert load_state() == state  # saved whole, plan included

    kill = load_fault_kind("kill_node")
    ctx = FaultContext(backend, state, Journal.for_stack(state.id), fault_id="kill-web")
    params = KillNodeParams()
    record = kill.apply(ctx, "web", params)
    assert "web" in kill.check_applied(ctx, "web", params, record)
    assert backend.service_status(state, "web") == "exited"
    with pytest.raises(httpx.HTTPError):
        httpx.get(page, timeout=1)

    kill.heal(ctx, record)  # restarted, and ready by its plan's own check
    assert httpx.get(page, timeout=5).text == "<p>drill me</p>"
    assert backend.ready(state, "web")

    data = Path(str(state.plan.data))
    take_down(state, backend)
    assert backend.service_status(state, "web") == "exited"
    assert not data.exists() and load_state() is None


@pytest.mark.docker
def test_a_host_port_taken_before_docker_binds_it_is_chosen_again(
    drillkit_home: Path, monkeypatch: pytest.MonkeyPatch, stack_image: str
) -> None:
    # Another process takes the port drillkit chose before Docker binds it: the container
    # start fails with "address already in use", and another port is chosen.
    import drillkit.backends.docker as docker_backend
    from drillkit import listen, netprobe

    squatter = listen.bind()
    taken = squatter.getsockname()[1]
    choices = iter([taken])
    real = netprobe.free_port
    monkeypatch.setattr(docker_backend, "free_port", lambda: next(choices, None) or real())
    backend = get_backend("docker")
    try:
        state = bring_up(StaticSite(), "<p>moved</p>", backend)
        try:
            port = state.services["web"].ports["http"]
            assert port != taken
            assert httpx.get(f"{state.entry_url}/index.html", timeout=5).text == "<p>moved</p>"
            assert load_state() == state  # the port it got is the one saved
        finally:
            take_down(state, backend)
    finally:
        squatter.close()
