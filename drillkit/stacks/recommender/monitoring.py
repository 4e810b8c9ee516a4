"""The stack's monitoring: Prometheus scraping every service, the shipped alert rules, and
Alertmanager sending to drillkit's webhook receiver.

Everything here is rendered from :class:`~drillkit.stacks.recommender.spec.MonitoringSettings`
(the scenario's ``monitoring:`` section): the rules (:func:`render_rules`, what ``drillkit
monitoring rules`` prints), Prometheus's configuration (:func:`render_prometheus_config`) and
Alertmanager's (:func:`render_alertmanager_config`). The programs are Debian's
``prometheus`` and ``prometheus-alertmanager``; each runs as the child of this module's
process (:mod:`drillkit.stacks.recommender.keeper`), so drillkit's kill and pause faults act
on them as on any service::

    python -m drillkit.stacks.recommender.monitoring prometheus --listen H:P --workdir DIR \\
        --rules FILE --alertmanager URL --target JOB/SERVICE[/ZONE]=URL ...
    python -m drillkit.stacks.recommender.monitoring alertmanager --listen H:P --workdir DIR \\
        --webhook URL

Scrape targets carry the labels ``service``, ``role`` and, in a zoned stack, ``zone``; the job
is ``drillkit-<role>``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from drillkit.errors import InputError
from drillkit.stacks.recommender.keeper import run_child
from drillkit.stacks.recommender.spec import MonitoringSettings

__all__ = [
    "ALERTMANAGER_PACKAGE",
    "PROMETHEUS_PACKAGE",
    "RULES",
    "AlertRule",
    "alertmanager_binary",
    "check_rules",
    "installed",
    "prom_duration",
    "prometheus_binary",
    "render_alertmanager_config",
    "render_prometheus_config",
    "render_rules",
]

PROMETHEUS_PACKAGE = "prometheus"
ALERTMANAGER_PACKAGE = "prometheus-alertmanager"
_PROMTOOL_TIMEOUT = 30.0


def prometheus_binary() -> str:
    """Prometheus's path; exit 3 naming the package when it is not installed."""
    from drillkit.stacks.recommender.edge import required_program

    return required_program(
        "prometheus",
        "the stack's monitoring is Prometheus",
        PROMETHEUS_PACKAGE,
        ", or set monitoring.enabled: off",
    )


def alertmanager_binary() -> str:
    """Alertmanager's path (Debian names it ``prometheus-alertmanager``); exit 3 naming the
    package when it is not installed."""
    from drillkit.stacks.recommender.edge import required_program

    return required_program(
        "prometheus-alertmanager",
        "the stack's alerts go through Alertmanager",
        ALERTMANAGER_PACKAGE,
        ", or set monitoring.enabled: off",
    )


def installed() -> bool:
    """Whether both programs are on the ``PATH`` (``monitoring.enabled: auto``)."""
    return bool(shutil.which("prometheus") and shutil.which("prometheus-alertmanager"))


def prom_duration(seconds: float) -> str:
    """A duration as Prometheus and Alertmanager read it: whole seconds as ``5s``, anything
    finer in milliseconds (``1500ms``); they take no fractions."""
    millis = max(1, round(seconds * 1000))
    if millis % 3_600_000 == 0:
        return f"{millis // 3_600_000}h"
    if millis % 60_000 == 0:
        return f"{millis // 60_000}m"
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"


# -- the shipped rules --------------------------------------------------------------------------
@dataclass(frozen=True)
class AlertRule:
    """One shipped rule. ``expr`` may name ``{window}`` (the rate window), ``{long}`` (the
    refusal window: a refused version stays visible for a while) and ``{p99_s}``; ``fast``
    rules take ``for: alert_for``, the others none (they fire on their first evaluation)."""

    name: str
    expr: str
    severity: str
    summary: str
    fires_for: bool = True


