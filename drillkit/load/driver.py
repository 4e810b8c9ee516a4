"""Drive Locust from drillkit's process: a child process that generates the load, and a
:class:`~drillkit.load.sink.RecordSink` that receives one record per request from it.

Locust is never imported here (it would monkey-patch this process with gevent); it runs as
``python -m locust -f drillkit/load/locustfile.py --headless ...`` in its own process group,
with its output in ``<run_dir>/locust.log`` and its final statistics in
``<run_dir>/locust_stats.json``.

Timeline of one :class:`LoadDriver`::

    start(plan)   sink up -> child started -> every load process connected to the sink
    ...           records()/since(i) give the requests completed so far
    wait(t)       the child ends by itself after plan.run_seconds (+ up to stop_timeout)
    stop()        SIGTERM to the group -> Locust lets in-flight requests finish (up to
                  timeout + 1 s), flushes its records and exits; SIGKILL after a grace
                  period; the sink drains and stops. Nothing of the child is left running.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from drillkit import procfs, safejson
from drillkit.errors import EnvironmentFailure, InputError
from drillkit.load.sink import MAX_CONNECTIONS, RecordSink, SinkStats
from drillkit.netprobe import free_port
from drillkit.observe.records import EventRecord, RequestRecord
from drillkit.state import STACK_ENV

__all__ = [
    "LOCUSTFILE",
    "LoadDriver",
    "LoadPlan",
    "LocustSummary",
    "WorkerHost",
    "check_locustfile",
    "live_group_members",
]

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
#: Loaded beside a team's own locustfile: drillkit's recording and pacing, no users.
ATTACH = Path(__file__).with_name("attach.py")
#: The locustfile of a scenario's ``load.requests``.
REQUESTS_LOCUSTFILE = Path(__file__).with_name("requests_user.py")
_CHECK_TIMEOUT = 60.0
#: Imports a locustfile as Locust does (its folder first on the path) and looks for a user
#: class; the last line of its error output is the one a person needs.
_CHECK_SCRIPT = """
import inspect, os, runpy, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
from locust import User
found = runpy.run_path(sys.argv[1], run_name="locustfile")
users = [
    v for v in found.values()
    if inspect.isclass(v) and issubclass(v, User) and v is not User
    and not getattr(v, "abstract", False)
]
if not users:
    sys.exit("no Locust user class (a subclass of locust.User) in it")
