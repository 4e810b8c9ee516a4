"""The data-path faults' undo records and the folders they act on: a journal and a scenario are
read as root, so every path in them is checked before anything is moved or deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from drillkit.errors import InputError
from drillkit.journal import Journal
from drillkit.stacks.recommender.durability import (
    _BROKEN,
    BackupFailure,
    DataLossParams,
    _Undo,
    put_back,
)


@pytest.mark.parametrize(
    "aside",
    [
        "/drillkit-lost-x",  # an absolute path: its unescaped dot matched the slash
        "/.drillkit-lost-x",
        ".drillkit-lost-../../etc",
        "x.drillkit-lost-a",
        ".drillkit-lost-",
    ],
)
def test_a_set_aside_folder_is_a_name_beside_the_store_never_a_path(aside: str) -> None:
    with pytest.raises(InputError, match="set_aside"):
        _Undo.parse({"target": "model-store", "mode": "wipe", "set_aside": aside})
    assert _Undo.parse({"target": "model-store", "mode": "wipe",
                        "set_aside": ".drillkit-lost-wipe-1"}).set_aside  # fmt: skip


def test_the_heal_puts_the_store_back_exactly_as_it_was(tmp_path: Path) -> None:
    origin, aside = tmp_path / "store", tmp_path / ".drillkit-lost-f"
    (aside / "versions" / "v3").mkdir(parents=True)
    (aside / "versions" / "v3" / "w").write_text("published after the last backup")
    (aside / "CURRENT").write_text("v3\n")
    (origin / "versions" / "v2").mkdir(parents=True)  # what a backup brought back: older
    (origin / "CURRENT").write_text("v2\n")
    put_back(aside, origin)
    assert (origin / "CURRENT").read_text() == "v3\n"
    assert sorted(p.name for p in (origin / "versions").iterdir()) == ["v3"]
    assert not aside.exists()


def test_a_broken_backup_job_is_mended_after_its_stack_is_gone(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal", "s1")
    kind = BackupFailure()
    assert kind.outlives_stack
    staging = tmp_path / "my-backups" / "staging"
    staging.parent.mkdir()
    staging.write_bytes(_BROKEN)
    kind.heal_without_stack(journal, {"service": "backup", "staging": str(staging)})
    assert not staging.exists()
    # Anything else by that name is not this kind's to remove.
    staging.write_bytes(b"a user's own file")
    kind.heal_without_stack(journal, {"service": "backup", "staging": str(staging)})
    assert staging.read_bytes() == b"a user's own file"
    other = tmp_path / "notes"
    other.write_bytes(_BROKEN)
    kind.heal_without_stack(journal, {"service": "backup", "staging": str(other)})
    assert other.exists()


def test_cut_bytes_is_for_corrupt_only() -> None:
    assert DataLossParams(mode="corrupt", cut_bytes=10).cut_bytes == 10
    with pytest.raises(ValueError, match="only for mode: corrupt"):
        DataLossParams(mode="wipe", cut_bytes=10)


def test_a_backup_location_behind_a_link_out_of_the_working_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from drillkit.stacks.recommender.preset import RecommenderPreset
    from drillkit.stacks.recommender.spec import EventSettings, RecommenderSpec

    work, elsewhere = tmp_path / "work", tmp_path / "srv"
    work.mkdir()
    elsewhere.mkdir()
    (work / "backups").symlink_to(elsewhere)
    (work / "mine").mkdir()
    monkeypatch.chdir(work)

    def spec(folder: str) -> RecommenderSpec:
        events = EventSettings(enabled=True, backup_dir=Path(folder))
        return RecommenderSpec(events=events, monitoring=RecommenderSpec().monitoring)

    with pytest.raises(InputError, match="leads out of the working folder"):
        RecommenderPreset().preflight(spec("backups"), "docker")
    RecommenderPreset().preflight(spec("mine"), "docker")
