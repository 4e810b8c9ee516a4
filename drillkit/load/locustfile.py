"""The Locust user class of drillkit's load generator for the reference stack.

This file runs ONLY inside the Locust child process that :class:`drillkit.load.driver.LoadDriver`
starts (``python -m locust -f <this file> ...``); never import it from drillkit's own process
or from a test (locust monkey-patches the interpreter with gevent). The recording and its
settings are :mod:`drillkit.load.hooks`.

``RecommendUser`` asks ``GET /recommend?user_id=<u>&k=<k>``, ``u`` drawn from a seeded RNG over
``[0, n_users)`` (a ``cold_share`` of ids above that range exercise cold start), paced by
``constant_throughput(rate / users)`` so all users together offer ``rate`` requests/s; a share
of them (``DRILLKIT_EVENT_SHARE``) are click events (``POST /events``) instead.
"""

from __future__ import annotations

import bisect
import itertools
import sys

from locust import FastHttpUser, task
from locust.user.wait_time import constant_throughput

from drillkit.load.hooks import CUMULATIVE, RUN_ID, SETTINGS, user_rng

_producer_serial = itertools.count()


class RecommendUser(FastHttpUser):
    """One virtual user asking for recommendations at ``rate / users`` requests/s."""

    network_timeout = SETTINGS.timeout
    connection_timeout = SETTINGS.timeout
    max_retries = 0
    concurrency = 1  # one greenlet per user: more pooled connections would sit idle
    wait_time = constant_throughput(SETTINGS.rate / SETTINGS.users)

    def on_start(self) -> None:
        index = getattr(self.environment.runner, "worker_index", 0)
        # Seeded per (seed, process, user) so a drill replays the same user ids.
        self._rng = user_rng(self.environment)
        self._path_k = f"&k={SETTINGS.k}"
        # Click events: this user's producer id and sequence; (producer, seq) names an event.
        self._producer = f"{RUN_ID}.{index}.{next(_producer_serial)}"
        self._seq = 0
        # The stack sets no cookies; skipping the cookie jar saves a parse per response.
        self.client.client.cookiejar = None

    @task
    def recommend(self) -> None:
        rng = self._rng
        if CUMULATIVE is None:
            user = rng.randrange(SETTINGS.n_users)
        else:  # a few users ask most of the time, as in real traffic
            user = bisect.bisect_left(CUMULATIVE, rng.random() * CUMULATIVE[-1])
        if SETTINGS.event_share and rng.random() < SETTINGS.event_share:
            self._click(user)
            return
        if SETTINGS.cold_share and rng.random() < SETTINGS.cold_share:
            user += SETTINGS.n_users  # an id the model never saw: a cold-start answer
        self.client.get(
            f"/recommend?user_id={user}{self._path_k}", name="/recommend", context={"user": user}
        )

    def _click(self, user: int) -> None:
        """Send one click event; the listener records it as an event line."""
        seq = self._seq
        self._seq += 1
        body = (
            f'{{"producer":"{self._producer}","seq":{seq},"user":{user},'
            f'"item":{self._rng.randrange(SETTINGS.n_items)}}}'
        )
        self.client.post(
            "/events",
            data=body,
            headers={"Content-Type": "application/json"},
            name="/events",
            context={"event": (self._producer, seq)},
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run this file through locust (drillkit.load.driver.LoadDriver)")
