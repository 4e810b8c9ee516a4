"""Gray release as a drill step: the ``rollout`` and ``bad_rollout`` fault kinds, their
parameters and the analysis settings a rollout is judged by.

``bad_rollout`` publishes a defective version built from the served one (a wrong feature
join for a share of users, lost feature rows that make the replica answer 500, or a slower
feature fetch: :mod:`drillkit.stacks.recommender.defects`), signed when a signing key is set so
it passes every check a replica runs, and rolls it out
(:class:`~drillkit.stacks.recommender.rollout.RolloutController`); ``rollout`` does the same with
a healthy new version. The drill then shows whether the analysis stopped the bad one, how many
users it reached and for how long, and that the good one was not rolled back.

Healing stops a rollout still running (it rolls back), points every store's CURRENT back at
the version the drill started with, removes the published version and merges the gateway's
pools again. This module is light (pydantic only): validating a scenario imports nothing else.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from drillkit.errors import EnvironmentFailure, InputError
from drillkit.faults.base import FaultKind, UndoModel, UndoRecord
from drillkit.faults.params import FaultParams
from drillkit.scenario.units import (
    FieldError,
    PositiveDuration,
    Share,
    parse_duration,
    parse_share,
    show_value,
)
from drillkit.stacks.recommender.spec import ROLE_MODEL_STORE

if TYPE_CHECKING:
    from drillkit.faults.context import FaultContext
    from drillkit.journal import Journal
    from drillkit.stacks.recommender.rollout import RolloutController

__all__ = [
    "AnalysisSettings",
    "BadRollout",
    "BadRolloutParams",
    "Rollout",
    "RolloutParams",
    "parse_steps",
]


class AnalysisSettings(BaseModel):
    """How a step is judged: the canary against the stable pool over the step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True,
        description="Judge each step; off: every step passes (a rollout nothing watches).",
    )
    max_error_increase: Share = Field(
        default=0.01,
        description="Canary error ratio (failed attempts) above the stable pool's by more "
        "than this fails the step.",
    )
    max_p99_ratio: float = Field(
        default=1.5,
        gt=1.0,
        description="Canary p99 above this multiple of the stable p99 (and above it by "
        "p99_slack_ms) fails the step.",
    )
    p99_slack_ms: float = Field(default=25.0, ge=0, description="See max_p99_ratio.")
    max_degraded_increase: Share = Field(
        default=0.02,
        description="Degraded share of the canary's users above the stable users' by more "
        "than this fails the step.",
    )
    min_quality: Share = Field(
        default=0.9,
        description="Canary recall on golden users as a share of the stable version's on "
        "the same users; below it fails the step.",
    )
    min_answers: int = Field(
        default=10,
        ge=1,
        description="Fewer canary attempts in a step than this: the step cannot be judged "
        "and fails (a canary nobody reached is not a good canary).",
    )


def parse_percents(value: object) -> tuple[float, ...]:
    """Steps as percents in (0, 100], from ``"10,50,100"`` or a list of numbers (``"5%"``
    too); strictly increasing and ending at 100 (InputError otherwise)."""
    if isinstance(value, str):
        parts: Sequence[object] = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, list | tuple):
        parts = value
    else:
        raise InputError(f"steps: expected percents like 10,50,100, got {value!r}")
    percents: list[float] = []
    for part in parts:
        text = str(part).strip().removesuffix("%")
        try:
            percent = float(text)
        except ValueError:
            raise InputError(f"steps: {part!r} is not a percent") from None
        if isinstance(part, bool) or not 0 < percent <= 100 or not math.isfinite(percent):
            raise InputError(f"steps: {part!r} is not a percent in (0, 100]")
        percents.append(percent)
    if not percents:
        raise InputError("steps: expected at least one step, e.g. 10,50,100")
    if any(b <= a for a, b in itertools.pairwise(percents)):
        raise InputError(f"steps: must increase, got {_percents(percents)}")
    if percents[-1] != 100:
        raise InputError(f"steps: the last step must be 100, got {_percents(percents)}")
    return tuple(percents)


def parse_steps(value: object) -> tuple[float, ...]:
    """:func:`parse_percents` as shares in (0, 1]."""
    return tuple(p / 100 for p in parse_percents(value))


def _percents(percents: Sequence[float]) -> str:
    return ",".join(f"{p:g}" for p in percents)


# -- the fault kinds ---------------------------------------------------------------------------


def _steps_field(value: object) -> tuple[float, ...]:
    try:
        return parse_percents(value)
    except InputError as exc:
        raise ValueError(str(exc).removeprefix("steps: ")) from None


