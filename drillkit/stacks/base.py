"""Stack presets and the life of a stack: a preset plans it, a backend runs the plan.

A preset is a :class:`StackPreset` registered under the ``drillkit.stacks`` entry-point group
(``recommender`` is drillkit's reference stack). It turns its own description of a stack
(its :attr:`~StackPreset.Spec`, which a scenario's ``stack:`` section becomes) into a
:class:`~drillkit.stacks.plan.StackPlan`, preparing the files the services need on the way,
and it tells a drill how to watch the stack: the stack's own signals of noticing a fault
(:meth:`~StackPreset.watch_sources`), the quality of what it serves
(:meth:`~StackPreset.quality_probe`), which model digests are the verified ones
(:meth:`~StackPreset.verified_digests`).

:func:`bring_up` and :func:`take_down` are the one way a stack starts and goes, for ``drillkit
run``, ``stack up``/``down`` and ``heal`` alike: a stack id and run folder, the preset's plan,
the backend's start, the preset's last wait (:meth:`~StackPreset.settle`); and on the way
down the backend's stop, the removal of the plan's data and of the saved state.
"""

from __future__ import annotations

import secrets
import shutil
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from drillkit import state as state_files
from drillkit.backends.base import (
    Backend,
    Owner,
    Progress,
    StackIdentity,
    StackState,
    clear_state,
    get_backend,
    save_state,
)
from drillkit.errors import BackendUnavailable, InputError
from drillkit.stacks.plan import StackPlan

if TYPE_CHECKING:
    from drillkit.observe.quality import QualityProbe
    from drillkit.observe.watch import WatchSource
    from drillkit.scoring.data import DataCensus

__all__ = [
    "ENTRY_POINT_GROUP",
    "StackPreset",
    "Workload",
    "bring_up",
    "get_preset",
    "new_stack_id",
    "preset_names",
    "take_down",
]

ENTRY_POINT_GROUP = "drillkit.stacks"

SpecT = TypeVar("SpecT")


@dataclass(frozen=True)
class Workload:
    """What the drill's load asks of the stack: ``GET /recommend?user_id=U&k=K`` with user
    ids drawn from ``0..users-1`` (some beyond, as cold starts)."""

    users: int
    k: int = 10
    items: int = 1
    event_share: float = 0.0  # share of requests sent as click events (POST /events)


class StackPreset(ABC, Generic[SpecT]):
    """A kind of stack drillkit can bring up: the plugin contract of ``drillkit.stacks``."""

    name: ClassVar[str]
    """What ``stack.preset`` says in a scenario."""
    description: ClassVar[str] = ""

    @abstractmethod
    def plan(self, spec: SpecT, *, data_dir: Path, gpu: bool, progress: Progress) -> StackPlan:
        """The stack's plan. Files the services need (a copy of a model store for each
        replica, say) are prepared under ``data_dir``, which belongs to this stack alone and
        is removed when it goes down. ``gpu`` says whether the backend can give services a
        GPU."""

    def resolve(self, spec: SpecT, backend: str) -> SpecT:
        """The spec with what depends on the backend or the machine decided (a setting of
        ``auto`` made on or off); idempotent. Called before :meth:`preflight`."""
        return spec

    def decide_monitoring(
        self, spec: SpecT, backend: str, *, required: bool, external: bool
    ) -> tuple[SpecT, str | None]:
        """The spec with the stack's own monitoring decided for a drill: off when the drill
        reads a team's own (``external``), else as :meth:`resolve` decides; exit 3 naming
        what to install when the drill judges alerts (``required``) and the stack cannot run
        its monitoring. The note says why monitoring is off, when that is worth saying."""
        return self.resolve(spec, backend), None

    def alert_sources(self, state: StackState[Any]) -> tuple[str, str] | None:
        """The URLs of the stack's Prometheus and of the webhook receiver its Alertmanager
        notifies; None for a stack without monitoring."""
        return None

    def alert_timing(self, spec: SpecT) -> tuple[dict[str, float], float]:
        """The delay budget of the stack's monitoring, term by term (seconds), and how long
        after a fault ends an alert is still that fault's."""
        return {}, 30.0

    def preflight(self, spec: SpecT, backend: str = "local") -> None:
        """Check, before anything is prepared or started, what the stack needs from the
        machine and the user's files (programs installed, configuration accepted): an
        InputError (exit 2) or EnvironmentFailure (exit 3) with one line saying what is
        wrong. Called by a drill before it starts and by :meth:`plan`'s callers."""
        return None

    def targets(self, spec: SpecT) -> dict[str, str] | None:
        """The stack's fault targets with their roles, when only the preset can read them
        (a Compose project's services, from its file); None: the scenario itself says, and
        the scenario model has checked them."""
        return None

    def target_links(self, spec: SpecT) -> tuple[frozenset[str], frozenset[str]] | None:
        """With :meth:`targets`: the services network faults can reach (a link ends at
        them) and those the host reaches (a published port, what a load spike needs)."""
        return None

    def gpu_wanted(self, spec: SpecT) -> str:
        """``auto``, ``on`` (exit 3 when the backend has none) or ``off``."""
        return "off"

    def settle(self, state: StackState[Any], backend: Backend[Any], progress: Progress) -> None:
        """Wait for what the stack needs beyond each service's own readiness (a gateway
        routing to every replica, say); raise StackNotReady when it never comes."""
        return None

    def workload(self, state: StackState[Any]) -> Workload:
        """What the drill's load should ask for."""
        return Workload(users=1000)

    def watch_sources(self, state: StackState[Any]) -> list[WatchSource]:
        """Where the stack shows that it noticed a fault (health-check state changes,
        refused artifacts, shed load), polled during a drill."""
        return []

    def quality_probe(self, seed: int) -> QualityProbe | None:
        """A probe of the quality of what the stack serves, or None when it has none."""
        return None

    def data_census(self, state: StackState[Any], t0: float) -> DataCensus | None:
        """What the stack's event store holds and its backup service did, read before the
        stack goes down, times from ``t0``; None: the stack has no event path."""
        return None

    def verified_digests(self, state: StackState[Any]) -> frozenset[str] | None:
        """The model digests a response may carry; any other is a wrong-model response.
        None: the stack serves no versioned model, and the rule does not apply."""
        return None

    def extra_targets(self, state: StackState[Any]) -> dict[str, str]:
        """Fault targets that are not services, by name, with the role a fault kind names
        to reach them (the recommender's ``model-store``: every copy of its store)."""
        return {}

    def describe(self, state: StackState[Any]) -> dict[str, Any]:
        """Extra fields for ``stack status`` (a model store's current version, say)."""
        return {}


