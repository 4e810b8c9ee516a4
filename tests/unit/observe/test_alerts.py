"""Reading what monitoring did: alert spans from a range query of ALERTS, the webhook
receiver's notifications, and the checks on a team's own Prometheus URL."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import httpx
import pytest

from drillkit.errors import InputError
from drillkit.observe.alerts import check_reachable, spans_from_matrix
from drillkit.stacks.recommender.alert_receiver import KEEP, MAX_BODY, Notifications, _handler


def series(state: str, times: list[float], **labels: str) -> dict[str, object]:
    return {
        "metric": {"__name__": "ALERTS", "alertname": "ReplicaDown", "alertstate": state, **labels},
        "values": [[t, "1"] for t in times],
    }


def steps(start: float, stop: float, step: float = 0.25) -> list[float]:
    out, t = [], start
    while t <= stop + 1e-9:
        out.append(round(t, 3))
        t += step
    return out


def test_pending_then_firing_then_resolved() -> None:
    found = spans_from_matrix(
        [series("pending", steps(100.0, 101.75)), series("firing", steps(102.0, 110.0))],
        0.25,
        end=130.0,
    )
    assert len(found) == 1
    alert = found[0]
    assert (alert.pending_at, alert.firing_at, alert.resolved_at) == (100.0, 102.0, 110.25)
    assert alert.labels == {"alertname": "ReplicaDown"}


def test_an_alert_firing_at_the_end_has_not_resolved_and_one_that_fires_twice_is_two() -> None:
    found = spans_from_matrix(
        [series("firing", steps(100.0, 103.0) + steps(110.0, 120.0), replica="r1")],
        0.25,
        end=120.0,
    )
    assert [(a.firing_at, a.resolved_at) for a in found] == [(100.0, 103.25), (110.0, None)]


def test_pending_that_never_fired_is_kept_without_a_firing_time() -> None:
    found = spans_from_matrix([series("pending", steps(100.0, 101.0))], 0.25, end=130.0)
    assert [(a.pending_at, a.firing_at) for a in found] == [(100.0, None)]


def test_the_receiver_keeps_what_a_drill_reads_and_refuses_what_is_not_a_payload() -> None:
    store = Notifications()
    store.add(
        {"status": "firing", "alerts": [{"status": "firing", "labels": {"alertname": "X"},
                                         "startsAt": "2026-12-04T00:00:00Z", "extra": "x"}]},
        12.5,
    )  # fmt: skip
    assert store.all() == [
        {
            "received_at": 12.5,
            "status": "firing",
            "alerts": [
                {"status": "firing", "labels": {"alertname": "X"},
                 "startsAt": "2026-12-04T00:00:00Z", "endsAt": ""}
            ],
        }
    ]  # fmt: skip
    bad: object
    for bad in ([], {"alerts": "x"}, {"alerts": [{"labels": "x"}]}):
        with pytest.raises(ValueError):
            store.add(bad, 1.0)
    for i in range(KEEP + 5):
        store.add({"alerts": []}, float(i))
    kept = store.all()
    assert len(kept) == KEEP and kept[-1]["received_at"] == KEEP + 4


@pytest.fixture
def receiver() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(Notifications()))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_receiver_over_http(receiver: str) -> None:
    ok = httpx.post(receiver + "/alerts", json={"alerts": [{"labels": {"alertname": "A"}}]})
    assert ok.status_code == 200
    assert httpx.post(receiver + "/alerts", content=b"{not json").status_code == 400
    big = b"x" * (MAX_BODY + 1)
    assert httpx.post(receiver + "/alerts", content=big).status_code == 413
    assert httpx.post(receiver + "/elsewhere", json={}).status_code == 404
    body = httpx.get(receiver + "/notifications").json()
    assert [n["alerts"][0]["labels"] for n in body["notifications"]] == [{"alertname": "A"}]
    assert json.loads(httpx.get(receiver + "/healthz").text) == {"ok": True}
    metrics = httpx.get(receiver + "/metrics").text
    assert "drillkit_alert_receiver_notifications_total 1\n" in metrics


@pytest.mark.parametrize("url", ["file:///etc/passwd", "prometheus:9090", "http://"])
def test_a_prometheus_url_must_be_http(url: str) -> None:
    with pytest.raises(InputError, match="expected an http"):
        check_reachable(url, "prometheus", "/api/v1/status/buildinfo")


def test_an_unreachable_prometheus_is_one_line() -> None:
    with pytest.raises(InputError, match=r"--prometheus http://127\.0\.0\.1:9: not reachable"):
        check_reachable("http://127.0.0.1:9", "prometheus", "/api/v1/status/buildinfo")
