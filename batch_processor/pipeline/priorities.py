"""One pass over the pending documents in priority order: high, then normal, then low.

Each level is read through its own long cursor in ``_id`` order (oldest first). Before a page
below the top level, one cheap indexed query asks whether a high-priority document has
arrived; if so the high level is read again at once (the check is asked at most once per
``check_every`` seconds, which keeps a fast offline run's queries down). A high-priority insert
still starts after what is already claimed (the page being started, the page read ahead, the
documents waiting for a slot): about three to five pages at the default sizes.

Every ``fairness``-th page is taken from a lower level than the one that would be next, so
lower levels get at least 1/``fairness`` of the pages even when higher ones never run out
(``fairness`` 0: strict priority). Invalid priority values are counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from batch_processor.documents.ports import PageReader, Source
from batch_processor.documents.text import field_value
from batch_processor.models import SourceDocument
from batch_processor.priority import ORDER, Priority, parse_priority

log = structlog.get_logger("batch_processor.pipeline")


class PriorityPass:
    """Pages of pending documents, highest priority first (see the module docstring)."""

    def __init__(
        self,
        source: Source,
        *,
        page_size: Callable[[], int],
        priority_field: str,
        fairness: int,
        on_invalid: Callable[[int], None],
        check_every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._page_size = page_size
        self._field = priority_field
        self._fairness = fairness
        self._on_invalid = on_invalid
        self._cursors: dict[Priority, PageReader] = {}
        self._exhausted: set[Priority] = set()
        self._pages = 0
        self._fair_turn = 0
        self._check_every = check_every
        self._clock = clock
        self._checked_at = clock()

    async def next_page(self) -> list[SourceDocument]:
        """The next page; empty only when every level is exhausted."""
        while (level := await self._next_level()) is not None:
            size = self._page_size()
            cursor = self._cursors.get(level)
            if cursor is None:
                cursor = self._cursors[level] = self._source.page_cursor(size, level)
            cursor.page_size = size
            page = await cursor.next_page()
            if page:
                self._pages += 1
                self._count_invalid(page, level)
                return page
            self._exhausted.add(level)
            await self._close(level)
            if level is Priority.HIGH:
                self._checked_at = self._clock()  # an empty high page is a check
        return []

    async def close(self) -> None:
        """Close every cursor still open."""
        for level in list(self._cursors):
            await self._close(level)

    async def _next_level(self) -> Priority | None:
        """The level of the next page, or None when every level is exhausted."""
        below_top = Priority.HIGH in self._exhausted and len(self._exhausted) < len(ORDER)
        if below_top and self._clock() - self._checked_at >= self._check_every:
            self._checked_at = self._clock()
            if await self._source.has_pending(Priority.HIGH):
                # Documents of high priority arrived (or were released): read that level again
                # (its cursor was closed when it ran out; next_page opens a new one).
                self._exhausted.discard(Priority.HIGH)
        open_levels = [level for level in ORDER if level not in self._exhausted]
        if not open_levels:
            return None
        fair_page = self._fairness and (self._pages + 1) % self._fairness == 0
        if fair_page and len(open_levels) > 1:
            self._fair_turn += 1
            lower = open_levels[1:]
            return lower[self._fair_turn % len(lower)]
        return open_levels[0]

    async def _close(self, level: Priority) -> None:
        cursor = self._cursors.pop(level, None)
        if cursor is not None:
            await cursor.close()

    def _count_invalid(self, page: list[SourceDocument], level: Priority) -> None:
        """Count the documents whose priority value was invalid (they are taken as normal)."""
        if level is not Priority.NORMAL:
            return
        invalid = sum(
            1 for doc in page if not parse_priority(field_value(doc.fields, self._field)[1])[1]
        )
        if invalid:
            self._on_invalid(invalid)
