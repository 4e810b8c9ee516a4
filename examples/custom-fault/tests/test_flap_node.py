"""flap_node against a fake backend: parameters, the cycles, and healing from every side."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from drillkit_flap_fault import FlapNode, FlapNodeParams, FlapNodeWarning
from pydantic import ValidationError

from drillkit.errors import EnvironmentFailure, ScenarioError
from drillkit.faults.base import ENTRY_POINT_GROUP, FaultKind, fault_kinds
from drillkit.faults.context import FaultContext
from drillkit.journal import Journal
from drillkit.testing import FakeBackend, eventually

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "flap-node.yaml"

# Short enough that a test sees several cycles in well under a second.
FAST = {"down": "20ms", "up": "20ms"}

MakeCtx = Callable[..., FaultContext]


def _installed() -> bool:
    return any(ep.name == "flap_node" for ep in entry_points(group=ENTRY_POINT_GROUP))


needs_entry_point = pytest.mark.skipif(
    not _installed(), reason="the package is not installed (pip install ./examples/custom-fault)"
)


def _apply(ctx: FaultContext, **params: Any) -> tuple[FlapNode, FlapNodeParams, dict[str, Any]]:
    kind = FlapNode()
    parsed = FlapNodeParams.model_validate({**FAST, **params})
    record = kind.apply(ctx, "replica-2", parsed)
    return kind, parsed, record


# -- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param({}, {"down": 1.0, "up": 2.0, "signal": "KILL"}, id="defaults"),
        pytest.param({"down": "250ms", "up": "1m"}, {"down": 0.25, "up": 60.0}, id="units"),
        pytest.param({"down": 3}, {"down": 3.0}, id="bare-seconds"),
        pytest.param({"signal": "sigterm"}, {"signal": "TERM"}, id="signal-spelling"),
    ],
)
def test_params_accept(raw: dict[str, Any], expected: dict[str, Any]) -> None:
    params = FlapNodeParams.model_validate(raw)
    assert {k: getattr(params, k) for k in expected} == expected


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        pytest.param({"period": "3s"}, "period", "Extra inputs", id="unknown-key"),
        pytest.param({"down": 0}, "down", "greater than 0", id="zero-down"),
        pytest.param({"up": "-1s"}, "up", "duration", id="negative-up"),
        pytest.param({"up": "2h"}, "up", "at most 3600s", id="too-slow"),
        pytest.param({"signal": "HUP"}, "signal", "KILL", id="unknown-signal"),
    ],
)
def test_params_refuse(raw: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        FlapNodeParams.model_validate(raw)
    (error,) = info.value.errors()
    assert error["loc"] == (field,)
    assert message in error["msg"]


def test_the_kind_describes_itself() -> None:
    assert issubclass(FlapNode, FaultKind)
    assert FlapNode.name == "flap_node"
    assert FlapNode.target_roles == frozenset({"replica"})
    schema = FlapNode.Params.model_json_schema()["properties"]
    assert set(schema) == {"down", "up", "signal"}
    assert all(field.get("description") for field in schema.values())


@needs_entry_point
def test_registered_through_the_entry_point() -> None:
    fault_kinds.cache_clear()
    info = fault_kinds()["flap_node"]
    assert info.source == "drillkit_flap_fault:FlapNode"
    assert info.params is FlapNodeParams


@needs_entry_point
def test_the_example_scenario_validates() -> None:
    from drillkit.scenario import load_scenario

    fault_kinds.cache_clear()
    scenario = load_scenario(SCENARIO)
    (fault,) = scenario.faults
    assert fault.kind == "flap_node"
    assert isinstance(fault.params, FlapNodeParams)


@needs_entry_point
def test_a_bad_param_in_a_scenario_names_its_line(tmp_path: Path) -> None:
    from drillkit.scenario import load_scenario

    fault_kinds.cache_clear()
    text = SCENARIO.read_text().replace("{down: 1s, up: 2s,", "{down: 1s, up: 2h,")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "up: 2h" in row)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert f"{path}:{line}:" in str(info.value)
    assert "faults[0].params.up" in str(info.value)


# -- apply, check_applied, the cycles ------------------------------------------------------------


def test_the_record_is_journaled_before_the_first_kill(
    backend: FakeBackend, journal: Journal, make_ctx: MakeCtx
) -> None:
    pending_at_kill: list[list[str]] = []
    backend.before_kill = lambda name: pending_at_kill.append([e.kind for e in journal.pending()])
    _, _, record = _apply(make_ctx())
    assert pending_at_kill[0] == ["flap_node"]
    (entry,) = journal.pending()
    assert entry.id == record["journal_id"]
    assert entry.target == "replica-2"
    assert entry.undo == {"service": "replica-2", "signal": "KILL", "down": 0.02, "up": 0.02}


def test_it_flaps_until_healed_and_not_after(backend: FakeBackend, make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    kind, params, record = _apply(ctx)
    evidence = kind.check_applied(ctx, "replica-2", params, record)
    assert evidence.startswith("replica-2 (pid ") and "is gone after SIGKILL" in evidence
    eventually(
        lambda: (
            backend.count("kill", "replica-2") >= 3 and backend.count("restart", "replica-2") >= 2
        )
    )
    assert backend.saves >= 2  # every new pid is saved for `drillkit heal`
    kind.heal(ctx, record)
    kills = backend.count("kill", "replica-2")
    assert backend.service_alive(ctx.state, "replica-2")
    assert backend.ready(ctx.state, "replica-2")
    time.sleep(0.2)  # several cycles' worth
    assert backend.count("kill", "replica-2") == kills
    assert backend.service_alive(ctx.state, "replica-2")
    assert [op for op, name in backend.calls if name != "replica-2"] == []


def test_each_cycle_waits_for_ready_then_stays_up(backend: FakeBackend, make_ctx: MakeCtx) -> None:
    backend.startup = 0.15  # much slower to start than `down` or `up`
    ctx = make_ctx()
    kind, _, record = _apply(ctx, down="10ms", up="100ms")
    eventually(lambda: backend.count("restart", "replica-2") >= 1)
    restarted = time.monotonic()
    eventually(lambda: backend.count("kill", "replica-2") >= 2)
    # Killed only once ready (0.15 s) and then up for 0.1 s.
    assert time.monotonic() - restarted >= 0.2
    kind.heal(ctx, record)


def test_term_waits_for_the_target_to_go(backend: FakeBackend, make_ctx: MakeCtx) -> None:
    backend.term_delay = 0.1
    ctx = make_ctx()
    kind, params, record = _apply(ctx, signal="TERM")
    started = time.monotonic()
    evidence = kind.check_applied(ctx, "replica-2", params, record)
    assert time.monotonic() - started >= 0.09
    assert "gone after SIGTERM" in evidence
    kind.heal(ctx, record)
    assert backend.ready(ctx.state, "replica-2")


# The thread gives up on the same target at about the same time; heal may say so.
@pytest.mark.filterwarnings("ignore::drillkit_flap_fault.FlapNodeWarning")
def test_check_applied_fails_when_the_target_survives(
    backend: FakeBackend, make_ctx: MakeCtx, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "kill", lambda state, name, signal="KILL": None)
    ctx = make_ctx()
    kind, params, record = _apply(ctx)
    with pytest.raises(EnvironmentFailure, match="still running"):
        kind.check_applied(ctx, "replica-2", params, record)
    kind.heal(ctx, record)


# -- healing -----------------------------------------------------------------------------------


def test_heal_from_the_record_alone(
    backend: FakeBackend, journal: Journal, make_ctx: MakeCtx
) -> None:
    """`drillkit heal` after a crash: another process, a fresh instance, only the journal."""
    record = make_ctx().begin("flap_node", "replica-2", {"service": "replica-2"})
    backend.kill(make_ctx().state, "replica-2")  # the crashed drill left it down
    (entry,) = journal.pending()
    ctx = make_ctx()
    FlapNode().heal(ctx, {**entry.undo, "journal_id": entry.id})
    assert backend.ready(ctx.state, "replica-2")
    assert backend.count("restart", "replica-2") == 1
    FlapNode().heal(make_ctx(), record)  # twice: nothing more to do
    assert backend.count("restart", "replica-2") == 1


def test_heal_of_a_fault_that_never_took_effect(backend: FakeBackend, make_ctx: MakeCtx) -> None:
    ctx = make_ctx()
    record = ctx.begin("flap_node", "replica-2", {"service": "replica-2"})
    FlapNode().heal(ctx, record)
    assert backend.calls == []


def test_heal_with_a_fresh_instance_stops_the_thread(
    backend: FakeBackend, make_ctx: MakeCtx
) -> None:
    """The engine's clean-up (heal_all) heals with a new FlapNode and a new context."""
    _, _, record = _apply(make_ctx())
    eventually(lambda: backend.count("kill", "replica-2") >= 2)
    FlapNode().heal(make_ctx(), record)
    kills = backend.count("kill", "replica-2")
    time.sleep(0.2)
    assert backend.count("kill", "replica-2") == kills
    assert backend.service_alive(make_ctx().state, "replica-2")


