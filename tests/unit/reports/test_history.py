from __future__ import annotations

import json
import multiprocessing
from datetime import timedelta
from pathlib import Path

import pytest

from drillkit.errors import InputError
from drillkit.reports.history import (
    HISTORY_FILE,
    append_history,
    entry_for,
    read_history,
)
from drillkit.reports.model import DrillReport
from tests.unit.reports.test_model import sample_report


def test_entry_summarises_the_report(tmp_path: Path) -> None:
    report = sample_report()
    entry = entry_for(report, tmp_path / "kill-node-1.json", tmp_path)
    fault = report.faults[0]
    assert (entry.scenario, entry.status, entry.score) == ("kill-node", report.status, report.score)
    assert (entry.ttd_s, entry.rto_s) == (fault.ttd_s, fault.rto_s)
    assert entry.report == "kill-node-1.json"
    assert entry.checks_failed == ["kill-1.max_failed_requests"]
    assert entry.failed == sum(p.failed for p in report.phases)


def test_commit_and_run_come_from_ci_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_SHA", "abc123")
    monkeypatch.setenv("CI_PIPELINE_ID", "77")
    entry = entry_for(sample_report(), None, tmp_path)
    assert (entry.commit, entry.run_id, entry.report) == ("abc123", "77", None)


def test_append_then_read_in_order(tmp_path: Path) -> None:
    for i in range(3):
        report = sample_report().model_copy(
            update={
                "started_at": sample_report().started_at + timedelta(hours=i),
                "score": 50.0 + i,
            }
        )
        append_history(tmp_path, entry_for(report, None, tmp_path))
    history = read_history(tmp_path)
    assert history.path == tmp_path / HISTORY_FILE
    assert [e.score for e in history.entries] == [50.0, 51.0, 52.0]
    assert history.skipped == []
    [(name, runs)] = list(history.by_scenario())
    assert name == "kill-node" and len(runs) == 3


def test_torn_and_foreign_lines_are_skipped_and_named(tmp_path: Path) -> None:
    append_history(tmp_path, entry_for(sample_report(), None, tmp_path))
    path = tmp_path / HISTORY_FILE
    with path.open("a") as f:
        f.write(json.dumps({"history_version": 9, "scenario": "x"}) + "\n")
        f.write('{"history_version": 1, "scenario": "torn')  # a writer killed mid-line
    # The next append starts on a line of its own, so it is not lost with the torn one.
    append_history(tmp_path, entry_for(sample_report(name="pause-node"), None, tmp_path))
    history = read_history(path)
    assert [e.scenario for e in history.entries] == ["kill-node", "pause-node"]
    assert len(history.skipped) == 2
    assert history.skipped[0].startswith(f"{path}:2: history_version 9")
    assert history.skipped[1].startswith(f"{path}:3: not a history entry")


def test_missing_history_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no history yet"):
        read_history(tmp_path)


def _append_many(folder: str, name: str) -> None:
    report: DrillReport = sample_report(name=name)
    for _ in range(50):
        append_history(Path(folder), entry_for(report, None, Path(folder)))


def test_concurrent_appends_do_not_interleave(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), f"s-{i}")) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    history = read_history(tmp_path)
    assert history.skipped == []
    assert sorted(history.scenarios()) == ["s-0", "s-1", "s-2"]
    assert len(history.entries) == 150
