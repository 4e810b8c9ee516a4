"""``corrupt_file``: a file of a service's mount damaged in each mode and put back exactly at
the heal; a link a container planted in its own volume cannot make drillkit (root in CI)
damage or overwrite a file outside it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from drillkit.backends.base import StackIdentity
from drillkit.errors import InputError, TargetError
from drillkit.faults.corrupt_file import CorruptFile
from drillkit.faults.params import CorruptFileParams
from drillkit.stacks.plan import Endpoint, Mount, StackPlan
from drillkit.testing import FAKE_STACK_ID, FakeBackend, FakeStack, fault_context, service_plan

CONTENT = bytes(range(256)) * 64  # 16 KiB


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def stack(tmp_path: Path) -> tuple[FakeBackend, FakeStack, Path]:
    volume = tmp_path / "stack" / "data" / "volume"
    (volume / "db").mkdir(parents=True)
    (volume / "db" / "app.db").write_bytes(CONTENT)
    os.chmod(volume / "db" / "app.db", 0o640)
    mount = Mount(name="data", source=str(volume), target="/var/lib/app", read_only=False)
    plan = StackPlan(
        preset="fake",
        services=(service_plan("web", role="service", mounts=(mount,)),),
        entry=Endpoint(service="web"),
    )
    backend = FakeBackend()
    identity = StackIdentity(id=FAKE_STACK_ID, run_dir=tmp_path / "stack", gpu=False)
    return backend, backend.up(plan, identity), volume


@pytest.mark.parametrize("mode", ["bitflip", "truncate", "zero"])
def test_each_mode_damages_the_file_and_the_heal_puts_it_back(
    stack: tuple[FakeBackend, FakeStack, Path], tmp_path: Path, mode: str
) -> None:
    backend, state, volume = stack
    file = volume / "db" / "app.db"
    ctx = fault_context(backend, state, journal=tmp_path / "journal")
    params = CorruptFileParams.model_validate(
        {"path": "/var/lib/app/db/app.db", "mode": mode, "bytes": 16}
    )
    fault = CorruptFile()
    record = fault.apply(ctx, "web", params)
    evidence = fault.check_applied(ctx, "web", params, record)
    assert "/var/lib/app/db/app.db of web" in evidence
    damaged = file.read_bytes()
    assert damaged != CONTENT
    if mode == "truncate":
        assert len(damaged) == len(CONTENT) // 2
    elif mode == "zero":
        middle = len(CONTENT) // 2 - 8
        assert damaged[middle : middle + 16] == bytes(16)
        assert damaged[:middle] == CONTENT[:middle]
    else:  # one bit in each of 16 bytes
        assert len(damaged) == len(CONTENT)
        assert sum(a != b for a, b in zip(damaged, CONTENT, strict=True)) == 16
    inode = file.stat().st_ino
    fault.heal(ctx, record)
    assert file.read_bytes() == CONTENT
    assert oct(file.stat().st_mode & 0o777) == oct(0o640)
    # In place: a container that bind-mounts the file itself sees it back.
    assert file.stat().st_ino == inode
    fault.heal(ctx, record)  # idempotent
    assert file.read_bytes() == CONTENT


def test_a_link_in_the_volume_is_not_followed_out_of_it(
    stack: tuple[FakeBackend, FakeStack, Path], tmp_path: Path
) -> None:
    backend, state, volume = stack
    outside = tmp_path / "host-file"
    outside.write_bytes(b"the host's own file")
    (volume / "db" / "evil").symlink_to(outside)
    (volume / "linked-dir").symlink_to(tmp_path)
    ctx = fault_context(backend, state, journal=tmp_path / "journal")
    for path in ("/var/lib/app/db/evil", "/var/lib/app/linked-dir/host-file"):
        with pytest.raises(TargetError, match="symbolic link"):
            CorruptFile().apply(ctx, "web", CorruptFileParams(path=path, mode="zero"))
    assert outside.read_bytes() == b"the host's own file"


def test_a_path_outside_every_mount_or_missing_is_refused(
    stack: tuple[FakeBackend, FakeStack, Path], tmp_path: Path
) -> None:
    backend, state, _ = stack
    ctx = fault_context(backend, state, journal=tmp_path / "journal")
    with pytest.raises(TargetError, match="lies in none of its mounts"):
        CorruptFile().apply(ctx, "web", CorruptFileParams(path="/etc/passwd"))
    with pytest.raises(TargetError, match="does not exist"):
        CorruptFile().apply(ctx, "web", CorruptFileParams(path="/var/lib/app/none"))
    with pytest.raises(ValueError, match="without '..'"):
        CorruptFileParams(path="/var/lib/app/../../etc/passwd")


def test_a_crafted_record_cannot_name_the_file_a_heal_writes(
    stack: tuple[FakeBackend, FakeStack, Path], tmp_path: Path
) -> None:
    backend, state, volume = stack
    ctx = fault_context(backend, state, journal=tmp_path / "journal")
    params = CorruptFileParams(path="/var/lib/app/db/app.db", mode="zero")
    record = CorruptFile().apply(ctx, "web", params)
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    with pytest.raises(InputError, match="undo record refused"):
        CorruptFile().heal(ctx, {**record, "file": str(victim)})
    assert victim.read_bytes() == b"keep me"
    with pytest.raises(InputError, match="outside"):
        CorruptFile().heal(ctx, {**record, "saved": str(victim)})
    CorruptFile().heal(ctx, record)
    assert (volume / "db" / "app.db").read_bytes() == CONTENT


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root (CI runs drills as root)")
def test_the_heal_gives_the_file_back_to_its_owner(
    stack: tuple[FakeBackend, FakeStack, Path], tmp_path: Path
) -> None:
    backend, state, volume = stack
    file = volume / "db" / "app.db"
    os.chown(file, 999, 999)  # a database's own user, not root's
    os.chmod(file, 0o600)
    ctx = fault_context(backend, state, journal=tmp_path / "journal")
    params = CorruptFileParams(path="/var/lib/app/db/app.db", mode="truncate")
    record = CorruptFile().apply(ctx, "web", params)
    os.chown(file, 0, 0)
    CorruptFile().heal(ctx, record)
    info = file.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (999, 999, 0o600)


def test_a_fifo_or_a_folder_is_not_a_file_to_damage(
    stack: tuple[FakeBackend, FakeStack, Path], tmp_path: Path
) -> None:
    backend, state, volume = stack
    os.mkfifo(volume / "db" / "pipe")
    ctx = fault_context(backend, state, journal=tmp_path / "journal")
    for path in ("/var/lib/app/db/pipe", "/var/lib/app/db"):
        with pytest.raises(TargetError, match="not a regular file|refused"):
            CorruptFile().apply(ctx, "web", CorruptFileParams(path=path, mode="zero"))


def test_a_mount_outside_the_stacks_folder_is_not_a_target(tmp_path: Path) -> None:
    # A saved state names its mounts: one naming a folder of the machine is refused.
    mount = Mount(name="data", source="/etc", target="/var/lib/app", read_only=False)
    plan = StackPlan(
        preset="fake",
        services=(service_plan("web", role="service", mounts=(mount,)),),
        entry=Endpoint(service="web"),
    )
    backend = FakeBackend()
    state = backend.up(plan, StackIdentity(id=FAKE_STACK_ID, run_dir=tmp_path, gpu=False))
    ctx = fault_context(backend, state, journal=tmp_path / "journal")
    with pytest.raises(TargetError, match="not the stack's own copy"):
        CorruptFile().apply(ctx, "web", CorruptFileParams(path="/var/lib/app/passwd"))


def test_links_planted_after_the_damage_cannot_redirect_the_heal(
    stack: tuple[FakeBackend, FakeStack, Path], tmp_path: Path
) -> None:
    # The container owns its volume and runs on: it may plant a link where a heal would
    # write a temporary file, or swap the damaged file itself for a link to a host file.
    backend, state, volume = stack
    victim = tmp_path / "victim"
    victim.write_bytes(b"the host's own file")
    file = volume / "db" / "app.db"
    ctx = fault_context(backend, state, journal=tmp_path / "journal")
    params = CorruptFileParams(path="/var/lib/app/db/app.db", mode="zero")
    record = CorruptFile().apply(ctx, "web", params)
    (volume / "db" / ".app.db.drillkit-restore").symlink_to(victim)
    CorruptFile().heal(ctx, record)
    assert victim.read_bytes() == b"the host's own file" and file.read_bytes() == CONTENT
    record = CorruptFile().apply(ctx, "web", params)
    file.unlink()
    file.symlink_to(victim)
    with pytest.raises(TargetError, match="symbolic link"):
        CorruptFile().heal(ctx, record)
    assert victim.read_bytes() == b"the host's own file"
