"""Dedupe: identical conversations are classified once per model and taxonomy version.

:class:`CachedClassifier` wraps any classifier. The key is a SHA-256 of the classifier's cache
scope (model, taxonomy version, prompt version) and the text after whitespace and case
normalisation. A text already classified (by this run, an earlier one, or another worker: the
cache is a MongoDB collection) is answered from the cache; the same text in flight twice at
once waits for the first call instead of making a second.

Round trips are per page, not per document: the pipeline hands each claimed page's texts to
:meth:`CachedClassifier.prefetch`, which looks all their keys up with one query and remembers
hits and misses until each text is classified. Only a text that was not prefetched (a retry
from the queue) costs a lookup of its own. New entries are written in unordered bulks of
``flush_size``. The cache is an optimisation: if MongoDB cannot answer a lookup in
``lookup_timeout`` seconds, the texts are classified as if they were new.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from batch_processor.classifiers import Classifier
from batch_processor.conversation import Conversation, Speaker
from batch_processor.errors import describe
from batch_processor.models import Classification, ClassifierOutput, utcnow
from batch_processor.outage import Availability

log = structlog.get_logger("batch_processor.llm.dedupe")


class ResultCache(Protocol):
    """Where cached classifications live (MongoDB in production)."""

    async def lookup(self, key: str) -> dict[str, Any] | None:
        """The entry stored under ``key``, or None."""
        ...

    async def lookup_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The entries stored under any of ``keys``, by key (one round trip)."""
        ...

    async def save(self, entries: dict[str, dict[str, Any]]) -> None:
        """Store entries (key -> entry); existing keys are kept."""
        ...


def normalise(conversation: Conversation | str) -> str:
    """The conversation as compared for duplicates: whitespace runs collapsed, case folded.

    Each turn keeps who said it (the same words from the agent are another conversation); a
    lone customer turn is its text alone.
    """
    turns = Conversation.of(conversation).turns
    if len(turns) == 1 and turns[0].speaker is Speaker.CUSTOMER:
        return " ".join(turns[0].text.split()).casefold()
    return "\n".join(f"{t.speaker.value}: {' '.join(t.text.split()).casefold()}" for t in turns)


def content_key(conversation: Conversation | str, scope: str) -> str:
    """The cache key of ``conversation`` under ``scope``."""
    return hashlib.sha256(f"{scope}\x00{normalise(conversation)}".encode()).hexdigest()


