"""The replica sheds requests whose caller (the gateway) has already given up.

The model behind the app is a stand-in that counts its computations: what is checked is
whether the replica spends work on a request, not what the model answers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from drillkit.stacks.recommender.gateway import DEADLINE_HEADER
from drillkit.stacks.recommender.replica import (
    MAX_DEADLINE_SKEW,
    ReplicaConfig,
    ServedModel,
    create_app,
)
from drillkit.stacks.recommender.runtime import Recommendation


class CountingModel:
    device = "cpu"
    index_backend = "exact"

    def __init__(self) -> None:
        self.computed = 0

    def recommend(self, user_id: int, k: int) -> Recommendation:
        self.computed += 1
        return Recommendation(items=list(range(k)), scores=[1.0] * k, cold_start=False)


class App:
    def __init__(self, tmp_path: Path) -> None:
        self.app = create_app(ReplicaConfig(store=tmp_path / "store", name="replica-1"))
        self.model = CountingModel()
        served: Any = ServedModel(
            version="v1",
            manifest=None,  # type: ignore[arg-type]
            digest="d" * 64,
            model=self.model,  # type: ignore[arg-type]
            loaded_at=0.0,
        )
        self.app.state.replica.served = served

    def get(self, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://replica") as c:
                return await c.get(url, headers=headers)

        return asyncio.run(go())

    def metrics(self) -> str:
        return self.get("/metrics").text


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(tmp_path)


def outcome(app: App, name: str) -> float:
    prefix = f'drillkit_replica_requests_total{{outcome="{name}"}} '
    for line in app.metrics().splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


def test_a_request_past_its_deadline_gets_a_fast_503_and_no_computation(app: App) -> None:
    response = app.get(
        "/recommend?user_id=3&k=5", headers={DEADLINE_HEADER: f"{time.time() - 0.5:.3f}"}
    )
    assert response.status_code == 503
    assert "deadline passed" in response.json()["error"]
    assert app.model.computed == 0
    assert outcome(app, "expired") == 1
    assert outcome(app, "ok") == 0


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(None, id="no-deadline"),
        pytest.param({DEADLINE_HEADER: "FUTURE"}, id="future"),
        pytest.param({DEADLINE_HEADER: "SKEWED"}, id="far-past-is-a-clock-mismatch"),
        pytest.param({DEADLINE_HEADER: "nan"}, id="nan"),
    ],
)
def test_a_request_within_its_deadline_is_served(app: App, headers: dict[str, str] | None) -> None:
    if headers is not None:
        value = headers[DEADLINE_HEADER]
        if value == "FUTURE":
            headers = {DEADLINE_HEADER: f"{time.time() + 1.0:.3f}"}
        elif value == "SKEWED":
            headers = {DEADLINE_HEADER: f"{time.time() - MAX_DEADLINE_SKEW - 5:.3f}"}
    response = app.get("/recommend?user_id=3&k=5", headers=headers)
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == 5
    assert app.model.computed == 1
    assert outcome(app, "expired") == 0


def test_a_malformed_deadline_is_a_400(app: App) -> None:
    response = app.get("/recommend?user_id=3", headers={DEADLINE_HEADER: "soon"})
    assert response.status_code == 400
    assert DEADLINE_HEADER in response.json()["error"]
    assert app.model.computed == 0
