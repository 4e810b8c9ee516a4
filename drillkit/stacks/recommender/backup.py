"""The stack's backup service: snapshots of the event store and the model store, and the
restore procedure that brings either back when it is lost.

Every ``--interval`` seconds it takes

* an **events** backup: the event stream as Redis serialises it (``DUMP``), read in one
  transaction with the newest entry's id and the stream's length, so the manifest says exactly
  which events the backup holds;
* a **models** backup: a copy of the model store's files, taken only when they changed since
  the newest one.

A backup is a folder ``<backups>/<kind>/<stamp>/`` holding its files and ``manifest.json``
(``kind``, ``created_at``, every file's SHA-256 and size, and for events ``newest_event_id``,
``newest_event_at`` and ``entries``). It is written under ``<backups>/staging/`` and renamed
into place, so a backup that exists is whole; the newest ``--keep`` of each kind are kept.

Every 0.2 s it also checks what it backs up. An event store that answers without its marker
key (:data:`~drillkit.stacks.recommender.events.MARKER`) lost its data: the newest backup that
verifies is restored into it (``RESTORE``), merged with the events written since the store came
back, in one atomic script. A model store with no current version is refilled from the newest
models backup that verifies.

``GET /status`` says what it did (backups, failures, restores with their times); ``POST
/backup`` (with the stack's admin token) takes a backup now and answers once it is written;
``GET /metrics`` has ``drillkit_backup_last_success_timestamp_seconds{kind}``,
``drillkit_backup_failures_total{kind}`` and ``drillkit_backup_restores_total{kind}``.

Run as ``python -m drillkit.stacks.recommender.backup --events redis://H:P --backups DIR
--models DIR --interval S``. The same functions serve ``drillkit backup list|verify|restore``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from drillkit import safejson
from drillkit.errors import ArtifactError
from drillkit.stacks.recommender.events import MARKER, STREAM

__all__ = [
    "EVENTS",
    "KINDS",
    "MODELS",
    "Backup",
    "BackupService",
    "list_backups",
    "main",
    "newest_verified",
    "restore_events",
    "restore_models",
    "verify_backup",
]

log = logging.getLogger("drillkit.backup")

EVENTS = "events"
MODELS = "models"
KINDS = (EVENTS, MODELS)
MANIFEST = "manifest.json"
STAGING = "staging"
_STREAM_FILE = "stream.dump"
_CHECK_SECONDS = 0.2
_REDIS_TIMEOUT = 2.0

# Restore a stream from a DUMP payload into a scratch key, carry over the entries written
# since the store came back (their ids are newer than any in the backup), and put the result
# in place: one script, so no write lands between the steps.
_RESTORE_SCRIPT = """
local stream, scratch, marker = KEYS[1], KEYS[2], KEYS[3]
redis.call('DEL', scratch)
if ARGV[1] ~= '' then
  redis.call('RESTORE', scratch, 0, ARGV[1])
end
local last = '0-0'
if redis.call('EXISTS', scratch) == 1 then
  local top = redis.call('XREVRANGE', scratch, '+', '-', 'COUNT', 1)
  if #top > 0 then last = top[1][1] end
end
local carried = 0
if redis.call('EXISTS', stream) == 1 then
  for _, entry in ipairs(redis.call('XRANGE', stream, '(' .. last, '+')) do
    redis.call('XADD', scratch, entry[1], unpack(entry[2]))
    carried = carried + 1
  end
end
if redis.call('EXISTS', scratch) == 1 then
  redis.call('RENAME', scratch, stream)
