"""Build the reference stack's model store once per catalog, and cache it.

A build generates the synthetic catalog, trains the two-tower model once and writes two
successive snapshots of it as versions ``v1`` and ``v2`` (two releases, so rollback and
last-known-good have somewhere to go). The result is cached under
``<cache>/artifacts/<catalog key>/`` and reused by every later stack with the same catalog
parameters; a build in progress is guarded by a lock so two commands never build twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from drillkit import paths, safejson
from drillkit.stacks.recommender.data import CatalogSpec
from drillkit.stacks.recommender.store import ModelStore, signing_key

Progress = Callable[[str, float], None]

BUILD_INFO = "build.json"


def artifacts_dir(spec: CatalogSpec) -> Path:
    return paths.cache_dir() / "artifacts" / spec.resolved().key()


def cached_store(spec: CatalogSpec) -> ModelStore | None:
    """The cached store for ``spec``, or None when it has not been built."""
    root = artifacts_dir(spec)
    store = ModelStore(root)
    return store if (root / BUILD_INFO).is_file() and store.current() else None


def built_stores() -> list[tuple[str, ModelStore]]:
    """Every cached store, labelled with its catalog (``items=20000 dim=64 seed=42``)."""
    root = paths.cache_dir() / "artifacts"
    found = []
    for folder in sorted(root.glob("[!.]*")) if root.is_dir() else []:
        try:
            catalog = safejson.loads((folder / BUILD_INFO).read_text())["catalog"]
        except (OSError, ValueError, KeyError):
            continue  # not a finished build
        label = " ".join(f"{k}={v}" for k, v in catalog.items())
        found.append((label, ModelStore(folder)))
    return found


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def ensure_artifacts(
    spec: CatalogSpec,
    *,
    device: str = "auto",
    rebuild: bool = False,
    progress: Progress | None = None,
) -> ModelStore:
    """Return the cached model store for ``spec``, building it first when needed."""
    spec = spec.resolved()
    root = artifacts_dir(spec)
    if not rebuild and (store := cached_store(spec)) is not None:
        return store
    with _lock(root.parent / f".{root.name}.lock"):
        if not rebuild and (store := cached_store(spec)) is not None:
            return store  # another process built it while we waited
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        try:
            _build_into(ModelStore(tmp), spec, device=device, progress=progress)
            if root.exists():
                shutil.rmtree(root)
            os.replace(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return ModelStore(root)


#: From this catalog size on, replicas search an IVF index instead of an exact one. Measured
#: on the 2-core reference machine (bench/retrieval.py, 1M x 128): one exact query costs
#: 49-57 ms of CPU (17-20 QPS per replica), IVF with drillkit's defaults 105 QPS; at 200k
#: items an exact query is ~10 ms, still within the serving SLO.
IVF_FROM_ITEMS = 200_000


def index_kind_for(items: int) -> str:
    """The index a catalog of ``items`` items is served from: exact below
    :data:`IVF_FROM_ITEMS`, IVF from there on."""
    return "ivf" if items >= IVF_FROM_ITEMS else "flat"


def _build_into(
    store: ModelStore, spec: CatalogSpec, *, device: str, progress: Progress | None
) -> None:
    # torch is imported here, not at module level: `drillkit --help` must stay instant.
    from drillkit.stacks.recommender.model import train_versions

    started = time.monotonic()
    key = signing_key()
    trained = train_versions(
        spec, device=device, progress=progress, index_kind=index_kind_for(spec.items)
    )
    for snapshot in trained:
        store.add_version(snapshot.write, metrics=snapshot.metrics, info=snapshot.info, key=key)
    info = {
        "catalog": {"items": spec.items, "dim": spec.dim, "seed": spec.seed},
        "versions": store.versions(),
        "build_seconds": round(time.monotonic() - started, 3),
        "signed": key is not None,
    }
    (store.root / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