#: Every rule the stack ships, in the order ``drillkit monitoring rules`` prints them. The
#: names are the sections of examples/runbook.md.
RULES: tuple[AlertRule, ...] = (
    AlertRule(
        "RecommenderReplicaDown",
        "drillkit_gateway_replica_up == 0",
        "warning",
        "the gateway routes around {{ $labels.replica }}: it is down, cut off or ejected",
    ),
    AlertRule(
        "RecommenderTargetDown",
        'up{job!~"drillkit-(gateway|edge)"} == 0',
        "warning",
        "Prometheus cannot scrape {{ $labels.service }}: the process is dead or stuck",
    ),
    AlertRule(
        "RecommenderGatewayDown",
        'up{job="drillkit-gateway"} == 0',
        "page",
        "a gateway does not answer its scrape: its zone's recommendations fail",
    ),
    AlertRule(
        "RecommenderEdgeDown",
        'up{job="drillkit-edge"} == 0',
        "page",
        "the edge load balancer does not answer its scrape: every recommendation fails",
    ),
    AlertRule(
        "RecommenderZoneDown",
        'haproxy_server_status{proxy="zones",state="DOWN"} == 1',
        "page",
        "the edge took zone {{ $labels.server }} out: its health checks fail",
    ),
    AlertRule(
        "RecommenderErrors",
        'sum by (service) (rate(drillkit_gateway_requests_total{outcome="error"}[{window}]))'
        ' / sum by (service) (rate(drillkit_gateway_requests_total{outcome!="client_error"}'
        "[{window}])) > 0.005",
        "page",
        "more than 0.5% of {{ $labels.service }}'s recommendations fail",
    ),
    AlertRule(
        "RecommenderDegraded",
        'sum by (service) (rate(drillkit_gateway_requests_total{outcome="degraded"}[{window}]))'
        ' / sum by (service) (rate(drillkit_gateway_requests_total{outcome!="client_error"}'
        "[{window}])) > 0.05",
        "page",
        "more than 5% of {{ $labels.service }}'s answers are the popular-items fallback",
    ),
    AlertRule(
        "RecommenderSlow",
        "histogram_quantile(0.99, sum by (service, le)"
        " (rate(drillkit_gateway_request_seconds_bucket[{window}]))) > {p99_s}",
        "warning",
        "{{ $labels.service }}'s p99 latency is above the SLO",
    ),
    AlertRule(
        "RecommenderLoadShedding",
        "sum by (service) (rate(drillkit_gateway_shed_total[{window}])) > 0",
        "warning",
        "{{ $labels.service }} sheds load: every replica is at its in-flight cap",
    ),
    AlertRule(
        "RecommenderModelRefused",
        "increase(drillkit_replica_model_refusals_total[{long}]) > 0",
        "page",
        "{{ $labels.service }} refused a model version (bad digest, signature or outputs)",
        fires_for=False,
    ),
    AlertRule(
        "RecommenderMixedVersions",
        "count(count by (version) (drillkit_replica_model_info == 1)) > 1",
        "warning",
        "replicas serve different model versions",
    ),
    AlertRule(
        "RecommenderCacheDown",
        'sum by (zone) (rate(drillkit_replica_cache_lookups_total{result="bypass"}[{window}]))'
        " / sum by (zone) (rate(drillkit_replica_cache_lookups_total[{window}])) > 0.5",
        "warning",
        "zone {{ $labels.zone }}'s replicas answer without their cache: Redis is down or slow",
    ),
    AlertRule(
        "RecommenderEventsFailing",
        'sum by (service) (rate(drillkit_gateway_events_total{outcome="failed"}[{window}]))'
        ' / sum by (service) (rate(drillkit_gateway_events_total{outcome!="refused"}'
        "[{window}])) > 0.01",
        "page",
        "{{ $labels.service }} cannot store more than 1% of click events: the event store is "
        "down or slow",
    ),
    AlertRule(
        "RecommenderBackupFailing",
        "increase(drillkit_backup_failures_total[{long}]) > 0",
        "warning",
        "{{ $labels.kind }} backups fail: a restore now would lose more than the schedule says",
        fires_for=False,
    ),
    AlertRule(
        "RecommenderFeaturesStale",
        "drillkit_features_stale == 1",
        "warning",
        "users' recent-activity features are stale: the event store is unreachable, emptied or "
        "the updater is behind",
    ),
    # GPU failure modes, on the series (names and labels) of NVIDIA's dcgm-exporter, so the
    # rules a team runs on dcgm-exporter are the ones a drill fires.
    AlertRule(
        "RecommenderGpuXidError",
        "DCGM_FI_DEV_XID_ERRORS > 0",
        "page",
        "{{ $labels.service }}'s GPU reported Xid {{ $value }}: inference on it fails while the "
        "process may look alive",
    ),
    AlertRule(
        "RecommenderGpuMemoryFull",
        "DCGM_FI_DEV_FB_FREE / (DCGM_FI_DEV_FB_FREE + DCGM_FI_DEV_FB_USED) < 0.05",
        "warning",
        "{{ $labels.service }}'s GPU has less than 5% of its memory free: inference will hit "
        "CUDA out of memory",
    ),
    # NVML's clock throttle reasons are a bitmask and PromQL has no bitwise operators: bit b
    # is set when floor(x / b) % 2 == 1. Hardware reasons only: HW slowdown (0x8), SW thermal
    # (0x20), HW thermal (0x40), HW power brake (0x80); idle, application clocks, the SW power
    # cap, sync boost and display clocks are normal.
    AlertRule(
        "RecommenderGpuThrottled",
        "floor(DCGM_FI_DEV_CLOCK_THROTTLE_REASONS / 8) % 2 == 1"
        " or floor(DCGM_FI_DEV_CLOCK_THROTTLE_REASONS / 32) % 2 == 1"
        " or floor(DCGM_FI_DEV_CLOCK_THROTTLE_REASONS / 64) % 2 == 1"
        " or floor(DCGM_FI_DEV_CLOCK_THROTTLE_REASONS / 128) % 2 == 1",
        "warning",
        "{{ $labels.service }}'s GPU clocks are held down by a hardware reason (thermal, power "
        "brake or HW slowdown): latency multiplies",
    ),
    # increase() drops the metric name, so both sides carry the same labels: `or` gives one
    # series per GPU, and a GPU that exports only one of the two counts still alerts.
    AlertRule(
        "RecommenderGpuEccErrors",
        "increase(DCGM_FI_DEV_ECC_SBE_VOL_TOTAL[{long}]) > 0"
        " or increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[{long}]) > 0",
        "warning",
        "{{ $labels.service }}'s GPU reports new ECC memory errors: scores may be silently "
        "corrupted, check recommendation quality",
        fires_for=False,
    ),
)


