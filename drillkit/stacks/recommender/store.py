"""The versioned model store and its manifests.

Layout of a store::

    <root>/
      CURRENT                    the version being served, e.g. "v2\\n"; replaced atomically
      versions/
        v1/  manifest.json weights.safetensors tables.safetensors index.faiss popular.json
        v2/  ...

``manifest.json`` lists the SHA-256 and size of every payload file, the version, the model's
dimensions and offline metrics, the creation time and, when a signing key is set at build time
(``DRILLKIT_SIGNING_KEY_FILE``), an Ed25519 signature over everything else. Nothing is loaded
from a version before :func:`verify_version` has checked the manifest, the signature and every
file: neither ``torch.load`` nor safetensors detects a flipped bit inside tensor data, so the
digest is the only line of defence.

Signature policy: when a verification key is set where a version is verified
(``DRILLKIT_VERIFY_KEY``, the public half, or the signing key, from which it is derived), the
manifest must carry a valid signature. When none is set, signatures are not checked and
verification rests on the digests alone. The signature is asymmetric: replicas and the gateway
hold only the public key, so nothing that serves can sign a version (an HMAC key, which
``DRILLKIT_MODEL_KEY`` was, lets every verifier sign too).

This module depends only on the standard library and pydantic, so every process (the CLI,
the gateway, a drill) can verify a store without importing torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drillkit import safejson
from drillkit.errors import (
    ArtifactError,
    InputError,
    IntegrityError,
    ManifestError,
    SignatureError,
)
from drillkit.fsutil import atomic_write

MANIFEST_NAME = "manifest.json"
CURRENT_NAME = "CURRENT"
VERSIONS_DIR = "versions"
SIGNING_KEY_ENV = "DRILLKIT_SIGNING_KEY_FILE"
VERIFY_KEY_ENV = "DRILLKIT_VERIFY_KEY"
#: The HMAC key of earlier versions: refused with a message saying what replaces it.
OLD_KEY_ENV = "DRILLKIT_MODEL_KEY"
MANIFEST_FORMAT = 1

_VERSION_RE = re.compile(r"^v([1-9][0-9]{0,8})$")
_FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CHUNK = 1 << 20
_HEX_64 = re.compile(r"^[0-9a-f]{64}$")
_HEX_128 = re.compile(r"^[0-9a-f]{128}$")


class FileEntry(BaseModel):
    """Digest and size of one payload file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Manifest(BaseModel):
    """The signed description of one model version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = MANIFEST_FORMAT
    version: str = Field(pattern=_VERSION_RE.pattern)
    created_at: str
    files: dict[str, FileEntry]
    metrics: dict[str, float] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)
    signature: str | None = None

    def body(self) -> dict[str, Any]:
        """Everything the signature and the digest cover (all but the signature)."""
        return self.model_dump(mode="json", exclude={"signature"})

    def canonical_bytes(self) -> bytes:
        return json.dumps(self.body(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def digest(self) -> str:
        """The model digest: SHA-256 of the canonical manifest body.

        It changes whenever any file, metric or setting of the version changes, so a response
        carrying it names exactly one verified artifact set.
        """
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def signed(self, key: bytes) -> Manifest:
        """This manifest signed with the Ed25519 private key ``key`` (its 32-byte seed)."""
        return self.model_copy(update={"signature": sign(self.canonical_bytes(), key)})


def sign(payload: bytes, key: bytes) -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return "ed25519:" + Ed25519PrivateKey.from_private_bytes(key).sign(payload).hex()


def check_signature(payload: bytes, signature: str, key: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``payload`` by the public ``key``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    kind, _, text = signature.partition(":")
    if kind != "ed25519" or not _HEX_128.fullmatch(text):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(bytes.fromhex(text), payload)
    except InvalidSignature:
        return False
    return True


def new_signing_key() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair: (private seed, public key), 32 bytes each."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return seed, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _public_of(seed: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = Ed25519PrivateKey.from_private_bytes(seed)
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _hex_key(value: str, where: str) -> bytes:
    text = value.strip()
    if not _HEX_64.fullmatch(text):
        raise InputError(f"{where}: expected an Ed25519 key as 64 hex digits")
    return bytes.fromhex(text)


def _no_hmac(env: Mapping[str, str]) -> None:
    if env.get(OLD_KEY_ENV):
        raise InputError(
            f"{OLD_KEY_ENV} (an HMAC key, which every verifier could sign with) is no longer "
            f"used: sign with an Ed25519 key (`drillkit model keygen`), {SIGNING_KEY_ENV} at "
            f"build time, {VERIFY_KEY_ENV} where versions are verified"
        )


def signing_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The Ed25519 private key (32-byte seed) in the file ``DRILLKIT_SIGNING_KEY_FILE`` names,
    or None. Needed only where versions are made: a build, and the drill of a poisoned one."""
    env = environ if environ is not None else os.environ
    _no_hmac(env)
    path = env.get(SIGNING_KEY_ENV, "")
    if not path:
        return None
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise InputError(f"{SIGNING_KEY_ENV}={path}: cannot read the key: {exc.strerror}") from None
    return _hex_key(text, f"{SIGNING_KEY_ENV}={path}")


