"""``drillkit backup``: list, verify and restore the backups of a stack's event store and
model store (:mod:`drillkit.stacks.recommender.backup`), for on-call use."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from drillkit.backends.base import load_state
from drillkit.cli.state import terminal
from drillkit.errors import ArtifactError, EnvironmentFailure, InputError, NoStackError

app = typer.Typer(
    help="List, verify and restore the backups of the event store and the model store.",
    no_args_is_help=True,
)

DIR = typer.Option(
    None,
    "--dir",
    help="The backup location. Default: the running stack's (its backup service's).",
)
STACK = typer.Option(None, "--stack", help="The stack, when several are up.")
KINDS = ("events", "models")


def _stack(stack: str | None) -> Any:
    from drillkit.stacks.recommender.spec import ROLE_BACKUP

    state = load_state(stack)
    if state is None:
        raise NoStackError("no stack is up: name the backup location with --dir")
    if ROLE_BACKUP not in state.services:
        raise InputError(f"stack {state.id} has no backup service (stack.events.enabled is off)")
    return state


def _location(folder: Path | None, stack: str | None) -> Path:
    from drillkit.stacks.recommender.spec import ROLE_BACKUP

    if folder is not None:
        if not folder.is_dir():
            raise InputError(f"{folder}: the backup location does not exist")
        return folder
    state = _stack(stack)
    return Path(state.plan.service(ROLE_BACKUP).mount("backups").source)


def _kind(kind: str | None) -> str | None:
    if kind is not None and kind not in KINDS:
        raise InputError(f"--kind: expected events or models, got {kind!r}")
    return kind


def _iso(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


@app.command("list")
def list_(
    folder: Path | None = DIR,
    kind: str | None = typer.Option(None, "--kind", help="events or models; default both."),
    stack: str | None = STACK,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Every backup in the location, oldest first, with what its manifest says."""
    from drillkit.stacks.recommender.backup import list_backups

    t = terminal()
    root = _location(folder, stack)
    backups = list_backups(root, _kind(kind))
    if json_out:
        t.json({"location": str(root), "backups": [b.to_json() for b in backups]})
        return
    if not backups:
        t.result(f"no backups in {root}")
        return
    now = time.time()
    t.result(
        f"{'kind':<7} {'name':<26} {'created (UTC)':<26} {'age':>8} {'entries':>8} {'bytes':>10}"
    )
    for b in backups:
        entries = "-" if b.entries is None else str(b.entries)
        age = f"{now - b.created_at:.0f}s"
        t.result(
            f"{b.kind:<7} {b.name:<26} {_iso(b.created_at):<26} {age:>8} {entries:>8} {b.size:>10}"
        )


@app.command()
def verify(
    names: list[str] = typer.Argument(None, help="Backups to verify; default every one."),
    folder: Path | None = DIR,
    stack: str | None = STACK,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Check every file of each backup against its manifest (size, SHA-256). Exit 1 when any
    fails, naming the file."""
    from drillkit.stacks.recommender.backup import KINDS as ALL_KINDS
    from drillkit.stacks.recommender.backup import verify_backup

    t = terminal()
    root = _location(folder, stack)
    folders = _backup_folders(root, ALL_KINDS, names or [])
    results: list[dict[str, Any]] = []
    for path in folders:
        try:
            backup = verify_backup(path)
            results.append({"name": path.name, "kind": backup.kind, "ok": True, "error": None})
        except ArtifactError as exc:
            results.append({"name": path.name, "kind": path.parent.name, "ok": False,
                            "error": str(exc)})  # fmt: skip
    failed = [r for r in results if not r["ok"]]
    if json_out:
        t.json({"location": str(root), "ok": not failed, "backups": results})
    else:
        if not results:
            t.result(f"no backups in {root}")
        for r in results:
            if r["ok"]:
                t.result(f"ok      {r['kind']:<7} {r['name']}", "green")
            else:
                t.result(f"FAILED  {r['kind']:<7} {r['name']}  {r['error']}", "red")
    if failed:
        raise typer.Exit(1)


def _backup_folders(root: Path, kinds: tuple[str, ...], names: list[str]) -> list[Path]:
    """The folders of the named backups (any kind), or of every backup."""
    found: list[Path] = []
    for kind in kinds:
        folder = root / kind
        if folder.is_dir():
            found += [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.is_symlink()]
    if not names:
        return found
    by_name = {p.name: p for p in found}
    out = []
    for name in names:
        if name not in by_name:
            raise InputError(f"{root}: no backup named {name!r} (`drillkit backup list`)")
        out.append(by_name[name])
    return out


@app.command()
def restore(
    name: str | None = typer.Argument(
        None, help="The backup to restore; default the newest of --kind that verifies."
    ),
    kind: str = typer.Option("events", "--kind", help="events or models, when no name is given."),
    folder: Path | None = DIR,
    stack: str | None = STACK,
) -> None:
    """Restore a backup into the running stack: an events backup into its event store (the
    events written since are kept), a models backup into its model store. A backup that does
    not verify is refused (exit 1, naming the file)."""
    import redis

    from drillkit.stacks.recommender.backup import (
        MODELS,
        newest_verified,
        restore_events,
        restore_models,
        verify_backup,
    )
    from drillkit.stacks.recommender.preset import origin_store, redis_of
    from drillkit.stacks.recommender.spec import ROLE_EVENT_STORE

    t = terminal()
    state = _stack(stack)
    root = _location(folder, stack)
    if name is not None:
        (path,) = _backup_folders(root, KINDS, [name])
        backup = verify_backup(path)  # ArtifactError: exit 1 naming the file
    else:
        chosen = _kind(kind)
        assert chosen is not None
        found = newest_verified(root, chosen)
        if found is None:
            raise ArtifactError(f"{root}: no {chosen} backup verifies")
        backup = found
    started = time.monotonic()
    if backup.kind == MODELS:
        try:
            restore_models(backup, origin_store(state))
        except OSError as exc:
            raise EnvironmentFailure(f"model store: {exc}") from None
        t.result(
            f"restored {backup.name} into the model store in {time.monotonic() - started:.2f} s"
        )
        return
    client = redis_of(state, ROLE_EVENT_STORE)
    try:
        carried = restore_events(client, backup)
    except redis.RedisError as exc:
        raise EnvironmentFailure(f"event store: {exc}") from None
    finally:
        client.close()
    t.result(
        f"restored {backup.name} ({backup.entries} events, newest {_iso(backup.newest_event_at)}) "
        f"into the event store in {time.monotonic() - started:.2f} s; {carried} newer event(s) kept"
    )
