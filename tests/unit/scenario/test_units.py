"""Durations, shares and counts-or-shares: the units of the scenario format."""

from __future__ import annotations

import contextlib
import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from drillkit.scenario.units import (
    CountOrShare,
    CountOrShareField,
    Duration,
    PositiveDuration,
    Share,
    format_duration,
    parse_count_or_share,
    parse_duration,
    parse_positive_duration,
    parse_share,
    show_value,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("250ms", 0.25, id="ms"),
        pytest.param("5s", 5.0, id="s"),
        pytest.param("2m", 120.0, id="m"),
        pytest.param("1h", 3600.0, id="h"),
        pytest.param("1.5s", 1.5, id="fraction"),
        pytest.param(" 10 s ", 10.0, id="spaces"),
        pytest.param(".5m", 30.0, id="leading-dot"),
        pytest.param("1e3ms", 1.0, id="exponent"),
        pytest.param("0", 0.0, id="zero-string"),
        pytest.param("7", 7.0, id="bare-string"),
        pytest.param(7, 7.0, id="int"),
        pytest.param(0.1, 0.1, id="float"),
        pytest.param("100ms", 0.1, id="exact-decimal"),
    ],
)
def test_durations_parse(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            "5 parsecs",
            "expected a duration like 250ms, 5s, 2m or a number of seconds, got '5 parsecs'",
            id="parsecs",
        ),
        pytest.param("", "got ''", id="empty"),
        pytest.param("   ", "got '   '", id="blank"),
        pytest.param("-5s", "a duration cannot be negative, got '-5s'", id="negative-string"),
        pytest.param(-1, "a duration cannot be negative, got -1", id="negative-int"),
        pytest.param(-0.5, "cannot be negative", id="negative-float"),
        pytest.param(math.nan, "expected a finite duration, got nan", id="nan"),
        pytest.param(math.inf, "expected a finite duration, got inf", id="inf"),
        pytest.param("nan", "got 'nan'", id="nan-string"),
        pytest.param("inf", "got 'inf'", id="inf-string"),
        pytest.param("1e999s", "expected a finite duration", id="overflow"),
        pytest.param(10**400, "expected a finite duration", id="huge-int"),
        pytest.param(True, "got true", id="bool"),
        pytest.param(None, "got null", id="null"),
        pytest.param([1], "got a list", id="list"),
        pytest.param("5 s s", "got '5 s s'", id="two-units"),
        pytest.param("5sec", "got '5sec'", id="unknown-unit"),
    ],
)
def test_bad_durations_say_what_was_expected(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_duration(value)


def test_positive_duration_refuses_zero() -> None:
    assert parse_positive_duration("1ms") == 0.001
    with pytest.raises(ValueError, match="expected a duration greater than 0, got '0s'"):
        parse_positive_duration("0s")


@pytest.mark.parametrize(
    ("value", "share"),
    [
        pytest.param("99.9%", 0.999, id="percent"),
        pytest.param("0.999", 0.999, id="string"),
        pytest.param(0.999, 0.999, id="float"),
        pytest.param("100%", 1.0, id="all"),
        pytest.param("0%", 0.0, id="none"),
        pytest.param(1, 1.0, id="int-one"),
        pytest.param(0, 0.0, id="int-zero"),
        pytest.param(" 5 % ", 0.05, id="spaces"),
    ],
)
def test_shares_parse(value: object, share: float) -> None:
    assert parse_share(value) == share


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(99.9, r"got 99.9 \(did you mean 99.9%\?\)", id="percent-without-sign"),
        pytest.param("150%", "between 0 and 1, got '150%'", id="over-100-percent"),
        pytest.param(-0.1, "between 0 and 1, got -0.1", id="negative"),
        pytest.param("-5%", "a share cannot be negative", id="negative-percent"),
        pytest.param("most", "expected a share like 99.9% or 0.999, got 'most'", id="word"),
        pytest.param(math.nan, "got nan", id="nan"),
        pytest.param(False, "got false", id="bool"),
        pytest.param({}, "got a mapping", id="mapping"),
    ],
)
def test_bad_shares(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_share(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(0, CountOrShare(count=0), id="zero"),
        pytest.param(5, CountOrShare(count=5), id="count"),
        pytest.param("12", CountOrShare(count=12), id="count-string"),
        pytest.param("0.1%", CountOrShare(share=0.001), id="percent"),
        pytest.param(0.001, CountOrShare(share=0.001), id="float-share"),
        pytest.param("0.5", CountOrShare(share=0.5), id="share-string"),
    ],
)
def test_counts_or_shares(value: object, expected: CountOrShare) -> None:
    assert parse_count_or_share(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(-1, id="negative"),
        pytest.param(2.5, id="fraction-above-one"),
        pytest.param("lots", id="word"),
        pytest.param(True, id="bool"),
        pytest.param("9" * 30, id="too-many-digits"),
        pytest.param(None, id="null"),
    ],
)
def test_bad_counts_or_shares(value: object) -> None:
    with pytest.raises(ValueError, match="count|share"):
        parse_count_or_share(value)


def test_count_or_share_reads_back() -> None:
    assert str(CountOrShare(share=0.001)) == "0.1%"
    assert str(CountOrShare(count=7)) == "7"
    with pytest.raises(ValueError, match="exactly one"):
        CountOrShare()
    with pytest.raises(ValueError, match="exactly one"):
        CountOrShare(count=1, share=0.1)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0.25, "250ms", id="ms"),
        pytest.param(60.0, "60s", id="whole"),
        pytest.param(1.5, "1.5s", id="fraction"),
        pytest.param(0.0, "0s", id="zero"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_show_value_keeps_messages_short() -> None:
    assert show_value("x" * 100).endswith("...'")
    assert len(show_value("x" * 100)) < 50
    assert show_value(10**200) == "a very large number"


class _Units(BaseModel):
    duration: Duration = 0.0
    positive: PositiveDuration = 1.0
    share: Share = 0.0
    limit: CountOrShareField | None = None


def test_annotated_types_validate_and_round_trip() -> None:
    model = _Units.model_validate(
        {"duration": "2m", "positive": "10ms", "share": "99.9%", "limit": "0.1%"}
    )
    assert (model.duration, model.positive, model.share) == (120.0, 0.01, 0.999)
    assert model.limit == CountOrShare(share=0.001)
    assert _Units.model_validate(model.model_dump()) == model
    assert _Units.model_validate_json(model.model_dump_json()) == model
    counted = _Units.model_validate({"limit": 0})
    assert _Units.model_validate(counted.model_dump()).limit == CountOrShare(count=0)


def test_annotated_types_report_value_errors() -> None:
    with pytest.raises(ValidationError, match="got '5 parsecs'"):
        _Units.model_validate({"duration": "5 parsecs"})


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_numbers_are_seconds(seconds: float) -> None:
    assert parse_duration(seconds) == seconds


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(["ms", "s", "m", "h"]))
def test_integer_durations_are_exact(number: int, unit: str) -> None:
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    assert parse_duration(f"{number}{unit}") == pytest.approx(number * scale, rel=1e-15)


@given(st.text(max_size=30))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    for parse in (parse_duration, parse_share, parse_count_or_share):
        with contextlib.suppress(ValueError):
            parse(text)
