"""Loading a named plugin class from an entry-point group, with built-in fallbacks.

Built-in backends and fault kinds register through the same entry points a third-party
package would use; the fallback table keeps a source checkout without installed metadata
working.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points

from drillkit.errors import InputError


def load_plugin(group: str, name: str, builtins: Mapping[str, str], *, what: str) -> object:
    """The object registered as ``name`` in ``group``, else the built-in ``module:attr``."""
    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.load()
    if name not in builtins:
        known = sorted({*builtins, *(ep.name for ep in entry_points(group=group))})
        raise InputError(f"unknown {what} {name!r} (available: {', '.join(known)})")
    module, _, attr = builtins[name].partition(":")
    return getattr(importlib.import_module(module), attr)
