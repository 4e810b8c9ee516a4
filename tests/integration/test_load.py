"""The load pipeline end to end: a real Locust child driving a real local HTTP server, its
records coming back over the socket; and the quality probe against a real local server.

The server is this module run as a script (``python test_load.py serve ...``): a small
asyncio HTTP/1.1 server fast enough not to be the bottleneck, whose answers carry the headers
of a replica behind the gateway. Each load test runs a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import psutil
import pytest

from drillkit.errors import EnvironmentFailure
from drillkit.load import LoadDriver, LoadPlan
from drillkit.load.driver import live_group_members
from drillkit.stacks.recommender.quality import GoldenUserProbe

DIGEST = "d1" * 32


# -- the test server (runs in its own process) ----------------------------------------------


def _serve(port: int, delay: float, status: int, degraded_every: int) -> None:
    count = 0

    def answer(transport: asyncio.Transport) -> None:
        nonlocal count
        count += 1
        if transport.is_closing():
            return
        degraded = degraded_every > 0 and count % degraded_every == 0
        if degraded:
            headers = b"X-Model-Version: fallback\r\nX-Degraded: true\r\n"
        else:
            headers = (
                b"X-Model-Version: v3\r\nX-Model-Digest: " + DIGEST.encode() + b"\r\n"
                b"X-Replica: replica-2\r\nX-Degraded: false\r\n"
            )
        body = b'{"items":[{"item_id":1,"score":0.5}],"model_version":"v3"}'
        reason = b"OK" if status == 200 else b"Service Unavailable"
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            % (status, reason, len(body))
            + headers
            + b"\r\n"
            + body
        )

    class Http(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
                self.buffer = self.buffer[end + 4 :]
                if delay:
                    asyncio.get_running_loop().call_later(delay, answer, self.transport)
                else:
                    answer(self.transport)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Http, "127.0.0.1", port)
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()

    asyncio.run(main())


# -- tests ----------------------------------------------------------------------------------


@contextlib.contextmanager
def http_server(*args: str) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve", *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}"
    finally:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def group_gone(pgid: int) -> bool:
    return not live_group_members(pgid)


def plan(host: str, **overrides: object) -> LoadPlan:
    fields: dict[str, object] = {
        "host": host,
        "rate": 100.0,
        "users": 10,
        "run_seconds": 4.0,
        "timeout": 1.0,
        "n_users": 1000,
    }
    fields.update(overrides)
    return LoadPlan(**fields)  # type: ignore[arg-type]


def run(tmp_path: Path, load: LoadPlan) -> LoadDriver:
    driver = LoadDriver(tmp_path / "load")
    try:
        driver.start(load)
        assert driver.wait(load.run_seconds + load.stop_timeout + 30) == 0, driver.log_tail()
    finally:
        driver.stop()
    assert driver.pid is not None and group_gone(driver.pid)
    return driver


def test_steady_rate_records_every_request_with_its_headers(tmp_path: Path) -> None:
    with http_server("--degraded-every", "4") as host:
        driver = run(tmp_path, plan(host))
    records = driver.records()
    assert 0.85 * 400 <= len(records) <= 1.10 * 400, len(records)
    assert all(r.status == 200 and r.error == "" for r in records)
    degraded = [r for r in records if r.degraded]
    normal = [r for r in records if not r.degraded]
    assert 0.15 < len(degraded) / len(records) < 0.35
    assert all(r.model_version == "fallback" and r.replica == "" for r in degraded)
    assert all(
        (r.model_version, r.model_digest, r.replica) == ("v3", DIGEST, "replica-2") for r in normal
    )
    # Send times are epoch seconds within the run; latencies unrounded milliseconds.
    assert driver.started_at is not None
    assert all(driver.started_at - 5 < r.sent_at < driver.started_at + 10 for r in records)
    assert any(r.latency_ms != round(r.latency_ms) for r in records)
    stats = driver.sink_stats()
    assert (stats.trailers, stats.reported_sent, stats.reported_dropped) == (1, len(records), 0)
    assert driver.records_complete
    summary = driver.locust_summary()
    assert summary is not None and summary.requests == len(records)


def test_server_errors_keep_their_status(tmp_path: Path) -> None:
    with http_server("--status", "503") as host:
        driver = run(tmp_path, plan(host, rate=40.0, users=4, run_seconds=2.0))
    records = driver.records()
    assert records
    assert {(r.status, r.error) for r in records} == {(503, "http")}


def test_a_slow_server_gives_timeouts_with_their_latency(tmp_path: Path) -> None:
    with http_server("--delay", "3") as host:
        driver = run(tmp_path, plan(host, rate=20.0, users=10, run_seconds=2.0, timeout=0.5))
    records = driver.records()
    assert len(records) >= 10
    assert {(r.status, r.error) for r in records} == {(0, "timeout")}
    latencies = np.array([r.latency_ms for r in records])
    assert np.all(latencies >= 450) and np.all(latencies < 2000), latencies


def test_nothing_listening_gives_connect_errors(tmp_path: Path) -> None:
    host = f"http://127.0.0.1:{free_port()}"
    driver = run(tmp_path, plan(host, rate=20.0, users=4, run_seconds=2.0))
    records = driver.records()
    assert len(records) >= 10
    assert {(r.status, r.error) for r in records} == {(0, "connect")}


def test_two_worker_processes_both_send_records(tmp_path: Path) -> None:
    with http_server() as host:
        driver = run(tmp_path, plan(host, workers=2))
    stats = driver.sink_stats()
    assert stats.connections == 2 and stats.trailers == 2
    assert len(stats.senders) == 2 and all(n > 0 for n in stats.senders.values()), stats
    assert sum(stats.senders.values()) == driver.count
    # The master only starts the run once both workers reported: a little of it is lost.
    assert 0.7 * 400 <= driver.count <= 1.1 * 400, driver.count
    assert Counter(r.status for r in driver.records()) == {200: driver.count}


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_stop_mid_run_flushes_and_leaves_nothing_behind(tmp_path: Path, workers: int) -> None:
    with http_server() as host:
        driver = LoadDriver(tmp_path / "load")
        driver.start(plan(host, run_seconds=120.0, workers=workers))
        try:
            deadline = time.monotonic() + 15
            while driver.count < 100 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert driver.running
            live, index = driver.since(0)
            assert index == len(live)
            # Nothing of the generator listens beyond loopback (Locust's master, with
            # workers, would otherwise take every interface on port 5557).
            assert driver.pid is not None
            listening = [
                conn.laddr
                for member in live_group_members(driver.pid)
                for conn in psutil.Process(member).net_connections(kind="inet")
                if conn.status == psutil.CONN_LISTEN
            ]
            assert all(addr.ip == "127.0.0.1" for addr in listening), listening
            assert (workers > 1) == bool(listening)
        finally:
            began = time.monotonic()
            driver.stop()
        took = time.monotonic() - began
    pgid = driver.pid
    assert pgid is not None and group_gone(pgid)
    assert not driver.running
    assert took < 10, took
    stats = driver.sink_stats()
    # A graceful stop: every load process flushed and said how much it sent.
    assert stats.trailers == workers, driver.log_tail()
    assert stats.reported_sent == driver.count >= 100
    assert driver.records_complete
    driver.stop()  # idempotent


@pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])
def test_locust_that_cannot_start_raises_with_its_log(tmp_path: Path, workers: int) -> None:
    driver = LoadDriver(tmp_path / "load")
    began = time.monotonic()
    with pytest.raises(EnvironmentFailure, match="--host must be"):
        driver.start(plan("not-a-url", workers=workers))
    assert time.monotonic() - began < 20  # it exits at once, not after the ready timeout
    assert driver.pid is not None and group_gone(driver.pid)
    assert not driver.running


# -- quality probe --------------------------------------------------------------------------


def _store_version(root: Path, recall: float) -> Path:
    """A minimal store version: a manifest with offline recall and the golden tables."""
    from safetensors.numpy import save_file

    version = root / "v1"
    version.mkdir(parents=True)
    golden = np.arange(40, dtype=np.int64).reshape(8, 5)  # user u: items 5u .. 5u+4
    save_file(
        {"golden_users": np.arange(8, dtype=np.int64), "golden_items": golden},
        str(version / "tables.safetensors"),
    )
    manifest = {
        "format": 1,
        "version": "v1",
        "created_at": "2026-01-01T00:00:00+00:00",
        "files": {"tables.safetensors": {"sha256": "0" * 64, "size": 1}},
        "metrics": {"recall_at_10": recall},
    }
    (version / "manifest.json").write_text(json.dumps(manifest))
    return version


class _Gateway(BaseHTTPRequestHandler):
    """Answers user u with 2 of its 5 golden items (recall 0.4), or 503 for user 7."""

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        user = int(query["user_id"][0])
        if user == 7:
            self.send_response(503)
            self.end_headers()
            return
        items = [5 * user, 5 * user + 1, 900, 901, 902, 903, 904, 905, 906, 907]
        body = json.dumps({"items": [{"item_id": i, "score": 1.0} for i in items]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_quality_probe_scores_answers_against_offline_recall(tmp_path: Path) -> None:
    version = _store_version(tmp_path / "store", recall=0.4)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        probe = GoldenUserProbe(url, version, rate=40.0, seed=3)
        began = time.time()
        with probe:
            time.sleep(1.0)
    finally:
        server.shutdown()
        server.server_close()
    samples = probe.samples()
    assert len(samples) >= 20
    assert all(share == pytest.approx(1.0) for _, share in samples)
    assert all(began <= t <= began + 2 for t, _ in samples)
    assert probe.skipped >= 1  # user 7's 503s are not scored
    assert probe.rolling_share(5.0) == pytest.approx(1.0)
    assert probe.rolling_share(5.0, now=began - 10) is None
    assert probe.mean_share(began, began + 5) == pytest.approx(1.0)
    assert probe.quality_samples(t0=began)[0].t >= 0


def main() -> None:
    parser = argparse.ArgumentParser(description="the test server of test_load.py")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--degraded-every", type=int, default=0)
    args = parser.parse_args()
    _serve(args.port, args.delay, args.status, args.degraded_every)


if __name__ == "__main__":
    main()


# -- a team's own locustfile, and load.requests ------------------------------------------------
TEAM_LOCUSTFILE = """
from locust import HttpUser, between, task


