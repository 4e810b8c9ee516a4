from __future__ import annotations

import json
from pathlib import Path

import pytest

from drillkit import state as state_files
from drillkit.backends.base import (
    StackIdentity,
    clear_state,
    get_backend,
    load_state,
    load_states,
    save_state,
    state_path,
)
from drillkit.backends.local import LocalBackend, LocalService, LocalStack, process_alive
from drillkit.errors import EnvironmentFailure, InputError
from drillkit.stacks.recommender.spec import GatewaySettings, RecommenderSpec
from drillkit.testing import fake_plan

STACK = "20260101-000000-aaaaaa"


def sample_state(stack_id: str = STACK) -> LocalStack:
    return LocalStack(
        backend="local",
        plan=fake_plan(replicas=1).model_copy(update={"secrets": {"admin-token": "s3cr3t-value"}}),
        **StackIdentity(
            id=stack_id, run_dir=state_files.stack_dir(stack_id), gpu=False, created_at=1.0
        ).fields(),
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
    assert state_path(STACK).stat().st_mode & 0o077 == 0  # it holds the plan's secrets
    assert state_path(STACK).parent == state_files.stack_dir(STACK)  # the stack's own folder
    clear_state(STACK)
    clear_state(STACK)  # idempotent
    assert load_state() is None


def test_several_stacks_must_be_named(drillkit_home: Path) -> None:
    other = "20260101-000001-bbbbbb"
    save_state(sample_state())
    save_state(sample_state(other))
    with pytest.raises(InputError, match="2 stacks are up .*--stack ID"):
        load_state()
    state = load_state(other)
    assert state is not None and state.id == other
    assert [s.id for s in load_states()] == [STACK, other]


def test_printed_state_hides_secrets_and_names_the_entry(drillkit_home: Path) -> None:
    shown = sample_state().public_json()
    assert shown["plan"]["secrets"] == {"admin-token": "<hidden>"}
    assert "s3cr3t-value" not in str(shown)
    assert shown["gateway_url"] == "http://127.0.0.1:1"
    assert shown["services"]["replica-1"]["url"] == "http://127.0.0.1:2"


def _write(text: str) -> None:
    state_path(STACK).parent.mkdir(parents=True, exist_ok=True)
    state_path(STACK).write_text(text)


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
    _write(text)
    with pytest.raises(InputError, match=message):
        load_state()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"id": ""}, "names stack ''", id="empty-id"),
        pytest.param({"id": "20990101-000000-cccccc"}, "names stack", id="other-id"),
        pytest.param({"run_dir": "/home"}, "is not this stack's folder", id="run-dir"),
        pytest.param({"plan.data": "/etc"}, "lies outside", id="data-outside"),
        pytest.param({"services.replica-1.pid": -5}, "malformed", id="negative-pid"),
    ],
)
def test_a_crafted_state_is_refused_before_anything_acts_on_it(
    drillkit_home: Path, change: dict[str, object], message: str
) -> None:
    data = sample_state().model_dump(mode="json")
    for key, value in change.items():
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[last] = value
    _write(json.dumps(data))
    with pytest.raises(InputError, match=message):
        load_state()


def test_a_state_file_that_is_a_link_is_not_followed(drillkit_home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(sample_state().model_dump_json())
    state_path(STACK).parent.mkdir(parents=True, exist_ok=True)
    state_path(STACK).symlink_to(elsewhere)
    with pytest.raises(InputError, match="symbolic link"):
        load_state()


def test_a_state_folder_others_may_write_is_refused(drillkit_home: Path) -> None:
    folder = state_files.root()
    folder.chmod(0o777)
    try:
        with pytest.raises(EnvironmentFailure, match="writable by others") as caught:
            load_state()
        assert caught.value.exit_code == 3
    finally:
        folder.chmod(0o700)


def test_prune_keeps_the_newest_finished_folders_and_all_busy_ones(
    drillkit_home: Path, tmp_path: Path
) -> None:
    import fcntl
    import os

    ids = [f"20260101-00000{i}-aaaaaa" for i in range(6)]
    for stack_id in ids:
        (state_files.stack_dir(stack_id) / "logs").mkdir(parents=True)
    save_state(sample_state(ids[0]))  # a stack is up
    (state_files.stack_dir(ids[1]) / "journal.jsonl").write_text("")  # a fault to heal
    locked = os.open(state_files.stack_dir(ids[2]) / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(locked, fcntl.LOCK_EX)  # another drillkit acts on it
    outside = tmp_path / "outside"
    outside.mkdir()
    (state_files.stacks_dir() / "20260101-000009-aaaaaa").symlink_to(outside)
    (state_files.stacks_dir() / "not-a-stack").mkdir()
    try:
        assert state_files.prune(keep=1) == [ids[3], ids[4]]
    finally:
        os.close(locked)
    left = sorted(p.name for p in state_files.stacks_dir().iterdir())
    assert left == [*ids[:3], ids[5], "20260101-000009-aaaaaa", "not-a-stack"]
    assert outside.is_dir()


def test_stack_ids_have_drillkits_form() -> None:
    for bad in ("", "..", "x", "20260101-000000-AAAAAA", "20260101-000000-aaaaaa/../x"):
        with pytest.raises(InputError, match="is not a stack id"):
            state_files.check_id(bad)


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
