"""``corrupt_model``: damage the model artifact a replica loads.

Modes ``bitflip``, ``truncate`` and ``zero`` damage one file of the served version in place
(what a bad disk, an interrupted copy or a botched sync does); the manifest no longer matches,
so a replica that reloads must refuse it. ``poison`` publishes a *new* version whose weights are
garbage but whose manifest is complete and (when a key is set) validly signed, as a bad
training run would produce; only the load-time sanity gate can stop it.

The target is one replica (its local copy of the store) or ``model-store`` (every replica's
copy and the origin). ``apply: reload`` asks the replicas to reload at once; ``restart``
restarts them, so they must fall back to the last-known-good version while starting.
The original bytes are backed up next to the journal before anything is touched.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path
from typing import Any, ClassVar

from drillkit.errors import EnvironmentFailure
from drillkit.faults.base import ROLE_MODEL_STORE, ROLE_REPLICA, FaultKind
from drillkit.faults.params import CorruptModelParams
from drillkit.stacks.recommender.store import (
    MANIFEST_NAME,
    ModelStore,
    file_sha256,
    read_manifest,
    signing_key,
)

FILES = {"weights": "weights.safetensors", "index": "index.faiss", "tables": "tables.safetensors"}


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def damage_file(path: Path, mode: str, *, flips: int, fraction: float, seed: int) -> None:
    """Damage ``path`` in place (same inode, new mtime), as a failing disk would."""
    size = path.stat().st_size
    if mode == "truncate":
        os.truncate(path, int(size * fraction))
        return
    with path.open("r+b") as handle:
        if mode == "zero":
            handle.write(b"\0" * size)
            return
        rng = random.Random(seed)
        for _ in range(min(flips, size * 8)):
            offset = rng.randrange(size)
            handle.seek(offset)
            byte = handle.read(1)[0]
            handle.seek(offset)
            handle.write(bytes([byte ^ (1 << rng.randrange(8))]))


def poisoned_writer(source: Path, seed: int) -> Any:
    """A payload writer for ModelStore.add_version: ``source``'s files with garbage weights."""

    def write(folder: Path) -> list[str]:
        import numpy as np
        from safetensors.numpy import load_file, save_file

        names = [n for n in os.listdir(source) if n != MANIFEST_NAME and not n.startswith(".")]
        for name in names:
            shutil.copy2(source / name, folder / name)
        weights = load_file(str(folder / FILES["weights"]))
        rng = np.random.default_rng(seed)
        garbage = {}
        for key, value in weights.items():
            if np.issubdtype(value.dtype, np.floating):
                scale = float(np.nanstd(value)) or 1.0
                garbage[key] = (rng.standard_normal(value.shape) * scale).astype(value.dtype)
            else:
                garbage[key] = value
        save_file(garbage, str(folder / FILES["weights"]))
        return names

    return write


