"""Building the stack image for the docker backend, with or without a registry.

One image serves every role of the stack (replica, gateway, network sidecar). Its tag carries
a digest of what goes into it (the Dockerfile, the pinned requirements and drillkit's own
source), so a stack never runs an image built from other code; ``drillkit stack build
--backend docker`` builds the image a stack needs, and the dependency layer is reused as long
as the requirements are unchanged.

Two ways to get a base:

* ``base_image="python:3.11-slim-bookworm"`` (any image the engine has or can pull): the
  Dockerfile's default, for machines with a registry; pip reads PyPI.
* offline (the default): a Debian root filesystem made with ``debootstrap`` and turned into an
  image with ``docker import``, and every Python package installed from a local wheelhouse
  with ``pip --no-index``. The wheelhouse is served to the build over loopback (the build runs
  with the host's network), so gigabytes of wheels are never copied into a build context or an
  image layer. Nothing is ever pulled.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import drillkit
from drillkit import __version__, paths
from drillkit.errors import BackendUnavailable, InputError

Progress = Callable[[str, float], None]

IMAGE_REPOSITORY = "drillkit/stack"
OFFLINE_BASE = "drillkit/base:bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DOCKERFILE = Path(__file__).with_name("Dockerfile")

#: What the containers import: the serving stack, not the CLI's load generator or SDKs.
SERVING_REQUIREMENTS = (
    "numpy",
    "torch",
    "faiss-cpu",
    "safetensors",
    "cryptography",
    "starlette",
    "uvicorn",
    "httptools",
    "uvloop",
    "prometheus-client",
    "pydantic",
    "pyyaml",
    "httpx",
    "redis",  # a zoned stack's replicas: their zone's cache
    # redis needs it below Python 3.11.3: Debian bookworm's python3 (the offline base) is
    # 3.11.2, while the wheelhouse is filled by the interpreter here, which may not need it.
    "async-timeout",
)
#: Debian packages of the offline base: Python for the roles, iptables and tc for the sidecar.
BASE_PACKAGES = (
    "python3",
    "python3-venv",
    "iproute2",
    "iptables",
    "ca-certificates",
    # A zoned stack's edge and cache tier: Debian's own HAProxy and Redis.
    "haproxy",
    "redis-server",
    # The stack's monitoring: Debian's own Prometheus and Alertmanager.
    "prometheus",
    "prometheus-alertmanager",
)


@dataclass(frozen=True)
class ImagePlan:
    """What an image is built from; its tag is derived from all of it."""

    base_image: str
    offline: bool
    gpu: bool
    requirements: str

    @property
    def tag(self) -> str:
        digest = hashlib.sha256()
        digest.update(DOCKERFILE.read_bytes())
        digest.update(self.requirements.encode())
        digest.update(self.base_image.encode())
        digest.update(_source_digest().encode())
        return f"{IMAGE_REPOSITORY}:{__version__}-{digest.hexdigest()[:12]}"


def requirements(*, gpu: bool = False) -> str:
    """The serving requirements pinned to the versions installed here, so the containers run
    what the tests ran."""
    lines = []
    for name in SERVING_REQUIREMENTS:
        dist = "faiss-gpu-cu12" if gpu and name == "faiss-cpu" else name
        try:
            lines.append(f"{dist}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            lines.append(dist)
    return "\n".join(lines) + "\n"


def image_plan(*, base_image: str | None = None, gpu: bool = False) -> ImagePlan:
    """The image a stack needs: offline unless a base image is named."""
    return ImagePlan(
        base_image=base_image or OFFLINE_BASE,
        offline=base_image is None,
        gpu=gpu,
        requirements=requirements(gpu=gpu),
    )


def _source_files() -> list[Path]:
    root = Path(drillkit.__file__).parent
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".yaml", ".json")
    )


@functools.cache
def _source_digest() -> str:
    root = Path(drillkit.__file__).parent
    digest = hashlib.sha256()
    for path in _source_files():
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


# -- the docker client ------------------------------------------------------------------------
def docker_client() -> Any:
    """A docker SDK client; BackendUnavailable (exit 3) naming the host when none answers."""
    import docker
    from docker.errors import DockerException

    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as exc:
        reason = str(exc).splitlines()[0][:200]
        raise BackendUnavailable(
            f"cannot reach the Docker Engine at {host} ({reason}); start it, set DOCKER_HOST, "
            "or use --backend local"
        ) from None
    return client


def image_present(client: Any, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


def require_image(client: Any, tag: str) -> None:
    """Exit 3 with the command that builds the image when it is missing (never pull it)."""
    if not image_present(client, tag):
        raise BackendUnavailable(
            f"image {tag} is not built; run `drillkit stack build --backend docker`"
        )


# -- the offline base -------------------------------------------------------------------------
def build_offline_base(client: Any, report: Progress, *, mirror: str | None = None) -> None:
    """Make ``drillkit/base:bookworm`` from a debootstrap root filesystem (needs root)."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise BackendUnavailable(
            "the offline base image needs debootstrap (apt-get install debootstrap), "
            "or name a base image with --base-image"
        )
    if os.geteuid() != 0:
        raise BackendUnavailable(
            "debootstrap needs root to make the offline base image; run the build as root "
            "or name a base image with --base-image"
        )
    mirror = mirror or os.environ.get("DRILLKIT_DEBIAN_MIRROR") or DEFAULT_MIRROR
    with tempfile.TemporaryDirectory(prefix="drillkit-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        report(f"debootstrap bookworm from {mirror}", -1)
        result = subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                "bookworm",
                str(rootfs),
                mirror,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-3:])
            raise BackendUnavailable(f"debootstrap failed ({result.returncode}): {tail}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        report("docker import of the root filesystem", -1)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        try:
            client.api.import_image_from_stream(
                tar.stdout,
                repository=OFFLINE_BASE.split(":")[0],
                tag=OFFLINE_BASE.split(":")[1],
                changes=[
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "ENV LANG=C.UTF-8",
                ],
            )
        finally:
            tar.stdout.close()
            tar.wait()
    if not image_present(client, OFFLINE_BASE):
        raise BackendUnavailable(f"docker import did not produce {OFFLINE_BASE}")


# -- the wheelhouse ---------------------------------------------------------------------------
def wheelhouse(reqs: str, report: Progress) -> Path:
    """Wheels for every serving requirement, cached by the requirements' digest."""
    key = hashlib.sha256(reqs.encode()).hexdigest()[:16]
    folder = paths.cache_dir() / "wheelhouse" / key
    if (folder / ".complete").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requirements.txt").write_text(reqs)
    report("downloading wheels into the wheelhouse (pip download)", -1)
    # Wheels for this interpreter: the base's Python is 3.11 on glibc, as here.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--only-binary=:all:",
            "--dest",
            str(folder),
            "-r",
            str(folder / "requirements.txt"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        raise BackendUnavailable(f"could not fill the wheelhouse {folder}: {tail}")
    (folder / ".complete").write_text("")
    return folder


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


# A fixed port keeps the dependency layer's cache key (its build arguments) stable.
_WHEEL_PORT = 38917


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """Serve ``folder`` read-only on loopback for the duration of a build."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    for port in (_WHEEL_PORT, 0):
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
            break
        except OSError:
            continue
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


# -- the image --------------------------------------------------------------------------------
def _context(tmp: Path, image: ImagePlan) -> None:
    shutil.copy2(DOCKERFILE, tmp / "Dockerfile")
    (tmp / "requirements.txt").write_text(image.requirements)
    src_root = Path(drillkit.__file__).parent
    for path in _source_files():
        dest = tmp / "src" / "drillkit" / path.relative_to(src_root)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)


def build_image(
    *,
    base_image: str | None = None,
    gpu: bool = False,
    rebuild: bool = False,
    progress: Progress | None = None,
) -> tuple[str, bool]:
    """Build the stack image (and the offline base and wheelhouse it needs); return its tag
    and whether anything was built."""
    report = progress or (lambda message, fraction: None)
    client = docker_client()
    image = image_plan(base_image=base_image, gpu=gpu)
    if image_present(client, image.tag) and not rebuild:
        return image.tag, False
    if image.offline and not image_present(client, OFFLINE_BASE):
        build_offline_base(client, report)
    if not image.offline and not image_present(client, image.base_image):
        report(f"base image {image.base_image} is not here; the engine will pull it", -1)
    with contextlib.ExitStack() as stack:
        buildargs = {"BASE_IMAGE": image.base_image}
        if image.offline:
            wheels = wheelhouse(image.requirements, report)
            url = stack.enter_context(serve_folder(wheels))
            buildargs["PIP_ARGS"] = f"--no-index --find-links {url}"
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="drillkit-image-")))
        _context(tmp, image)
        _run_build(client, tmp, image.tag, buildargs, rebuild=rebuild, report=report)
    prune_stale(client, keep=image.tag)
    return image.tag, True


def prune_stale(client: Any, *, keep: str) -> list[str]:
    """Remove stack images built from other drillkit sources (their layers below the source
    are shared, so this frees little but keeps `docker images` readable). An image that a
    container still uses is kept."""
    from docker.errors import APIError

    removed = []
    for old in client.images.list(name=IMAGE_REPOSITORY):
        tags = [t for t in old.tags if t.startswith(IMAGE_REPOSITORY + ":")]
        if keep in old.tags or not tags:
            continue
        for tag in tags:
            with contextlib.suppress(APIError):
                client.images.remove(tag, noprune=False)
                removed.append(tag)
    return removed


def _run_build(
    client: Any,
    context: Path,
    tag: str,
    buildargs: dict[str, str],
    *,
    rebuild: bool,
    report: Progress,
) -> None:
    from docker.errors import APIError

    tail: list[str] = []
    try:
        stream = client.api.build(
            path=str(context),
            tag=tag,
            buildargs=buildargs,
            network_mode="host",  # pip reaches the wheelhouse on loopback
            rm=True,
            forcerm=True,
            pull=False,
            nocache=rebuild,
            decode=True,
        )
        for chunk in stream:
            if "error" in chunk:
                raise BackendUnavailable(
                    f"image build failed: {chunk['error'].strip()} "
                    f"(last output: {' | '.join(tail[-3:])})"
                )
            text = str(chunk.get("stream", "")).strip()
            if not text:
                continue
            tail.append(text)
            if text.startswith("Step "):
                step, _, what = text.partition(" : ")
                done, _, total = step.removeprefix("Step ").partition("/")
                with contextlib.suppress(ValueError):
                    report(f"image {step.lower()}: {what[:70]}", (int(done) - 1) / int(total))
    except APIError as exc:
        raise BackendUnavailable(f"image build failed: {exc.explanation or exc}") from None
    if not image_present(client, tag):
        raise BackendUnavailable(f"image build finished without {tag}: {' | '.join(tail[-3:])}")
    report(f"image {tag} built", 1.0)


def check_base_image_name(name: str) -> str:
    if not name or any(c.isspace() for c in name):
        raise InputError(f"--base-image: expected an image reference, got {name!r}")
    return name
