"""The fault-kind contract and the registry of fault kinds.

A fault kind is a :class:`FaultKind` subclass registered under the ``drillkit.faults``
entry-point group, the built-in kinds exactly as a third-party plugin would be::

    [project.entry-points."drillkit.faults"]
    drop_packets = "my_faults:DropPackets"

Each kind names itself (:attr:`FaultKind.name`, what ``kind:`` says in a scenario), declares a
pydantic model for its ``params:`` (:attr:`FaultKind.Params`), the roles of the services it
can target (:attr:`FaultKind.target_roles`), the backend primitives it needs
(:attr:`FaultKind.needs`) and whether its damage outlives the stack
(:attr:`FaultKind.outlives_stack`). Validating a scenario needs only those class attributes;
the engine instantiates the kind and calls :meth:`FaultKind.apply`,
:meth:`FaultKind.check_applied` and, on every exit path, :meth:`FaultKind.heal`, each with a
:class:`~drillkit.faults.context.FaultContext`: the backend, the stack's state, the journal.

The entry points are the one list of kinds: :func:`fault_kinds` reads them once per process.
A plugin that fails to load is reported with a :class:`FaultPluginWarning` naming it and
skipped, so one broken plugin does not stop every drill. ``docs/plugins.md`` walks through
writing one; :mod:`drillkit.testing` has a fake backend to test it with.
"""

from __future__ import annotations

import functools
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from drillkit.errors import InputError

if TYPE_CHECKING:
    from drillkit.faults.context import FaultContext
    from drillkit.journal import Journal

__all__ = [
    "ANY_SERVICE",
    "ENTRY_POINT_GROUP",
    "ROLE_GATEWAY",
    "ROLE_REPLICA",
    "ROLE_SERVICE",
    "FaultKind",
    "FaultKindInfo",
    "FaultPluginWarning",
    "UndoModel",
    "UndoRecord",
    "fault_kinds",
    "fault_param_models",
    "load_fault_kind",
]

ENTRY_POINT_GROUP = "drillkit.faults"

#: In :attr:`FaultKind.target_roles`: every service of the stack, whatever its role.
ANY_SERVICE = "*"
#: Roles of the reference stack's services that built-in kinds name.
ROLE_REPLICA = "replica"
ROLE_GATEWAY = "gateway"
#: The role of a service of a team's own Compose project (one that names no other role).
ROLE_SERVICE = "service"

P = TypeVar("P", bound=BaseModel)

UndoRecord = dict[str, Any]
"""What :meth:`FaultKind.apply` returns: JSON data, journaled, enough to undo the fault."""

U = TypeVar("U", bound="UndoModel")


