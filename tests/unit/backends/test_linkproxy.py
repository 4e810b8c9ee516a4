"""The link proxy against real sockets: a proxy subprocess between this test and local servers."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from drillkit.backends.local.linkproxy import LinkMode, LinkProxyClient, LinkSpec, proxy_command
from drillkit.errors import EnvironmentFailure
from drillkit.netprobe import free_port

HOST = "127.0.0.1"


# -- upstreams ----------------------------------------------------------------------------------
class _HTTPHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the replicas
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._answer(json.dumps({"path": self.path}).encode())

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers["Content-Length"])))

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class EchoServer:
    """Echoes every chunk and remembers when it arrived (to see which way a delay applies)."""

    server: socketserver.ThreadingTCPServer
    arrivals: list[float] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


def _start_echo() -> EchoServer:
    arrivals: list[float] = []

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # The proxy resets connections on purpose; that is not this server's error.
            with contextlib.suppress(ConnectionError):
                while data := self.request.recv(65536):
                    arrivals.append(time.monotonic())
                    self.request.sendall(data)

    server = socketserver.ThreadingTCPServer((HOST, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return EchoServer(server, arrivals)


@dataclass
class Proxy:
    process: subprocess.Popen[bytes]
    client: LinkProxyClient
    ports: dict[str, int]
    echo: EchoServer


def _start_proxy(links: list[LinkSpec]) -> tuple[subprocess.Popen[bytes], LinkProxyClient]:
    control = free_port()
    process = subprocess.Popen(
        proxy_command(control, links, stack_id="test-stack"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    client = LinkProxyClient(f"http://{HOST}:{control}", timeout=2.0)
    try:
        client.wait_ready(timeout=10.0)
    except EnvironmentFailure:
        process.kill()
        raise AssertionError(f"proxy did not start: {process.communicate()[1].decode()}") from None
    return process, client


@pytest.fixture(scope="module")
def proxy() -> Iterator[Proxy]:
    web = ThreadingHTTPServer((HOST, 0), _HTTPHandler)
    web.daemon_threads = True
    threading.Thread(target=web.serve_forever, daemon=True).start()
    echo = _start_echo()
    ports = {"web": free_port(), "echo": free_port(), "dead": free_port()}
    nothing_listens = free_port()
    links = [
        LinkSpec("web", ports["web"], int(web.server_address[1])),
        LinkSpec("echo", ports["echo"], echo.port),
        LinkSpec("dead", ports["dead"], nothing_listens),
    ]
    process, client = _start_proxy(links)
    yield Proxy(process, client, ports, echo)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=5)
    web.shutdown()
    echo.server.shutdown()
    assert process.returncode == 0
    # An exception in a callback is logged, not raised: a clean stderr means nothing went wrong.
    assert stderr.decode() == ""


@pytest.fixture(autouse=True)
def _healed(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "proxy" in request.fixturenames:
        request.getfixturevalue("proxy").client.reset()


def _get(conn: http.client.HTTPConnection, path: str = "/") -> dict[str, Any]:
    conn.request("GET", path)
    response = conn.getresponse()
    assert response.status == 200
    result: dict[str, Any] = json.loads(response.read())
    return result


def _round_trip(conn: http.client.HTTPConnection) -> float:
    start = time.perf_counter()
    _get(conn)
    return time.perf_counter() - start


# -- pass -----------------------------------------------------------------------------------------
def test_pass_forwards_requests_and_large_bodies(proxy: Proxy) -> None:
    conn = http.client.HTTPConnection(HOST, proxy.ports["web"], timeout=2)
    assert _get(conn, "/hello") == {"path": "/hello"}
    body = bytes(range(256)) * 4096  # 1 MiB: more than one chunk and one socket buffer
    conn.request("POST", "/echo", body=body)
    response = conn.getresponse()
    assert response.status == 200
    assert response.read() == body
    conn.close()


def test_refused_upstream_is_refused_through_the_proxy(proxy: Proxy) -> None:
    before = proxy.client.link("dead")["counters"]["upstream_connect_failures"]
    conn = http.client.HTTPConnection(HOST, proxy.ports["dead"], timeout=2)
    start = time.perf_counter()
    with pytest.raises(ConnectionError):
        _get(conn)
    assert time.perf_counter() - start < 0.5
    assert proxy.client.link("dead")["counters"]["upstream_connect_failures"] == before + 1


@pytest.mark.parametrize("delay_ms", [pytest.param(0, id="pass"), pytest.param(50, id="latency")])
def test_half_close_travels_behind_the_data(proxy: Proxy, delay_ms: int) -> None:
    if delay_ms:
        proxy.client.set_mode("echo", "latency", delay_ms=delay_ms)
    open_before = proxy.client.link("echo")["counters"]["connections_open"]
    with socket.create_connection((HOST, proxy.ports["echo"]), timeout=2) as sock:
        sock.sendall(b"last words")
        sock.shutdown(socket.SHUT_WR)  # the echo server answers, then closes on our FIN
        received = b""
        while chunk := sock.recv(64):
            received += chunk
    assert received == b"last words"
    deadline = time.monotonic() + 2
    while proxy.client.link("echo")["counters"]["connections_open"] != open_before:
        assert time.monotonic() < deadline, "the finished connection was never released"
        time.sleep(0.01)


# -- blackhole --------------------------------------------------------------------------------
def test_blackhole_accepts_new_connections_but_never_answers(proxy: Proxy) -> None:
    proxy.client.set_mode("web", "blackhole")
    conn = http.client.HTTPConnection(HOST, proxy.ports["web"], timeout=0.3)
    conn.connect()  # the connect itself succeeds: that is what makes a blackhole slow to detect
    with pytest.raises(TimeoutError):
        _get(conn)
    conn.close()
    counters = proxy.client.link("web")["counters"]
    assert counters["connections_blackholed"] >= 1
    assert counters["bytes_dropped"] > 0


def test_blackhole_stalls_keepalive_connections_until_pass(proxy: Proxy) -> None:
    conn = http.client.HTTPConnection(HOST, proxy.ports["web"], timeout=0.3)
    _get(conn)
    idle = socket.create_connection((HOST, proxy.ports["web"]), timeout=2)
    time.sleep(0.05)  # let the proxy take the idle connection before the cut

    proxy.client.set_mode("web", "blackhole")
    with pytest.raises(TimeoutError):
        _get(conn)
    conn.close()

    proxy.client.set_mode("web", "pass")
    # Hung connections are reset when the link comes back: bytes were dropped on them.
    with pytest.raises(ConnectionResetError):
        idle.recv(1)
    idle.close()
    fresh = http.client.HTTPConnection(HOST, proxy.ports["web"], timeout=2)
    assert _get(fresh, "/again") == {"path": "/again"}
    fresh.close()


# -- reject -----------------------------------------------------------------------------------
def test_reject_resets_new_and_existing_connections_fast(proxy: Proxy) -> None:
    existing = http.client.HTTPConnection(HOST, proxy.ports["web"], timeout=2)
    _get(existing)

    proxy.client.set_mode("web", "reject")
    for conn in (existing, http.client.HTTPConnection(HOST, proxy.ports["web"], timeout=2)):
        start = time.perf_counter()
        with pytest.raises(ConnectionError):
            _get(conn)
        assert time.perf_counter() - start < 0.2
        conn.close()
    counters = proxy.client.link("web")["counters"]
    assert counters["connections_refused"] >= 1
    assert counters["connections_reset"] >= 1


# -- latency ----------------------------------------------------------------------------------
def _best_round_trip(port: int, tries: int = 3) -> float:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    _get(conn)  # connect outside the measurement
    best = min(_round_trip(conn) for _ in range(tries))
    conn.close()
    return best


@pytest.mark.parametrize(
    ("direction", "ways"),
    [
        pytest.param("both", 2, id="both"),
        pytest.param("to_target", 1, id="to-target"),
        pytest.param("from_target", 1, id="from-target"),
    ],
)
def test_latency_grows_the_round_trip(proxy: Proxy, direction: str, ways: int) -> None:
    base = _best_round_trip(proxy.ports["web"])
    state = proxy.client.set_mode("web", "latency", delay_ms=100, direction=direction)
    assert state["params"] == {"delay_ms": 100.0, "jitter_ms": 0.0, "direction": direction}
    slowed = _best_round_trip(proxy.ports["web"])
    assert slowed - base >= 0.090 * ways


@pytest.mark.parametrize(
    ("direction", "slow_way"),
    [
        pytest.param("to_target", "out", id="to-target"),
        pytest.param("from_target", "back", id="from-target"),
    ],
)
def test_latency_applies_only_to_its_direction(proxy: Proxy, direction: str, slow_way: str) -> None:
    proxy.client.set_mode("echo", "latency", delay_ms=200, direction=direction)
    with socket.create_connection((HOST, proxy.ports["echo"]), timeout=3) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        proxy.echo.arrivals.clear()
        sent = time.monotonic()
        sock.sendall(b"ping")
        assert sock.recv(16) == b"ping"
        back = time.monotonic()
    out, home = proxy.echo.arrivals[0] - sent, back - proxy.echo.arrivals[0]
    slow, fast = (out, home) if slow_way == "out" else (home, out)
    assert slow >= 0.180
    assert fast < 0.100  # generous for a loaded 2-core box; the delayed way takes 200 ms


def test_jittered_latency_keeps_byte_order(proxy: Proxy) -> None:
    proxy.client.set_mode("echo", "latency", delay_ms=10, jitter_ms=10)
    expected = b"".join(b"%05d," % i for i in range(300))
    with socket.create_connection((HOST, proxy.ports["echo"]), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(300):
            sock.sendall(b"%05d," % i)  # many small chunks, each with its own random delay
        received = b""
        while len(received) < len(expected):
            chunk = sock.recv(65536)
            assert chunk
            received += chunk
    assert received == expected


def test_removing_latency_delivers_queued_bytes_at_once(proxy: Proxy) -> None:
    proxy.client.set_mode("echo", "latency", delay_ms=5000, direction="from_target")
    with socket.create_connection((HOST, proxy.ports["echo"]), timeout=2) as sock:
        sock.sendall(b"held")
        time.sleep(0.1)  # the echo is now queued in the proxy for 5 s
        start = time.monotonic()
        proxy.client.set_mode("echo", "pass")
        assert sock.recv(16) == b"held"
        assert time.monotonic() - start < 1.0


# -- the control API ----------------------------------------------------------------------------
def test_links_report_mode_counters_and_since(proxy: Proxy) -> None:
    before = proxy.client.links()
    assert set(before) == {"web", "echo", "dead"}
    assert before["web"]["upstream"].startswith(f"{HOST}:")
    assert before["web"]["listen"] == f"{HOST}:{proxy.ports['web']}"
    assert before["web"]["mode"] == "pass"
    assert before["web"]["params"] == {}

    conn = http.client.HTTPConnection(HOST, proxy.ports["web"], timeout=2)
    _get(conn)
    during = proxy.client.link("web")["counters"]
    assert during["connections_open"] == before["web"]["counters"]["connections_open"] + 1
    conn.close()

    changed_at = time.time()
    state = proxy.client.set_mode("web", "latency", delay_ms=5, jitter_ms=1)
    again = proxy.client.set_mode("web", "latency", delay_ms=5, jitter_ms=1)
    assert again["since"] == state["since"]  # re-applying the same mode is not a change
    assert state["mode"] == "latency"
    assert abs(state["since"] - changed_at) < 1.0
    assert state["since"] > before["web"]["since"]
    after = state["counters"]
    old = before["web"]["counters"]
    assert after["connections_total"] == old["connections_total"] + 1
    assert after["bytes_to_target"] > old["bytes_to_target"]
    assert after["bytes_from_target"] > old["bytes_from_target"]

    reset = proxy.client.reset()
    assert {link["mode"] for link in reset.values()} == {"pass"}


def _control_port(proxy: Proxy) -> int:
    return int(proxy.client.url.rsplit(":", 1)[1])


def _raw(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    conn.request(method, path, body=body)
    response = conn.getresponse()
    payload = json.loads(response.read())
    conn.close()
    return response.status, payload


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(b'{"mode": "sever"}', "mode: expected one of", id="bad-mode"),
        pytest.param(b"{mode:", "not valid JSON", id="bad-json"),
        pytest.param(b"\xff\xfe", "not valid JSON", id="not-utf8"),
        pytest.param(b"", "must be a JSON object", id="no-body"),
        pytest.param(b"[1]", "must be a JSON object", id="not-object"),
        pytest.param(b'{"mode": "pass", "x": 1}', "unknown field 'x'", id="unknown-field"),
        pytest.param(
            b'{"mode": "reject", "delay_ms": 5}', "only to mode latency", id="reject-delay"
        ),
        pytest.param(b'{"mode": "latency"}', "delay_ms: required", id="no-delay"),
        pytest.param(b'{"mode": "latency", "delay_ms": -1}', "expected 0..", id="negative"),
        pytest.param(b'{"mode": "latency", "delay_ms": true}', "a number", id="bool-delay"),
        pytest.param(
            b'{"mode": "latency", "delay_ms": 1, "direction": "up"}',
            "direction: expected",
            id="bad-direction",
        ),
    ],
)
def test_control_api_rejects_a_bad_mode_with_400(proxy: Proxy, body: bytes, message: str) -> None:
    status, payload = _raw(_control_port(proxy), "PUT", "/links/web", body)
    assert status == 400
    assert message in payload["error"]
    assert proxy.client.link("web")["mode"] == "pass"


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        pytest.param("PUT", "/links/nope", 404, "unknown link 'nope'", id="unknown-link"),
        pytest.param("GET", "/nowhere", 404, "no such endpoint", id="bad-path"),
        pytest.param("DELETE", "/links/web", 405, "not allowed", id="bad-method"),
        pytest.param("GET", "/reset", 405, "use POST", id="get-reset"),
    ],
)
def test_control_api_answers_unknown_targets_with_json(
    proxy: Proxy, method: str, path: str, status: int, message: str
) -> None:
    got_status, payload = _raw(_control_port(proxy), method, path, b'{"mode": "pass"}')
    assert got_status == status
    assert message in payload["error"]


def test_control_api_survives_garbage_and_hangups(proxy: Proxy) -> None:
    control = _control_port(proxy)
    with socket.create_connection((HOST, control), timeout=2) as sock:
        sock.sendall(b"HELLO\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"malformed request line" in answer
    with socket.create_connection((HOST, control), timeout=2) as sock:
        sock.sendall(b"PUT /links/web HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")  # then hang up
    assert proxy.client.health()["stack_id"] == "test-stack"


# -- the client ---------------------------------------------------------------------------------
def test_client_errors_are_environment_failures(proxy: Proxy) -> None:
    with pytest.raises(EnvironmentFailure, match=r"PUT /links/nope answered 404: unknown link"):
        proxy.client.set_mode("nope", "blackhole")
    with pytest.raises(EnvironmentFailure, match=r"answered 400: delay_ms: required"):
        proxy.client.set_mode("web", "latency")
    with pytest.raises(EnvironmentFailure, match=r"GET /links failed"):
        LinkProxyClient(f"http://{HOST}:{free_port()}").links()
    with pytest.raises(EnvironmentFailure, match="bad link proxy URL"):
        LinkProxyClient("127.0.0.1:80")


# -- configuration and the process -------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "spec"),
    [
        pytest.param("replica-1=7001:8001", LinkSpec("replica-1", 7001, 8001), id="ports"),
        pytest.param("r=0:10.0.0.2:8001", LinkSpec("r", 0, 8001, "10.0.0.2"), id="host"),
    ],
)
def test_link_spec_parses(text: str, spec: LinkSpec) -> None:
    assert LinkSpec.parse(text) == spec
    assert LinkSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("replica-1", id="no-ports"),
        pytest.param("=1:2", id="no-name"),
        pytest.param("a b=1:2", id="bad-name"),
        pytest.param("r=1", id="one-port"),
        pytest.param("r=x:2", id="not-int"),
        pytest.param("r=1:70000", id="out-of-range"),
    ],
)
def test_link_spec_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="bad link"):
        LinkSpec.parse(text)


def test_link_mode_defaults_to_both_directions() -> None:
    mode = LinkMode.from_json({"mode": "latency", "delay_ms": 50})
    assert (mode.delays(True), mode.delays(False)) == (True, True)
    assert LinkMode.from_json({"mode": "blackhole"}).params() == {}


def test_sigterm_closes_everything_and_exits_zero() -> None:
    upstream = _start_echo()
    port = free_port()
    process, client = _start_proxy([LinkSpec("echo", port, upstream.port)])
    live = socket.create_connection((HOST, port), timeout=2)
    live.sendall(b"x")
    assert live.recv(1) == b"x"
    client.set_mode("echo", "blackhole")
    hung = socket.create_connection((HOST, port), timeout=2)
    time.sleep(0.05)

    start = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=5)
    assert process.returncode == 0, stderr.decode()
    assert stderr == b""
    assert time.monotonic() - start < 1.0
    for sock in (live, hung):
        assert sock.recv(1) == b""  # closed, not left hanging
        sock.close()
    upstream.server.shutdown()


def test_a_port_in_use_exits_3_with_a_message() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            proxy_command(free_port(), [LinkSpec("r", port, 1)]),
            capture_output=True,
            timeout=10,
        )
    assert result.returncode == 3
    assert b"linkproxy: error: cannot listen" in result.stderr


def test_bad_arguments_exit_2() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "drillkit.backends.local.linkproxy",
            "--control-port",
            "1",
            "--link",
            "x",
        ],
        capture_output=True,
        timeout=10,
    )
    assert result.returncode == 2
    assert b"bad link 'x'" in result.stderr


def test_the_control_api_answers_only_the_holder_of_the_token(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-t0ken")
    control = free_port()
    process = subprocess.Popen(
        proxy_command(control, [LinkSpec("web", free_port(), free_port())], token_file=token),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        holder = LinkProxyClient(f"http://{HOST}:{control}", timeout=2.0, token="s3cret-t0ken")
        holder.wait_ready(timeout=10.0)
        # Any other process on the host: no token, or a wrong one, cannot cut a link.
        status, payload = _raw(control, "PUT", "/links/web", b'{"mode": "reject"}')
        assert status == 401 and "token" in payload["error"]
        stranger = LinkProxyClient(f"http://{HOST}:{control}", timeout=2.0, token="guess")
        with pytest.raises(EnvironmentFailure, match="401"):
            stranger.set_mode("web", "reject")
        assert holder.link("web")["mode"] == "pass"
        assert holder.set_mode("web", "reject")["mode"] == "reject"
    finally:
        process.kill()
        process.wait()
