"""The systemd notify protocol: READY, WATCHDOG, STOPPING and STATUS on ``$NOTIFY_SOCKET``.

Without ``NOTIFY_SOCKET`` (not under systemd, or ``Type=simple``) every call does nothing. The
watchdog interval is half of ``WATCHDOG_USEC``; the runner sends ``WATCHDOG=1`` only while the
main loop makes progress, so a stuck daemon is restarted by systemd.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("batch_processor.service.notify")


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
