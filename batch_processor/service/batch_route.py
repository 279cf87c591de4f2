"""The Batch API route: a backlog sent to the provider as batches, at half the price.

``--llm-route batch`` sends the pending documents to the provider's Batch API; ``auto`` does so
when the backlog reaches ``batch_route_min_docs`` and the endpoint serves the Batch API,
leaving high-priority documents (and, in continuous mode, what arrives meanwhile) to the
online route. A slice of at most ``batch_route_max_requests`` documents and
``batch_route_max_mb`` of requests goes through these steps, each recorded on disk
(:mod:`batch_processor.files.provider_batches`) before the next begins:

1. **claim**: the slice's claim token is recorded, then its documents are claimed under it
   with a lease past the batch window (``batch_route_lease_seconds``), as a worker of its own
   (``<worker id>/batch-route``), so the online jobs of the same process leave them alone;
2. **write**: the documents and the request file (one line per distinct text not already in
   the dedupe cache; ``custom_id`` = source id and claim token), atomically;
3. **upload** (``files.create``, purpose ``batch``), found again by name and size after a
   crash, so a file is never uploaded twice to be submitted;
4. **create** (``batches.create``, ``metadata`` naming the slice, the job and the file's
   SHA-256), found again by that metadata after a crash: a slice is never submitted twice;
5. **poll** (``batches.retrieve``) with backoff from ``batch_route_poll_seconds`` to
   ``batch_route_poll_max_seconds``, renewing the slice's leases at each poll;
6. **download** the output and error files, kept on disk;
7. **store**: every line validated and repaired like an online reply, stored in bulk and
   fenced by the claim; a line that failed, expired, or holds no valid classification is
   classified online at once, with the online route's retries (see below);
8. **clean up**: the provider's files are deleted, then the slice's directory.

A SIGKILL at any point resumes at the step recorded: a plain start or ``--recover`` finishes
every slice on disk before anything else.

Failed and expired lines are classified **online**, not in a next batch: they are few (a
provider fails a fraction of a percent of lines) and a new batch would make them wait up to
another window; an expired batch is rare, and the documents it holds have waited a window
already. Online they cost the online price, which the summary shows apart.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, TypeVar

import structlog

from batch_processor.classifiers import Classifier
from batch_processor.conversation import Conversation, Roles
from batch_processor.errors import (
    BatchProcessorError,
    BudgetExhaustedError,
    DataError,
    LostLeaseError,
    categorize,
    describe,
    is_retryable,
)
from batch_processor.failpoints import crash_at
from batch_processor.files.provider_batches import (
    ProviderSlice,
    ProviderSlices,
    SliceState,
    Stage,
)
from batch_processor.llm.batch_api import SLICE_KEY, ProviderBatch, ProviderBatches
from batch_processor.llm.client import LLMClassifier
from batch_processor.llm.dedupe import CachedClassifier
from batch_processor.models import (
    ClassifiedDocument,
    ClassifierOutput,
    FailedDocument,
    SourceDocument,
    claim_token,
)
from batch_processor.mongo.store import MongoStore
from batch_processor.outage import DatabaseCalls
from batch_processor.pipeline.text import ExtractedText, extract_text
from batch_processor.priority import Priority
from batch_processor.retry import RetryPolicy
from batch_processor.service.batch_lines import read_result_line, request_line
from batch_processor.settings import Route, Settings

log = structlog.get_logger("batch_processor.service.batch_route")
T = TypeVar("T")

#: Results stored per bulk write.
STORE_CHUNK = 500
#: Documents read and claimed per page while filling a slice: building a page's request
#: bodies holds the event loop (about 0.1 s for 200), so pages stay small.
CLAIM_PAGE = 200
#: Lines handled between two yields to the event loop (a few milliseconds of work).
YIELD_EVERY = 200


@dataclass(frozen=True, slots=True)
class RouteOptions:
    """The route's settings (see the ``batch_route_*`` settings)."""

    route: Route
    min_docs: int
    max_requests: int
    max_bytes: int
    window: str
    poll_seconds: float
    poll_max_seconds: float
    lease: timedelta
    text_field: str
    max_text_chars: int
    roles: Roles
    concurrent: int
    online_high_priority: bool

    @classmethod
    def of(cls, settings: Settings) -> RouteOptions:
        """The options the settings describe."""
        return cls(
            route=settings.llm_route,
            min_docs=settings.batch_route_min_docs,
            max_requests=settings.batch_route_max_requests,
            max_bytes=int(settings.batch_route_max_mb * 1024 * 1024),
            window=settings.batch_route_window,
            poll_seconds=settings.batch_route_poll_seconds,
            poll_max_seconds=max(settings.batch_route_poll_seconds,
                                 settings.batch_route_poll_max_seconds),
            lease=timedelta(seconds=settings.batch_route_lease_seconds),
            text_field=settings.text_field,
            max_text_chars=settings.max_text_chars,
            roles=settings.roles,
            concurrent=settings.concurrent,
            online_high_priority=settings.llm_route is Route.AUTO,
        )  # fmt: skip


