"""The batch directory's layout: the one place that names its parts.

::

    <batch_dir>/
      .lock                 the worker process's lock (one process per directory)
      batches/              batch files (and their result journals) in flight
      reports/<job>.json    each job's performance report
      provider_batches/     the Batch API route's cache
      embedded/             the embedded SecantusDB's data (the demo, no MongoDB URI)
      checkpoint.json, retry queues, worker id: see their modules
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Layout:
    """The parts of one batch directory."""

    root: Path

    @property
    def lock(self) -> Path:
        """The lock file held by the one worker process using the directory."""
        return self.root / ".lock"

    @property
    def batches(self) -> Path:
        """Where batch files wait until their documents have ended."""
        return self.root / "batches"

    @property
    def reports(self) -> Path:
        """Where each job's performance report is written."""
        return self.root / "reports"

    def report(self, job_id: str) -> Path:
        """The performance report of ``job_id``."""
        return self.reports / f"{job_id}.json"

    @property
    def embedded(self) -> Path:
        """The embedded SecantusDB's directory."""
        return self.root / "embedded"
