"""``flap_node``: the target replica keeps dying and coming back, a drillkit fault plugin.

A replica that crashes, restarts, passes its health checks and crashes again (a bad node, an
OOM loop, a crashing sidecar) is harder on a load balancer than one that simply dies: each time
it comes back the gateway has to notice it is ready, send it traffic, and eject it again when
it dies with requests in flight. This kind drills exactly that: the gateway's rise/fall
hysteresis, passive ejection and retries, over and over, for the fault's ``duration``.

One cycle::

    kill (signal) -> gone -> down `down` s -> restart -> ready -> up `up` s -> kill ...

``up`` is counted from the moment the target is ready again, not from the restart, so every
cycle gives the gateway a real window in which to take the target back and send it traffic,
however long the target takes to start on this machine or backend.

How it uses drillkit's plugin contract (:class:`drillkit.faults.base.FaultKind`):

- :meth:`FlapNode.apply` journals the undo record through ``ctx.begin`` (fsynced) *before*
  the first kill, kills the target, and starts a daemon thread in the applying process that
  runs the rest of the cycles with the backend's primitives (``kill``, ``service_alive``,
  ``restart``) and ``ctx.wait_ready``, so it works on every backend that has them (local
  processes and docker containers).
- :meth:`FlapNode.heal` stops that thread, if this process runs it, then restarts the target
  when it is down and waits until it is ready: exactly what is needed from the record alone,
  which is why ``drillkit heal`` in another process after a crash can undo it (the thread died
  with the process that ran it). Healing twice, or healing a fault whose first kill never
  happened, restarts nothing.
- The thread takes a lock around every kill and restart, and heal sets the stop flag under the
  same lock: once heal has it, no kill or restart is half done and none will follow. Before
  every kill the thread also re-reads the journal and stops once its entry has been healed
  (``drillkit heal`` run from another terminal).
"""

from __future__ import annotations

import atexit
import threading
import time
import warnings
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drillkit.errors import EnvironmentFailure, StackNotReady
from drillkit.faults.base import ROLE_REPLICA, FaultKind, UndoRecord
from drillkit.faults.context import FaultContext
from drillkit.scenario.units import PositiveDuration, format_duration

__all__ = ["FlapNode", "FlapNodeParams", "FlapNodeWarning"]
__version__ = "0.1.0"

#: The longest down or up time accepted; a slower flap is a series of kill_node faults.
MAX_PHASE_S = 3600.0
#: How long a TERMed target may take to go (uvicorn gives in-flight requests 5 s).
STOP_WAIT_S = 10.0
#: How long a restarted target may take to become ready before the flapping gives up.
READY_TIMEOUT_S = 90.0
#: How long heal waits for a kill or restart in progress before it takes over anyway.
LOCK_WAIT_S = 60.0


class FlapNodeWarning(RuntimeWarning):
    """The flapping stopped early (a restart failed, say); heal still brought the target back."""


