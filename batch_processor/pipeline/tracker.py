"""Which batch files are still in flight, and deleting each one when its last document ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from batch_processor.files.batch_files import BatchFiles
from batch_processor.models import ClassifiedDocument


@dataclass(slots=True)
class _Batch:
    name: str
    pending: set[str]
    size: int
    started: float
    outcomes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FinishedBatch:
    """A batch whose every document has ended; its file is already deleted."""

    name: str
    size: int
    seconds: float
    outcomes: dict[str, int]


class BatchTracker:
    """Tracks the documents of each in-flight batch file; no batch waits for another."""

    def __init__(
        self,
        files: BatchFiles,
        *,
        on_finished: Callable[[FinishedBatch], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._files = files
        self._on_finished = on_finished
        self._clock = clock
        self._batches: dict[str, _Batch] = {}
        self._batch_of: dict[str, str] = {}

    def add(self, name: str, doc_ids: list[str]) -> None:
        """Start tracking a saved batch file."""
        self._batches[name] = _Batch(name, set(doc_ids), len(doc_ids), self._clock())
        for doc_id in doc_ids:
            self._batch_of[doc_id] = name
        if not doc_ids:
            self._finish(self._batches[name])

    def settle(self, doc_id: str, outcome: str) -> None:
        """Record that ``doc_id`` has ended (stored, failed, queued); finish its batch if last."""
        name = self._batch_of.pop(doc_id, None)
        if name is None:
            return
        batch = self._batches[name]
        batch.pending.discard(doc_id)
        batch.outcomes[outcome] = batch.outcomes.get(outcome, 0) + 1
        if not batch.pending:
            self._finish(batch)

    def keep(self, result: ClassifiedDocument) -> None:
        """Keep a result that cost a request beside its batch file until it is stored.

        So that a crash before the result is stored does not ask for it again (see
        :mod:`batch_processor.files.journal`); a result the batch no longer waits for is not kept.
        """
        name = self._batch_of.get(result.doc_id)
        if name is not None:
            self._files.journal.append(name, result)

    def doc_ids(self) -> list[str]:
        """The documents of the batches in flight that have not ended."""
        return list(self._batch_of)

    def names(self) -> list[str]:
        """Batch files still in flight, oldest first."""
        return sorted(self._batches)

    def _finish(self, batch: _Batch) -> None:
        self._files.delete(batch.name)
        del self._batches[batch.name]
        seconds = self._clock() - batch.started
        self._on_finished(FinishedBatch(batch.name, batch.size, seconds, dict(batch.outcomes)))
