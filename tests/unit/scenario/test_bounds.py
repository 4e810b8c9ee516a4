"""The scenario's validation at its bounds: the cases mutation testing showed unpinned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from drillkit.errors import ScenarioError
from drillkit.scenario import Scenario, loads_scenario
from drillkit.scenario.units import (
    format_duration,
    parse_count_or_share,
    parse_duration,
    parse_share,
    show_value,
)


def scenario(**fields: Any) -> Scenario:
    return Scenario.model_validate({"version": 1, "name": "t", **fields})


def one_error(text: str) -> str:
    with pytest.raises(ScenarioError) as caught:
        loads_scenario(text, "d.yaml")
    return str(caught.value)


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        (1.5, " (did you mean 1.5%?)"),
        (100, " (did you mean 100%?)"),
        (100.5, ""),
        (-0.5, ""),
    ],
)
def test_a_share_out_of_range_hints_at_percent_only_when_it_could_be_one(
    value: float, hint: str
) -> None:
    with pytest.raises(ValueError) as caught:
        parse_share(value)
    shown = show_value(value)
    assert str(caught.value).endswith(f"between 0 and 1, got {shown}{hint}")


def test_a_count_has_at_most_18_digits() -> None:
    assert parse_count_or_share("9" * 18).count == 10**18 - 1
    with pytest.raises(ValueError, match="expected"):
        parse_count_or_share("9" * 19)
    with pytest.raises(ValueError, match="a count cannot be negative, got -3"):
        parse_count_or_share(-3)


def test_a_share_dumps_as_a_float_and_a_count_as_an_int() -> None:
    model = scenario(faults=[{"kind": "kill_node", "target": "replica-1", "at": "5s",
                              "expect": {"max_failed_requests": "0%"}}])  # fmt: skip
    dumped = model.model_dump(mode="json")["faults"][0]["expect"]["max_failed_requests"]
    assert dumped == 0.0 and type(dumped) is float


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.25, "250ms"), (0.999, "999ms"), (1.0, "1s"), (1.5, "1.5s")]
)
def test_durations_under_a_second_are_written_in_ms(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("x" * 40, repr("x" * 40)),
        ("x" * 41, repr("x" * 37 + "...")),
        (2**127 - 1, str(2**127 - 1)),  # 127 bits
        (2**127, "a very large number"),  # 128 bits
        (-(2**127 - 1), str(-(2**127 - 1))),
        ({1, 2}, "a set ({1, 2})"),
        (Path("a" * 50), f"a PosixPath ({'a' * 40})"),
    ],
)
def test_values_are_shown_short(value: object, shown: str) -> None:
    assert show_value(value) == shown


@pytest.mark.parametrize(("word", "value"), [(True, "on"), (False, "off"), ("auto", "auto")])
def test_gpu_takes_yaml_booleans(word: object, value: str) -> None:
    assert scenario(stack={"gpu": word}).stack.gpu == value


def test_the_last_replica_is_a_target() -> None:
    model = scenario(stack={"replicas": 3}, faults=[{"kind": "kill_node", "target": "replica-3",
                                                      "at": "5s"}])  # fmt: skip
    assert model.faults[0].target == "replica-3"
    with pytest.raises(ValidationError, match="replica-4"):
        scenario(stack={"replicas": 3},
                 faults=[{"kind": "kill_node", "target": "replica-4", "at": "5s"}])  # fmt: skip


@pytest.mark.parametrize(
    ("target", "where", "message"),
    [
        ("[replica-1, 5]", "faults[0].target[1]", "expected a service name, got 5"),
        ('[replica-1, "  "]', "faults[0].target[1]", "expected a service name, got '  '"),
        ('""', "faults[0].target", "expected a service name, a list of names or 'random', got ''"),
        ("{a: 1}", "faults[0].target",
         "expected a service name, a list of names or 'random', got a mapping"),
    ],
)  # fmt: skip
def test_a_bad_target_names_itself_and_its_place(target: str, where: str, message: str) -> None:
    text = f"version: 1\nname: t\nfaults:\n  - kind: kill_node\n    target: {target}\n"
    error = one_error(text)
    assert error.startswith("d.yaml:5: ") and f"{where}: " in error, error
    assert error.endswith(message), error


def test_an_absolute_path_is_refused_whatever_its_first_character() -> None:
    error = one_error("version: 1\nname: t\nstack: {store: /srv/models}\n")
    assert error.endswith("'/srv/models' is not a relative path; run the drill from a folder "
                          "that holds the store")  # fmt: skip


def test_the_store_reaches_the_stack_it_brings_up() -> None:
    assert scenario(stack={"store": "models/store"}).stack_spec().store == Path("models/store")
    assert scenario().stack_spec().store is None


def test_a_duration_too_large_for_decimal_is_refused_not_raised() -> None:
    with pytest.raises(ValueError, match="expected a finite duration"):
        parse_duration("1e999999999999999999s")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("expct: {}", "faults[0].expct: unknown key 'expct' (did you mean 'expect'?)"),
        ("zzzzz: 1", "faults[0].zzzzz: unknown key 'zzzzz' (expected one of: id, kind, "
                     "target, at, duration, params, expect)"),
        ("expect: {zzzzz: 1s}", "faults[0].expect.zzzzz: unknown key 'zzzzz' (expected one "
         "of: detect_within, recover_within, max_failed_requests, max_wrong_model_responses, "
         "cache_recover_within, alerts, alert_within, rollback_within, max_users_exposed, "
         "max_exposed_requests, max_events_lost, rpo_within, rto_within)"),
    ],
)  # fmt: skip
def test_an_unknown_key_in_a_fault_names_the_keys_of_its_own_section(
    line: str, message: str
) -> None:
    text = f"version: 1\nname: t\nfaults:\n  - kind: kill_node\n    target: replica-1\n" \
           f"    at: 5s\n    {line}\n"  # fmt: skip
    assert one_error(text) == f"d.yaml:7: {message}"


def test_the_backups_folder_is_private(tmp_path: Path) -> None:
    from drillkit.journal import Journal

    journal = Journal(tmp_path / "stack", "20260101-000000-aaaaaa")
    journal.new_backup_dir()
    assert journal.backups.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ("a\\0b", "a path cannot hold a NUL character"),
        ("~/models", "'~/models' is not a relative path; run the drill from a folder that "
                     "holds the store"),
        ("models/../../x", "'models/../../x' leaves the working folder; run the drill from a "
                           "folder that holds the store"),
    ],
)  # fmt: skip
def test_a_store_path_is_refused_with_the_reason(store: str, message: str) -> None:
    error = one_error(f'version: 1\nname: t\nstack:\n  store: "{store}"\n')
    assert error == f"d.yaml:4: stack.store: {message}"