end
redis.call('SET', marker, ARGV[2])
return carried
"""


@dataclass(frozen=True)
class Backup:
    """One backup folder and what its manifest says."""

    path: Path
    kind: str
    created_at: float
    files: dict[str, dict[str, Any]]
    newest_event_id: str | None = None
    newest_event_at: float | None = None
    entries: int | None = None
    store_id: str | None = None  # the stack whose store it was taken from

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def size(self) -> int:
        return sum(int(f.get("size", 0)) for f in self.files.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "path": str(self.path),
            "created_at": self.created_at,
            "size": self.size,
            "files": len(self.files),
            "newest_event_id": self.newest_event_id,
            "newest_event_at": self.newest_event_at,
            "entries": self.entries,
            "store_id": self.store_id,
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(folder: Path) -> Backup:
    """The manifest of ``folder``; ArtifactError naming the file when it is not one."""
    path = folder / MANIFEST
    try:
        if path.is_symlink():
            raise ArtifactError(f"{path}: a symbolic link, not a manifest")
        data = safejson.loads(path.read_bytes())
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read: {exc.strerror}") from None
    except ValueError as exc:
        raise ArtifactError(f"{path}: not JSON: {exc}") from None
    try:
        kind = data["kind"]
        files = data["files"]
        # A backup's kind is its folder's (<location>/<kind>/<name>); an events backup is
        # exactly the stream's dump.
        if kind not in KINDS or kind != folder.parent.name or not isinstance(files, dict):
            raise TypeError
        if kind == EVENTS and set(files) != {_STREAM_FILE}:
            raise TypeError
        for name, info in files.items():
            parts = Path(name).parts
            if not parts or name.startswith("/") or ".." in parts or "\0" in name:
                raise TypeError
            if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
                raise TypeError
            if type(info.get("size")) is not int or info["size"] < 0:
                raise TypeError
        return Backup(
            path=folder,
            kind=kind,
            created_at=_finite(data["created_at"]),
            files=files,
            newest_event_id=_text_or_none(data.get("newest_event_id")),
            newest_event_at=(
                None if data.get("newest_event_at") is None else _finite(data["newest_event_at"])
            ),
            entries=_count_or_none(data.get("entries")),
            store_id=_text_or_none(data.get("store_id")),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ArtifactError(f"{path}: not a drillkit backup manifest") from None


def _finite(value: object) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
        raise TypeError
    return float(value)  # type: ignore[arg-type]


def _count_or_none(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise TypeError
    return value


def _text_or_none(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise TypeError
    return value


def list_backups(root: Path, kind: str | None = None) -> list[Backup]:
    """Every backup under ``root`` (of ``kind``, or both), oldest first; folders whose
    manifest cannot be read are left out (``verify_backup`` names them)."""
    out: list[Backup] = []
    for each in KINDS if kind is None else (kind,):
        folder = root / each
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_dir() and not path.is_symlink():
                with contextlib.suppress(ArtifactError):
                    out.append(_read_manifest(path))
    return sorted(out, key=lambda b: (b.created_at, b.name))


def verify_backup(folder: Path) -> Backup:
    """The backup in ``folder`` once every file matches its manifest's size and SHA-256;
    ArtifactError naming the first file that does not."""
    backup = _read_manifest(folder)
    for name, info in backup.files.items():
        path = folder / name
        # No part of the way may be a link: a backup folder is read as root, and a link
        # would bring any file of the machine into a store.
        parts = Path(name).parts
        if any((folder.joinpath(*parts[: i + 1])).is_symlink() for i in range(len(parts))):
            raise ArtifactError(f"{path}: a symbolic link, not a backed-up file")
        if not path.is_file():
            raise ArtifactError(f"{path}: missing")
        if path.stat().st_size != info["size"]:
            raise ArtifactError(
                f"{path}: {path.stat().st_size} bytes, the manifest says {info['size']}"
            )
        if _sha256(path) != info["sha256"]:
            raise ArtifactError(f"{path}: SHA-256 does not match the manifest")
    return backup


def newest_verified(root: Path, kind: str) -> Backup | None:
    """The newest backup of ``kind`` that verifies; damaged ones are skipped (and logged)."""
    for backup in reversed(list_backups(root, kind)):
        try:
            return verify_backup(backup.path)
        except ArtifactError as exc:
            log.warning("skipping a backup that does not verify: %s", exc)
    return None


def _write_backup(
    root: Path, kind: str, files: dict[str, bytes | Path], extra: dict[str, Any]
) -> Backup:
    """Write a backup: files into staging, the manifest last, then rename into place."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{uuid.uuid4().hex[:8]}"
    staging = root / STAGING
    staging.mkdir(parents=True, exist_ok=True)  # a file in its place fails the backup
    work = staging / f"{kind}-{stamp}"
    work.mkdir()
    try:
        manifest: dict[str, Any] = {"kind": kind, "created_at": time.time(), "files": {}}
        for name, content in files.items():
            target = work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, Path):
                shutil.copyfile(content, target, follow_symlinks=False)
            else:
                target.write_bytes(content)
            with target.open("rb") as f:
                os.fsync(f.fileno())
            manifest["files"][name] = {"sha256": _sha256(target), "size": target.stat().st_size}
        manifest.update(extra)
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        final = root / kind / stamp
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return _read_manifest(final)


