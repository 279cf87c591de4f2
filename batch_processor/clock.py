"""Time, injected: the wall clock and sleeping, so tests of schedules never really wait."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Protocol

from batch_processor.models import utcnow


class Clock(Protocol):
    """What the service loops read and wait on."""

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current UTC time."""
        return utcnow()

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop."""
        await asyncio.sleep(seconds)
