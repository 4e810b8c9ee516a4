"""Units of the scenario format: durations, shares, and counts-or-shares.

Each unit comes as a parse function (``parse_duration``, ``parse_share``,
``parse_count_or_share``) that raises :class:`ValueError` with a message meant for the person
who wrote the file, and as a pydantic-ready ``Annotated`` type (:data:`Duration`,
:data:`PositiveDuration`, :data:`Share`, :data:`CountOrShareField`) that also carries a JSON
Schema accepting both spellings, so editors do not flag ``5s`` or ``99.9%`` as wrong.

Decimal arithmetic turns ``99.9%`` into exactly ``0.999`` and ``250ms`` into exactly ``0.25``;
binary floating point would give ``0.9990000000000001``, which then shows up in reports.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, DecimalException
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, PlainValidator, WithJsonSchema

__all__ = [
    "CountOrShare",
    "CountOrShareField",
    "Duration",
    "FieldError",
    "PositiveDuration",
    "Share",
    "format_duration",
    "parse_count_or_share",
    "parse_duration",
    "parse_positive_duration",
    "parse_share",
    "show_value",
]

Loc = tuple[str | int, ...]


class FieldError(ValueError):
    """A validation failure that knows which part of the validated value is at fault.

    Raised from validators; pydantic keeps the exception in the error's context, and the
    scenario loader appends :attr:`loc` to the location pydantic reports, so a check made on a
    whole fault can still point at ``faults[2].target[1]`` and its line.
    """

    def __init__(self, message: str, loc: Loc = ()) -> None:
        super().__init__(message)
        self.loc: Loc = tuple(loc)


_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_DURATION_RE = re.compile(rf"(?P<number>{_NUMBER})\s*(?P<unit>ms|s|m|h)?")
_NUMBER_RE = re.compile(_NUMBER)
_PERCENT_RE = re.compile(rf"(?P<number>{_NUMBER})\s*%")
_UNIT_SECONDS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}

_DURATION_HINT = "a duration like 250ms, 5s, 2m or a number of seconds"
_SHARE_HINT = "a share like 99.9% or 0.999"
_COUNT_OR_SHARE_HINT = "a count like 0 or 5, or a share like 0.1% or 0.001"


def show_value(value: object) -> str:
    """Render a value from a scenario file for an error message: short, and typed by shape."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    if isinstance(value, int):
        text = str(value) if value.bit_length() < 128 else "a very large number"
        return text
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__} ({str(value)[:40]})"


def format_duration(seconds: float) -> str:
    """Render seconds the way a scenario would spell them: ``250ms``, ``5s``, ``1.5s``."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def _finite_float(number: Decimal | float | int) -> float | None:
    try:
        result = float(number)
    except (OverflowError, DecimalException):
        return None
    return result if math.isfinite(result) else None


def parse_duration(value: object) -> float:
    """Parse a duration into seconds.

    Accepts ``250ms``, ``5s``, ``2m``, ``1h`` (whitespace between number and unit allowed),
    or a bare int or float meaning seconds. Negative, non-finite and unitless garbage values
    raise :class:`ValueError`.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {_DURATION_HINT}, got {show_value(value)}")
    if isinstance(value, int | float):
        seconds = _finite_float(value)
        if seconds is None:
            raise ValueError(f"expected a finite duration, got {show_value(value)}")
        if seconds < 0:
            raise ValueError(f"a duration cannot be negative, got {show_value(value)}")
        return seconds
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-") and _DURATION_RE.fullmatch(text[1:].strip()):
            raise ValueError(f"a duration cannot be negative, got {show_value(value)}")
        match = _DURATION_RE.fullmatch(text)
        if match is None:
            raise ValueError(f"expected {_DURATION_HINT}, got {show_value(value)}")
        scale = _UNIT_SECONDS[match["unit"] or "s"]
        try:
            exact = Decimal(match["number"]) * scale
        except DecimalException:
            exact = Decimal("Infinity")
        seconds = _finite_float(exact)
        if seconds is None:
            raise ValueError(f"expected a finite duration, got {show_value(value)}")
        return seconds
    raise ValueError(f"expected {_DURATION_HINT}, got {show_value(value)}")


def parse_positive_duration(value: object) -> float:
    """Like :func:`parse_duration`, but zero is refused too."""
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"expected a duration greater than 0, got {show_value(value)}")
    return seconds


def _decimal_share(text: str, original: object) -> Decimal:
    percent = _PERCENT_RE.fullmatch(text)
    try:
        if percent is not None:
            return Decimal(percent["number"]) / 100
        if _NUMBER_RE.fullmatch(text):
            return Decimal(text)
    except DecimalException:
        pass
    raise ValueError(f"expected {_SHARE_HINT}, got {show_value(original)}")


