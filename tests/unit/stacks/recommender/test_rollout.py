"""A rollout's rules without a stack: steps, the analysis's verdict, histogram quantiles, and
the scenario parameters of ``rollout`` and ``bad_rollout``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from drillkit.errors import InputError, StateError
from drillkit.scenario.loader import loads_scenario
from drillkit.stacks.recommender.release import AnalysisSettings, BadRolloutParams, parse_steps
from drillkit.stacks.recommender.rollout import (
    ROLLOUT_FILE,
    PoolFigures,
    StepFigures,
    abort_rollout,
    judge_step,
    pool_delta,
    read_rollout,
)


@pytest.mark.parametrize(
    ("text", "shares"),
    [
        ("10,50,100", (0.1, 0.5, 1.0)),
        ("100", (1.0,)),
        ("1, 5%, 100%", (0.01, 0.05, 1.0)),
        ([25, 100], (0.25, 1.0)),
    ],
)
def test_steps_parse(text: Any, shares: tuple[float, ...]) -> None:
    assert parse_steps(text) == pytest.approx(shares)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("50,10,100", "must increase"),
        ("10,10,100", "must increase"),
        ("10,50", "must be 100"),
        ("", "at least one"),
        ("0,100", "(0, 100]"),
        ("10,150", "(0, 100]"),
        ("ten,100", "not a percent"),
        ("nan,100", "(0, 100]"),
    ],
)
def test_bad_steps_are_one_line(text: str, why: str) -> None:
    with pytest.raises(InputError, match=r"^steps: ") as raised:
        parse_steps(text)
    assert why in str(raised.value) and "\n" not in str(raised.value)


def _pool(
    attempts: int = 100, failed: int = 0, p99: float | None = 20.0, degraded: int = 0
) -> PoolFigures:
    return PoolFigures(attempts, failed, p99, attempts, degraded)


def _figures(
    canary: PoolFigures, stable: PoolFigures | None = None, quality: float | None = 1.0
) -> StepFigures:
    return StepFigures(canary, stable or _pool(), quality, 50)


SETTINGS = AnalysisSettings()


def test_a_canary_like_stable_passes() -> None:
    assert judge_step(_figures(_pool()), SETTINGS) == []


@pytest.mark.parametrize(
    ("figures", "reason"),
    [
        pytest.param(_figures(_pool(failed=2)), "error ratio 2.0%", id="errors"),
        pytest.param(_figures(_pool(p99=200.0)), "p99 200 ms", id="latency"),
        pytest.param(_figures(_pool(degraded=3)), "degraded 3.0%", id="degraded"),
        pytest.param(_figures(_pool(), quality=0.7), "quality 70%", id="quality"),
        pytest.param(_figures(_pool(attempts=5)), "only 5 canary attempts", id="too-few"),
    ],
)
def test_each_rule_fails_a_step(figures: StepFigures, reason: str) -> None:
    reasons = judge_step(figures, SETTINGS)
    assert len(reasons) == 1 and reasons[0].startswith(reason)


def test_bounds_are_relative_to_stable_and_inclusive() -> None:
    # One point above a stable pool that fails 5% too is within +1%.
    assert judge_step(_figures(_pool(failed=6), _pool(failed=5)), SETTINGS) == []
    # p99: both the ratio and the slack must be exceeded (small p99s differ by buckets).
    assert judge_step(_figures(_pool(p99=30.0), _pool(p99=5.0)), SETTINGS) == []
    assert judge_step(_figures(_pool(p99=31.0), _pool(p99=5.0)), SETTINGS) != []
    assert judge_step(_figures(_pool(p99=150.0), _pool(p99=100.0)), SETTINGS) == []
    assert judge_step(_figures(_pool(), quality=0.9), SETTINGS) == []
    assert judge_step(_figures(_pool(), quality=None), SETTINGS) == []  # not measured


def test_pool_delta_reads_the_step_between_two_snapshots() -> None:
    buckets = [0.01, 0.02, 0.05]
    before = {
        "attempts_ok": 10,
        "attempts_failed": 1,
        "requests_ok": 10,
        "requests_degraded": 0,
        "requests_error": 0,
        "latency_buckets": buckets,
        "latency_counts": [10, 0, 0, 0],
    }
    after = {
        **before,
        "attempts_ok": 110,
        "attempts_failed": 3,
        "requests_ok": 105,
        "requests_degraded": 5,
        "latency_counts": [50, 30, 19, 11],
    }
    figures = pool_delta(before, after)
    assert (figures.attempts, figures.failed) == (102, 2)
    assert (figures.users_requests, figures.degraded) == (100, 5)
    assert figures.p99_ms == pytest.approx(100.0)  # the overflow bucket: twice the last bound
    assert pool_delta(after, after).p99_ms is None


SCENARIO = """
version: 1
name: t
stack: {{preset: recommender, replicas: 3}}
load: {{rate: 10, duration: 30s}}
faults:
  - id: c
    kind: bad_rollout
    target: model-store
    at: 5s
    params: {params}
