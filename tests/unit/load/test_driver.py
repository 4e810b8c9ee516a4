"""LoadDriver and LoadPlan without Locust: the child is a small fake generator script that
speaks the same protocol (env settings in, records over the socket, trailer at SIGTERM).

Locust itself is only ever run by tests/integration/test_load.py, in a child process: the
locustfile must never be imported into the pytest process (gevent would patch it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from drillkit.errors import EnvironmentFailure, InputError
from drillkit.load import LoadDriver, LoadPlan
from drillkit.load.driver import LOCUSTFILE, STATS_NAME, live_group_members

# A stand-in for Locust: connects to the sink, sends N records sent 1 s apart and completed
# 0.5 s later, then waits; on SIGTERM sends its trailer and exits (as the locustfile does).
FAKE_GENERATOR = textwrap.dedent(
    """
    import json, os, signal, socket, subprocess, sys, time
    mode = sys.argv[1]
    if mode == "crash":
        print("locust: something went wrong at startup", flush=True)
        sys.exit(4)
    if mode == "hang":
        time.sleep(60)
    host, _, port = os.environ["DRILLKIT_SINK"].rpartition(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"DRILLKIT-SINK " + os.environ["DRILLKIT_SINK_TOKEN"].encode() + b"\\n")
    # Says who it is and answers the sink's clock pings, as the locustfile's writer does.
    sock.sendall(json.dumps({"hello": {"name": "fake"}}).encode() + b"\\n")
    reader = sock.makefile("rb")
    while True:
        message = json.loads(reader.readline())
        if "ready" in message:
            break
        sock.sendall(json.dumps({"pong": message["ping"], "t": time.time()}).encode() + b"\\n")
    n = int(os.environ["FAKE_RECORDS"])
    t0 = float(os.environ["FAKE_T0"])
    lines = [json.dumps([t0 + i, 500.0, 200, "", 0, "v1", "d", "r1"]) for i in range(n)]
    sock.sendall(("\\n".join(lines) + "\\n").encode())
    def finish(*_):
        sock.sendall(json.dumps({"sent": n, "dropped": 0, "pid": os.getpid()}).encode() + b"\\n")
        sock.close()
        sys.exit(0)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    else:
        signal.signal(signal.SIGTERM, finish)
    if mode == "exit":
        finish()
    time.sleep(60)
    """
)


class FakeDriver(LoadDriver):
    def __init__(self, run_dir: Path, mode: str, **kwargs: float) -> None:
        super().__init__(run_dir, **kwargs)
        self.mode = mode

    def command(self, plan: LoadPlan) -> list[str]:
        return [sys.executable, "-c", FAKE_GENERATOR, self.mode]


def make_plan(**overrides: object) -> LoadPlan:
    fields: dict[str, object] = {
        "host": "http://127.0.0.1:8080",
        "rate": 100.0,
        "users": 10,
        "run_seconds": 4.5,
        "timeout": 1.5,
        "n_users": 1000,
    }
    fields.update(overrides)
    return LoadPlan(**fields)  # type: ignore[arg-type]


def group_gone(pgid: int) -> bool:
    return not live_group_members(pgid)


@pytest.fixture
def fake_env(monkeypatch: pytest.MonkeyPatch) -> float:
    t0 = 1_700_000_000.0
    monkeypatch.setenv("FAKE_RECORDS", "10")
    monkeypatch.setenv("FAKE_T0", repr(t0))
    return t0


# -- LoadPlan ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"rate": 0.0}, "rate"),
        ({"users": 0}, "users"),
        ({"run_seconds": 0.0}, "run_seconds"),
        ({"timeout": -1.0}, "timeout"),
        ({"n_users": 0}, "n_users"),
        ({"workers": 0}, "workers"),
        ({"k": 0}, "k"),
        ({"cold_share": 1.5}, "cold_share"),
        ({"users": 2, "workers": 3}, "users"),
    ],
    ids=["rate", "users", "run-seconds", "timeout", "n-users", "workers", "k", "cold", "split"],
)
def test_plan_validation_names_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InputError, match=f"load plan: {field}:"):
        make_plan(**overrides).validate()


def test_command_line() -> None:
    driver = LoadDriver(Path("/tmp/run"))
    cmd = driver.command(make_plan())
    assert cmd[:3] == [sys.executable, "-m", "locust"]
    assert cmd[cmd.index("-f") + 1] == str(LOCUSTFILE) and LOCUSTFILE.is_file()
    assert "--headless" in cmd and "--only-summary" in cmd
    assert cmd[cmd.index("--host") + 1] == "http://127.0.0.1:8080"
    assert cmd[cmd.index("-u") + 1] == "10"
    assert cmd[cmd.index("-r") + 1] == "100"  # spawn over one pacing period
    assert cmd[cmd.index("--run-time") + 1] == "5s"  # whole seconds, rounded up
    assert cmd[cmd.index("--stop-timeout") + 1] == "3"  # ceil(timeout) + 1
    assert cmd[cmd.index("--json-file") + 1] == "/tmp/run/locust_stats"
    assert "--processes" not in cmd
    cmd = driver.command(make_plan(workers=2))
    assert cmd[cmd.index("--processes") + 1] == "2"
    # Locust's master would listen on every interface, port 5557: loopback and a port of its own.
    assert cmd[cmd.index("--master-bind-host") + 1] == "127.0.0.1"
    port = cmd[cmd.index("--master-bind-port") + 1]
    assert port == cmd[cmd.index("--master-port") + 1] != "5557"
    assert cmd[cmd.index("--master-host") + 1] == "127.0.0.1"


def test_child_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCUST_HOST", "http://elsewhere")  # would override our flags
    env = LoadDriver(Path("/tmp/run")).environment(
        make_plan(seed=7, k=5, emit_records=False), "127.0.0.1:4321"
    )
    assert "LOCUST_HOST" not in env
    assert env["DRILLKIT_SINK"] == "127.0.0.1:4321"
    assert float(env["DRILLKIT_RATE"]) == 100.0 and float(env["DRILLKIT_TIMEOUT"]) == 1.5
    assert (env["DRILLKIT_USERS"], env["DRILLKIT_N_USERS"]) == ("10", "1000")
    assert (env["DRILLKIT_K"], env["DRILLKIT_SEED"], env["DRILLKIT_EMIT_RECORDS"]) == (
        "5",
        "7",
        "0",
    )
    assert str(LOCUSTFILE.parents[2]) in env["PYTHONPATH"].split(os.pathsep)
    assert "DRILLKIT_STACK_ID" not in env


def test_the_generator_carries_its_stacks_mark() -> None:
    # How `drillkit heal` finds a killed drill's load generator: never by its command line.
    plan = make_plan(stack_id="20260101-000000-aaaaaa")
    env = LoadDriver(Path("/tmp/run")).environment(plan, "127.0.0.1:4321")
    assert env["DRILLKIT_STACK_ID"] == "20260101-000000-aaaaaa"


def test_importing_the_driver_never_imports_locust() -> None:
    code = (
        "import sys, drillkit.load, drillkit.load.driver, drillkit.engine, "
        "drillkit.stacks.recommender.quality; "
        "bad = [m for m in ('locust', 'gevent') if m in sys.modules]; "
        "sys.exit(f'imported: {bad}' if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- the child process ------------------------------------------------------------------------


def test_records_flow_and_stop_is_graceful(tmp_path: Path, fake_env: float) -> None:
    driver = FakeDriver(tmp_path, "serve")
    driver.start(make_plan())
    deadline = time.monotonic() + 10
    while driver.count < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert driver.running
    rc = driver.stop()
    assert rc == 0
    assert driver.pid is not None and group_gone(driver.pid)
    assert [r.sent_at for r in driver.records()] == [fake_env + i for i in range(10)]
    assert driver.sink_stats().reported_sent == 10  # the trailer came: SIGTERM let it flush
    assert driver.stop() == 0  # idempotent


def test_wait_returns_the_exit_code_with_every_record_in(tmp_path: Path, fake_env: float) -> None:
    with FakeDriver(tmp_path, "exit") as driver:
        driver.start(make_plan())
        assert driver.wait(10) == 0
        assert driver.count == 10 and driver.sink_stats().trailers == 1


def test_wait_times_out_without_killing(tmp_path: Path, fake_env: float) -> None:
    with FakeDriver(tmp_path, "serve") as driver:
        driver.start(make_plan())
        with pytest.raises(EnvironmentFailure, match="still running"):
            driver.wait(0.2)
        assert driver.running


def test_a_child_that_ignores_sigterm_is_killed_with_its_children(
    tmp_path: Path, fake_env: float
) -> None:
    driver = FakeDriver(tmp_path, "stubborn")
    driver.start(make_plan())
    time.sleep(0.3)  # let it start its own child
    began = time.monotonic()
    driver.stop(grace=0.5)
    assert time.monotonic() - began < 5
    assert driver.pid is not None and group_gone(driver.pid)


def test_a_child_that_dies_at_startup_raises_with_its_log(tmp_path: Path) -> None:
    driver = FakeDriver(tmp_path, "crash")
    with pytest.raises(EnvironmentFailure, match="exited with code 4") as caught:
        driver.start(make_plan())
    assert "something went wrong at startup" in str(caught.value)
    assert caught.value.exit_code == 3
    assert driver.pid is not None and group_gone(driver.pid)


def test_a_child_that_never_connects_times_out(tmp_path: Path) -> None:
    driver = FakeDriver(tmp_path, "hang", ready_timeout=0.5)
    with pytest.raises(EnvironmentFailure, match="did not start within 0.5 s"):
        driver.start(make_plan())
    assert driver.pid is not None and group_gone(driver.pid)


def test_saturated_compares_completions_with_the_target(tmp_path: Path, fake_env: float) -> None:
    # One record per second, each completing 0.5 s after it was sent.
    with FakeDriver(tmp_path, "exit") as driver:
        driver.start(make_plan())
        driver.wait(10)
        t0 = fake_env
        assert not driver.saturated(t0, t0 + 10, target_rate=1.0)
        assert not driver.saturated(t0, t0 + 10, target_rate=1.1)  # 1.0 >= 0.9 * 1.1
        assert driver.saturated(t0, t0 + 10, target_rate=1.2)
        assert driver.saturated(t0 + 20, t0 + 30, target_rate=1.0)
        assert not driver.saturated(t0, t0, target_rate=1.0)  # an empty window says nothing


def test_locust_summary_reads_the_json_stats(tmp_path: Path) -> None:
    driver = LoadDriver(tmp_path)
    assert driver.locust_summary() is None
    entries = [
        {
            "name": "/recommend",
            "num_requests": 250,
            "num_failures": 3,
            "last_request_timestamp": 1002.5,
            "num_reqs_per_sec": {"1000": 50, "1001": 100, "1002": 100},
        }
    ]
    (tmp_path / STATS_NAME).write_text(json.dumps(entries))
    summary = driver.locust_summary()
    assert summary is not None
    assert (summary.requests, summary.failures, summary.first, summary.last) == (
        250,
        3,
        1000.0,
        1002.5,
    )
    assert summary.rate_between(1000.5, 1003.0) == 100.0
    assert summary.rate_between(1001.0, 1001.5) == 0.0


def test_a_teams_locustfile_is_loaded_beside_drillkits_recording(tmp_path: Path) -> None:
    from drillkit.load.driver import ATTACH, REQUESTS_LOCUSTFILE

    own = tmp_path / "locustfile.py"
    driver = LoadDriver(tmp_path)
    cmd = driver.command(make_plan(locustfile=own))
    assert cmd[cmd.index("-f") + 1] == f"{ATTACH},{own}" and ATTACH.is_file()
    env = driver.environment(make_plan(locustfile=own), "127.0.0.1:1")
    assert env["DRILLKIT_PACE"] == "1"  # its users are paced at the scenario's rate
    plan = make_plan(requests='[{"path": "/"}]')
    cmd = driver.command(plan)
    assert cmd[cmd.index("-f") + 1] == str(REQUESTS_LOCUSTFILE) and REQUESTS_LOCUSTFILE.is_file()
    env = driver.environment(plan, "127.0.0.1:1")
    # In a file: the list may be larger than one environment variable can hold.
    assert Path(env["DRILLKIT_REQUESTS_FILE"]).read_text() == '[{"path": "/"}]'
    assert env["DRILLKIT_PACE"] == "0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("import no_such_module_here\n", "ModuleNotFoundError: No module named"),
        ("x = 1\n", "no Locust user class"),
        ("def broken(:\n", "SyntaxError"),
    ],
)
def test_a_locustfile_that_fails_to_load_is_refused_with_the_errors_last_line(
    tmp_path: Path, text: str, message: str
) -> None:
    from drillkit.load.driver import check_locustfile

    path = tmp_path / "locustfile.py"
    path.write_text(text)
    with pytest.raises(InputError, match=f"load.locustfile: {path} fails to load: .*{message}"):
        check_locustfile(path)
    with pytest.raises(InputError, match="is not a file"):
        check_locustfile(tmp_path / "missing.py")
