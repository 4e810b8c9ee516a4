"""Per-request records: the raw material of every figure in a drill report.

The load generator (a Locust child process) sends one record per request over a local TCP
socket, one JSON array per line, in this order (the *wire format*)::

    [sent_at, latency_ms, status, error, degraded, model_version, model_digest, replica,
     zone, cache, user]

``sent_at`` is wall-clock epoch seconds when the request was sent, ``latency_ms`` the unrounded
response time, ``status`` the HTTP status or 0 when there was no response, ``error`` "" or a
short class (``timeout``, ``connect``, ``reset``, ``http``, ``other``), ``degraded`` 0/1 from
the ``X-Degraded`` header, the model version/digest from ``X-Model-Version``/``X-Model-Digest``
("" when absent), ``replica`` from ``X-Replica``, ``zone`` from ``X-Zone`` (the zone an
edge load balancer sent the request to) and ``cache`` from ``X-Cache`` (``hit``, ``miss``,
``bypass``; "" without a cache tier) and ``user`` the user id the request asked for (-1 when
the generator did not say): what a rollout's exposure counts in distinct users. A line of the
first wave's eight fields, or of ten (before ``user``), still reads.

:class:`Records` holds them column-wise (numpy) with times relative to the drill's t=0, and
derives the per-request classes of ``docs/report.md`` (definitions): failed, degraded,
wrong-model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drillkit import safejson

WIRE_FIELDS = (
    "sent_at",
    "latency_ms",
    "status",
    "error",
    "degraded",
    "model_version",
    "model_digest",
    "replica",
    "zone",
    "cache",
    "user",
)
#: What ``X-Cache`` may say; anything else is recorded as "".
CACHE_OUTCOMES = frozenset({"hit", "miss", "bypass"})

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


#: The fields of a first-wave line (before ``zone`` and ``cache``), and of one before ``user``.
_FIRST_WAVE_FIELDS = 8
_NO_USER_FIELDS = 10
#: ``user`` of a request whose user id the generator did not report.
NO_USER = -1
_MAX_USER = 1 << 62

#: The error classes a load generator reports.
ERRORS = frozenset({"", "timeout", "connect", "reset", "http", "other"})
#: Longest model version, digest or replica name accepted from the wire.
MAX_TEXT = 128
#: A latency above an hour is not one a drill measured.
MAX_LATENCY_MS = 3_600_000.0

#: ``status`` of a request that got no usable response (timeout, connection failure).
NO_RESPONSE = 0
#: The lowest status that counts as a failure: the server's own errors.
FAILED_STATUS = 500

_encode = json.JSONEncoder(separators=(",", ":")).encode


def is_failed(status: int) -> bool:
    """The one rule for a failed request: no usable response, or a 5xx status."""
    return status == NO_RESPONSE or status >= FAILED_STATUS


def wire_tail(
    error: str,
    degraded: bool,
    version: str,
    digest: str,
    replica: str,
    zone: str = "",
    cache: str = "",
) -> str:
    """The end of a wire line after the status: a handful of distinct values per drill, so
    the load generator encodes each once and keeps it."""
    return _encode([error, 1 if degraded else 0, version, digest, replica, zone, cache])[1:-1]


def wire_line(
    sent_at: float, latency_ms: float, status: int, tail: str, user: int = NO_USER
) -> str:
    """One wire line: ``repr`` of a float is what JSON prints for it."""
    return f"[{sent_at!r},{latency_ms!r},{status},{tail},{user}]"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the load generator saw it."""

    sent_at: float
    latency_ms: float
    status: int
    error: str = ""
    degraded: bool = False
    model_version: str = ""
    model_digest: str = ""
    replica: str = ""
    zone: str = ""
    cache: str = ""
    user: int = NO_USER

    def to_wire(self) -> str:
        tail = wire_tail(self.error, self.degraded, self.model_version, self.model_digest,
                         self.replica, self.zone, self.cache)  # fmt: skip
        return wire_line(self.sent_at, self.latency_ms, self.status, tail, self.user)

    @classmethod
    def from_wire(cls, line: str | bytes) -> RequestRecord:
        """Parse one wire line; ValueError for anything a load generator would not send
        (a record is read from a socket: every field is checked, nothing is coerced)."""
        fields = safejson.loads(line)
        if type(fields) is not list or len(fields) not in (
            _FIRST_WAVE_FIELDS,
            _NO_USER_FIELDS,
            len(WIRE_FIELDS),
        ):
            raise ValueError(f"not an array of the {len(WIRE_FIELDS)} record fields")
        if len(fields) == _FIRST_WAVE_FIELDS:
            fields = [*fields, "", ""]
        if len(fields) == _NO_USER_FIELDS:
            fields = [*fields, NO_USER]
        s, lat, status, error, degraded, version, digest, replica, zone, cache, user = fields
        if (
            type(s) is not float
            or not 0.0 < s < 1e11
            or type(lat) not in (float, int)
            or not 0.0 <= lat <= MAX_LATENCY_MS
            or type(status) is not int
            or not 0 <= status <= 999
            or error not in ERRORS
            or type(degraded) is not int
            or degraded not in (0, 1)
            or not all(
                type(v) is str and len(v) <= MAX_TEXT for v in (version, digest, replica, zone)
            )
            or (cache != "" and cache not in CACHE_OUTCOMES)
            or type(user) is not int
            or not NO_USER <= user < _MAX_USER
        ):
            raise ValueError("a field out of its range")
        return cls(
            s, float(lat), status, error, degraded == 1, version, digest, replica, zone, cache, user
        )