class CachedClassifier(Classifier):
    """A classifier that answers repeated texts from a shared cache (see the module doc)."""

    def __init__(
        self,
        inner: Classifier,
        cache: ResultCache,
        *,
        scope: str,
        flush_size: int = 200,
        recent_size: int = 10_000,
        lookup_timeout: float = 5.0,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.version = inner.version
        self.calls_saved = 0
        self._cache = cache
        self._scope = scope
        self._flush_size = flush_size
        self._in_flight: dict[str, asyncio.Future[ClassifierOutput | None]] = {}
        self._unsaved: dict[str, dict[str, Any]] = {}
        # Answers of this process, so a repeat is a hit before its entry reaches MongoDB.
        self._recent: OrderedDict[str, ClassifierOutput] = OrderedDict()
        self._recent_size = recent_size
        # Prefetched keys of pages in progress: the cached output, or None for a known miss.
        # Each entry is taken by its text's classification; the bound only drops what a
        # stopped run never classified.
        self._prefetched: OrderedDict[str, ClassifierOutput | None] = OrderedDict()
        self._lookup_timeout = lookup_timeout
        self._saving: set[asyncio.Task[None]] = set()
        self._availability = Availability("dedupe cache (classifying without it)")

    async def classify(
        self, conversation: Conversation | str, metadata: Mapping[str, Any]
    ) -> ClassifierOutput:
        """The cached classification of ``conversation``, or the inner classifier's (cached)."""
        key = content_key(conversation, self._scope)
        while (first := self._in_flight.get(key)) is not None:
            output = await asyncio.shield(first)
            if output is not None:
                return self._hit(output)
            # The first call failed; if nobody else took over, this call tries itself.
        future: asyncio.Future[ClassifierOutput | None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        output = None
        try:
            cached = await self._lookup(key)
            if cached is not None:
                output = cached
                self._keep(key, cached)  # a repeat later in the page is a hit in memory
                return self._hit(cached)
            try:
                output = await self.inner.classify(conversation, metadata)
            except BaseException:
                # Still a miss: the pipeline's retry of this text need not look it up again.
                self._prefetched[key] = None
                raise
            self._remember(key, output)
            return output
        finally:
            del self._in_flight[key]
            future.set_result(output)

    async def prefetch(self, texts: Sequence[Conversation | str]) -> None:
        """Look up the keys of ``texts`` with one query, for their classifications to come."""
        keys = {content_key(text, self._scope) for text in texts}
        wanted = [k for k in keys if k not in self._recent and k not in self._prefetched]
        if not wanted:
            return
        try:
            async with asyncio.timeout(self._lookup_timeout):
                entries = await self._cache.lookup_many(wanted)
        except Exception as exc:  # noqa: BLE001 - the cache is an optimisation, never a failure
            self._availability.failed(exc)
            return  # each text will try its own lookup (and most likely classify)
        self._availability.succeeded()
        for key in wanted:
            entry = entries.get(key)
            self._prefetched[key] = self._entry_output(key, entry) if entry is not None else None
        while len(self._prefetched) > self._recent_size:
            self._prefetched.popitem(last=False)

    def key(self, text: Conversation | str) -> str:
        """The cache key of ``text`` (identical conversations share it)."""
        return content_key(text, self._scope)

    async def cached(self, key: str) -> ClassifierOutput | None:
        """The cached answer under ``key`` (marked cached, free), or None.

        For the Batch API route, which asks for a whole slice's texts at once.
        """
        output = await self._lookup(key)
        if output is None:
            return None
        self._keep(key, output)
        return self._hit(output)

    def remember(self, text: Conversation | str, output: ClassifierOutput) -> None:
        """Cache an answer obtained elsewhere (a Batch API line) for later repeats."""
        self._remember(content_key(text, self._scope), output)

    def summary(self) -> dict[str, Any]:
        """The inner classifier's summary plus the LLM calls saved by the cache."""
        inner = getattr(self.inner, "summary", None)
        return {**(inner() if inner is not None else {}), "llm_calls_saved": self.calls_saved}

    async def flush(self) -> None:
        """Write the entries not saved yet and wait for the writes in progress."""
        self._flush()
        if self._saving:
            await asyncio.gather(*self._saving)

    async def aclose(self) -> None:
        """Flush, then close the inner classifier."""
        try:
            await self.flush()
        finally:
            await self.inner.aclose()

    def _hit(self, output: ClassifierOutput) -> ClassifierOutput:
        self.calls_saved += 1
        return output.model_copy(update={"cached": True, "usage": None, "cost_usd": 0.0})

    async def _lookup(self, key: str) -> ClassifierOutput | None:
        if (recent := self._recent.get(key)) is not None:
            self._recent.move_to_end(key)
            return recent
        if key in self._prefetched:
            return self._prefetched.pop(key)  # None: the page's lookup found nothing
        try:
            async with asyncio.timeout(self._lookup_timeout):
                entry = await self._cache.lookup(key)
        except Exception as exc:  # noqa: BLE001 - the cache is an optimisation, never a failure
            # Logged once per outage, not once per document: texts are classified meanwhile.
            self._availability.failed(exc)
            return None
        self._availability.succeeded()
        return None if entry is None else self._entry_output(key, entry)

    def _entry_output(self, key: str, entry: Mapping[str, Any]) -> ClassifierOutput | None:
        """A cache entry as an output; None (with a warning) for an unusable entry."""
        try:
            return ClassifierOutput(
                classification=Classification.model_validate(entry["classification"]),
                model=entry.get("model"),
                taxonomy_version=entry.get("taxonomy_version"),
                truncated=bool(entry.get("truncated", False)),
            )
        except (KeyError, ValidationError) as exc:
            log.warning("unusable dedupe cache entry ignored", key=key, error=describe(exc))
            return None

    def _keep(self, key: str, output: ClassifierOutput) -> None:
        self._recent[key] = output
        if len(self._recent) > self._recent_size:
            self._recent.popitem(last=False)

    def _remember(self, key: str, output: ClassifierOutput) -> None:
        self._keep(key, output)
        self._unsaved[key] = {
            "scope": self._scope,
            "classification": output.classification.model_dump(mode="json"),
            "model": output.model,
            "taxonomy_version": output.taxonomy_version,
            "truncated": output.truncated,
            "created_at": utcnow(),
        }
        if len(self._unsaved) >= self._flush_size:
            self._flush()

    def _flush(self) -> None:
        if not self._unsaved:
            return
        entries, self._unsaved = self._unsaved, {}
        task = asyncio.create_task(self._save(entries))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def _save(self, entries: dict[str, dict[str, Any]]) -> None:
        try:
            await self._cache.save(entries)
        except Exception as exc:  # noqa: BLE001 - losing cache entries costs calls, not data
            self._availability.failed(exc)
            log.debug("dedupe cache entries not saved", entries=len(entries), error=describe(exc))
