"""Loaded by Locust beside a team's own locustfile (``-f attach.py,THEIRS.py``): drillkit's
recording and pacing (:mod:`drillkit.load.hooks`) attached through Locust's event hooks, the
team's file run unchanged. It defines no user class of its own.

Runs ONLY inside the Locust child process that :class:`drillkit.load.driver.LoadDriver` starts.
"""

from __future__ import annotations

import drillkit.load.hooks  # noqa: F401  (registers the listeners)
