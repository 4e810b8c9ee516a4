"""Two reports of one scenario, side by side: what got worse.

A *regression* is what a CI gate should stop on:

- a check that passes (or does not exist) in the baseline and fails in the candidate;
- a fault whose time to detect or time to recover grew by more than ``tolerance`` (20% by
  default) and by more than ``min_seconds`` (one 100 ms series window: a smaller change is
  below what the drill can measure), or that was detected / recovered before and is not now;
- a phase whose quality dropped by more than ``quality_drop`` (one percentage point);
- a drill that passed and now does not.

Everything else that changed (score, counts) is listed as information. Reports of different
schema versions or different scenarios are not comparable: :class:`~drillkit.errors.InputError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from drillkit import safejson
from drillkit.errors import InputError
from drillkit.reports.jsonfile import read_report
from drillkit.reports.model import DrillReport

__all__ = ["Change", "Comparison", "Thresholds", "compare_files", "compare_reports"]

Verdict = Literal["regression", "improvement", "same", "info"]


@dataclass(frozen=True)
class Thresholds:
    tolerance: float = 0.20
    """Relative growth of ttd or rto that counts as a regression."""
    min_seconds: float = 0.1
    """Absolute growth of ttd or rto below which a change is measurement noise."""
    quality_drop: float = 0.01
    """Drop of a phase's quality share that counts as a regression."""


@dataclass(frozen=True)
class Change:
    what: str
    before: str
    after: str
    verdict: Verdict
    why: str = ""


@dataclass
class Comparison:
    scenario: str
    baseline: Path
    candidate: Path
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.verdict == "regression"]

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "baseline": str(self.baseline),
            "candidate": str(self.candidate),
            "regressions": len(self.regressions),
            "changes": [vars(c) for c in self.changes],
            "notes": self.notes,
        }


def compare_files(baseline: Path, candidate: Path, thresholds: Thresholds) -> Comparison:
    """Read and compare two JSON reports (see :func:`compare_reports`)."""
    versions = {p: _schema_version(p) for p in (baseline, candidate)}
    if versions[baseline] != versions[candidate]:
        raise InputError(
            f"{candidate}: schema_version {json.dumps(versions[candidate])} differs from "
            f"{baseline}'s {json.dumps(versions[baseline])}: reports of different schema "
            "versions cannot be compared"
        )
    a, b = read_report(baseline), read_report(candidate)
    if a.scenario.name != b.scenario.name:
        raise InputError(
            f"{candidate}: scenario {b.scenario.name!r} is not {baseline}'s "
            f"{a.scenario.name!r}: compare two reports of one scenario"
        )
    return compare_reports(a, b, thresholds, baseline=baseline, candidate=candidate)


def _schema_version(path: Path) -> object:
    # Peek before validating: "version 2 vs 1" says more than v2's first unknown field.
    try:
        data = safejson.loads(path.read_bytes(), parse_constant=lambda text: None)
    except (OSError, ValueError):
        return None  # read_report says what is wrong with it
    return data.get("schema_version") if isinstance(data, dict) else None


def compare_reports(
    a: DrillReport,
    b: DrillReport,
    thresholds: Thresholds,
    *,
    baseline: Path = Path("A"),
    candidate: Path = Path("B"),
) -> Comparison:
    """What changed from ``a`` (the baseline) to ``b`` (the candidate)."""
    result = Comparison(a.scenario.name, baseline, candidate)
    if a.scenario.sha256 != b.scenario.sha256:
        result.notes.append(
            "the scenario file changed between the two runs "
            f"(sha256 {a.scenario.sha256[:12]} -> {b.scenario.sha256[:12]})"
        )
    if a.backend != b.backend:
        result.notes.append(f"backends differ: {a.backend} -> {b.backend}")
    add = result.changes.append

    passed_before, passed_now = a.status == "passed", b.status == "passed"
    add(
        Change(
            "status",
            a.status,
            b.status,
            "regression"
            if passed_before and not passed_now
            else "improvement"
            if passed_now and not passed_before
            else "same",
        )
    )
    add(
        Change(
            "score", f"{a.score:.2f}", f"{b.score:.2f}", "info" if a.score != b.score else "same"
        )
    )

    before_checks = {c.name: c for c in a.checks}
    for check in b.checks:
        old = before_checks.get(check.name)
        was = "absent" if old is None else "passed" if old.passed else "failed"
        now = "passed" if check.passed else "failed"
        if not check.passed and was != "failed":
            add(
                Change(
                    f"check {check.name}",
                    was,
                    now,
                    "regression",
                    check.detail
                    or f"actual {_num(check.actual)}, target {check.op or ''}{_num(check.target)}",
                )
            )
        elif check.passed and was == "failed":
            add(Change(f"check {check.name}", was, now, "improvement"))

    before_faults = {f.id: f for f in a.faults}
    for fault in b.faults:
        old_fault = before_faults.get(fault.id)
        if old_fault is None:
            result.notes.append(f"fault {fault.id} is new in the candidate")
            continue
        for label, was_s, now_s in (
            ("ttd", old_fault.ttd_s, fault.ttd_s),
            ("rto", old_fault.rto_s, fault.rto_s),
        ):
            add(_timing(f"fault {fault.id} {label}", was_s, now_s, thresholds))
        for label, was_n, now_n in (
            ("failed", old_fault.failed_requests, fault.failed_requests),
            ("degraded", old_fault.degraded_responses, fault.degraded_responses),
            ("wrong-model", old_fault.wrong_model_responses, fault.wrong_model_responses),
        ):
            if was_n != now_n:
                add(Change(f"fault {fault.id} {label}", str(was_n), str(now_n), "info"))

    before_phases = {p.name: p for p in a.phases}
    for phase in b.phases:
        old_phase = before_phases.get(phase.name)
        if old_phase is None or old_phase.quality is None or phase.quality is None:
            continue
        drop = old_phase.quality - phase.quality
        verdict: Verdict = (
            "regression"
            if drop > thresholds.quality_drop
            else "improvement"
            if -drop > thresholds.quality_drop
            else "same"
        )
        add(
            Change(
                f"phase {phase.name} quality",
                f"{old_phase.quality:.1%}",
                f"{phase.quality:.1%}",
                verdict,
                f"down {drop:.1%}" if verdict == "regression" else "",
            )
        )
    return result


def _timing(what: str, was: float | None, now: float | None, th: Thresholds) -> Change:
    before, after = _seconds(was), _seconds(now)
    if was is None and now is None:
        return Change(what, before, after, "same")
    if now is None:
        return Change(what, before, after, "regression", "no longer happens")
    if was is None:
        return Change(what, before, after, "improvement")
    growth = now - was
    if growth > th.min_seconds and now > was * (1 + th.tolerance):
        pct = f" (+{growth / was:.0%})" if was > 0 else ""
        return Change(
            what,
            before,
            after,
            "regression",
            f"worse by {growth:.2f} s{pct}; allowed {th.tolerance:.0%}",
        )
    if -growth > th.min_seconds and was > now * (1 + th.tolerance):
        return Change(what, before, after, "improvement")
    return Change(what, before, after, "same")


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