def _check_share(share: float | None, original: object) -> float:
    if share is None:
        raise ValueError(f"expected {_SHARE_HINT}, got {show_value(original)}")
    if not 0 <= share <= 1:
        hint = ""
        if isinstance(original, int | float) and 1 < original <= 100:
            hint = f" (did you mean {original:g}%?)"
        raise ValueError(
            f"expected {_SHARE_HINT}, between 0 and 1, got {show_value(original)}{hint}"
        )
    return share


def parse_share(value: object) -> float:
    """Parse a share into a float in ``[0, 1]``: ``99.9%``, ``0.999``, or a number."""
    if isinstance(value, bool):
        raise ValueError(f"expected {_SHARE_HINT}, got {show_value(value)}")
    if isinstance(value, int | float):
        return _check_share(_finite_float(value), value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-"):
            raise ValueError(f"a share cannot be negative, got {show_value(value)}")
        return _check_share(_finite_float(_decimal_share(text, value)), value)
    raise ValueError(f"expected {_SHARE_HINT}, got {show_value(value)}")


@dataclass(frozen=True)
class CountOrShare:
    """A limit given either as a count of requests or as a share of all requests.

    Exactly one of :attr:`count` and :attr:`share` is set.
    """

    count: int | None = None
    share: float | None = None

    def __post_init__(self) -> None:
        if (self.count is None) == (self.share is None):
            raise ValueError("CountOrShare needs exactly one of count and share")

    def __str__(self) -> str:
        if self.count is not None:
            return str(self.count)
        assert self.share is not None
        return f"{self.share * 100:g}%"


def parse_count_or_share(value: object) -> CountOrShare:
    """Parse a count (an integer, ``5`` or ``"5"``) or a share (``"0.1%"``, ``0.001``).

    An integer is always a count; a number with a fraction or a percent sign is a share.
    """
    if isinstance(value, CountOrShare):
        return value
    problem = f"expected {_COUNT_OR_SHARE_HINT}, got {show_value(value)}"
    if isinstance(value, bool):
        raise ValueError(problem)
    if isinstance(value, str):
        digits = value.strip()
        if digits.isascii() and digits.isdigit():
            # int() of thousands of digits is refused by Python itself; no real limit is that big.
            if len(digits) > 18:
                raise ValueError(problem)
            value = int(digits)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a count cannot be negative, got {show_value(value)}")
        return CountOrShare(count=value)
    if isinstance(value, float | str):
        try:
            share = parse_share(value)
        except ValueError:
            raise ValueError(problem) from None
        return CountOrShare(share=share)
    raise ValueError(problem)


def _dump_count_or_share(value: CountOrShare) -> int | float:
    # Integers read back as counts and floats as shares, so a dump validates to the same value.
    return value.count if value.count is not None else float(value.share or 0.0)


# The patterns are the loader's own number syntax, so an editor flags what `validate` refuses
# (`1.2.3s` matched the looser `[0-9.]+` they had).
_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": rf"^\s*{_NUMBER}\s*(ms|s|m|h)?\s*$"},
    ],
    "description": "A duration: 250ms, 5s, 2m, 1h, or a number of seconds.",
    # What a number means, for editors and `drillkit list` (not a validation keyword).
    "unit": "s",
}
_SHARE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": 1},
        {"type": "string", "pattern": rf"^\s*{_NUMBER}\s*%?\s*$"},
    ],
    "description": "A share: 99.9% or 0.999.",
}
_COUNT_OR_SHARE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "number", "minimum": 0, "maximum": 1},
        {"type": "string", "pattern": rf"^\s*{_NUMBER}\s*%?\s*$"},
    ],
    "description": "A count of requests (an integer), or a share like 0.1% or 0.001.",
}

Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]
"""Seconds, as a float >= 0; written ``250ms``, ``5s``, ``2m``, ``1h`` or a number."""

PositiveDuration = Annotated[
    float, BeforeValidator(parse_positive_duration), WithJsonSchema(_DURATION_SCHEMA)
]
"""Like :data:`Duration`, but greater than zero."""

Share = Annotated[float, BeforeValidator(parse_share), WithJsonSchema(_SHARE_SCHEMA)]
"""A float in ``[0, 1]``; written ``99.9%`` or ``0.999``."""

CountOrShareField = Annotated[
    CountOrShare,
    PlainValidator(parse_count_or_share),
    PlainSerializer(_dump_count_or_share),
    WithJsonSchema(_COUNT_OR_SHARE_SCHEMA),
]
"""A :class:`CountOrShare` read from ``0``, ``5``, ``"0.1%"`` or ``0.001``."""