class Shopper(HttpUser):
    wait_time = between(5, 10)  # replaced: drillkit paces every user class at its rate

    @task(3)
    def browse(self):
        self.client.get("/recommend?user_id=1&k=3", name="browse")

    @task(1)
    def missing(self):
        self.client.get("/nowhere", name="missing")
"""


def test_a_teams_locustfile_runs_unchanged_paced_and_recorded(tmp_path: Path) -> None:
    locustfile = tmp_path / "team" / "locustfile.py"
    locustfile.parent.mkdir()
    locustfile.write_text(TEAM_LOCUSTFILE)
    with http_server() as host:
        driver = run(tmp_path, plan(host, rate=50.0, users=5, run_seconds=4.0,
                                    locustfile=locustfile))  # fmt: skip
    records = driver.records()
    # Paced at 50/s (its own wait of 5-10 s would give about 3 requests in 4 s).
    assert 0.8 * 200 <= len(records) <= 1.1 * 200, len(records)
    assert driver.records_complete
    summary = driver.locust_summary()
    assert summary is not None and summary.requests == len(records)


def test_weighted_requests_are_sent_in_their_shares(tmp_path: Path) -> None:
    requests = json.dumps(
        [{"path": "/recommend?user_id=2&k=3", "weight": 3}, {"method": "POST", "path": "/x"}]
    )
    with http_server() as host:
        driver = run(tmp_path, plan(host, rate=50.0, users=5, run_seconds=4.0, requests=requests))
    records = driver.records()
    assert 0.8 * 200 <= len(records) <= 1.1 * 200, len(records)
    assert driver.records_complete