class UndoModel(BaseModel):
    """Base of a kind's typed undo record. A record comes back from a journal that someone
    may have written by hand: :meth:`parse` checks it (names, forms, ranges) before the kind
    acts on anything in it, and a record that does not fit is an InputError, never acted on.
    Fields drillkit adds (``journal_id``, ``target``) are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def parse(cls: type[U], record: UndoRecord) -> U:
        try:
            return cls.model_validate(record)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "record"
            raise InputError(f"undo record refused: {where}: {first['msg']}") from None


class FaultKind(ABC, Generic[P]):
    """A kind of fault a drill can inject: the plugin contract.

    Subclasses set the class attributes and implement the three methods. The undo record
    returned by :meth:`apply` is plain JSON data: it is written to the journal so that
    ``drillkit heal``, in another process after a crash, can undo the fault with nothing but
    the record and the stack's saved state.
    """

    name: ClassVar[str]
    """What ``kind:`` says in a scenario, e.g. ``kill_node``."""

    Params: ClassVar[type[BaseModel]]
    """The pydantic model ``params:`` validates against (unknown keys should be forbidden)."""

    description: ClassVar[str] = ""
    """One line for ``drillkit list``."""

    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_REPLICA})
    """The roles of the services the kind may target (:data:`ANY_SERVICE` for all), plus any
    pseudo-target a stack defines (the recommender's ``model-store``)."""

    needs: ClassVar[frozenset[str]] = frozenset()
    """Backend primitives the kind calls (``slow_link``, ...), checked with
    :meth:`~drillkit.backends.base.Backend.check_capabilities` before a drill starts."""

    outlives_stack: ClassVar[bool] = False
    """True when the damage stays after the stack is gone (files changed on disk, a process
    on the host): ``drillkit heal`` then undoes it with :meth:`heal_without_stack` even when
    no stack runs."""

    @abstractmethod
    def apply(self, ctx: FaultContext, target: str, params: P) -> UndoRecord:
        """Inject the fault into ``target`` and return its undo record.

        The record must be journaled (:meth:`FaultContext.begin`) *before* the change is
        made, so that a crash half-way through still leaves enough behind to heal it.
        """

    @abstractmethod
    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        """Undo the fault described by ``record``. Idempotent: healing twice, or healing a
        fault that never took effect, is not an error."""

    @abstractmethod
    def check_applied(self, ctx: FaultContext, target: str, params: P, record: UndoRecord) -> str:
        """Return evidence that the fault took effect (for the report), e.g.
        ``"replica-1 (pid 4242) is gone"``; raise EnvironmentFailure if it did not."""

    def outcome(self, ctx: FaultContext, record: UndoRecord) -> dict[str, Any] | None:
        """What the fault did that the report shows beyond its evidence, as JSON data, read
        after :meth:`heal` (a rollout's steps and verdict); None (the default): nothing."""
        return None

    def heal_without_stack(self, journal: Journal, record: UndoRecord) -> None:
        """Undo what outlived the stack (only called when :attr:`outlives_stack`)."""
        raise NotImplementedError(f"{self.name} leaves nothing behind its stack")


class FaultPluginWarning(RuntimeWarning):
    """A fault plugin could not be loaded and was skipped."""


@dataclass(frozen=True)
class FaultKindInfo:
    """What validation needs to know about a fault kind, read from its class."""

    name: str
    cls: type[FaultKind[Any]]
    source: str  # the entry point's "module:attr"

    @property
    def params(self) -> type[BaseModel]:
        return self.cls.Params

    @property
    def target_roles(self) -> frozenset[str]:
        return frozenset(self.cls.target_roles)

    @property
    def description(self) -> str:
        return self.cls.description

    @property
    def builtin(self) -> bool:
        return self.source.startswith("drillkit.")


def _check_class(obj: object) -> type[FaultKind[Any]]:
    if not (isinstance(obj, type) and issubclass(obj, FaultKind)):
        raise TypeError("it is not a drillkit.faults.base.FaultKind subclass")
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError("its `name` class attribute is not set")
    params = getattr(obj, "Params", None)
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise TypeError("its `Params` class attribute is not a pydantic model")
    return obj


@functools.cache
def fault_kinds() -> dict[str, FaultKindInfo]:
    """Every registered fault kind by name, from the ``drillkit.faults`` entry points.

    Cached for the process; ``fault_kinds.cache_clear()`` re-reads the entry points.
    """
    found: dict[str, FaultKindInfo] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = _check_class(ep.load())
        except Exception as exc:  # a plugin may fail in any way while importing
            warnings.warn(
                f"fault plugin {ep.name!r} ({ep.value}) could not be loaded and is skipped: "
                f"{type(exc).__name__}: {exc}",
                FaultPluginWarning,
                stacklevel=2,
            )
            continue
        if cls.name in found:
            warnings.warn(
                f"fault plugin {ep.name!r} ({ep.value}) registers kind {cls.name!r}, which "
                f"{found[cls.name].source} already registers; skipped",
                FaultPluginWarning,
                stacklevel=2,
            )
            continue
        found[cls.name] = FaultKindInfo(name=cls.name, cls=cls, source=ep.value)
    return found


def fault_param_models() -> dict[str, type[BaseModel]]:
    """The params model of every registered fault kind, by kind name."""
    return {name: info.params for name, info in fault_kinds().items()}


def load_fault_kind(name: str) -> FaultKind[Any]:
    """An instance of the fault kind registered under ``name``."""
    info = fault_kinds().get(name)
    if info is None:
        known = ", ".join(sorted(fault_kinds())) or "none: is drillkit installed?"
        raise InputError(f"unknown fault kind {name!r} (known: {known})")
    return info.cls()