def _prune(root: Path, kind: str, keep: int) -> None:
    for old in list_backups(root, kind)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)


def _store_files(store: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(store.rglob("*")):
        relative = path.relative_to(store)
        if path.is_symlink() or not path.is_file() or relative.parts[0].startswith("."):
            continue
        yield relative.as_posix(), path


def _fingerprint(store: Path) -> str:
    digest = hashlib.sha256()
    for name, path in _store_files(store):
        info = path.stat()
        digest.update(f"{name}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class UnmarkedStore(Exception):
    """The event store holds no marker: its data was lost and not restored yet, and a backup
    of it now would be a backup of nothing that a restore would then bring back."""


def backup_events(client: Any, root: Path, store_id: str | None = None) -> Backup:
    """Snapshot the event stream of ``client`` (a ``redis.Redis``) into ``root``; one
    transaction reads the stream, its newest entry, its length and the store's marker."""
    with client.pipeline(transaction=True) as pipe:
        pipe.dump(STREAM)
        pipe.xrevrange(STREAM, "+", "-", count=1)
        pipe.xlen(STREAM)
        pipe.get(MARKER)
        payload, top, length, marker = pipe.execute()
    if marker is None:
        raise UnmarkedStore("the event store holds no marker (lost, not restored yet)")
    newest_id = top[0][0].decode() if top else None
    newest_at = int(newest_id.split("-")[0]) / 1000.0 if newest_id else None
    return _write_backup(
        root,
        EVENTS,
        {_STREAM_FILE: payload or b""},
        {
            "newest_event_id": newest_id,
            "newest_event_at": newest_at,
            "entries": int(length),
            "store_id": store_id,
        },
    )


def backup_models(store: Path, root: Path, store_id: str | None = None) -> Backup:
    """Copy the model store ``store`` into ``root``."""
    return _write_backup(root, MODELS, dict(_store_files(store)), {"store_id": store_id})


def restore_events(client: Any, backup: Backup) -> int:
    """Put ``backup`` (verified first) back into the event store, keeping the events written
    since it came back; how many of those were carried over."""
    verify_backup(backup.path)  # the dump is a regular file of the manifest's size and digest
    try:
        payload = (backup.path / _STREAM_FILE).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{backup.path / _STREAM_FILE}: {exc.strerror}") from None
    carried = client.eval(
        _RESTORE_SCRIPT, 3, STREAM, STREAM + ":restore", MARKER, payload, uuid.uuid4().hex
    )
    return int(carried)


def restore_models(backup: Backup, store: Path) -> None:
    """Put the model store's files back from ``backup`` (verified first): files are copied
    into a hidden scratch folder inside the store (the same filesystem, also where the store
    is a container's mount), then renamed into place one top-level entry at a time, so a
    reader never sees a half-written file."""
    verify_backup(backup.path)
    store.mkdir(parents=True, exist_ok=True)
    scratch = store / f".restore-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        for name in backup.files:
            target = scratch / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(backup.path / name, target, follow_symlinks=False)
        for entry in sorted(scratch.iterdir()):
            final = store / entry.name
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)
            elif final.exists() or final.is_symlink():
                final.unlink()
            os.rename(entry, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def models_present(store: Path) -> bool:
    """Whether the model store still names a current version that is there."""
    current = store / "CURRENT"
    try:
        name = current.read_text().strip()
    except OSError:
        return False
    return bool(name) and (store / "versions" / name).is_dir()


@dataclass
class _Figures:
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_success: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    last_error: dict[str, str] = field(default_factory=dict)
    restores: list[dict[str, Any]] = field(default_factory=list)
    store: str = "unknown"


class BackupService:
    """The service's loop; :meth:`run_once` is one pass (what the tests drive)."""

    def __init__(
        self,
        *,
        events: Any | None,
        backups: Path,
        models: Path | None,
        interval: float,
        keep: int,
        store_id: str | None = None,
    ) -> None:
        self.events = events
        self.store_id = store_id
        self.backups = backups
        self.models = models
        self.interval = interval
        self.keep = keep
        self.figures = _Figures()
        self._next = time.monotonic()  # a first backup as the service starts
        self._models_seen: str | None = None
        # One thing at a time: the schedule's backups and checks, and a backup asked for
        # (POST /backup) on the HTTP thread.
        self._busy = threading.Lock()
        self.admin_token: str | None = None

    # -- restore ------------------------------------------------------------------------------
    def _candidates(self, kind: str) -> list[Backup]:
        """Backups this service may restore on its own, newest first: its own stack's (a
        backup location reused by another stack holds that stack's data, which only a person
        restores, with ``drillkit backup restore``)."""
        own = [b for b in list_backups(self.backups, kind) if b.store_id == self.store_id]
        return list(reversed(own))

    def check_events(self) -> None:
        import redis

        if self.events is None:
            return
        try:
            marked = self.events.get(MARKER)
        except redis.RedisError:
            self._set_store("down")
            return
        if marked is not None:
            self._set_store("up")
            return
        candidates = self._candidates(EVENTS)
        if not candidates:
            # A new store, or one lost with nothing of its own to restore: mark it, so that
            # losing its data later shows.
            with contextlib.suppress(redis.RedisError):
                self.events.set(MARKER, uuid.uuid4().hex, nx=True)
            self._set_store("up")
            return
        started = time.time()
        self._set_store("restoring")
        for backup in candidates:  # the newest that verifies and restores
            try:
                carried = restore_events(self.events, backup)
            except ArtifactError as exc:
                log.warning("skipping a backup that does not verify: %s", exc)
                continue
            except (redis.RedisError, OSError) as exc:
                log.error("restoring %s failed: %s", backup.name, exc)
                continue
            log.warning("event store lost its data: restored backup %s", backup.name)
            self._restored(EVENTS, backup, started, carried=carried)
            self._set_store("up")
            return
        self._set_store("lost: no backup of it restores")

    def check_models(self) -> None:
        if self.models is None or models_present(self.models):
            return
        started = time.time()
        for backup in self._candidates(MODELS):
            try:
                restore_models(backup, self.models)
            except (ArtifactError, OSError) as exc:
                log.error("restoring %s failed: %s", backup.name, exc)
                continue
            log.warning("model store lost: restored backup %s", backup.name)
            self._models_seen = _fingerprint(self.models)
            self._restored(MODELS, backup, started)
            return

    def _restored(self, kind: str, backup: Backup, started: float, **more: Any) -> None:
        with self.figures.lock:
            self.figures.restores.append(
                {
                    "kind": kind,
                    "backup": backup.name,
                    "backup_created_at": backup.created_at,
                    "newest_event_at": backup.newest_event_at,
                    "started_at": started,
                    "finished_at": time.time(),
                    **more,
                }
            )

    def _set_store(self, state: str) -> None:
        with self.figures.lock:
            self.figures.store = state

    # -- backups ------------------------------------------------------------------------------
    def take_backups(self) -> list[str]:
        """Back up both stores now; the kinds that failed."""
        with self._busy:
            return self._take_backups()

    def _take_backups(self) -> list[str]:
        import redis

        failed: list[str] = []
        if self.events is not None:
            try:
                backup = backup_events(self.events, self.backups, self.store_id)
            except UnmarkedStore as exc:
                log.warning("events backup skipped: %s", exc)
                failed.append(EVENTS)
            except (redis.RedisError, OSError) as exc:
                self._failed(EVENTS, exc)
                failed.append(EVENTS)
            else:
                self._succeeded(EVENTS, backup)
        if self.models is not None and models_present(self.models):
            try:
                seen = _fingerprint(self.models)
                if seen != self._models_seen:
                    backup = backup_models(self.models, self.backups, self.store_id)
                    self._models_seen = seen
                    self._succeeded(MODELS, backup)
                else:  # nothing changed: the newest backup still holds the store
                    with self.figures.lock:
                        self.figures.last_success[MODELS] = time.time()
            except OSError as exc:
                self._failed(MODELS, exc)
                failed.append(MODELS)
        return failed

    def _succeeded(self, kind: str, backup: Backup) -> None:
        with self.figures.lock:
            self.figures.last[kind] = backup.to_json()
            self.figures.last_success[kind] = backup.created_at
        _prune(self.backups, kind, self.keep)

    def _failed(self, kind: str, exc: BaseException) -> None:
        # Logged, counted, and nothing else: the job fails as a cron job would, unseen until
        # someone reads the metric.
        log.warning("%s backup failed: %s: %s", kind, type(exc).__name__, exc)
        with self.figures.lock:
            self.figures.failures[kind] += 1
            self.figures.last_error[kind] = f"{type(exc).__name__}: {exc}"[:300]

    def run_once(self) -> None:
        with self._busy:
            self.check_events()
            self.check_models()
            if time.monotonic() >= self._next:
                self._next += self.interval
                self._take_backups()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.run_once()
            stop.wait(_CHECK_SECONDS)

    # -- reporting ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self.figures.lock:
            f = self.figures
            return {
                "time": time.time(),
                "interval": self.interval,
                "event_store": f.store,
                "last": dict(f.last),
                "last_success": dict(f.last_success),
                "failures": dict(f.failures),
                "last_error": dict(f.last_error),
                "restores": list(f.restores),
            }

    def metrics(self) -> str:
        with self.figures.lock:
            f = self.figures
            lines = [
                "# HELP drillkit_backup_last_success_timestamp_seconds When the newest backup "
                "of each kind was taken.",
                "# TYPE drillkit_backup_last_success_timestamp_seconds gauge",
                *(
                    f'drillkit_backup_last_success_timestamp_seconds{{kind="{k}"}} {v!r}'
                    for k, v in sorted(f.last_success.items())
                ),
                "# HELP drillkit_backup_failures_total Backups that failed, by kind.",
                "# TYPE drillkit_backup_failures_total counter",
                *(
                    f'drillkit_backup_failures_total{{kind="{k}"}} {v}'
                    for k, v in sorted(f.failures.items())
                ),
                "# HELP drillkit_backup_restores_total Restores from a backup, by kind.",
                "# TYPE drillkit_backup_restores_total counter",
                *(
                    f'drillkit_backup_restores_total{{kind="{k}"}} '
                    f"{sum(1 for r in f.restores if r['kind'] == k)}"
                    for k in KINDS
                ),
            ]
        return "\n".join(lines) + "\n"


def _handler(service: BackupService) -> Any:
    from drillkit.listen import status_handler

    class Handler(status_handler(service.status, service.metrics)):  # type: ignore[misc]
        def do_POST(self) -> None:
            if self.path != "/backup":
                self.send_body(404, b'{"error": "not found"}')
                return
            token = service.admin_token
            given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not token:
                self.send_body(403, b'{"error": "no admin token set"}')
                return
            if not given or not hmac.compare_digest(given.encode(), token.encode()):
                self.send_body(401, b'{"error": "missing or wrong admin token"}')
                return
            failed = service.take_backups()
            body = json.dumps({"failed": failed, "last": service.status()["last"]}).encode()
            self.send_body(503 if failed else 200, body)

    return Handler


def redis_client(url: str) -> Any:
    """A ``redis.Redis`` for ``redis://HOST:PORT`` (or a plan's ``http://HOST:PORT``)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    parts = urlsplit(url)
    if not parts.hostname or not parts.port:
        raise ValueError(f"expected redis://HOST:PORT, got {url!r}")
    return redis.Redis(
        host=parts.hostname,
        port=parts.port,
        socket_timeout=_REDIS_TIMEOUT,
        socket_connect_timeout=_REDIS_TIMEOUT,
        # Fail at once: the caller's loop is the retry, and it must see an outage as it starts.
        retry=Retry(NoBackoff(), 0),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drillkit-backup", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--events", metavar="redis://HOST:PORT")
    parser.add_argument("--models", type=Path, metavar="STORE")
    parser.add_argument("--backups", type=Path, required=True, metavar="DIR")
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--keep", type=int, default=5)
    parser.add_argument(
        "--store-id", default=None, help="this stack's: only its own backups are restored"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.interval <= 0 or args.keep < 1:
        raise SystemExit("backup: error: --interval must be > 0 and --keep >= 1")
    if not args.backups.is_dir():
        raise SystemExit(f"backup: error: {args.backups}: the backup location does not exist")
    from drillkit.listen import http_server

    try:
        client = redis_client(args.events) if args.events else None
    except ValueError as exc:
        raise SystemExit(f"backup: error: {exc}") from None
    service = BackupService(
        events=client,
        backups=args.backups,
        models=args.models,
        interval=args.interval,
        keep=args.keep,
        store_id=args.store_id,
    )
    from drillkit.stacks.recommender.gateway import admin_token

    service.admin_token = admin_token()
    server = http_server(_handler(service), host=args.host, port=args.port, program="backup")
    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
    )
    serving.start()
    stop = threading.Event()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service.run(stop)


if __name__ == "__main__":
    main()
