"""The one processing loop: page, claim, save, classify under a semaphore, write, checkpoint.

Every task of a run lives in one :class:`asyncio.TaskGroup`: the result writer, the periodic
queue drainer and one task per document, beside the page reader that the loop awaits itself.
Nothing runs unwatched: if any of them dies, the others are cancelled, every document still held
is given back (its claim released) and the run ends with the error, its checkpoint saying so.

The parts, one module each in this folder: ``producer`` (pages, claims, batch files), ``task``
(one document), ``writer`` (bulk result writes), ``drain`` (retry queues), ``recovery`` (old
batch files and claims) and ``bookkeeping`` (each ended document counted once, checkpoints).
At most ``max_in_flight`` documents are claimed and unfinished at any time
(``admission``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from batch_processor.classifiers import Classifier
from batch_processor.documents.outcomes import Outcomes, reason
from batch_processor.documents.ports import Sink, Source
from batch_processor.errors import Interrupted, first_error
from batch_processor.files.batch_files import BatchFiles
from batch_processor.files.checkpoints import CheckpointStore
from batch_processor.files.retry_queues import RetryQueues
from batch_processor.models import JobStatus
from batch_processor.outage import DatabaseCalls
from batch_processor.pipeline.bookkeeping import Bookkeeper
from batch_processor.pipeline.control import Admission, RunControl
from batch_processor.pipeline.drain import QueueDrainer, RetryInbox
from batch_processor.pipeline.memory import PageSizer
from batch_processor.pipeline.options import PipelineOptions
from batch_processor.pipeline.producer import PageProducer
from batch_processor.pipeline.recovery import Recovery
from batch_processor.pipeline.stats import RunMetrics, RunStats
from batch_processor.pipeline.task import DocumentTasks
from batch_processor.pipeline.writer import ResultWriter
from batch_processor.retry import RetryPolicy, Sleep

__all__ = ["Pipeline"]


class Pipeline:
    """One job: drains the queues, finishes recovered batch files, then pages until done."""

    def __init__(
        self,
        *,
        source: Source,
        sink: Sink,
        classifier: Classifier,
        batch_files: BatchFiles,
        checkpoints: CheckpointStore,
        queues: RetryQueues,
        outcomes: Outcomes,
        worker_id: str,
        options: PipelineOptions,
        classify_policy: RetryPolicy,
        db: DatabaseCalls,
        stats: RunStats | None = None,
        sleep: Sleep = asyncio.sleep,
        on_progress: Callable[[RunStats], None] | None = None,
        telemetry: RunMetrics | None = None,
    ) -> None:
        self.job_id = job_id = outcomes.job_id
        self.worker_id = worker_id
        self.stats = stats = stats or RunStats()
        self._options = options
        self._sleep = sleep
        self._control = control = RunControl()
        self._grace_timer: asyncio.TimerHandle | None = None
        self._writer = writer = ResultWriter(
            sink=sink,
            db=db,
            queues=queues,
            stats=stats,
            flush_size=options.flush_size,
            flush_interval=options.flush_interval,
            on_fatal=control.fail,
        )
        self._admission = admission = Admission(options.in_flight_limit, on_full=writer.flush_soon)
        self._books = books = Bookkeeper(
            admission=admission,
            batch_files=batch_files,
            checkpoints=checkpoints,
            stats=stats,
            job_id=job_id,
            worker_id=worker_id,
            checkpoint_interval=options.checkpoint_interval,
            on_progress=on_progress,
            telemetry=telemetry,
        )
        inbox = RetryInbox(queues, stats)
        self._tasks = tasks = DocumentTasks(
            control=control,
            classifier=classifier,
            classify_policy=classify_policy,
            writer=writer,
            stats=stats,
            settle=books.settle,
            outcomes=outcomes,
            inbox=inbox,
            concurrent=options.concurrent,
            keep=books.tracker.keep,
            telemetry=telemetry,
        )
        self._drainer = QueueDrainer(
            queues=queues,
            writer=writer,
            stats=stats,
            job_id=job_id,
            max_attempts=options.queue_max_attempts,
            start=tasks.start,
            admission=admission,
            inbox=inbox,
        )
        sizer = PageSizer(
            batch_size=options.batch_size, max_rss_mb=options.max_rss_mb, admission=admission
        )
        self._producer = PageProducer(
            control=control,
            source=source,
            batch_files=batch_files,
            books=books,
            job_id=job_id,
            worker_id=worker_id,
            sizer=sizer,
            priority_field=options.priority_field,
            priority_fairness=options.priority_fairness,
            limit=options.limit,
            admission=admission,
            tasks=tasks,
            db=db,
            stats=stats,
        )
        self._recovery = Recovery(
            source=source,
            sink=sink,
            batch_files=batch_files,
            books=books,
            drainer=self._drainer,
            job_id=job_id,
            worker_id=worker_id,
            admission=admission,
            tasks=tasks,
            db=db,
            stats=stats,
        )

    def held_ids(self) -> list[str]:
        """The documents this run holds claims on: in flight, and waiting in the classify queue.

        Their leases are renewed while the run lasts (see ``runtime.fleet``).
        """
        return [*self._books.tracker.doc_ids(), *self._drainer.queued_doc_ids()]

    def refresh(self) -> None:
        """Documents became pending behind the cursors (taken over): read from the top again."""
        self._producer.refresh()

    @property
    def error(self) -> BaseException | None:
        """The error that stopped the run, if one did."""
        return self._control.error

    async def run(self, *, recover: bool = False) -> RunStats:
        """Process everything pending; with ``recover``, first finish the old batch files.

        Raises the error that stopped the run, if one did, after every document it held was
        stored or given back and the checkpoint was written.
        """
        self._books.save_checkpoint(JobStatus.RUNNING)
        try:
            # Documents start in the group until it has ended (the stack exits after it).
            with contextlib.ExitStack() as stack:
                async with asyncio.TaskGroup() as group:
                    stack.enter_context(self._tasks.running(group))
                    group.create_task(self._writer.run(), name="result-writer")
                    await self._work(group, recover=recover)
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                self._control.fail(first_error(exc))
            elif self.error is None:
                raise
        finally:
            if self._grace_timer is not None:
                self._grace_timer.cancel()
            await self._recovery.release_given_back()
            error = self.error
            self._books.save_final_checkpoint(reason(error) if error is not None else None)
        self.stats.finish()
        if self.error is not None:
            raise self.error
        return self.stats

    def stop(self, *, now: bool = False) -> None:
        """Take no new documents; in-flight ones finish and are stored.

        They get ``shutdown_grace`` seconds; then, or at once with ``now``, the rest are
        cancelled and given back unprocessed (their claims released), so the job still ends
        with a consistent checkpoint.
        """
        self._control.stop()
        if now:
            self._tasks.cancel_all()
        elif self._grace_timer is None:
            loop = asyncio.get_running_loop()
            self._grace_timer = loop.call_later(
                self._options.shutdown_grace, self._tasks.cancel_all
            )

    async def _work(self, group: asyncio.TaskGroup, *, recover: bool) -> None:
        """Everything but the writer: queues, recovery, paging; then the writer's last flush."""
        drainer: asyncio.Task[None] | None = None
        try:
            await self._drainer.drain()
            if recover:
                await self._recovery.recover_batch_files()
            await self._recovery.release_dead_claims()
            drainer = group.create_task(self._drain_periodically(), name="queue-drainer")
            await self._producer.run()
            await self._tasks.wait_all()
            if self.stats.queued_store and self.error is None:
                # Results spilled during an outage that has passed: store them before ending.
                await self._writer.drained()
                await self._drainer.drain_store()
        except Interrupted:
            self._control.stop()  # a stop came while MongoDB was away: a clean end
        except Exception as exc:  # noqa: BLE001 - finish in-flight work first, then re-raise
            self._control.fail(exc)
        finally:
            if drainer is not None:
                drainer.cancel()
            await self._tasks.wait_all()
            self._writer.close()

    async def _drain_periodically(self) -> None:
        while True:
            await self._sleep(self._options.queue_drain_interval)
            try:
                await self._drainer.drain()
            except Exception as exc:  # noqa: BLE001 - a drain failure stops the run cleanly
                self._control.fail(exc)
                return