"""
LOG_NAME = "locust.log"
STATS_NAME = "locust_stats.json"

# Extra seconds, beyond Locust's own stop timeout, that stop() waits after SIGTERM before it
# SIGKILLs the group: Locust needs them to print its summary and flush the records.
_TERM_GRACE = 5.0
_LOG_TAIL_LINES = 20
_MAX_SPAWN_RATE = 100.0


@dataclass(frozen=True)
class WorkerHost:
    """Where drillkit starts ``drillkit worker`` processes that join a drill's master:
    ``netns`` (a network namespace of this machine, through ``ip netns exec``) or ``ssh`` (a
    host reached with ``ssh -o BatchMode=yes``, drillkit installed there)."""

    kind: str
    where: str
    workers: int = 1

    def prefix(self) -> list[str]:
        if self.kind == "netns":
            return ["ip", "netns", "exec", self.where]
        if self.kind == "ssh":
            return ["ssh", "-o", "BatchMode=yes", "-T", self.where, "--"]
        raise InputError(f"load.hosts: unknown kind {self.kind!r}")

    def program(self) -> list[str]:
        """How the worker program is run there: this interpreter on this machine, the
        `drillkit` on the PATH over ssh."""
        return ["drillkit"] if self.kind == "ssh" else [sys.executable, "-m", "drillkit"]


@dataclass(frozen=True)
class LoadPlan:
    """What to offer, to whom, for how long.

    ``rate`` is the total target in requests/s over all ``users``; each user is paced at
    ``rate / users``. Locust users are closed-loop: a user waiting on a slow request sends
    nothing else, so keep ``users >= rate * timeout`` if the offered rate must survive a
    stack that hangs. ``run_seconds`` is rounded up to whole seconds (Locust's resolution).
    ``n_users`` bounds the user ids asked for; ``cold_share`` of the requests ask for an id
    above it (a cold-start answer). ``emit_records=False`` runs the same user class without
    the per-request record listener (a reference for benchmarks).
    """

    host: str
    rate: float
    users: int
    run_seconds: float
    timeout: float
    n_users: int
    workers: int = 1
    k: int = 10
    seed: int = 0
    cold_share: float = 0.01
    skew: float = 0.0
    """Zipf exponent of which user asks: 0 every user alike, 1 a few users most of the time."""
    emit_records: bool = True
    event_share: float = 0.0
    """Share of the requests sent as click events (``POST /events``) instead; 0: none."""
    n_items: int = 1
    """Click events name an item in ``0..n_items-1``."""
    stack_id: str | None = None
    """The stack the load is for: the generator carries its mark (``STACK_ENV``), so that
    `drillkit heal` after a killed drill stops it with the stack."""
    locustfile: Path | None = None
    """A team's own locustfile, run unchanged beside drillkit's recording and paced at
    ``rate``; None: drillkit's own (the reference stack's requests, or ``requests``)."""
    requests: str | None = None
    """The scenario's ``load.requests`` as JSON: what drillkit's requests user sends."""
    bind: str = "127.0.0.1"
    """Where the master and the record sink listen for workers (an address of this host)."""
    port: int = 0
    """The drill's address for ``drillkit worker --master``: the record sink's port (0: any)."""
    hosts: tuple[WorkerHost, ...] = ()
    """Workers drillkit starts elsewhere (network namespaces, ssh hosts)."""
    expect_remote: int = 0
    """Workers started by hand (``drillkit worker``) that must join."""
    join_within: float = 60.0
    """How long every worker has to join before the drill gives up (exit 3)."""
    token: str | None = None
    """The token workers prove (a team's, for workers started by hand); None: a fresh one."""

    @property
    def distributed(self) -> bool:
        """Workers join a master over the network (``drillkit worker``), local ones too."""
        return bool(self.hosts) or self.expect_remote > 0

    @property
    def total_workers(self) -> int:
        """Every load process that must join: local, launched elsewhere, started by hand."""
        if not self.distributed:
            return self.workers
        return self.workers + sum(h.workers for h in self.hosts) + self.expect_remote

    @property
    def locustfiles(self) -> str:
        """What Locust's ``-f`` gets."""
        if self.locustfile is not None:
            return f"{ATTACH},{self.locustfile}"
        if self.requests is not None:
            return str(REQUESTS_LOCUSTFILE)
        return str(LOCUSTFILE)

    def validate(self) -> None:
        """Raise InputError naming the first field that is out of range."""
        checks: Sequence[tuple[bool, str]] = (
            (self.rate > 0, f"rate: expected > 0, got {self.rate}"),
            (self.users >= 1, f"users: expected >= 1, got {self.users}"),
            (self.run_seconds > 0, f"run_seconds: expected > 0, got {self.run_seconds}"),
            (self.timeout > 0, f"timeout: expected > 0, got {self.timeout}"),
            (self.n_users >= 1, f"n_users: expected >= 1, got {self.n_users}"),
            (
                self.workers >= (0 if self.distributed else 1),
                f"workers: expected >= {0 if self.distributed else 1}, got {self.workers}",
            ),
            (self.join_within > 0, f"join_within: expected > 0, got {self.join_within}"),
            (self.k >= 1, f"k: expected >= 1, got {self.k}"),
            (0 <= self.cold_share <= 1, f"cold_share: expected 0..1, got {self.cold_share}"),
            (0 <= self.skew <= 3, f"skew: expected 0..3, got {self.skew}"),
            (0 <= self.event_share < 1, f"event_share: expected 0..1, got {self.event_share}"),
            (self.n_items >= 1, f"n_items: expected >= 1, got {self.n_items}"),
            (
                self.users >= self.total_workers,
                f"users: expected >= workers ({self.total_workers})",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise InputError(f"load plan: {message}")

    @property
    def stop_timeout(self) -> int:
        """Seconds Locust waits for in-flight requests when it stops (whole seconds)."""
        return math.ceil(self.timeout) + 1


@dataclass(frozen=True)
class LocustSummary:
    """Locust's own totals for the run, from its ``--json-file`` (counted at completion)."""

    requests: int
    failures: int
    first: float  # epoch second of the first completion Locust counted
    last: float  # epoch time of the last completion
    per_second: dict[int, int]  # completions per wall-clock epoch second

    def rate_between(self, start: float, end: float) -> float:
        """Completions per second over the whole seconds inside [start, end)."""
        lo, hi = math.ceil(start), math.floor(end)
        if hi <= lo:
            return 0.0
        return sum(n for s, n in self.per_second.items() if lo <= s < hi) / (hi - lo)


class LoadDriver:
    """Runs one Locust child process and collects its per-request records.

    ``run_dir`` receives ``locust.log`` and ``locust_stats.json``.
    """

    def __init__(self, run_dir: Path | None = None, *, ready_timeout: float = 30.0) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else Path(".")
        self.ready_timeout = ready_timeout
        self.plan: LoadPlan | None = None
        self.started_at: float | None = None  # epoch time the load processes were ready
        self._sink = RecordSink()
        self._proc: subprocess.Popen[bytes] | None = None
        self._launched: list[tuple[str, subprocess.Popen[bytes]]] = []  # (name, launcher)
        self.master_port: int | None = None  # where Locust's master meets its workers
        self._log: IO[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def command(self, plan: LoadPlan) -> list[str]:
        """The Locust command line for ``plan`` (without the environment it needs)."""
        # Spawning at `rate` users/s staggers the users over one pacing period, so the
        # offered load is smooth from the start instead of arriving in bursts; above 100
        # users/s per process Locust warns that spawning itself misbehaves.
        spawn_rate = min(max(plan.rate, float(plan.users)), _MAX_SPAWN_RATE * plan.total_workers)
        cmd = [
            sys.executable, "-m", "locust",
            "-f", plan.locustfiles,
            "--headless",
            "--host", plan.host,
            "-u", str(plan.users),
            "-r", f"{spawn_rate:g}",
            "--run-time", f"{math.ceil(plan.run_seconds)}s",
            "--stop-timeout", str(plan.stop_timeout),
            "--only-summary",
            "--loglevel", "WARNING",
            "--exit-code-on-error", "0",
            # Locust appends ".json" to this name itself.
            "--json-file", str(self.run_dir / STATS_NAME.removesuffix(".json")),
        ]  # fmt: skip
        if plan.distributed:
            # Workers join from elsewhere (`drillkit worker`): a master that waits for them.
            port = str(self.master_port or free_port(plan.bind))
            self.master_port = int(port)
            cmd += [
                "--master",
                "--master-bind-host", plan.bind,
                "--master-bind-port", port,
                "--expect-workers", str(plan.total_workers),
                # A worker lost mid-drill: its users move to the others once it misses its
                # heartbeats (about 3 s), so the offered load comes back.
                "--enable-rebalancing",
                "--expect-workers-max-wait", f"{math.ceil(plan.join_within)}",
            ]  # fmt: skip
        elif plan.workers > 1:
            # Locust's master listens for its workers on every interface, port 5557, unless
            # told otherwise: on loopback, on a port of its own, nothing else can join.
            port = str(self.master_port or free_port())
            self.master_port = int(port)
            cmd += [
                "--processes", str(plan.workers),
                "--master-bind-host", "127.0.0.1",
                "--master-bind-port", port,
                "--master-host", "127.0.0.1",
                "--master-port", port,
            ]  # fmt: skip
        return cmd

    def environment(self, plan: LoadPlan, sink: str) -> dict[str, str]:
        """The child's environment: ours plus the DRILLKIT_* settings the locustfile reads."""
        # Not Locust's own settings (they would override the flags), nor a stack's mark
        # drillkit was started with: the generator carries only its own stack's.
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("LOCUST_") and k != STACK_ENV
        }
        package_root = str(LOCUSTFILE.parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env.update(
            DRILLKIT_SINK=sink,
            DRILLKIT_SINK_TOKEN=self._sink.token,
            DRILLKIT_RATE=repr(float(plan.rate)),
            DRILLKIT_USERS=str(plan.users),
            DRILLKIT_N_USERS=str(plan.n_users),
            DRILLKIT_K=str(plan.k),
            DRILLKIT_TIMEOUT=repr(float(plan.timeout)),
            DRILLKIT_SEED=str(plan.seed),
            DRILLKIT_COLD_SHARE=repr(float(plan.cold_share)),
            DRILLKIT_USER_SKEW=repr(float(plan.skew)),
            DRILLKIT_EMIT_RECORDS="1" if plan.emit_records else "0",
            DRILLKIT_EVENT_SHARE=repr(float(plan.event_share)),
            DRILLKIT_N_ITEMS=str(plan.n_items),
            DRILLKIT_PACE="1" if plan.locustfile is not None else "0",
            PYTHONUNBUFFERED="1",
        )
        if plan.requests is not None:
            # A file, not the variable itself: one environment string is at most 128 KiB.
            requests = (self.run_dir / "requests.json").resolve()
            requests.write_text(plan.requests, encoding="utf-8")
            env["DRILLKIT_REQUESTS_FILE"] = str(requests)
        if plan.stack_id is not None:
            env[STACK_ENV] = plan.stack_id
        return env

    def start(self, plan: LoadPlan, run_dir: Path | None = None) -> None:
        """Start the sink and the Locust child; return once every load process is connected.
        ``run_dir`` (default: the one given at construction) receives Locust's log and stats.

        Raises EnvironmentFailure, with the end of Locust's log, when the child exits or
        does not connect within ``ready_timeout`` (bad host, Locust not installed, ...).
        """
        if self._proc is not None:
            raise RuntimeError("LoadDriver.start() called twice")
        if run_dir is not None:
            self.run_dir = Path(run_dir)
        plan.validate()
        self.plan = plan
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / STATS_NAME).unlink()
        if plan.distributed:
            if plan.locustfile is not None:
                raise InputError("load.locustfile: workers elsewhere run drillkit's requests only")
            self.master_port = free_port(plan.bind)
            self._sink = RecordSink(
                plan.bind,
                port=plan.port,
                token=plan.token,
                max_connections=max(MAX_CONNECTIONS, 2 * plan.total_workers + 8),
            )
            # Before the sink listens: a worker that joins at once is told what to run.
            self._sink.offer(self.join_offer(plan))
        self._sink.start()
        self._log = (self.run_dir / LOG_NAME).open("wb")
        try:
            self._proc = subprocess.Popen(
                self.command(plan),
                cwd=self.run_dir,
                env=self.environment(plan, self._sink.address),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() signals all of it
            )
        except OSError as exc:
            self.stop()
            raise EnvironmentFailure(f"load generator: cannot start Locust: {exc}") from None
        try:
            if plan.distributed:
                self._launch(plan)
            self._wait_ready(plan)
        except BaseException:
            self.stop()
            raise
        self.started_at = time.time()

    def join_offer(self, plan: LoadPlan) -> dict[str, object]:
        """What a ``drillkit worker`` is told when it joins (see :mod:`drillkit.load.worker`)."""
        from drillkit.load.worker import SETTINGS

        env = self.environment(plan, self._sink.address)
        return {
            "master_port": self.master_port,
            "host": plan.host,
            "locustfile": "requests" if plan.requests is not None else "drillkit",
            "settings": {k: v for k, v in env.items() if k in SETTINGS},
            "requests": plan.requests,
            "stop_timeout": plan.stop_timeout,
        }

    def _launch(self, plan: LoadPlan) -> None:
        """Start the local workers and those of ``hosts`` (the sink offers them the plan)."""
        master = f"{plan.bind}:{self._sink.port}"
        local = WorkerHost("local", "", plan.workers)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "DRILLKIT_"))}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(LOCUSTFILE.parents[2]), env.get("PYTHONPATH")) if p
        )
        if plan.stack_id is not None:
            env[STACK_ENV] = plan.stack_id
        for host in (local, *plan.hosts):
            for i in range(1, host.workers + 1):
                name = f"{host.where or 'local'}-{i}"
                prefix = [] if host.kind == "local" else host.prefix()
                cmd = [
                    *prefix, *(host.program() if prefix else [sys.executable, "-m", "drillkit"]),
                    "worker", "--master", master, "--name", name, "--token-stdin",
                    "--wait", f"{plan.join_within:g}",
                ]  # fmt: skip
                log = (self.run_dir / f"worker-{_file_name(name)}.log").open("wb")
                try:
                    proc = subprocess.Popen(
                        cmd,
                        cwd=self.run_dir,
                        env=env,
                        stdin=subprocess.PIPE,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                    self._launched.append((name, proc))  # stop() finds it from here on
                except OSError as exc:
                    raise EnvironmentFailure(
                        f"load: cannot start worker {name} ({cmd[0]}): {exc.strerror or exc}"
                    ) from None
                finally:
                    log.close()
                assert proc.stdin is not None
                with contextlib.suppress(OSError):  # a launcher that died says why in its log
                    proc.stdin.write(self._sink.token.encode() + b"\n")
                    proc.stdin.close()

    def _check_launched(self) -> None:
        for name, proc in self._launched:
            rc = proc.poll()
            if rc is not None and rc != 0:
                raise EnvironmentFailure(
                    f"load: worker {name} exited with code {rc}: "
                    f"{_last_line(self.run_dir / f'worker-{_file_name(name)}.log')}"
                )

    def _wait_ready(self, plan: LoadPlan) -> None:
        assert self._proc is not None
        wait = plan.join_within if plan.distributed else self.ready_timeout
        deadline = time.monotonic() + wait
        while (stats := self._sink.stats()).ready < plan.total_workers:
            if plan.distributed:
                self._check_launched()
                if time.monotonic() > deadline:
                    joined = ", ".join(w.name for w in stats.workers) or "none"
                    raise EnvironmentFailure(
                        f"load: {stats.ready} of {plan.total_workers} workers joined within "
                        f"{wait:g} s (joined: {joined}); the drill's address "
                        f"{plan.bind}:{self._sink.port}"
                    )
            rc = self._proc.poll()
            if rc is not None:
                raise EnvironmentFailure(
                    f"load generator: Locust exited with code {rc} before it started; "
                    f"end of {self.log_path}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise EnvironmentFailure(
                    f"load generator: Locust did not start within {self.ready_timeout:g} s; "
                    f"end of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.02)

    @property
    def running(self) -> bool:
        """True while the Locust child is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's pid, which is also its process group id."""
        return self._proc.pid if self._proc is not None else None

    def wait(self, timeout: float) -> int:
        """Wait for the child to end by itself and return its exit code.

        Once it has ended, the records it flushed are all in :meth:`records`. Raises
        EnvironmentFailure if it is still running after ``timeout`` seconds (it keeps
        running: call :meth:`stop`).
        """
        if self._proc is None:
            raise RuntimeError("LoadDriver.wait() before start()")
        try:
            rc = self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise EnvironmentFailure(
                f"load generator: Locust still running after {timeout:g} s"
            ) from None
        self._sink.wait_closed(2.0)
        return rc

    def stop(self, grace: float | None = None) -> int | None:
        """Stop the child (SIGTERM to its group, SIGKILL after the grace period), then the
        sink. Returns the child's exit code (None if it never started). Idempotent.

        ``grace`` defaults to the plan's stop timeout plus a few seconds: enough for Locust
        to let in-flight requests finish and flush their records.
        """
        rc: int | None = None
        proc = self._proc
        if proc is not None or self._launched:
            rc = self._stop_processes(proc, grace)
        self._sink.stop()
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def _stop_processes(
        self, proc: subprocess.Popen[bytes] | None, grace: float | None
    ) -> int | None:
        rc: int | None = None
        if proc is not None:
            if grace is None:
                grace = (self.plan.stop_timeout if self.plan else 1) + _TERM_GRACE
            rc = proc.poll()
            if rc is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    rc = proc.wait(grace)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    rc = proc.wait()
            # Workers forked by `--processes` may outlive their master; none may survive.
            if live_group_members(proc.pid):
                _signal_group(proc.pid, signal.SIGTERM)
                if not _wait_group_gone(proc.pid, 2.0):
                    _signal_group(proc.pid, signal.SIGKILL)
                    _wait_group_gone(proc.pid, 2.0)
        # Workers that joined from elsewhere end with their master (it tells them to quit,
        # they let in-flight requests finish and flush their records); a launcher still
        # running after that is stopped.
        stop_timeout = self.plan.stop_timeout if self.plan else 1
        deadline = time.monotonic() + stop_timeout + _TERM_GRACE
        for _, launcher in self._launched:
            with contextlib.suppress(subprocess.TimeoutExpired):
                launcher.wait(max(0.0, deadline - time.monotonic()))
            if launcher.poll() is None:
                _signal_group(launcher.pid, signal.SIGTERM)
                try:
                    launcher.wait(_TERM_GRACE)
                except subprocess.TimeoutExpired:
                    _signal_group(launcher.pid, signal.SIGKILL)
                    launcher.wait()
            if live_group_members(launcher.pid):
                _signal_group(launcher.pid, signal.SIGKILL)
                _wait_group_gone(launcher.pid, 2.0)
        return rc

    def __enter__(self) -> LoadDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- results --------------------------------------------------------------------------

    def records(self) -> list[RequestRecord]:
        """Every record received so far (a snapshot)."""
        return self._sink.records()

    def since(self, index: int) -> tuple[list[RequestRecord], int]:
        """Records after the first ``index`` and the next index: a live view."""
        return self._sink.since(index)

    def events(self) -> list[EventRecord]:
        """Every click-event record received so far (a snapshot)."""
        return self._sink.events()

    @property
    def count(self) -> int:
        """How many records were received."""
        return self._sink.count

    def sink_stats(self) -> SinkStats:
        """The sink's counters (connections, trailers, records the generator dropped)."""
        return self._sink.stats()

    @property
    def records_complete(self) -> bool:
        """True once every load process closed its stream with a trailer and none of them
        dropped a record: :meth:`records` then holds every request Locust completed."""
        stats = self._sink.stats()
        workers = self.plan.total_workers if self.plan else 1
        return (
            stats.trailers == workers
            and stats.reported_dropped == 0
            and stats.reported_sent == stats.records + stats.events
        )

    @property
    def log_path(self) -> Path:
        """Where Locust's output goes."""
        return self.run_dir / LOG_NAME

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of Locust's log."""
        if self._log is not None:
            with contextlib.suppress(OSError, ValueError):
                self._log.flush()
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def locust_summary(self) -> LocustSummary | None:
        """Locust's own totals, once the child has exited (None when it wrote none)."""
        try:
            entries: list[dict[str, Any]] = safejson.loads((self.run_dir / STATS_NAME).read_text())
        except (OSError, ValueError):
            return None
        per_second: dict[int, int] = {}
        requests = failures = 0
        first, last = math.inf, 0.0
        for entry in entries:
            requests += int(entry.get("num_requests", 0))
            failures += int(entry.get("num_failures", 0))
            for second, n in (entry.get("num_reqs_per_sec") or {}).items():
                per_second[int(second)] = per_second.get(int(second), 0) + int(n)
            if entry.get("last_request_timestamp"):
                last = max(last, float(entry["last_request_timestamp"]))
        if per_second:
            first = float(min(per_second))
        return LocustSummary(requests, failures, first if per_second else 0.0, last, per_second)

    def saturated(self, window_start: float, window_end: float, target_rate: float) -> bool:
        """True when completions per second in [window_start, window_end) (epoch seconds,
        a request counted when it completes) fell below 90% of ``target_rate``.

        A saturated generator makes the drill invalid (exit 3), not the stack failed. A
        stack that hangs also lowers completions when users are too few to cover the
        timeout (see :class:`LoadPlan`), so size ``users`` before trusting this.
        """
        span = window_end - window_start
        if span <= 0 or target_rate <= 0:
            return False
        done = sum(
            1
            for r in self._sink.records()
            if window_start <= r.sent_at + r.latency_ms / 1000.0 < window_end
        )
        return done / span < 0.9 * target_rate


def check_locustfile(path: Path) -> None:
    """Load a team's locustfile the way Locust will, in a throwaway process, before anything
    starts: InputError (exit 2) with the last line of the Python error when it fails to
    import or defines no user class."""
    if not path.is_file():
        raise InputError(f"load.locustfile: {path} is not a file")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHECK_SCRIPT, str(path)],
            cwd=path.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_CHECK_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InputError(
            f"load.locustfile: {path} did not load within {_CHECK_TIMEOUT:.0f} s"
        ) from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines()]
        lines = [line for line in lines if line]
        raise InputError(
            f"load.locustfile: {path} fails to load: {lines[-1] if lines else 'no output'}"
        )


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _last_line(path: Path) -> str:
    try:
        lines = [x.strip() for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(no output)"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def live_group_members(pgid: int) -> list[int]:
    """Pids of the processes in group ``pgid`` that are still running."""
    return procfs.group_members(pgid)


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while live_group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
