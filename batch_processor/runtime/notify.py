"""The systemd notify protocol: READY, WATCHDOG, STOPPING and STATUS on ``$NOTIFY_SOCKET``.

Without ``NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``) every call does nothing. The
watchdog interval is half of ``WATCHDOG_USEC``; the runner sends ``WATCHDOG=1`` only while the
main loop makes progress, so a stuck daemon is restarted by systemd. ``STATUS=`` carries the
progress (done, failed, pending, rate), refreshed every few seconds, for ``systemctl status``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog

log = structlog.get_logger("batch_processor.runtime.notify")


class SystemdNotifier:
    """Sends notify messages to systemd (a datagram per message)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An address starting with "@" is in Linux's abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        ours = not pid or pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and ours else None

    @property
    def enabled(self) -> bool:
        """Whether a notify socket is configured."""
        return bool(self._address)

    def notify(self, *fields: str) -> None:
        """Send ``fields`` (``KEY=value``) as one message; failures are logged, never raised."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            log.warning("systemd notify failed", error=str(exc))

    def ready(self, status: str) -> None:
        """The daemon is connected and working."""
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """A one-line status for ``systemctl status``."""
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        """The main loop is alive and making progress."""
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        """The daemon is shutting down."""
        self.notify("STOPPING=1", "STATUS=stopping: finishing in-flight documents")


class ProgressLine:
    """The one-line progress of ``STATUS=``: totals, the pending count and the recent rate."""

    def __init__(
        self,
        totals: Callable[[], tuple[int, int]],
        pending: Callable[[], Awaitable[int]],
        *,
        pending_every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._totals = totals  # (processed, failed) so far
        self._pending = pending
        self._pending_every = pending_every  # a count is a query: not every few seconds
        self._clock = clock
        self._last: tuple[float, int] | None = None
        self._counted: tuple[int, int] | None = None  # (pending, processed) at the last count
        self._counted_at = -pending_every

    async def line(self, state: str) -> str:
        """``continuous: 1,234 processed (5 failed), 300 pending, 12.5 docs/s``."""
        now = self._clock()
        processed, failed = self._totals()
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = (processed - self._last[1]) / (now - self._last[0])
        self._last = (now, processed)
        if now - self._counted_at >= self._pending_every:
            self._counted_at = now
            try:
                self._counted = (await self._pending(), processed)
            except Exception:  # noqa: BLE001 - a status line never stops the service
                self._counted = None
        pending = ""
        if self._counted is not None:
            # Between counts, what was processed since the last one is taken off it.
            left = max(0, self._counted[0] - (processed - self._counted[1]))
            pending = f", {left:,} pending"
        return f"{state}: {processed:,} processed ({failed:,} failed){pending}, {rate:.1f} docs/s"


async def report_progress(
    notifier: SystemdNotifier, line: Callable[[], Awaitable[str]], every: float = 5.0
) -> None:
    """Send ``STATUS=<line>`` every ``every`` seconds, forever (a monitor task)."""
    while True:
        notifier.status(await line())
        await asyncio.sleep(every)