def render_rules(settings: MonitoringSettings) -> str:
    """The shipped rules as a Prometheus rule file, timed by ``settings``."""
    window = prom_duration(settings.rate_window)
    long = prom_duration(max(4 * settings.rate_window, 4 * settings.scrape_interval))
    p99_s = f"{settings.p99_ms / 1000:g}"
    rules = []
    for rule in RULES:
        body: dict[str, object] = {
            "alert": rule.name,
            "expr": rule.expr.replace("{window}", window)
            .replace("{long}", long)
            .replace("{p99_s}", p99_s),
        }
        if rule.fires_for:
            body["for"] = prom_duration(settings.alert_for)
        body["labels"] = {"severity": rule.severity}
        body["annotations"] = {
            "summary": rule.summary,
            "runbook": f"examples/runbook.md#{rule.name.lower()}",
        }
        rules.append(body)
    header = (
        "# drillkit's alert rules for its reference stack (drillkit monitoring rules).\n"
        f"# Timing: scrape {prom_duration(settings.scrape_interval)}, evaluation "
        f"{prom_duration(settings.evaluation_interval)}, for {prom_duration(settings.alert_for)}"
        f", rate window {window}.\n"
    )
    return header + yaml.safe_dump(
        {"groups": [{"name": "drillkit", "rules": rules}]}, sort_keys=False, width=1000
    )


def check_rules(path: Path) -> None:
    """``promtool check rules`` on ``path`` where promtool is installed; an InputError with
    promtool's complaint when it rejects the file."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return
    try:
        result = subprocess.run(
            [promtool, "check", "rules", str(path)],
            capture_output=True,
            text=True,
            timeout=_PROMTOOL_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"{path}: promtool check rules could not run: {exc}") from None
    if result.returncode != 0:
        lines = [ln.strip() for ln in (result.stderr + result.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()] or lines or ["no output"]
        why = errors[0]
        raise InputError(f"{path}: promtool rejects the rules: {why}")


# -- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One scrape target: ``job`` (``drillkit-<role>``), the service, its zone, its address."""

    job: str
    service: str
    zone: str | None
    address: str  # HOST:PORT
    path: str = "/metrics"


