"""The fault-kind contract and the registry of fault kinds.

A fault kind is a :class:`FaultKind` subclass registered under the ``drillkit.faults``
entry-point group, the built-in kinds exactly as a third-party plugin would be::

    [project.entry-points."drillkit.faults"]
    drop_packets = "my_faults:DropPackets"

Each kind names itself (:attr:`FaultKind.name`, what ``kind:`` says in a scenario), declares a
pydantic model for its ``params:`` (:attr:`FaultKind.Params`), and says which services it can
target (:attr:`FaultKind.target_roles`). Validating a scenario needs only those class
attributes; the engine instantiates the kind and calls :meth:`FaultKind.apply`,
:meth:`FaultKind.check_applied` and, on every exit path, :meth:`FaultKind.heal`.

The registry (:func:`fault_kinds`, :func:`fault_param_models`) reads the entry points once per
process. A built-in kind whose entry point is not installed (a source checkout, say) still
validates through :data:`drillkit.faults.params.BUILTIN_PARAMS`. A plugin that fails to load
is reported with a :class:`FaultPluginWarning` naming it and skipped, so one broken plugin
does not stop every drill.
"""

from __future__ import annotations

import functools
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

__all__ = [
    "ENTRY_POINT_GROUP",
    "ROLE_GATEWAY",
    "ROLE_MODEL_STORE",
    "ROLE_REPLICA",
    "FaultKind",
    "FaultKindInfo",
    "FaultPluginWarning",
    "fault_kinds",
    "fault_param_models",
]

ENTRY_POINT_GROUP = "drillkit.faults"

ROLE_REPLICA = "replica"
ROLE_GATEWAY = "gateway"
#: Not a service: the model store every replica loads from (``target: model-store``).
ROLE_MODEL_STORE = "model-store"

P = TypeVar("P", bound=BaseModel)


class FaultKind(ABC, Generic[P]):
    """A kind of fault a drill can inject: the plugin contract.

    Subclasses set the class attributes and implement the three methods. ``ctx`` is a
    FaultContext defined by the engine: the backend, the stack state and the journal. It is
    typed ``Any`` here until the engine's type exists.

    The undo record returned by :meth:`apply` is plain JSON-serialisable data: it is written to
    the journal so that ``drillkit heal``, in another process after a crash, can undo the fault
    with nothing but the record.
    """

    name: ClassVar[str]
    """What ``kind:`` says in a scenario, e.g. ``kill_node``."""

    Params: ClassVar[type[BaseModel]]
    """The pydantic model ``params:`` validates against (unknown keys should be forbidden)."""

    description: ClassVar[str]
    """One line for ``drillkit list``."""

    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_REPLICA})
    """What the kind may target: any of :data:`ROLE_REPLICA`, :data:`ROLE_GATEWAY`,
    :data:`ROLE_MODEL_STORE`."""

    @abstractmethod
    def apply(self, ctx: Any, target: str, params: P) -> dict[str, Any]:
        """Inject the fault into ``target`` and return its undo record.

        The record must be journaled (through ``ctx``) *before* the change is made, so that a
        crash half-way through still leaves enough behind to heal it.
        """

    @abstractmethod
    def heal(self, ctx: Any, record: dict[str, Any]) -> None:
        """Undo the fault described by ``record``. Idempotent: healing twice, or healing a
        fault that never took effect, is not an error."""

    @abstractmethod
    def check_applied(self, ctx: Any, target: str, params: P, record: dict[str, Any]) -> str:
        """Return evidence that the fault took effect (for the report), e.g.
        ``"replica-1 pid 4242 is gone"``; raise if it did not."""


class FaultPluginWarning(RuntimeWarning):
    """A fault plugin could not be loaded and was skipped."""


@dataclass(frozen=True)
class FaultKindInfo:
    """What validation needs to know about a fault kind, without instantiating it."""

    name: str
    params: type[BaseModel]
    target_roles: frozenset[str]
    description: str = ""
    source: str = "builtin"  # "builtin", or the entry point's "module:attr"


# Kept in line with the fault implementations' own ``target_roles``; used only when a built-in's
# entry point is not installed.
_BUILTIN_ROLES: dict[str, frozenset[str]] = {
    "kill_node": frozenset({ROLE_REPLICA, ROLE_GATEWAY}),
    "pause_node": frozenset({ROLE_REPLICA, ROLE_GATEWAY}),
    "cut_network": frozenset({ROLE_REPLICA}),
    "latency": frozenset({ROLE_REPLICA}),
    "corrupt_model": frozenset({ROLE_REPLICA, ROLE_MODEL_STORE}),
    "load_spike": frozenset({ROLE_GATEWAY}),
}
_BUILTIN_DESCRIPTIONS: dict[str, str] = {
    "kill_node": "the target dies at once (KILL) or stops gracefully (TERM)",
    "pause_node": "the target freezes: sockets stay open, nothing answers",
    "cut_network": "traffic between the gateway and the target is cut",
    "latency": "delay (and jitter) is added between the gateway and the target",
    "corrupt_model": "the model artifact the target loads is damaged",
    "load_spike": "extra requests/s on top of the drill's load (an open loop)",
}


def _builtin_kinds() -> dict[str, FaultKindInfo]:
    from drillkit.faults.params import BUILTIN_PARAMS

    return {
        name: FaultKindInfo(
            name=name,
            params=model,
            target_roles=_BUILTIN_ROLES[name],
            description=_BUILTIN_DESCRIPTIONS[name],
        )
        for name, model in BUILTIN_PARAMS.items()
    }


def _info_from_class(obj: object, source: str) -> FaultKindInfo:
    if not (isinstance(obj, type) and issubclass(obj, FaultKind)):
        raise TypeError("it is not a drillkit.faults.base.FaultKind subclass")
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError("its `name` class attribute is not set")
    params = getattr(obj, "Params", None)
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise TypeError("its `Params` class attribute is not a pydantic model")
    roles = frozenset(getattr(obj, "target_roles", frozenset({ROLE_REPLICA})))
    return FaultKindInfo(
        name=name,
        params=params,
        target_roles=roles,
        description=str(getattr(obj, "description", "")),
        source=source,
    )


@functools.cache
def fault_kinds() -> dict[str, FaultKindInfo]:
    """Every registered fault kind by name: entry points first, then missing built-ins.

    Cached for the process; ``fault_kinds.cache_clear()`` re-reads the entry points.
    """
    found: dict[str, FaultKindInfo] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            info = _info_from_class(ep.load(), ep.value)
        except Exception as exc:  # a plugin may fail in any way while importing
            warnings.warn(
                f"fault plugin {ep.name!r} ({ep.value}) could not be loaded and is skipped: "
                f"{type(exc).__name__}: {exc}",
                FaultPluginWarning,
                stacklevel=2,
            )
            continue
        if info.name in found:
            warnings.warn(
                f"fault plugin {ep.name!r} ({ep.value}) registers kind {info.name!r}, which "
                f"{found[info.name].source} already registers; skipped",
                FaultPluginWarning,
                stacklevel=2,
            )
            continue
        found[info.name] = info
    for name, info in _builtin_kinds().items():
        found.setdefault(name, info)
    return found


def fault_param_models() -> dict[str, type[BaseModel]]:
    """The params model of every registered fault kind, by kind name."""
    return {name: info.params for name, info in fault_kinds().items()}
