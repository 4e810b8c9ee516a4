from __future__ import annotations

from pathlib import Path

import pytest

from drillkit.backends.base import (
    StackIdentity,
    clear_state,
    get_backend,
    load_state,
    save_state,
    state_path,
)
from drillkit.backends.local import LocalBackend, LocalService, LocalStack, process_alive
from drillkit.errors import InputError
from drillkit.stacks.recommender.spec import GatewaySettings, RecommenderSpec
from drillkit.testing import fake_plan


def sample_state() -> LocalStack:
    return LocalStack(
        backend="local",
        plan=fake_plan(replicas=1).model_copy(update={"secrets": {"admin-token": "s3cr3t-value"}}),
        **StackIdentity(id="s1", run_dir=Path("/tmp/run"), gpu=False, created_at=1.0).fields(),
        services={
            "replica-1": LocalService(
                name="replica-1", role="replica", ports={"http": 2}, pid=99, started=7
            ),
            "gateway": LocalService(name="gateway", role="gateway", ports={"http": 1}, pid=98),
        },
    )


def test_state_round_trips_typed_and_is_private(drillkit_home: Path) -> None:
    assert load_state() is None
    save_state(sample_state())
    loaded = load_state()
    assert isinstance(loaded, LocalStack)  # read back into the backend's own state type
    assert loaded == sample_state()
    assert loaded.services["replica-1"].started == 7
    assert state_path().stat().st_mode & 0o077 == 0  # it holds the plan's secrets
    clear_state()
    clear_state()  # idempotent
    assert load_state() is None


def test_printed_state_hides_secrets_and_names_the_entry() -> None:
    shown = sample_state().public_json()
    assert shown["plan"]["secrets"] == {"admin-token": "<hidden>"}
    assert "s3cr3t-value" not in str(shown)
    assert shown["gateway_url"] == "http://127.0.0.1:1"
    assert shown["services"]["replica-1"]["url"] == "http://127.0.0.1:2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{oops", "stack state is not valid JSON", id="not-json"),
        pytest.param('{"id": "x"}', "names no backend", id="no-backend"),
        pytest.param('{"backend": "nope"}', "unknown backend 'nope'", id="unknown-backend"),
        pytest.param('{"backend": "local", "id": 3}', "stack state is malformed", id="malformed"),
    ],
)
def test_a_bad_state_file_is_a_clear_input_error(
    drillkit_home: Path, text: str, message: str
) -> None:
    state_path().parent.mkdir(parents=True)
    state_path().write_text(text)
    with pytest.raises(InputError, match=message):
        load_state()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"replicas": 0}, "replicas: expected 1..16", id="zero-replicas"),
        pytest.param({"replicas": 17}, "replicas: expected 1..16", id="too-many"),
        pytest.param({"replicas": True}, "replicas: expected 1..16", id="bool"),
        pytest.param({"gpu": "maybe"}, "gpu: expected auto, on or off", id="bad-gpu"),
    ],
)
def test_recommender_spec_validates(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        RecommenderSpec(**kwargs)  # type: ignore[arg-type]


def test_service_names() -> None:
    assert RecommenderSpec(replicas=2).service_names() == ["replica-1", "replica-2", "gateway"]


def test_recommender_spec_round_trips() -> None:
    spec = RecommenderSpec(replicas=2, gateway=GatewaySettings(retries=0), store=Path("/s"))
    assert RecommenderSpec.from_json(spec.to_json()) == spec


def test_gateway_settings_become_arguments() -> None:
    args = GatewaySettings(retries=0, passive_ejection=False).args()
    assert args[args.index("--retries") + 1] == "0"
    assert "--no-passive-ejection" in args
    assert "--no-passive-ejection" not in GatewaySettings().args()


def test_backends_come_from_entry_points() -> None:
    assert isinstance(get_backend("local"), LocalBackend)
    with pytest.raises(InputError, match="unknown backend 'nope'"):
        get_backend("nope")


def test_process_alive_requires_the_recorded_start_time() -> None:
    import os

    from drillkit import procfs

    mine = procfs.stat(os.getpid())
    assert mine is not None
    assert process_alive(os.getpid(), mine.start_time)
    assert process_alive(os.getpid(), None)
    assert not process_alive(os.getpid(), mine.start_time + 1)  # a recycled pid is not ours
    assert not process_alive(None, None)
    assert not process_alive(2**22 + 12345, None)