def preset_names() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def get_preset(name: str) -> StackPreset[Any]:
    """The preset registered as ``name`` under ``drillkit.stacks``."""
    from drillkit.plugins import load_plugin

    cls = load_plugin(ENTRY_POINT_GROUP, name, what="stack preset")
    preset = cls() if isinstance(cls, type) else None
    if not isinstance(preset, StackPreset):
        raise InputError(f"stack preset {name!r} does not implement StackPreset")
    return preset


def new_stack_id() -> str:
    """``YYYYmmdd-HHMMSS-xxxxxx``: sortable by start, unique on one machine."""
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def bring_up(
    preset: StackPreset[SpecT],
    spec: SpecT,
    backend: Backend[Any],
    *,
    owner: Owner | None = None,
    progress: Progress | None = None,
    listen: str | None = None,
) -> StackState[Any]:
    """Plan the stack and start it; return once the backend and the preset say it is ready.
    ``listen``: an address of the host where the entry port listens (the local backend).

    On any failure nothing is left running and no state is saved.
    """
    report = progress or (lambda message, fraction: None)
    if listen is not None and backend.name != "local":
        raise InputError(
            f"stack.listen: the {backend.name} backend publishes its ports on 127.0.0.1; "
            "only the local backend listens elsewhere"
        )
    spec = preset.resolve(spec, backend.name)
    preset.preflight(spec, backend.name)
    gpu = _gpu(preset.gpu_wanted(spec), backend)
    stack_id = new_stack_id()
    # Held until take_down (or this process's end): heal and `stack down` elsewhere wait.
    state_files.hold(stack_id)
    state_files.prune()  # folders of finished stacks beyond the newest few: their logs
    run_dir = state_files.stack_dir(stack_id)
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    data_dir = run_dir / "data"
    try:
        plan = preset.plan(spec, data_dir=data_dir, gpu=gpu, progress=report)
        if listen is not None:
            plan = plan.model_copy(update={"listen": listen})
    except BaseException:
        shutil.rmtree(data_dir, ignore_errors=True)
        state_files.release(stack_id)
        raise
    identity = StackIdentity(id=stack_id, run_dir=run_dir, gpu=gpu, owner=owner)
    try:
        state: StackState[Any] = backend.up(plan, identity, progress=report)
    except BaseException:
        _remove_data(plan, run_dir)
        clear_state(stack_id)
        state_files.release(stack_id)
        raise
    try:
        preset.settle(state, backend, report)
    except BaseException:
        take_down(state, backend)
        raise
    save_state(state)
    return state


def take_down(state: StackState[Any], backend: Backend[Any] | None = None) -> None:
    """Stop every service, remove the stack's own data and its saved state, let its lock go;
    idempotent. The stack's folder stays: its logs, and a journal with what may still need
    healing."""
    try:
        (backend or get_backend(state.backend)).down(state)
        _remove_data(state.plan, Path(state.run_dir))
        clear_state(state.id)
    finally:
        state_files.release(state.id)


def _remove_data(plan: StackPlan, run_dir: Path) -> None:
    # Only the stack's own folder: never a store the user asked to serve in place.
    if plan.data and Path(plan.data).resolve().is_relative_to(run_dir.resolve()):
        shutil.rmtree(plan.data, ignore_errors=True)


def _gpu(want: str, backend: Backend[Any]) -> bool:
    if want == "off":
        return False
    available = backend.gpu_available()
    if want == "on" and not available:
        raise BackendUnavailable(f"gpu: on, but {backend.no_gpu_reason()}")
    return available
