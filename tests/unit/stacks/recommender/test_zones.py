"""A zoned stack as a scenario describes it: names, targets, bad input, the edge's HAProxy
configuration (checked by HAProxy itself where it is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from drillkit.errors import BackendUnavailable, InputError, ScenarioError
from drillkit.scenario import loads_scenario
from drillkit.stacks.recommender.edge import (
    Zone,
    check_config,
    haproxy_binary,
    render_config,
    zone_env,
)
from drillkit.stacks.recommender.spec import EdgeSettings, RecommenderSpec
from drillkit.stacks.recommender.watch import edge_zones


def drill(stack: str, faults: str = "") -> str:
    text = f"version: 1\nname: t\nstack: {stack}\nload: {{duration: 20s}}\n"
    return text + (f"faults:\n{faults}" if faults else "")


def test_a_zoned_stack_names_its_services_by_zone_in_start_order() -> None:
    spec = RecommenderSpec(replicas=2, zones=("a", "b"))
    assert spec.service_names() == [
        "redis-a", "replica-a1", "replica-a2", "gateway-a",
        "redis-b", "replica-b1", "replica-b2", "gateway-b",
        "edge",
    ]  # fmt: skip
    assert spec.entry() == "edge"
    assert [s.zone for s in spec.services()][:4] == ["a"] * 4


def test_the_one_zone_stack_is_unchanged() -> None:
    spec = RecommenderSpec(replicas=2)
    assert spec.service_names() == ["replica-1", "replica-2", "gateway"]
    assert spec.entry() == "gateway"
    assert RecommenderSpec.from_json(spec.to_json()) == spec


def test_a_zoned_spec_survives_its_json() -> None:
    spec = RecommenderSpec(
        zones=("east", "west"),
        edge=EdgeSettings(mode="active-passive", config=Path("edge.cfg")),
    )
    assert RecommenderSpec.from_json(spec.to_json()) == spec


def test_without_a_cache_there_is_no_redis() -> None:
    made = loads_scenario(drill("{zones: [a, b], replicas: 1, cache: {enabled: false}}"))
    assert made.service_names() == ["replica-a1", "gateway-a", "replica-b1", "gateway-b", "edge"]


def test_zone_targets_resolve_and_reach_the_fault_kinds() -> None:
    made = loads_scenario(
        drill(
            "{zones: [a, b], replicas: 1}",
            "  - {kind: zone_outage, target: zone-b, at: 5s, params: {mode: cut}}\n"
            "  - {kind: cache_flush, target: [redis-a, redis-b], at: 5s}\n"
            "  - {kind: cut_network, target: gateway-a, at: 5s}\n"
            "  - {kind: latency, target: redis-a, at: 5s, params: {delay: 50ms}}\n"
            "  - {kind: kill_node, target: edge, at: 5s}\n",
        )
    )
    import random

    rng = random.Random(1)
    names = [*made.service_names()]
    assert made.faults[0].resolved_targets(names, rng) == ["zone-b"]
    assert made.faults[1].resolved_targets(names, rng) == ["redis-a", "redis-b"]


@pytest.mark.parametrize(
    ("stack", "faults", "message"),
    [
        pytest.param(
            "{replicas: 2}",
            "  - {kind: zone_outage, target: zone-a, at: 5s}\n",
            "unknown target 'zone-a' (this stack has replica-1, replica-2 and gateway; zones are "
            "targets of a zoned stack only (stack.zones))",
            id="zone-outage-on-one-zone",
        ),
        pytest.param(
            "{zones: [a, b]}",
            "  - {kind: zone_outage, target: zone-c, at: 5s}\n",
            "unknown target 'zone-c'",
            id="no-such-zone",
        ),
        pytest.param(
            "{zones: [a, b]}",
            "  - {kind: zone_outage, target: replica-a1, at: 5s}\n",
            "zone_outage cannot target 'replica-a1' (it targets a zone)",
            id="zone-outage-on-a-replica",
        ),
        pytest.param(
            "{zones: [a, b]}",
            "  - {kind: cache_flush, target: gateway-a, at: 5s}\n",
            "cache_flush cannot target 'gateway-a' (it targets a cache (Redis))",
            id="flush-a-gateway",
        ),
        pytest.param(
            "{replicas: 2}",
            "  - {kind: cut_network, target: gateway, at: 5s}\n",
            "cut_network cannot target the gateway of a one-zone stack",
            id="cut-the-one-gateway",
        ),
        pytest.param("{zones: [a]}", "", "a zoned stack has 2 zones or more", id="one-zone"),
        pytest.param("{zones: [a, a]}", "", "a zone is named twice", id="twice"),
        pytest.param("{zones: [A, b]}", "", "zones[0]", id="bad-name"),
        pytest.param("{edge: {fall: 3}}", "", "edge needs zones", id="edge-without-zones"),
        pytest.param(
            "{zones: [a, b], edge: {config: /etc/haproxy/haproxy.cfg}}",
            "",
            "is not a relative path",
            id="edge-config-outside",
        ),
        pytest.param(
            "{zones: [a, b], edge: {mode: active-standby}}", "", "edge.mode", id="edge-mode"
        ),
    ],
)
def test_bad_zone_input_is_one_line_before_anything_starts(
    stack: str, faults: str, message: str
) -> None:
    with pytest.raises(ScenarioError) as caught:
        loads_scenario(drill(stack, faults))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def zones(*names: str) -> list[Zone]:
    return [Zone(name, f"127.0.0.1:{9000 + i}") for i, name in enumerate(names)]


def config(**settings: Any) -> str:
    return render_config(
        EdgeSettings(**settings), zones("a", "b"), listen="127.0.0.1:9100", admin="127.0.0.1:9101"
    )


def test_the_edge_config_checks_each_zone_and_moves_retries_to_another_zone() -> None:
    text = config(check_interval=0.2, fall=2, rise=3, retries=2)
    assert "option httpchk GET /readyz" in text
    assert "inter 200ms fastinter 200ms downinter 200ms fall 2 rise 3" in text
    assert "observe layer7 error-limit 2 on-error mark-down" in text
    assert "    retries 2\n" in text and "option redispatch 1" in text
    assert "server a 127.0.0.1:9000 check\n" in text
    assert "server b 127.0.0.1:9001 check\n" in text
    assert "http-response set-header X-Zone %[srv_name]" in text
    assert "use-service prometheus-exporter" in text


def test_active_passive_makes_every_zone_but_the_first_a_backup() -> None:
    text = config(mode="active-passive")
    assert "server a 127.0.0.1:9000 check\n" in text
    assert "server b 127.0.0.1:9001 check backup\n" in text


def test_without_health_checks_nothing_is_checked_or_observed() -> None:
    text = config(health_checks=False)
    assert (
        "httpchk" not in text
        and "observe" not in text
        and " check"
        not in text.split("backend zones")[1]
        .split("frontend admin")[0]
        .replace("timeout check", "")
    )


@pytest.mark.zones
@pytest.mark.parametrize(
    "settings",
    [{}, {"mode": "active-passive"}, {"health_checks": False, "retries": 0}],
    ids=["default", "active-passive", "no-checks"],
)
def test_haproxy_accepts_every_config_drillkit_writes(
    settings: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(config(**settings))
    done = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.zones
def test_a_users_config_is_checked_with_its_variables_set(tmp_path: Path) -> None:
    good = tmp_path / "edge.cfg"
    good.write_text(
        "defaults\n  mode http\n  timeout connect 1s\n  timeout client 1s\n  timeout server 1s\n"
        'frontend f\n  bind "${DRILLKIT_EDGE_LISTEN}"\n  default_backend z\n'
        f'backend z\n  server a "${{{zone_env("a")}}}"\n  server b "${{{zone_env("b")}}}"\n'
    )
    check_config(good, ["a", "b"])
    bad = tmp_path / "bad.cfg"
    bad.write_text("frontend f\n  bind :1\n  frobnicate yes\n")
    with pytest.raises(InputError, match=r"haproxy -c refused it: .*frobnicate") as caught:
        check_config(bad, ["a", "b"])
    assert "\n" not in str(caught.value)
    with pytest.raises(InputError, match="no such file"):
        check_config(tmp_path / "missing.cfg", ["a"])


def test_missing_haproxy_is_exit_3_naming_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(BackendUnavailable, match=r"apt-get install haproxy") as caught:
        haproxy_binary()
    assert caught.value.exit_code == 3
    from drillkit.stacks.recommender.preset import redis_binary

    with pytest.raises(BackendUnavailable, match=r"apt-get install redis-server"):
        redis_binary()


# A real line of HAProxy 2.6's stats CSV has ~100 fields; these are the ones drillkit reads.
_CSV = (
    "# pxname,svname,stot,status,check_status,lastchg\n"
    "recommend,FRONTEND,10,OPEN,,\n"
    "zones,a,5,UP,L7OK,12\n"
    "zones,b,5,DOWN 1/2,L4CON,1\n"
    "zones,c,0,DOWN,L7TOUT,3\n"
    "zones,d,0,no check,,\n"
    "zones,BACKEND,10,UP,,12\n"
)


def test_the_edge_view_reads_haproxy_states() -> None:
    seen = edge_zones(_CSV)
    assert {z: row["state"] for z, row in seen.items()} == {
        "a": "up",
        "b": "down",  # HAProxy says DOWN while counting rises: not yet back
        "c": "down",
        "d": "up",  # health checks off: always routed
    }
    assert seen["c"]["check"] == "L7TOUT"
    with pytest.raises(ValueError, match="not HAProxy stats CSV"):
        edge_zones("<html>")
