from __future__ import annotations

from pathlib import Path

import pytest

from drillkit.backends.base import (
    GatewaySettings,
    ServiceState,
    StackSpec,
    StackState,
    clear_state,
    get_backend,
    load_state,
    save_state,
    state_path,
)
from drillkit.backends.local import LocalBackend, process_alive
from drillkit.errors import InputError


def sample_state() -> StackState:
    return StackState(
        id="s1",
        backend="local",
        created_at=1.0,
        run_dir="/tmp/run",
        store="/tmp/run/store",
        gateway_url="http://127.0.0.1:1",
        admin_token="secret",
        gpu=False,
        spec={"replicas": 1, "gateway": {}},
        services={"replica-1": ServiceState("replica-1", "replica", "http://127.0.0.1:2", 2, 99)},
    )


def test_state_round_trips_and_is_private(drillkit_home: Path) -> None:
    assert load_state() is None
    save_state(sample_state())
    assert load_state() == sample_state()
    assert state_path().stat().st_mode & 0o077 == 0  # it holds the admin token
    clear_state()
    clear_state()  # idempotent
    assert load_state() is None


def test_corrupt_state_is_a_clear_input_error(drillkit_home: Path) -> None:
    state_path().parent.mkdir(parents=True)
    state_path().write_text("{oops")
    with pytest.raises(InputError, match="stack state is not valid JSON"):
        load_state()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"replicas": 0}, "replicas: expected 1..16", id="zero-replicas"),
        pytest.param({"replicas": 17}, "replicas: expected 1..16", id="too-many"),
        pytest.param({"gpu": "maybe"}, "gpu: expected auto, on or off", id="bad-gpu"),
    ],
)
def test_stack_spec_validates(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        StackSpec(**kwargs)  # type: ignore[arg-type]


def test_service_names() -> None:
    assert StackSpec(replicas=2).service_names() == ["replica-1", "replica-2", "gateway"]


def test_gateway_settings_become_arguments() -> None:
    args = GatewaySettings(retries=0, passive_ejection=False).args()
    assert args[args.index("--retries") + 1] == "0"
    assert "--no-passive-ejection" in args
    assert "--no-passive-ejection" not in GatewaySettings().args()


def test_backends_come_from_entry_points() -> None:
    assert isinstance(get_backend("local"), LocalBackend)
    with pytest.raises(InputError, match="unknown backend 'nope'"):
        get_backend("nope")


def test_process_alive_requires_our_stack_id() -> None:
    import os

    assert not process_alive(os.getpid(), "no-such-stack-id-in-my-cmdline")
    assert not process_alive(None, "x")
    assert not process_alive(2**22 + 12345, "x")
