"""Per-request records: the wire form read from the load generator's socket, and the columns.

A record arrives from a socket: each field is checked at its bounds, nothing is coerced.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from drillkit.observe.records import MAX_LATENCY_MS, MAX_TEXT, Records, RequestRecord

GOOD: list[Any] = [1.7e9, 12.5, 200, "", 0, "v2", "d" * 64, "replica-1"]


def line(**changes: Any) -> str:
    fields = ["sent_at", "latency", "status", "error", "degraded", "version", "digest", "replica"]
    values = [changes.get(name, value) for name, value in zip(fields, GOOD, strict=True)]
    return json.dumps(values)


def test_a_record_round_trips_through_the_wire() -> None:
    record = RequestRecord(1.7e9 + 0.125, 12.5, 503, "http", True, "v2", "d" * 64, "replica-1")
    assert RequestRecord.from_wire(record.to_wire()) == record
    assert RequestRecord.from_wire(record.to_wire().encode()) == record
    parsed = RequestRecord.from_wire(line())
    assert parsed == RequestRecord(1.7e9, 12.5, 200, "", False, "v2", "d" * 64, "replica-1")


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"latency": 0}, id="latency-zero-int"),
        pytest.param({"latency": MAX_LATENCY_MS}, id="latency-at-the-cap"),
        pytest.param({"status": 0}, id="no-response"),
        pytest.param({"status": 999}, id="status-999"),
        pytest.param({"sent_at": 1e-300}, id="tiny-time"),
        pytest.param({"error": "timeout", "status": 0}, id="an-error-class"),
        pytest.param({"degraded": 1}, id="degraded"),
        pytest.param({"version": "v" * MAX_TEXT}, id="longest-version"),
        pytest.param({"digest": "", "version": "", "replica": ""}, id="empty-texts"),
    ],
)
def test_values_at_their_bounds_are_accepted(changes: dict[str, Any]) -> None:
    record = RequestRecord.from_wire(line(**changes))
    assert type(record.latency_ms) is float and type(record.degraded) is bool
    assert record.latency_ms == float(changes.get("latency", GOOD[1]))
    assert record.status == changes.get("status", GOOD[2])
    assert record.degraded is (changes.get("degraded", 0) == 1)
    assert record.model_version == changes.get("version", GOOD[5])


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"sent_at": 0.0}, id="time-zero"),
        pytest.param({"sent_at": -1.0}, id="time-negative"),
        pytest.param({"sent_at": 1e11}, id="time-too-late"),
        pytest.param({"sent_at": 1700000000}, id="time-an-int"),
        pytest.param({"sent_at": "1.7e9"}, id="time-a-string"),
        pytest.param({"latency": -0.001}, id="latency-negative"),
        pytest.param({"latency": MAX_LATENCY_MS + 1}, id="latency-over-an-hour"),
        pytest.param({"latency": "12"}, id="latency-a-string"),
        pytest.param({"latency": True}, id="latency-a-bool"),
        pytest.param({"status": -1}, id="status-negative"),
        pytest.param({"status": 1000}, id="status-1000"),
        pytest.param({"status": 200.0}, id="status-a-float"),
        pytest.param({"status": True}, id="status-a-bool"),
        pytest.param({"error": "boom"}, id="error-unknown"),
        pytest.param({"degraded": 2}, id="degraded-2"),
        pytest.param({"degraded": True}, id="degraded-a-bool"),
        pytest.param({"degraded": "1"}, id="degraded-a-string"),
        pytest.param({"version": "v" * (MAX_TEXT + 1)}, id="version-too-long"),
        pytest.param({"digest": "d" * (MAX_TEXT + 1)}, id="digest-too-long"),
        pytest.param({"replica": "r" * (MAX_TEXT + 1)}, id="replica-too-long"),
        pytest.param({"replica": 1}, id="replica-a-number"),
        pytest.param({"digest": None}, id="digest-null"),
        pytest.param({"version": ["v2"]}, id="version-a-list"),
    ],
)
def test_a_value_out_of_its_range_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RequestRecord.from_wire(line(**changes))


@pytest.mark.parametrize(
    "text", ["[1.7e9, 12.5, 200]", "{}", "null", "not json", json.dumps([*GOOD, "extra"])]
)
def test_a_line_of_another_shape_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        RequestRecord.from_wire(text)


def test_columns_are_sorted_by_send_time_relative_to_t0() -> None:
    rows = [
        RequestRecord(103.0, 5.0, 200, model_digest="good"),
        RequestRecord(101.0, 7.0, 0, "timeout"),
        RequestRecord(102.0, 6.0, 200, degraded=True),
        RequestRecord(104.0, 8.0, 200, model_digest="rogue", replica="replica-2"),
        RequestRecord(105.0, 9.0, 404, model_digest="rogue"),
    ]
    records = Records.build(rows, t0=100.0, verified_digests=["good"])
    assert records.t.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert records.latency_ms.tolist() == [7.0, 6.0, 5.0, 8.0, 9.0]
    assert records.failed.tolist() == [True, False, False, False, False]
    assert records.degraded.tolist() == [False, True, False, False, False]
    # Wrong model: answered (not failed, not degraded, not a 4xx) by an unverified digest.
    assert records.wrong_model.tolist() == [False, False, False, True, False]
    assert records.replica.tolist() == ["", "", "", "replica-2", ""]
    window = records.window(2.0, 4.0)
    assert window.t.tolist() == [2.0, 3.0] and len(window) == 2
    assert window.degraded.tolist() == [True, False]
    assert window.wrong_model.tolist() == [False, False]
    assert window.replica.tolist() == ["", ""]
    assert window.status.tolist() == [200, 200]
    unversioned = Records.build(rows, t0=100.0, verified_digests=None)
    assert not unversioned.wrong_model.any()


def test_a_degraded_answer_that_failed_counts_as_failed_only() -> None:
    rows = [RequestRecord(1.0, 5.0, 503, "http", degraded=True)]
    records = Records.build(rows, t0=0.0, verified_digests=[])
    assert records.failed.tolist() == [True] and records.degraded.tolist() == [False]
    assert records.wrong_model.tolist() == [False]


def test_a_4xx_answer_is_not_a_wrong_model_response() -> None:
    # A client error carries no recommendation, whatever digest the header names.
    rows = [RequestRecord(1.0, 5.0, s, model_digest="rogue") for s in (200, 399, 400, 404)]
    records = Records.build(rows, t0=0.0, verified_digests=["good"])
    assert records.wrong_model.tolist() == [True, True, False, False]


def test_a_record_that_is_not_degraded_says_so_on_the_wire() -> None:
    record = RequestRecord(1.7e9, 3.0, 200, "", False, "v1", "d", "replica-1")
    assert json.loads(record.to_wire())[4] == 0
    assert RequestRecord.from_wire(record.to_wire()).degraded is False


def test_zone_and_cache_ride_the_wire_and_a_first_wave_line_still_reads() -> None:
    record = RequestRecord(1.7e9, 3.0, 200, "", False, "v1", "d", "replica-a1", "a", "hit")
    assert RequestRecord.from_wire(record.to_wire()) == record
    old = RequestRecord.from_wire(line())  # eight fields: no zone, no cache
    assert (old.zone, old.cache) == ("", "")


@pytest.mark.parametrize(
    "tail",
    [["a", "warm"], ["a", 1], [1, "hit"], ["z" * (MAX_TEXT + 1), "hit"], ["a"]],
    ids=["unknown-cache", "cache-not-text", "zone-not-text", "zone-too-long", "nine-fields"],
)
def test_a_zone_or_cache_field_out_of_its_range_is_refused(tail: list[Any]) -> None:
    with pytest.raises(ValueError):
        RequestRecord.from_wire(json.dumps([*GOOD, *tail]))


def test_columns_of_zone_and_cache_exist_only_when_some_request_had_them() -> None:
    plain = Records.build([RequestRecord(1.0, 1.0, 200)], t0=0.0, verified_digests=None)
    assert plain.zone is None and plain.cache is None
    rows = [
        RequestRecord(1.0, 1.0, 200, zone="a", cache="hit"),
        RequestRecord(2.0, 1.0, 0, "timeout"),  # no answer: no zone, no cache
    ]
    made = Records.build(rows, t0=0.0, verified_digests=None)
    assert made.zone is not None and made.zone.tolist() == ["a", ""]
    later = made.window(1.5, 3.0).cache
    assert later is not None and later.tolist() == [""]


def test_a_record_carries_the_user_it_was_for() -> None:
    record = RequestRecord(1.7e9, 3.0, 200, "", False, "v3", "e" * 64, "replica-2", user=4242)
    wire = record.to_wire()
    assert wire.endswith(",4242]")
    assert RequestRecord.from_wire(wire) == record
    # A line from before the user field (ten fields) reads, with no user.
    ten = json.loads(wire)[:10]
    assert RequestRecord.from_wire(json.dumps(ten)).user == -1
    columns = Records.build(
        [record, RequestRecord(1.7e9 + 1, 3.0, 200, model_digest="f" * 64, user=7)],
        t0=1.7e9,
        verified_digests=None,
    )
    assert columns.user is not None and columns.user.tolist() == [4242, 7]
    assert columns.digest is not None and columns.digest.tolist() == ["e" * 64, "f" * 64]
    window = columns.window(0.5, 2.0)
    assert window.user is not None and window.user.tolist() == [7]


@pytest.mark.parametrize("user", [-2, 1 << 62, 1.5, "7", True, None])
def test_a_user_out_of_range_is_refused(user: Any) -> None:
    fields = [*json.loads(line()), "", "", user]
    with pytest.raises(ValueError):
        RequestRecord.from_wire(json.dumps(fields))


def test_records_without_user_ids_have_no_user_column() -> None:
    columns = Records.build([RequestRecord(1.7e9, 3.0, 200)], t0=0.0, verified_digests=None)
    assert columns.user is None and columns.digest is None