@dataclass(slots=True)
class RouteStats:
    """What the route did in this process: slices, lines, outcomes, spend."""

    slices_submitted: int = 0
    slices_finished: int = 0
    slices_in_flight: int = 0
    requests: int = 0
    stored_from_batch: int = 0
    stored_online: int = 0
    deduped: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # by error category
    lost_lease: int = 0
    lines_retried_online: Counter[str] = field(default_factory=Counter)

    @property
    def stored(self) -> int:
        """Results stored by the route: from batches, online fallbacks and the cache."""
        return self.stored_from_batch + self.stored_online + self.deduped

    def summary(self) -> dict[str, Any]:
        """For the run summary."""
        return {
            "slices_submitted": self.slices_submitted,
            "slices_finished": self.slices_finished,
            "slices_in_flight": self.slices_in_flight,
            "requests": self.requests,
            "stored_from_batch": self.stored_from_batch,
            "stored_online": self.stored_online,
            "deduped": self.deduped,
            "failed": dict(self.failed),
            "lost_lease": self.lost_lease,
            "lines_retried_online": dict(self.lines_retried_online),
        }


class BatchRoute:
    """Sends backlogs through the provider's Batch API (see the module docstring)."""

    def __init__(
        self,
        *,
        options: RouteOptions,
        store: MongoStore,
        classifier: LLMClassifier,
        cache: CachedClassifier | None,
        slices: ProviderSlices,
        worker_id: str,
        job_id: str,
        db: DatabaseCalls,
        classify_policy: RetryPolicy,
        stopped: Callable[[], bool],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.options = options
        self._store = store
        self._llm = classifier
        self._cache = cache
        self._online: Classifier = cache or classifier
        self._slices = slices
        self.provider = ProviderBatches(classifier, window=options.window)
        self.worker_id = f"{worker_id}/batch-route"
        self.job_id = job_id
        self._db = db
        self._classify_policy = classify_policy
        self._stopped = stopped
        self._sleep = sleep
        # Provider calls wait out a provider's outage, with backoff up to the poll cap.
        self._provider_policy = RetryPolicy(
            max_attempts=None,
            base_delay=1.0,
            max_delay=options.poll_max_seconds,
            give_up=stopped,
            sleep=sleep,
        )
        self.stats = RouteStats()
        self.budget_reached = False
        self._reserved: dict[str, int] = {}  # by slice: worst-case nano-dollars held until stored

    # -- resuming and deciding ------------------------------------------------------------

    async def resume(self) -> list[ProviderSlice]:
        """The slices a previous process left, ready to go on; their claims kept or released."""
        found, unreadable = self._slices.load()
        for directory in unreadable:
            log.warning("provider batch directory without a state removed", path=str(directory))
            self._slices.discard(directory)
        ready = []
        for each in found:
            if each.state.stage is Stage.CLAIMING:
                # Killed while claiming: nothing was written or sent; give the claims back.
                release = functools.partial(self._store.source.release_tokens, [each.state.claim])
                released = await self._db.wait(release)
                log.info("unfinished slice released", slice=each.state.slice_id, released=released)
                each.remove()
                continue
            log.info(
                "resuming a provider batch",
                slice=each.state.slice_id,
                stage=each.state.stage.value,
                batch_id=each.state.batch_id,
                documents=each.state.documents,
            )
            ready.append(each)
        return ready

    async def backlog_wanted(self) -> bool:
        """Whether the pending backlog goes to the Batch API now (always, for route batch)."""
        if self.options.route is Route.ONLINE:
            return False
        if self.options.route is Route.BATCH:
            return True
        pending = await self._db.wait(self._store.source.count_pending)
        if pending < self.options.min_docs:
            log.info("auto route: online", pending=pending, min_docs=self.options.min_docs)
            return False
        if not await self._provider(self.provider.supported):
            log.warning("auto route: the endpoint has no Batch API; classifying online",
                        pending=pending)  # fmt: skip
            return False
        log.info("auto route: the backlog goes to the Batch API", pending=pending)
        return True

    async def finish(self, slices: Sequence[ProviderSlice]) -> None:
        """Take every slice to its end, concurrently (each waits on its own provider batch)."""
        async with asyncio.TaskGroup() as group:
            for each in slices:
                group.create_task(self._finish(each), name=f"provider-batch-{each.state.slice_id}")

    # -- submitting -----------------------------------------------------------------------

    async def submit_backlog(self) -> list[ProviderSlice]:
        """Claim, write, upload and create slices until the backlog is taken (or a stop)."""
        submitted: list[ProviderSlice] = []
        levels: list[Priority | None] = (
            [Priority.NORMAL, Priority.LOW] if self.options.online_high_priority else [None]
        )
        for level in levels:
            while not self._stopped() and not self.budget_reached:
                built, claimed = await self._build_slice(level)
                if built is not None:
                    await self._submit(built)
                    submitted.append(built)
                if claimed == 0:
                    break
        return submitted

    async def _build_slice(self, level: Priority | None) -> tuple[ProviderSlice | None, int]:
        """Claim and write one slice of pending documents (of ``level``).

        Returns the slice (None when every claimed document was answered from the cache or
        failed on its data) and how many documents were claimed (0: none wait).
        """
        slice_id = f"{self.job_id}-{secrets.token_hex(3)}"
        claim = claim_token(self.job_id, f"batch-{slice_id[-6:]}")
        begun = self._slices.begin(
            SliceState(slice_id=slice_id, job_id=self.job_id, worker_id=self.worker_id, claim=claim)
        )
        slice_ = _SliceBuilder(claim)
        claimed = 0
        reader = self._store.source.page_cursor(CLAIM_PAGE, level)
        try:
            while not slice_.full(self.options):
                page = await self._db.wait(reader.next_page)
                if not page:
                    break
                page = page[: max(1, self.options.max_requests - len(slice_.lines))]
                claim_page = functools.partial(
                    self._store.source.claim,
                    [d.id for d in page],
                    job_id=self.job_id,
                    worker_id=self.worker_id,
                    token=claim,
                    lease=self.options.lease,
                )
                won = await self._db.wait(claim_page)
                claimed += len(won)
                mine = [d.model_copy(update={"claim": claim}) for d in page if d.id in won]
                await self._add_page(slice_, mine)
        finally:
            await reader.close()
        if slice_.overflow:  # claimed, but past the provider's limits: back to pending
            ids = [doc.id for doc in slice_.overflow]
            await self._db.wait(functools.partial(self._store.source.release_ids, ids, self.job_id))
        await self._store_outcomes(slice_.cached, slice_.failures)
        self.stats.deduped += len(slice_.cached)
        if not slice_.docs:
            self._llm.release_reservation(slice_.reserved)
            begun.remove()
            return None, claimed
        self._reserved[slice_id] = slice_.reserved
        # Tens of MB checksummed and fsynced: in a thread, so leases and health keep ticking.
        await asyncio.to_thread(self._slices.write, begun, slice_.docs, slice_.lines)
        begun.save(documents=len(slice_.docs))
        log.info("provider batch written", slice=slice_id, documents=len(slice_.docs),
                 requests=len(slice_.lines), bytes=slice_.size, deduped=len(slice_.cached),
                 failed=len(slice_.failures))  # fmt: skip
        crash_at("before_upload")
        return begun, claimed

    async def _add_page(self, slice_: _SliceBuilder, page: list[SourceDocument]) -> None:
        """Sort a claimed page into the slice: requests, cache answers, data failures."""
        extracted = [(doc, self._text(doc)) for doc in page]
        if self._cache is not None:  # one lookup for the page's texts
            texts = [t.conversation for _, t in extracted if isinstance(t, ExtractedText)]
            await self._cache.prefetch(texts)
        for doc, text in extracted:
            if isinstance(text, FailedDocument):
                slice_.failures.append(text)
                continue
            if slice_.full(self.options):
                slice_.overflow.append(doc)
                continue
            key = self._key(text.conversation, doc.id)
            hit = await self._cached(key, text, doc, slice_.claim)
            if hit is not None:
                slice_.cached.append(hit)
            elif key in slice_.keys:
                slice_.docs.append(doc)  # the same text is requested once; its answer serves all
            else:
                body = self._llm.batch_body(text.conversation, doc.fields)
                line = request_line(doc.id, slice_.claim, body)
                if slice_.size + len(line) + 1 > self.options.max_bytes and slice_.lines:
                    slice_.overflow.append(doc)
                    slice_.closed = True
                    continue
                reserved = self._llm.batch_reservation(body)
                if reserved is None:  # --budget-usd: this request would pass it
                    if not self.budget_reached:
                        log.warning("budget reached: no more documents for the Batch API",
                                    **self._llm.ledger.summary())  # fmt: skip
                    slice_.overflow.append(doc)
                    slice_.closed = self.budget_reached = True
                    continue
                slice_.reserved += reserved
                slice_.keys.add(key)
                slice_.docs.append(doc)
                slice_.lines.append(line)
                slice_.size += len(line) + 1

    async def _submit(self, each: ProviderSlice) -> None:
        """Upload and create (steps 3-4); a slice the provider refuses gives its documents back.

        A refusal that retrying cannot mend (a file over the provider's size limit, a key
        without Batch API access) ends the run with its error, but first releases the slice's
        claims, which would otherwise be held for a whole lease.
        """
        try:
            await self._upload_and_create(each)
        except BatchProcessorError as exc:
            if each.state.stage is Stage.SUBMITTED or is_retryable(exc):
                raise
            release = functools.partial(self._store.source.release_tokens, [each.state.claim])
            released = await self._db.wait(release)
            self._llm.release_reservation(self._reserved.pop(each.state.slice_id, 0))
            each.remove()
            log.error(
                "the provider refused the batch; its documents are pending again",
                slice=each.state.slice_id,
                released=released,
                error=describe(exc),
            )
            raise

    async def _upload_and_create(self, each: ProviderSlice) -> None:
        """Upload and create (steps 3-4), each found again if a crash came after it."""
        if each.state.stage is Stage.WRITTEN:
            filename, size = each.filename, each.state.request_bytes
            file_id = await self._provider(lambda: self.provider.find_file(filename, size))
            if file_id is None:
                path = each.requests_path
                file_id = await self._provider(lambda: self.provider.upload(path, filename))
                crash_at("upload_unrecorded")
            each.save(stage=Stage.UPLOADED, file_id=file_id)
            crash_at("after_upload")
        if each.state.stage is Stage.UPLOADED:
            state = each.state
            batch = await self._provider(lambda: self.provider.find_batch(state.slice_id))
            if batch is None:
                metadata = {
                    SLICE_KEY: state.slice_id,
                    "bp_job": state.job_id,
                    "bp_sha256": state.sha256,
                    "bp_documents": str(state.documents),
                }
                file_id = str(state.file_id)
                batch = await self._provider(lambda: self.provider.create(file_id, metadata))
                crash_at("create_unrecorded")
            else:
                log.info("provider batch found again by its metadata", slice=state.slice_id,
                         batch_id=batch.id)  # fmt: skip
            each.save(stage=Stage.SUBMITTED, batch_id=batch.id, batch_status=batch.status)
            self.stats.slices_submitted += 1
            self.stats.requests += state.requests
            log.info("provider batch created", slice=state.slice_id, batch_id=batch.id,
                     documents=state.documents)  # fmt: skip
            crash_at("after_create")

    # -- finishing ------------------------------------------------------------------------

    async def _finish(self, each: ProviderSlice) -> None:
        """Steps 3 to 8 from wherever the slice stands (counted in flight meanwhile)."""
        self.stats.slices_in_flight += 1
        try:
            await self._take_to_end(each)
        finally:
            self.stats.slices_in_flight -= 1

    async def _take_to_end(self, each: ProviderSlice) -> None:
        await self._submit(each)
        if each.state.stage is Stage.SUBMITTED:
            batch = await self._poll(each)
            if batch is None:
                return  # stopped: the slice resumes at the next start
            output = await self._download(batch.output_file_id)
            errors = await self._download(batch.error_file_id)
            await asyncio.to_thread(each.keep_results, output, errors)
            if batch.errors:
                log.error("provider batch failed; its documents are classified online",
                          batch_id=batch.id, errors=list(batch.errors)[:5])  # fmt: skip
            each.save(
                stage=Stage.DOWNLOADED,
                batch_status=batch.status,
                output_file_id=batch.output_file_id,
                error_file_id=batch.error_file_id,
            )
            crash_at("after_download")
        if each.state.stage is Stage.DOWNLOADED:
            await self._store_slice(each)
            each.save(stage=Stage.STORED)
        if each.state.stage is Stage.STORED:
            state = each.state
            for file_id in (state.file_id, state.output_file_id, state.error_file_id):
                if file_id is not None:
                    await self._provider(functools.partial(self.provider.delete, file_id))
            each.remove()
            self.stats.slices_finished += 1
            log.info("provider batch finished", slice=each.state.slice_id,
                     batch_id=each.state.batch_id, stored=each.state.stored,
                     online=each.state.online, failed=each.state.failed,
                     cost_usd=round(each.state.cost_usd, 6))  # fmt: skip

    async def _poll(self, each: ProviderSlice) -> ProviderBatch | None:
        """Wait for the batch to end, renewing the leases; None if the process stops first."""
        ids = [doc.id for doc in await _documents(each)]
        wait = self.options.poll_seconds
        batch_id = str(each.state.batch_id)
        polled = False
        while True:
            batch = await self._provider(lambda: self.provider.retrieve(batch_id))
            if batch.status != each.state.batch_status:
                each.save(batch_status=batch.status)
                log.info("provider batch", batch_id=batch_id, status=batch.status, **batch.counts)
            if batch.ended:
                return batch
            if polled:
                crash_at("polling")
            polled = True
            await self._db.wait(
                lambda: self._store.source.renew(ids, self.worker_id, self.options.lease)
            )
            await self._sleep(wait)
            if self._stopped():
                return None
            wait = min(wait * 1.5, self.options.poll_max_seconds)

    async def _download(self, file_id: str | None) -> bytes:
        if file_id is None:
            return b""
        return await self._provider(lambda: self.provider.content(file_id))

    async def _store_slice(self, each: ProviderSlice) -> None:
        """Store what the batch answered; classify the rest online; count it all."""
        state = each.state
        # Each document's text and key, once (tens of thousands: yield now and then). A text
        # that fails was marked failed when the slice was claimed.
        keyed: dict[str, tuple[SourceDocument, ExtractedText, str]] = {}
        for number, doc in enumerate(await _documents(each), 1):
            if number % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            text = self._text(doc)
            if not isinstance(text, FailedDocument):
                keyed[doc.id] = (doc, text, self._key(text.conversation, doc.id))
        answers, problems = await self._answers(each, keyed)
        results: list[ClassifiedDocument] = []
        online: list[tuple[SourceDocument, ExtractedText, str]] = []
        served: set[str] = set()
        for number, (doc, text, key) in enumerate(keyed.values(), 1):
            if number % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            output = answers.get(key)
            if output is None:
                online.append((doc, text, problems.get(key, "no line in the result files")))
                continue
            if key in served:  # a repeated text: the first document paid for the answer
                output = output.model_copy(update={"cached": True, "usage": None, "cost_usd": 0.0})
            else:
                served.add(key)
                if self._cache is not None:
                    self._cache.remember(text.conversation, output)
            results.append(self._result(doc, text, output, state.claim, route="batch"))
        await self._store_outcomes(results, [])
        crash_at("half_stored")
        self.stats.stored_from_batch += len(results)
        # The batch's real cost is counted (read_batch_reply): its reservation is given back
        # before the online requests reserve their own.
        self._llm.release_reservation(self._reserved.pop(state.slice_id, 0))
        stored_online, failed = await self._classify_online(online, state.claim)
        each.save(
            stored=len(results),
            online=stored_online,
            failed=failed,
            input_tokens=sum(r.usage.input_tokens for r in results if r.usage),
            output_tokens=sum(r.usage.output_tokens for r in results if r.usage),
            cost_usd=sum(r.cost_usd for r in results),
        )
        if self._cache is not None:
            await self._cache.flush()

    async def _answers(
        self, each: ProviderSlice, keyed: dict[str, tuple[SourceDocument, ExtractedText, str]]
    ) -> tuple[dict[str, ClassifierOutput], dict[str, str]]:
        """The valid answers by text key, and why the others have none (also by text key)."""
        answers: dict[str, ClassifierOutput] = {}
        problems: dict[str, str] = {}
        for number, raw in enumerate(each.results(), 1):
            if number % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # validating a whole batch must not stall the loop
            line = read_result_line(raw)
            if line is None or line.claim != each.state.claim or line.doc_id not in keyed:
                continue  # not this slice's claim: a line of an older submission
            _, text, key = keyed[line.doc_id]
            if line.completion is None:
                problems[key] = line.problem or "no answer"
                continue
            try:
                answers[key] = self._llm.read_batch_reply(line.completion, text.turns)
            except BatchProcessorError as exc:
                problems[key] = describe(exc)
        return answers, problems

    async def _classify_online(
        self, todo: list[tuple[SourceDocument, ExtractedText, str]], claim: str
    ) -> tuple[int, int]:
        """Classify the documents the batch did not answer, online; return (stored, failed)."""
        if not todo:
            return 0, 0
        for _, _, problem in todo:
            self.stats.lines_retried_online[problem.split(":")[0][:60]] += 1
        log.info("classifying online what the batch did not answer", documents=len(todo))
        slots = asyncio.Semaphore(self.options.concurrent)
        results: list[ClassifiedDocument] = []
        failures: list[FailedDocument] = []
        released: list[str] = []

        async def one(doc: SourceDocument, text: ExtractedText) -> None:
            async with slots:
                try:
                    output, attempts = await self._classify_policy.call(
                        lambda: self._online.classify(text.conversation, doc.fields)
                    )
                except BudgetExhaustedError:
                    released.append(doc.id)
                    return
                except Exception as exc:  # noqa: BLE001 - sorted into a failure, never fatal
                    failures.append(self._failure(doc, exc, claim))
                    return
                results.append(
                    self._result(doc, text, output, claim, route="online", attempts=attempts)
                )

        async with asyncio.TaskGroup() as group:
            for doc, text, _ in todo:
                group.create_task(one(doc, text))
        await self._store_outcomes(results, failures)
        if released:
            await self._db.wait(lambda: self._store.source.release_ids(released, self.job_id))
        self.stats.stored_online += len(results)
        return len(results), len(failures)

    # -- shared ---------------------------------------------------------------------------

    async def _store_outcomes(
        self, results: list[ClassifiedDocument], failures: list[FailedDocument]
    ) -> None:
        """Store results in bulk (then mark their sources), and mark failures, fenced."""
        for start in range(0, len(results), STORE_CHUNK):
            chunk = results[start : start + STORE_CHUNK]
            errors = await self._db.wait(functools.partial(self._store.sink.store_results, chunk))
            stored = [r for r in chunk if r.doc_id not in errors]
            for doc_id, error in errors.items():
                if isinstance(error, LostLeaseError):
                    self.stats.lost_lease += 1
                else:
                    result = next(r for r in chunk if r.doc_id == doc_id)
                    failures.append(self._failure_of(result, error))
            await self._db.wait(functools.partial(self._store.sink.mark_done, stored))
        if failures:
            await self._db.wait(lambda: self._store.sink.mark_failed(failures))
            self.stats.failed.update(str(failure.category) for failure in failures)

    def _text(self, doc: SourceDocument) -> ExtractedText | FailedDocument:
        if doc.problem is not None:
            return self._failure(doc, DataError(doc.problem), doc.claim or "", attempts=0)
        try:
            return extract_text(
                doc, self.options.text_field, self.options.max_text_chars, self.options.roles
            )
        except DataError as exc:
            return self._failure(doc, exc, doc.claim or "", attempts=0)
        except Exception as exc:  # noqa: BLE001 - odd data never stops the route
            error = DataError(f"cannot read the text: {describe(exc)}")
            return self._failure(doc, error, doc.claim or "", attempts=0)

    def _key(self, text: Conversation, doc_id: str) -> str:
        """What identical texts share: the dedupe key, or the document itself without dedupe."""
        return self._cache.key(text) if self._cache is not None else doc_id

    async def _cached(
        self, key: str, text: ExtractedText, doc: SourceDocument, claim: str
    ) -> ClassifiedDocument | None:
        if self._cache is None:
            return None
        output = await self._cache.cached(key)
        return None if output is None else self._result(doc, text, output, claim, route=None)

    def _result(
        self,
        doc: SourceDocument,
        text: ExtractedText,
        output: ClassifierOutput,
        claim: str,
        *,
        route: Literal["online", "batch"] | None,
        attempts: int = 1,
    ) -> ClassifiedDocument:
        return ClassifiedDocument.of(
            output,
            doc_id=doc.id,
            classifier=(self._llm.name, self._llm.version),
            attempts=attempts,
            text=(text.original_chars, text.truncated),
            job_id=self.job_id,
            claim=claim,
            route=route,
            turns=text.turns,
        )

    def _failure(
        self, doc: SourceDocument, error: BaseException, claim: str, *, attempts: int = 1
    ) -> FailedDocument:
        return FailedDocument(
            doc_id=doc.id,
            error=describe(error),
            category=categorize(error),
            attempts=attempts,
            job_id=self.job_id,
            claim=claim or doc.claim,
        )

    def _failure_of(self, result: ClassifiedDocument, error: BaseException) -> FailedDocument:
        return FailedDocument(
            doc_id=result.doc_id,
            error=describe(error),
            category=categorize(error),
            attempts=result.attempts,
            job_id=self.job_id,
            claim=result.claim,
        )

    async def _provider(self, call: Callable[[], Awaitable[T]]) -> T:
        """A provider call, retried through the provider's outages and rate limits."""
        value, _ = await self._provider_policy.call(call)
        return value


@dataclass(slots=True)
class _SliceBuilder:
    """A slice being filled: its documents, request lines, and what goes elsewhere."""

    claim: str
    docs: list[SourceDocument] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    size: int = 0
    reserved: int = 0  # worst-case nano-dollars held against --budget-usd until stored
    closed: bool = False  # a request did not fit in the size limit or the budget
    cached: list[ClassifiedDocument] = field(default_factory=list)
    failures: list[FailedDocument] = field(default_factory=list)
    overflow: list[SourceDocument] = field(default_factory=list)

    def full(self, options: RouteOptions) -> bool:
        """Whether another request would pass the provider's limits."""
        return self.closed or len(self.lines) >= options.max_requests


async def _documents(each: ProviderSlice) -> list[SourceDocument]:
    """A slice's documents, read and checked in a thread (tens of MB for a full slice)."""
    return await asyncio.to_thread(lambda: list(each.documents()))
