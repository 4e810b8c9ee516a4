from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from drillkit.errors import InputError, IntegrityError, ManifestError, SignatureError
from drillkit.stacks.recommender.store import (
    CURRENT_NAME,
    MANIFEST_NAME,
    MODEL_FILES,
    ModelStore,
    new_signing_key,
    read_manifest,
    read_verified,
    sign,
    signing_key,
    verify_key,
)

KEY, PUBLIC = new_signing_key()
OTHER_PUBLIC = new_signing_key()[1]


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


def test_signed_manifest_verifies_with_its_public_key(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", key=KEY)
    manifest = store.verify("v2", key=PUBLIC)
    assert manifest.signature is not None and manifest.signature.startswith("ed25519:")
    store.verify("v2")  # no key configured: digests only


@pytest.mark.parametrize(
    ("sign_with", "verify_with", "tamper", "expected"),
    [
        pytest.param(KEY, OTHER_PUBLIC, False, "signature does not match", id="wrong-key"),
        pytest.param(None, PUBLIC, False, "unsigned manifest", id="unsigned"),
        pytest.param(KEY, PUBLIC, True, "signature does not match", id="edited-metrics"),
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


def test_what_verifies_cannot_sign(tmp_path: Path) -> None:
    # The verifier's key is the public half: signing with it is not even possible, so a
    # replica (which holds only that) cannot make a version pass.
    with pytest.raises(ValueError):
        sign(b"payload", PUBLIC[:16])
    forged = make_store(tmp_path / "store", versions=1, key=new_signing_key()[0])
    with pytest.raises(SignatureError, match="signature does not match"):
        forged.verify("v1", key=PUBLIC)


def test_keys_come_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.write_text(KEY.hex() + "\n")
    assert signing_key({"DRILLKIT_SIGNING_KEY_FILE": str(path)}) == KEY
    assert verify_key({"DRILLKIT_SIGNING_KEY_FILE": str(path)}) == PUBLIC  # derived
    assert verify_key({"DRILLKIT_VERIFY_KEY": PUBLIC.hex()}) == PUBLIC
    assert signing_key({}) is None and verify_key({}) is None
    with pytest.raises(InputError, match="64 hex digits"):
        verify_key({"DRILLKIT_VERIFY_KEY": "abc"})
    # The HMAC key of earlier versions: refused with what replaces it, never half-used.
    with pytest.raises(InputError, match="DRILLKIT_MODEL_KEY .* no longer used"):
        verify_key({"DRILLKIT_MODEL_KEY": "abc"})


# -- what a replica loads is what it verified -------------------------------------------------


def test_the_bytes_returned_are_the_bytes_that_were_hashed(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    folder = store.version_dir("v2")
    names = ["weights.safetensors", "index.faiss"]
    manifest, files = read_verified(folder, names)
    flip_byte(folder / "weights.safetensors")  # after the check, before any use
    for name in names:
        assert hashlib.sha256(files[name]).hexdigest() == manifest.files[name].sha256
    with pytest.raises(IntegrityError, match="SHA-256 mismatch"):
        read_verified(folder, names)  # a new read sees the damage


def test_a_version_must_list_every_file_it_is_loaded_from(tmp_path: Path) -> None:
    store = make_store(tmp_path)  # lists weights, index, popular: no tables
    with pytest.raises(IntegrityError, match="tables.safetensors is not listed"):
        read_verified(store.version_dir("v2"), MODEL_FILES)


def test_a_payload_file_that_is_a_link_is_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    folder = store.version_dir("v2")
    planted = tmp_path / "planted"
    planted.write_bytes((folder / "index.faiss").read_bytes())  # the very bytes, elsewhere
    (folder / "index.faiss").unlink()
    (folder / "index.faiss").symlink_to(planted)
    with pytest.raises(IntegrityError, match="cannot be read safely"):
        read_verified(folder, ["index.faiss"])
