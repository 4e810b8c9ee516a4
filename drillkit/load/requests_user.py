"""A locustfile made of the scenario's ``load.requests``: weighted HTTP requests, for a team
without a locustfile of its own.

Runs ONLY inside the Locust child process that :class:`drillkit.load.driver.LoadDriver`
starts (``DRILLKIT_REQUESTS_FILE`` names the list, as JSON); recording and pacing are
:mod:`drillkit.load.hooks`.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import sys
from typing import Any

from locust import FastHttpUser, task
from locust.user.wait_time import constant_throughput

from drillkit.load.hooks import SETTINGS, user_rng


def _requests() -> list[dict[str, Any]]:
    try:
        with open(os.environ["DRILLKIT_REQUESTS_FILE"], encoding="utf-8") as handle:
            items = json.load(handle)
    except (KeyError, OSError, ValueError) as exc:
        raise SystemExit(f"drillkit requests_user: bad DRILLKIT_REQUESTS_FILE: {exc}") from None
    if not isinstance(items, list) or not items:
        raise SystemExit("drillkit requests_user: DRILLKIT_REQUESTS_FILE holds no request")
    return items


REQUESTS = _requests()
CUMULATIVE = list(itertools.accumulate(int(r.get("weight") or 1) for r in REQUESTS))


class RequestsUser(FastHttpUser):
    """One virtual user sending the scenario's requests, drawn by weight, at ``rate / users``
    requests/s."""

    network_timeout = SETTINGS.timeout
    connection_timeout = SETTINGS.timeout
    max_retries = 0
    concurrency = 1
    wait_time = constant_throughput(SETTINGS.rate / SETTINGS.users)

    def on_start(self) -> None:
        self._rng = user_rng(self.environment)

    @task
    def send(self) -> None:

        pick = bisect.bisect_left(CUMULATIVE, self._rng.random() * CUMULATIVE[-1])
        request = REQUESTS[min(pick, len(REQUESTS) - 1)]
        self.client.request(
            request.get("method") or "GET",
            request["path"],
            data=request.get("body"),
            headers=request.get("headers") or None,
            name=request.get("name") or request["path"],
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run this file through locust (drillkit.load.driver.LoadDriver)")