class CorruptModel(FaultKind[CorruptModelParams]):
    name: ClassVar[str] = "corrupt_model"
    Params = CorruptModelParams
    description: ClassVar[str] = "the model artifact the target loads is damaged"
    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_REPLICA, ROLE_MODEL_STORE})

    def _targets(self, ctx: Any, target: str) -> tuple[list[Path], list[str]]:
        if target == ROLE_MODEL_STORE:
            return [Path(p) for p in ctx.state.all_stores()], ctx.replica_names()
        return [ctx.store_of(target).root], [target]

    def apply(self, ctx: Any, target: str, params: CorruptModelParams) -> dict[str, Any]:
        stores, replicas = self._targets(ctx, target)
        seed = _seed(f"{ctx.state.id}/{ctx.fault_id}/{target}")
        if params.mode == "poison":
            plan = []
            for root in stores:
                store = ModelStore(root)
                current = store.current()
                if current is None:
                    raise EnvironmentFailure(f"{root}: no CURRENT version to poison")
                plan.append(
                    {"store": str(root), "previous": current, "added": store.next_version()}
                )
            record = ctx.begin(
                self.name,
                target,
                {"mode": "poison", "stores": plan, "replicas": replicas, "apply": params.apply},
            )
            key = signing_key()
            for item in plan:
                store = ModelStore(Path(item["store"]))
                source = store.version_dir(item["previous"])
                manifest = read_manifest(source)
                store.add_version(
                    poisoned_writer(source, seed),
                    metrics=manifest.metrics,
                    info={**manifest.info, "note": "poisoned by drillkit"},
                    key=key,
                )
        else:
            file_name = FILES[params.file]
            backup_dir = ctx.journal.new_backup_dir()
            plan = []
            for i, root in enumerate(stores):
                store = ModelStore(root)
                version = store.current()
                if version is None:
                    raise EnvironmentFailure(f"{root}: no CURRENT version to corrupt")
                path = store.version_dir(version) / file_name
                plan.append(
                    {
                        "store": str(root),
                        "version": version,
                        "file": file_name,
                        "path": str(path),
                        "backup": str(backup_dir / f"{i}-{file_name}"),
                        "sha256": file_sha256(path),
                    }
                )
            record = ctx.begin(
                self.name,
                target,
                {"mode": params.mode, "stores": plan, "replicas": replicas, "apply": params.apply},
            )
            for item in plan:
                shutil.copy2(item["path"], item["backup"])
            for i, item in enumerate(plan):
                damage_file(
                    Path(item["path"]),
                    params.mode,
                    flips=params.flips,
                    fraction=params.fraction,
                    seed=seed + i,
                )
        self._activate(ctx, replicas, params.apply)
        return dict(record)

    def _activate(self, ctx: Any, replicas: list[str], how: str) -> None:
        for name in replicas:
            if not ctx.backend.service_alive(ctx.state, name):
                continue  # another fault has it down; it will load from the store on restart
            if how == "restart":
                ctx.backend.restart(ctx.state, name)
                ctx.save_state()
            else:
                ctx.admin_reload(name)
        if how == "restart":
            for name in replicas:
                ctx.wait_ready(name)

    def check_applied(
        self, ctx: Any, target: str, params: CorruptModelParams, record: dict[str, Any]
    ) -> str:
        if record["mode"] == "poison":
            changed = []
            for item in record["stores"]:
                store = ModelStore(Path(item["store"]))
                if store.current() != item["added"]:
                    raise EnvironmentFailure(
                        f"{item['store']}: CURRENT is {store.current()}, "
                        f"not the poisoned {item['added']}"
                    )
                changed.append(item["added"])
            return (
                f"{target}: poisoned version {changed[0]} published to "
                f"{len(changed)} store(s), CURRENT moved from {record['stores'][0]['previous']}"
            )
        for item in record["stores"]:
            path = Path(item["path"])
            actual = file_sha256(path) if path.exists() else "missing"
            if actual == item["sha256"]:
                raise EnvironmentFailure(f"{path}: digest unchanged after {record['mode']}")
        first = record["stores"][0]
        now = file_sha256(Path(first["path"]))
        return (
            f"{target}: {first['file']} of {first['version']} {record['mode']} in "
            f"{len(record['stores'])} store(s); sha256 {first['sha256'][:12]}... -> "
            f"{now[:12]}..."
        )

    def heal(self, ctx: Any, record: dict[str, Any]) -> None:
        if record["mode"] == "poison":
            for item in record["stores"]:
                store = ModelStore(Path(item["store"]))
                if not store.root.is_dir():
                    continue  # the stack's copy went away with the stack
                if item["previous"] in store.versions():
                    store.set_current(item["previous"])
                shutil.rmtree(store.versions_dir / item["added"], ignore_errors=True)
        else:
            for item in record["stores"]:
                backup, path = Path(item["backup"]), Path(item["path"])
                if not path.parent.is_dir():
                    continue  # the stack's copy went away with the stack
                if backup.exists() and (not path.exists() or file_sha256(path) != item["sha256"]):
                    shutil.copyfile(backup, path)  # a new mtime: watchers notice
        # Replicas reload the restored files; one that is down loads them when it starts.
        for name in record["replicas"]:
            if ctx.backend.service_alive(ctx.state, name):
                ctx.admin_reload(name)
