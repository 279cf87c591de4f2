"""A rich progress bar with rate and ETA, shown only when a person is watching a TTY."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from batch_processor.pipeline.stats import RunStats


class RichProgress:
    """Documents ended out of those pending at start, with docs/s, failures and ETA."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]classifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} docs/s"),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            redirect_stderr=True,
            transient=False,
        )
        self._task: TaskID | None = None

    def start(self, total: int) -> None:
        """Show the bar for ``total`` documents."""
        self._task = self._progress.add_task("classify", total=max(total, 1), rate="0", failed=0)
        self._progress.start()

    def update(self, stats: RunStats) -> None:
        """Move the bar to the documents ended so far."""
        if self._task is None:
            return
        done = stats.processed + stats.queued_classify + stats.queued_store
        rate = f"{stats.processed / stats.elapsed():.0f}"
        self._progress.update(self._task, completed=done, rate=rate, failed=stats.failed_total)

    def close(self) -> None:
        """Stop redrawing; the last state stays on screen."""
        self._progress.stop()


def wanted(enabled: bool) -> bool:
    """Whether to show progress: enabled, and stderr is a terminal (never in journald)."""
    return enabled and sys.stderr.isatty()
