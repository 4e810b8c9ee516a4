from __future__ import annotations

from pathlib import Path

from drillkit.journal import Journal


def test_pending_is_applied_minus_healed(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    a = journal.record_apply(
        fault_id="a",
        kind="kill_node",
        target="replica-1",
        stack_id="s",
        undo={"service": "replica-1"},
    )
    b = journal.record_apply(
        fault_id="b",
        kind="corrupt_model",
        target="model-store",
        stack_id="s",
        undo={"mode": "zero"},
    )
    journal.update_undo(b, {"backup": "/x"})
    journal.record_heal(a.id)
    (left,) = journal.pending()
    assert left.id == b.id
    assert left.undo == {"mode": "zero", "backup": "/x"}


def test_a_torn_last_line_is_ignored(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.record_apply(fault_id="a", kind="kill_node", target="replica-1", stack_id="s", undo={})
    with journal.path.open("a") as handle:
        handle.write('{"op": "apply", "id": "torn"')  # crash mid-write
    assert [e.fault_id for e in Journal(tmp_path).pending()] == ["a"]


def test_compact_removes_a_fully_healed_journal_and_its_backups(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    backup = journal.new_backup_dir()
    (backup / "weights").write_bytes(b"x")
    entry = journal.record_apply(fault_id="a", kind="k", target="t", stack_id="s", undo={})
    journal.compact()
    assert journal.path.exists()  # still pending: kept
    journal.record_heal(entry.id)
    journal.compact()
    assert not journal.path.exists() and not journal.backups.exists()
    assert Journal(tmp_path).pending() == []
