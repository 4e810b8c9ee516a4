"""Load-generator ceiling: the highest request rate drillkit's load driver sustains against a
fixed trivial endpoint, next to bare Locust and to wrk (issue 6), and how that ceiling moves
with the number of load processes and with where they run. Targets: drillkit >= 90% of bare
Locust; two workers in network namespaces >= 90% of two local ones.

The bench has two parts (``--only`` picks one); each run is unthrottled for a fixed window
after a warmup, in rounds whose order rotates from round to round.

**Reference** (issue 6): three generators hit one endpoint:

- **drillkit**: the path ``drillkit run`` takes: :class:`drillkit.load.LoadDriver` starts
  Locust on ``drillkit/load/locustfile.py`` and every request is streamed as a record to the
  :class:`~drillkit.load.RecordSink` in this process. The plan offers 1,000,000 req/s, far
  above what it can do, so its pacing never waits.
- **bare locust**: the same Locust command line (``LoadDriver.command()``: users, spawn rate,
  processes, stop timeout, log level) with ``-f`` pointing at a minimal FastHttpUser
  locustfile: no wait, the same timeouts and request mix, no listener, no record streaming.
- **wrk**: ``wrk -t <processes> -c <users>``, the same threads and connections: the ceiling.

Each round runs drillkit alone, bare Locust alone, wrk alone, and a **paired** run: drillkit
and bare Locust at the same time on the same CPU. Alone, each gets a whole core and the
table shows the rates it sustains; but on a shared machine the speed of a core drifts by
tens of percent from one run to the next, more than the difference to be measured. In the
paired run both see the same instants, so the drift cancels: their CPU per completed request
(drillkit's sink included) gives the ratio the verdict uses; it is what the ratio of rates
alone would be on a steady machine.

**Workers**: drillkit's driver, unpinned (the point is to use every core), with its load
processes placed three ways:

- **1 local**: one Locust process (``workers=1``);
- **2 local**: ``workers=2``, Locust's ``--processes 2`` under a master on 127.0.0.1;
- **2 netns** (with ``--netns``): distributed mode, ``workers=0`` and two
  ``WorkerHost("netns", ...)``: drillkit starts a ``drillkit worker`` in each of two network
  namespaces; they join the master and stream their records to the sink, both listening on
  the bridge's address.

It prints each placement's ceiling (completions/s), **2 local / 1 local** (on a 2-core
machine about 2 minus the share of the CPU the endpoint and the sink take; what is measured
is printed) and **2 netns / 2 local** by rate, the figure the target is about, and by CPU per
request (the generators', the sink's and the endpoint's), which the machine's drift does not
move. With ``--netns`` the endpoint listens on the bridge's address for every run, the local
ones included, so where the workers run is the only difference. Where other work shares the
machine and the kernel schedules by session (``kernel.sched_autogroup_enabled``, printed),
each session gets one fair share of the CPU: Locust's ``--processes`` workers share their
master's session, each ``drillkit worker`` has a session of its own, so there 2 netns gets
more CPU than 2 local and 2 local little more than 1 local; on an idle machine it does not
matter. The CPU-per-request ratio is not moved by it.

**Records**, for every drillkit run of both parts: the records of every load process must
arrive. The sink's count must equal the sum of what the processes say they sent (the ``sent``
of their trailers, ``SinkStats.reported_sent``), one trailer per process, none dropped, none
lost, and each process's own count must match: the records and events the sink received on
each worker's connection (``SinkStats.workers[i]``) against what that worker's trailer says it
sent. Printed per run; the bench exits 1 when a run fails it.

``--netns`` (root, iproute2) sets up its own network: a bridge ``dkbench0`` at 10.213.9.1/24
and namespaces ``dkb-a`` and ``dkb-b`` (10.213.9.2 and .3), each joined to it by a veth pair,
and removes them on the way out (also on Ctrl-C and SIGTERM). Without root, or without
``ip netns``, or when those names are taken, it refuses with exit code 3 before anything runs.

The endpoint is ``bench/load_pipeline.py``'s asyncio server (uvloop when installed, a fixed
small JSON answer with the headers drillkit reads), in its own process.

Counting: completions per whole epoch second in a window of ``--seconds`` after ``--warmup``
seconds. drillkit: the records its sink received for requests completed in the window; bare
Locust: its own per-second completions (``--json-file``); wrk: its Requests/sec over its run
(it has no ramp to skip). Failures are counted over whole runs. CPU figures come from /proc
over the same window; a generator's CPU is that of the process groups working in its run
folder (Locust, its ``--processes`` children, the ``drillkit worker`` processes it launched).

Pinning of the reference part (Linux, >= 2 CPUs, unless ``--no-pin``): the endpoint on the
first CPU, the generators on the others, and this process with them: drillkit's record sink
is part of what its driver costs. The workers part pins nothing.

Usage::

    python bench/load.py [--seconds S] [--warmup W] [--rounds R] [--users U] [--workers P]
                         [--no-pin] [--netns] [--only reference|workers] [--quick]

With the defaults (3 rounds x 5 s) the whole bench takes about 3 minutes (3.5 with
``--netns``), ``--quick`` about 1.5. Progress goes to stderr; the tables and one-line
verdicts to stdout. Exit code 1 when a drillkit run lost records, 3 when ``--netns`` cannot
run here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import load_pipeline
from load_pipeline import _group_cpu_seconds, _sleep_until, serve

from drillkit import procfs
from drillkit.load import LoadDriver, LoadPlan
from drillkit.load.driver import WorkerHost, live_group_members
from drillkit.load.sink import SinkStats

TARGET = 0.90
NETNS_TARGET = 0.90  # two workers in namespaces against two local ones, by rate
OFFERED = 1_000_000.0  # req/s asked of drillkit's pacing: unreachable, so it never waits
TIMEOUT = 2.0  # request timeout (s), the bundled scenarios' value, for every generator
PATH = "/recommend?user_id=1&k=10"  # wrk's request
# drillkit's users ask for this many distinct user ids; bare Locust asks for the same mix,
# since Locust's URL handling caches only the last 128 URLs it parsed (urllib's lru_cache):
# one fixed URL would spare bare Locust about 5% of its CPU that any drill pays.
N_USERS = 1000
ALONE = ("drillkit", "bare locust", "wrk")
STEPS = (*ALONE, "paired")
LOOPBACK = "127.0.0.1"
# --netns: the bench's own network, apart from any a drill or a test sets up.
BRIDGE = "dkbench0"
NAMESPACES = ("dkb-a", "dkb-b")
SUBNET = "10.213.9"
BRIDGE_ADDR = f"{SUBNET}.1"
EXIT_RECORDS = 1  # a drillkit run whose records did not all arrive
EXIT_ENVIRONMENT = 3  # drillkit's code for "the environment cannot run this" (--netns)

_BARE_LOCUSTFILE = f"""\
import random
from pathlib import Path

