"""Generated hostile journal and state files: ``drillkit heal`` never touches anything outside
the stack, never signals a process that is not the stack's, never raises.

Each example builds a small world: a state folder holding the stack under test (a store copy,
a backup next to the journal) and a second stack; outside it, a folder of files and a model
store an attacker would like changed; and, for the whole module, two processes that are not
drillkit's (one of them ``python -m`` quoting the stack's id and a spike tag in its arguments,
as drillkit's own processes look). Then the generated files go into the stack's folder:

* journal lines: drillkit's form with an undo record of each fault kind's form whose values
  aim at the world (stores, damaged files and backups outside the stack, through a link or
  ``..``, versions that are not versions, tags, services, links), one in five bent out of
  form, some with a hostile envelope; and lines that are not drillkit's at all (garbage bytes,
  deep nesting, huge and non-finite numbers);
* a saved state: drillkit's form naming one of the bystanders with its true start time (a
  killed drill's stack, which heal takes down, or a live-looking one) with up to two aspects
  made hostile (id, backend, run folder, data, log, start time, proxy port, a missing field,
  garbage);
* some of those files and folders replaced by links to the outside.

Heal runs in-process on the stack, then on everything; after each, the outside and the other
stack are byte for byte as they were, and both processes run on, unstopped. Disabling
``fsutil.contained`` or the environment mark in ``backends.local.owned`` makes this test fail.

``derandomize=True``: the 1,000 examples are a fixed function of the test, the same on every
run, so a failure reproduces anywhere; ``--hypothesis-show-statistics`` shows what they
reached.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from drillkit import procfs
from drillkit.backends.base import StackIdentity
from drillkit.backends.local import LocalStack, ProxyState
from drillkit.healing import heal_all

STACK = "20260101-000000-aaaaaa"
OTHER = "20260101-000000-bbbbbb"
TAG = "0123456789abcdef"

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass
class Bystanders:
    procs: list[subprocess.Popen[bytes]]
    root: Path

    def untouched(self) -> bool:
        return all(
            p.poll() is None and procfs.proc_state(p.pid) not in ("T", "t", "Z", "X")
            for p in self.procs
        )


@pytest.fixture(scope="module")
def bystanders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bystanders]:
    root = tmp_path_factory.mktemp("heal-fuzz")
    code = root / "code"
    code.mkdir()
    (code / "sleeper.py").write_text("import time\ntime.sleep(3600)\n")
    argvs = [
        [sys.executable, "-m", "sleeper", "--tag", TAG, "--stack-id", STACK, str(root)],
        [sys.executable, "-c", "import time; time.sleep(3600)"],
    ]
    procs = [
        subprocess.Popen(
            argv, cwd=code, start_new_session=True, env={**os.environ, "PYTHONPATH": str(code)}
        )
        for argv in argvs
    ]
    deadline = time.monotonic() + 10
    while any(
        procfs.argv(p.pid) != [a.encode() for a in argv]
        for p, argv in zip(procs, argvs, strict=True)
    ):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield Bystanders(procs, root)
    for proc in procs:
        proc.kill()
        proc.wait()


# -- the world -----------------------------------------------------------------------------------
@dataclass
class World:
    base: Path
    state: Path  # DRILLKIT_STATE_DIR
    folder: Path  # the stack's folder
    other: Path  # another stack's folder
    outside: Path  # what an attacker wants changed

    @property
    def store(self) -> Path:
        return self.folder / "data" / "store"


def make_world(base: Path) -> World:
    state = base / "state"
    folder = state / "stacks" / STACK
    other = state / "stacks" / OTHER
    outside = base / "outside"
    for store in (folder / "data" / "store", outside / "store", other / "data" / "store"):
        (store / "versions" / "v1").mkdir(parents=True)
        (store / "versions" / "v2").mkdir(parents=True)
        for version in ("v1", "v2"):
            for name in ("weights.safetensors", "index.faiss", "tables.safetensors"):
                (store / "versions" / version / name).write_bytes(f"{store}:{version}".encode())
        (store / "CURRENT").write_text("v2\n")
    (folder / "backups" / "b").mkdir(parents=True)
    (folder / "backups" / "b" / "0-weights.safetensors").write_bytes(b"backup")
    (folder / "data" / "out").symlink_to(outside)
    (outside / "secret").write_text("not for drillkit")
    (other / "journal.jsonl").write_text("")
    for path in (state, state / "stacks", folder, other):
        path.chmod(0o700)
    return World(base, state, folder, other, outside)


def snapshot(folder: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            seen[key] = ("link", os.readlink(path))
        elif path.is_file():
            seen[key] = ("file", path.read_bytes(), path.stat().st_mode)
        else:
            seen[key] = ("dir", path.stat().st_mode)
    return seen


# -- hostile values ----------------------------------------------------------------------------
PLACES = [
    "store", "store/versions/v2", "store/versions/v2/weights.safetensors",
    "backup", "backups", "folder", "outside", "outside/store", "outside/secret",
    "outside/store/versions/v2/weights.safetensors", "link", "link/store",
    "link/store/versions/v2/weights.safetensors", "dotdot", "dotdot/outside/secret",
    "relative", "root", "other", "other/data/store", "state", "empty", "proc",
]  # fmt: skip


def place(world: World, token: str) -> str:
    return {
        "store": str(world.store),
        "store/versions/v2": str(world.store / "versions" / "v2"),
        "store/versions/v2/weights.safetensors": str(
            world.store / "versions" / "v2" / "weights.safetensors"
        ),
        "backup": str(world.folder / "backups" / "b" / "0-weights.safetensors"),
        "backups": str(world.folder / "backups"),
        "folder": str(world.folder),
        "outside": str(world.outside),
        "outside/store": str(world.outside / "store"),
        "outside/secret": str(world.outside / "secret"),
        "outside/store/versions/v2/weights.safetensors": str(
            world.outside / "store" / "versions" / "v2" / "weights.safetensors"
        ),
        "link": str(world.folder / "data" / "out"),
        "link/store": str(world.folder / "data" / "out" / "store"),
        "link/store/versions/v2/weights.safetensors": str(
            world.folder / "data" / "out" / "store" / "versions" / "v2" / "weights.safetensors"
        ),
        "dotdot": f"{world.folder}/../../..",
        "dotdot/outside/secret": f"{world.folder}/../../../outside/secret",
        "relative": "data/store",
        "root": "/",
        "other": str(world.other),
        "other/data/store": str(world.other / "data" / "store"),
        "state": str(world.state),
        "empty": "",
        "proc": "/proc/self/environ",
    }.get(token, token)


texts = st.text(max_size=40) | st.sampled_from(["", "..", "../x", "v1/../../x", "\x00", "é" * 30])
places = st.sampled_from(PLACES)
#: Mostly a place of the world (an attacker aims), sometimes anything.
paths = places | places | places | texts
#: Where a store may be said to be: the stack's own, or one an attacker wants changed.
STORES = ["store", "outside/store", "link/store", "other/data/store", "dotdot", "folder"]
store_paths = st.sampled_from(STORES) | st.sampled_from(STORES) | st.sampled_from(STORES) | paths
good_versions = st.sampled_from(["v1", "v2", "v3"])
bad_versions = st.sampled_from(["v0", "v01", "../v2", "x"]) | texts
#: Mostly a version that exists: the record's hostility lies in where, not in what.
versions = st.one_of(*[good_versions] * 6, bad_versions)
files = st.sampled_from(["weights.safetensors", "index.faiss", "tables.safetensors", "../secret"])
names = st.sampled_from(["replica-1", "gateway", "model-store", "Replica", "../x", ""]) | texts
tags = st.sampled_from([TAG, "fedcba9876543210", "python", ""]) | texts
pids = st.sampled_from(["bystander", "bystander2", 0, 1, -1, 2**22 + 1, 2**63]) | (
    st.integers(-10, 2**31)
)
numbers = st.sampled_from([0, -1, 1e308, float("inf"), float("nan"), 2**64]) | st.floats()
scalars = texts | st.integers() | numbers | st.booleans() | st.none()
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)  # fmt: skip

#: A damaged file's path as drillkit writes it: ``<store>/versions/<version>/<file>``.
DERIVED = "<derived>"


@st.composite
def undo_records(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """An undo record of ``kind``'s form with hostile values (paths as places of the world,
    materialized by :func:`materialize`); one in five also bent out of form."""
    undo: dict[str, Any]
    if kind == "corrupt_model":
        mode = draw(st.sampled_from(["bitflip", "zero", "truncate", "poison"]))
        item = (
            st.fixed_dictionaries({"store": store_paths, "previous": versions, "added": versions})
            if mode == "poison"
            else st.fixed_dictionaries(
                {
                    "store": store_paths,
                    "version": versions,
                    "file": files,
                    "path": st.just(DERIVED) | st.just(DERIVED) | paths,
                    "backup": st.just("backup") | paths,
                    "sha256": st.just("0" * 64),
                }
            )
        )
        undo = {
            "mode": mode,
            "stores": draw(st.lists(item, min_size=1, max_size=2)),
            "replicas": draw(st.lists(names, max_size=2)),
        }
    elif kind == "load_spike":
        undo = {"tag": draw(tags), "log": draw(paths), "pid": draw(pids)}
    elif kind in ("kill_node", "pause_node"):
        undo = {"service": draw(names)}
    elif kind in ("cut_network", "slow_network"):
        undo = {"links": draw(st.lists(st.sampled_from(["gateway.replica-1", "x.y", ""])))}
    else:
        undo = draw(st.dictionaries(texts, json_values, max_size=3))
    if undo and draw(st.integers(0, 4)) == 0:
        key = draw(st.sampled_from(sorted(undo)))
        if draw(st.booleans()):
            del undo[key]
        else:
            undo[key] = draw(json_values)
    return undo


KINDS = ["corrupt_model", "load_spike", "kill_node", "pause_node", "cut_network",
         "slow_network", "nope"]  # fmt: skip
kinds = st.just("corrupt_model") | st.just("corrupt_model") | st.sampled_from(KINDS)


@st.composite
def journal_lines(draw: st.DrawFn) -> dict[str, Any] | bytes:
    """A journal line: drillkit's form (an object, materialized in the world) or bytes."""
    choice = draw(st.integers(0, 9))
    if choice <= 5:  # drillkit's form, a hostile undo record
        kind = draw(kinds)
        entry: dict[str, Any] = {
            "op": "apply",
            "id": draw(st.sampled_from(["a" * 16, "b" * 16, "c" * 16])),
            "fault_id": draw(st.sampled_from(["f-1", "f-2"])),
            "kind": kind,
            "target": draw(st.sampled_from(["replica-1", "gateway", "model-store"])),
            "stack_id": STACK,
            "applied_at": draw(st.floats(0, 2e9)),
            "undo": draw(undo_records(kind)),
        }
        if choice == 5:  # and a hostile envelope
            entry[draw(st.sampled_from(sorted(entry)))] = draw(
                st.sampled_from(["", "../x", OTHER, "x" * 17, "Kill", float("nan"), None])
                | texts | numbers
            )  # fmt: skip
        return entry
    if choice == 6:
        kind = draw(kinds)
        return {
            "op": draw(st.sampled_from(["update", "update", "heal", "x", None])),
            "id": draw(st.sampled_from(["a" * 16, "b" * 16, 1, None])),
            "undo": draw(undo_records(kind) | json_values),
        }
    if choice == 7:
        depth = draw(st.sampled_from([10, 1000, 5000]))
        return b"[" * depth + b"]" * depth
    if choice == 8:
        return draw(st.sampled_from([b"1e999", b"NaN", b'{"op": "apply", "applied_at": 1e999}',
                                     b"null", b'"apply"', b"\xff\xfe", b"{}"]))  # fmt: skip
    return draw(st.binary(max_size=60))