def test_heal_during_a_slow_restart_leaves_one_target(
    backend: FakeBackend, make_ctx: MakeCtx
) -> None:
    backend.restart_delay = 0.2
    ctx = make_ctx()
    kind, _, record = _apply(ctx, down="1ms")
    eventually(lambda: backend.count("restart", "replica-2") == 1)  # the thread is inside restart()
    kind.heal(ctx, record)
    # heal waited for the restart in progress instead of starting a second copy
    assert backend.count("restart", "replica-2") == 1
    assert backend.ready(ctx.state, "replica-2")


def test_a_heal_from_another_process_stops_the_kills(
    backend: FakeBackend, journal: Journal, make_ctx: MakeCtx
) -> None:
    ctx = make_ctx()
    kind, _, record = _apply(ctx)
    eventually(lambda: backend.count("kill", "replica-2") >= 2)
    journal.record_heal(record["journal_id"])  # what `drillkit heal` elsewhere writes last
    time.sleep(0.1)
    kills = backend.count("kill", "replica-2")
    time.sleep(0.2)
    assert backend.count("kill", "replica-2") == kills
    eventually(lambda: backend.ready(ctx.state, "replica-2"))
    kind.heal(ctx, record)


def test_a_failed_restart_stops_the_flapping_and_heal_says_so(
    backend: FakeBackend, make_ctx: MakeCtx
) -> None:
    backend.fail_restarts = 1
    ctx = make_ctx()
    kind, _, record = _apply(ctx)
    eventually(lambda: backend.count("restart", "replica-2") == 1)
    time.sleep(0.05)
    with pytest.warns(FlapNodeWarning, match="could not be started"):
        kind.heal(ctx, record)
    assert backend.ready(ctx.state, "replica-2")
    assert backend.count("restart", "replica-2") == 2  # the failed one, then heal's
