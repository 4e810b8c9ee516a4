"""``drillkit heal`` and ``stack down`` act only on what is the stack's own, whatever its files
say: crafted journal and state records are refused, never obeyed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drillkit import procfs
from drillkit import state as state_files
from drillkit.backends.base import StackIdentity, save_state, state_path
from drillkit.backends.local import LocalService, LocalStack
from drillkit.errors import EnvironmentFailure
from drillkit.healing import heal_all, heal_stack
from drillkit.journal import Journal, JournalEntry
from drillkit.testing import fake_plan

STACK = "20260101-000000-aaaaaa"


@pytest.fixture
def bystander(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process that is not drillkit's: ``python -m sleeper`` (the form of everything
    drillkit starts), its arguments quoting a tag and a folder, as an attacker would."""
    folder = tmp_path / "bystander"
    folder.mkdir()
    (folder / "sleeper.py").write_text("import time\ntime.sleep(120)\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sleeper", "--tag", "0123456789abcdef", str(tmp_path)],
        cwd=folder,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while (procfs.argv(proc.pid) or [b""])[-1] != str(tmp_path).encode():
        assert time.monotonic() < deadline, "the bystander never started"
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


def untouched(proc: subprocess.Popen[bytes]) -> bool:
    """Alive and neither stopped nor a zombie."""
    return proc.poll() is None and procfs.proc_state(proc.pid) not in ("T", "Z", "X")


def victim(tmp_path: Path) -> Path:
    """Files outside every stack folder that a crafted record names."""
    folder = tmp_path / "victim"
    (folder / "versions" / "v2").mkdir(parents=True)
    (folder / "versions" / "v2" / "weights.safetensors").write_bytes(b"precious")
    (folder / "CURRENT").write_text("v2\n")
    (folder / "x").mkdir()
    (folder / "x" / "keep").write_text("keep me")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(folder.rglob("*"))
    }


def local_state(*services: LocalService, stack_id: str = STACK) -> LocalStack:
    return LocalStack(
        backend="local",
        plan=fake_plan(replicas=1),
        **StackIdentity(
            id=stack_id, run_dir=state_files.stack_dir(stack_id), gpu=False, created_at=1.0
        ).fields(),
        services={s.name: s for s in services},
    )