def materialize(world: World, value: Any) -> Any:
    """``value`` with every place of the world replaced by its path in ``world``, and each
    derived damaged-file path made from its store, version and file."""
    if isinstance(value, str):
        return place(world, value) if value in PLACES else value
    if isinstance(value, list):
        return [materialize(world, v) for v in value]
    if isinstance(value, dict):
        done = {k: materialize(world, v) for k, v in value.items()}
        if done.get("path") == DERIVED:
            done["path"] = f"{done['store']}/versions/{done['version']}/{done['file']}"
        return done
    return value


def encode(world: World, line: dict[str, Any] | bytes) -> bytes:
    return line if isinstance(line, bytes) else json.dumps(materialize(world, line)).encode()


def _pid(world: World, bystanders: Bystanders, value: Any) -> Any:
    if value == "bystander":
        return bystanders.procs[0].pid
    if value == "bystander2":
        return bystanders.procs[1].pid
    return value


#: Each aspect of a saved state, and the hostile values it may take.
STATE_ASPECTS: dict[str, st.SearchStrategy[Any]] = {
    "id": st.sampled_from([OTHER, "", "../x", STACK + "/..", 7]),
    "backend": st.sampled_from(["nope", "docker", 1, ""]),
    "run_dir": st.sampled_from(PLACES),
    "data": st.sampled_from(PLACES),
    "started": st.sampled_from([None, 0, -1, 1, "x"]),
    "log": st.sampled_from(PLACES),
    "proxy_port": st.sampled_from([0, 70000, -1, "1"]),
    "drop": st.sampled_from(["plan", "services", "id", "created_at", "run_dir"]),
    "garbage": st.binary(max_size=40) | st.sampled_from([b"[" * 5000, b"{}", b"null"]),
}


