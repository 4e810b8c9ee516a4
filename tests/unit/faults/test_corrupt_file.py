"""``corrupt_file``: a file of a service's mount damaged in each mode and put back exactly at
the heal; a link a container planted in its own volume cannot make drillkit (root in CI)
damage or overwrite a file outside it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from drillkit.errors import InputError, TargetError
from drillkit.faults.corrupt_file import CorruptFile
from drillkit.faults.params import CorruptFileParams
from drillkit.stacks.plan import Endpoint, Mount, StackPlan
from drillkit.testing import FakeBackend, FakeStack, fault_context, service_plan

CONTENT = bytes(range(256)) * 64  # 16 KiB


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def stack(tmp_path: Path) -> tuple[FakeBackend, FakeStack, Path]:
    volume = tmp_path / "volume"
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
    return backend, backend.start(plan), volume


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
    fault.heal(ctx, record)
    assert file.read_bytes() == CONTENT
    assert oct(file.stat().st_mode & 0o777) == oct(0o640)
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