from locust import FastHttpUser, constant, events, task


@events.spawning_complete.add_listener
def _ready(**_):
    Path("ready").touch()  # tells the bench when the users are all running


class BareUser(FastHttpUser):
    wait_time = constant(0)
    network_timeout = connection_timeout = {TIMEOUT!r}

    @task
    def get(self):
        user = random.randrange({N_USERS})
        self.client.get(f"/recommend?user_id={{user}}&k=10", name="/recommend")
"""


@dataclass(frozen=True)
class Placement:
    """Where a drillkit run's load processes run."""

    name: str
    workers: int  # local ones: Locust's (``--processes`` when > 1), distributed: `drillkit worker`s
    hosts: tuple[WorkerHost, ...] = ()
    bind: str = LOOPBACK  # where the master and the sink listen for workers from elsewhere


ONE_LOCAL = Placement("1 local", 1)
TWO_LOCAL = Placement("2 local", 2)
TWO_NETNS = Placement("2 netns", 0, tuple(WorkerHost("netns", ns) for ns in NAMESPACES),
                      BRIDGE_ADDR)  # fmt: skip


@dataclass(frozen=True)
class Config:
    seconds: int
    warmup: int
    users: int
    workers: int

    def plan(self, host: str, spare: int, placement: Placement | None = None) -> LoadPlan:
        # ``spare`` seconds past the window: it starts at the next whole second after the
        # last generator is ready, and a paired run's generators get ready a while apart.
        where = placement or Placement(f"{self.workers} local", self.workers)
        return LoadPlan(host=host, rate=OFFERED, users=self.users, workers=where.workers,
                        hosts=where.hosts, bind=where.bind,
                        run_seconds=self.warmup + self.seconds + spare, timeout=TIMEOUT,
                        n_users=N_USERS)  # fmt: skip


@dataclass(frozen=True)
class RecordCheck:
    """Did the records of every load process of a drillkit run arrive? The sink's count
    against what the processes say they sent (their trailers), in all and one by one (each
    worker's connection against its own trailer).
    """

    expected: int  # the plan's load processes
    stats: SinkStats

    def problems(self) -> list[str]:
        s = self.stats
        found: list[str] = []
        if len(s.workers) != self.expected:
            found.append(f"{len(s.workers)} of {self.expected} processes said hello")
        if s.trailers != self.expected:
            found.append(f"{s.trailers} of {self.expected} trailers")
        if s.records + s.events != s.reported_sent:
            found.append(f"received {s.records + s.events:,} != sent {s.reported_sent:,}")
        for w in s.workers:
            if w.sent != w.records + w.events:
                found.append(f"{w.name}: received {w.records + w.events:,} != sent {w.sent}")
        if s.reported_dropped:
            found.append(f"{s.reported_dropped:,} dropped")
        if s.malformed:
            found.append(f"{s.malformed:,} malformed lines")
        lost = [w.name for w in s.workers if w.lost_at is not None or not w.finished]
        if lost:
            found.append(f"lost: {', '.join(lost)}")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems()

    def line(self) -> str:
        s = self.stats
        sent = " + ".join(f"{w.sent:,}" for w in s.workers if w.sent is not None) or "no trailer"
        each = ", ".join(f"{w.name}@{w.peer} {w.records:,}" for w in s.workers)
        problems = self.problems()
        verdict = "ok" if not problems else "FAILED: " + "; ".join(problems)
        sign = "=" if s.records + s.events == s.reported_sent else "!="
        return (
            f"sink {s.records + s.events:,} {sign} sent {s.reported_sent:,} ({sent}); "
            f"received per process: {each}: {verdict}"
        )


