"""``batch-processor run``: one job in the configured mode, and its summary for a person."""

from __future__ import annotations

import signal
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from batch_processor.cli.display import shown
from batch_processor.mongo.store import MongoStore
from batch_processor.pipeline.stats import RunStats
from batch_processor.runtime.progress import RichProgress, wanted
from batch_processor.runtime.shutdown import Stopper
from batch_processor.service.runner import run_job
from batch_processor.settings import Mode, Settings

#: The exit code of a run a Ctrl-C (SIGINT) stopped, after it stored what it could.
EXIT_INTERRUPTED = 130


async def run(
    settings: Settings, store: MongoStore | None = None, stopper: Stopper | None = None
) -> RunStats:
    """Run one job; a progress bar is shown to a person watching a batch run."""
    progress = RichProgress() if shows_a_bar(settings) else None
    return await run_job(settings, progress=progress, store=store, stopper=stopper)


def shows_a_bar(settings: Settings) -> bool:
    """Whether a run draws a progress bar: a batch run a person watches at a terminal."""
    # Service modes log instead: nobody watches a bar in the journal.
    return wanted(settings.progress) and settings.mode is Mode.BATCH


def ended(stopper: Stopper) -> int:
    """The exit code of a run that ended by itself (0) or was interrupted by a Ctrl-C (130).

    A SIGTERM (systemd, docker stop) is the service manager's stop, not a failure: 0.
    """
    return EXIT_INTERRUPTED if stopper.first_signal == signal.SIGINT else 0


def print_summary(stats: RunStats, *, force: bool = False) -> None:
    """A summary table on stdout for a person (the JSON summary is in the log)."""
    if not (force or sys.stdout.isatty()):
        return
    summary: dict[str, Any] = stats.summary()
    table = Table(title="batch_processor run summary", show_header=False)
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), shown(value))
    Console().print(table)
