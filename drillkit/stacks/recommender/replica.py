"""The model-server replica: verifies, loads and serves one model version.

Rules it keeps, whatever happens to the store under it:

* nothing is loaded from a version before its manifest, signature and every file digest
  verify, each file read once and loaded from the bytes that were hashed
  (:func:`drillkit.stacks.recommender.store.read_verified`);
* a version that verifies must also pass a load-time sanity gate: every vector finite, and
  recall@10 on the golden sample within tolerance of the manifest's figure;
* at start it serves CURRENT, or when CURRENT is refused the newest older version that passes
  (last-known-good); it never serves an unverified model;
* a hot reload (CURRENT changed, a file of the served version changed on disk, or the token
  protected ``POST /admin/reload``) swaps models only when the new one passes; otherwise the
  model already in memory, which was verified when it was loaded, keeps serving.

Every refusal is one log line and a metric, so a drill can see when the replica noticed.

Its GPU (:mod:`drillkit.stacks.recommender.gpu`) is where inference runs. An inference the
device fails (CUDA out of memory, a lost device, any other CUDA error) is answered 503 at
once, with ``Retry-After``, so the gateway retries it on another replica; after an out of
memory the replica releases PyTorch's cached blocks, so the next request may fit. Each
episode is one log line and an entry in ``/info``'s events, as is a critical Xid or a clock
throttle its watcher reads from the device. ``/healthz`` says only that the process answers;
``/readyz`` with ``--readiness deep`` (the default) runs one real inference on the device, so a
replica whose GPU fails leaves rotation at the gateway's next checks; ``--readiness shallow``
reports ready whenever a verified model is loaded, whatever the device does (the check many
servers ship, and what a drill shows the cost of). ``/metrics`` carries the device's DCGM
fields by dcgm-exporter's names; token-protected ``POST /admin/gpu`` is how a drill's
``gpu_fault`` acts on the device.

Under overload a replica sheds work nobody waits for: a request whose ``X-Drillkit-Deadline``
(unix seconds, set by the gateway) has passed by the time it is served gets an immediate 503
(``outcome="expired"``) instead of a model computation. Requests are computed one at a time on
the event loop, so without this a backlog of requests the gateway already gave up on would
delay every later one.
Run as ``python -m drillkit.stacks.recommender.replica --store DIR --port N``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from drillkit import safejson
from drillkit.errors import ArtifactError, MissingFeatures, SanityGateError
from drillkit.stacks.recommender.cache import (
    CacheConfig,
    CacheLookup,
    RecentActivity,
    ReplicaCache,
)
from drillkit.stacks.recommender.gateway import DEADLINE_HEADER, admin_token
from drillkit.stacks.recommender.gpu import (
    HARDWARE_THROTTLE,
    Gpu,
    GpuCondition,
    throttle_words,
    trouble_of,
)
from drillkit.stacks.recommender.store import (
    MODEL_FILES,
    Manifest,
    ModelStore,
    read_verified,
    verify_key,
)

if TYPE_CHECKING:
    from drillkit.stacks.recommender.runtime import LoadedModel

log = logging.getLogger("drillkit.replica")

MAX_K = 1000
SANITY_METRIC = "sample_recall_at_10"
# A deadline further than this from the replica's clock is a clock mismatch between hosts,
# not a budget (the gateway's are about a second): ignore it rather than refuse everything.
MAX_DEADLINE_SKEW = 30.0


@dataclass(frozen=True)
class ReplicaConfig:
    """Settings of one replica process."""

    store: Path
    name: str = "replica"
    device: str = "auto"
    watch_interval: float = 0.5
    # The sanity sample's recall may differ a little across devices (GPU vs CPU summation
    # order); a broken model falls far below, so the gate is one-sided with a small margin.
    sanity_tolerance: float = 0.1
    admin_token: str | None = None
    cache: CacheConfig | None = None  # the zone's Redis (cache-aside); None: no cache tier
    features: str | None = None  # the event store's redis://: users' recent clicks left out
    readiness: str = "deep"  # deep: /readyz runs an inference; shallow: a model is loaded


#: A version's runtime settings, in its manifest's ``info`` (signed with the rest):
#: ``{"runtime": {"feature_fetch_ms": N}}``, the time a feature lookup takes per request.
RUNTIME_INFO = "runtime"
_MAX_FETCH_MS = 10_000.0


@dataclass
class ServedModel:
    version: str
    manifest: Manifest
    digest: str
    model: LoadedModel
    loaded_at: float

    # Seconds of feature fetch per request the version's runtime settings ask for.
    fetch_delay: float = 0.0


def fetch_delay_of(manifest: Manifest) -> float:
    """``info.runtime.feature_fetch_ms`` of a version, in seconds (0 when absent or out of
    range: a setting the replica cannot honour adds nothing)."""
    runtime = manifest.info.get(RUNTIME_INFO)
    if not isinstance(runtime, dict):
        return 0.0
    value = runtime.get("feature_fetch_ms", 0)
    if type(value) not in (int, float) or not 0 <= value <= _MAX_FETCH_MS:
        return 0.0
    return float(value) / 1000.0


#: The stages at which a replica refuses a model version (the refusal counter's label).
REFUSAL_STAGES = ("integrity", "sanity")
READINESS = ("deep", "shallow")
#: Largest body of POST /admin/gpu.
_MAX_ADMIN_BODY = 1024
#: dcgm-exporter's help text of each field the replica exports.
DCGM_FIELDS = {
    "DCGM_FI_DEV_XID_ERRORS": "Value of the last XID error encountered.",
    "DCGM_FI_DEV_FB_USED": "Framebuffer memory used (in MiB).",
    "DCGM_FI_DEV_FB_FREE": "Framebuffer memory free (in MiB).",
    "DCGM_FI_DEV_GPU_TEMP": "GPU temperature (in C).",
    "DCGM_FI_DEV_SM_CLOCK": "SM clock frequency (in MHz).",
    "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": "Current clock throttle reasons (bitmask).",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": "Total number of single-bit volatile ECC errors.",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "Total number of double-bit volatile ECC errors.",
}


class _DcgmCollector(Collector):
    """The device's fields, named and labelled as dcgm-exporter names and labels them."""

    def __init__(self, gpu: Gpu) -> None:
        self._gpu = gpu

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = self._gpu.labels()
        values = self._gpu.sample()
        for name, help_text in DCGM_FIELDS.items():
            family = GaugeMetricFamily(name, help_text, labels=list(labels))
            family.add_metric(list(labels.values()), values[name])
            yield family