def verify_key(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The Ed25519 public key versions are checked with: ``DRILLKIT_VERIFY_KEY`` (64 hex
    digits), else the public half of the signing key, else None (signatures unchecked)."""
    env = environ if environ is not None else os.environ
    _no_hmac(env)
    value = env.get(VERIFY_KEY_ENV, "")
    if value:
        return _hex_key(value, VERIFY_KEY_ENV)
    seed = signing_key(env)
    return _public_of(seed) if seed is not None else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def parse_version(name: str) -> int:
    """The number of a version name ``v<N>``; InputError for anything else."""
    match = _VERSION_RE.match(name)
    if match is None:
        raise InputError(f"{name!r} is not a model version (expected v1, v2, ...)")
    return int(match.group(1))


def read_manifest(version_dir: Path) -> Manifest:
    """Parse a version's manifest; ManifestError names the file and what is wrong."""
    path = version_dir / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"{path}: manifest is missing") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc.strerror}") from None
    try:
        data = safejson.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: manifest is not valid JSON ({exc})") from None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "<root>"
        raise ManifestError(f"{path}: {where}: {first['msg']}") from None
    if manifest.format != MANIFEST_FORMAT:
        raise ManifestError(f"{path}: unknown manifest format {manifest.format}")
    if manifest.version != version_dir.name:
        raise ManifestError(
            f"{path}: manifest names version {manifest.version!r} but lives in {version_dir.name!r}"
        )
    for name in manifest.files:
        if not _FILE_NAME_RE.match(name) or name == MANIFEST_NAME:
            raise ManifestError(f"{path}: files: {name!r} is not a plain payload file name")
    return manifest


def verify_version(version_dir: Path, *, key: bytes | None = None) -> Manifest:
    """Check a version folder completely; return its manifest or raise an ArtifactError.

    Checks, in order: the manifest parses; the signature matches when a key is given; every
    listed file exists with the listed size and SHA-256. Messages name the offending file.
    """
    manifest = _checked_manifest(version_dir, key)
    for name, entry in sorted(manifest.files.items()):
        path = version_dir / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise IntegrityError(f"{path}: file is missing") from None
        if size != entry.size:
            raise IntegrityError(f"{path}: size {size} bytes, manifest says {entry.size}")
        actual = file_sha256(path)
        if actual != entry.sha256:
            raise IntegrityError(
                f"{path}: SHA-256 mismatch (file {actual[:12]}..., manifest {entry.sha256[:12]}...)"
            )
    return manifest


def _checked_manifest(version_dir: Path, key: bytes | None) -> Manifest:
    """The manifest, its signature checked when a key is given, listing at least a file."""
    manifest = read_manifest(version_dir)
    if key is not None:
        if manifest.signature is None:
            raise SignatureError(
                f"{version_dir / MANIFEST_NAME}: unsigned manifest, but a verification key is set"
            )
        if not check_signature(manifest.canonical_bytes(), manifest.signature, key):
            raise SignatureError(f"{version_dir / MANIFEST_NAME}: signature does not match")
    if not manifest.files:
        raise ManifestError(f"{version_dir / MANIFEST_NAME}: lists no files")
    return manifest


#: What a replica loads: a version whose manifest does not list all three is refused.
MODEL_FILES = ("weights.safetensors", "tables.safetensors", "index.faiss")
_MAX_FILE = 8 << 30


def read_file_once(path: Path, *, size: int) -> bytes:
    """The bytes of ``path``, read once, a link not followed; IntegrityError when it is
    missing, not a regular file, or not ``size`` bytes long."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise IntegrityError(f"{path}: file is missing") from None
    except OSError as exc:
        raise IntegrityError(f"{path}: cannot be read safely: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise IntegrityError(f"{path}: not a regular file")
        if info.st_size != size:
            raise IntegrityError(f"{path}: size {info.st_size} bytes, manifest says {size}")
        data = handle.read(min(size, _MAX_FILE) + 1)
    if len(data) != size:
        raise IntegrityError(f"{path}: read {len(data)} bytes, manifest says {size}")
    return data


def read_verified(
    version_dir: Path, names: Iterable[str], *, key: bytes | None = None
) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest and the bytes of ``names``, each file read once and hashed as read:
    what a caller loads from the returned bytes is exactly what was verified, whatever
    happens to the files afterwards. Every name must be listed in the manifest."""
    manifest = _checked_manifest(version_dir, key)
    files: dict[str, bytes] = {}
    for name in names:
        entry = manifest.files.get(name)
        if entry is None:
            raise IntegrityError(
                f"{version_dir / MANIFEST_NAME}: {name} is not listed; a version must list "
                "every file it is loaded from"
            )
        data = read_file_once(version_dir / name, size=entry.size)
        actual = hashlib.sha256(data).hexdigest()
        if actual != entry.sha256:
            raise IntegrityError(
                f"{version_dir / name}: SHA-256 mismatch (file {actual[:12]}..., manifest "
                f"{entry.sha256[:12]}...)"
            )
        files[name] = data
    return manifest, files


