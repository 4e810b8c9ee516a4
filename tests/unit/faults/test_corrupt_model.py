"""``corrupt_model``: what its ``unreleased`` mode publishes, and how a file another fault
still has damaged is backed up (and that a crafted journal cannot choose that backup)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import safetensors.numpy

from drillkit.journal import Journal
from drillkit.stacks.recommender.data import CatalogSpec
from drillkit.stacks.recommender.faults import _found_before, nudged_writer
from drillkit.stacks.recommender.model import train_versions
from drillkit.stacks.recommender.replica import Replica, ReplicaConfig
from drillkit.stacks.recommender.store import ModelStore

TINY = CatalogSpec(items=500, dim=16, seed=11)
STACK = "20260101-000000-aaaaaa"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    (version,) = train_versions(TINY, device="cpu", versions=1)
    store = ModelStore(tmp_path_factory.mktemp("store"))
    store.add_version(version.write, metrics=version.metrics, info={"note": "released"})
    return store


def test_an_unreleased_version_passes_every_gate_and_serves_under_its_own_digest(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("DRILLKIT_MODEL_KEY", "DRILLKIT_SIGNING_KEY_FILE", "DRILLKIT_VERIFY_KEY"):
        monkeypatch.delenv(var, raising=False)
    released = store.verify("v1")
    source = store.version_dir("v1")
    rogue = store.add_version(
        nudged_writer(source, seed=3), metrics=released.metrics, info={"note": "unreleased"}
    )
    assert rogue.signature is None and rogue.digest != released.digest
    old = safetensors.numpy.load_file(str(source / "weights.safetensors"))
    new = safetensors.numpy.load_file(str(store.version_dir("v2") / "weights.safetensors"))
    assert old.keys() == new.keys()
    moved = [name for name in old if (old[name] != new[name]).any()]
    assert moved, "no weight was nudged"
    for name in moved:  # nudged, not replaced: within a few % of the tensor's spread
        spread = float(old[name].std())
        assert float(abs(new[name] - old[name]).mean()) < 0.05 * spread
    replica = Replica(ReplicaConfig(store=store.root, device="cpu"))
    replica.load_initial()  # the replica's own gate: digests, sanity recall
    assert replica.served is not None
    assert (replica.served.version, replica.served.digest) == ("v2", rogue.digest)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _damage_record(journal: Journal, target: Path, backup: Path, sha: str) -> None:
    item = {"store": str(target.parents[2]), "version": "v2", "file": target.name,
            "path": str(target), "backup": str(backup), "sha256": sha}  # fmt: skip
    journal.record_apply(fault_id="c-1", kind="corrupt_model", target="model-store",
                         stack_id=STACK, undo={"mode": "bitflip", "stores": [item]})  # fmt: skip


def test_a_file_already_damaged_is_backed_up_as_the_first_fault_found_it(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "stack", STACK)
    target = tmp_path / "store" / "versions" / "v2" / "weights.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"damaged by c-1")
    pristine = journal.new_backup_dir() / "0-weights.safetensors"
    pristine.write_bytes(b"as c-1 found it")
    assert _found_before(journal, target) is None  # nothing pending yet
    _damage_record(journal, target, pristine, _sha(pristine))
    assert _found_before(journal, target) == (_sha(pristine), pristine)
    assert _found_before(journal, target.with_name("index.faiss")) is None  # another file


def test_a_crafted_record_cannot_choose_the_bytes_a_heal_would_restore(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "stack", STACK)
    target = tmp_path / "store" / "versions" / "v2" / "weights.safetensors"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"model")
    outside = tmp_path / "attacker-chosen"
    outside.write_bytes(b"what the attacker wants served")
    _damage_record(journal, target, outside, _sha(outside))  # a backup outside the journal's
    inside = journal.new_backup_dir() / "0-weights.safetensors"
    inside.write_bytes(b"swapped after the record was written")
    _damage_record(journal, target, inside, "0" * 64)  # a backup that is not what was recorded
    assert _found_before(journal, target) is None
