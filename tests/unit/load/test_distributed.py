"""Workers from elsewhere at the record sink: the clock handshake, lost workers, joining;
what a worker accepts from a drill; the scenario's checks. Plain sockets, no Locust."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Mapping

import pytest

from drillkit.errors import InputError, ScenarioError
from drillkit.load import sink as sink_module
from drillkit.load.sink import AUTH_PREFIX, CLOCK_ROUNDS, RecordSink, prove
from drillkit.load.worker import JoinOffer, parse_master
from drillkit.observe.records import Records, RequestRecord
from drillkit.scenario import loads_scenario as load_scenario_text
from drillkit.scoring.analyze import LoadWorker, lost_load


class FakeWorker:
    """A generator on a host whose clock is ``skew`` seconds ahead."""

    def __init__(self, sink: RecordSink, skew: float = 0.0, name: str = "gen-1") -> None:
        self.skew = skew
        self.sock = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
        hello = {"hello": {"name": name, "host": "elsewhere", "pid": 7}}
        self.sock.sendall(AUTH_PREFIX + sink.token.encode() + b"\n" + _line(hello))
        self.reader = self.sock.makefile("rb")
        while True:
            message = json.loads(self.reader.readline())
            if "ping" in message:
                self.sock.sendall(_line({"pong": message["ping"], "t": time.time() + skew}))
            else:
                self.ready = message["ready"]
                break

    def send(self, records: list[RequestRecord], trailer: bool = True) -> None:
        data = "".join(r.to_wire() + "\n" for r in records).encode()
        if trailer:
            data += _line({"sent": len(records), "dropped": 0, "pid": 7})
        self.sock.sendall(data)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _line(message: Mapping[str, object]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _record(sent_at: float) -> RequestRecord:
    return RequestRecord(sent_at=sent_at, latency_ms=2.0, status=200)


def _wait(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)
    assert check()  # type: ignore[operator]


def test_a_worker_whose_clock_is_off_has_its_records_moved_onto_the_drills(
    sink: RecordSink,
) -> None:
    worker = FakeWorker(sink, skew=5.0)
    now = time.time()
    worker.send([_record(now + 5.0 + i) for i in range(3)])  # stamped by its own clock
    worker.close()
    _wait(lambda: sink.count == 3)
    got = [r.sent_at for r in sink.records()]
    assert got == pytest.approx([now, now + 1, now + 2], abs=0.05)
    (info,) = sink.stats().workers
    assert info.offset == pytest.approx(5.0, abs=0.05)
    assert info.name == "gen-1" and info.host == "elsewhere" and info.peer == "127.0.0.1"
    assert info.rtt is not None and 0 < info.rtt < 1
    assert worker.ready["offset"] == info.offset
    assert sink.stats().ready == 1


def test_clocks_that_agree_within_the_round_trip_are_left_as_stamped(sink: RecordSink) -> None:
    worker = FakeWorker(sink)
    stamps = [1_700_000_000.25, 1_700_000_001.5]
    worker.send([_record(t) for t in stamps])
    worker.close()
    _wait(lambda: sink.count == 2)
    assert [r.sent_at for r in sink.records()] == stamps  # exactly: no correction
    (info,) = sink.stats().workers
    assert info.offset == 0.0 and info.measured_offset is not None
    assert abs(info.measured_offset) <= info.rtt / 2  # type: ignore[operator]


def test_the_handshake_takes_the_shortest_round_trip(sink: RecordSink) -> None:
    pings = []
    sock = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
    sock.sendall(AUTH_PREFIX + sink.token.encode() + b"\n" + _line({"hello": {"name": "g"}}))
    reader = sock.makefile("rb")
    for i in range(CLOCK_ROUNDS):
        message = json.loads(reader.readline())
        pings.append(message["ping"])
        if i == 0:
            time.sleep(0.3)  # a slow first round: its offset is off by 0.15 s
        sock.sendall(_line({"pong": message["ping"], "t": time.time() + 2.0}))
    ready = json.loads(reader.readline())["ready"]
    assert ready["offset"] == pytest.approx(2.0, abs=0.02)
    assert ready["rtt"] < 0.1
    reader.close()
    sock.close()


def test_a_worker_that_ends_without_its_trailer_is_lost_one_with_it_is_not(
    sink: RecordSink,
) -> None:
    gone, done = FakeWorker(sink, name="gone"), FakeWorker(sink, name="done")
    done.send([_record(1_700_000_000.0)])
    done.close()
    before = time.time()
    gone.send([_record(1_700_000_000.0)], trailer=False)
    gone.close()
    _wait(lambda: all(w.finished or w.lost_at for w in sink.stats().workers))
    workers = {w.name: w for w in sink.stats().workers}
    assert workers["done"].finished and workers["done"].lost_at is None
    assert workers["gone"].lost_at is not None and workers["gone"].lost_at >= before
    assert workers["gone"].records == 1 and workers["gone"].sent is None
    assert (workers["done"].records, workers["done"].sent, workers["done"].dropped) == (1, 1, 0)


def test_a_worker_that_falls_silent_is_lost(
    sink: RecordSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "LOST_SILENCE", 0.3)
    quiet, talking = FakeWorker(sink, name="quiet"), FakeWorker(sink, name="talking")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        talking.sock.sendall(b"\n")  # a heartbeat
        time.sleep(0.05)
    workers = {w.name: w for w in sink.stats().workers}
    assert workers["quiet"].lost_at is not None
    assert workers["talking"].lost_at is None
    quiet.close()
    talking.close()


def test_a_worker_asking_to_join_gets_the_offer_and_a_wrong_token_gets_nothing(
    sink: RecordSink,
) -> None:
    sink.offer({"master_port": 5999})
    good = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
    good.sendall(AUTH_PREFIX + sink.token.encode() + b"\n" + _line({"hello": {"role": "join"}}))
    assert json.loads(good.makefile("rb").readline()) == {"join": {"master_port": 5999}}
    bad = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
    bad.sendall(AUTH_PREFIX + b"not-it\n" + _line({"hello": {"role": "join"}}))
    assert bad.makefile("rb").readline() == b""  # closed unheard
    _wait(lambda: sink.stats().refused == 1)  # counted just after it is closed
    assert sink.stats().joined == 1
    good.close()
    bad.close()


def _offer(**changes: object) -> dict[str, object]:
    offer: dict[str, object] = {
        "master_port": 5999,
        "host": "http://10.0.0.5:8080",
        "locustfile": "drillkit",
        "settings": {"DRILLKIT_RATE": "50.0", "DRILLKIT_USERS": "4"},
        "requests": None,
        "stop_timeout": 3,
    }
    offer.update(changes)
    return offer


def test_a_worker_takes_only_drillkits_locustfiles_and_settings() -> None:
    assert JoinOffer.parse(_offer()).settings == {"DRILLKIT_RATE": "50.0", "DRILLKIT_USERS": "4"}
    for bad in (
        _offer(locustfile="/tmp/evil.py"),
        _offer(settings={"PATH": "/tmp"}),
        _offer(settings={"PYTHONPATH": "/tmp"}),
        _offer(settings={"DRILLKIT_RATE": "1; rm -rf /"}),
        _offer(master_port=0),
        _offer(host="file:///etc/passwd"),
        _offer(host=None),
        _offer(stop_timeout="3"),
        _offer(requests=["/"]),
    ):
        with pytest.raises(ValueError):
            JoinOffer.parse(bad)


def test_master_addresses() -> None:
    assert parse_master("10.0.0.5:7557") == ("10.0.0.5", 7557)
    for bad in ("10.0.0.5", ":7557", "host:0", "host:99999", "host:x"):
        with pytest.raises(InputError):
            parse_master(bad)


def _drillkit_worker(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drillkit", "worker", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_worker_that_cannot_reach_the_drill_says_so_in_one_line_exit_3() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    done = _drillkit_worker(
        "--master", f"127.0.0.1:{port}", "--token-stdin", "--wait", "0.5", stdin="t\n"
    )
    assert done.returncode == 3
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [
        f"drillkit: error: drillkit worker: cannot reach the drill at 127.0.0.1:{port} "
        "within 0.5 s: Connection refused"
    ]


def test_a_worker_with_the_wrong_token_is_refused_exit_3(sink: RecordSink) -> None:
    sink.offer({"master_port": 5999})
    done = _drillkit_worker("--master", sink.address, "--token-stdin", stdin="wrong\n")
    assert done.returncode == 3
    assert (
        f"drillkit worker: the drill at {sink.address}: it does not hold this process's token "
        "(a wrong token, or not the drill there)"
    ) in done.stderr
    assert "Traceback" not in done.stderr
    assert sink.stats().joined == 0


def test_a_worker_needs_exactly_one_token_source() -> None:
    done = _drillkit_worker("--master", "127.0.0.1:1")
    assert done.returncode == 2 and "--token-file FILE or --token-stdin" in done.stderr


def _scenario(load: str, stack: str = "") -> str:
    return f"version: 1\nname: d\nstack: {{{stack}}}\nload: {{{load}}}\n"


@pytest.mark.parametrize(
    ("load", "message"),
    [
        ("hosts: [{netns: a}]", "load.bind: workers elsewhere need an address of this host"),
        ("workers: 0", "load.workers: expected >= 1 (or workers elsewhere: hosts)"),
        ("bind: 10.0.0.1", "load.bind: bind needs workers elsewhere (hosts)"),
        (
            "bind: 10.0.0.1, remote_workers: 2",
            "load.port: workers started by hand need a fixed port and a token_file",
        ),
        (
            "bind: 10.0.0.1, remote_workers: 2, port: 7557",
            "load.token_file: workers started by hand need a fixed port and a token_file",
        ),
        (
            "bind: 10.0.0.1, hosts: [{netns: a}], locustfile: l.py",
            "load.locustfile: workers elsewhere run drillkit's own requests",
        ),
        ("bind: 10.0.0.1, users: 2, workers: 1, hosts: [{netns: a, workers: 2}]", "load.users"),
        ("bind: 10.0.0.1, hosts: [{netns: a, ssh: b}]", "give netns or ssh (one of them)"),
        ("bind: 10.0.0.1, hosts: [{ssh: -oProxyCommand=x}]", "expected [USER@]HOST"),
        ("bind: 10.0.0.1, hosts: [{netns: ../x}]", "expected a network namespace's name"),
        ("bind: not-an-ip, hosts: [{netns: a}]", "load.bind"),
        ("bind: 0.0.0.0, hosts: [{netns: a}]", "expected one address of this host, got 0.0.0.0"),
        (
            "bind: 10.0.0.1, port: 7557, remote_workers: 1, token_file: /etc/shadow",
            "is not a relative path",
        ),
    ],
)
def test_the_scenario_refuses_workers_elsewhere_it_cannot_run(load: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        load_scenario_text(_scenario(load))
    assert message in str(caught.value)


def test_a_scenario_with_workers_elsewhere() -> None:
    scenario = load_scenario_text(
        _scenario(
            "workers: 0, users: 8, bind: 10.0.0.1, "
            "hosts: [{netns: gen-a}, {ssh: u@gen-2, workers: 3}]",
            "listen: 10.0.0.1",
        )
    )
    assert scenario.load.distributed and str(scenario.stack.listen) == "10.0.0.1"
    assert [(h.netns, h.ssh, h.workers) for h in scenario.load.hosts] == [
        ("gen-a", None, 1),
        (None, "u@gen-2", 3),
    ]


def _records(times: list[float]) -> Records:
    return Records.build([_record(1000.0 + t) for t in times], t0=1000.0, verified_digests=None)


def test_lost_load_is_the_shortfall_after_the_first_loss() -> None:
    # 10 rps over 10 s; a worker lost at 6 s, the other half of the rate goes on.
    times = [i / 10 for i in range(60)] + [6 + i / 5 for i in range(20)]
    worker = LoadWorker("a-1", "h", "10.0.0.2", 30, 0.0, 0.1, lost_at=6.0)
    lost, note = lost_load(_records(times), [worker], 10.0, 10.0)
    assert lost == 20  # 40 expected from 6 s on, 20 sent
    assert "a-1 at 6.0 s" in note and "20 requests not offered" in note
    assert "not the stack's failures" in note
    kept = LoadWorker("b-1", "h", "10.0.0.3", 30, 0.0, 0.1)
    assert lost_load(_records(times), [kept], 10.0, 10.0) == (0, "")
    late = LoadWorker("a-1", "h", "10.0.0.2", 30, 0.0, 0.1, lost_at=10.5)  # after the window
    assert lost_load(_records(times), [late], 10.0, 10.0) == (0, "")


def test_the_proof_never_sends_the_token_and_needs_it_on_both_ends(sink: RecordSink) -> None:
    sent: list[bytes] = []

    class Recording(socket.socket):
        def sendall(self, data: bytes, *args: object) -> None:  # type: ignore[override]
            sent.append(bytes(data))
            super().sendall(data, *args)  # type: ignore[arg-type]

    with Recording(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.connect(("127.0.0.1", sink.port))
        prove(sock, sink.token)
        sock.sendall(b"\n")
        _wait(lambda: sink.stats().connections == 1)
    assert sent and not any(sink.token.encode() in data for data in sent)
    # A wrong token: the sink's proof does not check out; nothing more is sent to it.
    with (
        socket.create_connection(("127.0.0.1", sink.port)) as other,
        pytest.raises(OSError, match="does not hold this process's token"),
    ):
        prove(other, "not-the-token")
    # A sink that answers the challenge without the token (one posing as the drill).
    with socket.socket() as fake:
        fake.bind(("127.0.0.1", 0))
        fake.listen(1)
        client = socket.create_connection(fake.getsockname())
        server, _ = fake.accept()
        server.sendall(_line({"challenge": "ab" * 16, "proof": "00" * 32}))
        with pytest.raises(OSError, match="does not hold this process's token"):
            prove(client, sink.token)
        server.settimeout(0.2)
        got = server.recv(4096)
        assert got.startswith(b"DRILLKIT-SINK-HMAC ") and got.count(b"\n") == 1  # no proof
        client.close()
        server.close()


def test_a_wrong_proof_is_refused(sink: RecordSink) -> None:
    with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as sock:
        sock.sendall(b"DRILLKIT-SINK-HMAC " + b"cd" * 16 + b"\n")
        reader = sock.makefile("rb")
        assert "challenge" in json.loads(reader.readline())
        sock.sendall(b"ff" * 32 + b"\n")
        assert reader.readline() == b""  # closed
        reader.close()
    _wait(lambda: sink.stats().refused == 1)
    assert sink.stats().connections == 0


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([{"pong": 1.0, "t": 2.0}], id="pong-before-ping"),
        pytest.param([{"hello": "x"}], id="hello-not-an-object"),
        pytest.param([{"hello": {"name": "again"}}], id="second-hello"),
        pytest.param([{"dropped": 0}], id="trailer-without-sent"),
        pytest.param([{"sent": 0}, {"sent": 0}], id="two-trailers"),
    ],
)
def test_a_control_line_out_of_place_is_malformed_not_a_trailer(
    sink: RecordSink, lines: list[dict[str, object]]
) -> None:
    worker = FakeWorker(sink)
    worker.sock.sendall(b"".join(_line(line) for line in lines))
    worker.close()
    _wait(lambda: sink.stats().open_connections == 0)
    stats = sink.stats()
    expected_trailers = 1 if lines[0].get("sent") == 0 else 0
    assert stats.trailers == expected_trailers
    assert stats.malformed == len(lines) - expected_trailers
    (info,) = stats.workers
    # The one that ended without a (proper) trailer is lost, whatever it said.
    assert (info.lost_at is None) == (expected_trailers == 1)


@pytest.mark.parametrize("t", ["Infinity", "1e308", "NaN"])
def test_a_clock_that_cannot_be_is_refused(sink: RecordSink, t: str) -> None:
    sock = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
    sock.sendall(AUTH_PREFIX + sink.token.encode() + b"\n" + _line({"hello": {"name": "g"}}))
    reader = sock.makefile("rb")
    ping = json.loads(reader.readline())["ping"]
    sock.sendall(b'{"pong": %r, "t": %s}\n' % (ping, t.encode()))
    assert reader.readline() == b""  # closed, no "ready"
    reader.close()
    sock.close()
    _wait(lambda: sink.stats().refused == 1)
    assert sink.stats().ready == 0


def test_a_worker_silent_for_a_while_and_back_is_not_lost(
    sink: RecordSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "LOST_SILENCE", 0.2)
    worker = FakeWorker(sink)
    _wait(lambda: sink.stats().workers[0].lost_at is not None)
    worker.send([_record(1_700_000_000.0)])  # back, and it ends with its trailer
    worker.close()
    _wait(lambda: sink.stats().open_connections == 0)
    (info,) = sink.stats().workers
    assert info.lost_at is None and info.finished


def test_the_plain_token_is_taken_from_this_machine_only(
    sink: RecordSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if every connection came from another host: the token line is refused there, the
    # challenge (which never sends the token) is taken.
    monkeypatch.setattr(sink_module, "_peer", lambda sock: "10.0.0.9")
    plain = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
    plain.sendall(AUTH_PREFIX + sink.token.encode() + b"\n")
    assert plain.recv(10) == b""
    plain.close()
    with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as proven:
        prove(proven, sink.token)
        proven.sendall(b"\n")
        _wait(lambda: sink.stats().connections == 1)
    assert sink.stats().refused == 1


def test_a_host_that_opens_many_connections_cannot_crowd_out_a_worker(
    sink: RecordSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sink_module, "_peer", lambda sock: "10.0.0.9")
    idle = [socket.create_connection(("127.0.0.1", sink.port), timeout=5) for _ in range(8)]
    try:
        # Only the newest few of one address wait for their proof; the others were closed.
        _wait(lambda: sink.stats().refused >= 8 - sink_module.MAX_UNPROVEN_PER_ADDRESS)
        with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as worker:
            prove(worker, sink.token)
            worker.sendall(b"\n")
            _wait(lambda: sink.stats().connections == 1)
    finally:
        for sock in idle:
            sock.close()