@dataclass
class Sample:
    tool: str
    rps: float
    failures: int
    cpu_us: float = math.nan  # generator CPU per completed request
    core: float = math.nan  # share of one core the generator processes used
    endpoint_core: float = math.nan  # share of one core the endpoint used
    sink_us: float = math.nan  # this process's CPU (drillkit's record sink) per request
    sink_core: float = math.nan  # share of one core this process used
    note: str = ""
    records: RecordCheck | None = None  # drillkit runs: did every record arrive?
    endpoint_us: float = math.nan  # the endpoint's CPU per completed request

    def fill_cpu(self, gen: float, endpoint: float, sink: float | None, seconds: float) -> None:
        done = self.rps * seconds
        self.core, self.endpoint_core = gen / seconds, endpoint / seconds
        if sink is not None:
            self.sink_core = sink / seconds
        if done:
            self.cpu_us = 1e6 * gen / done
            self.endpoint_us = 1e6 * endpoint / done
            if sink is not None:
                self.sink_us = 1e6 * sink / done

    @property
    def total_us(self) -> float:
        """CPU per request of everything a run costs: generators, sink, endpoint."""
        return self.cpu_us + self.sink_us + self.endpoint_us


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def refuse(message: str) -> NoReturn:
    """An environment that cannot run what was asked: one line, exit code 3."""
    print(f"bench/load.py: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_ENVIRONMENT)


# -- processes ------------------------------------------------------------------------------


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group of ``proc`` (its own session), SIGKILL whatever outlives it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + grace
    while live_group_members(proc.pid) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.05)


def _groups_in(folder: Path) -> list[int]:
    """The process groups of the processes working in ``folder``: a generator's Locust, its
    ``--processes`` children and the ``drillkit worker`` processes its driver launched (each
    in a session of its own, its Locust worker with it)."""
    want = str(folder.resolve())
    groups: set[int] = set()
    for pid in procfs.pids():
        try:
            if os.readlink(f"/proc/{pid}/cwd") != want:
                continue
        except OSError:
            continue
        found = procfs.stat(pid)
        if found is not None:
            groups.add(found.pgrp)
    return sorted(groups)


def _serve_on(bind: str) -> None:
    """``load_pipeline.serve``, listening on ``bind``.

    That server listens on 127.0.0.1, which workers in other network namespaces cannot
    reach; rather than a second copy of the endpoint, its ``asyncio`` is handed a loop whose
    ``create_server`` listens on ``bind`` (this process runs nothing else).
    """
    if bind != LOOPBACK:

        class Loop:
            def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
                self._loop = loop

            def create_server(self, factory: Any, _host: str, port: int) -> Any:
                return self._loop.create_server(factory, bind, port)

        shim = types.ModuleType("asyncio")
        shim.__dict__.update(vars(asyncio))
        shim.__dict__["get_running_loop"] = lambda: Loop(asyncio.get_running_loop())
        vars(load_pipeline)["asyncio"] = shim
    serve(0)


@contextlib.contextmanager
def endpoint(cpus: set[int] | None, bind: str = LOOPBACK) -> Iterator[tuple[str, int]]:
    """The trivial endpoint in its own session, listening on ``bind``; yields its URL and
    pid."""
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--bind", bind],
                            stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        if cpus:
            os.sched_setaffinity(proc.pid, cpus)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise SystemExit(f"endpoint did not start: {line!r}")
        yield f"http://{bind}:{int(line.split()[1])}", proc.pid
    finally:
        _stop_group(proc)


def _notes(summary_last: int, hi: int, log: str) -> list[str]:
    notes = []
    if summary_last < hi:
        notes.append("window cut short")
    if "CPU usage" in log:
        notes.append("Locust CPU warning")
    return notes


# -- network namespaces (--netns) -----------------------------------------------------------


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=False)  # fmt: skip


