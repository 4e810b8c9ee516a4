"""The gateway against real local servers: fake replicas and the gateway, each served by uvicorn
in a background thread, talked to over real sockets with httpx (nothing is mocked)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from drillkit.errors import InputError
from drillkit.stacks.recommender.gateway import GatewayConfig, create_app
from drillkit.stacks.recommender.store import ModelStore
from tests.unit.stacks.recommender.fake_replica import (
    FakeReplica,
    ThreadedServer,
    free_port,
    stop_all,
)

FALLBACK: list[dict[str, object]] = [{"item_id": 9000 + i, "score": 50.0 - i} for i in range(20)]
REPO = Path(__file__).resolve().parents[4]


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; return that."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0.0 when absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


@dataclass
class Gateway:
    server: ThreadedServer
    client: httpx.Client

    def recommend(self, user_id: int | str = 7, k: int | str = 5) -> httpx.Response:
        return self.client.get("/recommend", params={"user_id": user_id, "k": k})

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get("/status").json()
        return body

    def replica(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = next(r for r in self.status()["replicas"] if r["name"] == name)
        return found

    def metrics(self) -> str:
        return self.client.get("/metrics").text

    def wait_state(self, name: str, state: str, timeout: float = 5.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            r = self.replica(name)
            return r if r["state"] == state else None

        found: dict[str, Any] = wait_for(reached, timeout, f"{name} to be {state}")
        return found


@pytest.fixture
def make_replicas() -> Iterator[Callable[[int], list[FakeReplica]]]:
    made: list[FakeReplica] = []

    def make(n: int) -> list[FakeReplica]:
        new = [FakeReplica(f"replica-{len(made) + i + 1}") for i in range(n)]
        for r in new:
            r.start()
            made.append(r)
        return new

    yield make
    stop_all(list(made))


@pytest.fixture
def make_gateway() -> Iterator[Callable[..., Gateway]]:
    running: list[Gateway] = []

    def make(replicas: list[FakeReplica], **overrides: Any) -> Gateway:
        settings: dict[str, Any] = {
            "check_interval": 0.05,
            "check_timeout": 0.2,
            "try_timeout": 0.2,
            "deadline": 1.0,
            "fallback_items": FALLBACK,
        }
        settings.update(overrides)
        config = GatewayConfig(replicas=[(r.name, r.url) for r in replicas], **settings)
        server = ThreadedServer(create_app(config), lifespan="on")
        server.start()
        gw = Gateway(server, httpx.Client(base_url=server.url, timeout=5.0))
        running.append(gw)
        return gw

    yield make
    for gw in running:
        gw.client.close()
    stop_all([gw.server for gw in running])


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Gateway, FakeReplica]]:
    """One healthy replica behind a gateway, for tests that change nothing."""
    replica = FakeReplica("replica-1")
    replica.start()
    config = GatewayConfig(replicas=[(replica.name, replica.url)], check_interval=0.05)
    server = ThreadedServer(create_app(config), lifespan="on")
    server.start()
    gw = Gateway(server, httpx.Client(base_url=server.url, timeout=5.0))
    yield gw, replica
    gw.client.close()
    stop_all([server, replica])


# -- routing ------------------------------------------------------------------------------------


def test_routing_spreads_over_healthy_replicas(
    make_replicas: Callable[[int], list[FakeReplica]], make_gateway: Callable[..., Gateway]
) -> None:
    replicas = make_replicas(3)
    gw = make_gateway(replicas)
    seen: Counter[str] = Counter()
    for user in range(30):
        resp = gw.recommend(user_id=user, k=4)
        assert resp.status_code == 200
        body = resp.json()
        # The replica's own bytes come through: its private "replica" field names it.
        assert body["replica"] == resp.headers["X-Replica"]
        assert body["user_id"] == user and len(body["items"]) == 4 and body["degraded"] is False
        assert resp.headers["X-Degraded"] == "false"
        assert resp.headers["X-Model-Version"] == "v1"
        assert resp.headers["X-Model-Digest"].startswith("sha256:")
        assert resp.headers["content-type"] == "application/json"
        seen[resp.headers["X-Replica"]] += 1
    assert seen == {"replica-1": 10, "replica-2": 10, "replica-3": 10}


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        pytest.param("error", "5xx", id="5xx-retried-elsewhere"),
        pytest.param("stopped", "connect refused", id="stopped-ejected"),
        pytest.param("slow", "timeout", id="slow-hits-try-timeout"),
    ],
)
def test_failed_attempt_is_retried_on_another_replica(
    make_replicas: Callable[[int], list[FakeReplica]],
    make_gateway: Callable[..., Gateway],
    mode: str,
    reason: str,
) -> None:
    bad, good = make_replicas(2)
    # Active checks far apart: only the passive path (the failed request) may notice.
    gw = make_gateway([bad, good], check_interval=30.0, try_timeout=0.15, deadline=1.0)
    gw.wait_state(bad.name, "up")
    if mode == "stopped":
        bad.stop()
    else:
        bad.mode = mode  # type: ignore[assignment]

    started = time.monotonic()
    first = gw.recommend()
    elapsed = time.monotonic() - started
    assert first.status_code == 200
    assert first.headers["X-Replica"] == good.name
    assert first.headers["X-Degraded"] == "false"
    assert first.headers["X-Attempts"] == "2"  # round robin starts on the bad replica
    if mode == "slow":
        assert 0.15 <= elapsed < 1.0
    for _ in range(5):
        resp = gw.recommend()
        assert (resp.status_code, resp.headers["X-Replica"]) == (200, good.name)

    state = gw.replica(bad.name)
    assert state["state"] == "ejected" and state["reason"] == reason
    assert state["failures"] == 1 and state["ejections"] == 1
    text = gw.metrics()
    assert metric(text, "drillkit_gateway_ejections_total", replica=bad.name, reason=reason) == 1
    assert metric(text, "drillkit_gateway_retries_total") == 1
    assert metric(text, "drillkit_gateway_requests_total", outcome="ok") == 6
    assert metric(text, "drillkit_gateway_replica_up", replica=bad.name) == 0


def test_pooled_connections_to_a_restarted_replica_are_renewed_quietly(
    make_replicas: Callable[[int], list[FakeReplica]], make_gateway: Callable[..., Gateway]
) -> None:
    (replica,) = make_replicas(1)
    # Checks far apart, so only the request path meets the restart.
    gw = make_gateway([replica], check_interval=30.0)
    assert gw.recommend().status_code == 200  # leaves a keep-alive connection in the pool
    replica.stop()
    replica.start()
    resp = gw.recommend()
    assert (resp.status_code, resp.headers["X-Degraded"], resp.headers["X-Attempts"]) == (
        200,
        "false",
        "1",
    )
    state = gw.replica(replica.name)
    assert (state["state"], state["failures"]) == ("up", 0)


class _OneShotHandler(socketserver.StreamRequestHandler):
    """Serves one /recommend per connection, then closes the next one unanswered: the race of
    a replica closing an idle keep-alive connection just as the gateway reuses it."""

    def handle(self) -> None:
        served = False
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                chunk = self.rfile.readline()
                if not chunk:
                    return
                head += chunk
            if head.startswith(b"GET /readyz"):
                body = b'{"ready": true, "model_version": "v1", "model_digest": "d"}'
            elif served:
                return
            else:
                served = True
                body = b'{"user_id": 1, "items": [], "model_version": "v1", "degraded": false}'
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )


def test_connection_closed_by_replica_on_reuse_is_retried_transparently(
    make_gateway: Callable[..., Gateway],
) -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _OneShotHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        replica = FakeReplica("oneshot", port=server.server_address[1])  # only its name/url
        gw = make_gateway([replica], check_interval=30.0)
        for _ in range(3):
            resp = gw.recommend()
            assert (resp.status_code, resp.headers["X-Degraded"]) == (200, "false")
            assert resp.headers["X-Attempts"] == "1"
        state = gw.replica("oneshot")
        assert (state["state"], state["failures"]) == ("up", 0)
    finally:
        server.shutdown()
        server.server_close()


def test_chunked_replica_body_passes_through(
    make_replicas: Callable[[int], list[FakeReplica]], make_gateway: Callable[..., Gateway]
) -> None:
    (replica,) = make_replicas(1)
    gw = make_gateway([replica])
    replica.mode = "chunked"
    resp = gw.recommend(user_id=11, k=25)
    assert resp.status_code == 200
    body = resp.json()
    assert body["user_id"] == 11 and len(body["items"]) == 25
    assert resp.headers["X-Model-Version"] == "v1"


def test_client_error_from_replica_is_passed_through_not_retried(
    make_replicas: Callable[[int], list[FakeReplica]], make_gateway: Callable[..., Gateway]
) -> None:
    replicas = make_replicas(2)
    gw = make_gateway(replicas)
    resp = gw.recommend(user_id=-5)  # valid for the gateway, rejected by the replica
    assert resp.status_code == 422
    assert "error" in resp.json()
    assert resp.headers["X-Attempts"] == "1"
    assert sum(r.recommend_hits for r in replicas) == 1
    text = gw.metrics()
    assert metric(text, "drillkit_gateway_retries_total") == 0
    assert metric(text, "drillkit_gateway_requests_total", outcome="client_error") == 1
    assert all(r["state"] == "up" for r in gw.status()["replicas"])


# -- fallback -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        pytest.param("not_ready", "no replica up", id="none-up"),
        pytest.param("stopped", "no replica up", id="all-stopped"),
        pytest.param("error", "retries exhausted", id="every-attempt-fails"),
    ],
)
def test_no_replica_answers_serves_degraded_fallback(
    make_replicas: Callable[[int], list[FakeReplica]],
    make_gateway: Callable[..., Gateway],
    fault: str,
    why: str,
) -> None:
    replicas = make_replicas(3)
    gw = make_gateway(replicas, passive_ejection=False)
    for r in replicas:
        if fault == "stopped":
            r.stop()
        else:
            r.mode = fault  # type: ignore[assignment]
    if why == "no replica up":
        for r in replicas:
            gw.wait_state(r.name, "down")
        assert gw.client.get("/readyz").status_code == 503

    resp = gw.recommend(user_id=42, k=3)
    assert resp.status_code == 200
    assert resp.headers["X-Degraded"] == "true"
    assert resp.headers["X-Model-Version"] == "fallback"
    assert "X-Model-Digest" not in resp.headers
    assert "X-Replica" not in resp.headers
    assert resp.headers["X-Fallback-Reason"].startswith(why)
    assert resp.json() == {
        "user_id": 42,
        "items": FALLBACK[:3],
        "model_version": "fallback",
        "degraded": True,
        "cold_start": False,
    }
    text = gw.metrics()
    assert metric(text, "drillkit_gateway_fallbacks_total") == 1
    assert metric(text, "drillkit_gateway_requests_total", outcome="degraded") == 1


def test_deadline_bounds_the_whole_request(
    make_replicas: Callable[[int], list[FakeReplica]], make_gateway: Callable[..., Gateway]
) -> None:
    replicas = make_replicas(3)
    gw = make_gateway(replicas, check_interval=30.0, try_timeout=0.3, deadline=0.5, retries=2)
    for r in replicas:
        r.mode = "slow"
    started = time.monotonic()
    resp = gw.recommend()
    elapsed = time.monotonic() - started
    assert resp.headers["X-Degraded"] == "true"
    assert resp.headers["X-Fallback-Reason"].startswith("deadline exceeded")
    assert resp.headers["X-Attempts"] == "2"  # 0.3 s, then the 0.2 s left
    assert 0.45 <= elapsed < 0.7


def test_without_fallback_list_no_answer_is_a_503(
    make_replicas: Callable[[int], list[FakeReplica]], make_gateway: Callable[..., Gateway]
) -> None:
    (replica,) = make_replicas(1)
    gw = make_gateway([replica], fallback_items=[])
    replica.mode = "error"
    resp = gw.recommend()
    assert resp.status_code == 503
    assert resp.headers["X-Degraded"] == "true"
    assert "error" in resp.json()
    assert metric(gw.metrics(), "drillkit_gateway_requests_total", outcome="error") == 1


@pytest.mark.parametrize(
    ("settings", "expected_degraded"),
    [
        # One failed attempt and nothing else to try: the client gets the degraded fallback
        # every time round robin lands on the broken replica (its /readyz still says ready,
        # so active checks never remove it).
        pytest.param({"retries": 0, "passive_ejection": False}, 5, id="no-retry-no-ejection"),
        # The first hit fails; the ejection then steers everything to the good replica.
        pytest.param({"retries": 0, "passive_ejection": True}, 1, id="no-retry-with-ejection"),
        pytest.param({"retries": 2, "passive_ejection": True}, 0, id="defaults"),
    ],
)
def test_retry_policy_decides_what_the_client_sees(
    make_replicas: Callable[[int], list[FakeReplica]],
    make_gateway: Callable[..., Gateway],
    settings: dict[str, Any],
    expected_degraded: int,
) -> None:
    bad, good = make_replicas(2)
    # rise 1000: an ejected replica stays out for the whole test, so counts are exact.
    gw = make_gateway([bad, good], rise=1000, **settings)
    bad.mode = "error"
    answers = [gw.recommend() for _ in range(10)]
    assert all(a.status_code == 200 for a in answers)
    degraded = [a for a in answers if a.headers["X-Degraded"] == "true"]
    assert len(degraded) == expected_degraded


# -- active checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        pytest.param("stopped", "connect refused", id="stopped"),
        pytest.param("not_ready", "readyz 503", id="not-ready"),
        pytest.param("hang", "timeout", id="hung"),
    ],
)
def test_active_checks_mark_down_then_up_after_rise_checks(
    make_replicas: Callable[[int], list[FakeReplica]],
    make_gateway: Callable[..., Gateway],
    fault: str,
    reason: str,
) -> None:
    bad, good = make_replicas(2)
    gw = make_gateway([bad, good], fall=2, rise=3)
    first = gw.wait_state(bad.name, "up")
    assert first["reason"] == "first check ok"
    assert first["model_version"] == "v1" and first["model_digest"] == bad.model_digest

    if fault == "stopped":
        bad.stop()
    else:
        bad.mode = fault  # type: ignore[assignment]
    down = gw.wait_state(bad.name, "down")
    assert down["reason"] == reason
    assert down["since"] > first["since"]
    # While it is down, nothing is routed to it.
    assert {gw.recommend().headers["X-Replica"] for _ in range(4)} == {good.name}

    hits_before = bad.readyz_hits
    if fault == "stopped":
        bad.start()
        hits_before = 0
    else:
        bad.mode = "healthy"
    up = gw.wait_state(bad.name, "up")
    assert up["reason"] == "3 good checks"
    assert bad.readyz_hits - hits_before >= 3
    assert {gw.recommend().headers["X-Replica"] for _ in range(4)} == {bad.name, good.name}
    text = gw.metrics()
    changes = "drillkit_gateway_replica_state_changes_total"
    assert metric(text, changes, replica=bad.name, state="down") == 1
    assert metric(text, changes, replica=bad.name, state="up") == 2
    assert metric(text, "drillkit_gateway_replica_up", replica=bad.name) == 1


def test_ejected_replica_returns_after_rise_good_checks(
    make_replicas: Callable[[int], list[FakeReplica]], make_gateway: Callable[..., Gateway]
) -> None:
    bad, good = make_replicas(2)
    gw = make_gateway([bad, good], rise=2)
    bad.mode = "error"
    assert gw.recommend().headers["X-Replica"] == good.name
    ejected = gw.replica(bad.name)
    assert ejected["state"] == "ejected"
    bad.mode = "healthy"
    up = gw.wait_state(bad.name, "up")
    assert up["reason"] == "2 good checks"


# -- endpoints ----------------------------------------------------------------------------------


def test_status_shape(
    make_replicas: Callable[[int], list[FakeReplica]], make_gateway: Callable[..., Gateway]
) -> None:
    replicas = make_replicas(2)
    gw = make_gateway(replicas, name="gw-test")
    before = time.time()
    status = gw.status()
    assert status["gateway"] == "gw-test"
    assert status["time"] >= before
    config = status["config"]
    for key in ("check_interval", "check_timeout", "fall", "rise", "passive_ejection"):
        assert key in config
    assert config["retries"] == 2 and config["try_timeout"] == 0.2 and config["deadline"] == 1.0
    assert config["fallback_items"] == len(FALLBACK)
    assert [r["name"] for r in status["replicas"]] == ["replica-1", "replica-2"]
    for r, replica in zip(status["replicas"], replicas, strict=True):
        assert {
            "name",
            "url",
            "state",
            "since",
            "reason",
            "last_check",
            "model_version",
            "model_digest",
            "requests",
            "failures",
        } <= set(r)
        assert r["url"] == replica.url
        assert r["state"] == "up"
        assert r["since"] <= r["last_check"] <= status["time"]
        assert (r["requests"], r["failures"]) == (0, 0)
    json.dumps(status)  # plain JSON all the way down


def test_metrics_exposes_every_family(
    make_replicas: Callable[[int], list[FakeReplica]], make_gateway: Callable[..., Gateway]
) -> None:
    replicas = make_replicas(1)
    gw = make_gateway(replicas)
    assert gw.recommend().status_code == 200
    replicas[0].mode = "error"
    gw.recommend()
    resp = gw.client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    for name in (
        "drillkit_gateway_requests_total",
        "drillkit_gateway_request_seconds_bucket",
        "drillkit_gateway_replica_up",
        "drillkit_gateway_retries_total",
        "drillkit_gateway_fallbacks_total",
        "drillkit_gateway_ejections_total",
        "drillkit_gateway_replica_state_changes_total",
    ):
        assert name in text, name
    assert metric(text, "drillkit_gateway_request_seconds_count") == 2
    assert 'le="0.001"' in text and 'le="2.0"' in text


def test_healthz_and_readyz(
    make_replicas: Callable[[int], list[FakeReplica]], make_gateway: Callable[..., Gateway]
) -> None:
    (replica,) = make_replicas(1)
    gw = make_gateway([replica])
    assert gw.client.get("/healthz").json() == {"status": "alive"}
    ready = gw.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    replica.mode = "not_ready"
    gw.wait_state(replica.name, "down")
    not_ready = gw.client.get("/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["ready"] is False
    assert gw.client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="no-params"),
        pytest.param({"k": "5"}, id="missing-user"),
        pytest.param({"user_id": "abc"}, id="user-not-int"),
        pytest.param({"user_id": "1.5"}, id="user-float"),
        pytest.param({"user_id": " 7"}, id="user-space"),
        pytest.param({"user_id": "9" * 40}, id="user-huge"),
        pytest.param({"user_id": "1", "k": "0"}, id="k-zero"),
        pytest.param({"user_id": "1", "k": "1001"}, id="k-too-big"),
        pytest.param({"user_id": "1", "k": "ten"}, id="k-not-int"),
        pytest.param({"user_id": "1", "k": ""}, id="k-empty"),
    ],
)
def test_bad_query_is_a_400_json_error(
    shared: tuple[Gateway, FakeReplica], params: dict[str, str]
) -> None:
    gw, replica = shared
    hits = replica.recommend_hits
    resp = gw.client.get("/recommend", params=params)
    assert resp.status_code == 400
    assert isinstance(resp.json()["error"], str)
    assert replica.recommend_hits == hits


def test_each_attempt_tells_the_replica_when_the_gateway_stops_waiting(
    make_replicas: Callable[[int], list[FakeReplica]], make_gateway: Callable[..., Gateway]
) -> None:
    (replica,) = make_replicas(1)
    gw = make_gateway([replica], try_timeout=0.25)
    gw.wait_state(replica.name, "up")
    before = time.time()
    assert gw.recommend().status_code == 200
    after = time.time()
    assert replica.last_deadline is not None
    # the attempt's own timeout from the moment it was sent (3 decimals: a millisecond)
    assert before + 0.25 - 0.001 <= float(replica.last_deadline) <= after + 0.25 + 0.001


def test_default_k_is_ten(shared: tuple[Gateway, FakeReplica]) -> None:
    gw, _ = shared
    assert len(gw.client.get("/recommend", params={"user_id": 3}).json()["items"]) == 10


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"replicas": []}, id="no-replicas"),
        pytest.param({"replicas": [("a", "http://x"), ("a", "http://y")]}, id="duplicate-name"),
        pytest.param({"replicas": [("a", "x:1")]}, id="not-a-url"),
        pytest.param({"replicas": [("a", "http://:80")]}, id="url-without-host"),
        pytest.param({"fall": 0}, id="fall-zero"),
        pytest.param({"retries": -1}, id="negative-retries"),
        pytest.param({"deadline": 0}, id="zero-deadline"),
        pytest.param({"fallback_items": [{"score": 1}]}, id="fallback-without-item-id"),
    ],
)
def test_config_rejects_bad_settings(overrides: dict[str, Any]) -> None:
    settings: dict[str, Any] = {"replicas": [("a", "http://127.0.0.1:1")]}
    settings.update(overrides)
    with pytest.raises(InputError):
        GatewayConfig(**settings)


# -- the process --------------------------------------------------------------------------------


def test_gateway_module_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, drillkit.stacks.recommender.gateway\n"
        "heavy = {'torch', 'faiss', 'numpy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=30)


def test_cli_serves_and_stops_on_sigterm(
    make_replicas: Callable[[int], list[FakeReplica]], tmp_path: Path
) -> None:
    (replica,) = make_replicas(1)
    popular = fallback_version(tmp_path, json.dumps({"items": FALLBACK}))
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "drillkit.stacks.recommender.gateway",
            "--port",
            str(port),
            "--replica",
            f"{replica.name}={replica.url}",
            "--fallback",
            str(popular),
            "--check-interval",
            "0.05",
            "--retries",
            "1",
            "--no-passive-ejection",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, "gateway exited early"
                return False

        wait_for(ready, timeout=15, what="gateway /readyz")
        status = httpx.get(f"{url}/status").json()
        assert status["config"]["retries"] == 1
        assert status["config"]["passive_ejection"] is False
        assert httpx.get(f"{url}/recommend", params={"user_id": 1}).status_code == 200
        replica.stop()
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 503, what="replica marked down")
        resp = httpx.get(f"{url}/recommend", params={"user_id": 1, "k": 2})
        assert resp.json()["items"] == FALLBACK[:2]
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # uvicorn re-raises the signal after its graceful shutdown.
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "gateway gateway stopped: health checks cancelled, clients closed" in stderr
    assert "HTTP Request" not in stderr  # per-request httpx logging stays off
    # State changes are logged, one line each, with the reason.
    assert "replica replica-1: up -> down (connect refused)" in stderr


def fallback_version(root: Path, text: str) -> Path:
    """A model version whose one payload file is ``popular.json`` holding ``text``."""
    store = ModelStore(root / "store")

    def write(folder: Path) -> list[str]:
        (folder / "popular.json").write_text(text)
        return ["popular.json"]

    manifest = store.add_version(write, metrics={}, info={})
    return store.version_dir(manifest.version)


def _gateway_cli(version: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "drillkit.stacks.recommender.gateway",
            "--replica",
            "r=http://127.0.0.1:1",
            "--fallback",
            str(version),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "DRILLKIT_MODEL_KEY"},
    )


def test_cli_rejects_a_bad_fallback_file(tmp_path: Path) -> None:
    version = fallback_version(tmp_path, "{not json")
    proc = _gateway_cli(version)
    assert proc.returncode == 2
    assert str(version / "popular.json") in proc.stderr and "not valid JSON" in proc.stderr


def test_cli_refuses_a_fallback_list_its_manifest_does_not_vouch_for(tmp_path: Path) -> None:
    version = fallback_version(tmp_path, json.dumps({"items": FALLBACK}))
    (version / "popular.json").write_text(json.dumps({"items": [{"item_id": 666}]}))
    proc = _gateway_cli(version)
    assert proc.returncode == 1  # an artifact that failed verification
    assert "popular.json" in proc.stderr and "size" in proc.stderr


def test_requests_past_the_in_flight_cap_are_shed_at_once(
    make_replicas: Callable[[int], list[FakeReplica]], make_gateway: Callable[..., Gateway]
) -> None:
    (replica,) = make_replicas(1)
    gw = make_gateway(
        [replica], check_interval=30.0, try_timeout=2.0, deadline=3.0, max_outstanding=2
    )
    assert gw.status()["shedding"] == {"total": 0, "since": None, "last": None}
    replica.mode = "slow"
    replica.slow_seconds = 0.6
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = [pool.submit(gw.recommend, u) for u in (1, 2)]
        time.sleep(0.2)  # both in flight at the replica: it is at its cap
        started, wall = time.monotonic(), time.time()
        shed = gw.recommend(3)
        elapsed = time.monotonic() - started
        answers = [f.result() for f in slow]
    assert shed.headers["X-Degraded"] == "true"
    assert shed.headers["X-Fallback-Reason"].startswith("overloaded")
    assert elapsed < 0.2  # answered at once, not queued behind the slow ones
    assert [a.headers["X-Degraded"] for a in answers] == ["false", "false"]
    assert metric(gw.metrics(), "drillkit_gateway_shed_total") == 1
    assert gw.replica("replica-1")["state"] == "up"  # shedding is not a failure of the replica
    # /status dates the shedding episode, which is how a drill detects an overload
    shedding = gw.status()["shedding"]
    assert shedding["total"] == 1
    assert wall <= shedding["since"] <= time.time()
    assert shedding["last"] == shedding["since"]


# -- click events ------------------------------------------------------------------------------


def test_an_event_body_is_read_no_further_than_its_limit(
    make_replicas: Callable[[int], list[FakeReplica]], make_gateway: Callable[..., Gateway]
) -> None:
    # The store's port is closed: a well-formed event is not acknowledged (503); a body past
    # 1 KiB is refused before it is buffered, declared or streamed.
    port = free_port()
    gw = make_gateway(make_replicas(1), events=f"redis://127.0.0.1:{port}", events_timeout=0.2)
    good = {"producer": "p1", "seq": 0, "user": 1, "item": 2}
    assert gw.client.post("/events", json=good).status_code == 503
    # Declared huge, or streamed past the limit and never ended: answered at once, without
    # waiting for (and buffering) what the client says it will send.
    host, port_text = gw.client.base_url.host, gw.client.base_url.port
    head = f"POST /events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    declared = (head + "Content-Length: 10000000000\r\n\r\n{").encode()
    chunked = (head + "Transfer-Encoding: chunked\r\n\r\n800\r\n").encode() + b" " * 2048
    for opening in (declared, chunked):
        with socket.create_connection((host, port_text), timeout=3.0) as conn:
            conn.sendall(opening)
            answer = conn.recv(4096).decode()  # a timeout here: the gateway kept reading
        assert answer.startswith("HTTP/1.1 400"), answer
        assert "above 1024 bytes" in answer
    assert gw.client.post("/events", json={**good, "seq": -1}).status_code == 400
    text = gw.client.get("/metrics").text
    assert metric(text, "drillkit_gateway_events_total", outcome="failed") == 1
    assert metric(text, "drillkit_gateway_events_total", outcome="refused") == 3


def test_a_stack_without_events_answers_404(shared: tuple[Gateway, FakeReplica]) -> None:
    gw, _ = shared
    answer = gw.client.post("/events", json={"producer": "p", "seq": 0, "user": 1, "item": 2})
    assert answer.status_code == 404
