"""``drillkit status``: the running stack at a glance, for the on-call engineer."""

from __future__ import annotations

import time
from typing import Any

import httpx
import typer

from drillkit.cli.console import make_table
from drillkit.cli.stack import STACK, active_stack
from drillkit.cli.state import terminal

_STATE_STYLE = {"up": "green", "down": "red", "ejected": "red"}


def status(
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh until Ctrl-C."),
    interval: float = typer.Option(
        2.0, "--interval", "-i", min=0.2, help="Seconds between refreshes (and the rate's window)."
    ),
    count: int = typer.Option(
        0, "--count", min=0, help="With --watch: stop after this many refreshes (0: never)."
    ),
    json_out: bool = typer.Option(False, "--json", help="One machine-readable snapshot."),
    stack: str | None = STACK,
) -> None:
    """Replica states, model versions, request rate, error and degraded share, open faults."""
    from drillkit.observe.status import gateway_urls, read_traffic, stack_status, traffic_rates

    t = terminal()
    state, backend = active_stack(stack)
    # The rate needs two readings; a one-shot status waits one short window for the second.
    window = interval if watch else min(interval, 1.0)
    gateways = gateway_urls(state)
    with httpx.Client(timeout=1.0) as client:
        before = read_traffic(client, gateways)
        if not watch:
            time.sleep(window)
            after = read_traffic(client, gateways)
            snapshot = stack_status(state, backend) | traffic_rates(before, after)
            snapshot["open_faults"] = _open_faults(state.id)
            if json_out:
                t.json(snapshot)
            else:
                t.parts(_render(snapshot))
            return
        shown = 0
        try:
            with t.watch() as show:
                while True:
                    time.sleep(window)
                    after = read_traffic(client, gateways)
                    snapshot = stack_status(state, backend) | traffic_rates(before, after)
                    snapshot["open_faults"] = _open_faults(state.id)
                    before = after
                    if json_out:
                        t.json(snapshot)
                    else:
                        show([*_render(snapshot), time.strftime("%H:%M:%S  Ctrl-C to stop")])
                    shown += 1
                    if count and shown >= count:
                        break
        except KeyboardInterrupt:
            pass  # the usual way out of --watch, not an error


def _open_faults(stack_id: str) -> list[dict[str, Any]]:
    from drillkit.journal import Journal

    return [
        {"fault": e.fault_id, "kind": e.kind, "target": e.target, "since": e.applied_at}
        for e in Journal.for_stack(stack_id).pending()
    ]


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _render(s: dict[str, Any]) -> list[Any]:
    rows, styles = [], []
    for svc in s["services"]:
        seen = svc.get("gateway_state") or ("-" if svc["role"] != "replica" else "?")
        health = "ready" if svc["ready"] else "running, not ready" if svc["alive"] else "down"
        rows.append(
            (
                svc["name"],
                svc["role"],
                health,
                seen,
                svc["model_version"] or "-",
                svc.get("reason") or "",
            )
        )
        styles.append(_STATE_STYLE.get(seen) if svc["ready"] else "red")
    rate = "-" if s["rate"] is None else f"{s['rate']:.1f} req/s"
    parts: list[Any] = [
        make_table(
            f"stack {s['stack']} ({s['backend']}{', GPU' if s['gpu'] else ''}) "
            f"at {s['gateway_url']}; model store CURRENT = {s['current_version']}",
            ["service", "role", "health", "gateway sees", "model", "why"],
            rows,
            styles,
        ),
        f"{s['ready_replicas']}/{s['replicas']} replicas ready; traffic {rate}, errors "
        f"{_share(s['error_share'])}, degraded {_share(s['degraded_share'])}",
    ]
    versions = {
        svc["model_version"]
        for svc in s["services"]
        if svc["role"] == "replica" and svc["model_version"]
    }
    if len(versions) > 1:
        parts.append(f"replicas serve different model versions: {', '.join(sorted(versions))}")
    rollout = s.get("rollout")
    if rollout and rollout.get("status") == "running":
        parts.append(
            f"rollout of {rollout['version']} (stable {rollout['stable']}): "
            f"{rollout['weight']:.0%} of users on {', '.join(rollout['canary']) or '-'}; "
            "`drillkit model rollout --status`, `--abort`"
        )
    if s.get("zones"):
        parts.append(
            make_table(
                "zones: the edge's view (HAProxy), each zone's Redis and cache hit ratio",
                ["zone", "edge sees", "haproxy status", "last check", "redis", "keys", "hit ratio"],
                [
                    (
                        z["zone"],
                        z["edge_state"] or "?",
                        z["edge_status"] or "-",
                        z["edge_check"] or "-",
                        z["redis"] or "-",
                        "-" if z["keys"] is None else str(z["keys"]),
                        _share(z["hit_ratio"]),
                    )
                    for z in s["zones"]
                ],
                [_STATE_STYLE.get(z["edge_state"] or "") for z in s["zones"]],
            )
        )
    if s["open_faults"]:
        parts.append(
            make_table(
                "open faults (undo with `drillkit heal`)",
                ["fault", "kind", "target", "since"],
                [
                    (
                        f["fault"],
                        f["kind"],
                        f["target"],
                        time.strftime("%H:%M:%S", time.localtime(f["since"])),
                    )
                    for f in s["open_faults"]
                ],
            )
        )
    else:
        parts.append("no open faults")
    return parts
