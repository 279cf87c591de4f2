"""Graceful shutdown: one stop switch for the whole process, set by SIGTERM or SIGINT.

The first signal asks the current job to take no new documents and to let in-flight ones
finish within the grace period; idle waits (continuous mode) end at once. A second signal asks
for an immediate stop: in-flight classifications are cancelled and given back, and the job
still writes a consistent checkpoint before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol

import structlog

log = structlog.get_logger("batch_processor.runtime.shutdown")


class Stoppable(Protocol):
    """What a stop switch stops: a running pipeline."""

    def stop(self, *, now: bool = False) -> None:
        """Take no new work; with ``now``, cancel the work in flight too."""


#: Seconds past the shutdown grace after which a stopping process exits whatever it waits for.
BACKSTOP_SECONDS = 5.0
#: The exit status of a process ended by its backstop (as by a signal: 128 + SIGTERM).
BACKSTOP_EXIT = 143


def _backstop(seconds: float, loop: asyncio.AbstractEventLoop) -> threading.Timer:
    """End the process in ``seconds`` from a thread (the event loop may be what is stuck)."""

    def end() -> None:
        log.error("stop took too long: exiting now; what was in flight is recovered at the "
                  "next start", after_seconds=seconds, waiting_in=_waits(loop))  # fmt: skip
        logging.shutdown()
        os._exit(BACKSTOP_EXIT)

    timer = threading.Timer(seconds, end)
    timer.daemon = True
    timer.start()
    return timer


def _waits(loop: asyncio.AbstractEventLoop) -> list[str]:
    """Where each of the loop's tasks waits, innermost await last.

    Best effort: read from another thread while the loop may run.
    """
    found = []
    try:
        for task in list(asyncio.all_tasks(loop))[:30]:
            chain: list[str] = []
            coro: Any = task.get_coro()
            while coro is not None and len(chain) < 12:
                frame = (
                    getattr(coro, "cr_frame", None)
                    or getattr(coro, "gi_frame", None)
                    or getattr(coro, "ag_frame", None)
                )
                if frame is not None:
                    name = frame.f_code.co_filename.rsplit("/", 1)[-1]
                    chain.append(f"{frame.f_code.co_name} ({name}:{frame.f_lineno})")
                coro = (
                    getattr(coro, "cr_await", None)
                    or getattr(coro, "gi_yieldfrom", None)
                    or getattr(coro, "ag_await", None)
                )
            found.append(f"{task.get_name()}: " + " > ".join(chain))
    except RuntimeError:  # the set changed while read
        pass
    return found


class Stopper:
    """The process's stop switch; the runner attaches each job's pipeline to it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._target: Stoppable | None = None
        self._on_stop: list[Callable[[], None]] = []
        self.signals = 0
        #: The first signal that asked for the stop (SIGINT: the run was interrupted), if any.
        self.first_signal: int | None = None

    @property
    def stopped(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    @property
    def event(self) -> asyncio.Event:
        """Set once a stop is asked for (waits that must end on a stop watch it)."""
        return self._event

    def attach(self, target: Stoppable | None) -> None:
        """Make ``target`` the job to stop (None when between jobs)."""
        self._target = target
        if target is not None and self.stopped:
            target.stop(now=self.signals > 1)

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when a stop is first asked for (to tell systemd, say)."""
        self._on_stop.append(callback)

    def stop(self, *, now: bool = False) -> None:
        """Stop the current job (gracefully, or at once with ``now``) and any idle wait."""
        if not self._event.is_set():
            for callback in self._on_stop:
                callback()
        self._event.set()
        if self._target is not None:
            self._target.stop(now=now)

    async def race(self, awaitable: Awaitable[Any]) -> bool:
        """Await ``awaitable`` unless a stop comes first; return True if it completed."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._event.wait())
        try:
            done, _ = await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, stop):
                task.cancel()
            # Wait for both to end without swallowing a cancellation of the caller: awaiting
            # a cancelled task inside ``suppress(CancelledError)`` would also swallow ours,
            # and a loop around race() would then never end (seen: a lease keeper).
            await asyncio.wait({work, stop})
        if work in done:
            work.result()  # re-raise its error, if any
            return True
        return False

    @contextlib.contextmanager
    def on_signals(self, grace: float) -> Iterator[None]:
        """While inside, SIGTERM/SIGINT stop gracefully; a second one stops at once.

        Each signal also arms a backstop that ends the process whatever it is waiting for:
        ``grace`` + ``BACKSTOP_SECONDS`` after the first, one second after the second. Nothing
        is lost by it: every claimed document is in a batch file or a retry queue on disk, or
        comes back when its lease ends.
        """
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        backstops: list[threading.Timer] = []

        def on_signal(signum: int) -> None:
            self.signals += 1
            if self.first_signal is None:
                self.first_signal = signum
            now = self.signals > 1
            backstops.append(_backstop(1.0 if now else grace + BACKSTOP_SECONDS, loop))
            log.warning(
                "signal received: stopping now, giving in-flight documents back"
                if now
                else "signal received: finishing in-flight documents",
                signal=signum,
            )
            self.stop(now=now)

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal, sig)
                installed.append(sig)
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            for timer in backstops:  # the run ended in time
                timer.cancel()
