"""The example Grafana dashboard (examples/grafana/drillkit-stack.json) against the stack's own
Prometheus: its JSON is a well-formed Grafana model, and every panel query, with Grafana's
variables filled in, is PromQL the running Prometheus accepts and answers with data while the
stack serves traffic, except the few queries listed below that cannot have data in a healthy
stack (or in one without zones), each with its reason."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from drillkit import procfs
from drillkit.backends.local import process_alive, strays

from .conftest import SMALL, Cli, leftovers, stack_files

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana" / "drillkit-stack.json"

#: What the test puts for Grafana's interval variables: the stack scrapes every second, so a
#: 5 s range holds about five samples, enough for rate() and increase().
BUILTINS = {"__rate_interval": "5s", "__interval": "1s", "__range": "5m"}

#: Queries (panel title, refId) that may answer no series in any healthy stack under traffic.
EMPTY_WHEN_HEALTHY = {
    ("Firing alerts", "A"): "ALERTS{alertstate='firing'} only has series while a rule fires",
    ("Load shed, retries, fallbacks", "D"): (
        "drillkit_gateway_ejections_total{replica,reason} is not pre-initialised: it has no "
        "series before a replica's first passive ejection, which only a fault causes"
    ),
}
#: ...and those that may also be empty in a stack without zones (no edge, no cache tier).
EMPTY_WITHOUT_ZONES = {
    ("Cache hit ratio by zone", "A"): (
        "no Redis without zones: the replicas make no cache lookups, and the `> 0` guard "
        "turns the 0/0 into no series rather than NaN"
    ),
    ("Cache hit ratio by zone", "B"): "as A: no cache lookups without zones",
    ("Edge zone status", "A"): "haproxy_server_status comes from the HAProxy edge: zones only",
    ("Edge zone status", "B"): "up{job='drillkit-edge'}: no edge target without zones",
}

_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_REGEX_MATCHER = re.compile(r'(=~|!~)\s*"((?:[^"\\]|\\.)*)"')


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every panel target."""
    return [
        (panel["title"], target["refId"], target["expr"])
        for panel in panels(dashboard)
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def template_variables(dashboard: dict[str, Any]) -> set[str]:
    """The dashboard's own variables, less the data source (never in a query)."""
    return {v["name"] for v in dashboard["templating"]["list"] if v["type"] != "datasource"}


def promql(expr: str, variables: set[str]) -> str:
    """``expr`` as Grafana would send it: its interval variables at the test's values, each
    template variable as ``.*`` (the "All" value); a template variable is only allowed inside
    a regex matcher (=~, !~), where ``.*`` means what "All" means."""

    def builtin(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        return BUILTINS.get(name, match.group(0))

    def in_matcher(match: re.Match[str]) -> str:
        value = _VAR.sub(
            lambda m: ".*" if next(g for g in m.groups() if g) in variables else m.group(0),
            match.group(2),
        )
        return f'{match.group(1)}"{value}"'

    out = _REGEX_MATCHER.sub(in_matcher, _VAR.sub(builtin, expr))
    left = [m.group(0) for m in _VAR.finditer(out)]
    assert not left, f"{expr!r}: {left} unknown, or a template variable outside =~ / !~"
    return out


@dataclass
class Verdict:
    """Prometheus's answer to one instant query, judged."""

    status: str  # "success" or "error"
    error: str = ""
    samples: list[float] = field(default_factory=list)

    @property
    def has_data(self) -> bool:
        return any(math.isfinite(v) for v in self.samples)


def instant_query(prometheus: str, query: str) -> Verdict:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10)
    body = response.json()
    if body["status"] != "success":
        assert response.status_code >= 400, body
        return Verdict(body["status"], f"{body.get('errorType')}: {body.get('error')}")
    data = body["data"]
    if data["resultType"] == "vector":
        samples = [float(s["value"][1]) for s in data["result"]]
    elif data["resultType"] == "matrix":
        samples = [float(v) for s in data["result"] for _, v in s["values"]]
    else:  # scalar or string
        samples = [float(data["result"][1])]
    return Verdict("success", samples=samples)


# -- the JSON model -----------------------------------------------------------------------------
def test_dashboard_is_a_valid_grafana_model() -> None:
    dashboard = load_dashboard()
    assert dashboard["id"] is None
    assert dashboard["uid"] == "drillkit-stack"
    assert dashboard["schemaVersion"] == 39
    assert dashboard["title"]
    (source,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert source["name"] == "datasource" and source["query"] == "prometheus"
    datasource = {"type": "prometheus", "uid": "${datasource}"}

    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    titles = [panel["title"] for panel in panels(dashboard)]
    assert len(titles) == len(set(titles)), "panel titles identify panels in this test"
    for panel in panels(dashboard):
        where = panel["title"]
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= grid.keys(), where
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == datasource, where
        assert panel["targets"], where
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{where}: duplicate refIds {refs}"
        for target in panel["targets"]:
            assert target["datasource"] == datasource, (where, target["refId"])
            assert target["expr"].strip(), (where, target["refId"])
            for rng in re.findall(r"\[([^\]]*)\]", target["expr"]):
                assert rng == "$__rate_interval", f"{where}/{target['refId']}: range [{rng}]"

    # Every query the test lets be empty is in the dashboard (the lists cannot go stale).
    found = {(title, ref) for title, ref, _ in queries(dashboard)}
    assert {**EMPTY_WHEN_HEALTHY, **EMPTY_WITHOUT_ZONES}.keys() <= found


# -- against a running stack ---------------------------------------------------------------------
class Traffic(threading.Thread):
    """Recommendations through the stack's front door, ~100 a second, until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.started_at = time.monotonic()
        self.answers: dict[int, int] = {}
        self.failures = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            i = 0
            while not self._stop_event.is_set():
                try:
                    status = client.get("/recommend", params={"user_id": i % 40, "k": 10})
                    code = status.status_code
                    self.answers[code] = self.answers.get(code, 0) + 1
                except httpx.HTTPError:
                    self.failures += 1
                i += 1
                self._stop_event.wait(0.01)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


@dataclass
class Stack:
    zoned: bool
    prometheus: str
    traffic: Traffic

    @property
    def may_be_empty(self) -> dict[tuple[str, str], str]:
        return EMPTY_WHEN_HEALTHY if self.zoned else {**EMPTY_WHEN_HEALTHY, **EMPTY_WITHOUT_ZONES}


def _marked(stack_id: str) -> dict[int, tuple[int, str]]:
    """The stack's live processes (its mark in their environment): pid -> (start, name)."""
    out = {}
    for pid in strays(stack_id, set()):
        info = procfs.stat(pid)
        args = procfs.argv(pid) or [b"?"]
        if info is not None:
            out[pid] = (info.start_time, os.path.basename(args[0].decode(errors="replace")))
    return out


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(False, id="single", marks=pytest.mark.monitoring),
        pytest.param(True, id="zoned", marks=[pytest.mark.monitoring, pytest.mark.zones]),
    ],
)
def stack(
    request: pytest.FixtureRequest, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A small local stack with its monitoring, under steady traffic; taken down afterwards,
    and then none of its processes (Prometheus and Alertmanager included) may be left."""
    zoned: bool = request.param
    folder = tmp_path_factory.mktemp("zoned" if zoned else "single")
    env = {
        **os.environ,
        "DRILLKIT_CACHE_DIR": str(cache_dir),
        "DRILLKIT_STATE_DIR": str(folder / "state"),
    }
    for var in ("DRILLKIT_MODEL_KEY", "DRILLKIT_SIGNING_KEY_FILE", "DRILLKIT_VERIFY_KEY"):
        env.pop(var, None)
    env.pop("DRILLKIT_HOME", None)
    cli = Cli(env, cwd=folder)
    shape = ["--zones", "a,b", "--replicas", "1"] if zoned else ["--replicas", "2"]
    seen: dict[int, tuple[int, str]] = {}
    traffic: Traffic | None = None
    try:
        proc = cli("stack", "up", *SMALL, *shape, "--json")
        assert proc.returncode == 0, proc.stderr
        state = json.loads(proc.stdout)
        prometheus = state["services"]["prometheus"]["url"]
        seen = _marked(state["id"])
        names = {name for _, name in seen.values()}
        assert {"prometheus", "prometheus-alertmanager"} <= names, names  # the check can see
        traffic = Traffic(state["gateway_url"])
        traffic.start()
        yield Stack(zoned, prometheus, traffic)
    finally:
        if traffic is not None:
            traffic.stop()
        for saved in stack_files(cli, "stack.json"):
            down = cli("stack", "down", "--stack", saved.parent.name, timeout=60)
            assert down.returncode == 0, down.stderr
            left = _marked(saved.parent.name)
            assert not left, f"left running after stack down: {left}"
        assert not [pid for pid, (start, _) in seen.items() if process_alive(pid, start)]
        assert not leftovers(cli)
        ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        assert not [
            line
            for line in ps.splitlines()
            if re.search(r"prometheus|drillkit", line) and str(folder) in line
        ]


def _wait_for_traffic(stack: Stack) -> None:
    """Until the rate window is full of traffic and Prometheus has scraped it at every gateway
    (and, in a zoned stack, every zone's cache)."""
    time.sleep(max(0.0, stack.traffic.started_at + 6.0 - time.monotonic()))
    gateways = 2 if stack.zoned else 1
    checks = {
        'sum by (service) (rate(drillkit_gateway_requests_total{outcome="ok"}[5s])) > 0': gateways,
    }
    if stack.zoned:
        checks["sum by (zone) (rate(drillkit_replica_cache_lookups_total[5s])) > 0"] = 2
    deadline = time.monotonic() + 30
    while True:
        counts = {q: len(instant_query(stack.prometheus, q).samples) for q in checks}
        if counts == checks:
            break
        assert time.monotonic() < deadline, f"no traffic in Prometheus: {counts}"
        time.sleep(0.5)
    ok = stack.traffic.answers.get(200, 0)
    assert ok > 100 and stack.traffic.failures == 0, (stack.traffic.answers, stack.traffic.failures)


def test_every_panel_query_is_valid_promql_with_data(stack: Stack) -> None:
    dashboard = load_dashboard()
    variables = template_variables(dashboard)
    _wait_for_traffic(stack)

    problems = []
    for title, ref, expr in queries(dashboard):
        query = promql(expr, variables)
        deadline = time.monotonic() + 5  # a scrape may land between two queries
        while True:
            verdict = instant_query(stack.prometheus, query)
            if verdict.status != "success" or verdict.has_data or time.monotonic() > deadline:
                break
            if (title, ref) in stack.may_be_empty:
                break
            time.sleep(0.5)
        if verdict.status != "success":
            problems.append(f"{title}/{ref}: invalid: {verdict.error}\n    {query}")
        elif not verdict.has_data and (title, ref) not in stack.may_be_empty:
            problems.append(f"{title}/{ref}: no data ({verdict.samples})\n    {query}")
    assert not problems, "\n".join(problems)

    # The zone variable's values: a label_values() over a selector Prometheus must accept.
    (zone,) = [v for v in dashboard["templating"]["list"] if v["name"] == "zone"]
    selector = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", zone["definition"])
    assert selector is not None, zone["definition"]
    response = httpx.get(
        f"{stack.prometheus}/api/v1/label/{selector.group(2)}/values",
        params={"match[]": selector.group(1)},
        timeout=10,
    )
    assert response.json()["status"] == "success", response.text
    assert sorted(response.json()["data"]) == (["a", "b"] if stack.zoned else [])


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(
            "sum by (service) (rate(drillkit_gateway_requests_total[$__rate_interval])",
            "error",
            id="missing-parenthesis",
        ),
        pytest.param("drillkit_gateway_requests_total{outcome=ok}", "error", id="unquoted-label"),
        pytest.param(
            "histogram_quantile(0.99, sum by (le) (rate(drillkit_gateway_request_seconds[5s])))",
            "no data",
            id="metric-typo",
        ),
    ],
)
def test_a_broken_query_is_caught(stack: Stack, query: str, expected: str) -> None:
    """The checks above can fail: Prometheus rejects a syntax error, and a valid query on a
    misspelt metric (the histogram without _bucket) answers nothing."""
    verdict = instant_query(stack.prometheus, promql(query, set()))
    if expected == "error":
        assert verdict.status == "error", verdict
        assert verdict.error.startswith("bad_data"), verdict
    else:
        assert verdict.status == "success" and not verdict.has_data, verdict


def test_an_unsubstituted_interval_is_rejected(stack: Stack) -> None:
    """Sent as is, Grafana's $__rate_interval is no PromQL: the substitution is needed."""
    raw = "rate(drillkit_gateway_requests_total[$__rate_interval])"
    verdict = instant_query(stack.prometheus, raw)
    assert verdict.status == "error" and verdict.error.startswith("bad_data"), verdict
    with pytest.raises(AssertionError, match="outside"):
        promql('drillkit_gateway_requests_total{zone="$zone"}', {"zone"})