"""


def test_bad_rollout_params_read_their_severity_by_defect() -> None:
    latency = BadRolloutParams.model_validate({"defect": "latency", "severity": "80ms"})
    assert latency.amount == pytest.approx(80.0)
    quality = BadRolloutParams.model_validate({"defect": "quality", "severity": "25%"})
    assert quality.amount == pytest.approx(0.25)
    assert BadRolloutParams.model_validate({"defect": "errors"}).amount == pytest.approx(0.1)
    steps = BadRolloutParams.model_validate({"defect": "quality", "steps": [5, 100]}).steps
    assert steps == pytest.approx((5.0, 100.0))


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ("{defect: quality, steps: [50, 10, 100]}", "faults[0].params.steps"),
        ("{defect: quality, steps: [10, 50]}", "faults[0].params.steps"),
        ("{defect: latency, severity: 20s}", "faults[0].params.severity"),
        ("{defect: quality, severity: 0%}", "faults[0].params.severity"),
        ("{defect: bitrot}", "faults[0].params.defect"),
        ("{defect: quality, analysis: {min_quality: 2}}", "faults[0].params.analysis"),
        ("{defect: quality, interval: 0s}", "faults[0].params.interval"),
    ],
)
def test_bad_rollout_params_are_one_line_errors(params: str, where: str) -> None:
    from drillkit.errors import ScenarioError

    with pytest.raises(ScenarioError) as raised:
        loads_scenario(SCENARIO.format(params=params), "s.yaml")
    message = str(raised.value)
    assert where in message and "\n" not in message, message


def test_one_slow_canary_answer_is_not_a_latency_regression() -> None:
    buckets = (0.01, 0.02, 0.05, 0.1, 0.2)
    stable = PoolFigures(100, 0, 20.0, 100, 0, buckets, (50, 50, 0, 0, 0, 0))
    hiccup = PoolFigures(50, 0, 200.0, 50, 0, buckets, (25, 24, 0, 0, 1, 0))
    assert judge_step(_figures(hiccup, stable), SETTINGS) == []
    slow = PoolFigures(50, 0, 200.0, 50, 0, buckets, (25, 23, 0, 0, 2, 0))
    assert judge_step(_figures(slow, stable), SETTINGS)[0].startswith("p99 200 ms")


# -- the record on disk -----------------------------------------------------------------------


class _State:
    def __init__(self, folder: Path) -> None:
        self.run_dir = str(folder)
        self.id = "s1"


GOOD_RECORD: dict[str, Any] = {
    "version": "v3",
    "digest": "a" * 64,
    "stable": "v2",
    "stable_digest": "b" * 64,
    "status": "running",
    "pid": 4242,
    "started_at": 1.0,
    "weight": 0.1,
    "canary": ["replica-1"],
    "step_results": [],
    "verdict": None,
}


def _write(folder: Path, record: Any) -> None:
    (folder / ROLLOUT_FILE).write_text(json.dumps(record))


def test_a_rollout_record_reads_back(tmp_path: Path) -> None:
    state = _State(tmp_path)
    assert read_rollout(state) is None  # type: ignore[arg-type]
    _write(tmp_path, GOOD_RECORD)
    record = read_rollout(state)  # type: ignore[arg-type]
    assert record is not None and record["version"] == "v3" and record["canary"] == ["replica-1"]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        pytest.param({"pid": True}, "pid", id="pid-true-is-not-pid-1"),
        pytest.param({"stable": "../../etc"}, "stable", id="stable-not-a-version"),
        pytest.param({"status": "ok"}, "status", id="unknown-status"),
        pytest.param({"weight": 7}, "weight", id="weight-above-1"),
        pytest.param({"step_results": [{"weight": 0.1}]}, "step_results", id="step-missing"),
        pytest.param({"canary": "replica-1"}, "canary", id="canary-not-a-list"),
    ],
)
def test_a_rollout_record_that_is_not_drillkits_is_one_line(
    tmp_path: Path, change: dict[str, Any], where: str
) -> None:
    _write(tmp_path, {**GOOD_RECORD, **change})
    with pytest.raises(StateError, match=rf"not a rollout record: {where}") as raised:
        read_rollout(_State(tmp_path))  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)


def test_a_rollout_record_behind_a_link_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(GOOD_RECORD))
    folder = tmp_path / "stack"
    folder.mkdir()
    (folder / ROLLOUT_FILE).symlink_to(elsewhere)
    with pytest.raises(StateError, match="symbolic link"):
        read_rollout(_State(folder))  # type: ignore[arg-type]


def test_abort_with_no_rollout_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no rollout is running on stack s1"):
        abort_rollout(_State(tmp_path))  # type: ignore[arg-type]
    _write(tmp_path, {**GOOD_RECORD, "status": "rolled_back", "canary": []})
    with pytest.raises(InputError, match="no rollout is running"):
        abort_rollout(_State(tmp_path))  # type: ignore[arg-type]
