"""A click event's body is a client's: every field is checked before it reaches the store."""

from __future__ import annotations

import pytest

from drillkit.stacks.recommender.events import ClickEvent, event_store_options, parse_event


def test_a_well_formed_event_becomes_its_stream_fields() -> None:
    event = parse_event({"producer": "1234.0.7", "seq": 3, "user": 17, "item": 903})
    assert event == ClickEvent("1234.0.7", 3, 17, 903)
    assert event.fields() == {"p": "1234.0.7", "s": "3", "u": "17", "i": "903"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "exactly producer"),
        ({"producer": "p", "seq": 0, "user": 1}, "exactly producer"),
        ({"producer": "p", "seq": 0, "user": 1, "item": 2, "x": 1}, "exactly producer"),
        ({"producer": "", "seq": 0, "user": 1, "item": 2}, "producer"),
        ({"producer": "a b", "seq": 0, "user": 1, "item": 2}, "producer"),
        ({"producer": "p" * 65, "seq": 0, "user": 1, "item": 2}, "producer"),
        ({"producer": "-p", "seq": 0, "user": 1, "item": 2}, "producer"),
        ({"producer": "p", "seq": -1, "user": 1, "item": 2}, "seq"),
        ({"producer": "p", "seq": True, "user": 1, "item": 2}, "seq"),
        ({"producer": "p", "seq": 0, "user": 1.5, "item": 2}, "user"),
        ({"producer": "p", "seq": 0, "user": 1, "item": 1 << 62}, "item"),
    ],
)
def test_a_bad_body_is_refused_naming_its_field(body: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        parse_event(body)


@pytest.mark.parametrize("appendfsync", ["always", "everysec", "no"])
def test_the_store_persists_every_event_and_never_evicts_one(appendfsync: str) -> None:
    options = list(event_store_options(appendfsync))
    pairs = dict(zip(options[::2], options[1::2], strict=True))
    assert pairs["--appendonly"] == "yes" and pairs["--appendfsync"] == appendfsync
    assert pairs["--maxmemory-policy"] == "noeviction"
