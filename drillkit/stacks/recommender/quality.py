"""Online answer quality: a slow probe of golden users through the gateway.

Availability and latency come from the load records; they cannot see a stack that answers
fast and wrong (a poisoned model, a fallback list served as if it were the model). The
:class:`GoldenUserProbe` asks the gateway, a few times per second, for the top 10 of a
*golden* user, one whose held-out items the model store knows, and scores the answer as

    share = recall@10 of this answer / offline recall@10 of the version (its manifest)

so a stack serving the verified model scores about 1.0 and a broken one far less. Degraded
(fallback) answers are scored like any other, with their real, low recall; failed requests are
skipped (the load records count them).

One user's recall is coarse (0, 0.2, 0.4, ... with 5 golden items), so read the probe
through :meth:`GoldenUserProbe.rolling_share` or :meth:`GoldenUserProbe.mean_share`, never one
sample. The probe walks a seeded permutation of all golden users, so over a full cycle the
mean share of a healthy stack is exactly 1.0 (serving ranks as the offline evaluation did).

Only numpy and safetensors are needed: never torch in drillkit's process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np

from drillkit.errors import ArtifactError, ManifestError
from drillkit.observe.series import QualitySample
from drillkit.stacks.recommender.store import read_manifest

__all__ = ["OFFLINE_METRIC", "GoldenUserProbe", "load_golden", "top_items"]

logger = logging.getLogger("drillkit.quality")

OFFLINE_METRIC = "recall_at_10"
TABLES_NAME = "tables.safetensors"
_K = 10


def load_golden(version_dir: Path) -> tuple[dict[int, frozenset[int]], float]:
    """The golden users of a store version (user id -> held-out item ids) and the
    version's offline recall@10 from its manifest.

    Raises ManifestError when the manifest lacks a positive ``recall_at_10``, and
    ArtifactError when the tables file or its golden tables are missing.
    """
    from safetensors import safe_open

    manifest = read_manifest(version_dir)
    offline = manifest.metrics.get(OFFLINE_METRIC)
    if offline is None or not offline > 0:
        raise ManifestError(
            f"{version_dir / 'manifest.json'}: metrics.{OFFLINE_METRIC}: expected a positive "
            f"offline recall, got {offline!r}"
        )
    path = version_dir / TABLES_NAME
    try:
        with safe_open(str(path), framework="numpy") as tables:
            names = set(tables.keys())
            if not {"golden_users", "golden_items"} <= names:
                raise ArtifactError(f"{path}: golden_users/golden_items tables are missing")
            users = np.asarray(tables.get_tensor("golden_users"), dtype=np.int64)
            items = np.asarray(tables.get_tensor("golden_items"), dtype=np.int64)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: cannot read the golden tables: {exc}") from None
    if items.ndim != 2 or items.shape[0] <= int(users.max(initial=-1)):
        raise ArtifactError(f"{path}: golden_items {items.shape} does not cover golden_users")
    # golden_items is indexed by user id (the offline evaluation reads golden_items[users]).
    golden: dict[int, frozenset[int]] = {}
    for user in users.tolist():
        held_out = frozenset(int(i) for i in items[user].tolist() if i >= 0)
        if held_out:
            golden[int(user)] = held_out
    if not golden:
        raise ArtifactError(f"{path}: no golden user has held-out items")
    return golden, float(offline)


class GoldenUserProbe:
    """Asks ``gateway_url`` for golden users' top 10 at ``rate`` requests/s on a thread.

    ``version_dir`` is the model store version whose offline recall is the reference
    (normally the one the drill starts with). ``samples()`` are ``(epoch send time, share)``.
    """

    def __init__(
        self,
        gateway_url: str,
        version_dir: Path,
        rate: float = 5.0,
        seed: int = 0,
        *,
        timeout: float = 1.0,
        reference_url: str | None = None,
        reference_users: int = 300,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"rate: expected > 0, got {rate}")
        self.gateway_url = gateway_url.rstrip("/")
        self.rate = rate
        self.timeout = timeout
        self.golden, self.offline_recall = load_golden(Path(version_dir))
        users = np.array(sorted(self.golden), dtype=np.int64)
        self._order: list[int] = np.random.default_rng(seed).permutation(users).tolist()
        self._samples: list[QualitySample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.skipped = 0  # failed or unreadable answers (not scored)
        self.reference_url = reference_url.rstrip("/") if reference_url else None
        self.reference_users = reference_users
        # user -> golden hits of the verified model's own top 10 (see learn_reference)
        self.reference: dict[int, int] = {}

    def learn_reference(self) -> int:
        """Ask a replica serving the verified model (``reference_url``) for the top 10 of the
        first ``reference_users`` golden users, and keep those it gets at least one right.

        One user's recall moves in steps of 1/|golden| (0, 0.2, 0.4 ...), so a share against
        the *average* offline recall is noise (about +-0.8 per sample). Against the same user's
        hits under the verified model, a healthy stack scores exactly 1.0 on every sample,
        and the sum of hits over any window, divided by the reference's, is still online
        recall as a share of offline recall on those users. Returns how many users remain.
        """
        if self.reference_url is None:
            return 0
        url = self.reference_url + "/recommend"
        with httpx.Client(timeout=self.timeout) as client:
            for user in self._order[: self.reference_users]:
                items = self._ask(client, url, user)
                if items is None:
                    continue
                hits = len(self.golden[user].intersection(items[:_K]))
                if hits:
                    self.reference[user] = hits
        if self.reference:
            self._order = [u for u in self._order if u in self.reference]
        return len(self.reference)

    def start(self) -> None:
        """Start probing on a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("GoldenUserProbe.start() called twice")
        self._thread = threading.Thread(target=self._run, name="drillkit-quality", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop probing; returns once the thread ended (at most one request timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> GoldenUserProbe:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- results --------------------------------------------------------------------------

    def samples(self) -> list[tuple[float, float]]:
        """Every scored answer so far as ``(epoch send time, share)``."""
        with self._lock:
            return [(s.t, s.share) for s in self._samples]

    def quality_samples(self, t0: float = 0.0) -> list[QualitySample]:
        """The samples as :class:`QualitySample` with times relative to ``t0`` (epoch)."""
        with self._lock:
            return [QualitySample(s.t - t0, s.share) for s in self._samples]

    def mean_share(self, start: float, end: float) -> float | None:
        """Mean share of the samples sent in ``[start, end)`` (epoch); None if none."""
        with self._lock:
            shares = [s.share for s in self._samples if start <= s.t < end]
        return _mean(shares)

    def rolling_share(self, window_s: float, *, now: float | None = None) -> float | None:
        """Mean share over the last ``window_s`` seconds before ``now`` (default: the
        current time); None when no sample fell in it."""
        end = time.time() if now is None else now
        with self._lock:
            shares = [s.share for s in self._samples if end - window_s < s.t <= end]
        return _mean(shares)

    # -- probing --------------------------------------------------------------------------

    def score(self, user: int, items: Sequence[int]) -> float:
        """The share of one answer: recall@10 of ``items`` for ``user`` over offline recall."""
        golden = self.golden[user]
        hits = len(golden.intersection(items[:_K]))
        if user in self.reference:
            return hits / self.reference[user]
        return hits / len(golden) / self.offline_recall

    def _run(self) -> None:
        interval = 1.0 / self.rate
        url = self.gateway_url + "/recommend"
        next_at = time.monotonic()
        index = 0
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.wait(max(0.0, next_at - time.monotonic())):
                # Fixed-rate schedule; after a slow answer, skip the missed ticks, no burst.
                next_at = max(next_at + interval, time.monotonic())
                user = self._order[index % len(self._order)]
                index += 1
                sent = time.time()
                self.sent += 1
                items = self._ask(client, url, user)
                if items is None:
                    self.skipped += 1
                    continue
                sample = QualitySample(sent, self.score(user, items))
                with self._lock:
                    self._samples.append(sample)

    def _ask(self, client: httpx.Client, url: str, user: int) -> list[int] | None:
        return top_items(client, url, user)


def top_items(
    client: httpx.Client, url: str, user: int, *, timeout: float | None = None
) -> list[int] | None:
    """The item ids of ``url``'s top 10 for ``user`` (a ``/recommend`` endpoint), or None when
    it did not answer 200 with a readable list (a failed request is not scored). ``timeout``
    None: the client's own."""
    params = {"user_id": user, "k": _K}
    try:
        if timeout is None:
            response = client.get(url, params=params)
        else:
            response = client.get(url, params=params, timeout=timeout)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        return [int(item["item_id"]) for item in response.json()["items"]]
    except (ValueError, KeyError, TypeError):
        return None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