@st.composite
def states(draw: st.DrawFn) -> dict[str, Any]:
    """A description of a saved state, materialized in the world by :func:`write_state`:
    drillkit's own form, naming one of the processes that are not drillkit's (a killed
    drill's stack, which heal takes down, or a live-looking one), with up to two aspects made
    hostile."""
    desc: dict[str, Any] = {
        "id": STACK,
        "backend": "local",
        "run_dir": "folder",
        "data": draw(st.sampled_from(["store", None])),
        "owner": draw(st.sampled_from([None, {"pid": 999999, "scenario": "x"}])),
        "pid": draw(st.sampled_from(["bystander", "bystander2"]) | pids),
        "started": "true",
        "log": "folder-log",
        "proxy": draw(st.booleans()),
        "proxy_port": 1,
        "drop": None,
        "garbage": None,
    }
    for aspect in draw(st.sets(st.sampled_from(sorted(STATE_ASPECTS)), max_size=2)):
        desc[aspect] = draw(STATE_ASPECTS[aspect])
    return desc


def write_state(world: World, bystanders: Bystanders, desc: dict[str, Any]) -> None:
    path = world.folder / "stack.json"
    if desc["garbage"] is not None:
        path.write_bytes(desc["garbage"])
        path.chmod(0o600)
        return
    from drillkit.testing import fake_plan

    plan = fake_plan(replicas=1)
    state = LocalStack(
        backend="local",
        plan=plan,
        **StackIdentity(id=STACK, run_dir=world.folder, gpu=False, created_at=1.0).fields(),
    )
    data = state.model_dump(mode="json")
    pid = _pid(world, bystanders, desc["pid"])
    started = desc["started"]
    if started == "true" and isinstance(pid, int) and 0 < pid < 2**22:
        info = procfs.stat(pid)
        started = info.start_time if info is not None else None
    elif started == "true":
        started = 1
    log = str(world.folder / "logs" / "replica-1.log") if desc["log"] == "folder-log" else None
    data["services"] = {
        "replica-1": {
            "name": "replica-1",
            "role": "replica",
            "ports": {"http": 1},
            "pid": pid,
            "started": started,
            "log": log if log is not None else place(world, desc["log"]),
        }
    }
    if desc["proxy"]:
        data["proxy"] = ProxyState(
            control_port=1, links={}, log=str(world.folder / "logs" / "proxy.log")
        ).model_dump(mode="json") | {"pid": pid, "started": started,
                                     "control_port": desc["proxy_port"]}  # fmt: skip
    data["id"] = desc["id"]
    data["backend"] = desc["backend"]
    data["run_dir"] = place(world, desc["run_dir"])
    data["plan"]["data"] = None if desc["data"] is None else place(world, desc["data"])
    data["owner"] = desc["owner"]
    if desc["drop"]:
        data.pop(desc["drop"], None)
    path.write_text(json.dumps(data))
    path.chmod(0o600)


