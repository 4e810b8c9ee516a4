"""Load-generator ceiling: the highest request rate drillkit's load driver sustains against a
fixed trivial endpoint, next to bare Locust and to wrk (issue 6). Target: drillkit >= 90% of
bare Locust.

Three generators hit one endpoint, each driven unthrottled for a fixed window after a
warmup, in rounds (the order rotates from round to round):

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

The endpoint is ``bench/load_pipeline.py``'s asyncio server (uvloop when installed, a fixed
small JSON answer with the headers drillkit reads), in its own process.

Counting: completions per whole epoch second in a window of ``--seconds`` after ``--warmup``
seconds. drillkit: the records its sink received for requests completed in the window; bare
Locust: its own per-second completions (``--json-file``); wrk: its Requests/sec over its run
(it has no ramp to skip). Failures are counted over whole runs. CPU figures come from /proc
over the same window.

Pinning (Linux, >= 2 CPUs, unless ``--no-pin``): the endpoint on the first CPU, the generators
on the others, and this process with them: drillkit's record sink is part of what its driver
costs.

Usage::

    python bench/load.py [--seconds S] [--warmup W] [--rounds R] [--users U] [--workers P]
                         [--no-pin] [--quick]

Progress goes to stderr; the table and a one-line verdict to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from load_pipeline import _group_cpu_seconds, _sleep_until, serve

from drillkit.load import LoadDriver, LoadPlan
from drillkit.load.driver import live_group_members

TARGET = 0.90
OFFERED = 1_000_000.0  # req/s asked of drillkit's pacing: unreachable, so it never waits
TIMEOUT = 2.0  # request timeout (s), the bundled scenarios' value, for every generator
PATH = "/recommend?user_id=1&k=10"  # wrk's request
# drillkit's users ask for this many distinct user ids; bare Locust asks for the same mix,
# since Locust's URL handling caches only the last 128 URLs it parsed (urllib's lru_cache):
# one fixed URL would spare bare Locust about 5% of its CPU that any drill pays.
N_USERS = 1000
ALONE = ("drillkit", "bare locust", "wrk")
STEPS = (*ALONE, "paired")

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
class Config:
    seconds: int
    warmup: int
    users: int
    workers: int

    def plan(self, host: str, spare: int) -> LoadPlan:
        # ``spare`` seconds past the window: it starts at the next whole second after the
        # last generator is ready, and a paired run's generators get ready a while apart.
        return LoadPlan(host=host, rate=OFFERED, users=self.users, workers=self.workers,
                        run_seconds=self.warmup + self.seconds + spare, timeout=TIMEOUT,
                        n_users=N_USERS)  # fmt: skip


@dataclass
class Sample:
    tool: str
    rps: float
    failures: int
    cpu_us: float = math.nan  # generator CPU per completed request
    core: float = math.nan  # share of one core the generator processes used
    endpoint_core: float = math.nan  # share of one core the endpoint used
    sink_us: float = math.nan  # this process's CPU (drillkit's record sink) per request
    note: str = ""

    def fill_cpu(self, gen: float, endpoint: float, sink: float | None, seconds: float) -> None:
        done = self.rps * seconds
        self.core, self.endpoint_core = gen / seconds, endpoint / seconds
        if done:
            self.cpu_us = 1e6 * gen / done
            if sink is not None:
                self.sink_us = 1e6 * sink / done


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


@contextlib.contextmanager
def endpoint(cpus: set[int] | None) -> Iterator[tuple[str, int]]:
    """The trivial endpoint in its own session; yields its URL and pid."""
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        if cpus:
            os.sched_setaffinity(proc.pid, cpus)
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise SystemExit(f"endpoint did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}", proc.pid
    finally:
        _stop_group(proc)


def _notes(summary_last: int, hi: int, log: str) -> list[str]:
    notes = []
    if summary_last < hi:
        notes.append("window cut short")
    if "CPU usage" in log:
        notes.append("Locust CPU warning")
    return notes


# -- the Locust generators ------------------------------------------------------------------


class DrillkitRun:
    """drillkit's driver: its locustfile, the record stream and the sink."""

    tool = "drillkit"

    def __init__(self, host: str, cfg: Config, run_dir: Path, spare: int) -> None:
        self.cfg = cfg
        self.plan = cfg.plan(host, spare)
        self.driver = LoadDriver(run_dir)

    def launch(self) -> None:
        self.driver.start(self.plan)  # returns once every load process reached the sink

    def wait_ready(self) -> None:
        pass

    @property
    def pgid(self) -> int:
        assert self.driver.pid is not None
        return self.driver.pid

    def finish(self, lo: int, hi: int) -> Sample:
        driver = self.driver
        driver.wait(self.plan.run_seconds + self.plan.stop_timeout + 30)
        driver.stop()
        summary = driver.locust_summary()
        if summary is None:
            raise SystemExit(f"drillkit: Locust wrote no statistics; log:\n{driver.log_tail()}")
        done = sum(1 for r in driver.records() if lo <= r.sent_at + r.latency_ms / 1000.0 < hi)
        sample = Sample(self.tool, done / self.cfg.seconds, summary.failures)
        notes = _notes(max(summary.per_second, default=0), hi, driver.log_tail(500))
        if not driver.records_complete:
            stats = driver.sink_stats()
            notes.append(
                f"records incomplete ({stats.records} received, {stats.reported_sent} sent, "
                f"{stats.reported_dropped} dropped)"
            )
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

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

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


