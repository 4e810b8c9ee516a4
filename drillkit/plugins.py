"""Loading a named plugin from an entry-point group.

Built-in backends, stack presets and fault kinds register through the same entry points a
third-party package uses (``pyproject.toml``), so this is the one registry of each: a list
of what exists is the list of entry points, never a table kept beside it.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from drillkit.errors import InputError


def load_plugin(group: str, name: str, *, what: str) -> object:
    """The object registered as ``name`` in ``group``; InputError naming the known ones."""
    found = list(entry_points(group=group, name=name))
    if not found:
        known = sorted({ep.name for ep in entry_points(group=group)})
        hint = ", ".join(known) if known else "none: is drillkit installed (pip install -e .)?"
        raise InputError(f"unknown {what} {name!r} (available: {hint})")
    return found[0].load()