def render_prometheus_config(
    settings: MonitoringSettings,
    targets: Sequence[Target],
    *,
    rules: str,
    alertmanager: str,
) -> str:
    """Prometheus's configuration: ``targets`` by job, the rule file ``rules``, and the
    Alertmanager at ``alertmanager`` (``HOST:PORT``)."""
    interval = settings.scrape_interval
    jobs: dict[tuple[str, str], list[dict[str, object]]] = {}
    for target in targets:
        labels = {"service": target.service, "role": target.job.removeprefix("drillkit-")}
        if target.zone is not None:
            labels["zone"] = target.zone
        jobs.setdefault((target.job, target.path), []).append(
            {"targets": [target.address], "labels": labels}
        )
    config = {
        "global": {
            "scrape_interval": prom_duration(interval),
            "scrape_timeout": prom_duration(min(0.8 * interval, 10.0)),
            "evaluation_interval": prom_duration(settings.evaluation_interval),
        },
        "rule_files": [rules],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": job, "metrics_path": path, "static_configs": static}
            for (job, path), static in jobs.items()
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def render_alertmanager_config(settings: MonitoringSettings, *, webhook: str) -> str:
    """Alertmanager's configuration: every alert to drillkit's webhook receiver at
    ``webhook``, one notification group per alert name and service, resolved ones too."""
    config = {
        "route": {
            "receiver": "drillkit",
            "group_by": ["alertname", "service", "zone"],
            "group_wait": prom_duration(settings.group_wait),
            "group_interval": prom_duration(settings.group_interval),
            "repeat_interval": prom_duration(settings.repeat_interval),
        },
        "receivers": [
            {
                "name": "drillkit",
                "webhook_configs": [{"url": webhook, "send_resolved": True}],
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


# -- the processes ------------------------------------------------------------------------------
def _address(url: str) -> str:
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise SystemExit(f"monitoring: error: {url!r}: expected http://HOST:PORT")
    return f"{parts.hostname}:{parts.port}"


def _target_arg(text: str) -> Target:
    # JOB/SERVICE[/ZONE][@PATH]=URL
    head, sep, url = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected JOB/SERVICE[/ZONE]=URL")
    fields = head.split("/")
    if len(fields) not in (2, 3):
        raise argparse.ArgumentTypeError(f"{text!r}: expected JOB/SERVICE[/ZONE]=URL")
    parts = urlsplit(url)
    return Target(
        job=fields[0],
        service=fields[1],
        zone=fields[2] if len(fields) == 3 else None,
        address=_address(url),
        path=parts.path or "/metrics",
    )


def _settings_arg(text: str) -> MonitoringSettings:
    try:
        return MonitoringSettings(**json.loads(text))
    except (ValueError, TypeError, InputError) as exc:
        raise argparse.ArgumentTypeError(f"--settings: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drillkit-monitoring", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="program", required=True)
    prom = sub.add_parser("prometheus")
    prom.add_argument("--rules", type=Path, required=True)
    prom.add_argument("--alertmanager", required=True, help="Alertmanager's URL")
    prom.add_argument("--target", type=_target_arg, action="append", default=[])
    am = sub.add_parser("alertmanager")
    am.add_argument("--webhook", required=True, help="where notifications go")
    for each in (prom, am):
        each.add_argument("--listen", required=True, help="HOST:PORT")
        each.add_argument("--workdir", type=Path, required=True)
        each.add_argument(
            "--settings", type=_settings_arg, default=MonitoringSettings(), help="JSON"
        )
    args = parser.parse_args(argv)
    settings: MonitoringSettings = args.settings
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.program == "prometheus":
            binary = prometheus_binary()
            config = workdir / "prometheus.yml"
            config.write_text(
                render_prometheus_config(
                    settings,
                    args.target,
                    rules=str(args.rules),
                    alertmanager=_address(args.alertmanager),
                )
            )
            command = [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                "--storage.tsdb.retention.time=1d",
                # A firing alert goes to Alertmanager again this often (Prometheus's default
                # is a minute): a restarted Alertmanager learns of it within the drill.
                f"--rules.alert.resend-delay={prom_duration(settings.resend_delay)}",
                f"--web.listen-address={args.listen}",
                "--log.level=warn",
            ]
        else:
            binary = alertmanager_binary()
            config = workdir / "alertmanager.yml"
            config.write_text(render_alertmanager_config(settings, webhook=args.webhook))
            command = [
                binary,
                f"--config.file={config}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address={args.listen}",
                "--cluster.listen-address=",  # one instance: no gossip port
                "--log.level=warn",
            ]
    except Exception as exc:  # the service's log says why it did not start
        print(f"monitoring: error: {exc}", file=sys.stderr)
        return 3
    return run_child(command)


if __name__ == "__main__":
    raise SystemExit(main())
