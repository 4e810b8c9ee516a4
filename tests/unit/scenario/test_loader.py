"""Loading scenario files: line numbers, field paths and messages for every kind of bad input."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drillkit.errors import InputError, ScenarioError
from drillkit.faults.params import KillNodeParams, LatencyParams
from drillkit.scenario import Scenario, load_scenario, loads_scenario
from drillkit.scenario.loader import MAX_BYTES, MAX_NODES
from drillkit.scenario.units import CountOrShare
from drillkit.stacks.recommender.faults import CorruptModelParams

CASES = Path(__file__).parent / "cases"
GOOD_FULL = (CASES / "good_full.yaml").read_text()


def case(name: str) -> str:
    return str(CASES / name)


def test_the_contract_example_loads() -> None:
    scenario = load_scenario(case("good_full.yaml"))
    assert scenario.name == "kill-node"
    assert scenario.stack.replicas == 3
    assert (scenario.stack.catalog.items, scenario.stack.catalog.dim) == (20_000, 64)
    assert (scenario.load.duration, scenario.load.warmup, scenario.load.timeout) == (60, 5, 2)
    assert scenario.slo.availability == 0.999
    assert scenario.slo.degraded_max == 0.05
    (fault,) = scenario.faults
    assert (fault.id, fault.kind, fault.target, fault.at, fault.duration) == (
        "kill-1",
        "kill_node",
        "replica-1",
        20.0,
        15.0,
    )
    assert fault.params == KillNodeParams(signal="KILL")
    assert fault.expect.detect_within == 1.0
    assert fault.expect.max_failed_requests == CountOrShare(count=0)
    assert fault.expect.max_wrong_model_responses == 0
    assert (scenario.abort.error_rate_above, scenario.abort.for_) == (0.5, 5.0)
    assert scenario.report.formats == ("terminal", "json", "junit", "html")


def test_a_minimal_scenario_takes_every_default() -> None:
    scenario = load_scenario(case("good_minimal.yaml"))
    assert scenario == Scenario(version=1, name="smoke")
    assert scenario.stack.backend == "local"
    assert scenario.stack.gpu == "auto"
    assert (scenario.load.rate, scenario.load.users, scenario.load.workers) == (100, 20, 1)
    assert (scenario.load.duration, scenario.load.warmup, scenario.load.timeout) == (60, 5, 2)
    assert (scenario.slo.p99_ms, scenario.slo.quality) == (250, 0.9)
    assert scenario.faults == ()
    assert scenario.scoring.pass_score == 80


def test_format_extensions_load() -> None:
    scenario = load_scenario(case("good_features.yaml"))
    assert scenario.stack.gpu == "off"  # not the YAML 1.1 boolean False
    assert scenario.stack.gateway.retries == 0
    assert scenario.stack.gateway.passive_ejection is False
    assert scenario.stack.gateway.check_interval == 0.1
    latency, cut, corrupt, pause = scenario.faults
    assert latency.id == "latency-1"
    assert latency.target == ("replica-1", "replica-2")
    assert latency.params == LatencyParams(delay=0.25, jitter=0.05)
    assert latency.expect.max_failed_requests == CountOrShare(share=0.001)
    # merged from the x-slow anchor
    assert (cut.id, cut.at, cut.duration, cut.target) == ("cut_network-2", 30.0, 10.0, "random")
    assert corrupt.target == "model-store"
    assert isinstance(corrupt.params, CorruptModelParams)
    assert (corrupt.params.mode, corrupt.params.fraction) == ("truncate", 0.25)
    assert (pause.id, pause.target, pause.at) == ("gw-pause", "gateway", 119.5)
    assert scenario.abort.error_rate_above == 1.0
    assert scenario.report.formats == ("json", "junit")


BAD = [
    pytest.param(
        "bad_malformed.yaml",
        5,
        None,
        "invalid YAML: mapping values are not allowed here",
        id="malformed-yaml",
    ),
    pytest.param(
        "bad_unknown_top_key.yaml",
        3,
        "descripton",
        "unknown key 'descripton' (did you mean 'description'?)",
        id="unknown-top-key",
    ),
    pytest.param(
        "bad_unknown_nested_key.yaml",
        5,
        "load.durration",
        "unknown key 'durration' (did you mean 'duration'?)",
        id="unknown-nested-key",
    ),
    pytest.param(
        "bad_params_unknown_key.yaml",
        7,
        "faults[0].params.signl",
        "unknown key 'signl' (did you mean 'signal'?)",
        id="unknown-params-key",
    ),
    pytest.param(
        "bad_wrong_type.yaml", 5, "load.users", "expected an integer, got 'many'", id="wrong-type"
    ),
    pytest.param(
        "bad_missing_target.yaml",
        7,
        "faults[0].target",
        "unknown target 'replica-9' (this stack has replica-1..replica-3 and gateway)",
        id="missing-target",
    ),
    pytest.param(
        "bad_fault_after_load.yaml",
        11,
        "faults[1].at",
        "at 70s is not inside the load window [0, 60s) set by load.duration",
        id="fault-after-load",
    ),
    pytest.param(
        "bad_duration.yaml",
        4,
        "load.duration",
        "expected a duration like 250ms, 5s, 2m or a number of seconds, got '5 parsecs'",
        id="bad-duration",
    ),
    pytest.param(
        "bad_negative_rate.yaml",
        4,
        "load.rate",
        "expected a number greater than 0, got -5",
        id="negative-rate",
    ),
    pytest.param(
        "bad_share.yaml",
        4,
        "slo.availability",
        "expected a share like 99.9% or 0.999, between 0 and 1, got 99.9 (did you mean 99.9%?)",
        id="share-without-percent",
    ),
    pytest.param(
        "bad_empty.yaml",
        1,
        None,
        "the file is empty; a scenario needs at least 'version: 1' and 'name'",
        id="empty-file",
    ),
    pytest.param(
        "bad_binary.yaml",
        3,
        None,
        "the file is binary (it contains NUL bytes), not YAML text",
        id="binary-file",
    ),
    pytest.param(
        "bad_latin1.yaml",
        3,
        None,
        "the file is not UTF-8 text (byte 0xe9 cannot be decoded)",
        id="not-utf8",
    ),
    pytest.param(
        "bad_alias_bomb.yaml",
        4,
        "x-e[0][2][0][5][0]",
        f"the document expands to more than {MAX_NODES} values (aliases repeated too often?)",
        id="alias-bomb",
    ),
    pytest.param(
        "bad_python_tag.yaml",
        3,
        "description",
        "unsupported YAML tag !!python/object/apply:os.system (scenarios are plain "
        "YAML: mappings, lists, text, numbers, true/false and null)",
        id="python-tag",
    ),
    pytest.param(
        "bad_duplicate_key.yaml",
        6,
        "load.rate",
        "duplicate key 'rate' (first on line 4)",
        id="duplicate-key",
    ),
    pytest.param(
        "bad_corrupt_mode.yaml",
        8,
        "faults[0].params.mode",
        "expected 'bitflip', 'truncate', 'zero', 'poison' or 'unreleased', got 'shred'",
        id="bad-corrupt-mode",
    ),
    pytest.param(
        "bad_corrupt_gateway.yaml",
        5,
        "faults[0].target[1]",
        "corrupt_model cannot target 'gateway' (it targets a replica or model-store)",
        id="corrupt-model-on-gateway",
    ),
    pytest.param(
        "bad_latency_jitter.yaml",
        9,
        "faults[0].params.jitter",
        "expected a jitter of at most the delay (100ms), got 200ms",
        id="jitter-over-delay",
    ),
    pytest.param(
        "bad_unknown_kind.yaml",
        4,
        "faults[0].kind",
        "unknown fault kind 'kill_nodes' (did you mean 'kill_node'? known kinds: backup_failure, "
        "bad_rollout, cache_flush, corrupt_file, corrupt_model, cut_network, data_loss, "
        "gpu_fault, kill_node, latency, load_spike, pause_node, rollout, zone_outage)",
        id="unknown-kind",
    ),
    pytest.param(
        "bad_duplicate_fault_id.yaml",
        7,
        "faults[1].id",
        "duplicate fault id 'kill_node-1' (also faults[0])",
        id="duplicate-fault-id",
    ),
    pytest.param(
        "bad_version_2.yaml",
        2,
        "version",
        "unsupported format version 2: this drillkit reads version 1",
        id="version-2",
    ),
    pytest.param(
        "bad_name_uppercase.yaml",
        2,
        "name",
        "expected lowercase letters, digits and '-', starting with a letter or digit, "
        "got 'Kill-Node'",
        id="name-uppercase",
    ),
    pytest.param("bad_missing_name.yaml", 1, "name", "required key is missing", id="missing-name"),
    pytest.param(
        "bad_root_list.yaml",
        1,
        None,
        "expected a mapping of keys (version: 1, name: ...) at the top, got a list",
        id="root-not-a-mapping",
    ),
    pytest.param(
        "bad_two_documents.yaml",
        3,
        None,
        "invalid YAML: expected a single document in the stream, but found another document",
        id="two-documents",
    ),
]


@pytest.mark.parametrize(("name", "line", "field", "message"), BAD)
def test_bad_files_name_the_line_and_field(
    name: str, line: int, field: str | None, message: str
) -> None:
    path = case(name)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    error = caught.value
    assert (error.path, error.line, error.field) == (path, line, field)
    where = f"{field}: " if field else ""
    assert str(error) == f"{path}:{line}: {where}{message}"
    assert isinstance(error, InputError) and error.exit_code == 2


_ALERTS_WITHOUT_MONITORING = """\
version: 1
name: x
monitoring: {enabled: off}
faults:
  - kind: kill_node
    target: replica-1
    at: 5s
    expect: {alerts: [RecommenderReplicaDown]}
