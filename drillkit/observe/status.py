"""Ask a running stack how it is: process liveness, replica readiness, the gateway's view."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx

from drillkit.backends.base import Backend, StackState
from drillkit.stacks.recommender.store import ModelStore


def stack_status(state: StackState, backend: Backend, *, timeout: float = 1.0) -> dict[str, Any]:
    """A JSON-ready snapshot of the stack (the shape of ``drillkit stack status --json``)."""
    gateway_view: dict[str, dict[str, Any]] = {}
    services: list[dict[str, Any]] = []
    with httpx.Client(timeout=timeout) as client:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            body = client.get(state.gateway_url + "/status").json()
            gateway_view = {r["name"]: r for r in body["replicas"]}
        for service in state.services.values():
            alive = backend.service_alive(state, service.name)
            ready = False
            detail: dict[str, Any] = {}
            if alive:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    path = "/health" if service.role == "proxy" else "/readyz"
                    response = client.get(service.url + path)
                    ready = response.status_code == 200
                    detail = response.json()
            entry: dict[str, Any] = {
                "name": service.name,
                "role": service.role,
                "url": service.url,
                "pid": service.pid,
                "alive": alive,
                "ready": ready,
                "model_version": detail.get("model_version"),
                "model_digest": detail.get("model_digest"),
                "log": service.log,
            }
            if not ready and detail.get("reason"):
                entry["reason"] = detail["reason"]
            if service.role == "replica":
                seen = gateway_view.get(service.name, {})
                entry["gateway_state"] = seen.get("state")
                entry["gateway_since"] = seen.get("since")
            services.append(entry)
    replicas = [s for s in services if s["role"] == "replica"]
    store = ModelStore(Path(state.store))
    return {
        "stack": state.id,
        "backend": state.backend,
        "gateway_url": state.gateway_url,
        "store": state.store,
        "current_version": store.current(),
        "gpu": state.gpu,
        "replicas": len(replicas),
        "ready_replicas": sum(1 for s in replicas if s["ready"]),
        "gateway_ready": any(s["ready"] for s in services if s["role"] == "gateway"),
        "services": services,
    }
