"""The run history: one JSON line per drill in ``<out>/history.jsonl``.

Each line is a :class:`HistoryEntry`, a small summary of one report (score, the worst ttd and
rto, the lowest phase quality, counts) plus where the full report lies, so that a CI job can
keep the file as an artifact or cache and ``drillkit report trend`` can draw the scores over
time without opening every report.

Appends go through one ``write`` of a whole line on a descriptor opened with ``O_APPEND``,
under an advisory lock, and are fsynced: drills running side by side into one folder do not
interleave, and a crash leaves at most a torn last line, which reading skips with a warning.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, ValidationError

from drillkit import safejson
from drillkit.errors import InputError
from drillkit.reports.model import DrillReport, Status

__all__ = [
    "HISTORY_FILE",
    "HISTORY_VERSION",
    "HistoryEntry",
    "HistoryFile",
    "append_history",
    "entry_for",
    "read_history",
]

HISTORY_FILE: Final = "history.jsonl"
HISTORY_VERSION: Final = 1

# CI systems name the commit and the pipeline run in these variables; a trend is more useful
# when a point can be traced back to the change that moved it.
_COMMIT_VARS = ("GITHUB_SHA", "CI_COMMIT_SHA", "DRILLKIT_COMMIT")
_RUN_VARS = ("GITHUB_RUN_ID", "CI_PIPELINE_ID", "DRILLKIT_RUN_ID")


class HistoryEntry(BaseModel):
    """One drill in the history."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    history_version: int = HISTORY_VERSION
    scenario: str
    scenario_sha256: str
    backend: str
    status: Status
    started_at: datetime
    finished_at: datetime
    score: float
    pass_score: float
    ttd_s: float | None
    """The slowest detection among the drill's faults (None: no fault, or one never detected)."""
    rto_s: float | None
    """The slowest recovery among the drill's faults (None: no fault, or one never recovered)."""
    undetected: int = 0
    unrecovered: int = 0
    quality: float | None
    """The lowest quality of any phase."""
    requests: int
    failed: int
    degraded: int
    wrong_model: int
    checks_failed: list[str]
    report: str | None
    """The JSON report, relative to the history file's folder when it lies inside it."""
    drillkit_version: str
    commit: str | None = None
    run_id: str | None = None


def entry_for(report: DrillReport, report_path: Path | None, folder: Path) -> HistoryEntry:
    """The history line of ``report``, whose JSON copy is at ``report_path``."""
    ttds = [f.ttd_s for f in report.faults]
    rtos = [f.rto_s for f in report.faults]
    qualities = [p.quality for p in report.phases if p.quality is not None]
    where: str | None = None
    if report_path is not None:
        try:
            where = str(report_path.resolve().relative_to(folder.resolve()))
        except ValueError:
            where = str(report_path.resolve())
    return HistoryEntry(
        scenario=report.scenario.name,
        scenario_sha256=report.scenario.sha256,
        backend=report.backend,
        status=report.status,
        started_at=report.started_at,
        finished_at=report.finished_at,
        score=report.score,
        pass_score=report.pass_score,
        ttd_s=max((v for v in ttds if v is not None), default=None),
        rto_s=max((v for v in rtos if v is not None), default=None),
        undetected=sum(1 for f in report.faults if f.injected_at is not None and f.ttd_s is None),
        unrecovered=sum(1 for f in report.faults if f.injected_at is not None and f.rto_s is None),
        quality=min(qualities, default=None),
        requests=sum(p.requests for p in report.phases),
        failed=sum(p.failed for p in report.phases),
        degraded=sum(p.degraded for p in report.phases),
        wrong_model=sum(p.wrong_model for p in report.phases),
        checks_failed=[c.name for c in report.checks if not c.passed],
        report=where,
        drillkit_version=report.drillkit_version,
        commit=_first_env(_COMMIT_VARS),
        run_id=_first_env(_RUN_VARS),
    )


def _first_env(names: tuple[str, ...]) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def append_history(folder: Path, entry: HistoryEntry) -> Path:
    """Append ``entry`` to ``<folder>/history.jsonl``; returns the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / HISTORY_FILE
    line = (entry.model_dump_json() + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A previous writer killed mid-line left no newline: start ours on a line of its own.
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as existing:
                existing.seek(size - 1)
                if existing.read(1) != b"\n":
                    line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


class HistoryFile:
    """The entries of one history file, and the lines that could not be read."""

    def __init__(self, path: Path, entries: list[HistoryEntry], skipped: list[str]) -> None:
        self.path = path
        self.entries = entries
        self.skipped = skipped

    def scenarios(self) -> list[str]:
        return sorted({e.scenario for e in self.entries})

    def by_scenario(self) -> Iterator[tuple[str, list[HistoryEntry]]]:
        for name in self.scenarios():
            yield (
                name,
                sorted((e for e in self.entries if e.scenario == name), key=lambda e: e.started_at),
            )


def read_history(path: Path) -> HistoryFile:
    """Every readable entry of the history at ``path`` (a file, or the folder holding one).

    A line that is not an entry (a torn last line after a crash, a line from a newer
    drillkit) is skipped and named in :attr:`HistoryFile.skipped`; a missing file is an
    :class:`~drillkit.errors.InputError` that says how one comes to exist.
    """
    source = path / HISTORY_FILE if path.is_dir() else path
    try:
        text = source.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise InputError(
            f"{source}: no history yet; every `drillkit run` appends one line "
            f"to <out>/{HISTORY_FILE}"
        ) from None
    except OSError as exc:
        raise InputError(f"{source}: cannot read the history: {exc.strerror or exc}") from None
    entries: list[HistoryEntry] = []
    skipped: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        problem = _parse_line(line, entries)
        if problem is not None:
            skipped.append(f"{source}:{number}: {problem}")
    return HistoryFile(source, entries, skipped)


def _parse_line(line: str, entries: list[HistoryEntry]) -> str | None:
    """Append the entry on ``line`` to ``entries``; or say why the line is not one."""
    try:
        raw = safejson.loads(line)
    except ValueError:
        return "not a history entry (a torn line, or not JSON)"
    if not isinstance(raw, dict):
        return "not a history entry (not a JSON object)"
    if raw.get("history_version") != HISTORY_VERSION:
        return f"history_version {raw.get('history_version')!r} is not {HISTORY_VERSION}"
    try:
        entries.append(HistoryEntry.model_validate(raw))
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return None
