"""The scenario models, the fault-kind registry and the JSON Schema."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from drillkit.errors import ScenarioError, TargetError
from drillkit.faults.base import FaultKind, FaultPluginWarning, fault_kinds, fault_param_models
from drillkit.faults.params import KillNodeParams
from drillkit.scenario import FaultSpec, Scenario, json_schema, load_scenario, loads_scenario
from drillkit.scenario.model import first_error, format_loc
from drillkit.scenario.units import Share

CASES = Path(__file__).parent / "cases"


def fault(**fields: Any) -> dict[str, Any]:
    return {"kind": "kill_node", "target": "replica-1", "at": "5s", **fields}


def scenario(**fields: Any) -> Scenario:
    return Scenario.model_validate({"version": 1, "name": "t", **fields})


def test_fault_ids_default_to_kind_and_index_among_all_faults() -> None:
    made = scenario(
        faults=[fault(), fault(id="mine"), fault(kind="pause_node"), fault(target="replica-2")]
    )
    assert [f.id for f in made.faults] == ["kill_node-1", "mine", "pause_node-3", "kill_node-4"]
    assert made.fault("mine").kind == "kill_node"
    with pytest.raises(KeyError):
        made.fault("nope")


def test_models_are_frozen_and_forbid_unknown_keys() -> None:
    made = scenario()
    with pytest.raises(ValidationError):
        made.name = "other"
    with pytest.raises(ValidationError, match="Extra inputs"):
        scenario(extra=1)
    with pytest.raises(ValidationError):
        FaultSpec.model_validate({**fault(), "severity": "high"})


def test_params_become_the_kinds_model() -> None:
    made = scenario(faults=[fault(params={"signal": "sigterm"})])
    assert made.faults[0].params == KillNodeParams(signal="TERM")
    assert scenario(faults=[fault()]).faults[0].params == KillNodeParams()


def test_a_dump_validates_back_to_the_same_scenario() -> None:
    made = load_scenario(CASES / "good_features.yaml")
    assert Scenario.model_validate(made.model_dump(by_alias=True)) == made
    assert Scenario.model_validate_json(made.model_dump_json(by_alias=True)) == made


def test_service_names() -> None:
    assert scenario(stack={"replicas": 2}).service_names() == ["replica-1", "replica-2", "gateway"]


def test_stack_spec_carries_every_setting() -> None:
    made = scenario(
        stack={
            "replicas": 5,
            "gpu": "off",
            "catalog": {"items": 1000, "dim": 16, "seed": 7},
            "gateway": {"retries": 0, "passive_ejection": False, "deadline": "3s"},
        }
    )
    spec = made.stack_spec()
    assert (spec.replicas, spec.gpu) == (5, "off")
    assert (spec.catalog.items, spec.catalog.dim, spec.catalog.seed) == (1000, 16, 7)
    assert (spec.gateway.retries, spec.gateway.passive_ejection) == (0, False)
    assert spec.gateway.deadline == 3.0
    assert spec.service_names() == made.service_names()


def test_stack_defaults_are_the_presets() -> None:
    from drillkit.stacks.recommender.gateway import GatewayConfig
    from drillkit.stacks.recommender.spec import CatalogSpec, GatewaySettings, RecommenderSpec

    # One place: the scenario format, the gateway process and the preset read the same values.
    assert scenario().stack_spec() == RecommenderSpec()
    assert scenario().stack_spec().catalog == CatalogSpec()
    config = GatewayConfig(replicas=[("r", "http://h:1")])
    settings = GatewaySettings()
    for name in ("check_interval", "fall", "rise", "retries", "deadline", "max_outstanding"):
        assert getattr(config, name) == getattr(settings, name)


def test_catalog_limits_are_the_presets() -> None:
    from drillkit.stacks.recommender.spec import CATALOG_LIMITS

    top = CATALOG_LIMITS["items"][1]
    scenario(stack={"catalog": {"items": top}})
    with pytest.raises(ValidationError, match=f"less than or equal to {top}"):
        scenario(stack={"catalog": {"items": top + 1}})


def test_random_targets_are_seeded_replicas() -> None:
    made = scenario(stack={"replicas": 8}, faults=[fault(target="random")] * 3)
    names = made.service_names()

    def picks(seed: int) -> list[str]:
        rng = random.Random(seed)
        return [t for f in made.faults for t in f.resolved_targets(names, rng)]

    assert picks(1) == picks(1)
    assert all(name.startswith("replica-") for seed in range(20) for name in picks(seed))
    assert len({tuple(picks(seed)) for seed in range(20)}) > 1


def test_named_targets_resolve_as_written() -> None:
    made = scenario(
        faults=[
            fault(target=["replica-2", "gateway"]),
            fault(kind="corrupt_model", target="model-store"),
        ]
    )
    names, rng = made.service_names(), random.Random(0)
    assert made.faults[0].resolved_targets(names, rng) == ["replica-2", "gateway"]
    assert made.faults[1].resolved_targets(names, rng) == ["model-store"]
    with pytest.raises(TargetError, match="'replica-2' is not a service of this stack"):
        made.faults[0].resolved_targets(["replica-1", "gateway"], rng)
    with pytest.raises(TargetError, match="no replica to pick"):
        scenario(faults=[fault(target="random")]).faults[0].resolved_targets(["gateway"], rng)


@pytest.mark.parametrize(
    ("fields", "loc", "message"),
    [
        pytest.param(
            {"load": {"duration": "10s"}, "faults": [fault(at="10s")]},
            "faults[0].at",
            "at 10s is not inside the load window [0, 10s)",
            id="at-equal-to-duration",
        ),
        pytest.param(
            {"faults": [fault(target="random", kind="latency"), fault(target=[], kind="latency")]},
            "faults[1].target",
            "expected at least one service name",
            id="empty-list",
        ),
        pytest.param(
            {"faults": [fault(target=["random"])]},
            "faults[0].target[0]",
            "'random' cannot be part of a list",
            id="random-in-list",
        ),
        pytest.param(
            {"faults": [fault(id="Bad id")]},
            "faults[0].id",
            "expected up to 64 letters, digits, '_' and '-'",
            id="bad-id",
        ),
        pytest.param(
            {"stack": {"replicas": 1}, "faults": [fault(target="replica-2")]},
            "faults[0].target",
            "this stack has replica-1 and gateway",
            id="one-replica",
        ),
        pytest.param(
            {"faults": [fault(target="gatewy")]},
            "faults[0].target",
            "did you mean 'gateway'?",
            id="target-typo",
        ),
        pytest.param(
            {"stack": {"catalog": {"items": 10}}},
            "stack.catalog.items",
            "expected a number at least 100, got 10",
            id="catalog-limits",
        ),
    ],
)
def test_semantic_checks_point_at_the_field(fields: dict[str, Any], loc: str, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        scenario(**fields)
    where, text = first_error(caught.value, Scenario)
    assert format_loc(where) == loc
    assert message in text


def test_a_fault_may_run_past_the_end_of_load() -> None:
    made = scenario(load={"duration": "60s"}, faults=[fault(at="50s", duration="30s")])
    assert made.faults[0].at + (made.faults[0].duration or 0) > made.load.duration


# --- the registry ------------------------------------------------------------------------


class DropParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    share: Share = 0.1


class DropPackets(FaultKind[DropParams]):
    """A third-party kind, registered through a (fake) entry point in the tests below."""

    name: ClassVar[str] = "drop_packets"
    Params: ClassVar[type[BaseModel]] = DropParams
    description: ClassVar[str] = "drops a share of packets"
    target_roles: ClassVar[frozenset[str]] = frozenset({"replica", "gateway"})

    def apply(self, ctx: Any, target: str, params: DropParams) -> dict[str, Any]:
        return {"target": target}

    def heal(self, ctx: Any, record: dict[str, Any]) -> None:
        return None

    def check_applied(
        self, ctx: Any, target: str, params: DropParams, record: dict[str, Any]
    ) -> str:
        return "dropping"


NotAKind = object()


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EntryPoint]]:
    """The installed entry points, to which a test adds its own."""
    installed = list(entry_points(group="drillkit.faults"))

    def fake_entry_points(*, group: str) -> list[EntryPoint]:
        assert group == "drillkit.faults"
        return installed

    monkeypatch.setattr("drillkit.faults.base.entry_points", fake_entry_points)
    fault_kinds.cache_clear()
    yield installed
    fault_kinds.cache_clear()


def entry(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group="drillkit.faults")


BUILTIN = {"kill_node", "pause_node", "cut_network", "latency", "corrupt_model", "load_spike"}


def test_the_entry_points_are_the_registry() -> None:
    fault_kinds.cache_clear()
    registered = {ep.name for ep in entry_points(group="drillkit.faults")}
    assert BUILTIN <= registered == set(fault_kinds())
    assert all(fault_kinds()[name].builtin for name in BUILTIN)
    assert fault_kinds()["corrupt_model"].target_roles == {"replica", "model-store"}
    assert fault_kinds()["corrupt_model"].cls.outlives_stack
    assert not fault_kinds()["kill_node"].cls.outlives_stack
    assert fault_param_models()["kill_node"] is KillNodeParams


def test_a_plugin_kind_validates_like_a_builtin(plugins: list[EntryPoint]) -> None:
    plugins.append(entry("drop_packets", f"{__name__}:DropPackets"))
    made = scenario(faults=[fault(kind="drop_packets", target="gateway", params={"share": "5%"})])
    assert made.faults[0].params == DropParams(share=0.05)
    assert fault_kinds()["drop_packets"].source == f"{__name__}:DropPackets"
    with pytest.raises(ScenarioError, match=r"faults\[0\].params.shar: unknown key 'shar'"):
        loads_scenario(
            "version: 1\nname: t\nfaults:\n- {kind: drop_packets, target: replica-1, at: 1,"
            " params: {shar: 1}}\n"
        )


class KillOverride(DropPackets):
    name: ClassVar[str] = "kill_node"


def test_a_second_registration_of_a_kind_is_skipped_with_a_warning(
    plugins: list[EntryPoint],
) -> None:
    plugins.append(entry("kill_override", f"{__name__}:KillOverride"))
    with pytest.warns(FaultPluginWarning, match="'kill_override'.*already registers"):
        assert fault_param_models()["kill_node"] is KillNodeParams


def test_two_plugins_for_one_kind_keep_the_first(plugins: list[EntryPoint]) -> None:
    plugins.append(entry("drop_packets", f"{__name__}:DropPackets"))
    plugins.append(entry("drop_again", f"{__name__}:DropPackets"))
    with pytest.warns(FaultPluginWarning, match="'drop_again'.*already registers"):
        assert "drop_packets" in fault_kinds()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param(
            "tests.unit.scenario.no_such_module:Kind", "ModuleNotFoundError", id="import-fails"
        ),
        pytest.param(
            f"{__name__}:NotAKind", "not a drillkit.faults.base.FaultKind subclass", id="not-a-kind"
        ),
    ],
)
def test_a_broken_plugin_is_skipped_with_a_warning(
    plugins: list[EntryPoint], value: str, reason: str
) -> None:
    plugins.append(entry("broken", value))
    plugins.append(entry("drop_packets", f"{__name__}:DropPackets"))
    with pytest.warns(FaultPluginWarning, match=f"fault plugin 'broken' .*{reason}"):
        kinds = fault_kinds()
    assert "drop_packets" in kinds and "broken" not in kinds
    assert set(kinds) >= BUILTIN


def test_fault_kind_is_abstract() -> None:
    with pytest.raises(TypeError):
        FaultKind()  # type: ignore[abstract]
    assert DropPackets().check_applied(None, "replica-1", DropParams(), {}) == "dropping"


# --- JSON Schema ---------------------------------------------------------------------------


def test_json_schema_accepts_the_good_cases_and_checks_params_per_kind() -> None:
    import jsonschema

    schema = json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "version 1" in schema["title"]
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name in ("good_full.yaml", "good_minimal.yaml", "good_features.yaml"):
        doc = yaml.safe_load((CASES / name).read_text())
        if name == "good_features.yaml":
            doc["stack"]["gpu"] = "off"  # safe_load is YAML 1.1, where `off` is False
        assert list(validator.iter_errors(doc)) == [], name
    bad = {"version": 1, "name": "t", "faults": [fault(params={"signal": "HUP"})]}
    assert any("HUP" in e.message for e in validator.iter_errors(bad))
    assert list(validator.iter_errors({"version": 1, "name": "t", "lod": {}}))


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"name": "bad!!name"}, id="name"),
        pytest.param({"faults": [fault(kind="kil_node")]}, id="kind"),
        pytest.param({"faults": [fault(duration="1.2.3s")]}, id="duration"),
        pytest.param({"faults": [fault(at="1..5s")]}, id="at"),
        pytest.param({"slo": {"availability": "99.9.9%"}}, id="share"),
        pytest.param({"faults": [fault(id="no spaces")]}, id="id"),
    ],
)
def test_the_schema_flags_what_validate_refuses(doc: dict[str, Any]) -> None:
    # Editors read the schema: what `validate` refuses, they must flag too (they accepted
    # these, which validate rejects).
    import jsonschema

    full = {"version": 1, "name": "t", **doc}
    with pytest.raises(ScenarioError):
        loads_scenario(yaml.safe_dump(full))
    validator = jsonschema.Draft202012Validator(json_schema())
    assert list(validator.iter_errors(full)), full


# --- import cost ---------------------------------------------------------------------------


def test_importing_the_scenario_package_stays_light() -> None:
    code = (
        "import sys, drillkit.scenario, drillkit.faults\n"
        "from drillkit.scenario import loads_scenario\n"
        "loads_scenario('version: 1\\nname: x\\n'\n"
        "               'faults: [{kind: latency, target: replica-1, at: 1}]')\n"
        "heavy = {'numpy', 'torch', 'faiss', 'docker', 'locust'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        pytest.param(
            "version: true\nname: t\n",
            "<string>:1: version: unsupported format version true",
            id="version-true",
        ),
        pytest.param(
            "version: 1\nname: t\nload: {users: 0}\n",
            "<string>:3: load.users: expected a number at least 1, got 0",
            id="users-0",
        ),
        pytest.param(
            "version: 1\nname: t\nscoring: {pass_score: 100.5}\n",
            "<string>:3: scoring.pass_score: expected a number at most 100, got 100.5",
            id="pass-score-above-100",
        ),
    ],
)
def test_validation_rules_at_their_bounds_are_pinned(doc: str, message: str) -> None:
    # `version: true` is 1 to Python (True == 1); the others sit one step past a bound.
    with pytest.raises(ScenarioError) as caught:
        loads_scenario(doc)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    "doc",
    [
        "version: 1\nname: t\nload: {users: 1}\n",
        "version: 1\nname: t\nscoring: {pass_score: 100}\n",
        "version: 1\nname: t\nscoring: {pass_score: 0}\n",
    ],
)
def test_values_at_the_bounds_are_accepted(doc: str) -> None:
    loads_scenario(doc)
