"""Where drillkit keeps its files.

``DRILLKIT_CACHE_DIR`` and ``DRILLKIT_STATE_DIR`` set each folder; ``DRILLKIT_HOME`` puts both
under one folder (tests and CI use it); otherwise the XDG locations are used. Built artifacts
are a cache (safe to delete, rebuilt on demand); running stacks and fault journals are state
(needed to tear down and heal what is running).
"""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def cache_dir() -> Path:
    """Built model artifacts, keyed by catalog parameters."""
    if explicit := os.environ.get("DRILLKIT_CACHE_DIR"):
        return Path(explicit)
    home = os.environ.get("DRILLKIT_HOME")
    if home:
        return Path(home) / "cache"
    return _xdg("XDG_CACHE_HOME", ".cache") / "drillkit"


def state_dir() -> Path:
    """The running stack's state, run folders with logs, and the fault journal."""
    if explicit := os.environ.get("DRILLKIT_STATE_DIR"):
        return Path(explicit)
    home = os.environ.get("DRILLKIT_HOME")
    if home:
        return Path(home) / "state"
    return _xdg("XDG_STATE_HOME", ".local/state") / "drillkit"
