"""RecordSink: a real TCP server on a thread, fed by plain sockets (no Locust here)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import pytest

from drillkit.load.sink import AUTH_PREFIX, MAX_CONNECTIONS, MAX_LINE, RecordSink
from drillkit.observe.records import RequestRecord


def record(i: int, **overrides: object) -> RequestRecord:
    fields: dict[str, object] = {
        "sent_at": 1_700_000_000.0 + i / 1000,
        "latency_ms": 1.25 + i,
        "status": 200,
        "model_version": "v2",
        "model_digest": "ab" * 32,
        "replica": "replica-1",
    }
    fields.update(overrides)
    return RequestRecord(**fields)  # type: ignore[arg-type]


def wire(records: list[RequestRecord]) -> bytes:
    return "".join(r.to_wire() + "\n" for r in records).encode()


def connect(sink: RecordSink, *, token: str | None = None) -> socket.socket:
    """A connection that proves itself as the drill's generator does (or with ``token``)."""
    conn = socket.create_connection(("127.0.0.1", sink.port), timeout=5)
    conn.sendall(AUTH_PREFIX + (sink.token if token is None else token).encode() + b"\n")
    return conn


def refused(sink: RecordSink, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while sink.stats().refused < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sink.stats().refused == n


def wait_for(sink: RecordSink, n: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while sink.count < n and time.monotonic() < deadline:
        time.sleep(0.005)
    assert sink.count == n


def test_records_round_trip_with_every_field(sink: RecordSink) -> None:
    sent = [
        record(0),
        record(1, status=0, error="timeout", model_version="", model_digest="", replica=""),
        record(2, degraded=True, model_version="fallback", replica=""),
        record(3, status=503, error="http"),
    ]
    with connect(sink) as conn:
        conn.sendall(wire(sent))
        wait_for(sink, 4)
    assert sink.records() == sent


def test_lines_split_across_reads_are_reassembled(sink: RecordSink) -> None:
    sent = [record(i) for i in range(20)]
    data = wire(sent)
    with connect(sink) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for cut in range(0, len(data), 7):  # 7 bytes at a time: most lines span many reads
            conn.sendall(data[cut : cut + 7])
            if cut % 70 == 0:
                time.sleep(0.001)  # let the sink read a partial line now and then
        wait_for(sink, 20)
    assert sink.records() == sent


def test_a_last_line_without_newline_counts_at_the_end_of_the_stream(sink: RecordSink) -> None:
    with connect(sink) as conn:
        conn.sendall(wire([record(0)]) + record(1).to_wire().encode())
    wait_for(sink, 2)
    assert sink.wait_closed(5)


def test_many_connections_at_once(sink: RecordSink) -> None:
    def send(worker: int) -> None:
        with connect(sink) as conn:
            records = [record(worker * 1000 + i) for i in range(500)]
            for start in range(0, 500, 50):
                conn.sendall(wire(records[start : start + 50]))
            trailer = {"sent": 500, "dropped": worker, "pid": 100 + worker}
            conn.sendall(json.dumps(trailer).encode() + b"\n")

    threads = [threading.Thread(target=send, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_for(sink, 16 * 500)
    assert sink.wait_closed(5)
    stats = sink.stats()
    assert stats.connections == 16 and stats.open_connections == 0
    assert (stats.trailers, stats.reported_sent, stats.reported_dropped) == (16, 8000, 120)
    assert stats.senders == {100 + w: 500 for w in range(16)}
    got = sorted(r.latency_ms for r in sink.records())
    assert got == sorted(record(w * 1000 + i).latency_ms for w in range(16) for i in range(500))


def test_fifty_thousand_records_arrive_intact_and_fast(sink: RecordSink) -> None:
    sent = [record(i) for i in range(50_000)]
    data = wire(sent)
    began = time.perf_counter()
    with connect(sink) as conn:
        for start in range(0, len(data), 64 * 1024):
            conn.sendall(data[start : start + 64 * 1024])
    wait_for(sink, 50_000, timeout=30)
    took = time.perf_counter() - began
    assert sink.records() == sent
    # Far above the 5,000 records/s a drill needs, even on a busy 2-core machine.
    assert 50_000 / took > 10_000, f"{50_000 / took:.0f} records/s"


def test_since_gives_a_live_view(sink: RecordSink) -> None:
    with connect(sink) as conn:
        conn.sendall(wire([record(i) for i in range(3)]))
        wait_for(sink, 3)
        first, index = sink.since(0)
        assert (len(first), index) == (3, 3)
        assert sink.since(index) == ([], 3)
        conn.sendall(wire([record(i) for i in range(3, 5)]))
        wait_for(sink, 5)
        more, index = sink.since(index)
    assert [r.latency_ms for r in more] == [record(3).latency_ms, record(4).latency_ms]
    assert index == 5


def test_malformed_lines_are_counted_and_skipped(sink: RecordSink) -> None:
    with connect(sink) as conn:
        conn.sendall(b'not json\n[1,2]\n{"oops"\n\n' + wire([record(0)]) + b"[1,2,3,4,5,6,7,8,9]\n")
        wait_for(sink, 1)
        deadline = time.monotonic() + 5
        while sink.stats().malformed < 4 and time.monotonic() < deadline:
            time.sleep(0.005)
    assert sink.stats().malformed == 4
    assert sink.records() == [record(0)]


def test_stop_drains_what_was_written_before_the_writer_closed() -> None:
    sink = RecordSink()
    sink.start()
    with connect(sink) as conn:
        conn.sendall(wire([record(i) for i in range(2000)]))
    sink.stop()
    assert sink.count == 2000
    assert sink.stats().open_connections == 0
    sink.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sink.port), timeout=1).close()


def test_start_twice_is_a_bug(sink: RecordSink) -> None:
    assert sink.address == f"127.0.0.1:{sink.port}" and sink.port > 0
    with pytest.raises(RuntimeError):
        sink.start()


# -- a neighbour on the host -------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "0" * 32, "wrong"], ids=["none", "zeros", "wrong"])
def test_a_connection_without_the_drills_token_is_cut_off_unheard(
    sink: RecordSink, token: str
) -> None:
    with connect(sink, token=token) as conn:
        with contextlib.suppress(OSError):
            conn.sendall(wire([record(i) for i in range(50)]))
        refused(sink, 1)
    assert sink.count == 0 and sink.stats().connections == 0


def test_records_without_any_first_line_are_refused(sink: RecordSink) -> None:
    with socket.create_connection(("127.0.0.1", sink.port), timeout=5) as conn:
        conn.sendall(wire([record(i) for i in range(5)]))  # a forger who knows the format
        refused(sink, 1)
    assert sink.count == 0


def test_a_line_without_end_is_cut_off(sink: RecordSink) -> None:
    with connect(sink) as conn:
        with contextlib.suppress(OSError):
            for _ in range(10):
                conn.sendall(b"x" * MAX_LINE)  # no newline: memory would grow without bound
        refused(sink, 1)


def test_connections_are_bounded(sink: RecordSink) -> None:
    opened = [socket.create_connection(("127.0.0.1", sink.port), timeout=5)]
    try:
        for _ in range(MAX_CONNECTIONS + 5):
            opened.append(socket.create_connection(("127.0.0.1", sink.port), timeout=5))
        refused(sink, 6)
    finally:
        for conn in opened:
            conn.close()


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param([1.7e9, 5.0, 1e29, "", 0, "v", "d", "r"], id="huge-status"),
        pytest.param([1.7e9, 5.0, 200.5, "", 0, "v", "d", "r"], id="float-status"),
        pytest.param([1.7e9, 5.0, True, "", 0, "v", "d", "r"], id="bool-status"),
        pytest.param([1.7e9, float("nan"), 200, "", 0, "v", "d", "r"], id="nan-latency"),
        pytest.param([1.7e9, -1.0, 200, "", 0, "v", "d", "r"], id="negative-latency"),
        pytest.param([float("inf"), 5.0, 200, "", 0, "v", "d", "r"], id="inf-time"),
        pytest.param([1.7e9, 5.0, 200, "boom", 0, "v", "d", "r"], id="unknown-error"),
        pytest.param([1.7e9, 5.0, 200, "", 2, "v", "d", "r"], id="degraded-2"),
        pytest.param([1.7e9, 5.0, 200, "", 0, "v" * 200, "d", "r"], id="long-version"),
    ],
)
def test_a_record_out_of_range_is_malformed_not_a_crash(
    sink: RecordSink, fields: list[object]
) -> None:
    with connect(sink) as conn:
        conn.sendall(json.dumps(fields).encode() + b"\n" + wire([record(0)]))
        wait_for(sink, 1)
    assert sink.stats().malformed == 1
    assert sink.records() == [record(0)]


def test_click_event_lines_are_kept_apart_from_the_requests(sink: RecordSink) -> None:
    from drillkit.observe.records import EventRecord

    events = [
        EventRecord("123.0.4", 0, 1_700_000_000.5, 2.5, 200),
        EventRecord("123.0.4", 1, 1_700_000_001.0, 1000.0, 0),
    ]
    forged = ['E["x",-1,1700000000.5,1.0,200]', 'E["",0,1700000000.5,1.0,200]', "E[1,2"]
    body = wire([record(0)]) + "".join(e.to_wire() + "\n" for e in events).encode()
    body += "".join(line + "\n" for line in forged).encode()
    with connect(sink) as conn:
        conn.sendall(body + json.dumps({"sent": 3, "dropped": 0, "pid": 1}).encode() + b"\n")
        wait_for(sink, 1)
        deadline = time.monotonic() + 5
        while sink.stats().malformed < 3 and time.monotonic() < deadline:
            time.sleep(0.005)
    assert sink.events() == events
    assert [e.acked for e in events] == [True, False]
    stats = sink.stats()
    assert (stats.records, stats.events, stats.malformed) == (1, 2, 3)
