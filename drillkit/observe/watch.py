"""Watch the stack notice faults: poll the places where it shows what it saw (a load
balancer's view of its backends, a replica's refused model versions, load being shed), at
10 Hz on a background thread.

Where to look is the preset's to say (:meth:`drillkit.stacks.base.StackPreset.watch_sources`);
each source turns what it reads into :class:`StackEvent` values. Events carry the time the
*stack* gives (a health checker's ``since`` of a state change, the time a replica refused a
load), not the time of the poll, so detection is measured to the stack's own clock rather than
to the polling interval.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import httpx

if TYPE_CHECKING:
    from drillkit.stacks.base import StackPreset

__all__ = ["StackEvent", "StackWatcher", "WatchSource", "Watcher"]


@dataclass(frozen=True)
class StackEvent:
    """Something the stack showed: a service's state changed as its health checker sees it,
    load started being shed, an artifact was refused."""

    t: float  # epoch seconds
    source: str  # who showed it: "gateway", a replica's name, ...
    subject: str  # the service it is about
    what: str


class WatchSource(Protocol):
    """One place the stack shows what it noticed."""

    def poll(self, client: httpx.Client) -> tuple[list[StackEvent], dict[str, str]]:
        """New events since the last poll, and the current state of the services this
        source has a view of (``{"replica-1": "up"}``; empty when it has none). May raise
        ``httpx.HTTPError``, ``ValueError`` or ``KeyError`` when the place does not answer
        or answers nonsense: the watcher tries again at the next poll."""
        ...


class Watcher(Protocol):
    """What a drill needs from a watcher (the engine's seam)."""

    def start(self, state: Any) -> None: ...

    def stop(self) -> None: ...

    def snapshot(self) -> tuple[dict[str, str], list[StackEvent]]: ...


class StackWatcher:
    """Polls a preset's watch sources for one running stack on a background thread."""

    def __init__(self, preset: StackPreset[Any], *, interval: float = 0.1) -> None:
        self.preset = preset
        self.interval = interval
        self.events: list[StackEvent] = []
        self.states: dict[str, str] = {}
        self._sources: list[WatchSource] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-watcher", daemon=True)

    def start(self, state: Any) -> None:
        self._sources = self.preset.watch_sources(state)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for source in self._sources:  # a source with a thread or stream of its own
            close = getattr(source, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()

    def snapshot(self) -> tuple[dict[str, str], list[StackEvent]]:
        with self._lock:
            return dict(self.states), list(self.events)

    def _run(self) -> None:
        with httpx.Client(timeout=max(self.interval * 2, 0.25)) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                for source in self._sources:
                    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                        events, states = source.poll(client)
                        with self._lock:
                            self.events.extend(events)
                            self.states.update(states)
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
