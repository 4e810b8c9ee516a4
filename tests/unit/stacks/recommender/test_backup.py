"""The backup service against a real redis-server: snapshots with manifests, verification,
and the restore procedure that finds a wiped store and merges what was written since."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drillkit.errors import ArtifactError
from drillkit.stacks.recommender.backup import (
    EVENTS,
    MODELS,
    STAGING,
    BackupService,
    backup_events,
    list_backups,
    models_present,
    newest_verified,
    restore_events,
    verify_backup,
)
from drillkit.stacks.recommender.events import MARKER, STREAM, ClickEvent, stored_events
from tests.redis_server import redis_server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Any]:
    import redis

    with redis_server("--dir", str(tmp_path)) as (port, _):
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0)
        yield client
        client.close()


def add(client: Any, producer: str, seqs: range) -> None:
    client.set(MARKER, "the-store", nx=True)
    for seq in seqs:
        client.xadd(STREAM, ClickEvent(producer, seq, 1, 2).fields())


def held(client: Any) -> set[tuple[str, int]]:
    return {(p, s) for p, s, _ in stored_events(client)}


@pytest.mark.zones
def test_a_backup_holds_the_stream_and_says_what_is_in_it(store: Any, tmp_path: Path) -> None:
    add(store, "a", range(50))
    backup = backup_events(store, tmp_path / "backups")
    assert backup.entries == 50
    assert backup.newest_event_id == store.xrevrange(STREAM, count=1)[0][0].decode()
    assert verify_backup(backup.path).name == backup.name
    assert [b.name for b in list_backups(tmp_path / "backups", EVENTS)] == [backup.name]


@pytest.mark.zones
def test_a_damaged_backup_is_refused_naming_its_file(store: Any, tmp_path: Path) -> None:
    add(store, "a", range(5))
    root = tmp_path / "backups"
    good = backup_events(store, root)
    add(store, "a", range(5, 10))
    bad = backup_events(store, root)
    (bad.path / "stream.dump").write_bytes(b"not a dump")
    with pytest.raises(ArtifactError, match="stream.dump"):
        verify_backup(bad.path)
    with pytest.raises(ArtifactError, match="stream.dump"):
        restore_events(store, bad)
    # The newest that verifies is the older one.
    newest = newest_verified(root, EVENTS)
    assert newest is not None and newest.name == good.name


@pytest.mark.zones
def test_the_restore_keeps_events_written_since_the_store_came_back(
    store: Any, tmp_path: Path
) -> None:
    add(store, "a", range(20))
    backup = backup_events(store, tmp_path / "backups")
    add(store, "a", range(20, 30))  # acknowledged after the backup: these are lost
    store.flushall()  # the disk is gone; the store comes back empty
    add(store, "b", range(3))  # written before the restore procedure noticed
    carried = restore_events(store, backup)
    assert carried == 3
    assert held(store) == {("a", i) for i in range(20)} | {("b", i) for i in range(3)}
    assert store.get(MARKER) is not None


@pytest.mark.zones
def test_the_service_restores_a_wiped_store_and_counts_a_broken_backup_job(
    store: Any, tmp_path: Path
) -> None:
    root = tmp_path / "backups"
    root.mkdir()
    models = tmp_path / "models"
    (models / "versions" / "v1").mkdir(parents=True)
    (models / "versions" / "v1" / "weights").write_bytes(b"w" * 100)
    (models / "CURRENT").write_text("v1\n")
    service = BackupService(events=store, backups=root, models=models, interval=3600, keep=2)
    service.run_once()  # marks the new store, takes the first backups
    assert store.get(MARKER) is not None
    assert {b.kind for b in list_backups(root)} == {EVENTS, MODELS}
    add(store, "a", range(10))
    service.take_backups()
    store.flushall()
    service.run_once()
    assert held(store) == {("a", i) for i in range(10)}
    assert [r["kind"] for r in service.status()["restores"]] == [EVENTS]
    # The model store lost entirely comes back from its backup.
    shutil.rmtree(models / "versions")
    (models / "CURRENT").unlink()
    assert not models_present(models)
    service.run_once()
    assert models_present(models)
    assert (models / "versions" / "v1" / "weights").read_bytes() == b"w" * 100
    # A staging folder that became a file fails every backup, counted, nothing raised.
    shutil.rmtree(root / STAGING)
    (root / STAGING).write_text("broken")
    service.take_backups()
    status = service.status()
    assert status["failures"][EVENTS] == 1
    assert "drillkit_backup_failures_total" in service.metrics()
    # Only `keep` backups of each kind are kept.
    (root / STAGING).unlink()
    for _ in range(3):
        service.take_backups()
    assert len(list_backups(root, EVENTS)) == 2


@pytest.mark.zones
def test_the_feature_updater_follows_rebuilds_and_says_when_it_was_stale(store: Any) -> None:
    from drillkit.stacks.recommender.features import FeatureUpdater, recent_key

    updater = FeatureUpdater(store, keep=3)
    updater.step(block_ms=10)
    assert updater.status()["stale"] and updater.status()["stale"][-1][1] is None  # no marker
    store.set(MARKER, "one")
    for seq, item in enumerate([5, 6, 7, 8]):
        store.xadd(STREAM, ClickEvent("a", seq, 42, item).fields())
    updater.step(block_ms=10)
    assert [int(x) for x in store.lrange(recent_key(42), 0, -1)] == [8, 7, 6]
    status = updater.status()
    assert status["processed"] == 4 and status["stale"][-1][1] is not None
    # A restored store (a new marker, the features gone with the old data): rebuilt.
    store.delete(recent_key(42))
    store.set(MARKER, "two")
    updater.step(block_ms=10)
    assert [int(x) for x in store.lrange(recent_key(42), 0, -1)] == [8, 7, 6]
    assert updater.rebuilds == 1
    assert "drillkit_features_stale 0" in updater.metrics()


@pytest.mark.zones
def test_a_store_without_its_marker_is_not_backed_up(store: Any, tmp_path: Path) -> None:
    from drillkit.stacks.recommender.backup import UnmarkedStore

    store.xadd(STREAM, ClickEvent("a", 0, 1, 2).fields())  # written to an emptied store
    with pytest.raises(UnmarkedStore):
        backup_events(store, tmp_path / "backups")
    assert not (tmp_path / "backups" / EVENTS).exists()


@pytest.mark.zones
def test_only_the_stacks_own_backups_are_restored_on_its_own(store: Any, tmp_path: Path) -> None:
    root = tmp_path / "backups"
    root.mkdir()
    add(store, "other", range(5))
    backup_events(store, root, "another-stack")  # a reused location: not this stack's data
    store.flushall()
    service = BackupService(events=store, backups=root, models=None, interval=3600, keep=5,
                            store_id="this-stack")  # fmt: skip
    service.check_events()
    assert held(store) == set()  # marked as a new store, nothing imported
    assert store.get(MARKER) is not None and service.status()["restores"] == []


@pytest.mark.zones
def test_a_newest_backup_that_does_not_restore_falls_back_to_an_older_one(
    store: Any, tmp_path: Path
) -> None:
    root = tmp_path / "backups"
    root.mkdir()
    add(store, "a", range(3))
    older = backup_events(store, root, "s")
    add(store, "a", range(3, 6))
    newer = backup_events(store, root, "s")
    (newer.path / "stream.dump").write_bytes(b"x" * newer.size)  # same size, wrong bytes
    store.flushall()
    service = BackupService(events=store, backups=root, models=None, interval=3600, keep=5,
                            store_id="s")  # fmt: skip
    service.check_events()
    assert held(store) == {("a", i) for i in range(3)}
    assert [r["backup"] for r in service.status()["restores"]] == [older.name]


def _manifest(folder: Path, **fields: Any) -> Path:
    import json

    folder.mkdir(parents=True)
    body = {"kind": "events", "created_at": 1.0, "files": {"stream.dump": {"sha256": "0" * 64,
            "size": 0}}, **fields}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(body))
    return folder


@pytest.mark.parametrize(
    "fields",
    [
        {"files": {}},  # nothing to check: nothing would be restored from a checked file
        {"kind": "models"},  # not its folder's kind
        {"created_at": "nan"},
        {"newest_event_at": "yesterday"},
        {"entries": "abc"},
        {"files": {"../../etc/shadow": {"sha256": "0" * 64, "size": 0}}},
    ],
)
def test_a_hostile_manifest_is_refused_naming_it(tmp_path: Path, fields: dict[str, Any]) -> None:
    folder = _manifest(tmp_path / "events" / "b1", **fields)
    with pytest.raises(ArtifactError, match="manifest"):
        verify_backup(folder)
    assert list_backups(tmp_path) == []


def test_a_linked_file_in_a_backup_is_refused(tmp_path: Path) -> None:
    import hashlib

    secret = tmp_path / "secret"
    secret.write_bytes(b"root only")
    digest = hashlib.sha256(b"root only").hexdigest()
    folder = _manifest(
        tmp_path / "backups" / "events" / "b1",
        files={"stream.dump": {"sha256": digest, "size": 9}},
    )
    (folder / "stream.dump").symlink_to(secret)
    with pytest.raises(ArtifactError, match="symbolic link"):
        verify_backup(folder)
