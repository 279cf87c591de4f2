"""Bookkeeping of ended documents: admission, batch files, counters, checkpoints, progress.

Every document that was admitted ends exactly once (stored, failed, queued or given back);
:meth:`Bookkeeper.settle` is where that end is counted. A batch file is deleted when its last
document has ended; a checkpoint is written every ``checkpoint_interval`` ended documents.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import structlog

from batch_processor.documents.outcomes import Ended
from batch_processor.errors import BatchProcessorError, describe
from batch_processor.files.batch_files import BatchFiles
from batch_processor.files.checkpoints import CheckpointStore
from batch_processor.models import Checkpoint, JobStatus, utcnow
from batch_processor.pipeline.control import Admission
from batch_processor.pipeline.memory import rss_mb
from batch_processor.pipeline.stats import RunMetrics, RunStats
from batch_processor.pipeline.tracker import BatchTracker, FinishedBatch

log = structlog.get_logger("batch_processor.pipeline")


class Bookkeeper:
    """Counts each ended document once and keeps the checkpoint up to date."""

    def __init__(
        self,
        *,
        admission: Admission,
        batch_files: BatchFiles,
        checkpoints: CheckpointStore,
        stats: RunStats,
        job_id: str,
        worker_id: str,
        checkpoint_interval: int,
        on_progress: Callable[[RunStats], None] | None = None,
        telemetry: RunMetrics | None = None,
    ) -> None:
        self.tracker = BatchTracker(batch_files, on_finished=self._batch_finished)
        self.position: str | None = None  # the last _id read: shown by the checkpoint
        self._admission = admission
        self._checkpoints = checkpoints
        self._stats = stats
        self._job_id = job_id
        self._worker_id = worker_id
        self._interval = checkpoint_interval
        self._on_progress = on_progress
        self._telemetry = telemetry
        self._started_at: datetime = utcnow()
        self._since_checkpoint = 0
        self._released: list[str] = []

    def settle(self, doc_id: str, outcome: Ended) -> None:
        """Count the end of one document (exactly once per document)."""
        self._admission.release()
        self.tracker.settle(doc_id, outcome)
        if outcome is Ended.RELEASED:
            self._released.append(doc_id)
            self._stats.released += 1
        if outcome is Ended.QUEUED_CLASSIFY:
            self._stats.queued_classify += 1
        self._since_checkpoint += 1
        if self._since_checkpoint >= self._interval:
            self.save_checkpoint(JobStatus.RUNNING)
        if self._on_progress is not None:
            try:
                self._on_progress(self._stats)
            except Exception as exc:  # noqa: BLE001 - what only displays never fails a run
                log.warning("progress display failed; hiding it", error=describe(exc))
                self._on_progress = None

    def take_released(self) -> list[str]:
        """The documents given back unprocessed since the last call (their claims to free)."""
        released, self._released = self._released, []
        return released

    def save_final_checkpoint(self, error: str | None) -> None:
        """Finished, failed (with the reason), or running when batch files are left."""
        if error is not None:
            self.save_checkpoint(JobStatus.FAILED, error=error)
        elif self.tracker.names():
            self.save_checkpoint(JobStatus.RUNNING)
        else:
            self.save_checkpoint(JobStatus.FINISHED)

    def save_checkpoint(self, status: JobStatus, *, error: str | None = None) -> None:
        """Write the checkpoint now; a failure to write it is logged, never fatal."""
        self._since_checkpoint = 0
        checkpoint = Checkpoint(
            job_id=self._job_id,
            status=status,
            error=error,
            worker_id=self._worker_id,
            started_at=self._started_at,
            position=self.position,
            counters=self._stats.counters(),
            in_flight=self.tracker.names(),
        )
        try:
            self._checkpoints.save(checkpoint)
        except BatchProcessorError as exc:
            # Batch files and queues stay the source of truth; a missed checkpoint is not fatal.
            log.error("checkpoint not written", error=describe(exc))

    def _batch_finished(self, batch: FinishedBatch) -> None:
        if self._telemetry is not None and batch.outcomes.get("stored"):
            self._telemetry.batch_stored()
        log.info(
            "batch finished",
            batch=batch.name,
            documents=batch.size,
            seconds=round(batch.seconds, 3),
            **batch.outcomes,
            rss_mb=round(rss_mb(), 1),
        )
