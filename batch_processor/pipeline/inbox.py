"""Where a document goes when it cannot be finished now: the classify queue or the dead letter.

The document tasks put a document whose retryable error outlasted its retries in the classify
queue, and record one the classifier refused for good in the dead letter; the queue drainer
moves entries past their drain attempts to the dead letter too. Both write through this one
object, built before either of them.
"""

from __future__ import annotations

from typing import Literal

import structlog
from pydantic import BaseModel

from batch_processor.errors import ErrorCategory, categorize, describe
from batch_processor.files.retry_queues import RetryQueues
from batch_processor.models import ClassifyRetry, DeadLetter, SourceDocument
from batch_processor.pipeline.stats import RunStats

log = structlog.get_logger("batch_processor.pipeline.drain")


class RetryInbox:
    """Puts documents in the classify queue or the dead letter (see the module docstring)."""

    def __init__(self, queues: RetryQueues, stats: RunStats) -> None:
        self._queues = queues
        self._stats = stats

    def queue_classify(self, item: ClassifyRetry) -> None:
        """Put a document whose classification failed after its retries in the classify queue."""
        self._queues.classify.add(item)
        log.warning(
            "classification failed, document queued",
            doc_id=item.doc.id,
            error=item.error,
            category=str(item.category),
        )

    def dead_letter_document(self, doc: SourceDocument, error: BaseException) -> None:
        """Record a document the classifier refused for good (DATA, PERMANENT), for a person.

        The dead letter keeps the document as a classify item, so it can be requeued once the
        cause is fixed; the caller marks the source failed.
        """
        item = ClassifyRetry(doc=doc, error=describe(error), category=categorize(error))
        self.dead_letter("classify", [doc.id], item.error, item.category, 1, item)

    def dead_letter(
        self,
        queue: Literal["classify", "store"],
        doc_ids: list[str],
        error: str,
        category: ErrorCategory,
        attempts: int,
        item: BaseModel,
    ) -> None:
        """Move an entry to the dead letter, counted and logged."""
        self._queues.dead_letter.append(
            DeadLetter(
                queue=queue,
                doc_ids=doc_ids,
                error=error,
                category=category,
                attempts=attempts,
                item=item.model_dump(mode="json"),
            )
        )
        self._stats.dead_lettered += len(doc_ids)
        log.error(
            "moved to dead letter",
            queue=queue,
            documents=len(doc_ids),
            attempts=attempts,
            error=error,
            category=str(category),
        )
