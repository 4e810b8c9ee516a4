"""``corrupt_model``: damage the model artifact a replica loads.

Modes ``bitflip``, ``truncate`` and ``zero`` damage one file of the served version in place
(what a bad disk, an interrupted copy or a botched sync does); the manifest no longer matches,
so a replica that reloads must refuse it. ``poison`` publishes a *new* version whose weights are
garbage but whose manifest is complete and (when a key is set) validly signed, as a bad
training run would produce; only the load-time sanity gate can stop it. ``unreleased``
publishes a new version nobody released: the served weights, nudged by 1% of each tensor's
spread (they pass the sanity gate), with a complete manifest that is never signed, as a
hand-copied experiment would be. A stack that checks signatures refuses it; one that does not
serves it, and every answer it gives is a wrong-model response.

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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drillkit.errors import EnvironmentFailure, InputError
from drillkit.faults.base import ROLE_REPLICA, FaultKind, UndoModel, UndoRecord
from drillkit.faults.params import FaultParams
from drillkit.fsutil import contained
from drillkit.scenario.units import FieldError, Share, show_value
from drillkit.stacks.recommender.spec import ROLE_MODEL_STORE
from drillkit.stacks.recommender.store import (
    MANIFEST_NAME,
    ModelStore,
    file_sha256,
    read_manifest,
    signing_key,
)

if TYPE_CHECKING:
    from drillkit.faults.context import FaultContext
    from drillkit.journal import Journal

__all__ = [
    "FILES",
    "CorruptModel",
    "CorruptModelParams",
    "damage_file",
    "nudged_writer",
    "poisoned_writer",
]

_MODES = Literal["bitflip", "truncate", "zero", "poison", "unreleased"]
_PUBLISHING = ("poison", "unreleased")  # modes that publish a new version
_NUDGE = 0.01  # mode unreleased: noise, as a share of each weight tensor's spread


class CorruptModelParams(FaultParams):
    """``corrupt_model``: how the model artifact is damaged and how the damage is picked up."""

    mode: _MODES = Field(
        default="bitflip",
        description=(
            "bitflip: flip random bits; truncate: cut the file short; zero: overwrite with zeros; "
            "poison: publish a new version with garbage weights and a re-signed manifest; "
            "unreleased: publish a new, unsigned version (the served weights, nudged) that "
            "nobody released."
        ),
    )
    file: Literal["weights", "index", "tables"] = Field(
        default="weights", description="Which file of the model version is damaged."
    )
    apply: Literal["reload", "restart"] = Field(
        default="reload", description="reload: hot-reload the model; restart: restart the target."
    )
    flips: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] = Field(
        default=16, description="Bits flipped (mode: bitflip).", json_schema_extra={"unit": "bits"}
    )
    fraction: Share = Field(
        default=0.5,
        description="Share of the file kept (mode: truncate), below 1.",
        json_schema_extra={"unit": "of the file"},
    )

    @field_validator("fraction")
    @classmethod
    def _fraction_below_one(cls, value: float) -> float:
        if value >= 1:
            raise ValueError(
                f"expected a share below 100% (keeping the whole file damages nothing), "
                f"got {show_value(value)}"
            )
        return value

    @model_validator(mode="after")
    def _options_match_mode(self) -> CorruptModelParams:
        # A parameter that the chosen mode ignores is almost always a mistake in the drill. Only
        # a value other than the default counts, so that a dumped model validates again.
        defaults = type(self).model_fields
        if self.flips != defaults["flips"].default and self.mode != "bitflip":
            raise FieldError(
                f"flips only applies to mode: bitflip (mode is {self.mode})", ("flips",)
            )
        if self.fraction != defaults["fraction"].default and self.mode != "truncate":
            raise FieldError(
                f"fraction only applies to mode: truncate (mode is {self.mode})", ("fraction",)
            )
        return self


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


def _reweighted_writer(
    source: Path, seed: int, *, keep: float, noise: float
) -> Callable[[Path], list[str]]:
    """A payload writer for ModelStore.add_version: ``source``'s files, each float weight
    tensor ``w`` replaced by ``keep * w + noise * std(w) * N(0, 1)`` (seeded)."""

    def write(folder: Path) -> list[str]:
        import numpy as np
        from safetensors.numpy import load_file, save_file

        names = [n for n in os.listdir(source) if n != MANIFEST_NAME and not n.startswith(".")]
        for name in names:
            shutil.copy2(source / name, folder / name)
        weights = load_file(str(folder / FILES["weights"]))
        rng = np.random.default_rng(seed)
        changed = {}
        for key, value in weights.items():
            if not np.issubdtype(value.dtype, np.floating):
                changed[key] = value
                continue
            spread = float(np.nanstd(value)) or 1.0
            gauss = rng.standard_normal(value.shape)
            changed[key] = (keep * value + noise * spread * gauss).astype(value.dtype)
        save_file(changed, str(folder / FILES["weights"]))
        return names

    return write


def poisoned_writer(source: Path, seed: int) -> Callable[[Path], list[str]]:
    """``source``'s files with garbage weights: noise of each tensor's spread, nothing else."""
    return _reweighted_writer(source, seed, keep=0.0, noise=1.0)


def nudged_writer(source: Path, seed: int) -> Callable[[Path], list[str]]:
    """``source``'s files with every float weight moved by noise of 1% of its tensor's spread
    (a different model, as good)."""
    return _reweighted_writer(source, seed, keep=1.0, noise=_NUDGE)


class CorruptModel(FaultKind[CorruptModelParams]):
    name: ClassVar[str] = "corrupt_model"
    Params = CorruptModelParams
    description: ClassVar[str] = "the model artifact the target loads is damaged"
    target_roles: ClassVar[frozenset[str]] = frozenset({ROLE_REPLICA, ROLE_MODEL_STORE})
    outlives_stack: ClassVar[bool] = True  # files on disk: a store the user serves in place

    def _targets(self, ctx: FaultContext, target: str) -> tuple[list[Path], list[str]]:
        from drillkit.stacks.recommender.preset import all_stores, replica_store

        if target == ROLE_MODEL_STORE:
            return all_stores(ctx.state), ctx.state.names_with_role(ROLE_REPLICA)
        return [replica_store(ctx.state, target)], [target]

    def apply(self, ctx: FaultContext, target: str, params: CorruptModelParams) -> UndoRecord:
        stores, replicas = self._targets(ctx, target)
        seed = _seed(f"{ctx.state.id}/{ctx.fault_id}/{target}")
        plan: list[dict[str, Any]] = []
        if params.mode in _PUBLISHING:
            for root in stores:
                store = ModelStore(root)
                current = store.current()
                if current is None:
                    raise EnvironmentFailure(f"{root}: no CURRENT version to {params.mode}")
                plan.append(
                    {"store": str(root), "previous": current, "added": store.next_version()}
                )
            record = ctx.begin(
                self.name,
                target,
                {"mode": params.mode, "stores": plan, "replicas": replicas, "apply": params.apply},
            )
            poison = params.mode == "poison"
            key = signing_key() if poison else None  # unreleased: nobody signed it
            for item in plan:
                store = ModelStore(Path(item["store"]))
                source = store.version_dir(item["previous"])
                manifest = read_manifest(source)
                writer = poisoned_writer if poison else nudged_writer
                store.add_version(
                    writer(source, seed),
                    metrics=manifest.metrics,
                    info={**manifest.info, "note": f"{params.mode} by drillkit"},
                    key=key,
                )
        else:
            file_name = FILES[params.file]
            backup_dir = ctx.journal.new_backup_dir()
            for i, root in enumerate(stores):
                store = ModelStore(root)
                version = store.current()
                if version is None:
                    raise EnvironmentFailure(f"{root}: no CURRENT version to corrupt")
                path = store.version_dir(version) / file_name
                # A file another fault of this drill still has damaged is backed up as that
                # fault found it: healed in any order, the file ends as it was first found.
                found = _found_before(ctx.journal, path)
                sha, source = found if found is not None else (file_sha256(path), path)
                plan.append(
                    {
                        "store": str(root),
                        "version": version,
                        "file": file_name,
                        "path": str(path),
                        "backup": str(backup_dir / f"{i}-{file_name}"),
                        "sha256": sha,
                        "source": str(source),
                    }
                )
            record = ctx.begin(
                self.name,
                target,
                {
                    "mode": params.mode,
                    "stores": [{k: v for k, v in item.items() if k != "source"} for item in plan],
                    "replicas": replicas,
                    "apply": params.apply,
                },
            )
            for item in plan:
                shutil.copy2(item["source"], item["backup"])
            for i, item in enumerate(plan):
                damage_file(
                    Path(item["path"]),
                    params.mode,
                    flips=params.flips,
                    fraction=params.fraction,
                    seed=seed + i,
                )
        self._activate(ctx, replicas, params.apply)
        return record

    def _activate(self, ctx: FaultContext, replicas: list[str], how: str) -> None:
        from drillkit.stacks.recommender.preset import admin_reload

        for name in replicas:
            if not ctx.backend.service_alive(ctx.state, name):
                continue  # another fault has it down; it will load from the store on restart
            if how == "restart":
                ctx.backend.restart(ctx.state, name)
            else:
                admin_reload(ctx.state, name)
        if how == "restart":
            for name in replicas:
                ctx.wait_ready(name)

    def check_applied(
        self, ctx: FaultContext, target: str, params: CorruptModelParams, record: UndoRecord
    ) -> str:
        if record["mode"] in _PUBLISHING:
            what = "poisoned" if record["mode"] == "poison" else "unreleased, unsigned"
            changed = []
            for item in record["stores"]:
                store = ModelStore(Path(item["store"]))
                if store.current() != item["added"]:
                    raise EnvironmentFailure(
                        f"{item['store']}: CURRENT is {store.current()}, "
                        f"not the {what} {item['added']}"
                    )
                changed.append(item["added"])
            digest = read_manifest(
                ModelStore(Path(record["stores"][0]["store"])).version_dir(changed[0])
            ).digest
            return (
                f"{target}: {what} version {changed[0]} (digest {digest[:12]}) published to "
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

    def heal(self, ctx: FaultContext, record: UndoRecord) -> None:
        from drillkit.stacks.recommender.preset import admin_reload, origin_store

        undo = _Undo.parse(record)
        # The stack's own folder (its store copies) and the store it was made from, nothing
        # else, whatever the record names.
        roots = [Path(ctx.state.run_dir), origin_store(ctx.state)]
        _restore(undo, roots, ctx.journal)
        # Replicas reload the restored files; one that is down loads them when it starts.
        for name in undo.replicas:
            if name in ctx.state.services and ctx.backend.service_alive(ctx.state, name):
                admin_reload(ctx.state, name)

    def heal_without_stack(self, journal: Journal, record: UndoRecord) -> None:
        """Put the files back in the stack's folder (its store copies); a store the stack
        served in place is left to `drillkit model verify --store` once its stack is gone."""
        _restore(_Undo.parse(record), [journal.folder], journal)


_VERSION = r"^v[1-9][0-9]{0,8}$"
_HEX64 = r"^[0-9a-f]{64}$"


class _Damaged(BaseModel):
    """One damaged file: where it is, and where its original bytes were saved."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    store: str
    version: str = Field(pattern=_VERSION)
    file: Literal["weights.safetensors", "index.faiss", "tables.safetensors"]
    path: str
    backup: str
    sha256: str = Field(pattern=_HEX64)