class RolloutParams(FaultParams):
    """``rollout``: a healthy new version, rolled out step by step."""

    steps: tuple[float, ...] = Field(
        default=(10.0, 50.0, 100.0),
        description="Percent of users at each step, increasing, ending at 100.",
    )
    interval: PositiveDuration = Field(
        default=10.0, description="How long each step is held before it is judged."
    )
    analysis: AnalysisSettings = Field(
        default=AnalysisSettings(),
        description="How each step is judged; {enabled: false}: nothing is judged.",
    )

    @model_validator(mode="before")
    @classmethod
    def _steps(cls, data: Any) -> Any:
        if isinstance(data, dict) and "steps" in data:
            try:
                data = {**data, "steps": _steps_field(data["steps"])}
            except ValueError as exc:
                raise FieldError(str(exc), ("steps",)) from None
        return data


# A share (30%, 0.3) or a time (100ms, 0.1s): a number and a unit, nothing else.
_SEVERITY_PATTERN = r"^\s*[0-9]+(\.[0-9]+)?\s*(%|ms|s)?\s*$"
_DEFAULT_SEVERITY = {"quality": 0.3, "errors": 0.1, "latency": 100.0}


class BadRolloutParams(RolloutParams):
    """``bad_rollout``: a signed version that passes every offline check, with a defect."""

    defect: Literal["quality", "errors", "latency"] = Field(
        description="quality: a wrong feature join for a share of users (their recall "
        "collapses); errors: lost feature rows, 500 for a share of users; latency: a slower "
        "feature fetch on every request."
    )
    severity: float | Annotated[str, Field(pattern=_SEVERITY_PATTERN)] | None = Field(
        default=None,
        description="quality/errors: the share of users hurt (default 30% / 10%); latency: the "
        "time added per request (default 100ms).",
    )

    @model_validator(mode="after")
    def _severity(self) -> BadRolloutParams:
        raw = self.severity
        if raw is None:
            value = _DEFAULT_SEVERITY[self.defect]
        elif self.defect == "latency":
            try:
                seconds = parse_duration(raw)
            except ValueError as exc:
                raise FieldError(str(exc), ("severity",)) from None
            if not 0 < seconds <= 10:
                raise FieldError(
                    f"expected a time in (0, 10s] added per request, got {show_value(raw)}",
                    ("severity",),
                )
            value = seconds * 1000.0
        else:
            try:
                value = parse_share(raw)
            except ValueError as exc:
                raise FieldError(str(exc), ("severity",)) from None
            if not value > 0:
                raise FieldError("expected a share above 0 of users hurt", ("severity",))
        object.__setattr__(self, "severity", value)
        return self

    @property
    def amount(self) -> float:
        """The severity as a number: a share of users, or milliseconds (latency)."""
        assert isinstance(self.severity, float)
        return self.severity


class _Undo(UndoModel):
    version: str = Field(pattern=r"^v[1-9][0-9]{0,8}$")
    previous: str = Field(pattern=r"^v[1-9][0-9]{0,8}$")
    stores: tuple[str, ...]
    replicas: tuple[str, ...] = ()


