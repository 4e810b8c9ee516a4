"""Per-request records: the raw material of every figure in a drill report.

The load generator (a Locust child process) sends one record per request over a local TCP
socket, one JSON array per line, in this order (the *wire format*)::

    [sent_at, latency_ms, status, error, degraded, model_version, model_digest, replica]

``sent_at`` is wall-clock epoch seconds when the request was sent, ``latency_ms`` the unrounded
response time, ``status`` the HTTP status or 0 when there was no response, ``error`` "" or a
short class (``timeout``, ``connect``, ``reset``, ``http``, ``other``), ``degraded`` 0/1 from
the ``X-Degraded`` header, the model version/digest from ``X-Model-Version``/``X-Model-Digest``
("" when absent), and ``replica`` from ``X-Replica``.

:class:`Records` holds them column-wise (numpy) with times relative to the drill's t=0, and
derives the per-request classes of contracts.md section 3: failed, degraded, wrong-model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

WIRE_FIELDS = (
    "sent_at",
    "latency_ms",
    "status",
    "error",
    "degraded",
    "model_version",
    "model_digest",
    "replica",
)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


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

    def to_wire(self) -> str:
        return json.dumps(
            [
                self.sent_at,
                self.latency_ms,
                self.status,
                self.error,
                int(self.degraded),
                self.model_version,
                self.model_digest,
                self.replica,
            ],
            separators=(",", ":"),
        )

    @classmethod
    def from_wire(cls, line: str | bytes) -> RequestRecord:
        s, lat, status, error, degraded, version, digest, replica = json.loads(line)
        return cls(
            float(s),
            float(lat),
            int(status),
            str(error),
            bool(degraded),
            str(version),
            str(digest),
            str(replica),
        )


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

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @classmethod
    def build(
        cls, rows: Sequence[RequestRecord], *, t0: float, verified_digests: Iterable[str]
    ) -> Records:
        """Columns from records; ``t0`` is the epoch time of the drill's t=0."""
        verified = set(verified_digests)
        order = sorted(range(len(rows)), key=lambda i: rows[i].sent_at)
        ordered = [rows[i] for i in order]
        t = np.fromiter((r.sent_at - t0 for r in ordered), dtype=np.float64, count=len(ordered))
        latency = np.fromiter((r.latency_ms for r in ordered), dtype=np.float64, count=len(ordered))
        status = np.fromiter((r.status for r in ordered), dtype=np.int64, count=len(ordered))
        failed = (status == 0) | (status >= 500)
        degraded = (
            np.fromiter((r.degraded for r in ordered), dtype=np.bool_, count=len(ordered)) & ~failed
        )
        ok = ~failed & ~degraded & (status < 400)
        wrong = (
            np.fromiter(
                (r.model_digest not in verified for r in ordered),
                dtype=np.bool_,
                count=len(ordered),
            )
            & ok
        )
        replica = np.array([r.replica for r in ordered], dtype=np.str_)
        return cls(t, latency, status, failed, degraded, wrong, replica)

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
        )
