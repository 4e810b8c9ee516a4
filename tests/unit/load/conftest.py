"""What the load tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drillkit.load.sink import RecordSink


@pytest.fixture
def sink() -> Iterator[RecordSink]:
    """A record sink listening on 127.0.0.1, stopped after the test."""
    s = RecordSink()
    s.start()
    yield s
    s.stop()
