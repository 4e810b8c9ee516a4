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
