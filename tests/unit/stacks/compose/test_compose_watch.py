"""How a Compose project's own signals become detection events: Docker's healthcheck
transitions, HAProxy's server states mapped to services by address, a plain health URL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from drillkit.stacks.compose import watch

CSV = (
    "# pxname,svname,status,check_status,stot,addr\n"
    "web,web1,{one},L7OK,10,172.20.0.3:8000\n"
    "web,web2,UP,L7OK,12,172.20.0.4:8000\n"
    "web,BACKEND,UP,,22,\n"
)


def _client(handler: Any) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(handler))


def test_haproxy_servers_become_their_services_state_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watch, "_owners", lambda state: {"172.20.0.3": "web", "172.20.0.4": "web"})
    status = {"one": "UP"}
    client = _client(lambda request: httpx.Response(200, text=CSV.format(**status)))
    source = watch.HaproxyStatus("http://127.0.0.1:1/stats;csv", state=None, name="lb")  # type: ignore[arg-type]
    events, states = source.poll(client)
    assert events == [] and states == {"web@web1": "up", "web@web2": "up"}
    status["one"] = "DOWN"
    events, _ = source.poll(client)
    assert [(e.source, e.subject) for e in events] == [("lb", "web")]
    assert events[0].what.startswith("up->down (lb server web1: DOWN")


def test_a_health_url_is_up_while_it_answers_2xx() -> None:
    answers = iter([200, 503, 200])
    client = _client(lambda request: httpx.Response(next(answers)))
    source = watch.HttpHealth("http://127.0.0.1:1/healthz", "web", "web")
    assert source.poll(client) == ([], {"web": "up"})
    events, states = source.poll(client)
    assert states == {"web": "down"} and events[0].what == "up->down (web answered 503)"
    events, _ = source.poll(client)
    assert events[0].what == "down->up (web answered 200)"


def test_docker_healthcheck_events_are_dated_by_the_engine() -> None:
    source = object.__new__(watch.DockerHealth)  # no Engine: only the event parsing
    source._label_service = "com.docker.compose.service"
    source._pending, source._states = [], {}
    import threading

    source._lock = threading.Lock()

    def event(action: str, nano: int) -> dict[str, Any]:
        attributes = {"com.docker.compose.service": "web", "name": "app_web_1"}
        return {"Action": action, "timeNano": nano, "Actor": {"Attributes": attributes}}

    source._take(event("exec_start: python3 -c ...", 1))
    source._take(event("health_status: unhealthy", 1_700_000_000_250_000_000))
    source._take(event("health_status: unhealthy", 1_700_000_001_000_000_000))  # no change
    source._take(event("health_status: healthy", 1_700_000_005_000_000_000))
    events, _ = source.poll(httpx.Client())
    assert [(round(e.t, 3), e.subject, e.what.split(" ")[0]) for e in events] == [
        (1_700_000_000.25, "web", "up->down"),
        (1_700_000_005.0, "web", "down->up"),
    ]