def _last(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def check_netns() -> None:
    """Refuse (exit 3) unless this process can make the bench's bridge and namespaces."""
    if os.geteuid() != 0:
        refuse("--netns needs root (it creates a bridge and network namespaces); run it as "
               "root, or without --netns")  # fmt: skip
    if shutil.which("ip") is None:
        refuse("--netns needs iproute2's `ip` (apt-get install -y iproute2)")
    listed = _ip("netns", "list")
    if listed.returncode != 0:
        refuse(f"--netns: `ip netns` is unavailable here: {_last(listed.stderr)}")
    existing = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    links = [BRIDGE, *(f"{ns}-h" for ns in NAMESPACES)]
    taken = [ns for ns in NAMESPACES if ns in existing]
    taken += [link for link in links if Path("/sys/class/net", link).exists()]
    if taken:
        refuse(f"--netns: {', '.join(taken)} already there (another run of this bench, or one "
               f"that was killed: ip netns del <name>; ip link del {BRIDGE})")  # fmt: skip
    used = _ip("-o", "addr", "show", "to", f"{SUBNET}.0/24")
    if used.stdout.strip():
        refuse(f"--netns: {SUBNET}.0/24 is in use here: {_last(used.stdout)}")


@contextlib.contextmanager
def bench_network() -> Iterator[None]:
    """The bridge at BRIDGE_ADDR and NAMESPACES joined to it, removed on the way out (with
    anything still running in them: only this bench starts processes there)."""
    made: list[tuple[str, str]] = []  # ("netns" | "link", name), in the order made

    def do(*args: str) -> None:
        done = _ip(*args)
        if done.returncode != 0:
            raise OSError(f"ip {' '.join(args)}: {_last(done.stderr)}")

    try:
        try:
            do("link", "add", BRIDGE, "type", "bridge")
            made.append(("link", BRIDGE))
            do("addr", "add", f"{BRIDGE_ADDR}/24", "dev", BRIDGE)
            do("link", "set", BRIDGE, "up")
            for i, ns in enumerate(NAMESPACES, start=2):
                do("netns", "add", ns)
                made.append(("netns", ns))
                do("link", "add", f"{ns}-h", "type", "veth", "peer", "name", "eth0", "netns", ns)
                made.append(("link", f"{ns}-h"))
                do("link", "set", f"{ns}-h", "master", BRIDGE, "up")
                do("-n", ns, "addr", "add", f"{SUBNET}.{i}/24", "dev", "eth0")
                do("-n", ns, "link", "set", "eth0", "up")
                do("-n", ns, "link", "set", "lo", "up")
        except OSError as exc:
            refuse(f"--netns: cannot set up the bench's network: {exc}")
        progress(
            f"network: bridge {BRIDGE} {BRIDGE_ADDR}/24, namespaces "
            + ", ".join(f"{ns} {SUBNET}.{i}" for i, ns in enumerate(NAMESPACES, 2))
        )
        yield
    finally:
        _tear_down(made)


def _tear_down(made: list[tuple[str, str]]) -> None:
    problems = []
    for kind, name in reversed(made):
        if kind == "netns":
            left = [int(p) for p in _ip("netns", "pids", name).stdout.split() if p.isdigit()]
            if left:
                problems.append(f"processes left in {name}: {left} (killed)")
                for pid in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            done = _ip("netns", "del", name)
        elif Path("/sys/class/net", name).exists():  # a veth goes with its namespace
            done = _ip("link", "del", name)
        else:
            continue
        if done.returncode != 0:
            problems.append(f"ip {kind} del {name}: {_last(done.stderr)}")
    for problem in problems:
        progress(f"network teardown: {problem}")
    if made and not problems:
        progress(f"network: {BRIDGE} and {', '.join(NAMESPACES)} removed")


# -- the Locust generators ------------------------------------------------------------------


class DrillkitRun:
    """drillkit's driver: its locustfile, the record stream and the sink."""

    tool = "drillkit"

    def __init__(self, host: str, cfg: Config, run_dir: Path, spare: int,
                 placement: Placement | None = None) -> None:  # fmt: skip
        self.cfg = cfg
        self.plan = cfg.plan(host, spare, placement)
        self.run_dir = run_dir
        self.driver = LoadDriver(run_dir)

    def launch(self) -> None:
        self.driver.start(self.plan)  # returns once every load process reached the sink

    def wait_ready(self) -> None:
        pass

    def finish(self, lo: int, hi: int) -> Sample:
        driver = self.driver
        driver.wait(self.plan.run_seconds + self.plan.stop_timeout + 30)
        driver.stop()  # the workers that joined from elsewhere end, their records drained
        summary = driver.locust_summary()
        if summary is None:
            raise SystemExit(f"drillkit: Locust wrote no statistics; log:\n{driver.log_tail()}")
        done = sum(1 for r in driver.records() if lo <= r.sent_at + r.latency_ms / 1000.0 < hi)
        sample = Sample(self.tool, done / self.cfg.seconds, summary.failures)
        sample.records = RecordCheck(self.plan.total_workers, driver.sink_stats())
        notes = _notes(max(summary.per_second, default=0), hi, driver.log_tail(500))
        if not sample.records.ok:
            notes.append("records incomplete")
        counted = summary.rate_between(lo, hi)
        if abs(counted - sample.rps) > 0.01 * counted:
            notes.append(f"Locust counted {counted:.0f}/s")
        sample.note = "; ".join(notes)
        return sample

    def close(self) -> None:
        self.driver.stop()


class BareRun:
    """Bare Locust: drillkit's command line with a minimal locustfile."""

    tool = "bare locust"

    def __init__(self, host: str, cfg: Config, run_dir: Path, spare: int) -> None:
        self.cfg = cfg
        self.plan = cfg.plan(host, spare)
        self.run_dir = run_dir
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        locustfile = self.run_dir / "bare.py"
        locustfile.write_text(_BARE_LOCUSTFILE)
        cmd = LoadDriver(self.run_dir).command(self.plan)
        cmd[cmd.index("-f") + 1] = str(locustfile)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "DRILLKIT_"))}
        with (self.run_dir / "locust.log").open("wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=self.run_dir, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip

    def _log(self) -> str:
        return (self.run_dir / "locust.log").read_text(errors="replace")

    def wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while not (self.run_dir / "ready").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bare locust did not start; log:\n{self._log()[-2000:]}")
            time.sleep(0.02)

    def finish(self, lo: int, hi: int) -> Sample:
        assert self.proc is not None
        self.proc.wait(self.plan.run_seconds + self.plan.stop_timeout + 30)
        summary = LoadDriver(self.run_dir).locust_summary()  # drillkit's reader of --json-file
        if summary is None:
            raise SystemExit(f"bare locust wrote no statistics; log:\n{self._log()[-2000:]}")
        sample = Sample(self.tool, summary.rate_between(lo, hi), summary.failures)
        sample.note = "; ".join(_notes(max(summary.per_second, default=0), hi, self._log()))
        return sample

    def close(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc)


Generator = Callable[[str, Config, Path, int], DrillkitRun | BareRun]


def run_locust(kinds: Sequence[Generator], host: str, server: int, cfg: Config) -> list[Sample]:
    """Run the given generators at the same time over one window; a Sample each."""
    with contextlib.ExitStack() as stack:
        runs: list[DrillkitRun | BareRun] = []
        for kind in kinds:
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dk-load-")))
            run = kind(host, cfg, run_dir, 2 if len(kinds) == 1 else 5)
            stack.callback(run.close)
            runs.append(run)
        for run in runs:
            run.launch()
        for run in runs:
            run.wait_ready()
        lo = math.ceil(time.time()) + cfg.warmup
        hi = lo + cfg.seconds
        groups = [_groups_in(run.run_dir) for run in runs]
        _sleep_until(lo)
        gen = [sum(map(_group_cpu_seconds, g)) for g in groups]
        srv, sink = _group_cpu_seconds(server), time.process_time()
        _sleep_until(hi)
        gen = [sum(map(_group_cpu_seconds, g)) - c for g, c in zip(groups, gen, strict=True)]
        srv, sink = _group_cpu_seconds(server) - srv, time.process_time() - sink
        samples = []
        for run, cpu in zip(runs, gen, strict=True):
            sample = run.finish(lo, hi)
            sample.fill_cpu(max(cpu, 0.0), srv, sink if run.tool == "drillkit" else None,
                            cfg.seconds)  # fmt: skip
            samples.append(sample)
        return samples


# -- wrk ------------------------------------------------------------------------------------

_WRK_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def run_wrk(host: str, server: int, cfg: Config) -> Sample:
    wrk = shutil.which("wrk")
    if wrk is None:
        return Sample("wrk", math.nan, 0, note="not installed (apt-get install -y wrk)")
    cmd = [wrk, "-t", str(cfg.workers), "-c", str(max(cfg.users, cfg.workers)),
           "-d", f"{cfg.seconds}s", "--timeout", f"{TIMEOUT:g}s", host + PATH]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    srv = _group_cpu_seconds(server)
    began = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=cfg.seconds + 30)
    finally:
        _stop_group(proc)
    took = time.monotonic() - began
    srv = _group_cpu_seconds(server) - srv
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = out.decode(errors="replace")
    rate = _WRK_RATE.search(text)
    if proc.returncode != 0 or rate is None:
        raise SystemExit(f"wrk failed (exit {proc.returncode}):\n{text}")
    failures = sum(int(n) for m in (_WRK_NON2XX.search(text), _WRK_SOCKET.search(text))
                   if m for n in m.groups())  # fmt: skip
    sample = Sample("wrk", float(rate.group(1)), failures)
    gen = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    sample.fill_cpu(gen, srv, None, took)
    if sample.endpoint_core >= 0.9:
        sample.note = "endpoint-bound"
    return sample


