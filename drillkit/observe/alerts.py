"""What monitoring did during a drill: when each alert was pending, firing and resolved (from
Prometheus's ``ALERTS`` series), and when a notification about it arrived (drillkit's webhook
receiver in the stack, or, with a team's own Alertmanager, when the alert first reached it).

Prometheus dates an alert's states to its rule evaluations; a range query of ``ALERTS`` at a
fine step reads them back after the drill, so nothing needs polling Prometheus while it runs
(only a team's Alertmanager is polled, at 4 Hz, since it keeps no history).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from drillkit.errors import InputError

__all__ = ["AlertReader", "ObservedAlert", "check_reachable"]

#: Query step of the ``ALERTS`` range query, and the most points one series may have.
STEP_S = 0.25
_MAX_POINTS = 10_000
_TIMEOUT = 5.0
_POLL_S = 0.25
_IGNORED_LABELS = frozenset({"__name__", "alertstate"})


@dataclass
class ObservedAlert:
    """One alert (a rule and its labels) from pending to resolved; epoch seconds."""

    name: str
    labels: dict[str, str]
    pending_at: float | None
    firing_at: float | None
    resolved_at: float | None  # None: still firing (or pending) when the drill ended
    notified_at: float | None = None

    def key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(self.labels.items()))


def check_reachable(url: str, what: str, path: str) -> None:
    """A one-line InputError when ``url`` is not an http(s) URL or does not answer ``path``
    with 200."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--{what} {url!r}: expected an http:// or https:// URL")
    try:
        response = httpx.get(url.rstrip("/") + path, timeout=_TIMEOUT)
    except httpx.HTTPError as exc:
        raise InputError(f"--{what} {url}: not reachable ({type(exc).__name__}: {exc})") from None
    if response.status_code != 200:
        raise InputError(f"--{what} {url}: {path} answered {response.status_code}, not 200")


def _epoch(text: str) -> float | None:
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    return None


def spans_from_matrix(result: list[dict[str, Any]], step: float, end: float) -> list[ObservedAlert]:
    """Alerts from a range query of ``ALERTS``: one series per alert and state, sampled every
    ``step``; a gap in the samples is a resolution (Prometheus marks a resolved alert's series
    stale). An alert still present at ``end`` has not resolved."""
    states: dict[tuple[tuple[str, str], ...], dict[str, list[float]]] = {}
    for series in result:
        metric = {str(k): str(v) for k, v in series.get("metric", {}).items()}
        state = metric.get("alertstate", "")
        key = tuple(sorted((k, v) for k, v in metric.items() if k not in _IGNORED_LABELS))
        times = sorted(float(t) for t, _ in series.get("values", []))
        states.setdefault(key, {}).setdefault(state, []).extend(times)
    out: list[ObservedAlert] = []
    for key, by_state in states.items():
        labels = dict(key)
        firing = _runs(sorted(by_state.get("firing", [])), step)
        pending = _runs(sorted(by_state.get("pending", [])), step)
        for start, last in firing:
            before = [p for p in pending if p[0] <= start and p[1] >= start - 1.5 * step]
            resolved = None if last >= end - 1.5 * step else last + step
            out.append(
                ObservedAlert(
                    name=labels.get("alertname", "?"),
                    labels=labels,
                    pending_at=before[-1][0] if before else None,
                    firing_at=start,
                    resolved_at=resolved,
                )
            )
        for start, last in pending:  # pending that never fired (for: not reached)
            if not any(f[0] >= start and f[0] <= last + 1.5 * step for f in firing):
                out.append(
                    ObservedAlert(
                        name=labels.get("alertname", "?"),
                        labels=labels,
                        pending_at=start,
                        firing_at=None,
                        resolved_at=None if last >= end - 1.5 * step else last + step,
                    )
                )
    return sorted(out, key=lambda a: (a.firing_at or a.pending_at or 0.0, a.name))


def _runs(times: list[float], step: float) -> list[tuple[float, float]]:
    """Maximal runs of samples no more than 1.5 steps apart: ``(first, last)``."""
    runs: list[tuple[float, float]] = []
    for t in times:
        if runs and t - runs[-1][1] <= 1.5 * step:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    return runs


@dataclass
class AlertReader:
    """Reads one drill's alerts from ``prometheus`` and its notifications from ``receiver``
    (drillkit's webhook receiver) or ``alertmanager`` (a team's own, polled while the drill
    runs). ``source`` says which: ``stack`` or ``external``."""

    prometheus: str
    receiver: str | None = None
    alertmanager: str | None = None
    source: str = "stack"
    _seen: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        if self.alertmanager is not None and self._thread is None:
            self._thread = threading.Thread(target=self._poll, name="alertmanager", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _poll(self) -> None:
        assert self.alertmanager is not None
        url = self.alertmanager.rstrip("/") + "/api/v2/alerts"
        with httpx.Client(timeout=_TIMEOUT) as client:
            while not self._stop.is_set():
                now = time.time()
                with contextlib.suppress(httpx.HTTPError, ValueError, TypeError, AttributeError):
                    for alert in client.get(url).json():
                        labels = {str(k): str(v) for k, v in alert["labels"].items()}
                        key = tuple(sorted(labels.items()))
                        with self._lock:
                            self._seen.setdefault(key, now)
                self._stop.wait(_POLL_S)

    def collect(self, start: float, end: float) -> list[ObservedAlert]:
        """Every alert between ``start`` and ``end`` (epoch seconds), with the time its first
        notification arrived. Raises httpx.HTTPError or ValueError when Prometheus does not
        answer."""
        step = max(STEP_S, (end - start) / _MAX_POINTS)
        response = httpx.get(
            self.prometheus.rstrip("/") + "/api/v1/query_range",
            params={"query": "ALERTS", "start": f"{start:.3f}", "end": f"{end:.3f}",
                    "step": f"{step:.3f}"},
            timeout=_TIMEOUT * 2,
        )  # fmt: skip
        response.raise_for_status()
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(f"Prometheus answered {body.get('status')}: {body.get('error')}")
        alerts = spans_from_matrix(body["data"]["result"], step, end)
        if self.receiver is not None:
            self._match_notifications(alerts)
        else:
            with self._lock:
                seen = dict(self._seen)
            for alert in alerts:
                first = seen.get(alert.key())
                if first is not None and alert.firing_at is not None:
                    alert.notified_at = max(first, alert.firing_at)
        return alerts

    def _match_notifications(self, alerts: list[ObservedAlert]) -> None:
        assert self.receiver is not None
        response = httpx.get(self.receiver.rstrip("/") + "/notifications", timeout=_TIMEOUT)
        response.raise_for_status()
        notes = response.json()["notifications"]
        for alert in alerts:
            if alert.firing_at is None:
                continue
            for note in notes:
                received = float(note["received_at"])
                if received < (alert.pending_at or alert.firing_at) - 1.0:
                    continue
                if alert.resolved_at is not None and received > alert.resolved_at + 60.0:
                    continue
                if any(
                    a.get("status") == "firing" and a.get("labels") == alert.labels
                    for a in note["alerts"]
                ):
                    alert.notified_at = received
                    break