@dataclass
class _Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "drillkit_replica_requests", "Requests served, by outcome.", ["outcome"], registry=r
        )
        self.latency = Histogram(
            "drillkit_replica_request_seconds",
            "Time to answer /recommend.",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.model_info = Gauge(
            "drillkit_replica_model_info",
            "1 for the model version being served.",
            ["version", "digest"],
            registry=r,
        )
        self.ready = Gauge(
            "drillkit_replica_ready", "1 when a verified model is loaded.", registry=r
        )
        self.integrity_failures = Counter(
            "drillkit_replica_integrity_failures",
            "Versions refused because the manifest, signature or a file digest failed.",
            ["version", "reason"],
            registry=r,
        )
        self.last_integrity_failure = Gauge(
            "drillkit_replica_last_integrity_failure_timestamp_seconds",
            "Unix time of the last refused version (0 = never).",
            registry=r,
        )
        self.sanity_rejections = Counter(
            "drillkit_replica_sanity_rejections",
            "Versions that verified but failed the load-time sanity gate.",
            ["version"],
            registry=r,
        )
        self.reloads = Counter(
            "drillkit_replica_reloads", "Model load attempts by outcome.", ["outcome"], registry=r
        )
        # What alerts watch: one series per stage, there at 0 from the start, so that the
        # first refusal is an increase (a labelled child born at 1 on the first refusal is
        # invisible to increase()). The counters above, by version, say which one it was.
        self.refusals = Counter(
            "drillkit_replica_model_refusals",
            "Model versions refused, by stage: integrity (manifest, signature, digests) or "
            "sanity (the load-time output check).",
            ["stage"],
            registry=r,
        )
        for stage in REFUSAL_STAGES:
            self.refusals.labels(stage=stage)
        self.cache = Counter(
            "drillkit_replica_cache_lookups",
            "Cache lookups by result: hit (answered from the cache), miss (computed), bypass "
            "(answered without the cache: Redis slow or down).",
            ["result"],
            registry=r,
        )
        for result in ("hit", "miss", "bypass"):
            self.cache.labels(result=result)
        self.device_failures = Counter(
            "drillkit_replica_device_failures",
            "Inferences the GPU failed, by what it said: out of memory, device lost, device error.",
            ["trouble"],
            registry=r,
        )
        for trouble in ("out of memory", "device lost", "device error"):
            self.device_failures.labels(trouble=trouble)
        for outcome in ("loaded", "refused"):
            self.reloads.labels(outcome=outcome)


def _reason_of(exc: ArtifactError) -> str:
    return type(exc).__name__.removesuffix("Error").lower()


class Replica:
    """The model-holding state of a replica; thread-safe loading, lock-free serving."""

    def __init__(self, config: ReplicaConfig) -> None:
        self.config = config
        self.store = ModelStore(config.store)
        self.metrics = _Metrics()
        self.served: ServedModel | None = None
        self.last_error: str | None = None
        self.last_event: dict[str, Any] | None = None
        # Recent loads and refusals, for a drill polling /info to time detection exactly.
        self.events: deque[dict[str, Any]] = deque(maxlen=64)
        self._load_lock = threading.Lock()
        self._seen: dict[str, tuple[tuple[int, int, int], ...]] = {}
        self._stop = threading.Event()
        from drillkit.stacks.recommender.index import select_device

        self.gpu = Gpu(select_device(config.device), config.name)
        self.metrics.registry.register(_DcgmCollector(self.gpu))
        self._events_lock = threading.Lock()
        self._seq = 0
        self._failing: str | None = None  # the device trouble of the episode under way
        self._throttled = 0  # hardware throttle bits the watcher saw last
        self._xid = 0  # the last Xid the watcher saw

    # -- loading ---------------------------------------------------------------------------
    def _fingerprint(self, version: str) -> tuple[tuple[int, int, int], ...]:
        """Cheap change detector for a version folder: (inode, size, mtime) of every file."""
        folder = self.store.version_dir(version)
        prints: list[tuple[int, int, int]] = []
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                st = entry.stat()
                prints.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(prints)

    def _load(self, version: str) -> ServedModel:
        """Verify, load and sanity-check one version, or raise an ArtifactError."""
        from drillkit.stacks.recommender.runtime import LoadedModel

        folder = self.store.version_dir(version)
        # Each file read once, hashed as read, and loaded from those very bytes: a file
        # changed after the check is never what serves.
        manifest, files = read_verified(folder, MODEL_FILES, key=verify_key())
        expected = manifest.metrics.get(SANITY_METRIC)
        if expected is None:
            raise SanityGateError(f"{folder}: manifest has no {SANITY_METRIC} to check against")
        try:
            model = LoadedModel.from_files(files, device=self.config.device, where=str(folder))
        except ArtifactError:
            raise
        except Exception as exc:  # a verified file that still cannot be loaded
            raise SanityGateError(f"{folder}: load failed: {type(exc).__name__}: {exc}") from exc
        result = model.sanity_check()
        floor = expected - self.config.sanity_tolerance * max(expected, 0.1)
        if not result.finite:
            raise SanityGateError(f"{folder}: model produces non-finite vectors")
        if not result.sample_recall_at_10 >= floor:
            raise SanityGateError(
                f"{folder}: sample recall@10 {result.sample_recall_at_10:.4f} is below "
                f"{floor:.4f} (manifest {expected:.4f})"
            )
        model.accelerator = self.gpu
        return ServedModel(
            version, manifest, manifest.digest, model, time.time(), fetch_delay_of(manifest)
        )

    def _refuse(self, version: str, exc: ArtifactError) -> None:
        reason = _reason_of(exc)
        self.last_error = str(exc)
        self.last_event = {
            "time": time.time(),
            "version": version,
            "outcome": "refused",
            "reason": reason,
            "error": str(exc),
        }
        self._record(self.last_event)
        stage = "sanity" if isinstance(exc, SanityGateError) else "integrity"
        self.metrics.refusals.labels(stage=stage).inc()
        if isinstance(exc, SanityGateError):
            self.metrics.sanity_rejections.labels(version).inc()
        else:
            self.metrics.integrity_failures.labels(version, reason).inc()
            self.metrics.last_integrity_failure.set(time.time())
        self.metrics.reloads.labels("refused").inc()
        log.error("%s: refused model %s (%s): %s", self.config.name, version, reason, exc)

    def _swap(self, served: ServedModel) -> None:
        old = self.served
        self.served = served
        self.gpu.hold(served.model.resident_bytes)
        if old is not None:
            self.metrics.model_info.remove(old.version, old.digest)
        self.metrics.model_info.labels(served.version, served.digest).set(1)
        self.metrics.ready.set(1)
        self.metrics.reloads.labels("loaded").inc()
        self.last_event = {"time": time.time(), "version": served.version, "outcome": "loaded"}
        self._record(self.last_event)
        log.info(
            "%s: serving model %s (digest %s, index %s, device %s)",
            self.config.name,
            served.version,
            served.digest[:12],
            served.model.index_backend,
            served.model.device,
        )

    def load_initial(self) -> None:
        """Serve CURRENT, or the newest older version that passes (last-known-good)."""
        with self._load_lock:
            for version in self.store.serving_candidates():
                self._seen[version] = self._fingerprint(version)
                try:
                    served = self._load(version)
                except ArtifactError as exc:
                    self._refuse(version, exc)
                    continue
                self._swap(served)
                if version != self.store.current():
                    log.warning(
                        "%s: CURRENT is %s but serving last-known-good %s",
                        self.config.name,
                        self.store.current(),
                        version,
                    )
                return
            log.error("%s: no model version passed verification; not ready", self.config.name)

    def reload(self, *, force: bool = False) -> dict[str, Any]:
        """Try CURRENT; keep the served model when it is refused. Returns what happened."""
        with self._load_lock:
            target = self.store.current()
            if target is None:
                return {"outcome": "no-current", "serving": self._serving_version()}
            fingerprint = self._fingerprint(target)
            served = self.served
            unchanged = (
                served is not None
                and served.version == target
                and self._seen.get(target) == fingerprint
            )
            if unchanged and not force:
                return {"outcome": "unchanged", "serving": target}
            self._seen[target] = fingerprint
            try:
                candidate = self._load(target)
            except ArtifactError as exc:
                self._refuse(target, exc)
                if self.served is None:  # nothing in memory: fall back like at start
                    self._lock_free_fallback(exclude=target)
                return {
                    "outcome": "refused",
                    "version": target,
                    "error": str(exc),
                    "serving": self._serving_version(),
                }
            if served is not None and served.digest == candidate.digest:
                return {"outcome": "unchanged", "serving": target}
            self._swap(candidate)
            return {"outcome": "loaded", "serving": target}

    def _lock_free_fallback(self, *, exclude: str) -> None:
        for version in self.store.serving_candidates():
            if version == exclude:
                continue
            try:
                served = self._load(version)
            except ArtifactError as exc:
                self._refuse(version, exc)
                continue
            self._swap(served)
            return

    def _serving_version(self) -> str | None:
        return self.served.version if self.served is not None else None

    # -- the device -------------------------------------------------------------------------
    def _record(self, event: dict[str, Any]) -> None:
        """Keep an event for ``/info``, numbered: events come from the event loop and the
        watcher thread, and a poller that goes by their number misses none of them."""
        with self._events_lock:
            event["seq"] = self._seq = self._seq + 1
            self.events.append(event)

    def _device_event(self, what: str) -> None:
        self.last_event = {"time": time.time(), "outcome": "device", "what": what}
        self._record(self.last_event)

    def device_failed(self, trouble: str, exc: BaseException) -> None:
        """An inference failed on the device: counted, and the first of an episode logged
        and kept in ``/info``'s events."""
        self.metrics.device_failures.labels(trouble=trouble).inc()
        if self._failing != trouble:
            self._failing = trouble
            log.error("%s: inference failed on the GPU (%s): %s", self.config.name, trouble, exc)
            self._device_event(f"inference failed: {trouble}")

    def device_reset(self, condition: GpuCondition) -> None:
        """Set the device's condition; a reset (mode None) also ends the episode under way,
        so that the next failure starts a new one, logged."""
        self.gpu.set_condition(condition)
        if condition.mode is None and self._failing is not None:
            self._failing = None
            self._device_event("GPU reset")

    def device_ok(self) -> None:
        """An inference ran on the device: an episode of device failures is over."""
        if self._failing is not None:
            log.warning("%s: inference runs again after %s", self.config.name, self._failing)
            self._failing = None
            self._device_event("inference runs again")

    def watch_device(self) -> None:
        """Read the device as its monitoring does: a new critical Xid, or the clocks held
        down for a hardware reason, is logged and kept in ``/info``'s events."""
        fields = self.gpu.sample()
        xid = int(fields["DCGM_FI_DEV_XID_ERRORS"])
        if xid != self._xid:
            self._xid = xid
            if xid:
                log.error("%s: the GPU reports Xid %d", self.config.name, xid)
                self._device_event(f"GPU Xid {xid}")
        throttled = int(fields["DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"]) & HARDWARE_THROTTLE
        if throttled != self._throttled:
            self._throttled = throttled
            if throttled:
                clock = fields["DCGM_FI_DEV_SM_CLOCK"]
                what = f"GPU clocks throttled ({throttle_words(throttled)}; SM {clock:.0f} MHz)"
                log.warning("%s: %s", self.config.name, what)
                self._device_event(what)
            else:
                self._device_event("GPU clocks no longer throttled")

    def watch(self) -> None:
        """Poll CURRENT and the served version's files, reloading when either changes, and
        the device."""
        while not self._stop.wait(self.config.watch_interval):
            try:
                self.watch_device()
            except Exception:  # the watcher must never die; log and keep watching
                log.exception("%s: device watcher error", self.config.name)
            try:
                target = self.store.current()
                if target is None:
                    continue
                # A version never tried has no fingerprint yet, so a new CURRENT triggers too.
                if self._seen.get(target) != self._fingerprint(target):
                    self.reload()
            except Exception:  # the watcher must never die; log and keep watching
                log.exception("%s: model watcher error", self.config.name)

    def stop(self) -> None:
        self._stop.set()


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


def _parse_int(request: Request, name: str, default: int | None) -> int | JSONResponse:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            return _bad_request(f"missing query parameter {name!r} (an integer)")
        return default
    try:
        return int(raw)
    except ValueError:
        return _bad_request(f"query parameter {name!r} must be an integer, got {raw[:40]!r}")


def _answer(
    served: ServedModel, user_id: int, k: int, found: CacheLookup, cache: ReplicaCache
) -> tuple[list[tuple[int, float]], bool]:
    """Items and scores (and whether the user was a cold start) for a request the cache was
    asked about: from the cached answer, from the cached features, or computed and written
    back."""
    cached = found.recommendation
    if cached is not None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            pairs = [(int(i), float(s)) for i, s in cached["items"]]
            return pairs, bool(cached["cold_start"])
    vector = found.vector
    if vector is not None and vector.shape == (served.model.dim,):
        rec = served.model.rank_vector(user_id, vector, k)
    else:
        vector = served.model.user_vector(user_id)
        rec = (
            served.model.recommend(user_id, k)
            if vector is None
            else served.model.rank_vector(user_id, vector, k)
        )
    pairs = list(zip(rec.items, rec.scores, strict=True))
    cache.store(
        served.digest,
        user_id,
        k,
        {"items": [[i, round(s, 6)] for i, s in pairs], "cold_start": rec.cold_start},
        vector,
    )
    return pairs, rec.cold_start


def create_app(config: ReplicaConfig) -> Starlette:
    """The replica's ASGI app; loading starts in the background when the app starts."""
    replica = Replica(config)
    metrics = replica.metrics
    cache = ReplicaCache(config.cache) if config.cache is not None else None
    activity = RecentActivity(config.features) if config.features is not None else None

    async def recommend(request: Request) -> Response:
        started = time.perf_counter()
        expires = request.headers.get(DEADLINE_HEADER)
        if expires is not None:
            try:
                late = time.time() - float(expires)
            except ValueError:
                metrics.requests.labels("client_error").inc()
                return _bad_request(f"header {DEADLINE_HEADER} must be unix seconds")
            if 0.0 < late < MAX_DEADLINE_SKEW:
                metrics.requests.labels("expired").inc()
                return JSONResponse(
                    {"error": f"the caller's deadline passed {late * 1000:.0f} ms ago"},
                    status_code=503,
                )
        user_id = _parse_int(request, "user_id", None)
        if isinstance(user_id, Response):
            metrics.requests.labels("client_error").inc()
            return user_id
        k = _parse_int(request, "k", 10)
        if isinstance(k, Response):
            metrics.requests.labels("client_error").inc()
            return k
        if not 1 <= k <= MAX_K:
            metrics.requests.labels("client_error").inc()
            return _bad_request(f"query parameter 'k' must be between 1 and {MAX_K}, got {k}")
        served = replica.served
        if served is None:
            metrics.requests.labels("unavailable").inc()
            return JSONResponse({"error": "no verified model loaded"}, status_code=503)
        headers = {
            "X-Model-Version": served.version,
            "X-Model-Digest": served.digest,
            "X-Replica": config.name,
        }
        if served.fetch_delay > 0:
            # The version's feature fetch (its runtime settings): time a real lookup of a
            # remote feature store would take, spent without holding the event loop.
            await asyncio.sleep(served.fetch_delay)
        clicked: frozenset[int] = frozenset()
        if activity is not None:
            outcome, clicked = await activity.recent(user_id)
            headers["X-Features"] = outcome
        # Ask for as many more as the user clicked: those are left out of the answer.
        wanted = k + len(clicked)
        launches = replica.gpu.launches
        try:
            device_trouble: str | None = None
            if cache is None:
                rec = served.model.recommend(user_id, wanted)
                items, cold_start = list(zip(rec.items, rec.scores, strict=True)), rec.cold_start
            else:
                found = await cache.lookup(served.digest, user_id, wanted)
                headers["X-Cache"] = found.outcome
                metrics.cache.labels(found.outcome).inc()
                items, cold_start = _answer(served, user_id, wanted, found, cache)
            if clicked:
                items = [pair for pair in items if pair[0] not in clicked][:k]
        except MissingFeatures as exc:
            metrics.requests.labels("error").inc()
            return JSONResponse({"error": str(exc)}, status_code=500, headers=headers)
        except Exception as exc:
            device_trouble = trouble_of(exc)
            if device_trouble is None:
                raise
            # Another replica can answer: 503 says "not here, not now", and the gateway
            # retries it elsewhere.
            replica.device_failed(device_trouble, exc)
            metrics.requests.labels(device_trouble.replace(" ", "_")).inc()
            return JSONResponse(
                {"error": f"the GPU failed the inference: {device_trouble}"},
                status_code=503,
                headers={**headers, "Retry-After": "1"},
            )
        if replica.gpu.launches != launches:  # not a cache hit or a cold start: it ran
            replica.device_ok()
        body = {
            "user_id": user_id,
            "items": [{"item_id": i, "score": round(s, 6)} for i, s in items],
            "model_version": served.version,
            "degraded": False,
            "cold_start": cold_start,
        }
        metrics.requests.labels("ok").inc()
        metrics.latency.observe(time.perf_counter() - started)
        return Response(
            json.dumps(body, separators=(",", ":")), media_type="application/json", headers=headers
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive", "replica": config.name})

    async def readyz(request: Request) -> Response:
        served = replica.served
        if served is None:
            return JSONResponse(
                {"ready": False, "replica": config.name, "reason": replica.last_error or "loading"},
                status_code=503,
            )
        if config.readiness == "deep":
            # One real inference on the device: a model in memory is not a working GPU.
            launches = replica.gpu.launches
            try:
                served.model.recommend(served.model.probe_user, 10)
            except MissingFeatures:
                pass  # that user's features are gone, not the device: it ran
            except Exception as exc:
                trouble = trouble_of(exc)
                if trouble is None:
                    raise
                replica.device_failed(trouble, exc)
                return JSONResponse(
                    {
                        "ready": False,
                        "replica": config.name,
                        "reason": f"deep check: the GPU failed an inference: {trouble}",
                    },
                    status_code=503,
                )
            if replica.gpu.launches != launches:
                replica.device_ok()
        return JSONResponse(
            {
                "ready": True,
                "replica": config.name,
                "model_version": served.version,
                "model_digest": served.digest,
            }
        )

    async def info(request: Request) -> Response:
        served = replica.served
        return JSONResponse(
            {
                "replica": config.name,
                "pid": os.getpid(),
                "store": str(config.store),
                "current": replica.store.current(),
                "serving": None
                if served is None
                else {
                    "version": served.version,
                    "digest": served.digest,
                    "loaded_at": served.loaded_at,
                    "device": served.model.device,
                    "index_backend": served.model.index_backend,
                    "metrics": served.manifest.metrics,
                },
                "last_event": replica.last_event,
                "events": list(replica.events),
                "cache": cache.status() if cache is not None else None,
                "features": activity.status() if activity is not None else None,
                "readiness": config.readiness,
                "gpu": replica.gpu.status(),
            }
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def refused(request: Request) -> Response | None:
        """The answer to an admin request without the right token; None when it has it."""
        if not config.admin_token:
            return JSONResponse(
                {"error": "admin endpoints are disabled (no token set)"}, status_code=403
            )
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given.encode(), config.admin_token.encode()):
            return JSONResponse({"error": "missing or wrong admin token"}, status_code=401)
        return None

    async def admin_reload(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        outcome = await run_in_threadpool(replica.reload, force=True)
        return JSONResponse(outcome)

    async def admin_gpu(request: Request) -> Response:
        if (answer := refused(request)) is not None:
            return answer
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_ADMIN_BODY:
                return _bad_request(f"body: expected at most {_MAX_ADMIN_BODY} bytes")
        try:
            condition = GpuCondition.parse(safejson.loads(body))
        except ValueError as exc:
            return _bad_request(f"body: {exc}")
        # Filling a real device's memory takes a moment: not on the event loop.
        await run_in_threadpool(replica.device_reset, condition)
        return JSONResponse(replica.gpu.status())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        def start() -> None:
            replica.load_initial()
            replica.watch()

        thread = threading.Thread(target=start, name="model-loader", daemon=True)
        thread.start()
        try:
            yield
        finally:
            replica.stop()
            if cache is not None:
                await cache.close()
            if activity is not None:
                await activity.close()

    app = Starlette(
        routes=[
            Route("/recommend", recommend),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/info", info),
            Route("/metrics", metrics_endpoint),
            Route("/admin/reload", admin_reload, methods=["POST"]),
            Route("/admin/gpu", admin_gpu, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.replica = replica
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drillkit-replica", description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="model store root")
    parser.add_argument("--name", default="replica")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    parser.add_argument("--watch-interval", type=float, default=0.5)
    parser.add_argument("--sanity-tolerance", type=float, default=0.1)
    parser.add_argument("--stack-id", default="", help="recorded for process identification")
    parser.add_argument("--cache", help="the zone's Redis, redis://HOST:PORT (cache-aside)")
    parser.add_argument("--cache-ttl", type=float, default=300.0, help="seconds")
    parser.add_argument(
        "--features", help="the event store, redis://HOST:PORT: users' recent clicks left out"
    )
    parser.add_argument("--cache-budget", type=float, default=0.02, help="seconds")
    parser.add_argument(
        "--readiness",
        choices=READINESS,
        default="deep",
        help="deep: /readyz runs one inference on the device; shallow: a model is loaded",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _limit_threads()
    config = ReplicaConfig(
        store=args.store,
        name=args.name,
        device=args.device,
        watch_interval=args.watch_interval,
        sanity_tolerance=args.sanity_tolerance,
        admin_token=admin_token(),
        cache=CacheConfig(args.cache, ttl=args.cache_ttl, budget=args.cache_budget)
        if args.cache
        else None,
        features=args.features,
        readiness=args.readiness,
    )
    from drillkit.listen import serve_asgi

    serve_asgi(
        create_app(config),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def _limit_threads() -> None:
    # Several replicas share a few cores: one intra-op thread each avoids oversubscription,
    # which would otherwise dominate tail latency.
    import torch

    torch.set_num_threads(int(os.environ.get("DRILLKIT_REPLICA_THREADS", "1")))
    with contextlib.suppress(Exception):
        import faiss

        faiss.omp_set_num_threads(int(os.environ.get("DRILLKIT_REPLICA_THREADS", "1")))


if __name__ == "__main__":
    main()