def write_raw_state(stack_id: str, data: dict[str, Any]) -> None:
    path = state_path(stack_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    path.chmod(0o600)


def journal_apply(
    stack_id: str, kind: str, undo: dict[str, Any], target: str = "model-store"
) -> JournalEntry:
    return Journal.for_stack(stack_id).record_apply(
        fault_id="f-1", kind=kind, target=target, stack_id=stack_id, undo=undo
    )


# -- the journal -------------------------------------------------------------------------------
@pytest.mark.parametrize("added", ["../../x", "../x", "v2/../../x", "x", "v02"])
def test_a_poison_record_naming_anything_but_a_version_is_refused(
    drillkit_home: Path, tmp_path: Path, added: str
) -> None:
    outside = victim(tmp_path)
    before = snapshot(outside)
    store = state_files.stack_dir(STACK) / "data" / "store"
    (store / "versions" / "v1").mkdir(parents=True)
    undo = {"mode": "poison", "stores": [{"store": str(store), "previous": "v1", "added": added}]}
    journal_apply(STACK, "corrupt_model", undo)
    outcome = heal_all()
    assert not outcome.ok
    (result,) = outcome.results
    assert result.outcome == "failed" and "undo record refused" in (result.error or "")
    assert snapshot(outside) == before


def test_a_poison_record_naming_a_store_outside_the_stack_is_refused(
    drillkit_home: Path, tmp_path: Path
) -> None:
    outside = victim(tmp_path)
    before = snapshot(outside)
    undo = {"mode": "poison", "stores": [{"store": str(outside), "previous": "v1", "added": "v2"}]}
    journal_apply(STACK, "corrupt_model", undo)
    (result,) = heal_all().results
    assert result.outcome == "failed" and "outside the stack's folders" in (result.error or "")
    assert snapshot(outside) == before


def test_a_damage_record_cannot_copy_a_chosen_file_over_another(
    drillkit_home: Path, tmp_path: Path
) -> None:
    outside = victim(tmp_path)
    before = snapshot(outside)
    store = state_files.stack_dir(STACK) / "data" / "store"
    weights = store / "versions" / "v2" / "weights.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"damaged")
    secret = tmp_path / "secret"
    secret.write_bytes(b"the attacker wants this copied")
    records = [
        # the backup is a file of the attacker's choosing
        {"store": str(store), "path": str(weights), "backup": str(secret)},
        # the damaged path is somewhere else than the store's own file
        {"store": str(store), "path": str(outside / "versions/v2/weights.safetensors")},
        # the store is elsewhere altogether
        {"store": str(outside), "path": str(outside / "versions/v2/weights.safetensors")},
    ]
    for fields in records:
        item = {
            "version": "v2",
            "file": "weights.safetensors",
            "backup": str(Journal.for_stack(STACK).backups / "b" / "0-weights.safetensors"),
            "sha256": "0" * 64,
            **fields,
        }
        journal_apply(STACK, "corrupt_model", {"mode": "zero", "stores": [item]})
    outcome = heal_all()
    assert [r.outcome for r in outcome.results] == ["failed"] * 3, outcome.lines
    assert weights.read_bytes() == b"damaged"
    assert snapshot(outside) == before


def test_a_store_that_is_a_link_to_elsewhere_is_not_followed(
    drillkit_home: Path, tmp_path: Path
) -> None:
    outside = victim(tmp_path)
    before = snapshot(outside)
    data = state_files.stack_dir(STACK) / "data"
    data.mkdir(parents=True)
    (data / "store").symlink_to(outside)
    undo = {"mode": "poison", "stores": [{"store": str(data / "store"), "previous": "v1",
                                          "added": "v2"}]}  # fmt: skip
    journal_apply(STACK, "corrupt_model", undo)
    (result,) = heal_all().results
    assert result.outcome == "failed" and "symbolic link" in (result.error or "")
    assert snapshot(outside) == before


def test_a_load_spike_record_stops_only_drillkits_own_generator(
    drillkit_home: Path, bystander: subprocess.Popen[bytes]
) -> None:
    # The bystander carries the record's tag in its arguments, but it is not
    # `python -m drillkit.load.spike`.
    journal_apply(STACK, "load_spike", {"tag": "0123456789abcdef"}, target="gateway")
    heal_all()
    assert untouched(bystander)


def test_a_load_spike_tag_that_is_not_drillkits_form_is_refused(drillkit_home: Path) -> None:
    journal_apply(STACK, "load_spike", {"tag": "python"}, target="gateway")
    (result,) = heal_all().results
    assert result.outcome == "failed" and "undo record refused: tag" in (result.error or "")


# -- the saved state ---------------------------------------------------------------------------
def test_a_state_with_an_empty_id_kills_nothing(
    drillkit_home: Path, bystander: subprocess.Popen[bytes]
) -> None:
    data = local_state().model_dump(mode="json")
    data["id"] = ""
    data["owner"] = {"pid": 999999, "scenario": "x"}  # a killed drill: heal takes it down
    write_raw_state(STACK, data)
    outcome = heal_all()
    assert untouched(bystander)
    assert not outcome.ok
    assert any("names stack ''" in line for line in outcome.lines), outcome.lines


def test_a_pid_and_start_time_alone_do_not_make_a_process_drillkits(
    drillkit_home: Path, bystander: subprocess.Popen[bytes]
) -> None:
    # The state names the bystander with its true start time: it still lacks the stack's
    # mark in its environment, so it is not this stack's to stop or to signal.
    info = procfs.stat(bystander.pid)
    assert info is not None
    service = LocalService(
        name="replica-1", role="replica", pid=bystander.pid, started=info.start_time
    )
    state = local_state(service)
    save_state(state)
    from drillkit.backends.local import LocalBackend

    backend = LocalBackend()
    backend.pause(state, "replica-1")
    backend.kill(state, "replica-1")
    assert backend.service_status(state, "replica-1") == "exited"
    backend.down(state)
    assert untouched(bystander)


def test_a_run_dir_outside_the_state_folder_is_refused_and_kept(
    drillkit_home: Path, tmp_path: Path
) -> None:
    outside = victim(tmp_path)
    before = snapshot(outside)
    data = local_state().model_dump(mode="json")
    data["run_dir"] = str(outside)
    data["plan"]["data"] = str(outside / "x")
    data["owner"] = {"pid": 999999, "scenario": "x"}
    write_raw_state(STACK, data)
    outcome = heal_all()
    assert any("is not this stack's folder" in line for line in outcome.lines), outcome.lines
    assert snapshot(outside) == before


def test_a_log_outside_the_stack_folder_is_refused(drillkit_home: Path, tmp_path: Path) -> None:
    service = LocalService(name="replica-1", role="replica", log=str(tmp_path / "crontab"))
    save_state(local_state(service))
    outcome = heal_all()
    assert any("lies outside the stack's folders" in line for line in outcome.lines)


def test_a_stack_folder_that_is_a_link_is_refused(drillkit_home: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    state_files.stacks_dir().joinpath(STACK).symlink_to(elsewhere)
    outcome = heal_all(STACK)
    assert not outcome.ok and "not a plain folder" in outcome.lines[0]
    assert list(elsewhere.iterdir()) == []


def test_a_state_folder_of_another_user_is_refused(
    drillkit_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_files.root()
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    with pytest.raises(EnvironmentFailure, match="belongs to uid") as caught:
        heal_all()
    assert caught.value.exit_code == 3


# -- guards ------------------------------------------------------------------------------------
def test_one_failing_heal_and_a_bad_line_do_not_stop_the_others(drillkit_home: Path) -> None:
    from drillkit.faults.base import load_fault_kind

    journal = Journal.for_stack(STACK)
    journal.folder.mkdir(parents=True)
    journal_apply(STACK, "load_spike", {"tag": "not hex"}, target="gateway")  # refused
    with journal.path.open("a") as out:
        out.write('{"op": "apply", "status": 1e999}\n')
    healed = journal_apply(STACK, "load_spike", {"tag": "fedcba9876543210"}, target="gateway")
    outcome = heal_stack(STACK, kinds=load_fault_kind)
    assert [r.outcome for r in outcome.results] == ["healed", "failed"]
    assert outcome.results[0].fault_id == healed.fault_id
    assert outcome.errors == 1 and any("line 2 set aside" in line for line in outcome.lines)
    assert not outcome.ok


def test_a_backend_that_stops_answering_keeps_the_faults_for_a_later_heal(
    drillkit_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from drillkit.errors import BackendUnavailable
    from drillkit.faults.base import load_fault_kind
    from drillkit.testing import FakeBackend

    backend = FakeBackend()
    state = backend.start(fake_plan(replicas=2), stack_id=STACK)
    backend.kill(state, "replica-2")
    journal = Journal.for_stack(STACK)
    journal.record_apply(
        fault_id="kill-1",
        kind="kill_node",
        target="replica-2",
        stack_id=STACK,
        undo={"service": "replica-2"},
    )

    def unreachable(state: object, name: str) -> str:
        raise BackendUnavailable("the Docker Engine at unix:///x failed: connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(backend, "service_status", unreachable)
        outcome = heal_stack(STACK, journal=journal, state=state, backend=backend,
                             kinds=load_fault_kind)  # fmt: skip
    (result,) = outcome.results
    assert result.outcome == "failed" and "cannot reach the stack" in (result.error or "")
    assert [e.fault_id for e in journal.pending()] == ["kill-1"]  # not "gone": kept

    healed = heal_stack(STACK, journal=journal, state=state, backend=backend,
                        kinds=load_fault_kind)  # fmt: skip
    assert [r.outcome for r in healed.results] == ["healed"]
    assert backend.service_status(state, "replica-2") == "running"
    assert journal.pending() == []


def test_docker_sdk_errors_leave_the_backend_as_exit_3() -> None:
    import requests

    from drillkit.backends.docker import DockerBackend
    from drillkit.errors import BackendUnavailable

    class Gone:
        def info(self) -> dict[str, object]:
            raise requests.exceptions.ConnectionError(
                "('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))"
            )

    backend = DockerBackend()
    backend._client = Gone()
    with pytest.raises(BackendUnavailable, match="failed during gpu_available") as caught:
        backend.gpu_available()
    assert caught.value.exit_code == 3
