"""Filling a slice: claim pending documents, sort them, and build the request lines.

Documents are read and claimed a page at a time under the slice's claim token, with the long
document lease (past the provider's window). Each is sorted into one of:

- a request line (its text not yet requested in this slice, within the provider's limits and
  the budget's worst case);
- a document served by another's line (the same text: requested once, its answer serves all);
- a result from the dedupe cache (stored at once);
- with the confidence cascade, a sure offline answer (stored at once, like a cache hit);
- a DATA failure (no usable text: marked at once, with the reason any route gives);
- overflow: claimed, but past a limit: given back to pending at once.

:meth:`SliceBuilder.rebuild` makes the request lines again from the documents still claimed
under a slice's token (a worker that takes a slice over without its files).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from batch_processor.documents.outcomes import Outcomes
from batch_processor.documents.ports import Source
from batch_processor.documents.text import ExtractedText
from batch_processor.models import ClassifiedDocument, FailedDocument, SourceDocument
from batch_processor.outage import DatabaseCalls
from batch_processor.priority import Priority
from batch_processor.route.lines import request_line
from batch_processor.route.options import RouteOptions
from batch_processor.route.ports import AnswerCache, BatchClassifier, Triage

log = structlog.get_logger("batch_processor.route")

#: Documents read and claimed per page while filling a slice: building a page's request
#: bodies holds the event loop (about 0.1 s for 200), so pages stay small.
CLAIM_PAGE = 200


@dataclass(slots=True)
class Built:
    """A slice being filled: its documents, request lines, and what goes elsewhere."""

    claim: str
    docs: list[SourceDocument] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    size: int = 0
    reserved: int = 0  # worst-case nano-dollars held against --budget-usd until stored
    closed: bool = False  # a request did not fit in the size limit or the budget
    claimed: int = 0
    cached: list[ClassifiedDocument] = field(default_factory=list)
    failures: list[FailedDocument] = field(default_factory=list)
    overflow: list[SourceDocument] = field(default_factory=list)

    def full(self, options: RouteOptions) -> bool:
        """Whether another request would pass the provider's limits."""
        return self.closed or len(self.lines) >= options.max_requests


class SliceBuilder:
    """Claims and sorts the documents of new slices (see the module docstring)."""

    def __init__(
        self,
        *,
        options: RouteOptions,
        source: Source,
        llm: BatchClassifier,
        cache: AnswerCache | None,
        outcomes: Outcomes,
        db: DatabaseCalls,
        worker_id: str,
        triage: Triage | None = None,
    ) -> None:
        self._options = options
        self._triage = triage
        self._source = source
        self._llm = llm
        self._cache = cache
        self._outcomes = outcomes
        self._db = db
        self._worker_id = worker_id
        self.budget_reached = False

    async def build(self, claim: str, level: Priority | None) -> Built:
        """Claim pending documents (of ``level``) under ``claim`` until the slice is full."""
        built = Built(claim)
        reader = self._source.page_cursor(CLAIM_PAGE, level)
        try:
            while not built.full(self._options):
                page = await self._db.wait(reader.next_page)
                if not page:
                    break
                page = page[: max(1, self._options.max_requests - len(built.lines))]
                claim_page = functools.partial(
                    self._source.claim,
                    [doc.id for doc in page],
                    job_id=self._outcomes.job_id,
                    worker_id=self._worker_id,
                    token=claim,
                    lease=self._options.doc_lease,
                )
                won = await self._db.wait(claim_page)
                built.claimed += len(won)
                mine = [d.model_copy(update={"claim": claim}) for d in page if d.id in won]
                await self._add(built, mine, lookup=True)
        finally:
            await reader.close()
        return built

    async def rebuild(self, claim: str, docs: Sequence[SourceDocument]) -> Built:
        """The request lines of ``docs`` (claimed under ``claim``), without reserving again."""
        built = Built(claim)
        await self._add(built, list(docs), lookup=False, reserve=False)
        return built

    async def _add(
        self, built: Built, page: list[SourceDocument], *, lookup: bool, reserve: bool = True
    ) -> None:
        """Sort claimed documents into the slice: requests, cache answers, data failures."""
        texts = [(doc, self._outcomes.text(doc)) for doc in page]
        if self._cache is not None and lookup:  # one lookup for the page's texts
            await self._cache.prefetch(
                [t.conversation for _, t in texts if isinstance(t, ExtractedText)]
            )
        for doc, text in texts:
            if isinstance(text, FailedDocument):
                built.failures.append(text)
                continue
            if built.full(self._options):
                built.overflow.append(doc)
                continue
            if self._triage is not None and lookup:
                settled = await self._triage.triage(text.conversation, doc.fields)
                if settled.cascade is not None and settled.cascade.route == "offline":
                    built.cached.append(
                        self._outcomes.result(
                            doc, text, settled, attempts=1, claim=built.claim, route=None
                        )
                    )
                    continue
            key = self._cache.key(text.conversation) if self._cache is not None else doc.id
            hit = await self._cache.cached(key) if self._cache is not None and lookup else None
            if hit is not None:
                if self._triage is not None:
                    hit = await self._triage.rejoin(text.conversation, doc.fields, hit)
                built.cached.append(
                    self._outcomes.result(doc, text, hit, attempts=1, claim=built.claim, route=None)
                )
            elif key in built.keys:
                built.docs.append(doc)  # the same text is requested once; its answer serves all
            else:
                self._request(built, doc, text, key, reserve=reserve)

    def _request(
        self, built: Built, doc: SourceDocument, text: ExtractedText, key: str, *, reserve: bool
    ) -> None:
        """Add ``doc``'s request line, unless it passes the size limit or the budget."""
        body = self._llm.batch_body(text.conversation, doc.fields)
        line = request_line(doc.id, built.claim, body)
        if built.size + len(line) + 1 > self._options.max_bytes and built.lines:
            built.overflow.append(doc)
            built.closed = True
            return
        if reserve:
            reserved = self._llm.batch_reservation(body)
            if reserved is None:  # --budget-usd: this request would pass it
                if not self.budget_reached:
                    log.warning("budget reached: no more documents for the Batch API")
                built.overflow.append(doc)
                built.closed = self.budget_reached = True
                return
            built.reserved += reserved
        built.keys.add(key)
        built.docs.append(doc)
        built.lines.append(line)
        built.size += len(line) + 1
