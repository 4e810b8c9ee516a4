"""The fault journal: what is pending, in which order, and what a hostile line gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drillkit.journal import Journal

STACK = "20260101-000000-aaaaaa"


def test_pending_is_applied_minus_healed(tmp_path: Path) -> None:
    journal = Journal(tmp_path, STACK)
    a = journal.record_apply(
        fault_id="a",
        kind="kill_node",
        target="replica-1",
        stack_id=STACK,
        undo={"service": "replica-1"},
    )
    b = journal.record_apply(
        fault_id="b",
        kind="corrupt_model",
        target="model-store",
        stack_id=STACK,
        undo={"mode": "zero"},
    )
    journal.update_undo(b, {"backup": "/x"})
    journal.record_heal(a.id)
    (left,) = journal.pending()
    assert left.id == b.id
    assert left.undo == {"mode": "zero", "backup": "/x"}
    assert journal.path.stat().st_mode & 0o077 == 0


def test_pending_is_newest_first(tmp_path: Path) -> None:
    # Undo in the reverse order of doing: the second corruption's backup holds the first's
    # damage, so healing oldest first would put that damage back.
    journal = Journal(tmp_path, STACK)
    for fault in ("first", "second", "third"):
        journal.record_apply(
            fault_id=fault, kind="corrupt_model", target="model-store", stack_id=STACK, undo={}
        )
    assert [e.fault_id for e in journal.pending()] == ["third", "second", "first"]


def test_pending_is_newest_first_on_a_coarse_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Applied within one tick of the clock: the journal's line order decides.
    monkeypatch.setattr("drillkit.journal.time.time", lambda: 1_700_000_000.0)
    journal = Journal(tmp_path, STACK)
    for fault in ("first", "second", "third"):
        journal.record_apply(
            fault_id=fault, kind="corrupt_model", target="model-store", stack_id=STACK, undo={}
        )
    assert [e.fault_id for e in journal.pending()] == ["third", "second", "first"]


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    journal = Journal(tmp_path, STACK)
    journal.record_apply(
        fault_id="a", kind="kill_node", target="replica-1", stack_id=STACK, undo={}
    )
    with journal.path.open("a") as handle:
        handle.write('{"op": "apply", "id": "torn"')  # crash mid-write
    again = Journal(tmp_path, STACK)
    assert [e.fault_id for e in again.pending()] == ["a"]
    assert again.rejected == []


def _apply_line(**fields: object) -> str:
    entry = {
        "op": "apply",
        "id": "0123456789abcdef",
        "fault_id": "f",
        "kind": "kill_node",
        "target": "replica-1",
        "stack_id": STACK,
        "applied_at": 1.0,
        "undo": {},
    }
    return json.dumps({**entry, **fields})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param(_apply_line(stack_id="20990101-000000-bbbbbb"), "names stack", id="other"),
        pytest.param(_apply_line(stack_id=""), "stack_id", id="empty-stack"),
        pytest.param(_apply_line(id="../../x"), "id", id="bad-id"),
        pytest.param(_apply_line(kind="Kill Node"), "kind", id="bad-kind"),
        pytest.param(_apply_line(target="../etc"), "target", id="bad-target"),
        pytest.param(_apply_line(applied_at="soon"), "applied_at", id="bad-time"),
        pytest.param(_apply_line(extra=1), "extra", id="unknown-field"),
        pytest.param('{"op": "drop_tables"}', "unknown op", id="unknown-op"),
        pytest.param("[1, 2]", "not an object", id="array"),
        pytest.param("x" * 300_000, "longer than", id="huge"),
    ],
)
def test_a_line_that_is_not_drillkits_is_set_aside(tmp_path: Path, line: str, reason: str) -> None:
    journal = Journal(tmp_path, STACK)
    journal.record_apply(
        fault_id="a", kind="kill_node", target="replica-1", stack_id=STACK, undo={}
    )
    with journal.path.open("a") as handle:
        handle.write(line + "\n")
    pending = journal.pending()
    assert [e.fault_id for e in pending] == ["a"]  # the good entry, and only it
    (rejected,) = journal.rejected
    assert rejected.line == 2 and reason in rejected.reason


def test_compact_removes_a_fully_healed_journal_and_its_backups(tmp_path: Path) -> None:
    journal = Journal(tmp_path, STACK)
    backup = journal.new_backup_dir()
    (backup / "weights").write_bytes(b"x")
    entry = journal.record_apply(fault_id="a", kind="k", target="t", stack_id=STACK, undo={})
    journal.compact()
    assert journal.path.exists()  # still pending: kept
    journal.record_heal(entry.id)
    journal.compact()
    assert not journal.path.exists() and not journal.backups.exists()
    assert Journal(tmp_path, STACK).pending() == []


def test_a_journal_with_lines_set_aside_is_kept(tmp_path: Path) -> None:
    journal = Journal(tmp_path, STACK)
    journal.path.write_text('{"op": "bogus"}\n{"op": "bogus"}\n')
    journal.compact()
    assert journal.path.exists()  # evidence for whoever looks, never silently dropped


def test_a_journal_that_is_a_link_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.jsonl"
    target.write_text(_apply_line() + "\n")
    folder = tmp_path / "stack"
    folder.mkdir()
    (folder / "journal.jsonl").symlink_to(target)
    journal = Journal(folder, STACK)
    assert journal.pending() == []
    (rejected,) = journal.rejected
    assert "cannot be read safely" in rejected.reason


def test_a_line_nested_too_deeply_is_set_aside_not_a_crash(tmp_path: Path) -> None:
    journal = Journal(tmp_path, STACK)
    with journal.path.open("w") as handle:
        handle.write("[" * 50_000 + "]" * 50_000 + "\n")
    journal.record_apply(
        fault_id="a", kind="kill_node", target="replica-1", stack_id=STACK, undo={}
    )
    assert [e.fault_id for e in journal.pending()] == ["a"]
    (rejected,) = journal.rejected
    assert rejected.line == 1 and rejected.reason == "not JSON"


def _journal_with(tmp_path: Path, *lines: str) -> Journal:
    journal = Journal(tmp_path, STACK)
    journal.record_apply(
        fault_id="a", kind="kill_node", target="replica-1", stack_id=STACK, undo={"n": 1}
    )
    with journal.path.open("a") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return journal


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param('{"op": "update", "undo": {}}', "an update without an id", id="no-id"),
        pytest.param('{"op": "update", "id": 7, "undo": {}}', "an update without", id="int-id"),
        pytest.param('{"op": "update", "id": "x", "undo": []}', "an update without", id="list"),
        pytest.param('{"op": "heal"}', "a heal without an id", id="heal-no-id"),
        pytest.param('{"op": "heal", "id": 1}', "a heal without an id", id="heal-int-id"),
        pytest.param('"apply"', "not an object", id="a-string"),
        pytest.param(_apply_line(applied_at=float("inf")), "applied_at", id="infinite-time"),
        pytest.param(_apply_line(applied_at=float("nan")), "applied_at", id="nan-time"),
        pytest.param('{"op": "apply"', "not JSON", id="torn-mid-file"),
    ],
)
def test_an_update_or_heal_that_is_not_drillkits_is_set_aside(
    tmp_path: Path, line: str, reason: str
) -> None:
    # Torn is tolerated on the last line only (a crash mid-write): here a good line follows.
    journal = _journal_with(tmp_path, line, '{"op": "heal", "id": "ffffffffffffffff"}')
    assert [(e.fault_id, e.undo) for e in journal.pending()] == [("a", {"n": 1})]
    (rejected,) = journal.rejected
    assert rejected.line == 2 and rejected.reason.startswith(reason), rejected


def test_an_update_replaces_the_undo_record_of_its_own_entry_only(tmp_path: Path) -> None:
    journal = Journal(tmp_path, STACK)
    entry = journal.record_apply(
        fault_id="a", kind="kill_node", target="replica-1", stack_id=STACK, undo={"n": 1}
    )
    with journal.path.open("a") as handle:
        handle.write(json.dumps({"op": "update", "id": entry.id, "undo": {"n": 2}}) + "\n")
        handle.write(json.dumps({"op": "update", "id": "f" * 16, "undo": {"n": 3}}) + "\n")
    (pending,) = journal.pending()
    assert pending.undo == {"n": 2} and journal.rejected == []


def test_an_apply_line_may_carry_a_healed_at_that_is_ignored(tmp_path: Path) -> None:
    journal = _journal_with(tmp_path, _apply_line(healed_at=5.0, id="1" * 16, applied_at=9e9))
    ids = [e.id for e in journal.pending()]
    assert len(ids) == 2 and ids[0] == "1" * 16 and journal.rejected == []


def test_a_heal_line_names_its_entry_and_when(tmp_path: Path) -> None:
    journal = Journal(tmp_path, STACK)
    entry = journal.record_apply(
        fault_id="a", kind="kill_node", target="replica-1", stack_id=STACK, undo={}
    )
    journal.record_heal(entry.id)
    apply_line, heal_line = (json.loads(x) for x in journal.path.read_text().splitlines())
    assert apply_line["op"] == "apply" and apply_line["fault_id"] == "a"
    assert set(heal_line) == {"op", "id", "healed_at"}
    assert heal_line["op"] == "heal" and heal_line["id"] == entry.id
    assert abs(heal_line["healed_at"] - apply_line["applied_at"]) < 60
    assert journal.pending() == []


def test_files_are_private_to_the_user(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "new", STACK)
    backup = journal.new_backup_dir()
    assert backup.parent == journal.backups and backup.is_dir()
    assert len(backup.name) == 12 and backup != journal.new_backup_dir()
    assert backup.stat().st_mode & 0o777 == 0o700
    journal.record_apply(fault_id="a", kind="k", target="t", stack_id=STACK, undo={})
    assert journal.folder.stat().st_mode & 0o077 == 0
    assert journal.path.stat().st_mode & 0o777 == 0o600


def test_only_the_first_lines_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("drillkit.journal.MAX_LINES", 2)
    journal = Journal(tmp_path, STACK)
    ids = ["1" * 16, "2" * 16, "3" * 16]
    journal.path.write_text("".join(_apply_line(id=i) + "\n" for i in ids))
    assert sorted(e.id for e in journal.pending()) == ids[:2]  # the third line is not read


def test_a_line_of_exactly_the_longest_length_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = _apply_line(id="1" * 16)
    monkeypatch.setattr("drillkit.journal.MAX_LINE", len(line))
    journal = Journal(tmp_path, STACK)
    journal.path.write_text(line + "\n" + _apply_line(id="2" * 16)[:-1] + "  }\n")
    assert [e.id for e in journal.pending()] == ["1" * 16]
    (rejected,) = journal.rejected
    assert rejected.line == 2 and rejected.reason.startswith("longer than")


def test_a_stacks_journal_lives_in_its_folder(drillkit_home: Path) -> None:
    from drillkit.state import stack_dir

    journal = Journal.for_stack(STACK)
    assert (journal.folder, journal.stack_id) == (stack_dir(STACK), STACK)
    entry = journal.record_apply(fault_id="a", kind="k", target="t", stack_id=STACK, undo={})
    assert [e.id for e in Journal.for_stack(STACK).pending()] == [entry.id]


def test_a_journal_makes_the_folders_it_needs(tmp_path: Path) -> None:
    for make in ("record", "backup"):
        journal = Journal(tmp_path / make / "a" / "b", STACK)
        if make == "record":
            journal.record_apply(fault_id="a", kind="k", target="t", stack_id=STACK, undo={})
            assert journal.path.is_file()
        else:
            assert journal.new_backup_dir().is_dir()
        assert journal.folder.stat().st_mode & 0o777 == 0o700


def test_compacting_a_healed_journal_that_never_backed_anything_up(tmp_path: Path) -> None:
    journal = Journal(tmp_path, STACK)
    entry = journal.record_apply(fault_id="a", kind="k", target="t", stack_id=STACK, undo={})
    journal.record_heal(entry.id)
    journal.compact()  # no backups folder: nothing to remove, no error
    assert not journal.path.exists()


def test_a_line_without_an_op_is_set_aside(tmp_path: Path) -> None:
    journal = _journal_with(tmp_path, '{"id": "0123456789abcdef"}')
    assert len(journal.pending()) == 1
    (rejected,) = journal.rejected
    assert (rejected.line, rejected.reason) == (2, "unknown op None")


def test_a_journal_that_cannot_be_read_is_reported_as_a_whole(tmp_path: Path) -> None:
    (tmp_path / "journal.jsonl").mkdir()  # a folder where the file should be
    journal = Journal(tmp_path, STACK)
    assert journal.pending() == []
    (rejected,) = journal.rejected
    assert rejected.line == 0 and "is not a regular file" in rejected.reason
    link = tmp_path / "linked"
    link.mkdir()
    (link / "journal.jsonl").symlink_to(tmp_path / "elsewhere")
    journal = Journal(link, STACK)
    assert journal.pending() == []
    assert [r.line for r in journal.rejected] == [0]


def test_no_more_than_64_longest_lines_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = _apply_line(id="1" * 16)
    monkeypatch.setattr("drillkit.journal.MAX_LINE", len(line) + 1)
    journal = Journal(tmp_path, STACK)
    # 64 lines of the longest length fill the read; a 65th lies beyond it.
    lines = [_apply_line(id=f"{i:016x}") for i in range(65)]
    journal.path.write_text("".join(x + "\n" for x in lines))
    assert len(journal.pending()) == 64
