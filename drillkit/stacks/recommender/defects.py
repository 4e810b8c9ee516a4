"""Model versions that pass every offline check and still hurt users: what ``bad_rollout``
publishes, built from the real version being served.

The load-time sanity gate recomputes recall on a stored sample of users, so a defect it cannot
see is one that spares those users, as a bad feature pipeline does when the offline evaluation
set was joined correctly and live traffic was not:

- ``quality``: the feature join of the new version put another user's history (and category
  counts) on a ``severity`` share of the users outside the sanity sample. The model is
  unchanged; those users' vectors are computed from the wrong features, so their
  recommendations fit someone else and their recall collapses.
- ``errors``: the join lost the feature rows of a ``severity`` share of the users outside the
  sample; the version lists them in ``unservable_users`` and the replica answers them 500.
- ``latency``: the version's runtime settings add ``severity`` milliseconds of feature fetch
  to every request (``info.runtime.feature_fetch_ms``).
- ``none``: a healthy new version: the served weights, nudged by 1% of each tensor's spread
  (as good, a different digest).

Every version is a complete copy with a manifest written by the store, signed when a signing
key is set: it verifies and passes the sanity gate. Only numpy and safetensors are needed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from drillkit.stacks.recommender.store import MANIFEST_NAME, Manifest

__all__ = ["DEFECTS", "Defect", "defect_info", "defect_writer"]

Defect = Literal["none", "quality", "errors", "latency"]
DEFECTS: tuple[Defect, ...] = ("none", "quality", "errors", "latency")
_TABLES = "tables.safetensors"
_WEIGHTS = "weights.safetensors"
_NUDGE = 0.01


def _copy(source: Path, folder: Path) -> list[str]:
    names = [n for n in os.listdir(source) if n != MANIFEST_NAME and not n.startswith(".")]
    for name in names:
        shutil.copy2(source / name, folder / name)
    return names


def _victims(tables: dict[str, np.ndarray], share: float, seed: int) -> np.ndarray:
    """A seeded ``share`` of the users outside the sanity sample (the live users), sorted."""
    n_users = int(tables["seen_indptr"].shape[0]) - 1
    spared = np.zeros(n_users, dtype=bool)
    spared[tables["sample_users"]] = True
    candidates = np.flatnonzero(~spared)
    count = min(round(share * candidates.size), candidates.size)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=count, replace=False))


def _swap_features(tables: dict[str, np.ndarray], victims: np.ndarray) -> dict[str, np.ndarray]:
    """Tables in which each victim carries the next victim's history and counts (a join on
    the wrong key); everyone else keeps their own."""
    if victims.size < 2:
        return tables
    n_users = int(tables["seen_indptr"].shape[0]) - 1
    source = np.arange(n_users)
    source[victims] = np.roll(victims, 1)
    indptr, seen = tables["seen_indptr"], tables["seen_items"]
    lengths = np.diff(indptr)[source]
    new_indptr = np.zeros(n_users + 1, dtype=indptr.dtype)
    np.cumsum(lengths, out=new_indptr[1:])
    new_seen = (
        np.concatenate([seen[indptr[u] : indptr[u + 1]] for u in source])
        if seen.size
        else seen.copy()
    ).astype(seen.dtype)
    out = dict(tables)
    out["seen_indptr"] = new_indptr
    out["seen_items"] = new_seen
    out["user_category_counts"] = tables["user_category_counts"][source]
    return out


def defect_writer(
    source: Path, defect: Defect, severity: float, seed: int
) -> Callable[[Path], list[str]]:
    """A payload writer for :meth:`ModelStore.add_version`: ``source``'s files with the
    defect applied (``severity``: the share of users for quality/errors, ignored otherwise)."""

    def write(folder: Path) -> list[str]:
        from safetensors import safe_open
        from safetensors.numpy import load_file, save_file

        names = _copy(source, folder)
        if defect == "none":
            weights = load_file(str(folder / _WEIGHTS))
            rng = np.random.default_rng(seed)
            nudged = {}
            for key, value in weights.items():
                if np.issubdtype(value.dtype, np.floating):
                    spread = float(np.nanstd(value)) or 1.0
                    noise = rng.standard_normal(value.shape) * spread * _NUDGE
                    value = (value + noise).astype(value.dtype)
                nudged[key] = value
            save_file(nudged, str(folder / _WEIGHTS))
        elif defect in ("quality", "errors"):
            path = folder / _TABLES
            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata()
            tables = load_file(str(path))
            victims = _victims(tables, severity, seed)
            if defect == "quality":
                tables = _swap_features(tables, victims)
            else:
                tables = {**tables, "unservable_users": victims.astype(np.int64)}
            save_file(tables, str(path), metadata=metadata)
        return names

    return write


def defect_info(
    manifest: Manifest, defect: Defect, severity: float, note: str
) -> dict[str, object]:
    """The new version's ``info``: the source's, a note, and for ``latency`` the runtime
    setting that adds the feature fetch."""
    info: dict[str, object] = {**manifest.info, "note": note}
    if defect == "latency":
        runtime = manifest.info.get("runtime")
        base = dict(runtime) if isinstance(runtime, dict) else {}
        info["runtime"] = {**base, "feature_fetch_ms": float(severity)}
    return info


def seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