#: The first byte of an event line: ``E[producer, seq, sent_at, latency_ms, status]``, one
#: per click event the generator sent (``POST /events``), kept apart from the requests.
EVENT_PREFIX = "E"
_EVENT_FIELDS = 5
_MAX_PRODUCER = 64


def event_line(producer: str, seq: int, sent_at: float, latency_ms: float, status: int) -> str:
    return f"{EVENT_PREFIX}[{_encode(producer)},{seq},{sent_at!r},{latency_ms!r},{status}]"


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One click event as the load generator saw it; ``acked`` when the stack answered 200
    (it said it stored the event)."""

    producer: str
    seq: int
    sent_at: float
    latency_ms: float
    status: int

    @property
    def acked(self) -> bool:
        return self.status == 200

    @property
    def done_at(self) -> float:
        """When the answer arrived (epoch seconds)."""
        return self.sent_at + self.latency_ms / 1000.0

    def to_wire(self) -> str:
        return event_line(self.producer, self.seq, self.sent_at, self.latency_ms, self.status)

    @classmethod
    def from_wire(cls, line: str | bytes) -> EventRecord:
        """Parse one event line (with its prefix); ValueError for anything else."""
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        if not text.startswith(EVENT_PREFIX):
            raise ValueError("not an event line")
        fields = safejson.loads(text[len(EVENT_PREFIX) :])
        if type(fields) is not list or len(fields) != _EVENT_FIELDS:
            raise ValueError(f"not an array of the {_EVENT_FIELDS} event fields")
        producer, seq, sent_at, latency, status = fields
        if (
            type(producer) is not str
            or not 0 < len(producer) <= _MAX_PRODUCER
            or type(seq) is not int
            or not 0 <= seq < _MAX_USER
            or type(sent_at) is not float
            or not 0.0 < sent_at < 1e11
            or type(latency) not in (float, int)
            or not 0.0 <= latency <= MAX_LATENCY_MS
            or type(status) is not int
            or not 0 <= status <= 999
        ):
            raise ValueError("a field out of its range")
        return cls(producer, seq, sent_at, float(latency), status)


@dataclass(frozen=True)
class Records:
    """Column-wise records, sorted by send time, times in seconds from t=0."""

    t: FloatArray  # send time relative to t=0
    latency_ms: FloatArray
    status: IntArray
    failed: BoolArray  # timed out, connection failed, or status >= 500
    degraded: BoolArray  # a successful fallback answer
    wrong_model: BoolArray  # successful, not degraded, digest not among the verified ones
    replica: npt.NDArray[np.str_]
    zone: npt.NDArray[np.str_] | None = None  # None: no request went through an edge
    cache: npt.NDArray[np.str_] | None = None  # None: no request was answered by a cache tier
    digest: npt.NDArray[np.str_] | None = None  # model digest of each answer; None: none said
    user: IntArray | None = None  # user id of each request; None: the generator said none

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @classmethod
    def build(
        cls, rows: Sequence[RequestRecord], *, t0: float, verified_digests: Iterable[str] | None
    ) -> Records:
        """Columns from records; ``t0`` is the epoch time of the drill's t=0. With
        ``verified_digests`` None the stack serves no versioned model: nothing is wrong-model."""
        verified = set(verified_digests) if verified_digests is not None else None
        order = sorted(range(len(rows)), key=lambda i: rows[i].sent_at)
        ordered = [rows[i] for i in order]
        t = np.fromiter((r.sent_at - t0 for r in ordered), dtype=np.float64, count=len(ordered))
        latency = np.fromiter((r.latency_ms for r in ordered), dtype=np.float64, count=len(ordered))
        status = np.fromiter((r.status for r in ordered), dtype=np.int64, count=len(ordered))
        failed = (status == NO_RESPONSE) | (status >= FAILED_STATUS)  # is_failed, per column
        degraded = (
            np.fromiter((r.degraded for r in ordered), dtype=np.bool_, count=len(ordered)) & ~failed
        )
        ok = ~failed & ~degraded & (status < 400)
        if verified is None:
            wrong = np.zeros(len(ordered), dtype=np.bool_)
        else:
            wrong = (
                np.fromiter(
                    (r.model_digest not in verified for r in ordered),
                    dtype=np.bool_,
                    count=len(ordered),
                )
                & ok
            )
        replica = np.array([r.replica for r in ordered], dtype=np.str_)
        zone = (
            np.array([r.zone for r in ordered], dtype=np.str_)
            if any(r.zone for r in ordered)
            else None
        )
        cache = (
            np.array([r.cache for r in ordered], dtype=np.str_)
            if any(r.cache for r in ordered)
            else None
        )
        digest = (
            np.array([r.model_digest for r in ordered], dtype=np.str_)
            if any(r.model_digest for r in ordered)
            else None
        )
        user = np.fromiter((r.user for r in ordered), dtype=np.int64, count=len(ordered))
        return cls(
            t,
            latency,
            status,
            failed,
            degraded,
            wrong,
            replica,
            zone,
            cache,
            digest,
            user if (user != NO_USER).any() else None,
        )

    def window(self, start: float, end: float) -> Records:
        """The records sent in [start, end)."""
        lo, hi = np.searchsorted(self.t, [start, end], side="left")
        return Records(
            self.t[lo:hi],
            self.latency_ms[lo:hi],
            self.status[lo:hi],
            self.failed[lo:hi],
            self.degraded[lo:hi],
            self.wrong_model[lo:hi],
            self.replica[lo:hi],
            None if self.zone is None else self.zone[lo:hi],
            None if self.cache is None else self.cache[lo:hi],
            None if self.digest is None else self.digest[lo:hi],
            None if self.user is None else self.user[lo:hi],
        )