# -- report ---------------------------------------------------------------------------------


def _num(value: float, digits: int = 0, width: int = 8) -> str:
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width},.{digits}f}"


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def _cpu_ratio(drillkit: Sample, bare: Sample) -> float:
    """Bare Locust's CPU per request over drillkit's, its sink's included."""
    return _ratio(bare.cpu_us, drillkit.cpu_us + drillkit.sink_us)


def report(alone: dict[str, list[Sample]], paired: list[tuple[Sample, Sample]], cfg: Config,
           pinning: str, loads: tuple[float, float]) -> float:  # fmt: skip
    """Print the table; return the verdict's ratio (paired, by CPU per request)."""
    procs = f"{cfg.workers} process" + ("es" if cfg.workers > 1 else "")
    print(
        f"load generators against a trivial endpoint: {len(paired)} rounds x {cfg.seconds} s "
        f"(after {cfg.warmup} s warmup), {cfg.users} users / connections, {procs}"
    )
    print(f"{pinning}; load average (1 min) {loads[0]:.2f} at start, {loads[1]:.2f} at end")
    print()
    header = (
        f"{'alone':<12} {'req/s':>8} {'min':>8} {'max':>8} {'spread':>7} "
        f"{'failures':>8} {'CPU/req':>8} {'gen core':>8} {'endpoint':>8} {'sink/req':>8}"
    )
    print(header)
    print("-" * len(header))
    for tool in ALONE:
        runs = alone[tool]
        rates = [s.rps for s in runs if math.isfinite(s.rps)]
        med = _median(rates)
        lo, hi = (min(rates), max(rates)) if rates else (math.nan, math.nan)
        notes = sorted({s.note for s in runs if s.note})
        print(
            f"{tool:<12} {_num(med)} {_num(lo)} {_num(hi)} {_num(100 * (hi - lo) / med, 1, 6)}% "
            f"{sum(s.failures for s in runs):>8} "
            f"{_num(_median([s.cpu_us for s in runs]), 0, 6)}us "
            f"{_num(100 * _median([s.core for s in runs]), 0, 7)}% "
            f"{_num(100 * _median([s.endpoint_core for s in runs]), 0, 7)}% "
            f"{_num(_median([s.sink_us for s in runs]), 1, 6)}us"
            + (f"  ({'; '.join(notes)})" if notes else "")
        )
    print()
    rounds = list(zip(alone["drillkit"], alone["bare locust"], alone["wrk"], strict=True))
    rows = {
        "alone, req/s": [_ratio(d.rps, b.rps) for d, b, _ in rounds],
        "paired, req/s": [_ratio(d.rps, b.rps) for d, b in paired],
        "paired, by CPU/req": [_cpu_ratio(d, b) for d, b in paired],
    }
    print("drillkit / bare locust")
    for name, values in rows.items():
        print(f"  {name:<20} median {_num(_median(values), 3, 5)}   "
              f"per round {', '.join(f'{v:.3f}' for v in values)}")  # fmt: skip
    wrk = [_ratio(d.rps, w.rps) for d, _, w in rounds]
    print(f"drillkit / wrk\n  {'alone, req/s':<20} median {_num(_median(wrk), 3, 5)}   "
          f"per round {', '.join(f'{v:.3f}' for v in wrk)}")  # fmt: skip
    print()
    print(
        "alone: each generator by itself, alternately; req/s: completions/s in the window, "
        "median, min and max over the rounds; spread: (max - min) / median; failures: all "
        "rounds, whole runs; CPU/req: generator CPU per completed request; gen core, endpoint: "
        "share of one core used; sink/req: drillkit's record sink (this process) CPU per "
        "request. paired: drillkit and bare Locust at the same time on the same CPU, so the "
        "machine's drift cancels; by CPU/req: bare Locust's CPU per request over drillkit's "
        "(its sink's included), the rate ratio alone on a steady machine. The verdict uses it."
    )
    return _median(rows["paired, by CPU/req"])