class Rollout(FaultKind[RolloutParams]):
    name: ClassVar[str] = "rollout"
    Params = RolloutParams
    description: ClassVar[str] = "a healthy new model version is rolled out (gray release)"
    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_MODEL_STORE})
    outlives_stack: ClassVar[bool] = True  # a version in the store's folder
    expected: ClassVar[Literal["promoted", "rolled_back"]] = "promoted"

    def __init__(self) -> None:
        self._controller: RolloutController | None = None
        self._thread: threading.Thread | None = None
        self._defect = "none"
        self._failure: BaseException | None = None

    def _defect_of(self, params: RolloutParams) -> tuple[str, float]:
        return "none", 0.0

    def apply(self, ctx: FaultContext, target: str, params: RolloutParams) -> UndoRecord:
        from drillkit.stacks.recommender.preset import all_stores, origin_store
        from drillkit.stacks.recommender.rollout import RolloutController, publish_version
        from drillkit.stacks.recommender.store import ModelStore

        if self._controller is not None:
            raise EnvironmentFailure(f"{ctx.fault_id}: one rollout per fault")
        origin = ModelStore(origin_store(ctx.state))
        previous = origin.current()
        if previous is None:
            raise EnvironmentFailure(f"{origin.root}: no CURRENT version to roll out from")
        replicas = ctx.state.names_with_role("replica")
        record = ctx.begin(
            self.name,
            target,
            {
                "version": origin.next_version(),
                "previous": previous,
                "stores": [str(p) for p in all_stores(ctx.state)],
                "replicas": replicas,
            },
        )
        defect, severity = self._defect_of(params)
        self._defect = defect
        digest = hashlib.sha256(f"{ctx.state.id}/{ctx.fault_id}".encode()).digest()
        seed = int.from_bytes(digest[:8], "big")
        manifest = publish_version(
            ctx.state, defect, severity, seed=seed, note=f"{self.name} by drillkit ({defect})"
        )
        if manifest.version != record["version"]:  # another writer took the number
            record = ctx.amend(record, version=manifest.version)
        controller = RolloutController(
            ctx.state,
            manifest.version,
            steps=[p / 100 for p in params.steps],
            interval=params.interval,
            analysis=params.analysis,
            seed=seed,
        )
        controller.prepare()
        self._controller = controller

        def run() -> None:
            try:
                controller.run()
            except BaseException as exc:  # reported by check_applied / outcome
                self._failure = exc

        self._thread = threading.Thread(target=run, name=f"rollout-{ctx.fault_id}", daemon=True)
        self._thread.start()
        return record

    def check_applied(
        self, ctx: FaultContext, target: str, params: RolloutParams, record: UndoRecord
    ) -> str:
        controller = self._controller
        assert controller is not None
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            data = controller.data
            if data.get("weight", 0) > 0 or data.get("status") != "running":
                break
            if self._failure is not None:
                raise EnvironmentFailure(f"the rollout failed: {self._failure}")
            time.sleep(0.05)
        data = controller.data
        if data.get("status") == "failed":
            raise EnvironmentFailure(f"the rollout failed: {data.get('verdict')}")
        steps = ",".join(f"{p:g}" for p in params.steps)
        what = "a healthy version" if self._defect == "none" else f"defect {self._describe(params)}"
        return (
            f"{controller.version} ({what}, digest {controller.manifest.digest[:12]}) rolling out "
            f"from {controller.stable}: steps {steps}% every {params.interval:g} s, analysis "
            f"{'on' if params.analysis.enabled else 'off'}; first canary "
            f"{', '.join(data.get('canary', [])) or '-'}"
        )

    def _describe(self, params: RolloutParams) -> str:
        return ""

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        from drillkit.stacks.recommender.preset import admin_reload, origin_store
        from drillkit.stacks.recommender.rollout import no_share, split_all_stable

        undo = _Undo.parse(record)
        controller, thread = self._controller, self._thread
        if controller is not None and thread is not None and thread.is_alive():
            controller.request_abort(by="heal")  # it rolls back: users first, then replicas
            thread.join(timeout=120.0)
        gateway = "gateway" in ctx.state.services and ctx.backend.service_alive(
            ctx.state, "gateway"
        )
        if gateway:
            # Nobody to the canary pool while its replicas go back (after a crash the
            # controller that would have done it is gone).
            no_share(ctx.state)
        roots = [Path(ctx.state.run_dir), origin_store(ctx.state)]
        changed = _restore(undo, roots)
        for name in undo.replicas:
            if name in changed and ctx.backend.service_alive(ctx.state, name):
                admin_reload(ctx.state, name)
        if gateway:
            split_all_stable(ctx.state)

    def heal_without_stack(self, journal: Journal, record: UndoRecord) -> None:
        _restore(_Undo.parse(record), [journal.folder])

    def outcome(self, ctx: FaultContext, record: UndoRecord) -> dict[str, Any] | None:
        controller = self._controller
        if controller is None or not controller.data:
            return None
        return {
            "rollout": dict(controller.data),
            "expected": self.expected,
            "defect": self._defect,
            "released_digests": [controller.manifest.digest],
        }


class BadRollout(Rollout):
    name: ClassVar[str] = "bad_rollout"
    Params = BadRolloutParams  # type: ignore[assignment]
    description: ClassVar[str] = (
        "a signed model version that passes every offline check but hurts users is rolled out"
    )
    expected: ClassVar[Literal["promoted", "rolled_back"]] = "rolled_back"

    def _defect_of(self, params: RolloutParams) -> tuple[str, float]:
        assert isinstance(params, BadRolloutParams)
        return params.defect, params.amount

    def _describe(self, params: RolloutParams) -> str:
        assert isinstance(params, BadRolloutParams)
        if params.defect == "latency":
            return f"latency +{params.amount:g} ms"
        return f"{params.defect} {params.amount:.0%} of users"


def _restore(undo: _Undo, roots: Sequence[Path]) -> set[str]:
    """Every store's CURRENT back to ``previous`` and the published version removed, inside
    ``roots`` only; returns the names of the replicas whose store changed (their folder name)."""
    import shutil

    from drillkit.fsutil import contained
    from drillkit.stacks.recommender.store import ModelStore

    changed: set[str] = set()
    for text in undo.stores:
        try:
            root = contained(text, list(roots), what="store")
        except InputError:
            continue  # a store outside this stack's folders (the user's): left alone
        store = ModelStore(root)
        if not store.root.is_dir():
            continue
        if store.current() == undo.version and undo.previous in store.versions():
            store.set_current(undo.previous)
            changed.add(root.parent.name)
        folder = store.versions_dir / undo.version
        if folder.is_dir():
            shutil.rmtree(contained(folder, list(roots), what="published version"))
            changed.add(root.parent.name)
    return changed
