"""Ask a running stack how it is: process liveness, replica readiness, the gateway's view."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from drillkit.backends.base import Backend, StackState
from drillkit.stacks.base import get_preset
from drillkit.stacks.plan import HttpCheck

_REQUESTS = "drillkit_gateway_requests"


def stack_status(
    state: StackState[Any], backend: Backend[Any], *, timeout: float = 1.0
) -> dict[str, Any]:
    """A JSON-ready snapshot of the stack (the shape of ``drillkit stack status --json``)."""
    gateway_view: dict[str, dict[str, Any]] = {}
    services: list[dict[str, Any]] = []
    with httpx.Client(timeout=timeout) as client:
        for url in gateway_urls(state):  # a zoned stack has one gateway per zone
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
                body = client.get(url + "/status").json()
                gateway_view.update({r["name"]: r for r in body["replicas"]})
        for service in state.services.values():
            alive = backend.service_alive(state, service.name)
            check = state.plan.service(service.name).ready
            ready = False
            detail: dict[str, Any] = {}
            if alive and isinstance(check, HttpCheck):
                # One request: its status is the readiness, its body says why (not).
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    response = client.get(service.url(check.port) + check.path)
                    ready = response.status_code == 200
                    answer = response.json()
                    detail = answer if isinstance(answer, dict) else {}
            elif alive:
                ready = backend.ready(state, service.name, timeout=timeout)
            entry: dict[str, Any] = {
                "name": service.name,
                "role": service.role,
                "url": service.url() if "http" in service.ports else None,
                "where": service.ident(),
                "pid": getattr(service, "pid", None),
                "alive": alive,
                "ready": ready,
                "model_version": detail.get("model_version"),
                "model_digest": detail.get("model_digest"),
                "log": service.log,
            }
            if not ready and detail.get("reason"):
                entry["reason"] = detail["reason"]
            if service.name in gateway_view:
                seen = gateway_view[service.name]
                entry["gateway_state"] = seen.get("state")
                entry["gateway_since"] = seen.get("since")
            services.append(entry)
    replicas = [s for s in services if s["role"] == "replica"]
    entry_service = state.plan.entry.service
    return {
        "stack": state.id,
        "backend": state.backend,
        "preset": state.plan.preset,
        "gateway_url": state.entry_url,
        "store": None,
        "current_version": None,
        **get_preset(state.plan.preset).describe(state),
        "gpu": state.gpu,
        "replicas": len(replicas),
        "ready_replicas": sum(1 for s in replicas if s["ready"]),
        "gateway_ready": any(s["ready"] for s in services if s["name"] == entry_service),
        "services": services,
    }


@dataclass(frozen=True)
class Traffic:
    """The gateway's request counters at one moment (``GET /metrics``)."""

    at: float  # monotonic seconds
    by_outcome: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.by_outcome.values())


def gateway_urls(state: StackState[Any]) -> list[str]:
    """Where each gateway of the stack answers (one; a zoned stack's one per zone)."""
    return [state.service(s.name).url() for s in state.plan.services if s.role == "gateway"] or [
        state.entry_url
    ]


def read_traffic(client: httpx.Client, gateway_urls: list[str]) -> Traffic | None:
    """The gateways' counters now, added up; None when no gateway answers."""
    counts: dict[str, float] = {}
    answered = False
    for url in gateway_urls:
        try:
            text = client.get(url + "/metrics").text
        except httpx.HTTPError:
            continue
        answered = True
        with contextlib.suppress(ValueError):
            for family in text_string_to_metric_families(text):
                if family.name != _REQUESTS:
                    continue
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        outcome = sample.labels.get("outcome", "?")
                        counts[outcome] = counts.get(outcome, 0.0) + sample.value
    return Traffic(time.monotonic(), counts) if answered else None


def traffic_rates(before: Traffic | None, after: Traffic | None) -> dict[str, float | None]:
    """Request rate and the shares of errors and degraded answers between two readings.

    Shares are of the requests the gateway answered in the interval (client errors, 4xx,
    excluded: they say nothing about the stack's health); None when nothing was answered.
    """
    if before is None or after is None or after.at <= before.at:
        return {"rate": None, "error_share": None, "degraded_share": None}

    def delta(outcome: str) -> float:
        # A restarted gateway starts its counters again from zero.
        return max(0.0, after.by_outcome.get(outcome, 0.0) - before.by_outcome.get(outcome, 0.0))

    answered = delta("ok") + delta("degraded") + delta("error")
    total = answered + delta("client_error")
    return {
        "rate": total / (after.at - before.at),
        "error_share": delta("error") / answered if answered else None,
        "degraded_share": delta("degraded") / answered if answered else None,
    }