def run_reference(host: str, server: int, cfg: Config, rounds: int
                  ) -> tuple[dict[str, list[Sample]], list[tuple[Sample, Sample]]]:  # fmt: skip
    """The reference part: drillkit, bare Locust, wrk alone, and drillkit and bare Locust
    paired, in rounds."""
    alone: dict[str, list[Sample]] = {tool: [] for tool in ALONE}
    paired: list[tuple[Sample, Sample]] = []
    for r in range(rounds):
        for step in STEPS[r % 4 :] + STEPS[: r % 4]:  # no step always runs first
            if step == "paired":
                # Bare Locust launches first: drillkit's launch waits for its processes.
                bare, drillkit = run_locust((BareRun, DrillkitRun), host, server, cfg)
                paired.append((drillkit, bare))
                samples = [drillkit, bare]
            elif step == "wrk":
                samples = [run_wrk(host, server, cfg)]
                alone["wrk"].append(samples[0])
            else:
                kind = DrillkitRun if step == "drillkit" else BareRun
                samples = run_locust((kind,), host, server, cfg)
                alone[step].append(samples[0])
            for s in samples:
                progress(
                    f"round {r + 1}/{rounds} {step:<11} {s.tool:<12} {s.rps:>9,.0f} "
                    f"req/s  failures {s.failures}  CPU/req {s.cpu_us:.0f}us  "
                    f"gen core {100 * s.core:.0f}%  endpoint {100 * s.endpoint_core:.0f}%"
                    + (f"  ({s.note})" if s.note else "")
                    + (f"\n    records: {s.records.line()}" if s.records else "")
                )
    return alone, paired


