"""The stack's monitoring as a plan: which services, what Prometheus scrapes, and when a
drill runs it (``monitoring.enabled`` auto, on, off; a team's own Prometheus)."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import pytest

from drillkit.errors import BackendUnavailable
from drillkit.scenario import loads_scenario
from drillkit.stacks.plan import Join, ServicePlan
from drillkit.stacks.recommender import monitoring as monitoring_module
from drillkit.stacks.recommender.preset import RecommenderPreset, monitoring_services
from drillkit.stacks.recommender.spec import MonitoringSettings, RecommenderSpec

ON = MonitoringSettings(enabled="on")


def test_monitoring_on_adds_its_services_last_and_makes_them_targets() -> None:
    spec = RecommenderSpec(replicas=2, monitoring=ON)
    assert spec.service_names() == [
        "replica-1", "replica-2", "gateway", "alert-receiver", "alertmanager", "prometheus",
    ]  # fmt: skip
    zoned = RecommenderSpec(replicas=1, zones=("a", "b"), monitoring=ON)
    assert zoned.service_names()[-4:] == ["edge", "alert-receiver", "alertmanager", "prometheus"]
    for enabled in ("auto", "off"):
        quiet = RecommenderSpec(monitoring=MonitoringSettings(enabled=enabled))
        assert "prometheus" not in quiet.service_names()
    doc = (
        "version: 1\nname: x\nmonitoring: {enabled: on}\nfaults:\n"
        "  - {kind: kill_node, target: prometheus, at: 1s}\n"
    )
    assert loads_scenario(doc).target_roles()["prometheus"] == "monitoring"


def test_prometheus_scrapes_every_http_service_and_the_monitoring(tmp_path: Path) -> None:
    spec = RecommenderSpec(replicas=1, zones=("a", "b"), monitoring=ON)
    services = [
        ServicePlan.model_validate(
            {"name": s.name, "role": s.role, "zone": s.zone, "program": {"module": "m"}}
        )
        for s in spec.services()
        if s.role != "monitoring"
    ]
    planned = {s.name: s for s in monitoring_services(spec, services, tmp_path)}
    assert list(planned) == ["alert-receiver", "alertmanager", "prometheus"]
    args = planned["prometheus"].program.args
    targets = [
        str(a.parts[0])
        for before, a in itertools.pairwise(args)
        if before == "--target" and isinstance(a, Join)
    ]
    assert targets == [
        "drillkit-replica/replica-a1/a=",
        "drillkit-gateway/gateway-a/a=",
        "drillkit-replica/replica-b1/b=",
        "drillkit-gateway/gateway-b/b=",
        "drillkit-edge/edge=",
        "drillkit-monitoring/alert-receiver=",
        "drillkit-monitoring/alertmanager=",
        "drillkit-monitoring/prometheus=",
    ]  # fmt: skip  (no Redis: it speaks no HTTP)
    rules = tmp_path / "monitoring" / "rules" / "rules.yml"
    assert "RecommenderReplicaDown" in rules.read_text()


def test_auto_runs_monitoring_where_it_can(monkeypatch: pytest.MonkeyPatch) -> None:
    preset = RecommenderPreset()
    auto = RecommenderSpec()
    assert preset.resolve(auto, "docker").monitoring.enabled == "on"  # the image has them
    monkeypatch.setattr(monitoring_module, "installed", lambda: False)
    assert preset.resolve(auto, "local").monitoring.enabled == "off"
    spec, note = preset.decide_monitoring(auto, "local", required=False, external=False)
    assert spec.monitoring.enabled == "off"
    assert note is not None and "apt-get install prometheus prometheus-alertmanager" in note
    monkeypatch.setattr(monitoring_module, "installed", lambda: True)
    assert preset.resolve(auto, "local").monitoring.enabled == "on"
    off = dataclasses.replace(auto, monitoring=MonitoringSettings(enabled="off"))
    assert preset.decide_monitoring(off, "local", required=False, external=False)[1] is None


def test_a_drill_that_judges_alerts_without_prometheus_is_exit_3(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(monitoring_module, "installed", lambda: False)
    monkeypatch.setattr("drillkit.stacks.recommender.edge.shutil.which", lambda name: None)
    with pytest.raises(BackendUnavailable, match=r"apt-get install prometheus\)"):
        RecommenderPreset().decide_monitoring(
            RecommenderSpec(), "local", required=True, external=False
        )


def test_a_teams_own_prometheus_replaces_the_stacks() -> None:
    spec, note = RecommenderPreset().decide_monitoring(
        RecommenderSpec(monitoring=ON), "docker", required=True, external=True
    )
    assert spec.monitoring.enabled == "off" and note is None
    assert "prometheus" not in spec.service_names()


def test_a_stack_saved_before_monitoring_reads_back_without_it() -> None:
    data = RecommenderSpec(monitoring=ON).to_json()
    assert RecommenderSpec.from_json(data).monitoring.on
    del data["monitoring"]
    assert RecommenderSpec.from_json(data).monitoring.enabled == "off"


def test_the_delay_budget_adds_up() -> None:
    budget = MonitoringSettings().delay_budget()
    assert budget == {
        "scrape_interval": 1.0, "evaluation_interval": 2.0, "for": 2.0, "group_wait": 1.0,
    }  # fmt: skip
    _, grace = RecommenderPreset().alert_timing(RecommenderSpec())
    assert grace == 6.0 + 5.0
