"""The gateway's canary pool against real local servers: a per-user split set through the
token-protected ``POST /admin/rollout``, retries across pools, and the per-pool counters a
rollout's analysis reads."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from drillkit.stacks.recommender.gateway import GatewayConfig, create_app, user_bucket
from tests.unit.stacks.recommender.fake_replica import FakeReplica, ThreadedServer, stop_all

TOKEN = "s3cret-token"
CANARY_DIGEST = "sha256:" + "cd" * 32


@pytest.fixture
def stack() -> Iterator[Callable[..., tuple[httpx.Client, list[FakeReplica]]]]:
    started: list[Any] = []
    clients: list[httpx.Client] = []

    def make(token: str | None = TOKEN, **settings: Any) -> tuple[httpx.Client, list[FakeReplica]]:
        replicas = [FakeReplica(f"replica-{i}") for i in (1, 2, 3)]
        replicas[2].model_version, replicas[2].model_digest = "v2", CANARY_DIGEST
        for r in replicas:
            r.start()
            started.append(r)
        config = GatewayConfig(
            replicas=[(r.name, r.url) for r in replicas],
            check_interval=0.05,
            try_timeout=0.3,
            deadline=1.0,
            **settings,
        )
        server = ThreadedServer(create_app(config, admin_token=token), lifespan="on")
        server.start()
        started.append(server)
        client = httpx.Client(base_url=server.url, timeout=5.0)
        clients.append(client)
        return client, replicas

    yield make
    for client in clients:
        client.close()
    stop_all(started)


def _split(client: httpx.Client, body: Any, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/admin/rollout", json=body, headers=headers)


def test_user_buckets_spread_evenly_and_each_user_keeps_one() -> None:
    buckets = [user_bucket(u) for u in range(100_000)]
    assert all(0.0 <= b < 1.0 for b in buckets)
    for share in (0.01, 0.1, 0.5):
        below = sum(b < share for b in buckets) / len(buckets)
        assert below == pytest.approx(share, abs=0.005)
    assert [user_bucket(u) for u in range(10)] == buckets[:10]


def test_the_split_is_by_user_and_sticky(
    stack: Callable[..., tuple[httpx.Client, list[FakeReplica]]],
) -> None:
    client, _ = stack()
    answer = _split(client, {"canary": ["replica-3"], "weight": 0.3, "version": "v2"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["canary"] == ["replica-3"] and answer.json()["weight"] == 0.3
    pools: dict[int, set[str]] = {}
    for _ in range(2):
        for user in range(300):
            response = client.get("/recommend", params={"user_id": user})
            assert response.status_code == 200
            pools.setdefault(user, set()).add(response.headers["X-Pool"])
            on_canary = response.headers["X-Replica"] == "replica-3"
            assert on_canary == (user_bucket(user) < 0.3), user
    assert all(len(seen) == 1 for seen in pools.values())  # a user never switches versions
    share = sum("canary" in seen for seen in pools.values()) / len(pools)
    assert share == pytest.approx(0.3, abs=0.06)
    rollout = client.get("/status").json()["rollout"]
    assert rollout["version"] == "v2" and rollout["canary"] == ["replica-3"]
    assert rollout["pools"]["canary"]["attempts_ok"] == sum(
        2 for u in pools if user_bucket(u) < 0.3
    )
    assert (
        sum(rollout["pools"]["stable"]["latency_counts"])
        == rollout["pools"]["stable"]["attempts_ok"]
    )
    # A share of 0 keeps the canary pool but sends no user to it: the first step of a rollback.
    assert _split(client, {"canary": ["replica-3"], "weight": 0.0}).status_code == 200
    seen = Counter(
        client.get("/recommend", params={"user_id": u}).headers["X-Replica"] for u in range(60)
    )
    assert "replica-3" not in seen
    # Merged again: every replica is stable.
    assert _split(client, {"canary": [], "weight": 0}).status_code == 200
    seen = Counter(
        client.get("/recommend", params={"user_id": u}).headers["X-Replica"] for u in range(60)
    )
    assert set(seen) == {"replica-1", "replica-2", "replica-3"}


def test_a_failed_canary_attempt_is_retried_on_stable_and_counted(
    stack: Callable[..., tuple[httpx.Client, list[FakeReplica]]],
) -> None:
    client, replicas = stack()
    assert _split(client, {"canary": ["replica-3"], "weight": 1.0}).status_code == 200
    replicas[2].mode = "error"
    response = client.get("/recommend", params={"user_id": 1})
    assert response.status_code == 200 and response.headers["X-Attempts"] == "2"
    assert response.headers["X-Pool"] == "stable"  # the canary failed; stable answered
    canary = client.get("/status").json()["rollout"]["pools"]["canary"]
    assert canary["attempts_failed"] == 1 and canary["requests_ok"] == 1
    metrics = client.get("/metrics").text
    assert 'drillkit_gateway_pool_attempts_total{outcome="failed",pool="canary"} 1.0' in metrics
    assert "drillkit_gateway_canary_weight 1.0" in metrics


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        pytest.param({"canary": ["replica-9"], "weight": 0.1}, 400, "unknown replicas", id="name"),
        pytest.param({"canary": ["replica-3"], "weight": 1.5}, 400, "0..1", id="weight"),
        pytest.param({"canary": [], "weight": 0.5}, 400, "needs canary", id="no-canary"),
        pytest.param({"canary": "replica-3", "weight": 0.1}, 400, "a list", id="not-a-list"),
        pytest.param({"canary": [], "weight": True}, 400, "a number", id="bool-weight"),
        pytest.param({"canary": [], "extra": 1}, 400, "expected an object", id="unknown-key"),
        pytest.param([1, 2], 400, "expected an object", id="not-an-object"),
    ],
)
def test_a_bad_split_is_refused_and_changes_nothing(
    stack: Callable[..., tuple[httpx.Client, list[FakeReplica]]],
    body: Any,
    status: int,
    message: str,
) -> None:
    client, _ = stack()
    response = _split(client, body)
    assert response.status_code == status and message in response.json()["error"]
    rollout = client.get("/status").json()["rollout"]
    assert rollout["weight"] == 0 and rollout["canary"] == [] and rollout["changes"] == 0


def test_the_split_needs_the_admin_token(
    stack: Callable[..., tuple[httpx.Client, list[FakeReplica]]],
) -> None:
    client, _ = stack()
    body = {"canary": ["replica-3"], "weight": 1.0}
    assert _split(client, body, token=None).status_code == 401
    assert _split(client, body, token="wrong").status_code == 401
    closed, _ = stack(token=None)
    assert _split(closed, body).status_code == 403
    assert client.get("/status").json()["rollout"]["weight"] == 0


def test_a_stable_user_never_reaches_the_canary_even_when_stable_fails(
    stack: Callable[..., tuple[httpx.Client, list[FakeReplica]]],
) -> None:
    client, replicas = stack(retries=2)
    # During a rollback the share is 0 while the canary still serves the new version.
    assert _split(client, {"canary": ["replica-3"], "weight": 0.0}).status_code == 200
    replicas[0].mode = replicas[1].mode = "error"
    for user in range(40):
        response = client.get("/recommend", params={"user_id": user})
        assert response.headers.get("X-Replica") != "replica-3", user
        assert response.headers["X-Degraded"] == "true"  # the fallback, not the new version
    assert client.get("/status").json()["rollout"]["pools"]["canary"]["attempts_ok"] == 0
