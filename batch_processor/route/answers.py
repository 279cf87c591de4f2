"""Reading a provider batch's answers: store what it answered, classify the rest online.

The documents are those still claimed under the slice's token (so a store that a crash cut
short resumes with exactly the rest). Each result line is matched to its document by its
``custom_id`` (source id and claim token: a line of an older claim is ignored), validated and
repaired like an online reply, and stored in bulk through the shared outcome path
(:mod:`batch_processor.documents.outcomes`). A document whose line failed, expired, or holds no
valid classification is classified **online** at once, with the online route's retries: such
lines are few, and a new batch would make them wait another window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import structlog

from batch_processor.classifiers import Classifier
from batch_processor.documents.outcomes import Outcomes, store_outcomes
from batch_processor.documents.ports import Sink, Source
from batch_processor.documents.text import ExtractedText
from batch_processor.errors import BatchProcessorError, BudgetExhaustedError, describe
from batch_processor.failpoints import crash_at
from batch_processor.models import (
    ClassifiedDocument,
    ClassifierOutput,
    FailedDocument,
    SourceDocument,
)
from batch_processor.outage import DatabaseCalls
from batch_processor.retry import RetryPolicy
from batch_processor.route.lines import read_result_line
from batch_processor.route.options import RouteStats
from batch_processor.route.ports import AnswerCache, BatchClassifier, Triage
from batch_processor.slice_record import NANOS_PER_USD

log = structlog.get_logger("batch_processor.route")

#: Results stored per bulk write.
STORE_CHUNK = 500
#: Lines handled between two yields to the event loop (a few milliseconds of work).
YIELD_EVERY = 200

_Todo = tuple[SourceDocument, ExtractedText, str]


@dataclass(frozen=True, slots=True)
class Answered:
    """What storing a slice's answers did."""

    stored: int
    online: int
    failed: int
    input_tokens: int
    output_tokens: int
    cost_nanos: int


