"""The dedupe cache's round trips: one lookup per page, none again for a retried miss."""

from __future__ import annotations

from typing import Any

import pytest

from batch_processor.errors import TransientError
from batch_processor.llm.dedupe import CachedClassifier, content_key
from batch_processor.models import Classification
from batch_processor.testing.fakes import ScriptedClassifier, neutral_classification


class CountingCache:
    """A dedupe cache in memory that counts its round trips."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.lookups = 0
        self.page_lookups = 0

    async def lookup(self, key: str) -> dict[str, Any] | None:
        """One entry (one round trip)."""
        self.lookups += 1
        return self.entries.get(key)

    async def lookup_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The entries among ``keys`` (one round trip)."""
        self.page_lookups += 1
        return {key: self.entries[key] for key in keys if key in self.entries}

    async def save(self, entries: dict[str, dict[str, Any]]) -> None:
        """Keep the entries."""
        self.entries.update(entries)


async def test_a_page_is_looked_up_with_one_query_and_hits_are_answered_from_it() -> None:
    """Fifty texts, ten of them cached: one page lookup, no per-text lookup, ten calls saved."""
    cache = CountingCache()
    cached_texts = [f"order {i} never arrived" for i in range(10)]
    for text in cached_texts:
        cache.entries[content_key(text, "s")] = {
            "classification": neutral_classification().model_dump(mode="json")
        }
    inner = ScriptedClassifier()
    classifier = CachedClassifier(inner, cache, scope="s")
    texts = cached_texts + [f"refund for invoice {i}" for i in range(40)]
    await classifier.prefetch(texts)
    for text in texts:
        await classifier.classify(text, {})
    assert (cache.page_lookups, cache.lookups) == (1, 0)
    assert classifier.calls_saved == 10 and len(inner.calls) == 40
    await classifier.aclose()


async def test_a_retried_miss_is_not_looked_up_again() -> None:
    """A text whose classification failed is retried without another cache round trip."""
    cache = CountingCache()
    failures = [TransientError("429")]

    def answer(text: str) -> Classification | BaseException:
        return failures.pop() if failures else neutral_classification()

    inner = ScriptedClassifier(answer=answer)
    classifier = CachedClassifier(inner, cache, scope="s")
    await classifier.prefetch(["hello"])
    with pytest.raises(TransientError):
        await classifier.classify("hello", {})
    await classifier.classify("hello", {})
    assert (cache.page_lookups, cache.lookups) == (1, 0)
    assert len(inner.calls) == 2
    await classifier.aclose()
