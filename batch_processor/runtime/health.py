"""The health and metrics endpoint: ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP.

* ``/healthz``: 200 while the main loop makes progress, 503 when it has stalled.
* ``/readyz``: 200 when MongoDB answers, the batch directory is writable and the classifier is
  configured; 503 with the problems otherwise.
* ``/metrics``: the Prometheus text format (prometheus-client).

HTTP is parsed and answered by aiohttp's server (already a dependency, through the openai SDK's
transport): request lines and header fields over 8 KiB are refused with a 4xx, one request per
connection (no keep-alive to hold open). The container image binds the port to 0.0.0.0, so it
expects hostile clients, and a probe must be answered whatever they do. aiohttp has no deadline
for a request head and no bound on connections, so :class:`Admission` adds both in front of it:

* a client gets ``request_timeout`` seconds to send its request head, and as long again to take
  the reply once it is computed (a slow sender, an idle socket or a reader that never reads is
  closed);
* past ``max_connections`` connections waiting for their request head, a new one makes room:
  **the oldest connection that has waited a second without finishing its request head is
  closed** (see :meth:`Admission.admit`; all connections together are bounded by
  ``HARD_LIMIT_FACTOR`` times as many, for the file descriptors). A probe sends its
  request at once and is answered in milliseconds, so slowloris clients and idle floods only
  ever evict each other; closing the newest instead (the old policy) let 64 slow sockets from
  one client fail 97 % of the probes.
* ``/metrics`` is collected at most once a second and ``/readyz`` checked once for all the
  requests that arrive while it is being checked, so a flood of them costs one collection or
  one MongoDB ping at a time, not one each.

A per-client-address bound is not used: probes come from the same address as the traffic
(loopback, a node's kubelet), and eviction already keeps one client from starving another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from batch_processor.errors import ConfigurationError
from batch_processor.runtime.metrics import registry_for
from batch_processor.runtime.telemetry import Telemetry

log = structlog.get_logger("batch_processor.runtime.health")
MAX_FIELD = 8 * 1024  # bytes of a request line or a header field (a GET needs a few hundred)
#: All connections together may number this many times ``max_connections`` at the most.
HARD_LIMIT_FACTOR = 8
#: A connection waiting for its request head this long may be closed to make room.
EVICT_AFTER = 1.0
#: Seconds a collected /metrics answer is served to the requests that follow it.
METRICS_FRESH_FOR = 1.0
ReadyCheck = Callable[[], Awaitable[list[str]]]
#: aiohttp logs every malformed request with its traceback: from a hostile client that would
#: be a log line per garbage connection. They are answered 400 and closed, never logged.
_QUIET = logging.getLogger("batch_processor.runtime.health.http")
_QUIET.propagate = False
_QUIET.addHandler(logging.NullHandler())


@dataclass(slots=True)
class _Connection:
    opened: float
    timer: asyncio.TimerHandle
    answering: bool = False  # its request head arrived: it is being answered


@dataclass(slots=True)
class Admission:
    """Which connections the health port keeps open (see the module docstring)."""

    limit: int
    timeout: float
    open: dict[asyncio.Transport, _Connection] = field(default_factory=dict)
    evicted: int = 0
    clock: Callable[[], float] = time.monotonic

    def admit(self, transport: asyncio.Transport) -> None:
        """A new connection: make room if a bound is reached, start its head deadline.

        Connections still waiting for their request head are what a slow or idle client holds:
        past ``limit`` of them, the oldest that has waited ``EVICT_AFTER`` seconds is closed. A
        burst of new connections (a probe among them, its request not read yet) is never
        evicted for another; connections being answered finish within the deadline. All
        together are bounded by ``HARD_LIMIT_FACTOR`` times the limit (file descriptors):
        there, the oldest waiting one makes room, or the new one is closed at once.
        """
        now = self.clock()
        waiting = [(c.opened, t) for t, c in self.open.items() if not c.answering]
        # One pass for the oldest: this runs on every accept, under a flood too.
        oldest = min(waiting, key=lambda pair: pair[0], default=None)
        victim: asyncio.Transport | None = None
        if len(self.open) >= self.limit * HARD_LIMIT_FACTOR:
            if oldest is None:
                transport.close()
                return
            victim = oldest[1]
        elif oldest is not None and len(waiting) >= self.limit and now - oldest[0] >= EVICT_AFTER:
            victim = oldest[1]
        if victim is not None:
            self.evicted += 1
            self.close(victim)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(self.timeout, self.close, transport)
        self.open[transport] = _Connection(now, timer)

    def answering(self, transport: asyncio.Transport | None) -> None:
        """Its request head arrived: no deadline while the answer is computed (bounded)."""
        connection = self.open.get(transport) if transport is not None else None
        if connection is not None and not connection.answering:
            connection.answering = True
            connection.timer.cancel()

    def replying(self, transport: asyncio.Transport | None) -> None:
        """Its answer is ready: it gets ``timeout`` seconds to take it, then it is cut off."""
        connection = self.open.get(transport) if transport is not None else None
        if transport is not None and connection is not None:  # both, for the type checker
            connection.timer.cancel()
            connection.timer = asyncio.get_running_loop().call_later(
                self.timeout, self.close, transport, True
            )

    def close(self, transport: asyncio.Transport, abort: bool = False) -> None:
        """Close a connection now (its protocol's ``connection_lost`` then forgets it).

        ``abort`` for a reply the client never took: closing would wait for it to be read.
        """
        self.forget(transport)
        if abort:
            transport.abort()
        else:
            transport.close()

    def forget(self, transport: asyncio.Transport) -> None:
        """A connection is gone."""
        connection = self.open.pop(transport, None)
        if connection is not None:
            connection.timer.cancel()

    def close_all(self) -> None:
        """Close every connection (the server stops)."""
        for transport in list(self.open):
            self.close(transport)


class _Admitted(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind :class:`Admission`."""

    def __init__(self, inner: asyncio.Protocol, admission: Admission) -> None:
        self._inner = inner
        self._admission = admission
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a TCP server's connections are
        self._admission.admit(transport)
        if transport.is_closing():
            return
        self._transport = transport
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._transport is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._transport is not None else None

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._admission.forget(self._transport)
            self._inner.connection_lost(exc)


class _Shared:
    """A value computed once for all concurrent callers, and kept ``fresh_for`` seconds."""

    def __init__(self, compute: Callable[[], Awaitable[bytes]], fresh_for: float) -> None:
        self._compute = compute
        self._fresh_for = fresh_for
        self._value: bytes | None = None
        self._at = 0.0
        self._running: asyncio.Future[bytes] | None = None

    async def get(self) -> bytes:
        if self._value is not None and time.monotonic() - self._at < self._fresh_for:
            return self._value
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._compute())
            self._running.add_done_callback(self._keep)
        # Shielded: a client that goes away does not cancel the others' answer.
        return await asyncio.shield(self._running)

    def _keep(self, done: asyncio.Future[bytes]) -> None:
        if not done.cancelled() and done.exception() is None:
            self._value, self._at = done.result(), time.monotonic()

    async def aclose(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.cancel()
            await asyncio.gather(self._running, return_exceptions=True)


class HealthServer:
    """Serves the three endpoints for one process."""

    def __init__(
        self,
        telemetry: Telemetry,
        ready_check: ReadyCheck,
        *,
        stall_after: float,
        request_timeout: float = 5.0,
        max_connections: int = 256,
    ) -> None:
        self._telemetry = telemetry
        self._registry = registry_for(telemetry)
        self._ready_check = ready_check
        self._stall_after = stall_after
        self.admission = Admission(max_connections, request_timeout)
        self._metrics = _Shared(
            lambda: asyncio.to_thread(generate_latest, self._registry), METRICS_FRESH_FOR
        )
        # Readiness is never served stale (a worker that recovers says so at once): requests
        # that arrive while it is being checked share that one check.
        self._ready = _Shared(self._readiness, 0.0)

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self.admission.open)

    @contextlib.asynccontextmanager
    async def serving(self, host: str, port: int) -> AsyncIterator[int]:
        """Listen on ``host:port`` (0: a free port) while inside; yield the port."""
        http = web.Server(
            self._handle,
            access_log=None,
            logger=_QUIET,
            max_line_size=MAX_FIELD,
            max_field_size=MAX_FIELD,
            max_headers=64,
        )
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                lambda: _Admitted(http(), self.admission), host, port, backlog=512
            )
        except OSError as exc:
            raise ConfigurationError(
                f"invalid setting http_port (BATCH_PROCESSOR_HTTP_PORT): cannot listen on "
                f"{host}:{port}: {exc.strerror or exc}"
            ) from None
        bound = int(server.sockets[0].getsockname()[1])
        log.info("health and metrics endpoint listening", address=f"http://{host}:{bound}")
        try:
            yield bound
        finally:
            server.close()
            self.admission.close_all()
            # Every request in flight ends (its connection is closed): bounded, never waited on.
            await http.shutdown(timeout=1.0)
            await self._metrics.aclose()
            await self._ready.aclose()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.admission.answering(request.transport)
        # Not under the client's deadline: /readyz's own check is bounded (5 s), /metrics is
        # computed once a second for everyone.
        response = await self._respond(request.method, request.path)
        response.force_close()  # one request per connection: nothing to hold open
        self.admission.replying(request.transport)
        return response

    async def _respond(self, method: str, path: str) -> web.Response:
        if method != "GET":
            return web.Response(status=405, text="GET only\n")
        if path == "/metrics":
            body = await self._metrics.get()
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
        if path == "/healthz":
            if self._telemetry.progressing(self._stall_after):
                return web.Response(text="ok\n")
            return web.Response(status=503, text="stalled: no progress\n")
        if path == "/readyz":
            problems = await self._ready.get()
            if not problems:
                return web.Response(text="ready\n")
            return web.Response(status=503, text=problems.decode())
        return web.Response(status=404, text="not found\n")

    async def _readiness(self) -> bytes:
        """The readiness problems, one a line (empty: ready)."""
        problems = await self._ready_check()
        return ("\n".join(problems) + "\n").encode() if problems else b""
