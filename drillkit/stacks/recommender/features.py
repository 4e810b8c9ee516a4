"""The feature updater: click events turned into each user's recent-activity features.

It follows the event stream (:data:`~drillkit.stacks.recommender.events.STREAM`) with
``XREAD`` and keeps, for each user, the items of their newest clicks in the list
``recent:<user>`` (newest first, at most ``--keep``) in the same Redis. Replicas read that list
for every request and leave those items out of the answer (nobody wants recommended what they
just clicked).

The event store's marker key (:data:`~drillkit.stacks.recommender.events.MARKER`) says whose
data it is: when it changes (the store was wiped and restored from a backup, which sets a new
one) the features are rebuilt from the start of the stream; while it is missing (wiped, not yet
restored) nothing is processed.

The features are **stale** while the store cannot be read, while it holds no marker, or while
the updater is more than ``--stale-after`` seconds of events behind the stream's newest entry.
``GET /status`` has ``state``, ``lag_s``, ``processed`` and ``stale`` (every stale interval,
``[start, end, noticed]`` epoch seconds: from the end of the last pass that worked, ``end``
null while it lasts, ``noticed`` when the updater found out); ``GET /metrics`` has
``drillkit_features_lag_seconds`` and ``drillkit_features_stale``.

Run as ``python -m drillkit.stacks.recommender.features --events redis://H:P``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from typing import Any

from drillkit.stacks.recommender.events import MARKER, STREAM

__all__ = ["RECENT_KEEP", "FeatureUpdater", "main", "recent_key"]

log = logging.getLogger("drillkit.features")

#: Items kept per user, and how far behind the stream the features may be before they are stale.
RECENT_KEEP = 20
STALE_AFTER = 1.0
_BATCH = 1000
_BLOCK_MS = 200
_KEEP_INTERVALS = 1000


def recent_key(user: int) -> str:
    return f"recent:{user}"


def _batches(keys: Any, size: int = 500) -> Any:
    batch: list[Any] = []
    for key in keys:
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _millis(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-")[0])


class FeatureUpdater:
    """The updater's loop; :meth:`step` is one pass (what the tests drive)."""

    def __init__(self, client: Any, *, keep: int = RECENT_KEEP, stale_after: float = STALE_AFTER):
        self.client = client
        self.keep = keep
        self.stale_after = stale_after
        self.cursor = "0-0"
        self.store_id: bytes | None = None
        self.processed = 0
        self.rebuilds = 0
        self.lag_s = 0.0
        self.state = "starting"
        self._lock = threading.Lock()
        self._stale: list[list[float | None]] = []
        self._last_ok = time.time()

    def _mark(self, stale: bool, state: str, *, since: float | None = None) -> None:
        now = time.time()
        with self._lock:
            self.state = state
            open_interval = bool(self._stale) and self._stale[-1][1] is None
            if stale and not open_interval:
                self._stale.append([now if since is None else since, None, now])
                del self._stale[:-_KEEP_INTERVALS]
            elif not stale and open_interval:
                self._stale[-1][1] = now

    def step(self, block_ms: int = _BLOCK_MS) -> None:
        import redis

        try:
            marker = self.client.get(MARKER)
            if marker is None:
                self._mark(True, "store lost: waiting for its restore", since=self._last_ok)
                time.sleep(block_ms / 1000)
                return
            if marker != self.store_id:
                if self.store_id is not None:
                    log.warning("the event store was replaced (restored?): rebuilding features")
                    self.rebuilds += 1
                    # What is left of the old features would be counted twice.
                    for keys in _batches(self.client.scan_iter(match="recent:*", count=1000)):
                        self.client.delete(*keys)
                self.store_id = marker
                self.cursor = "0-0"
            found = self.client.xread({STREAM: self.cursor}, count=_BATCH, block=block_ms)
            entries = found[0][1] if found else []
            if entries:
                with self.client.pipeline(transaction=False) as pipe:
                    for _, fields in entries:
                        try:  # an entry that is not an event is skipped, not retried forever
                            user, item = int(fields[b"u"]), int(fields[b"i"])
                        except (KeyError, ValueError):
                            continue
                        key = recent_key(user)
                        pipe.lpush(key, item)
                        pipe.ltrim(key, 0, self.keep - 1)
                    pipe.execute()
                self.cursor = entries[-1][0].decode()
                self.processed += len(entries)
            newest = self.client.xrevrange(STREAM, count=1)
        except (redis.RedisError, ValueError) as exc:
            # Stale from the end of the last pass that worked, not from when the failure
            # surfaced (a call to a dead store can take a while to fail).
            self._mark(True, f"store unreachable: {type(exc).__name__}", since=self._last_ok)
            time.sleep(block_ms / 1000)
            return
        behind = bool(newest) and newest[0][0].decode() != self.cursor
        self.lag_s = (
            max(0.0, (_millis(newest[0][0]) - _millis(self.cursor)) / 1000.0) if behind else 0.0
        )
        stale = self.lag_s > self.stale_after
        self._mark(stale, "behind" if stale else "up to date")
        self._last_ok = time.time()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "time": time.time(),
                "state": self.state,
                "cursor": self.cursor,
                "processed": self.processed,
                "rebuilds": self.rebuilds,
                "lag_s": self.lag_s,
                "stale": [list(i) for i in self._stale],
            }

    def metrics(self) -> str:
        with self._lock:
            stale = 1 if self._stale and self._stale[-1][1] is None else 0
        return (
            "# HELP drillkit_features_lag_seconds How far the features are behind the newest "
            "event.\n# TYPE drillkit_features_lag_seconds gauge\n"
            f"drillkit_features_lag_seconds {self.lag_s!r}\n"
            "# HELP drillkit_features_stale 1 while the features are stale.\n"
            "# TYPE drillkit_features_stale gauge\n"
            f"drillkit_features_stale {stale}\n"
            "# HELP drillkit_features_events_total Events turned into features.\n"
            "# TYPE drillkit_features_events_total counter\n"
            f"drillkit_features_events_total {self.processed}\n"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="drillkit-features", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--events", required=True, metavar="redis://HOST:PORT")
    parser.add_argument("--keep", type=int, default=RECENT_KEEP)
    parser.add_argument("--stale-after", type=float, default=STALE_AFTER)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from drillkit.listen import http_server, status_handler
    from drillkit.stacks.recommender.backup import redis_client

    try:
        client = redis_client(args.events)
    except ValueError as exc:
        raise SystemExit(f"features: error: {exc}") from None
    updater = FeatureUpdater(client, keep=args.keep, stale_after=args.stale_after)
    handler = status_handler(updater.status, updater.metrics)
    server = http_server(handler, host=args.host, port=args.port, program="features")
    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
    )
    serving.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        updater.step()
    with contextlib.suppress(Exception):
        client.close()


if __name__ == "__main__":
    main()