class _Published(BaseModel):
    """One store a new version (poisoned or unreleased) was published to."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    store: str
    previous: str = Field(pattern=_VERSION)
    added: str = Field(pattern=_VERSION)


class _Undo(UndoModel):
    mode: _MODES
    stores: tuple[_Damaged, ...] | tuple[_Published, ...]
    replicas: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _stores_fit_the_mode(self) -> _Undo:
        publishing = self.mode in _PUBLISHING
        if any(isinstance(item, _Published) != publishing for item in self.stores):
            raise ValueError(f"stores do not describe mode {self.mode}")
        return self


def _found_before(journal: Journal, path: Path) -> tuple[str, Path] | None:
    """The sha256 and backup of ``path`` as the oldest pending corruption of it found it,
    or None when no pending fault has damaged it."""
    for entry in reversed(journal.pending()):  # oldest first
        if entry.kind != CorruptModel.name:
            continue
        try:
            undo = _Undo.parse(entry.undo)
        except InputError:
            continue  # not what drillkit writes: heal reports it; nothing is copied from it
        for item in undo.stores:
            if isinstance(item, _Damaged) and item.path == str(path):
                backup = Path(item.backup)
                try:
                    contained(backup, [journal.backups], what="backup")
                except InputError:
                    continue
                if backup.is_file() and file_sha256(backup) == item.sha256:
                    return item.sha256, backup
    return None


def _restore(undo: _Undo, roots: list[Path], journal: Journal) -> None:
    """Undo the damage the record describes, touching only what lies inside ``roots`` and
    the journal's own backups (InputError naming the first thing that does not)."""
    for item in undo.stores:
        root = contained(item.store, roots, what="store")
        store = ModelStore(root)
        if not store.root.is_dir():
            continue  # the stack's copy went away with the stack
        if isinstance(item, _Published):
            if item.previous in store.versions():
                store.set_current(item.previous)
            added = contained(store.versions_dir / item.added, roots, what="published version")
            shutil.rmtree(added, ignore_errors=True)
            continue
        path = store.version_dir(item.version) / item.file  # never the record's own path
        if str(path) != item.path:
            raise InputError(f"damaged file {item.path!r} is not {item.file} of {item.version}")
        contained(path, roots, what="damaged file")
        backup = contained(item.backup, [journal.backups], what="backup")
        if not path.parent.is_dir() or not backup.exists():
            continue
        if not path.exists() or file_sha256(path) != item.sha256:
            _copy_without_links(backup, path)  # a new mtime: watchers notice


def _copy_without_links(source: Path, target: Path) -> None:
    """``source``'s bytes into ``target`` (same inode), following a link at neither end."""
    with os.fdopen(os.open(source, os.O_RDONLY | os.O_NOFOLLOW), "rb") as reader:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        with os.fdopen(os.open(target, flags, 0o644), "wb") as writer:
            shutil.copyfileobj(reader, writer)
