"""The health and metrics endpoint: ``/healthz``, ``/readyz`` and ``/metrics`` over HTTP.

A deliberately small HTTP/1.1 responder on asyncio streams (three GET paths, one response per
connection), bound to 127.0.0.1 by default: enough for Prometheus, a container HEALTHCHECK and a
load balancer, with no web framework in the daemon.

* ``/healthz``: 200 while the main loop makes progress, 503 when it has stalled.
* ``/readyz``: 200 when MongoDB answers, the batch directory is writable and the classifier is
  configured; 503 with the problems otherwise.
* ``/metrics``: the Prometheus text format (prometheus-client).

The container image binds it to 0.0.0.0, so it expects hostile clients: a request head larger
than 16 KiB gets 431 and is closed; a client gets ``request_timeout`` seconds to send its
request and as long to take the reply (a slow sender or a reader that never reads is cut
off); at most
``max_connections`` are served at once, further ones are closed at once. None of them delays
another client's request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from batch_processor.errors import ConfigurationError
from batch_processor.service.metrics import registry_for
from batch_processor.service.telemetry import Telemetry

log = structlog.get_logger("batch_processor.service.health")
MAX_HEAD = 16 * 1024  # bytes of request line and headers (a GET needs a few hundred)
ReadyCheck = Callable[[], Awaitable[list[str]]]


class HealthServer:
    """Serves the three endpoints for one process."""

    def __init__(
        self,
        telemetry: Telemetry,
        ready_check: ReadyCheck,
        *,
        stall_after: float,
        request_timeout: float = 5.0,
        max_connections: int = 64,
    ) -> None:
        self._telemetry = telemetry
        self._request_timeout = request_timeout
        self._max_connections = max_connections
        self._registry = registry_for(telemetry)
        self._ready_check = ready_check
        self._stall_after = stall_after
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return len(self._handlers)

    @contextlib.asynccontextmanager
    async def serving(self, host: str, port: int) -> AsyncIterator[int]:
        """Listen on ``host:port`` (0: a free port) while inside; yield the port."""
        try:
            server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD)
        except OSError as exc:
            raise ConfigurationError(
                f"invalid setting http_port (BATCH_HTTP_PORT): cannot listen on {host}:{port}: "
                f"{exc.strerror or exc}"
            ) from None
        bound = int(server.sockets[0].getsockname()[1])
        log.info("health and metrics endpoint listening", address=f"http://{host}:{bound}")
        try:
            yield bound
        finally:
            server.close()
            await server.wait_closed()
            # On Python 3.11 wait_closed() does not wait for the connections being served: a
            # request in flight would outlive the event loop, its socket never closed.
            for handler in list(self._handlers):
                handler.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        if len(self._handlers) >= self._max_connections:
            writer.close()  # over the limit: closed at once, the others are served
            return
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        oversized = False
        try:
            try:
                async with asyncio.timeout(self._request_timeout):
                    request = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                reply = ("431 Request Header Fields Too Large", "text/plain", b"too large\n")
                oversized = True
            else:
                request_line = request.split(b"\r\n", 1)[0].decode("latin-1")
                method, path, *_ = [*request_line.split(" "), "", ""]
                # Not under the client's timeout: /readyz's own check is bounded (5 s).
                reply = await self._respond(method, path.split("?", 1)[0])
            status, content_type, body = reply
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            async with asyncio.timeout(self._request_timeout):  # a client that never reads
                writer.write(head.encode() + body)
                await writer.drain()
                if oversized:
                    # Read what is left of the request before closing: closing on unread
                    # bytes resets the connection, and the client might never see the 431.
                    writer.write_eof()
                    while await reader.read(MAX_HEAD):
                        pass
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            pass  # a client that went away, stalled or sent garbage gets nothing more
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _respond(self, method: str, path: str) -> tuple[str, str, bytes]:
        text = "text/plain; charset=utf-8"
        if method != "GET":
            return "405 Method Not Allowed", text, b"GET only\n"
        if path == "/metrics":
            # Off the event loop: collecting reads files (queue sizes) and may take a while.
            body = await asyncio.to_thread(generate_latest, self._registry)
            return "200 OK", CONTENT_TYPE_LATEST, body
        if path == "/healthz":
            if self._telemetry.progressing(self._stall_after):
                return "200 OK", text, b"ok\n"
            return "503 Service Unavailable", text, b"stalled: no progress\n"
        if path == "/readyz":
            problems = await self._ready_check()
            if not problems:
                return "200 OK", text, b"ready\n"
            return "503 Service Unavailable", text, ("\n".join(problems) + "\n").encode()
        return "404 Not Found", text, b"not found\n"
