"""A fake model-server replica and a helper to serve any ASGI app from a background thread.

The fake speaks the replica HTTP contract (``docs/http.md``) with no model behind it, and
a test switches its behaviour at runtime through :attr:`FakeReplica.mode`:

- ``healthy``: ``/readyz`` 200, ``/recommend`` 200;
- ``not_ready``: ``/readyz`` 503, ``/recommend`` 503;
- ``error``: ``/readyz`` 200 (the model is loaded), ``/recommend`` 500;
- ``slow``: ``/readyz`` 200, ``/recommend`` answers after :attr:`FakeReplica.slow_seconds`;
- ``hang``: both ``/readyz`` and ``/recommend`` answer after ``slow_seconds`` (a stopped
  process or a network black hole, as far as timeouts can tell);
- ``chunked``: like ``healthy`` but the body goes out with chunked transfer-encoding.

``stop()`` shuts the server down so its port refuses connections; ``start()`` brings it back
on the same port. A negative ``user_id`` gets a 422, as a real replica would answer a bad one.

Also runnable on its own, for benchmarks:
``python -m tests.unit.stacks.recommender.fake_replica --port 41001``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

Mode = Literal["healthy", "not_ready", "error", "slow", "hang", "chunked"]


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadedServer:
    """Serve an ASGI app with uvicorn on 127.0.0.1 from a daemon thread; restartable."""

    def __init__(
        self,
        app: ASGIApp,
        port: int | None = None,
        *,
        lifespan: Literal["auto", "on", "off"] = "off",
    ) -> None:
        self.app = app
        self.port = port if port is not None else free_port()
        self.lifespan = lifespan
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Rebinding the port of a server just stopped must not fail on TIME_WAIT leftovers.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        config = uvicorn.Config(
            self.app,
            lifespan=self.lifespan,
            log_config=None,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        end = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > end:
                sock.close()
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.005)
        self._server, self._thread = server, thread

    def request_stop(self) -> None:
        """Ask the server to shut down without waiting (see :func:`stop_all`)."""
        if self._server is not None:
            self._server.should_exit = True

    def stop(self, timeout: float = 10.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"server on port {self.port} did not stop")
        self._server = self._thread = None

    @property
    def running(self) -> bool:
        return self._server is not None


def stop_all(servers: list[ThreadedServer]) -> None:
    """Stop several servers at once: uvicorn notices ``should_exit`` only every 0.1 s."""
    for server in servers:
        server.request_stop()
    for server in servers:
        server.stop()


class FakeReplica(ThreadedServer):
    """A replica whose behaviour a test switches at runtime (see the module docstring)."""

    def __init__(
        self,
        name: str = "replica",
        *,
        port: int | None = None,
        model_version: str = "v1",
        model_digest: str = "sha256:" + "ab" * 32,
    ) -> None:
        self.name = name
        self.mode: Mode = "healthy"
        self.slow_seconds = 0.5
        self.model_version = model_version
        self.model_digest = model_digest
        # Plain ints bumped on the server thread; the GIL makes += safe enough for counting.
        self.recommend_hits = 0
        self.readyz_hits = 0
        self.last_deadline: str | None = None  # X-Drillkit-Deadline of the last /recommend
        app = Starlette(
            routes=[
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
                Route("/recommend", self._recommend),
            ]
        )
        super().__init__(app, port)

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def _readyz(self, request: Request) -> Response:
        self.readyz_hits += 1
        if self.mode == "hang":
            await asyncio.sleep(self.slow_seconds)
        if self.mode == "not_ready":
            return JSONResponse({"ready": False, "reason": "no verified model"}, status_code=503)
        return JSONResponse(
            {"ready": True, "model_version": self.model_version, "model_digest": self.model_digest}
        )

    async def _recommend(self, request: Request) -> Response:
        self.recommend_hits += 1
        self.last_deadline = request.headers.get("x-drillkit-deadline")
        mode = self.mode
        if mode == "not_ready":
            return JSONResponse({"error": "not ready"}, status_code=503)
        if mode == "error":
            return JSONResponse({"error": "injected failure"}, status_code=500)
        if mode in ("slow", "hang"):
            await asyncio.sleep(self.slow_seconds)
        try:
            user_id = int(request.query_params["user_id"])
            k = int(request.query_params.get("k", "10"))
        except (KeyError, ValueError):
            return JSONResponse({"error": "bad parameters"}, status_code=422)
        if user_id < 0 or not 1 <= k <= 1000:
            return JSONResponse({"error": "user_id must be >= 0"}, status_code=422)
        body = {
            "user_id": user_id,
            "items": [{"item_id": i, "score": 1.0 - i / 1000} for i in range(k)],
            "model_version": self.model_version,
            "degraded": False,
            "cold_start": False,
            "replica": self.name,
        }
        encoded = json.dumps(body, separators=(",", ":")).encode()
        headers = {"X-Model-Version": self.model_version, "X-Model-Digest": self.model_digest}
        if mode == "chunked":

            async def pieces() -> AsyncIterator[bytes]:
                for i in range(0, len(encoded), 7):
                    yield encoded[i : i + 7]

            return StreamingResponse(pieces(), media_type="application/json", headers=headers)
        return Response(encoded, media_type="application/json", headers=headers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="replica")
    args = parser.parse_args()
    replica = FakeReplica(args.name, port=args.port)
    uvicorn.run(
        replica.app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning"
    )


if __name__ == "__main__":
    main()
