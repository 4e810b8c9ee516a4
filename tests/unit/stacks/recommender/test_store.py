from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drillkit.errors import InputError, IntegrityError, ManifestError, SignatureError
from drillkit.stacks.recommender.store import (
    CURRENT_NAME,
    MANIFEST_NAME,
    ModelStore,
    read_manifest,
    signing_key,
    verify_version,
)

KEY = b"test-key"


def payload(seed: int) -> Callable[[Path], list[str]]:
    def write(folder: Path) -> list[str]:
        (folder / "weights.safetensors").write_bytes(bytes((seed + i) % 256 for i in range(4096)))
        (folder / "index.faiss").write_bytes(b"IxFI" + bytes(range(200)) * 3)
        (folder / "popular.json").write_text(json.dumps([{"item_id": 1, "score": 2.0}]))
        return ["weights.safetensors", "index.faiss", "popular.json"]

    return write


def make_store(root: Path, versions: int = 2, key: bytes | None = None) -> ModelStore:
    store = ModelStore(root)
    for i in range(versions):
        store.add_version(
            payload(i), metrics={"recall_at_10": 0.2 + i / 100}, info={"dim": 8}, key=key
        )
    return store


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def test_add_version_writes_manifest_and_moves_current(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    assert store.versions() == ["v1", "v2"]
    assert store.current() == "v2"
    manifest = store.verify("v2")
    assert set(manifest.files) == {"weights.safetensors", "index.faiss", "popular.json"}
    assert manifest.files["weights.safetensors"].size == 4096
    assert manifest.metrics["recall_at_10"] == pytest.approx(0.21)
    assert len(manifest.digest) == 64
    assert store.verify("v1").digest != manifest.digest
    # No temp folders or temp pointer files are left behind.
    assert sorted(p.name for p in store.root.iterdir()) == [CURRENT_NAME, "versions"]
    assert sorted(p.name for p in store.versions_dir.iterdir()) == ["v1", "v2"]


def test_versions_sort_numerically(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", versions=11)
    assert store.versions()[-3:] == ["v9", "v10", "v11"]
    assert store.serving_candidates()[:2] == ["v11", "v10"]


@pytest.mark.parametrize(
    ("damage", "error", "expected"),
    [
        pytest.param(
            lambda d: flip_byte(d / "weights.safetensors"),
            IntegrityError,
            "weights.safetensors: SHA-256 mismatch",
            id="bitflip",
        ),
        pytest.param(
            lambda d: (d / "index.faiss").write_bytes((d / "index.faiss").read_bytes()[:100]),
            IntegrityError,
            "index.faiss: size 100 bytes",
            id="truncate",
        ),
        pytest.param(
            lambda d: (d / "weights.safetensors").write_bytes(b"\0" * 4096),
            IntegrityError,
            "weights.safetensors: SHA-256 mismatch",
            id="zero",
        ),
        pytest.param(
            lambda d: (d / "popular.json").unlink(),
            IntegrityError,
            "popular.json: file is missing",
            id="missing-file",
        ),
        pytest.param(
            lambda d: (d / MANIFEST_NAME).write_text("{not json"),
            ManifestError,
            "manifest is not valid JSON",
            id="manifest-not-json",
        ),
        pytest.param(
            lambda d: (d / MANIFEST_NAME).unlink(),
            ManifestError,
            "manifest is missing",
            id="manifest-missing",
        ),
        pytest.param(
            lambda d: (d / MANIFEST_NAME).write_text('{"version": "v2"}'),
            ManifestError,
            "created_at",
            id="manifest-incomplete",
        ),
    ],
)
def test_verify_names_what_is_wrong(
    tmp_path: Path, damage: Callable[[Path], None], error: type[Exception], expected: str
) -> None:
    store = make_store(tmp_path / "store")
    damage(store.version_dir("v2"))
    with pytest.raises(error, match=expected):
        store.verify("v2")
    store.verify("v1")  # the other version is untouched


def test_manifest_cannot_point_outside_its_folder(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", versions=1)
    path = store.version_dir("v1") / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["files"]["../../etc/passwd"] = data["files"].pop("popular.json")
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="not a plain payload file name"):
        read_manifest(store.version_dir("v1"))


def test_manifest_in_the_wrong_folder_is_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    v1 = store.version_dir("v1")
    (v1 / MANIFEST_NAME).write_bytes((store.version_dir("v2") / MANIFEST_NAME).read_bytes())
    with pytest.raises(ManifestError, match="names version 'v2'"):
        store.verify("v1")


def test_signed_manifest_verifies_with_its_key(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", key=KEY)
    assert store.verify("v2", key=KEY).signature is not None
    store.verify("v2")  # no key configured: digests only


@pytest.mark.parametrize(
    ("sign_with", "verify_with", "tamper", "expected"),
    [
        pytest.param(KEY, b"other-key", False, "signature does not match", id="wrong-key"),
        pytest.param(None, KEY, False, "unsigned manifest", id="unsigned"),
        pytest.param(KEY, KEY, True, "signature does not match", id="edited-metrics"),
    ],
)
def test_bad_signatures_are_refused(
    tmp_path: Path, sign_with: bytes | None, verify_with: bytes, tamper: bool, expected: str
) -> None:
    store = make_store(tmp_path / "store", versions=1, key=sign_with)
    if tamper:
        path = store.version_dir("v1") / MANIFEST_NAME
        data = json.loads(path.read_text())
        data["metrics"]["recall_at_10"] = 0.99
        path.write_text(json.dumps(data))
    with pytest.raises(SignatureError, match=expected):
        store.verify("v1", key=verify_with)


def test_signing_key_comes_from_the_environment() -> None:
    assert signing_key({"DRILLKIT_MODEL_KEY": "abc"}) == b"abc"
    assert signing_key({"DRILLKIT_MODEL_KEY": ""}) is None
    assert signing_key({}) is None


def test_rollback_to_previous_and_to_named_version(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", versions=3)
    assert store.rollback() == ("v3", "v2")
    assert store.current() == "v2"
    assert store.rollback(to="v3") == ("v2", "v3")
    assert store.current() == "v3"


def test_rollback_skips_versions_that_fail(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", versions=3)
    flip_byte(store.version_dir("v2") / "weights.safetensors")
    assert store.rollback() == ("v3", "v1")


def test_rollback_refuses_a_damaged_target(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    flip_byte(store.version_dir("v1") / "index.faiss")
    with pytest.raises(IntegrityError, match="index.faiss"):
        store.rollback(to="v1")
    assert store.current() == "v2"


@pytest.mark.parametrize("target", ["v9", "latest", "../v1"], ids=["unknown", "word", "path"])
def test_rollback_to_unknown_version_is_input_error(tmp_path: Path, target: str) -> None:
    store = make_store(tmp_path / "store")
    with pytest.raises(InputError):
        store.rollback(to=target)


def test_rollback_with_nothing_older_is_input_error(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", versions=1)
    with pytest.raises(InputError, match="no verified version older"):
        store.rollback()


def test_serving_candidates_never_include_unreleased_versions(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", versions=3)
    store.set_current("v2")
    assert store.serving_candidates() == ["v2", "v1"]


def test_garbage_current_pointer_means_newest_first(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    (store.root / CURRENT_NAME).write_text("../../etc\n")
    assert store.current() is None
    assert store.serving_candidates() == ["v2", "v1"]


@settings(max_examples=60, deadline=None)
@given(
    offset=st.integers(min_value=0, max_value=10_000),
    bit=st.integers(0, 7),
    name=st.sampled_from(["weights.safetensors", "index.faiss", "popular.json"]),
)
def test_any_single_bit_flip_is_detected(
    tmp_path_factory: pytest.TempPathFactory, offset: int, bit: int, name: str
) -> None:
    store = make_store(tmp_path_factory.mktemp("store"), versions=1)
    path = store.version_dir("v1") / name
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 1 << bit
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=name):
        verify_version(store.version_dir("v1"))