@dataclass(frozen=True)
class VersionCheck:
    """The outcome of verifying one version."""

    version: str
    ok: bool
    error: str | None
    manifest: Manifest | None
    current: bool


class ModelStore:
    """A folder of model versions with a CURRENT pointer."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def versions_dir(self) -> Path:
        return self.root / VERSIONS_DIR

    def exists(self) -> bool:
        return self.versions_dir.is_dir()

    def version_dir(self, version: str) -> Path:
        parse_version(version)
        return self.versions_dir / version

    def versions(self) -> list[str]:
        """Version names, oldest first (by number, not by name)."""
        if not self.versions_dir.is_dir():
            return []
        names = [p.name for p in self.versions_dir.iterdir() if _VERSION_RE.match(p.name)]
        return sorted(names, key=parse_version)

    def current(self) -> str | None:
        """The version CURRENT points to, or None when there is no valid pointer."""
        try:
            name = (self.root / CURRENT_NAME).read_text().strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return name if _VERSION_RE.match(name) else None

    def set_current(self, version: str) -> None:
        """Point CURRENT at ``version`` atomically (write a temp file, then rename)."""
        if version not in self.versions():
            raise InputError(f"{self.root}: no model version {version!r}")
        atomic_write(self.root / CURRENT_NAME, (version + "\n").encode())

    def verify(self, version: str, *, key: bytes | None = None) -> Manifest:
        return verify_version(self.version_dir(version), key=key)

    def check_all(self, *, key: bytes | None = None) -> list[VersionCheck]:
        current = self.current()
        results: list[VersionCheck] = []
        for version in self.versions():
            try:
                manifest = self.verify(version, key=key)
            except ArtifactError as exc:
                results.append(VersionCheck(version, False, str(exc), None, version == current))
            else:
                results.append(VersionCheck(version, True, None, manifest, version == current))
        return results

    def serving_candidates(self) -> list[str]:
        """Versions in the order a replica should try them: CURRENT, then older ones, newest
        first. Versions newer than CURRENT are never candidates: they were not released."""
        versions = self.versions()
        current = self.current()
        if current is None or current not in versions:
            return list(reversed(versions))
        index = versions.index(current)
        return [versions[index], *reversed(versions[:index])]

    def next_version(self) -> str:
        existing = self.versions()
        return f"v{parse_version(existing[-1]) + 1}" if existing else "v1"

    def add_version(
        self,
        write_payload: Callable[[Path], Iterable[str]],
        *,
        metrics: Mapping[str, float],
        info: Mapping[str, Any],
        key: bytes | None = None,
        make_current: bool = True,
    ) -> Manifest:
        """Write a new version: payload into a temp folder, manifest, then one rename.

        A crash leaves at most a hidden temp folder, never a half-written version.
        """
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        version = self.next_version()
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=self.versions_dir))
        try:
            names = sorted(set(write_payload(tmp)))
            files = {}
            for name in names:
                path = tmp / name
                files[name] = FileEntry(sha256=file_sha256(path), size=path.stat().st_size)
            manifest = Manifest(
                version=version,
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                files=files,
                metrics=dict(metrics),
                info=dict(info),
            )
            if key is not None:
                manifest = manifest.signed(key)
            write_manifest(tmp, manifest)
            os.replace(tmp, self.versions_dir / version)
        except BaseException:
            _remove_tree(tmp)
            raise
        if make_current:
            self.set_current(version)
        return manifest

    def rollback(
        self, to: str | None = None, *, key: bytes | None = None
    ) -> tuple[str | None, str]:
        """Point CURRENT at ``to``, or at the newest version older than CURRENT that verifies.

        Returns ``(previous, new)``. The target must verify; InputError when there is none.
        """
        previous = self.current()
        if to is not None:
            if to not in self.versions():
                raise InputError(
                    f"{self.root}: no model version {to!r} (have: "
                    f"{', '.join(self.versions()) or 'none'})"
                )
            self.verify(to, key=key)
            self.set_current(to)
            return previous, to
        candidates = self.serving_candidates()
        older = candidates[1:] if previous is not None and candidates[:1] == [previous] else []
        for version in older:
            try:
                self.verify(version, key=key)
            except ArtifactError:
                continue
            self.set_current(version)
            return previous, version
        raise InputError(f"{self.root}: no verified version older than {previous} to roll back to")


def write_manifest(version_dir: Path, manifest: Manifest) -> None:
    text = json.dumps(manifest.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"
    atomic_write(version_dir / MANIFEST_NAME, text.encode())


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