class FlapNodeParams(BaseModel):
    """``flap_node``: how long the target stays down, how long up, and how it dies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    down: PositiveDuration = Field(
        default=1.0, description="How long the target stays down after each kill; at most 1h."
    )
    up: PositiveDuration = Field(
        default=2.0,
        description="How long the target stays up once it is ready again; at most 1h.",
    )
    signal: Literal["KILL", "TERM"] = Field(
        default="KILL", description="KILL: die at once; TERM: a graceful stop each time."
    )

    @field_validator("signal", mode="before")
    @classmethod
    def _normalise_signal(cls, value: object) -> object:
        # SIGKILL, kill and KILL all name the same signal (as kill_node accepts them).
        if isinstance(value, str):
            return value.strip().upper().removeprefix("SIG")
        return value

    @field_validator("down", "up")
    @classmethod
    def _at_most_an_hour(cls, value: float) -> float:
        if value > MAX_PHASE_S:
            raise ValueError(
                f"expected at most {format_duration(MAX_PHASE_S)}, got {format_duration(value)} "
                "(a flap that slow is a series of kill_node faults)"
            )
        return value


class _Flapper:
    """The kill/restart cycles of one applied fault, in a daemon thread of the applying
    process. Built and registered by :meth:`FlapNode.apply`, stopped by :meth:`FlapNode.heal`."""

    def __init__(
        self, ctx: FaultContext, target: str, params: FlapNodeParams, journal_id: str
    ) -> None:
        self.ctx = ctx
        self.target = target
        self.params = params
        self.journal_id = journal_id
        # Held around every change to the target; heal takes it to set `stopped`, so that
        # afterwards nothing is half done and nothing more will be done.
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.gone = threading.Event()  # set each time a kill has taken effect
        self.kills = 0
        self.restarts = 0
        self.first_killed = ""  # the first kill's pid or container, for the evidence
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"flap_node:{target}", daemon=True)

    # -- the steps, each under the lock ----------------------------------------------------
    def kill(self) -> bool:
        """Kill the target, unless the fault has been healed here or elsewhere."""
        with self.lock:
            if self.stopped.is_set() or self._healed_elsewhere():
                return False
            self.gone.clear()
            if not self.first_killed:
                self.first_killed = self.ctx.ident(self.target)
            self.ctx.backend.kill(self.ctx.state, self.target, signal=self.params.signal)
            self.kills += 1
            return True

    def _restart(self) -> bool:
        with self.lock:
            if self.stopped.is_set():
                return False  # heal restarts it, if it is still down then
            if not self.ctx.backend.service_alive(self.ctx.state, self.target):
                # The backend saves the new pid or container, for `drillkit heal`.
                self.ctx.backend.restart(self.ctx.state, self.target)
                self.restarts += 1
            return True

    def _healed_elsewhere(self) -> bool:
        # `drillkit heal` in another process heals from the journal; it cannot reach this
        # thread, but the heal record it writes can.
        return all(entry.id != self.journal_id for entry in self.ctx.journal.pending())

    # -- the thread ------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        acquired = self.lock.acquire(timeout=LOCK_WAIT_S)
        try:
            self.stopped.set()
        finally:
            if acquired:
                self.lock.release()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=LOCK_WAIT_S)

    def _run(self) -> None:
        try:
            while True:
                if not self._wait_gone():
                    return
                if self.stopped.wait(self.params.down) or not self._restart():
                    return
                if not self._wait_ready():
                    return
                if self.stopped.wait(self.params.up) or not self.kill():
                    return
        except Exception as exc:  # reported by heal; heal brings the target back regardless
            self.error = exc

    def _wait_gone(self) -> bool:
        grace = STOP_WAIT_S if self.params.signal == "TERM" else 0.0
        deadline = time.monotonic() + grace + 2.0
        while self.ctx.backend.service_alive(self.ctx.state, self.target):
            if time.monotonic() > deadline:
                raise EnvironmentFailure(
                    f"{self.target} is still running after SIG{self.params.signal}"
                )
            if self.stopped.wait(0.01):
                return False
        self.gone.set()
        return True

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.stopped.is_set():
            try:
                # Short waits, so that heal does not have to wait for a slow start-up.
                self.ctx.wait_ready(self.target, timeout=0.5)
                return True
            except StackNotReady:
                if time.monotonic() > deadline or not self.ctx.backend.service_alive(
                    self.ctx.state, self.target
                ):
                    raise
        return False


_flappers: dict[str, _Flapper] = {}
_flappers_lock = threading.Lock()


def _register(flapper: _Flapper) -> None:
    with _flappers_lock:
        _flappers[flapper.journal_id] = flapper


def _find(journal_id: object) -> _Flapper | None:
    with _flappers_lock:
        return _flappers.get(str(journal_id))


def _take(journal_id: object) -> _Flapper | None:
    with _flappers_lock:
        return _flappers.pop(str(journal_id), None)


@atexit.register
def _stop_all_at_exit() -> None:
    # A process that applied the fault and exits without healing it (`drillkit fault inject`
    # without --duration) would otherwise freeze the daemon thread wherever it is, perhaps
    # between starting a new replica and saving its pid. Stopped here, the target is left as
    # the last finished step left it, and the journal entry stays open for `drillkit heal`.
    with _flappers_lock:
        running = list(_flappers.values())
    for flapper in running:
        flapper.stop()


class FlapNode(FaultKind[FlapNodeParams]):
    """The target is killed, stays down ``down`` seconds, is restarted, and is killed again
    ``up`` seconds after it is ready, until the fault is healed."""

    name: ClassVar[str] = "flap_node"
    Params = FlapNodeParams
    description: ClassVar[str] = "the target keeps dying and coming back (a crash loop)"
    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_REPLICA})

    def apply(self, ctx: FaultContext, target: str, params: FlapNodeParams) -> UndoRecord:
        # Everything heal needs is the service's name; the rest is for the people reading the
        # journal.
        record = ctx.begin(
            self.name,
            target,
            {
                "service": target,
                "signal": params.signal,
                "down": params.down,
                "up": params.up,
            },
        )
        flapper = _Flapper(ctx, target, params, str(record["journal_id"]))
        # Registered before the first kill: if that raises, heal (from the engine's clean-up,
        # with a fresh FlapNode) still finds and stops this flapper.
        _register(flapper)
        if flapper.kill():
            flapper.start()
        return record

    def check_applied(
        self, ctx: FaultContext, target: str, params: FlapNodeParams, record: UndoRecord
    ) -> str:
        ident = ctx.ident(target)
        timeout = (STOP_WAIT_S if params.signal == "TERM" else 0.0) + 2.0
        flapper = _find(record.get("journal_id"))
        if flapper is not None:
            gone = flapper.gone.wait(timeout)
            ident = flapper.first_killed or ident
            if not gone and flapper.error is not None:
                raise EnvironmentFailure(f"flap_node on {target}: {flapper.error}")
        else:  # applied by another process: look at the target itself
            deadline = time.monotonic() + timeout
            while (alive := ctx.backend.service_alive(ctx.state, target)) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.01)
            gone = not alive
        if not gone:
            raise EnvironmentFailure(f"{target} is still running after SIG{params.signal}")
        return (
            f"{target} ({ident}) is gone after SIG{params.signal}; it flaps: down "
            f"{format_duration(params.down)}, then up {format_duration(params.up)} once ready"
        )

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        target = str(record["service"])
        flapper = _take(record.get("journal_id"))
        if flapper is not None:
            flapper.stop()
            if flapper.error is not None:
                warnings.warn(
                    f"flap_node on {target} stopped flapping early after {flapper.kills} "
                    f"kill(s): {type(flapper.error).__name__}: {flapper.error}",
                    FlapNodeWarning,
                    stacklevel=2,
                )
        if not ctx.backend.service_alive(ctx.state, target):
            ctx.backend.restart(ctx.state, target)
        ctx.wait_ready(target)
