"""Load generation: Locust in a child process, one record per request back over a socket.

:class:`LoadDriver` runs the child and owns a :class:`RecordSink`; :class:`LoadPlan` says what
to offer. ``locustfile.py`` in this package runs only inside the child: never import it here.
"""

from __future__ import annotations

from drillkit.load.driver import LoadDriver, LoadPlan, LocustSummary
from drillkit.load.sink import RecordSink, SinkStats

__all__ = ["LoadDriver", "LoadPlan", "LocustSummary", "RecordSink", "SinkStats"]