def run_locust(
    kinds: Sequence[type[DrillkitRun | BareRun]], host: str, server: int, cfg: Config
) -> list[Sample]:
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
        groups = [run.pgid for run in runs]
        _sleep_until(lo)
        gen = [_group_cpu_seconds(g) for g in groups]
        srv, sink = _group_cpu_seconds(server), time.process_time()
        _sleep_until(hi)
        gen = [_group_cpu_seconds(g) - c for g, c in zip(groups, gen, strict=True)]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=int, default=10, help="measured window per run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds before the window")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--users", type=int, default=20, help="Locust users = wrk connections")
    parser.add_argument("--workers", type=int, default=1, help="Locust processes = wrk threads")
    parser.add_argument("--no-pin", action="store_true", help="leave CPU placement to the OS")
    parser.add_argument("--quick", action="store_true", help="2 rounds x 2 s: under a minute")
    args = parser.parse_args()
    if args.serve:
        serve(0)
        return
    if args.quick:
        args.seconds, args.warmup, args.rounds = 2, 1, 2
    if min(args.seconds, args.warmup, args.rounds, args.users, args.workers) < 1:
        parser.error("--seconds, --warmup, --rounds, --users and --workers must be >= 1")
    cfg = Config(args.seconds, args.warmup, args.users, args.workers)

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = not args.no_pin and len(cpus) >= 2
    server_cpus, generator_cpus = ({cpus[0]}, set(cpus[1:])) if pin else (None, None)
    pinning = "not pinned"
    if pin:
        pinning = (f"pinned: endpoint on CPU {cpus[0]}, generators and drillkit's sink on CPU "
                   f"{','.join(map(str, cpus[1:]))}")  # fmt: skip
    start_load = os.getloadavg()[0]
    progress(f"{len(cpus) or os.cpu_count()} CPUs, load average {start_load:.2f}; {pinning}")
    alone: dict[str, list[Sample]] = {tool: [] for tool in ALONE}
    paired: list[tuple[Sample, Sample]] = []
    with endpoint(server_cpus) as (host, server):
        if generator_cpus:
            os.sched_setaffinity(0, generator_cpus)  # inherited by every generator and thread
        progress(f"endpoint {host} (pid {server})")
        for r in range(args.rounds):
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
                        f"round {r + 1}/{args.rounds} {step:<11} {s.tool:<12} {s.rps:>9,.0f} "
                        f"req/s  failures {s.failures}  CPU/req {s.cpu_us:.0f}us  "
                        f"gen core {100 * s.core:.0f}%  endpoint {100 * s.endpoint_core:.0f}%"
                        + (f"  ({s.note})" if s.note else "")
                    )
    ratio = report(alone, paired, cfg, pinning, (start_load, os.getloadavg()[0]))
    verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
    print(f"drillkit / bare locust = {ratio:.3f} (target >= {TARGET:.2f}): {verdict}")


if __name__ == "__main__":
    main()