@given(
    lines=st.lists(journal_lines(), max_size=6),
    state=st.none() | states(),
    links=st.sets(st.sampled_from(["journal.jsonl", "stack.json", "backups", "data/store"])),
    heal_first=st.booleans(),
)
@FUZZ
def test_heal_acts_only_on_the_stacks_own(
    bystanders: Bystanders,
    lines: list[dict[str, Any] | bytes],
    state: dict[str, Any] | None,
    links: set[str],
    heal_first: bool,
) -> None:
    base = Path(tempfile.mkdtemp(dir=bystanders.root))
    saved = os.environ.get("DRILLKIT_STATE_DIR")
    try:
        world = make_world(base)
        os.environ["DRILLKIT_STATE_DIR"] = str(world.state)
        journal = b"\n".join(encode(world, line) for line in lines) + b"\n"
        (world.folder / "journal.jsonl").write_bytes(journal)
        if state is not None:
            write_state(world, bystanders, state)
        for name in links:  # the file or folder replaced by a link to the outside
            target = world.folder / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            target.symlink_to(world.outside / "secret" if "." in name else world.outside)
        outside, other = snapshot(world.outside), snapshot(world.other)

        outcome = heal_all(STACK) if heal_first else heal_all()

        assert bystanders.untouched()
        assert snapshot(world.outside) == outside
        if heal_first:
            assert snapshot(world.other) == other
            heal_all()
            assert bystanders.untouched()
            assert snapshot(world.outside) == outside
        assert all(isinstance(line, str) for line in outcome.lines)
        # What the examples reached (`pytest --hypothesis-show-statistics`).
        for result in outcome.results:
            event(f"fault {result.outcome}")
        for note in outcome.notes:
            event("state refused" if "saved state is refused" in note else "note")
    finally:
        if saved is None:
            os.environ.pop("DRILLKIT_STATE_DIR", None)
        else:
            os.environ["DRILLKIT_STATE_DIR"] = saved
        shutil.rmtree(base, ignore_errors=True)


def test_the_world_is_what_the_fuzz_says(bystanders: Bystanders) -> None:
    """The world's hostile paths reach what they claim (so the fuzz tests something)."""
    world = make_world(Path(tempfile.mkdtemp(dir=bystanders.root)))
    assert Path(place(world, "link/store/versions/v2/weights.safetensors")).read_bytes()
    assert Path(place(world, "dotdot/outside/secret")).read_text() == "not for drillkit"
    assert bystanders.untouched()
    assert b"--tag" in (procfs.argv(bystanders.procs[0].pid) or [])