class AnswerReader:
    """Stores a slice's answers (see the module docstring)."""

    def __init__(
        self,
        *,
        source: Source,
        sink: Sink,
        llm: BatchClassifier,
        cache: AnswerCache | None,
        outcomes: Outcomes,
        db: DatabaseCalls,
        classify_policy: RetryPolicy,
        concurrent: int,
        stats: RouteStats,
        triage: Triage | None = None,
    ) -> None:
        self._triage = triage
        self._source = source
        self._sink = sink
        self._llm = llm
        self._cache = cache
        self._online: Classifier = cache or llm
        self._outcomes = outcomes
        self._db = db
        self._policy = classify_policy
        self._concurrent = concurrent
        self._stats = stats

    def release(self, reservation: int) -> None:
        """Give back a slice's budget reservation (nothing of it was sent, or it is counted)."""
        self._llm.release_reservation(reservation)

    async def store(self, claim: str, lines: Iterable[bytes], release: int) -> Answered:
        """Store the answers of the documents claimed under ``claim``; the rest online.

        ``release`` (nano-dollars) is the batch's reservation, given back once its real cost
        is counted and before the online requests reserve their own.
        """
        keyed: dict[str, _Todo] = {}
        docs = await self._db.wait(lambda: self._source.claimed(claim))
        for number, doc in enumerate(docs, 1):
            if number % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            text = self._outcomes.text(doc)
            if isinstance(text, ExtractedText):  # a failing text was marked at claim time
                key = self._cache.key(text.conversation) if self._cache is not None else doc.id
                keyed[doc.id] = (doc, text, key)
        answers, problems = await self._answers(claim, keyed, lines)
        results, online = await self._results(claim, keyed, answers, problems)
        stored = await self.store_outcomes(results, [])
        crash_at("half_stored")
        self._stats.stored_from_batch += stored
        self._llm.release_reservation(release)
        stored_online, failed = await self._classify_online(online, claim)
        if self._cache is not None:
            await self._cache.flush()
        return Answered(
            stored=stored,
            online=stored_online,
            failed=failed,
            input_tokens=sum(r.usage.input_tokens for r in results if r.usage),
            output_tokens=sum(r.usage.output_tokens for r in results if r.usage),
            cost_nanos=sum(round(r.cost_usd * NANOS_PER_USD) for r in results),
        )

    async def store_outcomes(
        self, results: Sequence[ClassifiedDocument], failures: Sequence[FailedDocument]
    ) -> int:
        """Store results and failures in chunks, fenced; count them; return how many stored."""
        stored = 0
        for start in range(0, max(len(results), len(failures)), STORE_CHUNK):
            done = await store_outcomes(
                self._sink,
                self._db.wait,
                results[start : start + STORE_CHUNK],
                failures[start : start + STORE_CHUNK],
            )
            stored += len(done.stored)
            self._stats.lost_lease += len(done.lost)
            self._stats.failed.update(str(failure.category) for failure in done.failures)
        return stored

    async def _results(
        self,
        claim: str,
        keyed: dict[str, _Todo],
        answers: dict[str, ClassifierOutput],
        problems: dict[str, str],
    ) -> tuple[list[ClassifiedDocument], list[_Todo]]:
        """The results of the answered documents, and those to classify online (with why)."""
        results: list[ClassifiedDocument] = []
        online: list[_Todo] = []
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
            if self._triage is not None:
                output = await self._triage.rejoin(text.conversation, doc.fields, output)
            results.append(
                self._outcomes.result(doc, text, output, attempts=1, claim=claim, route="batch")
            )
        return results, online

    async def _answers(
        self, claim: str, keyed: dict[str, _Todo], lines: Iterable[bytes]
    ) -> tuple[dict[str, ClassifierOutput], dict[str, str]]:
        """The valid answers by text key, and why the others have none (also by text key)."""
        answers: dict[str, ClassifierOutput] = {}
        problems: dict[str, str] = {}
        for number, raw in enumerate(lines, 1):
            if number % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # validating a whole batch must not stall the loop
            line = read_result_line(raw)
            if line is None or line.claim != claim or line.doc_id not in keyed:
                continue  # not this slice's claim, or stored already
            _, text, key = keyed[line.doc_id]
            if line.completion is None:
                problems[key] = line.problem or "no answer"
                continue
            try:
                answers[key] = self._llm.read_batch_reply(line.completion, text.turns)
            except BatchProcessorError as exc:
                problems[key] = describe(exc)
        return answers, problems

    async def _classify_online(self, todo: list[_Todo], claim: str) -> tuple[int, int]:
        """Classify the documents the batch did not answer, online; return (stored, failed)."""
        if not todo:
            return 0, 0
        for _, _, problem in todo:
            self._stats.lines_retried_online[problem.split(":")[0][:60]] += 1
        log.info("classifying online what the batch did not answer", documents=len(todo))
        slots = asyncio.Semaphore(self._concurrent)
        results: list[ClassifiedDocument] = []
        failures: list[FailedDocument] = []
        released: list[str] = []

        async def one(doc: SourceDocument, text: ExtractedText) -> None:
            async with slots:
                try:
                    output, attempts = await self._policy.call(
                        lambda: self._online.classify(text.conversation, doc.fields)
                    )
                    if self._triage is not None:
                        output = await self._triage.rejoin(text.conversation, doc.fields, output)
                except BudgetExhaustedError:
                    released.append(doc.id)
                    return
                except Exception as exc:  # noqa: BLE001 - sorted into a failure, never fatal
                    failures.append(self._outcomes.failure(doc.id, exc, attempts=1, claim=claim))
                    return
                results.append(
                    self._outcomes.result(
                        doc, text, output, attempts=attempts, claim=claim, route="online"
                    )
                )

        async with asyncio.TaskGroup() as group:
            for doc, text, _ in todo:
                group.create_task(one(doc, text))
        stored = await self.store_outcomes(results, failures)
        if released:
            job_id = self._outcomes.job_id
            await self._db.wait(lambda: self._source.release_tokens([claim]))
            log.warning("budget reached: documents left pending", documents=len(released),
                        job_id=job_id)  # fmt: skip
        self._stats.stored_online += stored
        return stored, len(failures)
