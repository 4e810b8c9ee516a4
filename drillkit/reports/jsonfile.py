"""Writing reports atomically, and reading them back with errors a user can act on."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from drillkit import safejson
from drillkit.errors import InputError
from drillkit.fsutil import atomic_write
from drillkit.reports.model import SCHEMA_VERSION, DrillReport

__all__ = ["REPORT_MODE", "atomic_write", "read_report", "write_report"]

#: Reports are for sharing (CI artifacts, a web server): readable by all, unlike state files.
REPORT_MODE = 0o644


def write_report(report: DrillReport, path: str | os.PathLike[str]) -> Path:
    """Write ``report`` as indented JSON to ``path``, atomically; returns the path."""
    return atomic_write(
        path, (report.model_dump_json(indent=2) + "\n").encode("utf-8"), mode=REPORT_MODE
    )


def read_report(path: str | os.PathLike[str]) -> DrillReport:
    """The report at ``path``.

    Raises :class:`~drillkit.errors.InputError` naming the file for a missing or unreadable
    file, invalid JSON, another ``schema_version``, or a field that does not fit schema v1.
    """
    source = Path(path)
    try:
        raw = source.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{source}: no such report") from None
    except OSError as exc:
        raise InputError(f"{source}: cannot read the report: {exc.strerror or exc}") from None
    try:
        # JSON has no NaN or Infinity (Python's reader accepts them, and 1e999 overflows to
        # inf): a report holding one is not drillkit's, and every comparison with it is false.
        data: Any = safejson.loads(
            raw.decode("utf-8"), parse_constant=_not_a_number, parse_float=_finite
        )
    except UnicodeDecodeError:
        raise InputError(f"{source}: not a drillkit report: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except _NotFinite as exc:
        raise InputError(f"{source}: not a drillkit report: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(
            f"{source}: not a drillkit report: expected a JSON object, got {type(data).__name__}"
        )
    if "schema_version" not in data:
        raise InputError(f"{source}: not a drillkit report: schema_version is missing")
    version = data["schema_version"]
    # bool is an int in Python; `true` is not version 1.
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise InputError(
            f"{source}: schema_version: report schema version {json.dumps(version)} is not "
            f"supported; this drillkit reads version {SCHEMA_VERSION}"
        )
    try:
        return DrillReport.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _field_path(first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise InputError(f"{source}: {where}: {first['msg']}{more}") from None


class _NotFinite(ValueError):
    pass


def _not_a_number(text: str) -> float:
    raise _NotFinite(f"{text} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"{text} is too large for a figure")
    return value


def _field_path(loc: tuple[int | str, ...]) -> str:
    """``("phases", 0, "requests")`` -> ``phases[0].requests``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"