# -- workers: the ceiling by the number and the place of the load processes -----------------


def run_workers(placements: Sequence[Placement], host: str, server: int, cfg: Config,
                rounds: int) -> dict[str, list[Sample]]:  # fmt: skip
    """drillkit alone with each placement, in rounds; the samples by placement."""
    found: dict[str, list[Sample]] = {p.name: [] for p in placements}
    for r in range(rounds):
        k = r % len(placements)
        for where in (*placements[k:], *placements[:k]):  # no placement always runs first
            kind = functools.partial(DrillkitRun, placement=where)
            [s] = run_locust((kind,), host, server, cfg)
            found[where.name].append(s)
            progress(
                f"round {r + 1}/{rounds} workers {where.name:<8} {s.rps:>9,.0f} req/s  "
                f"failures {s.failures}  gen cores {100 * s.core:.0f}%  "
                f"sink {100 * s.sink_core:.0f}%  endpoint {100 * s.endpoint_core:.0f}%"
                + (f"  ({s.note})" if s.note else "")
                + (f"\n    records: {s.records.line()}" if s.records else "")
            )
    return found


def _autogroup() -> str:
    try:
        on = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return "autogroup unknown"
    return "autogroup scheduling on" if on else "autogroup scheduling off"


def report_workers(found: dict[str, list[Sample]], cfg: Config, rounds: int, host: str,
                   ncpus: int, loads: tuple[float, float]) -> float:  # fmt: skip
    """Print the workers part; return 2 netns / 2 local by rate (NaN without --netns)."""
    print(
        f"drillkit's ceiling by where its load processes run: {rounds} rounds x "
        f"{cfg.seconds} s (after {cfg.warmup} s warmup), {cfg.users} users, endpoint {host}"
    )
    print(
        f"not pinned ({ncpus} CPUs, {_autogroup()}); load average (1 min) {loads[0]:.2f} at "
        f"start, {loads[1]:.2f} at end"
    )
    print()
    header = (
        f"{'placement':<10} {'req/s':>8} {'min':>8} {'max':>8} {'failures':>8} "
        f"{'gen cores':>9} {'sink':>6} {'endpoint':>8} {'CPU/req':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, runs in found.items():
        rates = [s.rps for s in runs]
        notes = sorted({s.note for s in runs if s.note})
        print(
            f"{name:<10} {_num(_median(rates))} {_num(min(rates))} {_num(max(rates))} "
            f"{sum(s.failures for s in runs):>8} "
            f"{_num(100 * _median([s.core for s in runs]), 0, 8)}% "
            f"{_num(100 * _median([s.sink_core for s in runs]), 0, 5)}% "
            f"{_num(100 * _median([s.endpoint_core for s in runs]), 0, 7)}% "
            f"{_num(_median([s.total_us for s in runs]), 0, 6)}us"
            + (f"  ({'; '.join(notes)})" if notes else "")
        )
    print()
    one, two = found[ONE_LOCAL.name], found[TWO_LOCAL.name]
    rows = {
        "2 local / 1 local, req/s": [_ratio(b.rps, a.rps) for a, b in zip(one, two, strict=True)]
    }
    netns = found.get(TWO_NETNS.name)
    if netns is not None:
        rows["2 netns / 2 local, req/s"] = [
            _ratio(n.rps, b.rps) for b, n in zip(two, netns, strict=True)
        ]
        rows["2 netns / 2 local, by CPU/req"] = [
            _ratio(b.total_us, n.total_us) for b, n in zip(two, netns, strict=True)
        ]
    for name, values in rows.items():
        print(f"  {name:<30} median {_num(_median(values), 3, 5)}   "
              f"per round {', '.join(f'{v:.3f}' for v in values)}")  # fmt: skip
    print()
    print("records of every load process (sink count = sum of the processes' trailers), per run:")
    for name, runs in found.items():
        for i, s in enumerate(runs, start=1):
            if s.records is not None:
                print(f"  {name:<8} round {i}: {s.records.line()}")
    print()
    print(
        "1 local: one Locust process; 2 local: --processes 2 under a master on 127.0.0.1; "
        "2 netns: distributed mode, a `drillkit worker` in each of two network namespaces "
        "joining the master and the sink on the bridge's address. req/s: completions/s in the "
        "window (median, min, max over the rounds); gen cores: the generator's processes, in "
        "% of one core; sink: this process (drillkit's record sink); CPU/req: generators, "
        "sink and endpoint CPU per completed request. Ratios are taken within each round; by "
        "CPU/req: 2 local's CPU per request over 2 netns's, what the rate ratio would be if "
        "CPU were the only limit and the machine steady. With autogroup scheduling and other "
        "work on the machine, each session gets one fair share of the CPU: --processes "
        "workers share their master's, each drillkit worker has its own, so 2 netns gets "
        "more CPU than 2 local there; on an idle machine the rates compare as they are."
    )
    return _median(rows["2 netns / 2 local, req/s"]) if netns is not None else math.nan


def _exit_on_term(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds: runs stop, the bench's network is removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bind", default=LOOPBACK, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=int, default=5, help="measured window per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds before the window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=20, help="Locust users = wrk connections")
    parser.add_argument("--workers", type=int, default=1,
                        help="Locust processes = wrk threads (reference part)")  # fmt: skip
    parser.add_argument("--no-pin", action="store_true", help="leave CPU placement to the OS")
    netns_help = (f"also 2 workers in network namespaces (root; sets up its own bridge "
                  f"{BRIDGE} and namespaces {', '.join(NAMESPACES)})")  # fmt: skip
    parser.add_argument("--netns", action="store_true", help=netns_help)
    parser.add_argument("--only", choices=("reference", "workers"), help="run one part")
    parser.add_argument("--quick", action="store_true", help="2 rounds x 2 s: under 2 minutes")
    args = parser.parse_args()
    if args.serve:
        _serve_on(args.bind)
        return
    if args.quick:
        args.seconds, args.warmup, args.rounds = 2, 1, 2
    if min(args.seconds, args.warmup, args.rounds, args.users, args.workers) < 1:
        parser.error("--seconds, --warmup, --rounds, --users and --workers must be >= 1")
    if args.only != "reference" and args.users < 2:
        parser.error("--users must be >= 2: the workers part runs 2 load processes")
    if args.netns:
        check_netns()
    signal.signal(signal.SIGTERM, _exit_on_term)
    cfg = Config(args.seconds, args.warmup, args.users, args.workers)

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    server_cpus, generator_cpus = ({cpus[0]}, set(cpus[1:])) if pin else (None, None)
    pinning = "not pinned"
    if pin:
        pinning = (f"pinned: endpoint on CPU {cpus[0]}, generators and drillkit's sink on CPU "
                   f"{','.join(map(str, cpus[1:]))}")  # fmt: skip
    start_load = os.getloadavg()[0]
    progress(f"{len(cpus) or os.cpu_count()} CPUs, load average {start_load:.2f}")
    drillkit_runs: list[Sample] = []
    with contextlib.ExitStack() as stack:
        if args.netns:
            stack.enter_context(bench_network())
        bind = BRIDGE_ADDR if args.netns else LOOPBACK
        host, server = stack.enter_context(endpoint(server_cpus, bind))
        progress(f"endpoint {host} (pid {server})")
        if args.only != "workers":
            progress(f"reference part: {pinning}")
            if generator_cpus:
                os.sched_setaffinity(0, generator_cpus)  # inherited by every generator
            alone, paired = run_reference(host, server, cfg, args.rounds)
            ratio = report(alone, paired, cfg, pinning, (start_load, os.getloadavg()[0]))
            verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
            print(f"drillkit / bare locust = {ratio:.3f} (target >= {TARGET:.2f}): {verdict}")
            print()
            drillkit_runs += alone["drillkit"] + [d for d, _ in paired]
        if args.only != "reference":
            progress("workers part: not pinned")
            if cpus:  # every core, for the generators as for the endpoint
                os.sched_setaffinity(0, set(cpus))
                os.sched_setaffinity(server, set(cpus))
            placements = (ONE_LOCAL, TWO_LOCAL, *((TWO_NETNS,) if args.netns else ()))
            load = os.getloadavg()[0]
            found = run_workers(placements, host, server, cfg, args.rounds)
            netns = report_workers(found, cfg, args.rounds, host, len(cpus) or 1,
                                   (load, os.getloadavg()[0]))  # fmt: skip
            if args.netns:
                verdict = "ok" if netns >= NETNS_TARGET else "BELOW TARGET"
                print(f"2 netns / 2 local = {netns:.3f} (target >= {NETNS_TARGET:.2f}): "
                      f"{verdict}")  # fmt: skip
            drillkit_runs += [s for runs in found.values() for s in runs]
    failed = [s for s in drillkit_runs if s.records is not None and not s.records.ok]
    print(
        f"records: every load process's records arrived in {len(drillkit_runs) - len(failed)} "
        f"of {len(drillkit_runs)} drillkit runs: " + ("ok" if not failed else "FAILED")
    )
    if failed:
        raise SystemExit(EXIT_RECORDS)


if __name__ == "__main__":
    main()
