"""Writing reports atomically, and reading them back with errors a user can act on."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from drillkit.errors import InputError
from drillkit.reports.model import SCHEMA_VERSION, DrillReport

__all__ = ["atomic_write", "read_report", "write_report"]


def atomic_write(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one, whole.

    The temporary file lives in the same folder (``os.replace`` is only atomic within one
    file system) and is fsynced before the rename, so a crash cannot leave a torn report;
    the folder is created when missing.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # Persist the rename itself; not every platform lets a folder be opened, hence best effort.
    with contextlib.suppress(OSError):
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return target


def write_report(report: DrillReport, path: str | os.PathLike[str]) -> Path:
    """Write ``report`` as indented JSON to ``path``, atomically; returns the path."""
    return atomic_write(path, (report.model_dump_json(indent=2) + "\n").encode("utf-8"))


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
        data: Any = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{source}: not a drillkit report: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}:{exc.lineno}: not valid JSON: {exc.msg}") from None
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


def _field_path(loc: tuple[int | str, ...]) -> str:
    """``("phases", 0, "requests")`` -> ``phases[0].requests``."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"
