"""``load_spike``: extra traffic on top of the drill's load, for the fault's duration.

A separate generator process (:mod:`drillkit.load.spike`) offers ``rate`` more requests per
second to the gateway in an open loop. The drill's own load keeps being recorded, so the
report shows what the spike did to steady users (shed or degraded answers, latency, errors)
and how fast the stack serves normally once it ends. The gateway's shedding is the detection
signal (``ttd``): the watcher sees its first shed answer.

The generator runs on the host against the gateway's published address, for either backend.
It is found again by a random tag in its arguments, which the journal holds before the
process starts, so ``drillkit heal`` stops it after a crash. It also stops by itself after an
hour, or 5 s after the gateway starts refusing connections (the stack went away).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from drillkit import procfs, safejson
from drillkit.errors import EnvironmentFailure
from drillkit.faults.base import ROLE_GATEWAY, ROLE_SERVICE, FaultKind, UndoModel, UndoRecord
from drillkit.faults.context import FaultContext
from drillkit.faults.params import LoadSpikeParams
from drillkit.journal import Journal
from drillkit.state import STACK_ENV

_MODULE = "drillkit.load.spike"
MAX_SECONDS = 3600.0
_STOP_WAIT = 5.0
_START_WAIT = 10.0


def _pids_tagged(tag: str) -> list[int]:
    """Live spike generators carrying ``--tag <tag>``: exactly ``python -m
    drillkit.load.spike ...`` (nothing else that happens to quote the tag in its arguments)."""
    found = []
    for pid in procfs.pids():
        argv = procfs.argv(pid) or []
        if (
            len(argv) > 3
            and argv[1:3] == [b"-m", _MODULE.encode()]
            and any(a == b"--tag" and b == tag.encode() for a, b in itertools.pairwise(argv))
            and procfs.live(pid)
        ):
            found.append(pid)
    return found


class _Undo(UndoModel):
    tag: str = Field(pattern=r"^[0-9a-f]{16}$")
    log: str = ""


def _stop(tag: str) -> None:
    for sig, wait in ((signal.SIGTERM, _STOP_WAIT), (signal.SIGKILL, 2.0)):
        pids = _pids_tagged(tag)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _pids_tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.05)
    if _pids_tagged(tag):
        raise EnvironmentFailure(f"the load spike generator (tag {tag}) does not stop")


class LoadSpike(FaultKind[LoadSpikeParams]):
    name: ClassVar[str] = "load_spike"
    Params = LoadSpikeParams
    description: ClassVar[str] = "extra requests/s on top of the drill's load (an open loop)"
    # The reference stack's gateway, or the service of a Compose project the load goes to.
    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_GATEWAY, ROLE_SERVICE})
    # The generator runs on the host, not in the stack: after a crash it is stopped even
    # when the stack has gone (on its own it would go 5 s after the gateway stops answering).
    outlives_stack: ClassVar[bool] = True

    def apply(self, ctx: FaultContext, target: str, params: LoadSpikeParams) -> UndoRecord:
        url = ctx.service_url(target)
        tag = secrets.token_hex(8)
        log = Path(ctx.state.run_dir) / f"load-spike-{ctx.fault_id}-{tag}.log"
        record = ctx.begin(self.name, target, {"tag": tag, "log": str(log), "rate": params.rate})
        command = [
            sys.executable, "-m", _MODULE,
            "--url", url,
            "--rate", f"{params.rate:g}",
            "--connections", str(params.connections),
            "--max-seconds", f"{MAX_SECONDS:g}",
            "--tag", tag,
            "--stack-id", ctx.state.id,
        ]  # fmt: skip
        if params.path is not None:
            command += ["--path", params.path]
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            # Its own session: a Ctrl-C at the terminal reaches drillkit, which heals the fault;
            # the generator must not die half-way on its own.
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env={**os.environ, STACK_ENV: ctx.state.id},  # the stack's: down stops it too
            )
        # Until the child has exec'd, /proc shows the parent's arguments, not the tag: wait for
        # it, so that a heal right after this finds the generator.
        deadline = time.monotonic() + _START_WAIT
        while not _pids_tagged(tag) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return ctx.amend(record, pid=process.pid)

    def check_applied(
        self, ctx: FaultContext, target: str, params: LoadSpikeParams, record: UndoRecord
    ) -> str:
        # Long enough for the interpreter to start and fail on a bad argument or address.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            undo = _Undo.parse(record)
            if not _pids_tagged(undo.tag):
                tail = _tail(Path(undo.log))
                raise EnvironmentFailure(f"the load spike generator exited at once: {tail}")
            time.sleep(0.1)
        offered = (
            f"load spike pid {record.get('pid')}: {params.rate:g} extra requests/s offered "
            f"to {target} ({ctx.service_url(target)})"
        )
        progress = _progress(Path(_Undo.parse(record).log))
        if progress is None:
            return f"{offered}; no answer counted yet"
        return (
            f"{offered}; in its first {progress['seconds']:.1f} s: {progress['sent']} sent, "
            f"{progress['answered']} answered ({progress['degraded']} degraded), "
            f"{progress['errors']} errors"
        )

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        _stop(_Undo.parse(record).tag)

    def heal_without_stack(self, journal: Journal, record: UndoRecord) -> None:
        _stop(_Undo.parse(record).tag)


_COUNTS = ("sent", "answered", "degraded", "errors")


def _progress(log: Path) -> dict[str, float] | None:
    """The generator's latest line of totals in its log, or None (the log is only read, its
    end at most, and a line that is not the generator's form is skipped)."""
    try:
        with log.open("rb") as handle:
            handle.seek(max(0, log.stat().st_size - 4096))
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            item = safejson.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if (
            isinstance(item, dict)
            and all(type(item.get(k)) is int and item[k] >= 0 for k in _COUNTS)
            and type(item.get("seconds")) in (int, float)
            and item["seconds"] >= 0
        ):
            return {k: item[k] for k in (*_COUNTS, "seconds")}
    return None


def _tail(log: Path, limit: int = 300) -> str:
    try:
        text = log.read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return text[-limit:].replace("\n", " | ") or "(empty log)"