"""

TEXT_CASES = [
    pytest.param(
        _ALERTS_WITHOUT_MONITORING,
        8,
        "faults[0].expect.alerts",
        "alert expectations need monitoring (monitoring.enabled is off)",
        id="alerts-without-monitoring",
    ),
    pytest.param(
        "version: 1\nname: x\nmonitoring: {scrape_interval: 5s, rate_window: 6s}\n",
        3,
        "monitoring.rate_window",
        "6s holds fewer than two scrapes 5s apart; rate() needs two",
        id="rate-window-under-two-scrapes",
    ),
    pytest.param(
        "version: 1\nname: x\nfaults:\n  - {kind: kill_node, target: replica-1, at: 5s,"
        " expect: {alerts: [replica down]}}\n",
        4,
        "faults[0].expect.alerts[0]",
        "expected an alert name (letters, digits and _, not starting with a digit), "
        "got 'replica down'",
        id="bad-alert-name",
    ),
    pytest.param(
        "version: 1\nname: x\nmonitoring: {enabled: maybe}\n",
        3,
        "monitoring.enabled",
        "expected 'auto', 'on' or 'off', got 'maybe'",
        id="monitoring-enabled-word",
    ),
    pytest.param(
        "version: 1\nname: x\nstack: {replicas: 17}\n",
        3,
        "stack.replicas",
        "expected a number at most 16, got 17",
        id="too-many-replicas",
    ),
    pytest.param(
        "version: 1\nname: x\nstack: {backend: dockr}\n",
        3,
        "stack.backend",
        "expected 'local' or 'docker', got 'dockr' (did you mean 'docker'?)",
        id="literal-did-you-mean",
    ),
    pytest.param(
        "version: 1\nname: x\nload: {users: true}\n",
        3,
        "load.users",
        "expected a number, got true",
        id="bool-is-not-a-count",
    ),
    pytest.param(
        "version: 1\nname: x\nload: {users: " + "9" * 5000 + "}\n",
        3,
        "load.users",
        "cannot read the value '9999999999999999999999999999999999999...': the number "
        "has too many digits",
        id="int-too-long",
    ),
    pytest.param(
        "version: 1\nname: x\nload: {rate: .nan}\n",
        3,
        "load.rate",
        "expected a number greater than 0, got nan",
        id="nan-rate",
    ),
    pytest.param(
        "version: 1\nname: x\nload: {duration: .inf}\n",
        3,
        "load.duration",
        "expected a finite duration, got inf",
        id="infinite-duration",
    ),
    pytest.param(
        "version: 1\nname: x\nload: {duration: 2024-12-25}\n",
        3,
        "load.duration",
        "expected a duration like 250ms, 5s, 2m or a number of seconds, got a date (2024-12-25)",
        id="date-is-not-a-duration",
    ),
    pytest.param(
        "version: 1.0\nname: x\n",
        1,
        "version",
        "unsupported format version 1.0: this drillkit reads version 1",
        id="version-float",
    ),
    pytest.param(
        "version: 1\nname: x\nl: &a [1, *a]\n",
        3,
        "l[1]",
        "an alias refers to a value that contains it",
        id="recursive-alias",
    ),
    pytest.param(
        "version: 1\nname: x\nd: " + "[" * 100 + "]" * 100 + "\n",
        3,
        None,
        "nesting is deeper than 32 levels",
        id="deep-nesting",
    ),
    pytest.param(
        "version: 1\nname: x\nl: [" + "1," * 20_000 + "]\n",
        3,
        None,
        f"more than {MAX_NODES} values in one document",
        id="too-many-values",
    ),
    pytest.param(
        "version: 1\nname: x\n? [a]\n: 1\n",
        3,
        None,
        "keys must be plain text, not a mapping or a list",
        id="list-key",
    ),
    pytest.param("version: 1\nname: x\n7: 1\n", 3, None, "keys must be text, got 7", id="int-key"),
    pytest.param(
        "version: 1\nname: x\nslo:\n  <<: [1]\n",
        4,
        "slo",
        "'<<' merges a mapping or a list of mappings",
        id="bad-merge",
    ),
    pytest.param(
        "version: 1\nname: !!binary eA==\n",
        2,
        "name",
        "unsupported YAML tag !!binary (scenarios are plain YAML: mappings, lists, "
        "text, numbers, true/false and null)",
        id="binary-tag",
    ),
    pytest.param(
        "version: 1\nname: *nope\n",
        2,
        None,
        "invalid YAML: found undefined alias 'nope'",
        id="undefined-alias",
    ),
    pytest.param(
        "version: 1\nname: x\a\n",
        2,
        None,
        "invalid YAML: the character '\\x07' is not allowed in YAML text",
        id="control-character",
    ),
    pytest.param(
        "version: 1\nname: \ud800\n",
        2,
        None,
        "the text is not valid Unicode (it contains a lone surrogate)",
        id="surrogate",
    ),
    pytest.param(
        "version: 1\n\0",
        2,
        None,
        "the text is binary (it contains NUL characters), not YAML",
        id="nul-in-text",
    ),
    pytest.param(
        "# only a comment\n",
        1,
        None,
        "the file has no YAML document (only comments?); a scenario needs at least "
        "'version: 1' and 'name'",
        id="only-comments",
    ),
    pytest.param(
        "version: 1\nname: x\nload: {'dur ation': 1}\n",
        3,
        "load['dur ation']",
        "unknown key 'dur ation' (did you mean 'duration'?)",
        id="odd-key-is-quoted",
    ),
    pytest.param(
        "version: 1\nname: x\nreport: {formats: [json, json]}\n",
        3,
        "report.formats[1]",
        "'json' is listed twice",
        id="duplicate-format",
    ),
    pytest.param(
        "version: 1\nname: x\nfaults:\n- {kind: kill_node, target: [replica-1, "
        "replica-1], at: 1}\n",
        4,
        "faults[0].target[1]",
        "'replica-1' is listed twice",
        id="duplicate-target",
    ),
    pytest.param(
        "version: 1\nname: x\nfaults:\n- kind: latency\n  target: gateway\n  at: 1\n",
        5,
        "faults[0].target",
        "latency cannot target the gateway of a one-zone stack (no link ends at it; a zoned "
        "stack's edge -> gateway links can be cut)",
        id="latency-on-gateway",
    ),
    pytest.param(
        "version: 1\nname: x\nfaults:\n- kind: kill_node\n  target: model-store\n  at: 1\n",
        5,
        "faults[0].target",
        "kill_node cannot target 'model-store' (it targets a replica or the gateway)",
        id="model-store-only-for-corrupt-model",
    ),
    pytest.param(
        "version: 1\nname: x\nfaults:\n- kind: latency\n  target: replica-1\n"
        "  at: 1\n  params: {delay: 31s}\n",
        7,
        "faults[0].params.delay",
        "expected a delay of at most 30s, got 31s (to make the target unreachable use cut_network)",
        id="latency-too-long",
    ),
    pytest.param(
        "version: 1\nname: x\nfaults:\n- kind: corrupt_model\n  target: replica-1\n"
        "  at: 1\n  params: {mode: zero, flips: 3}\n",
        7,
        "faults[0].params.flips",
        "flips only applies to mode: bitflip (mode is zero)",
        id="flips-without-bitflip",
    ),
    pytest.param(
        "version: 1\nname: x\nfaults:\n- kind: corrupt_model\n  target: replica-1\n"
        "  at: 1\n  params: {apply: hot}\n",
        7,
        "faults[0].params.apply",
        "expected 'reload' or 'restart', got 'hot'",
        id="corrupt-apply",
    ),
    pytest.param(
        "version: 1\nname: x\nfaults:\n- kind: kill_node\n  at: 1\n",
        4,
        "faults[0].target",
        "required key is missing",
        id="fault-without-target",
    ),
    pytest.param(
        "version: 1\nname: x\nfaults:\n- kind: kill_node\n  target: replica-1\n"
        "  at: 0\n  duration: 0s\n",
        7,
        "faults[0].duration",
        "expected a duration greater than 0, got '0s'",
        id="zero-fault-duration",
    ),
    pytest.param(
        "version: 1\nname: x\nfaults:\n- kind: kill_node\n  target: replica-1\n"
        "  at: 1\n  expect: {max_failed_requests: lots}\n",
        7,
        "faults[0].expect.max_failed_requests",
        "expected a count like 0 or 5, or a share like 0.1% or 0.001, got 'lots'",
        id="bad-failure-budget",
    ),
    pytest.param(
        "version: 1\nname: x\nabort: {fro: 5s}\n",
        3,
        "abort.fro",
        "unknown key 'fro' (did you mean 'for'?)",
        id="alias-in-did-you-mean",
    ),
    pytest.param(
        "version: 1\nname: x\nload: {zzz: 1}\n",
        3,
        "load.zzz",
        "unknown key 'zzz' (expected one of: rate, users, duration, warmup, timeout, workers, "
        "skew, host, locustfile, requests, bind, port, hosts, remote_workers, join_within, "
        "token_file)",
        id="unknown-key-lists-keys",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "message"), TEXT_CASES)
def test_bad_text_names_the_line_and_field(
    text: str, line: int, field: str | None, message: str
) -> None:
    with pytest.raises(ScenarioError) as caught:
        loads_scenario(text, "drill.yaml")
    error = caught.value
    assert (error.line, error.field) == (line, field)
    where = f"{field}: " if field else ""
    assert str(error) == f"drill.yaml:{line}: {where}{message}"


def test_yaml_1_1_words_stay_words() -> None:
    scenario = loads_scenario(
        "version: 1\nname: x\nstack:\n  gpu: on\n  gateway: {passive_ejection: no}\n"
    )
    assert scenario.stack.gpu == "on"
    assert scenario.stack.gateway.passive_ejection is False


def test_null_sections_mean_defaults() -> None:
    scenario = loads_scenario(
        "version: 1\nname: x\nload:\nfaults:\n- {kind: pause_node, target: replica-1, at: 1,"
        " params: , expect: }\n"
    )
    assert scenario.load.duration == 60
    assert scenario.faults[0].expect.detect_within is None


def test_merge_keys_are_overridden_by_own_keys() -> None:
    text = (
        "version: 1\nname: x\nx-base: &base {kind: kill_node, target: replica-1, at: 5}\n"
        "faults:\n- <<: *base\n  at: 7\n- <<: [*base]\n  id: second\n"
    )
    first, second = loads_scenario(text).faults
    assert (first.at, second.at, second.id) == (7.0, 5.0, "second")


def test_bytes_and_bom_are_accepted() -> None:
    assert loads_scenario(b"\xef\xbb\xbfversion: 1\nname: x\n").name == "x"
    assert loads_scenario("\ufeffversion: 1\nname: x\n").name == "x"


def test_unreadable_files_are_scenario_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ScenarioError, match=r"missing.yaml: cannot read the file: No such file"):
        load_scenario(missing)
    with pytest.raises(ScenarioError, match=r"cannot read the file: Is a directory"):
        load_scenario(tmp_path)


def test_oversized_files_are_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("version: 1\nname: x\ndescription: " + "a" * MAX_BYTES + "\n")
    with pytest.raises(ScenarioError, match="big.yaml: the file is larger than 1024 KiB"):
        load_scenario(big)
    with pytest.raises(ScenarioError, match="larger than 1024 KiB"):
        loads_scenario("é" * (MAX_BYTES // 2 + 1))


# --- never any exception but ScenarioError ------------------------------------------------

INTERESTING = [
    "5s",
    "250ms",
    "-1s",
    "5 parsecs",
    "99.9%",
    "150%",
    "0.1%",
    "random",
    "replica-1",
    "replica-99",
    "gateway",
    "model-store",
    "kill_node",
    "corrupt_model",
    "latency",
    "KILL",
    "bitflip",
    "",
    " ",
    "on",
    "null",
    "~",
    "1e999",
    "-0",
    "x-",
    "<<",
    "&a",
    "*a",
    "!!str",
]

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(INTERESTING)
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(INTERESTING), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _mutate(doc: dict[str, Any], path: tuple[Any, ...], action: str, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    if not path:
        return value if action == "replace" else doc
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[str(value)[:10]] = value
    elif action == "wrap":
        parent[last] = [parent[last]]
    return doc


def _check(text: str | bytes) -> None:
    try:
        result = loads_scenario(text)
    except ScenarioError as error:
        assert "\n" not in str(error), "an error must print on one line"
        assert error.path == "<string>"
        return
    assert isinstance(result, Scenario)


GOOD_DOCS = [
    yaml.safe_load((CASES / name).read_text())
    for name in (
        "good_full.yaml",
        "good_minimal.yaml",
        "good_features.yaml",
    )
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_scenarios_load_or_raise_scenario_error(data: st.DataObject) -> None:
    doc = data.draw(st.sampled_from(GOOD_DOCS), label="doc")
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(_paths(doc)), label="path")
        action = data.draw(st.sampled_from(["replace", "delete", "add", "wrap"]), label="action")
        doc = _mutate(doc, path, action, data.draw(values, label="value"))
    _check(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))


FRAGMENTS = [
    "version: 1",
    "name: x",
    "faults:",
    "- kind: kill_node",
    "  target: replica-1",
    "  at: 5s",
    "  params: {signal: TERM}",
    "load:",
    "  duration: 1m",
    "&a",
    "*a",
    "<<: *a",
    "!!python/object",
    "---",
    "...",
    "{",
    "}",
    "[",
    "]",
    "- ",
    "  ",
    ":",
    "? ",
    "|",
    ">",
    "'",
    '"',
    "#",
    "%YAML 1.1",
    "!foo",
    "\t",
    "\\",
    "\x85",
    "\u2028",
    "\ufeff",
    "x-a: &a [1, 2]",
    "stack: {replicas: 2}",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=10), max_size=12))
def test_yaml_ish_lines_load_or_raise_scenario_error(lines: list[str]) -> None:
    _check("\n".join(lines))


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_edited_text_loads_or_raises_scenario_error(data: st.DataObject) -> None:
    raw = bytearray(GOOD_FULL.encode())
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        at = data.draw(st.integers(0, len(raw)), label="at")
        edit = data.draw(st.sampled_from(["insert", "delete", "replace"]), label="edit")
        byte = data.draw(st.integers(0, 255), label="byte")
        if edit == "insert":
            raw.insert(at, byte)
        elif at < len(raw):
            if edit == "delete":
                del raw[at]
            else:
                raw[at] = byte
    _check(bytes(raw))


def test_merge_keys_count_against_the_node_limit() -> None:
    # Empty mappings merged nine at a time, nine levels deep: under 500 bytes, 9**9 merges.
    # Each merge is a value like any other, so the document stops at MAX_NODES instead of
    # keeping `drillkit validate` busy for minutes.
    lines = ["version: 1", "name: bomb", "x-a: &a {}"]
    previous = "a"
    for level in "bcdefghij":
        merges = ", ".join([f"*{previous}"] * 9)
        lines.append(f"x-{level}: &{level} {{<<: [{merges}]}}")
        previous = level
    text = "\n".join(lines) + "\n"
    assert len(text) < 500
    with pytest.raises(ScenarioError, match=f"expands to more than {MAX_NODES} values"):
        loads_scenario(text, "bomb.yaml")
