"""The stack's event path: click events appended to a Redis stream, and what a drill reads back.

A click event is ``{"producer": P, "seq": N, "user": U, "item": I}``: ``producer`` names the
process that sent it (a load-generator user), ``seq`` counts that producer's events from 0, so
``(producer, seq)`` names one event for good. A gateway appends it to the stream
:data:`STREAM` of the ``event-store`` Redis (``XADD``) and answers 200 with the entry's id
only once Redis said it stored it: that answer is the *acknowledgement* a drill counts. How
durable an acknowledged event is depends on the store's ``appendfsync`` (Redis writes its
append-only file before it answers; ``always`` also fsyncs it first).

The store carries a marker key, :data:`MARKER`, set once when the stack first comes up: a
store that answers without it has lost its data (its files were wiped), which is what the
backup service's restore procedure watches for (:mod:`drillkit.stacks.recommender.backup`).

Standard library and ``redis`` only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MARKER",
    "MAX_PRODUCER",
    "STREAM",
    "ClickEvent",
    "event_store_options",
    "parse_event",
    "stored_events",
]

#: The stream every event is appended to, and the key whose absence says the data was lost.
STREAM = "drillkit:events"
MARKER = "drillkit:store-id"
#: Longest producer id accepted; what one looks like.
MAX_PRODUCER = 64
_PRODUCER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_MAX_ID = 1 << 62
#: How many entries one XRANGE call reads when the stream is read back.
_PAGE = 10_000


@dataclass(frozen=True, slots=True)
class ClickEvent:
    producer: str
    seq: int
    user: int
    item: int

    def fields(self) -> dict[str, str]:
        return {"p": self.producer, "s": str(self.seq), "u": str(self.user), "i": str(self.item)}


def parse_event(data: object) -> ClickEvent:
    """A click event from a request body already parsed as JSON; ValueError naming the field
    that is wrong (the body comes from any client)."""
    if not isinstance(data, dict) or set(data) != {"producer", "seq", "user", "item"}:
        raise ValueError("expected an object with exactly producer, seq, user and item")
    producer = data["producer"]
    if not isinstance(producer, str) or not _PRODUCER.fullmatch(producer):
        raise ValueError(
            f"producer: expected 1 to {MAX_PRODUCER} letters, digits and _ . : -, "
            "starting with a letter or digit"
        )
    numbers = []
    for name in ("seq", "user", "item"):
        value = data[name]
        if type(value) is not int or not 0 <= value < _MAX_ID:
            raise ValueError(f"{name}: expected a non-negative integer")
        numbers.append(value)
    return ClickEvent(producer, *numbers)


def event_store_options(appendfsync: str) -> tuple[str, ...]:
    """redis-server's options for the event store (its ``--dir`` comes apart): the append-only
    file (fsynced as ``appendfsync`` says), no RDB snapshots of its own (the backup service takes
    those), no eviction (an event store that drops events under memory pressure is not one),
    a torn last write loaded up to the last whole command, as after a crash, and every dump
    a restore hands it checked whole (``sanitize-dump-payload``)."""
    return (
        "--protected-mode", "no",
        "--appendonly", "yes",
        "--appendfsync", appendfsync,
        "--aof-load-truncated", "yes",
        "--aof-use-rdb-preamble", "no",
        "--auto-aof-rewrite-percentage", "0",
        "--save", "",
        "--maxmemory-policy", "noeviction",
        # A restore hands Redis a dump from a backup folder: check it whole before use.
        "--sanitize-dump-payload", "yes",
        "--loglevel", "warning",
    )  # fmt: skip


def stored_events(client: Any) -> Iterator[tuple[str, int, float]]:
    """Every event the store holds, oldest first, as ``(producer, seq, stored_at)``;
    ``stored_at`` is the epoch time of the entry's id (Redis's clock in milliseconds).
    ``client``: a ``redis.Redis``. Entries that are not well-formed events are skipped."""
    start = "-"
    while True:
        page = client.xrange(STREAM, min=start, max="+", count=_PAGE)
        for entry_id, fields in page:
            producer, seq = fields.get(b"p"), fields.get(b"s")
            if producer is None or seq is None:
                continue
            try:
                number = int(seq)
                millis = int(entry_id.split(b"-")[0])
            except ValueError:
                continue
            yield producer.decode("utf-8", "replace"), number, millis / 1000.0
        if len(page) < _PAGE:
            return
        start = "(" + page[-1][0].decode()
